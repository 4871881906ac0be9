"""SpikingRNN / RateRNN: weights from circuits, masks and signs, forward vs step functions, records,
continuation, gradients (gradcheck, §6 T6.2 finite differences), save/load, gap junctions."""

import math

import numpy as np
import pytest
import torch

from spikelearn.circuit import Circuit, CircuitError, generators
from spikelearn.models import ModelOutput, RateRNN, SpikingRNN, load
from spikelearn.neurons import (
    ALIFState,
    LIFParams,
    RateParams,
    RateState,
    alif_step_aux,
    make_surrogate,
    rate_step_aux,
)

F64 = torch.float64


def poisson(T, B, n_in, p=0.2, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, B, n_in, generator=g) < p).to(F64) * scale


def spiking(circuit, n_in=4, n_out=2, **kw):
    kw.setdefault("dtype", F64)
    return SpikingRNN(circuit, n_in, n_out, **kw)


def mixed_circuit(n=10, seed=0):
    """Declared E (0-2) and I (3-4) neurons plus sign-0 neurons (5-9) whose outgoing edges carry both signs."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((n, n)) / np.sqrt(n)
    np.fill_diagonal(W, 0)
    W[:, :3] = np.abs(W[:, :3])
    W[:, 3:5] = -np.abs(W[:, 3:5])
    signs = [1, 1, 1, -1, -1] + [0] * (n - 5)
    return Circuit.from_dense(W, signs=signs, node_ids=[f"n{k}" for k in range(n)])


# ------------------------------------------------------------------------------------------ forward
@pytest.mark.parametrize("scaling", ["A", "B"])
@pytest.mark.parametrize("readout", ["filtered_spikes", "filtered_current"])
@pytest.mark.parametrize("readout_norm", [True, False])
def test_spiking_forward_equals_step_function_loop(scaling, readout, readout_norm):
    """The model's fast path equals alif_step applied with the effective weights; the record holds it all. The
    readout filter is z̄ = κ z̄ + (1−κ) z, or κ z̄ + z without the readout normalisation (the paper form)."""
    c = generators.erdos_renyi(16, 0.5, g=1.5, seed=1)
    m = spiking(c, scaling=scaling, readout=readout, n_adaptive=6, n_ref=2, readout_norm=readout_norm)
    with torch.no_grad():
        m.theta_in.mul_(6.0 if scaling == "A" else 0.5)
    x = poisson(60, 3, 4)
    out = m(x, record=True)
    W = m.effective_weights()
    p = LIFParams(tau_mem_ms=m.tau_mem_ms, tau_adapt_ms=m.tau_adapt_ms, v_th=m.v_th, beta=m.beta, n_ref=m.n_ref,
                  scaling=scaling)
    s = ALIFState(*(torch.zeros(3, 16, dtype=F64),) * 4)
    kappa = math.exp(-1 / 20)
    zf = torch.zeros(3, 16, dtype=F64)
    for t in range(60):
        s, aux = alif_step_aux(p, s, x[t] @ W.W_in.T, w_rec=W.W_rec)
        zf = kappa * zf + ((1 - kappa) if readout_norm else 1.0) * s.z
        r = out.record
        assert torch.equal(r.z[t], s.z)
        assert torch.allclose(r.v[t], s.v, atol=1e-12) and torch.allclose(r.a[t], s.a, atol=1e-12)
        assert torch.allclose(r.thr[t], aux.thr, atol=1e-12) and torch.allclose(r.psi[t], aux.psi, atol=1e-12)
        assert torch.equal(r.ref[t], aux.refractory)
        assert torch.allclose(r.z_filt[t], zf, atol=1e-12)
        assert torch.allclose(out.y[t], zf @ W.W_out.T + W.b_out, atol=1e-12)
    assert out.record.z.sum() > 30 and out.record.ref.any()
    assert isinstance(out, ModelOutput) and out.y.shape == (60, 3, 2)


def test_record_index_convention_and_eprop_sufficiency():
    """record[t] = after step t: x[t] acts on v[t]; z[t] acts on v[t+1]; everything e-prop needs is there."""
    c = generators.gaussian(8, g=2.0, seed=2)
    m = spiking(c, n_in=3, n_adaptive=4, n_ref=3)
    with torch.no_grad():
        m.theta_in.mul_(5.0)
    x = poisson(80, 2, 3, p=0.3, seed=3)
    rec = m(x, record=True).record
    assert set(rec._fields) == {"x", "z", "v", "a", "thr", "psi", "z_filt", "ref", "i_syn"}
    for f in rec:
        assert f.shape[:2] == (80, 2)
    assert rec.x.shape[-1] == 3 and rec.z.shape[-1] == 8 and torch.equal(rec.x, x)
    W = m.effective_weights()
    c_ = m.constants()
    z_prev = torch.cat([torch.zeros_like(rec.z[:1]), rec.z[:-1]])
    v_prev = torch.cat([torch.zeros_like(rec.v[:1]), rec.v[:-1]])
    a_prev = torch.cat([torch.zeros_like(rec.a[:1]), rec.a[:-1]])
    v_rebuilt = c_.alpha * v_prev + x @ W.W_in.T + z_prev @ W.W_rec.T - c_.v_th * z_prev
    assert torch.allclose(rec.v, v_rebuilt, atol=1e-12)
    assert torch.allclose(rec.a, c_.rho * a_prev + z_prev, atol=1e-12)
    assert torch.allclose(rec.thr, c_.v_th + c_.beta * rec.a, atol=1e-12)
    psi = 0.3 / c_.v_th * torch.clamp(1 - (rec.v - rec.thr).abs() / c_.v_th, min=0) * (~rec.ref)
    assert torch.allclose(rec.psi, psi, atol=1e-12)
    assert (rec.psi[rec.ref] == 0).all() and rec.ref.any()
    assert not rec.psi.requires_grad


@pytest.mark.parametrize("form", ["pre_activation", "murray", "relu_lif", "richlazy"])
def test_rate_forward_equals_step_function_loop(form):
    c = generators.gaussian(10, g=1.3, seed=4)
    m = RateRNN(c, 3, 2, form=form, tau_ms=50.0, dt_ms=10.0, hidden_bias=True, dtype=F64)
    with torch.no_grad():
        m.b_rec.normal_()
    x = torch.randn(30, 2, 3, dtype=F64)
    out = m(x, record=True)
    W = m.effective_weights()
    p = RateParams(tau_ms=50.0, dt_ms=10.0, form=form, activation=m.activation)
    s = m.init_state(2)
    for t in range(30):
        s, aux = rate_step_aux(p, s, x[t] @ W.W_in.T + W.b_rec, w_rec=W.W_rec)
        assert torch.allclose(out.record.h[t], s.h, atol=1e-12) and torch.allclose(out.record.r[t], s.r, atol=1e-12)
        assert torch.allclose(out.record.fprime[t], aux.fprime, atol=1e-12)
        assert torch.allclose(out.y[t], s.r @ W.W_out.T + W.b_out, atol=1e-12)
    assert set(out.record._fields) == {"x", "h", "r", "fprime"}


def test_T1_6_rate_model_linear_closed_form():
    c = generators.gaussian(6, g=0.9, seed=5)
    m = RateRNN(c, 2, 1, form="pre_activation", activation="identity", tau_ms=10.0, dt_ms=2.0,
                readout_from="h", dtype=F64)
    x = torch.randn(25, 1, 2, dtype=F64)
    out = m(x, record=True)
    W = m.effective_weights()
    M = 0.8 * torch.eye(6, dtype=F64) + 0.2 * W.W_rec
    h = torch.zeros(1, 6, dtype=F64)
    for t in range(25):
        h = h @ M.T + 0.2 * x[t] @ W.W_in.T
        assert torch.allclose(out.record.h[t], h, atol=1e-12)
    assert torch.allclose(out.y, out.record.h @ W.W_out.T + W.b_out, atol=1e-12)


@pytest.mark.parametrize("kind", ["spiking_spikes", "spiking_current", "rate"])
def test_state_continuation_is_exact(kind):
    c = generators.erdos_renyi(12, 0.5, g=1.5, seed=6)
    if kind == "rate":
        m = RateRNN(c, 4, 2, dtype=F64)
        x = torch.randn(50, 3, 4, dtype=F64)
    else:
        m = spiking(c, readout="filtered_spikes" if kind == "spiking_spikes" else "filtered_current",
                    n_adaptive=4, n_ref=3)
        with torch.no_grad():
            m.theta_in.mul_(5.0)
        x = poisson(50, 3, 4) * torch.rand(50, 3, 4, dtype=F64)  # real-valued input
    full = m(x, record=True)
    first = m(x[:23], record=True)
    second = m(x[23:], state=first.state, record=True)
    assert torch.equal(torch.cat([first.y, second.y]), full.y)
    for a, b, f in zip(full.record, [torch.cat([p, q]) for p, q in zip(first.record, second.record)],
                       full.record._fields):
        assert torch.equal(a, b), f
    for a, b in zip(full.state, second.state):
        assert torch.equal(a, b)


def test_time_linear_is_chunk_invariant_and_differentiable_twice():
    from spikelearn.models import time_linear

    x = torch.randn(7, 3, 4, dtype=F64, requires_grad=True)
    W = torch.randn(5, 4, dtype=F64, requires_grad=True)
    y = time_linear(x, W)
    assert torch.allclose(y, x @ W.T, atol=1e-14)
    assert all(torch.equal(time_linear(x[:k], W), y[:k]) and torch.equal(time_linear(x[k:], W), y[k:])
               for k in range(1, 7))
    assert torch.autograd.gradcheck(time_linear, (x, W))
    assert torch.autograd.gradgradcheck(time_linear, (x, W))
    dx, dW = torch.randn_like(x), torch.randn_like(W)
    _, t = torch.func.jvp(time_linear, (x.detach(), W.detach()), (dx, dW))
    assert torch.allclose(t, dx @ W.T + x @ dW.T, atol=1e-13)


# ------------------------------------------------------------------------------------------ weights
def test_masked_edges_and_autapses_get_zero_gradient_and_stay_zero():
    c = generators.erdos_renyi(15, 0.3, seed=7, self_loops=True)
    assert c.mask().diagonal().any()
    m = RateRNN(c, 3, 2, dtype=F64)
    mask = torch.as_tensor(c.mask()) & ~torch.eye(15, dtype=torch.bool)
    assert torch.equal(m.mask_rec.bool(), mask)
    opt = torch.optim.Adam(m.parameters(), lr=0.05)
    x, target = torch.randn(20, 4, 3, dtype=F64), torch.randn(20, 4, 2, dtype=F64)
    for _ in range(20):
        opt.zero_grad()
        loss = ((m(x).y - target) ** 2).mean()
        loss.backward()
        assert (m.theta_rec.grad[~mask] == 0).all() and (m.theta_rec.grad[mask] != 0).any()
        opt.step()
    W = m.effective_weights().W_rec
    assert (W[~mask] == 0).all() and (W.diagonal() == 0).all()
    assert not torch.allclose(W[mask], torch.as_tensor(c.weights(dense=True))[mask])
    # with allow_autapses the circuit's self-loops are kept
    m2 = RateRNN(c, 3, 2, allow_autapses=True, dtype=F64)
    assert torch.equal(m2.mask_rec.bool(), torch.as_tensor(c.mask()))
    assert torch.allclose(m2.effective_weights().W_rec, torch.as_tensor(c.weights(dense=True)))


def _flip_signs_for(model, steps=100):
    """Adam on a loss that pulls every weight towards the opposite of its initial sign."""
    W0 = model.effective_weights()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    x = torch.randn(10, 2, model.n_in, dtype=F64)
    for _ in range(steps):
        opt.zero_grad()
        W = model.effective_weights()
        loss = ((W.W_rec + 2 * W0.W_rec.detach()) ** 2).sum() + ((W.W_in + W0.W_in.detach()) ** 2).sum() \
            + ((W.W_out + W0.W_out.detach()) ** 2).sum() + model(x).y.pow(2).mean()
        loss.backward()
        opt.step()
    return W0, model.effective_weights()


@pytest.mark.parametrize("model_cls", [RateRNN, SpikingRNN])
def test_dale_signs_preserved_after_100_adam_steps(model_cls):
    c = generators.dale(12, p=0.6, seed=8)
    m = model_cls(c, 3, 2, sign_constraint="dale", dtype=F64)
    assert m.sign_constraint == "dale"
    W0, W1 = _flip_signs_for(m)
    col = torch.tensor(np.array(c.signs), dtype=F64)
    mask = m.mask_rec.bool()
    assert ((W1.W_rec * col[None, :])[mask] >= 0).all()
    assert (W1.W_rec[~mask] == 0).all()
    assert (W1.W_rec[mask] == 0).sum() < mask.sum()  # not all collapsed
    # it did try to flip: many weights shrank to ~0 magnitude
    assert (W1.W_rec.abs() < 0.3 * W0.W_rec.abs())[mask].float().mean() > 0.5
    # "auto" on a circuit with declared signs is "keep", which equals "dale" here
    assert model_cls(c, 3, 2, dtype=F64).sign_constraint == "keep"


def test_keep_signs_with_mixed_sign_neurons():
    c = mixed_circuit()
    m = RateRNN(c, 3, 2, dtype=F64)  # auto -> keep
    assert m.sign_constraint == "keep"
    S0 = torch.sign(torch.as_tensor(c.weights(dense=True)))
    assert (m.sign_rec == S0).all()  # declared columns agree with edges here; sign-0 columns keep edge signs
    assert (S0[:, 5:] > 0).any() and (S0[:, 5:] < 0).any()
    W0, W1 = _flip_signs_for(m)
    mask = m.mask_rec.bool()
    assert ((W1.W_rec * S0)[mask] >= 0).all()
    # "none" lets them flip
    m2 = RateRNN(c, 3, 2, sign_constraint="none", dtype=F64)
    _, W2 = _flip_signs_for(m2)
    assert ((W2.W_rec * S0)[mask] < 0).float().mean() > 0.5


def test_dale_refuses_unknown_and_mixed_neurons_and_keep_refuses_contradictions():
    with pytest.raises(CircuitError, match=r"without a known sign.*'n5'"):
        RateRNN(mixed_circuit(), 3, 2, sign_constraint="dale")
    W = np.array([[0, 1.0, -1.0], [1.0, 0, 2.0], [-1.0, 3.0, 0]])
    c = Circuit.from_dense(W, signs=[1, 1, -1], node_ids=["a", "b", "c"])
    with pytest.raises(CircuitError, match="'a'"):  # 'a' has outgoing edges of both signs
        SpikingRNN(c, 2, 1, sign_constraint="dale")
    c2 = Circuit.from_dense(np.array([[0, 1.0], [-1.0, 0]]), signs=[1, 1], node_ids=["p", "q"])
    with pytest.raises(ValueError, match="'p'"):
        RateRNN(c2, 1, 1, sign_constraint="keep")
    with pytest.raises(ValueError, match="sign_constraint"):
        RateRNN(c2, 1, 1, sign_constraint="strict")


def test_zero_weight_edge_can_grow_under_sign_constraint():
    W = np.array([[0, 0.0], [0.5, 0]])
    c = Circuit.from_dense(W, mask=np.array([[False, True], [True, False]]), signs=[1, 1])
    m = RateRNN(c, 1, 1, activation="identity", dtype=F64)
    assert m.effective_weights().W_rec[0, 1] == 0
    g = m.param_grads({"W_rec": -torch.ones(2, 2, dtype=F64)})["theta_rec"]
    assert g[0, 1] == -1.0  # d|θ|/dθ = +1 at θ = 0
    with torch.no_grad():
        m.theta_rec -= 0.1 * g
    assert m.effective_weights().W_rec[0, 1].item() == pytest.approx(0.1)


def test_input_output_masks_and_signs():
    n = 6
    W = generators.gaussian(n, seed=9).weights(dense=True)
    c = Circuit.from_dense(W, input_mask=np.array([1, 1, 0, 1, 0, 1], bool), input_sign=np.array([1, -1, 0, 0, 1, 0]),
                           output_mask=np.array([0, 1, 1, 1, 1, 0], bool), output_sign=np.array([0, 1, -1, 0, 0, 0]))
    m = SpikingRNN(c, 5, 3, dtype=F64)
    _flip_signs_for(m, steps=30)
    Wf = m.effective_weights()
    assert Wf.W_in.shape == (n, 5) and Wf.W_out.shape == (3, n) and Wf.b_out.shape == (3,)
    assert (Wf.W_in[[2, 4]] == 0).all() and (Wf.W_in[[0, 1, 3, 5]] != 0).all()
    assert (Wf.W_in[0] >= 0).all() and (Wf.W_in[1] <= 0).all()
    assert (Wf.W_out[:, [0, 5]] == 0).all() and (Wf.W_out[:, 1] >= 0).all() and (Wf.W_out[:, 2] <= 0).all()
    im = np.ones((n, 2), bool)
    im[0, 1] = False
    m2 = RateRNN(Circuit.from_dense(W, input_mask=im), 2, 1)
    assert m2.effective_weights().W_in[0, 1] == 0 and (m2.effective_weights().W_in[1:] != 0).all()
    with pytest.raises(ValueError, match="input_mask"):
        RateRNN(Circuit.from_dense(W, input_mask=im), 3, 1)


def test_initialisation_scales():
    c = generators.gaussian(400, seed=10)
    m = RateRNN(c, 50, 30)
    W = m.effective_weights()
    assert W.W_in.dtype == torch.float32
    assert abs(W.W_in.std().item() - 1 / math.sqrt(50)) < 0.01
    lim = math.sqrt(6 / 430)
    assert W.W_out.abs().max() <= lim and W.W_out.abs().max() > 0.95 * lim
    assert torch.equal(W.b_out, torch.zeros(30))
    m2 = RateRNN(c, 50, 30, w_out_init="normal", readout_bias=False)
    assert abs(m2.effective_weights().W_out.std().item() - 1 / 20) < 0.005 and m2.b_out is None
    w_in = np.arange(400 * 50, dtype=float).reshape(400, 50)
    assert np.allclose(RateRNN(c, 50, 1, w_in=w_in, dtype=F64).effective_weights().W_in.detach().numpy(), w_in)


@pytest.mark.parametrize("which", ["w_in", "w_out"])
@pytest.mark.parametrize("kind", ["normal", "glorot", "he_normal", "uniform", "standard_normal"])
def test_initialisation_variants(which, kind):
    """Each published initialisation: normal draws have the stated variance (within 5 standard errors of the
    sample variance, sd·√(2/n)), uniform ones the stated bound (max |w| within 1 % of it, never above)."""
    n, n_in, n_out = 400, 200, 200
    fan_in, fan_out = (n_in, n) if which == "w_in" else (n, n_out)
    torch.manual_seed(0)
    W = RateRNN(generators.gaussian(n, seed=1), n_in, n_out, dtype=F64, **{f"{which}_init": kind}).effective_weights()
    w = (W.W_in if which == "w_in" else W.W_out).detach().flatten()
    assert w.numel() == 80_000
    var = {"normal": 1 / fan_in, "he_normal": 2 / fan_in, "standard_normal": 1.0,
           "glorot": 2 / (fan_in + fan_out), "uniform": 1 / (3 * fan_in)}[kind]
    assert abs(w.var().item() - var) < 5 * var * math.sqrt(2 / w.numel()), (w.var().item(), var)
    if kind in ("glorot", "uniform"):
        lim = math.sqrt(6 / (fan_in + fan_out)) if kind == "glorot" else 1 / math.sqrt(fan_in)
        assert lim * 0.99 < w.abs().max().item() <= lim
    else:  # Gaussian: excess kurtosis ≈ 0 (a uniform draw has −1.2)
        z = (w - w.mean()) / w.std()
        assert abs((z ** 4).mean().item() - 3.0) < 0.1


def test_default_initialisation_draws_are_unchanged():
    """The defaults draw exactly what they always drew (stored runs depend on it): W_in = randn/√n_in, then
    W_out Glorot-uniform, from torch's global RNG in that order."""
    n, n_in, n_out = 30, 4, 3
    torch.manual_seed(5)
    m = RateRNN(generators.gaussian(n, seed=1), n_in, n_out, dtype=F64)
    torch.manual_seed(5)
    w_in = torch.randn(n, n_in, dtype=F64) / math.sqrt(n_in)
    w_out = (2 * torch.rand(n_out, n, dtype=F64) - 1) * math.sqrt(6.0 / (n + n_out))
    W = m.effective_weights()
    assert torch.equal(W.W_in, w_in) and torch.equal(W.W_out, w_out)
    with pytest.raises(ValueError, match="w_in_init must be one of"):
        RateRNN(generators.gaussian(n, seed=1), n_in, n_out, w_in_init="xavier")
    with pytest.raises(ValueError, match="w_out_init must be one of"):
        SpikingRNN(generators.gaussian(n, seed=1), n_in, n_out, w_out_init="he")


def test_param_grads_maps_effective_gradients():
    c = mixed_circuit()
    m = RateRNN(c, 3, 2, dtype=F64)
    x = torch.randn(10, 2, 3, dtype=F64)
    W = m.effective_weights()
    Wd = {k: v.detach().requires_grad_(True) for k, v in W._asdict().items() if v is not None}
    # loss as a function of the effective weights
    m.zero_grad()
    loss = m(x).y.pow(2).sum()
    loss.backward()
    direct = {k: p.grad.clone() for k, p in m.named_parameters()}
    eff = m.effective_weights()
    gW = torch.autograd.grad(_loss_from_eff(m, eff, x), [eff.W_in, eff.W_rec, eff.W_out, eff.b_out])
    mapped = m.param_grads(dict(zip(["W_in", "W_rec", "W_out", "b_out"], gW)))
    for k in direct:
        assert torch.allclose(direct[k], mapped[k], atol=1e-12), k
    del Wd


def _loss_from_eff(m, eff, x):
    p = m.params()
    s = m.init_state(x.shape[1])
    ys = []
    for t in range(x.shape[0]):
        s, _ = rate_step_aux(p, s, x[t] @ eff.W_in.T, w_rec=eff.W_rec)
        ys.append(s.r @ eff.W_out.T + eff.b_out)
    return torch.stack(ys).pow(2).sum()


# ------------------------------------------------------------------------------------------ gradients
def test_rate_bptt_passes_gradcheck():
    c = generators.dale(5, p=1.0, seed=11)
    m = RateRNN(c, 2, 2, form="pre_activation", activation="tanh", tau_ms=20.0, dt_ms=10.0, hidden_bias=True,
                dtype=F64)
    x = torch.randn(8, 3, 2, dtype=F64)
    names = [n for n, _ in m.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for _, p in m.named_parameters())

    def f(*ps):
        return torch.func.functional_call(m, dict(zip(names, ps)), (x,)).y

    assert torch.autograd.gradcheck(f, params, eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("surr,scaling", [("eprop", "A"), ("sigmoid", "B")])
def test_T6_2_spiking_bptt_matches_finite_differences_with_smooth_spike(surr, scaling, directional_fd):
    c = generators.erdos_renyi(10, 0.6, g=1.0, seed=12)
    surrogate = make_surrogate(surr, smooth=True, **({"slope": 5.0} if surr == "sigmoid" else {}))
    m = spiking(c, n_in=3, n_out=2, scaling=scaling, n_adaptive=5, n_ref=0, surrogate=surrogate,
                beta=0.3 if scaling == "A" else 1.7, v_th=0.6 if scaling == "A" else 0.05)
    with torch.no_grad():
        m.theta_in.mul_(2.0 if scaling == "A" else 0.5)
    x = poisson(30, 2, 3, p=0.4, seed=13)
    target = torch.randn(30, 2, 2, dtype=F64)

    def loss_fn():
        return 0.5 * ((m(x).y - target) ** 2).sum()

    an, fd = directional_fd(m, loss_fn)
    assert abs(an) > 0 and abs(fd - an) / abs(an) < 1e-6, (fd, an)


# ------------------------------------------------------------------------------------------ dynamics
def test_refractoriness_and_adaptation_bind_in_a_driven_network():
    c = generators.erdos_renyi(40, 0.3, g=0.5, seed=14)
    x = poisson(300, 4, 5, p=0.3, seed=15)

    def run(**kw):
        torch.manual_seed(0)
        m = spiking(c, n_in=5, **kw)
        with torch.no_grad():
            m.theta_in.copy_(torch.rand(40, 5, dtype=F64) * 1.0)
        return m, m(x, record=True).record

    _, r0 = run(n_ref=0)
    _, r5 = run(n_ref=5)
    assert r5.z.mean() < 0.8 * r0.z.mean()
    z = r5.z.permute(1, 2, 0).reshape(-1, 300)
    for row in z:
        ts = torch.nonzero(row).flatten()
        assert (torch.diff(ts) > 5).all()
    _, rl = run(n_ref=2)
    m_a, ra = run(n_ref=2, n_adaptive=40, beta=0.2)
    assert ra.z.mean() < 0.8 * rl.z.mean()
    assert (ra.thr[-1] > m_a.v_th).float().mean() > 0.9 and ra.thr[-50:].mean() > ra.thr[:20].mean()
    assert (rl.thr == m_a.v_th).all()


def test_gap_junctions_couple_neurons():
    G = np.array([[0.0, 0.4], [0.4, 0.0]])
    import scipy.sparse as sp

    c = Circuit.from_dense(np.zeros((2, 2)), gap=sp.csr_array(G), input_mask=np.array([True, False]))
    x = torch.ones(20, 1, 1, dtype=F64) * 0.02
    for scaling in ("A", "B"):
        m = spiking(c, n_in=1, n_out=1, scaling=scaling, v_th=10.0, w_in=np.array([[1.0], [0.0]]))
        rec = m(x, record=True).record
        assert rec.v[0, 0, 1] == 0 and rec.v[-1, 0, 1] > 0.05 * rec.v[-1, 0, 0]
        c_in = 1.0 if scaling == "A" else 1 - math.exp(-1 / 20)
        # v_1 at step 2 receives c_in G (v_0^1 - v_1^1)
        assert rec.v[1, 0, 1].item() == pytest.approx(c_in * 0.4 * rec.v[0, 0, 0].item(), rel=1e-12)
        off = spiking(c, n_in=1, n_out=1, scaling=scaling, v_th=10.0, gap_scale=0.0, w_in=np.array([[1.0], [0.0]]))
        assert (off(x, record=True).record.v[..., 1] == 0).all()
    no_gap = Circuit.from_dense(np.zeros((2, 2)), input_mask=np.array([True, False]))
    m = spiking(no_gap, n_in=1, n_out=1, v_th=10.0, w_in=np.array([[1.0], [0.0]]))
    assert m.gap is None and (m(x, record=True).record.v[..., 1] == 0).all()
    r = RateRNN(c, 1, 1, activation="identity", w_in=np.array([[1.0], [0.0]]), dtype=F64)
    assert r(x, record=True).record.h[-1, 0, 1] > 0


def test_per_neuron_parameters_from_circuit():
    n = 4
    c = Circuit.from_dense(np.zeros((n, n)), neuron_params={
        "tau_mem_ms": np.array([5.0, 10.0, 20.0, 40.0]), "v_th": np.array([0.5, 0.6, 0.7, 100.0]),
        "n_ref": np.array([0.0, 1.0, 2.0, 3.0]), "beta": np.array([0.0, 0.0, 0.1, 0.2]),
        "tau_adapt_ms": np.array([100.0, 200.0, 300.0, 400.0])})
    m = spiking(c, n_in=1, n_out=1, tau_mem_ms=99.0, v_th=9.0, n_ref=9, w_in=np.ones((n, 1)))
    for k in ("tau_mem_ms", "v_th", "n_ref", "beta", "tau_adapt_ms"):
        assert torch.equal(getattr(m, k), torch.as_tensor(c.neuron_params[k]))
    # a single input pulse decays with each neuron's own α (neuron 3 never spikes: v_th = 100)
    x = torch.zeros(10, 1, 1, dtype=F64)
    x[0] = 0.3
    rec = m(x, record=True).record
    alpha = torch.exp(-1 / torch.tensor([5.0, 10.0, 20.0, 40.0], dtype=F64))
    t = torch.arange(10, dtype=F64)[:, None]
    assert torch.allclose(rec.v[:, 0, :], 0.3 * alpha**t, rtol=1e-12)
    # strong drive: inter-spike intervals are n_ref + 1 per neuron
    rec = m(torch.full((40, 1, 1), 50.0, dtype=F64), record=True).record
    for j, nr in enumerate([0, 1, 2]):
        ts = torch.nonzero(rec.z[:, 0, j]).flatten()
        assert set(torch.diff(ts).tolist()) == {nr + 1}
    rr = RateRNN(Circuit.from_dense(np.zeros((2, 2)), neuron_params={"tau_ms": np.array([10.0, 50.0])}), 1, 1)
    assert torch.equal(rr.tau_ms, torch.tensor([10.0, 50.0]))


def test_defaults_and_beta_mapping():
    c = generators.gaussian(10, seed=16)
    a = SpikingRNN(c, 2, 1, n_adaptive=4)
    assert a.v_th[0] == pytest.approx(0.6) and a.dtype == torch.float32 and a.device.type == "cpu"
    alpha, rho = math.exp(-1 / 20), math.exp(-1 / 2000)
    assert (a.beta[:6] == 0).all()
    assert a.beta[6:].double().allclose(torch.full((4,), 1.8 * (1 - rho) / (1 - alpha), dtype=F64), rtol=1e-6)
    b = SpikingRNN(c, 2, 1, scaling="B", n_adaptive=4)
    assert b.v_th[0] == pytest.approx(0.01) and b.beta[-1] == pytest.approx(1.8)
    assert (SpikingRNN(c, 2, 1, beta=np.linspace(0, 1, 10)).beta.numpy() == np.linspace(0, 1, 10).astype(
        np.float32)).all()
    assert SpikingRNN(c, 2, 1, device="auto").device.type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_float64_everywhere():
    c = generators.dale(8, seed=17)
    for m in (SpikingRNN(c, 2, 1, n_adaptive=3).double(), RateRNN(c, 2, 1).double()):
        out = m(torch.rand(5, 2, 2), record=True)
        assert out.y.dtype == F64 and all(f.dtype in (F64, torch.bool) for f in out.record)
        assert all(s.dtype == F64 for s in out.state)


# ------------------------------------------------------------------------------------------ save / load
def _rich_circuit():
    import scipy.sparse as sp

    rng = np.random.default_rng(18)
    n = 7
    W = np.abs(rng.standard_normal((n, n))) * (rng.random((n, n)) < 0.5)
    W[:, 5:] *= -1
    np.fill_diagonal(W, 0)
    gap = np.zeros((n, n))
    gap[0, 1] = gap[1, 0] = 0.3
    return Circuit.from_dense(W, node_ids=[f"c{k}" for k in range(n)], cell_types=["E"] * 5 + ["I"] * 2,
                              signs=[1] * 5 + [-1] * 2, gap=sp.csr_array(gap),
                              neuron_params={"tau_mem_ms": np.linspace(10, 30, n)},
                              input_mask=np.array([1, 1, 1, 0, 1, 1, 1], bool), output_sign=np.array([1] * n),
                              metadata={"generator": "test", "seed": 18, "arr": np.arange(3)})


@pytest.mark.parametrize("cls", ["spiking", "rate"])
def test_save_load_round_trip(tmp_path, cls):
    c = _rich_circuit()
    if cls == "spiking":
        m = SpikingRNN(c, 3, 2, scaling="B", n_adaptive=2, surrogate=make_surrogate("fast_sigmoid", slope=7.0),
                       readout="filtered_current")
    else:
        m = RateRNN(c, 3, 2, form="relu_lif", hidden_bias=True)
    m = m.double()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = tmp_path / "model.pt"
    m.save(path)
    raw = torch.load(path, weights_only=True)
    assert raw["class"] == type(m).__name__
    m2 = type(m).load(path)
    m3 = load(path)
    assert type(m3) is type(m) and m2.dtype == F64
    x = poisson(40, 2, 3, p=0.3)
    y1, y2, y3 = m(x).y, m2(x).y, m3(x).y
    assert torch.equal(y1, y2) and torch.equal(y1, y3)
    for k, v in m.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k
    assert {k: v for k, v in m2._config.items() if k not in ("dtype", "device")} == \
        {k: v for k, v in m._config.items() if k not in ("dtype", "device")}
    c2 = m2.circuit
    assert c2.node_ids == c.node_ids and list(c2.cell_types) == list(c.cell_types)
    assert np.array_equal(c2.signs, c.signs) and np.array_equal(c2.weights(dense=True), c.weights(dense=True))
    assert np.array_equal(c2.gap_junctions(dense=True), c.gap_junctions(dense=True))
    assert np.array_equal(c2.neuron_params["tau_mem_ms"], c.neuron_params["tau_mem_ms"])
    assert np.array_equal(c2.input_mask, c.input_mask) and np.array_equal(c2.output_sign, c.output_sign)
    assert c2.output_mask is None and c2.metadata["seed"] == 18
    assert np.array_equal(c2.metadata["arr"], np.arange(3))
    other = RateRNN if cls == "spiking" else SpikingRNN
    with pytest.raises(TypeError):
        other.load(path)


def test_unstable_gap_coupling_is_refused():
    """Gap conductances whose explicit update diverges raise a clear error instead of producing NaN."""
    import networkx as nx

    from spikelearn import Circuit

    G = nx.DiGraph()
    for k in range(3):
        G.add_node(k)
    G.add_edge(0, 1, weight=0.1)
    G.add_edge(1, 2, gap_weight=5.0)
    with pytest.raises(ValueError, match="spectral radius"):
        SpikingRNN(Circuit.from_graph(G), 1, 1)
    G.edges[1, 2]["gap_weight"] = 0.2
    m = SpikingRNN(Circuit.from_graph(G), 1, 1)  # stable: accepted
    assert m.gap is not None


def test_model_and_neuron_parameters_are_validated():
    """Time constants, thresholds, dt and sizes are checked by name (negative τ used to give a leak > 1)."""
    import pytest
    import torch

    from spikelearn.circuit import gaussian
    from spikelearn.models import RateRNN, SpikingRNN
    from spikelearn.neurons import LIFParams, RateParams
    from spikelearn.neurons.surrogate import Surrogate

    c = gaussian(8, 1.0, seed=0)
    with pytest.raises(ValueError, match="readout_norm must be True or False"):
        SpikingRNN(c, 2, 2, readout_norm="yes")
    for kw, name in [({"tau_mem_ms": -20.0}, "tau_mem_ms"), ({"tau_adapt_ms": -5.0}, "tau_adapt_ms"),
                     ({"v_th": 0.0}, "v_th"), ({"beta": -1.0}, "beta")]:
        with pytest.raises(ValueError, match=name):
            LIFParams(**kw)
    with pytest.raises(ValueError, match="tau_ms"):
        RateParams(tau_ms=-10.0)
    with pytest.raises(ValueError, match="must be <= 1"):
        RateRNN(c, 2, 1, form="pre_activation", tau_ms=10.0, dt_ms=30.0)
    RateRNN(c, 2, 1, form="relu_lif", tau_ms=10.0, dt_ms=30.0)          # exp(−dt/τ): any dt is fine
    RateRNN(c, 2, 1, form="richlazy", tau_ms=10.0, dt_ms=10.0)          # γ = 1 allowed
    with pytest.raises(ValueError, match="thr = 0.5 only applies"):
        RateRNN(c, 2, 1, form="pre_activation", thr=0.5)
    with pytest.raises(ValueError, match="dt_ms"):
        SpikingRNN(c, 2, 1, dt_ms=0.0)
    with pytest.raises(ValueError, match="tau_out_ms"):
        SpikingRNN(c, 2, 1, tau_out_ms=-20.0)
    with pytest.raises(ValueError, match="n_in must be a positive integer"):
        SpikingRNN(c, 2.5, 1)
    m = SpikingRNN(c, 2, 1)
    with pytest.raises(TypeError, match="torch.Tensor"):
        m(torch.zeros(5, 1, 2).numpy())
    with pytest.raises(ValueError, match="T = 0"):
        m(torch.zeros(0, 1, 2))
    import snntorch.surrogate as sts
    with pytest.raises(TypeError, match="inside fn"):
        Surrogate("custom", fn=sts.atan(), alpha=10.0)


def test_loading_a_model_leaves_the_global_rng_alone(tmp_path):
    import torch

    from spikelearn.circuit import gaussian
    from spikelearn.models import RateRNN, load

    RateRNN(gaussian(8, 1.0, seed=0), 2, 1).save(tmp_path / "m.pt")
    torch.manual_seed(5)
    a = torch.rand(3)
    torch.manual_seed(5)
    load(tmp_path / "m.pt")
    assert torch.equal(torch.rand(3), a)


@pytest.mark.parametrize("model_cls", [SpikingRNN, RateRNN])
def test_input_channel_signs_hold_through_training_and_clashes_are_named(model_cls):
    """input_channel_sign constrains W_in's columns (Dale's law on the inputs): kept after 50 Adam steps pushing
    every input weight towards the opposite sign; a clash with circuit.input_sign names neuron and channel."""
    c = generators.erdos_renyi(10, 0.5, g=1.0, seed=1)
    cs = [1, 1, -1, 0]
    m = model_cls(c, 4, 2, dtype=F64, input_channel_sign=cs)
    W0 = m.effective_weights().W_in.detach()
    assert (W0[:, :2] >= 0).all() and (W0[:, 2] <= 0).all() and (W0[:, 3] < 0).any() and (W0[:, 3] > 0).any()
    opt = torch.optim.Adam(m.parameters(), lr=0.05)
    for _ in range(50):
        opt.zero_grad()
        (m.effective_weights().W_in * torch.tensor([1.0, 1.0, -1.0, 0.0], dtype=F64)).sum().backward()
        opt.step()
    W = m.effective_weights().W_in.detach()
    assert (W[:, :2] >= 0).all() and (W[:, 2] <= 0).all()
    assert float(W[:, :3].abs().sum()) < 0.5 * float(W0[:, :3].abs().sum())  # pushed towards 0, not across
    signed = Circuit.from_dense(c.weights(dense=True), mask=c.mask(dense=True), input_sign=[1] * 5 + [0] * 5,
                                node_ids=[f"n{k}" for k in range(10)])
    with pytest.raises(ValueError, match="contradicts circuit.input_sign.*'n0'.*channel 2"):
        model_cls(signed, 4, 2, input_channel_sign=cs)
    with pytest.raises(ValueError, match="input_channel_sign must be 4 values"):
        model_cls(c, 4, 2, input_channel_sign=[1, 2, 0, 0])


@pytest.mark.parametrize("form", ["pre_activation", "murray", "relu_lif", "richlazy"])
def test_rate_injected_input_equals_a_bias_of_the_same_size(form):
    """RateRNN(x, i_ext=I) adds I to h^t; a constant I is a recurrent bias b = I / c_in (every form)."""
    c = generators.erdos_renyi(8, 0.5, g=1.2, seed=3)
    m = RateRNN(c, 3, 2, form=form, dtype=F64, hidden_bias=True)
    x = torch.randn(40, 2, 3, dtype=F64)
    I = 0.1 * torch.randn(8, dtype=F64)
    a = m(x, record=True, i_ext=I).record
    plain = m(x, record=True).record
    assert not torch.allclose(a.h, plain.h, atol=1e-3)  # the injected input matters
    with torch.no_grad():
        m.b_rec.copy_(I / m.constants().c_in)
    b = m(x, record=True).record
    assert torch.allclose(a.h, b.h, atol=1e-12) and torch.allclose(a.r, b.r, atol=1e-12)


@pytest.mark.parametrize("form", ["pre_activation", "murray", "relu_lif", "richlazy"])
def test_relaxed_initial_state(form):
    """init_state_std / init_relax_steps: a fixed draw h ~ std N(0,1) (seeded, the same at every call) run for the
    given autonomous steps with the current weights; the default stays at rest; forward from None starts there."""
    c = generators.gaussian(10, 1.5, seed=3)
    rest = RateRNN(c, 3, 2, form=form, dtype=F64)
    z = rest.init_state(4)
    assert not z.h.any()
    m = RateRNN(c, 3, 2, form=form, dtype=F64, init_state_std=1.0, init_relax_steps=25, init_seed=7)
    s1, s2 = m.init_state(4), m.init_state(4)
    assert torch.equal(s1.h, s2.h) and s1.h.abs().sum() > 0 and not s1.h.requires_grad
    g = torch.Generator().manual_seed(7)
    h0 = torch.randn(4, 10, generator=g, dtype=F64)
    from spikelearn.neurons.rate import activation

    f = activation(m.activation)
    start = RateState(h=h0, r=f(h0 - m.thr) if form == "relu_lif" else f(h0))
    manual = m(torch.zeros(25, 4, 3, dtype=F64), state=start).state
    assert torch.allclose(s1.h, manual.h, atol=1e-14) and torch.allclose(s1.r, manual.r, atol=1e-14)
    x = torch.randn(12, 4, 3, dtype=F64)
    assert torch.equal(m(x).y, m(x, state=s1).y)
    with torch.no_grad():
        m.theta_rec.mul_(0.5)  # relaxed with the current weights
    assert not torch.allclose(m.init_state(4).h, s1.h)
    for bad in ({"init_state_std": -1.0}, {"init_relax_steps": 2.5}, {"init_relax_steps": -1}):
        with pytest.raises(ValueError, match=list(bad)[0]):
            RateRNN(c, 3, 2, form=form, **bad)


def test_local_rules_start_from_the_relaxed_state():
    """RFLO (batched = online = its autograd reference) and BPTT all start from init_state."""
    from spikelearn.rules import BPTT, RFLO
    from spikelearn.rules import _reference as ref

    c = generators.gaussian(8, 1.5, seed=4)
    m = RateRNN(c, 3, 2, form="murray", tau_ms=30.0, dt_ms=10.0, dtype=F64, init_state_std=1.0,
                init_relax_steps=10)
    x = torch.randn(20, 3, 3, dtype=F64)
    y = torch.randn(20, 3, 2, dtype=F64)
    mask = torch.ones(20, 3, dtype=F64)

    def mse(a, b, k):
        return 0.5 * (((a - b) ** 2).sum(-1) * k).sum() / b.shape[1]

    _, gb = RFLO(feedback="symmetric").gradients(m, x, y, mask, mse)
    _, go = RFLO(feedback="symmetric", mode="online", chunk_steps=6).gradients(m, x, y, mask, mse)
    _, want = ref.rflo_autograd(m, x, y, mask, mse)
    for k in ("theta_rec", "theta_in"):
        assert float((gb[k] - want[k]).norm() / want[k].norm()) < 1e-10, k
        assert float((go[k] - want[k]).norm() / want[k].norm()) < 1e-10, k
    rest = RateRNN(c, 3, 2, form="murray", tau_ms=30.0, dt_ms=10.0, dtype=F64)
    with torch.no_grad():
        rest.load_state_dict(m.state_dict())
    _, g_rest = RFLO(feedback="symmetric").gradients(rest, x, y, mask, mse)
    assert float((g_rest["theta_rec"] - gb["theta_rec"]).norm()) > 1e-6 * float(gb["theta_rec"].norm())
    _, gt = BPTT().gradients(m, x, y, mask, mse)
    assert torch.isfinite(gt["theta_rec"]).all()


def test_spiking_relaxed_initial_state():
    """SpikingRNN init_state_std / init_relax_steps: v ~ std · v_th · N(0,1) (fixed draw) run without input with the
    current weights; spikes, adaptation, refractoriness, synaptic currents and readout filters carry into the trial."""
    c = generators.gaussian(12, 2.0, seed=1)
    m = spiking(c, n_adaptive=6, n_ref=2, tau_syn_ms=3.0, init_state_std=2.0, init_relax_steps=4, init_seed=2)
    s1, s2 = m.init_state(3), m.init_state(3)
    for a, b in zip(s1, s2):
        assert torch.equal(a, b)
    assert s1.z.any() and s1.z_filt.any() and s1.i_syn.any() and not s1.v.requires_grad
    g = torch.Generator().manual_seed(2)
    v0 = 2.0 * torch.randn(3, 12, generator=g, dtype=F64) * m.v_th
    z = torch.zeros(3, 12, dtype=F64)
    from spikelearn.models import SpikingState

    start = SpikingState(v=v0, a=z, z=z, ref=z, z_filt=z, y_filt=torch.zeros(3, 2, dtype=F64), i_syn=z)
    manual = m(torch.zeros(4, 3, 4, dtype=F64), state=start).state
    for a, b in zip(s1, manual):
        assert torch.allclose(a, b, atol=1e-14)
    x = poisson(20, 3, 4)
    assert torch.equal(m(x).y, m(x, state=s1).y)
