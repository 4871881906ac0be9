r"""ModProp — cell-type-specific modulatory signalling (Liu, Smith, Mihalas, Shea-Brown, Sümbül, NeurIPS 2022,
arXiv:2206.01338).

The exact credit ``δ^t = dE/dh^t`` of a leaky network obeys ``δ^t = m^t + (J^{t+1})ᵀ δ^{t+1}`` with
``J^{t+1} = diag(leak) + diag(c_in) W_rec diag(f'(h^t))`` and ``m^t = f'(h^t) ⊙ ∂E/∂r^t``. ModProp keeps the local
paths (leak, ``m``) exact and, only in the credit that leaves a neuron through recurrent weights, replaces
``W_rec → W_ab = P Ω Pᵀ`` (``Ω[α,β]`` the mean of the block ``W_rec[α ← β]`` including zeros) and the activation
derivative seen by the targets ``f'(h_p^t) → μ``. ``omega="signed_mean"`` (default) is that signed block mean;
``omega="abs_sign"`` is the source's form: the block mean of ``|W|`` times each presynaptic
neuron's sign, ``W_ab[p,q] = mean|W|[τ(p), τ(q)] · s_q``. The two are equal whenever every presynaptic type is of
one sign (E/I types, Dale-consistent circuit types) and differ for a type that mixes signs. The source's form is a
``P Ω Pᵀ`` product over the refined types (type, sign) — ``Ω[(α,·),(β,s)] = mean|W|[α,β]·s`` — so every form below
(scan, filter taps) runs on it unchanged, with up to twice the types::

    δ̃^t = m^t + leak ⊙ δ̃^{t+1} + μ W_abᵀ (c_in ⊙ δ̃^{t+1}),     ∂E/∂W_pq ≈ Σ_{b,t} δ̃_p^t c_in,p pre_q^t

(``pre = r^{t-1}`` for ``W_rec``, ``x^t`` for ``W_in``, 1 for ``b_rec``). Because ``J̃`` is time-invariant with block
structure, the same sums are computed causally with cell-type-pair filter taps::

    ε_q^t = α ε_q^{t-1} + c_in pre_q^t,      M_α^t = Σ_{j∈α} m_j^t,      Y_q^{t+1} = A Y_q^t + c Ω ε_q^t,  Y^1 = 0
    ∂E/∂W_pq ≈ Σ_t m_p^t ε_q^t + Σ_t Σ_α M_α^t Y_q^t[α, τ(p)]           A = α I + c Ω D,  c = μ c_in,  D = diag(n_α)

Rate networks (:class:`~spikelearn.models.RateRNN`, forms ``"pre_activation"`` and ``"relu_lif"``): ``mode=
"batched"`` is the backward scan (``W_abᵀ`` applied through ``P``, ``O(N C)`` per step, then one GEMM per weight
matrix); ``mode="online"`` is the filter-tap recursion (needs uniform ``leak`` and ``c_in``), memory
``O((N + n_in) C²)`` per trial plus accumulators — the ModProp part accumulates in a ``(C, N + n_in)`` array.

Spiking networks (:class:`~spikelearn.models.SpikingRNN`, ``mode="batched"``): the non-local credit
``g_p^t = μ Σ_j W_ab[j,p] c_in,j δ̃v_j^{t+1}`` enters neuron ``p``'s local adjoint where the exact one would enter
through ``ψ_p^t`` (``∂z/∂v → μ``, ``∂z/∂a → −βμ``); leak, adaptation, the optional reset path and the readout filter are
exact, as in e-prop. μ should be chosen on ψ's scale (``γ_pd/v_th`` at its peak). The causal filter form would need
``(N, N + n_in, C, C)`` traces for ALIF neurons and a non-causal readout credit, so it is not offered.
With current-based synapses (``tau_syn_ms > 0``) a recurrent spike enters the target's synaptic current, so the
non-local credit is ``μ Σ_j W_ab[j,p] c_in,j δ̃i_j^{t+1}`` with ``δ̃i^{t+1} = δ̃v^{t+1} + α_s δ̃i^{t+2}`` (the exact
local adjoint of the current); tested against the custom-backward construction. ``reset="zero"``: the local
adjoint is e-prop's for that reset (leak α(1 − z), reset path −α v); the substituted credit is unchanged.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor

from spikelearn.models import RateRNN, SpikingRNN
from spikelearn.rules.base import Grads, LossFn, RuleState
from spikelearn.rules.local import (
    FeedbackMatrix,
    LocalRule,
    SplitPre,
    assemble_grads,
    cell_type_index,
    check_local_options,
    default_std_hidden,
    default_std_out,
    initial_spikes,
    local_adjoint_scan,
    rate_scan_fields,
    readout_credit_chunks,
    record_and_output_error,
    spiking_constants,
    spiking_scan_fields,
    start_state,
    type_average,
    type_indicator,
)
from spikelearn.rules.registry import register
from spikelearn.weights import DENSE, SparseWeights, weight_ops

__all__ = ["ModProp", "ModPropState", "filter_taps"]

_RATE_FORMS = ("pre_activation", "relu_lif")


def filter_taps(Omega: Tensor, counts: Tensor, alpha: float, c: float, n_taps: int) -> Tensor:
    """The taps ``G_s`` ``(n_taps, C, C)``, ``s = 0..n_taps-1``: ``G_0 = 0``, ``G_{s+1} = A G_s + c α^s Ω``."""
    C = Omega.shape[0]
    A = alpha * torch.eye(C, dtype=Omega.dtype, device=Omega.device) + c * Omega * counts[None, :]
    G = [torch.zeros_like(Omega)]
    for s in range(n_taps - 1):
        G.append(A @ G[-1] + c * alpha ** s * Omega)
    return torch.stack(G)


class ModPropState(NamedTuple):
    """Online ModProp state (rate networks); ``advance`` updates it in place."""

    t: int
    r_prev: Tensor     # (B, N)
    eps: Tensor        # (B, N_pre) presynaptic trace ε (includes c_in)
    Y: Tensor          # (B, N_pre, C, C) filtered traces
    acc: Tensor        # (N, N_pre) Σ m ε
    acc_type: Tensor   # (C, N_pre) Σ_t Σ_α M_α Y[α, β] per postsynaptic type β
    acc_out: Tensor    # (K, N)
    acc_bout: Tensor   # (K,)
    rule_state: RuleState = {}  # the rule state (adaptive feedback) as of this step


@register("modprop")
@dataclass(frozen=True)
class ModProp(LocalRule):
    """ModProp (module docstring) for rate and spiking networks.

    Reads (trajectory record): rate — ``x``, ``r``, ``fprime`` (and ``h`` when ``readout_from="h"``); spiking —
    ``x``, ``z``, ``psi``, ``z_filt``. From the model: the constants (leak, c_in; spiking also ρ, c_a, v_th, β, κ),
    the effective ``W_rec`` (only its cell-type block means ``Ω``), ``W_out`` (symmetric feedback) and the circuit's
    cell types / signs. Updates: ``theta_rec``, ``theta_in``, ``b_rec`` (ModProp), ``theta_out``, ``b_out`` (exact),
    through ``model.param_grads``.

    Attributes:
        mu: the constant activation derivative μ (the source's run script: 0.25).
        cell_types: ``"ei"`` (default), ``"circuit"`` or ``N`` labels (see :func:`~spikelearn.rules.mdgl.cell_type_index`).
        feedback, feedback_seed, feedback_std, feedback_decay: readout credit as :class:`~spikelearn.rules.RFLO`
            (default ``"symmetric"``, the source's choice).
        mode: ``"batched"`` or ``"online"`` (rate networks only); same numbers.
        omega: ``"signed_mean"`` (default: block mean of the signed weights) or ``"abs_sign"`` (the source: block
            mean of ``|W|`` times the presynaptic neuron's sign; needs each neuron's outgoing weights to share one
            sign). Module docstring.
        reset_in_trace: spiking only, the reset path in the local adjoint (as e-prop's flag).
        buflen: ``None`` (default) — the non-local credit propagates over the whole trial; ``S ≥ 0`` — only through
            the recurrent drives of the last ``S`` steps (the source's ``MDGL_buflen``, which switches the
            substituted backward on for ``t ≥ T − S``; ``0`` = no non-local credit, i.e. e-prop / RFLO). Batched
            mode only.
        chunk_steps: steps per forward chunk.
    """

    mu: float = 0.25
    cell_types: Any = "ei"
    feedback: Literal["symmetric", "random", "adaptive"] | FeedbackMatrix | Any = "symmetric"
    mode: Literal["batched", "online"] = "batched"
    reset_in_trace: bool = False
    feedback_seed: int = 0
    feedback_std: float | None = None
    feedback_decay: float = 0.0
    chunk_steps: int = 100
    omega: Literal["signed_mean", "abs_sign"] = "signed_mean"
    buflen: int | None = None

    online = True
    model_types = ("rate", "spiking")

    def __post_init__(self) -> None:
        check_local_options(self)
        if not (isinstance(self.mu, (int, float)) and math.isfinite(self.mu)):
            raise ValueError(f"ModProp: mu must be a finite number, got {self.mu!r}")
        if self.omega not in ("signed_mean", "abs_sign"):
            raise ValueError(f"ModProp: omega must be 'signed_mean' or 'abs_sign', got {self.omega!r}")
        if self.buflen is not None:
            if isinstance(self.buflen, bool) or not isinstance(self.buflen, int) or self.buflen < 0:
                raise ValueError(f"ModProp: buflen must be None (whole trial) or an int >= 0, got {self.buflen!r}")
            if self.mode == "online":
                raise ValueError("ModProp: buflen (non-local credit in the last S steps of the trial) needs "
                                 "mode='batched': the online filter taps do not know where the trial ends")

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _is_spiking(model: Any) -> bool:
        if isinstance(model, SpikingRNN):
            return True
        if isinstance(model, RateRNN):
            if model.form not in _RATE_FORMS:
                raise ValueError(f"ModProp supports RateRNN forms {_RATE_FORMS}, got {model.form!r}")
            if model.gap is not None:
                raise ValueError("ModProp does not support gap junctions")
            return False
        raise TypeError(f"ModProp applies to RateRNN or SpikingRNN, got {type(model).__name__}")

    def check_model(self, model: Any) -> None:
        self._is_spiking(model)

    def default_feedback_std(self, model: Any) -> float:
        return default_std_hidden(model) if self._is_spiking(model) else default_std_out(model)

    def type_structure(self, model: Any) -> tuple[Tensor, Tensor, Tensor]:
        """``(idx (N,), P (N, C), Ω (C, C))`` for ``model``'s current ``W_rec`` (detached), ``W_ab = P Ω Pᵀ``.

        With ``omega="abs_sign"`` the types are the refined ``(cell type, presynaptic sign)`` pairs that occur
        (``C`` up to three times the cell types: sign +1, −1, or 0 for a neuron without outgoing weights)."""
        cell, names = cell_type_index(model, self.cell_types)
        W = model.effective_weights().W_rec.detach()
        P = type_indicator(cell, len(names), W.dtype)
        ops = weight_ops(model)
        if self.omega == "signed_mean":
            return cell, P, type_average(W, P, nonzero_only=False, ops=ops)
        idx, base, sign = self._refined_types(cell, W)
        om_abs = type_average(W.abs(), P, nonzero_only=False, ops=ops)
        return idx, type_indicator(idx, len(base), W.dtype), om_abs[base][:, base] * sign.to(W.dtype)[None, :]

    def type_index(self, model: Any) -> Tensor:
        """Each neuron's type ``(N,)`` as :meth:`type_structure` uses it, without computing ``Ω``."""
        cell, _ = cell_type_index(model, self.cell_types)
        if self.omega == "signed_mean":
            return cell
        return self._refined_types(cell, model.effective_weights().W_rec.detach())[0]

    @staticmethod
    def _refined_types(cell: Tensor, W: Any) -> tuple[Tensor, Tensor, Tensor]:
        """``(refined index (N,), cell type (C'), sign (C'))`` of the (cell type, presynaptic sign) pairs present."""
        pos, neg = W.pre_sign_any() if isinstance(W, SparseWeights) else ((W > 0).any(0), (W < 0).any(0))
        mixed = torch.nonzero(pos & neg).flatten()
        if mixed.numel():
            raise ValueError(f"ModProp omega='abs_sign' keeps each presynaptic neuron's sign, but neuron(s) "
                             f"{mixed[:10].tolist()} have outgoing weights of both signs; use omega='signed_mean' "
                             f"or a sign-constrained (Dale) network")
        sign = pos.to(torch.long) - neg.to(torch.long)
        uniq, ridx = torch.unique(cell.to(sign.device) * 3 + (sign + 1), return_inverse=True)
        return ridx, uniq // 3, uniq % 3 - 1

    def _rate_consts(self, model: Any) -> tuple[Tensor, Tensor]:
        c = model.constants()
        kw: dict[str, Any] = dict(dtype=model.dtype, device=model.device)
        return (torch.as_tensor(c.leak, **kw).expand(model.n).clone(),
                torch.as_tensor(c.c_in, **kw).expand(model.n).clone())

    # ------------------------------------------------------------------ whole trials
    def update(self, model: Any, x: Tensor, y: Tensor, mask: Tensor, loss_fn: LossFn,
               state: RuleState | None = None) -> tuple[Tensor, Grads, RuleState]:
        """``(loss, grads, new_state)`` for whole trials (module docstring; rule state as in
        :class:`~spikelearn.rules.local.LocalRule`)."""
        if self.mode == "online" and self._is_spiking(model):
            raise ValueError("ModProp: mode='online' is for RateRNN only (module docstring); use 'batched'")
        return super().update(model, x, y, mask, loss_fn, state)

    def batched_update(self, model: Any, x: Tensor, y: Tensor, mask: Tensor, loss_fn: LossFn,
                 state: RuleState) -> tuple[Tensor, Grads, RuleState]:
        spiking = self._is_spiking(model)
        fields = spiking_scan_fields(model) if spiking else rate_scan_fields(model)
        loss, dE_dy, chunks = record_and_output_error(model, x, y, mask, loss_fn, self.chunk_steps, fields)
        with torch.no_grad():
            Bfb, state = self.feedback_for(model, state)
            if spiking:
                dW_pre, dW_out = self._batched_spiking(model, chunks, dE_dy, Bfb)
            else:
                x_, r_, fp_, read_ = (torch.cat([c[i] for c in chunks]) for i in range(4))
                dW_pre, dW_out = self._batched_rate(model, x_, r_, fp_, read_, dE_dy, chunks.state0.r, Bfb)
        if not all(bool(torch.isfinite(g).all()) for g in (dW_pre if isinstance(dW_pre, SplitPre) else (dW_pre,))
                   if g is not None):
            self._warn_unstable(model)
        return loss, assemble_grads(model, dW_pre, dW_out, dE_dy.sum((0, 1))), state

    def _warn_unstable(self, model: Any) -> None:
        """A non-finite ModProp credit: name the likely cause, the substituted backward Jacobian
        ``diag(leak) + μ diag(c_in) W_ab`` having a spectral radius > 1 (the scan multiplies by it every step)."""
        _, P, Om = self.type_structure(model)
        c = model.constants()
        kw: dict[str, Any] = dict(dtype=torch.float64, device=P.device)
        n = model.n
        leak = torch.as_tensor(c.alpha if self._is_spiking(model) else c.leak, **kw).expand(n)
        c_in = torch.as_tensor(c.c_in, **kw).expand(n)
        J = torch.diag(leak) + self.mu * c_in[:, None] * (P.double() @ Om.double() @ P.double().T)
        rho = float(torch.linalg.eigvals(J).abs().max())
        warnings.warn(f"ModProp: the non-local credit is not finite; the substituted backward Jacobian "
                      f"diag(leak) + mu c_in W_ab has spectral radius {rho:.3g} with mu = {self.mu}"
                      f"{' (> 1: the backward scan grows without bound)' if rho > 1 else ''}. Choose mu on the "
                      f"scale of the activation derivative (spiking: ψ ≈ γ_pd/v_th at its peak)",
                      RuntimeWarning, stacklevel=3)

    def _batched_rate(self, model: Any, x: Tensor, r: Tensor, fp: Tensor, read: Tensor,
                      dE_dy: Tensor, r0: Tensor, Bfb: Tensor) -> tuple[Tensor, Tensor]:
        """``r0``: the rates of the initial state; ``Bfb``: the feedback matrix."""
        leak, c_in = self._rate_consts(model)
        _, P, Om = self.type_structure(model)
        L = torch.matmul(dE_dy, Bfb.T)
        m = L if model.readout_from == "h" else fp * L  # (T, B, N)
        T, B, N = r.shape
        PO, PT = self.mu * (P @ Om), P.T.contiguous()
        D = torch.empty_like(m)
        d = torch.zeros_like(m[0])
        first = self._first_nonlocal_step(T)
        for t in range(T - 1, -1, -1):
            # μ W_abᵀ (c_in δ̃^{t+1}) through the types, from a recurrent drive within the buffer (d is δ̃^{t+1})
            nl = ((c_in * d) @ PO) @ PT if t + 1 >= first else None
            d = m[t] + leak * d
            if nl is not None:
                d = d + nl
            torch.mul(d, c_in, out=D[t])
        n_in = x.shape[-1]
        bias = model.b_rec is not None
        ops = weight_ops(model)
        W_rec = model.effective_weights().W_rec.detach()
        rec = ops.edge_outer(D[1:], r[:-1], like=W_rec) + ops.edge_outer(D[0], r0, like=W_rec)
        inp = DENSE.edge_outer(D, x)
        b = D.sum((0, 1)) if bias else None
        if isinstance(W_rec, SparseWeights):
            dW_pre: Any = SplitPre(rec, inp, b)
        else:
            dW_pre = m.new_zeros(N, N + n_in + int(bias))
            dW_pre[:, :N] = rec
            dW_pre[:, N:N + n_in] = inp
            if b is not None:
                dW_pre[:, -1] = b
        dW_out = dE_dy.reshape(-1, dE_dy.shape[-1]).T @ read.reshape(-1, N)
        return dW_pre, dW_out

    def _batched_spiking(self, model: Any, chunks: Any, dE_dy: Tensor, Bfb: Tensor) -> tuple[Tensor, Tensor]:
        """e-prop's chunked adjoint scan (:func:`~spikelearn.rules.local.local_adjoint_scan`) with ModProp's
        non-local credit ``μ W_abᵀ (c_in δv^{t+1})`` through the cell types at every step; ``chunks``: per forward
        chunk ``(x, z, psi, z_filt)``."""
        k = spiking_constants(model, self.reset_in_trace)
        _, P, Om = self.type_structure(model)
        PO, PT = self.mu * (P @ Om), P.T.contiguous()
        credits = (sig for _, _, sig in readout_credit_chunks(chunks, dE_dy, Bfb, k.kappa, k.c_kappa))
        first = self._first_nonlocal_step(dE_dy.shape[0])
        return local_adjoint_scan(k, chunks, dE_dy, credits, self.reset_in_trace,
                                  nonlocal_credit=lambda dv, t: ((k.c_in * dv) @ PO) @ PT if t + 1 >= first else None,
                                  z0=initial_spikes(chunks), ops=weight_ops(model),
                                  W_rec=model.effective_weights().W_rec.detach())

    def _first_nonlocal_step(self, T: int) -> int:
        """The first step whose recurrent drive carries non-local credit back: 0, or ``T − buflen``."""
        return 0 if self.buflen is None else T - self.buflen

    # ------------------------------------------------------------------ online (rate, filter taps)
    def _online_consts(self, model: Any) -> tuple[float, float, Tensor, Tensor, Tensor]:
        if self._is_spiking(model):
            raise ValueError("ModProp: the online (filter-tap) form is for RateRNN only")
        leak, c_in = self._rate_consts(model)
        if not (bool((leak == leak[0]).all()) and bool((c_in == c_in[0]).all())):
            raise ValueError("ModProp: the online (filter-tap) form needs the same time constant for every neuron")
        idx, P, Om = self.type_structure(model)
        return float(leak[0]), float(c_in[0]), idx, P, Om

    def init(self, model: Any, batch_size: int, n_steps: int | None = None, *,
             initial_state: Any = None, rule_state: RuleState | None = None) -> ModPropState:
        """Zero traces for ``batch_size`` trials starting from ``initial_state`` (else ``model.init_state``),
        carrying ``rule_state`` (else ``init_state(model)``)."""
        del n_steps
        rs = self.init_state(model) if rule_state is None else rule_state
        _, _, _, P, _ = self._online_consts(model)
        B, N, C = int(batch_size), model.n, P.shape[1]
        Np = N + model.n_in + int(model.b_rec is not None)
        kw: dict[str, Any] = dict(dtype=model.dtype, device=model.device)
        return ModPropState(t=0, r_prev=start_state(model, B, initial_state).r.detach().clone(),
                            eps=torch.zeros(B, Np, **kw), Y=torch.zeros(B, Np, C, C, **kw), acc=torch.zeros(N, Np, **kw),
                            acc_type=torch.zeros(C, Np, **kw), acc_out=torch.zeros(model.n_out, N, **kw),
                            acc_bout=torch.zeros(model.n_out, **kw), rule_state=rs)

    def advance(self, model: Any, rec: Any, dE_dy: Tensor, state: ModPropState) -> ModPropState:
        """Advance through a chunk (``rec`` a :class:`~spikelearn.models.RateRecord` ``(T_c, B, ·)``)."""
        alpha, c_in, _, P, Om = self._online_consts(model)
        c = self.mu * c_in
        A = alpha * torch.eye(P.shape[1], dtype=Om.dtype, device=Om.device) + c * Om * P.sum(0)[None, :]
        cOm = c * Om
        from_h = model.readout_from == "h"
        s = state
        Bfb, rs = self.feedback_for(model, state.rule_state)
        with torch.no_grad():
            L = torch.matmul(dE_dy, Bfb.T)
            B = s.r_prev.shape[0]
            extra = [torch.ones(B, 1, dtype=L.dtype, device=L.device)] if model.b_rec is not None else []
            for t in range(rec.r.shape[0]):
                pre = torch.cat([s.r_prev, rec.x[t]] + extra, dim=1)
                eps = s.eps.mul_(alpha).add_(pre, alpha=c_in)  # ε^t
                m = L[t] if from_h else rec.fprime[t] * L[t]   # (B, N)
                s.acc.addmm_(m.T, eps)
                s.acc_type.add_(torch.einsum("ba,bqac->cq", m @ P, s.Y))  # Σ_α M_α^t Y_q^t[α, β]
                Y = torch.einsum("ac,bqcd->bqad", A, s.Y) + cOm * eps[:, :, None, None]  # Y^{t+1}
                s.acc_out.addmm_(dE_dy[t].T, rec.h[t] if from_h else rec.r[t])
                s.acc_bout.add_(dE_dy[t].sum(0))
                s = s._replace(t=s.t + 1, r_prev=rec.r[t], eps=eps, Y=Y)
        return s._replace(rule_state=rs)

    def read(self, model: Any, state: ModPropState) -> tuple[Grads, ModPropState]:
        """Gradients accumulated since the last read, and the state with zeroed accumulators."""
        idx = self.type_index(model)
        grads = assemble_grads(model, state.acc + state.acc_type[idx], state.acc_out, state.acc_bout)
        z = torch.zeros_like
        return grads, state._replace(acc=z(state.acc), acc_type=z(state.acc_type), acc_out=z(state.acc_out),
                                     acc_bout=z(state.acc_bout))
