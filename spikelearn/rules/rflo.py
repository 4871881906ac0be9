r"""RFLO — random-feedback local online learning for leaky rate RNNs (Murray 2019, eLife 8:e43299,
doi:10.7554/eLife.43299).

RFLO is RTRL with (i) the non-local sum ``Σ_l W_rec[j,l] P_l`` of the influence tensor dropped — the recurrent drive
``W_rec r^{t-1}`` is treated as a constant input — and (ii) the readout transpose ``W_outᵀ`` replaced by a fixed
random feedback matrix ``B``. In Murray's form (R2: ``u^t = W_rec r^{t-1} + W_in x^t``,
``r^t = (1−γ) r^{t-1} + γ φ(u^t)``) the traces are::

    p_jk^t = (1−γ) p_jk^{t-1} + γ φ'(u_j^t) r_k^{t-1},      q_jk^t = (1−γ) q_jk^{t-1} + γ φ'(u_j^t) x_k^t
    ∂E/∂W_rec[j,k] ≈ Σ_t (B ∂E/∂y^t)_j p_jk^t,              likewise W_in with q

For every rate form of :class:`~spikelearn.models.RateRNN` the rule keeps the neuron's *local* paths
(its own leak, in whichever variable the form puts it, and the own term of the gap current) and drops the others;
for the pre-activation form (R1) this is e-prop for rate networks (§5.1, "pre-activation form"). ``W_out`` and
``b_out`` get exact gradients. Two implementations of the same sums:

* ``mode="online"``: the traces step by step (``init``/``advance``/``read``/``step``); memory independent of ``T``.
  For R1/R3-ModProp without gap junctions the traces are presynaptic (``(B, N + n_in)``); otherwise
  ``(N, B, N + n_in)``.
* ``mode="batched"``: the adjoint of the local dynamics by one backward scan over ``(B, N)`` quantities, then one
  GEMM per weight matrix (memory of the order of the forward record).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor

from spikelearn.models import RateRNN
from spikelearn.rules.base import Grads, LossFn, RuleState
from spikelearn.rules.local import (
    FeedbackMatrix,
    LocalRule,
    RateLocalConstants,
    assemble_grads,
    check_local_options,
    default_std_out,
    rate_adjoint_scan,
    rate_constants,
    rate_scan_fields,
    record_and_output_error,
    start_state,
)
from spikelearn.rules.registry import register
from spikelearn.weights import weight_ops

__all__ = ["RFLO", "RFLOState"]


class RFLOState(NamedTuple):
    """Online RFLO state (``N_pre = N + n_in (+1 with a hidden bias)``); ``advance`` updates it in place."""

    t: int
    n_steps: int | None
    r_prev: Tensor          # (B, N) rates of the previous step
    eps_h: Tensor | None    # (B, N_pre) presynaptic trace, or (N, B, N_pre) ∂h_j/∂W_jk (local); None if stateless
    eps_r: Tensor | None    # (N, B, N_pre) ∂r_j/∂W_jk (local), generic path only
    acc: Tensor             # (N, N_pre) accumulated ∂E/∂[W_rec | W_in | b_rec] since last read
    acc_out: Tensor         # (K, N)
    acc_bout: Tensor        # (K,)
    rule_state: RuleState = {}  # the rule state (adaptive feedback) as of this step


@register("rflo")
@dataclass(frozen=True)
class RFLO(LocalRule):
    """RFLO for :class:`~spikelearn.models.RateRNN` (all forms; module docstring).

    Reads (trajectory record): ``x``, ``r`` (presynaptic rates; readout input), ``h`` (readout input when
    ``readout_from="h"``), ``fprime`` (``f'(h)``); from the model: ``leak``, ``c_in``, ``c_f`` and the effective
    weights. Updates: ``theta_rec``, ``theta_in``, ``b_rec`` (RFLO traces), ``theta_out``, ``b_out`` (exact), through
    ``model.param_grads`` (absent edges get 0; signs kept).

    Attributes:
        feedback: ``"random"`` (default, fixed ``B ~ N(0, feedback_std²)``), ``"symmetric"`` (``B = W_outᵀ``; then
            RFLO equals autograd with the recurrent drive detached, T5.1), ``"adaptive"`` or a given ``(N, n_out)``
            matrix (array, tensor or ``.npy`` path).
        mode: ``"batched"`` or ``"online"`` (same numbers).
        feedback_seed, feedback_std (``None`` = ``1/√K``, Murray's ``N(0,1)/√K``), feedback_decay: as
            :class:`~spikelearn.rules.EProp`.
        chunk_steps: steps simulated per forward chunk (both modes).
    """

    feedback: Literal["symmetric", "random", "adaptive"] | FeedbackMatrix | Any = "random"
    mode: Literal["batched", "online"] = "batched"
    feedback_seed: int = 0
    feedback_std: float | None = None
    feedback_decay: float = 0.0
    chunk_steps: int = 100

    online = True
    model_types = ("rate",)

    def __post_init__(self) -> None:
        check_local_options(self)

    # ------------------------------------------------------------------ engine hooks
    def check_model(self, model: Any) -> None:
        if not isinstance(model, RateRNN):
            raise TypeError(f"RFLO applies to RateRNN models, got {type(model).__name__} (use EProp for SpikingRNN)")

    def default_feedback_std(self, model: Any) -> float:
        return default_std_out(model)

    def _consts(self, model: Any) -> RateLocalConstants:
        return rate_constants(model)

    # ------------------------------------------------------------------ whole trials
    def batched_update(self, model: Any, x: Tensor, y: Tensor, mask: Tensor, loss_fn: LossFn,
                 state: RuleState) -> tuple[Tensor, Grads, RuleState]:
        """The adjoint of the local dynamics (:func:`~spikelearn.rules.local.rate_adjoint_scan`)."""
        loss, dE_dy, recs = record_and_output_error(model, x, y, mask, loss_fn, self.chunk_steps,
                                                    rate_scan_fields(model))
        with torch.no_grad():
            Bfb, state = self.feedback_for(model, state)
            dW_pre, dW_out, db_out = rate_adjoint_scan(self._consts(model), recs, dE_dy, Bfb, ops=weight_ops(model),
                                                       W_rec=model.effective_weights().W_rec.detach())
        return loss, assemble_grads(model, dW_pre, dW_out, db_out), state

    # ------------------------------------------------------------------ online
    def init(self, model: Any, batch_size: int, n_steps: int | None = None, *,
             initial_state: Any = None, rule_state: RuleState | None = None) -> RFLOState:
        """Zero traces and accumulators for ``batch_size`` trials starting from ``initial_state`` (else
        ``model.init_state``), carrying ``rule_state`` (else ``init_state(model)``)."""
        self.check_model(model)
        rs = self.init_state(model) if rule_state is None else rule_state
        k = self._consts(model)
        N, B = k.N, int(batch_size)
        Np = N + model.n_in + int(k.bias)
        kw: dict[str, Any] = dict(dtype=model.dtype, device=model.device)
        return RFLOState(t=0, n_steps=n_steps, r_prev=start_state(model, B, initial_state).r.detach().clone(),
                         eps_h=None if k.no_h else torch.zeros((B, Np) if k.presyn else (N, B, Np), **kw),
                         eps_r=None if k.presyn else torch.zeros(N, B, Np, **kw),
                         acc=torch.zeros(N, Np, **kw), acc_out=torch.zeros(model.n_out, N, **kw),
                         acc_bout=torch.zeros(model.n_out, **kw), rule_state=rs)

    def advance(self, model: Any, rec: Any, dE_dy: Tensor, state: RFLOState) -> RFLOState:
        """Advance through a chunk: ``rec`` a :class:`~spikelearn.models.RateRecord` ``(T_c, B, ·)``,
        ``dE_dy`` ``(T_c, B, K)``."""
        k = self._consts(model)
        Bfb, rs = self.feedback_for(model, state.rule_state)
        col = lambda v: v[:, None, None]  # noqa: E731
        with torch.no_grad():
            L = torch.matmul(dE_dy, Bfb.T)
            s = state
            B = s.r_prev.shape[0]
            ones = torch.ones(B, 1, dtype=rec.x.dtype, device=rec.x.device) if k.bias else None
            for t in range(rec.r.shape[0]):
                pre = torch.cat([s.r_prev, rec.x[t]] + ([ones] if ones is not None else []), dim=1)  # (B, N_pre)
                fp = rec.fprime[t]
                eps_h, eps_r = s.eps_h, s.eps_r
                if k.presyn:  # ε_h,jk = c_in,j p_k with p ← A_hh p + pre ; ε_r = c_f f' ε_h
                    assert eps_h is not None
                    eps_h = eps_h.mul_(float(k.A_hh[0])).add_(pre)
                    sig = L[t] if k.from_h else L[t] * k.c_f * fp
                    s.acc.addmm_((sig * k.c_in).T, eps_h)
                else:
                    assert eps_r is not None
                    gain = (k.c_f * fp).T[:, :, None]  # (N, B, 1) ∂r/∂h
                    if eps_h is None:  # no local h-memory (Murray form): ε_h = c_in pre
                        eps_r.mul_(col(k.A_rr)).addcmul_(gain * col(k.c_in), pre[None])
                        tr = eps_r
                        if k.from_h:
                            tr = col(k.c_in) * pre[None].expand_as(eps_r)
                    else:
                        eps_h.mul_(col(k.A_hh)).addcmul_(col(k.A_hr), eps_r).addcmul_(col(k.c_in), pre[None])
                        eps_r.mul_(col(k.A_rr)).addcmul_(gain, eps_h)
                        tr = eps_h if k.from_h else eps_r
                    s.acc.add_(torch.bmm(L[t].T[:, None, :], tr).squeeze(1))
                read = rec.h[t] if k.from_h else rec.r[t]
                s.acc_out.addmm_(dE_dy[t].T, read)
                s.acc_bout.add_(dE_dy[t].sum(0))
                s = s._replace(t=s.t + 1, r_prev=rec.r[t], eps_h=eps_h, eps_r=eps_r)
        return s._replace(rule_state=rs)

    def read(self, model: Any, state: RFLOState) -> tuple[Grads, RFLOState]:
        """Gradients accumulated since the last read, and the state with zeroed accumulators."""
        grads = assemble_grads(model, state.acc, state.acc_out, state.acc_bout)
        z = torch.zeros_like
        return grads, state._replace(acc=z(state.acc), acc_out=z(state.acc_out), acc_bout=z(state.acc_bout))
