r"""e-prop for LIF/ALIF networks (Bellec et al. 2020, Nat. Commun. 11:3625, doi:10.1038/s41467-020-17236-y).

For every synapse ``j ← i`` the rule combines an eligibility trace, computed forward in time from
quantities local to the synapse (§2.2), with a learning signal ``L_j^t = Σ_k B_jk ∂E/∂y_k^t`` broadcast from the
readout (§2.3)::

    ε^v_ji,t = α_j ε^v_ji,t-1 + c_in,j pre_i^t      [ − v_th,j e_ji^{t-1}   if reset_in_trace ]
    ε^a_ji,t = ρ_j ε^a_ji,t-1 + c_a,j e_ji^{t-1}                               (ALIF neurons, β_j ≠ 0)
    e_ji^t   = ψ_j^t (ε^v_ji,t − β_j ε^a_ji,t)
    ē_ji^t   = κ ē_ji^{t-1} + (1−κ) e_ji^t                                      (readout filter, §2.4)
    ∂E/∂W_ji ≈ Σ_{b,t} L_j^t ē_ji^t   + firing-rate regulariser (§2.5, unfiltered traces)

(the official recursion ``ε^a ← (ρ − c_a β ψ) ε^a + c_a ψ ε^v`` is the same after substituting ``e``.)

with ``pre_i^t = z_i^{t-1}`` for ``W_rec`` and ``x_i^t`` for ``W_in``. ``W_out`` and ``b_out`` get their exact
gradients ``Σ_t ∂E/∂y^t z̄^t`` and ``Σ_t ∂E/∂y^t``. This is the gradient of the loss on the graph in which the
recurrent spikes (and, unless ``reset_in_trace``, the reset) are detached (§2.7) — with ``B = W_outᵀ``.

Two implementations of the same sums, both explicit (no autograd on ``W_in``/``W_rec``):

* ``mode="online"`` — the recursions above, step by step (:meth:`EProp.init`, :meth:`EProp.step`, or
  :meth:`EProp.advance` over a chunk of steps followed by :meth:`EProp.read`). Traces are ``(N, B, N + n_in)``;
  memory does not depend on ``T``. :func:`run_online` drives any online rule over a trial, optionally applying
  updates every ``k`` steps (the trainer's ``update_every_steps``).
* ``mode="batched"`` — the transposed form. Every recursion above is linear and diagonal in the postsynaptic
  neuron, so ``Σ_t L_j^t ē_ji^t = Σ_t δ_j^t pre_i^t`` where ``δ`` comes from one backward-in-time scan over
  ``(B, N)`` per-neuron quantities (the adjoint of the neuron's *local* dynamics: leak, adaptation through the
  local spike copy, optionally the reset, readout filter). The trial is simulated in chunks of ``chunk_steps``
  steps keeping only ``x, z, ψ, z̄`` of the record; the scan then runs backwards chunk by chunk, each chunk closed by
  one GEMM per weight matrix over its ``T_c·B`` rows. Memory: those four ``(T, B, ·)`` fields (less than a full
  forward record); never a ``(B, T, N, N)`` tensor.

Gap junctions: the neuron's own term ``(G_jj − Σ_i G_ji) v_j^{t-1}`` belongs to its local leak; the potentials of
other neurons are treated like recurrent spikes (dropped).

Reset to zero (``reset="zero"``, ``v^t = α (1 − z^{t-1}) v^{t-1} + …``): the local leak becomes ``α (1 − z_j^{t-1})``
(the neuron's own spike, a constant on the detached graph), so the traces are no longer presynaptic-only, and the
reset path of ``reset_in_trace`` is ``∂v_j^t/∂z_j^{t-1} = −α v_j^{t-1}``; batched mode also keeps ``v`` of the
record.

Current-based synapses (``tau_syn_ms > 0``): the synaptic current ``i_j`` is part of neuron ``j``'s local state,
``i_j^t = α_s,j i_j^{t-1} + c_in,j Σ_i W_ji pre_i^t``, so ``∂v_j^t/∂W_ji`` through the local dynamics is
``c_in,j P_ji^t`` with the synaptically filtered presynaptic signal ``P_ji^t = α_s,j P_ji^{t-1} + pre_i^t``: every
equation above holds with ``pre`` replaced by ``P`` (a derivation, exact on the detached graph of §2.7; tested
against autograd). Batched mode runs it as one more adjoint, ``dE/di^t = dE/dv^t + α_s dE/di^{t+1}`` (any
per-neuron ``τ_s``); online mode keeps ``P`` as one more presynaptic trace (``(N, B, N + n_in)`` per postsynaptic
neuron when ``τ_s`` differs between neurons).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Literal

import torch
from torch import Tensor

from spikelearn.models import SpikingRNN
from spikelearn.rules.base import Grads, LossFn, RuleState
from spikelearn.rules.local import (
    FeedbackMatrix,
    LocalRule,
    RegSpec,
    SpikingLocalConstants,
    SpikingTraceState,
    assemble_grads,
    check_local_options,
    default_std_hidden,
    initial_spikes,
    local_adjoint_scan,
    rate_regularizer,
    readout_credit_chunks,
    record_and_output_error,
    recs_chunk,
    run_online,
    spiking_constants,
    spiking_scan_fields,
    spiking_traces_advance,
    spiking_traces_init,
    spiking_traces_read,
)
from spikelearn.rules.registry import register
from spikelearn.weights import weight_ops

__all__ = ["EProp", "EPropState", "rate_regularizer", "run_online"]

EPropState = SpikingTraceState  # online e-prop state: the engine's spiking traces

REG_FORMS = ("batch", "trial", "running", "concatenated")


@register("eprop")
@dataclass(frozen=True)
class EProp(LocalRule):
    """e-prop for :class:`~spikelearn.models.SpikingRNN` (LIF and ALIF neurons; module docstring).

    Reads (trajectory record): ``x``, ``z`` (presynaptic activity), ``psi`` (pseudo-derivative ψ, 0 while
    refractory), ``z_filt`` (readout input z̄); from the model: the constants α, ρ, c_in, c_a, v_th, β, κ and the
    effective weights (``W_out`` for symmetric feedback). Updates: ``theta_rec``, ``theta_in`` (e-prop),
    ``theta_out``, ``b_out`` (exact), all through ``model.param_grads`` (absent edges get 0; signs kept).

    Attributes:
        feedback: ``"symmetric"`` (``B = W_outᵀ``), ``"random"`` (fixed ``B ~ N(0, feedback_std²)``),
            ``"adaptive"`` (``B`` receives the updates of ``W_outᵀ`` plus decay; kept in the rule state) or a given
            ``(N, n_out)`` matrix (array, tensor, or the path of a ``.npy`` file; :class:`~spikelearn.rules.local.
            FeedbackMatrix`). See :func:`spikelearn.rules.local.feedback_matrix`.
        reset_in_trace: include the reset path in the traces (MDGL variant); default ``False`` (e-prop). The
            model's ``detach_reset`` (a BPTT option) is not used by e-prop.
        mode: ``"batched"`` (whole trials, adjoint scan + edge outer sums) or ``"online"`` (forward traces, memory
            independent of ``T``); both give the same numbers.
        feedback_seed: seed of the random ``B``. feedback_std: its std; ``None`` = ``1/√N`` (pattern generation;
            the evidence-accumulation tutorial uses 1). feedback_decay: adaptive ``B``'s decay per update.
        reg_coeff: firing-rate regulariser strength ``c_reg`` (0 = off). reg_target_hz: ``f_0``.
        reg_form: ``"batch"`` (batch-mean rate), ``"trial"`` (each trial's own whole-trial rate), ``"running"``
            (each trial's running average) or ``"concatenated"`` (batched mode only: its trials depend on each
            other's complete histories); see :func:`~spikelearn.rules.local.rate_regularizer`. The returned loss
            excludes ``E_reg``.
        chunk_steps: steps simulated per forward chunk (both modes). Online: the memory is
            ``O(chunk_steps·B·N)`` besides the traces; batched: only ``x, z, ψ, z̄`` of every chunk are kept.
    """

    feedback: Literal["symmetric", "random", "adaptive"] | FeedbackMatrix | Any = "symmetric"
    reset_in_trace: bool = False
    mode: Literal["batched", "online"] = "batched"
    feedback_seed: int = 0
    feedback_std: float | None = None
    feedback_decay: float = 0.0
    reg_coeff: float = 0.0
    reg_target_hz: float = 10.0
    reg_form: Literal["batch", "trial", "running", "concatenated"] = "batch"
    chunk_steps: int = 100

    online = True                 # offers init / step / advance / read
    model_types = ("spiking",)    # SpikingRNN only

    def __post_init__(self) -> None:
        check_local_options(self)
        if self.reg_form not in REG_FORMS:
            raise ValueError(f"EProp: reg_form must be one of {REG_FORMS}, got {self.reg_form!r}")
        if self.reg_form == "concatenated" and self.mode == "online":
            raise ValueError("EProp: reg_form='concatenated' needs mode='batched' (a trial's running average "
                             "includes the complete earlier trials of the batch, unknown while they run in parallel)")
        if not self.reg_coeff >= 0:  # also NaN
            raise ValueError(f"EProp: reg_coeff must be >= 0, got {self.reg_coeff!r}")

    # ------------------------------------------------------------------ engine hooks
    def check_model(self, model: Any) -> None:
        if not isinstance(model, SpikingRNN):
            raise TypeError(f"EProp applies to SpikingRNN models, got {type(model).__name__} (use RFLO for RateRNN)")

    def default_feedback_std(self, model: Any) -> float:
        return default_std_hidden(model)

    def _consts(self, model: Any) -> SpikingLocalConstants:
        return spiking_constants(model, self.reset_in_trace)

    @property
    def _reg(self) -> RegSpec:
        return RegSpec(self.reg_coeff, self.reg_target_hz, self.reg_form)

    # ------------------------------------------------------------------ whole trials
    def batched_update(self, model: Any, x: Tensor, y: Tensor, mask: Tensor, loss_fn: LossFn,
                 state: RuleState) -> tuple[Tensor, Grads, RuleState]:
        """Adjoint scan over the trial, chunk by chunk backwards (module docstring)."""
        loss, dE_dy, recs = record_and_output_error(model, x, y, mask, loss_fn, self.chunk_steps,
                                                    spiking_scan_fields(model))
        with torch.no_grad():
            k = self._consts(model)
            Bfb, state = self.feedback_for(model, state)
            dW_pre, dW_out = local_adjoint_scan(k, recs, dE_dy, self._credits(k, recs, dE_dy, Bfb),
                                                self.reset_in_trace, z0=initial_spikes(recs), ops=weight_ops(model),
                                                W_rec=model.effective_weights().W_rec.detach())
        return loss, assemble_grads(model, dW_pre, dW_out, dE_dy.sum((0, 1))), state

    def _credits(self, k: Any, recs: list, dE_dy: Tensor, Bfb: Tensor) -> Iterator[Tensor]:
        """Per chunk, last to first: the learning signal on the outgoing spikes ``(T_c, B, N)``:
        ``(1−κ) Σ_{t'≥t} κ^{t'−t} L^{t'}`` (filtered in output space, then one GEMM with ``B``) plus the regulariser."""
        T = dE_dy.shape[0]
        B = recs[0][1].shape[1]
        kap, omk = k.kappa, k.c_kappa
        f0 = self.reg_target_hz / 1000.0
        reg_scale = 2.0 * self.reg_coeff / (B * T * k.dt_ms)
        reg = self.reg_coeff > 0
        form = self.reg_form
        concat = form == "concatenated"
        if reg:
            count: Tensor = torch.stack([r[1].sum(0) for r in recs]).sum(0)  # (B, N) spikes per trial
            if form == "batch":
                greg = reg_scale * (count.sum(0) / (B * T * k.dt_ms) - f0)  # (N,) constant signal
            elif form == "trial":
                greg = reg_scale * (count / (T * k.dt_ms) - f0)  # (B, N): each trial's own rate, constant in time
            offset: Any = 0  # steps before this trial's in the regulariser's history
            if concat:  # trial b's history follows trials 0..b-1: count their spikes and steps in
                count = torch.cumsum(count, 0)
                offset = (torch.arange(B, dtype=count.dtype, device=count.device) * T)[:, None]
                # each trial starts from Σ over the later trials' whole histories (a first pass gives each trial's Σ)
                later = self._concat_trial_sums(recs, count, offset, T, f0, k.dt_ms)
                S = torch.flip(torch.cumsum(torch.flip(later, [0]), 0), [0]) - later
            else:
                S = torch.zeros_like(count)  # running regulariser: Σ_{s'≥s} a^{s'}
        for t0, t1, sig in readout_credit_chunks(recs, dE_dy, Bfb, kap, omk):
            if reg:
                if form in ("batch", "trial"):
                    sig += greg
                else:
                    z_c = recs_chunk(recs, t0, t1)[1]
                    for i in range(t1 - t0 - 1, -1, -1):
                        tt = offset + (t0 + i + 1)  # steps up to and including this one
                        S = S.add_((count / (tt * k.dt_ms) - f0) / tt)
                        count = count - z_c[i]
                        sig[i].add_(S, alpha=reg_scale)
            yield sig

    @staticmethod
    def _concat_trial_sums(recs: list, count: Tensor, offset: Tensor, T: int, f0: float, dt_ms: float) -> Tensor:
        """Per trial ``b`` ``(B, N)``: ``Σ_t a^{b,t}``, ``a^s = (R^s − f_0)/(s+1)`` on the concatenated history
        (``count``: spikes up to the end of each trial, ``offset``: steps before it)."""
        tot = torch.zeros_like(count)
        t1 = T
        for r in reversed(recs):
            z_c = r[1]
            for i in range(z_c.shape[0] - 1, -1, -1):
                tt = offset + (t1 - z_c.shape[0] + i + 1)
                tot.add_((count / (tt * dt_ms) - f0) / tt)
                count = count - z_c[i]
            t1 -= z_c.shape[0]
        return tot

    # ------------------------------------------------------------------ online
    def init(self, model: Any, batch_size: int, n_steps: int | None = None, *,
             initial_state: Any = None, rule_state: RuleState | None = None) -> EPropState:
        """Zero traces and accumulators for ``batch_size`` trials starting from ``initial_state`` (else
        ``model.init_state``), carrying ``rule_state`` (else ``init_state(model)``).

        ``n_steps`` (trial length) normalises the regulariser when gradients are read before the trial ends.
        """
        self.check_model(model)
        rs = self.init_state(model) if rule_state is None else rule_state
        return spiking_traces_init(model, self._consts(model), batch_size, n_steps, self._reg, initial_state, rs)

    def advance(self, model: Any, rec: Any, dE_dy: Tensor, state: EPropState) -> EPropState:
        """Advance the traces through a chunk of ``T_c`` steps and accumulate (no conversion to parameters).

        Args:
            rec: :class:`~spikelearn.models.SpikingRecord` of the chunk, fields ``(T_c, B, ·)``.
            dE_dy: ``(T_c, B, K)`` ``∂E/∂ŷ`` of the chunk's steps.
        """
        k = self._consts(model)
        Bfb, rs = self.feedback_for(model, state.rule_state)
        with torch.no_grad():
            L = torch.matmul(dE_dy, Bfb.T)  # (T_c, B, N)
        s = spiking_traces_advance(k, state, rec, L, dE_dy, self.reset_in_trace, self._reg)
        return s._replace(rule_state=rs)

    def read(self, model: Any, state: EPropState) -> tuple[Grads, EPropState]:
        """Gradients accumulated since the last read (parameter names), and the state with accumulators zeroed.

        The regulariser uses the rate of the trial so far (exact when read once at the end of the trial).
        """
        dW_pre, dW_out, db_out, s = spiking_traces_read(model, self._consts(model), state, self._reg)
        return assemble_grads(model, dW_pre, dW_out, db_out), s
