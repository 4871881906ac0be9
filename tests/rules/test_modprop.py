"""ModProp (ALGORITHMS.md §4.5): filter-tap form = BPTT with substituted Jacobian (T4.1), hard-coded = autograd with a
custom backward (T4.2), exactness limits (T4.3), μ → 0 gives e-prop/RFLO (T4.4); rate and spiking."""

import math

import numpy as np
import pytest
import torch

from spikelearn.circuit import Circuit, dale
from spikelearn.models import RateRNN, SpikingRNN
from spikelearn.neurons.rate import RateState, rate_update
from spikelearn.rules import BPTT, RFLO, EProp
from spikelearn.rules import _reference as ref
from spikelearn.rules.modprop import ModProp, filter_taps


def _mse(y_hat, y, mask):
    return 0.5 * (((y_hat - y) ** 2).sum(-1) * mask).sum() / y.shape[1]


def _rel(got, want, keys):
    out = {}
    for k in keys:
        nw = want[k].norm()
        assert nw > 0, f"{k}: reference is zero"
        out[k] = float((got[k] - want[k]).norm() / nw)
    return out


def _rate(n=8, *, circuit=None, form="relu_lif", activation=None, hidden_bias=True, **kw):
    torch.manual_seed(2)
    circuit = dale(n, 0.75, p=0.7, g=1.2, seed=4) if circuit is None else circuit
    return RateRNN(circuit, 3, 2, form=form, activation=activation, tau_ms=30.0, dt_ms=10.0,
                   hidden_bias=hidden_bias, **kw).double()


def _data(T=25, B=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, 3, generator=g, dtype=torch.float64)
    y = torch.randn(T, B, 2, generator=g, dtype=torch.float64)
    mask = (torch.rand(T, B, generator=g, dtype=torch.float64) > 0.3).double()
    return x, y, mask


class _SubstitutedRec(torch.autograd.Function):
    """Zero-valued term ``μ W_ab · h − same``: forward 0, backward ``μ W_abᵀ g`` into ``h`` (no weight gradient)."""

    @staticmethod
    def forward(ctx, h, W_ab, mu):  # type: ignore[override]
        ctx.save_for_backward(W_ab)
        ctx.mu = mu
        return torch.zeros(h.shape[0], W_ab.shape[0], dtype=h.dtype)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (W_ab,) = ctx.saved_tensors
        return ctx.mu * g @ W_ab, None, None


def _rate_modprop_autograd(model, x, y, mask, rule, first=0):
    """T4.2 reference: exact forward; the recurrent drive's backward uses μ (not f') and W_ab (not W_rec) — from
    step ``first`` on (``buflen``: only the drives of the last S steps carry the substituted credit)."""
    W = model.effective_weights()
    c = model.constants()
    _, P, Om = rule.type_structure(model)
    W_ab = (P @ Om @ P.T).detach()
    T, Bn, _ = x.shape
    s = model.init_state(Bn)
    s = RateState(s.h, s.r)
    ys = []
    for t in range(T):
        D = x[t] @ W.W_in.T + W.b_rec + s.r.detach() @ W.W_rec.T
        if t >= first:
            D = D + _SubstitutedRec.apply(s.h, W_ab, rule.mu)
        s, _ = rate_update(c, s, c.c_in * D)
        ys.append(s.r @ W.W_out.T + W.b_out)
    return ref.named_grads(model, _mse(torch.stack(ys), y, mask))


KEYS_RATE = ["theta_rec", "theta_in", "b_rec", "theta_out", "b_out"]


@pytest.mark.parametrize("form", ["relu_lif", "pre_activation"])
@pytest.mark.parametrize("mu", [0.25, 1.3])
def test_t42_rate_equals_custom_backward(form, mu):
    model = _rate(form=form)
    x, y, mask = _data()
    rule = ModProp(mu=mu, chunk_steps=6)
    _, g = rule.gradients(model, x, y, mask, _mse)
    want = _rate_modprop_autograd(model, x, y, mask, rule)
    errs = _rel(g, want, KEYS_RATE)
    assert max(errs.values()) < 1e-10, errs


@pytest.mark.parametrize("form", ["relu_lif", "pre_activation"])
@pytest.mark.parametrize("cell_types", ["ei", "three"])
def test_t41_filter_taps_equal_substituted_bptt(form, cell_types):
    """T4.1: the causal filter-tap form (online) = BPTT with the substituted Jacobian (batched scan)."""
    model = _rate(form=form)
    ct = [0, 0, 1, 1, 1, 2, 2, 2] if cell_types == "three" else "ei"
    x, y, mask = _data()
    _, gb = ModProp(mu=0.4, cell_types=ct).gradients(model, x, y, mask, _mse)
    _, go = ModProp(mu=0.4, cell_types=ct, mode="online", chunk_steps=5).gradients(model, x, y, mask, _mse)
    errs = _rel(go, gb, KEYS_RATE)
    assert max(errs.values()) < 1e-10, errs


def _source_w_ab(model, types):
    """The source's W_ab by its definition (§4.1), entry by entry: the mean of |W_rec| over the block
    (post type of p, pre type of q), zeros included, times presynaptic neuron q's sign."""
    W = model.effective_weights().W_rec.detach()
    t = torch.as_tensor(types)
    N = W.shape[0]
    out = torch.zeros_like(W)
    for p in range(N):
        for q in range(N):
            block = W[t == t[p]][:, t == t[q]]
            col = W[:, q]
            sign = 1.0 if (col > 0).any() else (-1.0 if (col < 0).any() else 0.0)
            out[p, q] = block.abs().mean() * sign
    return out


@pytest.mark.parametrize("form", ["relu_lif", "pre_activation"])
def test_source_omega_abs_sign(form):
    """omega="abs_sign" (the source's |W| block mean × presynaptic sign): its P Ω Pᵀ equals the entry-by-entry
    definition; the hard-coded rule equals the custom-backward autograd with that W_ab (T4.2) and its filter-tap
    form equals its scan (T4.1); with sign-mixing types it differs from the signed block mean, with E/I types
    (one sign per type) it is the same."""
    model = _rate(form=form)
    three = [0, 0, 1, 1, 1, 2, 2, 2]  # dale(8, 0.75): neurons 0-5 E, 6-7 I, so type 2 mixes signs
    rule = ModProp(mu=0.4, cell_types=three, omega="abs_sign", chunk_steps=6)
    _, P, Om = rule.type_structure(model)
    assert torch.allclose(P @ Om @ P.T, _source_w_ab(model, three), rtol=1e-14, atol=1e-15)
    x, y, mask = _data()
    _, g = rule.gradients(model, x, y, mask, _mse)
    errs = _rel(g, _rate_modprop_autograd(model, x, y, mask, rule), KEYS_RATE)
    assert max(errs.values()) < 1e-10, errs
    _, go = ModProp(mu=0.4, cell_types=three, omega="abs_sign", mode="online", chunk_steps=5).gradients(
        model, x, y, mask, _mse)
    assert max(_rel(go, g, KEYS_RATE).values()) < 1e-10
    _, gs = ModProp(mu=0.4, cell_types=three, chunk_steps=6).gradients(model, x, y, mask, _mse)
    assert float((gs["theta_rec"] - g["theta_rec"]).norm()) > 1e-3 * float(g["theta_rec"].norm())
    _, ge_abs = ModProp(mu=0.4, omega="abs_sign").gradients(model, x, y, mask, _mse)
    _, ge = ModProp(mu=0.4).gradients(model, x, y, mask, _mse)
    assert max(_rel(ge_abs, ge, KEYS_RATE).values()) < 1e-12


def test_source_omega_refuses_mixed_sign_neurons():
    from spikelearn.circuit import gaussian

    model = RateRNN(gaussian(8, 1.0, seed=0), 3, 2, form="relu_lif", tau_ms=30.0, dt_ms=10.0).double()
    x, y, mask = _data()
    with pytest.raises(ValueError, match="outgoing weights of both signs"):
        ModProp(cell_types=[0] * 8, omega="abs_sign").gradients(model, x, y, mask, _mse)


@pytest.mark.parametrize("scaling", ["A", "B"])
def test_source_omega_spiking(scaling):
    """Spiking ModProp with the source's Ω: hard-coded = custom-backward autograd (T4.2) with sign-mixing types."""
    model = _spiking(scaling=scaling)
    x, y, mask = _spike_data()
    rule = ModProp(mu=5.0, cell_types=[0, 0, 1, 1, 1, 2, 2, 2], omega="abs_sign", chunk_steps=7)
    _, g = rule.gradients(model, x, y, mask, _mse)
    errs = _rel(g, _spiking_modprop_autograd(model, x, y, mask, rule, False),
                ["theta_rec", "theta_in", "theta_out", "b_out"])
    assert max(errs.values()) < 1e-10, errs


def test_filter_taps_are_powers_of_the_substituted_jacobian():
    g = torch.Generator().manual_seed(0)
    idx = torch.tensor([0, 0, 1, 1, 1, 2])
    P = torch.nn.functional.one_hot(idx, 3).double()
    Om = torch.randn(3, 3, generator=g, dtype=torch.float64)
    alpha, c = 0.8, 0.3
    J = alpha * torch.eye(6, dtype=torch.float64) + c * P @ Om @ P.T
    G = filter_taps(Om, P.sum(0), alpha, c, 6)
    for s in range(6):
        want = torch.linalg.matrix_power(J, s)
        assert torch.allclose(alpha ** s * torch.eye(6, dtype=torch.float64) + P @ G[s] @ P.T, want, atol=1e-13)


def test_t43_linear_one_type_per_neuron_is_bptt():
    model = _rate(activation="identity")
    x, y, mask = _data()
    _, g = ModProp(mu=1.0, cell_types=list(range(model.n))).gradients(model, x, y, mask, _mse)
    _, gb = BPTT().gradients(model, x, y, mask, _mse)
    errs = _rel(g, gb, KEYS_RATE)
    assert max(errs.values()) < 1e-10, errs


def test_t43_block_constant_weights_are_bptt():
    n = 6
    types = np.array([0, 0, 0, 1, 1, 1])
    Om = np.array([[0.3, -0.5], [0.4, -0.2]])
    W = Om[types][:, types]
    circ = Circuit.from_dense(W, mask=np.ones((n, n), bool))
    model = _rate(circuit=circ, activation="identity", allow_autapses=True, sign_constraint="none")
    x, y, mask = _data()
    for mode in ("batched", "online"):
        _, g = ModProp(mu=1.0, cell_types=types.tolist(), mode=mode).gradients(model, x, y, mask, _mse)
        _, gb = BPTT().gradients(model, x, y, mask, _mse)
        errs = _rel(g, gb, KEYS_RATE)
        assert max(errs.values()) < 1e-10, (mode, errs)


@pytest.mark.parametrize("mode", ["batched", "online"])
def test_t44_mu_zero_is_rflo(mode):
    model = _rate()
    x, y, mask = _data()
    _, g = ModProp(mu=0.0, mode=mode).gradients(model, x, y, mask, _mse)
    _, gr = RFLO(feedback="symmetric").gradients(model, x, y, mask, _mse)
    errs = _rel(g, gr, KEYS_RATE)
    assert max(errs.values()) < 1e-12, errs
    _, g1 = ModProp(mu=0.3, mode=mode).gradients(model, x, y, mask, _mse)
    assert float((g1["theta_rec"] - gr["theta_rec"]).norm()) > 1e-6 * float(gr["theta_rec"].norm())


# ------------------------------------------------------------------------------------------ spiking
def _spiking(n=8, scaling="B", **kw):
    torch.manual_seed(1)
    circ = dale(n, 0.75, p=0.6, g=1.5, seed=3)
    vth = 0.3 if scaling == "A" else 0.3 * (1 - math.exp(-1 / 20))
    opts = dict(n_adaptive=n // 2, tau_adapt_ms=50.0, n_ref=2, scaling=scaling, v_th=vth, tau_out_ms=10.0,
                w_in=0.5 * torch.randn(n, 3, dtype=torch.float64).abs())
    opts.update(kw)
    return SpikingRNN(circ, 3, 2, **opts).double()


def _spike_data(T=30, B=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(T, B, 3, generator=g, dtype=torch.float64) < 0.3).double()
    y = torch.randn(T, B, 2, generator=g, dtype=torch.float64)
    mask = (torch.rand(T, B, generator=g, dtype=torch.float64) > 0.3).double()
    return x, y, mask


def _spiking_modprop_autograd(model, x, y, mask, rule, reset_in_trace, first=0):
    """Exact forward; recurrent spikes detached; a zero-valued term sends μ W_abᵀ credit into v − β a."""
    W = model.effective_weights()
    c = model.constants()
    _, P, Om = rule.type_structure(model)
    W_ab = (P @ Om @ P.T).detach()
    T, Bn, _ = x.shape
    N = model.n
    s0 = model.init_state(Bn)  # rest, or the model's relaxed initial state
    v, a, z, refr, zf, cur = s0.v, s0.a, s0.z, s0.ref, s0.z_filt, s0.i_syn
    ys = []
    for t in range(T):
        sub = _SubstitutedRec.apply(v - c.beta * a, W_ab, rule.mu) if t >= first else 0.0
        drive = c.c_in * (x[t] @ W.W_in.T + z.detach() @ W.W_rec.T + sub)
        if c.synaptic:  # the recurrent spike (and its substituted credit) enters the synaptic current
            cur = c.alpha_syn * cur + drive
            drive = cur
        zr = z if reset_in_trace else z.detach()
        v = c.alpha * v * (1.0 - zr) + drive if c.reset_zero else c.alpha * v + drive - c.v_th * zr
        a = c.rho * a + c.c_a * z
        u = (v - (c.v_th + c.beta * a)) / c.v_th
        d = model.surrogate.derivative(u)
        z = model.surrogate.spike(u, d) * (1.0 - refr).relu()
        refr = (refr - 1.0).relu() + c.n_block * z.detach()
        zf = model.kappa * zf + model.c_kappa * z
        ys.append(zf @ W.W_out.T + W.b_out)
    return ref.named_grads(model, _mse(torch.stack(ys), y, mask))


def _assert_t42_spiking(model, reset_in_trace):
    """Spiking ModProp (μ = 5) equals the custom-backward construction (< 1e-10); returns ``(gradient, data)``."""
    x, y, mask = _spike_data()
    rule = ModProp(mu=5.0, reset_in_trace=reset_in_trace, chunk_steps=7)
    _, g = rule.gradients(model, x, y, mask, _mse)
    want = _spiking_modprop_autograd(model, x, y, mask, rule, reset_in_trace)
    errs = _rel(g, want, ["theta_rec", "theta_in", "theta_out", "b_out"])
    assert max(errs.values()) < 1e-10, errs
    return g, (x, y, mask)


@pytest.mark.parametrize("readout_norm", [True, False])
@pytest.mark.parametrize("reset_in_trace", [False, True])
@pytest.mark.parametrize("scaling", ["A", "B"])
def test_t42_spiking_equals_custom_backward(reset_in_trace, scaling, readout_norm):
    _assert_t42_spiking(_spiking(scaling=scaling, readout_norm=readout_norm), reset_in_trace)


@pytest.mark.parametrize("reset_in_trace", [False, True])
def test_t44_spiking_mu_zero_is_eprop(reset_in_trace):
    model = _spiking()
    x, y, mask = _spike_data()
    _, g = ModProp(mu=0.0, reset_in_trace=reset_in_trace).gradients(model, x, y, mask, _mse)
    _, ge = EProp(reset_in_trace=reset_in_trace).gradients(model, x, y, mask, _mse)
    errs = _rel(g, ge, ["theta_rec", "theta_in", "theta_out"])
    assert max(errs.values()) < 1e-12, errs


def test_rejects_unsupported():
    with pytest.raises(ValueError):
        ModProp(mode="online").gradients(_spiking(), *_spike_data(), _mse)
    with pytest.raises(ValueError):
        ModProp().gradients(_rate(form="murray", hidden_bias=False), *_data(), _mse)


def test_exploding_credit_names_mu_and_the_spectral_radius():
    """A μ far above ψ's scale makes the backward scan blow up; the rule says so, with the substituted Jacobian's
    spectral radius, instead of only returning non-finite gradients."""
    model = _spiking()
    x, y, mask = _spike_data(T=120)
    with pytest.warns(RuntimeWarning, match=r"spectral radius .* with mu = 10000.0 \(> 1"):
        _, g = ModProp(mu=1e4).gradients(model, x, y, mask, _mse)
    assert not torch.isfinite(g["theta_rec"]).all()


@pytest.mark.parametrize("S", [0, 7, 25])
def test_buflen_limits_the_nonlocal_credit_to_the_last_steps(S):
    """buflen = S (the source's MDGL_buflen): the substituted backward only through the recurrent drives of the
    last S steps = autograd with the custom backward switched on from step T − S (rate and spiking); S = 0 is μ = 0
    (no non-local credit), S ≥ T the whole trial."""
    model = _rate()
    x, y, mask = _data()  # T = 25
    T = x.shape[0]
    _, g = ModProp(mu=0.4, buflen=S, chunk_steps=6).gradients(model, x, y, mask, _mse)
    want = _rate_modprop_autograd(model, x, y, mask, ModProp(mu=0.4), first=T - S)
    assert max(_rel(g, want, KEYS_RATE).values()) < 1e-10
    if S == 0:
        _, g0 = ModProp(mu=0.0).gradients(model, x, y, mask, _mse)
        assert max(_rel(g, g0, KEYS_RATE).values()) < 1e-12
    if S >= T:
        _, gf = ModProp(mu=0.4).gradients(model, x, y, mask, _mse)
        assert max(_rel(g, gf, KEYS_RATE).values()) < 1e-12
    if 0 < S < T:  # a real truncation: neither the full propagation nor none
        _, gf = ModProp(mu=0.4).gradients(model, x, y, mask, _mse)
        _, g0 = ModProp(mu=0.0).gradients(model, x, y, mask, _mse)
        assert min(_rel(g, gf, ["theta_rec"])["theta_rec"], _rel(g, g0, ["theta_rec"])["theta_rec"]) > 1e-6
    sm = _spiking()
    xs, ys, ms = _spike_data()  # T = 30
    _, gs = ModProp(mu=5.0, buflen=S, chunk_steps=7).gradients(sm, xs, ys, ms, _mse)
    ws = _spiking_modprop_autograd(sm, xs, ys, ms, ModProp(mu=5.0), False, first=xs.shape[0] - S)
    assert max(_rel(gs, ws, ["theta_rec", "theta_in", "theta_out", "b_out"]).values()) < 1e-10


def test_buflen_values():
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="buflen must be"):
            ModProp(buflen=bad)
    with pytest.raises(ValueError, match="buflen .* needs mode='batched'"):
        ModProp(buflen=5, mode="online")


@pytest.mark.parametrize("reset_in_trace", [False, True])
def test_t42_spiking_with_current_based_synapses_equals_custom_backward(reset_in_trace):
    """Synaptic currents: the substituted credit μ W_abᵀ enters through the target's current, dE/di^{t+1}
    (the scan's hook receives it); = autograd of the custom-backward construction, per-neuron τ_s (some 0)."""
    model = _spiking(tau_syn_ms=[0.0, 2.0, 5.0, 3.0, 0.0, 8.0, 4.0, 6.0])
    g, (x, y, mask) = _assert_t42_spiking(model, reset_in_trace)
    _, ge = EProp(reset_in_trace=reset_in_trace).gradients(model, x, y, mask, _mse)
    assert float((g["theta_rec"] - ge["theta_rec"]).norm()) > 1e-6 * float(ge["theta_rec"].norm())


@pytest.mark.parametrize("reset_in_trace", [False, True])
def test_t42_spiking_with_reset_zero_equals_custom_backward(reset_in_trace):
    _assert_t42_spiking(_spiking(reset="zero", tau_syn_ms=3.0), reset_in_trace)


def test_t42_spiking_from_a_relaxed_initial_state():
    model = _spiking(init_state_std=2.0, init_relax_steps=3, init_seed=5)
    assert model.init_state(3).z.any()
    _assert_t42_spiking(model, True)
