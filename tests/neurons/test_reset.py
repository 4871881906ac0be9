"""reset="zero" (snnTorch's reset_mechanism="zero"): v^t = α (1 − z^{t-1}) v^{t-1} + c_in I^t. Closed forms, the
model's fast path, snnTorch's Leaky bit for bit, BPTT against finite differences."""

import math

import numpy as np
import pytest
import torch

from spikelearn.circuit import Circuit, generators
from spikelearn.models import SpikingRNN
from spikelearn.neurons import LIFParams, alif_step_aux, init_alif_state, make_surrogate

F64 = torch.float64


def poisson(T, B, n_in, p=0.2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, B, n_in, generator=g) < p).to(F64)


@pytest.mark.parametrize("scaling", ["A", "B"])
def test_constant_drive_resets_to_zero_and_restarts(scaling):
    """Constant input I from rest: v^t = c I (1 − α^{t+1})/(1 − α) until the first spike at t*; the step after it
    starts from 0 (v^{t*+1} = c I) and the cycle repeats exactly (period t* + 1)."""
    tau, I = 10.0, 0.3
    p = LIFParams(tau_mem_ms=tau, v_th=1.0, n_ref=0, scaling=scaling, reset="zero")
    alpha = math.exp(-1 / tau)
    c = 1.0 if scaling == "A" else 1 - alpha
    I = I / c
    s = init_alif_state(1, 1, dtype=F64)
    vs, zs = [], []
    for _ in range(60):
        s, _ = alif_step_aux(p, s, torch.full((1, 1), I, dtype=F64))
        vs.append(s.v.item())
        zs.append(s.z.item())
    first = zs.index(1.0)
    for t in range(first + 1):
        assert abs(vs[t] - c * I * (1 - alpha ** (t + 1)) / (1 - alpha)) < 1e-12
    assert abs(vs[first + 1] - c * I) < 1e-14
    spikes = np.flatnonzero(zs)
    assert len(spikes) >= 3 and (np.diff(spikes) == first + 1).all()
    # the subtractive reset of the same neuron fires at another rhythm
    p_sub = LIFParams(tau_mem_ms=tau, v_th=1.0, n_ref=0, scaling=scaling)
    s = init_alif_state(1, 1, dtype=F64)
    zsub = []
    for _ in range(60):
        s, _ = alif_step_aux(p_sub, s, torch.full((1, 1), I, dtype=F64))
        zsub.append(s.z.item())
    assert zsub != zs


def test_model_fast_path_equals_the_step_function():
    rng = np.random.default_rng(0)
    n = 16
    W = rng.standard_normal((n, n)) * 1.5 / np.sqrt(n)
    np.fill_diagonal(W, 0)
    m = SpikingRNN(Circuit.from_dense(W), 4, 2, dtype=F64, reset="zero", n_ref=2, n_adaptive=6, tau_syn_ms=3.0)
    with torch.no_grad():
        m.theta_in.mul_(4.0)
    x = poisson(80, 3, 4)
    out = m(x, record=True)
    We = m.effective_weights()
    p = LIFParams(tau_mem_ms=m.tau_mem_ms, tau_adapt_ms=m.tau_adapt_ms, v_th=m.v_th, beta=m.beta, n_ref=m.n_ref,
                  tau_syn_ms=m.tau_syn_ms, reset="zero")
    s = init_alif_state(3, n, dtype=F64)
    for t in range(80):
        s, _ = alif_step_aux(p, s, x[t] @ We.W_in.T, w_rec=We.W_rec)
        assert torch.equal(out.record.z[t], s.z) and torch.allclose(out.record.v[t], s.v, atol=1e-12)
    assert out.record.z.sum() > 30
    with pytest.raises(ValueError, match="reset must be"):
        SpikingRNN(Circuit.from_dense(W), 4, 2, reset="to_zero")


@pytest.mark.parametrize("scaling", ["A", "B"])
def test_feedforward_lif_equals_snntorch_leaky_reset_zero(scaling):
    """No recurrence, no refractoriness: spikelearn's reset="zero" is snnTorch's Leaky(reset_mechanism="zero")
    driven by c_in W_in x (β = α, threshold v_th), spike for spike, float64."""
    import snntorch as snn

    n, n_in, T, B = 30, 8, 300, 2
    m = SpikingRNN(Circuit.from_dense(np.zeros((n, n)), mask=np.zeros((n, n), bool)), n_in, 1, dtype=F64,
                   reset="zero", n_ref=0, scaling=scaling, v_th=0.5 if scaling == "A" else 0.03, tau_mem_ms=15.0)
    with torch.no_grad():
        m.theta_in.mul_(3.0)
    x = poisson(T, B, n_in, p=0.2, seed=2)
    rec = m(x, record=True).record
    c = m.constants()
    lif = snn.Leaky(beta=float(c.alpha[0]), threshold=float(m.v_th[0]), reset_mechanism="zero")
    mem = torch.zeros(B, n, dtype=F64)
    cur = x @ (c.c_in[:, None] * m.effective_weights().W_in).T
    zs = []
    with torch.no_grad():
        for t in range(T):
            spk, mem = lif(cur[t], mem)
            zs.append(spk)
    z = torch.stack(zs).to(F64)
    assert rec.z.sum() > 100
    assert torch.equal(z, rec.z)


def test_bptt_with_reset_zero_matches_finite_differences(directional_fd):
    c = generators.erdos_renyi(10, 0.6, g=1.0, seed=12)
    m = SpikingRNN(c, 3, 2, dtype=F64, n_adaptive=5, n_ref=0, reset="zero", tau_syn_ms=4.0,
                   surrogate=make_surrogate("sigmoid", smooth=True, slope=5.0))
    x = poisson(30, 2, 3, p=0.4, seed=13)
    target = torch.randn(30, 2, 2, dtype=F64)

    def loss_fn():
        return 0.5 * ((m(x).y - target) ** 2).sum()

    # the multiplicative reset makes the loss more curved: at h = 1e-5 the central difference's O(h²) error is
    # 1.4e-6 (it falls 100× per 10× smaller h: 1.4e-2, 1.4e-4, 1.4e-6, 1.4e-8), so h = 1e-6 here
    an, fd = directional_fd(m, loss_fn, h=1e-6)
    assert abs(an) > 1e-6 and abs(fd - an) / abs(an) < 1e-6, (fd, an)


def test_injected_current_enters_the_membrane_directly():
    """model(x, i_ext=I): v^t = α v^{t-1} + I^t below threshold, unscaled by c_in, not synaptically filtered, also
    right after a reset to zero; differentiable; a bad shape names the expected one."""
    n = 4
    W = np.zeros((n, n))
    m = SpikingRNN(Circuit.from_dense(W, mask=np.zeros((n, n), bool)), 2, 1, dtype=F64, scaling="B", v_th=1.0,
                   tau_syn_ms=5.0, n_ref=0, reset="zero")
    T = 30
    I = torch.full((T, 1, n), 0.02, dtype=F64)
    rec = m(torch.zeros(T, 1, 2, dtype=F64), record=True, i_ext=I).record
    alpha = math.exp(-1 / 20)
    t = torch.arange(1, T + 1, dtype=F64)[:, None, None]
    assert torch.allclose(rec.v, 0.02 * (1 - alpha**t) / (1 - alpha), rtol=1e-12, atol=0)
    assert not rec.i_syn.any()
    # a spike at step 0 (strong pulse), then reset to zero: v^1 = I^1 exactly
    I2 = torch.zeros(3, 1, n, dtype=F64)
    I2[0] = 2.0
    I2[1] = 0.3
    rec2 = m(torch.zeros(3, 1, 2, dtype=F64), record=True, i_ext=I2).record
    assert rec2.z[0].all() and torch.allclose(rec2.v[1], torch.full((1, n), 0.3, dtype=F64))
    Ig = I.clone().requires_grad_(True)
    m(torch.zeros(T, 1, 2, dtype=F64), i_ext=Ig).y.sum().backward()
    assert Ig.grad is not None and torch.isfinite(Ig.grad).all()
    with pytest.raises(ValueError, match=r"i_ext must broadcast to \(T, B, N\) = \(30, 1, 4\)"):
        m(torch.zeros(T, 1, 2, dtype=F64), i_ext=torch.zeros(T, 1, 3, dtype=F64))
