"""Overhead of the sweep machinery (run store, executors) per run, and the speed-up of a local process pool.

Measured in one process, on a grid of tiny rate-network runs (Gaussian circuit, n = 16, delayed match-to-sample,
batch 8) varying the seed:

* ``train() loop``   — calling :func:`spikelearn.build.train` for each configuration directly (after a warm-up
  run): the training cost the sweep machinery adds to.
* ``store only``     — the driver's store writes for every run (add, mark running, record ~the same metrics), no
  training: the run store's share of the overhead.
* ``local``          — :func:`spikelearn.sweep.run_sweep` in-process (one worker).
* ``local pool x2``  — a pool of 2 spawned worker processes (pool start and the workers' imports included).
* ``dask x2``        — a Dask ``LocalCluster`` of 2 one-thread worker processes (cluster start included).

Every run uses one torch thread (tiny networks are fastest so). Overhead per run = (sweep time − ``train() loop``
time) / runs. The same executors are then timed on fewer,
heavier runs (n = 64, 1000 iterations, ~2 s each) where training dominates, to show the pool's speed-up on this machine.
The ``start`` rows (two one-iteration runs) give the executors' fixed start-up cost.
Usage: ``python benchmarks/bench_sweep.py [--runs 100] [--iterations 5] [--heavy-runs 16] [--heavy-iterations 1000]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time
from pathlib import Path


def _spec(runs: int, iterations: int, n: int) -> dict:
    return {
        "circuit": {"kind": "gaussian", "n": n, "options": {"g": 1.0}},
        "model": {"type": "rate", "options": {"form": "richlazy"}},
        "task": {"name": "delayed_match_to_sample"},
        "optimizer": {"name": "adam", "lr": 1e-2},
        "train": {"iterations": iterations, "batch_size": 8, "eval_every": 5, "eval_batch_size": 16},
        "sweep": {"axes": {"train.seed": list(range(runs))}},
    }


def _time_train_loop(spec: dict, root: Path) -> float:
    from spikelearn.sweep import expand, sweep_from_dict
    from spikelearn.build import train

    runs = expand(sweep_from_dict(spec))
    train(runs[0].config, out_dir=str(root / "warmup"))  # first-call imports (torch._dynamo via optim) excluded
    t0 = time.perf_counter()
    for r in runs:
        train(r.config, out_dir=str(root / "direct" / r.id))
    return time.perf_counter() - t0


def _time_store_only(spec: dict, root: Path) -> float:
    from spikelearn.store import RunStore
    from spikelearn.sweep import expand, sweep_from_dict

    runs = expand(sweep_from_dict(spec))
    it = spec["train"]["iterations"]
    metrics = [(i, "loss", 1.0) for i in range(1, it + 1)] + [(i, "wall_time_s", 0.1) for i in range(1, it + 1)]
    metrics += [(i, k, 0.5) for i in range(1, it + 1) if i == 1 or i % 5 == 0 for k in ("accuracy", "eval_loss")]
    t0 = time.perf_counter()
    with RunStore(root / "store_only") as store:
        store.add_runs(runs)
        for r in runs:
            store.mark_running(r.id)
            store.record(r.id, status="done", metrics=metrics, summary={"loss": 1.0}, host="h", version="v")
    return time.perf_counter() - t0


def _time_sweep(spec: dict, root: Path, name: str, **kw) -> float:
    from spikelearn.sweep import run_sweep

    t0 = time.perf_counter()
    res = run_sweep(spec, root / name, **{"threads_per_run": 1, **kw})
    elapsed = time.perf_counter() - t0
    assert res.ok, res.counts
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--heavy-runs", type=int, default=16)
    ap.add_argument("--heavy-iterations", type=int, default=1000)
    args = ap.parse_args()
    logging.getLogger("distributed").setLevel(logging.ERROR)

    import torch

    torch.set_num_threads(1)  # every executor then runs each run on one thread: the pool's gain is parallelism
    rows = []
    print(f"# {platform.node()}: {os.cpu_count()} cores, torch {torch.__version__}, one torch thread per run; "
          f"load average before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start: dict = {}
        for label, spec in (("start", _spec(2, 1, 16)),
                            ("tiny", _spec(args.runs, args.iterations, 16)),
                            ("heavy", _spec(args.heavy_runs, args.heavy_iterations, 64))):
            n = len(spec["sweep"]["axes"]["train.seed"])
            base = _time_train_loop(spec, root / label)
            t = {"train() loop": base}
            if label == "tiny":
                t["store only"] = _time_store_only(spec, root / label)
            t["local"] = _time_sweep(spec, root / label, "local")
            t["local pool x2"] = _time_sweep(spec, root / label, "pool", workers=2)
            t["dask x2"] = _time_sweep(spec, root / label, "dask", executor="dask", workers=2)
            if label == "start":
                start = {k: t[k] - t["local"] for k in ("local pool x2", "dask x2")}
            for name, secs in t.items():
                over = (secs if name == "store only" else secs - base) / n * 1e3
                warm = "" if label == "start" or name not in start else f"{t['local'] / (secs - start[name]):.2f}x"
                rows.append((label, n, spec["train"]["iterations"], name, secs, secs / n * 1e3,
                             "" if name == "train() loop" else f"{over:+.1f}", t["local"] / secs, warm))
    print("# 'start' rows: 2 one-iteration runs, i.e. the fixed cost of starting the executor's worker processes "
          "(spawn, import torch and spikelearn, first optimizer)")
    head = ("runs", "n", "iters", "executor", "total s", "per run ms", "overhead/run ms", "speed-up vs local",
            "speed-up, start-up excluded")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for label, n, it, name, secs, per, over, sp, warm in rows:
        print(f"| {label} | {n} | {it} | {name} | {secs:.2f} | {per:.1f} | {over} | "
              f"{'' if name == 'store only' else f'{sp:.2f}x'} | {warm} |")
    print(f"# load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
