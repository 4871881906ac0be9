"""Evidence-accumulation options (ALGORITHMS.md §11 item 3): input encoding and loss/decision window.

The defaults must reproduce the trials drawn before these options existed, bit for bit (stored runs depend on
them): checked against the pre-option generator written out explicitly.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from spikelearn.tasks import EvidenceAccumulation, EvidenceAccumulationMDGL, bernoulli_spikes, make_task

CLASSES = (EvidenceAccumulation, EvidenceAccumulationMDGL)
SHORT = {"n_cues": 3, "delay_ms": 200.0}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_within_se(estimate: float, expected: float, se: float, k: float = 3.0) -> None:
    assert abs(estimate - expected) <= k * se, f"{estimate} vs {expected} (±{k}·{se})"


def test_default_eprop_trials_match_the_pre_option_generator():
    task = EvidenceAccumulation(**SHORT)
    B = 8
    x, y, mask, info = task.sample_with_info(B, gen(5), dtype=torch.float64)
    # the generator before the options: majority side, cue draws, then Bernoulli spikes; mask = last recall_ms
    g = gen(5)
    majority = torch.randint(0, 2, (B,), generator=g)
    u = torch.rand(B, task.n_cues, generator=g, dtype=torch.float64)
    sides = torch.where(u < task.p_majority, majority[:, None], 1 - majority[:, None])
    x_old = bernoulli_spikes(task.rates_hz(sides), task.dt_ms, g)
    mask_old = torch.zeros(task.n_steps, B, dtype=torch.float64)
    mask_old[-150:] = 1.0
    assert torch.equal(x, x_old) and torch.equal(mask, mask_old) and torch.equal(info["cue_sides"], sides)


def test_default_mdgl_trials_match_the_pre_option_generator():
    task = EvidenceAccumulationMDGL(**SHORT)
    B = 8
    x, y, mask, info = task.sample_with_info(B, gen(6), dtype=torch.float64)
    g = gen(6)
    perm = torch.randperm(2**task.n_cues, generator=g)
    pattern = perm[torch.arange(B) % 2**task.n_cues]
    sides = (pattern[:, None] >> torch.arange(task.n_cues)[None, :]) & 1
    x_old = torch.poisson(task.rates_hz(sides) * (task.dt_ms / 1000.0), generator=g)
    mask_old = torch.zeros(task.n_steps, B, dtype=torch.float64)
    mask_old[-1] = 1.0
    assert torch.equal(x, x_old) and torch.equal(mask, mask_old) and torch.equal(info["pattern"], pattern)


def test_defaults_are_each_sources_choice():
    e, m = EvidenceAccumulation(), EvidenceAccumulationMDGL()
    assert (e.encoding, e.loss_window) == ("bernoulli", "recall")
    assert (m.encoding, m.loss_window) == ("poisson", "last_step")
    assert e.decision_window() == e.recall_window() == (2100, 2250)
    assert m.decision_window() == (1999, 2000)


@pytest.mark.parametrize("cls", CLASSES)
def test_encoding_option_changes_only_the_spikes(cls):
    B = 32
    bern = cls(**SHORT, encoding="bernoulli", cue_rate_hz=400.0)
    pois = cls(**SHORT, encoding="poisson", cue_rate_hz=400.0)
    xb, yb, mb, ib = bern.sample_with_info(B, gen(7), dtype=torch.float64)
    xp, yp, mp, ip = pois.sample_with_info(B, gen(7), dtype=torch.float64)
    # same cues, labels and mask (the spikes are drawn last)
    assert torch.equal(yb, yp) and torch.equal(mb, mp)
    assert all(torch.equal(ib[k], ip[k]) for k in ib)
    assert set(xb.unique().tolist()) <= {0.0, 1.0}
    assert (xp == xp.round()).all() and (xp > 1).any()  # counts at p = 0.4 per step exceed 1 sometimes
    # cue-group values while the cue is on: Bernoulli mean p (binomial SE), Poisson mean λ (SE sqrt(λ/n))
    G = bern.n_per_group
    on_b, on_p = [], []
    for k, (s0, s1) in enumerate(bern.cue_windows()):
        for b in range(B):
            side = int(ib["cue_sides"][b, k])
            on_b.append(xb[s0:s1, b, side * G : (side + 1) * G].flatten())
            on_p.append(xp[s0:s1, b, side * G : (side + 1) * G].flatten())
    vb, vp = torch.cat(on_b), torch.cat(on_p)
    assert_within_se(float(vb.mean()), 0.4, math.sqrt(0.4 * 0.6 / vb.numel()))
    assert_within_se(float(vp.mean()), 0.4, math.sqrt(0.4 / vp.numel()))


@pytest.mark.parametrize("cls", CLASSES)
def test_bernoulli_rate_bound_applies_only_to_bernoulli(cls):
    assert cls(encoding="poisson", cue_rate_hz=1500.0).cue_rate_hz == 1500.0
    with pytest.raises(ValueError, match="cue_rate_hz"):
        cls(encoding="bernoulli", cue_rate_hz=1500.0)


def _logits_last_step_vs_average(y, mask_window):
    """Logits whose window average picks the label but whose last step picks the other class."""
    T, B = y.shape
    lab = y[-1]
    logits = torch.zeros(T, B, 2, dtype=torch.float64)
    r0, r1 = mask_window
    logits[r0 : r1 - 1, torch.arange(B), lab] = 10.0  # strongly right over the window ...
    logits[r1 - 1, torch.arange(B), 1 - lab] = 1.0  # ... mildly wrong at the last step
    return logits


@pytest.mark.parametrize("cls", CLASSES)
def test_loss_window_option_sets_mask_and_decision_rule(cls):
    B = 16
    recall_task = cls(**SHORT, loss_window="recall")
    last_task = cls(**SHORT, loss_window="last_step")
    T = recall_task.n_steps
    r0, r1 = recall_task.recall_window()
    assert r1 - r0 == 150 and r1 == T
    xr, yr, mr, ir = recall_task.sample_with_info(B, gen(8), dtype=torch.float64)
    xl, yl, ml, il = last_task.sample_with_info(B, gen(8), dtype=torch.float64)
    assert torch.equal(xr, xl) and torch.equal(yr, yl)  # only the mask differs
    assert (mr[r0:] == 1).all() and mr[:r0].sum() == 0
    assert (ml[-1] == 1).all() and ml[:-1].sum() == 0
    assert recall_task.decision_window() == (r0, r1) and last_task.decision_window() == (T - 1, T)

    logits = _logits_last_step_vs_average(yr, (r0, r1))
    # "recall": prediction = argmax of the logits averaged over the window (§10.1) -> all right
    assert recall_task.accuracy(logits, yr, mr) == 1.0
    # "last_step": prediction at the last step (§10.2) -> all wrong
    assert last_task.accuracy(logits, yl, ml) == 0.0
    # the loss follows the mask: last-step CE equals CE of the last step alone
    ce_last = torch.nn.functional.cross_entropy(logits[-1], yl[-1])
    torch.testing.assert_close(last_task.loss(logits, yl, ml), ce_last, rtol=1e-12, atol=1e-12)
    ce_window = torch.nn.functional.cross_entropy(logits[r0:].reshape(-1, 2), yr[r0:].reshape(-1))
    torch.testing.assert_close(recall_task.loss(logits, yr, mr), ce_window, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["evidence_accumulation", "evidence_accumulation_mdgl"])
@pytest.mark.parametrize(
    ("kwargs", "param"),
    [({"encoding": "gaussian"}, "encoding"), ({"encoding": "analog"}, "encoding"),
     ({"loss_window": "all"}, "loss_window"), ({"loss_window": None}, "loss_window")],
)
def test_bad_option_values_raise_naming_the_option(name, kwargs, param):
    with pytest.raises(ValueError, match=param):
        make_task(name, **kwargs)


def test_options_through_the_registry_and_replace():
    task = make_task("evidence_accumulation", encoding="poisson", loss_window="last_step", **SHORT)
    assert (task.encoding, task.loss_window) == ("poisson", "last_step")
    back = dataclasses.replace(task, encoding="bernoulli", loss_window="recall")
    a = back.sample_with_info(4, gen(123))
    b = EvidenceAccumulation(**SHORT).sample_with_info(4, gen(123))
    assert all(torch.equal(u, v) for u, v in zip(a[:3], b[:3]))
    assert all(torch.equal(a[3][k], b[3][k]) for k in b[3])
