"""Input checks shared by the objectives: samples and drift outputs are refused with a message that names them."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["as_samples", "check_drift_output"]


def as_samples(x: Any, *, dim: int | None = None, name: str = "samples", dtype: torch.dtype | None = None) -> Tensor:
    """``x`` as an ``(M, d)`` tensor (float64 unless ``dtype``), refused when it is not 2-D, has fewer than two rows,
    holds NaN or infinite values, or has ``d != dim``."""
    if isinstance(x, Tensor):
        t = x if dtype is None else x.to(dtype)
        if not t.is_floating_point():
            t = t.to(torch.float64)
    else:
        t = torch.as_tensor(np.asarray(x, dtype=np.float64), dtype=dtype or torch.float64)
    if dtype is None and not isinstance(x, Tensor):
        t = t.to(torch.float64)
    if t.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (M samples, d dimensions), got shape {tuple(t.shape)}")
    if t.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 samples, got {t.shape[0]}")
    bad = ~torch.isfinite(t).all(dim=1)
    if bool(bad.any()):
        rows = torch.nonzero(bad).flatten()[:5].tolist()
        raise ValueError(f"{name} contain NaN or infinite values in {int(bad.sum())} of {t.shape[0]} rows "
                         f"(first rows: {rows})")
    if dim is not None and t.shape[1] != dim:
        raise ValueError(f"{name} have d={t.shape[1]} dimensions but the drift expects dim={dim}")
    return t


def check_drift_output(out: Tensor, x: Tensor, what: str = "drift") -> Tensor:
    """Refuse a drift output whose shape is not that of the samples ``x`` ``(M, d)``."""
    if not isinstance(out, Tensor):
        raise TypeError(f"{what} must return a torch tensor, got {type(out).__name__}")
    if tuple(out.shape) != tuple(x.shape):
        raise ValueError(f"{what} output shape {tuple(out.shape)} disagrees with the samples' shape {tuple(x.shape)} "
                         f"(a drift maps (M, d) states to (M, d) velocities)")
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"{what} output holds NaN or infinite values")
    return out
