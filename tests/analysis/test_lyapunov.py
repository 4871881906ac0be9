"""Lyapunov exponents by QR (ALGORITHMS.md §7.1, tests T7.1–T7.4) and the closed-form tangent maps (float64)."""

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from spikelearn.analysis.lyapunov import (
    LyapunovResult,
    lyapunov_from_jacobians,
    lyapunov_measurement,
    lyapunov_spectrum,
    max_lyapunov,
    mean_field_lyapunov,
    perturbation_growth_rate,
)
from spikelearn.analysis.plots_stability import plot_convergence, plot_gain_sweep, plot_spectrum
from spikelearn.circuit import gaussian
from spikelearn.circuit.core import Circuit
from spikelearn.dynamics import linearise, qr_log_growth
from spikelearn.models import RateRNN, SpikingRNN
from spikelearn.neurons.rate import RateState

F64 = torch.float64


def _linear_model(W: np.ndarray) -> RateRNN:
    """h^t = W h^{t-1} + W_in x^t (R1 with identity activation and γ = 1)."""
    n = W.shape[0]
    c = Circuit.from_dense(W, mask=np.ones((n, n), bool))
    return RateRNN(c, 1, 1, activation="identity", tau_ms=1.0, dt_ms=1.0, allow_autapses=True, dtype=F64)


def _start(model, B=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(B, model.n, generator=g, dtype=F64)
    return RateState(h=h, r=h.clone())


# ---------------------------------------------------------------------------------------------- T7.1–T7.3
def test_linear_map_symmetric_all_exponents():
    """T7.1, normal W: every exponent equals the sorted log|eig(W)|."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((20, 20)) / np.sqrt(20)
    W = 0.5 * (A + A.T)
    m = _linear_model(W)
    res = lyapunov_spectrum(m, torch.zeros(2000, 1, 1, dtype=F64), transient_steps=200)  # J = W at h = 0
    ref = np.sort(np.log(np.abs(np.linalg.eigvalsh(W))))[::-1]
    np.testing.assert_allclose(res.mean, ref, atol=2e-4)


def test_linear_map_nonnormal_max_exponent():
    """T7.1, non-normal W (N = 30, T = 3000): λ_1 = log ρ(W) to 1e-3 (and the next two to 2e-3)."""
    rng = np.random.default_rng(1)
    W = 0.9 * rng.standard_normal((30, 30)) / np.sqrt(30)
    m = _linear_model(W)
    res = lyapunov_spectrum(m, torch.zeros(3000, 1, 1, dtype=F64), k=3, transient_steps=0)
    ref = np.sort(np.log(np.abs(np.linalg.eigvals(W))))[::-1]
    assert abs(res.max - ref[0]) < 1e-3
    np.testing.assert_allclose(res.mean, ref[:3], atol=2e-3)


def test_volume_identity_linear():
    """T7.2 (linear): with k = N, Σ λ_i = log|det W| to machine precision, at any T."""
    rng = np.random.default_rng(2)
    W = rng.standard_normal((15, 15)) / np.sqrt(15)
    m = _linear_model(W)
    res = lyapunov_spectrum(m, torch.zeros(37, 1, 1, dtype=F64), transient_steps=0)
    assert res.sum == pytest.approx(np.linalg.slogdet(W)[1], rel=1e-12, abs=1e-12)


def _tanh_net(n=12, g=1.5, seed=3, **kw):
    return RateRNN(gaussian(n, g, seed=seed), 2, 1, form="pre_activation", activation="tanh", dtype=F64, **kw)


@pytest.mark.parametrize("make", [
    lambda: _tanh_net(tau_ms=50.0, dt_ms=10.0),
    lambda: SpikingRNN(gaussian(8, 1.0, seed=1), 2, 1, n_adaptive=4, tau_adapt_ms=30.0, v_th=0.3, n_ref=1,
                       dtype=F64),
])
def test_volume_identity_nonlinear(make):
    """T7.2: Σ_i log|R_t[ii]| = log|det J_t| every step, so Σ λ_i = mean_t log|det J_t| (machine precision)."""
    model = make()
    x = torch.randn(60, 2, 2, dtype=F64) * 2.0
    with torch.no_grad():
        lin = linearise(model, x)
        res = qr_log_growth(lin, lin.n_state, transient_steps=5)
        logdet = torch.stack([torch.linalg.slogdet(lin.apply(t, torch.eye(lin.n_state, dtype=F64)[None]
                                                                  .expand(2, -1, -1)))[1] for t in range(60)])
    ref = logdet[5:].mean(0)
    torch.testing.assert_close(res.exponents.sum(1), ref, rtol=1e-12, atol=1e-12)


def test_orthogonal_scaled():
    """T7.3: W = g·O gives every λ_i = log g exactly, at every T."""
    rng = np.random.default_rng(4)
    O, _ = np.linalg.qr(rng.standard_normal((10, 10)))
    m = _linear_model(0.7 * O)
    for T in (1, 7, 50):
        res = lyapunov_spectrum(m, torch.zeros(T, 1, 1, dtype=F64), transient_steps=0)
        np.testing.assert_allclose(res.exponents, math.log(0.7), rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------- T7.4
def _random_tanh_map(g, n=800):
    """h^t = g J tanh(h^{t-1}) (R1 with γ = 1), no input."""
    return RateRNN(gaussian(n, g, seed=5), 1, 1, form="pre_activation", activation="tanh", tau_ms=1.0, dt_ms=1.0,
                   dtype=F64)


def test_random_tanh_subcritical():
    """T7.4, g = 0.5: λ_1 ≈ log g (N = 800, allow 0.05)."""
    m = _random_tanh_map(0.5)
    res = max_lyapunov(m, torch.zeros(400, 1, 1, dtype=F64), _start(m), transient_steps=100)
    assert abs(res.max - math.log(0.5)) < 0.05


def test_random_tanh_chaotic_mean_field():
    """T7.4, g = 2: λ_1 > 0 and ≈ the mean-field value ½ log(g² E[φ'(√Δ ξ)²]) (≈ 0.153)."""
    lam_mf, delta = mean_field_lyapunov(2.0)
    assert 0.14 < lam_mf < 0.17 and delta > 0
    m = _random_tanh_map(2.0)
    res = max_lyapunov(m, torch.zeros(2000, 1, 1, dtype=F64), _start(m), transient_steps=200)
    assert res.max > 0
    assert abs(res.max - lam_mf) < 0.01  # N = 800: 0.1527 vs 0.1547
    assert mean_field_lyapunov(0.5)[0] == pytest.approx(math.log(0.5))


def test_max_exponent_matches_direct_perturbation():
    """For a rate network, λ_1 equals the growth rate of a small perturbation in direct simulation."""
    m = _tanh_net(n=40, g=3.0, tau_ms=20.0, dt_ms=5.0)
    x = 0.2 * torch.randn(600, 2, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    res = max_lyapunov(m, x, transient_steps=100, seed=7)
    direct = perturbation_growth_rate(m, x, transient_steps=100, seed=7, eps=1e-8)
    assert res.max > 0.005
    np.testing.assert_allclose(res.exponents[:, 0], direct, rtol=1e-5)
    # renormalising every 5 steps gives the same rate (the perturbation stays linear)
    direct5 = perturbation_growth_rate(m, x, transient_steps=100, seed=7, eps=1e-9, renorm_every=5)
    np.testing.assert_allclose(res.exponents[:, 0], direct5, rtol=1e-3)


def test_direct_perturbation_in_float32_and_its_bad_input():
    """float32: the default eps (√machine-ε) still tracks the QR exponent; an eps below the state's resolution is
    an error, not NaN; bad arguments are named."""
    torch.manual_seed(0)
    m = RateRNN(gaussian(40, 3.0, seed=3), 2, 1, form="pre_activation", activation="tanh", dtype=torch.float32,
                tau_ms=20.0, dt_ms=5.0)
    x = 0.2 * torch.randn(600, 2, 2, generator=torch.Generator().manual_seed(1))
    qr = max_lyapunov(m, x, transient_steps=100, seed=7).exponents[:, 0]
    direct = perturbation_growth_rate(m, x, transient_steps=100, seed=7)
    assert np.isfinite(direct).all() and qr.max() > 0.003
    np.testing.assert_allclose(direct, qr, atol=2e-4)
    with pytest.raises(ValueError, match="rounded to 0"):
        perturbation_growth_rate(m, x, transient_steps=100, eps=1e-12)
    for kw, name in [({"eps": 0.0}, "eps"), ({"renorm_every": 0}, "renorm_every"),
                     ({"transient_steps": 600}, "transient_steps"), ({"transient_steps": -1}, "transient_steps"),
                     ({"transient_steps": 598, "renorm_every": 5}, "transient_steps")]:
        with pytest.raises(ValueError, match=name):
            perturbation_growth_rate(m, x, **kw)
    with pytest.raises(ValueError, match="jacobian"):
        max_lyapunov(m, x, jacobian="bogus")
    with pytest.raises(ValueError, match="g must be"):
        mean_field_lyapunov(0.0)


# ---------------------------------------------------------------------------------------------- tangent maps
def _gap_circuit(n, g, seed):
    c = gaussian(n, g, seed=seed)
    rng = np.random.default_rng(seed)
    G = np.triu((rng.random((n, n)) < 0.3) * rng.random((n, n)) * 0.2, 1)
    G = G + G.T
    return Circuit.from_dense(c.weights(dense=True), mask=c.mask(dense=True), gap=sp.csr_array(G))


RATE_CASES = [
    dict(form="pre_activation", activation="tanh", tau_ms=30.0, dt_ms=10.0),
    dict(form="murray", activation="tanh", tau_ms=30.0, dt_ms=10.0),
    dict(form="relu_lif", activation="relu", tau_ms=30.0, dt_ms=10.0, thr=-0.1),
    dict(form="richlazy", activation="retanh", tau_ms=20.0, dt_ms=10.0),
]


def _flat_state(model, s):
    if isinstance(model, SpikingRNN):
        parts = [s.v] + ([s.a] if bool((model.beta != 0).any()) else []) + ([s.i_syn] if model.synaptic else [])
        return torch.cat(parts, -1)
    if model.form == "murray":
        return torch.cat([s.r, s.h], -1) if model.gap is not None else s.r
    return s.h


def _from_flat(model, s0, flat):
    n = model.n
    if isinstance(model, SpikingRNN):
        s = s0._replace(v=flat[:, :n])
        if bool((model.beta != 0).any()):
            s = s._replace(a=flat[:, n:2 * n])
        if model.synaptic:
            s = s._replace(i_syn=flat[:, -n:])
        return s
    if model.form == "murray":
        return s0._replace(r=flat[:, :n], h=flat[:, n:]) if model.gap is not None else s0._replace(r=flat)
    from spikelearn.neurons.rate import activation

    f = activation(model.activation)
    r = f(flat - model.thr) if model.form == "relu_lif" else f(flat)
    return RateState(h=flat, r=r)


def _check_product_of_jacobians(model, T=6, B=2, s0=None, **kw):
    """d s^T / d s^0 by autograd through the model equals J_T ⋯ J_1 of the closed-form tangent map."""
    x = torch.randn(T, B, model.n_in, dtype=F64)
    if s0 is None:
        s0 = model.init_state(B)
        s0 = _from_flat(model, s0, 0.3 * torch.randn(B, _flat_state(model, s0).shape[1], dtype=F64))
    flat0 = _flat_state(model, s0)
    lin = linearise(model, x, s0, **kw)
    P = torch.eye(lin.n_state, dtype=F64)[None].expand(B, -1, -1)
    for t in range(T):
        P = lin.apply(t, P)
    for b in range(B):
        def fn(f0, b=b):
            full = flat0.clone()
            full[b] = f0
            st = _from_flat(model, s0, full)
            return _flat_state(model, model(x, state=st).state)[b]

        ref = torch.autograd.functional.jacobian(fn, flat0[b].clone())
        torch.testing.assert_close(P[b], ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(lin.states[-1], _flat_state(model, model(x, state=s0).state))


@pytest.mark.parametrize("opts", RATE_CASES, ids=[c["form"] for c in RATE_CASES])
@pytest.mark.parametrize("gap", [False, True])
def test_rate_tangent_map_equals_autograd(opts, gap):
    """Closed-form Jacobians of every rate form (§1.2, §7.1), with and without gap junctions."""
    c = _gap_circuit(7, 1.4, 1) if gap else gaussian(7, 1.4, seed=1)
    model = RateRNN(c, 3, 1, dtype=F64, hidden_bias=True, **opts)
    with torch.no_grad():
        model.b_rec.normal_(0, 0.3)
    _check_product_of_jacobians(model)


SPIKE_CASES = [
    dict(scaling="A", n_adaptive=0, v_th=0.3, n_ref=0),
    dict(scaling="A", n_adaptive=3, v_th=0.3, n_ref=2, tau_adapt_ms=40.0),
    dict(scaling="B", n_adaptive=3, v_th=0.05, n_ref=1, tau_adapt_ms=40.0, detach_reset=True),
    dict(scaling="A", n_adaptive=0, v_th=0.3, n_ref=0, tau_syn_ms=5.0),
    dict(scaling="B", n_adaptive=3, v_th=0.05, n_ref=1, tau_adapt_ms=40.0, tau_syn_ms=[0.0, 2.0, 3.0, 5.0, 8.0, 1.0]),
    dict(scaling="A", n_adaptive=3, v_th=0.3, n_ref=2, tau_adapt_ms=40.0, reset="zero"),
    dict(scaling="B", n_adaptive=0, v_th=0.05, n_ref=0, tau_syn_ms=3.0, reset="zero", detach_reset=True),
]


@pytest.mark.parametrize("opts", SPIKE_CASES, ids=["lif", "alif", "alif_B_detached", "cuba_lif", "cuba_alif_B",
                                                   "alif_reset_zero", "cuba_lif_B_reset_zero_detached"])
@pytest.mark.parametrize("gap", [False, True])
def test_spiking_surrogate_tangent_map_equals_autograd(opts, gap):
    """Surrogate Jacobian of §7.1 (ψ along the spiking run, reset derivative as the model's BPTT) equals the
    autograd Jacobian of the surrogate-differentiated model; the initial spikes are part of the given state."""
    c = _gap_circuit(6, 2.0, 2) if gap else gaussian(6, 2.0, seed=2)
    model = SpikingRNN(c, 3, 1, dtype=F64, **opts)
    vth = float(model.v_th[0])
    B = 2
    s0 = model.init_state(B)
    s0 = s0._replace(v=vth * (0.5 + 0.5 * torch.rand(B, 6, dtype=F64)), a=0.2 * torch.rand(B, 6, dtype=F64),
                     i_syn=0.2 * vth * torch.rand(B, 6, dtype=F64))
    g = torch.Generator().manual_seed(0)
    x = vth * 2.0 * torch.rand(8, B, 3, generator=g, dtype=F64)
    lin = linearise(model, x, s0)
    assert float(lin.D.abs().sum()) > 0  # some pseudo-derivatives are active
    P = torch.eye(lin.n_state, dtype=F64)[None].expand(B, -1, -1)
    for t in range(8):
        P = lin.apply(t, P)
    flat0 = _flat_state(model, s0)
    for b in range(B):
        def fn(f0, b=b):
            full = flat0.clone()
            full[b] = f0
            return _flat_state(model, model(x, state=_from_flat(model, s0, full)).state)[b]

        torch.testing.assert_close(P[b], torch.autograd.functional.jacobian(fn, flat0[b].clone()),
                                   rtol=1e-10, atol=1e-12)


def test_spiking_reset_derivative_option():
    """reset_derivative=False drops −v_th δz from ∂v/∂v (Engelken's SGF Jacobian): J differs by v_th ψ."""
    model = SpikingRNN(gaussian(6, 1.0, seed=2), 2, 1, v_th=0.3, n_ref=0, dtype=F64)
    x = 0.6 * torch.rand(10, 1, 2, dtype=F64)
    on = linearise(model, x, reset_derivative=True)
    off = linearise(model, x, reset_derivative=False)
    for t in range(10):
        diff = off.jacobian(t) - on.jacobian(t)
        torch.testing.assert_close(diff, torch.diag(0.3 * on.D[t, 0]))


@pytest.mark.parametrize("tau_syn_ms", [0.0, 4.0])
def test_spiking_rate_approximation_tangent_map(tau_syn_ms):
    """jacobian="rate": product of the closed-form Jacobians equals autograd through the mean-field map (with and
    without current-based synapses)."""
    model = SpikingRNN(gaussian(6, 2.0, seed=2), 3, 1, n_adaptive=3, tau_adapt_ms=40.0, v_th=0.3, dtype=F64,
                       tau_syn_ms=tau_syn_ms)
    B, T = 2, 7
    x = 0.5 * torch.rand(T, B, 3, dtype=F64)
    s0 = model.init_state(B)._replace(v=0.2 * torch.rand(B, 6, dtype=F64), i_syn=0.1 * torch.rand(B, 6, dtype=F64))
    lin = linearise(model, x, s0, jacobian="rate", escape_width=0.2)
    ns = lin.n_state
    assert ns == (18 if tau_syn_ms else 12)
    P = torch.eye(ns, dtype=F64)[None].expand(B, -1, -1)
    for t in range(T):
        P = lin.apply(t, P)
    flat0 = _flat_state(model, s0)

    def fn(f0):
        return linearise(model, x, _from_flat(model, s0, f0), jacobian="rate", escape_width=0.2).states[-1]

    J = torch.autograd.functional.jacobian(fn, flat0)  # (B, ns, B, ns)
    for b in range(B):
        torch.testing.assert_close(P[b], J[b, :, b], rtol=1e-10, atol=1e-12)


def test_silent_lif_exponents_are_log_alpha():
    """Without threshold crossings ψ = 0, so every surrogate exponent of a LIF net is log α = −dt/τ_m."""
    model = SpikingRNN(gaussian(10, 1.0, seed=0), 2, 1, v_th=0.6, tau_mem_ms=20.0, dtype=F64)
    res = lyapunov_spectrum(model, torch.zeros(50, 1, 2, dtype=F64), transient_steps=0)
    np.testing.assert_allclose(res.exponents, -1 / 20, atol=1e-12)
    np.testing.assert_allclose(res.per_s, -1000 / 20, atol=1e-9)


# ---------------------------------------------------------------------------------------------- API
def test_qr_every_m_equals_every_step():
    m = _tanh_net(n=10, g=1.5, tau_ms=20.0, dt_ms=10.0)
    x = torch.randn(80, 2, 2, dtype=F64)
    a = lyapunov_spectrum(m, x, k=4, transient_steps=20)
    b = lyapunov_spectrum(m, x, k=4, transient_steps=20, qr_every=5)
    np.testing.assert_allclose(a.exponents, b.exponents, rtol=1e-9, atol=1e-12)
    assert b.log_r.shape[0] == 16


def test_result_frame_and_units():
    m = _tanh_net(n=10, g=1.8, tau_ms=20.0, dt_ms=5.0)
    res = lyapunov_spectrum(m, torch.randn(200, 3, 2, dtype=F64), k=3)
    assert isinstance(res, LyapunovResult) and res.exponents.shape == (3, 3) and res.k == 3
    assert res.transient_steps == 10 + 20  # Engelken's default transient
    df = res.to_frame()
    assert list(df.columns) == ["trajectory", "index", "lambda_per_step", "lambda_per_s", "jacobian"]
    assert len(df) == 3 * 3 + 3
    mean = df[df.trajectory == "mean"].sort_values("index")
    np.testing.assert_allclose(mean.lambda_per_step, res.mean)
    np.testing.assert_allclose(mean.lambda_per_s, res.mean * 200.0)  # dt = 5 ms
    conv = res.convergence_frame()
    last = conv[conv.step == conv.step.max()].sort_values("index").lambda_per_step.to_numpy()
    np.testing.assert_allclose(last, res.mean, rtol=1e-12)
    # the max exponent alone agrees with the first of the spectrum
    x = torch.randn(200, 3, 2, dtype=F64, generator=torch.Generator().manual_seed(5))
    res = lyapunov_spectrum(m, x, k=3)
    alone = max_lyapunov(m, x)  # another initial vector, the same trajectories: the same leading exponent
    np.testing.assert_allclose(alone.exponents[:, 0], res.exponents[:, 0], atol=2e-3)


def test_kaplan_yorke_and_given_jacobians():
    J = torch.diag(torch.tensor([math.e ** 0.5, math.e ** -0.2, math.e ** -1.0], dtype=F64)).expand(3000, 3, 3)
    res = lyapunov_from_jacobians(J, transient_steps=100)
    np.testing.assert_allclose(res.mean, [0.5, -0.2, -1.0], atol=1e-10)
    assert res.kaplan_yorke_dimension() == pytest.approx(2 + 0.3 / 1.0)
    assert lyapunov_from_jacobians(J[:10], k=1).exponents.shape == (1, 1)


def test_measurement_hook_in_trainer():
    from spikelearn.config import TrainConfig
    from spikelearn.rules import BPTT
    from spikelearn.tasks import HierarchicalDelayedXOR
    from spikelearn.train import Measurement, Trainer

    task = HierarchicalDelayedXOR(level=0, delay_steps=3, n_steps=30)
    model = RateRNN(gaussian(16, 1.5, seed=0), task.n_in, task.n_out, tau_ms=2.0, dt_ms=1.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    tr = Trainer(model, task, BPTT(), opt, TrainConfig(iterations=2, batch_size=4, eval_every=1, quiet=True),
                 measurements=(Measurement("lyap", lyapunov_measurement(k=2), every=1),), out_dir=None)
    hist = tr.run()
    assert {"lyap.lambda_max", "lyap.lambda_sum"} <= set(hist.columns)
    assert hist["lyap.lambda_max"].notna().all()


def test_plots_write_pngs(tmp_path):
    m = _tanh_net(n=10, g=1.8, tau_ms=20.0, dt_ms=5.0)
    res = lyapunov_spectrum(m, torch.randn(100, 1, 2, dtype=F64))
    for p in (plot_spectrum({"a": res, "b": res}, tmp_path / "s.png"),
              plot_convergence(res, tmp_path / "c.png"),
              plot_gain_sweep(pd.DataFrame({"g": [0.5, 1, 0.5, 1], "rule": ["x", "x", "y", "y"],
                                            "accuracy": [0.5, 0.9, 0.6, 0.8], "lambda_max": [-1, 0, -1, 0.1]}),
                              tmp_path / "g.png", ys=("accuracy", "lambda_max"))):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_current_based_lif_jacobian_is_engelkens_in_other_coordinates():
    """Engelken's surrogate-gradient-flossing example (§7.1): current-based LIF, syn' = α_s syn + W_in x + W z,
    mem' = β mem + (1−β) syn', Jacobian in (mem, syn) [[β + (1−β) W D, (1−β) α_s], [W D, α_s]] with
    D = diag(1/(5|mem − 1| + 1)²), no reset derivative. spikelearn's scaling-B model with tau_syn_ms carries
    i = (1−β) syn, so its tangent map is S J S⁻¹ with S = diag(1, 1−β): the same spectrum."""
    rng = np.random.default_rng(0)
    n = 8
    W = rng.standard_normal((n, n)) / np.sqrt(n)
    model = SpikingRNN(Circuit.from_dense(W, mask=np.ones((n, n), bool)), 5, 1, scaling="B", tau_mem_ms=10.0,
                       tau_syn_ms=5.0, v_th=1.0, n_ref=0, surrogate={"name": "fast_sigmoid", "slope": 5.0},
                       allow_autapses=True, sign_constraint="none", dtype=F64)
    x = 3.0 * (torch.rand(12, 1, 5, generator=torch.Generator().manual_seed(1), dtype=F64) < 0.5)
    with torch.no_grad():
        lin = linearise(model, x, reset_derivative=False)
    v = lin.states[..., :n]
    beta, a_s = math.exp(-1 / 10), math.exp(-1 / 5)
    Wt = torch.as_tensor(W, dtype=F64)
    S = torch.diag(torch.cat([torch.ones(n, dtype=F64), torch.full((n,), 1 - beta, dtype=F64)]))
    eye = torch.eye(n, dtype=F64)
    assert float((v - 1).abs().min()) < 1.0  # the surrogate is far from its tails somewhere
    for t in range(1, 12):
        D = torch.diag(1.0 / (5.0 * (v[t - 1, 0] - 1.0).abs() + 1.0) ** 2)
        J_src = torch.cat([torch.cat([beta * eye + (1 - beta) * Wt @ D, (1 - beta) * a_s * eye], 1),
                           torch.cat([Wt @ D, a_s * eye], 1)], 0)
        torch.testing.assert_close(lin.jacobian(t), S @ J_src @ torch.linalg.inv(S), rtol=1e-12, atol=1e-14)


def test_rate_approximation_refuses_reset_zero():
    model = SpikingRNN(gaussian(6, 1.0, seed=2), 2, 1, v_th=0.3, dtype=F64, reset="zero")
    with pytest.raises(ValueError, match="reset='zero' needs jacobian='surrogate'"):
        linearise(model, torch.rand(5, 1, 2, dtype=F64), jacobian="rate")
