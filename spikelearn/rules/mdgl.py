r"""MDGL — multidigraph learning (Liu, Smith, Mihalas, Shea-Brown, Sümbül, PNAS 118:e2111821118, 2021,
doi:10.1073/pnas.2111821118). ALGORITHMS.md §3.

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
plus one buffered ``ē^{t-1}`` to wait for ``m̄^t`` (ALGORITHMS.md §3.4).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from spikelearn.rules.base import Grads, LossFn
from spikelearn.rules.eprop import EProp, EPropState, _detached, record_and_output_error, run_online

__all__ = ["MDGL", "MDGLState", "cell_type_index", "type_indicator", "type_average", "substituted_weights"]

VARIANTS = ("mdgl", "exact", "nonlocal", "online")


# ----------------------------------------------------------------------------------------------- cell types
def cell_type_index(model: nn.Module, cell_types: Any = "ei") -> tuple[Tensor, list]:
    """Per-neuron type index ``(N,)`` (long, values ``0..C-1``) and the ``C`` type labels.

    Args:
        cell_types: ``"ei"`` — the neuron's sign (``circuit.signs``; where 0, the sign constraint of its column of
            ``W_rec``; neurons with neither form their own "0" type); ``"circuit"`` — ``circuit.cell_types``;
            or a sequence of ``N`` labels (any hashable values).
    """
    N = model.n
    if isinstance(cell_types, str):
        if cell_types == "ei":
            s = np.asarray(model.circuit.signs, dtype=np.int64).copy()
            col = model.sign_rec.detach().cpu().numpy()
            colsign = np.where((col > 0).any(0), 1, np.where((col < 0).any(0), -1, 0))
            labels = np.where(s != 0, s, colsign)
        elif cell_types == "circuit":
            labels = np.asarray([str(c) for c in model.circuit.cell_types], dtype=object)
        else:
            raise ValueError(f"cell_types must be 'ei', 'circuit' or a sequence of {N} labels, got {cell_types!r}")
    else:
        labels = np.asarray(list(cell_types), dtype=object)
        if labels.shape != (N,):
            raise ValueError(f"cell_types has {labels.shape[0] if labels.ndim else 0} labels, expected {N}")
    names, inv = np.unique(labels.astype(str), return_inverse=True)
    return torch.as_tensor(inv, dtype=torch.long, device=model.device), names.tolist()


def type_indicator(idx: Tensor, C: int, dtype: torch.dtype) -> Tensor:
    """One-hot ``P`` ``(N, C)`` with ``P[j, τ(j)] = 1``."""
    return torch.nn.functional.one_hot(idx, C).to(dtype)


def type_average(W: Tensor, P: Tensor, nonzero_only: bool) -> Tensor:
    """Block means ``(C, C)`` of ``W`` ``(post, pre)``: ``[α, β]`` averages ``W[α ← β]``.

    ``nonzero_only``: mean over the non-zero entries (existing connections; an empty block gives 0); otherwise over
    the whole block including zeros.
    """
    S = P.T @ W @ P
    if nonzero_only:
        cnt = P.T @ (W != 0).to(W.dtype) @ P
    else:
        n = P.sum(0)
        cnt = n[:, None] * n[None, :]
    return torch.where(cnt > 0, S / cnt.clamp(min=1), torch.zeros_like(S))


def substituted_weights(W_rec: Tensor, P: Tensor, variant: str) -> Tensor:
    """The weights ``W̃`` ``(post, pre)`` through which the emissions reach presynaptic neurons (module docstring)."""
    if variant == "exact":
        return W_rec
    if variant in ("mdgl", "online"):
        w = type_average(W_rec, P, nonzero_only=True)
        return (P @ w @ P.T) * (W_rec != 0).to(W_rec.dtype)
    if variant == "nonlocal":
        return P @ type_average(W_rec, P, nonzero_only=False) @ P.T
    raise ValueError(f"MDGL: variant must be one of {VARIANTS}, got {variant!r}")


class MDGLState(NamedTuple):
    """Online MDGL state (variant ``"online"``): e-prop's state plus the modulatory buffers."""

    ep: EPropState       # e-prop traces (reset-inclusive by default) and the Σ L ē accumulators
    e_bar_prev: Tensor   # (N, B, N_pre) ē^{t-1}, waiting for the emissions of step t
    psi_bar: Tensor      # (B, N) κ-filtered ψ
    acc_mod: Tensor      # (N, N_pre) Σ_t Σ_b M̄_p^{t-1} ē_pq^{t-1} since the last read


# ----------------------------------------------------------------------------------------------- rule
@dataclass(frozen=True)
class MDGL:
    """MDGL (ALGORITHMS.md §3) for :class:`~spikelearn.models.SpikingRNN`.

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
    feedback: Literal["symmetric", "random", "adaptive"] = "symmetric"
    reset_in_trace: bool = True
    mode: Literal["batched", "online"] = "batched"
    feedback_seed: int = 0
    feedback_std: float | None = None
    feedback_decay: float = 0.0
    chunk_steps: int = 100
    _eprop: Any = field(default=None, init=False, repr=False, compare=False)

    online = True
    model_types = ("spiking",)

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"MDGL: variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.mode == "online" and self.variant != "online":
            raise ValueError(f"MDGL: mode='online' needs variant='online' (variant {self.variant!r} uses ∂E/∂z^{{t+1}}"
                             " through the filtered readout, which depends on future errors); use mode='batched'")
        ep = EProp(feedback=self.feedback, reset_in_trace=self.reset_in_trace, mode="online",
                   feedback_seed=self.feedback_seed, feedback_std=self.feedback_std,
                   feedback_decay=self.feedback_decay, chunk_steps=self.chunk_steps)
        object.__setattr__(self, "_eprop", ep)  # shares B (and the adaptive B's memory) between both modes

    # ------------------------------------------------------------------ helpers
    def feedback_matrix(self, model: nn.Module) -> Tensor:
        """The feedback matrix ``B`` ``(N, K)`` used for ``model`` now."""
        return self._eprop.feedback_matrix(model)

    def substituted_weights(self, model: nn.Module) -> Tensor:
        """``W̃`` ``(post, pre)`` of this variant for ``model``'s current weights (detached)."""
        idx, names = cell_type_index(model, self.cell_types)
        W = model.effective_weights().W_rec.detach()
        return substituted_weights(W, type_indicator(idx, len(names), W.dtype), self.variant)

    def gains(self, model: nn.Module) -> tuple[Tensor, list]:
        """The ``(C, C)`` type gains ``w_αβ`` (post α, pre β) of this variant and the type labels."""
        idx, names = cell_type_index(model, self.cell_types)
        W = model.effective_weights().W_rec.detach()
        P = type_indicator(idx, len(names), W.dtype)
        return type_average(W, P, nonzero_only=self.variant != "nonlocal"), names

    # ------------------------------------------------------------------ whole trials
    def gradients(self, model: nn.Module, x: Tensor, y: Tensor, mask: Tensor,
                  loss_fn: LossFn) -> tuple[Tensor, Grads]:
        """``(loss, grads)`` for whole trials (module docstring)."""
        self._eprop._check_model(model)
        if self.mode == "online":
            loss, grads = run_online(self, model, x, y, mask, loss_fn, chunk_steps=self.chunk_steps)
            assert grads is not None
            return loss, grads
        loss, dE_dy, recs = record_and_output_error(model, x, y, mask, loss_fn, self.chunk_steps,
                                                    ("x", "z", "psi", "z_filt"))
        with torch.no_grad():
            dW_pre, dW_out = self._batched(model, recs, dE_dy)
        return loss, self._eprop._grads(model, dW_pre, dW_out, dE_dy.sum((0, 1)))

    def _credit(self, model: Any, k: Any, recs: list, dE_dy: Tensor, Bfb: Tensor, Wt: Tensor) -> list:
        """Per chunk, the credit ``(T_c, B, N)`` on the outgoing spikes, paired with the unfiltered traces."""
        kap, omk = k.kappa, 1.0 - k.kappa
        T = dE_dy.shape[0]
        if self.variant == "online":
            psi = torch.cat([r[2] for r in recs])
            L = torch.matmul(dE_dy, Bfb.T)
            pb = torch.zeros_like(psi[0])
            m = torch.empty_like(psi)
            for t in range(T):  # m̄^t = c_in ψ̄^t L^t
                pb = torch.add(pb * kap, psi[t], alpha=omk)
                m[t] = k.c_in * pb * L[t]
            G = L
            G[:-1] += torch.matmul(m[1:], Wt)  # L^t + M̄^t
            fy = torch.empty_like(G)
            u = torch.zeros_like(G[0])
            for t in range(T - 1, -1, -1):  # Σ_t G ē = Σ_t [(1−κ) Σ_{t'≥t} κ^{t'−t} G^{t'}] e^t
                u = torch.add(G[t], u, alpha=kap)
                fy[t] = u
            sig = fy * omk
        else:
            fy = torch.empty_like(dE_dy)  # the readout filter's adjoint, in output space (K ≪ N)
            u = torch.zeros_like(dE_dy[0])
            for t in range(T - 1, -1, -1):
                u = torch.add(dE_dy[t], u, alpha=kap)
                fy[t] = u
            sig = torch.matmul(fy, Bfb.T * omk)  # ∂E/∂z^t
            psi = torch.cat([r[2] for r in recs]) if len(recs) > 1 else recs[0][2]
            m = psi[1:] * sig[1:]  # emissions m^{t+1} (c_in folded into W̃'s rows below)
            sig[:-1] += torch.matmul(m, k.c_in[:, None] * Wt)
        out, t0 = [], 0
        for r in recs:
            out.append(sig[t0:t0 + r[1].shape[0]])
            t0 += r[1].shape[0]
        return out

    def _batched(self, model: Any, recs: list, dE_dy: Tensor) -> tuple[Tensor, Tensor]:
        """Credit on the outgoing spikes, then the adjoint scan of the local dynamics chunk by chunk backwards;
        ``recs``: per chunk ``(x, z, psi, z_filt)``."""
        k = self._eprop._consts(model)
        Bfb = self.feedback_matrix(model)
        Wt = self.substituted_weights(model)
        sigs = self._credit(model, k, recs, dE_dy, Bfb, Wt)
        B, N = recs[0][1].shape[1], k.N
        n_in = recs[0][0].shape[-1]
        kw = dict(dtype=dE_dy.dtype, device=dE_dy.device)
        dW_pre = torch.zeros(N, N + n_in, **kw)
        dW_out = torch.zeros(dE_dy.shape[-1], N, **kw)
        dv = torch.zeros(B, N, **kw)  # dE/dv^{t+1} on the local graph
        da = torch.zeros(B, N, **kw)
        t1 = dE_dy.shape[0]
        for ci in range(len(recs) - 1, -1, -1):
            x_c, z_c, psi_c, zf_c = recs[ci]
            sig = sigs[ci]
            Tc = z_c.shape[0]
            D = torch.empty(Tc, B, N, **kw)  # c_in dE/dv^t
            for i in range(Tc - 1, -1, -1):
                dz = sig[i]
                if k.adaptive:
                    dz = torch.addcmul(dz, k.c_a, da)
                if self.reset_in_trace:
                    dz = torch.addcmul(dz, k.v_th, dv, value=-1.0)
                pdz = psi_c[i] * dz
                dv = torch.addcmul(pdz, k.leak, dv)
                if k.adaptive:
                    da = torch.addcmul(k.rho * da, k.beta, pdz, value=-1.0)
                torch.mul(dv, k.c_in, out=D[i])
            dW_pre[:, :N].addmm_(D[1:].reshape(-1, N).T, z_c[:-1].reshape(-1, N))
            if ci > 0:
                dW_pre[:, :N].addmm_(D[0].T, recs[ci - 1][1][-1])
            dW_pre[:, N:].addmm_(D.reshape(-1, N).T, x_c.reshape(-1, n_in))
            dE_c = dE_dy[t1 - Tc:t1]
            dW_out.addmm_(dE_c.reshape(-1, dE_c.shape[-1]).T, zf_c.reshape(-1, N))
            t1 -= Tc
        return dW_pre, dW_out

    # ------------------------------------------------------------------ online (variant "online")
    def init(self, model: nn.Module, batch_size: int, n_steps: int | None = None) -> MDGLState:
        """Zero state for ``batch_size`` trials from rest (variant ``"online"`` only)."""
        if self.variant != "online":
            raise ValueError(f"MDGL: the online form exists for variant='online' only, not {self.variant!r}")
        ep = self._eprop.init(model, batch_size, n_steps=n_steps)
        return MDGLState(ep=ep, e_bar_prev=torch.zeros_like(ep.e_bar),
                         psi_bar=torch.zeros(int(batch_size), model.n, dtype=model.dtype, device=model.device),
                         acc_mod=torch.zeros_like(ep.acc))

    def advance(self, model: nn.Module, rec: Any, dE_dy: Tensor, state: MDGLState) -> MDGLState:
        """Advance through a chunk (``rec`` fields ``(T_c, B, ·)``, ``dE_dy`` ``(T_c, B, K)``)."""
        k = self._eprop._consts(model)
        Bfb = self.feedback_matrix(model)
        Wt = self.substituted_weights(model)
        kap, omk = k.kappa, 1.0 - k.kappa
        s = state
        with torch.no_grad():
            L = torch.matmul(dE_dy, Bfb.T)
            for t in range(rec.z.shape[0]):
                s.e_bar_prev.copy_(s.ep.e_bar)  # ē^{t-1}
                ep = self._eprop.advance(model, type(rec)(*(f[t:t + 1] for f in rec)), dE_dy[t:t + 1], s.ep)
                psi_bar = s.psi_bar.mul_(kap).add_(rec.psi[t], alpha=omk)
                if s.ep.t > 0:
                    M = torch.matmul(k.c_in * psi_bar * L[t], Wt)  # (B, N) M̄^{t-1}
                    s.acc_mod.add_(torch.bmm(M.T[:, None, :], s.e_bar_prev).squeeze(1))
                s = s._replace(ep=ep, psi_bar=psi_bar)
        return s

    def read(self, model: nn.Module, state: MDGLState) -> tuple[Grads, MDGLState]:
        """Gradients accumulated since the last read, and the state with zeroed accumulators."""
        grads, ep = self._eprop.read(model, state.ep)
        N = model.n
        extra = model.param_grads({"W_rec": state.acc_mod[:, :N], "W_in": state.acc_mod[:, N:]})
        for name, g in extra.items():
            grads[name] = grads[name] + g
        return grads, state._replace(ep=ep, acc_mod=torch.zeros_like(state.acc_mod))

    def step(self, model: nn.Module, rec_t: Any, dE_dy_t: Tensor, state: MDGLState) -> tuple[Grads, MDGLState]:
        """One time step (``rec_t`` fields ``(B, ·)``): this step's gradient contribution and the new state."""
        rec1 = type(rec_t)(*(f[None] for f in rec_t))
        return self.read(model, self.advance(model, rec1, dE_dy_t[None], state))
