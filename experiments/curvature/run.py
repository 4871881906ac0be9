"""Curvature of the solutions found by BPTT vs bio-plausible rules (ALGORITHMS.md §9; Liu et al. NeurIPS 2022,
"Beyond accuracy", arXiv:2206.00823).

A ReLU rate RNN with α ≈ 0 (BiolHessRNN set-up, §9.1) learns 8x8 sequential digits with plain SGD and an L2 term.
Every few iterations the top eigenvalue of the Hessian of the *untruncated* loss (CE + L2) w.r.t. W_rec is measured
on a fixed batch (spikelearn.analysis.hessian, Lanczos). After training: top-k eigenvalues, Hutchinson trace, the
SLQ spectral density (first seed), the gain of each rule's update along the top Hessian eigenvector relative to
BPTT's (§9.3), and test accuracy on clean and noisy (σ = 0.2) test digits. Writes CSVs and PNGs here.

Usage: ``python experiments/curvature/run.py [--config quick|full]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import pathlib
import sys

import pandas as pd
import torch

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from config import FULL, QUICK, CurvatureConfig  # noqa: E402

from spikelearn.analysis.hessian import (hessian_density, hessian_measurement, hessian_operator,  # noqa: E402
                                         hutchinson_trace, top_eigenvalues)
from spikelearn.analysis.plots_regime import (plot_curvature_trajectories, plot_scatter,  # noqa: E402
                                              plot_spectral_density)
from spikelearn.circuit import gaussian  # noqa: E402
from spikelearn.config import TrainConfig  # noqa: E402
from spikelearn.models import RateRNN  # noqa: E402
from spikelearn.rules import BPTT, RULES, TruncatedBPTT  # noqa: E402
from spikelearn.tasks import make_task  # noqa: E402
from spikelearn.train import Measurement, Trainer  # noqa: E402


def make_rule(name: str):
    return TruncatedBPTT(k=1) if name == "tbptt_k1" else RULES[name]()


def make_model(cfg: CurvatureConfig, seed: int) -> RateRNN:
    """W_in ~ N(0, 2/n_in), W_rec ~ N(0, 2/N), W_out Glorot-uniform, α = e^{-10} (§9.1)."""
    torch.manual_seed(seed)
    w_in = torch.randn(cfg.n, 8, dtype=torch.float64) * math.sqrt(2 / 8)
    return RateRNN(gaussian(cfg.n, math.sqrt(2.0), seed=seed), 8, 10, form="relu_lif", tau_ms=0.1, dt_ms=1.0,
                   w_in=w_in, sign_constraint="none")


def test_accuracy(model, task, cfg: CurvatureConfig, noise: float) -> float:
    t = dataclasses.replace(task, split="test", input_noise_std=noise)
    x, y, mask = t.sample(cfg.test_trials, torch.Generator().manual_seed(777))
    with torch.no_grad():
        return float(t.accuracy(model(x).y, y, mask))


def run_one(cfg: CurvatureConfig, rule_name: str, seed: int, task, val) -> tuple[pd.DataFrame, dict, object]:
    model = make_model(cfg, seed)
    weights = [p for n, p in model.named_parameters() if n.startswith("theta")]
    opt = torch.optim.SGD([{"params": weights, "weight_decay": cfg.l2},  # = the L2 term's gradient
                           {"params": [model.b_out], "weight_decay": 0.0}], lr=cfg.lr)
    iters = cfg.bptt_iterations if rule_name == "bptt" else cfg.other_iterations
    every = max(1, iters // cfg.n_measurements)
    hook = Measurement("hess", hessian_measurement(*val, l2=cfg.l2, rtol=1e-4), every=every)
    tc = TrainConfig(iterations=iters, batch_size=cfg.batch_size, seed=seed, eval_every=every, eval_batch_size=512,
                     grad_clip=cfg.rflo_grad_clip if rule_name == "rflo" else 0.0, quiet=True)
    hist = Trainer(model, task, make_rule(rule_name), opt, tc, measurements=(hook,), out_dir=None).run()
    hist = hist.assign(rule=rule_name, seed=seed, progress=hist.iteration / iters)
    op = hessian_operator(model, *val, task.loss, l2=cfg.l2)
    eig = top_eigenvalues(op, op.n, cfg.top_k, rtol=1e-6, max_matvec=200, generator=torch.Generator().manual_seed(0))
    tr = hutchinson_trace(op, op.n, cfg.trace_samples, generator=torch.Generator().manual_seed(1))
    # gain of the rule's update (incl. weight decay) along the top eigenvector u1, relative to BPTT's (§9.3)
    u1 = op.unflatten(eig.eigenvectors[0])["theta_rec"]
    upd = {}
    for name, rule in (("bptt", BPTT()), (rule_name, make_rule(rule_name))):
        _, g = rule.gradients(model, *val, task.loss)
        upd[name] = float(((g["theta_rec"] + cfg.l2 * model.theta_rec.detach()) * u1).sum())
    row = {"rule": rule_name, "seed": seed, "iterations": iters, "train_loss": float(hist.loss.tail(50).mean()),
           "train_acc": float(hist.accuracy.dropna().iloc[-1]), "lambda_max": float(eig.eigenvalues[0]),
           **{f"lambda_{i}": float(v) for i, v in enumerate(eig.eigenvalues.tolist()) if i},
           "trace": tr.trace, "trace_se": tr.stderr, "lr_x_lambda_max": cfg.lr * float(eig.eigenvalues[0]),
           "gain_u1": upd[rule_name] / upd["bptt"] if upd["bptt"] else float("nan"),
           "test_acc": test_accuracy(model, task, cfg, 0.0),
           "test_acc_noisy": test_accuracy(model, task, cfg, cfg.test_noise_std)}
    return hist, row, model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", choices=["quick", "full"], default="quick")
    args = ap.parse_args()
    cfg = QUICK if args.config == "quick" else FULL
    torch.set_num_threads(cfg.threads)
    rules = [r for r in cfg.rules if r == "tbptt_k1" or r in RULES]
    print(f"rules: {rules}; skipped (not registered): {sorted(set(cfg.rules) - set(rules))}")
    task = make_task("sequential_digits")
    val = task.sample(cfg.val_trials, torch.Generator().manual_seed(99))
    hists, rows, dens = [], [], {}
    for seed in cfg.seeds:
        for rule in rules:
            h, row, model = run_one(cfg, rule, seed, task, val)
            hists.append(h)
            rows.append(row)
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
            if seed == cfg.seeds[0]:
                dens[rule], _ = hessian_density(model, *val, task.loss, l2=cfg.l2, n_probes=3, m=60)
    hist, res = pd.concat(hists, ignore_index=True), pd.DataFrame(rows)
    hist.to_csv(HERE / f"history_{args.config}.csv", index=False)
    res.to_csv(HERE / f"results_{args.config}.csv", index=False)
    cols = ["lambda_max", "trace", "lr_x_lambda_max", "gain_u1", "train_loss", "train_acc", "test_acc",
            "test_acc_noisy"]
    print(res.groupby("rule", sort=False)[cols].agg(["mean", "std"]).round(4).T.to_string())
    plot_curvature_trajectories(hist.rename(columns={"hess.lambda_max": "lambda_max"}),
                                HERE / f"lambda_max_{args.config}.png", x="progress", hline=2 / cfg.lr,
                                hline_label="2/lr", title="top Hessian eigenvalue (W_rec)")
    plot_scatter(res, HERE / f"noisy_acc_vs_sharpness_{args.config}.png", x="lambda_max", y="test_acc_noisy",
                 title="noisy test accuracy vs final λ_max")
    plot_spectral_density(dens, HERE / f"density_{args.config}.png", title=f"Hessian density (seed {cfg.seeds[0]})")


if __name__ == "__main__":
    main()
