r"""RFLO — random-feedback local online learning for leaky rate RNNs (Murray 2019, eLife 8:e43299,
doi:10.7554/eLife.43299). ALGORITHMS.md §5.

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

import math
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, NamedTuple

import torch
from torch import Tensor, nn

from spikelearn.rules.base import Grads, LossFn
from spikelearn.rules.eprop import (_check_common, _detached, feedback_matrix, record_and_output_error, run_online,
                                    start_state, weight_grads)

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


class _RConsts(NamedTuple):
    N: int
    A_hh: Tensor     # (N,) local ∂h^{t+1}/∂h^t
    A_hr: Tensor     # (N,) local ∂h^{t+1}/∂r^t
    A_rr: Tensor     # (N,) local ∂r^{t+1}/∂r^t
    c_in: Tensor     # (N,) factor on the drive
    c_f: Tensor      # (N,) factor on f(h) in r (Murray: γ)
    presyn: bool     # A_hr = A_rr = 0 and A_hh uniform: traces depend on the presynaptic unit only
    no_h: bool       # A_hh = A_hr = 0 (and not presyn): ε_h = c_in pre needs no state
    from_h: bool     # readout reads h instead of r
    bias: bool       # hidden bias b_rec is trained (a presynaptic constant 1)


@dataclass(frozen=True)
class RFLO:
    """RFLO (ALGORITHMS.md §5) for :class:`~spikelearn.models.RateRNN` (all forms).

    Reads (trajectory record): ``x``, ``r`` (presynaptic rates; readout input), ``h`` (readout input when
    ``readout_from="h"``), ``fprime`` (``f'(h)``); from the model: ``leak``, ``c_in``, ``c_f`` and the effective
    weights. Updates: ``theta_rec``, ``theta_in``, ``b_rec`` (RFLO traces), ``theta_out``, ``b_out`` (exact), through
    ``model.param_grads`` (absent edges get 0; signs kept).

    Attributes:
        feedback: ``"random"`` (default, fixed ``B ~ N(0, feedback_std²)``), ``"symmetric"`` (``B = W_outᵀ``; then
            RFLO equals autograd with the recurrent drive detached, T5.1) or ``"adaptive"``.
        mode: ``"batched"`` or ``"online"`` (same numbers).
        feedback_seed, feedback_std (``None`` = ``1/√K``, Murray's ``N(0,1)/√K``), feedback_decay: as
            :class:`~spikelearn.rules.EProp`.
        chunk_steps: steps simulated per forward chunk in :meth:`gradients` (both modes).
    """

    feedback: Literal["symmetric", "random", "adaptive"] = "random"
    mode: Literal["batched", "online"] = "batched"
    feedback_seed: int = 0
    feedback_std: float | None = None
    feedback_decay: float = 0.0
    chunk_steps: int = 100
    _memory: Any = field(default_factory=weakref.WeakKeyDictionary, init=False, repr=False, compare=False)

    online = True
    model_types = ("rate",)

    def __post_init__(self) -> None:
        _check_common(self)

    # ------------------------------------------------------------------ helpers
    def _check_model(self, model: nn.Module) -> None:
        from spikelearn.models import RateRNN

        if not isinstance(model, RateRNN):
            raise TypeError(f"RFLO applies to RateRNN models, got {type(model).__name__} (use EProp for SpikingRNN)")

    def _consts(self, model: Any) -> _RConsts:
        c = model.constants()
        N = model.n
        kw = dict(dtype=model.dtype, device=model.device)

        def vec(v: Any) -> Tensor:
            return torch.as_tensor(v, **kw).expand(N).clone()

        leak, c_in, c_f = vec(c.leak), vec(c.c_in), vec(c.c_f)
        zero = torch.zeros(N, **kw)
        gself = zero
        if model.gap is not None:
            G = model.gap
            gself = c_in * (torch.diagonal(G) - G.sum(1))
        if c.form in ("pre_activation", "relu_lif"):
            A_hh, A_hr, A_rr = leak + gself, zero, zero
        elif c.form == "murray":
            A_hh, A_hr, A_rr = gself, zero, leak
        else:  # richlazy: h^t = leak r^{t-1} + c_in D^t
            A_hh, A_hr, A_rr = gself, leak, zero
        presyn = bool((A_hr == 0).all() and (A_rr == 0).all() and (A_hh == A_hh[0]).all())
        no_h = not presyn and bool((A_hh == 0).all() and (A_hr == 0).all())
        return _RConsts(N=N, A_hh=A_hh, A_hr=A_hr, A_rr=A_rr, c_in=c_in, c_f=c_f, presyn=presyn, no_h=no_h,
                        from_h=model.readout_from == "h", bias=model.b_rec is not None)

    def feedback_matrix(self, model: nn.Module) -> Tensor:
        """The feedback matrix ``B`` ``(N, K)`` used for ``model`` now."""
        return feedback_matrix(self, model, model.effective_weights().W_out, 1.0 / math.sqrt(model.n_out))

    _grads = staticmethod(weight_grads)

    # ------------------------------------------------------------------ whole trials
    def gradients(self, model: nn.Module, x: Tensor, y: Tensor, mask: Tensor,
                  loss_fn: LossFn) -> tuple[Tensor, Grads]:
        """``(loss, grads)`` for whole trials (module docstring)."""
        self._check_model(model)
        if self.mode == "online":
            loss, grads = run_online(self, model, x, y, mask, loss_fn, chunk_steps=self.chunk_steps)
            assert grads is not None
            return loss, grads
        fields = ("x", "r", "fprime", "h" if model.readout_from == "h" else "r")
        loss, dE_dy, recs = record_and_output_error(model, x, y, mask, loss_fn, self.chunk_steps, fields)
        with torch.no_grad():
            dW_pre, dW_out, db_out = self._batched(model, recs, dE_dy)
        return loss, self._grads(model, dW_pre, dW_out, db_out)

    def _batched(self, model: Any, recs: list, dE_dy: Tensor,
                 modulation: Callable[[Tensor], Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Adjoint of the local dynamics, chunk by chunk backwards; ``recs``: per chunk ``(x, r, fprime, read)``.

        ``modulation`` (MDGL for rate networks, :class:`~spikelearn.rules.MDGL`): ``v ↦ v @ W̃``; the credit on
        ``r_p^t`` then also gets ``M_p^t = Σ_j W̃[j,p] m_j^{t+1}`` with the emissions
        ``m_j^t = c_in,j ∂E/∂h_j^t|immediate`` (``L_j^t`` when the readout reads ``h``, else ``c_f,j f'_j^t L_j^t``).
        """
        k = self._consts(model)
        W = _detached(model.effective_weights())
        Bfb = feedback_matrix(self, model, W.W_out, 1.0 / math.sqrt(model.n_out))
        T = dE_dy.shape[0]
        B, N = recs[0][1].shape[1], k.N
        n_in = recs[0][0].shape[-1]
        kw = dict(dtype=dE_dy.dtype, device=dE_dy.device)
        dW_pre = torch.zeros(N, N + n_in + int(k.bias), **kw)
        dW_out = torch.zeros(dE_dy.shape[-1], N, **kw)
        lh = torch.zeros(B, N, **kw)  # dE/dh^{t+1} on the local graph
        lr = torch.zeros(B, N, **kw)  # dE/dr^{t+1}
        m_next = None  # emissions at the first step of the chunk after this one (modulation only)
        t1 = T
        for ci in range(len(recs) - 1, -1, -1):
            x_c, r_c, fp_c, read_c = recs[ci]
            Tc = r_c.shape[0]
            t0 = t1 - Tc
            dE_c = dE_dy[t0:t1]
            L_c = torch.matmul(dE_c, Bfb.T)
            M_c = None
            if modulation is not None:
                m_c = (L_c if k.from_h else L_c * fp_c * k.c_f) * k.c_in
                M_c = torch.zeros_like(L_c)
                M_c[:-1] = modulation(m_c[1:])
                if m_next is not None:
                    M_c[-1] = modulation(m_next)
                m_next = m_c[0]
            D = torch.empty(Tc, B, N, **kw)  # c_in dE/dh^t
            for i in range(Tc - 1, -1, -1):
                lr_t = torch.addcmul(k.A_rr * lr, k.A_hr, lh)
                lh_t = k.A_hh * lh
                if k.from_h:
                    lh_t = lh_t + L_c[i]
                else:
                    lr_t = lr_t + L_c[i]
                if M_c is not None:
                    lr_t = lr_t + M_c[i]
                lh = torch.addcmul(lh_t, k.c_f * fp_c[i], lr_t)
                lr = lr_t
                torch.mul(lh, k.c_in, out=D[i])
            r_first = recs[ci - 1][1][-1] if ci > 0 else recs.state0.r  # r^{t0-1}
            dW_pre[:, :N].addmm_(D[1:].reshape(-1, N).T, r_c[:-1].reshape(-1, N)).addmm_(D[0].T, r_first)
            dW_pre[:, N:N + n_in].addmm_(D.reshape(-1, N).T, x_c.reshape(-1, n_in))
            if k.bias:
                dW_pre[:, -1] += D.sum((0, 1))
            dW_out.addmm_(dE_c.reshape(-1, dE_c.shape[-1]).T, read_c.reshape(-1, N))
            t1 = t0
        return dW_pre, dW_out, dE_dy.sum((0, 1))

    # ------------------------------------------------------------------ online
    def init(self, model: nn.Module, batch_size: int, n_steps: int | None = None, *,
             initial_state: Any = None) -> RFLOState:
        """Zero traces and accumulators for ``batch_size`` trials starting from ``model.init_state``."""
        self._check_model(model)
        k = self._consts(model)
        N, B = k.N, int(batch_size)
        Np = N + model.n_in + int(k.bias)
        kw = dict(dtype=model.dtype, device=model.device)
        return RFLOState(t=0, n_steps=n_steps, r_prev=start_state(model, B, initial_state).r.detach().clone(),
                         eps_h=None if k.no_h else torch.zeros((B, Np) if k.presyn else (N, B, Np), **kw),
                         eps_r=None if k.presyn else torch.zeros(N, B, Np, **kw),
                         acc=torch.zeros(N, Np, **kw), acc_out=torch.zeros(model.n_out, N, **kw),
                         acc_bout=torch.zeros(model.n_out, **kw))

    def advance(self, model: nn.Module, rec: Any, dE_dy: Tensor, state: RFLOState) -> RFLOState:
        """Advance through a chunk: ``rec`` a :class:`~spikelearn.models.RateRecord` ``(T_c, B, ·)``,
        ``dE_dy`` ``(T_c, B, K)``."""
        k = self._consts(model)
        Bfb = feedback_matrix(self, model, model.effective_weights().W_out, 1.0 / math.sqrt(model.n_out))
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
        return s

    def read(self, model: nn.Module, state: RFLOState) -> tuple[Grads, RFLOState]:
        """Gradients accumulated since the last read, and the state with zeroed accumulators."""
        grads = self._grads(model, state.acc, state.acc_out, state.acc_bout)
        z = torch.zeros_like
        return grads, state._replace(acc=z(state.acc), acc_out=z(state.acc_out), acc_bout=z(state.acc_bout))

    def step(self, model: nn.Module, rec_t: Any, dE_dy_t: Tensor, state: RFLOState) -> tuple[Grads, RFLOState]:
        """One time step (``rec_t`` fields ``(B, ·)``, ``dE_dy_t`` ``(B, K)``): this step's gradient and new state."""
        rec1 = type(rec_t)(*(f[None] for f in rec_t))
        return self.read(model, self.advance(model, rec1, dE_dy_t[None], state))
