"""MDGL (ALGORITHMS.md §3.7): autograd construction T3.1 (exact-weight and type-averaged), one type per neuron
(T3.2), no recurrence (T3.3), two steps without leak (T3.4), online = batched, cell-type options (the rule
contract: tests/rules/test_contract.py)."""

import math

import numpy as np
import pytest
import torch

from spikelearn.circuit import Circuit, dale
from spikelearn.models import SpikingRNN
from spikelearn.rules import BPTT, EProp
from spikelearn.rules import _reference as ref
from spikelearn.rules.mdgl import MDGL, cell_type_index, type_average, type_indicator


def _mse(y_hat, y, mask):
    return 0.5 * (((y_hat - y) ** 2).sum(-1) * mask).sum() / y.shape[1]


def _model(n=10, *, scaling="B", n_adaptive=5, circuit=None, **kw):
    torch.manual_seed(1)
    circuit = dale(n, 0.7, p=0.5, g=1.5, seed=3) if circuit is None else circuit
    vth = 0.3 if scaling == "A" else 0.3 * (1 - math.exp(-1 / 20))
    opts = dict(n_adaptive=n_adaptive, tau_adapt_ms=50.0, n_ref=2, scaling=scaling, v_th=vth, tau_out_ms=10.0,
                w_in=0.5 * torch.randn(circuit.n, 3, dtype=torch.float64).abs())
    opts.update(kw)
    return SpikingRNN(circuit, 3, 2, **opts).double()


def _data(T=30, B=3, seed=0, p=0.3):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(T, B, 3, generator=g, dtype=torch.float64) < p).double()
    y = torch.randn(T, B, 2, generator=g, dtype=torch.float64)
    mask = (torch.rand(T, B, generator=g, dtype=torch.float64) > 0.3).double()
    return x, y, mask


def _rel(got, want, keys):
    out = {}
    for k in keys:
        nw = want[k].norm()
        assert nw > 0, f"{k}: reference is zero"
        out[k] = float((got[k] - want[k]).norm() / nw)
    return out


def _mdgl_autograd(model, x, y, mask, Wt):
    """T3.1: ∇(E + S) on the e-prop graph (reset not detached), S = Σ_t Σ_j sg(m_j^{t+1}) Σ_p sg(W̃[j,p]) ẑ_p^t."""
    c = model.constants()
    with torch.no_grad():
        rec = model(x, record=True).record
    # m = c_in ψ ∂E/∂z (partial through the filtered readout), by autograd on a detached spike copy
    zl = rec.z.detach().clone().requires_grad_(True)
    W = model.effective_weights()
    kap = model.kappa
    zf, ys = model.init_state(zl.shape[1]).z_filt, []  # the initial readout filter (0 at rest)
    for t in range(zl.shape[0]):
        zf = kap * zf + model.c_kappa * zl[t]
        ys.append(zf @ W.W_out.detach().T + W.b_out.detach())
    (dEdz,) = torch.autograd.grad(_mse(torch.stack(ys), y, mask), zl)
    m = (c.c_in * rec.psi * dEdz).detach()
    y_hat, z_hat = ref.spiking_forward(model, x, detach_rec=True, detach_reset=False)
    S = (torch.matmul(m[1:], Wt.detach()) * z_hat[:-1]).sum()
    return ref.named_grads(model, _mse(y_hat, y, mask) + S)


def _assert_t31(model, variant, x, y, mask):
    """The hard-coded MDGL gradient of ``variant`` equals the T3.1 construction (< 1e-10); returns it."""
    rule = MDGL(variant=variant, chunk_steps=7)
    _, g = rule.gradients(model, x, y, mask, _mse)
    want = _mdgl_autograd(model, x, y, mask, rule.substituted_weights(model))
    errs = _rel(g, want, ["theta_rec", "theta_in", "theta_out", "b_out"])
    assert max(errs.values()) < 1e-10, errs
    return g


_CIRCUITS = {  # sparse: dense W̃ GEMM; complete (with or without autapses): the factored type-gain product
    "sparse": lambda: (dale(10, 0.7, p=0.5, g=1.5, seed=3), {}),
    "complete": lambda: (dale(10, 0.7, p=1.0, g=1.5, seed=3), {}),
    "complete_autapses": lambda: (dale(10, 0.7, p=1.0, g=1.5, seed=3, self_loops=True), {"allow_autapses": True}),
}


@pytest.mark.parametrize("readout_norm", [True, False])
@pytest.mark.parametrize("circuit", list(_CIRCUITS))
@pytest.mark.parametrize("scaling", ["A", "B"])
@pytest.mark.parametrize("variant", ["exact", "mdgl", "nonlocal"])
def test_t31_autograd_construction(variant, scaling, circuit, readout_norm):
    """T3.1: hard-coded MDGL = autograd of E + S (float64) for the exact-weight and type-averaged variants, with
    and without the (1−κ) readout normalisation."""
    circ, kw = _CIRCUITS[circuit]()
    model = _model(scaling=scaling, circuit=circ, readout_norm=readout_norm, **kw)
    x, y, mask = _data()
    g = _assert_t31(model, variant, x, y, mask)
    # the modulatory term is not vacuous: MDGL differs from reset-inclusive e-prop
    _, ge = EProp(reset_in_trace=True).gradients(model, x, y, mask, _mse)
    assert float((g["theta_rec"] - ge["theta_rec"]).norm()) > 1e-6 * float(ge["theta_rec"].norm())


@pytest.mark.parametrize("cell_types", ["ei", "labels"])
@pytest.mark.parametrize("circuit", list(_CIRCUITS))
@pytest.mark.parametrize("variant", ["exact", "mdgl", "nonlocal", "online"])
def test_modulation_operator_equals_product_with_substituted_weights(variant, circuit, cell_types):
    """``MDGL.modulation(model)(v) = v @ W̃`` whichever structure it exploits (factored for complete circuits)."""
    from spikelearn.rules.mdgl import ModulationOperator

    circ, kw = _CIRCUITS[circuit]()
    model = _model(circuit=circ, **kw)
    types = "ei" if cell_types == "ei" else ["a", "b", "c", "a", "b", "c", "a", "b", "c", "d"]
    rule = MDGL(variant=variant, cell_types=types)
    op = rule.modulation(model)
    assert isinstance(op, ModulationOperator)
    assert (op.dense is None) == (variant == "nonlocal" or (variant != "exact" and circuit != "sparse"))
    v = torch.randn(4, 3, model.n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    want = v @ rule.substituted_weights(model)
    assert float((op(v) - want).abs().max()) < 1e-12 * float(want.abs().max())


def test_type_gains_are_means_of_existing_connections():
    model = _model()
    idx, names = cell_type_index(model, "ei")
    assert len(names) == 2
    W = model.effective_weights().W_rec.detach()
    w, _ = MDGL().gains(model)
    for a in range(2):
        for b in range(2):
            blk = W[idx == a][:, idx == b]
            assert torch.isclose(w[a, b], blk[blk != 0].mean())
    # an empty block gives gain 0
    P = type_indicator(torch.tensor([0, 0, 1]), 2, torch.float64)
    Wz = torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0], [3.0, 0.0, 0.0]], dtype=torch.float64)
    assert type_average(Wz, P, nonzero_only=True)[0, 1] == 0
    assert type_average(Wz, P, nonzero_only=True)[1, 0] == 3


def test_t32_one_type_per_neuron_equals_exact():
    model = _model()
    x, y, mask = _data()
    _, g3 = MDGL(variant="mdgl", cell_types=list(range(model.n))).gradients(model, x, y, mask, _mse)
    _, g2 = MDGL(variant="exact").gradients(model, x, y, mask, _mse)
    errs = _rel(g3, g2, ["theta_rec", "theta_in"])
    assert max(errs.values()) < 1e-12, errs


@pytest.mark.parametrize("variant", ["exact", "mdgl", "nonlocal", "online"])
def test_t33_no_recurrence_equals_eprop(variant):
    n = 8
    circ = Circuit.from_dense(np.zeros((n, n)), signs=[1] * 6 + [-1] * 2)
    model = _model(n, circuit=circ, n_adaptive=4)
    x, y, mask = _data(p=0.5)
    _, g = MDGL(variant=variant, cell_types="ei" if variant != "nonlocal" else [0] * n).gradients(
        model, x, y, mask, _mse)
    _, ge = EProp(reset_in_trace=True).gradients(model, x, y, mask, _mse)
    errs = _rel(g, ge, ["theta_in", "theta_out"])
    assert max(errs.values()) < 1e-12, errs


def test_t34_two_steps_no_leak_equals_bptt():
    """T3.4: α = 0, β = 0, no reset, T = 2 ⇒ MDGL-exact = BPTT (no path has two hops)."""
    torch.manual_seed(0)
    circ = dale(6, 0.5, p=1.0, g=2.0, seed=1)
    model = SpikingRNN(circ, 3, 2, scaling="B", tau_mem_ms=1e-6, n_adaptive=0, n_ref=0, v_th=0.5,
                       detach_reset=True, tau_out_ms=5.0,
                       w_in=0.6 * torch.rand(6, 3, dtype=torch.float64)).double()
    g0 = torch.Generator().manual_seed(0)
    x = 1.5 * torch.rand(2, 16, 3, generator=g0, dtype=torch.float64)
    y = torch.randn(2, 16, 2, generator=g0, dtype=torch.float64)
    mask = torch.ones(2, 16, dtype=torch.float64)
    _, g = MDGL(variant="exact", reset_in_trace=False).gradients(model, x, y, mask, _mse)
    _, gb = BPTT().gradients(model, x, y, mask, _mse)
    _, ge = EProp().gradients(model, x, y, mask, _mse)
    errs = _rel(g, gb, ["theta_rec", "theta_in", "theta_out"])
    assert max(errs.values()) < 1e-12, errs
    assert float((ge["theta_in"] - gb["theta_in"]).norm()) > 1e-6 * float(gb["theta_in"].norm())


@pytest.mark.parametrize("feedback", ["symmetric", "random"])
def test_online_equals_batched(feedback):
    model = _model()
    x, y, mask = _data()
    _, gb = MDGL(variant="online", feedback=feedback, mode="batched").gradients(model, x, y, mask, _mse)
    _, go = MDGL(variant="online", feedback=feedback, mode="online", chunk_steps=4).gradients(
        model, x, y, mask, _mse)
    errs = _rel(go, gb, ["theta_rec", "theta_in", "theta_out", "b_out"])
    assert max(errs.values()) < 1e-10, errs


def test_online_variant_is_the_filtered_construction():
    """Variant "online" (NP_mode 7) = Σ_t L ē + Σ_t M̄^t ē^t with dense filtered traces (reference)."""
    model = _model()
    x, y, mask = _data(T=20)
    rule = MDGL(variant="online")
    _, g = rule.gradients(model, x, y, mask, _mse)
    with torch.no_grad():
        out = model(x, record=True)
    from spikelearn.rules import output_error
    _, dE_dy = output_error(out.y, y, mask, _mse)
    rec = out.record
    e = ref.eprop_traces(model, rec, reset_in_trace=True)  # (T, B, N, N_pre)
    kap = model.kappa
    c = model.constants()
    L = dE_dy @ model.effective_weights().W_out.detach()
    eb, pb = torch.zeros_like(e[0]), torch.zeros_like(rec.psi[0])
    ebs, pbs = [], []
    for t in range(e.shape[0]):
        eb = kap * eb + (1 - kap) * e[t]
        pb = kap * pb + (1 - kap) * rec.psi[t]
        ebs.append(eb)
        pbs.append(pb)
    eb, pb = torch.stack(ebs), torch.stack(pbs)
    M = torch.zeros_like(L)
    M[:-1] = (c.c_in * pb[1:] * L[1:]) @ rule.substituted_weights(model)
    G = torch.einsum("tbp,tbpq->pq", L + M, eb)
    N = model.n
    want = model.param_grads({"W_rec": G[:, :N], "W_in": G[:, N:]})
    errs = _rel(g, want, ["theta_rec", "theta_in"])
    assert max(errs.values()) < 1e-10, errs


def test_cell_type_options():
    model = _model(circuit=dale(10, 0.7, p=0.5, seed=3))
    idx, names = cell_type_index(model, "circuit")
    assert sorted(names) == ["E", "I"]
    idx2, _ = cell_type_index(model, "ei")
    assert (idx == 1 - idx2).all() or (idx == idx2).all()
    with pytest.raises(ValueError):
        cell_type_index(model, [0, 1])
    with pytest.raises(ValueError):
        MDGL(variant="mdgl", mode="online")


@pytest.mark.parametrize("scaling", ["A", "B"])
def test_t63_no_leak_unfiltered_readout_equals_sliding_tbptt(scaling):
    """T6.3 (spiking form; the rate form is T5.2 in test_rflo): with α = 0, κ = 0, no adaptation, no refractoriness
    and the reset detached, e-prop = sliding-window TBPTT with K = 1 and MDGL-exact = sliding window with K = 2.
    A smooth surrogate (fast sigmoid, slope 2) keeps ψ > 0 everywhere, so paths of every length carry credit."""
    from spikelearn.neurons.surrogate import make_surrogate
    from spikelearn.rules import TruncatedBPTT

    torch.manual_seed(2)
    circ = dale(8, 0.75, p=0.6, g=3.0, seed=5)
    vth = 0.2
    model = SpikingRNN(circ, 3, 2, scaling=scaling, tau_mem_ms=1e-9, tau_out_ms=1e-9, n_adaptive=0, n_ref=0,
                       v_th=vth, detach_reset=True, surrogate=make_surrogate("fast_sigmoid", slope=2.0),
                       w_in=torch.randn(8, 3, dtype=torch.float64).abs()).double()
    assert model.constants().alpha.abs().max() == 0 and model.kappa == 0
    x, y, mask = _data(T=25, p=0.5)
    keys = ["theta_rec", "theta_in", "theta_out", "b_out"]
    _, ge = EProp(feedback="symmetric", reset_in_trace=False).gradients(model, x, y, mask, _mse)
    _, g1 = TruncatedBPTT(1, "sliding").gradients(model, x, y, mask, _mse)
    assert max(_rel(ge, g1, keys).values()) < 1e-10
    _, gm = MDGL(variant="exact", reset_in_trace=False).gradients(model, x, y, mask, _mse)
    _, g2 = TruncatedBPTT(2, "sliding").gradients(model, x, y, mask, _mse)
    assert max(_rel(gm, g2, keys).values()) < 1e-10
    # not vacuous: K = 1, 2, 3 all differ (credit flows along longer paths too)
    assert _rel(gm, g1, ["theta_rec"])["theta_rec"] > 1e-2
    _, g3 = TruncatedBPTT(3, "sliding").gradients(model, x, y, mask, _mse)
    assert _rel(g3, g2, ["theta_rec"])["theta_rec"] > 1e-4


# ----------------------------------------------------------------------------------------------- rate networks
def _rate_model(form, *, tau_ms=5.0, readout_from="r", n=8):
    from spikelearn.models import RateRNN

    torch.manual_seed(0)
    circ = dale(n, 0.75, p=0.6, g=1.5, seed=2)
    return RateRNN(circ, 3, 2, form=form, tau_ms=tau_ms, dt_ms=1.0, readout_from=readout_from).double()


def _rate_data(T=20, B=3):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(T, B, 3, generator=g, dtype=torch.float64), torch.randn(T, B, 2, generator=g, dtype=torch.float64),
            (torch.rand(T, B, generator=g, dtype=torch.float64) > 0.3).double())


def _rate_mdgl_autograd(model, x, y, mask, Wt, B):
    """Rate T3.1: ∇(E + S) on RFLO's graph (recurrent drive detached, local paths kept),
    S = Σ_t Σ_j sg(m_j^{t+1}) Σ_p sg(W̃[j,p]) r_p^t with m_j = c_in,j ∂E/∂h_j|immediate."""
    c = model.constants()
    with torch.no_grad():
        out = model(x, record=True)
    yv = out.y.detach().clone().requires_grad_(True)
    (dEdy,) = torch.autograd.grad(_mse(yv, y, mask), yv)
    L = dEdy @ B.T
    m = (L if model.readout_from == "h" else c.c_f * out.record.fprime * L) * c.c_in
    rs = []
    y_hat, _ = ref.rate_forward(model, x, detach_rec=True, B=B, rates=rs)
    S = (torch.matmul(m[1:].detach(), Wt.detach()) * torch.stack(rs)[:-1]).sum()
    return ref.named_grads(model, _mse(y_hat, y, mask) + S)


@pytest.mark.parametrize("readout_from", ["r", "h"])
@pytest.mark.parametrize("form", ["pre_activation", "murray", "relu_lif", "richlazy"])
@pytest.mark.parametrize("variant", ["exact", "mdgl", "nonlocal"])
def test_rate_mdgl_autograd_construction(variant, form, readout_from):
    """MDGL on rate networks = autograd of E + S on RFLO's detached graph (float64), every rate form; it differs
    from RFLO, and equals RFLO without recurrence (T3.3)."""
    from spikelearn.rules import RFLO

    model = _rate_model(form, readout_from=readout_from)
    x, y, mask = _rate_data()
    for feedback in ("symmetric", "random"):
        rule = MDGL(variant=variant, feedback=feedback, chunk_steps=7)
        B = rule.feedback_matrix(model)
        loss, g = rule.gradients(model, x, y, mask, _mse)
        want = _rate_mdgl_autograd(model, x, y, mask, rule.substituted_weights(model), B)
        errs = _rel(g, want, ["theta_rec", "theta_in", "theta_out", "b_out"])
        assert max(errs.values()) < 1e-10, errs
        _, gr = RFLO(feedback=feedback).gradients(model, x, y, mask, _mse)
        assert float((g["theta_rec"] - gr["theta_rec"]).norm()) > 1e-6 * float(gr["theta_rec"].norm())
    with torch.no_grad():
        model.theta_rec.zero_()
    _, g0 = MDGL(variant=variant, feedback="symmetric").gradients(model, x, y, mask, _mse)
    _, r0 = RFLO(feedback="symmetric").gradients(model, x, y, mask, _mse)
    assert max(_rel(g0, r0, ["theta_in", "theta_out"]).values()) < 1e-12


@pytest.mark.parametrize("form", ["murray", "pre_activation"])
def test_t63_rate_tau_one_mdgl_exact_equals_sliding_k2(form):
    """T6.3 (rate form, as specified): τ = dt (α = 0) and an unfiltered readout: MDGL-exact = sliding-window TBPTT
    with K = 2 (and RFLO = K = 1, T5.2 in test_rflo); K = 3 differs."""
    from spikelearn.rules import TruncatedBPTT

    model = _rate_model(form, tau_ms=1.0)
    x, y, mask = _rate_data()
    keys = ["theta_rec", "theta_in", "theta_out", "b_out"]
    _, gm = MDGL(variant="exact", feedback="symmetric").gradients(model, x, y, mask, _mse)
    _, g2 = TruncatedBPTT(2, "sliding").gradients(model, x, y, mask, _mse)
    assert max(_rel(gm, g2, keys).values()) < 1e-10
    _, g3 = TruncatedBPTT(3, "sliding").gradients(model, x, y, mask, _mse)
    assert _rel(g3, g2, ["theta_rec"])["theta_rec"] > 1e-4


def test_rate_mdgl_refuses_online():
    model = _rate_model("murray")
    x, y, mask = _rate_data()
    with pytest.raises(ValueError, match="RateRNN"):
        MDGL(variant="online").gradients(model, x, y, mask, _mse)


@pytest.mark.parametrize("variant", ["exact", "mdgl", "nonlocal"])
@pytest.mark.parametrize("scaling", ["A", "B"])
def test_t31_with_current_based_synapses(variant, scaling):
    """MDGL on a network with synaptic currents (module docstring): the T3.1 construction, whose e-prop graph now
    contains each neuron's own synaptic current, equals the hard-coded rule (per-neuron τ_s, some 0)."""
    tau_s = np.array([0.0, 2.0, 5.0, 3.0, 0.0, 8.0, 4.0, 6.0, 1.0, 2.5])
    model = _model(scaling=scaling, tau_syn_ms=tau_s)
    x, y, mask = _data()
    g = _assert_t31(model, variant, x, y, mask)
    _, g0 = MDGL(variant=variant, chunk_steps=7).gradients(_model(scaling=scaling), x, y, mask, _mse)
    assert float((g0["theta_in"] - g["theta_in"]).norm()) > 1e-2 * float(g["theta_in"].norm())


@pytest.mark.parametrize("tau_syn_ms", [4.0, [0.0, 2.0, 5.0, 3.0, 0.0, 8.0, 4.0, 6.0, 1.0, 2.5]])
def test_online_equals_batched_with_current_based_synapses(tau_syn_ms):
    model = _model(tau_syn_ms=tau_syn_ms)
    x, y, mask = _data()
    _, gb = MDGL(variant="online", mode="batched").gradients(model, x, y, mask, _mse)
    _, go = MDGL(variant="online", mode="online", chunk_steps=4).gradients(model, x, y, mask, _mse)
    errs = _rel(go, gb, ["theta_rec", "theta_in", "theta_out", "b_out"])
    assert max(errs.values()) < 1e-10, errs


@pytest.mark.parametrize("variant", ["exact", "mdgl"])
def test_t31_with_reset_zero(variant):
    model = _model(reset="zero", tau_syn_ms=2.0)
    x, y, mask = _data()
    _assert_t31(model, variant, x, y, mask)
    _, gb = MDGL(variant="online", mode="batched").gradients(model, x, y, mask, _mse)
    _, go = MDGL(variant="online", mode="online", chunk_steps=4).gradients(model, x, y, mask, _mse)
    assert max(_rel(go, gb, ["theta_rec", "theta_in"]).values()) < 1e-10


def test_t31_from_a_relaxed_initial_state():
    model = _model(init_state_std=2.0, init_relax_steps=3, init_seed=5)
    assert model.init_state(3).z.any()
    _assert_t31(model, "mdgl", *_data())
