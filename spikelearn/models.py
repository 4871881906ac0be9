"""Recurrent network models built from a :class:`~spikelearn.circuit.Circuit`.

* :class:`SpikingRNN` — LIF/ALIF network (ALGORITHMS.md §1.1) with a leaky readout.
* :class:`RateRNN` — leaky rate network, forms R1/R2/R3 (§1.2).

Both: time-first input ``x`` ``(T, B, n_in)``; ``out = model(x, state=None, record=False)`` returns
:class:`ModelOutput` ``(y, state, record)`` with ``y`` ``(T, B, n_out)``, the final state (pass it back in to continue
a run exactly) and, with ``record=True``, a trajectory record whose fields are ``(T, B, ·)`` (index ``t`` = after
step ``t``, i.e. after consuming ``x[t]``).

Weights (``(post, pre)``). Every trainable weight matrix is parameterised as::

    W_eff = M ⊙ ( F ⊙ θ + S ⊙ |θ| ),     F = (S == 0)

with ``M`` the fixed 0/1 mask (absent edges, autapses, input/output masks) and ``S`` the fixed sign matrix
(+1/−1 where the sign is constrained, 0 where it is free). Signs therefore hold *by construction* after any
optimizer step, and masked entries have zero weight and zero gradient. ``|θ|`` is differentiated as
``sign(θ)`` with the convention **d|θ|/dθ = +1 at θ = 0**, so a constrained edge whose weight is exactly 0
can still grow (torch's ``abs`` would give it a zero gradient forever). The effective weights are computed in
one place, :meth:`effective_weights`, once per forward (never per step).

Sign rules (``sign_constraint``): ``"dale"`` — column ``i`` has the sign ``circuit.dale_signs()[i]`` (raises
naming neurons of unknown/mixed sign); ``"keep"`` — neurons with a declared sign ±1 keep it for their column
(raises if an initial weight contradicts it), neurons with sign 0 keep each edge's initial sign (an edge of
initial weight 0 takes the neuron's edge sign, else +1); ``"none"`` — unconstrained; ``"auto"`` — ``"keep"``
if any neuron has a nonzero sign, else ``"none"``. ``circuit.input_sign`` constrains the rows of ``W_in``,
``circuit.output_sign`` the columns of ``W_out`` (0 = free). ``input_channel_sign`` (model argument, ``(n_in,)``
of +1/−1/0) constrains the *columns* of ``W_in`` instead — Dale's law on the input channels, e.g. the MDGL
source's 33 excitatory and 7 inhibitory inputs — and must agree with ``circuit.input_sign`` where both are set.

Speed and exactness: the input currents ``W_in x^t`` of all steps and the readout are computed by one batched
GEMM each (:func:`time_linear`), the recurrent current by one ``addmm`` per step on dense, pre-masked weights.
Because :func:`time_linear` computes every time slice identically whatever ``T`` is, running ``x[:k]`` and then
``x[k:]`` from the returned state gives bit-identical outputs to one run of ``x`` (on CPU; cuBLAS may pick other
kernels for other batch counts).

Initialisation: ``W_rec`` from the circuit's weights; ``W_in ~ N(0, 1/n_in)`` (``w_in_init="normal"``); ``W_out``
Glorot-uniform ``U(±√(6/(N + n_out)))`` (``w_out_init="glorot"``, the TF default used by e-prop); biases 0. Both
``w_in_init`` and ``w_out_init`` take any of ``"normal"`` ``N(0, 1/fan_in)``, ``"glorot"``, ``"he_normal"``
``N(0, 2/fan_in)``, ``"uniform"`` ``U(±1/√fan_in)`` (``nn.Linear``) and ``"standard_normal"`` ``N(0, 1)``, the
variants of the published set-ups (ALGORITHMS.md §4.4, §7.2, §8.1, §9.1); fan_in is ``n_in`` for ``W_in`` and
``N`` for ``W_out``.
Constrained entries are initialised with the magnitude of the draw. Given ``w_in``/``w_out`` arrays win; otherwise
a circuit that carries its own ``input_weights``/``output_weights`` (e.g. a task-aligned low-rank init) supplies them.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
from torch import Tensor, nn

from spikelearn.circuit.core import Circuit
from spikelearn.neurons.lif import ALIFConstants, ALIFState, alif_constants, alif_recurrent_update
from spikelearn.neurons.rate import (
    RATE_FORMS,
    RateConstants,
    RateParams,
    RateState,
    activation,
    init_rate_state,
    rate_update,
)
from spikelearn.neurons.surrogate import Surrogate, describe_bad, make_surrogate
from spikelearn.weights import DENSE, SPARSE, EdgeIndex, SparseWeights, time_linear

STORAGES = ("dense", "sparse", "auto")
#: ``storage="auto"`` keeps ``W_rec`` per edge below this density (edges / N²). Measured with
#: ``benchmarks/bench_sparse.py`` (random Dale circuits, LIF, B = 8, T = 100, 1 thread, README "Sparse storage"): at
#: N = 1024 the sparse BPTT and batched e-prop gradients are faster up to 5 % density and slower from 10 %, the
#: forward up to 10 %; at N = 4096 sparse is faster up to 10 % and slower at 50 %.
AUTO_SPARSE_DENSITY = 0.05
PARAMETRIZATIONS = ("per_edge", "type_shared")

__all__ = ["SpikingRNN", "RateRNN", "ModelOutput", "SpikingState", "SpikingRecord", "RateRecord",
           "EffectiveWeights", "load", "time_linear", "circuit_to_dict", "circuit_from_dict"]

_FORMAT = "spikelearn.model/1"


# ---------------------------------------------------------------------------------------------- results
class ModelOutput(NamedTuple):
    """Result of a forward pass."""

    y: Tensor                              # (T, B, n_out) readout
    state: Any                             # SpikingState | RateState after the last step
    record: Any                            # SpikingRecord | RateRecord | None


class SpikingState(NamedTuple):
    """State of a :class:`SpikingRNN` after step ``t``."""

    v: Tensor        # (B, N) membrane potential
    a: Tensor        # (B, N) adaptation
    z: Tensor        # (B, N) spikes of the step
    ref: Tensor      # (B, N) refractory steps left
    z_filt: Tensor   # (B, N) readout-filtered spikes z̄
    y_filt: Tensor   # (B, n_out) filtered readout current W_out z̄ (no bias)
    i_syn: Tensor | None = None  # (B, N) synaptic current (units of v; zeros without current-based synapses)

    def neuron(self) -> ALIFState:
        return ALIFState(self.v, self.a, self.z, self.ref, self.i_syn)


class SpikingRecord(NamedTuple):
    """Trajectory of a :class:`SpikingRNN`; every field ``(T, B, ·)``, index ``t`` = after step ``t``."""

    x: Tensor       # (T, B, n_in) inputs x^t
    z: Tensor       # (T, B, N) spikes z^t (in the autograd graph)
    v: Tensor       # (T, B, N) membrane v^t (after the reset term of z^{t-1}, before the one of z^t)
    a: Tensor       # (T, B, N) adaptation a^t
    thr: Tensor     # (T, B, N) threshold A^t = v_th + β a^t
    psi: Tensor     # (T, B, N) pseudo-derivative ∂z^t/∂v^t used in backward (0 while refractory), detached
    z_filt: Tensor  # (T, B, N) readout-filtered spikes z̄^t
    ref: Tensor     # (T, B, N) bool, refractory at step t
    i_syn: Tensor | None = None  # (T, B, N) synaptic current i^t (a broadcast zero without current-based synapses)


class RateRecord(NamedTuple):
    """Trajectory of a :class:`RateRNN`; every field ``(T, B, ·)``."""

    x: Tensor       # (T, B, n_in) inputs
    h: Tensor       # (T, B, N) pre-activation h^t
    r: Tensor       # (T, B, N) rates r^t
    fprime: Tensor  # (T, B, N) activation derivative f'(h^t − thr), detached


class EffectiveWeights(NamedTuple):
    """The weights actually used by the forward pass (mask and signs applied)."""

    W_in: Tensor            # (N, n_in)
    W_rec: Tensor           # (N, N) post x pre
    W_out: Tensor           # (n_out, N)
    b_out: Tensor | None    # (n_out,) readout bias
    b_rec: Tensor | None    # (N,) recurrent bias (RateRNN with hidden_bias=True)


# ---------------------------------------------------------------------------------------------- helpers
def _abs_grow(theta: Tensor) -> Tensor:
    """``|θ|`` whose derivative is ``sign(θ)`` with +1 at θ = 0."""
    s = torch.where(theta >= 0, 1.0, -1.0).to(theta.dtype)
    return theta * s.detach()


def _resolve_device(device: Any) -> torch.device:
    if device is None:
        return torch.device("cpu")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _resolve_dtype(dtype: Any) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        return {"float32": torch.float32, "float64": torch.float64, "float": torch.float32,
                "double": torch.float64}[dtype]
    return dtype


INITS = ("normal", "glorot", "he_normal", "uniform", "standard_normal")


def _init_draw(kind: str, shape: tuple[int, int], *, fan_in: int, fan_out: int, name: str) -> np.ndarray:
    """An ``(rows, fan_in)`` weight draw from torch's global RNG (float64), by the initialisation's name:

    ``"normal"`` ``N(0, 1/fan_in)``; ``"glorot"`` ``U(±√(6/(fan_in + fan_out)))`` (TF's default, e-prop);
    ``"he_normal"`` ``N(0, 2/fan_in)`` (ModProp §4.4, BiolHessRNN §9.1); ``"uniform"`` ``U(±1/√fan_in)``
    (``nn.Linear``'s default, the rich/lazy source §8.1); ``"standard_normal"`` ``N(0, 1)`` (gradient flossing
    §7.2)."""
    if kind == "normal":
        return torch.randn(*shape, dtype=torch.float64).numpy() / math.sqrt(fan_in)
    if kind == "glorot":
        lim = math.sqrt(6.0 / (fan_in + fan_out))
        return (2 * torch.rand(*shape, dtype=torch.float64).numpy() - 1) * lim
    if kind == "he_normal":
        return torch.randn(*shape, dtype=torch.float64).numpy() * math.sqrt(2.0 / fan_in)
    if kind == "uniform":
        return (2 * torch.rand(*shape, dtype=torch.float64).numpy() - 1) / math.sqrt(fan_in)
    if kind == "standard_normal":
        return torch.randn(*shape, dtype=torch.float64).numpy()
    raise ValueError(f"{name} must be one of {INITS}, got {kind!r}")


def _per_neuron(value: Any, n: int, name: str) -> np.ndarray:
    a = np.asarray(value.detach().cpu() if isinstance(value, Tensor) else value, dtype=np.float64)
    if a.ndim == 0:
        return np.full(n, float(a))
    if a.shape != (n,):
        raise ValueError(f"{name} must be a scalar or have shape ({n},), got {a.shape}")
    return a.copy()


def _to_config_value(v: Any) -> Any:
    """Constructor argument -> something torch.load(weights_only=True) accepts."""
    if isinstance(v, Surrogate):
        return {"__surrogate__": v.config()}
    if isinstance(v, torch.dtype):
        return str(v).replace("torch.", "")
    if isinstance(v, torch.device):
        return str(v)
    if isinstance(v, np.ndarray):
        return torch.as_tensor(v.copy())
    if isinstance(v, Tensor):
        return v.detach().cpu().clone()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (list, tuple)):
        return type(v)(_to_config_value(x) for x in v)
    if isinstance(v, dict):
        return {k: _to_config_value(x) for k, x in v.items()}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise TypeError(f"cannot store constructor argument {v!r} of type {type(v).__name__}")


def _from_config_value(v: Any) -> Any:
    if isinstance(v, dict):
        if "__surrogate__" in v:
            return make_surrogate(v["__surrogate__"])
        return {k: _from_config_value(x) for k, x in v.items()}
    return v


def _sanitize(v: Any) -> Any:
    """Free-form metadata -> weights_only-loadable data (numpy arrays tagged; unknown objects -> repr)."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        if v.dtype == object:
            return {"__list__": [_sanitize(x) for x in v.tolist()]}
        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(v).copy())}
    if isinstance(v, Tensor):
        return v.detach().cpu().clone()
    if isinstance(v, (list, tuple)):
        return type(v)(_sanitize(x) for x in v)
    if isinstance(v, Mapping):
        return {(_sanitize(k) if not isinstance(k, str) else k): _sanitize(x) for k, x in v.items()}
    return {"__repr__": repr(v)}


def _unsanitize(v: Any) -> Any:
    if isinstance(v, dict):
        if "__ndarray__" in v and len(v) == 1:
            return v["__ndarray__"].numpy()
        if "__list__" in v and len(v) == 1:
            return np.array([_unsanitize(x) for x in v["__list__"]], dtype=object)
        if "__repr__" in v and len(v) == 1:
            return v["__repr__"]
        return {k: _unsanitize(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return type(v)(_unsanitize(x) for x in v)
    return v


def circuit_to_dict(c: Circuit) -> dict[str, Any]:
    """A Circuit as plain data (tensors, lists, dicts, str) for ``torch.save``."""
    def opt(a: np.ndarray | None) -> Tensor | None:
        return None if a is None else torch.from_numpy(np.array(a))

    gap = None
    if c.gap is not None:
        g = c.gap.tocoo()
        gap = {"row": torch.from_numpy(g.row.astype(np.int64)), "col": torch.from_numpy(g.col.astype(np.int64)),
               "data": torch.from_numpy(g.data.astype(np.float64))}
    return {
        "node_ids": [_sanitize(u) for u in c.node_ids],
        "post": torch.from_numpy(np.array(c.post)), "pre": torch.from_numpy(np.array(c.pre)),
        "w": torch.from_numpy(np.array(c.w)),
        "cell_types": [str(t) for t in c.cell_types],
        "signs": torch.from_numpy(np.array(c.signs)),
        "gap": gap,
        "neuron_params": {k: torch.from_numpy(np.array(v)) for k, v in c.neuron_params.items()},
        "node_attrs": [_sanitize(dict(a)) for a in c.node_attrs],
        "input_mask": opt(c.input_mask), "output_mask": opt(c.output_mask),
        "input_sign": opt(c.input_sign), "output_sign": opt(c.output_sign),
        "input_weights": opt(c.input_weights), "output_weights": opt(c.output_weights),
        "metadata": _sanitize(dict(c.metadata)),
    }


def circuit_from_dict(d: Mapping[str, Any]) -> Circuit:
    """Inverse of :func:`circuit_to_dict`."""
    n = len(d["node_ids"])

    def opt(t: Tensor | None) -> np.ndarray | None:
        return None if t is None else t.numpy()

    gap = None
    if d["gap"] is not None:
        g = d["gap"]
        gap = sp.csr_array((g["data"].numpy(), (g["row"].numpy(), g["col"].numpy())), shape=(n, n))
    return Circuit(node_ids=tuple(_unsanitize(u) for u in d["node_ids"]), post=d["post"].numpy(),
                   pre=d["pre"].numpy(), w=d["w"].numpy(), cell_types=np.array(d["cell_types"], dtype=object),
                   signs=d["signs"].numpy(), gap=gap,
                   neuron_params={k: v.numpy() for k, v in d["neuron_params"].items()},
                   node_attrs=tuple(_unsanitize(a) for a in d["node_attrs"]),
                   input_mask=opt(d["input_mask"]), output_mask=opt(d["output_mask"]),
                   input_sign=opt(d["input_sign"]), output_sign=opt(d["output_sign"]),
                   input_weights=opt(d.get("input_weights")), output_weights=opt(d.get("output_weights")),
                   metadata=_unsanitize(d["metadata"]))


def _check_i_ext(i_ext: Any, T: int, B: int, model: Any) -> Tensor | None:
    """``i_ext`` as a ``(T, B, N)`` tensor of the model's dtype and device (a view when it broadcasts), or None."""
    if i_ext is None:
        return None
    ext = torch.as_tensor(i_ext, dtype=model.dtype, device=model.device)
    try:
        return ext.expand(T, B, model.n)
    except RuntimeError:
        raise ValueError(f"i_ext must broadcast to (T, B, N) = ({T}, {B}, {model.n}), got shape "
                         f"{tuple(ext.shape)}") from None


# ---------------------------------------------------------------------------------------------- base
def _check_gap_stability(G: np.ndarray, decay: np.ndarray, c_in: Any, gap_scale: float) -> None:
    """Refuse gap-junction coupling that makes the explicit sub-threshold update unstable.

    Between spikes the membrane map is ``v <- (diag(decay) - diag(c_in) L) v + ...`` with the graph Laplacian
    ``L = diag(G 1) - G`` of the conductances. If its spectral radius is ≥ 1 the discretised potentials grow
    without bound (NaN within a trial), a property of the explicit discretisation, not of the cell.
    """
    n = G.shape[0]
    c = np.broadcast_to(np.asarray(c_in, dtype=np.float64), (n,))
    if sp.issparse(G):  # per-edge conductances: the same map as a scipy matrix
        rows = np.asarray(G.sum(1)).ravel()
        Ms = sp.diags_array(np.asarray(decay, dtype=np.float64) * np.ones(n) - c * rows) + sp.diags_array(c) @ G
        gersh = float(np.asarray(abs(Ms).sum(1)).max())
        if gersh < 1:
            return
        M = Ms.toarray() if n <= 4000 else Ms
        Gsum_max = float(rows.max())
    else:
        L = np.diag(G.sum(1)) - G
        M = np.diag(decay) - c[:, None] * L
        gersh = np.abs(M).sum(1).max()
        if gersh < 1:
            return
        Gsum_max = float(G.sum(1).max())
    if n <= 4000:
        radius = float(np.abs(np.linalg.eigvals(M)).max())
    else:  # pragma: no cover - large circuits
        radius = float(abs(spla.eigs(sp.csr_array(M), k=1, which="LM", return_eigenvectors=False)[0]))
    if radius >= 1:
        raise ValueError(
            f"gap-junction coupling is too strong for the explicit update: the sub-threshold membrane map has "
            f"spectral radius {radius:.3g} >= 1 (largest total gap conductance onto one neuron: "
            f"{Gsum_max:.3g}, gap_scale={gap_scale}); potentials would diverge. Reduce gap_scale (or the "
            f"circuit's gap weights), or use a smaller dt_ms")


class _CircuitRNN(nn.Module):
    """Weights, masks, signs, save/load shared by both models."""

    #: The weight operations (products, edge outer sums, type blocks, row sums) of this model's storage: dense.
    weight_ops = DENSE

    # buffers and parameters (declared for the type checker; registered in _setup_weights)
    mask_rec: Tensor
    sign_rec: Tensor
    mask_in: Tensor
    sign_in: Tensor
    mask_out: Tensor
    sign_out: Tensor
    gap: Tensor | None
    rec_post: Tensor  # (nnz,) per-edge storage and type-shared parametrisation only
    rec_pre: Tensor
    gap_post: Tensor  # (nnz_gap,) per-edge gap junctions (sparse storage) only
    gap_pre: Tensor
    gap_values: Tensor
    edge_pair: Tensor  # (nnz,) type-shared parametrisation only
    edge_scale: Tensor
    type_gain: nn.Parameter
    theta_rec: nn.Parameter
    theta_in: nn.Parameter
    theta_out: nn.Parameter
    b_out: nn.Parameter | None
    b_rec: nn.Parameter | None

    def _setup_weights(self, circuit: Circuit, n_in: int, n_out: int, *, sign_constraint: str,
                       allow_autapses: bool, w_in: Any, w_out: Any, w_out_init: str, readout_bias: bool,
                       gap_scale: float, dtype: torch.dtype, device: torch.device, w_in_init: str = "normal",
                       input_channel_sign: Any = None, storage: str = "dense",
                       parametrization: str = "per_edge", type_gain_init: float = 1.0) -> None:
        if not isinstance(circuit, Circuit):
            raise TypeError(f"expected a Circuit, got {type(circuit).__name__}")
        for name, kind in (("w_in_init", w_in_init), ("w_out_init", w_out_init)):
            if kind not in INITS:
                raise ValueError(f"{name} must be one of {INITS}, got {kind!r}")
        n = circuit.n
        for name, v in (("n_in", n_in), ("n_out", n_out)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
        if storage == "auto":
            storage = "sparse" if circuit.n_edges < AUTO_SPARSE_DENSITY * n * n else "dense"
        if parametrization not in PARAMETRIZATIONS:
            raise ValueError(f"parametrization must be one of {PARAMETRIZATIONS}, got {parametrization!r}")
        self.circuit = circuit
        self.n, self.n_in, self.n_out = n, int(n_in), int(n_out)
        self.storage = storage
        self.parametrization = parametrization
        kw: dict[str, Any] = dict(dtype=dtype, device=device)
        if parametrization == "type_shared":
            S, M = self._setup_type_shared(circuit, allow_autapses, type_gain_init, kw)
        elif storage == "sparse":
            S, M = self._setup_sparse_recurrent(circuit, sign_constraint, allow_autapses, kw)
        else:
            S, M = self._setup_dense_recurrent(circuit, sign_constraint, allow_autapses, kw)
        self._setup_io(circuit, S, M, w_in=w_in, w_out=w_out, w_out_init=w_out_init, readout_bias=readout_bias,
                       gap_scale=gap_scale, w_in_init=w_in_init, input_channel_sign=input_channel_sign, kw=kw)

    @staticmethod
    def _recurrent_edges(circuit: Circuit, allow_autapses: bool, warn: bool = True
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The recurrent edges ``(post, pre, w)`` the model keeps: the circuit's (unique, sorted by ``(post, pre)`` —
        the :class:`~spikelearn.circuit.Circuit` guarantees both) without autapses unless ``allow_autapses``; a
        warning names dropped autapses of non-zero weight (``warn``; generators document their diagonal)."""
        post = np.asarray(circuit.post, dtype=np.int64)
        pre = np.asarray(circuit.pre, dtype=np.int64)
        w0 = np.asarray(circuit.w, dtype=np.float64)
        if allow_autapses:
            return post.copy(), pre.copy(), w0.copy()  # the circuit's arrays are read-only
        auto = post == pre
        n_auto = int((w0[auto] != 0).sum())
        if warn and n_auto and not circuit.metadata.get("generator"):
            warnings.warn(f"the circuit has {n_auto} autapse(s) (self-connections with non-zero weight); the model "
                          f"leaves them out (allow_autapses=False). Pass allow_autapses=True to keep them.",
                          UserWarning, stacklevel=5)  # -> _setup_*_recurrent -> _setup_weights -> __init__ -> caller
        return post[~auto], pre[~auto], w0[~auto]

    def _edge_signs(self, circuit: Circuit, pre: np.ndarray, w0: np.ndarray, sign_constraint: str) -> np.ndarray:
        """The sign constraint of each kept edge (0 = free), for either storage; sets ``self.sign_constraint``."""
        signs = np.asarray(circuit.signs, dtype=np.int64)
        mode = sign_constraint
        if mode == "auto":
            mode = "keep" if (signs != 0).any() else "none"
        if mode == "none":
            S = np.zeros(pre.size)
        elif mode == "dale":
            S = circuit.dale_signs().astype(np.float64)[pre]  # raises naming unknown / mixed neurons
        elif mode == "keep":
            sp_ = signs[pre]
            contra = np.unique(pre[(sp_ != 0) & (w0 * sp_ < 0)])
            if contra.size:
                ids = ", ".join(repr(circuit.node_ids[k]) for k in contra[:20])
                raise ValueError(f"sign_constraint='keep': the initial outgoing weights of {contra.size} neuron(s)"
                                 f" contradict their declared sign: {ids}")
            fallback = circuit.edge_sign_per_neuron().astype(np.float64)
            fallback[fallback == 0] = 1.0
            edge = np.where(w0 > 0, 1.0, np.where(w0 < 0, -1.0, fallback[pre]))
            S = np.where(sp_ != 0, sp_.astype(np.float64), edge)
        else:
            raise ValueError(f"sign_constraint must be 'auto', 'none', 'dale' or 'keep', got {sign_constraint!r}")
        self.sign_constraint = mode
        return S

    def _setup_dense_recurrent(self, circuit: Circuit, sign_constraint: str, allow_autapses: bool,
                               kw: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """Dense ``(N, N)`` recurrent storage: ``theta_rec``, ``mask_rec``, ``sign_rec`` matrices, scattered from the
        kept edges and their signs."""
        n = circuit.n
        post, pre, w0 = self._recurrent_edges(circuit, allow_autapses)
        s_edge = self._edge_signs(circuit, pre, w0, sign_constraint)
        M = np.zeros((n, n), dtype=bool)
        M[post, pre] = True
        W0 = np.zeros((n, n))
        W0[post, pre] = w0
        S = np.zeros((n, n))
        S[post, pre] = s_edge
        theta_rec = np.where(S != 0, np.abs(W0), W0)
        self.register_buffer("mask_rec", torch.as_tensor(M, **kw))
        self.register_buffer("sign_rec", torch.as_tensor(S, **kw))
        self.theta_rec = nn.Parameter(torch.as_tensor(theta_rec, **kw))
        return S, M

    def _register_edge_index(self, post: np.ndarray, pre: np.ndarray, device: Any) -> None:
        self.register_buffer("rec_post", torch.as_tensor(post, dtype=torch.long, device=device))
        self.register_buffer("rec_pre", torch.as_tensor(pre, dtype=torch.long, device=device))

    def _setup_sparse_recurrent(self, circuit: Circuit, sign_constraint: str, allow_autapses: bool,
                                kw: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """Per-edge recurrent storage (``storage="sparse"``): ``theta_rec``, ``sign_rec``, ``mask_rec`` ``(nnz,)`` and
        the edge indices ``rec_post``, ``rec_pre`` (sorted by ``(post, pre)``), from the circuit's edge lists — the same
        edges, initial values and signs as the dense storage, and no ``N × N`` array."""
        post, pre, w0 = self._recurrent_edges(circuit, allow_autapses)
        S = self._edge_signs(circuit, pre, w0, sign_constraint)
        M = np.ones(post.size, dtype=bool)
        theta_rec = np.where(S != 0, np.abs(w0), w0)
        self._register_edge_index(post, pre, kw["device"])
        self.register_buffer("mask_rec", torch.as_tensor(M, **kw))
        self.register_buffer("sign_rec", torch.as_tensor(S, **kw))
        self.theta_rec = nn.Parameter(torch.as_tensor(theta_rec, **kw))
        self.weight_ops = SPARSE
        return S, M

    def _setup_type_shared(self, circuit: Circuit, allow_autapses: bool, gain_init: float,
                           kw: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """Type-shared recurrent weights (``parametrization="type_shared"``, the flyvis parametrisation):
        ``w_e = s_e · |g_{τ(pre_e), τ(post_e)}|`` with the circuit's signed edge weights ``s_e`` fixed (sign × synapse
        count × weight per synapse for a connectome) and one trainable gain ``g`` (``type_gain``) per
        (presynaptic type, postsynaptic type) pair that has an edge; ``|·|`` keeps the gains non-negative. Buffers:
        ``rec_post``, ``rec_pre``, ``edge_pair`` (the pair of each edge), ``edge_scale`` (``s_e``), ``sign_rec``;
        ``type_pairs`` lists the pairs (pre type, post type) in ``type_gain`` order."""
        post, pre, w0 = self._recurrent_edges(circuit, allow_autapses, warn=False)
        if not (isinstance(gain_init, (int, float)) and math.isfinite(gain_init) and gain_init >= 0):
            raise ValueError(f"type_gain_init must be a finite number >= 0, got {gain_init!r}")
        types = np.asarray([str(c) for c in circuit.cell_types], dtype=object)
        names, tid = np.unique(types.astype(str), return_inverse=True)
        C = len(names)
        pair_key = tid[pre] * C + tid[post]
        pairs, edge_pair = np.unique(pair_key, return_inverse=True)
        self.type_pairs = [(str(names[k // C]), str(names[k % C])) for k in pairs.tolist()]
        S = np.sign(w0)
        M = np.ones(post.size, dtype=bool)
        self.sign_constraint = "type_shared"
        self._register_edge_index(post, pre, kw["device"])
        self.register_buffer("edge_pair", torch.as_tensor(edge_pair.reshape(-1), dtype=torch.long,
                                                          device=kw["device"]))
        self.register_buffer("edge_scale", torch.as_tensor(w0, **kw))
        self.register_buffer("mask_rec", torch.as_tensor(M, **kw))
        self.register_buffer("sign_rec", torch.as_tensor(S, **kw))
        self.type_gain = nn.Parameter(torch.full((len(pairs),), float(gain_init), **kw))
        if self.storage == "sparse":
            self.weight_ops = SPARSE
        return S, M

    def type_shared_values(self) -> Tensor:
        """The per-edge recurrent weights ``s_e |g_pair(e)|`` ``(nnz,)`` of a type-shared model."""
        return self.edge_scale * _abs_grow(self.type_gain).index_select(0, self.edge_pair)

    def _setup_io(self, circuit: Circuit, S: np.ndarray, M: np.ndarray, *, w_in: Any, w_out: Any,
                  w_out_init: str, readout_bias: bool, gap_scale: float, w_in_init: str, input_channel_sign: Any,
                  kw: dict[str, Any]) -> None:
        """Input and readout weights, readout bias, gap junctions, and the constraint flags."""
        n = circuit.n

        # --- input weights (N, n_in)
        Min = np.ones((n, self.n_in), bool)
        if circuit.input_mask is not None:
            im = np.asarray(circuit.input_mask, bool)
            if im.ndim == 1:
                Min &= im[:, None]
            else:
                if im.shape != (n, self.n_in):
                    raise ValueError(f"circuit.input_mask has shape {im.shape}, expected ({n}, {self.n_in})")
                Min &= im
        Sin = np.zeros((n, self.n_in))
        if circuit.input_sign is not None:
            Sin = np.broadcast_to(np.asarray(circuit.input_sign, np.float64)[:, None], (n, self.n_in)).copy()
        if input_channel_sign is not None:  # Dale's law on the inputs: one sign per input channel (column)
            cs = np.asarray(input_channel_sign, dtype=np.float64)
            if cs.shape != (self.n_in,) or not np.isin(cs, (-1.0, 0.0, 1.0)).all():
                raise ValueError(f"input_channel_sign must be {self.n_in} values in {{+1, -1, 0}} (one per input "
                                 f"channel), got shape {cs.shape}")
            C = np.broadcast_to(cs[None, :], (n, self.n_in))
            clash = np.argwhere((Sin != 0) & (C != 0) & (Sin != C) & Min)
            if clash.size:
                j, k = clash[0]
                raise ValueError(f"input_channel_sign contradicts circuit.input_sign at {len(clash)} synapse(s), "
                                 f"first neuron {circuit.node_ids[j]!r} (sign {int(Sin[j, k])}) from input channel "
                                 f"{k} (sign {int(C[j, k])})")
            Sin = np.where(C != 0, C, Sin)
        Sin = Sin * Min
        w_in, name = (circuit.input_weights, "circuit.input_weights") if w_in is None else (w_in, "w_in")
        if w_in is None:  # drawn from torch's global RNG (torch.manual_seed makes it reproducible)
            win = _init_draw(w_in_init, (n, self.n_in), fan_in=self.n_in, fan_out=n, name="w_in_init")
        else:
            win = self._check_given(w_in, (n, self.n_in), Min, Sin, name)
        win = np.where(Min, win, 0.0)
        self.register_buffer("mask_in", torch.as_tensor(Min, **kw))
        self.register_buffer("sign_in", torch.as_tensor(Sin, **kw))
        self.theta_in = nn.Parameter(torch.as_tensor(np.where(Sin != 0, np.abs(win), win), **kw))

        # --- readout (n_out, N)
        Mout = np.ones((self.n_out, n), bool)
        if circuit.output_mask is not None:
            om = np.asarray(circuit.output_mask, bool)
            if om.ndim == 1:
                Mout &= om[None, :]
            else:
                if om.shape != (self.n_out, n):
                    raise ValueError(f"circuit.output_mask has shape {om.shape}, expected ({self.n_out}, {n})")
                Mout &= om
        Sout = np.zeros((self.n_out, n))
        if circuit.output_sign is not None:
            Sout = np.broadcast_to(np.asarray(circuit.output_sign, np.float64)[None, :], (self.n_out, n)).copy()
        Sout = Sout * Mout
        w_out, name = (circuit.output_weights, "circuit.output_weights") if w_out is None else (w_out, "w_out")
        if w_out is None:
            wout = _init_draw(w_out_init, (self.n_out, n), fan_in=n, fan_out=self.n_out, name="w_out_init")
        else:
            wout = self._check_given(w_out, (self.n_out, n), Mout, Sout, name)
        wout = np.where(Mout, wout, 0.0)
        self.register_buffer("mask_out", torch.as_tensor(Mout, **kw))
        self.register_buffer("sign_out", torch.as_tensor(Sout, **kw))
        self.theta_out = nn.Parameter(torch.as_tensor(np.where(Sout != 0, np.abs(wout), wout), **kw))
        if readout_bias:
            self.b_out = nn.Parameter(torch.zeros(self.n_out, **kw))
        else:
            self.register_parameter("b_out", None)
        self.register_parameter("b_rec", None)  # RateRNN may replace it

        # python flags for the fast paths of _constrain
        self._free = {k: bool((s == 0).all()) for k, s in (("rec", S), ("in", Sin), ("out", Sout))}
        self._fixed = {k: bool(((s != 0) | ~m).all()) for k, s, m in (("rec", S, M), ("in", Sin, Min),
                                                                       ("out", Sout, Mout))}

        # --- gap junctions: (N, N), or per edge (gap_post, gap_pre, gap_values) with sparse storage
        self._gap_per_edge = False
        if circuit.has_gap_junctions and gap_scale != 0 and self.storage == "sparse":
            g = sp.coo_array(circuit.gap_junctions(dense=False))
            gpost, gpre = np.asarray(g.row, dtype=np.int64), np.asarray(g.col, dtype=np.int64)
            gval = gap_scale * np.asarray(g.data, dtype=np.float64)
            keep = gval != 0
            order = np.lexsort((gpre[keep], gpost[keep]))
            self.register_buffer("gap_post", torch.as_tensor(gpost[keep][order], dtype=torch.long,
                                                             device=kw["device"]))
            self.register_buffer("gap_pre", torch.as_tensor(gpre[keep][order], dtype=torch.long, device=kw["device"]))
            self.register_buffer("gap_values", torch.as_tensor(gval[keep][order], **kw))
            self._gap_per_edge = True
            self._refresh_gap()
        elif circuit.has_gap_junctions and gap_scale != 0:
            G = gap_scale * circuit.gap_junctions(dense=True)
            self.register_buffer("gap", torch.as_tensor(G, **kw))
        else:
            self.register_buffer("gap", None)

    @staticmethod
    def _check_given(w: Any, shape: tuple, M: np.ndarray, S: np.ndarray, name: str) -> np.ndarray:
        a = np.asarray(w.detach().cpu() if isinstance(w, Tensor) else w, dtype=np.float64)
        if a.shape != shape:
            raise ValueError(f"{name} has shape {a.shape}, expected {shape}")
        if (a[~M] != 0).any():
            raise ValueError(f"{name} is nonzero outside the circuit's input/output mask")
        if ((a * S) < 0).any():
            raise ValueError(f"{name} has entries whose sign contradicts the circuit's input/output sign")
        return a

    def _constrain(self, theta: Tensor, mask: Tensor, sign: Tensor, key: str) -> Tensor:
        if self._free[key]:
            return mask * theta
        if self._fixed[key]:
            return sign * _abs_grow(theta)  # sign is already 0 outside the mask
        return mask * torch.where(sign == 0, theta, sign * _abs_grow(theta))

    def effective_weights(self) -> EffectiveWeights:
        """The weights in use: ``(W_in (N, n_in), W_rec (N, N), W_out (n_out, N), b_out, b_rec)``; with
        ``storage="sparse"``, ``W_rec`` is a :class:`~spikelearn.weights.SparseWeights` (one value per edge)."""
        if self.parametrization == "type_shared":
            W_rec: Any = SparseWeights(self.type_shared_values(), index=self._edge_index())
            if self.storage == "dense":
                W_rec = W_rec.to_dense()
        else:
            W_rec = self._constrain(self.theta_rec, self.mask_rec, self.sign_rec, "rec")
            if self.storage == "sparse":
                W_rec = SparseWeights(W_rec, index=self._edge_index())
        return EffectiveWeights(
            W_in=self._constrain(self.theta_in, self.mask_in, self.sign_in, "in"),
            W_rec=W_rec,
            W_out=self._constrain(self.theta_out, self.mask_out, self.sign_out, "out"),
            b_out=self.b_out, b_rec=self.b_rec)

    def _refresh_gap(self) -> None:
        """``self.gap`` as :class:`~spikelearn.weights.SparseWeights` over the per-edge gap buffers (after a build,
        a device or dtype change)."""
        object.__setattr__(self, "gap", SparseWeights(self.gap_values,
                                                      index=EdgeIndex(self.gap_post, self.gap_pre, (self.n, self.n))))

    def _apply(self, fn: Any, recurse: bool = True) -> Any:  # type: ignore[override]
        out = super()._apply(fn, recurse)
        if getattr(self, "_gap_per_edge", False):  # the per-edge gap conductances follow their moved buffers
            self._refresh_gap()
        return out

    def _edge_index(self) -> EdgeIndex:
        """The recurrent edges' structure, kept between calls (CSR pointers and transpose computed once; rebuilt when
        the index buffers change, e.g. after ``.to(device)``)."""
        key = (self.rec_post.data_ptr(), self.rec_pre.data_ptr(), str(self.rec_post.device))
        cached = getattr(self, "_edge_index_cache", None)
        if cached is None or cached[0] != key:
            cached = (key, EdgeIndex(self.rec_post, self.rec_pre, (self.n, self.n)))
            self._edge_index_cache = cached
        return cached[1]

    def scaled_recurrent(self, W_rec: Any, c_in: Tensor) -> Any:
        """``diag(c_in) W_rec`` in the model's storage (``c_in`` ``(N,)``): a dense matrix or per-edge values."""
        if isinstance(W_rec, SparseWeights):
            return W_rec.with_values(c_in.expand(self.n).index_select(0, W_rec.post) * W_rec.values)
        return c_in[:, None] * W_rec

    def require_dense(self, what: str) -> None:
        """Refuse ``what`` on sparse storage, naming it (the parts of the package not yet ported, issue 19)."""
        if self.storage != "dense":
            raise NotImplementedError(f"{what} is not supported with storage='sparse' yet (issue 19); build the "
                                      f"model with storage='dense'")

    def param_grads(self, dW: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Map gradients w.r.t. effective weights (keys of :class:`EffectiveWeights`) to gradients w.r.t. the
        parameters (keys of ``named_parameters()``), by the chain rule through :meth:`effective_weights`."""
        with torch.enable_grad():
            eff = self.effective_weights()._asdict()
            outs, gouts = [], []
            for k, g in dW.items():
                if k not in eff or eff[k] is None:
                    raise KeyError(f"{k!r} is not an effective weight of this model")
                e = eff[k].values if isinstance(eff[k], SparseWeights) else eff[k]  # per-edge storage
                gv: Tensor = g.values if isinstance(g, SparseWeights) else g  # type: ignore[assignment]
                outs.append(e)
                gouts.append(gv.to(e.dtype))
            names = [nm for nm, p in self.named_parameters() if p.requires_grad]
            params = [p for _, p in self.named_parameters() if p.requires_grad]
            grads = torch.autograd.grad(outs, params, gouts, allow_unused=True)
        return {nm: g for nm, g in zip(names, grads) if g is not None}

    @property
    def dtype(self) -> torch.dtype:
        return self.theta_in.dtype

    @property
    def device(self) -> torch.device:
        return self.theta_in.device

    def _prep_x(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor of shape (T, B, {self.n_in}), got {type(x).__name__} "
                            f"(use torch.as_tensor)")
        if x.dim() != 3 or x.shape[-1] != self.n_in:
            raise ValueError(f"x must have shape (T, B, {self.n_in}), got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError("x has no time steps (T = 0)")
        return x.to(device=self.device, dtype=self.dtype)

    # --------------------------------------------------------------------------------- save / load
    def _set_initial_state_options(self, std: float, steps: int, seed: int) -> None:
        if not (math.isfinite(std) and std >= 0):
            raise ValueError(f"init_state_std must be finite and >= 0, got {std!r}")
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
            raise ValueError(f"init_relax_steps must be a non-negative integer, got {steps!r}")
        self.init_state_std, self.init_relax_steps, self.init_seed = float(std), int(steps), int(seed)

    def _relaxed(self, state: Any, batch_size: int) -> Any:
        """``state`` run for ``init_relax_steps`` steps without input (no gradient), detached."""
        if self.init_relax_steps:
            with torch.no_grad():
                x0 = torch.zeros(self.init_relax_steps, batch_size, self.n_in, dtype=self.dtype, device=self.device)
                state = self(x0, state=state).state
        return type(state)(*(None if t is None else t.detach() for t in state))

    def _initial_draw(self, batch_size: int, scale: Any) -> Tensor:
        g = torch.Generator().manual_seed(self.init_seed)
        draw = torch.randn(batch_size, self.n, generator=g, dtype=torch.float64)
        return (self.init_state_std * draw).to(dtype=self.dtype, device=self.device) * scale

    def _store_config(self, **config: Any) -> None:
        self._config = config

    def save(self, path: str | Path) -> None:
        """Write one portable file: state_dict, constructor configuration and the circuit
        (loadable with ``torch.load(..., weights_only=True)``)."""
        cfg = dict(self._config)
        cfg["dtype"] = str(self.dtype).replace("torch.", "")
        cfg.pop("device", None)
        payload = {
            "format": _FORMAT,
            "class": type(self).__name__,
            "config": _to_config_value(cfg),
            "circuit": circuit_to_dict(self.circuit),
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
        }
        torch.save(payload, str(path))

    @classmethod
    def load(cls, path: str | Path, map_location: Any = None) -> "_CircuitRNN":
        """Load a model written by :meth:`save` (onto ``map_location``, default CPU)."""
        model = load(path, map_location=map_location)
        if not isinstance(model, cls):
            raise TypeError(f"{path} holds a {type(model).__name__}, not a {cls.__name__}")
        return model

    def extra_repr(self) -> str:
        return f"N={self.n}, n_in={self.n_in}, n_out={self.n_out}, sign_constraint={self.sign_constraint!r}"


# ---------------------------------------------------------------------------------------------- spiking
class SpikingRNN(_CircuitRNN):
    """LIF/ALIF recurrent network on a circuit (ALGORITHMS.md §1.1) with a leaky linear readout.

    Args:
        circuit: wiring; ``W_rec`` is initialised from ``circuit.weights``; ``circuit.neuron_params`` entries
            ``tau_mem_ms``, ``tau_adapt_ms``, ``v_th``, ``beta``, ``n_ref`` override the arguments below.
        n_in, n_out: input and output sizes.
        scaling: ``"A"`` or ``"B"`` (§1.1).
        tau_mem_ms, tau_adapt_ms: time constants (scalar or ``(N,)``).
        tau_syn_ms: synaptic-current time constant τ_s (scalar or ``(N,)``, per postsynaptic neuron; also read
            from ``circuit.neuron_params``). ``0`` (default): no synaptic filter, the drive reaches ``v`` in the
            step it arrives (§1.1). ``> 0``: current-based synapses ``i^t = α_s i^{t-1} + c_in (W_in x^t +
            W_rec z^{t-1})``, ``v^t = α v^{t-1} + i^t + … `` (:mod:`spikelearn.neurons.lif`); the state and the
            record then carry ``i_syn``.
        v_th: baseline threshold; default ``None`` = 0.6 for scaling A (e-prop evidence accumulation),
            0.01 for scaling B (MDGL).
        beta: adaptation strength of the ALIF neurons; default ``None`` = 1.8 in scaling-B units (MDGL), i.e.
            ``1.8`` under B and ``1.8 (1−ρ)/(1−α)`` under A (the A↔B map, as in the e-prop tutorial). A scalar
            applies to the last ``n_adaptive`` neurons; an ``(N,)`` array gives every neuron's β directly.
        n_adaptive: number of ALIF neurons (the last ones); the others are LIF (β = 0). Default 0.
        n_ref: refractory period in steps; refractory: ``"lsnn"`` (blocks ``n_ref`` steps) or ``"counter"``.
        tau_out_ms: readout filter κ = exp(−dt/τ_out).
        readout: ``"filtered_spikes"`` (``y = W_out z̄ + b``, ``z̄ = κ z̄ + c_κ z``) or ``"filtered_current"``
            (``y_c = κ y_c + c_κ W_out z``, ``y = y_c + b``).
        init_state_std, init_relax_steps, init_seed: the state every trial starts from (:meth:`init_state`).
            Default (0, 0): at rest. Otherwise ``v ~ init_state_std · v_th · N(0, 1)`` (a fixed draw: the generator
            is seeded with ``init_seed`` at every call), then ``init_relax_steps`` steps without input with the
            current weights — ongoing activity before the trial (spikes, adaptation, refractoriness, synaptic
            currents and readout filters included). A constant for every rule (no gradient into the relaxation).
        readout_norm: ``c_κ = 1−κ`` (default; the released code's normalised filter) or, with ``False``,
            ``c_κ = 1`` (the paper form ``y = κ y + W_out z + b``; ALGORITHMS.md §1.1, §11 item 3). The two differ
            by the constant factor (1−κ) in the readout, and every rule's readout credit uses the same ``c_κ``.
        surrogate: name, config or :class:`~spikelearn.neurons.Surrogate` (default ``"eprop"``, γ_pd = 0.3).
        detach_reset: stop gradients through the reset term.
        reset: ``"subtract"`` (default: ``v^t = α v^{t-1} + … − v_th z^{t-1}``, §1.1) or ``"zero"`` (snnTorch's
            ``reset_mechanism="zero"``: ``v^t = α (1 − z^{t-1}) v^{t-1} + …``, the membrane is set to 0 before the
            leak of the step after a spike; :mod:`spikelearn.neurons.lif`).
        dt_ms: step. gap_scale: multiplier of the circuit's gap conductances (0 disables them).
        sign_constraint, allow_autapses, w_in, w_out, w_out_init, w_in_init, input_channel_sign, readout_bias: see
            the module docstring.
        storage: ``"dense"`` (default: ``W_rec`` an ``(N, N)`` matrix), ``"sparse"`` (one value per edge,
            :class:`~spikelearn.weights.SparseWeights`; no ``N × N`` array — for connectome-scale circuits) or
            ``"auto"`` (sparse below :data:`AUTO_SPARSE_DENSITY` edges per ``N²``; gap junctions are then per edge too). Both
            storages give the same numbers (to rounding) for every rule.
        parametrization: ``"per_edge"`` (default: one trainable weight per edge) or ``"type_shared"`` (the flyvis
            parametrisation: ``w_e = s_e |g_{τ(pre), τ(post)}|`` with the circuit's signed edge weights ``s_e`` fixed
            and one trainable gain per connected (pre type, post type) pair, ``type_gain``, initial value
            ``type_gain_init``; the circuit's ``cell_types`` define the types).
        dtype: default float32. device: ``None`` (CPU), a device, or ``"auto"`` (CUDA when available).
    """

    # per-neuron parameter buffers (declared for the type checker; registered in __init__)
    tau_mem_ms: Tensor
    tau_adapt_ms: Tensor
    v_th: Tensor
    beta: Tensor
    n_ref: Tensor
    tau_syn_ms: Tensor


    def __init__(self, circuit: Circuit, n_in: int, n_out: int, *, scaling: str = "A",
                 tau_mem_ms: Any = 20.0, tau_adapt_ms: Any = 2000.0, tau_syn_ms: Any = 0.0, v_th: Any = None,
                 beta: Any = None, n_adaptive: int = 0, n_ref: Any = 5, refractory: str = "lsnn",
                 tau_out_ms: float = 20.0, readout: str = "filtered_spikes", readout_norm: bool = True,
                 surrogate: Any = "eprop", detach_reset: bool = False, reset: str = "subtract", dt_ms: float = 1.0,
                 gap_scale: float = 1.0, sign_constraint: str = "auto", allow_autapses: bool = False,
                 w_in: Any = None, w_out: Any = None, w_out_init: str = "glorot", w_in_init: str = "normal",
                 input_channel_sign: Any = None, init_state_std: float = 0.0, init_relax_steps: int = 0,
                 init_seed: int = 0, readout_bias: bool = True, storage: str = "dense",
                 parametrization: str = "per_edge", type_gain_init: float = 1.0, dtype: Any = None,
                 device: Any = None) -> None:
        super().__init__()
        self._store_config(n_in=n_in, n_out=n_out, scaling=scaling, tau_mem_ms=tau_mem_ms,
                           tau_adapt_ms=tau_adapt_ms, tau_syn_ms=tau_syn_ms, v_th=v_th, beta=beta,
                           n_adaptive=n_adaptive, n_ref=n_ref,
                           refractory=refractory, tau_out_ms=tau_out_ms, readout=readout,
                           readout_norm=readout_norm, surrogate=make_surrogate(surrogate),
                           detach_reset=detach_reset, reset=reset, dt_ms=dt_ms,
                           gap_scale=gap_scale, sign_constraint=sign_constraint, allow_autapses=allow_autapses,
                           w_in=w_in, w_out=w_out, w_out_init=w_out_init, w_in_init=w_in_init,
                           input_channel_sign=input_channel_sign, init_state_std=init_state_std,
                           init_relax_steps=init_relax_steps, init_seed=init_seed, readout_bias=readout_bias,
                           storage=storage, parametrization=parametrization, type_gain_init=type_gain_init,
                           dtype=dtype, device=device)
        self._set_initial_state_options(init_state_std, init_relax_steps, init_seed)
        if scaling not in ("A", "B"):
            raise ValueError(f"scaling must be 'A' or 'B', got {scaling!r}")
        if refractory not in ("lsnn", "counter"):
            raise ValueError(f"refractory must be 'lsnn' or 'counter', got {refractory!r}")
        if reset not in ("subtract", "zero"):
            raise ValueError(f"reset must be 'subtract' or 'zero', got {reset!r}")
        self.reset = reset
        if readout not in ("filtered_spikes", "filtered_current"):
            raise ValueError(f"readout must be 'filtered_spikes' or 'filtered_current', got {readout!r}")
        dt, dev = _resolve_dtype(dtype), _resolve_device(device)
        self._setup_weights(circuit, n_in, n_out, sign_constraint=sign_constraint, allow_autapses=allow_autapses,
                            w_in=w_in, w_out=w_out, w_out_init=w_out_init, w_in_init=w_in_init,
                            readout_bias=readout_bias, gap_scale=gap_scale, dtype=dt, device=dev,
                            input_channel_sign=input_channel_sign, storage=storage,
                            parametrization=parametrization, type_gain_init=type_gain_init)
        n = circuit.n
        self.scaling, self.refractory, self.readout = scaling, refractory, readout
        if not isinstance(readout_norm, (bool, np.bool_)):
            raise ValueError(f"readout_norm must be True or False, got {readout_norm!r}")
        self.readout_norm = bool(readout_norm)
        if not (math.isfinite(dt_ms) and dt_ms > 0):
            raise ValueError(f"dt_ms must be finite and > 0, got {dt_ms!r}")
        if not (math.isfinite(tau_out_ms) and tau_out_ms > 0):
            raise ValueError(f"tau_out_ms must be finite and > 0 (readout filter κ = exp(−dt/τ_out)), got "
                             f"{tau_out_ms!r}")
        self.dt_ms, self.tau_out_ms, self.detach_reset = float(dt_ms), float(tau_out_ms), bool(detach_reset)
        self.surrogate = make_surrogate(surrogate)

        npar = circuit.neuron_params
        tau_m = _per_neuron(npar.get("tau_mem_ms", tau_mem_ms), n, "tau_mem_ms")
        tau_a = _per_neuron(npar.get("tau_adapt_ms", tau_adapt_ms), n, "tau_adapt_ms")
        if v_th is None:
            v_th = 0.6 if scaling == "A" else 0.01
        vth = _per_neuron(npar.get("v_th", v_th), n, "v_th")
        if "beta" in npar:
            b = _per_neuron(npar["beta"], n, "beta")
        else:
            if beta is None:
                alpha, rho = np.exp(-dt_ms / tau_m), np.exp(-dt_ms / tau_a)
                b = 1.8 * ((1 - rho) / (1 - alpha) if scaling == "A" else np.ones(n))
            else:
                b = _per_neuron(beta, n, "beta")
            if np.ndim(beta) == 0:  # type: ignore[arg-type]  # scalar (or default): only the last n_adaptive neurons adapt
                if not 0 <= int(n_adaptive) <= n:
                    raise ValueError(f"n_adaptive must be in [0, {n}], got {n_adaptive}")
                b = b * (np.arange(n) >= n - int(n_adaptive))
        nref = _per_neuron(npar.get("n_ref", n_ref), n, "n_ref")
        if (nref < 0).any() or (nref != np.round(nref)).any():
            raise ValueError("n_ref must be non-negative integers")
        if (tau_m <= 0).any() or (tau_a <= 0).any() or (vth <= 0).any():
            raise ValueError("tau_mem_ms, tau_adapt_ms and v_th must be positive")
        tau_s = _per_neuron(npar.get("tau_syn_ms", tau_syn_ms), n, "tau_syn_ms")
        ok = np.isfinite(tau_s) & (tau_s >= 0)
        if not ok.all():
            raise ValueError(f"tau_syn_ms must be finite and >= 0 (0 = no synaptic filter), got "
                             f"{describe_bad(tau_s, torch.as_tensor(ok))}")
        kw: dict[str, Any] = dict(dtype=dt, device=dev)
        for name, val in (("tau_mem_ms", tau_m), ("tau_adapt_ms", tau_a), ("v_th", vth), ("beta", b),
                          ("n_ref", nref), ("tau_syn_ms", tau_s)):
            self.register_buffer(name, torch.as_tensor(val, **kw))
        if self.gap is not None:
            alpha = np.exp(-dt_ms / tau_m)
            G0: Any = self.gap
            if isinstance(G0, SparseWeights):  # per edge: a scipy matrix (no N x N array above 4000 neurons)
                G0 = sp.csr_array((G0.values.detach().cpu().numpy(), (G0.post.cpu().numpy(), G0.pre.cpu().numpy())),
                                  shape=G0.shape)
            else:
                G0 = G0.detach().cpu().numpy()
            _check_gap_stability(G0, alpha, 1 - alpha if scaling == "B" else 1.0, gap_scale)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):  # type: ignore[override]
        # files written before current-based synapses existed have no tau_syn_ms buffer: they had none (τ_s = 0)
        key = prefix + "tau_syn_ms"
        if key not in state_dict and (prefix + "tau_mem_ms") in state_dict:
            state_dict[key] = torch.zeros_like(self.tau_syn_ms)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def extra_repr(self) -> str:
        extra = f", scaling={self.scaling!r}, n_adaptive={int((self.beta != 0).sum())}"
        if self.synaptic:
            lo, hi = float(self.tau_syn_ms.min()), float(self.tau_syn_ms.max())
            extra += f", tau_syn_ms={lo:g}" if lo == hi else f", tau_syn_ms=[{lo:g}, {hi:g}]"
        if self.reset != "subtract":
            extra += f", reset={self.reset!r}"
        return super().extra_repr() + extra

    # ------------------------------------------------------------------ pieces
    def constants(self) -> ALIFConstants:
        """Per-neuron step constants ``(N,)`` from the parameter buffers (the neuron layer's
        :func:`~spikelearn.neurons.lif.alif_constants`, as :meth:`LIFParams.constants` derives them)."""
        return alif_constants(tau_mem_ms=self.tau_mem_ms, tau_adapt_ms=self.tau_adapt_ms, v_th=self.v_th,
                              beta=self.beta, n_ref=self.n_ref, tau_syn_ms=self.tau_syn_ms, dt_ms=self.dt_ms,
                              scaling=self.scaling, refractory=self.refractory, detach_reset=self.detach_reset,
                              reset=self.reset)

    @property
    def synaptic(self) -> bool:
        """Whether synapses are current-based (any ``tau_syn_ms > 0``)."""
        return bool((self.tau_syn_ms > 0).any())

    @property
    def kappa(self) -> float:
        """Readout filter factor κ = exp(−dt/τ_out)."""
        return math.exp(-self.dt_ms / self.tau_out_ms)

    @property
    def c_kappa(self) -> float:
        """Input factor of the readout filter: ``1 − κ`` (``readout_norm``, default) or ``1``."""
        return 1.0 - self.kappa if self.readout_norm else 1.0

    def init_state(self, batch_size: int) -> SpikingState:
        """The state every trial starts from: at rest (no spikes, not refractory, empty filters and synaptic
        currents) by default; with ``init_state_std``/``init_relax_steps`` a fixed random draw of ``v`` relaxed
        without input with the current weights (class docstring; detached)."""
        z = torch.zeros(batch_size, self.n, dtype=self.dtype, device=self.device)
        rest = SpikingState(v=z, a=z, z=z, ref=z, z_filt=z,
                            y_filt=torch.zeros(batch_size, self.n_out, dtype=self.dtype, device=self.device),
                            i_syn=z)
        if self.init_state_std == 0.0 and self.init_relax_steps == 0:
            return rest
        return self._relaxed(rest._replace(v=self._initial_draw(batch_size, self.v_th)), batch_size)

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor, state: SpikingState | None = None, record: bool = False,
                i_ext: Tensor | None = None) -> ModelOutput:
        """Run ``T`` steps.

        Args:
            x: ``(T, B, n_in)`` input. state: initial :class:`SpikingState` (default zeros).
            record: also return a :class:`SpikingRecord`.
            i_ext: optional ``(T, B, N)`` (or broadcastable) current injected straight into the membrane, in units
                of ``v`` per step: ``v^t = … + i_ext^t`` (not scaled by ``c_in``, not filtered by synapses, also
                after a reset to zero) — an electrode, a stimulation protocol, exploration noise; differentiable.

        Returns:
            :class:`ModelOutput` ``(y (T, B, n_out), final SpikingState, SpikingRecord | None)``.
        """
        x = self._prep_x(x)
        T, B, _ = x.shape
        ext = _check_i_ext(i_ext, T, B, self)
        if state is None:
            state = self.init_state(B)
        W = self.effective_weights()
        c = self.constants()
        scaled = self.scaling == "B"
        W_in = c.c_in[:, None] * W.W_in if scaled else W.W_in
        if self.storage == "sparse":  # per-edge storage: the recurrent input through the weight operations
            W_sc = self.scaled_recurrent(W.W_rec, c.c_in) if scaled else W.W_rec
            W_sp: Any = W_sc
            W_recT: Any = lambda z: SPARSE.product(W_sp, z)  # noqa: E731
        else:
            W_recT = (c.c_in[:, None] * W.W_rec if scaled else W.W_rec).T
        ff = time_linear(x, W_in)  # (T, B, N): all input currents in one batched GEMM
        G: Any = None
        gsum = None
        if self.gap is not None:
            G = self.scaled_recurrent(self.gap, c.c_in) if scaled else self.gap
            gsum = self.weight_ops.row_sums(G)
            if isinstance(G, SparseWeights):
                G_sp = G
                G = lambda v: SPARSE.product(G_sp, v)  # noqa: E731
        kappa = self.kappa
        omk = self.c_kappa
        norm = self.readout_norm
        surr = self.surrogate
        syn = c.synaptic
        # the neuron state; i_syn is carried unchanged without current-based synapses
        s = ALIFState(state.v, state.a, state.z, state.ref,
                      state.i_syn if state.i_syn is not None else torch.zeros_like(state.v))
        zf = state.z_filt
        keep_zf = record or self.readout == "filtered_spikes"
        keep_z = record or self.readout == "filtered_current"
        zs: list[Tensor] = []
        zfs: list[Tensor] = []
        vs: list[Tensor] = []
        as_: list[Tensor] = []
        thrs: list[Tensor] = []
        psis: list[Tensor] = []
        refs: list[Tensor] = []
        isyns: list[Tensor] = []
        for t, ff_t in enumerate(ff.unbind(0)):
            # the neuron layer's step: c_in (W_in x^t + W_rec z^{t-1}) [→ synaptic current] + gap + i_ext, ALIF update
            s, aux = alif_recurrent_update(c, s, ff_t, W_recT, surr, g_gap=G, g_sum=gsum,
                                           i_ext=None if ext is None else ext[t], need_aux=record)
            if syn and record:
                assert s.i_syn is not None
                isyns.append(s.i_syn)
            zf = torch.lerp(s.z, zf, kappa) if norm else torch.add(s.z, zf, alpha=kappa)  # κ z̄ + c_κ z, one node
            if keep_zf:
                zfs.append(zf)
            if keep_z:
                zs.append(s.z)
            if record:
                assert aux is not None
                vs.append(s.v)
                as_.append(s.a)
                thrs.append(aux.thr)
                psis.append(aux.psi)
                refs.append(aux.refractory)
        W_out = W.W_out
        if self.readout == "filtered_spikes":
            Zf = torch.stack(zfs)
            cur = time_linear(Zf, W_out)
            y_filt = cur[-1] if T else state.y_filt
        else:
            cur_all = time_linear(torch.stack(zs), W_out)
            yf = state.y_filt
            ys = []
            for c_t in cur_all.unbind(0):
                yf = torch.add(yf * kappa, c_t, alpha=omk)
                ys.append(yf)
            cur = torch.stack(ys)
            y_filt = yf
        y = cur + W.b_out if W.b_out is not None else cur
        final = SpikingState(v=s.v, a=s.a, z=s.z, ref=s.ref, z_filt=zf, y_filt=y_filt, i_syn=s.i_syn)
        rec = None
        if record:
            rec = SpikingRecord(x=x, z=torch.stack(zs), v=torch.stack(vs), a=torch.stack(as_),
                                thr=torch.stack(thrs), psi=torch.stack(psis), z_filt=torch.stack(zfs),
                                ref=torch.stack(refs),
                                i_syn=torch.stack(isyns) if syn else x.new_zeros(()).expand(T, B, self.n))
        return ModelOutput(y=y, state=final, record=rec)


# ---------------------------------------------------------------------------------------------- rate
_DEFAULT_ACT = {"pre_activation": "tanh", "murray": "tanh", "relu_lif": "relu", "richlazy": "relu"}


class RateRNN(_CircuitRNN):
    """Leaky rate RNN on a circuit (ALGORITHMS.md §1.2), readout ``y^t = W_out r^t + b``.

    Args:
        circuit: wiring; ``circuit.neuron_params["tau_ms"]`` overrides ``tau_ms`` per neuron.
        n_in, n_out: input and output sizes.
        form: ``"pre_activation"`` (R1), ``"murray"`` (R2), ``"relu_lif"`` (R3 ModProp/BiolHess),
            ``"richlazy"`` (R3 BioRNN_RichLazy); see :mod:`spikelearn.neurons.rate`.
        activation: ``"tanh"`` | ``"relu"`` | ``"retanh"`` | ``"identity"``; default tanh for R1/R2, relu for R3.
        tau_ms, dt_ms: γ = dt/τ (α = exp(−dt/τ) for ``relu_lif``). Defaults 100 ms and 10 ms (γ = 0.1).
        thr: activation offset of ``relu_lif``.
        hidden_bias: add a trainable bias ``b_rec`` to the drive (``b`` of R1).
        readout_from: ``"r"`` (rates, default) or ``"h"`` (pre-activation).
        gap_scale: gap-junction current ``Σ_i G_ji (h_i^{t-1} − h_j^{t-1})`` added to the drive.
        init_state_std, init_relax_steps, init_seed: the initial state of every trial (:meth:`init_state`). Default
            (0, 0): at rest, ``h = 0``. Otherwise ``h ~ init_state_std · N(0, 1)`` (a fixed draw: the generator is
            seeded with ``init_seed`` at every call), then ``init_relax_steps`` autonomous steps (no input) with the
            current weights — the "initial state relaxed for 100 autonomous steps" of the gradient-flossing code
            (ALGORITHMS.md §7.2). The state is a constant for every rule (no gradient flows into the relaxation),
            and every rule starts from it, as do the Lyapunov tools.
        sign_constraint, allow_autapses, w_in, w_out, w_out_init, w_in_init, input_channel_sign, readout_bias, storage,
            parametrization, type_gain_init, dtype, device: as :class:`SpikingRNN`.
    """

    tau_ms: Tensor  # per-neuron time constants (buffer, registered in __init__)


    def __init__(self, circuit: Circuit, n_in: int, n_out: int, *, form: str = "pre_activation",
                 activation: str | None = None, tau_ms: Any = 100.0, dt_ms: float = 10.0, thr: float = 0.0,
                 hidden_bias: bool = False, readout_from: str = "r", readout_bias: bool = True,
                 gap_scale: float = 1.0, sign_constraint: str = "auto", allow_autapses: bool = False,
                 w_in: Any = None, w_out: Any = None, w_out_init: str = "glorot", w_in_init: str = "normal",
                 input_channel_sign: Any = None, init_state_std: float = 0.0, init_relax_steps: int = 0,
                 init_seed: int = 0, storage: str = "dense", parametrization: str = "per_edge",
                 type_gain_init: float = 1.0, dtype: Any = None, device: Any = None) -> None:
        super().__init__()
        if form not in RATE_FORMS:
            raise ValueError(f"form must be one of {RATE_FORMS}, got {form!r}")
        activation = activation or _DEFAULT_ACT[form]
        if readout_from not in ("r", "h"):
            raise ValueError(f"readout_from must be 'r' or 'h', got {readout_from!r}")
        self._store_config(n_in=n_in, n_out=n_out, form=form, activation=activation, tau_ms=tau_ms, dt_ms=dt_ms,
                           thr=thr, hidden_bias=hidden_bias, readout_from=readout_from, readout_bias=readout_bias,
                           gap_scale=gap_scale, sign_constraint=sign_constraint, allow_autapses=allow_autapses,
                           w_in=w_in, w_out=w_out, w_out_init=w_out_init, w_in_init=w_in_init,
                           input_channel_sign=input_channel_sign, init_state_std=init_state_std,
                           init_relax_steps=init_relax_steps, init_seed=init_seed, storage=storage,
                           parametrization=parametrization, type_gain_init=type_gain_init, dtype=dtype,
                           device=device)
        self._set_initial_state_options(init_state_std, init_relax_steps, init_seed)
        dt, dev = _resolve_dtype(dtype), _resolve_device(device)
        self._setup_weights(circuit, n_in, n_out, sign_constraint=sign_constraint, allow_autapses=allow_autapses,
                            w_in=w_in, w_out=w_out, w_out_init=w_out_init, w_in_init=w_in_init,
                            readout_bias=readout_bias, gap_scale=gap_scale, dtype=dt, device=dev,
                            input_channel_sign=input_channel_sign, storage=storage,
                            parametrization=parametrization, type_gain_init=type_gain_init)
        self.form, self.activation, self.dt_ms, self.thr = form, activation, float(dt_ms), float(thr)
        self.readout_from = readout_from
        tau = _per_neuron(circuit.neuron_params.get("tau_ms", tau_ms), circuit.n, "tau_ms")
        RateParams(form=form, activation=activation, dt_ms=dt_ms, thr=thr, tau_ms=tau)  # type: ignore[arg-type]  # validates (τ > 0, dt ≤ τ)
        self.register_buffer("tau_ms", torch.as_tensor(tau, dtype=dt, device=dev))
        if hidden_bias:
            self.b_rec = nn.Parameter(torch.zeros(circuit.n, dtype=dt, device=dev))

    def params(self) -> RateParams:
        """The :class:`RateParams` of this network (``tau_ms`` per neuron)."""
        return RateParams(tau_ms=self.tau_ms, dt_ms=self.dt_ms, form=self.form,  # type: ignore[arg-type]
                          activation=self.activation, thr=self.thr)

    def constants(self) -> RateConstants:
        return self.params().constants(dtype=self.dtype, device=self.device)

    def init_state(self, batch_size: int) -> RateState:
        """The state every trial starts from: at rest (``h = 0``, ``r = f(0 − thr)``) by default; with
        ``init_state_std``/``init_relax_steps`` a fixed random draw relaxed autonomously with the current weights
        (class docstring; detached)."""
        rest = init_rate_state(batch_size, self.n, dtype=self.dtype, device=self.device, params=self.params())
        if self.init_state_std == 0.0 and self.init_relax_steps == 0:
            return rest

        h = self._initial_draw(batch_size, 1.0)
        f = activation(self.activation)
        return self._relaxed(RateState(h=h, r=f(h - self.thr) if self.form == "relu_lif" else f(h)), batch_size)

    def forward(self, x: Tensor, state: RateState | None = None, record: bool = False,
                i_ext: Tensor | None = None) -> ModelOutput:
        """Run ``T`` steps.

        Args:
            x: ``(T, B, n_in)``. state: initial :class:`~spikelearn.neurons.RateState` (default
                :meth:`init_state`). record: also return a :class:`RateRecord`.
            i_ext: optional ``(T, B, N)`` (or broadcastable) input added straight to the pre-activation ``h^t``
                (not scaled by ``c_in``) — a stimulation protocol or exploration noise; differentiable.

        Returns:
            :class:`ModelOutput` ``(y (T, B, n_out), final RateState, RateRecord | None)``.
        """
        x = self._prep_x(x)
        T, B, _ = x.shape
        ext = _check_i_ext(i_ext, T, B, self)
        if state is None:
            state = self.init_state(B)
        W = self.effective_weights()
        c = self.constants()
        ci = c.c_in[:, None]
        ff = time_linear(x, ci * W.W_in)
        if W.b_rec is not None:
            ff = ff + c.c_in * W.b_rec
        W_sc = self.scaled_recurrent(W.W_rec, c.c_in)
        W_recT = None if self.storage == "sparse" else W_sc.T
        gap: Any = self.gap
        G_sp: Any = None
        if gap is not None:
            if isinstance(gap, SparseWeights):  # per-edge conductances
                G_sp = self.scaled_recurrent(gap, c.c_in)
                gsum = SPARSE.row_sums(G_sp)
            else:
                G = ci * gap
                GT, gsum = G.T, G.sum(1)
        s = RateState(state.h, state.r)
        keep_r = record or self.readout_from == "r"
        keep_h = record or self.readout_from == "h"
        rs: list[Tensor] = []
        hs: list[Tensor] = []
        fps: list[Tensor] = []
        for t, ff_t in enumerate(ff.unbind(0)):
            # c_in (W_in x^t + b + W_rec r^{t-1})
            drive = torch.addmm(ff_t, s.r, W_recT) if W_recT is not None else ff_t + SPARSE.product(W_sc, s.r)
            if gap is not None:
                drive = drive + ((s.h @ GT if G_sp is None else SPARSE.product(G_sp, s.h)) - s.h * gsum)
            if ext is not None:
                drive = drive + ext[t]
            s, aux = rate_update(c, s, drive, need_aux=record)
            if keep_r:
                rs.append(s.r)
            if keep_h:
                hs.append(s.h)
            if record:
                assert aux is not None
                fps.append(aux.fprime)
        R = torch.stack(rs) if keep_r else None
        H = torch.stack(hs) if keep_h else None
        read = R if self.readout_from == "r" else H
        assert read is not None
        y = time_linear(read, W.W_out)
        if W.b_out is not None:
            y = y + W.b_out
        rec = None
        if record:
            assert H is not None and R is not None
            rec = RateRecord(x=x, h=H, r=R, fprime=torch.stack(fps))
        return ModelOutput(y=y, state=s, record=rec)


# ---------------------------------------------------------------------------------------------- load
_CLASSES = {"SpikingRNN": SpikingRNN, "RateRNN": RateRNN}


def load(path: str | Path, map_location: Any = None) -> SpikingRNN | RateRNN:
    """Load a model saved with ``model.save(path)``; the class is read from the file.

    Args:
        path: file written by :meth:`SpikingRNN.save` / :meth:`RateRNN.save`.
        map_location: device to put the model on (default CPU; ``"auto"`` = CUDA when available).
    """
    payload = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a spikelearn model file")
    cls = _CLASSES.get(payload["class"])
    if cls is None:
        raise ValueError(f"{path}: unknown model class {payload['class']!r}")
    cfg = _from_config_value(payload["config"])
    circuit = circuit_from_dict(payload["circuit"])
    n_in, n_out = cfg.pop("n_in"), cfg.pop("n_out")
    with torch.random.fork_rng(devices=[]):  # building draws initial W_in/W_out: leave the caller's RNG untouched
        model = cls(circuit, n_in, n_out, **cfg, device="cpu")
    model.load_state_dict(payload["state_dict"])
    if map_location is not None:
        model.to(_resolve_device(map_location))
    return model
