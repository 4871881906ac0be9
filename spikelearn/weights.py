r"""The weight-operations interface: everything the package does with a weight matrix, in one place.

A projection ``W`` is stored ``(post, pre)``. Every model, rule and analysis reaches it through these operations
(ALGORITHMS-2 §12.2), so that the storage — dense ``(post, pre)`` tensors today, per-edge values with CSR/CSC
indices for connectome-scale circuits — can change at one place:

1. **product** ``I = W z``: ``(..., N_pre) -> (..., N_post)`` (:meth:`WeightOps.product`, and its time-series form
   :meth:`WeightOps.time_product`);
2. **transposed product** ``Wᵀ δ``: ``(..., N_post) -> (..., N_pre)`` (:meth:`WeightOps.t_product`);
3. **edge outer sum** ``g_e = Σ_r post[r, post_e] pre[r, pre_e]`` over rows ``r`` (time × batch): the gradient of every
   rule on the stored weights (:meth:`WeightOps.edge_outer`, :meth:`WeightOps.edge_outer_add_`);
4. **type blocks**: sums (and edge counts) of the stored values per (post type, pre type) block, and the expansion
   of block values back onto the existing edges (:meth:`WeightOps.block_sums`, :meth:`WeightOps.block_counts`,
   :meth:`WeightOps.expand_blocks`);
5. **row sums** (the gap-junction leak, fan-in statistics) and the diagonal (:meth:`WeightOps.row_sums`,
   :meth:`WeightOps.diagonal`);
6. **the autograd contract**: :meth:`WeightOps.time_product` is twice differentiable (double backward for
   Hessian-vector products), has a forward-mode ``jvp`` (Lyapunov and flossing tangents), and gives bit-identical
   results however a trial is split into chunks (each time slice is the same ``(B, K) x (K, N)`` product).

:class:`DenseWeightOps` implements them for dense storage, in which an absent edge is a stored zero: its edge outer
sum is the full ``(N_post, N_pre)`` matrix (the model's ``param_grads`` masks it onto the edges).
:class:`SparseWeightOps` implements the same methods on per-edge values (:class:`SparseWeights`): no ``N × N``
array, edge outer sums of ``nnz`` values. :func:`weight_ops` returns the operations of a model
(``model.weight_ops`` where the model defines it, else the dense ones).
"""

from __future__ import annotations

import warnings
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = ["WeightOps", "DenseWeightOps", "DENSE", "SparseWeights", "SparseWeightOps", "SPARSE", "weight_ops",
           "time_linear"]


class _TimeLinear(torch.autograd.Function):
    """``x @ W.T`` for a time series ``x (T, B, K)``, ``W (N, K)`` -> ``(T, B, N)``.

    Forward is a batched GEMM over time (one call); each time slice is computed by the same ``(B, K) x (K, N)``
    product whatever ``T`` is, so a run split into chunks gives bit-identical results (a single folded
    ``(T·B, K)`` GEMM does not: BLAS blocking depends on ``T·B``). Backward uses two flat GEMMs (no ``(T, K, N)``
    temporary), written with differentiable ops so double backward works; ``jvp`` supports forward-mode AD.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, W: Tensor) -> Tensor:  # type: ignore[override]
        return torch.bmm(x, W.t().expand(x.shape[0], -1, -1))

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:  # type: ignore[override]
        x, W = inputs
        ctx.save_for_backward(x, W)
        ctx.save_for_forward(x, W)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Any:  # type: ignore[override]
        x, W = ctx.saved_tensors
        gx = torch.matmul(g, W) if ctx.needs_input_grad[0] else None
        gW = g.reshape(-1, g.shape[-1]).t() @ x.reshape(-1, x.shape[-1]) if ctx.needs_input_grad[1] else None
        return gx, gW

    @staticmethod
    def jvp(ctx: Any, dx: Tensor | None, dW: Tensor | None) -> Any:  # type: ignore[override]
        x, W = ctx.saved_tensors
        out: Any = 0
        if dx is not None:
            out = out + torch.matmul(dx, W.t())
        if dW is not None:
            out = out + torch.matmul(x, dW.t())
        return out


def time_linear(x: Tensor, W: Tensor) -> Tensor:
    """``(T, B, K) @ W.T`` with ``W (N, K)``, computed per time slice (chunking-invariant); see :class:`_TimeLinear`."""
    if x.shape[0] == 0:
        return x.new_zeros(0, x.shape[1], W.shape[0])
    return _TimeLinear.apply(x, W)  # type: ignore[no-any-return]


@runtime_checkable
class WeightOps(Protocol):
    """The operations on a stored projection ``W`` (module docstring). ``W`` is whatever the storage keeps (a dense
    ``(post, pre)`` tensor here); gradients and outer sums come back in the same layout."""

    def product(self, W: Any, z: Tensor) -> Tensor: ...
    def time_product(self, W: Any, x: Tensor) -> Tensor: ...
    def t_product(self, W: Any, d: Tensor) -> Tensor: ...
    def edge_outer(self, post: Tensor, pre: Tensor, like: Any = None) -> Any: ...
    def edge_outer_add_(self, acc: Any, post: Tensor, pre: Tensor, like: Any = None) -> Any: ...
    def block_sums(self, W: Any, post_type: Tensor, pre_type: Tensor, n_post: int, n_pre: int) -> Tensor: ...
    def block_counts(self, W: Any, post_type: Tensor, pre_type: Tensor, n_post: int, n_pre: int) -> Tensor: ...
    def expand_blocks(self, w: Tensor, post_type: Tensor, pre_type: Tensor, like: Any = None) -> Any: ...
    def row_sums(self, W: Any) -> Tensor: ...
    def diagonal(self, W: Any) -> Tensor: ...


def _one_hot(idx: Tensor, n: int, dtype: torch.dtype) -> Tensor:
    return torch.nn.functional.one_hot(idx, n).to(dtype)


class DenseWeightOps:
    """:class:`WeightOps` for dense ``(post, pre)`` tensors (an absent edge is a stored zero)."""

    def product(self, W: Tensor, z: Tensor) -> Tensor:
        """``W z`` for ``z (..., N_pre)``."""
        return torch.matmul(z, W.t())

    def time_product(self, W: Tensor, x: Tensor) -> Tensor:
        """``W x^t`` for every step of ``x (T, B, N_pre)``: chunking-invariant, twice differentiable, with a jvp."""
        return time_linear(x, W)

    def t_product(self, W: Tensor, d: Tensor) -> Tensor:
        """``Wᵀ d`` for ``d (..., N_post)``."""
        return torch.matmul(d, W)

    def edge_outer(self, post: Tensor, pre: Tensor, like: Any = None) -> Tensor:
        """``Σ_r post[r, :, None] pre[r, None, :]`` ``(N_post, N_pre)`` over the rows of ``post (R, N_post)`` and
        ``pre (R, N_pre)`` (leading dimensions are flattened into ``R``). ``like`` is unused (dense storage)."""
        del like
        return post.reshape(-1, post.shape[-1]).t() @ pre.reshape(-1, pre.shape[-1])

    def edge_outer_add_(self, acc: Tensor, post: Tensor, pre: Tensor, like: Any = None) -> Tensor:
        """``acc += edge_outer(post, pre)`` in place (one GEMM); returns ``acc``. ``like`` is unused."""
        del like
        return acc.addmm_(post.reshape(-1, post.shape[-1]).t(), pre.reshape(-1, pre.shape[-1]))

    def block_sums(self, W: Tensor, post_type: Tensor, pre_type: Tensor, n_post: int, n_pre: int) -> Tensor:
        """``S[α, β] = Σ_{j: τ(j)=α, i: τ(i)=β} W[j, i]`` ``(n_post, n_pre)``."""
        return _one_hot(post_type, n_post, W.dtype).t() @ W @ _one_hot(pre_type, n_pre, W.dtype)

    def block_counts(self, W: Tensor, post_type: Tensor, pre_type: Tensor, n_post: int, n_pre: int) -> Tensor:
        """The number of existing (non-zero) edges per block ``(n_post, n_pre)``."""
        return self.block_sums((W != 0).to(W.dtype), post_type, pre_type, n_post, n_pre)

    def expand_blocks(self, w: Tensor, post_type: Tensor, pre_type: Tensor, like: Tensor | None = None) -> Tensor:
        """Block values ``w (C_post, C_pre)`` on the edges: ``w[τ(j), τ(i)]`` where ``like[j, i] ≠ 0`` (every pair
        when ``like`` is ``None``)."""
        out = w[post_type][:, pre_type]
        return out if like is None else out * (like != 0).to(out.dtype)

    def row_sums(self, W: Tensor) -> Tensor:
        """``Σ_i W[j, i]`` ``(N_post,)``."""
        return W.sum(1)

    def diagonal(self, W: Tensor) -> Tensor:
        """``W[j, j]`` (square projections)."""
        return torch.diagonal(W)


DENSE = DenseWeightOps()


class EdgeIndex:
    """The structure of a per-edge projection: ``post``, ``pre`` ``(nnz,)`` (sorted by ``(post, pre)``) and ``shape``,
    with the CSR row pointers and the transposed structure (edges sorted by ``(pre, post)``) computed once, on first
    use, and kept (a model keeps one index for its recurrent weights, so every forward reuses them)."""

    __slots__ = ("post", "pre", "shape", "_crow", "_transpose", "_perm")

    def __init__(self, post: Tensor, pre: Tensor, shape: tuple[int, int]):
        self.post, self.pre, self.shape = post, pre, (int(shape[0]), int(shape[1]))
        self._crow: Tensor | None = None
        self._transpose: EdgeIndex | None = None
        self._perm: Tensor | None = None  # edge order of the transpose

    @property
    def crow(self) -> Tensor:
        """CSR row pointers ``(N_post + 1,)``."""
        if self._crow is None:
            counts = torch.bincount(self.post, minlength=self.shape[0])
            self._crow = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
        return self._crow

    def transpose(self) -> tuple["EdgeIndex", Tensor]:
        """``(index of Wᵀ, permutation)``: ``Wᵀ``'s values are ``values[permutation]``."""
        if self._transpose is None:
            perm = torch.argsort(self.pre * self.shape[0] + self.post)
            t = EdgeIndex(self.pre[perm], self.post[perm], (self.shape[1], self.shape[0]))
            t._transpose, t._perm = self, torch.argsort(perm)
            self._transpose, self._perm = t, perm
        assert self._perm is not None
        return self._transpose, self._perm

    def csr(self, values: Tensor) -> Tensor:
        """A torch CSR tensor of ``values`` on this structure (no copy of the indices)."""
        with warnings.catch_warnings():  # torch calls its CSR support "beta" on first use; the products are tested
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return torch.sparse_csr_tensor(self.crow, self.pre, values, self.shape, check_invariants=False)


def _csr_mm(index: EdgeIndex, values: Tensor, z: Tensor) -> Tensor:
    """``W z`` for ``z (R, N_pre)`` -> ``(R, N_post)``: one CSR × dense product."""
    return torch.sparse.mm(index.csr(values), z.t()).t()


def _sddmm(index: EdgeIndex, post: Tensor, pre: Tensor, block_rows: int) -> Tensor:
    """``g_e = Σ_r post[r, post_e] pre[r, pre_e]`` ``(nnz,)`` (a sampled dense–dense product, in blocks of rows)."""
    out = post.new_zeros(index.post.numel())
    if out.numel() == 0:
        return out
    pattern = index.csr(torch.zeros_like(out))  # beta·input = 0 (its own zeros: out changes in the loop)
    for a in range(0, post.shape[0], block_rows):
        b = a + block_rows
        out += torch.sparse.sampled_addmm(pattern, post[a:b].t().contiguous(), pre[a:b].contiguous()).values()
    return out


def _gather_outer(index: EdgeIndex, post: Tensor, pre: Tensor) -> Tensor:
    """The same sum by gathers (differentiable to any order; used when a backward is itself differentiated)."""
    return (post.index_select(1, index.post) * pre.index_select(1, index.pre)).sum(0)


class _SparseMM(torch.autograd.Function):
    """``y = W z`` for per-edge values ``W`` on ``index`` and ``z (R, N_pre)``: a CSR product forward; backward
    ``∂z = Wᵀ g`` (the same product on the transposed structure) and ``∂w_e = Σ_r g[r, post_e] z[r, pre_e]`` (a
    sampled product; by gathers when the backward is itself differentiated, so double backward works); ``jvp``
    ``W dz + dW z`` (forward mode)."""

    @staticmethod
    def forward(values: Tensor, z: Tensor, index: EdgeIndex) -> Tensor:  # type: ignore[override]
        return _csr_mm(index, values, z)

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:  # type: ignore[override]
        values, z, index = inputs
        ctx.index = index
        ctx.save_for_backward(values, z)
        ctx.save_for_forward(values, z)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Any:  # type: ignore[override]
        values, z = ctx.saved_tensors
        index: EdgeIndex = ctx.index
        gv = gz = None
        if ctx.needs_input_grad[0]:
            if torch.is_grad_enabled():  # create_graph: keep it differentiable
                gv = _gather_outer(index, g, z)
            else:
                gv = _sddmm(index, g, z, SparseWeightOps.block_rows)
        if ctx.needs_input_grad[1]:
            t_index, perm = index.transpose()
            gz = _SparseMM.apply(values.index_select(0, perm), g, t_index)
        return gv, gz, None

    @staticmethod
    def jvp(ctx: Any, dv: Tensor | None, dz: Tensor | None, _: Any) -> Any:  # type: ignore[override]
        values, z = ctx.saved_tensors
        out: Any = 0
        if dz is not None:
            out = out + _csr_mm(ctx.index, values, dz)
        if dv is not None:
            out = out + _csr_mm(ctx.index, dv, z)
        return out


class SparseWeights:
    """A projection stored per edge: ``values (nnz,)`` with ``post (nnz,)``, ``pre (nnz,)`` indices (long, sorted by
    ``(post, pre)``, unique) and ``shape = (N_post, N_pre)``. Only ``values`` carries gradients; no ``N × N`` array.

    Build with :meth:`from_indices` or :meth:`from_dense`; :meth:`to_dense` is for tests and small projections.
    """

    __slots__ = ("values", "index")

    def __init__(self, values: Tensor, post: Tensor | None = None, pre: Tensor | None = None,
                 shape: tuple[int, int] | None = None, *, index: EdgeIndex | None = None):
        if index is None:
            if post is None or pre is None or shape is None:
                raise ValueError("SparseWeights: give post, pre and shape, or index")
            index = EdgeIndex(post, pre, shape)
        if values.dim() != 1 or index.post.shape != values.shape or index.pre.shape != values.shape:
            raise ValueError(f"SparseWeights: values, post and pre must be 1-D of one length, got "
                             f"{tuple(values.shape)}, {tuple(index.post.shape)}, {tuple(index.pre.shape)}")
        self.values, self.index = values, index

    @property
    def post(self) -> Tensor:
        return self.index.post

    @property
    def pre(self) -> Tensor:
        return self.index.pre

    @property
    def shape(self) -> tuple[int, int]:
        return self.index.shape

    @classmethod
    def from_indices(cls, post: Any, pre: Any, values: Any, shape: tuple[int, int], *,
                     dtype: torch.dtype | None = None, device: Any = None) -> "SparseWeights":
        """From edge lists in any order; sorted by ``(post, pre)``. Duplicate or out-of-range edges are errors."""
        post_t = torch.as_tensor(post, dtype=torch.long, device=device).reshape(-1)
        pre_t = torch.as_tensor(pre, dtype=torch.long, device=device).reshape(-1)
        vals = torch.as_tensor(values, dtype=dtype, device=device).reshape(-1)
        n_post, n_pre = int(shape[0]), int(shape[1])
        if post_t.numel() and (int(post_t.min()) < 0 or int(post_t.max()) >= n_post or int(pre_t.min()) < 0
                               or int(pre_t.max()) >= n_pre):
            raise ValueError(f"SparseWeights: an edge index lies outside the shape {(n_post, n_pre)}")
        key = post_t * n_pre + pre_t
        order = torch.argsort(key, stable=True)
        key = key[order]
        if key.numel() > 1 and bool((key[1:] == key[:-1]).any()):
            i = int(torch.nonzero(key[1:] == key[:-1])[0, 0])
            raise ValueError(f"SparseWeights: duplicate edge (post {int(key[i]) // n_pre}, pre {int(key[i]) % n_pre})")
        return cls(vals[order], post_t[order], pre_t[order], (n_post, n_pre))

    @classmethod
    def from_dense(cls, W: Tensor) -> "SparseWeights":
        """The non-zero entries of a dense ``(post, pre)`` matrix (tests and small projections)."""
        post, pre = torch.nonzero(W, as_tuple=True)
        return cls(W[post, pre], post, pre, (W.shape[0], W.shape[1]))

    def with_values(self, values: Tensor) -> "SparseWeights":
        """The same edges (and cached structure) with other values."""
        return SparseWeights(values, index=self.index)

    def abs(self) -> "SparseWeights":
        """The same edges with absolute values."""
        return self.with_values(self.values.abs())

    def pre_sign_any(self) -> tuple[Tensor, Tensor]:
        """``(pos, neg)`` ``(N_pre,)`` bool: whether each presynaptic neuron has a positive / negative edge."""
        z = torch.zeros(self.shape[1], dtype=torch.long, device=self.values.device)
        pos = z.index_add(0, self.pre, (self.values > 0).long()) > 0
        neg = z.index_add(0, self.pre, (self.values < 0).long()) > 0
        return pos, neg

    def detach(self) -> "SparseWeights":
        """The same edges, values without their graph."""
        return self.with_values(self.values.detach())

    @property
    def nnz(self) -> int:
        return int(self.values.numel())

    @property
    def dtype(self) -> torch.dtype:
        return self.values.dtype

    @property
    def device(self) -> torch.device:
        return self.values.device

    def to_dense(self) -> Tensor:
        """The dense ``(post, pre)`` matrix (differentiable in ``values``)."""
        out = self.values.new_zeros(self.shape[0] * self.shape[1])
        return out.index_add(0, self.post * self.shape[1] + self.pre, self.values).view(self.shape)

    def __repr__(self) -> str:
        return f"SparseWeights(shape={self.shape}, nnz={self.nnz}, dtype={self.values.dtype})"


class SparseWeightOps:
    """:class:`WeightOps` for per-edge storage (:class:`SparseWeights`); edge outer sums and gradients are per-edge
    ``(nnz,)`` values. Kernels (chosen by measurement, README "Sparse storage"): products are torch CSR × dense
    products (``torch.sparse.mm``; CPU and CUDA), the transposed product the same on the cached transposed structure,
    edge outer sums sampled dense–dense products (``torch.sparse.sampled_addmm``) in blocks of rows; type blocks, row
    sums and the diagonal are ``index_add`` over the edges. Autograd: the product is a custom function whose backward
    uses the same kernels (by gathers when it is itself differentiated, so double backward works) and which has a
    forward-mode ``jvp``; one product per time step, so a trial gives the same numbers however it is chunked."""

    #: rows per block of the sampled products (bounds the transposed ``(N_post, rows)`` copy)
    block_rows = 1024

    def product(self, W: SparseWeights, z: Tensor) -> Tensor:
        """``W z`` for ``z (..., N_pre)`` -> ``(..., N_post)`` (one CSR product)."""
        lead = z.shape[:-1]
        y = _SparseMM.apply(W.values, z.reshape(-1, z.shape[-1]), W.index)
        return y.reshape(lead + (W.shape[0],))

    def time_product(self, W: SparseWeights, x: Tensor) -> Tensor:
        """``W x^t`` for every step of ``x (T, B, N_pre)``, one product per step (chunking-invariant)."""
        if x.shape[0] == 0:
            return x.new_zeros(x.shape[:-1] + (W.shape[0],))
        return torch.stack([self.product(W, x_t) for x_t in x.unbind(0)])

    def t_product(self, W: SparseWeights, d: Tensor) -> Tensor:
        """``Wᵀ d`` for ``d (..., N_post)`` -> ``(..., N_pre)`` (the product on the transposed structure)."""
        t_index, perm = W.index.transpose()
        return self.product(SparseWeights(W.values.index_select(0, perm), index=t_index), d)

    def edge_outer(self, post: Tensor, pre: Tensor, like: Any = None) -> Tensor:
        """``g_e = Σ_r post[r, post_e] pre[r, pre_e]`` ``(nnz,)`` on the edges of ``like`` (a :class:`SparseWeights`)."""
        if not isinstance(like, SparseWeights):
            raise TypeError("SparseWeightOps.edge_outer needs like= the SparseWeights whose edges it sums over")
        return self.edge_outer_add_(post.new_zeros(like.nnz), post, pre, like)

    def edge_outer_add_(self, acc: Tensor, post: Tensor, pre: Tensor, like: Any = None) -> Tensor:
        """``acc += edge_outer(post, pre)`` in place; ``acc`` ``(nnz,)``; returns ``acc``."""
        if not isinstance(like, SparseWeights):
            raise TypeError("SparseWeightOps.edge_outer_add_ needs like= the SparseWeights whose edges it sums over")
        P = post.reshape(-1, post.shape[-1])
        Q = pre.reshape(-1, pre.shape[-1])
        return acc.add_(_sddmm(like.index, P, Q, self.block_rows))

    def _block_index(self, W: SparseWeights, post_type: Tensor, pre_type: Tensor, n_pre: int) -> Tensor:
        return post_type.index_select(0, W.post) * n_pre + pre_type.index_select(0, W.pre)

    def block_sums(self, W: SparseWeights, post_type: Tensor, pre_type: Tensor, n_post: int, n_pre: int) -> Tensor:
        """``S[α, β]``: the sum of the stored values per (post type, pre type) block ``(n_post, n_pre)``."""
        idx = self._block_index(W, post_type, pre_type, n_pre)
        return W.values.new_zeros(n_post * n_pre).index_add(0, idx, W.values).view(n_post, n_pre)

    def block_counts(self, W: SparseWeights, post_type: Tensor, pre_type: Tensor, n_post: int, n_pre: int) -> Tensor:
        """The number of existing (non-zero) edges per block."""
        idx = self._block_index(W, post_type, pre_type, n_pre)
        nz = (W.values != 0).to(W.values.dtype)
        return W.values.new_zeros(n_post * n_pre).index_add(0, idx, nz).view(n_post, n_pre)

    def expand_blocks(self, w: Tensor, post_type: Tensor, pre_type: Tensor, like: Any = None) -> SparseWeights:
        """Block values ``w`` on the edges of ``like`` (where its value is non-zero), as :class:`SparseWeights`."""
        if not isinstance(like, SparseWeights):
            raise TypeError("SparseWeightOps.expand_blocks needs like= the SparseWeights whose edges receive the "
                            "block values (sparse storage has no 'every pair')")
        vals = w.reshape(-1).index_select(0, self._block_index(like, post_type, pre_type, w.shape[1]))
        return like.with_values(vals * (like.values != 0).to(vals.dtype))

    def row_sums(self, W: SparseWeights) -> Tensor:
        """``Σ_i W[j, i]`` ``(N_post,)``."""
        return W.values.new_zeros(W.shape[0]).index_add(0, W.post, W.values)

    def diagonal(self, W: SparseWeights) -> Tensor:
        """``W[j, j]`` ``(N,)`` (zero where there is no autapse)."""
        on = W.post == W.pre
        return W.values.new_zeros(min(W.shape)).index_add(0, W.post[on], W.values[on])


SPARSE = SparseWeightOps()


def weight_ops(model: Any) -> WeightOps:
    """The weight operations of ``model``: ``model.weight_ops`` where defined, else :data:`DENSE`."""
    return getattr(model, "weight_ops", DENSE)
