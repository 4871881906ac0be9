"""Current-based synapses (``tau_syn_ms > 0``; :mod:`spikelearn.neurons.lif`): analytic responses, the τ_s = 0
limit, the model's fast path against the step function, exact state continuation and BPTT against finite
differences."""

import math

import numpy as np
import pytest
import torch

from spikelearn.circuit import Circuit, generators
from spikelearn.models import SpikingRNN
from spikelearn.neurons import ALIFState, LIFParams, alif_step_aux, init_alif_state, make_surrogate

F64 = torch.float64


def poisson(T, B, n_in, p=0.2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, B, n_in, generator=g) < p).to(F64)


@pytest.mark.parametrize("scaling", ["A", "B"])
def test_single_pulse_gives_the_difference_of_exponentials(scaling):
    """One input pulse of weight w at step 0: i^t = c_in w α_s^t and v^t = c_in w (α^{t+1} − α_s^{t+1})/(α − α_s)
    (record index t = after step t); τ_s = 0 gives the instantaneous jump c_in w α^t."""
    tau_s = torch.tensor([5.0, 3.0, 0.0, 40.0], dtype=F64)
    tau_m = torch.tensor([20.0, 10.0, 20.0, 30.0], dtype=F64)
    p = LIFParams(tau_mem_ms=tau_m, tau_syn_ms=tau_s, v_th=100.0, n_ref=0, scaling=scaling)
    w = torch.tensor([[0.3, -0.2, 0.5, 0.1]], dtype=F64)
    T = 120
    s = init_alif_state(1, 4, dtype=F64)
    vs, iss = [], []
    for t in range(T):
        s, _ = alif_step_aux(p, s, w if t == 0 else torch.zeros_like(w))
        vs.append(s.v[0])
        iss.append(s.i_syn[0])
    v, i = torch.stack(vs), torch.stack(iss)
    alpha, alpha_s = torch.exp(-1.0 / tau_m), torch.where(tau_s > 0, torch.exp(-1.0 / tau_s.clamp(min=1e-300)), 0.0)
    c_in = torch.ones_like(alpha) if scaling == "A" else 1 - alpha
    t = torch.arange(T, dtype=F64)[:, None]
    assert torch.allclose(i, c_in * w[0] * alpha_s**t, rtol=1e-12, atol=1e-300)
    expected = c_in * w[0] * (alpha ** (t + 1) - alpha_s ** (t + 1)) / (alpha - alpha_s)
    assert torch.allclose(v, expected, rtol=1e-11, atol=1e-16)
    assert torch.allclose(v[:, 2], c_in[2] * w[0, 2] * alpha[2] ** t[:, 0], rtol=1e-13, atol=0)
    # the peak of the PSP is delayed by the synaptic filter, at the discrete argmax of the closed form
    assert int(v[:, 0].argmax()) > 0 and int(v[:, 2].argmax()) == 0


def test_equal_time_constants_limit():
    """α_s = α: v^t = c_in w (t + 1) α^t (the alpha-function PSP)."""
    p = LIFParams(tau_mem_ms=15.0, tau_syn_ms=15.0, v_th=100.0, n_ref=0, scaling="A")
    s = init_alif_state(1, 1, dtype=F64)
    alpha = math.exp(-1 / 15)
    for t in range(60):
        s, _ = alif_step_aux(p, s, torch.full((1, 1), 0.7 if t == 0 else 0.0, dtype=F64))
        assert abs(s.v.item() - 0.7 * (t + 1) * alpha**t) < 1e-12


def _model(tau_syn, **kw):
    c = generators.erdos_renyi(16, 0.5, g=1.5, seed=1)
    kw.setdefault("n_adaptive", 6)
    m = SpikingRNN(c, 4, 2, dtype=F64, tau_syn_ms=tau_syn, n_ref=2, **kw)
    with torch.no_grad():
        m.theta_in.mul_(4.0)
    return m


def test_zero_tau_syn_is_bit_identical_to_the_default_model():
    x = poisson(80, 3, 4)
    torch.manual_seed(3)
    a = _model(0.0)
    torch.manual_seed(3)
    c = generators.erdos_renyi(16, 0.5, g=1.5, seed=1)
    b = SpikingRNN(c, 4, 2, dtype=F64, n_ref=2, n_adaptive=6)
    with torch.no_grad():
        b.theta_in.mul_(4.0)
    oa, ob = a(x, record=True), b(x, record=True)
    assert not a.synaptic and not oa.state.i_syn.any() and oa.record.i_syn.shape == (80, 3, 16)
    assert not oa.record.i_syn.any()
    assert torch.equal(oa.y, ob.y) and torch.equal(oa.record.z, ob.record.z) and oa.record.z.sum() > 20


@pytest.mark.parametrize("scaling", ["A", "B"])
def test_model_fast_path_equals_the_step_function_with_gap_junctions_unfiltered(scaling):
    """The model's loop equals alif_step_aux with the effective weights, per-neuron τ_s (some 0), gap junctions
    entering v directly; the record carries i_syn."""
    rng = np.random.default_rng(0)
    n = 16
    W = rng.standard_normal((n, n)) * 1.5 / np.sqrt(n)
    np.fill_diagonal(W, 0)
    G = np.abs(rng.standard_normal((n, n))) * 0.02 * (rng.random((n, n)) < 0.2)
    G = np.triu(G, 1)
    G = G + G.T
    import scipy.sparse as sp

    circ = Circuit.from_dense(W, gap=sp.csr_array(G))
    tau_s = np.where(np.arange(n) % 4 == 0, 0.0, 3.0 + np.arange(n))
    m = SpikingRNN(circ, 4, 2, dtype=F64, tau_syn_ms=tau_s, n_ref=2, n_adaptive=6, scaling=scaling,
                   v_th=0.6 if scaling == "A" else 0.05)
    with torch.no_grad():
        m.theta_in.mul_(3.0)
    x = poisson(70, 3, 4)
    out = m(x, record=True)
    We = m.effective_weights()
    p = LIFParams(tau_mem_ms=m.tau_mem_ms, tau_adapt_ms=m.tau_adapt_ms, v_th=m.v_th, beta=m.beta, n_ref=m.n_ref,
                  scaling=scaling, tau_syn_ms=m.tau_syn_ms)
    s = init_alif_state(3, n, dtype=F64)
    for t in range(70):
        s, aux = alif_step_aux(p, s, x[t] @ We.W_in.T, w_rec=We.W_rec, g_gap=m.gap)
        r = out.record
        assert torch.equal(r.z[t], s.z), t
        assert torch.allclose(r.v[t], s.v, atol=1e-12) and torch.allclose(r.i_syn[t], s.i_syn, atol=1e-12)
    assert out.record.z.sum() > 30
    assert torch.equal(out.state.i_syn, out.record.i_syn[-1])


def test_state_continuation_is_exact_with_synaptic_currents():
    m = _model(5.0)
    x = poisson(50, 3, 4) * torch.rand(50, 3, 4, dtype=F64)
    full = m(x, record=True)
    first = m(x[:23], record=True)
    second = m(x[23:], state=first.state, record=True)
    assert torch.equal(torch.cat([first.y, second.y]), full.y)
    assert torch.equal(torch.cat([first.record.i_syn, second.record.i_syn]), full.record.i_syn)
    assert torch.equal(second.state.i_syn, full.state.i_syn) and full.record.z.sum() > 10
    # a state without i_syn (from a model without synapses) starts the current at 0
    st = first.state._replace(i_syn=None)
    again = m(x[23:], state=st)
    z0 = first.state._replace(i_syn=torch.zeros_like(first.state.v))
    assert torch.equal(again.y, m(x[23:], state=z0).y)


@pytest.mark.parametrize("scaling", ["A", "B"])
def test_spiking_bptt_with_synaptic_currents_matches_finite_differences(scaling, directional_fd):
    """With a smooth spike the forward is differentiable; autograd through i^t = α_s i^{t-1} + … agrees with
    central differences (float64)."""
    c = generators.erdos_renyi(10, 0.6, g=1.0, seed=12)
    surrogate = make_surrogate("sigmoid", smooth=True, slope=5.0)
    m = SpikingRNN(c, 3, 2, dtype=F64, scaling=scaling, n_adaptive=5, n_ref=0, surrogate=surrogate,
                   tau_syn_ms=np.linspace(2.0, 12.0, 10), v_th=0.6 if scaling == "A" else 0.05)
    with torch.no_grad():
        m.theta_in.mul_(1.0 if scaling == "A" else 0.5)
    x = poisson(30, 2, 3, p=0.4, seed=13)
    target = torch.randn(30, 2, 2, dtype=F64)

    def loss_fn():
        return 0.5 * ((m(x).y - target) ** 2).sum()

    an, fd = directional_fd(m, loss_fn)
    assert abs(an) > 1e-6 and abs(fd - an) / abs(an) < 1e-6, (fd, an)


def test_tau_syn_is_validated_and_saved(tmp_path):
    c = generators.erdos_renyi(8, 0.5, seed=0)
    with pytest.raises(ValueError, match=r"tau_syn_ms.*1 of 8 entries, e.g. \[3\] = -1.0"):
        SpikingRNN(c, 2, 1, tau_syn_ms=[1.0, 2.0, 0.0, -1.0, 1, 1, 1, 1])
    with pytest.raises(ValueError, match="tau_syn_ms"):
        LIFParams(tau_syn_ms=float("nan"))
    m = SpikingRNN(c, 2, 1, tau_syn_ms=7.0, dtype=F64)
    m.save(tmp_path / "m.pt")
    from spikelearn.models import load

    m2 = load(tmp_path / "m.pt")
    assert m2.synaptic and torch.equal(m2.tau_syn_ms, m.tau_syn_ms)
    x = poisson(20, 2, 2, p=0.5)
    assert torch.equal(m(x).y, m2(x).y)


def test_state_dicts_written_before_synapses_existed_still_load():
    """Checkpoints and saved models from before tau_syn_ms have no such buffer: they load as τ_s = 0."""
    c = generators.erdos_renyi(8, 0.5, seed=0)
    torch.manual_seed(0)
    m = SpikingRNN(c, 2, 1, dtype=F64)
    sd = m.state_dict()
    del sd["tau_syn_ms"]
    torch.manual_seed(1)
    m2 = SpikingRNN(c, 2, 1, dtype=F64)
    m2.load_state_dict(sd)
    x = poisson(20, 2, 2, p=0.5)
    assert not m2.synaptic and torch.equal(m(x).y, m2(x).y)
    m3 = SpikingRNN(c, 2, 1, dtype=F64, tau_syn_ms=3.0)
    with pytest.raises(RuntimeError, match="tau_syn_ms"):  # a present key with the wrong shape still fails loudly
        bad = m3.state_dict()
        bad["tau_syn_ms"] = torch.zeros(3, dtype=F64)
        m.load_state_dict(bad)
