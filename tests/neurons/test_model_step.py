"""One neuron step: ``SpikingRNN.forward`` is a loop over the neuron layer's :func:`alif_recurrent_update` with the
constants of :func:`alif_constants` — bit for bit (values, records, final state and gradients), with every feature
the model has (current-based synapses, gap junctions, ``i_ext``, reset to zero, refractoriness, ``detach_reset``,
adaptation, both scalings); the readout filter stays in the model."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from spikelearn.circuit import Circuit
from spikelearn.models import SpikingRNN, time_linear
from spikelearn.neurons import ALIFState, LIFParams, alif_constants, alif_recurrent_update

F64 = torch.float64

CASES = {
    "lif": dict(n_ref=2),
    "alif_cuba_gap_ext": dict(n_adaptive=6, n_ref=2, tau_syn_ms="mixed", gap=True, ext=True),
    "zero_reset_counter_detach": dict(n_adaptive=5, n_ref=3, refractory="counter", reset="zero", detach_reset=True,
                                      tau_syn_ms=4.0, ext=True),
    "no_refractory_gap": dict(n_ref=0, gap=True, readout="filtered_current", readout_norm=False),
}


def _model(case: str, scaling: str) -> tuple[SpikingRNN, dict]:
    kw = dict(CASES[case])
    gap, ext = kw.pop("gap", False), kw.pop("ext", False)
    rng = np.random.default_rng(3)
    n = 16
    W = rng.standard_normal((n, n)) * 1.5 / np.sqrt(n)
    np.fill_diagonal(W, 0)
    G = None
    if gap:
        G = np.triu(np.abs(rng.standard_normal((n, n))) * 0.02 * (rng.random((n, n)) < 0.2), 1)
        G = sp.csr_array(G + G.T)
    if kw.get("tau_syn_ms") == "mixed":
        kw["tau_syn_ms"] = np.where(np.arange(n) % 4 == 0, 0.0, 3.0 + np.arange(n))
    m = SpikingRNN(Circuit.from_dense(W, gap=G), 4, 2, dtype=F64, scaling=scaling,
                   v_th=0.6 if scaling == "A" else 0.05, **kw)
    with torch.no_grad():
        m.theta_in.mul_(4.0)
    return m, {"ext": ext}


def _loop(m: SpikingRNN, x: torch.Tensor, i_ext: torch.Tensor | None):
    """The model's forward written out with the neuron layer's step (weights scaled by c_in once)."""
    c = m.constants()
    W = m.effective_weights()
    scaled = m.scaling == "B"
    ci = c.c_in[:, None]
    ff = time_linear(x, ci * W.W_in if scaled else W.W_in)
    w_rec_t = (ci * W.W_rec if scaled else W.W_rec).T
    G = None if m.gap is None else (ci * m.gap if scaled else m.gap)
    st = m.init_state(x.shape[1])
    s = ALIFState(st.v, st.a, st.z, st.ref, st.i_syn)
    zf, yf = st.z_filt, st.y_filt
    out = {"z": [], "v": [], "a": [], "i_syn": [], "thr": [], "psi": [], "ref": [], "y": []}
    for t in range(x.shape[0]):
        s, aux = alif_recurrent_update(c, s, ff[t], w_rec_t, m.surrogate, g_gap=G,
                                       i_ext=None if i_ext is None else i_ext[t], need_aux=True)
        zf = torch.lerp(s.z, zf, m.kappa) if m.readout_norm else torch.add(s.z, zf, alpha=m.kappa)
        for k, v in (("z", s.z), ("v", s.v), ("a", s.a), ("i_syn", s.i_syn), ("thr", aux.thr), ("psi", aux.psi),
                     ("ref", aux.refractory)):
            out[k].append(v)
        if m.readout == "filtered_spikes":
            out["y"].append(zf @ W.W_out.T + W.b_out)
        else:
            yf = torch.add(yf * m.kappa, s.z @ W.W_out.T, alpha=m.c_kappa)
            out["y"].append(yf + W.b_out)
    return {k: torch.stack(v) for k, v in out.items()}, s, zf


@pytest.mark.parametrize("scaling", ["A", "B"])
@pytest.mark.parametrize("case", list(CASES))
def test_model_forward_is_the_neuron_layer_step_loop(case, scaling):
    m, opt = _model(case, scaling)
    g = torch.Generator().manual_seed(1)
    T, B = 60, 3
    x = (torch.rand(T, B, 4, generator=g) < 0.2).to(F64)
    i_ext = 0.05 * torch.randn(T, B, m.n, generator=g, dtype=F64) if opt["ext"] else None
    with torch.no_grad():
        out = m(x, record=True, i_ext=i_ext)
        ref, s, zf = _loop(m, x, i_ext)
    r = out.record
    for k in ("z", "v", "a", "thr", "psi", "ref"):
        assert torch.equal(getattr(r, k), ref[k]), k
    if m.synaptic:
        assert torch.equal(r.i_syn, ref["i_syn"])
    assert not m.synaptic or r.i_syn.abs().sum() > 0
    assert torch.equal(out.state.v, s.v) and torch.equal(out.state.a, s.a) and torch.equal(out.state.ref, s.ref)
    assert torch.equal(out.state.i_syn, s.i_syn) and torch.equal(out.state.z_filt, zf)
    assert torch.allclose(out.y, ref["y"], atol=1e-12)  # the model applies W_out to all steps in one GEMM
    assert r.z.sum() > 20 and (m.constants().refractory == bool(r.ref.any()))


@pytest.mark.parametrize("case", ["lif", "alif_cuba_gap_ext", "zero_reset_counter_detach"])
def test_model_gradient_is_the_neuron_layer_step_loop_gradient(case):
    """With autograd on (the fused LIF node included), the spike trains' gradients agree bit for bit."""
    m, opt = _model(case, "A")
    g = torch.Generator().manual_seed(2)
    x = (torch.rand(40, 2, 4, generator=g) < 0.2).to(F64)
    i_ext = 0.05 * torch.randn(40, 2, m.n, generator=g, dtype=F64) if opt["ext"] else None
    w = torch.randn(40, 2, m.n, generator=g, dtype=F64)
    out = m(x, record=True, i_ext=i_ext)
    ga = torch.autograd.grad((out.record.z * w).sum() + out.record.v.square().sum(), m.theta_rec)[0]
    ref, _, _ = _loop(m, x, i_ext)
    gb = torch.autograd.grad((ref["z"] * w).sum() + ref["v"].square().sum(), m.theta_rec)[0]
    assert torch.equal(ga, gb) and ga.abs().sum() > 0


@pytest.mark.parametrize("scaling", ["A", "B"])
@pytest.mark.parametrize("refractory", ["lsnn", "counter"])
def test_model_constants_are_the_neuron_layer_constants(scaling, refractory):
    """SpikingRNN.constants() = LIFParams(...).constants() = alif_constants(...) of its buffers, exactly."""
    m, _ = _model("alif_cuba_gap_ext", scaling)
    m.refractory = refractory
    p = LIFParams(tau_mem_ms=m.tau_mem_ms, tau_adapt_ms=m.tau_adapt_ms, v_th=m.v_th, beta=m.beta, n_ref=m.n_ref,
                  tau_syn_ms=m.tau_syn_ms, scaling=scaling, refractory=refractory, dt_ms=m.dt_ms)
    a, b = m.constants(), p.constants(dtype=F64)
    direct = alif_constants(tau_mem_ms=m.tau_mem_ms, tau_adapt_ms=m.tau_adapt_ms, v_th=m.v_th, beta=m.beta,
                            n_ref=m.n_ref, tau_syn_ms=m.tau_syn_ms, dt_ms=m.dt_ms, scaling=scaling,
                            refractory=refractory)
    for c in (b, direct):
        for f in a._fields:
            u, v = getattr(a, f), getattr(c, f)
            assert (torch.equal(u, v) if isinstance(u, torch.Tensor) else u == v), f
    assert a.synaptic and a.adaptive and a.refractory
