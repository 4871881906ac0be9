"""Shared measurement helpers of the benchmark scripts (run each measurement in its own process)."""

from __future__ import annotations

import resource
import time
from typing import Callable


def _reset_peak_rss() -> bool:
    """Reset the kernel's resident-set high-water mark (VmHWM) to the current RSS (Linux ≥ 4.0); False if not."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status_mb(field: str) -> float:
    """A memory field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``, ...) in MiB; NaN where unavailable."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb() -> float:
    """Resident set size of this process now, in MiB (Linux)."""
    return _status_mb("VmRSS")


def measure(call: Callable[[], object], *, repeats: int, device: str = "cpu",
            warmup: Callable[[], object] | None = None) -> tuple[float, float]:
    """``(best wall time in s, peak memory in MiB)`` of ``repeats`` calls.

    Peak memory is the increase of the process's resident-set high-water mark over its resident size just before
    the first timed call, the mark being reset then (``/proc/self/clear_refs``, so earlier peaks — imports, warm-up —
    do not count; where that reset is unavailable the lifetime ``ru_maxrss`` is used) (CPU), or
    ``torch.cuda.max_memory_allocated`` over the allocation then (CUDA). An
    optional ``warmup`` (e.g. a short version of the call) runs before that baseline is taken.
    """
    import torch

    cuda = torch.device(device).type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    if warmup is not None:
        warmup()
        sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rss0 = rss_mb()
    reset = (not cuda) and _reset_peak_rss()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        sync()
        times.append(time.perf_counter() - t0)
    if cuda:
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = (_status_mb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024) - rss0
    return min(times), max(peak, 0.0)


def markdown(df) -> str:
    """A DataFrame as a markdown table when ``tabulate`` is installed, else as plain text."""
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return df.to_string()
    return df.to_markdown()
