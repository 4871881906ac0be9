"""e-prop pattern generation (ALGORITHMS.md §10.4; Bellec et al. 2020, Fig. 2 / official tutorial).

Trains the configuration given (default ``quick.toml``) with the package trainer and, with ``--compare``,
the same network with other rules (``bptt``, ``symmetric`` = e-prop with B = W_outᵀ, ``noreg`` = random e-prop
without the regulariser). Writes ``runs/eprop_pattern_generation/<name>/`` (the trainer's files), and into this
folder ``results_<config>.csv`` (loss per iteration and rule) and ``loss_<config>.png`` (loss curves, target vs
output after training).

Usage::

    python experiments/eprop_pattern_generation/run.py [--config quick.toml] [--compare bptt symmetric]
           [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib

import pandas as pd
import torch

from spikelearn.build import build
from spikelearn.config import load_config
from spikelearn.train import TrainingDiverged

HERE = pathlib.Path(__file__).resolve().parent

VARIANTS = {
    "eprop": lambda r: r,
    "symmetric": lambda r: dataclasses.replace(r, options={**r.options, "feedback": "symmetric"}),
    "noreg": lambda r: dataclasses.replace(r, options={**r.options, "reg_coeff": 0.0}),
    "bptt": lambda r: dataclasses.replace(r, name="bptt", options={}),
}


def run(config: str, variants: list[str]) -> tuple[pd.DataFrame, dict]:
    base = load_config(HERE / config)
    frames, models = [], {}
    for v in variants:
        cfg = dataclasses.replace(base, rule=VARIANTS[v](base.rule),
                                  train=dataclasses.replace(base.train, quiet=True))
        _, model, _, _, _, trainer = build(cfg, out_dir=f"{base.train.out_dir}_{v}")
        try:
            hist = trainer.run()
        except TrainingDiverged as e:  # keep the curve up to the divergence
            print(f"{v}: {e}")
            hist = trainer.history()
        hist["rule"] = v
        frames.append(hist)
        models[v] = model
        ev = hist.dropna(subset=["eval_loss"])
        print(f"{v:10s} loss: first {hist['loss'].iloc[0]:.2f}, last {hist['loss'].iloc[-1]:.2f}, "
              f"min {hist['loss'].min():.2f}; final R^2 {ev['accuracy'].iloc[-1]:.3f}; "
              f"firing rate {ev['firing_rate_hz'].iloc[-1]:.1f} Hz; {hist['wall_time_s'].iloc[-1]:.0f} s")
    return pd.concat(frames, ignore_index=True), models


def plot(df: pd.DataFrame, models: dict, config: str, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spikelearn.tasks import make_task

    cfg = load_config(HERE / config)
    task = make_task(cfg.task.name, **cfg.task.options)
    x, y, _ = task.sample(1, torch.Generator().manual_seed(0))
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(11, 3.8))
    for v, d in df.groupby("rule", sort=False):
        a0.plot(d["iteration"], d["loss"], label=v, lw=1)
    first = float(df["loss"].iloc[0])
    a0.set(xlabel="iteration", ylabel="loss ½Σ_t (y − y*)²", yscale="log", title="training loss",
           ylim=(0.5 * float(df["loss"].min()), 10 * first))
    a0.legend()
    a1.plot(y[:, 0, 0].numpy(), "k--", label="target")
    for v, m in models.items():
        with torch.no_grad():
            a1.plot(m(x.to(m.dtype)).y[:, 0, 0].numpy(), lw=1, label=v)
    a1.set(xlabel="time (ms)", ylabel="output", title="after training", ylim=(-2.0, 2.0))
    a1.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="quick.toml")
    ap.add_argument("--compare", nargs="*", default=[], choices=[v for v in VARIANTS if v != "eprop"])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these small nets)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    df, models = run(args.config, ["eprop", *args.compare])
    stem = pathlib.Path(args.config).stem
    df.to_csv(HERE / f"results_{stem}.csv", index=False)
    plot(df, models, args.config, HERE / f"loss_{stem}.png")
    print(f"wrote {HERE / f'results_{stem}.csv'} and {HERE / f'loss_{stem}.png'}")


if __name__ == "__main__":
    main()
