"""Test-only reference implementations for the local rules (small networks only; never used in training).

* :func:`spiking_forward` — the :class:`~spikelearn.models.SpikingRNN` dynamics re-written with the detaches of
  ALGORITHMS.md §2.7 as options, a readout whose backward may use a feedback matrix ``B`` instead of ``W_outᵀ``,
  and optional zero-valued leaves on the outgoing spike copy (total derivatives ``dE/dz``, §2.8 T2.1).
* :func:`eprop_autograd` — e-prop by autograd on the detached graph (the reference of T2.2/T2.5).
* :func:`eprop_traces` — the eligibility traces of §2.2 as a dense ``(T, B, N, N + n_in)`` tensor.
* :func:`rate_forward`, :func:`rflo_autograd` — the same for :class:`~spikelearn.models.RateRNN` (T5.1).
* :func:`rtrl_murray` — RTRL with the full influence tensor for the Murray form (T5.3), optionally with the
  non-local term dropped (which is RFLO with symmetric feedback).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from spikelearn.models import EffectiveWeights
from spikelearn.neurons.rate import RateState, rate_update
from spikelearn.rules.base import output_error
from spikelearn.rules.eprop import rate_regularizer

__all__ = ["spiking_forward", "eprop_autograd", "eprop_traces", "rate_forward", "rflo_autograd", "rtrl_murray",
           "named_grads"]


class _FeedbackLinear(torch.autograd.Function):
    """``y = x W_outᵀ``; backward to ``x`` uses ``B`` (N, K) instead of ``W_outᵀ``; ``W_out`` gets its true gradient."""

    @staticmethod
    def forward(ctx, x: Tensor, W_out: Tensor, B: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, B)
        return x @ W_out.T

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        x, B = ctx.saved_tensors
        return g @ B.T, g.reshape(-1, g.shape[-1]).T @ x.reshape(-1, x.shape[-1]), None


def _linear(x: Tensor, W_out: Tensor, B: Tensor | None) -> Tensor:
    return x @ W_out.T if B is None else _FeedbackLinear.apply(x, W_out, B)


def named_grads(model: torch.nn.Module, loss: Tensor) -> dict[str, Tensor]:
    """Autograd of ``loss`` w.r.t. every trainable parameter (zeros where unused)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    g = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    return {n: torch.zeros_like(p) if gi is None else gi for (n, p), gi in zip(named, g)}


def spiking_forward(model: Any, x: Tensor, *, detach_rec: bool, detach_reset: bool, B: Tensor | None = None,
                    weights: EffectiveWeights | None = None, zeta: list[Tensor] | None = None
                    ) -> tuple[Tensor, Tensor]:
    """Re-implementation of ``SpikingRNN.forward`` (from ``model.init_state``) with e-prop's detaches as options.

    Args:
        detach_rec: recurrent input ``W_rec sg(z^{t-1})`` (and gap current from other neurons' ``sg(v)``).
        detach_reset: reset ``−v_th sg(z^{t-1})``. The adaptation always uses the non-detached local copy.
        B: feedback matrix ``(N, K)`` used by the readout's backward (``None`` = ``W_outᵀ``).
        weights: effective weights to use (default ``model.effective_weights()``).
        zeta: if given, a list that receives one zero-valued leaf per step added to the *outgoing* spike copy
            (readout, recurrence, reset): ``dE/dζ^t`` is the total derivative ``dE/dz^t`` of eq. F.

    Returns:
        ``(y (T, B, K), z (T, B, N))``.
    """
    W = model.effective_weights() if weights is None else weights
    c = model.constants()
    T, Bn, _ = x.shape
    x = x.to(dtype=model.dtype)
    c_in = c.c_in
    ff = (x @ W.W_in.T) * c_in
    gap = model.gap
    if gap is not None:
        G_off = gap - torch.diag(torch.diagonal(gap))
        g_self = torch.diagonal(gap) - gap.sum(1)
    kappa = model.kappa
    c_kappa = model.c_kappa
    surr = model.surrogate
    s0 = model.init_state(Bn)  # at rest, or the model's relaxed initial state (a constant)
    v, a, ref, zf, yc = s0.v, s0.a, s0.ref, s0.z_filt, s0.y_filt
    i_syn = s0.i_syn if s0.i_syn is not None else torch.zeros_like(v)
    z_loc = z_out = s0.z
    ys, zs = [], []
    for t in range(T):
        zr = z_out.detach() if detach_rec else z_out
        drive = ff[t] + c_in * (zr @ W.W_rec.T)
        if c.synaptic:  # current-based synapses: the current is neuron j's own (local) state
            i_syn = c.alpha_syn * i_syn + drive
            drive = i_syn
        if gap is not None:
            vn = v.detach() if detach_rec else v
            drive = drive + c_in * (vn @ G_off.T + v * g_self)
        z_reset = z_out.detach() if detach_reset else z_out
        if c.reset_zero:  # v^t = α (1 − z^{t-1}) v^{t-1} + drive (the gap current above used v^{t-1})
            v = c.alpha * v * (1.0 - z_reset) + drive
        else:
            v = c.alpha * v + drive - c.v_th * z_reset
        a = c.rho * a + c.c_a * z_loc if c.adaptive else a
        thr = c.v_th + c.beta * a
        u = (v - thr) / c.v_th
        d = surr.derivative(u)
        free = (1.0 - ref).relu()
        z = surr.spike(u, d) * free
        ref = (ref - 1.0).relu() + c.n_block * z.detach()
        z_loc = z
        z_out = z
        if zeta is not None:
            leaf = torch.zeros_like(z, requires_grad=True)
            zeta.append(leaf)
            z_out = z + leaf
        zs.append(z)
        if model.readout == "filtered_spikes":
            zf = kappa * zf + c_kappa * z_out
            ys.append(_linear(zf, W.W_out, B))
        else:
            yc = kappa * yc + c_kappa * _linear(z_out, W.W_out, B)
            ys.append(yc)
    y = torch.stack(ys)
    if W.b_out is not None:
        y = y + W.b_out
    return y, torch.stack(zs)


def eprop_autograd(model: Any, x: Tensor, y: Tensor, mask: Tensor, loss_fn: Any, *, B: Tensor | None = None,
                   reset_in_trace: bool = False, reg: dict | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """e-prop by autograd on the graph of §2.7 (recurrent spikes detached; reset detached unless
    ``reset_in_trace``); ``reg``: keyword arguments of :func:`rate_regularizer` (without ``z``, ``dt_ms``)."""
    y_hat, z = spiking_forward(model, x, detach_rec=True, detach_reset=not reset_in_trace, B=B)
    loss = loss_fn(y_hat, y, mask)
    total = loss
    if reg is not None:
        total = total + rate_regularizer(z, model.dt_ms, **reg)
    return loss.detach(), named_grads(model, total)


def eprop_traces(model: Any, rec: Any, *, reset_in_trace: bool = False) -> Tensor:
    """Eligibility traces ``e^t`` of §2.2, dense ``(T, B, N, N + n_in)`` (post ``j``, pre ``i``: ``[z^{t-1}, x^t]``).

    Gap junctions, current-based synapses and the reset to zero are not supported here.
    """
    if getattr(model, "synaptic", False) or getattr(model, "reset", "subtract") != "subtract":
        raise ValueError("eprop_traces: current-based synapses (tau_syn_ms > 0) and reset='zero' are not supported "
                         "by this reference")
    c = model.constants()
    T, Bn, N = rec.z.shape
    Np = N + rec.x.shape[-1]
    col = lambda v: torch.as_tensor(v, dtype=model.dtype).expand(N)[None, :, None]  # noqa: E731
    alpha, rho, c_in, c_a, v_th, beta = (col(v) for v in (c.alpha, c.rho, c.c_in, c.c_a, c.v_th, c.beta))
    ev = torch.zeros(Bn, N, Np, dtype=model.dtype)
    ea = torch.zeros_like(ev)
    e_prev = torch.zeros_like(ev)
    z_prev = model.init_state(Bn).z  # spikes of the initial state (0 at rest)
    out = []
    for t in range(T):
        pre = torch.cat([z_prev, rec.x[t]], dim=1)[:, None, :]
        ev = alpha * ev + c_in * pre - (v_th * e_prev if reset_in_trace else 0.0)
        ea = rho * ea + c_a * e_prev
        e = rec.psi[t][:, :, None] * (ev - beta * ea)
        out.append(e)
        e_prev = e
        z_prev = rec.z[t]
    return torch.stack(out)


def rate_forward(model: Any, x: Tensor, *, detach_rec: bool, B: Tensor | None = None,
                 rates: list | None = None) -> tuple[Tensor, Any]:
    """``RateRNN.forward`` re-written with the recurrent drive ``W_rec sg(r^{t-1})`` (and the gap current of other
    neurons) optionally detached; the local leak paths are kept. Returns ``(y, final_state)``; ``rates``, if given,
    receives ``r^t`` of every step (on this graph)."""

    W = model.effective_weights()
    c = model.constants()
    x = x.to(dtype=model.dtype)
    T, Bn, _ = x.shape
    ff = x @ W.W_in.T
    if W.b_rec is not None:
        ff = ff + W.b_rec
    gap = model.gap
    if gap is not None:
        G_off = gap - torch.diag(torch.diagonal(gap))
        g_self = torch.diagonal(gap) - gap.sum(1)
    s = model.init_state(Bn)
    s = RateState(s.h, s.r)
    ys = []
    for t in range(T):
        rr = s.r.detach() if detach_rec else s.r
        D = ff[t] + rr @ W.W_rec.T
        if gap is not None:
            hn = s.h.detach() if detach_rec else s.h
            D = D + hn @ G_off.T + s.h * g_self
        s, _ = rate_update(c, s, c.c_in * D)
        if rates is not None:
            rates.append(s.r)
        ys.append(_linear(s.h if model.readout_from == "h" else s.r, W.W_out, B))
    y = torch.stack(ys)
    if W.b_out is not None:
        y = y + W.b_out
    return y, s


def rflo_autograd(model: Any, x: Tensor, y: Tensor, mask: Tensor, loss_fn: Any, *,
                  B: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """RFLO by autograd with the recurrent drive detached (T5.1)."""
    y_hat, _ = rate_forward(model, x, detach_rec=True, B=B)
    loss = loss_fn(y_hat, y, mask)
    return loss.detach(), named_grads(model, loss)


def rtrl_murray(model: Any, x: Tensor, y: Tensor, mask: Tensor, loss_fn: Any, *,
                local_only: bool = False) -> dict[str, Tensor]:
    """RTRL for the Murray form (ALGORITHMS.md §5.1): gradients w.r.t. the *effective* ``W_rec`` and ``W_in``.

    ``P_{j,ab}^t = (1−γ) P_{j,ab}^{t-1} + γ φ'(u_j^t) [Σ_l W_rec[j,l] P_{l,ab}^{t-1} + δ_ja r_b^{t-1}]`` (and the
    same with ``x^t`` for ``W_in``); ``dE/dW = Σ_t (W_outᵀ ∂E/∂y^t) · P^t``. ``local_only`` drops the non-local sum.
    """

    assert model.form == "murray" and model.gap is None and model.readout_from == "r"
    W = model.effective_weights()
    c = model.constants()
    with torch.no_grad():
        out = model(x, record=True)
    _, dE_dy = output_error(out.y, y, mask, loss_fn)
    rec = out.record
    T, Bn, N = rec.r.shape
    n_in = rec.x.shape[-1]
    gam = torch.as_tensor(c.c_f, dtype=model.dtype).expand(N)
    leak = torch.as_tensor(c.leak, dtype=model.dtype).expand(N)
    Wr = W.W_rec.detach()
    P = torch.zeros(Bn, N, N, N, dtype=model.dtype)      # (b, j, a, b')
    Q = torch.zeros(Bn, N, N, n_in, dtype=model.dtype)
    eye = torch.eye(N, dtype=model.dtype)
    gW_rec = torch.zeros(N, N, dtype=model.dtype)
    gW_in = torch.zeros(N, n_in, dtype=model.dtype)
    r_prev = torch.zeros(Bn, N, dtype=model.dtype)
    with torch.no_grad():
        for t in range(T):
            gphi = (gam * rec.fprime[t])[:, :, None, None]  # (B, N, 1, 1)
            nl_P = 0.0 if local_only else torch.einsum("jl,blac->bjac", Wr, P)
            nl_Q = 0.0 if local_only else torch.einsum("jl,blac->bjac", Wr, Q)
            P = leak[None, :, None, None] * P + gphi * (nl_P + eye[None, :, :, None] * r_prev[:, None, None, :])
            Q = leak[None, :, None, None] * Q + gphi * (nl_Q + eye[None, :, :, None] * rec.x[t][:, None, None, :])
            dE_dr = dE_dy[t] @ W.W_out.detach()  # (B, N)
            gW_rec += torch.einsum("bj,bjac->ac", dE_dr, P)
            gW_in += torch.einsum("bj,bjac->ac", dE_dr, Q)
            r_prev = rec.r[t]
    return {"W_rec": gW_rec, "W_in": gW_in}
