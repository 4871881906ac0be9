r"""Curvature of the loss landscape: Hessian-vector products, top eigenvalues, trace and spectral density.

ALGORITHMS.md §9 ("Beyond accuracy", Liu, Ghosh, Richards, Shea-Brown, Lajoie, NeurIPS 2022, arXiv:2206.00823).

The Hessian is that of the **true (untruncated, BPTT) loss** of a model on a fixed batch,

    L(θ) = loss_fn(model(x).y, y, mask) + ½ λ Σ_{W ∈ {θ_in, θ_rec, θ_out}} ||W||²,

with respect to chosen parameters (default ``W_rec``, i.e. ``theta_rec``), whatever rule trained the model: a
truncating rule's gradient approximation is used for training only, never here (§9.1). Only the *active* entries
of a parameter (its mask: absent edges, autapses) are coordinates of the operator; masked entries would add exact
zero (or λ) eigenvalues. With the model's ``|θ|`` sign parameterisation the Hessian w.r.t. ``θ`` is ``S H_W S``
(``S`` = diagonal ±1), which has the spectrum of the Hessian w.r.t. the effective weights.

Algorithms (all matrix-free, on any symmetric ``matvec``):

* HVP by double back-propagation, ``H v = ∇_θ (∇_θ L · sg(v))``; the first gradient's graph is built once per
  :class:`HessianOperator` and each product is one backward pass through it.
* :func:`lanczos` with full re-orthogonalisation; :func:`top_eigenvalues` stops when the Ritz residual bound
  ``|β_m s_{m,i}|`` of every requested eigenvalue is below ``rtol · |θ_i|`` (there is then an eigenvalue of ``H``
  within that distance); :func:`power_iteration` as a cross-check (``estimate="norm"`` is the source's
  modulus estimator ``||Hv||``; the default ``"rayleigh"`` keeps the sign).
* :func:`hutchinson_trace` (Rademacher probes) and :func:`slq` (stochastic Lanczos quadrature) for the spectral
  density ``φ(t) = (1/n) Σ_i δ(t − λ_i)``.

Note (spiking models): a :class:`~spikelearn.models.SpikingRNN`'s loss depends on ``W_rec`` only through
Heaviside spikes, so its true gradient and Hessian w.r.t. ``W_rec`` are 0 almost everywhere. Double
back-propagation through the surrogate backward (which multiplies by a *detached* ψ) instead returns the Hessian
of the network in which every spike is replaced by its surrogate linearisation at the current point (value
``H(u)``, slope ψ(u), no curvature) — a symmetric "surrogate Hessian" analogous to what ReLU networks give, with
ψ' never entering. With ``surrogate=Surrogate(..., smooth=True)`` the forward uses the surrogate's primitive and
the operator is the true Hessian of that smoothed network (ψ' included). :meth:`HessianOperator.asymmetry` checks
symmetry for any other model. The rate model is the main target (§9.1).

Sparse storage (``storage="sparse"``, ALGORITHMS-2 §12): ``W_rec``'s coordinates are its per-edge values
(``theta_rec`` ``(nnz,)``, its ``mask_rec`` all true), sorted by (post, pre) — the order of the dense storage's active
entries — so the operator, its products and every spectrum above equal the dense storage's on the same circuit (tested
to 1e-12 in float64); the products run through the sparse product's double backward, with no ``N × N`` array.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

__all__ = ["HessianOperator", "hessian_operator", "EigResult", "LanczosResult", "TraceResult", "SLQResult",
           "lanczos", "top_eigenvalues", "power_iteration", "hutchinson_trace", "slq", "hessian_spectrum",
           "hessian_density", "hessian_measurement", "resolve_params"]

MatVec = Callable[[Tensor], Tensor]

# effective-weight name -> (parameter name, mask buffer name)
_ALIASES = {"W_rec": ("theta_rec", "mask_rec"), "W_in": ("theta_in", "mask_in"), "W_out": ("theta_out", "mask_out"),
            "theta_rec": ("theta_rec", "mask_rec"), "theta_in": ("theta_in", "mask_in"),
            "theta_out": ("theta_out", "mask_out")}
WEIGHT_PARAMS = ("theta_in", "theta_rec", "theta_out")


def resolve_params(model: nn.Module, names: Sequence[str]) -> list[tuple[str, nn.Parameter, Tensor | None]]:
    """``(parameter name, parameter, active-entry mask or None)`` for each of ``names``.

    ``names`` may be effective-weight names (``"W_rec"``, ``"W_in"``, ``"W_out"``) or parameter names
    (``"theta_rec"``, ``"b_out"``, ...). Raises ``KeyError`` listing the model's parameters for an unknown name.
    """
    if isinstance(names, str):
        names = (names,)
    if len(names) == 0:
        raise ValueError("params is empty: name at least one parameter (e.g. 'W_rec')")
    params = dict(model.named_parameters())
    out, seen = [], set()
    for name in names:
        pname, mname = _ALIASES.get(name, (name, None))
        if pname not in params:
            raise KeyError(f"{name!r} is not a parameter of {type(model).__name__}; choose from "
                           f"{sorted(params) + ['W_in', 'W_rec', 'W_out']}")
        if pname in seen:
            raise ValueError(f"params names the parameter {pname!r} twice ({list(names)})")
        seen.add(pname)
        m = getattr(model, mname, None) if mname else None
        out.append((pname, params[pname], None if m is None else m.bool()))
    return out


# ---------------------------------------------------------------------------------------------- operator
class HessianOperator:
    """Matrix-free Hessian of a scalar loss w.r.t. the active entries of some tensors, by double backprop.

    Build with :func:`hessian_operator` (a model on a batch) or directly from a closure::

        op = HessianOperator(lambda: 0.5 * theta @ A @ theta, [theta])
        hv = op(v)          # (n,) -> (n,)

    Args:
        closure: ``() -> scalar`` loss, differentiable in ``params``.
        params: tensors requiring grad.
        masks: optional boolean mask per param (``None`` = all entries); the operator acts on the concatenation
            of the masked entries (row-major order), dimension :attr:`n`.
        names: optional names of the params (for :meth:`unflatten`).

    Attributes:
        n: dimension. loss: the loss value at the point (float). n_matvec: products computed so far.
    """

    def __init__(self, closure: Callable[[], Tensor], params: Sequence[Tensor],
                 masks: Sequence[Tensor | None] | None = None, names: Sequence[str] | None = None) -> None:
        self.params = list(params)
        self.masks = list(masks) if masks is not None else [None] * len(self.params)
        self.names = list(names) if names is not None else [f"p{i}" for i in range(len(self.params))]
        self.sizes = [int(p.numel()) if m is None else int(m.sum()) for p, m in zip(self.params, self.masks)]
        self.n = sum(self.sizes)
        p0 = self.params[0]
        self.dtype, self.device = p0.dtype, p0.device
        with torch.enable_grad():
            loss = closure()
            if loss.dim() != 0:
                raise ValueError(f"the loss must be a scalar, got shape {tuple(loss.shape)}")
            grads = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True)
        self.loss = float(loss.detach())
        self._grad = self._flat([torch.zeros_like(p) if g is None else g for p, g in zip(self.params, grads)])
        self.gradient = self._grad.detach()
        self.n_matvec = 0

    def _flat(self, tensors: Sequence[Tensor]) -> Tensor:
        return torch.cat([(t if m is None else t[m]).reshape(-1) for t, m in zip(tensors, self.masks)])

    def unflatten(self, v: Tensor) -> dict[str, Tensor]:
        """A vector of length :attr:`n` as full-shape tensors (zeros at inactive entries), keyed by name."""
        out, i = {}, 0
        for name, p, m, k in zip(self.names, self.params, self.masks, self.sizes):
            t = torch.zeros_like(p)
            if m is None:
                t = v[i:i + k].reshape(p.shape).to(p.dtype)
            else:
                t[m] = v[i:i + k].to(p.dtype)
            out[name] = t
            i += k
        return out

    def __call__(self, v: Tensor) -> Tensor:
        """``H v`` for ``v`` of shape ``(n,)``."""
        if v.shape != (self.n,):
            raise ValueError(f"v must have shape ({self.n},), got {tuple(v.shape)}")
        self.n_matvec += 1
        if not self._grad.requires_grad:  # loss linear in the params
            return torch.zeros_like(v)
        hv = torch.autograd.grad(self._grad, self.params, grad_outputs=v.to(self.dtype), retain_graph=True,
                                 allow_unused=True)
        return self._flat([torch.zeros_like(p) if h is None else h for p, h in zip(self.params, hv)])

    matvec = __call__

    def dense(self) -> Tensor:
        """The full ``(n, n)`` matrix, column by column (``n`` products: tiny problems and tests only)."""
        eye = torch.eye(self.n, dtype=self.dtype, device=self.device)
        return torch.stack([self(e) for e in eye], dim=1)

    def asymmetry(self, n_probes: int = 3, generator: torch.Generator | None = None) -> float:
        """Max over random pairs of ``2|uᵀHv − vᵀHu| / (||Hu|| ||v|| + ||Hv|| ||u||)`` (0 if symmetric)."""
        worst = 0.0
        for _ in range(n_probes):
            u, v = (torch.randn(self.n, generator=generator, dtype=self.dtype).to(self.device) for _ in range(2))
            hu, hv = self(u), self(v)
            den = float(hu.norm() * v.norm() + hv.norm() * u.norm())
            if den > 0:
                worst = max(worst, 2 * abs(float(u @ hv - v @ hu)) / den)
        return worst


def hessian_operator(model: nn.Module, x: Tensor, y: Tensor, mask: Tensor,
                     loss_fn: Callable[[Tensor, Tensor, Tensor], Tensor], *,
                     params: Sequence[str] = ("W_rec",), l2: float = 0.0) -> HessianOperator:
    """Hessian of the untruncated loss of ``model`` on one batch (module docstring).

    Args:
        model: a spikelearn model (any ``nn.Module`` whose ``forward(x)`` returns an object with ``.y``).
        x: ``(T, B, n_in)`` inputs; y, mask: targets and loss mask as the task returns them.
        loss_fn: ``loss_fn(y_hat, y, mask) -> scalar`` (e.g. ``task.loss``).
        params: which parameters span the Hessian: ``"W_rec"`` (default), ``"W_in"``, ``"W_out"`` or parameter
            names; only their active (unmasked) entries are coordinates.
        l2: λ of the penalty ``½ λ (||θ_in||² + ||θ_rec||² + ||θ_out||²)`` (BiolHessRNN: 1e-2).

    Returns:
        :class:`HessianOperator` (its ``loss`` includes the penalty).
    """
    sel = resolve_params(model, params)
    frozen = [n for n, p, _ in sel if not p.requires_grad]
    if frozen:
        raise ValueError(f"parameters {frozen} do not require grad (a frozen copy, e.g. Trainer.initial_model()): "
                         f"the Hessian needs them differentiable; call p.requires_grad_(True) on a copy first")
    x = x.to(device=next(model.parameters()).device, dtype=next(model.parameters()).dtype)
    weights = [p for n, p in model.named_parameters() if n in WEIGHT_PARAMS]

    def closure() -> Tensor:
        loss = loss_fn(model(x).y, y, mask)
        if l2:
            loss = loss + 0.5 * l2 * sum((w * w).sum() for w in weights)
        return loss

    return HessianOperator(closure, [p for _, p, _ in sel], [m for _, _, m in sel], [n for n, _, _ in sel])


# ---------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class EigResult:
    """Eigenvalues (descending in the ``which`` order) with Ritz vectors and convergence information."""

    eigenvalues: Tensor      # (k,)
    eigenvectors: Tensor     # (k, n), unit norm
    residuals: Tensor        # (k,) residual bound ||H u − λ u|| (Lanczos) or |λ_i − λ_{i−1}| (power)
    n_matvec: int
    converged: bool


@dataclass(frozen=True)
class LanczosResult:
    """``Q_mᵀ H Q_m = T_m`` (tridiagonal, diagonal ``alpha``, off-diagonal ``beta``); ``beta_last`` = β_m."""

    alpha: Tensor            # (m,)
    beta: Tensor             # (m−1,)
    beta_last: float
    Q: Tensor                # (m, n) orthonormal Lanczos vectors (rows)

    def T(self) -> Tensor:
        """The tridiagonal matrix ``(m, m)``."""
        return torch.diag(self.alpha) + torch.diag(self.beta, 1) + torch.diag(self.beta, -1)

    def ritz(self) -> tuple[Tensor, Tensor]:
        """Ritz values (ascending) and the eigenvectors ``S`` of ``T_m`` (columns)."""
        return torch.linalg.eigh(self.T())


@dataclass(frozen=True)
class TraceResult:
    """Hutchinson estimate of ``tr(H)``."""

    trace: float
    stderr: float            # standard error of the mean over probes
    n_matvec: int
    samples: Tensor          # (m,) per-probe vᵀHv


@dataclass(frozen=True)
class SLQResult:
    """Stochastic Lanczos quadrature: per probe ``l``, nodes ``θ_j^l`` and weights ``τ_j^l`` (Σ_j τ = 1).

    ``Σ_j τ_j^l f(θ_j^l) = v_lᵀ f(H) v_l`` (unit ``v_l``) exactly for polynomials of degree < 2m, so
    ``n · mean_l Σ_j τ f(θ)`` estimates ``tr f(H)`` and the weighted nodes estimate the spectral density.
    """

    nodes: Tensor            # (n_probes, m)
    weights: Tensor          # (n_probes, m)
    n: int                   # dimension of H
    n_matvec: int

    def trace_of(self, f: Callable[[Tensor], Tensor]) -> float:
        """Estimate of ``tr f(H)`` (nodes of zero weight — padding after an early Lanczos stop — are skipped)."""
        used = self.weights > 0
        vals = torch.where(used, f(torch.where(used, self.nodes, torch.ones_like(self.nodes))),
                           torch.zeros_like(self.nodes))
        return float(self.n * (self.weights * vals).sum(1).mean())

    def density(self, grid: Tensor | np.ndarray, sigma: float) -> np.ndarray:
        """Gaussian-smoothed spectral density ``φ_σ(t) = mean_l Σ_j τ_j^l N(t; θ_j^l, σ²)`` on ``grid``
        (integrates to 1; multiply by :attr:`n` for eigenvalue counts per unit)."""
        t = torch.as_tensor(np.asarray(grid), dtype=torch.float64)
        th, w = self.nodes.double().cpu(), self.weights.double().cpu()
        g = torch.exp(-0.5 * ((t[:, None, None] - th[None]) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
        return (g * w[None]).sum(-1).mean(-1).numpy()


# ---------------------------------------------------------------------------------------------- algorithms
def _randn(n: int, generator: torch.Generator | None, dtype: torch.dtype, device: Any) -> Tensor:
    return torch.randn(n, generator=generator, dtype=dtype).to(device)


def lanczos(matvec: MatVec, v0: Tensor, m: int, *, reorthogonalize: bool = True,
            callback: Callable[[int, Tensor, Tensor, float], bool] | None = None,
            restart_generator: torch.Generator | None = None, restart: bool = False) -> LanczosResult:
    """``m`` steps of Lanczos from ``v0`` with (twice-applied) full re-orthogonalisation.

    Args:
        matvec: symmetric ``(n,) -> (n,)``. v0: start vector (normalised here). m: steps (≤ n).
        reorthogonalize: Gram–Schmidt against all previous vectors (needed in floating point for m ≳ 10).
        callback: ``callback(j, alpha[:j], beta[:j-1], beta_j) -> stop`` after step ``j``; used for early stops.
        restart: when an invariant subspace is found (β ≈ 0) before ``m`` steps, continue from a random vector
            orthogonal to every previous one (``β = 0`` is kept in ``T``, which becomes block-diagonal) — a single
            Krylov space holds each distinct eigenvalue once, so without restarts repeated eigenvalues are missed.
            Needs ``reorthogonalize``. restart_generator: draws the restart vectors.

    Returns:
        :class:`LanczosResult`; fewer than ``m`` steps if an invariant subspace was found (β ≈ 0; with
        ``restart``, only once the whole space is spanned) or the callback stopped the iteration.
    """
    n = v0.numel()
    m = min(int(m), n)
    q = v0 / v0.norm()
    Q = torch.zeros(m, n, dtype=v0.dtype, device=v0.device)
    alpha = torch.zeros(m, dtype=v0.dtype, device=v0.device)
    beta = torch.zeros(m, dtype=v0.dtype, device=v0.device)
    q_prev, b_prev = torch.zeros_like(q), 0.0
    steps = 0
    for j in range(m):
        Q[j] = q
        w = matvec(q)
        a = torch.dot(w, q)
        w = w - a * q - b_prev * q_prev
        if reorthogonalize:
            for _ in range(2):
                w = w - Q[:j + 1].T @ (Q[:j + 1] @ w)
        alpha[j] = a
        b = w.norm()
        steps = j + 1
        scale = float(torch.abs(alpha[:steps]).max()) + float(beta[:steps].max())
        if float(b) <= 1e-12 * max(scale, float(b), 1e-300):  # invariant subspace
            if restart and reorthogonalize and steps < m:
                r = _randn(n, restart_generator, v0.dtype, v0.device)
                for _ in range(2):
                    r = r - Q[:steps].T @ (Q[:steps] @ r)
                if float(r.norm()) > 1e-8:
                    beta[j] = 0.0
                    q_prev, q, b_prev = torch.zeros_like(q), r / r.norm(), 0.0
                    continue
            beta[j] = 0.0
            if callback is not None:
                callback(steps, alpha[:steps], beta[:steps - 1], 0.0)
            break
        beta[j] = b
        if callback is not None and callback(steps, alpha[:steps], beta[:steps - 1], float(b)):
            break
        q_prev, q, b_prev = q, w / b, b
    return LanczosResult(alpha=alpha[:steps].clone(), beta=beta[:steps - 1].clone(), beta_last=float(beta[steps - 1]),
                         Q=Q[:steps].clone())


def _order(theta: Tensor, which: str) -> Tensor:
    if which == "LA":
        return torch.argsort(theta, descending=True)
    if which == "SA":
        return torch.argsort(theta)
    if which == "LM":
        return torch.argsort(theta.abs(), descending=True)
    raise ValueError(f"which must be 'LA', 'SA' or 'LM', got {which!r}")


def top_eigenvalues(matvec: MatVec, n: int, k: int = 1, *, which: str = "LA", max_matvec: int = 100,
                    rtol: float = 1e-3, v0: Tensor | None = None, generator: torch.Generator | None = None,
                    dtype: torch.dtype = torch.float64, device: Any = None, check_repeated: bool = True
                    ) -> EigResult:
    """Extreme eigenvalues of a symmetric operator by Lanczos, stopping at convergence.

    Args:
        matvec: symmetric ``(n,) -> (n,)`` (e.g. a :class:`HessianOperator`). n: dimension. k: how many.
        which: ``"LA"`` largest algebraic (default: the sharpest curvature), ``"SA"`` smallest algebraic,
            ``"LM"`` largest magnitude.
        max_matvec: at most this many products (Lanczos steps), in all.
        rtol: stop once every wanted Ritz value ``θ_i`` has residual bound ``|β_m s_{m,i}| ≤ rtol · |θ_i|``
            (then ``H`` has an eigenvalue within that distance of ``θ_i``; the eigenvalue error is usually of
            the order of the residual²/gap, far below it).
        v0: start vector (default standard normal from ``generator``).

    One Krylov space holds each distinct eigenvalue once, so for ``k > 1`` a repeated eigenvalue (e.g. the
    readout Hessian of a K-output MSE, every eigenvalue K-fold) would be reported once and the list filled with
    smaller ones. After convergence the operator deflated by the k Ritz vectors, ``P H P`` with
    ``P = I − V Vᵀ``, is searched for a further eigenvalue beyond the k-th; any found replaces the k-th and the
    check repeats (at most k times; the products count towards ``max_matvec``). The check converges the deflated
    operator's extreme eigenvalue, so it roughly doubles the cost for ``k > 1``; ``check_repeated=False`` skips it
    (one Krylov space: exact for simple eigenvalues, blind to multiplicity). ``k = 1`` needs no check.

    Returns:
        :class:`EigResult` (``converged`` False if ``max_matvec`` was reached first).
    """
    if isinstance(matvec, HessianOperator):
        dtype, device = matvec.dtype, matvec.device
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise ValueError(f"k must be an integer in [1, n = {n}], got {k!r}")
    if isinstance(max_matvec, bool) or not isinstance(max_matvec, int) or max_matvec < k:
        raise ValueError(f"max_matvec must be an integer >= k = {k}, got {max_matvec!r}")
    if v0 is None:
        v0 = _randn(n, generator, dtype, device)
    vals, vecs, resid, used, converged = _lanczos_top(matvec, n, k, which, max_matvec, rtol, v0, generator)
    for _ in range(k if k > 1 and check_repeated else 0):
        if not converged or used >= max_matvec or vals.numel() < k or k >= n:
            break
        V = vecs

        def deflated(v: Tensor, V: Tensor = V) -> Tensor:
            v = v - V.T @ (V @ v)
            w = matvec(v)
            return w - V.T @ (V @ w)

        r = _randn(n, generator, vecs.dtype, vecs.device)
        r = r - V.T @ (V @ r)
        r = r - V.T @ (V @ r)
        if float(r.norm()) <= 1e-8:
            break
        ev, evec, eres, eused, econv = _lanczos_top(deflated, n - k, 1, which, max_matvec - used, rtol, r, generator,
                                                    dim=n)
        used += eused
        if not econv:
            converged = False
            break
        cand = torch.cat([vals, ev])
        order = _order(cand, which)
        if int(order[-1]) == k:  # the deflated operator's best is not better than the k-th: nothing was missed
            break
        keep = order[:k]
        allv, allr = torch.cat([vecs, evec]), torch.cat([resid, eres])
        vals, vecs, resid = cand[keep], allv[keep], allr[keep]
    return EigResult(eigenvalues=vals, eigenvectors=vecs, residuals=resid, n_matvec=int(used),
                     converged=bool(converged))


def _lanczos_top(matvec: MatVec, n: int, k: int, which: str, max_matvec: int, rtol: float, v0: Tensor,
                 generator: torch.Generator | None, dim: int | None = None
                 ) -> tuple[Tensor, Tensor, Tensor, int, bool]:
    """Lanczos until the ``k`` wanted Ritz values converge: ``(values, vectors (k, dim), residuals, products,
    converged)``; ``n`` is the dimension of the space searched (``dim`` that of the vectors, default ``n``)."""
    state: dict[str, Any] = {"converged": False}

    def check(j: int, alpha: Tensor, beta: Tensor, b: float) -> bool:
        if j < k:
            return False
        T = torch.diag(alpha) + torch.diag(beta, 1) + torch.diag(beta, -1)
        th, S = torch.linalg.eigh(T)
        idx = _order(th, which)[:k]
        res = (b * S[-1, idx]).abs()
        ok = bool((res <= rtol * th[idx].abs().clamp_min(1e-30)).all()) or b == 0.0
        state["converged"] = ok
        return ok

    res = lanczos(matvec, v0, min(max_matvec, n), callback=check, restart=dim is None, restart_generator=generator)
    th, S = res.ritz()
    idx = _order(th, which)[:k]
    vecs = (res.Q.T @ S[:, idx]).T
    resid = (res.beta_last * S[-1, idx]).abs()
    converged = state["converged"] or res.alpha.numel() == n or res.beta_last == 0.0
    return th[idx], vecs, resid, int(res.alpha.numel()), bool(converged)


def power_iteration(matvec: MatVec, n: int, *, max_iter: int = 500, tol: float = 1e-6, shift: float = 0.0,
                    estimate: Literal["rayleigh", "norm"] = "rayleigh", v0: Tensor | None = None,
                    generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64,
                    device: Any = None) -> EigResult:
    """Largest-magnitude eigenvalue of ``H + shift·I`` by power iteration (ALGORITHMS.md §9.2).

    Each step computes ``w = (H + sI) v``, an estimate ``λ_new`` and ``v ← w/||w||``, and stops when
    ``|λ_new − λ| < tol`` (absolute) or after ``max_iter`` products. The estimate is chosen by ``estimate``:

    * ``"rayleigh"`` (default): the Rayleigh quotient ``λ_new = vᵀw`` *with sign*. Returns ``λ − shift``, an
      eigenvalue of ``H``: a dominant negative eigenvalue comes back negative, and ``shift > 0`` reaches the top
      algebraic eigenvalue when a negative one dominates in magnitude (§9.2 [D]). The first step never stops.
      This is **not** the source's estimator.
    * ``"norm"``: the source's (BiolHessRNN) estimator ``λ_new = ||w||`` (= ``v_newᵀw``), starting from ``λ = 0``
      as the source's loop does. It returns the **modulus** ``|λ|`` of the largest-magnitude eigenvalue, never its
      sign; ``shift`` must be 0 (``||(H + sI)v||`` gives ``|μ|`` of the dominant eigenvalue ``μ`` of ``H + sI``,
      and ``|μ| − s`` is an eigenvalue of ``H`` only when ``μ > 0``).

    Args:
        matvec: ``v ↦ H v`` for a symmetric ``H`` (e.g. a :class:`HessianOperator`), vectors ``(n,)``.
        n: dimension of the operator.
        estimate: ``"rayleigh"`` or ``"norm"``, see above.

    Returns:
        :class:`EigResult` with one eigenvalue, its vector ``(1, n)``, ``residuals`` = the last ``|λ_new − λ|``.
    """
    if estimate not in ("rayleigh", "norm"):
        raise ValueError(f"estimate must be 'rayleigh' (signed vᵀHv) or 'norm' (the source's ||Hv||), "
                         f"got {estimate!r}")
    if estimate == "norm" and shift != 0.0:
        raise ValueError(f"shift must be 0 with estimate='norm' (||(H + sI)v|| is the modulus of H + sI's dominant "
                         f"eigenvalue, so subtracting the shift is not an eigenvalue of H in general); got "
                         f"shift={shift!r}: use estimate='rayleigh' with a shift")
    if isinstance(matvec, HessianOperator):
        dtype, device = matvec.dtype, matvec.device
    v = _randn(n, generator, dtype, device) if v0 is None else v0.clone()
    v = v / v.norm()
    lam, diff, it = (0.0 if estimate == "norm" else math.nan), math.inf, 0
    converged = False
    for it in range(1, max_iter + 1):
        w = matvec(v) + shift * v
        nw = w.norm()
        lam_new = float(v @ w) if estimate == "rayleigh" else float(nw)  # vᵀw with sign / the source's ||w||
        if float(nw) == 0.0:
            lam, diff, converged = 0.0, 0.0, True
            break
        v = w / nw
        diff = abs(lam_new - lam) if math.isfinite(lam) else math.inf
        lam = lam_new
        if diff < tol:
            converged = True
            break
    return EigResult(eigenvalues=torch.tensor([lam - shift], dtype=torch.float64), eigenvectors=v[None],
                     residuals=torch.tensor([diff], dtype=torch.float64), n_matvec=it, converged=converged)


def hutchinson_trace(matvec: MatVec, n: int, n_samples: int = 100, *, generator: torch.Generator | None = None,
                     dtype: torch.dtype = torch.float64, device: Any = None) -> TraceResult:
    """Hutchinson's estimator ``tr(H) ≈ mean_s v_sᵀ H v_s`` with Rademacher ``v_s`` (variance per probe
    ``2(||H||_F² − Σ H_ii²)``); ``n_samples`` products."""
    if isinstance(matvec, HessianOperator):
        dtype, device = matvec.dtype, matvec.device
    samples = torch.zeros(n_samples, dtype=torch.float64)
    for s in range(n_samples):
        v = (torch.randint(0, 2, (n,), generator=generator).to(dtype) * 2 - 1).to(device)
        samples[s] = float(v @ matvec(v))
    stderr = float(samples.std() / math.sqrt(n_samples)) if n_samples > 1 else math.nan
    return TraceResult(trace=float(samples.mean()), stderr=stderr, n_matvec=n_samples, samples=samples)


def slq(matvec: MatVec, n: int, *, n_probes: int = 10, m: int = 50, generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float64, device: Any = None) -> SLQResult:
    """Stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017; Ghorbani, Krishnan & Xiao 2019).

    For each Rademacher probe ``v_l/√n``, ``m`` Lanczos steps give ``T_m = S diag(θ) Sᵀ``; the nodes are ``θ``
    and the weights ``τ_j = S_{1j}²``. Cost ``n_probes · m`` products. See :class:`SLQResult`.
    """
    if isinstance(matvec, HessianOperator):
        dtype, device = matvec.dtype, matvec.device
    m = min(m, n)
    nodes = torch.zeros(n_probes, m, dtype=torch.float64)
    weights = torch.zeros(n_probes, m, dtype=torch.float64)
    count = 0
    for l in range(n_probes):
        v = (torch.randint(0, 2, (n,), generator=generator).to(dtype) * 2 - 1).to(device)
        res = lanczos(matvec, v, m)
        th, S = res.ritz()
        j = th.numel()  # < m if an invariant subspace was hit: the remaining weights stay 0
        nodes[l, :j] = th.double().cpu()
        weights[l, :j] = (S[0] ** 2).double().cpu()
        count += j
    return SLQResult(nodes=nodes, weights=weights, n=n, n_matvec=count)


# ---------------------------------------------------------------------------------------------- tidy wrappers
def hessian_spectrum(model: nn.Module, x: Tensor, y: Tensor, mask: Tensor,
                     loss_fn: Callable[[Tensor, Tensor, Tensor], Tensor], *, params: Sequence[str] = ("W_rec",),
                     l2: float = 0.0, k: int = 1, max_matvec: int = 100, rtol: float = 1e-3,
                     trace_samples: int = 0, seed: int = 0) -> pd.DataFrame:
    """Top-``k`` Hessian eigenvalues (Lanczos) and optionally the Hutchinson trace, as a tidy table.

    Returns:
        DataFrame with columns ``quantity`` (``"eigenvalue"``, ``"trace"``, ``"loss"``), ``index`` (rank of the
        eigenvalue, 0 = largest), ``value``, ``error`` (Lanczos residual bound / trace standard error),
        ``n_hvp``, ``converged``, ``n_params`` (dimension of the operator).
    """
    op = hessian_operator(model, x, y, mask, loss_fn, params=params, l2=l2)
    gen = torch.Generator().manual_seed(seed)
    eig = top_eigenvalues(op, op.n, k, max_matvec=max_matvec, rtol=rtol, generator=gen)
    rows = [{"quantity": "loss", "index": 0, "value": op.loss, "error": 0.0, "n_hvp": 0, "converged": True}]
    for i, (lam, r) in enumerate(zip(eig.eigenvalues.tolist(), eig.residuals.tolist())):
        rows.append({"quantity": "eigenvalue", "index": i, "value": lam, "error": r, "n_hvp": eig.n_matvec,
                     "converged": eig.converged})
    if trace_samples:
        tr = hutchinson_trace(op, op.n, trace_samples, generator=gen)
        rows.append({"quantity": "trace", "index": 0, "value": tr.trace, "error": tr.stderr,
                     "n_hvp": tr.n_matvec, "converged": True})
    df = pd.DataFrame(rows)
    df["n_params"] = op.n
    return df


def hessian_density(model: nn.Module, x: Tensor, y: Tensor, mask: Tensor,
                    loss_fn: Callable[[Tensor, Tensor, Tensor], Tensor], *, params: Sequence[str] = ("W_rec",),
                    l2: float = 0.0, n_probes: int = 5, m: int = 50, n_grid: int = 400, sigma: float | None = None,
                    seed: int = 0) -> tuple[pd.DataFrame, SLQResult]:
    """Smoothed Hessian eigenvalue density by SLQ on a grid.

    Returns:
        ``(df, slq_result)``; ``df`` has columns ``eigenvalue`` (grid) and ``density`` (integrates to 1).
        ``sigma`` defaults to 1 % of the node range.
    """
    op = hessian_operator(model, x, y, mask, loss_fn, params=params, l2=l2)
    res = slq(op, op.n, n_probes=n_probes, m=m, generator=torch.Generator().manual_seed(seed))
    lo, hi = float(res.nodes[res.weights > 0].min()), float(res.nodes[res.weights > 0].max())
    span = max(hi - lo, 1e-12)
    sigma = 0.01 * span if sigma is None else sigma
    grid = np.linspace(lo - 0.05 * span - 3 * sigma, hi + 0.05 * span + 3 * sigma, n_grid)
    return pd.DataFrame({"eigenvalue": grid, "density": res.density(grid, sigma)}), res


def hessian_measurement(x: Tensor, y: Tensor, mask: Tensor, *,
                        loss_fn: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None,
                        params: Sequence[str] = ("W_rec",), l2: float = 0.0, k: int = 1, max_matvec: int = 100,
                        rtol: float = 1e-3, seed: int = 0) -> Callable[[nn.Module, Any, int], dict[str, float]]:
    """A measurement function ``fn(model, task, iteration) -> dict`` for the trainer's hooks, e.g.
    ``Measurement("hessian", hessian_measurement(x, y, mask, l2=1e-2), every=250)``.

    On the fixed batch ``(x, y, mask)`` it returns ``{"lambda_max": …, "lambda_<i>": …, "n_hvp": …}`` (the top-k
    Hessian eigenvalues of the untruncated loss w.r.t. ``params``); ``loss_fn`` defaults to ``task.loss``.
    """
    def fn(model: nn.Module, task: Any, iteration: int) -> dict[str, float]:
        del iteration
        was_training = model.training
        model.eval()
        try:
            op = hessian_operator(model, x, y, mask, loss_fn or task.loss, params=params, l2=l2)
            eig = top_eigenvalues(op, op.n, k, max_matvec=max_matvec, rtol=rtol,
                                  generator=torch.Generator().manual_seed(seed))
        finally:
            model.train(was_training)
        out = {"lambda_max": float(eig.eigenvalues[0]), "n_hvp": float(eig.n_matvec)}
        out.update({f"lambda_{i}": float(v) for i, v in enumerate(eig.eigenvalues.tolist()) if i > 0})
        return out

    return fn
