"""The linear system of an affine drift, its rank and its unidentifiable directions (§15.4).

Both routes give a loss ``L(z) = zᵀ H z`` in the augmented coefficients ``z = (θ, [1 for f₀], D)`` with ``H`` positive
semi-definite (``E[r rᵀ]`` of the residual's coefficient rows, or the KSD's Gram matrix). The fixed coefficients are the
offset's 1 and, when it is known, D; the unknowns ``z_U`` minimise ``L`` by ``H_UU z_U = −H_UF z_F``.

**Rank rule** (stated, and recorded with every result). Each parameter is rescaled by the size of its drift column,
``y_k = z_k · rms_k`` with ``rms_k = (mean_m |Φ_k(x_m)|²)^{1/2}`` (a parameter whose column vanishes keeps scale 1), and
D, when unknown, by the factor that gives its diagonal the mean of the others'; ``Ĥ = S H_UU S`` (``S = diag(1/rms)``),
``Ĥ = V Λ Vᵀ``. (Rescaling to unit diagonal instead would hide a null direction along a single parameter.) The same
``Ĥ`` is recomputed on ``n_bootstrap`` resamples of the data; eigenvalue ``i`` is told from zero only when
``λ_i > z · sd_b(λ_i)`` (``z = 3`` by default), its own bootstrap spread (sorted eigenvalues matched by rank). The
threshold recorded is ``τ_i = z · sd_b(λ_i)``, per eigenvalue. A direction failing it (``S v_i`` in the original
parameters) is reported unidentifiable, and the solution is restricted to the span of the others. A parameter gets a value only when its squared loading on the unidentifiable subspace (in the
rescaled coordinates) is below ``loading_tol`` (default 0.05); otherwise its estimate is NaN, never a spurious number.
Standard errors are the bootstrap standard deviations of the restricted solution.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

__all__ = ["LinearFit", "solve_quadratic", "bootstrap_weights"]


def bootstrap_weights(m: int, n_bootstrap: int, *, seed: int = 0, dtype: torch.dtype = torch.float64) -> Tensor:
    """``(1 + n_bootstrap, m)`` sample multiplicities: a row of ones (the data) then multinomial resamples."""
    g = torch.Generator().manual_seed(seed)
    w = torch.ones(1 + n_bootstrap, m, dtype=dtype)
    for b in range(n_bootstrap):
        w[1 + b] = torch.bincount(torch.randint(m, (m,), generator=g), minlength=m).to(dtype)
    return w


@dataclass(frozen=True)
class LinearFit:
    """Estimate of an affine drift's parameters (and D where identifiable) with its rank report.

    Attributes:
        route: ``"ksd"`` (global) or ``"local"`` (Fokker–Planck residual with score ``score``).
        names: the unknowns' names (the drift's parameters, then ``"D"`` when D was estimated).
        estimate: ``(n,)`` values; NaN for a parameter loaded on an unidentifiable direction.
        min_norm: ``(n,)`` the restricted solution for every unknown (NaN-free; not an estimate of the NaN ones).
        se: ``(n,)`` bootstrap standard errors (NaN where ``estimate`` is NaN or without bootstrap).
        D: the diffusion constant used (given) or estimated.
        D_estimated: whether D was an unknown.
        rank: number of identifiable directions; ``n_unknowns`` the size of the system.
        singular_values: ``(n,)`` eigenvalues of the rescaled system ``Ĥ``, descending.
        threshold: ``(n,)`` ``τ_i`` of the rank rule per eigenvalue; ``rule`` its statement.
        null_directions: ``(n − rank, n)`` unit vectors in the original parameter coordinates.
        null_loading: ``(n,)`` each parameter's squared loading on the unidentifiable subspace (rescaled coordinates).
        n_samples, n_bootstrap, details: provenance (bandwidth, score estimator, pair count ...).
    """

    route: str
    names: tuple[str, ...]
    estimate: np.ndarray
    min_norm: np.ndarray
    se: np.ndarray
    D: float
    D_estimated: bool
    rank: int
    n_unknowns: int
    singular_values: np.ndarray
    singular_value_spread: np.ndarray
    threshold: np.ndarray
    null_directions: np.ndarray
    null_loading: np.ndarray
    identifiable: np.ndarray
    n_samples: int
    n_bootstrap: int
    rule: str
    details: dict[str, Any] = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        """One row per unknown: parameter, estimate, se, identifiable, null_loading."""
        return pd.DataFrame({"parameter": list(self.names), "estimate": self.estimate, "se": self.se,
                             "identifiable": self.identifiable, "null_loading": self.null_loading,
                             "route": self.route})

    def spectrum(self) -> pd.DataFrame:
        """One row per eigenvalue of the rescaled system: value, bootstrap spread, threshold, identifiable."""
        return pd.DataFrame({"index": np.arange(len(self.singular_values)), "singular_value": self.singular_values,
                             "bootstrap_sd": self.singular_value_spread, "threshold": self.threshold,
                             "identifiable": self.singular_values > self.threshold})

    def value(self, name: str) -> float:
        """The estimate of one unknown (NaN when unidentifiable)."""
        return float(self.estimate[self.names.index(name)])


def _restricted_solve(Hs: Tensor, bs: Tensor, V: Tensor) -> Tensor:
    """Minimiser of ``yᵀ Hs y + 2 bsᵀ y`` over ``y ∈ span(V)``."""
    if V.shape[1] == 0:
        return torch.zeros_like(bs)
    c = torch.linalg.lstsq(V.T @ Hs @ V, -(V.T @ bs)).solution
    return V @ c


def solve_quadratic(H: Tensor, *, names: tuple[str, ...], has_offset: bool, D: float | None, route: str,
                    n_samples: int, column_rms: Tensor | None = None, z: float = 3.0, loading_tol: float = 0.05,
                    details: dict[str, Any] | None = None) -> LinearFit:
    """Minimise ``zᵀ H z`` over the unknowns (the rank rule of the module docstring).

    Args:
        H: ``(1 + B, Q, Q)``: the data's matrix then ``B`` bootstrap ones; ``Q = p + has_offset + 1`` with the
            coordinates ``(θ_1..θ_p, [f₀], D)``.
        names: the ``p`` parameter names.
        has_offset: whether coordinate ``p`` is the fixed part (coefficient 1).
        D: the known diffusion constant, or ``None`` to estimate it (requires ``has_offset``: §15.4a).
        column_rms: ``(p,)`` the parameters' column sizes (default ones: the parameters share units).
    """
    p = len(names)
    Q = H.shape[-1]
    if Q != p + int(has_offset) + 1:
        raise ValueError(f"system of size {Q} does not match {p} parameters, offset={has_offset} and D")
    if D is None and not has_offset:
        raise ValueError("D cannot be estimated for a drift without a fixed part: (f, D) -> (c f, c D) leaves the "
                         "stationary density unchanged (ALGORITHMS-2 §15.4a); give D (the estimate is then in units "
                         "of the given D)")
    H = H.to(torch.float64)
    unknown = list(range(p)) + ([Q - 1] if D is None else [])
    fixed = ([p] if has_offset else []) + ([Q - 1] if D is not None else [])
    zf = torch.tensor(([1.0] if has_offset else []) + ([float(D)] if D is not None else []), dtype=torch.float64)
    U, F = torch.tensor(unknown), torch.tensor(fixed)
    HUU = H[:, U][:, :, U]                                   # (1 + B, n, n)
    b = H[:, U][:, :, F] @ zf                                # (1 + B, n)
    rms = torch.ones(p, dtype=torch.float64) if column_rms is None else torch.as_tensor(column_rms).to(torch.float64)
    scale = torch.where(rms > 0, 1.0 / rms.clamp_min(1e-300), torch.ones_like(rms))
    if D is None:
        dd = float(HUU[0, -1, -1])
        mean_diag = float((torch.diagonal(HUU[0])[:p] * scale ** 2).mean())
        scale = torch.cat([scale, torch.tensor([(mean_diag / dd) ** 0.5 if dd > 0 else 1.0], dtype=torch.float64)])
    Hs = scale[:, None] * HUU * scale[None, :]
    bs = b * scale
    lam, V = torch.linalg.eigh(Hs[0])
    lam, V = lam.flip(0), V.flip(1)                          # descending
    n_boot = H.shape[0] - 1
    if n_boot > 1:
        spread = torch.linalg.eigvalsh(Hs[1:]).flip(1).std(0)
        tau = z * spread
    else:
        spread = torch.full_like(lam, float("nan"))
        tau = torch.full_like(lam, 1e-12 * float(lam[0]))   # no bootstrap: numerical rank only
    ident = lam > tau
    Vi, Vn = V[:, ident], V[:, ~ident]
    y = _restricted_solve(Hs[0], bs[0], Vi)
    sol = (scale * y).numpy()
    loading = (Vn ** 2).sum(1).numpy()
    ok = loading < loading_tol
    if n_boot > 0:
        zb = torch.stack([scale * _restricted_solve(Hs[i], bs[i], Vi) for i in range(1, n_boot + 1)])
        se = zb.std(0).numpy()
    else:
        se = np.full(len(unknown), np.nan)
    null = (scale[:, None] * Vn).T
    null = null / null.norm(dim=1, keepdim=True).clamp_min(1e-300)
    all_names = tuple(names) + (("D",) if D is None else ())
    est = np.where(ok, sol, np.nan)
    D_val = float(est[-1]) if D is None else float(D)
    rule = (f"eigenvalue of the column-scaled system <= {z:g} x its bootstrap sd over {n_boot} resamples -> "
            f"unidentifiable direction; parameter reported when its squared loading on those directions < "
            f"{loading_tol:g}" if n_boot > 1 else "no bootstrap: numerical rank (eigenvalue <= 1e-12 x largest)")
    return LinearFit(route=route, names=all_names, estimate=est, min_norm=sol, se=np.where(ok, se, np.nan), D=D_val,
                     D_estimated=D is None, rank=int(ident.sum()), n_unknowns=len(unknown),
                     singular_values=lam.numpy(), singular_value_spread=spread.numpy(), threshold=tau.numpy(),
                     null_directions=null.numpy(), null_loading=loading, identifiable=ok, n_samples=n_samples,
                     n_bootstrap=n_boot, rule=rule, details=dict(details or {}))
