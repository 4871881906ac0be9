r"""e-prop for LIF/ALIF networks (Bellec et al. 2020, Nat. Commun. 11:3625, doi:10.1038/s41467-020-17236-y).

ALGORITHMS.md §2. For every synapse ``j ← i`` the rule combines an eligibility trace, computed forward in time from
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

import inspect
import math
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Literal, NamedTuple

import torch
from torch import Tensor, nn

from spikelearn.rules.base import Grads, LossFn, output_error

__all__ = ["EProp", "EPropState", "rate_regularizer", "run_online"]


# ----------------------------------------------------------------------------------------------- shared helpers
def _check_common(rule: Any) -> None:
    name = type(rule).__name__
    if rule.feedback not in ("symmetric", "random", "adaptive"):
        raise ValueError(f"{name}: feedback must be 'symmetric', 'random' or 'adaptive', got {rule.feedback!r}")
    if rule.mode not in ("batched", "online"):
        raise ValueError(f"{name}: mode must be 'batched' or 'online', got {rule.mode!r}")
    if not isinstance(rule.chunk_steps, int) or rule.chunk_steps < 1:
        raise ValueError(f"{name}: chunk_steps must be a positive integer, got {rule.chunk_steps!r}")
    if rule.feedback_std is not None and not rule.feedback_std > 0:
        raise ValueError(f"{name}: feedback_std must be positive or None, got {rule.feedback_std!r}")
    if not 0.0 <= rule.feedback_decay < 1.0:
        raise ValueError(f"{name}: feedback_decay must lie in [0, 1), got {rule.feedback_decay!r}")


def feedback_matrix(rule: Any, model: nn.Module, W_out: Tensor, default_std: float) -> Tensor:
    """The ``(N, K)`` feedback matrix ``B`` of ``rule`` for ``model`` (``W_out`` is the current effective readout).

    ``"symmetric"``: ``W_outᵀ``. ``"random"``: ``N(0, std²)`` drawn from ``torch.Generator().manual_seed(
    rule.feedback_seed)`` in float64 (the same ``B`` for every dtype and call). ``"adaptive"``: starts as the random
    ``B``; whenever ``W_out`` has changed since the previous call, ``B ← (1 − feedback_decay) B + ΔW_outᵀ`` (the
    same updates as ``W_outᵀ``, whatever the optimizer, plus weight decay). The adaptive ``B`` lives in the rule
    object (per model); it is not part of checkpoints.
    """
    W_out = W_out.detach()
    if rule.feedback == "symmetric":
        return W_out.T
    K, N = W_out.shape
    std = default_std if rule.feedback_std is None else float(rule.feedback_std)

    def draw() -> Tensor:
        g = torch.Generator().manual_seed(int(rule.feedback_seed))
        return (torch.randn(N, K, generator=g, dtype=torch.float64) * std).to(W_out.dtype).to(W_out.device)

    if rule.feedback == "random":
        return draw()
    mem = rule._memory.get(model)
    if mem is None or mem["B"].shape != (N, K) or mem["B"].dtype != W_out.dtype:
        mem = {"B": draw(), "W_last": W_out.clone()}
        rule._memory[model] = mem
    dW = W_out - mem["W_last"]
    if bool(dW.any()):
        mem["B"] = (1.0 - rule.feedback_decay) * mem["B"] + dW.T
        mem["W_last"] = W_out.clone()
    return mem["B"]


def _detached(W: Any) -> Any:
    return type(W)(*(None if w is None else w.detach() for w in W))


def run_online(rule: Any, model: nn.Module, x: Tensor, y: Tensor, mask: Tensor, loss_fn: LossFn, *,
               chunk_steps: int, on_update: Callable[[Grads], None] | None = None) -> tuple[Tensor, Grads | None]:
    """Run one trial through an online rule (``init``/``advance``/``read``), ``chunk_steps`` steps at a time.

    Each chunk is simulated from the carried model state (no graph), ``∂E/∂ŷ`` of its steps is taken by autograd
    on the output alone — ``loss_fn`` is evaluated on the full-length output whose not-yet-simulated steps are 0,
    which is exact for losses that are sums over time steps (every task loss is) — and the rule's traces advance
    through the chunk. With ``on_update``, the accumulated gradient is read after every chunk and passed to
    ``on_update`` (which may change the weights: the rest of the trial then runs with the new weights); otherwise it
    is read once at the end.

    Returns:
        ``(loss, grads)``: the loss of the simulated trial and the trial's gradient (``None`` with ``on_update``).
    """
    T, B = x.shape[0], x.shape[1]
    with torch.no_grad():
        mstate = model.init_state(B)  # once: the rule's traces and the simulation start from it
    takes_state = "initial_state" in inspect.signature(rule.init).parameters  # optional in a user's online rule
    st = rule.init(model, B, n_steps=T, **({"initial_state": mstate} if takes_state else {}))
    y_hat: Tensor | None = None
    for a in range(0, T, chunk_steps):
        b = min(T, a + chunk_steps)
        with torch.no_grad():
            out = model(x[a:b], state=mstate, record=True)
        if y_hat is None:
            y_hat = out.y.new_zeros((T,) + tuple(out.y.shape[1:]))
        y_hat[a:b] = out.y
        _, dE_dy = output_error(y_hat, y, mask, loss_fn)
        st = rule.advance(model, out.record, dE_dy[a:b], st)
        mstate = out.state
        if on_update is not None:
            grads, st = rule.read(model, st)
            on_update(grads)
    assert y_hat is not None
    with torch.no_grad():
        loss = loss_fn(y_hat, y, mask).detach()
    if on_update is not None:
        return loss, None
    grads, _ = rule.read(model, st)
    return loss, grads


class Chunks(list):
    """Per-chunk record fields of one batch of trials (a list), with ``state0``: the state the trials started from
    (:meth:`init_state`, computed once: a relaxed initial state runs the network to get it)."""

    def __init__(self, items: Iterable = (), state0: Any = None):
        super().__init__(items)
        self.state0 = state0


def _record_chunks(model: nn.Module, x: Tensor, chunk_steps: int, fields: tuple[str, ...]) -> Chunks:
    """Simulate ``x`` chunk by chunk (state carried, no graph); per chunk ``(y, (record fields...))``.

    Only the named record fields are kept, so the memory is that of those fields, not of the whole record.
    """
    state = model.init_state(x.shape[1])
    out_chunks = Chunks(state0=state)
    for a in range(0, x.shape[0], chunk_steps):
        out = model(x[a:a + chunk_steps], state=state, record=True)
        state = out.state
        out_chunks.append((out.y, tuple(getattr(out.record, f) for f in fields)))
    return out_chunks


def rate_regularizer(z: Tensor, dt_ms: float, coeff: float, target_hz: float,
                     form: Literal["batch", "running", "concatenated"] = "batch") -> Tensor:
    r"""Firing-rate regulariser ``E_reg`` (ALGORITHMS.md §2.5) of spikes ``z`` ``(T, B, N)``; differentiable in ``z``.

    * ``"batch"`` (the sources' "simple" form): ``c Σ_j (f̄_j − f_0)²`` with ``f̄_j = Σ_{b,t} z_j/(B T dt)`` (per ms)
      and ``f_0 = target_hz/1000``. (The pattern-generation tutorial's ``½·300`` is ``coeff = 150``.)
    * ``"running"`` (the sources' "online" form, per trial): ``(c/(B T)) Σ_{b,t,j} (R_bj^t − f_0)²`` with the
      running average ``R_bj^t = Σ_{s≤t} z_bj^s / ((t+1) dt)`` of each trial's own history.
    * ``"concatenated"`` (the official code's "online" form): the same with the batch's trials concatenated into
      one history of ``B T`` steps (trial 0 first), ``R_j^s = Σ_{s'≤s} z_j^{s'} / ((s+1) dt)``. It coincides with
      ``"running"`` for ``B = 1``; with ``B > 1`` a trial's average includes the trials before it.
    """
    T, B = z.shape[0], z.shape[1]
    f0 = target_hz / 1000.0
    if form == "batch":
        f = z.sum((0, 1)) / (B * T * dt_ms)
        return coeff * ((f - f0) ** 2).sum()
    if form == "concatenated":
        zc = z.transpose(0, 1).reshape(B * T, 1, z.shape[2])
        return rate_regularizer(zc, dt_ms, coeff, target_hz, "running")
    steps = torch.arange(1, T + 1, dtype=z.dtype, device=z.device)[:, None, None]
    R = z.cumsum(0) / (steps * dt_ms)
    return coeff / (B * T) * ((R - f0) ** 2).sum()


# ----------------------------------------------------------------------------------------------- state
def start_state(model: nn.Module, batch_size: int, given: Any = None) -> Any:
    """The state an online rule's trials start from: ``given`` (the caller's, already computed), else
    ``model.init_state(batch_size)``."""
    return model.init_state(batch_size) if given is None else given


def _initial_spikes(recs: Chunks) -> Tensor | None:
    """Spikes of the initial state of the trials of ``recs`` (``None`` when it starts at rest)."""
    z0 = recs.state0.z
    return z0 if bool(z0.any()) else None


def spiking_scan_fields(model: nn.Module) -> tuple[str, ...]:
    """Record fields :func:`local_adjoint_scan` needs: ``x, z, ψ, z̄``, and ``v`` with ``reset="zero"``."""
    return ("x", "z", "psi", "z_filt") + (("v",) if getattr(model, "reset", "subtract") == "zero" else ())


def record_and_output_error(model: nn.Module, x: Tensor, y: Tensor, mask: Tensor, loss_fn: LossFn,
                            chunk_steps: int, fields: tuple[str, ...]) -> tuple[Tensor, Tensor, list]:
    """The shared first half of every batched local rule: run the trial without a graph, keeping only
    ``fields`` of the record chunk by chunk, then ``(loss, ∂E/∂ŷ)`` by autograd on the output alone.

    Returns ``(loss, dE_dy (T, B, n_out), Chunks[per-chunk tuple of the fields])``; the chunks carry the initial
    state (``state0``) so that the rule need not compute it again.
    """
    with torch.no_grad():
        chunks = _record_chunks(model, x, chunk_steps, fields)
        y_hat = torch.cat([c[0] for c in chunks])
    loss, dE_dy = output_error(y_hat, y, mask, loss_fn)
    return loss, dE_dy, Chunks((c[1] for c in chunks), chunks.state0)


def weight_grads(model: Any, dW_pre: Tensor, dW_out: Tensor, db_out: Tensor) -> Grads:
    """Parameter gradients from gradients on the effective weights: ``dW_pre`` is ``(N, N + n_in [+ 1])``
    (recurrent, input and, for a rate model with ``b_rec``, bias columns); masks and signs via ``param_grads``."""
    N, n_in = model.n, model.n_in
    dW = {"W_rec": dW_pre[:, :N], "W_in": dW_pre[:, N:N + n_in], "W_out": dW_out}
    if model.b_out is not None:
        dW["b_out"] = db_out
    if model.b_rec is not None:
        dW["b_rec"] = dW_pre[:, N + n_in]
    return model.param_grads(dW)


class EPropState(NamedTuple):
    """Online e-prop state for one batch of trials (traces ``(N, B, N_pre)``, ``N_pre = N + n_in``).

    :meth:`EProp.advance` updates the trace and accumulator tensors *in place*: a state passed in is consumed.
    """

    t: int                     # steps advanced in this trial
    n_steps: int | None        # trial length (regulariser normalisation); None = steps seen so far
    z_prev: Tensor             # (B, N) spikes of the previous step (presynaptic for W_rec)
    pre_syn: Tensor | None     # synaptically filtered presynaptic signals P: (B, N_pre) with one τ_s, (N, B, N_pre)
    #                            with per-neuron τ_s (current-based synapses; None without)
    eps_v: Tensor              # (B, N_pre) presynaptic trace ε̂ (ε^v_ji = c_in,j ε̂_i), or (N, B, N_pre): the part
    #                            α ε^v − v_th e of the next step's ε^v that does not depend on the next input
    eps_a: Tensor | None       # (N_a, B, N_pre) ε^a of the adaptive neurons for the next step
    e_bar: Tensor              # (N, B, N_pre) readout-filtered traces ē
    acc: Tensor                # (N, N_pre) accumulated ∂E/∂[W_rec | W_in] (effective weights) since last read
    acc_out: Tensor            # (K, N) accumulated ∂E/∂W_out
    acc_bout: Tensor           # (K,) accumulated ∂E/∂b_out
    spikes: Tensor             # (N,) spikes of this trial so far, summed over the batch
    e_sum: Tensor | None       # (N, N_pre) Σ_{b,t} e since last read ("batch" regulariser)
    run_count: Tensor | None   # (B, N) spike count per trial ("running" regulariser)
    run_S: Tensor | None       # (N, B, N_pre) Σ_{s≤t} e_b^s ("running" regulariser)
    acc_reg: Tensor | None     # (N, N_pre) Σ_t Σ_b a_bj^t S_bji^t since last read ("running" regulariser)


class _Consts(NamedTuple):
    N: int
    alpha: Tensor      # (N,) membrane decay
    leak: Tensor       # (N,) local ∂v^{t+1}/∂v^t (α + c_in (G_jj − Σ_i G_ji))
    rho: Tensor        # (N,)
    c_in: Tensor       # (N,)
    c_a: Tensor        # (N,)
    v_th: Tensor       # (N,)
    beta: Tensor       # (N,)
    adaptive: bool
    sl_a: slice        # rows of ε^a: the adaptive neurons if they form a block, else all neurons
    presyn: bool       # ε^v depends on the presynaptic neuron only (uniform leak, reset not in trace)
    kappa: float
    c_kappa: float     # readout filter input factor (1 − κ, or 1 without readout normalisation)
    dt_ms: float
    alpha_syn: Tensor | None = None  # (N,) synaptic-current decay α_s (current-based synapses), else None
    reset_zero: bool = False         # reset="zero": local leak α (1 − z^t) + gap term, reset path −α v^t
    syn_shared: bool = True          # one synaptic decay for all neurons (P is then a presynaptic trace)


# ----------------------------------------------------------------------------------------------- rule
@dataclass(frozen=True)
class EProp:
    """e-prop (ALGORITHMS.md §2) for :class:`~spikelearn.models.SpikingRNN` (LIF and ALIF neurons).

    Reads (trajectory record): ``x``, ``z`` (presynaptic activity), ``psi`` (pseudo-derivative ψ, 0 while
    refractory), ``z_filt`` (readout input z̄); from the model: the constants α, ρ, c_in, c_a, v_th, β, κ and the
    effective weights (``W_out`` for symmetric feedback). Updates: ``theta_rec``, ``theta_in`` (e-prop, eqs. E and
    §2.2–2.5), ``theta_out``, ``b_out`` (exact), all through ``model.param_grads`` (absent edges get 0; signs kept).

    Attributes:
        feedback: ``"symmetric"`` (``B = W_outᵀ``), ``"random"`` (fixed ``B ~ N(0, feedback_std²)``) or
            ``"adaptive"`` (``B`` receives the updates of ``W_outᵀ`` plus decay, see :func:`feedback_matrix`).
        reset_in_trace: include the reset path in the traces (MDGL variant); default ``False`` (e-prop). The
            model's ``detach_reset`` (a BPTT option) is not used by e-prop.
        mode: ``"batched"`` (whole trials, adjoint scan + GEMMs) or ``"online"`` (forward traces, memory independent
            of ``T``); both give the same numbers.
        feedback_seed: seed of the random ``B``. feedback_std: its std; ``None`` = ``1/√N`` (pattern generation;
            the evidence-accumulation tutorial uses 1). feedback_decay: adaptive ``B``'s decay per update.
        reg_coeff: firing-rate regulariser strength ``c_reg`` (0 = off). reg_target_hz: ``f_0``.
        reg_form: ``"batch"``, ``"running"`` or ``"concatenated"`` (batched mode only: its trials depend on each
            other's complete histories); see :func:`rate_regularizer`. The returned loss excludes ``E_reg``.
        chunk_steps: steps simulated per forward chunk in :meth:`gradients` (both modes). Online: the memory is
            ``O(chunk_steps·B·N)`` besides the traces; batched: only ``x, z, ψ, z̄`` of every chunk are kept.
    """

    feedback: Literal["symmetric", "random", "adaptive"] = "symmetric"
    reset_in_trace: bool = False
    mode: Literal["batched", "online"] = "batched"
    feedback_seed: int = 0
    feedback_std: float | None = None
    feedback_decay: float = 0.0
    reg_coeff: float = 0.0
    reg_target_hz: float = 10.0
    reg_form: Literal["batch", "running", "concatenated"] = "batch"
    chunk_steps: int = 100
    _memory: Any = field(default_factory=weakref.WeakKeyDictionary, init=False, repr=False, compare=False)

    online = True                 # offers init / step / advance / read
    model_types = ("spiking",)    # SpikingRNN only

    def __post_init__(self) -> None:
        _check_common(self)
        if self.reg_form not in ("batch", "running", "concatenated"):
            raise ValueError(f"EProp: reg_form must be 'batch', 'running' or 'concatenated', got {self.reg_form!r}")
        if self.reg_form == "concatenated" and self.mode == "online":
            raise ValueError("EProp: reg_form='concatenated' needs mode='batched' (a trial's running average "
                             "includes the complete earlier trials of the batch, unknown while they run in parallel)")
        if not self.reg_coeff >= 0:  # also NaN
            raise ValueError(f"EProp: reg_coeff must be >= 0, got {self.reg_coeff!r}")

    # ------------------------------------------------------------------ helpers
    def _check_model(self, model: nn.Module) -> None:
        from spikelearn.models import SpikingRNN

        if not isinstance(model, SpikingRNN):
            raise TypeError(f"EProp applies to SpikingRNN models, got {type(model).__name__} (use RFLO for RateRNN)")

    def _consts(self, model: Any) -> _Consts:
        c = model.constants()
        N = model.n
        kw = dict(dtype=model.dtype, device=model.device)

        def vec(v: Tensor) -> Tensor:
            return torch.as_tensor(v, **kw).expand(N).clone()

        alpha, c_in = vec(c.alpha), vec(c.c_in)
        leak = alpha
        if model.gap is not None:
            G = model.gap
            leak = alpha + c_in * (torch.diagonal(G) - G.sum(1))
        beta = vec(c.beta)
        adaptive = bool((beta != 0).any())
        sl_a = slice(0, N)
        if adaptive:
            idx = torch.nonzero(beta).flatten().tolist()
            if idx == list(range(idx[0], idx[-1] + 1)):
                sl_a = slice(idx[0], idx[-1] + 1)
        reset_zero = bool(c.reset_zero)
        alpha_syn = vec(c.alpha_syn) if c.synaptic else None
        syn_shared = alpha_syn is None or bool((alpha_syn == alpha_syn[0]).all())
        presyn = (not self.reset_in_trace) and (not reset_zero) and syn_shared and bool((leak == leak[0]).all())
        return _Consts(N=N, alpha=alpha, leak=leak, rho=vec(c.rho), c_in=c_in, c_a=vec(c.c_a), v_th=vec(c.v_th),
                       beta=beta, adaptive=adaptive, sl_a=sl_a, presyn=presyn, kappa=float(model.kappa),
                       c_kappa=float(model.c_kappa), dt_ms=float(model.dt_ms), alpha_syn=alpha_syn,
                       reset_zero=reset_zero, syn_shared=syn_shared)

    def feedback_matrix(self, model: nn.Module) -> Tensor:
        """The feedback matrix ``B`` ``(N, K)`` used for ``model`` now."""
        return feedback_matrix(self, model, model.effective_weights().W_out, 1.0 / math.sqrt(model.n))

    _grads = staticmethod(weight_grads)

    # ------------------------------------------------------------------ whole trials
    def gradients(self, model: nn.Module, x: Tensor, y: Tensor, mask: Tensor,
                  loss_fn: LossFn) -> tuple[Tensor, Grads]:
        """``(loss, grads)`` for whole trials (module docstring); ``loss`` is the task loss (without ``E_reg``)."""
        self._check_model(model)
        if self.mode == "online":
            loss, grads = run_online(self, model, x, y, mask, loss_fn, chunk_steps=self.chunk_steps)
            assert grads is not None
            return loss, grads
        loss, dE_dy, recs = record_and_output_error(model, x, y, mask, loss_fn, self.chunk_steps,
                                                    spiking_scan_fields(model))
        with torch.no_grad():
            dW_pre, dW_out, db_out = self._batched(model, recs, dE_dy)
        return loss, self._grads(model, dW_pre, dW_out, db_out)

    def _batched(self, model: Any, recs: list, dE_dy: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Adjoint scan over the trial, chunk by chunk backwards; ``recs``: per chunk ``(x, z, psi, z_filt)``."""
        k = self._consts(model)
        W = _detached(model.effective_weights())
        Bfb = feedback_matrix(self, model, W.W_out, 1.0 / math.sqrt(k.N))
        dW_pre, dW_out = local_adjoint_scan(k, recs, dE_dy, self._credits(k, recs, dE_dy, Bfb), self.reset_in_trace,
                                            z0=_initial_spikes(recs))
        return dW_pre, dW_out, dE_dy.sum((0, 1))

    def _credits(self, k: Any, recs: list, dE_dy: Tensor, Bfb: Tensor) -> Iterator[Tensor]:
        """Per chunk, last to first: the learning signal on the outgoing spikes ``(T_c, B, N)``:
        ``(1−κ) Σ_{t'≥t} κ^{t'−t} L^{t'}`` (filtered in output space, then one GEMM with ``B``) plus the regulariser."""
        T = dE_dy.shape[0]
        B = recs[0][1].shape[1]
        kap, omk = k.kappa, k.c_kappa
        f0 = self.reg_target_hz / 1000.0
        reg_scale = 2.0 * self.reg_coeff / (B * T * k.dt_ms)
        reg = self.reg_coeff > 0
        concat = self.reg_form == "concatenated"
        if reg:
            count = sum(r[1].sum(0) for r in recs)  # (B, N) spikes per trial
            if self.reg_form == "batch":
                greg = reg_scale * (count.sum(0) / (B * T * k.dt_ms) - f0)  # (N,) constant signal
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
                if self.reg_form == "batch":
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
    def init(self, model: nn.Module, batch_size: int, n_steps: int | None = None, *,
             initial_state: Any = None) -> EPropState:
        """Zero traces and accumulators for ``batch_size`` trials starting from ``model.init_state``.

        ``n_steps`` (trial length) normalises the regulariser when gradients are read before the trial ends.
        """
        self._check_model(model)
        k = self._consts(model)
        N, B = k.N, int(batch_size)
        Np = N + model.n_in
        kw = dict(dtype=model.dtype, device=model.device)
        big = (N, B, Np)
        n_a = len(range(N)[k.sl_a])
        reg_batch = self.reg_coeff > 0 and self.reg_form == "batch"
        reg_run = self.reg_coeff > 0 and self.reg_form == "running"
        return EPropState(
            t=0, n_steps=n_steps, z_prev=start_state(model, B, initial_state).z.detach().clone(),
            pre_syn=(None if k.alpha_syn is None else
                     torch.zeros((B, Np) if k.syn_shared else (N, B, Np), **kw)),
            eps_v=torch.zeros((B, Np) if k.presyn else big, **kw),
            eps_a=torch.zeros(n_a, B, Np, **kw) if k.adaptive else None,
            e_bar=torch.zeros(big, **kw), acc=torch.zeros(N, Np, **kw),
            acc_out=torch.zeros(model.n_out, N, **kw), acc_bout=torch.zeros(model.n_out, **kw),
            spikes=torch.zeros(N, **kw), e_sum=torch.zeros(N, Np, **kw) if reg_batch else None,
            run_count=torch.zeros(B, N, **kw) if reg_run else None,
            run_S=torch.zeros(big, **kw) if reg_run else None,
            acc_reg=torch.zeros(N, Np, **kw) if reg_run else None)

    def advance(self, model: nn.Module, rec: Any, dE_dy: Tensor, state: EPropState) -> EPropState:
        """Advance the traces through a chunk of ``T_c`` steps and accumulate (no conversion to parameters).

        Args:
            rec: :class:`~spikelearn.models.SpikingRecord` of the chunk, fields ``(T_c, B, ·)``.
            dE_dy: ``(T_c, B, K)`` ``∂E/∂ŷ`` of the chunk's steps.
        """
        k = self._consts(model)
        Bfb = feedback_matrix(self, model, model.effective_weights().W_out, 1.0 / math.sqrt(k.N))
        with torch.no_grad():
            L = torch.matmul(dE_dy, Bfb.T)  # (T_c, B, N)
            s = state
            for t in range(rec.z.shape[0]):
                s = self._step(k, s, rec.x[t], rec.z[t], rec.psi[t], rec.z_filt[t], L[t], dE_dy[t],
                               rec.v[t] if k.reset_zero else None)
        return s

    def _step(self, k: _Consts, s: EPropState, x: Tensor, z: Tensor, psi: Tensor, zf: Tensor, L: Tensor,
              dE_dy: Tensor, v: Tensor | None = None) -> EPropState:
        col = lambda v: v[:, None, None]  # noqa: E731  (N,) -> (N, 1, 1)
        A = k.sl_a
        kap, omk = k.kappa, k.c_kappa
        pre = torch.cat([s.z_prev, x], dim=1)  # (B, N_pre)
        if s.pre_syn is not None:  # current-based synapses: P^t = α_s P^{t-1} + pre^t
            assert k.alpha_syn is not None
            if k.syn_shared:  # one τ_s: one presynaptic trace (B, N_pre)
                pre = s.pre_syn.mul_(float(k.alpha_syn[0])).add_(pre)
            else:  # per-neuron τ_s: P_ji depends on the postsynaptic j, (N, B, N_pre) (presyn is off then)
                pre = s.pre_syn.mul_(k.alpha_syn[:, None, None]).add_(pre[None])
        psiT = psi.T[:, :, None]  # (N, B, 1)
        if k.presyn:
            eps_v = s.eps_v.mul_(float(k.leak[0])).add_(pre)  # ε̂^t
            ev = eps_v[None]  # ε^v_ji = c_in,j ε̂_i (the c_in factor is applied below)
            cpsi = psiT * col(k.c_in)
        else:
            eps_v = s.eps_v.addcmul_(col(k.c_in), pre if pre.dim() == 3 else pre[None])  # ε^v^t
            ev = eps_v
            cpsi = psiT
        eps_a = s.eps_a
        e: Tensor | None = None
        if not k.presyn or s.run_S is not None:  # materialise e^t = ψ (ε^v − β ε^a)
            e = cpsi * ev
            if eps_a is not None:
                e[A].addcmul_(psiT[A] * col(k.beta[A]), eps_a, value=-1.0)
            e_bar = s.e_bar.mul_(kap).add_(e, alpha=omk)
        else:  # presynaptic fast path: ē ← κ ē + (1−κ) ψ (c_in ε̂ − β ε^a) without materialising e
            e_bar = s.e_bar.mul_(kap).addcmul_(cpsi * omk, ev)
            if eps_a is not None:
                e_bar[A].addcmul_(psiT[A] * col(omk * k.beta[A]), eps_a, value=-1.0)
        acc = s.acc.add_(torch.bmm(L.T[:, None, :], e_bar).squeeze(1))  # Σ_b L_bj ē_bji
        acc_out = s.acc_out.addmm_(dE_dy.T, zf)
        acc_bout = s.acc_bout.add_(dE_dy.sum(0))
        spikes = s.spikes.add_(z.sum(0))
        t = s.t + 1
        if s.e_sum is not None:  # Σ_b e^t
            if e is not None:
                s.e_sum.add_(e.sum(1))
            else:
                s.e_sum.add_(k.c_in[:, None] * (psi.T @ eps_v))
                if eps_a is not None:
                    s.e_sum[A].sub_(k.beta[A, None] * torch.bmm(psi.T[A, None, :], eps_a).squeeze(1))
        if s.run_S is not None:
            assert e is not None and s.run_count is not None and s.acc_reg is not None
            s.run_count.add_(z)
            s.run_S.add_(e)
            a = (s.run_count / (t * k.dt_ms) - self.reg_target_hz / 1000.0) / t  # (B, N)
            s.acc_reg.add_(torch.bmm(a.T[:, None, :], s.run_S).squeeze(1))
        # prepare the next step: ε^a ← ρ ε^a + c_a e^t ; ε^v ← α ε^v − v_th e^t (the input is added next step)
        if eps_a is not None:
            if e is not None:
                eps_a.mul_(col(k.rho[A])).addcmul_(col(k.c_a[A]), e[A])
            else:
                eps_a.mul_(col(k.rho[A]) - psiT[A] * col(k.c_a[A] * k.beta[A]))
                eps_a.addcmul_(psiT[A] * col(k.c_a[A] * k.c_in[A]), ev)
        if not k.presyn:
            if k.reset_zero:  # ∂v^{t+1}/∂v^t = α (1 − z^t) + gap term; reset path ∂v^{t+1}/∂z^t = −α v^t
                assert v is not None
                eps_v.mul_((k.leak[:, None] - k.alpha[:, None] * z.T)[:, :, None])
                if self.reset_in_trace:
                    assert e is not None
                    eps_v.addcmul_((k.alpha[:, None] * v.T)[:, :, None], e, value=-1.0)
            else:
                eps_v.mul_(col(k.leak))
                if self.reset_in_trace:
                    assert e is not None
                    eps_v.addcmul_(col(k.v_th), e, value=-1.0)
        return s._replace(t=t, z_prev=z, eps_v=eps_v, eps_a=eps_a, e_bar=e_bar, acc=acc, acc_out=acc_out,
                          acc_bout=acc_bout, spikes=spikes)

    def read(self, model: nn.Module, state: EPropState) -> tuple[Grads, EPropState]:
        """Gradients accumulated since the last read (parameter names), and the state with accumulators zeroed.

        The regulariser uses the rate of the trial so far (exact when read once at the end of the trial).
        """
        s = state
        k = self._consts(model)
        acc = s.acc
        B = s.z_prev.shape[0]
        T = s.n_steps if s.n_steps is not None else max(s.t, 1)
        scale = 2.0 * self.reg_coeff / (B * T * k.dt_ms)
        if s.e_sum is not None and s.t > 0:
            f = s.spikes / (B * s.t * k.dt_ms)
            acc = acc + (scale * (f - self.reg_target_hz / 1000.0))[:, None] * s.e_sum
        if s.acc_reg is not None:
            acc = acc + scale * s.acc_reg
        grads = self._grads(model, acc, s.acc_out, s.acc_bout)
        z = torch.zeros_like
        s = s._replace(acc=z(s.acc), acc_out=z(s.acc_out), acc_bout=z(s.acc_bout),
                       e_sum=None if s.e_sum is None else z(s.e_sum),
                       acc_reg=None if s.acc_reg is None else z(s.acc_reg))
        return grads, s

    def step(self, model: nn.Module, rec_t: Any, dE_dy_t: Tensor, state: EPropState) -> tuple[Grads, EPropState]:
        """One time step: ``rec_t`` is one step of the record (fields ``(B, ·)``), ``dE_dy_t`` ``(B, K)``.

        Returns this step's gradient contribution (parameter names) and the new state.
        """
        rec1 = type(rec_t)(*(f[None] for f in rec_t))
        return self.read(model, self.advance(model, rec1, dE_dy_t[None], state))


# ----------------------------------------------------------------------------------------------- shared scans
def recs_chunk(recs: list, t0: int, t1: int) -> tuple:
    """The recorded chunk spanning steps ``[t0, t1)`` (``recs`` as in :func:`local_adjoint_scan`)."""
    start = 0
    for r in recs:
        n = r[1].shape[0]
        if start == t0 and start + n == t1:
            return r
        start += n
    raise ValueError(f"no recorded chunk spans steps [{t0}, {t1})")


def readout_credit_chunks(recs: list, dE_dy: Tensor, Bfb: Tensor, kap: float, omk: float
                          ) -> Iterator[tuple[int, int, Tensor]]:
    """For each chunk, last to first, ``(t0, t1, ∂E/∂z)`` with ``∂E/∂z^t = (1−κ) Σ_{t'≥t} κ^{t'−t} B ∂E/∂y^{t'}``
    ``(T_c, B, N)``: the readout filter's adjoint, run in output space (``K ≪ N``), then one GEMM with ``B``."""
    u = torch.zeros_like(dE_dy[0])
    Bt = Bfb.T * omk
    t1 = dE_dy.shape[0]
    for r in reversed(recs):
        Tc = r[1].shape[0]
        t0 = t1 - Tc
        dE_c = dE_dy[t0:t1]
        fy = torch.empty_like(dE_c)
        for i in range(Tc - 1, -1, -1):
            u = torch.add(dE_c[i], u, alpha=kap)
            fy[i] = u
        yield t0, t1, torch.matmul(fy, Bt)
        t1 = t0


def local_adjoint_scan(k: Any, recs: list, dE_dy: Tensor, credits: Iterable[Tensor], reset_in_trace: bool,
                       nonlocal_credit: Callable[[Tensor, int], Tensor | None] | None = None,
                       z0: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``Σ_{b,t} credit_p^t e_pq^t`` for ``W_rec``/``W_in`` (as ``dW_pre`` ``(N, N + n_in)``) and the readout gradient,
    in the transposed form: the adjoint of each neuron's *local* dynamics (leak, adaptation, and the reset when
    ``reset_in_trace``) scanned backwards over ``(B, N)`` values, closed by one GEMM per chunk and matrix — never a
    ``(B, T, N, N)`` trace. Shared by e-prop and MDGL, which differ only in the credit on the outgoing spikes.

    Args:
        k: the model constants (:meth:`EProp._consts`).
        recs: per forward chunk ``(x, z, psi, z_filt)``, first to last.
        credits: for each chunk, last to first, the credit ``(T_c, B, N)`` on the outgoing spikes (a generator may
            compute it lazily, so only one chunk of it is ever in memory).
        z0: the spikes of the initial state ``(B, N)`` (presynaptic at the first step); ``None`` = none (at rest).
        nonlocal_credit: ``(dE/dv^{t+1}, t) ↦`` an extra credit on ``v^t`` ``(B, N)``, or ``None`` for none at that
            step (ModProp's type-averaged propagation through the network; ``None`` for e-prop and MDGL). With
            current-based synapses it receives ``dE/di^{t+1}`` instead: a recurrent spike enters the current.
    """
    B, N = recs[0][1].shape[1], k.N
    n_in = recs[0][0].shape[-1]
    kw = dict(dtype=dE_dy.dtype, device=dE_dy.device)
    dW_pre = torch.zeros(N, N + n_in, **kw)
    dW_out = torch.zeros(dE_dy.shape[-1], N, **kw)
    dv = torch.zeros(B, N, **kw)  # dE/dv^{t+1} on the local graph
    da = torch.zeros(B, N, **kw)  # dE/da^{t+1}
    syn = k.alpha_syn is not None
    zero = k.reset_zero  # reset="zero": recs carry v as a fifth field
    di = torch.zeros(B, N, **kw)  # dE/di^{t+1} (current-based synapses)
    t1 = dE_dy.shape[0]
    credits = iter(credits)
    for ci in range(len(recs) - 1, -1, -1):
        x_c, z_c, psi_c, zf_c = recs[ci][:4]
        v_c = recs[ci][4] if zero else None
        sig = next(credits)
        Tc = z_c.shape[0]
        if sig.shape[0] != Tc:
            raise ValueError(f"credit chunk has {sig.shape[0]} steps, the recorded chunk {Tc}")
        D = torch.empty(Tc, B, N, **kw)  # c_in dE/dv^t (c_in dE/di^t with current-based synapses)
        for i in range(Tc - 1, -1, -1):
            dz = sig[i]
            if k.adaptive:
                dz = torch.addcmul(dz, k.c_a, da)
            if reset_in_trace:  # dv is dE/dv^{t+1} here
                dz = torch.addcmul(dz, k.alpha * v_c[i] if zero else k.v_th, dv, value=-1.0)
            pdz = psi_c[i] * dz
            if nonlocal_credit is not None:  # given dE/dv^{t+1}, or dE/di^{t+1} with synaptic currents
                nl = nonlocal_credit(di if syn else dv, t1 - Tc + i)
                if nl is not None:
                    pdz = pdz + nl
            dv = torch.addcmul(pdz, k.leak - k.alpha * z_c[i] if zero else k.leak, dv)
            if k.adaptive:
                da = torch.addcmul(k.rho * da, k.beta, pdz, value=-1.0)
            if syn:  # dE/di^t = dE/dv^t + α_s dE/di^{t+1}
                di = torch.addcmul(dv, k.alpha_syn, di)
                torch.mul(di, k.c_in, out=D[i])
            else:
                torch.mul(dv, k.c_in, out=D[i])
        # presynaptic GEMMs of the chunk: pre = z^{t-1} (W_rec), x^t (W_in)
        dW_pre[:, :N].addmm_(D[1:].reshape(-1, N).T, z_c[:-1].reshape(-1, N))
        if ci > 0:
            dW_pre[:, :N].addmm_(D[0].T, recs[ci - 1][1][-1])
        elif z0 is not None:
            dW_pre[:, :N].addmm_(D[0].T, z0)
        dW_pre[:, N:].addmm_(D.reshape(-1, N).T, x_c.reshape(-1, n_in))
        dE_c = dE_dy[t1 - Tc:t1]
        dW_out.addmm_(dE_c.reshape(-1, dE_c.shape[-1]).T, zf_c.reshape(-1, N))
        t1 -= Tc
    return dW_pre, dW_out
