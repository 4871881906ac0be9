"""Simulated trial-steps per second: spikelearn (batched) vs Brian2 on the same circuit.

Network: ``SpikingRNN`` on an Erdős–Rényi circuit (N = 1000, p = 0.1, ≈100k synapses; 20 % ALIF, n_ref = 5),
40 Poisson inputs, 1 s of biological time (T = 1000 steps of 1 ms), float64 in both simulators.

* ``spikelearn``           — one batched forward of B = 32 trials (``torch.no_grad``), float64 and float32.
* ``brian2 numpy``         — Brian2's numpy runtime (no compiler), one trial, and B = 32 trials as 32 disconnected
  copies in one run.
* ``brian2 cython``        — if it compiles: first run (code generation + compilation, cache in ``--build-dir``)
  and a second run from the cache.
* ``brian2 cpp_standalone`` — if ``g++`` works: build + run, and the simulation time the device reports.

``trial_steps_per_s = B * T / seconds``. Usage:
``python benchmarks/bench_brian2.py [--targets numpy,cython,cpp_standalone] [--batch 32] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch


def _model(n: int, p: float, n_in: int):
    from spikelearn.circuit import erdos_renyi
    from spikelearn.models import SpikingRNN

    torch.manual_seed(0)
    return SpikingRNN(erdos_renyi(n, p, g=1.0, seed=0), n_in, 2, n_adaptive=n // 5, n_ref=5,
                      tau_adapt_ms=500.0, dtype="float64")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--p", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--targets", default="numpy,cython,cpp_standalone")
    ap.add_argument("--build-dir", default=None, help="compiled code (default: a temporary folder, removed)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from spikelearn.validate import run_brian2

    n_in, T, B = 40, args.steps, args.batch
    model = _model(args.n, args.p, n_in)
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(T, B, n_in, generator=g, dtype=torch.float64) < 0.02).to(torch.float64)
    build = Path(args.build_dir) if args.build_dir else Path(tempfile.mkdtemp(prefix="bench-brian2-"))
    rows = []

    def add(name, batch, seconds, note=""):
        rows.append((name, batch, seconds, batch * T / seconds, note))

    with torch.no_grad():
        model(x[:10])
        t0 = time.perf_counter()
        model(x)  # timed as Brian2 is run: spikes and output only, no state recording
        t_sl = time.perf_counter() - t0
        out = model(x, record=True)  # untimed: the spikes for the identity checks
        add("spikelearn float64", B, t_sl, f"{out.record.z.mean().item() * 1e3:.1f} Hz")
        m32 = _model(args.n, args.p, n_in).float()
        t0 = time.perf_counter()
        m32(x.float())
        add("spikelearn float32", B, time.perf_counter() - t0)
    targets = args.targets.split(",")
    if "numpy" in targets:
        r = run_brian2(model, x[:, :1], record_state=False)
        ok = torch.equal(torch.from_numpy(r.z), out.record.z[:, :1])
        add("brian2 numpy", 1, r.wall_s, f"spikes identical: {ok}")
        r = run_brian2(model, x, record_state=False)
        add("brian2 numpy (B copies)", B, r.wall_s)
    if "cython" in targets:
        try:
            r = run_brian2(model, x[:, :1], target="cython", build_dir=build / "cython", record_state=False)
            add("brian2 cython, 1st run", 1, r.wall_s, "incl. compilation")
            r = run_brian2(model, x[:, :1], target="cython", build_dir=build / "cython", record_state=False)
            same = torch.equal(torch.from_numpy(r.z), out.record.z[:, :1])
            add("brian2 cython, cached", 1, r.wall_s, f"identical: {same}")
        except Exception as e:  # noqa: BLE001 - report and go on
            rows.append(("brian2 cython", 1, float("nan"), float("nan"), f"failed: {type(e).__name__}: {e}"[:80]))
    if "cpp_standalone" in targets:
        if shutil.which("g++") is None:
            rows.append(("brian2 cpp_standalone", 1, float("nan"), float("nan"), "no g++"))
        else:
            try:
                r = run_brian2(model, x[:, :1], target="cpp_standalone", build_dir=build / "cpp",
                               record_state=False)
                add("brian2 cpp_standalone", 1, r.wall_s,
                    f"incl. build; identical: {torch.equal(torch.from_numpy(r.z), out.record.z[:, :1])}")
                if r.extra.get("run_time_s"):
                    add("brian2 cpp_standalone, sim only", 1, r.extra["run_time_s"], "device-reported")
            except Exception as e:  # noqa: BLE001
                rows.append(("brian2 cpp_standalone", 1, float("nan"), float("nan"),
                             f"failed: {type(e).__name__}: {e}"[:80]))
    if args.build_dir is None:
        shutil.rmtree(build, ignore_errors=True)
    print(f"N = {args.n}, p = {args.p} ({int(model.mask_rec.sum())} synapses), T = {T} steps (1 ms), "
          f"{platform.processor() or platform.machine()}, torch threads {args.threads}")
    print(f"{'simulator':34s} {'B':>3s} {'seconds':>9s} {'trial-steps/s':>14s}  note")
    for name, b, s, tps, note in rows:
        print(f"{name:34s} {b:3d} {s:9.2f} {tps:14.0f}  {note}")


if __name__ == "__main__":
    main()
