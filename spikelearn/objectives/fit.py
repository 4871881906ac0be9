"""Fitting drifts to timestamp-free stationary samples: the linear solve for affine drifts (both routes), the
matrix-free solve of the global route, and a plain training loop for any differentiable drift.

* :func:`fit_affine` — ``route="ksd"`` (global: no density, no score) or ``route="local"`` (Fokker–Planck residual
  with a score estimate); returns a :class:`~spikelearn.objectives.linear.LinearFit` with the rank report of §15.4.
* :func:`fit_affine_matrix_free` — the global route by conjugate gradients on Hessian-vector products of ``KSD²``
  (no ``p × p`` matrix), for systems whose quadratic form would not fit in memory; D known.
* :func:`train_drift` — any ``torch.nn.Module`` drift trained on either loss with any ``torch.optim`` optimiser.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from spikelearn.objectives.drifts import AffineDrift
from spikelearn.objectives.kernels import ksd, ksd_gram, median_bandwidth, pair_blocks, stein_kernel
from spikelearn.objectives.linear import LinearFit, bootstrap_weights, solve_quadratic
from spikelearn.objectives.residual import fp_residual_loss, local_system
from spikelearn.objectives.scores import GMMScore, ScoreEstimator
from spikelearn.objectives.systems import RateNetworkDrift
from spikelearn.objectives.validation import as_samples, check_drift_output

__all__ = ["column_rms", "fit_affine", "fit_affine_matrix_free", "MatrixFreeFit", "train_drift"]


def fit_affine(x: Tensor, drift: AffineDrift, *, D: float | None, route: str = "ksd",
               score: ScoreEstimator | None = None, bandwidth: float | None = None, n_bootstrap: int = 20,
               seed: int = 0, max_pairs: float = 4e7, block_size: int = 512, divergence_method: str = "auto",
               n_probes: int = 8, z: float = 3.0, loading_tol: float = 0.05, refit_score: bool = True,
               statistic: str = "U") -> LinearFit:
    """Estimate ``θ`` (and ``D`` when ``D is None`` and the drift has a fixed part) from stationary samples.

    Args:
        x: samples ``(M, d)`` of the stationary density (no order, no time stamps).
        drift: the affine family.
        D: the known diffusion constant, or ``None`` to estimate it (refused without a fixed part, §15.4a).
        route: ``"ksd"`` or ``"local"``.
        score: the score estimator of the local route (default ``GMMScore(8)``); fitted here on ``x``.
        bandwidth: the RBF kernel's ``h`` (default: median heuristic).
        n_bootstrap: resamples for the rank rule's threshold and the standard errors.
        max_pairs, block_size: the global route's pair budget (all pairs up to ``max_pairs``, then random blocks).
        statistic: ``"U"`` (default: self-pairs left out, no ``O(1/M)`` shrinkage) or ``"V"`` (the V-statistic).
        divergence_method, n_probes: ``∇·Φ`` exact or Hutchinson (local route).
        z, loading_tol: the rank rule (:mod:`spikelearn.objectives.linear`).
        refit_score: the local route's bootstrap refits the score on every resample (default; the score's error is
            most of that route's variability) or keeps the one fitted on ``x``.
    """
    x = as_samples(x, dim=drift.dim)
    if route not in ("ksd", "local"):
        raise ValueError(f"route {route!r}: use 'ksd' (kernel Stein discrepancy) or 'local' (Fokker–Planck residual)")
    if D is None and not drift.has_offset:
        raise ValueError("D cannot be estimated for a drift without a fixed part: (f, D) -> (c f, c D) leaves the "
                         "stationary density unchanged (ALGORITHMS-2 §15.4a); give D")
    if D is not None and not (np.isfinite(D) and D > 0):
        raise ValueError(f"D must be a positive number, got {D!r}")
    drift.columns(x[:2])  # shape check before the heavy part
    g = torch.Generator().manual_seed(seed)
    if route == "ksd":
        w = bootstrap_weights(x.shape[0], n_bootstrap, seed=seed, dtype=x.dtype)
        h = float(bandwidth) if bandwidth is not None else median_bandwidth(x, seed=seed)
        H = ksd_gram(x, drift.columns, h, weights=w, block_size=block_size, max_pairs=max_pairs, generator=g,
                     statistic=statistic)
        details = {"bandwidth": h, "pairs": min(float(x.shape[0]) ** 2, max_pairs), "statistic": statistic}
    else:
        est = score if score is not None else GMMScore()
        # the bootstrap refits the score on every resample: its error dominates the local route's variability
        Hs = []
        s_x = div_x = None
        for b in range(n_bootstrap + 1):
            idx = torch.arange(x.shape[0]) if b == 0 else torch.randint(x.shape[0], (x.shape[0],), generator=g)
            if b == 0 or refit_score:
                s_b, div_b = copy.deepcopy(est).fit(x[idx]).evaluate(x[idx])
                if b == 0:
                    s_x, div_x = s_b, div_b
            else:
                assert s_x is not None and div_x is not None
                s_b, div_b = s_x[idx], div_x[idx]
            Hs.append(local_system(drift, x[idx], s_b, div_b, method=divergence_method, n_probes=n_probes,
                                   generator=g)[0])
        H = torch.stack(Hs)
        details = {"score": repr(est)}
    rms = column_rms(drift, x)
    return solve_quadratic(H, names=drift.names, has_offset=drift.has_offset, D=D, route=route,
                           n_samples=x.shape[0], column_rms=rms, z=z, loading_tol=loading_tol, details=details)


def column_rms(drift: AffineDrift, x: Tensor, *, max_points: int = 2000) -> Tensor:
    """``(mean_m |Φ_k(x_m)|²)^{1/2}`` ``(p,)`` over at most ``max_points`` samples (the parameters' natural scales)."""
    xs = x[:max_points]
    if isinstance(drift, RateNetworkDrift):   # structured: edge j → i has column φ(x_j) e_i, bias e_i
        ph = drift.phi(xs[:, torch.tensor(drift.pre)])
        return torch.cat([ph.pow(2).mean(0).sqrt(), torch.ones(drift.dim, dtype=x.dtype)])
    c = drift.columns(xs)[:, :, : drift.n_params]
    return c.pow(2).sum(1).mean(0).sqrt()


@dataclass(frozen=True)
class MatrixFreeFit:
    """Result of :func:`fit_affine_matrix_free`: ``theta`` ``(p,)``, CG ``iterations``, final relative
    ``residual_norm``, ``converged``, the kernel ``bandwidth`` and the number of sample ``pairs`` used."""

    theta: np.ndarray
    iterations: int
    residual_norm: float
    converged: bool
    bandwidth: float
    pairs: int


def fit_affine_matrix_free(x: Tensor, drift: Callable[[Tensor, Tensor], Tensor], n_params: int, *, D: float,
                           bandwidth: float | None = None, ridge: float = 0.0, tol: float = 1e-8,
                           max_iter: int = 500, max_pairs: float = 4e7, block_size: int = 1024,
                           seed: int = 0) -> MatrixFreeFit:
    """The global route for ``f(x) = Φ(x) θ + f₀(x)`` given only as ``drift(x, theta)`` (linear in ``theta``).

    ``KSD²(θ) = θᵀHθ + 2bᵀθ + c`` is never formed: ``Hv`` is half the difference of two autograd gradients, and
    conjugate gradients solve ``(H + ridge·I) θ = −b`` over a fixed set of sample pairs. The rank report needs the
    eigenvalues, so it is not available here; use ``ridge > 0`` when ``H`` may be singular."""
    x = as_samples(x)
    h = float(bandwidth) if bandwidth is not None else median_bandwidth(x, seed=seed)
    blocks = pair_blocks(x.shape[0], block_size=block_size, max_pairs=max_pairs,
                         generator=torch.Generator().manual_seed(seed))
    count = sum(len(a) * len(b) for a, b in blocks)
    check_drift_output(drift(x[:2], torch.zeros(n_params, dtype=x.dtype)), x[:2])

    def grad(theta: Tensor) -> Tensor:
        th = theta.detach().requires_grad_(True)
        total = torch.zeros_like(theta)
        for ia, ib in blocks:   # one block's graph in memory at a time
            val = stein_kernel(x[ia], x[ib], drift(x[ia], th), drift(x[ib], th), D, h).sum() / count
            total = total + torch.autograd.grad(val, th)[0]
        return total

    zero = torch.zeros(n_params, dtype=x.dtype)
    g0 = grad(zero)                       # 2b

    def hv(v: Tensor) -> Tensor:
        return 0.5 * (grad(v) - g0) + ridge * v

    theta = torch.zeros_like(zero)
    r = -0.5 * g0 - hv(theta)
    pvec = r.clone()
    rs = float(r @ r)
    b_norm = max(float(g0.norm()) * 0.5, 1e-300)
    it = 0
    for it in range(1, max_iter + 1):
        Ap = hv(pvec)
        alpha = rs / float(pvec @ Ap)
        theta = theta + alpha * pvec
        r = r - alpha * Ap
        rs_new = float(r @ r)
        if rs_new ** 0.5 / b_norm < tol:
            rs = rs_new
            break
        pvec = r + (rs_new / rs) * pvec
        rs = rs_new
    res = rs ** 0.5 / b_norm
    return MatrixFreeFit(theta=theta.numpy(), iterations=it, residual_norm=res, converged=res < tol, bandwidth=h,
                         pairs=count)


def train_drift(drift: nn.Module, x: Tensor, *, loss: str = "ksd", D: Tensor | float,
                optimiser: Callable[..., torch.optim.Optimizer] = torch.optim.Adam, lr: float = 1e-2,
                steps: int = 500, batch_size: int = 512, score: ScoreEstimator | None = None,
                bandwidth: float | None = None, seed: int = 0, divergence_method: str = "auto",
                n_probes: int = 8) -> pd.DataFrame:
    """Train a differentiable drift ``(M, d) → (M, d)`` on minibatches of stationary samples.

    ``loss="ksd"``: the V-statistic on a minibatch (all its pairs); ``loss="local"``: the Fokker–Planck residual with
    a score estimated once on all of ``x``. ``D`` may be a tensor with ``requires_grad`` (then pass it to the optimiser
    through a module parameter; with no fixed part in the drift it scales away, §15.4a). Returns a DataFrame with one
    row per step (``step``, ``loss``)."""
    x = as_samples(x)
    check_drift_output(drift(x[:2]), x[:2])
    g = torch.Generator().manual_seed(seed)
    params: list[Tensor] = [p for p in drift.parameters() if p.requires_grad]
    if isinstance(D, Tensor) and D.requires_grad:
        params.append(D)
    opt = optimiser(params, lr=lr)
    if loss == "ksd":
        h = float(bandwidth) if bandwidth is not None else median_bandwidth(x, seed=seed)
        s_all = div_all = None
    elif loss == "local":
        est = (score if score is not None else GMMScore()).fit(x)
        s_all, div_all = est.evaluate(x)
        h = float("nan")
    else:
        raise ValueError(f"loss {loss!r}: use 'ksd' or 'local'")
    rows = []
    for step in range(steps):
        idx = torch.randint(x.shape[0], (min(batch_size, x.shape[0]),), generator=g)
        xb = x[idx]
        if loss == "ksd":
            val = ksd(xb, drift(xb), D, h)
        else:
            assert s_all is not None and div_all is not None
            val = fp_residual_loss(drift, xb, s_all[idx], div_all[idx], D, method=divergence_method,
                                   n_probes=n_probes, generator=g)
        opt.zero_grad()
        val.backward()
        opt.step()
        rows.append({"step": step, "loss": float(val.detach())})
    return pd.DataFrame(rows)
