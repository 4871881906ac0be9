r"""Discrete-time LIF / ALIF neurons (ALGORITHMS.md §1.1; Bellec et al. 2020, doi:10.1038/s41467-020-17236-y).

One step ``t`` (``dt_ms`` per step), per neuron ``j``, with ``I_j^t`` the synaptic drive
(``Σ_i W_in[j,i] x_i^t + Σ_{i≠j} W_rec[j,i] z_i^{t-1}`` + gap current)::

    α = exp(−dt/τ_m),  ρ = exp(−dt/τ_a)                   (exact decay factors)
    scaling A:  v^t = α v^{t-1} +       I^t − v_th z^{t-1},   a^t = ρ a^{t-1} +       z^{t-1}
    scaling B:  v^t = α v^{t-1} + (1−α) I^t − v_th z^{t-1},   a^t = ρ a^{t-1} + (1−ρ) z^{t-1}
    A^t = v_th + β a^t                                      (adaptive threshold; β = 0 ⇒ LIF)
    z^t = H((v^t − A^t)/v_th)   unless refractory at t, else 0
    ψ^t = (γ_pd/v_th) max(0, 1 − |v^t − A^t|/v_th)          (eprop surrogate; 0 while refractory)

Reset is by subtraction of the *baseline* ``v_th`` (not of ``A``). Recurrent spikes act with a one-step delay.
``reset="zero"`` instead sets the membrane to 0 before the leak of the step after a spike (snnTorch's
``reset_mechanism="zero"``): ``v^t = α (1 − z^{t-1}) v^{t-1} + c_in I^t`` (the step's input still counts).
Refractoriness is a counter ``ref`` of blocked steps left: after a spike at ``t`` the neuron is blocked for the
next ``n_ref`` steps (``"lsnn"``: z forced to 0 if it spiked in any of the previous ``n_ref`` steps) or
``n_ref − 1`` steps (``"counter"``, the e-prop ``EligALIF`` convention). The refractory mask is a constant.

Gap junctions (explicit): ``I_gap,j^t = Σ_i G_ji (v_i^{t-1} − v_j^{t-1})`` is added to ``I^t`` (so it is also
multiplied by ``1−α`` under scaling B); the potentials of the previous step are used.

Current-based synapses (``tau_syn_ms > 0``; "CUBA" LIF/ALIF, the neuron of Engelken's surrogate-gradient flossing
example, ALGORITHMS.md §7.1, of snnTorch's ``Synaptic``, NIR's ``CubaLIF`` and Loihi): the chemical drive is first
low-pass filtered by a synaptic current ``i`` (in units of ``v``, i.e. already multiplied by ``c_in``)::

    α_s = exp(−dt/τ_s)
    i^t = α_s i^{t-1} + c_in (Σ_i W_in[j,i] x_i^t + Σ_{i≠j} W_rec[j,i] z_i^{t-1})
    v^t = α v^{t-1} + i^t + c_in I_gap^t − v_th z^{t-1}                 (gap junctions stay electrical: unfiltered)

so a single input pulse of weight ``w`` at step 1 gives ``v^t = c_in w (α^t − α_s^t)/(α − α_s)`` (for α ≠ α_s) below
threshold. ``tau_syn_ms = 0`` (default) means no synaptic filter (``α_s = 0``): the drive reaches ``v`` in the step
it arrives, exactly the model above.

One step, two entry points. :func:`alif_step` / :func:`alif_step_aux` take :class:`LIFParams` and unscaled weights
(the reference). ``SpikingRNN.forward`` loops over :func:`alif_recurrent_update` with the constants of
:func:`alif_constants` and weights scaled by ``c_in`` once per forward; it also takes an external current ``i_ext``
added straight to ``v`` (not scaled, not filtered). Both assemble the drive (synapses, gap current) and call
:func:`alif_update`, the membrane/adaptation/threshold/refractory/reset update itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Literal, NamedTuple

import torch
from torch import Tensor

from spikelearn.neurons.surrogate import Surrogate, describe_bad, heaviside, make_surrogate

__all__ = ["LIFParams", "ALIFState", "ALIFAux", "ALIFConstants", "alif_step", "alif_step_aux", "alif_update",
           "alif_recurrent_update", "alif_constants", "lif_step", "decay", "init_alif_state", "gap_current",
           "synaptic_decay", "synaptic_update"]

Scalar = float | Tensor


def decay(dt_ms: float, tau_ms: Scalar) -> Scalar:
    """Exact decay factor ``exp(−dt/τ)`` over one step (``τ = inf`` gives 1)."""
    if isinstance(tau_ms, Tensor):
        return torch.exp(-dt_ms / tau_ms)
    return math.exp(-dt_ms / tau_ms)


def synaptic_decay(dt_ms: float, tau_syn_ms: Tensor) -> Tensor:
    """Synaptic-current decay ``α_s = exp(−dt/τ_s)``, with ``τ_s = 0`` meaning no filter (``α_s = 0``)."""
    return torch.where(tau_syn_ms > 0, torch.exp(-dt_ms / torch.where(tau_syn_ms > 0, tau_syn_ms, 1.0)),
                       torch.zeros_like(tau_syn_ms))


def synaptic_update(alpha_syn: Tensor, i_prev: Tensor, drive: Tensor) -> Tensor:
    """One step of the current-based synapse: ``i^t = α_s i^{t-1} + drive`` (``drive = c_in · I_chem^t``)."""
    return torch.addcmul(drive, alpha_syn, i_prev)


@dataclass(frozen=True)
class LIFParams:
    """Constants of an ALIF population (LIF when ``beta == 0``). Scalars or per-neuron ``(N,)`` tensors.

    Attributes:
        tau_mem_ms: membrane time constant τ_m (ms).
        tau_adapt_ms: adaptation time constant τ_a (ms); irrelevant where ``beta == 0``.
        v_th: baseline threshold (units of ``v``), also the reset amount and the ψ scale.
        beta: adaptation strength β (0 ⇒ LIF).
        n_ref: refractory period in steps (integer valued).
        dt_ms: time step (ms).
        scaling: ``"A"`` (input not scaled) or ``"B"`` (input scaled by ``1−α``, adaptation by ``1−ρ``).
        refractory: ``"lsnn"`` (blocks ``n_ref`` steps) or ``"counter"`` (blocks ``n_ref − 1`` steps).
        detach_reset: stop the gradient through the reset term ``−v_th z^{t-1}``.
        tau_syn_ms: synaptic-current time constant τ_s (ms); 0 (default) = no synaptic filter (module docstring).
        reset: ``"subtract"`` (``−v_th z^{t-1}``, default) or ``"zero"`` (``v^{t-1} ← 0`` after a spike, before the
            leak; module docstring).
    """

    tau_mem_ms: Scalar = 20.0
    tau_adapt_ms: Scalar = 2000.0
    v_th: Scalar = 0.6
    beta: Scalar = 0.0
    n_ref: Scalar = 5
    dt_ms: float = 1.0
    scaling: Literal["A", "B"] = "A"
    refractory: Literal["lsnn", "counter"] = "lsnn"
    detach_reset: bool = False
    tau_syn_ms: Scalar = 0.0
    reset: Literal["subtract", "zero"] = "subtract"

    def __post_init__(self) -> None:
        if self.reset not in ("subtract", "zero"):
            raise ValueError(f"reset must be 'subtract' or 'zero', got {self.reset!r}")
        if self.scaling not in ("A", "B"):
            raise ValueError(f"scaling must be 'A' or 'B', got {self.scaling!r}")
        if self.refractory not in ("lsnn", "counter"):
            raise ValueError(f"refractory must be 'lsnn' or 'counter', got {self.refractory!r}")
        if not self.dt_ms > 0:
            raise ValueError(f"dt_ms must be positive, got {self.dt_ms}")
        for name in ("tau_mem_ms", "tau_adapt_ms", "v_th"):  # scalars or per-neuron arrays
            v = torch.as_tensor(getattr(self, name), dtype=torch.float64)
            ok = torch.isfinite(v) & (v > 0)
            if not ok.all():
                raise ValueError(f"{name} must be finite and > 0 (per neuron), got {describe_bad(v, ok)}")
        for name in ("beta", "n_ref", "tau_syn_ms"):
            v = torch.as_tensor(getattr(self, name), dtype=torch.float64)
            ok = torch.isfinite(v) & (v >= 0)
            if not ok.all():
                raise ValueError(f"{name} must be finite and >= 0 (per neuron), got {describe_bad(v, ok)}")

    def constants(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None
                  ) -> "ALIFConstants":
        """Derived per-step constants as tensors (scalars become 0-d tensors)."""

        def t(x: Scalar) -> Tensor:
            return torch.as_tensor(x, dtype=dtype or torch.get_default_dtype(), device=device)

        n_ref = t(self.n_ref)
        if (n_ref != torch.round(n_ref)).any() or (n_ref < 0).any():
            raise ValueError("n_ref must be non-negative integers")
        return alif_constants(tau_mem_ms=t(self.tau_mem_ms), tau_adapt_ms=t(self.tau_adapt_ms), v_th=t(self.v_th),
                              beta=t(self.beta), n_ref=n_ref, tau_syn_ms=t(self.tau_syn_ms), dt_ms=self.dt_ms,
                              scaling=self.scaling, refractory=self.refractory, detach_reset=self.detach_reset,
                              reset=self.reset)


class ALIFConstants(NamedTuple):
    """Per-step constants of :func:`alif_update` (tensors broadcastable to ``(B, N)``)."""

    alpha: Tensor     # membrane decay exp(−dt/τ_m)
    rho: Tensor       # adaptation decay exp(−dt/τ_a)
    c_in: Tensor      # input factor: 1 (A) or 1−α (B)
    c_a: Tensor       # adaptation increment: 1 (A) or 1−ρ (B)
    v_th: Tensor      # baseline threshold
    beta: Tensor      # adaptation strength
    n_block: Tensor   # steps blocked after a spike
    detach_reset: bool
    adaptive: bool    # any beta != 0 (else a is never updated)
    refractory: bool  # any n_block > 0
    alpha_syn: Tensor | None = None  # synaptic-current decay exp(−dt/τ_s) (0 where τ_s = 0)
    synaptic: bool = False           # any τ_s > 0 (else there is no synaptic current)
    reset_zero: bool = False         # reset="zero": v ← 0 after a spike (else subtract v_th)


def alif_constants(*, tau_mem_ms: Tensor, tau_adapt_ms: Tensor, v_th: Tensor, beta: Tensor, n_ref: Tensor,
                   tau_syn_ms: Tensor, dt_ms: float, scaling: str = "A", refractory: str = "lsnn",
                   detach_reset: bool = False, reset: str = "subtract") -> ALIFConstants:
    """The per-step constants from parameter tensors (0-d or ``(N,)``, already of the wanted dtype and device;
    not validated: :class:`LIFParams` validates, a model validates its buffers once at construction).

    The one place the constants are derived: :meth:`LIFParams.constants` and ``SpikingRNN.constants`` call it.
    ``v_th`` and ``beta`` are used as given (not copied); ``n_block = n_ref`` (``"lsnn"``) or ``max(n_ref − 1, 0)``
    (``"counter"``).
    """
    alpha = torch.exp(-dt_ms / tau_mem_ms)
    rho = torch.exp(-dt_ms / tau_adapt_ms)
    if scaling == "A":
        c_in, c_a = torch.ones_like(alpha), torch.ones_like(rho)
    else:
        c_in, c_a = 1 - alpha, 1 - rho
    n_block = n_ref if refractory == "lsnn" else torch.clamp(n_ref - 1, min=0)
    return ALIFConstants(alpha=alpha, rho=rho, c_in=c_in, c_a=c_a, v_th=v_th, beta=beta,
                         n_block=n_block, detach_reset=detach_reset,
                         adaptive=bool((beta != 0).any()), refractory=bool((n_block > 0).any()),
                         alpha_syn=synaptic_decay(dt_ms, tau_syn_ms), synaptic=bool((tau_syn_ms > 0).any()),
                         reset_zero=reset == "zero")


class ALIFState(NamedTuple):
    """State after step ``t``; every field ``(B, N)``."""

    v: Tensor    # membrane potential v^t
    a: Tensor    # adaptation a^t (threshold A^t = v_th + β a^t)
    z: Tensor    # spikes z^t in {0, 1}
    ref: Tensor  # refractory steps left after step t (float, integer valued)
    i_syn: Tensor | None = None  # synaptic current i^t (units of v; None or zeros without current-based synapses)


class ALIFAux(NamedTuple):
    """Quantities of step ``t`` a learning rule needs besides the state; every field ``(B, N)``."""

    thr: Tensor         # adaptive threshold A^t
    psi: Tensor         # pseudo-derivative ∂z^t/∂v^t used in backward (0 while refractory), detached
    refractory: Tensor  # bool: neuron was blocked at step t


def init_alif_state(batch_size: int, n: int, *, dtype: torch.dtype | None = None,
                    device: torch.device | str | None = None) -> ALIFState:
    """All-zero state ``(B, N)``: at rest, no adaptation, no spike, not refractory, no synaptic current."""
    z = torch.zeros(batch_size, n, dtype=dtype or torch.get_default_dtype(), device=device)
    return ALIFState(v=z, a=z, z=z, ref=z, i_syn=z)


def gap_current(v: Tensor, g_gap: Tensor | Callable[[Tensor], Tensor], g_sum: Tensor | None = None) -> Tensor:
    """Gap-junction current ``Σ_i G_ji (v_i − v_j)``.

    Args:
        v: ``(B, N)`` potentials. g_gap: ``(N, N)`` symmetric conductances, or a function ``v ↦ G v`` (per-edge
            storage; then ``g_sum`` is required). g_sum: optional ``G.sum(1)``.
    """
    if not isinstance(g_gap, Tensor):
        if g_sum is None:
            raise ValueError("gap_current: g_sum is required when g_gap is a function")
        return g_gap(v) - v * g_sum
    if g_sum is None:
        g_sum = g_gap.sum(1)
    return v @ g_gap.T - v * g_sum


class _LIFMembraneSpike(torch.autograd.Function):
    """Fused LIF membrane update and spike (β = 0, hard threshold): one autograd node per step instead of five.

    Forward (the same operations as the unfused path, so values are identical)::

        v = drive + α v_prev − v_th z_prev;   u = (v − v_th)/v_th;   z = H(u)·free;   ψ = σ'(u)·free/v_th

    Backward: ``ḡ_v = g_v + g_z ψ``; ``∂/∂drive = ḡ_v``, ``∂/∂v_prev = α ḡ_v``, ``∂/∂z_prev = −v_th ḡ_v``
    (``0`` with ``detach_reset``).
    """

    @staticmethod
    def forward(ctx, drive: Tensor, v_prev: Tensor, z_prev: Tensor, alpha: Tensor, v_th: Tensor,  # type: ignore[override]
                free: Tensor | None, surrogate: Surrogate, detach_reset: bool) -> tuple[Tensor, Tensor, Tensor]:
        v = torch.addcmul(torch.addcmul(drive, alpha, v_prev), v_th, z_prev, value=-1.0)
        u = (v - v_th) / v_th
        psi = surrogate.derivative(u)
        z = heaviside(u)
        if free is not None:
            z = z * free
            psi = psi * free
        psi = psi / v_th
        ctx.save_for_backward(psi, alpha, v_th)
        ctx.detach_reset = detach_reset
        ctx.mark_non_differentiable(psi)
        return v, z, psi

    @staticmethod
    def backward(ctx, g_v: Tensor, g_z: Tensor, g_psi: Tensor):  # type: ignore[override]
        del g_psi
        psi, alpha, v_th = ctx.saved_tensors
        g = torch.addcmul(g_v, g_z, psi) if g_z is not None else g_v
        g_zprev = None if ctx.detach_reset else -v_th * g
        return g, alpha * g, g_zprev, None, None, None, None, None


def alif_update(c: ALIFConstants, state: ALIFState, drive: Tensor, surrogate: Surrogate, *,
                need_aux: bool = False) -> tuple[ALIFState, ALIFAux | None]:
    """One ALIF step from a drive that is *already multiplied by* ``c_in`` (the model's fast path).

    Args:
        c: constants (:meth:`LIFParams.constants`).
        state: state after step ``t−1``.
        drive: ``(B, N)``, ``c_in · I^t`` (feed-forward + recurrent + gap current, scaled).
        surrogate: spike function.
        need_aux: also return ``(thr, psi, refractory)``.
    """
    # Written with fused float ops (addcmul, sign/relu instead of comparisons): this runs once per step.
    # LIF with a hard threshold, when ψ is needed (training or a record): the fused single-node step.
    if ((need_aux or torch.is_grad_enabled()) and not c.adaptive and not surrogate.smooth
            and surrogate.name != "custom" and not c.reset_zero):
        free = (1.0 - state.ref).relu_() if c.refractory else None
        v, z, psi = _LIFMembraneSpike.apply(drive, state.v, state.z, c.alpha, c.v_th, free, surrogate,
                                            c.detach_reset)
        ref = torch.addcmul((state.ref - 1.0).relu_(), c.n_block, z.detach()) if c.refractory else state.ref
        aux = None
        if need_aux:
            refractory = state.ref > 0 if c.refractory else torch.zeros_like(v, dtype=torch.bool)
            aux = ALIFAux(thr=c.v_th.expand_as(v), psi=psi, refractory=refractory)
        return ALIFState(v=v, a=state.a, z=z, ref=ref, i_syn=state.i_syn), aux
    z_prev = state.z.detach() if c.detach_reset else state.z
    if c.reset_zero:  # v^t = α (1 − z^{t-1}) v^{t-1} + drive
        v = torch.addcmul(drive, c.alpha, state.v * (1.0 - z_prev))
    else:
        v = torch.addcmul(torch.addcmul(drive, c.alpha, state.v), c.v_th, z_prev, value=-1.0)
    if c.adaptive:
        a = torch.addcmul(c.rho * state.a, c.c_a, state.z)
        thr = torch.addcmul(c.v_th, c.beta, a)
    else:
        a = state.a
        thr = c.v_th.expand_as(v) if need_aux else c.v_th
    u = (v - thr) / c.v_th
    need_d = need_aux or (u.requires_grad and torch.is_grad_enabled())
    d = surrogate.derivative(u) if need_d else None
    aux = None
    if c.refractory:
        free = (1.0 - state.ref).relu_()  # 1 where not refractory (ref is a non-negative integer count)
        z = surrogate.spike(u, d) * free
        event = heaviside(u) * free if surrogate.smooth else z.detach()  # the spike event, also when smooth
        ref = torch.addcmul((state.ref - 1.0).relu_(), c.n_block, event)
        if need_aux:
            assert d is not None
            aux = ALIFAux(thr=thr, psi=d / c.v_th * free, refractory=state.ref > 0)
    else:
        z = surrogate.spike(u, d)
        ref = state.ref
        if need_aux:
            assert d is not None
            aux = ALIFAux(thr=thr, psi=d / c.v_th, refractory=torch.zeros_like(v, dtype=torch.bool))
    return ALIFState(v=v, a=a, z=z, ref=ref, i_syn=state.i_syn), aux


def alif_recurrent_update(c: ALIFConstants, state: ALIFState, ff: Tensor, w_rec_t: Tensor | Callable[[Tensor], Tensor] | None,
                          surrogate: Surrogate, *, g_gap: Tensor | Callable[[Tensor], Tensor] | None = None,
                          g_sum: Tensor | None = None,
                          i_ext: Tensor | None = None, need_aux: bool = False) -> tuple[ALIFState, ALIFAux | None]:
    """One step of a recurrent ALIF population from weights *already multiplied by* ``c_in`` (the model's step).

    The drive of :func:`alif_update`, then the step::

        I_chem = ff + z^{t-1} @ w_rec_t                        = c_in (W_in x^t + W_rec z^{t-1})
        i^t    = α_s i^{t-1} + I_chem   (current-based synapses, c.synaptic; I_chem itself otherwise)
        drive  = i^t + gap_current(v^{t-1}, g_gap, g_sum) + i_ext^t

    Args:
        c: constants (:func:`alif_constants`). state: state after step ``t−1`` (``i_syn`` must be a tensor when
            ``c.synaptic``; it is carried unchanged otherwise).
        ff: ``(B, N)`` scaled feed-forward drive ``c_in W_in x^t`` (plus anything else that is filtered like it).
        w_rec_t: ``(N, N)`` scaled recurrent weights transposed, ``(c_in W_rec)ᵀ`` (``(pre, post)``), a function
            ``z ↦ c_in W_rec z`` (``(B, N) -> (B, N)``; per-edge storage), or ``None``.
        surrogate: spike function.
        g_gap: optional ``(N, N)`` scaled gap conductances ``c_in G`` (electrical: not synaptically filtered);
            g_sum: their row sums (computed when not given).
        i_ext: optional ``(B, N)`` current added straight to the membrane (not scaled, not filtered).
        need_aux: also return ``(thr, psi, refractory)``.

    Reset (``"subtract"``/``"zero"``), ``detach_reset``, adaptation and refractoriness are :func:`alif_update`'s,
    selected by ``c``.

    Returns:
        the state after step ``t`` (with the new ``i_syn``) and the aux of :func:`alif_update`.
    """
    if w_rec_t is None:
        drive = ff
    elif isinstance(w_rec_t, Tensor):
        drive = torch.addmm(ff, state.z, w_rec_t)
    else:
        drive = ff + w_rec_t(state.z)
    if c.synaptic:
        assert c.alpha_syn is not None and state.i_syn is not None
        drive = synaptic_update(c.alpha_syn, state.i_syn, drive)
        state = ALIFState(state.v, state.a, state.z, state.ref, drive)
    if g_gap is not None:
        drive = drive + gap_current(state.v, g_gap, g_sum)
    if i_ext is not None:
        drive = drive + i_ext
    return alif_update(c, state, drive, surrogate, need_aux=need_aux)


def _drive(c: ALIFConstants, state: ALIFState, i_in: Tensor, w_rec: Tensor | None, g_gap: Tensor | None
           ) -> tuple[ALIFState, Tensor]:
    """The scaled drive of :func:`alif_update`, after the synaptic update when synapses are current-based."""
    chem = i_in
    if w_rec is not None:
        chem = chem + state.z @ w_rec.T
    gap = gap_current(state.v, g_gap) if g_gap is not None else None
    if not c.synaptic:
        return state, c.c_in * (chem if gap is None else chem + gap)
    assert c.alpha_syn is not None
    i_prev = state.i_syn if state.i_syn is not None else torch.zeros_like(state.v)
    i_syn = synaptic_update(c.alpha_syn, i_prev, c.c_in * chem)
    return state._replace(i_syn=i_syn), (i_syn if gap is None else i_syn + c.c_in * gap)


def alif_step_aux(params: LIFParams, state: ALIFState, i_in: Tensor, *, w_rec: Tensor | None = None,
                  g_gap: Tensor | None = None, surrogate: Surrogate | str = "eprop"
                  ) -> tuple[ALIFState, ALIFAux]:
    """:func:`alif_step` that also returns ``ALIFAux(thr, psi, refractory)`` of the step."""
    c = params.constants(dtype=state.v.dtype, device=state.v.device)
    s = make_surrogate(surrogate)
    state, drive = _drive(c, state, i_in, w_rec, g_gap)
    new, aux = alif_update(c, state, drive, s, need_aux=True)
    assert aux is not None
    return new, aux


def alif_step(params: LIFParams, state: ALIFState, i_in: Tensor, *, w_rec: Tensor | None = None,
              g_gap: Tensor | None = None, surrogate: Surrogate | str = "eprop") -> ALIFState:
    """One ALIF step (§1.1).

    Args:
        params: constants (scalars or ``(N,)`` tensors).
        state: state after step ``t−1``, fields ``(B, N)``.
        i_in: ``(B, N)`` feed-forward drive ``W_in x^t`` (plus anything else; units of ``v`` in scaling A).
        w_rec: optional ``(N, N)`` recurrent weights ``(post, pre)``; adds ``W_rec z^{t-1}``.
        g_gap: optional ``(N, N)`` gap conductances; adds ``Σ_i G_ji (v_i^{t-1} − v_j^{t-1})``.
        surrogate: name or :class:`Surrogate` for the spike's backward.

    With ``params.tau_syn_ms > 0`` the feed-forward and recurrent drive pass through the synaptic current
    ``state.i_syn`` first (module docstring); the returned state carries the new ``i_syn``.

    Returns:
        the state after step ``t``.
    """
    c = params.constants(dtype=state.v.dtype, device=state.v.device)
    state, drive = _drive(c, state, i_in, w_rec, g_gap)
    new, _ = alif_update(c, state, drive, make_surrogate(surrogate))
    return new


def lif_step(params: LIFParams, state: ALIFState, i_in: Tensor, **kwargs) -> ALIFState:
    """LIF step: :func:`alif_step` with ``beta = 0`` (the ``a`` field stays as given)."""
    if isinstance(params.beta, Tensor) or params.beta != 0:

        params = replace(params, beta=0.0)
    return alif_step(params, state, i_in, **kwargs)
