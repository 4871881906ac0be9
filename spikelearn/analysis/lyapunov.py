r"""Lyapunov exponents of input-driven model trajectories by QR re-orthonormalisation (ALGORITHMS.md §7.1).

For a run ``s^t = F(s^{t-1}, x^t)`` of a model from a given initial state, with Jacobians ``J_t = ∂s^t/∂s^{t-1}``
along the trajectory (closed forms in :mod:`spikelearn.dynamics`)::

    Q̃_t = J_t Q_{t-1};   Q_t R_t = qr(Q̃_t)   (every ``qr_every`` steps);   λ_i = Σ_{t>T_tr} log|R_t[ii]| / (T − T_tr)

(Benettin et al. 1980; Engelken, Wolf & Abbott 2023, arXiv:2006.02427). Exponents are reported **per step** and
**per second** (``λ / dt``, 1/s). A positive maximum exponent means nearby trajectories diverge (chaos); the
sum of the first k is the growth rate of k-dimensional volumes.

**What the exponents mean for spiking units.** With the Heaviside threshold ``∂z/∂v = 0`` almost everywhere, so
the exact Jacobian of the discrete LIF/ALIF map is ``diag(α, ρ)`` and its exponents are trivially ``log α`` and
``log ρ`` — they say nothing about the recurrent gain. Two informative alternatives (choose with ``jacobian``):

* ``"surrogate"`` (default; Engelken's surrogate-gradient flossing): the Jacobian of §7.1 with the model's
  pseudo-derivative ψ along the *actual* spiking trajectory, with or without the reset derivative
  (``reset_derivative``; default as the model's BPTT). These are the growth rates of the linearisation that
  surrogate-gradient BPTT back-propagates through: λ_1 > 0 means surrogate gradients explode over long horizons,
  λ_1 ≪ 0 that they vanish. They are **not** exponents of the spiking dynamics itself.
* ``"rate"`` (rate approximation): exponents of the smooth mean-field map in which every spike is replaced by its
  escape-noise probability ``σ((v − A)/(v_th·w))`` (logistic, width ``escape_width = w`` in units of ``v_th``,
  no refractoriness, expected reset). These are true exponents of that rate network.

Everything runs without gradients; use :mod:`spikelearn.analysis.flossing` to differentiate them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from spikelearn.dynamics import (
    Linearisation,
    QRGrowth,
    default_transient,
    linearise,
    qr_log_growth,
    random_orthonormal,
)
from spikelearn.models import RateRNN, SpikingRNN
from spikelearn.neurons.rate import activation

__all__ = ["LyapunovResult", "lyapunov_spectrum", "max_lyapunov", "lyapunov_from_jacobians",
           "perturbation_growth_rate", "mean_field_lyapunov", "lyapunov_measurement"]


@dataclass(frozen=True)
class LyapunovResult:
    """Lyapunov exponents of one batch of trajectories.

    Attributes:
        exponents: ``(B, k)`` per-step exponents of each trajectory, sorted as the QR produces them (descending
            up to estimation noise).
        log_r: ``(n_qr, B, k)`` ``log|R_ii|`` at every re-orthonormalisation (transient included).
        qr_steps: ``(n_qr,)`` steps done at each re-orthonormalisation.
        transient_steps: steps excluded from the average. n_steps: T. dt_ms: model step.
        n_state: dimension of the tangent space. jacobian: ``"rate"`` (rate models), ``"surrogate"`` or
            ``"rate_approximation"`` (spiking).
    """

    exponents: np.ndarray
    log_r: np.ndarray
    qr_steps: np.ndarray
    transient_steps: int
    n_steps: int
    dt_ms: float
    n_state: int
    jacobian: str

    @property
    def k(self) -> int:
        return int(self.exponents.shape[1])

    @property
    def mean(self) -> np.ndarray:
        """``(k,)`` per-step exponents averaged over trajectories."""
        return self.exponents.mean(0)

    @property
    def per_s(self) -> np.ndarray:
        """``(k,)`` exponents per second (``mean / dt``)."""
        return self.mean / (self.dt_ms * 1e-3)

    @property
    def max(self) -> float:
        """Largest per-step exponent (trajectory average)."""
        return float(self.mean.max())

    @property
    def sum(self) -> float:
        """Sum of the k per-step exponents (trajectory average)."""
        return float(self.mean.sum())

    def kaplan_yorke_dimension(self) -> float:
        """Kaplan–Yorke dimension ``j + Σ_{i≤j} λ_i / |λ_{j+1}|`` of the (averaged) spectrum; ``k`` if the
        partial sums never turn negative (then more exponents are needed), 0 if ``λ_1 < 0``."""
        lam = np.sort(self.mean)[::-1]
        c = np.cumsum(lam)
        if c[0] < 0:
            return 0.0
        neg = np.flatnonzero(c < 0)
        if neg.size == 0:
            return float(self.k)
        j = int(neg[0])  # c[j-1] >= 0 > c[j]
        return float(j + c[j - 1] / abs(lam[j]))

    def to_frame(self) -> pd.DataFrame:
        """Tidy frame: one row per (trajectory, exponent index) plus ``trajectory = "mean"`` rows.

        Columns: ``trajectory, index`` (1-based), ``lambda_per_step, lambda_per_s``, ``jacobian``.
        """
        B, k = self.exponents.shape
        rows = [(str(b), i + 1, float(self.exponents[b, i])) for b in range(B) for i in range(k)]
        rows += [("mean", i + 1, float(self.mean[i])) for i in range(k)]
        df = pd.DataFrame(rows, columns=["trajectory", "index", "lambda_per_step"])
        df["lambda_per_s"] = df["lambda_per_step"] / (self.dt_ms * 1e-3)
        df["jacobian"] = self.jacobian
        return df

    def convergence_frame(self) -> pd.DataFrame:
        """Running estimate after each counted re-orthonormalisation: columns ``step, index, lambda_per_step``
        (trajectory average) — for convergence plots."""
        counted = self.qr_steps > self.transient_steps
        steps = self.qr_steps[counted]
        cum = np.cumsum(self.log_r[counted].mean(1), axis=0) / (steps - self.transient_steps)[:, None]
        k = cum.shape[1]
        return pd.DataFrame({"step": np.repeat(steps, k), "index": np.tile(np.arange(1, k + 1), len(steps)),
                             "lambda_per_step": cum.reshape(-1)})


def _result(lin: Linearisation, k: int, transient_steps: int | None, qr_every: int, seed: int, jac: str,
            Q0: Tensor | None = None) -> LyapunovResult:
    res = qr_log_growth(lin, k, transient_steps=transient_steps, qr_every=qr_every, seed=seed, Q0=Q0)
    assert isinstance(res, QRGrowth)
    return LyapunovResult(exponents=res.exponents.detach().cpu().numpy(), log_r=res.log_r.detach().cpu().numpy(),
                          qr_steps=res.qr_steps.numpy(), transient_steps=res.transient_steps,
                          n_steps=lin.n_steps, dt_ms=lin.dt_ms, n_state=lin.n_state, jacobian=jac)


def _jac_name(model: nn.Module, jacobian: str) -> str:
    if isinstance(model, SpikingRNN):
        return "surrogate" if jacobian == "surrogate" else "rate_approximation"
    return "rate"


def lyapunov_spectrum(model: nn.Module, x: Tensor, state0: Any = None, *, k: int | None = None,
                      transient_steps: int | None = None, qr_every: int = 1, seed: int = 0,
                      jacobian: str = "surrogate", reset_derivative: bool | None = None,
                      escape_width: float = 0.1) -> LyapunovResult:
    """The k leading Lyapunov exponents of ``model`` driven by ``x`` from ``state0``.

    Args:
        model: :class:`~spikelearn.models.RateRNN` or :class:`~spikelearn.models.SpikingRNN` (any form).
        x: ``(T, B, n_in)`` input; each of the B trajectories gets its own spectrum.
        state0: initial state (default ``model.init_state(B)``).
        k: number of exponents (default: all, ``N`` — or ``2N`` for ALIF networks, whose state is ``(v, a)``).
        transient_steps: steps excluded from the average (default ``10 + ⌈T/10⌉``, Engelken).
        qr_every: re-orthonormalise every m steps (exact in exact arithmetic while ``J`` products stay
            well-conditioned).
        seed: seed of the random initial orthonormal frame.
        jacobian, reset_derivative, escape_width: spiking models only (module docstring).

    Returns:
        :class:`LyapunovResult` (per step and per second; ``.to_frame()`` for a tidy table).
    """
    with torch.no_grad():
        lin = linearise(model, x, state0, jacobian=jacobian, reset_derivative=reset_derivative,  # type: ignore[arg-type]
                        escape_width=escape_width)
        return _result(lin, lin.n_state if k is None else int(k), transient_steps, qr_every, seed,
                       _jac_name(model, jacobian))


def max_lyapunov(model: nn.Module, x: Tensor, state0: Any = None, **kwargs: Any) -> LyapunovResult:
    """The maximum exponent alone: :func:`lyapunov_spectrum` with ``k = 1`` (``q ← J q; λ += log||q||;
    q ← q/||q||``). ``result.max`` is the trajectory-averaged value per step."""
    if "k" in kwargs:
        raise TypeError("max_lyapunov computes k = 1; use lyapunov_spectrum for more exponents")
    return lyapunov_spectrum(model, x, state0, k=1, **kwargs)


def lyapunov_from_jacobians(jacobians: Tensor | Iterable[Tensor], k: int | None = None, *,
                            transient_steps: int = 0, qr_every: int = 1, seed: int = 0,
                            dt_ms: float = 1.0) -> LyapunovResult:
    """Exponents of a product of given Jacobians ``J_1, J_2, …`` (``(T, n, n)`` or ``(T, B, n, n)``).

    For maps that are not package models (tests, ODE integrators). ``transient_steps`` defaults to 0 here.
    """
    J = torch.stack(list(jacobians)) if not isinstance(jacobians, Tensor) else jacobians
    if J.dim() == 3:
        J = J[:, None]
    if J.dim() != 4 or J.shape[-1] != J.shape[-2]:
        raise ValueError(f"jacobians must be (T, n, n) or (T, B, n, n), got {tuple(J.shape)}")
    T, B, n, _ = J.shape

    class _Given(Linearisation):
        def apply(self, t: int, Q: Tensor) -> Tensor:  # noqa: D102
            return torch.matmul(J[t], Q)

    lin = _Given("given", n, T, B, dt_ms, J[0, 0], J[:, :, 0], J.new_ones(n))
    with torch.no_grad():
        return _result(lin, n if k is None else int(k), transient_steps, qr_every, seed, "given")


def perturbation_growth_rate(model: nn.Module, x: Tensor, state0: Any = None, *, eps: float | None = None,
                             renorm_every: int = 1, transient_steps: int | None = None, seed: int = 0) -> np.ndarray:
    """Maximum exponent by direct simulation (two-trajectory Benettin method; rate models only).

    A reference run and a run from ``h^0 + ε δ`` (random unit ``δ``) are simulated with the model itself; every
    ``renorm_every`` steps the separation is measured, ``log(|Δ|/ε)`` accumulated and the perturbed state reset to
    distance ``ε`` along the current separation. Returns the per-step growth rate ``(B,)``.

    ``eps`` defaults to 1e-7 in float64 and to ``(machine ε)^(1/3)`` otherwise (4.9e-3 in float32, where a
    separation of 1e-7 is below the resolution of an O(1) state and rounds to 0, and 1e-4 still leaves ≈ 30 %
    rounding error in a weakly chaotic network's rate). A separation that rounds to 0 or is not finite is an error
    (choose a larger ``eps`` or float64), never a NaN result.
    """
    if not isinstance(model, RateRNN):
        raise TypeError("perturbation_growth_rate needs a RateRNN (spike trains are not differentiable)")
    if x.dim() != 3:
        raise ValueError(f"x must be (T, B, n_in), got shape {tuple(x.shape)}")
    T, B = x.shape[0], x.shape[1]
    if isinstance(renorm_every, bool) or int(renorm_every) != renorm_every or renorm_every < 1:
        raise ValueError(f"renorm_every must be an int >= 1, got {renorm_every!r}")
    m = int(renorm_every)
    tr = default_transient(T) if transient_steps is None else int(transient_steps)
    if tr < 0:
        raise ValueError(f"transient_steps must be >= 0, got {transient_steps}")
    tr = int(math.ceil(tr / m) * m)
    if tr >= T:
        raise ValueError(f"transient_steps ({tr} after rounding up to a multiple of renorm_every = {m}) leaves "
                         f"no step of the {T}-step input to average over")
    dtype = next(model.parameters()).dtype
    if eps is None:
        eps = 1e-7 if dtype == torch.float64 else float(torch.finfo(dtype).eps ** (1 / 3))
    if not (eps > 0 and math.isfinite(eps)):
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    with torch.no_grad():
        s = model.init_state(B) if state0 is None else state0
        murray = model.form == "murray"
        key = "r" if murray else "h"
        base = getattr(s, key)
        d = random_orthonormal(B, model.n, 1, seed=seed, dtype=base.dtype, device=base.device)[..., 0]
        p = _set(model, s, base + eps * d, key)
        total = torch.zeros(B, dtype=base.dtype, device=base.device)
        for a in range(0, T, m):
            b = min(a + m, T)
            s = model(x[a:b], state=s).state
            p = model(x[a:b], state=p).state
            diff = getattr(p, key) - getattr(s, key)
            dist = diff.norm(dim=1)
            if not (torch.isfinite(dist).all() and (dist > 0).all()):
                raise ValueError(f"perturbation_growth_rate: the separation of the two runs is {dist.min().item()!r} "
                                 f"after step {b} (eps = {eps:g}, dtype {dtype}): it rounded to 0 or overflowed; "
                                 f"use a larger eps or float64")
            if b > tr:
                total += torch.log(dist / eps)
            p = _set(model, s, getattr(s, key) + eps * diff / dist[:, None], key)
        return (total / (T - tr)).cpu().numpy()


def _set(model: RateRNN, s: Any, value: Tensor, key: str) -> Any:
    """A state with ``h`` (or ``r`` for murray) replaced and the other field made consistent."""

    if key == "r":
        return s._replace(r=value)
    r = activation(model.activation)(value - model.thr) if model.form == "relu_lif" else (
        activation(model.activation)(value))
    return s._replace(h=value, r=r)


def mean_field_lyapunov(g: float, *, n_quad: int = 200, iterations: int = 500) -> tuple[float, float]:
    """Mean-field maximum exponent of the random tanh map ``h^t = g J tanh(h^{t-1})`` (``J_ij ~ N(0, 1/N)``,
    N → ∞): ``λ = ½ log(g² E[φ'(√Δ ξ)²])`` with ``Δ = g² E[φ(√Δ ξ)²]`` (§7.4 T7.4). Returns ``(λ, Δ)``.

    For ``g < 1`` the fixed point is ``Δ = 0`` and ``λ = log g``. At ``g = 1`` the iteration approaches
    ``Δ = 0`` only algebraically, so after ``iterations`` steps it returns a small ``Δ > 0`` and ``λ`` slightly
    below 0 (``(−0.0010, 0.0010)`` with the defaults).
    """
    if not (g > 0 and math.isfinite(g)):
        raise ValueError(f"g must be a finite gain > 0, got {g!r}")
    xi, w = np.polynomial.hermite_e.hermegauss(n_quad)
    w = w / w.sum()
    delta = 1.0
    for _ in range(iterations):
        delta = g**2 * float(np.sum(w * np.tanh(np.sqrt(delta) * xi) ** 2))
    if delta < 1e-12:
        return math.log(g), 0.0
    lam = 0.5 * math.log(g**2 * float(np.sum(w * (1 - np.tanh(np.sqrt(delta) * xi) ** 2) ** 2)))
    return lam, delta


def lyapunov_measurement(x: Tensor | None = None, *, batch_size: int = 4, seed: int = 12345, k: int = 1,
                         **kwargs: Any) -> Callable[[nn.Module, Any, int], dict[str, float]]:
    """A trainer measurement hook ``fn(model, task, iteration) -> {"lambda_max", "lambda_sum"}`` (per step).

    Wrap it as ``Measurement("lyapunov", lyapunov_measurement(k=4), every=50)``. The input is ``x`` if given,
    else one fixed batch of ``batch_size`` task trials drawn once from ``seed`` (same trajectories every time).
    Extra keyword arguments go to :func:`lyapunov_spectrum`.
    """
    cache: dict[str, Tensor] = {}

    def fn(model: nn.Module, task: Any, iteration: int) -> dict[str, float]:
        del iteration
        xx = x
        if xx is None:
            if "x" not in cache:
                cache["x"] = task.sample(batch_size, torch.Generator().manual_seed(seed), dtype=torch.float64)[0]
            xx = cache["x"]
        p = next(model.parameters())
        res = lyapunov_spectrum(model, xx.to(dtype=p.dtype, device=p.device), k=k, **kwargs)
        return {"lambda_max": res.max, "lambda_sum": res.sum}

    return fn
