"""Test systems and samplers of their stationary distributions (§15.4–15.5).

* Stochastic Lorenz: ``dx = σ(y − x)``, ``dy = x(ρ − z) − y``, ``dz = xy − βz``, plus ``√(2D) dW``; affine in
  ``(σ, ρ, β)`` with the fixed part ``(0, −xz − y, xy)`` (so D is identifiable).
* Ornstein–Uhlenbeck ``dx = A x dt + √(2D) dW``: its stationary law is ``N(0, Σ)`` with ``AΣ + ΣAᵀ + 2D I = 0``,
  sampled exactly. With ``A = −a I + ω J`` (``J`` the rotation generator) and ``Σ = σ² I``, ``ω`` is invisible.
* A noisy rate network on a :class:`~spikelearn.circuit.Circuit`: ``dx = (−x + W φ(x) + b) dt + √(2D) dW`` with
  ``W`` non-zero only on the circuit's edges; affine in ``(W_E, b)`` with the fixed leak ``−x``.

Samplers: Euler–Maruyama ``x ← x + f(x) dt + √(2D dt) ξ`` over many parallel chains, a burn-in, thinning, and a
shuffle; its O(dt) bias on the stationary law is checked by halving ``dt`` (:func:`dt_halving_check`); the stochastic
Heun scheme (``scheme="heun"``) reduces that bias to O(dt²).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import scipy.linalg
import torch
from torch import Tensor

from spikelearn.circuit import Circuit
from spikelearn.objectives.drifts import AffineDrift
from spikelearn.objectives.linear import LinearFit
from spikelearn.objectives.validation import as_samples

__all__ = ["lorenz", "lorenz_drift", "linear_drift", "rotation_drift", "ou_stationary_covariance", "ou_samples",
           "RateNetworkDrift", "rate_network", "euler_maruyama", "stationary_samples", "dt_halving_check",
           "LORENZ_PARAMETERS"]

#: the classical chaotic parameters (σ, ρ, β)
LORENZ_PARAMETERS = (10.0, 28.0, 8.0 / 3.0)


def _lorenz_features(x: Tensor) -> Tensor:
    z0 = torch.zeros_like(x[:, 0])
    phi = torch.stack([torch.stack([x[:, 1] - x[:, 0], z0, z0], 1),      # σ
                       torch.stack([z0, x[:, 0], z0], 1),                  # ρ
                       torch.stack([z0, z0, -x[:, 2]], 1)], 2)             # β
    return phi


def _lorenz_offset(x: Tensor) -> Tensor:
    return torch.stack([torch.zeros_like(x[:, 0]), -x[:, 0] * x[:, 2] - x[:, 1], x[:, 0] * x[:, 1]], 1)


def lorenz(parameters: tuple[float, float, float] = LORENZ_PARAMETERS) -> AffineDrift:
    """The stochastic Lorenz family, affine in ``(sigma, rho, beta)``; ``true_values`` = ``parameters``."""
    return AffineDrift(_lorenz_features, 3, ("sigma", "rho", "beta"), _lorenz_offset, tuple(map(float, parameters)))


def lorenz_drift(parameters: tuple[float, float, float] = LORENZ_PARAMETERS) -> Callable[[Tensor], Tensor]:
    """``f(x)`` ``(M, 3) → (M, 3)`` of the Lorenz system at fixed parameters."""
    fam = lorenz(parameters)
    th = torch.tensor(parameters, dtype=torch.float64)
    return lambda x: fam(x, th.to(x.dtype))


def linear_drift(d: int, A: np.ndarray | None = None) -> AffineDrift:
    """``f(x) = A x`` with all ``d²`` entries unknown (names ``a11 .. add``, row-major); no fixed part."""
    def features(x: Tensor) -> Tensor:
        m = x.shape[0]
        phi = torch.zeros(m, d, d, d, dtype=x.dtype)
        for i in range(d):
            phi[:, i, i, :] = x
        return phi.reshape(m, d, d * d)

    names = tuple(f"a{i + 1}{j + 1}" for i in range(d) for j in range(d))
    true = None if A is None else tuple(np.asarray(A, dtype=float).ravel().tolist())
    return AffineDrift(features, d, names, None, true)


def rotation_drift(a: float | None = None, omega: float | None = None) -> AffineDrift:
    """2-D ``f(x) = (−a I + ω J) x``, ``J = [[0, −1], [1, 0]]``, affine in ``(a, omega)``; no fixed part."""
    def features(x: Tensor) -> Tensor:
        return torch.stack([-x, torch.stack([-x[:, 1], x[:, 0]], 1)], 2)

    true = None if a is None or omega is None else (float(a), float(omega))
    return AffineDrift(features, 2, ("a", "omega"), None, true)


def ou_stationary_covariance(A: np.ndarray, D: float) -> np.ndarray:
    """``Σ`` solving ``AΣ + ΣAᵀ + 2D I = 0`` (``A`` must be stable)."""
    A = np.asarray(A, dtype=np.float64)
    if np.max(np.linalg.eigvals(A).real) >= 0:
        raise ValueError("A is not stable (an eigenvalue has a non-negative real part): no stationary law")
    return scipy.linalg.solve_continuous_lyapunov(A, -2.0 * D * np.eye(A.shape[0]))


def ou_samples(A: np.ndarray, D: float, m: int, *, seed: int = 0) -> Tensor:
    """``m`` exact draws ``(m, d)`` float64 from the stationary law of ``dx = A x dt + √(2D) dW``."""
    S = ou_stationary_covariance(A, D)
    L = torch.as_tensor(np.linalg.cholesky(S))
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, S.shape[0], generator=g, dtype=torch.float64) @ L.T


def _dtanh(v: Tensor) -> Tensor:
    return 1 - torch.tanh(v) ** 2


@dataclass(frozen=True)
class RateNetworkDrift(AffineDrift):
    """``f(x) = −x + W φ(x) + b``, affine in the edge weights (one per circuit edge, ``(post, pre)`` order of the
    circuit) and the biases; built by :func:`rate_network`. ``post``/``pre`` are the edges' endpoints, ``phi`` and
    ``dphi`` the nonlinearity and its derivative. :meth:`local_rows` uses the structure (never the dense ``Φ``)."""

    post: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    pre: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    phi: Callable[[Tensor], Tensor] = torch.tanh
    dphi: Callable[[Tensor], Tensor] = _dtanh

    @property
    def n_edges(self) -> int:
        return int(self.post.size)

    def drift_fn(self, theta: Tensor) -> Callable[[Tensor], Tensor]:
        """``f(x)`` at parameters ``theta`` ``(E + N,)``: sparse-free ``(M, N) → (M, N)`` via a dense ``W``."""
        n = self.dim
        W = torch.zeros(n, n, dtype=theta.dtype)
        W[torch.tensor(self.post), torch.tensor(self.pre)] = theta[: self.n_edges]
        b = theta[self.n_edges:]
        return lambda x: -x + self.phi(x) @ W.T + b

    def __call__(self, x: Tensor, theta: Tensor) -> Tensor:
        theta = torch.as_tensor(theta, dtype=x.dtype)
        if theta.shape != (self.n_params,):
            raise ValueError(f"theta has shape {tuple(theta.shape)}; this drift has {self.n_params} parameters")
        return self.drift_fn(theta)(x)

    def local_rows(self, x: Tensor, score: Tensor, *, method: str = "auto", n_probes: int = 8,
                   generator: torch.Generator | None = None) -> Tensor:
        del method, n_probes, generator  # the divergence is exact and closed-form here
        x = as_samples(x, dim=self.dim)
        post, pre = torch.tensor(self.post), torch.tensor(self.pre)
        ph = self.phi(x)
        edge = score[:, post] * ph[:, pre]                                   # s_i φ(x_j) for edge j → i
        auto = post == pre
        if bool(auto.any()):
            edge[:, auto] = edge[:, auto] + self.dphi(x[:, pre[auto]])      # ∂_i φ(x_i) on autapses
        leak = -float(self.dim) - (x * score).sum(1)                         # ∇·(−x) + (−x)·s
        return torch.cat([edge, score, leak[:, None]], dim=1)


def rate_network(circuit: Circuit, *, phi: str = "tanh", weights: np.ndarray | None = None,
                 bias: np.ndarray | None = None) -> RateNetworkDrift:
    """The noisy rate-network family on ``circuit``; ``true_values`` = the circuit's edge weights (or ``weights``,
    ``(E,)`` in the circuit's edge order) then ``bias`` (default zeros)."""
    if phi != "tanh":
        raise ValueError(f"phi {phi!r}: only 'tanh' is implemented")
    n, post, pre = circuit.n, np.asarray(circuit.post), np.asarray(circuit.pre)
    w = np.asarray(circuit.w if weights is None else weights, dtype=np.float64)
    if w.shape != post.shape:
        raise ValueError(f"weights have shape {w.shape}, expected one per edge {post.shape}")
    b = np.zeros(n) if bias is None else np.asarray(bias, dtype=np.float64)
    names = tuple(f"w[{circuit.node_ids[i]}<-{circuit.node_ids[j]}]" for i, j in zip(post, pre)) + tuple(
        f"b[{k}]" for k in circuit.node_ids)
    n_cols = len(names)

    def features(x: Tensor) -> Tensor:  # dense Φ (M, N, E + N): small circuits only
        m = x.shape[0]
        if m * n * n_cols > 5e7:
            raise MemoryError(f"the dense features of a {n}-neuron rate network ({m}×{n}×{n_cols}) are too large; "
                              "use route='local' or fit_affine_matrix_free")
        out = torch.zeros(m, n, n_cols, dtype=x.dtype)
        e = torch.arange(len(post))
        out[:, torch.tensor(post), e] = torch.tanh(x[:, torch.tensor(pre)])
        out[:, torch.arange(n), len(post) + torch.arange(n)] = 1.0
        return out

    return RateNetworkDrift(features, n, names, lambda x: -x, tuple(np.concatenate([w, b]).tolist()), post, pre)


def euler_maruyama(drift: Callable[[Tensor], Tensor], D: float, x0: Tensor, *, dt: float, n_steps: int,
                   record_every: int = 1, burn_in: int = 0, generator: torch.Generator | None = None,
                   scheme: str = "euler") -> Tensor:
    """``x ← x + f(x) dt + √(2D dt) ξ`` for ``(C, d)`` parallel chains; returns the states after ``burn_in`` steps
    every ``record_every`` steps: ``(n_records, C, d)``. Refuses a run that diverges (non-finite states).

    ``scheme="heun"``: the stochastic Heun predictor–corrector for additive noise, ``x̃ = x + f(x) dt + η``,
    ``x ← x + (f(x) + f(x̃)) dt / 2 + η`` with the same ``η``; its stationary law is off by O(dt²) instead of O(dt)
    (for OU: variance ``(D/a)(1 − h + h²/4)/(1 − h + h²/2 − h³/8)``, ``h = a dt``; tested)."""
    if scheme not in ("euler", "heun"):
        raise ValueError(f"scheme {scheme!r}: use 'euler' or 'heun'")
    x = x0.clone()
    noise = math.sqrt(2.0 * D * dt)
    out = []
    for t in range(1, burn_in + n_steps + 1):
        eta = noise * torch.randn(x.shape, generator=generator, dtype=x.dtype)
        fx = drift(x)
        if scheme == "euler":
            x = x + fx * dt + eta
        else:
            x = x + 0.5 * (fx + drift(x + fx * dt + eta)) * dt + eta
        if t > burn_in and (t - burn_in) % record_every == 0:
            if not bool(torch.isfinite(x).all()):
                raise FloatingPointError(f"the {scheme} integrator diverged at step {t} (dt={dt}): reduce dt")
            out.append(x.clone())
    return torch.stack(out)


def stationary_samples(drift: Callable[[Tensor], Tensor], D: float, x0: Tensor, m: int, *, dt: float,
                       burn_in_time: float, thin_time: float, seed: int = 0, scheme: str = "euler") -> Tensor:
    """``m`` shuffled samples ``(m, d)`` of the stationary law: ``C = len(x0)`` chains run for ``burn_in_time``,
    then recorded every ``thin_time`` until ``m`` states are collected; the order is destroyed by a permutation."""
    g = torch.Generator().manual_seed(seed)
    n_chains = x0.shape[0]
    per_chain = math.ceil(m / n_chains)
    every = max(1, round(thin_time / dt))
    rec = euler_maruyama(drift, D, x0, dt=dt, n_steps=per_chain * every, record_every=every,
                         burn_in=round(burn_in_time / dt), generator=g, scheme=scheme)
    flat = rec.reshape(-1, x0.shape[1])
    return flat[torch.randperm(flat.shape[0], generator=g)[:m]]


def dt_halving_check(sample: Callable[[float, int], Tensor], fit: Callable[[Tensor], LinearFit], dt: float, *,
                     seed: int = 0) -> pd.DataFrame:
    """Estimates from samples drawn at ``dt`` and at ``dt/2`` (``sample(dt, seed)``), one row per unknown:
    ``estimate_dt``, ``estimate_half_dt``, ``difference``, ``se`` (bootstrap, at dt/2) and ``z = |difference|/se``.
    The step is small enough when the difference is within the sampling error (``z`` of order 1 or less)."""
    a = fit(sample(dt, seed))
    b = fit(sample(dt / 2, seed))
    diff = b.estimate - a.estimate
    se = np.sqrt(a.se ** 2 + b.se ** 2)
    return pd.DataFrame({"parameter": list(a.names), "estimate_dt": a.estimate, "estimate_half_dt": b.estimate,
                         "difference": diff, "se": se, "z": np.abs(diff) / se, "dt": dt})
