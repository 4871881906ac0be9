"""The Circuit: one description of a network's wiring, independent of networkx and of torch.

Orientation: every matrix is ``(post, pre)``; ``weights[j, i]`` is the synapse from neuron ``i`` onto
neuron ``j``. Neuron ``k`` is the ``k``-th node of the graph in networkx iteration order (insertion
order), unless ``node_order`` is given; ``circuit.node_ids[k]`` is that node's id.

Signs: ``signs[k]`` is +1 (excitatory), -1 (inhibitory) or 0 (unknown or mixed). Edge weights are stored
*signed*. Dale's law belongs to the presynaptic neuron (a column); :meth:`Circuit.dale_signs` refuses circuits
whose neurons have unknown or mixed sign and names them. Nothing is ever silenced because its sign is unknown.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Hashable, Literal, Mapping, Sequence, overload

import networkx as nx
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.linalg import ArpackNoConvergence, eigs, svds

__all__ = ["Circuit", "CircuitError", "effective_rank", "spectral_radius", "spectral_norm", "DENSE_SUMMARY_MAX_N"]

# Node attributes with a meaning of their own (everything else numeric becomes a per-neuron parameter).
_RESERVED_NODE_ATTRS = ("input", "output", "input_sign", "output_sign")
_GRAPH_ARRAYS = ("input_mask", "output_mask", "input_weights", "output_weights")  # G.graph keys (to/from_graph)


DENSE_SUMMARY_MAX_N = 4000  # Circuit.summary forms the dense matrix up to this size


class CircuitError(ValueError):
    """Bad circuit input. Subclass of ``ValueError``; the message names the offending node, edge or file."""


def _shape(W: Any) -> tuple[int, int]:
    """A matrix's ``(rows, columns)`` (scipy annotates sparse ``.shape`` as optional)."""
    return int(W.shape[0]), int(W.shape[1])


def _dense_or_csr(W: Any, dense_max_n: int | None) -> np.ndarray | sp.csr_array:
    """``W`` as a float64 array, except a scipy sparse ``W`` with a side above ``dense_max_n`` (``None``: the module's
    ``DENSE_SUMMARY_MAX_N`` at call time): a float64 CSR matrix."""
    if sp.issparse(W):
        Ws = sp.csr_array(W, dtype=np.float64)
        n_rows, n_cols = _shape(Ws)
        limit = DENSE_SUMMARY_MAX_N if dense_max_n is None else dense_max_n
        return Ws if max(n_rows, n_cols) > limit else np.asarray(Ws.toarray())
    return np.asarray(W, dtype=np.float64)


def effective_rank(W: np.ndarray | sp.sparray | sp.spmatrix, *, dense_max_n: int | None = None
                   ) -> dict[str, float]:
    """Scale-invariant effective ranks of a matrix (ALGORITHMS.md §8.2).

    Returns ``{"participation_ratio": (Σσ²)²/Σσ⁴, "roy_vetterli": exp(-Σ p log p)}`` with ``p = σ/Σσ``.
    Both are 0 for the zero matrix.

    A scipy sparse ``W`` whose sides are at most ``dense_max_n`` (default ``DENSE_SUMMARY_MAX_N`` = 4000) is made
    dense and gets the exact values above (the same numbers as its dense form). A larger one forms no dense matrix:
    the participation ratio is computed exactly as ``‖W‖_F⁴ / ‖WᵀW‖_F²`` (a sparse product) and ``roy_vetterli``,
    which needs every singular value, is NaN.
    """
    W = _dense_or_csr(W, dense_max_n)
    if isinstance(W, sp.csr_array):
        fro2 = float((np.asarray(W.data) ** 2).sum())
        if fro2 == 0.0:
            return {"participation_ratio": 0.0, "roy_vetterli": 0.0}
        wtw = sp.csr_array(W.T @ W)
        return {"participation_ratio": fro2 ** 2 / float((np.asarray(wtw.data) ** 2).sum()), "roy_vetterli": math.nan}
    s = np.linalg.svd(W, compute_uv=False)
    if s.sum() == 0:
        return {"participation_ratio": 0.0, "roy_vetterli": 0.0}
    s2 = s**2
    pr = s2.sum() ** 2 / (s2**2).sum()
    p = s / s.sum()
    p = p[p > 0]
    rv = float(np.exp(-(p * np.log(p)).sum()))
    return {"participation_ratio": float(pr), "roy_vetterli": rv}


def spectral_radius(W: np.ndarray | sp.sparray | sp.spmatrix, *, dense_max_n: int | None = None) -> float:
    """``max |eigenvalue|`` of a square matrix (0 for an empty one).

    Dense ``W``, and scipy sparse ``W`` of at most ``dense_max_n`` rows (default ``DENSE_SUMMARY_MAX_N`` = 4000, made
    dense): every eigenvalue (``numpy.linalg.eigvals``). A larger sparse ``W`` forms no dense matrix: ARPACK
    (``scipy.sparse.linalg.eigs``, ``k = 1``, ``which="LM"``, ``tol = 1e-8``), NaN when it does not converge.
    """
    a = _dense_or_csr(W, dense_max_n)
    if isinstance(a, sp.csr_array):
        try:  # (scipy annotates eigs' tol as int; it is a float)
            lam = eigs(a, k=1, which="LM", return_eigenvectors=False, maxiter=20 * _shape(a)[0],
                       tol=1e-8)  # type: ignore[arg-type]
        except ArpackNoConvergence:
            return math.nan
        return float(np.abs(np.asarray(lam)).max())
    return float(np.abs(np.linalg.eigvals(a)).max()) if a.size else 0.0


def spectral_norm(W: np.ndarray | sp.sparray | sp.spmatrix, *, dense_max_n: int | None = None) -> float:
    """The largest singular value ``σ₁`` (0 for an empty or zero matrix).

    Dense ``W``, and scipy sparse ``W`` whose sides are at most ``dense_max_n`` (default ``DENSE_SUMMARY_MAX_N`` =
    4000, made dense): ``numpy.linalg.norm(W, 2)``. A larger sparse ``W`` forms no dense matrix: ARPACK
    (``scipy.sparse.linalg.svds``, ``k = 1``).
    """
    a = _dense_or_csr(W, dense_max_n)
    if isinstance(a, sp.csr_array):
        if a.nnz == 0 or not np.asarray(a.data).any():
            return 0.0
        return float(np.asarray(svds(a, k=1, return_singular_vectors=False)).max())
    return float(np.linalg.norm(a, 2)) if a.size else 0.0


def _as_float(value: Any, what: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise CircuitError(f"{what}: weight {value!r} is not a real number")
    v = float(value)
    if not np.isfinite(v):
        raise CircuitError(f"{what}: weight {v} is not finite")
    return v


def _sign_value(value: Any, what: str) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        table = {"+": 1, "e": 1, "exc": 1, "excitatory": 1, "-": -1, "i": -1, "inh": -1,
                 "inhibitory": -1, "0": 0, "unknown": 0, "mixed": 0, "": 0}
        if value.lower() in table:
            return table[value.lower()]
        raise CircuitError(f"{what}: sign {value!r} not understood (use +1, -1, 0 or 'excitatory'/'inhibitory')")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise CircuitError(f"{what}: sign {value!r} is not a number") from None
    if v not in (-1.0, 0.0, 1.0):
        raise CircuitError(f"{what}: sign {value!r} must be +1, -1 or 0")
    return int(v)


@dataclass(frozen=True, eq=False)
class Circuit:
    """Wiring of a recurrent network of ``N`` neurons (numpy/scipy only).

    Attributes:
        node_ids: ``(N,)`` tuple of node ids; row/column ``k`` of every matrix is neuron ``node_ids[k]``.
        post, pre: ``(E,)`` int64 edge endpoints of the chemical synapses (sorted by post, then pre).
        w: ``(E,)`` float64 signed edge weights (an edge may carry weight 0: it stays an edge).
        cell_types: ``(N,)`` object array of cell-type strings (``"unknown"`` where none was given).
        signs: ``(N,)`` int8 declared neuron signs, +1 / -1 / 0.
        gap: ``(N, N)`` symmetric scipy sparse matrix of gap-junction conductances, or ``None``.
            Never summed into the chemical weights.
        neuron_params: per-neuron numeric parameters (name -> ``(N,)`` float64), e.g. ``tau_mem_ms``.
        node_attrs: ``(N,)`` tuple of dicts with the remaining node attributes (kept for ``to_graph``).
        input_mask: ``(N,)`` bool (which neurons receive input) or ``(N, n_in)`` bool, or ``None`` (all).
        output_mask: ``(N,)`` bool (which neurons are read out) or ``(n_out, N)`` bool, or ``None`` (all).
        input_sign, output_sign: ``(N,)`` int8 sign constraints of input / readout weights per neuron
            (0 = unconstrained), or ``None``.
        input_weights: ``(N, n_in)`` float64 initial input weights that come with the circuit (e.g. a low-rank
            recurrent init aligned with them, :func:`~spikelearn.circuit.generators.task_aligned_low_rank`), or
            ``None``. A model built on the circuit starts from them unless it is given ``w_in``.
        output_weights: ``(n_out, N)`` float64 initial readout weights, likewise (``w_out``).
        metadata: free-form provenance (generator name, seed, norm matching, connectome options ...).
    """

    node_ids: tuple
    post: np.ndarray
    pre: np.ndarray
    w: np.ndarray
    cell_types: np.ndarray
    signs: np.ndarray
    gap: sp.csr_array | None = None
    neuron_params: Mapping[str, np.ndarray] = field(default_factory=dict)
    node_attrs: tuple = ()
    input_mask: np.ndarray | None = None
    output_mask: np.ndarray | None = None
    input_sign: np.ndarray | None = None
    output_sign: np.ndarray | None = None
    input_weights: np.ndarray | None = None
    output_weights: np.ndarray | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ construction
    def __post_init__(self) -> None:
        n = len(self.node_ids)
        if n == 0:
            raise CircuitError("empty circuit: the graph has no nodes")
        if len(set(self.node_ids)) != n:
            raise CircuitError("node ids are not unique")
        for nm in ("post", "pre"):  # indices are checked before the cast, which would truncate 1.5 to 1
            raw = np.asarray(getattr(self, nm))
            if raw.size and not (np.issubdtype(raw.dtype, np.integer) or
                                 (np.issubdtype(raw.dtype, np.floating) and np.all(raw == np.round(raw)))):
                raise CircuitError(f"edge indices {nm} must be integers, got {raw[:5].tolist()} ...")
        post = np.asarray(self.post, dtype=np.int64)
        pre = np.asarray(self.pre, dtype=np.int64)
        w = np.asarray(self.w, dtype=np.float64)
        if not (post.shape == pre.shape == w.shape) or post.ndim != 1:
            raise CircuitError(f"edge arrays differ in shape: post {post.shape}, pre {pre.shape}, w {w.shape}")
        if post.size and (post.min() < 0 or pre.min() < 0 or post.max() >= n or pre.max() >= n):
            raise CircuitError(f"edge index out of range for {n} neurons")
        bad = ~np.isfinite(w)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise CircuitError(
                f"edge {self.node_ids[pre[k]]!r} -> {self.node_ids[post[k]]!r}: weight {w[k]} is not finite")
        # (post, pre) order as one int64 key (n² < 2⁶³ for any n that fits in memory): edges that come sorted (every
        # generator's sparse draw) skip the sort; otherwise a stable argsort of the key, the order of
        # np.lexsort((pre, post)) at a fraction of its cost on millions of edges
        key = post * n + pre
        if key.size > 1 and not bool(np.all(key[1:] > key[:-1])):
            order = np.argsort(key, kind="stable")
            post, pre, w, key = post[order], pre[order], w[order], key[order]
        else:  # copies all the same: the circuit owns its arrays (made read-only below)
            post, pre, w = post.copy(), pre.copy(), w.copy()
        if post.size > 1:
            dup = np.diff(key) == 0
            if dup.any():
                k = int(np.flatnonzero(dup)[0])
                raise CircuitError(
                    f"duplicate edge {self.node_ids[pre[k]]!r} -> {self.node_ids[post[k]]!r}"
                    " (sum parallel synapses before building, or use a MultiDiGraph)")
        ct = np.asarray([str(c) for c in self.cell_types], dtype=object)
        sg = _sign_array(self.signs, "signs")
        if ct.shape != (n,) or sg.shape != (n,):
            raise CircuitError(f"cell_types {ct.shape} and signs {sg.shape} must both have shape ({n},)")
        params = {}
        for name, arr in dict(self.neuron_params).items():
            a = np.asarray(arr, dtype=np.float64)
            if a.shape != (n,):
                raise CircuitError(f"neuron parameter {name!r} has shape {a.shape}, expected ({n},)")
            if not np.isfinite(a).all():
                raise CircuitError(f"neuron parameter {name!r} is not finite for node "
                                   f"{self.node_ids[int(np.flatnonzero(~np.isfinite(a))[0])]!r}")
            params[name] = a
        gap = self.gap
        if gap is not None:
            gap = sp.csr_array(gap, dtype=np.float64)
            if gap.shape != (n, n):
                raise CircuitError(f"gap-junction matrix has shape {gap.shape}, expected ({n}, {n})")
            if not np.isfinite(gap.data).all():
                raise CircuitError("gap-junction matrix has non-finite entries")
            if abs(gap - gap.T).max() > 0:
                raise CircuitError("gap-junction matrix is not symmetric")
            if (gap.data < 0).any():
                raise CircuitError(f"gap-junction matrix has negative conductances (min {gap.data.min()})")
        attrs = tuple(dict(a) for a in self.node_attrs) if self.node_attrs else tuple({} for _ in range(n))
        if len(attrs) != n:
            raise CircuitError(f"node_attrs has {len(attrs)} entries for {n} neurons")
        for nm in ("input_mask", "output_mask"):
            m = getattr(self, nm)
            if m is not None:
                m = np.asarray(m, dtype=bool)
                ok = m.shape == (n,) or (m.ndim == 2 and (m.shape[0] == n if nm == "input_mask" else m.shape[1] == n))
                if not ok:
                    raise CircuitError(f"{nm} has shape {m.shape}, incompatible with {n} neurons")
                object.__setattr__(self, nm, m)
        for nm, axis in (("input_weights", 0), ("output_weights", 1)):
            a = getattr(self, nm)
            if a is not None:
                a = np.array(a, dtype=np.float64)
                if a.ndim != 2 or a.shape[axis] != n:
                    want = f"({n}, n_in)" if axis == 0 else f"(n_out, {n})"
                    raise CircuitError(f"{nm} has shape {a.shape}, expected {want}")
                if not np.isfinite(a).all():
                    raise CircuitError(f"{nm} has non-finite entries")
                object.__setattr__(self, nm, a)
        for nm in ("input_sign", "output_sign"):
            s = getattr(self, nm)
            if s is not None:
                s = _sign_array(s, nm)
                if s.shape != (n,):
                    raise CircuitError(f"{nm} must have shape ({n},) with values in {{-1, 0, 1}}, got {s.shape}")
                object.__setattr__(self, nm, s)
        for k, v in dict(post=post, pre=pre, w=w, cell_types=ct, signs=sg, gap=gap, neuron_params=params,
                          node_attrs=attrs, node_ids=tuple(self.node_ids),
                          metadata=dict(self.metadata)).items():
            object.__setattr__(self, k, v)
        for a in (post, pre, w, ct, sg):
            a.setflags(write=False)

    @classmethod
    def from_dense(cls, weights: np.ndarray, *, mask: np.ndarray | None = None, node_ids: Sequence | None = None,
                   cell_types: Sequence[str] | None = None, signs: Sequence[int] | np.ndarray | None = None,
                   **kwargs: Any) -> "Circuit":
        """Build from a dense ``(post, pre)`` weight matrix.

        Args:
            weights: ``(N, N)`` signed weights, post x pre.
            mask: ``(N, N)`` bool edge existence; default ``weights != 0``.
            node_ids: default ``range(N)``. cell_types: default ``"unknown"``. signs: default 0.
            kwargs: any other :class:`Circuit` field (``gap``, ``neuron_params``, ``metadata`` ...).
        """
        W = np.asarray(weights, dtype=np.float64)
        if W.ndim != 2 or W.shape[0] != W.shape[1]:
            raise CircuitError(f"weights must be a square (post, pre) matrix, got shape {W.shape}")
        n = W.shape[0]
        m = (W != 0) if mask is None else np.asarray(mask, dtype=bool)
        if m.shape != W.shape:
            raise CircuitError(f"mask shape {m.shape} differs from weights shape {W.shape}")
        if mask is not None and (W[~m] != 0).any():
            raise CircuitError("weights are nonzero outside the mask")
        post, pre = np.nonzero(m)
        return cls(node_ids=tuple(range(n)) if node_ids is None else tuple(node_ids), post=post, pre=pre,
                   w=W[post, pre], cell_types=np.array(["unknown"] * n if cell_types is None else list(cell_types),
                                                       dtype=object),
                   signs=np.zeros(n, np.int8) if signs is None else np.asarray(signs), **kwargs)

    @classmethod
    def from_graph(cls, G: Any, weight: str = "weight", cell_type: str = "cell_type", sign: str = "sign", *,
                   gap_weight: str = "gap_weight", edge_sign: str | None = None,
                   self_loops: Literal["keep", "error"] = "keep", require_cell_type: bool = False,
                   require_sign: bool = False, dale: bool = False, node_order: Sequence[Hashable] | None = None,
                   metadata: Mapping[str, Any] | None = None) -> "Circuit":
        """Build a Circuit from a ``networkx.DiGraph`` or ``MultiDiGraph``.

        Edge ``u -> v`` is the synapse from presynaptic ``u`` onto postsynaptic ``v`` and becomes
        ``weights[row(v), row(u)]``. Parallel edges of a MultiDiGraph are summed (several synapses).

        Args:
            G: the graph. Nodes are neurons, in ``G.nodes`` order unless ``node_order`` is given.
            weight: edge attribute with the (signed) chemical weight. An edge that carries only
                ``gap_weight`` is a pure gap junction; any other edge without ``weight`` is an error.
            cell_type: node attribute with the cell type (stored as a string; ``"unknown"`` if absent).
            sign: node attribute with the neuron's sign (+1, -1, 0 or 'excitatory'/'inhibitory').
            gap_weight: edge attribute with a gap-junction conductance; collected into the separate symmetric
                ``gap`` matrix. A junction listed in both directions must carry the same value in both.
            edge_sign: optional edge attribute (+1/-1) multiplied into the weight (e.g. flyvis edge signs); the
                weights are then magnitudes (a negative one is an error).
            self_loops: ``"keep"`` autapses in the circuit (models still exclude them unless asked) or
                ``"error"`` to reject them.
            require_cell_type, require_sign: raise for a node without the attribute.
            dale: check Dale's law now (see :meth:`dale_signs`).
            node_order: explicit neuron order (a permutation of the graph's nodes).

        Node attributes ``input``/``output`` (truthy: the neuron receives input / is read out) and
        ``input_sign``/``output_sign`` (+1/-1/0) give input and readout masks and sign constraints; the graph
        attributes ``G.graph["input_mask"]`` ``(N, n_in)``, ``["output_mask"]`` ``(n_out, N)``,
        ``["input_weights"]`` and ``["output_weights"]`` (rows/columns in ``G.nodes`` order) give 2-D masks and
        initial input/readout weights. Every other
        numeric node attribute present on every node becomes a per-neuron parameter (``neuron_params``);
        all node attributes are kept for :meth:`to_graph`, and so are the other graph attributes (in
        ``metadata["graph"]``). Edge attributes other than ``weight``, ``gap_weight`` and ``edge_sign`` (e.g. a
        delay) are not part of a circuit and are not read.
        """

        if self_loops not in ("keep", "error"):
            raise CircuitError(f"self_loops must be 'keep' or 'error', got {self_loops!r}")
        if not isinstance(G, (nx.DiGraph, nx.MultiDiGraph)):
            raise CircuitError(f"expected a networkx DiGraph or MultiDiGraph, got {type(G).__name__}"
                               " (an undirected graph does not say which neuron is presynaptic)")
        nodes = list(G.nodes) if node_order is None else list(node_order)
        if len(nodes) == 0:
            raise CircuitError("empty graph: it has no nodes")
        if node_order is not None and (len(set(nodes)) != len(nodes) or set(nodes) != set(G.nodes)):
            raise CircuitError("node_order must be a permutation of the graph's nodes")
        index = {u: k for k, u in enumerate(nodes)}
        n = len(nodes)

        chem: dict[tuple[int, int], float] = {}
        gaps: dict[tuple[int, int], list[float]] = {}
        multi = G.is_multigraph()
        # multi: G is a MultiDiGraph (is_multigraph() does not narrow its type)
        edges = (G.edges(keys=True, data=True) if multi  # type: ignore[call-arg]
                 else ((u, v, None, d) for u, v, d in G.edges(data=True)))
        for u, v, key, d in edges:
            what = f"edge {u!r} -> {v!r}" + (f" (key {key!r})" if multi else "")
            if u == v and self_loops == "error":
                raise CircuitError(f"{what}: self-loop (autapse) rejected (self_loops='error')")
            has_w, has_g = weight in d, gap_weight in d
            if not has_w and not has_g:
                raise CircuitError(f"{what}: no {weight!r} attribute (and no {gap_weight!r})")
            if has_w:
                w = _as_float(d[weight], what)
                if edge_sign is not None:
                    if edge_sign not in d:
                        raise CircuitError(f"{what}: no edge sign attribute {edge_sign!r}")
                    s = _sign_value(d[edge_sign], what)
                    if s == 0:
                        raise CircuitError(f"{what}: edge sign must be +1 or -1, got {d[edge_sign]!r}")
                    if w < 0:
                        raise CircuitError(f"{what}: weight {w} is negative although an edge sign ({edge_sign!r}) "
                                           f"is given; give magnitudes with edge signs, or signed weights without")
                    w = s * w
                k = (index[v], index[u])
                chem[k] = chem.get(k, 0.0) + w
            if has_g:
                g = _as_float(d[gap_weight], what + " gap junction")
                if g < 0:
                    raise CircuitError(f"{what}: negative gap-junction conductance {g}")
                gaps.setdefault((index[v], index[u]), []).append(g)

        # Gap junctions: one symmetric value per unordered pair; both directions must agree when both are given.
        gap = None
        if gaps:
            vals: dict[tuple[int, int], float] = {}
            for (a, b), lst in gaps.items():
                vals[(a, b)] = float(sum(lst))
            sym: dict[tuple[int, int], float] = {}
            for (a, b), g in vals.items():
                if (b, a) in vals and vals[(b, a)] != g:
                    raise CircuitError(
                        f"gap junction {nodes[b]!r} <-> {nodes[a]!r}: the two directions carry different values "
                        f"({g} and {vals[(b, a)]})")
                sym[(a, b)] = g
                sym[(b, a)] = g
            ij = np.array(list(sym.keys()), dtype=np.int64).reshape(-1, 2)
            gap = sp.csr_array((np.array(list(sym.values())), (ij[:, 0], ij[:, 1])), shape=(n, n))

        cell_types, signs, attrs = [], [], []
        for u in nodes:
            d = dict(G.nodes[u])
            if cell_type in d:
                ctv = d.pop(cell_type)
                if ctv is None or (isinstance(ctv, float) and np.isnan(ctv)):
                    raise CircuitError(f"node {u!r}: cell type is missing ({ctv!r})")
                cell_types.append(str(ctv))
            elif require_cell_type:
                raise CircuitError(f"node {u!r} has no cell type attribute {cell_type!r}")
            else:
                cell_types.append("unknown")
            if sign in d:
                signs.append(_sign_value(d.pop(sign), f"node {u!r}"))
            elif require_sign:
                raise CircuitError(f"node {u!r} has no sign attribute {sign!r}")
            else:
                signs.append(0)
            attrs.append(d)

        def node_flags(name: str, as_sign: bool) -> np.ndarray | None:
            if not any(name in a for a in attrs):
                return None
            if as_sign:
                return np.array([_sign_value(a.get(name, 0), f"node {u!r} {name}") for u, a in zip(nodes, attrs)],
                                dtype=np.int8)
            return np.array([bool(a.get(name, False)) for a in attrs], dtype=bool)

        input_mask, output_mask = node_flags("input", False), node_flags("output", False)
        input_sign, output_sign = node_flags("input_sign", True), node_flags("output_sign", True)
        if node_order is not None and any(k in G.graph for k in _GRAPH_ARRAYS):
            raise CircuitError(f"node_order cannot be combined with the graph attributes "
                               f"{[k for k in _GRAPH_ARRAYS if k in G.graph]} (their rows follow G.nodes)")
        if input_mask is None and "input_mask" in G.graph:
            input_mask = np.asarray(G.graph["input_mask"], bool)
        if output_mask is None and "output_mask" in G.graph:
            output_mask = np.asarray(G.graph["output_mask"], bool)

        params: dict[str, np.ndarray] = {}
        common = set.intersection(*(set(a) for a in attrs)) - set(_RESERVED_NODE_ATTRS)
        for name in sorted(common):
            col = [a[name] for a in attrs]
            if all(isinstance(x, numbers.Real) and not isinstance(x, bool) for x in col):
                params[name] = np.array(col, dtype=np.float64)

        keys = np.array(list(chem.keys()), dtype=np.int64).reshape(-1, 2)
        c = cls(node_ids=tuple(nodes), post=keys[:, 0], pre=keys[:, 1], w=np.array(list(chem.values())),
                cell_types=np.array(cell_types, dtype=object), signs=np.array(signs), gap=gap,
                neuron_params=params, node_attrs=tuple(attrs), input_mask=input_mask, output_mask=output_mask,
                input_sign=input_sign, output_sign=output_sign,
                input_weights=G.graph.get("input_weights"), output_weights=G.graph.get("output_weights"),
                metadata={**dict(G.graph.get("metadata") or {}), **dict(metadata or {}),
                          **({"graph": extra} if (extra := {k: v for k, v in G.graph.items()
                                                            if k not in _GRAPH_ARRAYS and k != "metadata"}) else {}),
                          "source": dict(G.graph.get("metadata") or {}).get("source", "networkx graph")})
        if dale:
            c.dale_signs()
        return c

    # ------------------------------------------------------------------ views
    @property
    def n(self) -> int:
        """Number of neurons ``N``."""
        return len(self.node_ids)

    @property
    def n_edges(self) -> int:
        """Number of chemical edges (an edge of weight 0 still counts)."""
        return int(self.w.size)

    @overload
    def weights(self, dense: Literal[False] = ...) -> sp.csr_array: ...
    @overload
    def weights(self, dense: Literal[True]) -> np.ndarray: ...
    @overload
    def weights(self, dense: bool) -> np.ndarray | sp.csr_array: ...

    def weights(self, dense: bool = False) -> np.ndarray | sp.csr_array:
        """Signed ``(post, pre)`` weight matrix: scipy CSR (default; explicit zeros of zero-weight edges kept)."""
        if dense:
            W = np.zeros((self.n, self.n))
            W[self.post, self.pre] = self.w
            return W
        return sp.csr_array((self.w.copy(), (self.post, self.pre)), shape=(self.n, self.n))

    def mask(self, dense: bool = True) -> np.ndarray | sp.csr_array:
        """Connectivity mask ``(post, pre)``: True where an edge exists (whatever its weight)."""
        if dense:
            M = np.zeros((self.n, self.n), dtype=bool)
            M[self.post, self.pre] = True
            return M
        return sp.csr_array((np.ones(self.n_edges, dtype=bool), (self.post, self.pre)), shape=(self.n, self.n))

    def gap_junctions(self, dense: bool = False) -> np.ndarray | sp.csr_array:
        """Symmetric ``(N, N)`` gap-junction conductances (zeros if the circuit has none)."""
        g = self.gap if self.gap is not None else sp.csr_array((self.n, self.n))
        return g.toarray() if dense else g

    @property
    def has_gap_junctions(self) -> bool:
        return self.gap is not None and self.gap.nnz > 0

    def index_of(self, node: Hashable) -> int:
        """Row of a node id."""
        try:
            return self.node_ids.index(node)
        except ValueError:
            raise CircuitError(f"node {node!r} is not in the circuit") from None

    def edge_sign_per_neuron(self) -> np.ndarray:
        """``(N,)`` int8 sign carried by each neuron's outgoing edges: +1 / -1 if all nonzero ones agree,
        0 if the neuron has none or they carry both signs."""
        pos = np.bincount(self.pre[self.w > 0], minlength=self.n) > 0
        neg = np.bincount(self.pre[self.w < 0], minlength=self.n) > 0
        return (pos & ~neg).astype(np.int8) - (neg & ~pos).astype(np.int8)

    def mixed_sign_neurons(self) -> list:
        """Node ids whose outgoing edges carry both signs."""
        pos = np.bincount(self.pre[self.w > 0], minlength=self.n) > 0
        neg = np.bincount(self.pre[self.w < 0], minlength=self.n) > 0
        return [self.node_ids[k] for k in np.flatnonzero(pos & neg)]

    def dale_signs(self) -> np.ndarray:
        """Per-neuron signs under Dale's law, ``(N,)`` int8 in {+1, -1}.

        Raises :class:`CircuitError` naming every neuron whose declared sign is 0 (unknown), whose outgoing
        edges carry both signs, or whose outgoing edges contradict its declared sign.
        """
        problems = []
        unknown = [self.node_ids[k] for k in np.flatnonzero(self.signs == 0)]
        if unknown:
            problems.append(f"{len(unknown)} neuron(s) without a known sign: {_fmt(unknown)}")
        mixed = self.mixed_sign_neurons()
        if mixed:
            problems.append(f"{len(mixed)} neuron(s) with outgoing edges of both signs: {_fmt(mixed)}")
        es = self.edge_sign_per_neuron()
        contra = [self.node_ids[k] for k in np.flatnonzero((es != 0) & (self.signs != 0) & (es != self.signs))]
        if contra:
            problems.append(f"{len(contra)} neuron(s) whose outgoing weights contradict their sign "
                            f"(e.g. an excitatory neuron with a negative outgoing weight): {_fmt(contra)}")
        if problems:
            raise CircuitError("Dale's law cannot be applied: " + "; ".join(problems))
        return self.signs.copy()

    def type_names(self) -> list[str]:
        """Cell types in order of first appearance."""
        return list(dict.fromkeys(self.cell_types.tolist()))

    # ------------------------------------------------------------------ export
    def to_graph(self) -> Any:
        """Return a ``networkx.DiGraph`` with the same node ids, node attributes, weights and gap junctions.

        Gap junctions appear as ``gap_weight`` on edges in both directions; 1-D input/readout masks and signs as
        the node attributes ``input``/``output``/``input_sign``/``output_sign``; 2-D masks and the circuit's
        initial input/readout weights as graph attributes (``G.graph``), which :meth:`from_graph` reads back.
        """

        G = nx.DiGraph()
        meta = {k: v for k, v in self.metadata.items() if k != "graph"}
        G.graph.update(dict(self.metadata.get("graph") or {}))
        if meta:
            G.graph["metadata"] = meta
        clash = [k for k in ("cell_type", "sign") if any(k in a for a in self.node_attrs)]
        if clash:
            raise CircuitError(f"to_graph writes the node attributes 'cell_type' and 'sign', but the circuit's own "
                               f"node attributes already use {clash} for something else")
        for name in _GRAPH_ARRAYS:
            a = getattr(self, name)
            if a is not None and a.ndim == 2:  # per-input / per-output values: graph attributes
                G.graph[name] = a.copy()
        flag_arrays = (("input", self.input_mask), ("output", self.output_mask), ("input_sign", self.input_sign),
                       ("output_sign", self.output_sign))
        # node_attrs may hold the flags the circuit was read with: kept exactly as given while they still agree
        # with the current masks, otherwise (a mask replaced since) rewritten from the masks for every node
        keep, flags = set(), {}
        for name, a in flag_arrays:
            given = [at.get(name) for at in self.node_attrs]
            if a is not None and a.ndim == 1:
                if any(v is not None for v in given) and all(
                        (bool(v) if a.dtype == bool else (0 if v is None else _sign_value(v, name))) == a[k]
                        for k, v in enumerate(given)):
                    keep.add(name)
                else:
                    flags[name] = a
        for k, u in enumerate(self.node_ids):
            attrs = {key: v for key, v in self.node_attrs[k].items()
                     if key not in dict(flag_arrays) or key in keep}
            for name, arr in self.neuron_params.items():
                attrs.setdefault(name, float(arr[k]))
            attrs["cell_type"] = str(self.cell_types[k])
            attrs["sign"] = int(self.signs[k])
            for name, a in flags.items():
                attrs[name] = bool(a[k]) if a.dtype == bool else int(a[k])
            G.add_node(u, **attrs)
        for j, i, w in zip(self.post.tolist(), self.pre.tolist(), self.w.tolist()):
            G.add_edge(self.node_ids[i], self.node_ids[j], weight=w)
        if self.gap is not None:
            g = self.gap.tocoo()
            for a, b, v in zip(g.row.tolist(), g.col.tolist(), g.data.tolist()):
                G.add_edge(self.node_ids[b], self.node_ids[a], gap_weight=v)
        return G

    def with_weights(self, weights: np.ndarray, **changes: Any) -> "Circuit":
        """A copy with a new dense ``(post, pre)`` weight matrix on the *same* edge set.

        Raises if ``weights`` is nonzero outside the mask.
        """
        W = np.asarray(weights, dtype=np.float64)
        if W.shape != (self.n, self.n):
            raise CircuitError(f"weights shape {W.shape} != ({self.n}, {self.n})")
        outside = W.copy()
        outside[self.post, self.pre] = 0
        if (outside != 0).any():
            raise CircuitError("new weights are nonzero outside the circuit's edge set")
        fields = {f: getattr(self, f) for f in self.__dataclass_fields__}
        fields.update(w=W[self.post, self.pre], **changes)
        return Circuit(**fields)

    def summary(self) -> pd.DataFrame:
        """Tidy summary: one row per (quantity, group) with a value.

        Quantities: ``n_neurons``, ``n_edges``, ``density`` (edges / N², autapses included), ``neurons`` per cell
        type, ``excitatory``/``inhibitory``/``unknown_sign`` neuron counts, ``spectral_radius`` (max |eig W|),
        ``participation_ratio`` and ``roy_vetterli`` effective ranks (§8.2), weight ``mean``/``std``/``min``/``max``
        over edges, ``frobenius_norm``, ``n_gap_junctions`` (unordered pairs, self-pairs counted once).
        Above ``DENSE_SUMMARY_MAX_N`` neurons no dense matrix is formed: the spectral radius comes from ARPACK,
        the participation ratio from ``‖W‖_F⁴ / ‖WᵀW‖_F²``, and ``roy_vetterli`` (which needs every singular
        value) is NaN.
        """
        rows: list[tuple[str, str, float]] = [("n_neurons", "all", float(self.n)),
                                              ("n_edges", "all", float(self.n_edges)),
                                              ("density", "all", self.n_edges / self.n**2)]
        types, counts = np.unique(self.cell_types.astype(str), return_counts=True)
        rows += [("neurons", str(t), float(c)) for t, c in zip(types, counts)]
        rows += [("excitatory", "all", float((self.signs == 1).sum())),
                 ("inhibitory", "all", float((self.signs == -1).sum())),
                 ("unknown_sign", "all", float((self.signs == 0).sum()))]
        if self.n <= DENSE_SUMMARY_MAX_N:
            W = self.weights(dense=True)
            rows.append(("spectral_radius", "all", float(np.abs(np.linalg.eigvals(W)).max())))
            for k, v in effective_rank(W).items():
                rows.append((k, "all", v))
        else:  # large sparse circuits (e.g. the fly lattice, N ~ 45 000): no dense N x N matrix
            Ws = self.weights()
            rows.append(("spectral_radius", "all", spectral_radius(Ws)))
            # PR = (Σσ²)² / Σσ⁴ = ‖W‖_F⁴ / ‖WᵀW‖_F² needs no SVD; Roy-Vetterli needs every σ: left out (NaN)
            for k, v in effective_rank(Ws).items():
                rows.append((k, "all", v))
        if self.n_edges:
            rows += [("weight_mean", "edges", float(self.w.mean())), ("weight_std", "edges", float(self.w.std())),
                     ("weight_min", "edges", float(self.w.min())), ("weight_max", "edges", float(self.w.max()))]
        rows.append(("frobenius_norm", "all", float(np.linalg.norm(self.w))))
        if self.gap is not None:
            g = sp.triu(self.gap).tocoo()
            rows.append(("n_gap_junction_pairs", "all", float(g.nnz)))
        return pd.DataFrame(rows, columns=["quantity", "group", "value"])

    def __repr__(self) -> str:
        gj = f", gap pairs={sp.triu(self.gap).nnz}" if self.gap is not None else ""
        return f"Circuit(N={self.n}, edges={self.n_edges}, types={len(self.type_names())}{gj})"


def _sign_array(values: Any, what: str) -> np.ndarray:
    """int8 signs, checked on the raw values (a cast first would turn 0.5 into 0 and 255 into -1)."""
    raw = np.asarray(values)
    ok = np.isin(raw, (-1, 0, 1)) if raw.dtype != object else np.array([v in (-1, 0, 1) for v in raw.ravel()])
    if not np.all(ok):
        raise CircuitError(f"{what} must be +1, -1 or 0, got {np.asarray(raw).ravel()[~np.asarray(ok).ravel()][:5].tolist()}")
    return raw.astype(np.int8)


def _fmt(ids: list, limit: int = 20) -> str:
    s = ", ".join(repr(x) for x in ids[:limit])
    return s + (f", ... ({len(ids) - limit} more)" if len(ids) > limit else "")
