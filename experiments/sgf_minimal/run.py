"""Engelken's minimal surrogate-gradient-flossing example (SurrogateGradientFlossing, ALGORITHMS.md §7.1) rebuilt
with spikelearn: a current-based LIF network whose 50 leading surrogate Lyapunov exponents are flossed to 0.

Set-up as in the source: N = 64 current-based LIF neurons (τ_mem = 10 ms, τ_syn = 5 ms, dt = 1 ms, threshold 1,
no refractoriness), 100 Bernoulli inputs firing with probability 0.1 per step, W_in ~ N(0, 1/100) and
W_rec ~ N(0, 1/64) with each row's mean subtracted, the surrogate Jacobian with the fast-sigmoid derivative
1/(5|v − 1| + 1)² and no reset derivative, k = 50 exponents, 1000-step inputs (exponents from the second half),
Adam-type optimiser at lr 1e-3 on mean(λ²), 100 steps, each on a fresh input. Differences (stated in the README):
spikelearn's reset subtracts the threshold one step later instead of zeroing the whole next update (the source's
v ← (β v + (1 − β) syn)(1 − z), input included; spikelearn's reset="zero" keeps the input); the
exponents are averaged over the counted steps (the source sums them); ψ is held fixed in the flossing gradient (as
in surrogate BPTT; the source also differentiates the surrogate derivative along the trajectory); the first half
of the input is the transient of one continuous run (the source restarts from rest on the second half).

    python experiments/sgf_minimal/run.py [--steps 100] [--seed 0] [--out experiments/sgf_minimal]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from spikelearn.analysis.flossing import FlossingConfig, floss
from spikelearn.analysis.lyapunov import lyapunov_spectrum
from spikelearn.circuit import Circuit
from spikelearn.models import SpikingRNN

N, N_IN, T, K, P_SPIKE = 64, 100, 1000, 50, 0.1


def build(seed: int) -> SpikingRNN:
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((N, N)) / np.sqrt(N)
    W -= W.mean(1, keepdims=True)
    W_in = rng.standard_normal((N, N_IN)) / np.sqrt(N_IN)
    W_in -= W_in.mean(1, keepdims=True)
    circ = Circuit.from_dense(W, mask=np.ones((N, N), bool))  # the source's matrix is full, diagonal included
    return SpikingRNN(circ, N_IN, 1, scaling="B", tau_mem_ms=10.0, tau_syn_ms=5.0, v_th=1.0, n_ref=0,
                      surrogate={"name": "fast_sigmoid", "slope": 5.0}, allow_autapses=True, w_in=W_in,
                      sign_constraint="none", dtype=torch.float64)


def sample_x(batch_size: int, generator: torch.Generator) -> torch.Tensor:
    return (torch.rand(T, batch_size, N_IN, generator=generator, dtype=torch.float64) < P_SPIKE).double()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).parent))
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    model = build(a.seed)
    cfg = FlossingConfig(k=K, transient_steps=T // 2, reset_derivative=False, seed=1)
    x_eval = sample_x(1, torch.Generator().manual_seed(12345))

    def spectrum() -> np.ndarray:
        with torch.no_grad():
            res = lyapunov_spectrum(model, x_eval, k=K, transient_steps=T // 2, reset_derivative=False, seed=1)
        return np.asarray(res.exponents)[0]

    lam0 = spectrum()
    with torch.no_grad():
        rate0 = float(model(x_eval, record=True).record.z.mean()) * 1000.0
    t0 = time.perf_counter()
    hist = floss(model, sample_x, a.steps, config=cfg, lr=1e-3, seed=a.seed)
    wall = time.perf_counter() - t0
    lam1 = spectrum()
    with torch.no_grad():
        rate1 = float(model(x_eval, record=True).record.z.mean()) * 1000.0
    out = Path(a.out)
    hist.to_csv(out / "history.csv", index=False)
    pd.DataFrame({"index": np.arange(1, K + 1), "lambda_before": lam0, "lambda_after": lam1}).to_csv(
        out / "spectrum.csv", index=False)
    summary = {"steps": a.steps, "seed": a.seed, "wall_s": round(wall, 1),
               "loss_first": float(hist["floss_loss"].iloc[0]), "loss_last": float(hist["floss_loss"].iloc[-1]),
               "lambda_max_before": float(lam0.max()), "lambda_max_after": float(lam1.max()),
               "lambda_min_before": float(lam0.min()), "lambda_min_after": float(lam1.min()),
               "mean_sq_before": float((lam0 ** 2).mean()), "mean_sq_after": float((lam1 ** 2).mean()),
               "rate_hz_before": rate0, "rate_hz_after": rate1}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    ax[0].plot(np.arange(1, K + 1), lam0, "r.-", label="before")
    ax[0].plot(np.arange(1, K + 1), lam1, "k.-", label=f"after {a.steps} flossing steps")
    ax[0].axhline(0, color="grey", lw=0.5)
    ax[0].set(xlabel="index i", ylabel="λ_i (1/step)", title="surrogate Lyapunov spectrum")
    ax[0].legend()
    ax[1].semilogy(hist["floss_step"], hist["floss_loss"], "r")
    ax[1].set(xlabel="flossing step", ylabel="mean λ² (fresh input)", title="flossing loss")
    fig.tight_layout()
    fig.savefig(out / "sgf_minimal.png", dpi=120)


if __name__ == "__main__":
    main()
