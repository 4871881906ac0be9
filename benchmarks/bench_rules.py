"""Wall time and peak memory of one gradient computation: BPTT, batched e-prop and online e-prop (LIF and ALIF).

Grid (defaults): N in {256, 1024}, B = 32, T in {500, 2000}, n_in = 40, n_out = 2, 2 % input spike probability,
all-to-all Gaussian circuit (g = 1), scaling A, v_th = 0.6, no refractoriness, MSE loss on random targets. ALIF:
half the neurons adapt (tau_a = 2000 ms); ``cuba_lif``/``cuba_alif``: the same with current-based synapses (τ_s = 5 ms). Rules: ``BPTT()``, ``EProp()`` (mode "batched"), ``EProp(mode="online")``
(chunks of 100 steps, traces read once at the end of the trial).

Each measurement runs in a fresh subprocess: a warm-up call on the first 10 steps, then the best of ``--repeats``
full-size calls; peak memory is the increase of the process's maximum resident set size during the full-size calls
over its size just before them (CPU; a full-size warm-up would hide the peak, as freed heap memory stays mapped), or
``torch.cuda.max_memory_allocated`` (CUDA). Usage::

    python benchmarks/bench_rules.py [--sizes 256 1024] [--T 500 2000] [--neurons lif alif cuba_lif cuba_alif]
                                     [--rules bptt eprop eprop_online] [--repeats 1] [--threads 1] [--device cpu]

Targets (issue #4): batched e-prop ≤ 1.5 × BPTT time; online e-prop peak memory grows < 10 % when T quadruples.

Measured on the shared 2-core x86_64 CPU of the development machine (1 thread, float32, torch 2.13; N = 256 best of 3,
N = 1024 one call; other jobs were running, so times carry ~±20 % noise):

| N | T | neuron | BPTT s | e-prop s | online s | BPTT MB | e-prop MB | online MB | e-prop/BPTT time |
|---|---|---|---|---|---|---|---|---|---|
| 256 | 500 | LIF | 0.51 | 0.36 | 2.6 | 176 | 95 | 73 | 0.71 |
| 256 | 500 | ALIF | 0.61 | 0.47 | 3.5 | 198 | 102 | 85 | 0.77 |
| 256 | 2000 | LIF | 2.28 | 1.61 | 8.2 | 647 | 245 | 68 | 0.71 |
| 256 | 2000 | ALIF | 1.99 | 1.46 | 12.8 | 732 | 275 | 72 | 0.73 |
| 1024 | 500 | LIF | 2.17 | 1.20 | 16.6 | 551 | 341 | 367 | 0.55 |
| 1024 | 500 | ALIF | 2.13 | 1.32 | 22.2 | 659 | 382 | 449 | 0.62 |
| 1024 | 2000 | LIF | 8.10 | 4.58 | 58.8 | 2444 | 1166 | 398 | 0.57 |
| 1024 | 2000 | ALIF | 8.55 | 4.75 | 88.2 | 2826 | 1180 | 488 | 0.56 |

Online peak memory T = 500 → 2000: −8 % / −15 % (N = 256 LIF / ALIF; RSS noise) and +8 % / +9 % (N = 1024).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys

from _measure import markdown, measure

B, N_IN, N_OUT = 32, 40, 2


def _measure(rule_name: str, neuron: str, n: int, T: int, device: str, repeats: int, threads: int) -> dict:
    import torch

    from spikelearn.circuit import gaussian
    from spikelearn.models import SpikingRNN
    from spikelearn.rules import BPTT, EProp

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    dev = torch.device(device)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(T, B, N_IN, generator=g) < 0.02).float().to(dev)
    y = torch.randn(T, B, N_OUT, generator=g).to(dev)
    mask = torch.ones(T, B, device=dev)
    cuba = neuron.startswith("cuba_")  # current-based synapses, tau_syn = 5 ms
    model = SpikingRNN(gaussian(n, 1.0, seed=0), N_IN, N_OUT, n_adaptive=n // 2 if neuron.endswith("alif") else 0,
                       tau_adapt_ms=2000.0, v_th=0.6, n_ref=0, scaling="A", tau_syn_ms=5.0 if cuba else 0.0).to(dev)
    rule = {"bptt": BPTT(), "eprop": EProp(), "eprop_online": EProp(mode="online")}[rule_name]

    def loss_fn(y_hat, y, mask):
        return 0.5 * (((y_hat - y) ** 2).sum(-1) * mask).sum() / y.shape[1]

    # warm-up on 10 steps (lazy initialisation, code paths); the first full-size call sets the peak
    best, peak = measure(lambda: rule.gradients(model, x, y, mask, loss_fn), repeats=repeats, device=device,
                         warmup=lambda: rule.gradients(model, x[:10], y[:10], mask[:10], loss_fn))
    return {"rule": rule_name, "neuron": neuron, "N": n, "T": T, "time_s": best, "peak_mem_mb": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads in each measurement")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--T", type=int, nargs="+", default=[500, 2000])
    ap.add_argument("--neurons", nargs="+", default=["lif", "alif"])
    ap.add_argument("--rules", nargs="+", default=["bptt", "eprop", "eprop_online"])
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        rule, neuron, n, T = args.child.split(",")
        print(json.dumps(_measure(rule, neuron, int(n), int(T), args.device, args.repeats, args.threads)))
        return
    import pandas as pd
    import torch

    rows = []
    for n in args.sizes:
        for T in args.T:
            for neuron in args.neurons:
                for rule in args.rules:
                    out = subprocess.run([sys.executable, __file__, "--child", f"{rule},{neuron},{n},{T}",
                                          "--device", args.device, "--repeats", str(args.repeats),
                                          "--threads", str(args.threads)],
                                         capture_output=True, text=True, check=True)
                    rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                    r = rows[-1]
                    print(f"  {rule:13s} {neuron:4s} N={n:5d} T={T:5d}: {r['time_s']:8.2f} s "
                          f"{r['peak_mem_mb']:8.1f} MB", file=sys.stderr, flush=True)
    df = pd.DataFrame(rows)
    t = df.pivot_table(index=["N", "T", "neuron"], columns="rule", values="time_s")
    m = df.pivot_table(index=["N", "T", "neuron"], columns="rule", values="peak_mem_mb")
    table = pd.DataFrame({f"{r}_s": t[r] for r in args.rules if r in t})
    for r in args.rules:
        if r in m:
            table[f"{r}_MB"] = m[r]
    if "bptt" in t and "eprop" in t:
        table["eprop/bptt time"] = t["eprop"] / t["bptt"]
    table = table.round(3)
    print(f"# machine: {platform.processor() or platform.machine()}, {args.threads} thread(s), torch "
          f"{torch.__version__}, device {args.device}; B={B}, n_in={N_IN}; time: best of {args.repeats}; "
          f"memory: peak RSS increase")
    print(markdown(table))
    if "eprop_online" in m and len(args.T) > 1:
        lo, hi = min(args.T), max(args.T)
        mm = m["eprop_online"].unstack("T")
        growth = (mm[hi] / mm[lo] - 1).round(3)
        print(f"\nonline e-prop peak-memory growth from T={lo} to T={hi}:", growth.to_dict())


if __name__ == "__main__":
    main()
