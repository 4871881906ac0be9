"""Forward and forward+BPTT time and peak memory of SpikingRNN against snnTorch and a plain GEMM bound.

For N in {256, 1024}, B = 32, T = 1000 (n_in = 40, n_out = 2), measured in the same run:

* ``spikelearn``  — ``SpikingRNN`` (LIF, all-to-all Gaussian circuit), forward only and forward + backward (BPTT).
* ``snntorch``    — ``snntorch.RLeaky`` (all-to-all recurrent linear layer) driven by an ``nn.Linear`` input
  layer, stepped in a Python loop, same sizes.
* ``gemm``        — the same-shape matrix work in plain torch: one (T·B, n_in) @ (n_in, N) input projection and
  T sequential (B, N) @ (N, N) recurrent products: the bound a step-by-step simulator cannot beat.
* ``spikelearn_cuba`` / ``snntorch_cuba`` (``--cuba``) — current-based synapses: ``SpikingRNN(tau_syn_ms=5)`` and
  ``snntorch.RSynaptic`` (all-to-all), the same sizes.

Each measurement runs in a fresh subprocess; peak memory is the increase of the process's maximum resident
set size over its size just before the first (warm-up) call (CPU), or ``torch.cuda.max_memory_allocated`` (CUDA).
Usage: ``python benchmarks/bench_forward.py [--device cpu|cuda] [--repeats 3] [--sizes 256 1024] [--T 1000] [--cuba]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys

from _measure import markdown, measure

B, N_IN, N_OUT = 32, 40, 2


def _measure(impl: str, mode: str, n: int, T: int, device: str, repeats: int) -> dict:
    import torch

    torch.manual_seed(0)
    dev = torch.device(device)
    x = (torch.rand(T, B, N_IN, device=dev) < 0.02).float()
    if impl in ("spikelearn", "spikelearn_cuba"):
        from spikelearn.circuit import gaussian
        from spikelearn.models import SpikingRNN

        model = SpikingRNN(gaussian(n, 1.0, seed=0), N_IN, N_OUT, n_adaptive=0, v_th=0.6, n_ref=0,
                           scaling="A", tau_syn_ms=5.0 if impl == "spikelearn_cuba" else 0.0).to(dev)

        def run():
            return model(x).y
    elif impl == "snntorch_cuba":
        import math

        import snntorch as snn

        lin = torch.nn.Linear(N_IN, n).to(dev)
        rs = snn.RSynaptic(alpha=math.exp(-1 / 5), beta=0.95, linear_features=n, all_to_all=True).to(dev)
        ro = torch.nn.Linear(n, N_OUT).to(dev)

        def run():
            spk, syn, mem = rs.init_rsynaptic()
            cur = lin(x)
            ys = []
            for c in cur.unbind(0):
                spk, syn, mem = rs(c, spk, syn, mem)
                ys.append(ro(spk))
            return torch.stack(ys)
    elif impl == "snntorch":
        import snntorch as snn

        lin = torch.nn.Linear(N_IN, n).to(dev)
        rl = snn.RLeaky(beta=0.95, linear_features=n, all_to_all=True).to(dev)
        ro = torch.nn.Linear(n, N_OUT).to(dev)

        def run():
            spk, mem = rl.init_rleaky()
            cur = lin(x)
            ys = []
            for c in cur.unbind(0):
                spk, mem = rl(c, spk, mem)
                ys.append(ro(spk))
            return torch.stack(ys)
    elif impl == "gemm":
        W_in = torch.randn(n, N_IN, device=dev) / N_IN**0.5
        W = (torch.randn(n, n, device=dev) / n**0.5).requires_grad_(mode == "bptt")
        W_out = torch.randn(N_OUT, n, device=dev) / n**0.5

        def run():
            cur = x @ W_in.T
            h = torch.zeros(B, n, device=dev)
            hs = []
            for c in cur.unbind(0):
                h = c + h @ W.T
                hs.append(h)
            return torch.stack(hs) @ W_out.T
    else:
        raise ValueError(impl)

    def call():
        if mode == "forward":
            with torch.no_grad():
                run()
        else:
            run().square().mean().backward()

    # one untimed warm-up call (first-call allocations and kernel selection), then the best of `repeats`
    best, peak = measure(call, repeats=repeats, device=device, warmup=call)
    return {"impl": impl, "mode": mode, "N": n, "T": T, "time_s": best, "peak_mem_mb": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--T", type=int, default=1000)
    ap.add_argument("--cuba", action="store_true", help="also current-based synapses (spikelearn, snnTorch RSynaptic)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        impl, mode, n = args.child.split(",")
        print(json.dumps(_measure(impl, mode, int(n), args.T, args.device, args.repeats)))
        return
    import pandas as pd
    import torch

    rows = []
    for n in args.sizes:
        for mode in ("forward", "bptt"):
            impls = ("spikelearn", "snntorch", "gemm") + (("spikelearn_cuba", "snntorch_cuba") if args.cuba else ())
            for impl in impls:
                out = subprocess.run([sys.executable, __file__, "--child", f"{impl},{mode},{n}", "--T", str(args.T),
                                      "--device", args.device, "--repeats", str(args.repeats)],
                                     capture_output=True, text=True, check=True)
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(f"  {impl:10s} {mode:7s} N={n:5d}: {rows[-1]['time_s']:.3f} s", file=sys.stderr)
    df = pd.DataFrame(rows)
    t = df.pivot_table(index=["N", "mode"], columns="impl", values="time_s")
    m = df.pivot_table(index=["N", "mode"], columns="impl", values="peak_mem_mb")
    table = pd.DataFrame({
        "spikelearn_s": t["spikelearn"], "snntorch_s": t["snntorch"], "gemm_s": t["gemm"],
        "gemm/spikelearn": t["gemm"] / t["spikelearn"], "snntorch/spikelearn": t["snntorch"] / t["spikelearn"],
        "spikelearn_MB": m["spikelearn"], "snntorch_MB": m["snntorch"], "gemm_MB": m["gemm"],
    })
    if args.cuba:
        table["cuba_s"] = t["spikelearn_cuba"]
        table["cuba/lif"] = t["spikelearn_cuba"] / t["spikelearn"]
        table["snntorch_cuba_s"] = t["snntorch_cuba"]
        table["snntorch_cuba/cuba"] = t["snntorch_cuba"] / t["spikelearn_cuba"]
    table = table.round(3)
    fwd = t.xs("forward", level="mode")["spikelearn"]
    bptt = t.xs("bptt", level="mode")["spikelearn"]
    print(f"# machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, device {args.device}; B={B}, T={args.T}, n_in={N_IN}; best of {args.repeats}")
    print(markdown(table))
    print("\nspikelearn BPTT / forward time:", (bptt / fwd).round(2).to_dict())


if __name__ == "__main__":
    main()
