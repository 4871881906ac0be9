"""Cost of the curvature and rich/lazy analyses (spikelearn.analysis.hessian / .regime) on CPU.

* ``hessian``: top Hessian eigenvalue (w.r.t. W_rec, untruncated CE + ½·1e-2·||θ||² loss) of a 128-unit ReLU rate
  RNN (BiolHessRNN set-up, α ≈ 0, ALGORITHMS.md §9.1) on sequential digits (T = 8, batch 256), at initialisation
  and after 300 BPTT iterations (Adam, lr 1e-3). Lanczos with the default stopping rule (rtol 1e-3 on the Ritz
  residual bound) and power iteration (the source's method: |Δλ| < 1e-6, ≤ 500 products) are compared with a
  tight Lanczos reference (rtol 1e-10); ``rel_err`` is relative to it.
* ``tangent kernel``: the 768 × 768 tangent kernel w.r.t. W_rec of a 300-unit rich/lazy RNN (γ = 1, no biases) on
  delayed match-to-sample (T = 8 steps × 32 trials × 3 outputs, §8.3), by per-trial ``vmap(jacrev)`` and by one
  batched autograd backward; ``alignment`` = two kernels (initial vs. perturbed weights) plus the alignment.

Usage: ``python benchmarks/bench_analysis.py [--threads 2] [--repeats 1]``. Times are wall-clock seconds.
"""

from __future__ import annotations

import argparse
import copy
import math
import platform
import time

import torch


def _digits_model(n: int = 128):
    from spikelearn.circuit import gaussian
    from spikelearn.models import RateRNN

    torch.manual_seed(0)
    w_in = torch.randn(n, 8, dtype=torch.float64) * math.sqrt(2 / 8)
    return RateRNN(gaussian(n, math.sqrt(2.0), seed=0), 8, 10, form="relu_lif", tau_ms=0.1, dt_ms=1.0,
                   w_in=w_in)


def bench_hessian(rows: list, repeats: int) -> None:
    from spikelearn.analysis.hessian import hessian_operator, power_iteration, top_eigenvalues
    from spikelearn.tasks import make_task
    from spikelearn.rules import BPTT, apply_gradients

    task = make_task("sequential_digits")
    model = _digits_model()
    x, y, mask = task.sample(256, torch.Generator().manual_seed(1))
    trials = torch.Generator().manual_seed(2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for stage, iters in (("init", 0), ("trained 300 it", 300)):
        for _ in range(iters):
            xb, yb, mb = task.sample(256, trials)
            _, g = BPTT().gradients(model, xb, yb, mb, task.loss)
            apply_gradients(model, g)
            opt.step()
        op = hessian_operator(model, x, y, mask, task.loss, l2=1e-2)
        ref = float(top_eigenvalues(op, op.n, 1, rtol=1e-10, max_matvec=300,
                                    generator=torch.Generator().manual_seed(0)).eigenvalues[0])
        op(torch.randn(op.n))  # warm-up
        t0 = time.perf_counter()
        for _ in range(20):
            op(torch.randn(op.n))
        t_hvp = (time.perf_counter() - t0) / 20
        for method in ("lanczos", "power"):
            best, res = math.inf, None
            for _ in range(repeats):
                t0 = time.perf_counter()
                build = hessian_operator(model, x, y, mask, task.loss, l2=1e-2)
                gen = torch.Generator().manual_seed(0)
                res = (top_eigenvalues(build, build.n, 1, generator=gen) if method == "lanczos"
                       else power_iteration(build, build.n, generator=gen))
                best = min(best, time.perf_counter() - t0)
            lam = float(res.eigenvalues[0])
            rows.append(("hessian", f"{stage}: {method}", f"N=128, P={op.n}", res.n_matvec, f"{lam:.6g}",
                         f"{abs(lam - ref) / abs(ref):.1e}", f"{best:.2f}", f"{1e3 * t_hvp:.1f} ms/HVP"))


def bench_kernel(rows: list, repeats: int) -> None:
    from spikelearn.analysis.regime import kernel_alignment, tangent_kernel
    from spikelearn.circuit import gaussian
    from spikelearn.models import RateRNN
    from spikelearn.tasks import make_task

    task = make_task("delayed_match_to_sample")
    x, _, _ = task.sample(32, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    m0 = RateRNN(gaussian(300, 1.25, seed=0), task.n_in, task.n_out, form="richlazy", tau_ms=100.0, dt_ms=100.0,
                 readout_bias=False)
    m1 = copy.deepcopy(m0)
    with torch.no_grad():
        m1.theta_rec.add_(0.02 * torch.randn(300, 300))
    for method in ("vmap", "autograd"):
        best = math.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            K = tangent_kernel(m0, x, method=method)
            best = min(best, time.perf_counter() - t0)
        rows.append(("tangent kernel", f"one kernel, {method}", "N=300, P=90000", "-", f"{tuple(K.shape)}", "-",
                     f"{best:.2f}", "float32"))
    t0 = time.perf_counter()
    ka = kernel_alignment(tangent_kernel(m0, x), tangent_kernel(m1, x))
    rows.append(("tangent kernel", "alignment (2 kernels, vmap)", "N=300, 768x768", "-", f"KA={ka:.4f}", "-",
                 f"{time.perf_counter() - t0:.2f}", "float32"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads")
    rows: list = []
    bench_hessian(rows, args.repeats)
    bench_kernel(rows, args.repeats)
    head = ("analysis", "case", "size", "products", "result", "rel_err", "time_s", "note")
    w = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    print(" | ".join(h.ljust(k) for h, k in zip(head, w)))
    print("-|-".join("-" * k for k in w))
    for r in rows:
        print(" | ".join(str(c).ljust(k) for c, k in zip(r, w)))


if __name__ == "__main__":
    main()
