"""RewardModulated: expected update ∝ true gradient (cosine > 0.9), zero RPE ⇒ zero update (the rule contract:
tests/rules/test_contract.py)."""

import pytest
import torch

from spikelearn.circuit import dale
from spikelearn.models import RateRNN, SpikingRNN
from spikelearn.rules import BPTT
from spikelearn.rules.reward import RewardModulated


def _mse(y_hat, y, mask):
    return 0.5 * (((y_hat - y) ** 2).sum(-1) * mask).sum() / y.shape[1]


def _model():
    torch.manual_seed(0)
    return RateRNN(dale(6, 0.67, p=0.8, g=1.0, seed=1), 2, 1, form="relu_lif", tau_ms=20.0, dt_ms=10.0,
                   hidden_bias=True).double()


def _task(B):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, 1, 2, generator=g, dtype=torch.float64).expand(8, B, 2).contiguous()
    y = torch.ones(8, B, 1, dtype=torch.float64)
    return x, y, torch.ones(8, B, dtype=torch.float64)


def _cos(a, b):
    return float((a * b).sum() / (a.norm() * b.norm()))


def test_expected_update_aligns_with_gradient():
    cos = _expected_update_cosines(_model(), *_task(1000), 0.02, ("theta_rec", "theta_in", "b_rec"))
    assert min(cos.values()) > 0.9, cos


def test_zero_prediction_error_gives_zero_update():
    model = _model()
    x, y, mask = _task(4)
    rule = RewardModulated(reward_fn=lambda yh, yy, m: torch.full((yh.shape[1],), 2.0), readout="none", seed=1)
    _, g = rule.gradients(model, x, y, mask, _mse)  # running baseline starts at this batch's mean ⇒ δ = 0
    assert set(g) == {"theta_rec", "theta_in", "b_rec"}
    assert all(bool((v == 0).all()) for v in g.values())
    _, g2 = RewardModulated(reward_fn=lambda yh, yy, m: torch.full((yh.shape[1],), 2.0), baseline="batch",
                            readout="none").gradients(model, x, y, mask, _mse)
    assert all(bool((v == 0).all()) for v in g2.values())


def test_validation():
    """(A foreign model, spiking models, masks and shapes: tests/rules/test_contract.py.)"""
    with pytest.raises(ValueError):
        RewardModulated(noise_std=0.0)


def test_reward_rule_bad_input():
    import numpy as np
    import pytest
    import torch

    from spikelearn.circuit import Circuit
    from spikelearn.models import RateRNN
    from spikelearn.rules import RewardModulated

    n = 6
    W = 0.3 * np.random.default_rng(0).standard_normal((n, n))
    np.fill_diagonal(W, 0)
    gap = np.zeros((n, n))
    gap[0, 1] = gap[1, 0] = 2.0
    m = RateRNN(Circuit.from_dense(W, gap=gap), 2, 1, form="pre_activation", tau_ms=50.0, dt_ms=10.0,
                dtype=torch.float64)
    x = torch.randn(5, 3, 2, dtype=torch.float64)
    y = torch.zeros(5, 3, 1, dtype=torch.float64)
    mask = torch.ones(5, 3, dtype=torch.float64)
    mse = lambda a, b, k: ((a - b) ** 2).mean()  # noqa: E731
    RewardModulated(seed=0).gradients(m, x, y, mask, mse)  # gap junctions: supported (the noise is an input)
    m2 = RateRNN(Circuit.from_dense(W), 2, 1, form="pre_activation", tau_ms=50.0, dt_ms=10.0, dtype=torch.float64)
    with pytest.raises(ValueError, match="one reward per trial"):
        RewardModulated(seed=0, reward_fn=lambda a, b, k: torch.tensor(1.0)).gradients(m2, x, y, mask, mse)


def _expected_update_cosines(model, x, y, mask, noise_std, keys, batches=4):
    """Cosine between the summed update of ``batches`` noisy batches and the true (BPTT) gradient of one trial."""
    rule = RewardModulated(noise_std=noise_std, baseline="batch", seed=0)
    acc = None
    state = rule.init_state(model)  # the noise stream continues from batch to batch through the rule state
    for _ in range(batches):
        _, g, state = rule.update(model, x, y, mask, _mse, state)
        acc = g if acc is None else {k: acc[k] + g[k] for k in g}
    _, gt = BPTT().gradients(model, x[:, :1], y[:, :1], mask[:, :1], _mse)
    return {k: _cos(acc[k], gt[k]) for k in keys}


def _long_task(B, T=20):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(T, 1, 2, generator=g, dtype=torch.float64).expand(T, B, 2).contiguous()
    return x, torch.ones(T, B, 1, dtype=torch.float64), torch.ones(T, B, dtype=torch.float64)


def _circuit(gap):
    import numpy as np
    import scipy.sparse as sp

    from spikelearn.circuit import Circuit

    base = dale(6, 0.67, p=0.8, g=1.0, seed=1)
    G = None
    if gap:
        rng = np.random.default_rng(0)
        G = np.triu(rng.random((6, 6)) * gap * (rng.random((6, 6)) < 0.5), 1)
        G = sp.csr_array(G + G.T)
    return Circuit.from_dense(base.weights(dense=True), mask=base.mask(dense=True), signs=base.signs, gap=G)


def _smooth_spiking(circuit, **kw):
    from spikelearn.neurons import make_surrogate

    torch.manual_seed(0)
    return SpikingRNN(circuit, 2, 1, scaling="B", v_th=0.05, n_ref=0, tau_mem_ms=10.0,
                      surrogate=make_surrogate("sigmoid", smooth=True, slope=5.0), w_in_init="standard_normal",
                      **kw).double()


def test_expected_update_aligns_with_gradient_with_synaptic_currents():
    """Current-based synapses: the eligibility uses the synaptically filtered presynaptic signal (module
    docstring); the expected update over many noisy trials aligns with the true gradient of a differentiable
    (smooth-spike) network."""
    model = _smooth_spiking(dale(6, 0.67, p=0.8, g=1.0, seed=1), tau_syn_ms=8.0)
    cos = _expected_update_cosines(model, *_long_task(1000), 0.0005, ("theta_rec", "theta_in"))
    assert min(cos.values()) > 0.9, cos


def test_expected_update_aligns_with_gradient_with_reset_zero_and_gap_junctions():
    """Spiking models get the noise as an injected current (model(..., i_ext=η)), so a reset to zero and gap
    junctions keep the estimator unbiased: the expected update aligns with the true gradient (smooth spikes)."""
    model = _smooth_spiking(_circuit(gap=0.05), reset="zero")
    assert model.gap is not None
    cos = _expected_update_cosines(model, *_long_task(1000), 0.0005, ("theta_rec", "theta_in"))
    assert min(cos.values()) > 0.9, cos


@pytest.mark.parametrize("form,gap", [("murray", False), ("richlazy", False), ("pre_activation", True)])
def test_expected_update_aligns_with_gradient_for_every_rate_form(form, gap):
    """The noise enters h^t through model(..., i_ext=η), so every rate form and gap junctions are handled."""
    torch.manual_seed(0)
    model = RateRNN(_circuit(gap=0.1 if gap else 0), 2, 1, form=form, tau_ms=20.0, dt_ms=10.0,
                    hidden_bias=True).double()
    cos = _expected_update_cosines(model, *_task(1000), 0.005, ("theta_rec", "theta_in", "b_rec"))
    assert min(cos.values()) > 0.9, cos
