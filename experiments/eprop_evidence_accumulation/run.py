"""e-prop on evidence accumulation (ALGORITHMS.md §10.1; Bellec et al. 2020, Fig. 3 / official ALIF tutorial).

Trains the symmetric- and random-feedback configurations (default: the quick ones) with ``spikelearn.build.train``,
then reports for each the validation accuracy over iterations (fixed evaluation batch, every ``eval_every``
iterations) and the first iteration at which the published stop criterion (validation error < 7 %) is met. The
official README reports that with random feedback and batch 32 the criterion is reached after about 200–500
iterations. Writes the trainer's files under ``runs/eprop_evidence_accumulation/``, and into this folder
``results_<tag>.csv`` and ``accuracy_<tag>.png``.

Usage::

    python experiments/eprop_evidence_accumulation/run.py [--tag quick] [--threads 1] [--iterations N]
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib

import pandas as pd
import torch

from spikelearn.build import train
from spikelearn.config import load_config

HERE = pathlib.Path(__file__).resolve().parent
STOP_ERROR = 0.07


def first_below(hist: pd.DataFrame, err: float = STOP_ERROR) -> float:
    """First iteration whose evaluation error is below ``err`` (NaN if never)."""
    ev = hist.dropna(subset=["accuracy"])
    hit = ev[1 - ev["accuracy"] < err]
    return float(hit["iteration"].iloc[0]) if len(hit) else float("nan")


def run(tag: str, iterations: int | None) -> pd.DataFrame:
    frames = []
    for fb in ("symmetric", "random"):
        cfg = load_config(HERE / f"{tag}_{fb}.toml")
        tr = dataclasses.replace(cfg.train, quiet=True)
        if iterations:
            tr = dataclasses.replace(tr, iterations=iterations)
        out = cfg.train.out_dir + (f"_{iterations}it" if iterations else "")
        hist, _ = train(dataclasses.replace(cfg, train=tr), out_dir=out, overwrite=True)
        hist["feedback"] = fb
        frames.append(hist)
        ev = hist.dropna(subset=["accuracy"])
        print(f"{fb:9s}: final eval accuracy {ev['accuracy'].iloc[-1]:.3f}, best {ev['accuracy'].max():.3f}, "
              f"error < 7 % first at iteration {first_below(hist)}, firing rate "
              f"{ev['firing_rate_hz'].iloc[-1]:.1f} Hz, {hist['wall_time_s'].iloc[-1]:.0f} s "
              f"({hist['wall_time_s'].iloc[-1] / len(hist):.2f} s/iteration)")
    return pd.concat(frames, ignore_index=True)


def plot(df: pd.DataFrame, path: pathlib.Path, batch: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a0, a1) = plt.subplots(1, 2, figsize=(11, 3.8))
    for fb, d in df.groupby("feedback", sort=False):
        ev = d.dropna(subset=["accuracy"])
        a0.plot(ev["iteration"], ev["accuracy"], marker=".", label=f"e-prop, {fb} feedback")
        a1.plot(d["iteration"], d["loss"].rolling(10, min_periods=1).mean(), label=fb)
    a0.axhline(1 - STOP_ERROR, color="k", ls=":", lw=1, label="stop criterion (error < 7 %)")
    a0.axvspan(200, 500, color="0.9", label="published: criterion after ~200–500 it.")
    a0.set(xlabel="iteration", ylabel="validation accuracy", ylim=(0.4, 1.0),
           title=f"evidence accumulation (batch {batch})")
    a0.legend(fontsize=8, loc="lower right")
    a1.set(xlabel="iteration", ylabel="training loss (10-it. mean)", title="cross-entropy (recall window)")
    a1.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tag", default="quick", choices=["quick", "full"])
    ap.add_argument("--iterations", type=int, default=None, help="override the configs' iterations")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these small nets)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    df = run(args.tag, args.iterations)
    name = args.tag + (f"_{args.iterations}it" if args.iterations else "")
    df.to_csv(HERE / f"results_{name}.csv", index=False)
    batch = load_config(HERE / f"{args.tag}_symmetric.toml").train.batch_size
    plot(df, HERE / f"accuracy_{name}.png", batch)
    print(f"wrote {HERE / f'results_{name}.csv'} and {HERE / f'accuracy_{name}.png'}")


if __name__ == "__main__":
    main()
