"""How well does e-prop's gradient follow BPTT's when synapses are current-based?

e-prop drops every path through other neurons (§2.1); a synaptic current spreads each recurrent spike's effect over
≈ τ_s further steps, which could make the dropped recurrent paths matter more — or, since the filtered presynaptic
trace is exact along the kept paths, not at all. Measured here at initialisation (no training) on the e-prop
evidence-accumulation set-up (§10.1: 7 cues, T = 2250 ms, 40 Poisson inputs; 50 LIF + 50 ALIF, scaling A,
random Gaussian circuit g = 1), for τ_s ∈ {0, 2, 5, 10, 20} ms, 5 seeds (a new circuit, initial weights and batch
of 32 trials per seed): the cosine between the e-prop and the BPTT (e-prop pseudo-derivative) gradients of W_rec
and W_in, and the ratio of their norms. A synaptic current integrates each pulse into a charge 1/(1 − α_s) times
larger, so W_in and W_rec are scaled by (1 − α_s) to keep the charge per spike (and so the drive) that of τ_s = 0;
``--unnormalised`` keeps the weights instead (the network then fires far more). One thread; a few minutes.

    python experiments/eprop_synaptic_alignment/run.py [--seeds 5] [--out experiments/eprop_synaptic_alignment]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd
import torch

from spikelearn.circuit import gaussian
from spikelearn.models import SpikingRNN
from spikelearn.rules import BPTT, EProp
from spikelearn.tasks import make_task

TAU_SYN = (0.0, 2.0, 5.0, 10.0, 20.0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--unnormalised", action="store_true", help="same weights for every τ_s")
    ap.add_argument("--out", default=str(Path(__file__).parent))
    a = ap.parse_args()
    torch.set_num_threads(1)
    task = make_task("evidence_accumulation")
    rows = []
    for seed in range(a.seeds):
        x, y, mask = task.sample(a.batch, torch.Generator().manual_seed(1000 + seed))
        for tau_s in TAU_SYN:
            torch.manual_seed(seed)
            scale = 1.0 if (a.unnormalised or tau_s == 0) else 1.0 - math.exp(-1.0 / tau_s)
            model = SpikingRNN(gaussian(100, scale, seed=seed), task.n_in, task.n_out, n_adaptive=50,
                               tau_syn_ms=tau_s)
            with torch.no_grad():
                model.theta_in.mul_(scale)
            with torch.no_grad():
                rate = float(model(x, record=True).record.z.mean()) * 1000.0
            _, ge = EProp().gradients(model, x, y, mask, task.loss)
            _, gb = BPTT().gradients(model, x, y, mask, task.loss)
            row = {"seed": seed, "tau_syn_ms": tau_s, "rate_hz": rate}
            for k in ("theta_rec", "theta_in"):
                e, b = ge[k].flatten().double(), gb[k].flatten().double()
                row[f"cos_{k}"] = float(e @ b / (e.norm() * b.norm()))
                row[f"norm_ratio_{k}"] = float(e.norm() / b.norm())
            rows.append(row)
            print(row, flush=True)
    df = pd.DataFrame(rows)
    out = Path(a.out)
    tag = "_unnormalised" if a.unnormalised else ""
    df.to_csv(out / f"alignment{tag}.csv", index=False)
    summ = df.drop(columns="seed").groupby("tau_syn_ms").agg(["mean", "std"])
    summ.columns = [f"{c}_{s}" for c, s in summ.columns]
    summ.to_csv(out / f"summary{tag}.csv")
    with pd.option_context("display.width", 250, "display.float_format", "{:.3f}".format):
        print(summ.to_string())


if __name__ == "__main__":
    main()
