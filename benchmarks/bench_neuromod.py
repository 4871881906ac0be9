"""Wall time and peak memory of one gradient computation: MDGL and ModProp beside e-prop and BPTT (ALIF, spiking).

Grid (defaults): N in {256, 1024}, T in {500, 2000}, B = 32, n_in = 40, n_out = 2, 2 % input spikes, all-to-all
Dale circuit (80 % E), scaling A, v_th = 0.6, half the neurons ALIF, MSE on random targets. Rules: ``BPTT()``,
``EProp()`` (batched), ``MDGL()`` (variant "mdgl", batched, reset in the traces), ``ModProp(mu=0.25)`` (spiking,
batched). Each measurement runs in a fresh subprocess (warm-up on 10 steps, then the best of ``--repeats`` calls);
peak memory is the increase of the maximum resident set size during the full-size calls (CPU). Usage::

    python benchmarks/bench_neuromod.py [--sizes 256 1024] [--T 500 2000] [--rules bptt eprop mdgl modprop]
                                        [--repeats 1] [--threads 1] [--batch 32]

Target (issue #5): MDGL time ≤ 1.3 × e-prop.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from _measure import measure

N_IN, N_OUT = 40, 2


def _measure(rule_name: str, n: int, T: int, B: int, repeats: int, threads: int) -> dict:
    import torch

    from spikelearn.circuit import dale
    from spikelearn.models import SpikingRNN
    from spikelearn.rules import BPTT, EProp
    from spikelearn.rules.mdgl import MDGL
    from spikelearn.rules.modprop import ModProp

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(T, B, N_IN, generator=g) < 0.02).float()
    y = torch.randn(T, B, N_OUT, generator=g)
    mask = torch.ones(T, B)
    model = SpikingRNN(dale(n, 0.8, p=1.0, g=1.0, seed=0), N_IN, N_OUT, n_adaptive=n // 2, v_th=0.6, n_ref=0,
                       scaling="A")
    rule = {"bptt": BPTT(), "eprop": EProp(), "mdgl": MDGL(), "modprop": ModProp(mu=0.25)}[rule_name]

    def loss_fn(y_hat, y, mask):
        return 0.5 * (((y_hat - y) ** 2).sum(-1) * mask).sum() / y.shape[1]

    best, peak = measure(lambda: rule.gradients(model, x, y, mask, loss_fn), repeats=repeats,
                         warmup=lambda: rule.gradients(model, x[:10], y[:10], mask[:10], loss_fn))
    return {"rule": rule_name, "N": n, "T": T, "B": B, "time_s": best, "peak_mb": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--T", type=int, nargs="+", default=[500, 2000])
    ap.add_argument("--rules", nargs="+", default=["bptt", "eprop", "mdgl", "modprop"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--_one", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._one:
        r, n, T = a._one
        print(json.dumps(_measure(r, int(n), int(T), a.batch, a.repeats, a.threads)))
        return
    rows = []
    print(f"{'N':>6} {'T':>6} {'rule':>8} {'time_s':>9} {'peak_MB':>9} {'x eprop':>8}")
    for n in a.sizes:
        for T in a.T:
            base = None
            for r in a.rules:
                out = subprocess.run([sys.executable, __file__, "--_one", r, str(n), str(T), "--batch",
                                      str(a.batch), "--repeats", str(a.repeats), "--threads", str(a.threads)],
                                     capture_output=True, text=True, check=True)
                row = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append(row)
                if r == "eprop":
                    base = row["time_s"]
                rel = f"{row['time_s'] / base:8.2f}" if base else f"{'':>8}"
                print(f"{n:6d} {T:6d} {r:>8} {row['time_s']:9.3f} {row['peak_mb']:9.1f} {rel}", flush=True)


if __name__ == "__main__":
    main()
