"""The local route: the stationary Fokker–Planck residual with an estimated score (§15.2).

Stationarity of ``dx = f dt + √(2D) dW`` means ``∇·(f p) = D Δp``; divided by ``p``, with ``s = ∇ log p``::

    r(x) = ∇·f(x) + f(x)·s(x) − D (∇·s(x) + |s(x)|²) = 0      for every x

and the loss is ``mean_m r(x_m)²``. ``s`` and ``∇·s`` come from a score estimator (:mod:`spikelearn.objectives.scores`);
``∇·f`` is exact in low dimension and a Hutchinson estimate in high dimension. For an affine drift ``r`` is linear in
``z = (θ, 1, D)``: ``r = R z`` with the rows of :meth:`AffineDrift.local_rows` and the column ``−(∇·s + |s|²)``, so the
loss is ``zᵀ (RᵀR/M) z``. Derivation ours (ALGORITHMS-2.md §15.2 [D]).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from spikelearn.objectives.drifts import AffineDrift, divergence
from spikelearn.objectives.validation import as_samples, check_drift_output

__all__ = ["fp_residual", "fp_residual_loss", "local_rows", "local_system"]


def fp_residual(drift: Callable[[Tensor], Tensor], x: Tensor, score: Tensor, score_divergence: Tensor,
                D: Tensor | float, *, method: str = "auto", n_probes: int = 8,
                generator: torch.Generator | None = None) -> Tensor:
    """``r(x_m)`` ``(M,)`` for a differentiable drift ``(M, d) → (M, d)``; differentiable in its parameters and D.

    Args:
        x: samples ``(M, d)``; ``score`` ``(M, d)`` and ``score_divergence`` ``(M,)`` the score estimate at them.
    """
    if score.shape != x.shape or score_divergence.shape != x.shape[:1]:
        raise ValueError(f"score {tuple(score.shape)} / score divergence {tuple(score_divergence.shape)} do not "
                         f"match the samples {tuple(x.shape)}")
    f, div_f = divergence(drift, x, method=method, n_probes=n_probes, generator=generator, create_graph=True)
    check_drift_output(f, x)
    return div_f + (f * score).sum(1) - D * (score_divergence + (score * score).sum(1))


def fp_residual_loss(drift: Callable[[Tensor], Tensor], x: Tensor, score: Tensor, score_divergence: Tensor,
                     D: Tensor | float, **kwargs) -> Tensor:
    """``mean_m r(x_m)²`` (a scalar to minimise with any ``torch.optim`` optimiser)."""
    return fp_residual(drift, x, score, score_divergence, D, **kwargs).pow(2).mean()


def local_rows(drift: AffineDrift, x: Tensor, score: Tensor, score_divergence: Tensor, *, method: str = "auto",
               n_probes: int = 8, generator: torch.Generator | None = None) -> Tensor:
    """The residual's coefficient rows ``R`` ``(M, p + [1] + 1)``: ``r = R z`` with ``z = (θ, [1], D)``."""
    rows = drift.local_rows(x, score, method=method, n_probes=n_probes, generator=generator)
    return torch.cat([rows, -(score_divergence + (score * score).sum(1))[:, None]], dim=1)


def local_system(drift: AffineDrift, x: Tensor, score: Tensor, score_divergence: Tensor, *,
                 weights: Tensor | None = None, chunk: int = 4096, **kwargs) -> Tensor:
    """``H`` ``(n_w, Q, Q)`` = weighted ``RᵀR / Σw`` for each row of ``weights`` ``(n_w, M)`` (default ones),
    accumulated over chunks of samples."""
    x = as_samples(x, dim=drift.dim)
    w = torch.ones(1, x.shape[0], dtype=x.dtype) if weights is None else weights.to(x.dtype)
    H = None
    for start in range(0, x.shape[0], chunk):
        sl = slice(start, start + chunk)
        R = local_rows(drift, x[sl], score[sl], score_divergence[sl], **kwargs)
        part = torch.einsum("wm,mp,mq->wpq", w[:, sl], R, R)
        H = part if H is None else H + part
    assert H is not None
    return H / w.sum(1)[:, None, None]
