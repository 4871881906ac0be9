"""DEEP R rewiring (temperature 0): constant connectivity, fixed signs, shrinkage, gradient masking."""

import numpy as np
import torch

from spikelearn.circuit import Circuit
from spikelearn.models import SpikingRNN
from spikelearn.rules.rewiring import DeepR


def _model(seed=0):
    rng = np.random.default_rng(seed)
    n = 20
    signs = np.r_[np.ones(15), -np.ones(5)]
    W = np.abs(rng.standard_normal((n, n))) * (rng.random((n, n)) < 0.1) * signs[None, :]
    np.fill_diagonal(W, 0)
    circ = Circuit.from_dense(W, mask=np.ones((n, n), bool), signs=signs.astype(int))
    torch.manual_seed(seed)
    return SpikingRNN(circ, 4, 2, sign_constraint="dale").double()


def test_connectivity_and_signs_are_kept():
    model = _model()
    rw = DeepR(l1=1e-2, matrices=("rec",), seed=0)
    st = rw.init(model)
    W0 = model.effective_weights().W_rec.detach()
    n0 = int((W0 != 0).sum())
    sign0 = torch.sign(model.sign_rec)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    total = 0
    for it in range(20):
        opt.zero_grad()
        g = torch.Generator().manual_seed(it)
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)
        rw.mask_grads(model, st)
        assert (model.theta_rec.grad[~st.active["rec"]] == 0).all()
        opt.step()
        st = rw.step(model, st, lr=0.5)
        total += st.n_rewired
        W = model.effective_weights().W_rec.detach()
        assert int(st.active["rec"].sum()) == n0
        assert int((W != 0).sum()) <= n0
        assert ((W * sign0) >= 0).all()  # no synapse changes sign
        assert (W[~st.active["rec"]] == 0).all()
        assert (torch.diagonal(W) == 0).all()
    assert total > 0


def test_shrinkage_and_disconnection():
    model = _model(1)
    rw = DeepR(l1=1.0, matrices=("rec",))
    st = rw.init(model)
    act0 = st.active["rec"].clone()
    mag0 = model.theta_rec.detach().clone()
    st = rw.step(model, st, lr=0.1)
    survived = act0 & st.active["rec"] & (mag0 > 0.1)
    assert torch.allclose(model.theta_rec.detach()[survived], mag0[survived] - 0.1)
    assert st.n_rewired == int((act0 & (mag0 <= 0.1)).sum())
    assert int(st.active["rec"].sum()) == int(act0.sum())


def test_unconstrained_matrix_reconnects_with_the_column_sign_not_always_positive():
    """sign_constraint = "none": an inactive position gets its presynaptic column's sign when that column's
    synapses agree (random ±1 otherwise), so rewiring keeps the E/I make-up of a mixed-sign matrix."""
    rng = np.random.default_rng(3)
    n = 20
    col_sign = np.where(np.arange(n) < 12, 1.0, -1.0)
    W = np.abs(rng.standard_normal((n, n))) * (rng.random((n, n)) < 0.15) * col_sign[None, :]
    W[:, 0] = 0.0                                    # a presynaptic neuron without synapses: random signs
    np.fill_diagonal(W, 0)
    torch.manual_seed(0)
    model = SpikingRNN(Circuit.from_dense(W, mask=np.ones((n, n), bool)), 4, 2, sign_constraint="none").double()
    st = DeepR(l1=1e-2, matrices=("rec",), seed=0).init(model)
    sign = st.sign["rec"].numpy()
    inactive = ~st.active["rec"].numpy()
    cols = np.arange(1, n)
    np.testing.assert_array_equal(sign[:, cols][inactive[:, cols]],
                                  np.broadcast_to(col_sign[cols], (n, n - 1))[inactive[:, cols]])
    assert set(np.unique(sign[:, 0])) == {-1.0, 1.0}  # the empty column draws both signs
