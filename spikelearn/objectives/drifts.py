"""Drifts: affine ``f(x) = Φ(x) θ + f₀(x)`` (both routes reduce to a linear system) and divergence helpers.

Any differentiable torch function ``f_θ(x)`` ``(M, d) → (M, d)`` is a drift as well; the losses of
:mod:`spikelearn.objectives.residual` and :mod:`spikelearn.objectives.kernels` then train it with any ``torch.optim``
optimiser. Divergences ``∇·f`` are exact (``d`` derivative passes) in low dimension and Hutchinson estimates
``E_v[vᵀ (∂f/∂x) v]`` with Rademacher probes ``v`` in high dimension (``method="auto"`` switches at ``d > 16``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor
from torch.func import jvp

from spikelearn.objectives.validation import as_samples

__all__ = ["AffineDrift", "divergence", "rademacher", "EXACT_DIVERGENCE_MAX_DIM"]

#: ``method="auto"`` computes divergences exactly up to this dimension, by Hutchinson probes above it
EXACT_DIVERGENCE_MAX_DIM = 16


def rademacher(shape: tuple[int, ...], *, dtype: torch.dtype, generator: torch.Generator | None) -> Tensor:
    """±1 entries with equal probability."""
    return torch.randint(0, 2, shape, generator=generator).to(dtype) * 2 - 1


def _exact(method: str, d: int) -> bool:
    if method not in ("auto", "exact", "hutchinson"):
        raise ValueError(f"divergence method {method!r}: use 'auto', 'exact' or 'hutchinson'")
    return method == "exact" or (method == "auto" and d <= EXACT_DIVERGENCE_MAX_DIM)


def divergence(fn: Callable[[Tensor], Tensor], x: Tensor, *, method: str = "auto", n_probes: int = 8,
               generator: torch.Generator | None = None, create_graph: bool = True) -> tuple[Tensor, Tensor]:
    """``(fn(x), ∇·fn(x))`` for a row-wise map ``fn`` ``(M, d) → (M, d)``: ``(M, d)`` and ``(M,)``.

    Reverse mode through autograd, so with ``create_graph=True`` the divergence stays differentiable in ``fn``'s
    parameters (a loss built on it trains them)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        y = fn(x)
        if tuple(y.shape) != tuple(x.shape):
            raise ValueError(f"drift output shape {tuple(y.shape)} disagrees with the samples' shape {tuple(x.shape)}")
        d = x.shape[1]
        div = x.new_zeros(x.shape[0])
        if _exact(method, d):
            for i in range(d):
                (gi,) = torch.autograd.grad(y[:, i].sum(), x, create_graph=create_graph, retain_graph=True)
                div = div + gi[:, i]
        else:
            for _ in range(n_probes):
                v = rademacher(tuple(x.shape), dtype=x.dtype, generator=generator)
                (gv,) = torch.autograd.grad((y * v).sum(), x, create_graph=create_graph, retain_graph=True)
                div = div + (gv * v).sum(1) / n_probes
    return y, div


@dataclass(frozen=True)
class AffineDrift:
    """``f(x) = Φ(x) θ + f₀(x)``.

    Attributes:
        features: ``Φ``, a map ``(M, d) → (M, d, p)``.
        dim: ``d``.
        names: the ``p`` parameter names.
        offset: the fixed part ``f₀`` ``(M, d) → (M, d)``, or ``None`` (then D scales away: §15.4a).
        true_values: the parameters that generated data, when known (``(p,)``; used by experiments only).
    """

    features: Callable[[Tensor], Tensor]
    dim: int
    names: tuple[str, ...]
    offset: Callable[[Tensor], Tensor] | None = None
    true_values: tuple[float, ...] | None = None

    @property
    def n_params(self) -> int:
        return len(self.names)

    @property
    def has_offset(self) -> bool:
        return self.offset is not None

    def __call__(self, x: Tensor, theta: Tensor) -> Tensor:
        """The drift at ``x`` ``(M, d)`` for parameters ``theta`` ``(p,)``: ``(M, d)``."""
        theta = torch.as_tensor(theta, dtype=x.dtype)
        if theta.shape != (self.n_params,):
            raise ValueError(f"theta has shape {tuple(theta.shape)}; this drift has {self.n_params} parameters")
        c = self.columns(x)
        return c[:, :, : self.n_params] @ theta + (c[:, :, self.n_params] if self.has_offset else 0.0)

    def columns(self, x: Tensor) -> Tensor:
        """``[Φ(x), f₀(x)]`` ``(M, d, p + 1)`` (without the last column when there is no offset)."""
        phi = self.features(x)
        m, d = x.shape
        if tuple(phi.shape) != (m, d, self.n_params):
            raise ValueError(f"drift features have shape {tuple(phi.shape)}, expected (M, d, p) = "
                             f"{(m, d, self.n_params)} for samples of shape {(m, d)}")
        if self.offset is None:
            return phi
        f0 = self.offset(x)
        if tuple(f0.shape) != (m, d):
            raise ValueError(f"drift offset output shape {tuple(f0.shape)} disagrees with the samples' shape {(m, d)}")
        return torch.cat([phi, f0[:, :, None]], dim=2)

    def column_divergence(self, x: Tensor, *, method: str = "auto", n_probes: int = 8,
                          generator: torch.Generator | None = None) -> Tensor:
        """``∇·`` of every column of :meth:`columns`: ``(M, p + 1)`` (forward-mode derivatives)."""
        m, d = x.shape
        if _exact(method, d):
            out = None
            for i in range(d):
                e = torch.zeros_like(x)
                e[:, i] = 1.0
                dc = jvp(self.columns, (x,), (e,))[1]
                out = dc[:, i, :] if out is None else out + dc[:, i, :]
            assert out is not None
            return out
        out = None
        for _ in range(n_probes):
            v = rademacher((m, d), dtype=x.dtype, generator=generator)
            dc = jvp(self.columns, (x,), (v,))[1]
            term = torch.einsum("mdp,md->mp", dc, v) / n_probes
            out = term if out is None else out + term
        assert out is not None
        return out

    def local_rows(self, x: Tensor, score: Tensor, *, method: str = "auto", n_probes: int = 8,
                   generator: torch.Generator | None = None) -> Tensor:
        """``∇·C_k(x) + C_k(x)·s(x)`` for every column ``C_k`` of :meth:`columns`: ``(M, p + 1)``.

        The Fokker–Planck residual is ``r = Σ_k z_k row_k − D (∇·s + |s|²)`` with ``z = (θ, 1)``."""
        x = as_samples(x, dim=self.dim)
        return self.column_divergence(x, method=method, n_probes=n_probes, generator=generator) + torch.einsum(
            "mdp,md->mp", self.columns(x), score)
