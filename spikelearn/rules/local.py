r"""The local-rule engine: what e-prop, RFLO, MDGL and ModProp share, behind public names.

**The contract.** A local rule supplies only what makes it that rule:

* its *credit*: for each recorded chunk of the trial (last to first), the learning signal on the neurons' outgoing
  activity ``(T_c, B, N)`` — e-prop: the readout credit ``B ∂E/∂y`` through the readout filter plus its firing-rate
  regulariser; MDGL: that plus the type-averaged modulatory term; ModProp: the readout credit plus a non-local credit
  through the cell-type weights at every step;
* for online use, its per-step trace update (``init``/``advance``/``read`` over a trial state).

The engine does the rest, identically for every rule:

* **feedback** (:func:`feedback_matrix`): ``"symmetric"`` (``W_outᵀ``), ``"random"`` (seeded), ``"adaptive"``
  (the random draw receiving the readout's updates; its matrix lives in the *rule state*, not in the rule) or a
  **given matrix** (:class:`FeedbackMatrix`, from an array, a tensor or the path of a ``.npy`` file);
* **the output error** ``∂E/∂ŷ`` by autograd on the output alone (:func:`record_and_output_error`), and the trial
  **recorded in chunks** without a graph, keeping only the record fields the scan needs (:func:`record_chunks`);
* **the chunked scans**: the adjoint of each neuron's *local* dynamics, backwards over ``(B, N)`` quantities
  (:func:`local_adjoint_scan` for LIF/ALIF neurons, :func:`rate_adjoint_scan` for rate units), each chunk closed by
  one edge outer sum per weight matrix; the online spiking eligibility traces (:func:`spiking_traces_init`,
  :func:`spiking_traces_advance`, :func:`spiking_traces_read`); :func:`run_online` drives any online rule over a trial;
* **gradient assembly** (:func:`assemble_grads`): gradients on the effective weights → parameter gradients through
  the model's parametrisation (masks, signs). Every product, edge outer sum, type block and row sum goes through the
  model's weight operations (:mod:`spikelearn.weights`), so a sparse storage plugs in there.

**Rule state.** A rule object holds hyperparameters only and is immutable. What a rule carries from one call to the
next (the adaptive feedback matrix and the readout it last saw) is a plain ``dict`` — the *rule state* — that
``rule.init_state(model)`` creates and ``loss, grads, state = rule.update(model, x, y, mask, loss_fn, state)``
returns; ``rule.gradients(model, x, y, mask, loss_fn)`` starts from ``init_state`` at every call.

**Writing a rule.** Subclass :class:`LocalRule` in a frozen dataclass with the fields ``feedback``,
``feedback_seed``, ``feedback_std``, ``feedback_decay``, ``mode``, ``chunk_steps`` (plus the rule's own), call
:func:`check_local_options` in ``__post_init__``, declare ``model_types``, and implement ``check_model(model)``
(``TypeError`` naming the model), ``default_feedback_std(model)`` and ``batched_update(model, x, y, mask, loss_fn,
state) -> (loss, grads, state)`` — typically :func:`record_and_output_error`, :meth:`LocalRule.feedback_for`, the
rule's credit generator into :func:`local_adjoint_scan` or :func:`rate_adjoint_scan`, then :func:`assemble_grads`.
For ``mode="online"`` also ``init``/``advance``/``read`` (:func:`spiking_traces_init` and friends). Register the class
with :func:`spikelearn.rules.registry.register` so that configuration files find it. The README shows a complete rule.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import pathlib
from typing import Any, Callable, Iterable, Iterator, NamedTuple

import numpy as np
import torch
from torch import Tensor

from spikelearn.models import EffectiveWeights, RateRNN, SpikingRNN
from spikelearn.rules.base import Grads, LossFn, RuleState, output_error
from spikelearn.weights import DENSE, SparseWeights, weight_ops

__all__ = ["FEEDBACK_KINDS", "FeedbackMatrix", "resolve_feedback", "check_local_options", "feedback_matrix",
           "init_feedback_state", "LocalRule", "Chunks", "record_chunks", "record_and_output_error", "start_state",
           "initial_spikes", "spiking_scan_fields", "rate_scan_fields", "detached_weights", "assemble_grads",
           "SplitPre", "SpikingLocalConstants", "spiking_constants", "RateLocalConstants", "rate_constants",
           "readout_credit_chunks", "recs_chunk", "local_adjoint_scan", "rate_adjoint_scan", "RegSpec",
           "SpikingTraceState", "spiking_traces_init", "spiking_traces_advance", "spiking_traces_read", "run_online",
           "rate_regularizer", "cell_type_index", "type_indicator", "type_average", "is_spiking",
           "default_std_hidden", "default_std_out"]

FEEDBACK_KINDS = ("symmetric", "random", "adaptive")


# ----------------------------------------------------------------------------------------------- feedback
class FeedbackMatrix:
    """A given feedback matrix ``B`` ``(N, n_out)``, immutable: equality and hashing by its values (so a rule
    holding one stays a sound frozen dataclass). Built from an array or tensor (copied to float64) or the path of
    a ``.npy`` file (``source`` keeps the path, for the record)."""

    __slots__ = ("_values", "_digest", "source")

    def __init__(self, values: Any, source: str | None = None):
        if isinstance(values, Tensor):
            values = values.detach().cpu().numpy()
        a = np.array(values, dtype=np.float64, copy=True)
        if a.ndim != 2:
            raise ValueError(f"feedback matrix must be 2-D (N, n_out), got shape {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"feedback matrix {source or ''} has non-finite entries".replace("  ", " "))
        a.setflags(write=False)
        self._values = a
        self._digest = hashlib.sha1(a.tobytes() + str(a.shape).encode()).hexdigest()
        self.source = source

    @property
    def values(self) -> np.ndarray:
        """The matrix (read-only float64 array)."""
        return self._values

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._values.shape)

    def tensor(self, dtype: torch.dtype, device: Any) -> Tensor:
        return torch.tensor(self._values.copy(), dtype=dtype, device=device)  # a copy: the matrix stays read-only

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FeedbackMatrix) and self._digest == other._digest

    def __hash__(self) -> int:
        return hash(self._digest)

    def __repr__(self) -> str:
        where = f", source={self.source!r}" if self.source else ""
        return f"FeedbackMatrix(shape={self.shape}{where}, sha1={self._digest[:10]})"


def resolve_feedback(rule_name: str, value: Any) -> str | FeedbackMatrix:
    """A rule's ``feedback`` option: one of :data:`FEEDBACK_KINDS`, a :class:`FeedbackMatrix`, an array/tensor, or
    the path of a ``.npy`` file (TOML). Anything else is an error naming the rule and the allowed forms."""
    if isinstance(value, FeedbackMatrix):
        return value
    if isinstance(value, str):
        if value in FEEDBACK_KINDS:
            return value
        if value.endswith(".npy"):
            path = pathlib.Path(value)
            if not path.is_file():
                raise ValueError(f"{rule_name}: feedback matrix file {value!r} does not exist")
            return FeedbackMatrix(np.load(path, allow_pickle=False), source=str(value))
        raise ValueError(f"{rule_name}: feedback must be 'symmetric', 'random', 'adaptive', an (N, n_out) array or "
                         f"the path of a .npy file, got {value!r}")
    if isinstance(value, (np.ndarray, Tensor, list, tuple)):
        return FeedbackMatrix(value)
    raise ValueError(f"{rule_name}: feedback must be 'symmetric', 'random', 'adaptive', an (N, n_out) array or the "
                     f"path of a .npy file, got {type(value).__name__}")


def check_local_options(rule: Any) -> None:
    """Check (and normalise, for a frozen dataclass) the options every feedback-using local rule has."""
    name = type(rule).__name__
    object.__setattr__(rule, "feedback", resolve_feedback(name, rule.feedback))
    if rule.mode not in ("batched", "online"):
        raise ValueError(f"{name}: mode must be 'batched' or 'online', got {rule.mode!r}")
    if isinstance(rule.chunk_steps, bool) or not isinstance(rule.chunk_steps, int) or rule.chunk_steps < 1:
        raise ValueError(f"{name}: chunk_steps must be a positive integer, got {rule.chunk_steps!r}")
    if rule.feedback_std is not None and not rule.feedback_std > 0:
        raise ValueError(f"{name}: feedback_std must be positive or None, got {rule.feedback_std!r}")
    if not 0.0 <= rule.feedback_decay < 1.0:
        raise ValueError(f"{name}: feedback_decay must lie in [0, 1), got {rule.feedback_decay!r}")


def _draw_feedback(rule: Any, shape: tuple[int, int], std: float, like: Tensor) -> Tensor:
    g = torch.Generator().manual_seed(int(rule.feedback_seed))
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * std).to(like.dtype).to(like.device)


def init_feedback_state(rule: Any, model: Any, default_std: float) -> RuleState:
    """The rule state of the feedback: empty, except for ``"adaptive"``: ``{"feedback_B": the random draw,
    "feedback_W_out": the readout it was last updated with}``."""
    W_out = model.effective_weights().W_out.detach()
    K, N = W_out.shape
    if isinstance(rule.feedback, FeedbackMatrix) and rule.feedback.shape != (N, K):
        raise ValueError(f"{type(rule).__name__}: the given feedback matrix has shape {rule.feedback.shape}, the model "
                         f"needs (N, n_out) = {(N, K)}")
    if not (isinstance(rule.feedback, str) and rule.feedback == "adaptive"):
        return {}
    std = default_std if rule.feedback_std is None else float(rule.feedback_std)
    return {"feedback_B": _draw_feedback(rule, (N, K), std, W_out), "feedback_W_out": W_out.clone()}


def feedback_matrix(rule: Any, W_out: Tensor, default_std: float, state: RuleState) -> tuple[Tensor, RuleState]:
    """The ``(N, K)`` feedback matrix ``B`` of ``rule`` for the effective readout ``W_out``, and the new rule state.

    ``"symmetric"``: ``W_outᵀ``. ``"random"``: ``N(0, std²)`` drawn from ``torch.Generator().manual_seed(
    rule.feedback_seed)`` in float64 (the same ``B`` for every dtype and call). ``"adaptive"``: the state's ``B``;
    whenever ``W_out`` differs from the state's last readout, ``B ← (1 − feedback_decay) B + ΔW_outᵀ`` (the same
    updates as ``W_outᵀ``, whatever the optimizer, plus weight decay). A given :class:`FeedbackMatrix`: exactly it.
    The state passed in is not modified.
    """
    W_out = W_out.detach()
    K, N = W_out.shape
    fb = rule.feedback
    name = type(rule).__name__
    if isinstance(fb, FeedbackMatrix):
        if fb.shape != (N, K):
            raise ValueError(f"{name}: the given feedback matrix has shape {fb.shape}, the model needs (N, n_out) = "
                             f"{(N, K)}")
        return fb.tensor(W_out.dtype, W_out.device), state
    if fb == "symmetric":
        return W_out.T, state
    std = default_std if rule.feedback_std is None else float(rule.feedback_std)
    if fb == "random":
        return _draw_feedback(rule, (N, K), std, W_out), state
    if "feedback_B" not in state:
        raise ValueError(f"{name}(feedback='adaptive'): the rule state has no feedback matrix; start from "
                         f"rule.init_state(model)")
    B, W_last = state["feedback_B"], state["feedback_W_out"]
    if tuple(B.shape) != (N, K):
        raise ValueError(f"{name}(feedback='adaptive'): the rule state's feedback matrix has shape "
                         f"{tuple(B.shape)}, the model needs {(N, K)} (a state of another model?)")
    B = B.to(dtype=W_out.dtype, device=W_out.device)
    dW = W_out - W_last.to(dtype=W_out.dtype, device=W_out.device)
    if not bool(dW.any()):
        return B, state
    B = (1.0 - rule.feedback_decay) * B + dW.T
    return B, {**state, "feedback_B": B, "feedback_W_out": W_out.clone()}


# ----------------------------------------------------------------------------------------------- cell types (type blocks)
def cell_type_index(model: Any, cell_types: Any = "ei") -> tuple[Tensor, list]:
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
            if col.ndim == 1:  # per-edge signs (sparse storage, type-shared gains): any edge of each pre neuron
                pre = model.rec_pre.cpu().numpy()
                pos = np.bincount(pre[col > 0], minlength=N) > 0
                neg = np.bincount(pre[col < 0], minlength=N) > 0
            else:
                pos, neg = (col > 0).any(0), (col < 0).any(0)
            colsign = np.where(pos, 1, np.where(neg, -1, 0))
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


def type_average(W: Any, P: Tensor, nonzero_only: bool, ops: Any = None) -> Tensor:
    """Block means ``(C, C)`` of ``W`` ``(post, pre)``: ``[α, β]`` averages ``W[α ← β]`` (type blocks of the weight
    operations ``ops``; ``P`` is the one-hot type indicator).

    ``nonzero_only``: mean over the non-zero entries (existing connections; an empty block gives 0); otherwise over
    the whole block including zeros.
    """
    ops = weight_ops(None) if ops is None else ops
    C = P.shape[1]
    idx = P.argmax(1)
    S = ops.block_sums(W, idx, idx, C, C)
    if nonzero_only:
        cnt = ops.block_counts(W, idx, idx, C, C)
    else:
        n = P.sum(0)
        cnt = n[:, None] * n[None, :]
    return torch.where(cnt > 0, S / cnt.clamp(min=1), torch.zeros_like(S))



# ----------------------------------------------------------------------------------------------- recording
class Chunks(list):
    """Per-chunk record fields of one batch of trials (a list), with ``state0``: the state the trials started from
    (``model.init_state``, computed once: a relaxed initial state runs the network to get it)."""

    def __init__(self, items: Iterable = (), state0: Any = None):
        super().__init__(items)
        self.state0 = state0


def record_chunks(model: Any, x: Tensor, chunk_steps: int, fields: tuple[str, ...]) -> Chunks:
    """Simulate ``x`` chunk by chunk (state carried, no graph); per chunk ``(y, (record fields...))``.

    Only the named record fields are kept, so the memory is that of those fields, not of the whole record.
    """
    with torch.no_grad():
        state = model.init_state(x.shape[1])
        out_chunks = Chunks(state0=state)
        for a in range(0, x.shape[0], chunk_steps):
            out = model(x[a:a + chunk_steps], state=state, record=True)
            state = out.state
            out_chunks.append((out.y, tuple(getattr(out.record, f) for f in fields)))
    return out_chunks


def record_and_output_error(model: Any, x: Tensor, y: Tensor, mask: Tensor, loss_fn: LossFn,
                            chunk_steps: int, fields: tuple[str, ...]) -> tuple[Tensor, Tensor, Chunks]:
    """The first half of every batched local rule: run the trial without a graph, keeping only ``fields`` of the
    record chunk by chunk, then ``(loss, ∂E/∂ŷ)`` by autograd on the output alone.

    Returns ``(loss, dE_dy (T, B, n_out), Chunks[per-chunk tuple of the fields])``; the chunks carry the initial
    state (``state0``) so that the rule need not compute it again.
    """
    chunks = record_chunks(model, x, chunk_steps, fields)
    y_hat = torch.cat([c[0] for c in chunks])
    loss, dE_dy = output_error(y_hat, y, mask, loss_fn)
    return loss, dE_dy, Chunks((c[1] for c in chunks), chunks.state0)


def start_state(model: Any, batch_size: int, given: Any = None) -> Any:
    """The state a trial starts from: ``given`` (the caller's, already computed), else ``model.init_state``."""
    return model.init_state(batch_size) if given is None else given


def initial_spikes(recs: Chunks) -> Tensor | None:
    """Spikes of the initial state of the trials of ``recs`` (``None`` when it starts at rest)."""
    z0 = recs.state0.z
    return z0 if bool(z0.any()) else None


def spiking_scan_fields(model: Any) -> tuple[str, ...]:
    """Record fields :func:`local_adjoint_scan` needs: ``x, z, ψ, z̄``, and ``v`` with ``reset="zero"``."""
    return ("x", "z", "psi", "z_filt") + (("v",) if getattr(model, "reset", "subtract") == "zero" else ())


def rate_scan_fields(model: Any) -> tuple[str, ...]:
    """Record fields :func:`rate_adjoint_scan` needs: ``x, r, f'(h)`` and the readout input (``h`` or ``r``)."""
    return ("x", "r", "fprime", "h" if model.readout_from == "h" else "r")


def detached_weights(W: EffectiveWeights) -> EffectiveWeights:
    """The effective weights without their graph."""
    return EffectiveWeights(*(None if w is None else w.detach() for w in W))  # type: ignore[arg-type]


class SplitPre(NamedTuple):
    """Gradients on the presynaptic side kept apart: ``rec`` in the recurrent storage's layout (``(nnz,)`` per-edge
    values with sparse storage), ``inp`` ``(N, n_in)``, ``bias`` ``(N,)`` or ``None`` (what the scans return for a
    model whose recurrent weights are not a dense matrix)."""

    rec: Tensor
    inp: Tensor
    bias: Tensor | None = None


def assemble_grads(model: Any, dW_pre: Tensor | SplitPre, dW_out: Tensor, db_out: Tensor) -> Grads:
    """Parameter gradients from gradients on the effective weights: ``dW_pre`` is either ``(N, N + n_in [+ 1])``
    (recurrent, input and, for a rate model with ``b_rec``, bias columns; with sparse storage its recurrent block is
    read on the edges) or a :class:`SplitPre` in the storage's layout; masks and signs through ``model.param_grads``."""
    N, n_in = model.n, model.n_in
    if isinstance(dW_pre, SplitPre):
        rec, inp, bias = dW_pre
    else:
        rec, inp = dW_pre[:, :N], dW_pre[:, N:N + n_in]
        bias = dW_pre[:, N + n_in] if dW_pre.shape[1] > N + n_in else None
        if getattr(model, "storage", "dense") == "sparse":  # dense accumulators (online traces): the edges' entries
            rec = rec[model.rec_post, model.rec_pre]
    dW = {"W_rec": rec, "W_in": inp, "W_out": dW_out}
    if model.b_out is not None:
        dW["b_out"] = db_out
    if model.b_rec is not None:
        assert bias is not None
        dW["b_rec"] = bias
    return model.param_grads(dW)


def _pre_accumulators(N: int, n_in: int, bias: bool, W_rec: Any, kw: dict[str, Any]
                      ) -> tuple[Tensor | SplitPre, Tensor, Tensor, Tensor | None]:
    """``(dW_pre, recurrent part, input part, bias part)``: one ``(N, N + n_in [+1])`` matrix (dense storage; the
    parts are views) or a :class:`SplitPre` of separate tensors (per-edge storage)."""
    if isinstance(W_rec, SparseWeights):
        out = SplitPre(torch.zeros(W_rec.nnz, **kw), torch.zeros(N, n_in, **kw),
                       torch.zeros(N, **kw) if bias else None)
        return out, out.rec, out.inp, out.bias
    dW_pre = torch.zeros(N, N + n_in + int(bias), **kw)
    return dW_pre, dW_pre[:, :N], dW_pre[:, N:N + n_in], dW_pre[:, -1] if bias else None


# ----------------------------------------------------------------------------------------------- constants
class SpikingLocalConstants(NamedTuple):
    """What the local adjoint / traces of a LIF/ALIF neuron need (each ``(N,)`` unless said)."""

    N: int
    alpha: Tensor      # membrane decay
    leak: Tensor       # local ∂v^{t+1}/∂v^t (α + c_in (G_jj − Σ_i G_ji))
    rho: Tensor
    c_in: Tensor
    c_a: Tensor
    v_th: Tensor
    beta: Tensor
    adaptive: bool
    sl_a: slice        # rows of ε^a: the adaptive neurons if they form a block, else all neurons
    presyn: bool       # ε^v depends on the presynaptic neuron only (uniform leak, reset not in trace)
    kappa: float
    c_kappa: float     # readout filter input factor (1 − κ, or 1 without readout normalisation)
    dt_ms: float
    alpha_syn: Tensor | None = None  # synaptic-current decay α_s (current-based synapses), else None
    reset_zero: bool = False         # reset="zero": local leak α (1 − z^t) + gap term, reset path −α v^t
    syn_shared: bool = True          # one synaptic decay for all neurons (P is then a presynaptic trace)


def spiking_constants(model: Any, reset_in_trace: bool) -> SpikingLocalConstants:
    """:class:`SpikingLocalConstants` of a :class:`~spikelearn.models.SpikingRNN` (the gap leak by row sums)."""
    c = model.constants()
    N = model.n
    kw: dict[str, Any] = dict(dtype=model.dtype, device=model.device)

    def vec(v: Any) -> Tensor:
        return torch.as_tensor(v, **kw).expand(N).clone()

    alpha, c_in = vec(c.alpha), vec(c.c_in)
    leak = alpha
    if model.gap is not None:
        ops = weight_ops(model)
        leak = alpha + c_in * (ops.diagonal(model.gap) - ops.row_sums(model.gap))
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
    presyn = (not reset_in_trace) and (not reset_zero) and syn_shared and bool((leak == leak[0]).all())
    return SpikingLocalConstants(N=N, alpha=alpha, leak=leak, rho=vec(c.rho), c_in=c_in, c_a=vec(c.c_a),
                                 v_th=vec(c.v_th), beta=beta, adaptive=adaptive, sl_a=sl_a, presyn=presyn,
                                 kappa=float(model.kappa), c_kappa=float(model.c_kappa), dt_ms=float(model.dt_ms),
                                 alpha_syn=alpha_syn, reset_zero=reset_zero, syn_shared=syn_shared)


class RateLocalConstants(NamedTuple):
    """What the local adjoint / traces of a rate unit need (each ``(N,)`` unless said)."""

    N: int
    A_hh: Tensor     # local ∂h^{t+1}/∂h^t
    A_hr: Tensor     # local ∂h^{t+1}/∂r^t
    A_rr: Tensor     # local ∂r^{t+1}/∂r^t
    c_in: Tensor     # factor on the drive
    c_f: Tensor      # factor on f(h) in r (Murray: γ)
    presyn: bool     # A_hr = A_rr = 0 and A_hh uniform: traces depend on the presynaptic unit only
    no_h: bool       # A_hh = A_hr = 0 (and not presyn): ε_h = c_in pre needs no state
    from_h: bool     # readout reads h instead of r
    bias: bool       # hidden bias b_rec is trained (a presynaptic constant 1)


def rate_constants(model: Any) -> RateLocalConstants:
    """:class:`RateLocalConstants` of a :class:`~spikelearn.models.RateRNN` (every form; the gap leak by row sums)."""
    c = model.constants()
    N = model.n
    kw: dict[str, Any] = dict(dtype=model.dtype, device=model.device)

    def vec(v: Any) -> Tensor:
        return torch.as_tensor(v, **kw).expand(N).clone()

    leak, c_in, c_f = vec(c.leak), vec(c.c_in), vec(c.c_f)
    zero = torch.zeros(N, **kw)
    gself = zero
    if model.gap is not None:
        ops = weight_ops(model)
        gself = c_in * (ops.diagonal(model.gap) - ops.row_sums(model.gap))
    if c.form in ("pre_activation", "relu_lif"):
        A_hh, A_hr, A_rr = leak + gself, zero, zero
    elif c.form == "murray":
        A_hh, A_hr, A_rr = gself, zero, leak
    else:  # richlazy: h^t = leak r^{t-1} + c_in D^t
        A_hh, A_hr, A_rr = gself, leak, zero
    presyn = bool((A_hr == 0).all() and (A_rr == 0).all() and (A_hh == A_hh[0]).all())
    no_h = not presyn and bool((A_hh == 0).all() and (A_hr == 0).all())
    return RateLocalConstants(N=N, A_hh=A_hh, A_hr=A_hr, A_rr=A_rr, c_in=c_in, c_f=c_f, presyn=presyn, no_h=no_h,
                              from_h=model.readout_from == "h", bias=model.b_rec is not None)


# ----------------------------------------------------------------------------------------------- scans
def recs_chunk(recs: list, t0: int, t1: int) -> tuple:
    """The recorded chunk spanning steps ``[t0, t1)``."""
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


def local_adjoint_scan(k: SpikingLocalConstants, recs: list, dE_dy: Tensor, credits: Iterable[Tensor],
                       reset_in_trace: bool, nonlocal_credit: Callable[[Tensor, int], Tensor | None] | None = None,
                       z0: Tensor | None = None, ops: Any = None, W_rec: Any = None) -> tuple[Any, Tensor]:
    """``Σ_{b,t} credit_p^t e_pq^t`` for ``W_rec``/``W_in`` (as ``dW_pre`` ``(N, N + n_in)``) and the readout gradient,
    in the transposed form: the adjoint of each neuron's *local* dynamics (leak, adaptation, and the reset when
    ``reset_in_trace``) scanned backwards over ``(B, N)`` values, closed by one edge outer sum per chunk and matrix —
    never a ``(B, T, N, N)`` trace. Shared by e-prop, MDGL and ModProp, which differ only in the credit.

    Args:
        k: :func:`spiking_constants`.
        recs: per forward chunk ``(x, z, psi, z_filt[, v])``, first to last.
        credits: for each chunk, last to first, the credit ``(T_c, B, N)`` on the outgoing spikes (a generator may
            compute it lazily, so only one chunk of it is ever in memory).
        z0: the spikes of the initial state ``(B, N)`` (presynaptic at the first step); ``None`` = none (at rest).
        nonlocal_credit: ``(dE/dv^{t+1}, t) ↦`` an extra credit on ``v^t`` ``(B, N)``, or ``None`` for none at that
            step (ModProp's type-averaged propagation through the network). With current-based synapses it receives
            ``dE/di^{t+1}`` instead: a recurrent spike enters the current.
        ops: the weight operations (:func:`spikelearn.weights.weight_ops`); dense by default.
        W_rec: the recurrent weights in their storage (needed by per-edge storage: its edges receive the sums;
            ``dW_pre`` is then a :class:`SplitPre`).
    """
    ops = weight_ops(None) if ops is None else ops
    B, N = recs[0][1].shape[1], k.N
    n_in = recs[0][0].shape[-1]
    kw: dict[str, Any] = dict(dtype=dE_dy.dtype, device=dE_dy.device)
    dW_pre, rec_part, in_part, _ = _pre_accumulators(N, n_in, False, W_rec, kw)
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
                dz = torch.addcmul(dz, k.alpha * v_c[i] if v_c is not None else k.v_th, dv, value=-1.0)
            pdz = psi_c[i] * dz
            if nonlocal_credit is not None:  # given dE/dv^{t+1}, or dE/di^{t+1} with synaptic currents
                nl = nonlocal_credit(di if syn else dv, t1 - Tc + i)
                if nl is not None:
                    pdz = pdz + nl
            dv = torch.addcmul(pdz, k.leak - k.alpha * z_c[i] if zero else k.leak, dv)
            a_s = k.alpha_syn
            if k.adaptive:
                da = torch.addcmul(k.rho * da, k.beta, pdz, value=-1.0)
            if a_s is not None:  # dE/di^t = dE/dv^t + α_s dE/di^{t+1}
                di = torch.addcmul(dv, a_s, di)
                torch.mul(di, k.c_in, out=D[i])
            else:
                torch.mul(dv, k.c_in, out=D[i])
        # presynaptic edge outer sums of the chunk: pre = z^{t-1} (W_rec), x^t (W_in, always dense)
        ops.edge_outer_add_(rec_part, D[1:], z_c[:-1], like=W_rec)
        if ci > 0:
            ops.edge_outer_add_(rec_part, D[0], recs[ci - 1][1][-1], like=W_rec)
        elif z0 is not None:
            ops.edge_outer_add_(rec_part, D[0], z0, like=W_rec)
        DENSE.edge_outer_add_(in_part, D, x_c)
        dE_c = dE_dy[t1 - Tc:t1]
        dW_out.addmm_(dE_c.reshape(-1, dE_c.shape[-1]).T, zf_c.reshape(-1, N))
        t1 -= Tc
    return dW_pre, dW_out


def rate_adjoint_scan(k: RateLocalConstants, recs: Chunks, dE_dy: Tensor, Bfb: Tensor,
                      modulation: Callable[[Tensor], Tensor] | None = None, ops: Any = None, W_rec: Any = None
                      ) -> tuple[Any, Tensor, Tensor]:
    """The adjoint of the rate units' local dynamics, chunk by chunk backwards (RFLO in transposed form);
    ``recs``: per chunk ``(x, r, fprime, read)`` (:func:`rate_scan_fields`). Returns ``(dW_pre, dW_out, db_out)``.

    ``modulation`` (MDGL for rate networks): ``v ↦ v @ W̃``; the credit on ``r_p^t`` then also gets
    ``M_p^t = Σ_j W̃[j,p] m_j^{t+1}`` with the emissions ``m_j^t = c_in,j ∂E/∂h_j^t|immediate`` (``L_j^t`` when the
    readout reads ``h``, else ``c_f,j f'_j^t L_j^t``).
    """
    ops = weight_ops(None) if ops is None else ops
    T = dE_dy.shape[0]
    B, N = recs[0][1].shape[1], k.N
    n_in = recs[0][0].shape[-1]
    kw: dict[str, Any] = dict(dtype=dE_dy.dtype, device=dE_dy.device)
    dW_pre, rec_part, in_part, bias_part = _pre_accumulators(N, n_in, k.bias, W_rec, kw)
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
        ops.edge_outer_add_(rec_part, D[1:], r_c[:-1], like=W_rec)
        ops.edge_outer_add_(rec_part, D[0], r_first, like=W_rec)
        DENSE.edge_outer_add_(in_part, D, x_c)
        if bias_part is not None:
            bias_part += D.sum((0, 1))
        dW_out.addmm_(dE_c.reshape(-1, dE_c.shape[-1]).T, read_c.reshape(-1, N))
        t1 = t0
    return dW_pre, dW_out, dE_dy.sum((0, 1))


# ----------------------------------------------------------------------------------------------- regulariser
def rate_regularizer(z: Tensor, dt_ms: float, coeff: float, target_hz: float, form: str = "batch") -> Tensor:
    r"""Firing-rate regulariser ``E_reg`` (e-prop, Bellec et al. 2020, Methods) of spikes ``z`` ``(T, B, N)``;
    differentiable in ``z``. ``f_0 = target_hz/1000`` (per ms).

    * ``"batch"`` (the sources' "simple" form): ``c Σ_j (f̄_j − f_0)²`` with ``f̄_j = Σ_{b,t} z_j/(B T dt)``. (The
      pattern-generation tutorial's ``½·300`` is ``coeff = 150``.)
    * ``"trial"``: each trial's own whole-trial rate against the target, averaged over trials:
      ``(c/B) Σ_{b,j} (f_bj − f_0)²`` with ``f_bj = Σ_t z_bj/(T dt)``. Equals ``"batch"`` for ``B = 1``.
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
    if form == "trial":
        f = z.sum(0) / (T * dt_ms)  # (B, N)
        return coeff / B * ((f - f0) ** 2).sum()
    if form == "concatenated":
        zc = z.transpose(0, 1).reshape(B * T, 1, z.shape[2])
        return rate_regularizer(zc, dt_ms, coeff, target_hz, "running")
    if form != "running":
        raise ValueError(f"rate_regularizer: form must be 'batch', 'trial', 'running' or 'concatenated', got {form!r}")
    steps = torch.arange(1, T + 1, dtype=z.dtype, device=z.device)[:, None, None]
    R = z.cumsum(0) / (steps * dt_ms)
    return coeff / (B * T) * ((R - f0) ** 2).sum()


class RegSpec(NamedTuple):
    """A firing-rate regulariser: strength, target rate, form (:func:`rate_regularizer`)."""

    coeff: float = 0.0
    target_hz: float = 10.0
    form: str = "batch"


# ----------------------------------------------------------------------------------------------- online spiking traces
class SpikingTraceState(NamedTuple):
    """Online eligibility traces of a LIF/ALIF network for one batch of trials (``(N, B, N_pre)``,
    ``N_pre = N + n_in``), their accumulators, and the rule state (feedback) they use.

    :func:`spiking_traces_advance` updates the trace and accumulator tensors *in place*: a state passed in is consumed.
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
    run_count: Tensor | None   # (B, N) spike count per trial ("running" and "trial" regularisers)
    run_S: Tensor | None       # (N, B, N_pre) Σ_{s≤t} e_b^s ("running" and "trial" regularisers)
    acc_reg: Tensor | None     # (N, N_pre) Σ_t Σ_b a_bj^t S_bji^t since last read ("running" regulariser)
    rule_state: RuleState = {}  # the rule state (adaptive feedback) as of this step


def spiking_traces_init(model: Any, k: SpikingLocalConstants, batch_size: int, n_steps: int | None,
                        reg: RegSpec, initial_state: Any = None, rule_state: RuleState | None = None
                        ) -> SpikingTraceState:
    """Zero traces and accumulators for ``batch_size`` trials starting from ``initial_state`` (else
    ``model.init_state``). ``n_steps`` (trial length) normalises the regulariser when read before the trial ends."""
    N, B = k.N, int(batch_size)
    Np = N + model.n_in
    kw: dict[str, Any] = dict(dtype=model.dtype, device=model.device)
    big = (N, B, Np)
    n_a = len(range(N)[k.sl_a])
    reg_batch = reg.coeff > 0 and reg.form == "batch"
    reg_run = reg.coeff > 0 and reg.form in ("running", "trial")
    return SpikingTraceState(
        t=0, n_steps=n_steps, z_prev=start_state(model, B, initial_state).z.detach().clone(),
        pre_syn=(None if k.alpha_syn is None else torch.zeros((B, Np) if k.syn_shared else (N, B, Np), **kw)),
        eps_v=torch.zeros((B, Np) if k.presyn else big, **kw),
        eps_a=torch.zeros(n_a, B, Np, **kw) if k.adaptive else None,
        e_bar=torch.zeros(big, **kw), acc=torch.zeros(N, Np, **kw),
        acc_out=torch.zeros(model.n_out, N, **kw), acc_bout=torch.zeros(model.n_out, **kw),
        spikes=torch.zeros(N, **kw), e_sum=torch.zeros(N, Np, **kw) if reg_batch else None,
        run_count=torch.zeros(B, N, **kw) if reg_run else None,
        run_S=torch.zeros(big, **kw) if reg_run else None,
        acc_reg=torch.zeros(N, Np, **kw) if reg_run and reg.form == "running" else None,
        rule_state={} if rule_state is None else rule_state)


def spiking_traces_advance(k: SpikingLocalConstants, s: SpikingTraceState, rec: Any, L: Tensor, dE_dy: Tensor,
                           reset_in_trace: bool, reg: RegSpec) -> SpikingTraceState:
    """Advance the traces through a chunk of ``T_c`` steps of ``rec`` (a
    :class:`~spikelearn.models.SpikingRecord`), accumulating ``Σ_b L_bj ē_bji`` (``L`` ``(T_c, B, N)``, the learning
    signal) and the exact readout gradient (``dE_dy`` ``(T_c, B, K)``)."""
    with torch.no_grad():
        for t in range(rec.z.shape[0]):
            s = _trace_step(k, s, rec.x[t], rec.z[t], rec.psi[t], rec.z_filt[t], L[t], dE_dy[t],
                            rec.v[t] if k.reset_zero else None, reset_in_trace, reg)
    return s


def _trace_step(k: SpikingLocalConstants, s: SpikingTraceState, x: Tensor, z: Tensor, psi: Tensor, zf: Tensor,
                L: Tensor, dE_dy: Tensor, v: Tensor | None, reset_in_trace: bool, reg: RegSpec) -> SpikingTraceState:
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
        assert e is not None and s.run_count is not None
        s.run_count.add_(z)
        s.run_S.add_(e)
        if s.acc_reg is not None:  # "running": a_bj^t S_bji^t at every step
            a = (s.run_count / (t * k.dt_ms) - reg.target_hz / 1000.0) / t  # (B, N)
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
            if reset_in_trace:
                assert e is not None
                eps_v.addcmul_((k.alpha[:, None] * v.T)[:, :, None], e, value=-1.0)
        else:
            eps_v.mul_(col(k.leak))
            if reset_in_trace:
                assert e is not None
                eps_v.addcmul_(col(k.v_th), e, value=-1.0)
    return s._replace(t=t, z_prev=z, eps_v=eps_v, eps_a=eps_a, e_bar=e_bar, acc=acc, acc_out=acc_out,
                      acc_bout=acc_bout, spikes=spikes)


def spiking_traces_read(model: Any, k: SpikingLocalConstants, s: SpikingTraceState, reg: RegSpec
                        ) -> tuple[Tensor, Tensor, Tensor, SpikingTraceState]:
    """``(dW_pre, dW_out, db_out)`` accumulated since the last read (the regulariser's part added; it uses the rates
    of the trial so far — exact when read once at the end of the trial), and the state with accumulators zeroed."""
    acc = s.acc
    B = s.z_prev.shape[0]
    T = s.n_steps if s.n_steps is not None else max(s.t, 1)
    scale = 2.0 * reg.coeff / (B * T * k.dt_ms)
    f0 = reg.target_hz / 1000.0
    if s.e_sum is not None and s.t > 0:
        f = s.spikes / (B * s.t * k.dt_ms)
        acc = acc + (scale * (f - f0))[:, None] * s.e_sum
    if s.acc_reg is not None:
        acc = acc + scale * s.acc_reg
    if reg.coeff > 0 and reg.form == "trial" and s.t > 0:
        assert s.run_count is not None and s.run_S is not None
        g = 2.0 * reg.coeff / (B * T * k.dt_ms) * (s.run_count / (s.t * k.dt_ms) - f0)  # (B, N)
        acc = acc + torch.bmm(g.T[:, None, :], s.run_S).squeeze(1)
    z = torch.zeros_like
    out = (acc, s.acc_out, s.acc_bout)
    s = s._replace(acc=z(s.acc), acc_out=z(s.acc_out), acc_bout=z(s.acc_bout),
                   e_sum=None if s.e_sum is None else z(s.e_sum),
                   acc_reg=None if s.acc_reg is None else z(s.acc_reg))
    if reg.coeff > 0 and reg.form == "trial":  # Σ_t e of each trial since the last read (as e_sum for "batch")
        assert s.run_S is not None
        s = s._replace(run_S=z(s.run_S))
    return out[0], out[1], out[2], s


# ----------------------------------------------------------------------------------------------- online driver
def run_online(rule: Any, model: Any, x: Tensor, y: Tensor, mask: Tensor, loss_fn: LossFn, *,
               chunk_steps: int, on_update: Callable[[Grads], None] | None = None,
               state: RuleState | None = None) -> tuple[Tensor, Grads | None, RuleState]:
    """Run one trial through an online rule (``init``/``advance``/``read``), ``chunk_steps`` steps at a time.

    Each chunk is simulated from the carried model state (no graph), ``∂E/∂ŷ`` of its steps is taken by autograd
    on the output alone — ``loss_fn`` is evaluated on the full-length output whose not-yet-simulated steps are 0,
    which is exact for losses that are sums over time steps (every task loss is) — and the rule's traces advance
    through the chunk. With ``on_update``, the accumulated gradient is read after every chunk and passed to
    ``on_update`` (which may change the weights: the rest of the trial then runs with the new weights); otherwise it
    is read once at the end.

    ``state``: the rule state the trial starts from (``rule.init_state(model)`` when ``None`` and the rule has one);
    a user's online rule may leave out the ``initial_state`` and ``rule_state`` keywords of ``init``.

    Returns:
        ``(loss, grads, state)``: the loss of the simulated trial, the trial's gradient (``None`` with
        ``on_update``) and the rule state after the trial.
    """
    T, B = x.shape[0], x.shape[1]
    if state is None:
        state = rule.init_state(model) if hasattr(rule, "init_state") else {}
    with torch.no_grad():
        mstate = model.init_state(B)  # once: the rule's traces and the simulation start from it
    params = inspect.signature(rule.init).parameters  # optional keywords in a user's online rule
    kw: dict[str, Any] = {}
    if "initial_state" in params:
        kw["initial_state"] = mstate
    if "rule_state" in params:
        kw["rule_state"] = state
    st = rule.init(model, B, n_steps=T, **kw)
    y_hat = torch.zeros(0)
    for a in range(0, T, chunk_steps):
        b = min(T, a + chunk_steps)
        with torch.no_grad():
            out = model(x[a:b], state=mstate, record=True)
        if a == 0:
            y_hat = out.y.new_zeros((T,) + tuple(out.y.shape[1:]))
        y_hat[a:b] = out.y
        _, dE_dy = output_error(y_hat, y, mask, loss_fn)
        st = rule.advance(model, out.record, dE_dy[a:b], st)
        mstate = out.state
        if on_update is not None:
            grads, st = rule.read(model, st)
            on_update(grads)
    with torch.no_grad():
        loss = loss_fn(y_hat, y, mask).detach()
    new_state: RuleState = getattr(st, "rule_state", state) or {}
    if on_update is not None:
        return loss, None, new_state
    grads, _ = rule.read(model, st)
    return loss, grads, new_state


# ----------------------------------------------------------------------------------------------- rule mixin
class LocalRule:
    """What every feedback-using local rule shares (mixed into its frozen dataclass): the rule-state methods, the
    feedback matrix, and ``gradients``/``update`` dispatching to the rule's ``batched_update`` or to
    :func:`run_online`.

    A rule implements ``check_model(model)``, ``default_feedback_std(model)``, ``batched_update(model, x, y, mask,
    loss_fn, state) -> (loss, grads, state)`` and, for ``mode="online"``, ``init``/``advance``/``read``.
    """

    online = True

    def check_model(self, model: Any) -> None:  # pragma: no cover - every rule overrides it
        raise NotImplementedError

    def default_feedback_std(self, model: Any) -> float:  # pragma: no cover - every rule overrides it
        raise NotImplementedError

    def batched_update(self, model: Any, x: Tensor, y: Tensor, mask: Tensor, loss_fn: LossFn,
                 state: RuleState) -> tuple[Tensor, Grads, RuleState]:  # pragma: no cover
        raise NotImplementedError

    @property
    def stateful(self) -> bool:
        """Whether the rule carries state between calls (adaptive feedback)."""
        return isinstance(getattr(self, "feedback"), str) and getattr(self, "feedback") == "adaptive"

    def init_state(self, model: Any) -> RuleState:
        """The rule state a run starts from (empty unless ``feedback="adaptive"``)."""
        self.check_model(model)
        return init_feedback_state(self, model, self.default_feedback_std(model))

    def feedback_matrix(self, model: Any, state: RuleState | None = None) -> Tensor:
        """The feedback matrix ``B`` ``(N, K)`` the rule uses for ``model`` now, given the rule ``state``
        (``init_state(model)`` when ``None``). A given matrix is returned exactly (in the model's dtype)."""
        state = self.init_state(model) if state is None else state
        B, _ = feedback_matrix(self, model.effective_weights().W_out, self.default_feedback_std(model), state)
        return B

    def feedback_for(self, model: Any, state: RuleState) -> tuple[Tensor, RuleState]:
        """``(B, new rule state)`` for ``model``'s current readout (:func:`feedback_matrix`)."""
        return feedback_matrix(self, model.effective_weights().W_out, self.default_feedback_std(model), state)

    def step(self, model: Any, rec_t: Any, dE_dy_t: Tensor, state: Any) -> tuple[Grads, Any]:
        """One time step of an online rule: ``rec_t`` one step of the record (fields ``(B, ·)``), ``dE_dy_t``
        ``(B, K)``. Returns this step's gradient contribution (parameter names) and the new trial state."""
        rec1 = type(rec_t)(*(f[None] for f in rec_t))
        return self.read(model, self.advance(model, rec1, dE_dy_t[None], state))  # type: ignore[attr-defined]

    def gradients(self, model: Any, x: Tensor, y: Tensor, mask: Tensor,
                  loss_fn: LossFn) -> tuple[Tensor, Grads]:
        """``(loss, grads)`` for whole trials, starting from ``init_state(model)`` (see :meth:`update`)."""
        loss, grads, _ = self.update(model, x, y, mask, loss_fn)
        return loss, grads

    def update(self, model: Any, x: Tensor, y: Tensor, mask: Tensor, loss_fn: LossFn,
               state: RuleState | None = None) -> tuple[Tensor, Grads, RuleState]:
        """``(loss, grads, new_state)`` for whole trials from the rule ``state`` (``init_state(model)`` if ``None``)."""
        self.check_model(model)
        state = self.init_state(model) if state is None else state
        if getattr(self, "mode", "batched") == "online":
            loss, grads, state = run_online(self, model, x, y, mask, loss_fn,
                                            chunk_steps=getattr(self, "chunk_steps"), state=state)
            assert grads is not None
            return loss, grads, state
        return self.batched_update(model, x, y, mask, loss_fn, state)


def default_std_hidden(model: Any) -> float:
    """``1/√N`` (e-prop's random feedback)."""
    return 1.0 / math.sqrt(getattr(model, "n"))


def default_std_out(model: Any) -> float:
    """``1/√K`` (Murray's RFLO feedback)."""
    return 1.0 / math.sqrt(getattr(model, "n_out"))


def is_spiking(model: Any) -> bool:
    """``True`` for a :class:`~spikelearn.models.SpikingRNN`, ``False`` for a :class:`~spikelearn.models.RateRNN`."""
    if isinstance(model, SpikingRNN):
        return True
    if isinstance(model, RateRNN):
        return False
    raise TypeError(f"expected a SpikingRNN or RateRNN, got {type(model).__name__}")
