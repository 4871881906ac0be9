"""LIF/ALIF step (ALGORITHMS.md §1.1, tests T1.1–T1.5)."""

import math
from dataclasses import replace

import pytest
import torch

from spikelearn.neurons import (
    ALIFState,
    LIFParams,
    alif_step,
    alif_step_aux,
    alif_update,
    gap_current,
    init_alif_state,
    lif_step,
    make_surrogate,
)

F64 = torch.float64


def run(params, i_seq, state=None, **kw):
    """Iterate alif_step_aux over (T, B, N) drive; return stacked v, a, z, thr, psi, ref-mask."""
    T, B, N = i_seq.shape
    s = state or init_alif_state(B, N, dtype=i_seq.dtype)
    out = {k: [] for k in ("v", "a", "z", "thr", "psi", "refm")}
    for t in range(T):
        s, aux = alif_step_aux(params, s, i_seq[t], **kw)
        for k, val in (("v", s.v), ("a", s.a), ("z", s.z), ("thr", aux.thr), ("psi", aux.psi),
                       ("refm", aux.refractory)):
            out[k].append(val)
    return {k: torch.stack(v) for k, v in out.items()}


@pytest.mark.parametrize("scaling", ["A", "B"])
def test_T1_1_subthreshold_decay_and_constant_input(scaling):
    p = LIFParams(tau_mem_ms=torch.tensor([10.0, 20.0, 35.0], dtype=F64), v_th=1.0, n_ref=0, scaling=scaling)
    alpha = torch.exp(-1.0 / p.tau_mem_ms)
    v0 = torch.tensor([[0.9, -0.4, 0.5]], dtype=F64)
    s = ALIFState(v=v0, a=torch.zeros_like(v0), z=torch.zeros_like(v0), ref=torch.zeros_like(v0))
    r = run(p, torch.zeros(50, 1, 3, dtype=F64), state=s)
    t = torch.arange(1, 51, dtype=F64)[:, None, None]
    assert torch.allclose(r["v"], alpha**t * v0, rtol=1e-13, atol=0)
    assert r["z"].sum() == 0
    # constant input I from rest: v^t = c_in I (1 - α^t)/(1 - α), below threshold
    I = torch.tensor([0.05, 0.02, 0.01], dtype=F64) * (1.0 if scaling == "A" else 15.0)
    r = run(p, I.expand(80, 1, 3).clone())
    c_in = 1.0 if scaling == "A" else 1 - alpha
    t = torch.arange(1, 81, dtype=F64)[:, None, None]
    expected = c_in * I * (1 - alpha**t) / (1 - alpha)
    assert r["z"].sum() == 0 and expected.max() < 1.0
    assert torch.allclose(r["v"], expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("scaling", ["A", "B"])
@pytest.mark.parametrize("beta", [0.0, 0.3])
def test_T1_2_reset_subtracts_baseline_threshold(scaling, beta):
    p = LIFParams(tau_mem_ms=20.0, v_th=0.6, beta=beta, n_ref=0, scaling=scaling)
    alpha = math.exp(-1 / 20)
    v = torch.tensor([[0.7, 0.2]], dtype=F64)
    a = torch.tensor([[2.0, 2.0]], dtype=F64)  # a large threshold must not change the reset amount
    s = ALIFState(v=v, a=a, z=torch.tensor([[1.0, 0.0]], dtype=F64), ref=torch.zeros_like(v))
    new = alif_step(p, s, torch.zeros_like(v))
    assert torch.equal(new.v, alpha * v - 0.6 * s.z)
    assert new.v[0, 0] == alpha * 0.7 - 0.6


def spike_times(z):
    return torch.nonzero(z).flatten().tolist()


def test_T1_3_refractory_lsnn_and_counter_with_strong_drive():
    I = torch.full((60, 1, 1), 10.0, dtype=F64)  # spikes at every allowed step
    for n_ref in (0, 1, 3, 5):
        z = run(LIFParams(v_th=1.0, n_ref=n_ref), I)["z"].flatten()
        ts = spike_times(z)
        assert ts[0] == 0 and set(torch.diff(torch.tensor(ts)).tolist()) == {n_ref + 1}
        zc = run(LIFParams(v_th=1.0, n_ref=n_ref, refractory="counter"), I)["z"].flatten()
        assert set(torch.diff(torch.tensor(spike_times(zc))).tolist()) == {max(n_ref, 1)}


def test_T1_3_refractory_never_violated_and_psi_zero_while_refractory():
    g = torch.Generator().manual_seed(1)
    I = torch.rand(300, 4, 6, generator=g, dtype=F64) * 1.5
    p = LIFParams(v_th=0.6, n_ref=torch.tensor([0.0, 1, 2, 3, 5, 8], dtype=F64), beta=0.0)
    r = run(p, I)
    for b in range(4):
        for j, n_ref in enumerate([0, 1, 2, 3, 5, 8]):
            ts = torch.tensor(spike_times(r["z"][:, b, j]))
            assert len(ts) > 5
            assert (torch.diff(ts) > n_ref).all()
    assert (r["psi"][r["refm"]] == 0).all()
    assert r["refm"].any() and (r["z"][r["refm"]] == 0).all()


def _isi_closed_form(I, v_th, alpha, n_ref, T):
    """Spike times of a constant-input LIF (scaling A) from the closed form of the discrete map.

    Between spikes the map v <- αv + I is affine: after a spike at s with potential v_s,
    v^{s+k} = E + α^k (v_s − v_th/α − E), E = I/(1−α) (the reset −v_th enters once, at k = 1).
    With v increasing in k, the next spike is at k = max(n_ref + 1, k*), k* the first k with v^{s+k} > v_th.
    """
    E = I / (1 - alpha)
    # first spike from rest: v^t = E (1 − α^t), t = 1, 2, ...  (step index t−1)
    t1 = math.floor(math.log(1 - v_th / E) / math.log(alpha)) + 1
    times, s = [t1 - 1], t1 - 1
    v_s = E * (1 - alpha**t1)
    while True:
        c = v_s - v_th / alpha - E
        k_star = math.floor(math.log((v_th - E) / c) / math.log(alpha)) + 1
        k = max(n_ref + 1, k_star)
        s += k
        if s >= T:
            return times
        times.append(s)
        v_s = E + alpha**k * c


@pytest.mark.parametrize("n_ref", [0, 2, 6])
def test_T1_3_constant_input_isi_from_the_discrete_map(n_ref):
    alpha = math.exp(-1 / 20)
    I, v_th, T = 0.0437, 0.6, 400
    z = run(LIFParams(tau_mem_ms=20.0, v_th=v_th, n_ref=n_ref), torch.full((T, 1, 1), I, dtype=F64))["z"]
    sim = spike_times(z.flatten())
    pred = _isi_closed_form(I, v_th, alpha, n_ref, T)
    assert len(sim) > 10
    assert sim == pred


def test_alif_with_beta_zero_equals_lif_exactly():
    g = torch.Generator().manual_seed(2)
    N = 8
    I = torch.rand(200, 3, N, generator=g, dtype=F64) * 0.2
    W = torch.randn(N, N, generator=g, dtype=F64) * 0.3
    W.fill_diagonal_(0)
    p_lif = LIFParams(v_th=0.6, n_ref=2)
    c_lif = p_lif.constants(dtype=F64)
    c_alif = replace(p_lif, beta=torch.zeros(N, dtype=F64)).constants(dtype=F64)._replace(adaptive=True)
    surr = make_surrogate("eprop")
    s1 = s2 = init_alif_state(3, N, dtype=F64)
    zs = []
    for t in range(200):
        s1, _ = alif_update(c_lif, s1, I[t] + s1.z @ W.T, surr)
        s2, _ = alif_update(c_alif, s2, I[t] + s2.z @ W.T, surr)
        assert torch.equal(s1.v, s2.v) and torch.equal(s1.z, s2.z)
        zs.append(s1.z)
    assert torch.stack(zs).sum() > 20
    # lif_step ignores beta
    s = init_alif_state(3, N, dtype=F64)
    assert torch.equal(lif_step(replace(p_lif, beta=5.0), s, I[0]).v, alif_step(p_lif, s, I[0]).v)


def test_T1_4_scaling_A_B_map_gives_identical_rasters():
    g = torch.Generator().manual_seed(3)
    N, B, T = 12, 3, 400
    tau_m = 10 + 30 * torch.rand(N, generator=g, dtype=F64)
    tau_a = 200 + 800 * torch.rand(N, generator=g, dtype=F64)
    alpha, rho = torch.exp(-1 / tau_m), torch.exp(-1 / tau_a)
    beta_B = torch.where(torch.arange(N) >= 6, 1.7, 0.0).to(F64)
    vth_B = 0.03
    W_in = torch.randn(N, 5, generator=g, dtype=F64) * 0.1
    W_rec = torch.randn(N, N, generator=g, dtype=F64) * 0.03
    W_rec.fill_diagonal_(0)
    x = (torch.rand(T, B, 5, generator=g, dtype=F64) < 0.2).to(F64)
    pB = LIFParams(tau_mem_ms=tau_m, tau_adapt_ms=tau_a, v_th=vth_B, beta=beta_B, n_ref=2, scaling="B")
    pA = replace(pB, v_th=vth_B / (1 - alpha), beta=beta_B * (1 - rho) / (1 - alpha), scaling="A")
    i_seq = x @ W_in.T
    rA, rB = run(pA, i_seq, w_rec=W_rec), run(pB, i_seq, w_rec=W_rec)
    assert rB["z"].sum() > 100 and torch.equal(rA["z"], rB["z"])
    assert torch.allclose(rA["v"] * (1 - alpha), rB["v"], rtol=0, atol=1e-12)
    assert torch.allclose(rA["a"] * (1 - rho), rB["a"], rtol=0, atol=1e-12)
    assert torch.allclose(rA["psi"], (1 - alpha) * rB["psi"], rtol=0, atol=1e-9)


@pytest.mark.parametrize("scaling", ["A", "B"])
def test_T1_5_autograd_of_spike_equals_psi_and_minus_beta_psi(scaling):
    g = torch.Generator().manual_seed(4)
    N = 50
    beta = torch.rand(N, generator=g, dtype=F64)
    p = LIFParams(v_th=0.6, beta=beta, n_ref=3, scaling=scaling)
    v = (torch.rand(2, N, generator=g, dtype=F64) * 2.0).requires_grad_(True)
    a = (torch.rand(2, N, generator=g, dtype=F64) * 0.5).requires_grad_(True)
    ref = (torch.rand(2, N, generator=g, dtype=F64) < 0.3).to(F64) * 2
    s = ALIFState(v=v, a=a, z=torch.zeros(2, N, dtype=F64), ref=ref)
    i_in = torch.zeros(2, N, dtype=F64, requires_grad=True)
    new, aux = alif_step_aux(p, s, i_in)
    # closed form ψ from the new state
    c = p.constants(dtype=F64)
    A = 0.6 + beta * new.a
    psi = (0.3 / 0.6) * torch.clamp(1 - (new.v - A).abs() / 0.6, min=0) * (ref == 0)
    assert torch.allclose(aux.psi, psi, rtol=1e-14, atol=1e-16)
    assert torch.allclose(aux.thr, A, rtol=1e-15, atol=0)
    assert (aux.psi > 0).sum() > 10 and aux.refractory.sum() > 5
    # ∂z/∂v^t and ∂z/∂a^t through the step: v^t = α v^{t-1} + ..., a^t = ρ a^{t-1} + ...
    gv, ga, gi = torch.autograd.grad(new.z.sum(), (v, a, i_in))
    assert torch.equal(gi, c.c_in * aux.psi)  # ∂v^t/∂i_in = c_in, so this is ∂z^t/∂v^t = ψ directly
    assert torch.allclose(gv, c.alpha * aux.psi, rtol=1e-14, atol=1e-18)
    assert torch.allclose(ga, -beta * c.rho * aux.psi, rtol=1e-14, atol=1e-18)
    assert new.z.dtype == F64


def test_detach_reset_flag():
    v = torch.zeros(1, 3, dtype=F64, requires_grad=True)
    z = torch.ones(1, 3, dtype=F64, requires_grad=True)
    for detach, expected in ((False, -0.6), (True, 0.0)):
        s = ALIFState(v=v, a=torch.zeros_like(v), z=z, ref=torch.zeros_like(v))
        new = alif_step(LIFParams(v_th=0.6, detach_reset=detach), s, torch.zeros_like(v))
        (gz,) = torch.autograd.grad(new.v.sum(), z, allow_unused=True)
        assert torch.allclose(gz if gz is not None else torch.zeros_like(z), torch.full_like(z, expected))


def test_gap_current_discretisation():
    G = torch.tensor([[0.0, 0.2, 0.0], [0.2, 0.0, 0.5], [0.0, 0.5, 0.0]], dtype=F64)
    v = torch.tensor([[0.3, -0.1, 0.4]], dtype=F64)
    expected = torch.tensor([[0.2 * (-0.1 - 0.3), 0.2 * (0.3 + 0.1) + 0.5 * (0.4 + 0.1), 0.5 * (-0.1 - 0.4)]],
                            dtype=F64)
    assert torch.allclose(gap_current(v, G), expected, atol=1e-15)
    p = LIFParams(v_th=10.0, scaling="B")
    s = ALIFState(v=v, a=torch.zeros_like(v), z=torch.zeros_like(v), ref=torch.zeros_like(v))
    i_in = torch.tensor([[0.1, 0.0, 0.2]], dtype=F64)
    assert torch.allclose(alif_step(p, s, i_in, g_gap=G).v, alif_step(p, s, i_in + expected).v, atol=1e-15)


def test_params_validation_names_offending_entries():
    """A bad per-neuron parameter names how many entries fail and the first offending indices and values."""
    with pytest.raises(ValueError, match=r"tau_mem_ms .* got 2 of 4 entries, e\.g\. \[1\] = -1\.0, \[2\] = nan"):
        LIFParams(tau_mem_ms=torch.tensor([20.0, -1.0, float("nan"), 5.0]))
    with pytest.raises(ValueError, match=r"beta must be finite and >= 0 .* got -0\.5$"):
        LIFParams(beta=-0.5)


def test_params_validation():
    with pytest.raises(ValueError):
        LIFParams(scaling="C")
    with pytest.raises(ValueError):
        LIFParams(refractory="x")
    with pytest.raises(ValueError):
        LIFParams(n_ref=1.5).constants()
