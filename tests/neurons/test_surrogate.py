"""Surrogate spike functions: forward convention, exact agreement of backward and derivative(), smooth variants."""

import pytest
import snntorch.surrogate as sts
import torch

from spikelearn.neurons import SURROGATES, Surrogate, heaviside, make_surrogate

SNN_NAMES = [n for n in SURROGATES if n != "eprop"]
F64 = torch.float64


def _grid(dtype):
    # includes exact zero and the e-prop kinks
    return torch.cat([torch.linspace(-3, 3, 601, dtype=dtype), torch.tensor([0.0, 1.0, -1.0], dtype=dtype)])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_heaviside_forward_and_zero_convention(dtype):
    u = torch.tensor([-1.0, -1e-300 if dtype == F64 else -1e-30, 0.0, 1e-12, 2.0], dtype=dtype, requires_grad=True)
    for s in (Surrogate("eprop"), Surrogate("fast_sigmoid")):
        z = s.spike(u)
        assert z.dtype == dtype
        assert z.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]  # z = 1 iff u > 0; H(0) = 0
    assert heaviside(u.detach()).tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_eprop_derivative_is_the_triangle(dtype):
    u = _grid(dtype)
    s = Surrogate("eprop")
    expected = 0.3 * torch.clamp(1 - u.abs(), min=0)
    assert torch.equal(s.derivative(u), expected)
    assert Surrogate("eprop", gamma_pd=0.5).derivative(torch.tensor([0.0, 0.5, 2.0], dtype=dtype)).tolist() == [
        0.5, 0.25, 0.0]


@pytest.mark.parametrize("name", list(SURROGATES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_backward_equals_derivative_exactly(name, dtype):
    s = make_surrogate(name)
    u = _grid(dtype).requires_grad_(True)
    z = s.spike(u)
    assert z.dtype == dtype
    (g,) = torch.autograd.grad(z.sum(), u)
    assert g.dtype == dtype
    assert torch.equal(g, s.derivative(u))


@pytest.mark.parametrize("name", SNN_NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_snntorch_backward_equals_derivative(name, dtype):
    """The analytic derivative reproduces the snntorch autograd backward bit for bit."""
    kwargs = {"fast_sigmoid": {"slope": 10.0}, "atan": {"alpha": 3.0}, "sigmoid": {"slope": 8.0},
              "triangular": {"threshold": 0.5}, "spike_rate_escape": {"beta": 2.0, "slope": 4.0}}.get(name, {})
    s = make_surrogate(name, **kwargs)
    fn = s.snntorch_fn()
    u = _grid(dtype).requires_grad_(True)
    out = fn(u)
    (g,) = torch.autograd.grad(out, u, torch.ones_like(out))
    assert g.dtype == dtype
    assert torch.equal(s.derivative(u), g), (name, (s.derivative(u) - g).abs().max())
    # forward agrees with snntorch's Heaviside as well
    assert torch.equal(s.spike(u), out.to(dtype))


def test_custom_snntorch_callable_uses_autograd_derivative():
    s = make_surrogate(sts.atan(alpha=3.0))
    u = _grid(F64)
    assert s.name == "custom"
    assert torch.equal(s.derivative(u), make_surrogate("atan", alpha=3.0).derivative(u))
    assert s.derivative(u).dtype == F64
    ur = u.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(s.spike(ur).sum(), ur)
    assert torch.equal(g, s.derivative(u))
    with pytest.raises(ValueError):
        s.config()


@pytest.mark.parametrize("name", list(SURROGATES))
def test_smooth_primitive_has_the_surrogate_as_true_derivative(name):
    s = make_surrogate(name, smooth=True)
    u = torch.linspace(-2.5, 2.5, 201, dtype=F64) + 0.0123  # avoid the kinks at 0, ±1
    h = 1e-6
    fd = (s.primitive(u + h) - s.primitive(u - h)) / (2 * h)
    assert torch.allclose(fd, s.derivative(u), rtol=1e-7, atol=1e-7), name
    ur = u.clone().requires_grad_(True)
    z = s.spike(ur)
    assert torch.equal(z, s.primitive(u))
    (g,) = torch.autograd.grad(z.sum(), ur)
    assert torch.equal(g, s.derivative(u))


def test_eprop_smooth_is_a_ramp_from_0_to_gamma():
    s = make_surrogate("eprop", smooth=True)
    u = torch.tensor([-5.0, -1.0, 0.0, 1.0, 5.0], dtype=F64)
    assert torch.allclose(s.primitive(u), torch.tensor([0.0, 0.0, 0.15, 0.3, 0.3], dtype=F64))


def test_make_surrogate_forms_and_errors():
    a = make_surrogate("fast_sigmoid", slope=10)
    assert a.params == {"slope": 10.0}
    assert make_surrogate(a) is a
    assert make_surrogate(a.config()) == a
    assert make_surrogate("superspike") == make_surrogate("fast_sigmoid")
    assert make_surrogate(a, slope=5).params == {"slope": 5.0}
    with pytest.raises(ValueError, match="unknown surrogate"):
        make_surrogate("nope")
    with pytest.raises(TypeError, match="takes"):
        make_surrogate("atan", slope=3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sigmoid_derivative_is_finite_far_below_threshold(dtype):
    """snntorch's sigmoid backward k e/(e+1)² (e = exp(−k u)) gives NaN once e overflows (u = −5 at k = 25 in
    float32); ours gives the limit k e^{k u} there (the same function), and is never NaN."""
    s = make_surrogate("sigmoid", slope=25.0)
    u = torch.tensor([-1e4, -50.0, -5.0, -3.0, 0.0, 3.0, 50.0], dtype=dtype)
    d = s.derivative(u)
    assert torch.isfinite(d).all() and (d >= 0).all()
    e = torch.exp(-25.0 * u.double().abs())  # the symmetric, overflow-free form in float64
    want = (25.0 * e / (1 + e) ** 2).to(dtype)
    assert torch.allclose(d, want, rtol=1e-5, atol=1e-30)
    # and the BPTT gradient through the spike is finite as well
    ur = u.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(s.spike(ur).sum(), ur)
    assert torch.isfinite(g).all()
