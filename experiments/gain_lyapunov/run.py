"""Initial gain × learning rule × gradient flossing on the delayed XOR (ALGORITHMS.md §7.2–7.3, §10.6).

For each gain g, rule and seed: a tanh rate network (R1) with ``W_rec ~ g N(0,1)/√N`` is trained on the delayed XOR;
we record the maximum Lyapunov exponent (per step, on fixed long inputs made of concatenated task trials) before
and after training, the final accuracy and the relative change of ``W_rec``. With ``flossing``: pre-flossing
(autodiff, i.e. developmental for local rules) before training and inter-flossing early in training (BPTT:
autodiff; local rules: the local flossing rule of §7.3). Writes ``results_<tag>.csv``, ``summary_<tag>.csv`` and
``gain_<tag>.png`` here.

Usage::

    python experiments/gain_lyapunov/run.py [--tag quick|full] [--seeds 0 1] [--iterations N] [--rules bptt rflo]
        [--gains 0.5 1] [--name STEM] [--merge results_other.csv ...] [--summarize]
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
import time

import pandas as pd
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from config import FULL, QUICK, GainConfig  # noqa: E402

from spikelearn.analysis.lyapunov import max_lyapunov  # noqa: E402
from spikelearn.analysis.plots_stability import plot_gain_sweep  # noqa: E402
from spikelearn.circuit import gaussian  # noqa: E402
from spikelearn.config import TrainConfig  # noqa: E402
from spikelearn.models import RateRNN  # noqa: E402
from spikelearn.rules import RULES, make_rule  # noqa: E402
from spikelearn.rules.flossing import Flosser, FlossingConfig, FlossingSchedule  # noqa: E402
from spikelearn.tasks import DelayedXOR  # noqa: E402
from spikelearn.train import Trainer  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent


def concat_trials(task, n_traj: int, n_concat: int, gen: torch.Generator) -> torch.Tensor:
    """``n_traj`` long inputs, each ``n_concat`` fresh trials back to back: ``(n_concat·T, n_traj, n_in)``."""
    x = task.sample(n_traj * n_concat, gen)[0]
    T, _, n_in = x.shape
    return x.reshape(T, n_concat, n_traj, n_in).permute(1, 0, 2, 3).reshape(n_concat * T, n_traj, n_in)


def one_run(cfg: GainConfig, rule_name: str, g: float, seed: int, floss: bool) -> dict:
    t0 = time.perf_counter()
    task = DelayedXOR(cue_ms=cfg.cue_ms, delay_ms=cfg.delay_ms, dt_ms=cfg.dt_ms)
    torch.manual_seed(seed)
    model = RateRNN(gaussian(cfg.n, g, seed=seed), task.n_in, task.n_out, tau_ms=cfg.tau_ms, dt_ms=cfg.dt_ms,
                    hidden_bias=True)
    x_lyap = concat_trials(task, cfg.lyap_trials, cfg.lyap_concat, torch.Generator().manual_seed(10_000 + seed))
    row = {"rule": rule_name, "g": g, "seed": seed, "flossing": floss,
           "lambda_before": max_lyapunov(model, x_lyap).max}
    W0 = model.effective_weights().W_rec.detach().clone()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    tcfg = TrainConfig(iterations=cfg.iterations, batch_size=cfg.batch_size, seed=seed, eval_every=cfg.eval_every,
                       grad_clip=cfg.grad_clip, quiet=True)
    trainer = Trainer(model, task, make_rule(rule_name), opt, tcfg, out_dir=None)
    stops = [cfg.iterations]
    if floss:
        def sample_x(b, gen):
            return concat_trials(task, b, cfg.floss_concat, gen)

        pre = Flosser(model, FlossingSchedule(lr=cfg.floss_lr, config=FlossingConfig(k=cfg.floss_k)), seed=seed)
        pre.run(cfg.pre_steps, sample_x)
        mode = "autodiff" if rule_name in ("bptt", "tbptt") else "local"
        sched = FlossingSchedule(every=cfg.inter_every, steps=cfg.inter_steps, max_times=cfg.inter_max_times,
                                 lr=cfg.floss_lr if mode == "autodiff" else cfg.local_floss_lr,
                                 config=FlossingConfig(k=cfg.floss_k, mode=mode))
        inter = Flosser(model, sched, seed=seed + 1)
        stops = sorted({i for i in range(cfg.inter_every, cfg.iterations, cfg.inter_every)
                        if sched.steps_after(i)} | {cfg.iterations})
        row["lambda_after_preflossing"] = max_lyapunov(model, x_lyap).max
    for stop in stops:
        trainer.run(stop)
        if floss and stop < cfg.iterations:
            inter.run(sched.steps_after(stop), sample_x)
    ev = trainer.history().dropna(subset=["accuracy"])
    W1 = model.effective_weights().W_rec.detach()
    row.update(accuracy=float(ev["accuracy"].iloc[-2:].mean()), best_accuracy=float(ev["accuracy"].max()),
               lambda_after=max_lyapunov(model, x_lyap).max,
               dW_rel=float((W1 - W0).norm() / W0.norm()), wall_s=time.perf_counter() - t0)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tag", default="quick", choices=["quick", "full"])
    ap.add_argument("--seeds", type=int, nargs="*")
    ap.add_argument("--iterations", type=int)
    ap.add_argument("--rules", nargs="*")
    ap.add_argument("--gains", type=float, nargs="*")
    ap.add_argument("--name", help="output file stem (default: the tag)")
    ap.add_argument("--merge", nargs="*", default=[], help="earlier results_*.csv to merge into the summary")
    ap.add_argument("--summarize", action="store_true", help="run nothing; summarise the --merge files")
    args = ap.parse_args()
    name = args.name or args.tag
    cfg = QUICK if args.tag == "quick" else FULL
    over = {k: tuple(v) if isinstance(v, list) else v for k, v in
            dict(seeds=args.seeds, iterations=args.iterations, rules=args.rules, gains=args.gains).items() if v}
    cfg = dataclasses.replace(cfg, **over)
    torch.set_num_threads(cfg.threads)
    rules = [r for r in cfg.rules if r in RULES and "rate" in getattr(RULES[r], "model_types", ("rate",))]
    print(f"rules run: {rules}; skipped (absent or not for rate networks): "
          f"{[r for r in cfg.rules if r not in rules]}", flush=True)
    rows: list[dict] = []
    for floss in (False, True) if not args.summarize else ():
        for rule in rules:
            for g in cfg.gains:
                for seed in cfg.seeds:
                    r = one_run(cfg, rule, g, seed, floss)
                    rows.append(r)
                    print(" ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()),
                          flush=True)
                    pd.DataFrame(rows).to_csv(HERE / f"results_{name}.csv", index=False)
    df = pd.concat([pd.DataFrame(rows)] + [pd.read_csv(HERE / m) for m in args.merge], ignore_index=True)
    cols = ["accuracy", "best_accuracy", "lambda_before", "lambda_after", "dW_rel"]
    summ = df.groupby(["flossing", "rule", "g"])[cols].agg(["mean", "std"]).round(4)
    summ[("n_seeds", "")] = df.groupby(["flossing", "rule", "g"]).size()
    summ.to_csv(HERE / f"summary_{name}.csv")
    print(summ.to_string())
    pre = df[df["flossing"]].groupby(["rule", "g"])["lambda_after_preflossing"].mean().round(4)
    print("lambda_max after pre-flossing (mean over seeds):\n" + pre.to_string())
    df["condition"] = df["rule"] + df["flossing"].map({False: "", True: " + flossing"})
    plot_gain_sweep(df, HERE / f"gain_{name}.png", ys=("accuracy", "lambda_before", "lambda_after", "dW_rel"),
                    hue="condition")


if __name__ == "__main__":
    main()
