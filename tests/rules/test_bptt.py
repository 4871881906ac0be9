"""BPTT and truncated BPTT: identities of ALGORITHMS.md §6 (the rule contract: tests/rules/test_contract.py)."""

import pytest
import torch

from spikelearn.circuit import gaussian
from spikelearn.models import RateRNN, SpikingRNN
from spikelearn.rules import BPTT, TruncatedBPTT, apply_gradients, output_error


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


def test_output_error_is_autograd_on_output():
    y_hat = torch.randn(5, 3, 2, dtype=torch.float64, requires_grad=True)
    y, mask = torch.randn(5, 3, 2, dtype=torch.float64), torch.ones(5, 3, dtype=torch.float64)
    loss, g = output_error(y_hat, y, mask, _mse)
    assert not loss.requires_grad
    torch.testing.assert_close(g, (y_hat - y).detach() / 3)


def test_apply_gradients_errors():
    model = _rate_model()
    with pytest.raises(KeyError, match="unknown parameter"):
        apply_gradients(model, {"nope": torch.zeros(1)})
    name, p = next(iter(model.named_parameters()))
    with pytest.raises(ValueError, match=name):
        apply_gradients(model, {name: torch.zeros(p.numel() + 1)})
