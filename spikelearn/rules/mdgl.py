r"""MDGL — multidigraph learning (Liu, Smith, Mihalas, Shea-Brown, Sümbül, PNAS 118:e2111821118, 2021,
doi:10.1073/pnas.2111821118).

e-prop's learning signal plus the next term of the total derivative ``dE/dz_p^t``: the effect of ``z_p^t`` on its
targets ``j`` at ``t+1`` and their immediate effect on the loss, with the non-local weight ``W_jp`` replaced by a
cell-type-pair gain (a diffusive, type-specific neuromodulatory signal)::

    emission of neuron j        m_j^t   = c_in,j ψ_j^t ∂E/∂z_j^t                    (∂E/∂z through the readout)
    type-averaged weight        w_αβ    = mean of the non-zero entries of W_rec[α ← β]   (0 for an empty block)
    modulatory input to p       M_p^t   = Σ_j W̃[j,p] m_j^{t+1},    W̃[j,p] = w_{τ(j)τ(p)} 1[W_rec[j,p] ≠ 0]
    learning signal             L_p^{MDGL,t} = ∂E/∂z_p^t + M_p^t
    update                      ∂E/∂W_pq ≈ Σ_{b,t} L_p^{MDGL,t} e_pq^t     (W_rec and W_in; unfiltered traces §2.2)

Variants (``variant``; the source's ``NP_mode``): ``"exact"`` (2) ``W̃ = W_rec`` (one-hop truncated BPTT, not
bio-plausible); ``"mdgl"`` (3) as above; ``"nonlocal"`` (5) ``W̃[j,p] = w̄_{τ(j)τ(p)}`` for every ``j`` with ``w̄`` the
mean over the whole block including zeros; ``"online"`` (7) causal MDGL: the emission uses the derivative w.r.t.
the filtered spikes and a κ-filtered ψ, ``m̄_j^t = c_in,j ψ̄_j^t L_j^t`` (``ψ̄ = κ ψ̄ + (1−κ) ψ``,
``L^t = B ∂E/∂y^t``), and the modulatory term multiplies the κ-filtered traces::

    ∂E/∂W_pq ≈ Σ_t (L_p^t + M̄_p^t) ē_pq^t,      M̄_p^t = Σ_j W̃[j,p] m̄_j^{t+1}    (W̃ of "mdgl")

Implementation (explicit, no autograd on ``W_in``/``W_rec``). ``mode="batched"``: the credit on the outgoing spike
(``∂E/∂z + M``) is formed for the whole trial (one GEMM for ``M``), then the adjoint of each neuron's *local* dynamics
(leak, adaptation, reset when ``reset_in_trace``) is scanned backwards and closed by one GEMM per weight matrix — the
transposed form of ``Σ_t L e`` (as :class:`~spikelearn.rules.EProp`'s batched mode). ``mode="online"`` (variant
``"online"`` only; the other variants need the non-causal ``∂E/∂z`` of a filtered readout): e-prop's online traces
plus one buffered ``ē^{t-1}`` to wait for ``m̄^t``.

Current-based synapses (``tau_syn_ms > 0``; this package's extension, [D]): ``z_p^t`` reaches ``v_j`` through ``j``'s
synaptic current, ``dE/dz_p^t = ∂E/∂z_p^t + Σ_j dE/di_j^{t+1} c_in W_jp`` with
``dE/di_j^{t+1} = dE/dv_j^{t+1} + α_s dE/di_j^{t+2}``. MDGL's truncation drops ``j``'s own future, which now
includes the persistence of its current: ``dE/di_j^{t+1} ≈ ψ_j^{t+1} ∂E/∂z_j^{t+1}`` — so the modulatory term is
unchanged, and the traces are e-prop's with the synaptically filtered presynaptic signal. The T3.1 construction
(autograd of ``E + S`` on the e-prop graph) holds as before and is tested; whether the truncation is as good with
long τ_s is an empirical question. With ``reset="zero"`` the input of the step after a spike still counts, so
``∂v_j^{t+1}/∂z_p^t = c_in W_jp`` and the modulatory term is unchanged; the traces are e-prop's for that reset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Literal, NamedTuple

import torch
from torch import Tensor

from spikelearn.models import RateRNN, SpikingRNN
from spikelearn.rules.base import Grads, LossFn, RuleState
from spikelearn.rules.local import (
    FeedbackMatrix,
    LocalRule,
    RegSpec,
    SpikingTraceState,
    assemble_grads,
    cell_type_index,
    check_local_options,
    default_std_hidden,
    default_std_out,
    initial_spikes,
    local_adjoint_scan,
    rate_adjoint_scan,
    rate_constants,
    rate_scan_fields,
    readout_credit_chunks,
    record_and_output_error,
    recs_chunk,
    spiking_constants,
    spiking_scan_fields,
    spiking_traces_advance,
    spiking_traces_init,
    spiking_traces_read,
    type_average,
    type_indicator,
)
from spikelearn.rules.registry import register
from spikelearn.weights import DENSE, SPARSE, SparseWeights, weight_ops

__all__ = ["MDGL", "MDGLState", "ModulationOperator", "cell_type_index", "type_indicator", "type_average",
           "substituted_weights"]

VARIANTS = ("mdgl", "exact", "nonlocal", "online")


def substituted_weights(W_rec: Tensor, P: Tensor, variant: str, ops: Any = DENSE) -> Tensor:
    """The weights ``W̃`` ``(post, pre)`` through which the emissions reach presynaptic neurons (module docstring)."""
    idx = P.argmax(1)
    if variant == "exact":
        return W_rec
    if variant in ("mdgl", "online"):
        return ops.expand_blocks(type_average(W_rec, P, nonzero_only=True, ops=ops), idx, idx, like=W_rec)
    if variant == "nonlocal":
        return ops.expand_blocks(type_average(W_rec, P, nonzero_only=False, ops=ops), idx, idx)
    raise ValueError(f"MDGL: variant must be one of {VARIANTS}, got {variant!r}")


class ModulationOperator:
    """``v ↦ v @ W̃`` (``v`` ``(..., N)`` over the emitting neurons ``j``; the result over the receiving ``p``), using
    the structure of ``W̃``: for ``"nonlocal"``, and for ``"mdgl"``/``"online"`` on a complete circuit (every
    off-diagonal pair connected, with or without autapses), ``W̃`` is the type gains expanded, so the product is
    ``((v P) w)[τ(p)]`` (minus the autapse term) in ``O(N C)`` per row instead of ``O(N²)``; otherwise (sparse
    connectivity, ``"exact"``) one dense GEMM with ``W̃``. Same numbers either way (tested)."""

    def __init__(self, W_rec: Any, idx: Tensor, n_types: int, variant: str):
        dtype = W_rec.values.dtype if isinstance(W_rec, SparseWeights) else W_rec.dtype
        P = type_indicator(idx, n_types, dtype)
        self.dense: Tensor | None = None
        self.sparse: SparseWeights | None = None  # per-edge W̃ (sparse storage): v @ W̃ = W̃ᵀ v
        self.diag: Tensor | None = None
        self.P, self.idx, self.w = P, idx, None
        if isinstance(W_rec, SparseWeights):
            if variant not in VARIANTS:
                raise ValueError(f"MDGL: variant must be one of {VARIANTS}, got {variant!r}")
            if variant == "exact":
                self.sparse = W_rec
            elif variant == "nonlocal":
                self.w = type_average(W_rec, P, nonzero_only=False, ops=SPARSE)
            else:
                w = type_average(W_rec, P, nonzero_only=True, ops=SPARSE)
                self.sparse = SPARSE.expand_blocks(w, idx, idx, like=W_rec)
            return
        if variant == "exact":
            self.dense = W_rec
            return
        if variant == "nonlocal":
            self.w = type_average(W_rec, P, nonzero_only=False)
            return
        if variant not in ("mdgl", "online"):
            raise ValueError(f"MDGL: variant must be one of {VARIANTS}, got {variant!r}")
        A = W_rec != 0
        N = W_rec.shape[0]
        n_edges, n_auto = int(A.sum()), int(A.diagonal().sum())
        w = type_average(W_rec, P, nonzero_only=True)
        if n_edges == N * N:
            self.w = w
        elif n_edges == N * N - N and n_auto == 0:
            self.w = w
            self.diag = w[idx, idx]  # the missing autapses W̃[p, p] = w_τ(p)τ(p)
        else:
            self.dense = DENSE.expand_blocks(w, idx, idx, like=W_rec)

    def __call__(self, v: Tensor) -> Tensor:
        if self.sparse is not None:
            return SPARSE.t_product(self.sparse, v)
        if self.dense is not None:
            return torch.matmul(v, self.dense)
        assert self.w is not None
        out = torch.matmul(torch.matmul(v, self.P), self.w).index_select(-1, self.idx)
        if self.diag is not None:
            out = out - v * self.diag
        return out


class MDGLState(NamedTuple):
    """Online MDGL state (variant ``"online"``): the engine's spiking traces plus the modulatory buffers."""

    ep: SpikingTraceState  # e-prop traces (reset-inclusive by default), the Σ L ē accumulators, the rule state
    e_bar_prev: Tensor     # (N, B, N_pre) ē^{t-1}, waiting for the emissions of step t
    psi_bar: Tensor        # (B, N) κ-filtered ψ
    acc_mod: Tensor        # (N, N_pre) Σ_t Σ_b M̄_p^{t-1} ē_pq^{t-1} since the last read

    @property
    def rule_state(self) -> RuleState:
        """The rule state (adaptive feedback) as of this step."""
        return self.ep.rule_state


# ----------------------------------------------------------------------------------------------- rule
@register("mdgl")
@dataclass(frozen=True)
class MDGL(LocalRule):
    """MDGL (module docstring) for :class:`~spikelearn.models.SpikingRNN`, and its rate form for
    :class:`~spikelearn.models.RateRNN` (this package's extension: RFLO's local traces — e-prop for rate networks —
    with the credit on ``r_p^t`` extended by ``Σ_j W̃[j,p] m_j^{t+1}``, ``m_j = c_in,j ∂E/∂h_j|immediate``; with
    ``τ = dt`` and ``variant="exact"`` it equals sliding-window TBPTT with K = 2, T6.3; batched only).

    Reads (trajectory record): ``x``, ``z`` (presynaptic activity), ``psi``, ``z_filt``; from the model: the
    constants α, ρ, c_in, c_a, v_th, β, κ, the effective ``W_rec`` (the type gains ``w_αβ`` and, for ``"exact"``,
    the weights themselves; the existence of a connection ``W_rec[j,p] ≠ 0``) and ``W_out`` (symmetric feedback),
    ``circuit`` (cell types / signs). Updates: ``theta_rec``, ``theta_in`` (MDGL), ``theta_out``, ``b_out`` (exact),
    through ``model.param_grads``.

    Attributes:
        variant: ``"mdgl"`` (default, NP_mode 3), ``"exact"`` (2), ``"nonlocal"`` (5) or ``"online"`` (7).
        cell_types: ``"ei"`` (default, the source's two types), ``"circuit"`` or ``N`` labels
            (:func:`cell_type_index`).
        feedback, feedback_seed, feedback_std, feedback_decay: the readout credit ``∂E/∂z`` uses ``B`` as in
            :class:`~spikelearn.rules.EProp` (``"symmetric"`` is the source's choice).
        reset_in_trace: reset path in the traces; default ``True`` (MDGL's code).
        mode: ``"batched"`` or ``"online"`` (``variant="online"`` only); same numbers.
        chunk_steps: steps per forward chunk.
    """

    variant: Literal["mdgl", "exact", "nonlocal", "online"] = "mdgl"
    cell_types: Any = "ei"
    feedback: Literal["symmetric", "random", "adaptive"] | FeedbackMatrix | Any = "symmetric"
    reset_in_trace: bool = True
    mode: Literal["batched", "online"] = "batched"
    feedback_seed: int = 0
    feedback_std: float | None = None
    feedback_decay: float = 0.0
    chunk_steps: int = 100

    online = True
    model_types = ("spiking", "rate")

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"MDGL: variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.mode not in ("batched", "online"):
            raise ValueError(f"MDGL: mode must be 'batched' or 'online', got {self.mode!r}")
        if self.mode == "online" and self.variant != "online":
            raise ValueError(f"MDGL: mode='online' needs variant='online' (variant {self.variant!r} uses ∂E/∂z^{{t+1}}"
                             " through the filtered readout, which depends on future errors); use mode='batched'")
        check_local_options(self)

    # ------------------------------------------------------------------ helpers
    def check_model(self, model: Any) -> None:
        if not isinstance(model, (SpikingRNN, RateRNN)):
            raise TypeError(f"MDGL applies to SpikingRNN or RateRNN models, got {type(model).__name__}")

    def default_feedback_std(self, model: Any) -> float:
        """A rate model: RFLO's ``1/√K``; a spiking model: e-prop's ``1/√N``."""
        return default_std_out(model) if isinstance(model, RateRNN) else default_std_hidden(model)

    def substituted_weights(self, model: Any) -> Tensor:
        """``W̃`` ``(post, pre)`` of this variant for ``model``'s current weights (detached)."""
        idx, names = cell_type_index(model, self.cell_types)
        W = model.effective_weights().W_rec.detach()
        return substituted_weights(W, type_indicator(idx, len(names), W.dtype), self.variant, weight_ops(model))

    def modulation(self, model: Any) -> ModulationOperator:
        """The operator ``v ↦ v @ W̃`` for ``model``'s current weights (:class:`ModulationOperator`)."""
        idx, names = cell_type_index(model, self.cell_types)
        return ModulationOperator(model.effective_weights().W_rec.detach(), idx, len(names), self.variant)

    def gains(self, model: Any) -> tuple[Tensor, list]:
        """The ``(C, C)`` type gains ``w_αβ`` (post α, pre β) of this variant and the type labels."""
        idx, names = cell_type_index(model, self.cell_types)
        W = model.effective_weights().W_rec.detach()
        P = type_indicator(idx, len(names), W.dtype)
        return type_average(W, P, nonzero_only=self.variant != "nonlocal", ops=weight_ops(model)), names

    # ------------------------------------------------------------------ whole trials
    def update(self, model: Any, x: Tensor, y: Tensor, mask: Tensor, loss_fn: LossFn,
               state: RuleState | None = None) -> tuple[Tensor, Grads, RuleState]:
        """``(loss, grads, new_state)`` for whole trials (module docstring; rule state as in
        :class:`~spikelearn.rules.local.LocalRule`)."""
        if isinstance(model, RateRNN) and (self.variant == "online" or self.mode == "online"):
            raise ValueError("MDGL on a RateRNN: only variants 'mdgl', 'exact', 'nonlocal' in mode 'batched' (the "
                             "'online' variant's filtered ψ̄ is defined for spiking networks)")
        return super().update(model, x, y, mask, loss_fn, state)

    def batched_update(self, model: Any, x: Tensor, y: Tensor, mask: Tensor, loss_fn: LossFn,
                 state: RuleState) -> tuple[Tensor, Grads, RuleState]:
        if isinstance(model, RateRNN):
            return self._rate_batched(model, x, y, mask, loss_fn, state)
        loss, dE_dy, recs = record_and_output_error(model, x, y, mask, loss_fn, self.chunk_steps,
                                                    spiking_scan_fields(model))
        with torch.no_grad():
            k = spiking_constants(model, self.reset_in_trace)
            Bfb, state = self.feedback_for(model, state)
            credits = self._credits(k, recs, dE_dy, Bfb, self.modulation(model))
            dW_pre, dW_out = local_adjoint_scan(k, recs, dE_dy, credits, self.reset_in_trace,
                                                z0=initial_spikes(recs), ops=weight_ops(model),
                                                W_rec=model.effective_weights().W_rec.detach())
        return loss, assemble_grads(model, dW_pre, dW_out, dE_dy.sum((0, 1))), state

    def _rate_batched(self, model: Any, x: Tensor, y: Tensor, mask: Tensor, loss_fn: LossFn,
                      state: RuleState) -> tuple[Tensor, Grads, RuleState]:
        """MDGL for rate networks: RFLO's local traces (the rate form of e-prop) with the credit on ``r_p^t``
        extended by the one-hop modulatory term ``Σ_j W̃[j,p] m_j^{t+1}``
        (:func:`~spikelearn.rules.local.rate_adjoint_scan`)."""
        loss, dE_dy, recs = record_and_output_error(model, x, y, mask, loss_fn, self.chunk_steps,
                                                    rate_scan_fields(model))
        with torch.no_grad():
            Bfb, state = self.feedback_for(model, state)
            dW_pre, dW_out, db_out = rate_adjoint_scan(rate_constants(model), recs, dE_dy, Bfb,
                                                       modulation=self.modulation(model), ops=weight_ops(model),
                                                       W_rec=model.effective_weights().W_rec.detach())
        return loss, assemble_grads(model, dW_pre, dW_out, db_out), state

    def _credits(self, k: Any, recs: list, dE_dy: Tensor, Bfb: Tensor, op: ModulationOperator) -> Iterator[Tensor]:
        """Per chunk, last to first, the credit ``(T_c, B, N)`` on the outgoing spikes (module docstring), computed
        one chunk at a time: the emissions of a chunk's first step are carried to the chunk before it."""
        kap, omk = k.kappa, k.c_kappa
        m_next = None  # emissions at the first step of the chunk after this one
        if self.variant != "online":
            for t0, t1, sig in readout_credit_chunks(recs, dE_dy, Bfb, kap, omk):  # sig = ∂E/∂z^t
                m = recs_chunk(recs, t0, t1)[2] * sig * k.c_in  # emissions m^t = c_in ψ^t ∂E/∂z^t
                sig[:-1] += op(m[1:])
                if m_next is not None:
                    sig[-1] += op(m_next)
                m_next = m[0]
                yield sig
            return
        # online: m̄^t = c_in ψ̄^t L^t with ψ̄ a causal filter: its value at each chunk's start, then per chunk
        starts, pb = [], torch.zeros_like(recs[0][2][0])
        for r in recs:
            starts.append(pb)
            for t in range(r[2].shape[0]):
                pb = torch.add(pb * kap, r[2][t], alpha=omk)
        u = torch.zeros_like(pb)
        t1 = dE_dy.shape[0]
        for ci in range(len(recs) - 1, -1, -1):
            psi_c = recs[ci][2]
            Tc = psi_c.shape[0]
            G = torch.matmul(dE_dy[t1 - Tc:t1], Bfb.T)  # L^t
            pbc, pb = torch.empty_like(psi_c), starts[ci]
            for t in range(Tc):
                pb = torch.add(pb * kap, psi_c[t], alpha=omk)
                pbc[t] = pb
            m = pbc.mul_(G).mul_(k.c_in)  # m̄^t
            G[:-1] += op(m[1:])  # L^t + M̄^t
            if m_next is not None:
                G[-1] += op(m_next)
            m_next = m[0]
            sig = torch.empty_like(G)  # Σ_t G ē = Σ_t [(1−κ) Σ_{t'≥t} κ^{t'−t} G^{t'}] e^t
            for t in range(Tc - 1, -1, -1):
                u = torch.add(G[t], u, alpha=kap)
                sig[t] = u
            yield sig.mul_(omk)
            t1 -= Tc

    # ------------------------------------------------------------------ online (variant "online")
    def init(self, model: Any, batch_size: int, n_steps: int | None = None, *,
             initial_state: Any = None, rule_state: RuleState | None = None) -> MDGLState:
        """Zero state for ``batch_size`` trials from ``initial_state`` (else ``model.init_state``), carrying
        ``rule_state`` (else ``init_state(model)``); variant ``"online"`` only."""
        if self.variant != "online":
            raise ValueError(f"MDGL: the online form exists for variant='online' only, not {self.variant!r}")
        if not isinstance(model, SpikingRNN):
            raise TypeError(f"MDGL's online form applies to SpikingRNN models, got {type(model).__name__}")
        rs = self.init_state(model) if rule_state is None else rule_state
        ep = spiking_traces_init(model, spiking_constants(model, self.reset_in_trace), batch_size, n_steps,
                                 RegSpec(), initial_state, rs)
        return MDGLState(ep=ep, e_bar_prev=torch.zeros_like(ep.e_bar),
                         psi_bar=torch.zeros(int(batch_size), model.n, dtype=model.dtype, device=model.device),
                         acc_mod=torch.zeros_like(ep.acc))

    def advance(self, model: Any, rec: Any, dE_dy: Tensor, state: MDGLState) -> MDGLState:
        """Advance through a chunk (``rec`` fields ``(T_c, B, ·)``, ``dE_dy`` ``(T_c, B, K)``)."""
        k = spiking_constants(model, self.reset_in_trace)
        Bfb, rs = self.feedback_for(model, state.ep.rule_state)
        op = self.modulation(model)
        kap, omk = k.kappa, k.c_kappa
        s = state
        with torch.no_grad():
            L = torch.matmul(dE_dy, Bfb.T)
            for t in range(rec.z.shape[0]):
                s.e_bar_prev.copy_(s.ep.e_bar)  # ē^{t-1}
                ep = spiking_traces_advance(k, s.ep, type(rec)(*(f[t:t + 1] for f in rec)), L[t:t + 1],
                                            dE_dy[t:t + 1], self.reset_in_trace, RegSpec())
                psi_bar = s.psi_bar.mul_(kap).add_(rec.psi[t], alpha=omk)
                if s.ep.t > 0:
                    M = op(k.c_in * psi_bar * L[t])  # (B, N) M̄^{t-1}
                    s.acc_mod.add_(torch.bmm(M.T[:, None, :], s.e_bar_prev).squeeze(1))
                s = s._replace(ep=ep, psi_bar=psi_bar)
        return s._replace(ep=s.ep._replace(rule_state=rs))

    def read(self, model: Any, state: MDGLState) -> tuple[Grads, MDGLState]:
        """Gradients accumulated since the last read, and the state with zeroed accumulators."""
        k = spiking_constants(model, self.reset_in_trace)
        dW_pre, dW_out, db_out, ep = spiking_traces_read(model, k, state.ep, RegSpec())
        grads = assemble_grads(model, dW_pre + state.acc_mod, dW_out, db_out)
        return grads, state._replace(ep=ep, acc_mod=torch.zeros_like(state.acc_mod))
