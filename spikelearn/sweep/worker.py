"""The work of one run, executed on a worker: train from a resolved configuration, return results as plain data.

:func:`run_one` is a top-level function of plain arguments (picklable, importable on every worker). It never
raises for a failing run: the error and traceback come back in the result, so only the driver decides what goes
into the store. An exception escaping it means the worker itself was lost.
"""

from __future__ import annotations

import math
import os
import pathlib
import socket
import time
import traceback
import warnings
from typing import Any, Sequence

import torch

import spikelearn
from spikelearn.build import resolve_measurements, train
from spikelearn.config import config_from_dict
from spikelearn.sweep.store import utc_now
from spikelearn.train import CHECKPOINT

__all__ = ["run_one", "history_to_metrics", "final_summary"]


def history_to_metrics(rows) -> list[tuple[int, str, float]]:
    """History (DataFrame or list of row dicts) -> ``(iteration, name, value)`` triples, missing values dropped."""
    records = rows.to_dict("records") if hasattr(rows, "to_dict") else list(rows)
    out = []
    for r in records:
        it = int(r["iteration"])
        for k, v in r.items():
            if k != "iteration" and v is not None and not (isinstance(v, float) and math.isnan(v)):
                out.append((it, str(k), float(v)))
    return out


def final_summary(rows) -> dict[str, Any]:
    """Last non-missing value of every history column (``iteration`` = last iteration run)."""
    records = rows.to_dict("records") if hasattr(rows, "to_dict") else list(rows)
    out: dict[str, Any] = {}
    for r in records:
        for k, v in r.items():
            if v is not None and not (isinstance(v, float) and math.isnan(v)):
                out[k] = int(v) if k == "iteration" else float(v)
    return out


def checkpoint_results(ck: pathlib.Path) -> dict[str, Any]:
    """``{"metrics", "summary"}`` of the history in checkpoint ``ck`` (what a failed or lost run keeps); ``{}`` when
    there is no readable checkpoint."""
    try:
        rows = torch.load(ck, map_location="cpu", weights_only=True)["history"]
    except Exception:  # noqa: BLE001 - no checkpoint, or an unreadable one: nothing to keep
        return {}
    return {"metrics": history_to_metrics(rows), "summary": final_summary(rows)}


def run_one(run_id: str, config: dict, run_dir: str, measurements: Sequence[dict] = (),
            torch_threads: int | None = None) -> dict:
    """Train one run into ``run_dir``, resuming from ``run_dir/checkpoint.pt`` when there is one.

    Args:
        run_id: the run's id (echoed back).
        config: the resolved :class:`~spikelearn.config.RunConfig` as nested dicts.
        run_dir: the run's folder (checkpoint, model, history.csv, summary.json; error.txt on failure).
        measurements: measurement hooks as :class:`~spikelearn.sweep.spec.MeasurementSpec` dicts.
        torch_threads: ``torch.set_num_threads`` for this process (``None``: leave as is).

    Returns:
        ``{"id", "status": "done" | "failed", "metrics": [(iteration, name, value)], "summary", "error",
        "host", "version", "start_time", "end_time", "resumed_from", "train_time_s"}``. A failed run keeps the
        metrics of its last checkpoint, if any.
    """
    res: dict[str, Any] = {"id": run_id, "host": socket.gethostname(), "version": spikelearn.__version__,
                           "start_time": utc_now(), "resumed_from": 0, "metrics": [], "summary": None,
                           "error": None}
    out = pathlib.Path(run_dir)
    ck = out / CHECKPOINT
    t0 = time.perf_counter()
    lock = None
    try:
        lock = _lock_run(out)
        if torch_threads:
            torch.set_num_threads(int(torch_threads))
        cfg = config_from_dict(config)
        hooks = resolve_measurements(measurements)
        resume = False
        if ck.exists():
            try:
                res["resumed_from"] = int(torch.load(ck, map_location="cpu", weights_only=True)["iteration"])
                resume = True
            except (RuntimeError, EOFError, KeyError, ValueError, OSError) as e:  # unreadable (not written by
                # Trainer's atomic save): start afresh, keeping the file aside rather than deleting it
                bad = ck.with_name(f"{ck.name}.unreadable-{int(time.time())}")
                os.replace(ck, bad)
                res["resumed_from"] = 0
                warnings.warn(f"run {run_id}: unreadable checkpoint moved to {bad} ({type(e).__name__}: {e}); "
                              f"the run starts from iteration 0", RuntimeWarning, stacklevel=1)
        hist, _ = train(cfg, out_dir=str(out), resume=resume, measurements=hooks)
        res.update(status="done", metrics=history_to_metrics(hist), summary=final_summary(hist))
    except Exception as e:  # a failing run is a result, not a crash of the sweep
        tb = traceback.format_exc()
        res.update(status="failed", error=f"{type(e).__name__}: {e}\n\n{tb}")
        try:
            out.mkdir(parents=True, exist_ok=True)
            (out / "error.txt").write_text(res["error"])
            res.update(checkpoint_results(ck))  # keep what was learned up to the last good checkpoint
        except Exception:  # pragma: no cover - the error itself is what matters
            pass
    finally:
        if lock is not None:
            os.close(lock)  # releases the flock
    res["train_time_s"] = time.perf_counter() - t0
    res["end_time"] = utc_now()
    return res


RUN_LOCK = "run.lock"


def _lock_run(run_dir: pathlib.Path, wait_s: float = 60.0) -> int | None:
    """An exclusive ``flock`` on ``run_dir/run.lock`` while the run trains, so that two processes never train one
    run into one folder (e.g. a worker of a killed driver that has not yet noticed, beside a resumed driver's).
    Waits up to ``wait_s`` (such a worker exits within about a second), then raises. ``None`` where ``fcntl`` is
    missing (Windows)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        return None
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / RUN_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise RuntimeError(f"another process is training this run (lock {run_dir / RUN_LOCK} held for "
                                   f"{wait_s:g} s); stop it, then resume with --retry-failed") from None
            time.sleep(0.5)
