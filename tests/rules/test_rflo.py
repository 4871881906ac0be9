"""RFLO (ALGORITHMS.md §5.3): T5.1 detach recipe, T5.2 τ = 1 ⇒ one-step truncation, T5.3 RTRL = BPTT,
online = batched, all rate forms (the rule contract: tests/rules/test_contract.py)."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from spikelearn.circuit import Circuit, gaussian
from spikelearn.models import RateRNN
from spikelearn.rules import BPTT, RFLO, TruncatedBPTT, output_error
from spikelearn.rules import _reference as ref


def _mse(y_hat, y, mask):
    return 0.5 * (((y_hat - y) ** 2).sum(-1) * mask).sum() / y.shape[1]


def _data(T=20, B=3, n_in=3, n_out=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, n_in, generator=g, dtype=torch.float64)
    y = torch.randn(T, B, n_out, generator=g, dtype=torch.float64)
    mask = (torch.rand(T, B, generator=g, dtype=torch.float64) > 0.3).double()
    return x, y, mask


def _model(form="murray", *, n=6, circuit=None, **kw):
    torch.manual_seed(0)
    m = RateRNN(gaussian(n, 1.3, seed=1) if circuit is None else circuit, 3, 2, form=form, tau_ms=5.0, dt_ms=1.0,
                **kw).double()
    if m.b_rec is not None:
        with torch.no_grad():
            m.b_rec.normal_()
    return m


def _assert_rel(got, want, tol=1e-10, keys=None):
    for k in keys or want:
        nw = want[k].norm()
        assert nw > 0, f"{k}: reference gradient is zero"
        err = float((got[k] - want[k]).norm() / nw)
        assert err < tol, f"{k}: relative error {err:.3g}"


@pytest.mark.parametrize("form", ["pre_activation", "murray", "relu_lif", "richlazy"])
@pytest.mark.parametrize("readout_from", ["r", "h"])
@pytest.mark.parametrize("feedback", ["symmetric", "random"])
def test_rflo_equals_detached_autograd(form, readout_from, feedback):
    """T5.1 (with B = W_outᵀ) and its random-feedback version; batched and online; hidden bias trained."""
    model = _model(form, readout_from=readout_from, hidden_bias=True)
    x, y, mask = _data()
    rule = RFLO(feedback=feedback)
    B = None if feedback == "symmetric" else rule.feedback_matrix(model)
    ref_loss, want = ref.rflo_autograd(model, x, y, mask, _mse, B=B)
    for mode in ("batched", "online"):
        loss, g = RFLO(feedback=feedback, mode=mode, chunk_steps=7).gradients(model, x, y, mask, _mse)
        assert torch.allclose(loss, ref_loss, rtol=1e-12)
        assert set(g) == set(want)
        _assert_rel(g, want)


def test_gap_junctions_and_per_neuron_tau():
    base = gaussian(6, 1.3, seed=1)
    rng = np.random.default_rng(0)
    G = sp.random(6, 6, density=0.5, random_state=2, data_rvs=lambda k: 0.1 * rng.random(k))
    circuit = Circuit.from_dense(base.weights(dense=True), mask=base.mask(dense=True), gap=sp.csr_array(G + G.T),
                                 neuron_params={"tau_ms": np.linspace(2.0, 8.0, 6)})
    x, y, mask = _data()
    for form in ("pre_activation", "murray", "richlazy"):
        model = _model(form, circuit=circuit)
        _, want = ref.rflo_autograd(model, x, y, mask, _mse)
        for mode in ("batched", "online"):
            _, g = RFLO(feedback="symmetric", mode=mode, chunk_steps=6).gradients(model, x, y, mask, _mse)
            _assert_rel(g, want)


@pytest.mark.parametrize("form", ["murray", "pre_activation"])
def test_tau_one_is_one_step_truncation(form):
    """T5.2: γ = 1 (τ = dt) ⇒ RFLO (symmetric) = sliding-window TBPTT with k = 1."""
    torch.manual_seed(0)
    model = RateRNN(gaussian(6, 1.3, seed=1), 3, 2, form=form, tau_ms=1.0, dt_ms=1.0).double()
    x, y, mask = _data()
    _, g = RFLO(feedback="symmetric").gradients(model, x, y, mask, _mse)
    _, want = TruncatedBPTT(1, "sliding").gradients(model, x, y, mask, _mse)
    _assert_rel(g, want)


def test_rtrl_equals_bptt_and_local_rtrl_is_rflo():
    """T5.3: RTRL with the full influence tensor = BPTT (N = 5, T = 20); dropping its non-local sum gives RFLO."""
    torch.manual_seed(0)
    model = RateRNN(gaussian(5, 1.3, seed=1), 3, 2, form="murray", tau_ms=3.0, dt_ms=1.0).double()
    x, y, mask = _data(T=20)
    rtrl = model.param_grads(ref.rtrl_murray(model, x, y, mask, _mse))
    _, bptt = BPTT().gradients(model, x, y, mask, _mse)
    _assert_rel(rtrl, bptt, keys=["theta_rec", "theta_in"])
    local = model.param_grads(ref.rtrl_murray(model, x, y, mask, _mse, local_only=True))
    _, rflo = RFLO(feedback="symmetric").gradients(model, x, y, mask, _mse)
    _assert_rel(local, rflo, keys=["theta_rec", "theta_in"])
    cos = torch.nn.functional.cosine_similarity(rflo["theta_rec"].flatten(), bptt["theta_rec"].flatten(), dim=0)
    assert 0 < float(cos) < 1 - 1e-6


def test_step_by_step_equals_batched_and_float32():
    model = _model("murray")
    x, y, mask = _data()
    rule = RFLO()
    _, want = rule.gradients(model, x, y, mask, _mse)
    with torch.no_grad():
        out = model(x, record=True)
    _, dE = output_error(out.y, y, mask, _mse)
    st = rule.init(model, 3)
    total = {k: torch.zeros_like(v) for k, v in want.items()}
    for t in range(x.shape[0]):
        g, st = rule.step(model, type(out.record)(*(f[t] for f in out.record)), dE[t], st)
        for k in g:
            total[k] += g[k]
    _assert_rel(total, want)
    m32 = _model("murray").float()
    _, g32 = rule.gradients(m32, x.float(), y.float(), mask.float(), _mse)
    for k in want:
        assert g32[k].dtype == torch.float32
        assert float((g32[k].double() - want[k]).norm() / want[k].norm()) < 1e-4


def test_random_feedback_default_scale():
    """(The wrong model type, bogus options and the registry entry: tests/rules/test_contract.py.)"""
    model = _model("murray", n=40)
    B = RFLO().feedback_matrix(model)
    assert B.shape == (40, 2) and abs(float(B.std()) - 2 ** -0.5) < 0.2
