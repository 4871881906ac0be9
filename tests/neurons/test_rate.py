"""Leaky rate steps (ALGORITHMS.md §1.2, tests T1.6–T1.7) and activations."""

import math

import pytest
import torch

from spikelearn.neurons import (
    ACTIVATIONS,
    RateParams,
    RateState,
    activation,
    activation_derivative,
    init_rate_state,
    rate_step,
    rate_step_aux,
)

F64 = torch.float64


def _net(N=6, n_in=3, seed=0, g=1.2):
    gen = torch.Generator().manual_seed(seed)
    W = torch.randn(N, N, generator=gen, dtype=F64) * g / math.sqrt(N)
    W.fill_diagonal_(0)
    W_in = torch.randn(N, n_in, generator=gen, dtype=F64)
    x = torch.randn(40, 2, n_in, generator=gen, dtype=F64)
    return W, W_in, x


def test_T1_6_linear_pre_activation_matches_closed_form():
    W, W_in, x = _net()
    N, T = W.shape[0], x.shape[0]
    gamma = 0.2
    p = RateParams(tau_ms=10.0, dt_ms=2.0, form="pre_activation", activation="identity")
    h0 = torch.randn(2, N, dtype=F64)
    s = RateState(h=h0, r=h0)
    hs = []
    for t in range(T):
        s = rate_step(p, s, x[t] @ W_in.T, w_rec=W)
        hs.append(s.h)
    M = (1 - gamma) * torch.eye(N, dtype=F64) + gamma * W
    # h^t = M^t h^0 + Σ_{s<t} M^{t-1-s} γ W_in x^s   (x^s consumed by step s+1)
    for t in (1, 7, T):
        closed = h0 @ torch.linalg.matrix_power(M, t).T
        for s_ in range(t):
            closed = closed + (gamma * x[s_] @ W_in.T) @ torch.linalg.matrix_power(M, t - 1 - s_).T
        assert torch.allclose(hs[t - 1], closed, rtol=1e-10, atol=1e-12)


def _jacobian_closed_form(form, W, h, c):
    """∂(state^t)/∂(state^{t-1}) for each form's own state variable (see rate.py)."""
    N = W.shape[0]
    I = torch.eye(N, dtype=F64)
    f, fp = c["f"], c["fp"]
    if form == "pre_activation":  # J = (1−γ) I + γ W diag(f'(h^{t-1}))
        return (1 - c["g"]) * I + c["g"] * W @ torch.diag(fp(h))
    if form == "relu_lif":        # J = α I + (1−α) W diag(f'(v^{t-1}))
        return c["a"] * I + (1 - c["a"]) * W @ torch.diag(fp(h))
    if form == "richlazy":        # u^t = (1−γ) f(u^{t-1}) + γ (W f(u^{t-1}) + ...)
        return ((1 - c["g"]) * I + c["g"] * W) @ torch.diag(fp(h))
    # murray, in r: r^t = (1−γ) r^{t-1} + γ φ(W r^{t-1} + W_in x^t)
    return (1 - c["g"]) * I + c["g"] * torch.diag(fp(c["u"])) @ W


@pytest.mark.parametrize("form,act", [("pre_activation", "tanh"), ("pre_activation", "retanh"),
                                      ("relu_lif", "relu"), ("richlazy", "relu"), ("murray", "tanh")])
def test_T1_7_autograd_jacobian_equals_closed_form(form, act):
    W, W_in, x = _net(N=7)
    p = RateParams(tau_ms=20.0, dt_ms=5.0, form=form, activation=act)
    f = activation(act)
    i_in = x[0, :1] @ W_in.T
    h_prev = torch.randn(7, dtype=F64) + 0.1

    def step(state_var):
        if form == "murray":
            s = RateState(h=torch.zeros(1, 7, dtype=F64), r=state_var[None])
            return rate_step(p, s, i_in, w_rec=W).r[0]
        s = RateState(h=state_var[None], r=f(state_var)[None])
        return rate_step(p, s, i_in, w_rec=W).h[0]

    J = torch.autograd.functional.jacobian(step, h_prev)
    u = (i_in[0] + W @ h_prev) if form == "murray" else None
    c = {"f": f, "fp": activation_derivative(act), "g": 5.0 / 20.0, "a": math.exp(-5.0 / 20.0), "u": u}
    assert torch.allclose(J, _jacobian_closed_form(form, W, h_prev, c), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_derivative_matches_autograd(name):
    h = torch.cat([torch.linspace(-3, 3, 61, dtype=F64), torch.zeros(1, dtype=F64)]).requires_grad_(True)
    (g,) = torch.autograd.grad(activation(name)(h).sum(), h)
    assert torch.allclose(activation_derivative(name)(h.detach()), g, rtol=1e-14, atol=0)
    assert activation("retanh")(torch.tensor([-1.0, 1.0])).tolist() == [0.0, pytest.approx(math.tanh(1.0))]


def test_forms_follow_their_source_equations():
    W, W_in, x = _net(N=5)
    T = x.shape[0]
    # R2 Murray: u = W r + W_in x; r = (1 − 1/τ) r + (1/τ) tanh(u), τ = 10 steps
    p = RateParams(tau_ms=10.0, dt_ms=1.0, form="murray", activation="tanh")
    s, r = init_rate_state(2, 5, dtype=F64, params=p), torch.zeros(2, 5, dtype=F64)
    for t in range(T):
        s, aux = rate_step_aux(p, s, x[t] @ W_in.T, w_rec=W)
        u = r @ W.T + x[t] @ W_in.T
        r = 0.9 * r + 0.1 * torch.tanh(u)
        assert torch.allclose(s.r, r, atol=1e-14) and torch.allclose(s.h, u, atol=1e-14)
        assert torch.allclose(aux.fprime, 1 - torch.tanh(u) ** 2, atol=1e-14)
    # BiolHessRNN: τ = 0.01 ms ⇒ α ≈ 0: vanilla ReLU RNN z = ReLU(W_in x + W z)
    p = RateParams(tau_ms=0.01, dt_ms=1.0, form="relu_lif", activation="relu")
    s, z = init_rate_state(2, 5, dtype=F64, params=p), torch.zeros(2, 5, dtype=F64)
    for t in range(T):
        s = rate_step(p, s, x[t] @ W_in.T, w_rec=W)
        z = torch.relu(x[t] @ W_in.T + z @ W.T)
        assert torch.allclose(s.r, z, atol=1e-12)
    # ModProp relu_lif with a threshold: z = ReLU(v − thr)
    p = RateParams(tau_ms=100.0, dt_ms=1.0, form="relu_lif", activation="relu", thr=0.1)
    s = init_rate_state(2, 5, dtype=F64, params=p)
    v, z = torch.zeros(2, 5, dtype=F64), torch.zeros(2, 5, dtype=F64)
    al = math.exp(-0.01)
    for t in range(T):
        s = rate_step(p, s, x[t] @ W_in.T, w_rec=W)
        v = al * v + (1 - al) * (x[t] @ W_in.T + z @ W.T)
        z = torch.relu(v - 0.1)
        assert torch.allclose(s.h, v, atol=1e-14) and torch.allclose(s.r, z, atol=1e-14)
    # RichLazy with γ = 1: h = ReLU(W_in x + W h)
    p = RateParams(tau_ms=100.0, dt_ms=100.0, form="richlazy", activation="relu")
    s, h = init_rate_state(2, 5, dtype=F64, params=p), torch.zeros(2, 5, dtype=F64)
    for t in range(T):
        s = rate_step(p, s, x[t] @ W_in.T, w_rec=W)
        h = torch.relu(x[t] @ W_in.T + h @ W.T)
        assert torch.allclose(s.r, h, atol=1e-14)


def test_gap_current_in_rate_step():
    G = torch.tensor([[0.0, 0.3], [0.3, 0.0]], dtype=F64)
    p = RateParams(tau_ms=10.0, dt_ms=1.0, activation="identity")
    h = torch.tensor([[1.0, 0.0]], dtype=F64)
    s = RateState(h=h, r=h)
    new = rate_step(p, s, torch.zeros_like(h), g_gap=G)
    assert torch.allclose(new.h, 0.9 * h + 0.1 * torch.tensor([[-0.3, 0.3]], dtype=F64), atol=1e-15)


def test_rate_params_validation():
    with pytest.raises(ValueError):
        RateParams(form="gru")
    with pytest.raises(ValueError):
        RateParams(activation="softplus")
