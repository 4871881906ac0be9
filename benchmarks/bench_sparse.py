"""Dense vs sparse (per-edge) storage of W_rec, and the flyvis optic-lobe lattice at full size (issue 19).

Two parts (each measurement in a fresh subprocess, time = best of ``--repeats``, peak memory = the increase of the
process's resident-set high-water mark during the timed calls, ``benchmarks/_measure.py``):

* ``crossover``: a random Dale circuit (80 % excitatory) at N ∈ {1024, 4096} and density p ∈ {0.1, 1, 5, 10, 50} %;
  LIF, B = 8, T = 100, 2 % input spikes; the forward (no graph), BPTT and batched e-prop gradients, dense vs sparse.
  The ``storage="auto"`` threshold is read off this table.
* ``flyvis``: ``drosophila_optic_lobe(lattice_radius=15)`` (45,669 cells, 1,513,231 edges, as flyvis); build time and peak memory;
  forward trial-steps per second at B = 8 (spikelearn sparse, and a plain scipy CSR loop of the same LIF update over
  the same matrix, in the same process); BPTT and batched e-prop gradient time and peak memory at T = 100 (sparse).

* ``brian2``: one trial (B = 1, T = 100) of the same lattice network in spikelearn and in Brian2 (numpy and cython
  runtime targets; wall time of the whole call, build and compilation included, and of Brian2's ``net.run``).

Usage::

    python benchmarks/bench_sparse.py [--part crossover flyvis brian2] [--sizes 1024 4096] [--densities 0.001 0.01 0.05 0.1 0.5]
                                      [--repeats 3] [--threads 1] [--device cpu]

Results are in the README ("Sparse storage"), with the machine they ran on.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time

import numpy as np

HERE = __file__


def _case(spec: dict) -> dict:
    """One measurement, in this (fresh) process."""
    import torch

    sys.path.insert(0, str(__import__("pathlib").Path(HERE).resolve().parent))
    from _measure import measure, rss_mb

    import spikelearn as sl
    from spikelearn.models import SpikingRNN
    from spikelearn.rules import BPTT, EProp

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    device = spec["device"]
    T, B = spec["T"], spec["B"]
    t0 = time.perf_counter()
    if spec["circuit"] == "flyvis":
        circuit = sl.connectomes.load("drosophila_optic_lobe", lattice_radius=15)
        v_th = 5.0
    else:
        circuit = sl.circuit.dale(spec["N"], 0.8, p=spec["p"], seed=0)
        v_th = 0.2
    t_circuit = time.perf_counter() - t0
    rss_before = rss_mb()
    t0 = time.perf_counter()
    model = SpikingRNN(circuit, 20, 2, storage=spec["storage"], v_th=v_th, device=device)
    t_model = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(1)
    x = (torch.rand(T, B, 20, generator=gen) < 0.02).float().to(device)
    y = torch.zeros(T, B, 2, device=device)
    mask = torch.ones(T, B, device=device)

    def mse(a: torch.Tensor, b: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return 0.5 * (((a - b) ** 2).sum(-1) * m).sum()

    out: dict = {"n": circuit.n, "edges": circuit.n_edges, "circuit_s": t_circuit, "model_s": t_model,
                 "build_rss_mb": rss_mb() - rss_before}
    with torch.no_grad():
        rate = float(model(x).state.z.float().mean())
    out["rate_last_step"] = rate
    what = spec["what"]
    if what == "forward":
        def fwd() -> object:
            with torch.no_grad():
                return model(x)
        out["s"], out["mb"] = measure(fwd, repeats=spec["repeats"], device=device, warmup=lambda: fwd())
    elif what in ("bptt", "eprop"):
        rule = BPTT() if what == "bptt" else EProp()
        out["s"], out["mb"] = measure(lambda: rule.gradients(model, x, y, mask, mse), repeats=spec["repeats"],
                                      device=device, warmup=lambda: rule.gradients(model, x[:5], y[:5], mask[:5], mse))
    elif what.startswith("brian2_"):  # the same network and input in Brian2 (float64; build/compile included)
        from spikelearn.validate import run_brian2

        t0 = time.perf_counter()
        res = run_brian2(model, x, target=what.split("_", 1)[1])
        out["s"], out["mb"] = time.perf_counter() - t0, rss_mb() - rss_before
        out["brian2_wall_s"] = res.wall_s
    elif what == "scipy_loop":  # the same LIF update over the same matrix with scipy CSR (float32)
        W = circuit.weights(dense=False).astype(np.float32).tocsr()
        c = model.constants()
        alpha, vth = float(c.alpha[0]), float(c.v_th[0])
        W_in = model.effective_weights().W_in.detach().cpu().numpy().astype(np.float32)
        xn = x.cpu().numpy()

        def loop() -> object:
            v = np.zeros((circuit.n, B), np.float32)
            z = np.zeros((circuit.n, B), np.float32)
            for t in range(T):
                v = alpha * v + (W @ z) + W_in @ xn[t].T - vth * z
                z = (v > vth).astype(np.float32)
            return z
        out["s"], out["mb"] = measure(loop, repeats=spec["repeats"], device="cpu", warmup=None)
    return out


def _run(spec: dict) -> dict:
    r = subprocess.run([sys.executable, HERE, "--case", json.dumps(spec)], capture_output=True, text=True)
    if r.returncode != 0:
        return {"error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--part", nargs="+", default=["crossover", "flyvis"], choices=["crossover", "flyvis", "brian2"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[1024, 4096])
    ap.add_argument("--densities", nargs="+", type=float, default=[0.001, 0.01, 0.05, 0.1, 0.5])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    if a.case:
        print(json.dumps(_case(json.loads(a.case))))
        return
    import torch

    print(f"machine: {platform.machine()} {platform.processor() or ''}, {__import__('os').cpu_count()} cores, "
          f"torch {torch.__version__}, {a.threads} thread(s), device {a.device}")
    base = dict(threads=a.threads, device=a.device, repeats=a.repeats, T=100, B=8)
    if "crossover" in a.part:
        print("\n| N | density | edges | forward dense s | forward sparse s | BPTT dense s | BPTT sparse s | "
              "e-prop dense s | e-prop sparse s | e-prop dense MB | e-prop sparse MB |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for N in a.sizes:
            for p in a.densities:
                row = {}
                for what in ("forward", "bptt", "eprop"):
                    for storage in ("dense", "sparse"):
                        row[what, storage] = _run(dict(base, circuit="dale", N=N, p=p, what=what, storage=storage))
                e = row["forward", "sparse"].get("edges", "?")

                def f(k: tuple, field: str = "s") -> str:
                    v = row[k].get(field)
                    return f"{v:.3g}" if isinstance(v, float) else row[k].get("error", "?")
                print(f"| {N} | {p:g} | {e} | {f(('forward', 'dense'))} | {f(('forward', 'sparse'))} | "
                      f"{f(('bptt', 'dense'))} | {f(('bptt', 'sparse'))} | {f(('eprop', 'dense'))} | "
                      f"{f(('eprop', 'sparse'))} | {f(('eprop', 'dense'), 'mb')} | {f(('eprop', 'sparse'), 'mb')} |",
                      flush=True)
    if "flyvis" in a.part:
        fly = dict(base, circuit="flyvis", storage="sparse", repeats=1)
        fw = _run(dict(fly, what="forward"))
        sc = _run(dict(fly, what="scipy_loop"))
        bp = _run(dict(fly, what="bptt"))
        ep = _run(dict(fly, what="eprop"))
        steps = fly["T"] * fly["B"]
        print("\nflyvis lattice radius 15 (sparse storage, LIF, B = 8, T = 100):")
        print(f"  cells {fw.get('n')}, edges {fw.get('edges')}; circuit load {fw.get('circuit_s', float('nan')):.2f} s, "
              f"model build {fw.get('model_s', float('nan')):.2f} s, build memory {fw.get('build_rss_mb', float('nan')):.0f} MB")
        for name, r in (("spikelearn forward", fw), ("scipy CSR loop", sc), ("BPTT gradient", bp),
                        ("e-prop gradient (batched)", ep)):
            if "s" in r:
                print(f"  {name}: {r['s']:.2f} s per trial ({steps / r['s']:.0f} trial-steps/s), peak {r['mb']:.0f} MB")
            else:
                print(f"  {name}: {r.get('error')}")

    if "brian2" in a.part:  # one trial (B = 1, T = 100) on the full lattice: spikelearn vs Brian2's runtime targets
        one = dict(base, circuit="flyvis", storage="sparse", repeats=1, B=1)
        print("\nflyvis lattice radius 15, one trial (B = 1, T = 100), float64 network in Brian2:")
        for what in ("forward", "brian2_numpy", "brian2_cython"):
            r = _run(dict(one, what=what))
            if "s" in r:
                extra = f", Brian2 net.run {r['brian2_wall_s']:.1f} s" if "brian2_wall_s" in r else ""
                print(f"  {what}: {r['s']:.2f} s{extra}, memory {r['mb']:.0f} MB", flush=True)
            else:
                print(f"  {what}: {r.get('error')}", flush=True)


if __name__ == "__main__":
    main()
