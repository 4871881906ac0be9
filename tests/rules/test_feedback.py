"""A given feedback matrix ``B`` (array, tensor or ``.npy`` path) for every local rule that uses feedback: returned
exactly, used exactly (the same gradients as the rule whose ``B`` it copies), sound equality and hashing, clear errors.
"""

import numpy as np
import pytest
import torch

from spikelearn.circuit import dale
from spikelearn.models import RateRNN, SpikingRNN
from spikelearn.rules import MDGL, RFLO, EProp, ModProp
from spikelearn.rules.local import FeedbackMatrix

N, N_IN, N_OUT, T, B = 12, 3, 2, 15, 3


def _model(kind):
    torch.manual_seed(0)
    c = dale(N, 0.75, p=0.4, seed=1)
    if kind == "spiking":
        return SpikingRNN(c, N_IN, N_OUT, n_adaptive=4, v_th=0.05).double()
    return RateRNN(c, N_IN, N_OUT, form="pre_activation", activation="tanh").double()


def _data():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(T, B, N_IN, generator=g, dtype=torch.float64)
    y = torch.randn(T, B, N_OUT, generator=g, dtype=torch.float64)
    return x, y, torch.ones(T, B, dtype=torch.float64)


def _mse(y_hat, y, mask):
    return 0.5 * (((y_hat - y) ** 2).sum(-1) * mask).sum()


CASES = [(EProp, "spiking", {}), (EProp, "spiking", {"mode": "online"}), (RFLO, "rate", {}),
         (RFLO, "rate", {"mode": "online"}), (MDGL, "spiking", {}), (MDGL, "rate", {}),
         (MDGL, "spiking", {"variant": "online", "mode": "online"}), (ModProp, "spiking", {"mu": 0.05}),
         (ModProp, "rate", {}), (ModProp, "rate", {"mode": "online"})]


@pytest.mark.parametrize("cls, kind, opts", CASES, ids=lambda v: v.__name__ if isinstance(v, type) else str(v))
@pytest.mark.parametrize("form", ["numpy", "tensor", "npy"])
def test_given_matrix_is_returned_and_used_exactly(cls, kind, opts, form, tmp_path):
    model = _model(kind)
    random_rule = cls(feedback="random", feedback_seed=7, **opts)
    Bmat = random_rule.feedback_matrix(model)  # a matrix the package would use: the gradients must then agree
    value = {"numpy": Bmat.numpy(), "tensor": Bmat.clone()}.get(form)
    if form == "npy":
        path = tmp_path / "B.npy"
        np.save(path, Bmat.numpy())
        value = str(path)
    rule = cls(feedback=value, **opts)
    assert isinstance(rule.feedback, FeedbackMatrix)
    assert torch.equal(rule.feedback_matrix(model), Bmat)  # exactly, float64 in, float64 out
    x, y, mask = _data()
    _, want = random_rule.gradients(model, x, y, mask, _mse)
    _, got = rule.gradients(model, x, y, mask, _mse)
    assert got.keys() == want.keys()
    for k in want:
        assert torch.equal(got[k], want[k]), k
    # a given matrix is part of the rule's identity: equal values, equal rules; rules stay hashable
    again = cls(feedback=Bmat.numpy().copy(), **opts)
    assert rule == again and hash(rule) == hash(again)
    other = cls(feedback=Bmat.numpy() * 2, **opts)
    assert rule != other
    assert not rule.stateful


def test_given_matrix_cannot_be_changed_through_the_rule():
    a = np.ones((N, N_OUT))
    rule = EProp(feedback=a)
    a[0, 0] = 5.0  # the caller's array: the rule kept a copy
    assert rule.feedback.values[0, 0] == 1.0
    with pytest.raises(ValueError):
        rule.feedback.values[0, 0] = 2.0  # read-only


def test_given_matrix_errors_name_the_problem(tmp_path):
    model = _model("spiking")
    x, y, mask = _data()
    with pytest.raises(ValueError, match=r"shape \(5, 2\).*\(12, 2\)"):
        EProp(feedback=np.zeros((5, 2))).gradients(model, x, y, mask, _mse)
    with pytest.raises(ValueError, match="2-D"):
        EProp(feedback=np.zeros(12))
    with pytest.raises(ValueError, match="non-finite"):
        RFLO(feedback=np.full((12, 2), np.nan))
    with pytest.raises(ValueError, match="does not exist"):
        EProp(feedback=str(tmp_path / "missing.npy"))
    with pytest.raises(ValueError, match="'symmetric', 'random', 'adaptive'"):
        ModProp(feedback="transpose")


@pytest.mark.parametrize("cls, kind", [(EProp, "spiking"), (RFLO, "rate"), (MDGL, "spiking"), (ModProp, "rate")])
def test_adaptive_feedback_lives_in_the_rule_state(cls, kind):
    """``feedback="adaptive"``: ``update`` returns a state whose ``B`` took the readout's change; the rule object
    and the state passed in are unchanged; passing the state back continues from it."""
    model = _model(kind)
    rule = cls(feedback="adaptive", feedback_decay=0.1)
    assert rule.stateful
    st0 = rule.init_state(model)
    B0 = st0["feedback_B"].clone()
    x, y, mask = _data()
    _, g, st1 = rule.update(model, x, y, mask, _mse, st0)
    torch.testing.assert_close(st1["feedback_B"], B0, rtol=0, atol=0)  # W_out unchanged yet: no update
    with torch.no_grad():
        model.theta_out.add_(0.25)
    _, _, st2 = rule.update(model, x, y, mask, _mse, st1)
    dW = model.effective_weights().W_out.detach() - st1["feedback_W_out"]
    torch.testing.assert_close(st2["feedback_B"], 0.9 * B0 + dW.T, rtol=1e-14, atol=1e-14)
    assert torch.equal(st1["feedback_B"], B0)  # the state passed in is unchanged
    assert rule == cls(feedback="adaptive", feedback_decay=0.1)
