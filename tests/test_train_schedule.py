"""Trainer options that are off by default: lr schedule, L2 weight penalty, early stopping (ALGORITHMS.md §4.4,
§9.1, §10.1). Off means today's behaviour, bit for bit; on, each does what its closed form says, survives a
kill-and-resume exactly, and bad values are ConfigErrors naming section and key."""

import copy
import dataclasses
import functools
import json
import math

import pytest
import torch

from spikelearn.config import (CircuitConfig, ConfigError, ModelConfig, OptimizerConfig, RuleConfig, RunConfig,
                               TaskConfig, TrainConfig, config_from_dict)
from spikelearn.build import build, train, validate_config
from spikelearn.train import CHECKPOINT, Measurement

NEW_OPTIMIZER_KEYS = ("schedule", "schedule_options")
NEW_TRAIN_KEYS = ("l2", "stop_at_accuracy")


def _cfg(out, *, optimizer=None, rule="bptt", model=None, circuit=None, dtype="float32", **train_kw):
    return RunConfig(
        circuit=circuit or CircuitConfig(kind="gaussian", n=32, options={"g": 1.0}),
        model=model or ModelConfig(type="rate", options={"form": "richlazy", "activation": "relu"}),
        task=TaskConfig(name="delayed_match_to_sample"),
        rule=RuleConfig(name=rule),
        optimizer=optimizer or OptimizerConfig(name="adam", lr=1e-2),
        train=TrainConfig(**{"iterations": 12, "batch_size": 16, "seed": 3, "eval_every": 4, "quiet": True,
                             "dtype": dtype, "out_dir": str(out), **train_kw}),
    )


def _old_dict(cfg: RunConfig) -> dict:
    """``cfg`` as a configuration written before these options existed (their keys absent)."""
    d = cfg.to_dict()
    for k in NEW_OPTIMIZER_KEYS:
        del d["optimizer"][k]
    for k in NEW_TRAIN_KEYS:
        del d["train"][k]
    return d


def _capture_steps(trainer):
    """Record, at every optimizer step, the lr in the param group and every parameter's value and gradient."""
    steps = []
    step = trainer.optimizer.step

    @functools.wraps(step)  # keeps the scheduler's mark on its own wrapper of step (else torch warns)
    def wrapped(*a, **k):
        before = {n: (p.detach().clone(), None if p.grad is None else p.grad.detach().clone())
                  for n, p in trainer.model.named_parameters()}
        out = step(*a, **k)
        after = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        steps.append({"lr": trainer.optimizer.param_groups[0]["lr"], "before": before, "after": after})
        return out

    trainer.optimizer.step = wrapped
    return steps


# ---------------------------------------------------------------------------------------------- off = unchanged

def test_options_off_train_exactly_as_a_config_without_them(tmp_path):
    """A configuration without the new keys (as written before they existed) and one with every new option
    explicitly off give the same run id, the same history columns and bit-identical losses and weights."""
    explicit_off = _cfg(tmp_path / "off", optimizer=OptimizerConfig(name="adam", lr=1e-2, schedule="",
                                                                   schedule_options={}),
                        l2=0.0, stop_at_accuracy=0.0)
    without = config_from_dict(_old_dict(dataclasses.replace(
        explicit_off, train=dataclasses.replace(explicit_off.train, out_dir=str(tmp_path / "old")))))
    assert without.optimizer.schedule == "" and without.train.l2 == 0.0 and without.train.stop_at_accuracy == 0.0

    from spikelearn.sweep.spec import run_id

    old_style = _old_dict(explicit_off)
    assert run_id(explicit_off) == run_id(without) == run_id(old_style)
    h_off, m_off = train(explicit_off)
    h_old, m_old = train(without)
    assert list(h_off.columns) == list(h_old.columns)
    assert not {"lr", "l2_penalty"} & set(h_off.columns)
    assert h_off["loss"].tolist() == h_old["loss"].tolist()
    assert h_off["iteration"].tolist() == list(range(1, 13))
    for (n, p), (_, q) in zip(m_off.named_parameters(), m_old.named_parameters()):
        assert torch.equal(p, q), n
    assert "stopped_at" not in json.loads((tmp_path / "off" / "summary.json").read_text())


def test_measurement_named_lr_is_only_reserved_with_a_schedule(tmp_path):
    hook = Measurement("lr", lambda m, t, it: 1.0, every=1)
    *_, trainer = build(_cfg(tmp_path / "a", iterations=2))
    trainer.measurements = (hook,)
    assert trainer.run()["lr"].tolist() == [1.0, 1.0]
    *_, trainer = build(_cfg(tmp_path / "b", iterations=2, optimizer=OptimizerConfig(
        lr=1e-2, schedule="exponentiallr", schedule_options={"gamma": 0.9})))
    trainer.measurements = (hook,)
    with pytest.raises(ValueError, match=r"writes column\(s\) \['lr'\]"):
        trainer.run()


# ---------------------------------------------------------------------------------------------- lr schedule

def test_steplr_uses_the_closed_form_rate_at_every_iteration(tmp_path):
    """lr × γ every k iterations (§4.4 with k = 3, γ = 0.5): iteration i (1-based) steps with lr0·γ^⌊(i−1)/k⌋ — the
    rate in the param group at each optimizer step, the one the SGD update actually applied, and column ``lr``."""
    lr0, k, gamma = 0.05, 3, 0.5
    cfg = _cfg(tmp_path, iterations=10, dtype="float64", optimizer=OptimizerConfig(
        name="sgd", lr=lr0, schedule="StepLR", schedule_options={"step_size": k, "gamma": gamma}))
    *_, trainer = build(cfg)
    steps = _capture_steps(trainer)
    hist = trainer.run()
    expected = [lr0 * gamma ** ((i - 1) // k) for i in range(1, 11)]
    assert [s["lr"] for s in steps] == pytest.approx(expected, rel=1e-15, abs=0)
    assert hist["lr"].tolist() == pytest.approx(expected, rel=1e-15, abs=0)
    for i, s in enumerate(steps):  # plain SGD: θ ← θ − lr·g with exactly that lr
        for n, (p, g) in s["before"].items():
            assert torch.equal(s["after"][n], p.clone().add_(g, alpha=-expected[i])), (i, n)


def test_schedule_and_l2_resume_bit_identically(tmp_path):
    """A killed run with a schedule and an L2 penalty (local rule, Adam) resumes exactly: scheduler state is in
    the checkpoint (the schedule's steps fall at different iterations than the checkpoint's)."""
    def cfg(out):
        return _cfg(out, iterations=12, checkpoint_every=5, rule="rflo", l2=1e-2,
                    model=ModelConfig(type="rate", options={"form": "pre_activation", "activation": "tanh"}),
                    optimizer=OptimizerConfig(name="adam", lr=1e-2, schedule="steplr",
                                              schedule_options={"step_size": 3, "gamma": 0.5}))

    full, m_full = train(cfg(tmp_path / "full"))
    *_, trainer = build(cfg(tmp_path / "killed"))
    trainer.run(iterations=5)
    assert torch.load(tmp_path / "killed" / CHECKPOINT, weights_only=True)["scheduler"]["last_epoch"] == 5
    torch.manual_seed(999)
    hist, m_res = train(cfg(tmp_path / "killed"), resume=True)
    assert hist["loss"].tolist() == full["loss"].tolist()
    assert hist["lr"].tolist() == full["lr"].tolist()
    assert hist["l2_penalty"].tolist() == full["l2_penalty"].tolist()
    for (n, p), (_, q) in zip(m_full.named_parameters(), m_res.named_parameters()):
        assert torch.equal(p, q), n


_SCHEDULE_OPTIONS = {"steplr": {"step_size": 2}, "multisteplr": {"milestones": [1, 3]}, "constantlr": {},
                     "linearlr": {}, "exponentiallr": {"gamma": 0.9}, "polynomiallr": {},
                     "cosineannealinglr": {"T_max": 4}, "cycliclr": {"base_lr": 1e-3, "max_lr": 1e-2},
                     "cosineannealingwarmrestarts": {"T_0": 2}, "onecyclelr": {"max_lr": 1e-2, "total_steps": 10}}


@pytest.mark.parametrize("name", sorted(_SCHEDULE_OPTIONS))
def test_every_offered_scheduler_builds_and_checkpoints(tmp_path, name):
    """Each scheduler the config offers builds from TOML-able options and its state survives a weights_only
    checkpoint: after restoring, it continues with the same rates as the uninterrupted one."""
    from spikelearn.build import scheduler_classes as _scheduler_classes

    assert name in _scheduler_classes()
    cfg = _cfg(tmp_path, optimizer=OptimizerConfig(name="sgd", lr=1e-2, options={"momentum": 0.9}, schedule=name,
                                                   schedule_options=_SCHEDULE_OPTIONS[name]))
    *_, opt, trainer = build(cfg, out_dir=None)
    *_, opt2, trainer2 = build(cfg, out_dir=None)
    for _ in range(3):
        opt.step()
        trainer.scheduler.step()
    torch.save({"o": opt.state_dict(), "s": trainer.scheduler.state_dict()}, tmp_path / "s.pt")
    ck = torch.load(tmp_path / "s.pt", weights_only=True)
    opt2.load_state_dict(ck["o"])
    trainer2.scheduler.load_state_dict(ck["s"])
    for _ in range(4):
        opt.step(), opt2.step()
        trainer.scheduler.step(), trainer2.scheduler.step()
        assert opt.param_groups[0]["lr"] == opt2.param_groups[0]["lr"]


def test_unusable_schedulers_are_not_offered():
    from spikelearn.build import scheduler_classes as _scheduler_classes

    offered = _scheduler_classes()
    for name in ("lambdalr", "multiplicativelr", "sequentiallr", "chainedscheduler", "reducelronplateau",
                 "lrscheduler"):
        assert name not in offered
    with pytest.raises(ConfigError, match=r"\[optimizer\] schedule 'LambdaLR' unknown.*steplr"):
        validate_config(RunConfig(optimizer=OptimizerConfig(schedule="LambdaLR")))


# ---------------------------------------------------------------------------------------------- L2 penalty

def _dale_cfg(out, rule, model_type, **kw):
    model = (ModelConfig(type="rate", options={"form": "pre_activation", "activation": "tanh"}) if model_type == "rate"
             else ModelConfig(type="spiking"))
    kw = {"iterations": 1, "eval_every": 0, **kw}
    return _cfg(out, rule=rule, model=model, circuit=CircuitConfig(kind="dale", n=20, options={"p": 0.3}),
                dtype="float64", optimizer=OptimizerConfig(name="sgd", lr=1e-2), **kw)


def _penalty(model, l2):
    W = model.effective_weights()
    return 0.5 * l2 * (W.W_in.square().sum() + W.W_rec.square().sum() + W.W_out.square().sum())


@pytest.mark.parametrize("rule, model_type", [("bptt", "rate"), ("rflo", "rate"), ("eprop", "spiking")])
def test_l2_gradient_is_rule_gradient_plus_autograd_of_the_penalty(tmp_path, rule, model_type):
    """On a sign-constrained (Dale), sparse circuit: the gradient the trainer applies is the rule's own gradient
    plus autograd of l2/2 (‖W_in‖² + ‖W_rec‖² + ‖W_out‖²) on the effective weights — for BPTT that is autograd of
    task loss + penalty; biases get no penalty; and the penalty's gradient on θ is l2·M⊙θ (|W| = |θ| on edges)."""
    l2 = 0.05
    *_, trainer = build(_dale_cfg(tmp_path, rule, model_type, l2=l2))
    model, task = trainer.model, trainer.task
    assert (model.sign_rec != 0).any()  # the parametrisation W = S|θ| is in play
    gen = torch.Generator().manual_seed(0)
    gen.set_state(trainer.trial_gen.get_state())
    x, y, mask = task.sample(trainer.config.batch_size, gen, dtype=torch.float64)
    ref_model, ref_rule = copy.deepcopy(model), copy.deepcopy(trainer.rule)
    steps = _capture_steps(trainer)
    hist = trainer.run()
    applied = {n: g for n, (_, g) in steps[0]["before"].items()}

    _, rule_grads = ref_rule.gradients(ref_model, x, y, mask, task.loss)
    params = dict(ref_model.named_parameters())
    pen = _penalty(ref_model, l2)
    pen_grads = dict(zip(params, torch.autograd.grad(pen, list(params.values()), allow_unused=True)))
    assert pen_grads["b_out"] is None
    for n in params:
        want = rule_grads[n] + (pen_grads[n] if pen_grads[n] is not None else 0)
        torch.testing.assert_close(applied[n], want, rtol=1e-12, atol=1e-15, msg=n)
    torch.testing.assert_close(pen_grads["theta_rec"], l2 * ref_model.mask_rec * ref_model.theta_rec,
                               rtol=1e-14, atol=0)
    if rule == "bptt":  # the whole objective by autograd
        ref2 = copy.deepcopy(ref_model)
        p2 = dict(ref2.named_parameters())
        total = task.loss(ref2(x).y, y, mask) + _penalty(ref2, l2)
        for n, g in zip(p2, torch.autograd.grad(total, list(p2.values()))):
            torch.testing.assert_close(applied[n], g, rtol=1e-10, atol=1e-14, msg=n)
    # logged: the task loss as before, and the penalty at the weights the iteration started from
    with torch.no_grad():
        task_loss = float(task.loss(ref_model(x).y, y, mask))
    assert hist["loss"].iloc[0] == pytest.approx(task_loss, rel=1e-12)
    assert hist["l2_penalty"].iloc[0] == pytest.approx(float(pen.detach()), rel=1e-12)


def test_l2_leaves_alone_what_the_rule_leaves_alone(tmp_path):
    """The penalty is added only to the parameters the rule's gradient names: a rule that does not train W_in
    keeps it, penalty or not."""
    *_, trainer = build(_dale_cfg(tmp_path, "bptt", "rate", l2=0.5, iterations=3))
    inner = trainer.rule

    class NoInput:
        def gradients(self, model, x, y, mask, loss_fn):
            loss, grads = inner.gradients(model, x, y, mask, loss_fn)
            return loss, {n: g for n, g in grads.items() if n != "theta_in"}

    trainer.rule = NoInput()
    w_in, w_rec = trainer.model.theta_in.detach().clone(), trainer.model.theta_rec.detach().clone()
    trainer.run()
    assert torch.equal(trainer.model.theta_in, w_in)
    assert not torch.equal(trainer.model.theta_rec, w_rec)


# ---------------------------------------------------------------------------------------------- early stopping

def test_early_stop_at_the_first_evaluation_meeting_the_criterion(tmp_path):
    """Training stops right after the first evaluation with accuracy >= threshold: the history is the full run's
    up to there, the checkpoint, summary and measurements say so, and resuming (even with more iterations)
    trains no further. A run killed before the stop resumes into the same stop."""
    full, _ = train(_cfg(tmp_path / "full", iterations=20, eval_every=2))
    ev = full.dropna(subset=["accuracy"])
    thr = float(ev["accuracy"].iloc[:-1].max())  # met before the last evaluation
    assert thr > 0
    stop = int(ev.loc[ev["accuracy"] >= thr, "iteration"].iloc[0])
    assert stop < 20

    cfg = _cfg(tmp_path / "stop", iterations=20, eval_every=2, checkpoint_every=1, stop_at_accuracy=thr)
    calls = []
    probe = Measurement("probe", lambda m, t, it: calls.append(it) or 1.0, every=1000)
    hist, model = train(cfg, measurements=(probe,))
    assert hist["iteration"].tolist() == list(range(1, stop + 1))
    assert hist["loss"].tolist() == full["loss"].iloc[:stop].tolist()
    assert hist["accuracy"].iloc[-1] >= thr and (hist["accuracy"].iloc[:-1].dropna() < thr).all()
    assert calls == [stop]  # the final model is measured, as at a run's normal end
    ck = torch.load(tmp_path / "stop" / CHECKPOINT, weights_only=True)
    assert ck["iteration"] == stop and ck["stopped_at"] == stop
    summary = json.loads((tmp_path / "stop" / "summary.json").read_text())
    assert summary["stopped_at"] == stop and summary["iteration"] == stop

    longer = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, iterations=40))
    hist2, model2 = train(longer, resume=True)
    assert hist2["loss"].tolist() == hist["loss"].tolist()
    for (n, p), (_, q) in zip(model.named_parameters(), model2.named_parameters()):
        assert torch.equal(p, q), n

    if stop > 2:  # killed before the stop: the resumed run stops at the same evaluation, bit-identically
        *_, trainer = build(_cfg(tmp_path / "killed", iterations=20, eval_every=2, checkpoint_every=1,
                                 stop_at_accuracy=thr))
        trainer.run(iterations=stop - 2)
        hist3, _ = train(_cfg(tmp_path / "killed", iterations=20, eval_every=2, checkpoint_every=1,
                              stop_at_accuracy=thr), resume=True)
        assert hist3["loss"].tolist() == hist["loss"].tolist()


def test_a_sweep_run_that_stopped_early_is_done(tmp_path):
    """The sweep worker records an early-stopped run as done; run again it resumes from the stop and trains no
    further."""
    from spikelearn.sweep.worker import run_one

    cfg = _cfg(tmp_path / "unused", iterations=30, eval_every=5, stop_at_accuracy=1e-9)  # met at iteration 1
    res = run_one("r1", cfg.to_dict(), str(tmp_path / "r1"))
    assert res["status"] == "done", res["error"]
    assert res["summary"]["iteration"] == 1
    again = run_one("r1", cfg.to_dict(), str(tmp_path / "r1"))
    assert again["status"] == "done" and again["resumed_from"] == 1 and again["summary"]["iteration"] == 1


# ---------------------------------------------------------------------------------------------- validation

@pytest.mark.parametrize("change, match", [
    ({"optimizer": {"schedule": "warp"}}, r"\[optimizer\] schedule 'warp' unknown"),
    ({"optimizer": {"schedule": "steplr", "schedule_options": {"step": 3}}},
     r"'step'.*\[optimizer\.schedule_options\]"),
    ({"optimizer": {"schedule": "steplr"}}, r"\[optimizer\.schedule_options\] misses 'step_size'"),
    ({"optimizer": {"schedule": "steplr", "schedule_options": {"step_size": 3, "last_epoch": 7}}},
     r"'last_epoch'.*\[optimizer\.schedule_options\]"),
    ({"optimizer": {"schedule_options": {"gamma": 0.5}}}, r"\[optimizer\] schedule_options .*no schedule"),
    ({"optimizer": {"schedule": "steplr", "schedule_options": 3}}, r"\[optimizer\] schedule_options must be a table"),
    ({"optimizer": {"schedule": 1}}, r"\[optimizer\] schedule must be a string"),
    ({"train": {"l2": -1e-3}}, r"\[train\] l2 must be >= 0"),
    ({"train": {"l2": "big"}}, r"\[train\] l2 must be a number"),
    ({"train": {"stop_at_accuracy": 1.5}}, r"\[train\] stop_at_accuracy must be in \[0, 1\]"),
    ({"train": {"stop_at_accuracy": -0.5}}, r"\[train\] stop_at_accuracy must be in \[0, 1\]"),
    ({"train": {"stop_at_accuracy": 0.9, "eval_every": 0}}, r"\[train\] stop_at_accuracy .*eval_every"),
])
def test_bad_values_are_config_errors_naming_section_and_key(change, match):
    with pytest.raises(ConfigError, match=match):
        validate_config(config_from_dict(change))


def test_bad_scheduler_values_are_config_errors_when_built():
    from spikelearn.build import check_build

    with pytest.raises(ConfigError, match=r"\[optimizer\] building OneCycleLR"):
        check_build(RunConfig(circuit=CircuitConfig(n=8), optimizer=OptimizerConfig(
            schedule="onecyclelr", schedule_options={"max_lr": 0.1})))


def test_resume_may_not_switch_on_an_option_the_run_started_without(tmp_path):
    """A checkpoint written before these keys existed counts as having them at their defaults: resuming it as is
    works; resuming it with a schedule, an L2 penalty or a stop criterion switched on is refused, naming the key."""
    cfg = _cfg(tmp_path, iterations=4, checkpoint_every=2)
    train(cfg)
    ck_path = tmp_path / CHECKPOINT
    ck = torch.load(ck_path, weights_only=True)
    ck["run_config"] = json.dumps(_old_dict(cfg))  # as an older spikelearn wrote it
    torch.save(ck, ck_path)
    for changed, key in [
            (dataclasses.replace(cfg, optimizer=dataclasses.replace(cfg.optimizer, schedule="exponentiallr",
                                                                    schedule_options={"gamma": 0.5})),
             "optimizer.schedule"),
            (dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, l2=1e-3)), "train.l2"),
            (dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, stop_at_accuracy=0.5)),
             "train.stop_at_accuracy")]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            train(changed, resume=True)
    longer = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, iterations=6))
    hist, _ = train(longer, resume=True)
    assert hist["iteration"].tolist() == list(range(1, 7)) and not math.isnan(hist["loss"].iloc[-1])
