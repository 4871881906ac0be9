"""Type-shared recurrent weights (ALGORITHMS-2 §12.4, the flyvis parametrisation): ``w_e = s_e |g_{τ(pre), τ(post)}|``.

T12.4: for every rule, the gradient of a type gain is the segment sum of that rule's per-edge gradient (of the same
model with per-edge parameters at the same weights) times ``∂w_e/∂g = s_e sign(g)``, to 1e-12 — on dense and sparse
storage."""

import numpy as np
import pandas as pd
import pytest
import torch

import spikelearn as sl
from spikelearn.circuit import block_model
from spikelearn.models import RateRNN, SpikingRNN
from spikelearn.rules import BPTT, MDGL, RFLO, EProp, ModProp, RewardModulated, TruncatedBPTT

F64 = torch.float64
N_IN, N_OUT, T, B = 3, 2, 20, 3


def _circuit():
    p = pd.DataFrame([[0.3, 0.2, 0.0], [0.2, 0.3, 0.4], [0.5, 0.1, 0.2]], index=list("abc"), columns=list("abc"))
    return block_model(p, {"a": 8, "b": 10, "c": 6}, type_signs={"a": 1, "b": 1, "c": -1}, weight_scale=0.05, seed=4)


def _models(cls, storage, **kw):
    """A type-shared model and the per-edge model with the same effective weights (gains 0.7, 1.3, ...)."""
    c = _circuit()
    torch.manual_seed(0)
    ts = cls(c, N_IN, N_OUT, parametrization="type_shared", storage=storage, dtype=F64, **kw)
    with torch.no_grad():
        ts.type_gain.copy_(torch.linspace(0.5, 1.5, ts.type_gain.numel(), dtype=F64))
    torch.manual_seed(0)
    pe = cls(c, N_IN, N_OUT, storage="sparse", sign_constraint="none", dtype=F64, **kw)
    with torch.no_grad():  # the same W_in, W_out (same seed), and W_rec set to the type-shared values
        W = ts.effective_weights().W_rec
        vals = W.values if storage == "sparse" else W[pe.rec_post, pe.rec_pre]
        pe.theta_rec.copy_(vals)
    return ts, pe


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(T, B, N_IN, generator=g, dtype=F64) < 0.3).double()
    return x, torch.randn(T, B, N_OUT, generator=g, dtype=F64), torch.ones(T, B, dtype=F64)


def _mse(y_hat, y, mask):
    return 0.5 * (((y_hat - y) ** 2).sum(-1) * mask).sum()


def test_structure_counts_pairs_and_keeps_signs():
    c = _circuit()
    m = SpikingRNN(c, N_IN, N_OUT, parametrization="type_shared", storage="sparse")
    kinds = np.asarray([str(t) for t in c.cell_types])
    keep = np.asarray(c.post) != np.asarray(c.pre)
    want = {(kinds[i], kinds[j]) for i, j in zip(np.asarray(c.pre)[keep], np.asarray(c.post)[keep])}
    assert set(m.type_pairs) == want and m.type_gain.shape == (len(want),)
    assert {n for n, _ in m.named_parameters()} == {"type_gain", "theta_in", "theta_out", "b_out"}
    W = m.effective_weights().W_rec
    assert torch.equal(torch.sign(W.values), torch.sign(m.edge_scale.float()))  # signs fixed by the circuit
    with pytest.raises(ValueError, match="parametrization must be one of"):
        SpikingRNN(c, N_IN, N_OUT, parametrization="per_type")
    with pytest.raises(ValueError, match="type_gain_init"):
        SpikingRNN(c, N_IN, N_OUT, parametrization="type_shared", type_gain_init=-1.0)


def _segment_sum(ts, g_edge):
    """``Σ_{e in pair} g_e s_e sign(g_pair)`` (T12.4)."""
    d = g_edge * ts.edge_scale * torch.sign(ts.type_gain.detach()).index_select(0, ts.edge_pair)
    return torch.zeros_like(ts.type_gain).index_add(0, ts.edge_pair, d)


SPIKING_RULES = [BPTT(), TruncatedBPTT(k=4), EProp(), EProp(mode="online", chunk_steps=7), MDGL(),
                 MDGL(variant="online", mode="online"), ModProp(mu=0.05), RewardModulated(seed=0, baseline="batch")]
RATE_RULES = [BPTT(), RFLO(), RFLO(mode="online"), MDGL(cell_types="circuit"), ModProp(), ModProp(mode="online")]


@pytest.mark.parametrize("storage", ["dense", "sparse"])
@pytest.mark.parametrize("rule", SPIKING_RULES, ids=lambda r: repr(r)[:40])
def test_type_gain_gradient_is_the_segment_sum_spiking(storage, rule):
    ts, pe = _models(SpikingRNN, storage, v_th=0.05, n_adaptive=8, n_ref=1)
    x, y, mask = _data(1)
    _, gt = rule.gradients(ts, x, y, mask, _mse)
    _, gp = rule.gradients(pe, x, y, mask, _mse)
    want = _segment_sum(ts, gp["theta_rec"])
    assert float(want.abs().max()) > 0
    torch.testing.assert_close(gt["type_gain"], want, rtol=1e-12, atol=1e-12 * float(want.abs().max()))
    for k in ("theta_in", "theta_out"):
        torch.testing.assert_close(gt[k], gp[k], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("storage", ["dense", "sparse"])
@pytest.mark.parametrize("rule", RATE_RULES, ids=lambda r: repr(r)[:40])
def test_type_gain_gradient_is_the_segment_sum_rate(storage, rule):
    ts, pe = _models(RateRNN, storage, form="pre_activation")
    x, y, mask = _data(2)
    _, gt = rule.gradients(ts, x, y, mask, _mse)
    _, gp = rule.gradients(pe, x, y, mask, _mse)
    want = _segment_sum(ts, gp["theta_rec"])
    torch.testing.assert_close(gt["type_gain"], want, rtol=1e-12, atol=1e-12 * float(want.abs().max()))


def test_optic_lobe_type_shared_parameter_count():
    """The shipped optic lobe (one node per cell type at lattice_radius=None): one gain per connected type pair."""
    c = sl.connectomes.load("drosophila_optic_lobe")
    m = RateRNN(c, 2, 2, form="pre_activation", activation="relu", parametrization="type_shared",
                storage="sparse", allow_autapses=True)
    assert m.type_gain.numel() == c.n_edges  # one node per type: every edge is its own (pre type, post type) pair
