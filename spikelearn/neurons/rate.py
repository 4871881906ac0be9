r"""Leaky rate neurons (ALGORITHMS.md §1.2). One step ``t``; ``γ = dt/τ``, ``α = exp(−dt/τ)``.

With the drive ``D^t = W_in x^t + b + W_rec r^{t-1}`` (every form feeds back the previous *rate* ``r``;
for ``"pre_activation"`` ``r = f(h)``, for ``"richlazy"`` ``r = h``) and optional gap current
``Σ_i G_ji (h_i^{t-1} − h_j^{t-1})`` added to ``D``:

* ``"pre_activation"`` (R1): ``h^t = (1−γ) h^{t-1} + γ D^t``,           ``r^t = f(h^t)``.
* ``"murray"`` (R2, Murray 2019): ``h^t = D^t`` (= u^t),                 ``r^t = (1−γ) r^{t-1} + γ f(h^t)``.
* ``"relu_lif"`` (R3, ModProp / BiolHessRNN): ``h^t = α h^{t-1} + (1−α) D^t`` (= v^t), ``r^t = f(h^t − thr)``.
* ``"richlazy"`` (R3, BioRNN_RichLazy): ``h^t = (1−γ) r^{t-1} + γ D^t``,  ``r^t = f(h^t)``.

``h`` is always the pre-activation (the argument of ``f``, up to ``thr``) and ``fprime = f'(h^t − thr)``.
Time index: input ``x^t`` drives the state of step ``t`` (no extra delay), as in the spiking model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, NamedTuple

import torch
from torch import Tensor

from spikelearn.neurons.surrogate import describe_bad

__all__ = ["RateParams", "RateState", "RateAux", "RateConstants", "rate_step", "rate_step_aux", "rate_update",
           "activation", "activation_derivative", "ACTIVATIONS", "RATE_FORMS", "init_rate_state"]

RATE_FORMS = ("pre_activation", "murray", "relu_lif", "richlazy")
Scalar = float | Tensor


def _relu(h: Tensor) -> Tensor:
    return torch.relu(h)


def _relu_d(h: Tensor) -> Tensor:
    return (h > 0).to(h.dtype)


def _tanh_d(h: Tensor) -> Tensor:
    return 1 - torch.tanh(h) ** 2


def _retanh(h: Tensor) -> Tensor:
    return torch.relu(torch.tanh(h))


def _retanh_d(h: Tensor) -> Tensor:
    return (h > 0).to(h.dtype) * (1 - torch.tanh(h) ** 2)


def _identity(h: Tensor) -> Tensor:
    return h


def _one(h: Tensor) -> Tensor:
    return torch.ones_like(h)


# name -> (f, f'); f'(0) = 0 for relu and retanh (the subgradient torch.relu uses)
ACTIVATIONS: dict[str, tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]] = {
    "relu": (_relu, _relu_d),
    "tanh": (torch.tanh, _tanh_d),
    "retanh": (_retanh, _retanh_d),
    "identity": (_identity, _one),
    "linear": (_identity, _one),
}


def activation(name: str) -> Callable[[Tensor], Tensor]:
    """Activation function ``f`` by name (relu, tanh, retanh = max(0, tanh), identity)."""
    try:
        return ACTIVATIONS[name][0]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}") from None


def activation_derivative(name: str) -> Callable[[Tensor], Tensor]:
    """Derivative ``f'`` by name (equal to autograd's, including ``f'(0) = 0`` for relu/retanh)."""
    try:
        return ACTIVATIONS[name][1]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}") from None


@dataclass(frozen=True)
class RateParams:
    """Constants of a leaky rate population. ``tau_ms`` may be a per-neuron ``(N,)`` tensor.

    Attributes:
        tau_ms: time constant τ (ms). dt_ms: step (ms).
        form: ``"pre_activation"`` | ``"murray"`` | ``"relu_lif"`` | ``"richlazy"`` (module docstring).
        activation: ``"relu"`` | ``"tanh"`` | ``"retanh"`` | ``"identity"``.
        thr: activation offset of ``"relu_lif"`` (``r = f(h − thr)``; 0 in the sources).
    """

    tau_ms: Scalar = 100.0
    dt_ms: float = 1.0
    form: Literal["pre_activation", "murray", "relu_lif", "richlazy"] = "pre_activation"
    activation: str = "tanh"
    thr: float = 0.0

    def __post_init__(self) -> None:
        if self.form not in RATE_FORMS:
            raise ValueError(f"form must be one of {RATE_FORMS}, got {self.form!r}")
        activation(self.activation)
        if not self.dt_ms > 0:
            raise ValueError(f"dt_ms must be positive, got {self.dt_ms}")
        tau = torch.as_tensor(self.tau_ms, dtype=torch.float64)
        ok = torch.isfinite(tau) & (tau > 0)
        if not ok.all():
            raise ValueError(f"tau_ms must be finite and > 0 (per neuron), got {describe_bad(tau, ok)}")
        if self.form != "relu_lif" and (self.dt_ms > tau).any():  # γ = dt/τ: a leak 1 − γ < 0 would oscillate
            raise ValueError(f"form {self.form!r} integrates with γ = dt_ms/tau_ms, which must be <= 1; got dt_ms = "
                             f"{self.dt_ms} > tau_ms = {float(tau.min())} (use relu_lif's exp(−dt/τ), or a smaller dt)")
        if self.thr != 0 and self.form != "relu_lif":
            raise ValueError(f"thr = {self.thr} only applies to form 'relu_lif' (r = f(h − thr)); form "
                             f"{self.form!r} computes r = f(h)")

    def constants(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None
                  ) -> "RateConstants":
        """Derived per-step constants: ``leak`` (factor on the leaky variable) and ``c_in`` (factor on ``D``)."""
        tau = torch.as_tensor(self.tau_ms, dtype=dtype or torch.get_default_dtype(), device=device)
        if self.form == "relu_lif":
            leak = torch.exp(-self.dt_ms / tau)
            c_in = 1 - leak
        else:
            c_in = self.dt_ms / tau
            leak = 1 - c_in
        if self.form == "murray":  # the drive enters unscaled; γ scales f(u) instead
            c_f = c_in
            c_in = torch.ones_like(c_in)
        else:
            c_f = torch.ones_like(c_in)
        f, fp = ACTIVATIONS[self.activation]
        return RateConstants(form=self.form, leak=leak, c_in=c_in, c_f=c_f, thr=float(self.thr), f=f, fprime=fp)


class RateConstants(NamedTuple):
    form: str
    leak: Tensor    # 1−γ (pre_activation, murray, richlazy) or α (relu_lif)
    c_in: Tensor    # factor on the drive: γ, 1 (murray) or 1−α
    c_f: Tensor     # factor on f(u) (murray: γ; else 1)
    thr: float
    f: Callable[[Tensor], Tensor]
    fprime: Callable[[Tensor], Tensor]


class RateState(NamedTuple):
    """State after step ``t``; fields ``(B, N)``."""

    h: Tensor  # pre-activation h^t
    r: Tensor  # rate r^t (what W_rec and W_out see)


class RateAux(NamedTuple):
    fprime: Tensor  # f'(h^t − thr), (B, N), detached


def init_rate_state(batch_size: int, n: int, *, dtype: torch.dtype | None = None,
                    device: torch.device | str | None = None, params: RateParams | None = None) -> RateState:
    """Zero pre-activation and the matching rate ``r = f(0 − thr)`` (0 for the sources' activations;
    ``murray`` keeps ``r = 0``)."""
    h = torch.zeros(batch_size, n, dtype=dtype or torch.get_default_dtype(), device=device)
    if params is None or params.form == "murray":
        return RateState(h=h, r=h)
    return RateState(h=h, r=activation(params.activation)(h - params.thr))


def rate_update(c: RateConstants, state: RateState, drive: Tensor, *, need_aux: bool = False
                ) -> tuple[RateState, RateAux | None]:
    """One rate step from a drive already multiplied by ``c.c_in`` (the model's fast path).

    Args:
        drive: ``(B, N)``, ``c_in · D^t``.
    """
    if c.form == "pre_activation":
        h = c.leak * state.h + drive
        r = c.f(h)
    elif c.form == "murray":
        h = drive
        r = c.leak * state.r + c.c_f * c.f(h)
    elif c.form == "relu_lif":
        h = c.leak * state.h + drive
        r = c.f(h - c.thr) if c.thr else c.f(h)
    else:  # richlazy
        h = c.leak * state.r + drive
        r = c.f(h)
    aux = None
    if need_aux:
        hh = h.detach()
        aux = RateAux(fprime=c.fprime(hh - c.thr) if c.thr else c.fprime(hh))
    return RateState(h=h, r=r), aux


def _rate_step(params: RateParams, state: RateState, i_in: Tensor, w_rec: Tensor | None, g_gap: Tensor | None,
               need_aux: bool) -> tuple[RateState, RateAux | None]:
    c = params.constants(dtype=state.h.dtype, device=state.h.device)
    drive = i_in
    if w_rec is not None:
        drive = drive + state.r @ w_rec.T
    if g_gap is not None:
        drive = drive + state.h @ g_gap.T - state.h * g_gap.sum(1)
    return rate_update(c, state, c.c_in * drive, need_aux=need_aux)


def rate_step_aux(params: RateParams, state: RateState, i_in: Tensor, *, w_rec: Tensor | None = None,
                  g_gap: Tensor | None = None) -> tuple[RateState, RateAux]:
    """:func:`rate_step` that also returns ``RateAux(fprime)``."""
    new, aux = _rate_step(params, state, i_in, w_rec, g_gap, True)
    assert aux is not None
    return new, aux


def rate_step(params: RateParams, state: RateState, i_in: Tensor, *, w_rec: Tensor | None = None,
              g_gap: Tensor | None = None) -> RateState:
    """One leaky-rate step (§1.2).

    Args:
        params: constants. state: state after step ``t−1`` (``(B, N)`` fields).
        i_in: ``(B, N)`` feed-forward drive ``W_in x^t + b``.
        w_rec: optional ``(N, N)`` ``(post, pre)`` weights; adds ``W_rec r^{t-1}``.
        g_gap: optional ``(N, N)`` gap conductances; adds ``Σ_i G_ji (h_i^{t-1} − h_j^{t-1})``.
    """
    return _rate_step(params, state, i_in, w_rec, g_gap, False)[0]
