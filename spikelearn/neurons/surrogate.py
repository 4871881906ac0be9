"""Spike nonlinearity with a surrogate (pseudo-)derivative.

Forward: the Heaviside step ``z = H(u)`` of the scaled distance to threshold ``u = (v − A)/v_th``.
Convention at ``u = 0``: **no spike** (``z = 1`` iff ``u > 0``), as in snntorch (``input_ > 0``) and the
e-prop TF code (``tf.greater``). Backward: ``∂z/∂u := σ'(u)``, the surrogate derivative.

Surrogates:

* ``"eprop"`` (ours, ALGORITHMS.md §1.1): ``σ'(u) = γ_pd · max(0, 1 − |u|)``, ``γ_pd = 0.3``. With
  ``u = (v − A)/v_th`` this gives ``∂z/∂v = (γ_pd/v_th) max(0, 1 − |v − A|/v_th) = ψ``.
* snntorch's (``snntorch.surrogate``): ``"fast_sigmoid"`` (``slope``), ``"atan"`` (``alpha``), ``"sigmoid"``
  (``slope``), ``"triangular"`` (``threshold``; snntorch's odd ``±threshold`` step, *not* the e-prop triangle),
  ``"spike_rate_escape"`` (``beta``, ``slope``), ``"straight_through_estimator"`` and ``"heaviside"``. Their
  :meth:`Surrogate.derivative` is the analytic formula of the snntorch backward, written with the same
  operations so that it agrees with autograd through the snntorch function (tested). Any other
  snntorch-style spike callable is accepted; its derivative is then taken by autograd on a detached copy.

:meth:`Surrogate.spike` uses one autograd function whose backward multiplies by :meth:`Surrogate.derivative`,
so the pseudo-derivative a local rule reads and the one BPTT uses are the same tensor op. Dtypes are preserved
(float64 in, float64 out).

``smooth=True`` (tests, ALGORITHMS.md §6 T6.2) replaces the Heaviside forward by the primitive ``F`` of the
surrogate (``F' = σ'``; e.g. ``γ_pd ×`` the piecewise-quadratic ramp for ``"eprop"``, ``u/(1+k|u|) + 1/k`` for
``"fast_sigmoid"``), so BPTT through it is the true gradient and can be checked by finite differences.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

__all__ = ["Surrogate", "make_surrogate", "SURROGATES", "heaviside"]

# name -> default keyword arguments (the snntorch factory's own defaults for the snntorch ones)
SURROGATES: dict[str, dict[str, float]] = {
    "eprop": {"gamma_pd": 0.3},
    "fast_sigmoid": {"slope": 25.0},
    "atan": {"alpha": 2.0},
    "sigmoid": {"slope": 25.0},
    "triangular": {"threshold": 1.0},
    "spike_rate_escape": {"beta": 1.0, "slope": 25.0},
    "straight_through_estimator": {},
    "heaviside": {},
}
_ALIASES = {"ste": "straight_through_estimator", "superspike": "fast_sigmoid", "arctan": "atan"}


def heaviside(u: Tensor) -> Tensor:
    """``H(u)`` with ``H(0) = 0``, in the dtype of ``u`` (no gradient)."""
    return torch.sign(u.detach()).relu_()  # float ops only: much faster than (u > 0).to(dtype) on CPU


class _SpikeFn(torch.autograd.Function):
    """Forward ``H(u)``; backward ``grad · d`` with ``d`` the precomputed (detached) surrogate derivative."""

    @staticmethod
    def forward(ctx, u: Tensor, d: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(d)
        return heaviside(u)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (d,) = ctx.saved_tensors
        return grad * d, None


class _SmoothFn(torch.autograd.Function):
    """Forward ``F(u)`` (smooth primitive); backward ``grad · d`` with ``d = F'(u)``."""

    @staticmethod
    def forward(ctx, u: Tensor, f: Tensor, d: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(d)
        return f

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (d,) = ctx.saved_tensors
        return grad * d, None, None


class Surrogate:
    """A spike function ``H(u)`` with surrogate derivative ``σ'(u)`` (see module docstring).

    Args:
        name: one of :data:`SURROGATES` (or an alias ``"ste"``, ``"superspike"``, ``"arctan"``), or
            ``"custom"`` together with ``fn``.
        smooth: use the smooth primitive ``F`` (``F' = σ'``) as the forward instead of ``H`` (tests only).
        fn: a snntorch-style spike callable (``fn(u) -> H(u)`` with a surrogate backward) for ``"custom"``.
        **kwargs: surrogate parameters (``gamma_pd``; ``slope``; ``alpha``; ``threshold``; ``beta``).
    """

    def __init__(self, name: str = "eprop", *, smooth: bool = False,
                 fn: Callable[[Tensor], Tensor] | None = None, **kwargs: float) -> None:
        name = _ALIASES.get(name, name)
        if name == "custom":
            if fn is None:
                raise ValueError("Surrogate('custom') needs fn=<snntorch-style spike callable>")
            if smooth:
                raise ValueError("a custom surrogate has no known primitive: smooth=True is not available")
            if kwargs:
                raise TypeError(f"Surrogate('custom') takes its parameters inside fn; got {sorted(kwargs)} as well "
                                f"(e.g. pass snntorch.surrogate.atan(alpha=10), not atan() with alpha=10)")
            self.params: dict[str, float] = {}
        elif name in SURROGATES:
            unknown = set(kwargs) - set(SURROGATES[name])
            if unknown:
                raise TypeError(f"surrogate {name!r} takes {sorted(SURROGATES[name])}, got {sorted(unknown)}")
            self.params = {**SURROGATES[name], **{k: float(v) for k, v in kwargs.items()}}
        else:
            raise ValueError(f"unknown surrogate {name!r}; choose from {sorted(SURROGATES)} or pass a callable")
        self.name = name
        self.smooth = bool(smooth)
        self._custom = fn

    # ------------------------------------------------------------------ description
    def config(self) -> dict[str, Any]:
        """Plain-dict description (``make_surrogate(**cfg)`` rebuilds it); custom callables cannot be stored."""
        if self.name == "custom":
            raise ValueError("a surrogate built from a custom callable cannot be serialised; use a named one")
        return {"name": self.name, "smooth": self.smooth, **self.params}

    def snntorch_fn(self) -> Callable[[Tensor], Tensor] | None:
        """The snntorch spike callable this surrogate mirrors (``None`` for ``"eprop"``)."""
        if self.name == "custom":
            return self._custom
        if self.name == "eprop":
            return None
        import snntorch.surrogate as sts

        p = self.params
        return {
            "fast_sigmoid": lambda: sts.fast_sigmoid(slope=p["slope"]),  # type: ignore[arg-type]  (snnTorch annotates int)
            "atan": lambda: sts.atan(alpha=p["alpha"]),
            "sigmoid": lambda: sts.sigmoid(slope=p["slope"]),  # type: ignore[arg-type]
            "triangular": lambda: sts.triangular(threshold=p["threshold"]),  # type: ignore[arg-type]
            "spike_rate_escape": lambda: sts.spike_rate_escape(beta=p["beta"], slope=p["slope"]),  # type: ignore[arg-type]
            "straight_through_estimator": lambda: sts.straight_through_estimator(),
            "heaviside": lambda: sts.heaviside(),
        }[self.name]()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"Surrogate({self.name!r}{', ' + args if args else ''}{', smooth=True' if self.smooth else ''})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Surrogate) and self.name == other.name and self.params == other.params
                and self.smooth == other.smooth and self._custom is other._custom)

    __hash__ = None  # type: ignore[assignment]

    # ------------------------------------------------------------------ maths
    def derivative(self, u: Tensor) -> Tensor:
        """Surrogate derivative ``σ'(u) = ∂z/∂u`` used in backward; same shape and dtype as ``u``, no grad."""
        u = u.detach()
        p = self.params
        n = self.name
        if n == "eprop":
            return (1.0 - u.abs()).relu_().mul_(p["gamma_pd"])  # γ_pd · max(0, 1 − |u|)
        # snntorch formulas, same operation order as snntorch.surrogate's backward methods
        if n == "fast_sigmoid":
            return 1.0 / (p["slope"] * torch.abs(u) + 1.0) ** 2
        if n == "atan":
            return p["alpha"] / 2 / (1 + (torch.pi / 2 * p["alpha"] * u).pow(2))
        if n == "sigmoid":
            # snntorch's k e/(e + 1)² with e = exp(−k u) is inf/inf = NaN once e overflows (u < −88/k in float32,
            # e.g. u < −3.5 thresholds at the default k = 25; snntorch 1.0's own backward returns NaN there).
            # Where e is finite the value is snntorch's bit for bit; elsewhere the same function, k e^{k u}.
            k = p["slope"]
            e = torch.exp(-k * u)
            d = k * e / ((e + 1) ** 2)
            return torch.where(torch.isinf(e), k * torch.exp(k * u), d)
        if n == "triangular":
            t = p["threshold"]
            return torch.where(u >= 0, -t, t).to(u.dtype) * torch.ones_like(u)
        if n == "spike_rate_escape":
            return p["slope"] * torch.exp(-p["beta"] * torch.abs(u - 1))
        if n == "straight_through_estimator":
            return torch.ones_like(u)
        if n == "heaviside":
            return (u > 0).to(u.dtype)
        # custom snntorch-style callable: autograd on a detached copy
        with torch.enable_grad():
            w = u.clone().requires_grad_(True)
            out = self._custom(w)  # type: ignore[misc]
            (g,) = torch.autograd.grad(out, w, torch.ones_like(out))
        return g.to(u.dtype)

    def primitive(self, u: Tensor) -> Tensor:
        """Smooth ``F(u)`` with ``F' = σ'`` (no grad); the forward of the ``smooth`` variant."""
        u = u.detach()
        p = self.params
        n = self.name
        if n == "eprop":
            c = torch.clamp(u, -1.0, 1.0)
            ramp = torch.where(c <= 0, 0.5 * (c + 1) ** 2, 1.0 - 0.5 * (1 - c) ** 2)
            return p["gamma_pd"] * ramp
        if n == "fast_sigmoid":
            k = p["slope"]
            return 1.0 / k + u / (1.0 + k * u.abs())
        if n == "atan":
            return 0.5 + torch.atan(math.pi / 2 * p["alpha"] * u) / math.pi
        if n == "sigmoid":
            return torch.sigmoid(p["slope"] * u)
        if n == "triangular":
            return -p["threshold"] * u.abs()
        if n == "spike_rate_escape":
            b, k = p["beta"], p["slope"]
            s = u - 1
            return torch.where(s <= 0, (k / b) * torch.exp(b * torch.clamp(s, max=0.0)),
                               (k / b) * (2 - torch.exp(-b * torch.clamp(s, min=0.0))))
        if n == "straight_through_estimator":
            return u.clone()
        if n == "heaviside":
            return torch.clamp(u, min=0.0)
        raise ValueError("a custom surrogate has no known primitive")

    def spike(self, u: Tensor, d: Tensor | None = None) -> Tensor:
        """``z = H(u)`` (or ``F(u)`` when ``smooth``) with backward ``∂z/∂u = σ'(u)``.

        Args:
            u: scaled membrane ``(v − A)/v_th``, any shape.
            d: optional precomputed ``self.derivative(u)`` (avoids computing it twice when it is also recorded).
        """
        if self.smooth:
            return self.spike_smooth(u, d)
        if not (u.requires_grad and torch.is_grad_enabled()):
            return heaviside(u)
        return _SpikeFn.apply(u, self.derivative(u) if d is None else d)

    def spike_smooth(self, u: Tensor, d: Tensor | None = None) -> Tensor:
        """Smooth spike ``F(u)`` whose true derivative is the surrogate (for finite-difference tests)."""
        f = self.primitive(u)
        if not (u.requires_grad and torch.is_grad_enabled()):
            return f
        return _SmoothFn.apply(u, f, self.derivative(u) if d is None else d)

    __call__ = spike


def make_surrogate(name_or_obj: str | Surrogate | Callable[[Tensor], Tensor] | Mapping[str, Any] = "eprop",
                   **kwargs: Any) -> Surrogate:
    """Build a :class:`Surrogate` from a name (``make_surrogate("fast_sigmoid", slope=10)``), a config dict
    (from :meth:`Surrogate.config`), an existing :class:`Surrogate` (returned as is unless kwargs are given)
    or a snntorch spike callable (``snntorch.surrogate.atan(alpha=3)``)."""
    if isinstance(name_or_obj, Surrogate):
        if not kwargs:
            return name_or_obj
        if name_or_obj.name == "custom":
            raise ValueError("cannot override parameters of a custom surrogate")
        cfg = {**name_or_obj.config(), **kwargs}
        return Surrogate(cfg.pop("name"), **cfg)
    if isinstance(name_or_obj, str):
        return Surrogate(name_or_obj, **kwargs)
    if isinstance(name_or_obj, Mapping):
        cfg = {**dict(name_or_obj), **kwargs}
        return Surrogate(cfg.pop("name"), **cfg)
    if callable(name_or_obj):
        return Surrogate("custom", fn=name_or_obj, **kwargs)
    raise TypeError(f"cannot make a surrogate from {name_or_obj!r}")


def describe_bad(value, ok: Tensor) -> str:
    """``value`` as an error message shows it: itself when scalar, otherwise how many of its entries fail (``ok``
    is the elementwise check) and the first few offending indices with their values."""
    v = torch.as_tensor(value, dtype=torch.float64)
    if v.dim() == 0:
        return repr(float(v))
    bad = (~ok).nonzero().flatten()
    shown = ", ".join(f"[{int(i)}] = {float(v.flatten()[i])}" for i in bad[:3])
    return f"{len(bad)} of {v.numel()} entries, e.g. {shown}"
