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
    """Kill the worker process at ``iteration == at``, the first ``times`` times (counted in file ``counter``).

    Each death is claimed atomically (``counter.<k>`` created with O_EXCL), so two runs reaching ``at`` together
    cannot both read "not yet" and both die — a read-then-write count raced when workers ran in lockstep."""
    if iteration == at:
        for k in range(times):
            try:
                os.close(os.open(f"{counter}.{k}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                continue
            pathlib.Path(counter).write_text(str(k + 1))
            os._exit(3)
    return 0.0
