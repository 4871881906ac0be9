"""A relaxed initial state (``init_state_std`` / ``init_relax_steps``) runs the network for ``init_relax_steps`` steps
to get the state every trial starts from; each rule computes it once per gradient (the simulation and the rule's
traces share it), and the gradient is the one computed with a fresh initial state at every call."""

import pytest
import torch

from spikelearn.circuit import dale
from spikelearn.models import RateRNN, SpikingRNN
from spikelearn.rules import BPTT, MDGL, RFLO, EProp, ModProp, RewardModulated

F64 = torch.float64


def _mse(y_hat, y, mask):
    return 0.5 * (((y_hat - y) ** 2) * mask).sum() / y.shape[1]


def _model(kind):
    torch.manual_seed(0)
    c = dale(10, p=0.5, seed=3)
    kw = dict(dtype=F64, init_state_std=2.0, init_relax_steps=4, init_seed=1, sign_constraint="dale")
    if kind == "spiking":
        return SpikingRNN(c, 3, 2, n_adaptive=4, v_th=0.3, n_ref=1, **kw)
    return RateRNN(c, 3, 2, **kw)


CASES = [
    ("spiking", lambda: EProp(chunk_steps=7)), ("spiking", lambda: EProp(mode="online", chunk_steps=7)),
    ("spiking", lambda: MDGL(chunk_steps=7)), ("spiking", lambda: MDGL(variant="online", mode="online")),
    ("spiking", lambda: ModProp(chunk_steps=7)), ("spiking", lambda: BPTT()),
    ("spiking", lambda: RewardModulated()),
    ("rate", lambda: RFLO(chunk_steps=7)), ("rate", lambda: RFLO(mode="online", chunk_steps=7)),
    ("rate", lambda: MDGL(chunk_steps=7)), ("rate", lambda: ModProp(chunk_steps=7)),
    ("rate", lambda: ModProp(mode="online", chunk_steps=7)),
]


@pytest.mark.parametrize("kind, make", CASES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(CASES)])
def test_initial_state_computed_once_per_gradient(kind, make):
    g = torch.Generator().manual_seed(2)
    x = (torch.rand(20, 3, 3, generator=g) < 0.3).to(F64) if kind == "spiking" else torch.randn(20, 3, 3, generator=g,
                                                                                              dtype=F64)
    y, mask = torch.randn(20, 3, 2, generator=g, dtype=F64), torch.ones(20, 3, 2, dtype=F64)
    model, rule = _model(kind), make()
    s0 = model.init_state(3)
    assert (s0.z if kind == "spiking" else s0.h).abs().sum() > 0  # the trials do not start at rest
    torch.manual_seed(5)
    _, want = rule.gradients(model, x, y, mask, _mse)
    calls = []
    original = model.init_state

    def counted(batch_size):
        calls.append(batch_size)
        return original(batch_size)

    model.init_state = counted
    torch.manual_seed(5)  # the reward rule samples
    _, got = rule.gradients(model, x, y, mask, _mse)
    assert calls == [3], f"{type(rule).__name__} computed the initial state {len(calls)} times"
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)
