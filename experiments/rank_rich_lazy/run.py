"""Initial connectivity rank vs rich/lazy learning (ALGORITHMS.md §8; Liu et al. ICLR 2024, arXiv:2310.08513).

For each init — SVD-truncated Gaussian of rank r, a low-rank init aligned with the task's input/output directions,
and connectome-derived inits (mouse V1 EM cell-type model, C. elegans) — all norm-matched to W0 = σ0 G/√N, train
a γ = 1 ReLU rate RNN without biases on delayed match-to-sample with each rule, then measure weight change,
representation alignment (uncentred and CKA), tangent-kernel alignment (W_rec, 768 x 768) and sign similarity
between θ_0 and θ_T (spikelearn.analysis.regime). Writes results_<config>.csv, summary_<config>.csv and PNGs here.

Usage: ``python experiments/rank_rich_lazy/run.py [--config quick|quick_long|full] [--only "aligned 6" ...]``.

Legacy script: the sweep files (``quick_sweep.toml``, ``full_sweep.toml``, read with ``report.py``) replace it for
every init that a run configuration can express. It is kept for what they cannot: the task-aligned low-rank init
(``low_rank_aligned`` on the span of the model's own ``W_in`` and ``W_outᵀ``), the paper's uniform
``U(±1/√fan_in)`` input/readout init and C. elegans with dense input/readout (``--only "aligned 6"`` runs just the
aligned init). Its CSV/PNG outputs are not stored in the repository.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import pathlib
import sys
import time

import numpy as np
import pandas as pd
import torch

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from config import FULL, QUICK, QUICK_LONG, RankConfig  # noqa: E402

from spikelearn import connectomes  # noqa: E402
from spikelearn.analysis.plots_regime import plot_regime_vs_rank  # noqa: E402
from spikelearn.analysis.regime import gradient_alignment, regime_summary, weight_effective_rank  # noqa: E402
from spikelearn.circuit import Circuit, low_rank, low_rank_aligned  # noqa: E402
from spikelearn.config import TrainConfig  # noqa: E402
from spikelearn.models import RateRNN  # noqa: E402
from spikelearn.rules import RULES, TruncatedBPTT  # noqa: E402
from spikelearn.tasks import make_task  # noqa: E402
from spikelearn.train import Trainer  # noqa: E402


def _norm(W: np.ndarray, kind: str) -> float:
    return float(np.linalg.norm(W) if kind == "frobenius" else np.linalg.norm(W, 2))


def make_inits(cfg: RankConfig, seed: int, n_in: int, n_out: int) -> list[tuple[str, Circuit, np.ndarray, np.ndarray]]:
    """(label, circuit, W_in, W_out) per init; W_in, W_out as torch nn.Linear defaults U(±1/√fan_in) (§8.1)."""
    rng = np.random.default_rng(1000 + seed)

    def io(n):
        return (rng.uniform(-1, 1, (n, n_in)) / math.sqrt(n_in), rng.uniform(-1, 1, (n_out, n)) / math.sqrt(n))

    out = []
    w_in, w_out = io(cfg.n)
    for r in cfg.ranks:
        out.append((f"rank {r}", low_rank(cfg.n, r, cfg.sigma0, norm=cfg.norm, seed=seed), w_in, w_out))
    if cfg.aligned_rank:
        D = np.concatenate([w_in, w_out.T], axis=1)
        out.append((f"aligned {cfg.aligned_rank}",
                    low_rank_aligned(D, cfg.aligned_rank, cfg.sigma0, norm=cfg.norm, seed=seed), w_in, w_out))
    for name in cfg.connectomes:
        opts = {"n": cfg.n, "seed": seed} if name == "mouse_v1" else {"signs": "gaba_inhibitory",
                                                                      "gap_junctions": False}
        W = connectomes.load(name, **opts).weights(dense=True)
        n = W.shape[0]
        W0 = cfg.sigma0 * np.random.default_rng(seed).standard_normal((n, n)) / math.sqrt(n)
        W = W * _norm(W0, cfg.norm) / _norm(W, cfg.norm)  # Circuit.from_dense masks W == 0: absent synapses stay 0
        wi, wo = (w_in, w_out) if n == cfg.n else io(n)
        out.append((name.split("_")[0] if name != "mouse_v1" else "mouse V1", Circuit.from_dense(W), wi, wo))
    return out


def run_one(cfg: RankConfig, label: str, circuit: Circuit, w_in, w_out, rule_name: str, seed: int, task) -> dict:
    torch.manual_seed(seed)
    model = RateRNN(circuit, task.n_in, task.n_out, form="richlazy", tau_ms=100.0, dt_ms=task.dt_ms,
                    readout_bias=False, sign_constraint="none", allow_autapses=True, w_in=w_in, w_out=w_out)
    model0 = copy.deepcopy(model)
    xp, yp, mp = task.sample(cfg.probe_trials, torch.Generator().manual_seed(10_000 + seed))
    row = {"init": label, "rule": rule_name, "seed": seed, "n": circuit.n}
    if rule_name == cfg.rules[0]:  # gradient alignment of the other rules with BPTT at θ_0, same batch
        rules = {k: RULES[k]() for k in cfg.rules if k in RULES and k != "bptt"} | {"tbptt_k1": TruncatedBPTT(k=1)}
        ga = gradient_alignment(model, xp[:, :64], yp[:, :64], mp[:, :64], task.loss, rules=rules)
        row |= {f"cos_{r}_rec": c for r, c in ga[ga.parameter == "theta_rec"][["rule", "cosine"]].values}
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    tc = TrainConfig(iterations=cfg.iterations, batch_size=cfg.batch_size, seed=seed, eval_every=cfg.iterations,
                     eval_batch_size=512, grad_clip=cfg.grad_clip, quiet=True)
    t0 = time.perf_counter()
    hist = Trainer(model, task, RULES[rule_name](), opt, tc, out_dir=None).run()
    row |= {"accuracy": float(hist.accuracy.dropna().iloc[-1]), "train_s": time.perf_counter() - t0}
    s = regime_summary(model0, model, xp, kernel_trials=cfg.kernel_trials)
    row |= dict(zip(s.measure, s.value))
    W0 = model0.effective_weights().W_rec.detach()
    row["rv_rank_W0"] = weight_effective_rank(W0)["roy_vetterli"]
    row["spectral_radius_W0"] = float(np.abs(np.linalg.eigvals(W0.double().numpy())).max())
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", choices=["quick", "quick_long", "full"], default="quick")
    ap.add_argument("--rules", nargs="*", default=None, help="override cfg.rules")
    ap.add_argument("--only", nargs="*", default=None, help="run only the inits with these labels (e.g. 'aligned 6')")
    args = ap.parse_args()
    cfg = {"quick": QUICK, "quick_long": QUICK_LONG, "full": FULL}[args.config]
    if args.rules:
        cfg = dataclasses.replace(cfg, rules=tuple(args.rules))
    torch.set_num_threads(cfg.threads)
    missing = [r for r in cfg.rules if r not in RULES]
    rules = [r for r in cfg.rules if r in RULES]
    print(f"rules: {rules}; not registered (skipped): {missing}")
    task = make_task(cfg.task)
    rows = []
    for seed in cfg.seeds:
        for label, circuit, w_in, w_out in make_inits(cfg, seed, task.n_in, task.n_out):
            if args.only and label not in args.only:
                continue
            for rule in rules:
                rows.append(run_one(cfg, label, circuit, w_in, w_out, rule, seed, task))
                r = rows[-1]
                print(f"seed {seed} {label:>14s} {rule:5s} acc {r['accuracy']:.3f} PR {r['eff_rank_W0']:6.1f} "
                      f"dW {r['weight_change_rel']:.3f} RA {r['rep_alignment']:.3f} CKA {r['cka']:.3f} "
                      f"KA {r['kernel_alignment']:.3f} ({r['train_s']:.0f} s)", flush=True)
    df = pd.DataFrame(rows)
    df.to_csv(HERE / f"results_{args.config}.csv", index=False)
    cols = ["eff_rank_W0", "rv_rank_W0", "frobenius_W0", "spectral_W0", "spectral_radius_W0", "accuracy",
            "weight_change_rel", "rep_alignment", "cka", "kernel_alignment", "sign_similarity"]
    summ = df.groupby(["rule", "init"], sort=False)[cols].agg(["mean", "std"])
    summ.to_csv(HERE / f"summary_{args.config}.csv")
    print(df.groupby(["rule", "init"], sort=False)[cols].mean().round(3).to_string())
    for x in ("eff_rank_W0",):
        plot_regime_vs_rank(df, HERE / f"regime_vs_rank_{args.config}.png", x=x,
                            measures=("weight_change_rel", "rep_alignment", "cka", "kernel_alignment"),
                            title=f"{cfg.task}, N={cfg.n}, {cfg.iterations} it ({args.config})")


if __name__ == "__main__":
    main()
