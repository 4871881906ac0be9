"""Time of a Lyapunov spectrum and of one flossing step (ALGORITHMS.md §7).

Case (the issue's): rate network (R1, tanh, γ = 0.1), N = 256, k = 32 exponents, T = 1000 steps, one trajectory,
QR every step, input 4 channels of Gaussian noise. Rows:

* ``spectrum``        — :func:`spikelearn.analysis.lyapunov_spectrum` (forward run + 1000 × (J Q, QR));
* ``floss autodiff``  — one flossing gradient by reverse mode through run, Jacobian products and QR;
* ``floss local``     — one local flossing update (§7.3; no backward pass);
* ``spiking spectrum``— the same for a LIF network (N = 256, surrogate Jacobian) for comparison.

For each torch thread count and dtype; median of ``--repeats`` runs after one warm-up.
Usage: ``python benchmarks/bench_lyapunov.py [--threads 1 2] [--repeats 3] [--T 1000] [--k 32] [--n 256]``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from spikelearn.analysis.lyapunov import lyapunov_spectrum
from spikelearn.circuit import gaussian
from spikelearn.dynamics import FlossingConfig, flossing_grads
from spikelearn.models import RateRNN, SpikingRNN


def _time(fn, repeats: int) -> float:
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--T", type=int, default=1000)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--n", type=int, default=256)
    a = ap.parse_args()
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, N = {a.n}, k = {a.k}, "
          f"T = {a.T}, batch 1, QR every step\n")
    print(f"{'case':<18} {'dtype':<8} {'threads':>7} {'time (s)':>9} {'ms/step':>8}")
    for dtype in (torch.float32, torch.float64):
        torch.manual_seed(0)
        rate = RateRNN(gaussian(a.n, 1.5, seed=0), 4, 2, tau_ms=10.0, dt_ms=1.0, hidden_bias=True, dtype=dtype)
        lif = SpikingRNN(gaussian(a.n, 1.0, seed=0), 4, 2, v_th=0.3, n_ref=2, dtype=dtype)
        x = torch.randn(a.T, 1, 4, dtype=dtype, generator=torch.Generator().manual_seed(1))
        cfg = FlossingConfig(k=a.k)
        cases = {
            "spectrum": lambda: lyapunov_spectrum(rate, x, k=a.k),
            "floss autodiff": lambda: flossing_grads(rate, x, None, cfg),
            "floss local": lambda: flossing_grads(rate, x, None, cfg._replace(mode="local")),
            "spiking spectrum": lambda: lyapunov_spectrum(lif, 0.5 * x.abs(), k=a.k),
        }
        for nt in a.threads:
            torch.set_num_threads(nt)
            for name, fn in cases.items():
                t = _time(fn, a.repeats)
                print(f"{name:<18} {str(dtype).replace('torch.', ''):<8} {nt:>7} {t:>9.3f} {1e3 * t / a.T:>8.3f}")


if __name__ == "__main__":
    main()
