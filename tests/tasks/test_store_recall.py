"""Store-recall task (ALGORITHMS.md §10.3): layout, validity, display, targets, mask, rates, scoring, seeding.

Everything checked against the sequence is recomputed here from ``info["chars"]`` or from the spikes themselves,
independently of the generator's own bookkeeping.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from spikelearn.tasks import TASKS, StoreRecall, classification_loss, make_task

BIT0, BIT1, STORE, RECALL = 0, 1, 2, 3


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_within_se(estimate: float, expected: float, se: float, k: float = 3.0) -> None:
    assert abs(estimate - expected) <= k * se, f"{estimate} vs {expected} (±{k}·{se})"


def groups_on(task: StoreRecall, x: torch.Tensor) -> torch.Tensor:
    """``(B, L, 4)`` bool: which symbol groups emitted at least one spike during each character."""
    L, S, G = task.n_characters, task.steps_per_character, task.n_per_group
    T, B, _ = x.shape
    counts = x.reshape(L, S, B, 4, G).sum((1, 4))  # (L, B, 4)
    return (counts > 0).permute(1, 0, 2)


def stored_bits(chars: list[int]) -> list[int | None]:
    """Per character, the bit that followed the most recent store at or before it (None before any store)."""
    out, held = [], None
    for t, c in enumerate(chars):
        if c == STORE:
            held = chars[t + 1]
        out.append(held)
    return out


def test_defaults_are_the_published_parameters():
    task = make_task("store_recall")
    assert TASKS["store_recall"] is StoreRecall
    assert (task.n_in, task.n_out, task.n_per_group) == (100, 2, 25)
    assert (task.n_characters, task.character_ms, task.dt_ms) == (12, 200.0, 1.0)
    assert task.steps_per_character == 200 and task.n_steps == 2400
    assert task.rate_hz == 50.0 and task.p_store_recall == pytest.approx(1 / (1 + 6))
    assert task.p_flip == 0.5 and task.encoding == "bernoulli" and task.kind == "classification"


def test_shapes_and_dtypes():
    task = StoreRecall()
    B = 6
    x, y, mask, info = task.sample_with_info(B, gen(0))
    assert x.shape == (2400, B, 100) and x.dtype == torch.float32
    assert y.shape == (2400, B) and y.dtype == torch.int64 and set(y.unique().tolist()) <= {0, 1}
    assert mask.shape == (2400, B) and mask.dtype == torch.float32
    for key in ("chars", "shown_bit", "flipped", "memory"):
        assert info[key].shape == (B, 12)
    assert set(x.unique().tolist()) <= {0.0, 1.0}


def test_every_trial_is_valid_and_targets_mask_follow_the_stores():
    task = StoreRecall()
    B = 256
    x, y, mask, info = task.sample_with_info(B, gen(1), dtype=torch.float64)
    S = task.steps_per_character
    chars = info["chars"]
    assert set(chars.unique().tolist()) <= {BIT0, BIT1, STORE, RECALL}
    n_recall_chars = 0
    for b in range(B):
        c = chars[b].tolist()
        commands = [s for s in c if s in (STORE, RECALL)]
        # stores and recalls alternate, starting with a store and ending with a recall
        assert len(commands) >= 2 and commands == [STORE, RECALL] * (len(commands) // 2), c
        # a bit follows every store
        for t, s in enumerate(c):
            if s == STORE:
                assert t + 1 < len(c) and c[t + 1] in (BIT0, BIT1), c
        held = stored_bits(c)
        for t, s in enumerate(c):
            window = slice(t * S, (t + 1) * S)
            if s == RECALL:
                n_recall_chars += 1
                # target on every step of a recall character: the bit after the most recent store
                assert (y[window, b] == held[t]).all()
                assert (mask[window, b] == 1).all()
            else:
                assert (mask[window, b] == 0).all()
        assert info["memory"][b].tolist() == [-1 if h is None else h for h in held]
    assert mask.sum() == n_recall_chars * S
    # the stored bits are fair coin flips (validity does not depend on the bit values)
    first_after_store = torch.cat([chars[b, 1:][chars[b, :-1] == STORE] for b in range(B)]).double()
    n = first_after_store.numel()
    assert_within_se(float(first_after_store.mean()), 0.5, math.sqrt(0.25 / n))


def test_store_copies_the_bit_and_the_next_character_is_flipped_half_the_time():
    task = StoreRecall()
    B = 256
    x, _, _, info = task.sample_with_info(B, gen(2), dtype=torch.float64)
    on = groups_on(task, x)  # recovered from the spikes: (B, L, 4)
    chars, flipped = info["chars"], info["flipped"]
    # the command groups fire exactly on their characters
    assert torch.equal(on[..., STORE], chars == STORE)
    assert torch.equal(on[..., RECALL], chars == RECALL)
    n_flip_candidates, n_flipped = 0, 0
    for b in range(B):
        c = chars[b].tolist()
        for t, s in enumerate(c):
            bit_groups = on[b, t, :2].tolist()
            if s == RECALL:
                assert bit_groups == [False, False]
            elif s == STORE:
                # during the store the bit channels show the true bit of the next character
                assert bit_groups == [c[t + 1] == 0, c[t + 1] == 1]
            else:
                shown = bit_groups.index(True)
                assert sum(bit_groups) == 1
                if t > 0 and c[t - 1] == STORE:
                    n_flip_candidates += 1
                    n_flipped += shown != s
                    assert bool(flipped[b, t]) == (shown != s)
                else:
                    assert shown == s and not bool(flipped[b, t])
    assert int(flipped.sum()) == n_flipped
    assert_within_se(n_flipped / n_flip_candidates, 0.5, math.sqrt(0.25 / n_flip_candidates))
    # p_flip = 0: the bit after a store is shown as it is
    clean = dataclasses.replace(task, p_flip=0.0)
    xc, _, _, ic = clean.sample_with_info(64, gen(3), dtype=torch.float64)
    onc = groups_on(clean, xc)
    bits = ic["chars"] <= BIT1
    assert not ic["flipped"].any()
    assert torch.equal(onc[..., 1][bits], ic["chars"][bits] == 1)


def test_group_rates_within_binomial_bounds_and_silence_elsewhere():
    task = StoreRecall()
    B = 64
    x, _, _, info = task.sample_with_info(B, gen(4), dtype=torch.float64)
    S, G = task.steps_per_character, task.n_per_group
    symbol_on = torch.stack(
        [info["shown_bit"] == 0, info["shown_bit"] == 1, info["chars"] == STORE, info["chars"] == RECALL], -1
    )  # (B, L, 4), the display the spikes should follow
    active = symbol_on.permute(1, 0, 2).repeat_interleave(S, 0).repeat_interleave(G, -1)  # (T, B, n_in)
    assert x[~active].sum() == 0  # silent groups never fire
    p = 50.0 / 1000.0
    for g in range(4):  # each group separately at 50 Hz while on
        vals = x[:, :, g * G : (g + 1) * G][active[:, :, g * G : (g + 1) * G]]
        n = vals.numel()
        assert n > 10_000
        assert_within_se(float(vals.mean()), p, math.sqrt(p * (1 - p) / n))
    # Poisson counts: integer, can exceed 1, mean rate·dt
    loud = StoreRecall(encoding="poisson", rate_hz=1500.0, character_ms=20.0)
    xp, _, _, ip = loud.sample_with_info(64, gen(5), dtype=torch.float64)
    on_p = torch.stack(
        [ip["shown_bit"] == 0, ip["shown_bit"] == 1, ip["chars"] == STORE, ip["chars"] == RECALL], -1
    ).permute(1, 0, 2).repeat_interleave(20, 0).repeat_interleave(25, -1)
    vals = xp[on_p]
    assert (xp == xp.round()).all() and (vals > 1).any() and xp[~on_p].sum() == 0
    assert_within_se(float(vals.mean()), 1.5, math.sqrt(1.5 / vals.numel()))


def test_perfect_logits_score_one_and_loss_vanishes():
    task = StoreRecall(character_ms=20.0)
    x, y, mask, info = task.sample_with_info(32, gen(6), dtype=torch.float64)
    onehot = torch.nn.functional.one_hot(y, 2).to(torch.float64)
    perfect = 40.0 * (2 * onehot - 1)  # margin 80 nats: CE = log(1 + e^-80)
    assert task.accuracy(perfect, y, mask) == 1.0
    assert 0.0 <= float(task.loss(perfect, y, mask)) <= 1e-30  # CE = log(1 + e^-80) ≈ 2e-35
    assert task.accuracy(-perfect, y, mask) == 0.0
    assert float(task.loss(-perfect, y, mask)) == pytest.approx(80.0, rel=1e-12)
    # the loss is the masked CE averaged over recall steps only: logits outside recall do not matter
    r1 = torch.randn(perfect.shape, generator=gen(7), dtype=torch.float64)
    r2 = torch.where(mask[..., None] > 0, r1, 10 * torch.randn(perfect.shape, generator=gen(8), dtype=torch.float64))
    assert float(task.loss(r2, y, mask)) == float(task.loss(r1, y, mask))
    assert float(task.loss(r1, y, mask)) == float(classification_loss(r1, y, mask))


def test_accuracy_is_per_recall_character_from_averaged_logits():
    task = StoreRecall(character_ms=10.0)
    B = 64
    x, y, mask, info = task.sample_with_info(B, gen(8), dtype=torch.float64)
    S, L = task.steps_per_character, task.n_characters
    chars = info["chars"]
    recall = chars == RECALL
    n_recall = int(recall.sum())
    # one very confident correct step per recall character outvotes its nine mildly wrong steps
    logits = torch.zeros(task.n_steps, B, 2, dtype=torch.float64)
    for b in range(B):
        for t in range(L):
            if recall[b, t]:
                lab = int(y[t * S, b])
                logits[t * S : (t + 1) * S, b, 1 - lab] = 1.0
                logits[t * S, b, lab] = 100.0
                logits[t * S, b, 1 - lab] = 0.0
    assert task.accuracy(logits, y, mask) == 1.0
    # correct on the first recall character of each trial only: accuracy = trials / recall characters
    first_only = -logits.clone()
    for b in range(B):
        t = int(recall[b].nonzero()[0])
        first_only[t * S : (t + 1) * S, b] = logits[t * S : (t + 1) * S, b]
    assert task.accuracy(first_only, y, mask) == pytest.approx(B / n_recall)
    with pytest.raises(ValueError, match="steps"):
        task.accuracy(logits[:-1], y[:-1], mask[:-1])


def test_minimal_sequence_length_and_seeding():
    tiny = StoreRecall(n_characters=3, character_ms=5.0)
    _, y, mask, info = tiny.sample_with_info(50, gen(9))
    assert (info["chars"][:, 0] == STORE).all() and (info["chars"][:, 2] == RECALL).all()
    assert torch.equal(y[-1], info["chars"][:, 1]) and mask[-5:].all() and mask[:-5].sum() == 0
    task = StoreRecall(character_ms=20.0)
    a, b, c = (task.sample_with_info(16, gen(s)) for s in (10, 10, 11))
    for u, v in zip(a[:3], b[:3]):
        assert torch.equal(u, v)
    assert all(torch.equal(a.info[k], b.info[k]) for k in a.info)
    assert not torch.equal(a.info["chars"], c.info["chars"])


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"n_characters": 2}, "n_characters"),
        ({"n_characters": 12.0}, "n_characters"),
        ({"n_per_group": 0}, "n_per_group"),
        ({"character_ms": 0.0}, "character_ms"),
        ({"character_ms": 10.5}, "character_ms"),
        ({"rate_hz": -1.0}, "rate_hz"),
        ({"rate_hz": 2000.0}, "rate_hz"),  # p > 1 for Bernoulli spikes
        ({"p_store_recall": 0.0}, "p_store_recall"),
        ({"p_store_recall": 1.0}, "p_store_recall"),
        ({"p_flip": 1.5}, "p_flip"),
        ({"encoding": "gaussian"}, "encoding"),
        ({"dt_ms": 0.0}, "dt_ms"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(kwargs, param):
    with pytest.raises(ValueError, match=param):
        make_task("store_recall", **kwargs)


def test_high_rate_allowed_for_poisson_counts_only():
    assert StoreRecall(rate_hz=2000.0, encoding="poisson").rate_hz == 2000.0
    with pytest.raises(ValueError, match="batch_size"):
        StoreRecall().sample(0, gen(0))
