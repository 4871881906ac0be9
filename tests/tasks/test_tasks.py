"""Tests for spikelearn.tasks: shapes, determinism, timings, rates, label rules, losses (ALGORITHMS.md §10)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from spikelearn.tasks import (
    TASKS,
    ContextDecisionMaking,
    DelayedMatchToSample,
    DelayedXOR,
    EvidenceAccumulation,
    EvidenceAccumulationMDGL,
    HierarchicalDelayedXOR,
    PatternGeneration,
    PerceptualDecisionMaking,
    SequentialDigits,
    classification_loss,
    make_task,
    poisson_spikes,
    regression_loss,
)

NAMES = sorted(TASKS)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def small(name: str):
    """Registered task, shortened where the default is long (the contract does not depend on durations)."""
    if name == "evidence_accumulation":
        return make_task(name, n_cues=3, delay_ms=200.0)
    if name == "evidence_accumulation_mdgl":
        return make_task(name, n_cues=3, delay_ms=200.0)
    if name == "store_recall":
        return make_task(name, character_ms=50.0)
    return make_task(name)


def assert_within_se(estimate: float, expected: float, se: float, k: float = 3.0) -> None:
    assert abs(estimate - expected) <= k * se, f"{estimate} vs {expected} (±{k}·{se})"


# ----------------------------------------------------------------------------------------------------------------
# contract over every registered task


@pytest.mark.parametrize("name", NAMES)
def test_shapes_dtypes_and_float64(name):
    task = small(name)
    B = 5
    x, y, mask = task.sample(B, gen(0))
    T = task.n_steps
    assert x.shape == (T, B, task.n_in) and x.dtype == torch.float32
    assert mask.shape == (T, B) and mask.dtype == torch.float32
    assert set(mask.unique().tolist()) <= {0.0, 1.0} and mask.sum() > 0
    if task.kind == "classification":
        assert y.shape == (T, B) and y.dtype == torch.int64
        assert int(y.min()) >= 0 and int(y.max()) < task.n_out
    else:
        assert task.kind == "regression"
        assert y.shape == (T, B, task.n_out) and y.dtype == torch.float32
    assert task.encoding in ("analog", "bernoulli", "poisson")
    assert task.dt_ms > 0
    x64, y64, m64 = task.sample(B, gen(0), dtype=torch.float64)
    assert x64.dtype == m64.dtype == torch.float64
    assert torch.equal(x64.float(), x) and torch.equal(m64.float(), mask)
    assert torch.equal(y64.to(y.dtype), y)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_trials_different_seed_different(name):
    task = small(name)
    a = task.sample(6, gen(1))
    b = task.sample(6, gen(1))
    c = task.sample(6, gen(2))
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    if name == "pattern_generation":
        # frozen input/target: the generator only drives input noise
        assert all(torch.equal(u, v) for u, v in zip(a, c))
        noisy = dataclasses.replace(task, input_noise_std=0.1)
        assert not torch.equal(noisy.sample(6, gen(1))[0], noisy.sample(6, gen(2))[0])
    else:
        assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("name", NAMES)
def test_loss_value_and_gradient_match_closed_form(name):
    task = small(name)
    x, y, mask = task.sample(4, gen(3), dtype=torch.float64)
    y_hat = torch.randn(*y.shape[:2], task.n_out, generator=gen(4), dtype=torch.float64, requires_grad=True)
    loss = task.loss(y_hat, y, mask)
    assert loss.dim() == 0 and loss.dtype == torch.float64
    loss.backward()
    with torch.no_grad():
        if task.kind == "classification":
            logp = y_hat.log_softmax(-1)
            nll = -logp.gather(-1, y[..., None]).squeeze(-1)
            expected = (mask * nll).sum() / mask.sum()
            onehot = torch.nn.functional.one_hot(y, task.n_out).to(y_hat.dtype)
            grad = mask[..., None] * (logp.exp() - onehot) / mask.sum()
        else:
            B = y.shape[1]
            expected = 0.5 * (mask[..., None] * (y_hat - y) ** 2).sum() / B
            grad = mask[..., None] * (y_hat - y) / B
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y_hat.grad, grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_accuracy_perfect_and_wrong(name):
    task = small(name)
    x, y, mask = task.sample(8, gen(5))
    if task.kind == "classification":
        perfect = 5.0 * torch.nn.functional.one_hot(y, task.n_out).float()
        wrong = 5.0 * torch.nn.functional.one_hot((y + 1) % task.n_out, task.n_out).float()
    else:
        perfect = y.clone()
        m = mask[..., None]
        wrong = ((m * y).sum(0, keepdim=True) / m.sum(0, keepdim=True)).expand_as(y)  # masked mean: R² = 0
    assert task.accuracy(perfect, y, mask) == pytest.approx(1.0)
    assert task.accuracy(wrong, y, mask) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_input_noise_adds_gaussian_noise_and_keeps_targets(name):
    task = small(name)
    sigma = 0.05 if name == "sequential_digits" else 0.3
    noisy = dataclasses.replace(task, input_noise_std=sigma)
    B = {"evidence_accumulation": 16, "sequential_digits": 256}.get(name, 64)
    x0, y0, m0 = task.sample(B, gen(6), dtype=torch.float64)
    x1, y1, m1 = noisy.sample(B, gen(6), dtype=torch.float64)
    assert torch.equal(y0, y1) and torch.equal(m0, m1)
    diff = x1 - x0
    if name == "sequential_digits":
        assert x1.min() >= 0 and x1.max() <= 1  # clipped like BiolHessRNN's noisy test set
        diff = diff[(x0 > 0.25) & (x0 < 0.75)]  # 5σ away from the clip bounds
    diff = diff.flatten()
    n = diff.numel()
    assert n > 1000
    assert_within_se(float(diff.mean()), 0.0, sigma / math.sqrt(n))
    assert_within_se(float(diff.std()), sigma, sigma / math.sqrt(2 * (n - 1)))


def test_unknown_task_lists_names():
    with pytest.raises(ValueError) as exc:
        make_task("no_such_task")
    for name in TASKS:
        assert name in str(exc.value)


@pytest.mark.parametrize(
    ("name", "kwargs", "param"),
    [
        ("evidence_accumulation", {"n_cues": 0}, "n_cues"),
        ("evidence_accumulation", {"delay_ms": -1.0}, "delay_ms"),
        ("evidence_accumulation", {"p_majority": 1.5}, "p_majority"),
        ("evidence_accumulation", {"cue_ms": 10.5}, "cue_ms"),  # not a multiple of dt_ms
        ("evidence_accumulation", {"cue_rate_hz": 2000.0}, "cue_rate_hz"),  # p > 1
        ("evidence_accumulation_mdgl", {"recall_ms": 0.0}, "recall_ms"),
        ("pattern_generation", {"duration_ms": -5.0}, "duration_ms"),
        ("delayed_match_to_sample", {"loss_on": "everything"}, "loss_on"),
        ("delayed_match_to_sample", {"delay_ms": 150.0}, "delay_ms"),
        ("perceptual_decision_making", {"stim_noise_sigma": -1.0}, "stim_noise_sigma"),
        ("context_decision_making", {"decision_ms": 0.0}, "decision_ms"),
        ("delayed_xor", {"delay_ms": -700.0}, "delay_ms"),
        ("hierarchical_delayed_xor", {"level": -1}, "level"),
        ("hierarchical_delayed_xor", {"n_steps": 20}, "n_steps"),
        ("sequential_digits", {"split": "validation"}, "split"),
        ("delayed_xor", {"input_noise_std": -0.1}, "input_noise_std"),
        ("delayed_xor", {"bogus": 1}, "bogus"),
    ],
)
def test_bad_parameters_raise_naming_parameter(name, kwargs, param):
    with pytest.raises(ValueError, match=param):
        make_task(name, **kwargs)


def test_replace_revalidates():
    with pytest.raises(ValueError, match="n_cues"):
        dataclasses.replace(EvidenceAccumulation(), n_cues=0)


def test_loss_on_tiny_hand_example():
    # T = 2, B = 2, K = 3; mask excludes (t=0, b=1)
    y_hat = torch.tensor(
        [[[1.0, 2.0, 0.0], [0.0, 0.0, 0.0]], [[0.5, -1.0, 2.0], [3.0, 1.0, 1.0]]], dtype=torch.float64
    )
    y = torch.tensor([[1, 2], [2, 0]])
    mask = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)

    def ce(logits, k):
        return math.log(sum(math.exp(v) for v in logits)) - logits[k]

    expected = (ce([1.0, 2.0, 0.0], 1) + ce([0.5, -1.0, 2.0], 2) + ce([3.0, 1.0, 1.0], 0)) / 3
    assert float(classification_loss(y_hat, y, mask)) == pytest.approx(expected, rel=1e-12)
    yh = y_hat.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: classification_loss(v, y, mask), (yh,))

    target = torch.tensor([[[1.0], [2.0]], [[0.0], [-1.0]]], dtype=torch.float64)
    pred = torch.tensor([[[1.5], [0.0]], [[1.0], [-1.0]]], dtype=torch.float64)
    # ½ (0.5² + 1² + 0²) / B  (the (t=0, b=1) error of 2 is masked out)
    assert float(regression_loss(pred, target, mask)) == pytest.approx(0.5 * (0.25 + 1.0) / 2, rel=1e-12)


# ----------------------------------------------------------------------------------------------------------------
# encoders


def test_poisson_spikes_bernoulli_and_counts_rates():
    n = 200_000
    rate = torch.full((n,), 40.0, dtype=torch.float64)
    z = poisson_spikes(rate, 1.0, gen(7))
    assert set(z.unique().tolist()) <= {0.0, 1.0}
    p = 0.04
    assert_within_se(float(z.mean()), p, math.sqrt(p * (1 - p) / n))
    c = poisson_spikes(rate * 25, 1.0, gen(8), counts=True)  # λ = 1 per step: many counts > 1
    assert (c == c.round()).all() and (c > 1).any()
    assert_within_se(float(c.mean()), 1.0, math.sqrt(1.0 / n))
    with pytest.raises(ValueError):
        poisson_spikes(torch.tensor([2000.0]), 1.0, gen(0))


# ----------------------------------------------------------------------------------------------------------------
# evidence accumulation (§10.1, §10.2)


def _cue_sides_from_spikes(task, x):
    """Side of each cue recovered from the spikes: (B, n_cues), 0 left / 1 right, or -1 if ambiguous."""
    G = task.n_per_group
    out = []
    for start, stop in task.cue_windows():
        left = x[start:stop, :, :G].sum((0, 2))
        right = x[start:stop, :, G : 2 * G].sum((0, 2))
        out.append(torch.where((left > 0) & (right == 0), 0, torch.where((right > 0) & (left == 0), 1, -1)))
    return torch.stack(out, 1)


def test_eprop_evidence_timings_rates_and_labels():
    task = EvidenceAccumulation()
    assert task.n_in == 40 and task.n_out == 2 and task.n_steps == 2250 and task.encoding == "bernoulli"
    windows = [(50 + 150 * k, 150 + 150 * k) for k in range(7)]
    assert task.cue_windows() == windows
    assert task.recall_window() == (2100, 2250)
    B = 64
    x, y, mask, info = task.sample_with_info(B, gen(10), dtype=torch.float64)

    # mask: exactly the last 150 steps; label tiled
    assert torch.equal(mask[2100:], torch.ones(150, B, dtype=torch.float64)) and mask[:2100].sum() == 0
    assert (y == y[-1]).all()

    # cue channels fire only inside the cue windows, and at both ends of each window
    cue = x[:, :, :20].sum((1, 2))  # (T,)
    inside = torch.zeros(2250, dtype=torch.bool)
    for s0, s1 in windows:
        inside[s0:s1] = True
        assert cue[s0] > 0 and cue[s1 - 1] > 0
    assert cue[~inside].sum() == 0
    recall = x[:, :, 20:30].sum((1, 2))
    assert recall[:2100].sum() == 0 and recall[2100] > 0 and recall[2249] > 0

    # rates within 3 SE (binomial), p = rate·dt/1000
    def check_rate(values, rate_hz):
        p, n = rate_hz / 1000.0, values.numel()
        assert_within_se(float(values.mean()), p, math.sqrt(p * (1 - p) / n))

    check_rate(x[:, :, 30:40], 10.0)  # background throughout
    check_rate(x[2100:, :, 20:30], 40.0)  # recall
    sides = info["cue_sides"]  # (B, 7)
    active, silent = [], []
    for k, (s0, s1) in enumerate(windows):
        for b in range(B):
            g = int(sides[b, k])
            active.append(x[s0:s1, b, g * 10 : (g + 1) * 10].flatten())
            silent.append(x[s0:s1, b, (1 - g) * 10 : (2 - g) * 10].flatten())
    check_rate(torch.cat(active), 40.0)
    assert torch.cat(silent).sum() == 0

    # label rule recomputed from the spikes: right iff more than 3 of 7 cues right
    from_spikes = _cue_sides_from_spikes(task, x)
    assert torch.equal(from_spikes, sides)
    assert torch.equal(y[-1], (from_spikes.sum(1) > 3).long())
    # each cue goes to the trial's majority side with probability 0.7
    to_major = (sides == info["majority_side"][:, None]).double().flatten()
    assert_within_se(float(to_major.mean()), 0.7, math.sqrt(0.7 * 0.3 / to_major.numel()))


def test_eprop_evidence_shortened_and_decision_rule():
    task = EvidenceAccumulation(n_cues=3, gap_ms=20.0, cue_ms=50.0, delay_ms=100.0, recall_ms=40.0)
    assert task.n_steps == 3 * 70 + 100 + 40
    assert task.cue_windows() == [(20, 70), (90, 140), (160, 210)]
    x, y, mask, info = task.sample_with_info(32, gen(11))
    assert mask[-40:].all() and mask[:-40].sum() == 0
    assert torch.equal(y[-1], (info["cue_sides"].sum(1) > 1).long())
    # decision = argmax of the time-averaged logits over the masked steps, not a per-step vote
    T, B = y.shape
    logits = torch.zeros(T, B, 2)
    lab = y[-1]
    logits[-1, torch.arange(B), lab] = 100.0  # one very confident correct step ...
    logits[-10:-1, torch.arange(B), 1 - lab] = 1.0  # ... outvotes nine mildly wrong steps
    assert task.accuracy(logits, y, mask) == 1.0


def test_mdgl_evidence_timings_patterns_and_labels():
    task = EvidenceAccumulationMDGL()
    assert task.n_steps == 2000 and task.encoding == "poisson"
    windows = [(150 * k, 150 * k + 100) for k in range(7)]
    assert task.cue_windows() == windows
    assert task.recall_window() == (1850, 2000)
    assert task.recall_window()[0] - windows[-1][1] == 850  # delay after the last cue
    B = 128
    x, y, mask, info = task.sample_with_info(B, gen(12), dtype=torch.float64)
    # mask: last step only
    assert mask[-1].all() and mask[:-1].sum() == 0
    # all 128 patterns, each exactly once
    assert sorted(info["pattern"].tolist()) == list(range(128))
    # Poisson counts: integer, cue channels silent outside the windows
    assert (x == x.round()).all() and x.min() >= 0
    inside = torch.zeros(2000, dtype=torch.bool)
    for s0, s1 in windows:
        inside[s0:s1] = True
    assert x[~inside, :, :20].sum() == 0
    assert x[:1850, :, 20:30].sum() == 0
    lam, vals = 0.01, x[:, :, 30:40]
    assert_within_se(float(vals.mean()), lam, math.sqrt(lam / vals.numel()))
    # label recomputed from the spikes: left (0) iff >= 4 of 7 cues left
    sides = _cue_sides_from_spikes(task, x)
    assert torch.equal(sides, info["cue_sides"])
    assert torch.equal(y[-1], torch.where((sides == 0).sum(1) >= 4, 0, 1))
    # batch larger than 128 wraps around the permutation
    _, _, _, info2 = task.sample_with_info(130, gen(13))
    p = info2["pattern"]
    assert len(set(p[:128].tolist())) == 128 and torch.equal(p[128:], p[:2])


# ----------------------------------------------------------------------------------------------------------------
# pattern generation (§10.4)


def test_pattern_generation_target_and_frozen_input():
    task = PatternGeneration()
    assert (task.n_in, task.n_out, task.n_steps, task.kind) == (100, 1, 1000, "regression")
    x1, y1, m1, info = task.sample_with_info(3, gen(0), dtype=torch.float64)
    x2, y2, _ = task.sample(3, gen(99), dtype=torch.float64)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.equal(x1[:, 0], x1[:, 2])  # same pattern for every batch element
    assert m1.all()
    target = y1[:, 0, 0]
    assert float(target[0]) == 0.0
    assert float(target.abs().max()) == pytest.approx(1.0, abs=1e-15)
    # target is the normalised sum of the four sines with the reported parameters
    t = torch.arange(1000, dtype=torch.float64)
    raw = sum(
        a * torch.sin(2 * math.pi * t / P + ph)
        for a, P, ph in zip(info["amplitudes"], (1000.0, 500.0, 333.0, 200.0), info["phases"])
    )
    raw = raw - raw[0]
    torch.testing.assert_close(target, raw / raw.abs().max())
    assert ((info["amplitudes"] >= 0.5) & (info["amplitudes"] <= 2.0)).all()
    assert ((info["phases"] >= 0) & (info["phases"] < 2 * math.pi)).all()
    # 50 Hz Bernoulli input
    p, n = 0.05, x1[:, 0].numel()
    assert_within_se(float(x1[:, 0].mean()), p, math.sqrt(p * (1 - p) / n))
    # a different pattern_seed gives a different pattern
    other = dataclasses.replace(task, pattern_seed=1).sample(1, gen(0))
    assert not torch.equal(other[0], x1[:, :1].float()) and not torch.equal(other[1], y1[:, :1].float())


# ----------------------------------------------------------------------------------------------------------------
# neurogym-like tasks (§10.5, §10.8)


def test_dms_layout_labels_and_noise():
    task = DelayedMatchToSample()
    assert (task.n_steps, task.n_in, task.n_out, task.dt_ms) == (8, 3, 3, 100.0)
    assert task.periods() == {
        "fixation": (0, 0), "sample": (0, 1), "delay": (1, 6), "test": (6, 7), "decision": (7, 8)
    }
    clean = dataclasses.replace(task, stim_noise_sigma=0.0)
    B = 400
    x, y, mask, info = clean.sample_with_info(B, gen(20), dtype=torch.float64)
    # fixation on until the decision
    assert (x[:7, :, 0] == 1).all() and (x[7, :, 0] == 0).all()
    # stimulus only at the sample (step 0) and test (step 6) steps, on the unit circle at 0 or π/2
    assert x[1:6, :, 1:].abs().sum() == 0 and x[7, :, 1:].abs().sum() == 0
    th_s = torch.atan2(x[0, :, 2], x[0, :, 1])
    th_t = torch.atan2(x[6, :, 2], x[6, :, 1])
    torch.testing.assert_close(th_s, info["sample_theta"])
    assert set(th_s.round(decimals=6).tolist()) == {0.0, round(math.pi / 2, 6)}
    match = (th_s - th_t).abs() < 1e-9
    assert torch.equal(match, info["match"])
    assert torch.equal(y[7], torch.where(match, 1, 2)) and (y[:7] == 0).all()
    assert_within_se(float(match.double().mean()), 0.5, math.sqrt(0.25 / B))
    assert mask.all()
    assert (dataclasses.replace(task, loss_on="decision").sample(4, gen(0))[2].sum(1) == torch.tensor(
        [0, 0, 0, 0, 0, 0, 0, 4.0])).all()
    # noise: std sqrt(2·100·0.01)/sqrt(100) on every channel during sample and test, none elsewhere
    xn, yn, _ = task.sample(B, gen(20), dtype=torch.float64)
    assert torch.equal(yn, y)
    sigma = math.sqrt(2.0) / 10.0
    d = torch.cat([(xn - x)[0], (xn - x)[6]]).flatten()
    assert_within_se(float(d.std()), sigma, sigma / math.sqrt(2 * (d.numel() - 1)))
    assert torch.equal(xn[1:6], x[1:6]) and torch.equal(xn[7], x[7])


def test_perceptual_decision_making_layout_and_labels():
    task = PerceptualDecisionMaking(stim_noise_sigma=0.0)
    assert (task.n_steps, task.n_in, task.n_out) == (8, 3, 3)
    assert task.periods()["stimulus"] == (0, 7) and task.periods()["decision"] == (7, 8)
    x, y, mask, info = task.sample_with_info(500, gen(21), dtype=torch.float64)
    assert (x[:7, :, 0] == 1).all() and (x[7] == 0).all()
    c = info["coherence"] / 100
    s1 = torch.where(info["side"] == 0, (1 + c) / 2, (1 - c) / 2)
    torch.testing.assert_close(x[:7, :, 1], s1.expand(7, -1))
    torch.testing.assert_close(x[:7, :, 2], (1 - s1).expand(7, -1))
    assert set(info["coherence"].tolist()) == {0.0, 6.4, 12.8, 25.6, 51.2}
    informative = info["coherence"] > 0
    recomputed = torch.where(x[0, :, 1] > x[0, :, 2], 1, 2)
    assert torch.equal(y[7][informative], recomputed[informative])
    assert (y[:7] == 0).all() and torch.equal(y[7], info["label"])


def test_context_decision_making_layout_and_labels():
    task = ContextDecisionMaking(stim_noise_sigma=0.0)
    assert (task.n_steps, task.n_in, task.n_out) == (8, 7, 3)
    assert task.periods() == {"fixation": (0, 0), "stimulus": (0, 2), "delay": (2, 7), "decision": (7, 8)}
    x, y, mask, info = task.sample_with_info(500, gen(22), dtype=torch.float64)
    assert (x[:7, :, 0] == 1).all() and (x[7, :, 0] == 0).all()
    assert x[2:, :, 1:5].abs().sum() == 0  # stimuli only during the stimulus
    ctx = x[:, :, 5:7]
    assert (ctx.sum(-1) == 1).all() and (ctx == ctx[0]).all()  # one context channel on, whole trial
    m = ctx[0].argmax(-1)
    assert torch.equal(m, info["context"])
    stim = x[0, :, 1:5].reshape(-1, 2, 2)  # (B, modality, channel)
    relevant = stim[torch.arange(500), m]
    recomputed = torch.where(relevant[:, 0] > relevant[:, 1], 1, 2)
    assert torch.equal(y[7], recomputed) and (y[:7] == 0).all()
    # the irrelevant modality disagrees with the label on about half of the trials
    irrelevant = stim[torch.arange(500), 1 - m]
    disagree = (torch.where(irrelevant[:, 0] > irrelevant[:, 1], 1, 2) != recomputed).double()
    assert_within_se(float(disagree.mean()), 0.5, math.sqrt(0.25 / 500))
    noisy = ContextDecisionMaking()
    assert noisy.sigma_dt == pytest.approx(0.2)
    xn = noisy.sample(500, gen(22), dtype=torch.float64)[0]
    assert torch.equal(xn[2:], x[2:])


# ----------------------------------------------------------------------------------------------------------------
# delayed XOR variants (§10.6)


def test_delayed_xor_bumps_labels_and_noise():
    task = DelayedXOR()
    assert (task.n_steps, task.n_in, task.n_out) == (900, 2, 2)
    assert task.cue_windows() == ((0, 100), (800, 900))
    bump = task.bump()
    s = torch.linspace(-50, 50, 100, dtype=torch.float64)
    torch.testing.assert_close(bump, 2.0 * torch.exp(-(s**2) / (2 * 25.0**2)))
    torch.testing.assert_close(bump, bump.flip(0))
    B = 256
    x, y, mask, info = task.sample_with_info(B, gen(30), dtype=torch.float64)
    assert mask[-1].all() and mask[:-1].sum() == 0
    # bits recovered from the bump channels; label = 1 iff a == b
    a = (x[:100, :, 0].mean(0) > 0.5).long()
    b = (x[800:, :, 1].mean(0) > 0.5).long()
    assert torch.equal(torch.stack([a, b], 1), info["bits"])
    assert torch.equal(y[-1], (a == b).long()) and (y == y[-1]).all()
    # baseline 0.02 with N(0, 0.01²) noise wherever there is no bump
    quiet = torch.cat([x[100:, :, 0].flatten(), x[:800, :, 1].flatten()])
    n = quiet.numel()
    assert_within_se(float(quiet.mean()), 0.02, 0.01 / math.sqrt(n))
    assert_within_se(float(quiet.std()), 0.01, 0.01 / math.sqrt(2 * (n - 1)))
    # the bump shape itself (noise-free variant)
    clean = dataclasses.replace(task, noise_std=0.0)
    xc, _, _, ic = clean.sample_with_info(8, gen(31), dtype=torch.float64)
    for j in range(8):
        expect_a = 0.02 + bump * ic["bits"][j, 0]
        torch.testing.assert_close(xc[:100, j, 0], expect_a)


@pytest.mark.parametrize(("level", "d"), [(0, 3), (1, 10), (2, 4)])
def test_hierarchical_xor_target_mask_and_stream(level, d):
    task = HierarchicalDelayedXOR(level=level, delay_steps=d, n_steps=60 if level != 1 else 300)
    T, B = task.n_steps, 16
    x, y, mask, info = task.sample_with_info(B, gen(40 + level))
    s = info["stream"]
    assert set(s.unique().tolist()) == {0, 1}
    assert torch.equal(x[..., 0], s.float())  # I1 = 1
    t0 = d * 2**level
    assert mask[t0:].all() and mask[:t0].sum() == 0
    for b in range(B):
        for t in range(t0, T):
            parity = 0
            for k in range(1, 2**level + 1):  # lags d, 2d, ..., 2^h d
                parity ^= int(s[t - k * d, b])
            assert int(y[t, b]) == parity
    if level == 0:
        assert torch.equal(y[d:], s[:-d])  # copy task
    assert (y[:t0] == 0).all()
    # target is balanced (every lag is an independent fair bit)
    vals = y[t0:].double().flatten()
    assert_within_se(float(vals.mean()), 0.5, math.sqrt(0.25 / vals.numel()), k=4.0)


# ----------------------------------------------------------------------------------------------------------------
# sequential digits


def test_sequential_digits_split_rows_and_labels():
    from sklearn.datasets import load_digits

    data = load_digits()
    train, test = SequentialDigits(split="train"), SequentialDigits(split="test")
    tr_x, tr_y = train.data()
    te_x, te_y = test.data()
    assert (tr_x.shape[0], te_x.shape[0]) == (1437, 360)
    # the split is a partition of the 1797 images
    all_x = torch.as_tensor(data.images, dtype=torch.float64) / 16
    keys = {tuple(im.flatten().tolist()) + (int(lab),) for im, lab in zip(all_x, data.target)}
    tr_keys = [tuple(im.flatten().tolist()) + (int(lab),) for im, lab in zip(tr_x, tr_y)]
    te_keys = [tuple(im.flatten().tolist()) + (int(lab),) for im, lab in zip(te_x, te_y)]
    assert set(tr_keys) | set(te_keys) <= keys
    assert len(tr_keys) + len(te_keys) == 1797
    x, y, mask, info = test.sample_with_info(32, gen(50), dtype=torch.float64)
    assert x.shape == (8, 32, 8) and x.min() >= 0 and x.max() <= 1
    for b in range(32):
        i = int(info["index"][b])
        assert torch.equal(x[:, b, :], te_x[i])  # row t of the image at step t
        assert int(y[-1, b]) == int(te_y[i])
    assert mask[-1].all() and mask[:-1].sum() == 0
    assert torch.equal(SequentialDigits(split="test").data()[1], te_y)  # deterministic split


def test_pattern_amplitude_and_sample_dtype_are_checked():
    from spikelearn.tasks.patterns import PatternGeneration

    with pytest.raises(ValueError, match="amplitude_max"):
        PatternGeneration(amplitude_min=0.0, amplitude_max=0.0)
    task = PatternGeneration()
    with pytest.raises(ValueError, match="floating torch dtype"):
        task.sample(2, torch.Generator().manual_seed(0), dtype=torch.int64)
