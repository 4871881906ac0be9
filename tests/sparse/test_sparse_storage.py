"""Sparse (per-edge) storage of the recurrent weights (issue 19, first part): the same circuit stored dense and sparse
gives the same forward (every record field), the same BPTT gradients and the same local-rule gradients, to 1e-12 in
float64 (T12.1); gradients exist on edges only and Dale's law holds on the stored values (T12.2)."""

import numpy as np
import pandas as pd
import pytest
import torch

from spikelearn.circuit import block_model, dale, gaussian
from spikelearn.models import RateRNN, SpikingRNN
from spikelearn.rules import BPTT, MDGL, RFLO, EProp, ModProp, RewardModulated, TruncatedBPTT
from spikelearn.weights import SparseWeights

F64 = torch.float64
N_IN, N_OUT, T, B = 3, 2, 25, 3


def _pair(cls, circuit, **kw):
    torch.manual_seed(0)
    dense = cls(circuit, N_IN, N_OUT, storage="dense", dtype=F64, **kw)
    torch.manual_seed(0)
    sparse = cls(circuit, N_IN, N_OUT, storage="sparse", dtype=F64, **kw)
    return dense, sparse


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(T, B, N_IN, generator=g, dtype=F64) < 0.3).double()
    y = torch.randn(T, B, N_OUT, generator=g, dtype=F64)
    return x, y, torch.ones(T, B, dtype=F64)


def _mse(y_hat, y, mask):
    return 0.5 * (((y_hat - y) ** 2).sum(-1) * mask).sum()


def _close(a, b, tol=1e-12):
    assert a.shape == b.shape
    if a.dtype == torch.bool:
        assert torch.equal(a, b)
        return
    err = float((a - b).abs().max())
    scale = max(1.0, float(b.abs().max()))
    assert err <= tol * scale, err


def _dense_grad(model, grads, name):
    """A gradient of the sparse model's parameter ``name`` laid out densely (per-edge values scattered)."""
    g = grads[name]
    if name == "theta_rec" and model.storage == "sparse":
        return SparseWeights(g, model.rec_post, model.rec_pre, (model.n, model.n)).to_dense()
    return g


CIRCUITS = {
    "dale": lambda: dale(40, 0.8, p=0.2, seed=1),
    "gaussian": lambda: gaussian(30, 1.2, seed=2),
    "block": lambda: block_model(pd.DataFrame([[0.3, 0.1, 0.0], [0.2, 0.2, 0.4], [0.5, 0.0, 0.1]],
                                              index=list("abc"), columns=list("abc")),
                                 {"a": 10, "b": 15, "c": 5}, type_signs={"a": 1, "b": 1, "c": -1}, seed=3),
}
SPIKING = {
    "lif": dict(v_th=0.05),
    "alif_syn_zero": dict(v_th=0.05, n_adaptive=10, tau_syn_ms=4.0, reset="zero"),
    "alif_B": dict(v_th=0.02, n_adaptive=10, scaling="B", readout="filtered_current"),
}


def test_storage_holds_one_value_per_edge_and_no_dense_matrix():
    c = dale(40, 0.8, p=0.2, seed=1)
    dense, sparse = _pair(SpikingRNN, c)
    assert sparse.theta_rec.shape == (int(dense.mask_rec.sum()),)
    assert all(b.numel() < 40 * 40 for b in sparse.buffers())
    W = sparse.effective_weights().W_rec
    assert isinstance(W, SparseWeights)
    assert torch.equal(W.to_dense(), dense.effective_weights().W_rec)
    with pytest.raises(ValueError, match="storage must be one of"):
        SpikingRNN(c, N_IN, N_OUT, storage="csr")


@pytest.mark.parametrize("circuit", sorted(CIRCUITS))
@pytest.mark.parametrize("neuron", sorted(SPIKING))
def test_spiking_forward_and_bptt_agree(circuit, neuron):
    dense, sparse = _pair(SpikingRNN, CIRCUITS[circuit](), **SPIKING[neuron])
    x, y, mask = _data()
    with torch.no_grad():
        od, os_ = dense(x, record=True), sparse(x, record=True)
    assert float(od.record.z.sum()) > 0  # the network spikes: the comparison is not vacuous
    for f in od.record._fields:
        _close(getattr(os_.record, f), getattr(od.record, f))
    _close(os_.y, od.y)
    ld, gd = BPTT().gradients(dense, x, y, mask, _mse)
    ls, gs = BPTT().gradients(sparse, x, y, mask, _mse)
    _close(ls, ld)
    assert gd.keys() == gs.keys()
    for k in gd:
        _close(_dense_grad(sparse, gs, k), gd[k], 1e-11)


@pytest.mark.parametrize("circuit", sorted(CIRCUITS))
@pytest.mark.parametrize("form", ["pre_activation", "murray", "relu_lif", "richlazy"])
def test_rate_forward_bptt_and_rflo_agree(circuit, form):
    dense, sparse = _pair(RateRNN, CIRCUITS[circuit](), form=form, hidden_bias=True)
    x, y, mask = _data(1)
    with torch.no_grad():
        od, os_ = dense(x, record=True), sparse(x, record=True)
    for f in od.record._fields:
        _close(getattr(os_.record, f), getattr(od.record, f))
    for rule in (BPTT(), TruncatedBPTT(k=5), RFLO(), RFLO(mode="online")):
        _, gd = rule.gradients(dense, x, y, mask, _mse)
        _, gs = rule.gradients(sparse, x, y, mask, _mse)
        assert gd.keys() == gs.keys()
        for k in gd:
            _close(_dense_grad(sparse, gs, k), gd[k], 1e-11)


@pytest.mark.parametrize("neuron", sorted(SPIKING))
@pytest.mark.parametrize("rule", [EProp(), EProp(feedback="random", reset_in_trace=True, reg_coeff=1.0),
                                  EProp(mode="online", chunk_steps=7)], ids=["symmetric", "random-reg", "online"])
def test_eprop_agrees(neuron, rule):
    dense, sparse = _pair(SpikingRNN, CIRCUITS["dale"](), **SPIKING[neuron])
    x, y, mask = _data(2)
    _, gd = rule.gradients(dense, x, y, mask, _mse)
    _, gs = rule.gradients(sparse, x, y, mask, _mse)
    assert gd.keys() == gs.keys()
    for k in gd:
        _close(_dense_grad(sparse, gs, k), gd[k], 1e-11)


def test_dale_signs_hold_on_stored_values_after_training():
    """T12.2: 100 optimiser steps on sparse storage: the per-edge values keep Dale's signs; gradients have one value
    per edge (no value exists for an absent edge)."""
    c = dale(40, 0.8, p=0.2, seed=1)
    _, model = _pair(SpikingRNN, c, v_th=0.05, sign_constraint="dale")
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    x, y, mask = _data(3)
    for _ in range(100):
        _, g = EProp().gradients(model, x, y, mask, _mse)
        assert g["theta_rec"].shape == model.theta_rec.shape
        opt.zero_grad()
        for n, p in model.named_parameters():
            if n in g:
                p.grad = g[n]
        opt.step()
    W = model.effective_weights().W_rec
    pre_sign = torch.as_tensor(np.asarray(c.dale_signs(), dtype=np.float64))[W.pre]
    assert bool((W.values * pre_sign >= 0).all())
    assert not torch.equal(W.values, _pair(SpikingRNN, c, v_th=0.05, sign_constraint="dale")[1]
                           .effective_weights().W_rec.values)


@pytest.mark.parametrize("kind", ["spiking", "rate"])
@pytest.mark.parametrize("rule", [MDGL(), MDGL(variant="exact"), MDGL(variant="nonlocal"),
                                  MDGL(cell_types="circuit"), ModProp(mu=0.05), ModProp(mu=0.05, omega="abs_sign"),
                                  RewardModulated(seed=0, baseline="batch")],
                         ids=["mdgl", "mdgl-exact", "mdgl-nonlocal", "mdgl-circuit-types", "modprop",
                              "modprop-abs-sign", "reward"])
def test_neuromodulatory_and_reward_rules_agree(kind, rule):
    circuit = CIRCUITS["block"]()
    if kind == "spiking":
        dense, sparse = _pair(SpikingRNN, circuit, **SPIKING["alif_syn_zero"])
    else:
        dense, sparse = _pair(RateRNN, circuit, form="pre_activation", hidden_bias=True)
    x, y, mask = _data(4)
    _, gd = rule.gradients(dense, x, y, mask, _mse)
    _, gs = rule.gradients(sparse, x, y, mask, _mse)
    assert gd.keys() == gs.keys()
    for k in gd:
        _close(_dense_grad(sparse, gs, k), gd[k], 1e-11)


@pytest.mark.parametrize("rule", [MDGL(variant="online", mode="online", chunk_steps=6),
                                  ModProp(mode="online", chunk_steps=6)], ids=["mdgl-online", "modprop-online"])
def test_online_neuromodulatory_rules_agree(rule):
    circuit = CIRCUITS["dale"]()
    if isinstance(rule, MDGL):
        dense, sparse = _pair(SpikingRNN, circuit, **SPIKING["lif"])
    else:
        dense, sparse = _pair(RateRNN, circuit, form="pre_activation")
    x, y, mask = _data(5)
    _, gd = rule.gradients(dense, x, y, mask, _mse)
    _, gs = rule.gradients(sparse, x, y, mask, _mse)
    for k in gd:
        _close(_dense_grad(sparse, gs, k), gd[k], 1e-11)


@pytest.mark.parametrize("sign_constraint", ["dale", "none"])
def test_deep_r_rewires_within_the_stored_edges_as_on_dense_storage(sign_constraint):
    """DEEP R on per-edge storage: the allowed positions are the stored edges; shrinkage, disconnection and the
    seeded reconnection draws give the same active sets and weights as on dense storage (the same edges in the same
    order), the connection count stays fixed and no synapse changes sign."""
    from spikelearn.rules.rewiring import DeepR

    dense, sparse = _pair(SpikingRNN, CIRCUITS["dale"](), v_th=0.05, sign_constraint=sign_constraint)
    with torch.no_grad():  # disconnect every third edge first, so that there are inactive allowed positions
        off = torch.arange(sparse.theta_rec.numel()) % 3 == 0
        sparse.theta_rec[off] = 0.0
        dense.theta_rec[sparse.rec_post[off], sparse.rec_pre[off]] = 0.0
    rw = DeepR(l1=0.5, matrices=("rec",), seed=3)
    sd, ss = rw.init(dense), rw.init(sparse)
    x, y, mask = _data(12)
    n0 = int(ss.active["rec"].sum())
    assert n0 == int(sd.active["rec"].sum()) and n0 < sparse.theta_rec.numel()
    od = torch.optim.SGD(dense.parameters(), lr=0.05)
    os_ = torch.optim.SGD(sparse.parameters(), lr=0.05)
    rewired = 0
    for _ in range(5):
        for m, st, opt in ((dense, sd, od), (sparse, ss, os_)):
            _, g = BPTT().gradients(m, x, y, mask, _mse)
            opt.zero_grad()
            for n, p in m.named_parameters():
                if n in g:
                    p.grad = g[n]
            rw.mask_grads(m, st)
            opt.step()
        sd, ss = rw.step(dense, sd, lr=0.05), rw.step(sparse, ss, lr=0.05)
        assert sd.n_rewired == ss.n_rewired
        rewired += ss.n_rewired
        assert int(ss.active["rec"].sum()) == n0
        Wd = dense.effective_weights().W_rec.detach()
        Ws = sparse.effective_weights().W_rec.detach()
        assert torch.equal(ss.active["rec"], sd.active["rec"][sparse.rec_post, sparse.rec_pre])
        _close(Ws.values, Wd[sparse.rec_post, sparse.rec_pre], 1e-11)
        assert bool((Ws.values * ss.sign["rec"] >= 0).all())
    assert rewired > 0  # edges did move


def test_save_load_round_trip_keeps_sparse_storage(tmp_path):
    from spikelearn.models import load

    _, sparse = _pair(SpikingRNN, CIRCUITS["dale"](), v_th=0.05)
    with torch.no_grad():
        sparse.theta_rec.mul_(1.5)
    sparse.save(tmp_path / "m.pt")
    back = load(tmp_path / "m.pt")
    assert back.storage == "sparse" and torch.equal(back.theta_rec, sparse.theta_rec)
    x, _, _ = _data(6)
    with torch.no_grad():
        assert torch.equal(back(x).y, sparse(x).y)


@pytest.mark.parametrize("kind, jacobian", [("rate", "surrogate"), ("spiking", "surrogate"), ("spiking", "rate")])
def test_lyapunov_spectra_and_flossing_agree(kind, jacobian):
    """The tangent dynamics (Lyapunov spectrum, autodiff and local flossing gradients) on sparse storage."""
    from spikelearn.analysis import lyapunov_spectrum
    from spikelearn.dynamics import FlossingConfig, flossing_grads

    circuit = CIRCUITS["gaussian"]()
    if kind == "rate":
        dense, sparse = _pair(RateRNN, circuit, form="pre_activation", hidden_bias=True, tau_ms=20.0)
        jac = {}
    else:
        opts = SPIKING["alif_syn_zero"] if jacobian == "surrogate" else dict(SPIKING["alif_syn_zero"], reset="subtract")
        dense, sparse = _pair(SpikingRNN, circuit, **opts)  # the rate (escape-noise) map is written for subtraction
        jac = {"jacobian": jacobian}
    x, _, _ = _data(7)
    ld = lyapunov_spectrum(dense, x, k=3, transient_steps=5, **jac)
    ls = lyapunov_spectrum(sparse, x, k=3, transient_steps=5, **jac)
    np.testing.assert_allclose(ls.exponents, ld.exponents, rtol=1e-10, atol=1e-12)
    for mode in ("autodiff", "local"):
        cfg = FlossingConfig(k=2, mode=mode, transient_steps=5, **jac)
        _, gd, lamd = flossing_grads(dense, x, None, cfg)
        _, gs, lams = flossing_grads(sparse, x, None, cfg)
        torch.testing.assert_close(lams, lamd, rtol=1e-10, atol=1e-12)
        assert gd.keys() == gs.keys()
        for k in gd:
            _close(_dense_grad(sparse, gs, k), gd[k], 1e-10)


@pytest.mark.brian2
@pytest.mark.parametrize("neuron", ["lif", "alif_syn_zero", "lif_gap"])
def test_brian2_spikes_identical_on_sparse_storage(neuron):
    """The Brian2 export writes the synapses (and gap junctions) from the edge arrays: identical spikes and
    membranes (numpy target)."""
    from spikelearn.validate import compare_with_brian2

    if neuron == "lif_gap":
        _, sparse = _pair(SpikingRNN, _gap_circuit(), **SPIKING["lif"])
        assert isinstance(sparse.gap, SparseWeights)
    else:
        _, sparse = _pair(SpikingRNN, CIRCUITS["dale"](), **SPIKING[neuron])
    x, _, _ = _data(8)
    rep = compare_with_brian2(sparse, x)
    assert rep.ok, rep.verdict
    assert rep.summary["spikes_spikelearn"] > 0  # not vacuous


def test_brian2_eprop_refuses_and_nir_exports_small_sparse_storage():
    from spikelearn.validate.brian2 import UnsupportedFeatureError, eprop_brian2, export_spec
    from spikelearn.validate.nir import to_nir

    dense, sparse = _pair(SpikingRNN, CIRCUITS["dale"](), v_th=0.05)
    spec = export_spec(sparse)
    assert spec.W_rec is None and spec.rec_values is not None and spec.rec_values.shape == sparse.theta_rec.shape
    x, y, mask = _data(9)
    with pytest.raises(UnsupportedFeatureError, match="storage='sparse'.*storage='dense'"):
        eprop_brian2(sparse, x, y, mask)
    graph_s, graph_d = to_nir(sparse), to_nir(dense)  # small: NIR's dense matrices written from the edges
    for k in graph_d.nodes:
        for f in ("weight", "bias", "tau", "r", "v_threshold"):
            if hasattr(graph_d.nodes[k], f):
                np.testing.assert_array_equal(getattr(graph_s.nodes[k], f), getattr(graph_d.nodes[k], f))
    import spikelearn.validate.nir as nir_mod

    old, nir_mod.NIR_MAX_SPARSE_N = nir_mod.NIR_MAX_SPARSE_N, 10
    try:
        with pytest.raises(UnsupportedFeatureError, match="NIR has no sparse primitive"):
            to_nir(sparse)
    finally:
        nir_mod.NIR_MAX_SPARSE_N = old


def test_auto_storage_follows_the_density_threshold():
    from spikelearn.models import AUTO_SPARSE_DENSITY

    sparse_c = dale(200, 0.8, p=AUTO_SPARSE_DENSITY / 4, seed=0)
    dense_c = dale(200, 0.8, p=AUTO_SPARSE_DENSITY * 4, seed=0)
    assert SpikingRNN(sparse_c, 2, 2, storage="auto").storage == "sparse"
    assert SpikingRNN(dense_c, 2, 2, storage="auto").storage == "dense"
    assert RateRNN(sparse_c, 2, 2, storage="auto").storage == "sparse"


def _gap_circuit():
    import scipy.sparse as sps

    from spikelearn.circuit import Circuit

    base = CIRCUITS["dale"]()
    rng = np.random.default_rng(5)
    n = base.n
    G = np.triu(rng.random((n, n)) * 0.02 * (rng.random((n, n)) < 0.1), 1)
    return Circuit.from_dense(base.weights(dense=True), mask=base.mask(dense=True), signs=base.signs,
                              gap=sps.csr_array(G + G.T))


@pytest.mark.parametrize("kind", ["spiking", "rate"])
def test_gap_junctions_per_edge_agree(kind):
    """Gap junctions on sparse storage are per edge (gap_post, gap_pre, gap_values): forward, BPTT, the local rules
    (their local leak by row sums) and the Lyapunov tangents equal the dense storage's."""
    from spikelearn.analysis import lyapunov_spectrum

    c = _gap_circuit()
    if kind == "spiking":
        dense, sparse = _pair(SpikingRNN, c, **SPIKING["alif_syn_zero"])
        rules = [BPTT(), EProp(), EProp(mode="online", chunk_steps=9), MDGL(), RewardModulated(seed=0, baseline="batch")]
    else:
        dense, sparse = _pair(RateRNN, c, form="pre_activation", hidden_bias=True, tau_ms=20.0)
        rules = [BPTT(), RFLO(), RFLO(mode="online"), MDGL()]
    assert isinstance(sparse.gap, SparseWeights) and sparse.gap.nnz == int((dense.gap != 0).sum())
    assert all(b.numel() < c.n * c.n for b in sparse.buffers())
    x, y, mask = _data(10)
    with torch.no_grad():
        od, os_ = dense(x, record=True), sparse(x, record=True)
    for f in od.record._fields:
        _close(getattr(os_.record, f), getattr(od.record, f))
    for rule in rules:
        _, gd = rule.gradients(dense, x, y, mask, _mse)
        _, gs = rule.gradients(sparse, x, y, mask, _mse)
        for k in gd:
            _close(_dense_grad(sparse, gs, k), gd[k], 1e-11)
    ld = lyapunov_spectrum(dense, x, k=2, transient_steps=5)
    ls = lyapunov_spectrum(sparse, x, k=2, transient_steps=5)
    np.testing.assert_allclose(ls.exponents, ld.exponents, rtol=1e-10, atol=1e-12)
    moved = sparse.double()  # a dtype change keeps the per-edge gap in step with its buffers
    assert moved.gap.values is moved.gap_values


@pytest.mark.parametrize("name, opts", [("celegans_varshney2011", {"signs": "gaba_inhibitory"}),
                                         ("mouse_v1", {"n": 300, "seed": 0}),
                                         ("drosophila_optic_lobe", {"lattice_radius": 1})])
def test_shipped_connectomes_agree(name, opts):
    """T12.1 on every shipped connectome (C. elegans with its gap junctions): forward records, BPTT and e-prop."""
    import spikelearn as sl

    c = sl.connectomes.load(name, **opts)
    dense, sparse = _pair(SpikingRNN, c, v_th=0.5, gap_scale=0.01, allow_autapses=True)
    x, y, mask = _data(11)
    with torch.no_grad():
        od, os_ = dense(x, record=True), sparse(x, record=True)
    assert float(od.record.z.sum()) > 0
    for f in od.record._fields:
        _close(getattr(os_.record, f), getattr(od.record, f))
    for rule in (BPTT(), EProp()):
        _, gd = rule.gradients(dense, x, y, mask, _mse)
        _, gs = rule.gradients(sparse, x, y, mask, _mse)
        for k in gd:
            _close(_dense_grad(sparse, gs, k), gd[k], 1e-11)
