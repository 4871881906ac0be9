"""BPTT and truncated BPTT: identities of ALGORITHMS.md §6 and the rule contract over every registered rule."""

import pytest
import torch

from spikelearn.circuit import dale, gaussian
from spikelearn.models import RateRNN, SpikingRNN
from spikelearn.rules import BPTT, RULES, TruncatedBPTT, apply_gradients, make_rule, output_error


def _mse(y_hat, y, mask):
    return 0.5 * (((y_hat - y) ** 2).sum(-1) * mask).sum() / y.shape[1]


def _rate_model():
    return RateRNN(gaussian(12, 1.3, seed=1), 3, 2, form="pre_activation", activation="tanh",
                   tau_ms=5.0, dt_ms=1.0).double()


def _spiking_model():
    return SpikingRNN(gaussian(10, 1.0, seed=2), 3, 2, n_adaptive=5, tau_adapt_ms=50.0, v_th=0.3,
                      scaling="A", n_ref=2).double()


def _data(T=20, B=4, n_in=3, n_out=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, n_in, generator=g, dtype=torch.float64)
    y = torch.randn(T, B, n_out, generator=g, dtype=torch.float64)
    mask = (torch.rand(T, B, generator=g, dtype=torch.float64) > 0.3).double()
    return x, y, mask


def _autograd_grads(model, x, y, mask):
    loss = _mse(model(x).y, y, mask)
    params = dict(model.named_parameters())
    g = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return loss, {n: torch.zeros_like(p) if gi is None else gi for (n, p), gi in zip(params.items(), g)}


@pytest.mark.parametrize("make_model", [_rate_model, _spiking_model])
def test_bptt_equals_autograd(make_model):
    model = make_model()
    x, y, mask = _data(n_in=3)
    loss, grads = BPTT().gradients(model, x, y, mask, _mse)
    ref_loss, ref = _autograd_grads(model, x, y, mask)
    assert torch.equal(loss, ref_loss.detach())
    assert grads.keys() == ref.keys()
    for k in ref:
        torch.testing.assert_close(grads[k], ref[k], rtol=0, atol=0)


@pytest.mark.parametrize("make_model", [_rate_model, _spiking_model])
@pytest.mark.parametrize("mode", ["chunked", "sliding"])
def test_tbptt_with_k_geq_T_equals_bptt(make_model, mode):
    """T6.1."""
    model = make_model()
    x, y, mask = _data(T=15)
    _, ref = BPTT().gradients(model, x, y, mask, _mse)
    for k in (15, 40):
        _, g = TruncatedBPTT(k, mode).gradients(model, x, y, mask, _mse)
        for n in ref:
            torch.testing.assert_close(g[n], ref[n], rtol=1e-10, atol=1e-12)


def test_tbptt_chunked_equals_explicit_detach():
    """Chunked TBPTT equals autograd on a forward pass whose state is detached every k steps."""
    model = _rate_model()
    x, y, mask = _data(T=17)
    k = 5
    state, ys = None, []
    for a in range(0, 17, k):
        out = model(x[a:a + k], state=state)
        ys.append(out.y)
        state = type(out.state)(*(s.detach() for s in out.state))
    loss = _mse(torch.cat(ys), y, mask)
    params = dict(model.named_parameters())
    ref = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
    _, g = TruncatedBPTT(k, "chunked").gradients(model, x, y, mask, _mse)
    for n in ref:
        torch.testing.assert_close(g[n], ref[n], rtol=1e-10, atol=1e-12)


def test_tbptt_sliding_k1_differs_and_truncates():
    model = _rate_model()
    x, y, mask = _data(T=12)
    _, full = BPTT().gradients(model, x, y, mask, _mse)
    _, g1 = TruncatedBPTT(1, "sliding").gradients(model, x, y, mask, _mse)
    _, g3 = TruncatedBPTT(3, "sliding").gradients(model, x, y, mask, _mse)
    name = [n for n in full if "rec" in n][0]
    e1 = (g1[name] - full[name]).norm()
    e3 = (g3[name] - full[name]).norm()
    assert e1 > 0 and e3 < e1  # longer windows approach BPTT
    # output weights see no recurrence: their gradient is exact for any window
    out_name = [n for n in full if "out" in n and "b" not in n.split(".")[-1][:1]][0]
    torch.testing.assert_close(g1[out_name], full[out_name], rtol=1e-10, atol=1e-12)


def test_bad_tbptt_options():
    with pytest.raises(ValueError, match="k"):
        TruncatedBPTT(0)
    with pytest.raises(ValueError, match="mode"):
        TruncatedBPTT(3, "window")
    with pytest.raises(ValueError, match="registered rules"):
        make_rule("nope")


def test_output_error_is_autograd_on_output():
    y_hat = torch.randn(5, 3, 2, dtype=torch.float64, requires_grad=True)
    y, mask = torch.randn(5, 3, 2, dtype=torch.float64), torch.ones(5, 3, dtype=torch.float64)
    loss, g = output_error(y_hat, y, mask, _mse)
    assert not loss.requires_grad
    torch.testing.assert_close(g, (y_hat - y).detach() / 3)


# ---------------------------------------------------------------- contract over every registered rule

def _rule_cases():
    out = []
    for name in RULES:
        for kind in _make(name).model_types:
            out.append(pytest.param(name, kind, id=f"{name}-{kind}"))
    return out


def _contract_model(kind):
    circuit = dale(16, frac_exc=0.75, p=0.5, seed=3)
    if kind == "spiking":
        return SpikingRNN(circuit, 3, 2, sign_constraint="dale", v_th=0.3).double()
    return RateRNN(circuit, 3, 2, sign_constraint="dale", form="pre_activation", activation="tanh",
                   tau_ms=5.0, dt_ms=1.0).double()


def _make(name):
    import dataclasses

    cls = RULES[name]
    if name == "tbptt":
        return cls(5)
    fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    return cls(seed=1) if "seed" in fields else cls()


@pytest.mark.parametrize("name, kind", _rule_cases())
def test_rule_contract(name, kind):
    """Every registered rule on every model type it declares (sklearn-style contract suite)."""
    rule = _make(name)
    model = _contract_model(kind)
    x, y, mask = _data(T=25)
    loss, grads = rule.gradients(model, x, y, mask, _mse)
    params = dict(model.named_parameters())
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert grads and set(grads) <= set(params)
    for n, g in grads.items():
        assert g.shape == params[n].shape and g.dtype == params[n].dtype
        assert torch.isfinite(g).all()
    assert any(float(g.abs().max()) > 0 for g in grads.values())
    # same seed, same inputs -> same gradients (a fresh rule: stochastic or stateful rules start over)
    fresh = _make(name)
    _, again = fresh.gradients(model, x, y, mask, _mse)
    for n in grads:
        torch.testing.assert_close(grads[n], again[n], rtol=0, atol=0)
    # absent edges stay absent and Dale's signs survive optimizer steps
    W0 = model.effective_weights().W_rec.detach().clone()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(5):
        _, grads = rule.gradients(model, x, y, mask, _mse)
        opt.zero_grad()
        apply_gradients(model, grads)
        opt.step()
    W = model.effective_weights().W_rec.detach()
    absent = W0 == 0
    assert torch.all(W[absent] == 0)
    assert torch.all(W[~absent] * torch.sign(W0[~absent]) >= 0)


def test_apply_gradients_errors():
    model = _rate_model()
    with pytest.raises(KeyError, match="unknown parameter"):
        apply_gradients(model, {"nope": torch.zeros(1)})
    name, p = next(iter(model.named_parameters()))
    with pytest.raises(ValueError, match=name):
        apply_gradients(model, {name: torch.zeros(p.numel() + 1)})
