"""Measurement hooks used by the sweep tests (importable by workers through sys.path / PYTHONPATH)."""

import os
import pathlib
import time


def sleepy(model, task, iteration, seconds=0.02):
    """Slow a run down so a test can kill it mid-run; the value is constant."""
    time.sleep(seconds)
    return 0.0


def weight_norm(model, task, iteration):
    return float(sum(float(p.detach().pow(2).sum()) for p in model.parameters()) ** 0.5)


def die(model, task, iteration, counter, at=6, times=1):
    """Kill the worker process at ``iteration == at``, the first ``times`` times (counted in file ``counter``)."""
    if iteration == at:
        path = pathlib.Path(counter)
        n = int(path.read_text()) if path.exists() else 0
        if n < times:
            path.write_text(str(n + 1))
            os._exit(3)
    return 0.0
