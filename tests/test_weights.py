"""The weight-operations interface (ALGORITHMS-2 §12.2) on dense storage: each operation against its definition
(loops or autograd), and the autograd contract (double backward, forward-mode jvp, chunking invariance)."""

import pytest
import torch

from spikelearn.models import RateRNN, SpikingRNN
from spikelearn.circuit import dale
from spikelearn.weights import DENSE, SPARSE, SparseWeights, WeightOps, time_linear, weight_ops

F64 = torch.float64


def _w(n_post=5, n_pre=4, seed=0, p=0.5):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(n_post, n_pre, generator=g, dtype=F64)
    return W * (torch.rand(n_post, n_pre, generator=g, dtype=F64) < p)


def test_dense_ops_satisfy_the_protocol_and_models_expose_them():
    assert isinstance(DENSE, WeightOps)
    c = dale(8, 0.75, p=0.5, seed=0)
    assert weight_ops(SpikingRNN(c, 2, 1)) is DENSE and weight_ops(RateRNN(c, 2, 1)) is DENSE
    assert weight_ops(torch.nn.Linear(2, 2)) is DENSE


def test_products_against_their_definitions():
    W = _w()
    g = torch.Generator().manual_seed(1)
    z = torch.randn(3, 4, generator=g, dtype=F64)
    d = torch.randn(3, 5, generator=g, dtype=F64)
    want = torch.stack([torch.stack([sum(W[j, i] * z[b, i] for i in range(4)) for j in range(5)]) for b in range(3)])
    torch.testing.assert_close(DENSE.product(W, z), want, rtol=1e-14, atol=1e-14)
    want_t = torch.stack([torch.stack([sum(W[j, i] * d[b, j] for j in range(5)) for i in range(4)]) for b in range(3)])
    torch.testing.assert_close(DENSE.t_product(W, d), want_t, rtol=1e-14, atol=1e-14)
    x = torch.randn(6, 3, 4, generator=g, dtype=F64)
    torch.testing.assert_close(DENSE.time_product(W, x), torch.stack([DENSE.product(W, x[t]) for t in range(6)]),
                               rtol=1e-14, atol=1e-14)


def test_edge_outer_sum_is_the_gradient_of_the_product():
    """``g_e = Σ_r post[r, post_e] pre[r, pre_e]`` is ``∂/∂W Σ post · (W pre)`` (every rule's gradient form)."""
    W = _w().requires_grad_(True)
    g = torch.Generator().manual_seed(2)
    pre = torch.randn(7, 3, 4, generator=g, dtype=F64)
    post = torch.randn(7, 3, 5, generator=g, dtype=F64)
    (grad,) = torch.autograd.grad((post * time_linear(pre, W)).sum(), W)
    out = DENSE.edge_outer(post, pre)
    torch.testing.assert_close(out, grad, rtol=1e-13, atol=1e-13)
    acc = torch.ones(5, 4, dtype=F64)
    DENSE.edge_outer_add_(acc, post, pre)
    torch.testing.assert_close(acc, grad + 1, rtol=1e-13, atol=1e-13)


def test_type_blocks_row_sums_and_diagonal_against_loops():
    W = _w(6, 6, seed=3)
    post_t = torch.tensor([0, 1, 1, 2, 0, 2])
    pre_t = torch.tensor([1, 0, 0, 1, 1, 0])
    S = DENSE.block_sums(W, post_t, pre_t, 3, 2)
    C = DENSE.block_counts(W, post_t, pre_t, 3, 2)
    for a in range(3):
        for b in range(2):
            entries = [W[j, i] for j in range(6) for i in range(6) if post_t[j] == a and pre_t[i] == b]
            assert abs(float(S[a, b]) - float(sum(entries))) < 1e-14
            assert int(C[a, b]) == sum(1 for e in entries if e != 0)
    w = torch.arange(6, dtype=F64).reshape(3, 2) + 1
    E = DENSE.expand_blocks(w, post_t, pre_t, like=W)
    full = DENSE.expand_blocks(w, post_t, pre_t)
    for j in range(6):
        for i in range(6):
            assert full[j, i] == w[post_t[j], pre_t[i]]
            assert E[j, i] == (w[post_t[j], pre_t[i]] if W[j, i] != 0 else 0)
    torch.testing.assert_close(DENSE.row_sums(W), torch.tensor([float(sum(W[j])) for j in range(6)], dtype=F64),
                               rtol=1e-14, atol=1e-14)
    assert torch.equal(DENSE.diagonal(W), torch.tensor([float(W[j, j]) for j in range(6)], dtype=F64))


def test_time_product_autograd_contract():
    """Twice differentiable (gradcheck and gradgradcheck), forward-mode jvp = finite differences, and bit-identical
    whatever the chunking of the trial."""
    g = torch.Generator().manual_seed(4)
    W = _w(3, 4).requires_grad_(True)
    x = torch.randn(5, 2, 4, generator=g, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(DENSE.time_product, (W, x))
    assert torch.autograd.gradgradcheck(DENSE.time_product, (W, x))
    dW = torch.randn(3, 4, generator=g, dtype=F64)
    dx = torch.randn(5, 2, 4, generator=g, dtype=F64)
    _, tangent = torch.func.jvp(DENSE.time_product, (W.detach(), x.detach()), (dW, dx))
    h = 1e-6
    fd = (DENSE.time_product(W.detach() + h * dW, x.detach() + h * dx)
          - DENSE.time_product(W.detach() - h * dW, x.detach() - h * dx)) / (2 * h)
    torch.testing.assert_close(tangent, fd, rtol=1e-8, atol=1e-8)
    xl = torch.randn(40, 8, 4, generator=g, dtype=torch.float32)
    Wf = W.detach().float()
    whole = DENSE.time_product(Wf, xl)
    split = torch.cat([DENSE.time_product(Wf, xl[a:b]) for a, b in ((0, 7), (7, 8), (8, 33), (33, 40))])
    assert torch.equal(whole, split)


# ------------------------------------------------------------------------------------------------ sparse storage
def _pair(n_post=7, n_pre=6, seed=5, p=0.4):
    W = _w(n_post, n_pre, seed=seed, p=p)
    return W, SparseWeights.from_dense(W)


def test_sparse_weights_build_sort_and_refuse_bad_edges():
    S = SparseWeights.from_indices([2, 0, 1, 0], [1, 3, 0, 0], [1.0, 2.0, 3.0, 4.0], (3, 4), dtype=F64)
    assert S.post.tolist() == [0, 0, 1, 2] and S.pre.tolist() == [0, 3, 0, 1] and S.values.tolist() == [4, 2, 3, 1]
    assert torch.equal(SparseWeights.from_dense(S.to_dense()).values, S.values)
    with pytest.raises(ValueError, match="duplicate edge \\(post 0, pre 3\\)"):
        SparseWeights.from_indices([0, 0], [3, 3], [1.0, 1.0], (3, 4))
    with pytest.raises(ValueError, match="outside the shape"):
        SparseWeights.from_indices([3], [0], [1.0], (3, 4))


def test_sparse_ops_equal_dense_ops():
    """T12.3-style: every operation on per-edge storage equals the dense one on the same matrix (1e-12, float64)."""
    W, S = _pair()
    g = torch.Generator().manual_seed(6)
    z = torch.randn(5, 3, 6, generator=g, dtype=F64)
    d = torch.randn(5, 3, 7, generator=g, dtype=F64)
    close = dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(SPARSE.product(S, z[0]), DENSE.product(W, z[0]), **close)
    torch.testing.assert_close(SPARSE.time_product(S, z), DENSE.time_product(W, z), **close)
    torch.testing.assert_close(SPARSE.t_product(S, d), DENSE.t_product(W, d), **close)
    SPARSE.block_rows = 4  # several row blocks
    try:
        got = SPARSE.edge_outer(d, z, like=S)
    finally:
        SPARSE.block_rows = 64
    torch.testing.assert_close(got, DENSE.edge_outer(d, z)[S.post, S.pre], **close)  # the dense sum on the edges
    post_t, pre_t = torch.tensor([0, 1, 1, 2, 0, 2, 1]), torch.tensor([1, 0, 0, 1, 1, 0])
    torch.testing.assert_close(SPARSE.block_sums(S, post_t, pre_t, 3, 2), DENSE.block_sums(W, post_t, pre_t, 3, 2),
                               **close)
    assert torch.equal(SPARSE.block_counts(S, post_t, pre_t, 3, 2), DENSE.block_counts(W, post_t, pre_t, 3, 2))
    w = torch.arange(6, dtype=F64).reshape(3, 2) + 1
    assert torch.equal(SPARSE.expand_blocks(w, post_t, pre_t, like=S).to_dense(),
                       DENSE.expand_blocks(w, post_t, pre_t, like=W))
    Wsq, Ssq = _pair(6, 6, seed=7, p=0.6)
    torch.testing.assert_close(SPARSE.row_sums(Ssq), DENSE.row_sums(Wsq), **close)
    assert torch.equal(SPARSE.diagonal(Ssq), DENSE.diagonal(Wsq))


def test_sparse_product_autograd_contract():
    """Twice differentiable in the edge values and the input, jvp = finite differences, chunking-invariant (CPU)."""
    _, S = _pair()
    g = torch.Generator().manual_seed(8)
    vals = S.values.clone().requires_grad_(True)
    x = torch.randn(4, 2, 6, generator=g, dtype=F64, requires_grad=True)

    def f(v, xx):
        return SPARSE.time_product(S.with_values(v), xx)

    assert torch.autograd.gradcheck(f, (vals, x))
    assert torch.autograd.gradgradcheck(f, (vals, x))
    # the value gradient is the edge outer sum (every rule's gradient form)
    gy = torch.randn(4, 2, 7, generator=g, dtype=F64)
    (gv,) = torch.autograd.grad(f(vals, x.detach()), vals, gy)
    torch.testing.assert_close(gv, SPARSE.edge_outer(gy, x.detach(), like=S), rtol=1e-12, atol=1e-12)
    dv = torch.randn(S.nnz, generator=g, dtype=F64)
    dx = torch.randn(4, 2, 6, generator=g, dtype=F64)
    import torch.autograd.forward_ad as fwAD

    with fwAD.dual_level():  # forward mode through the custom function's jvp
        out = f(fwAD.make_dual(vals.detach(), dv), fwAD.make_dual(x.detach(), dx))
        tangent = fwAD.unpack_dual(out).tangent
    h = 1e-6
    fd = (f(vals.detach() + h * dv, x.detach() + h * dx) - f(vals.detach() - h * dv, x.detach() - h * dx)) / (2 * h)
    torch.testing.assert_close(tangent, fd, rtol=1e-8, atol=1e-8)
    xl = torch.randn(40, 8, 6, generator=g, dtype=torch.float32)
    Sf = S.with_values(S.values.float())
    whole = SPARSE.time_product(Sf, xl)
    split = torch.cat([SPARSE.time_product(Sf, xl[a:b]) for a, b in ((0, 7), (7, 8), (8, 33), (33, 40))])
    assert torch.equal(whole, split)
