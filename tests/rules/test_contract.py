"""The learning-rule contract, asserted once for every registered rule (``spikelearn.rules.RULES``) on every model
type its instance declares (``rule.model_types``), plus a few configurations per rule (feedback kinds, online mode,
adaptive feedback, wrapped rules).

What every rule must do (module docstring of :mod:`spikelearn.rules.base`):

* registry: ``make_rule(name)`` builds an instance of ``RULES[name]``; the instance declares a non-empty tuple of
  model types from ``("rate", "spiking")`` (asked of the instance: ``Flossed`` computes it); unknown rule names and
  unknown options are refused, a bogus value of a string option raises ``ValueError`` quoting it;
* hyperparameters: frozen (no attribute can be set), equality and hashing by value, unchanged by a gradient call;
* ``loss, grads = rule.gradients(model, x, y, mask, loss_fn)``: a detached finite scalar loss equal to the task loss
  of the model's run (not for the reward rule, whose loss is that of its noisy run); gradients keyed by
  ``named_parameters`` names, one per trainable parameter, of the parameter's shape and dtype (float64 and
  float32), detached, finite, not all zero; zero on absent recurrent, input and readout edges; the model untouched
  (parameters, buffers, ``.grad``); deterministic (the same instance again, and an equal fresh instance);
* ``apply_gradients`` + a ``torch.optim`` optimizer train the model: absent edges stay absent, Dale's signs (recurrent
  and input) hold, the weights move;
* an undeclared model type (and, for the rules that read model internals, any other module) raises ``TypeError``
  naming the model's type;
* no hidden cross-call state; explicit rule state (``init_state`` / ``update``): the first update equals
  ``gradients``, ``update`` leaves the state it is given unchanged, the returned state carries on.

Tiny models (N = 16, T = 20, B = 4) on a short evidence-accumulation task.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import pytest
import torch

from spikelearn.circuit import dale
from spikelearn.models import RateRNN, SpikingRNN
from spikelearn.rules import RULES, apply_gradients, make_rule
from spikelearn.tasks import make_task

KINDS = ("rate", "spiking")


class Case(NamedTuple):
    name: str            # registry name
    options: dict        # make_rule options
    tag: str             # short id of the configuration
    only: tuple = KINDS  # model types this configuration supports (a subset of the declared ones)
    stateful: str = ""   # cross-call state kept in the rule today: "feedback" (adaptive feedback matrix) or
    #                      "noise" (reward baseline and noise generator: even an unchanged model gets new gradients)


# Every registered rule's default configuration (checked to cover RULES below), then further configurations.
CASES = [
    Case("bptt", {}, "default"),
    Case("tbptt", {"k": 5}, "default"),
    Case("tbptt", {"k": 5, "mode": "sliding"}, "sliding"),
    Case("eprop", {}, "default"),
    Case("eprop", {"feedback": "random", "mode": "online", "chunk_steps": 9}, "random-online"),
    Case("eprop", {"feedback": "adaptive", "reset_in_trace": True, "reg_coeff": 1.0}, "adaptive-reg",
         stateful="feedback"),
    Case("rflo", {}, "default"),
    Case("rflo", {"feedback": "symmetric", "mode": "online", "chunk_steps": 6}, "symmetric-online"),
    Case("rflo", {"feedback": "adaptive"}, "adaptive", stateful="feedback"),
    Case("mdgl", {}, "default"),
    Case("mdgl", {"variant": "online", "mode": "online", "chunk_steps": 7}, "online", only=("spiking",)),
    Case("modprop", {}, "default"),
    Case("modprop", {"mode": "online", "chunk_steps": 7}, "online", only=("rate",)),
    Case("reward", {"seed": 1}, "default", stateful="noise"),
    Case("reward", {"seed": 1, "baseline": "batch"}, "batch-baseline", stateful="noise"),
    Case("flossed", {}, "default"),
    Case("flossed", {"base": "eprop", "weight": 0.5}, "eprop"),
    Case("flossed", {"base": "rflo", "config": {"mode": "local"}}, "rflo-local"),
]

# What each rule's default instance declares.
DECLARED = {"bptt": {"rate", "spiking"}, "tbptt": {"rate", "spiking"}, "eprop": {"spiking"}, "rflo": {"rate"},
            "mdgl": {"rate", "spiking"}, "modprop": {"rate", "spiking"}, "reward": {"rate", "spiking"},
            "flossed": {"rate", "spiking"}}
# Rules that only need ``model(x).y`` and so accept any module (BPTT reads the output only).
MODEL_AGNOSTIC = {"bptt", "tbptt"}
# The reward rule returns the loss of its noisy run, not of the model's own run.
NOISY_LOSS = {"reward"}


def _rule(case: Case):
    return make_rule(case.name, **case.options)


def _base_name(case: Case) -> str:
    """The rule that reads the model: the wrapped rule's name for ``flossed``."""
    return case.options.get("base", "bptt") if case.name == "flossed" else case.name


def _id(case: Case, kind: str | None = None) -> str:
    return f"{case.name}[{case.tag}]" + (f"-{kind}" if kind else "")


def _pairs():
    """``(case, kind)`` for every configuration and every model type its rule instance declares."""
    return [pytest.param(c, kind, id=_id(c, kind)) for c in CASES for kind in _rule(c).model_types if kind in c.only]


def _undeclared_pairs():
    return [pytest.param(c, kind, id=_id(c, kind)) for c in CASES for kind in KINDS
            if kind not in _rule(c).model_types]


def _cases():
    return [pytest.param(c, id=_id(c)) for c in CASES]


# ------------------------------------------------------------------------------------------------ model and data
TASK = make_task("evidence_accumulation", n_cues=1, n_per_group=2, cue_ms=8.0, gap_ms=2.0, delay_ms=4.0,
                 recall_ms=6.0, cue_rate_hz=300.0, recall_rate_hz=300.0, background_rate_hz=100.0)  # T = 20
N_IN, N_OUT = TASK.n_in, TASK.n_out
IN_SIGNS = [1.0] * (N_IN // 2) + [-1.0] * (N_IN - N_IN // 2)


def _model(kind: str, dtype: str = "float64"):
    """A Dale circuit with sparse recurrent, input and readout connectivity, signed inputs."""
    circuit = dale(16, 0.75, p=0.5, seed=3, n_in=N_IN, n_out=N_OUT, p_in=0.6, p_out=0.6, input_frac_exc=0.5)
    torch.manual_seed(0)
    common = dict(sign_constraint="dale", input_channel_sign=IN_SIGNS, dtype=dtype)
    if kind == "spiking":
        return SpikingRNN(circuit, N_IN, N_OUT, v_th=0.3, n_adaptive=8, n_ref=1, **common)
    return RateRNN(circuit, N_IN, N_OUT, form="pre_activation", activation="tanh", tau_ms=5.0, dt_ms=1.0, **common)


def _data(dtype=torch.float64):
    x, y, mask = TASK.sample(4, torch.Generator().manual_seed(0), dtype=torch.float64)
    return x.to(dtype), y, mask.to(dtype)


def _grads(rule, model, dtype=torch.float64):
    x, y, mask = _data(dtype)
    return rule.gradients(model, x, y, mask, TASK.loss)


def _assert_identical(a: dict, b: dict):
    assert a.keys() == b.keys()
    for n in a:
        assert torch.equal(a[n], b[n]), n


def _train(rule, model, steps=5):
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(steps):
        _, grads = _grads(rule, model)
        opt.zero_grad()
        apply_gradients(model, grads)
        opt.step()


_EDGES = (("W_rec", "mask_rec", "sign_rec"), ("W_in", "mask_in", "sign_in"), ("W_out", "mask_out", "sign_out"))


# ------------------------------------------------------------------------------------------------ registry
def test_cases_cover_the_registry():
    assert {c.name for c in CASES} == set(RULES) == set(DECLARED)
    assert all(any(c.name == n and c.tag == "default" for c in CASES) for n in RULES)


@pytest.mark.parametrize("case", _cases())
def test_registry_builds_and_declares_model_types(case):
    rule = _rule(case)
    assert isinstance(rule, RULES[case.name])
    types = rule.model_types  # asked of the instance (Flossed computes it from its base rule)
    assert isinstance(types, tuple) and types and set(types) <= set(KINDS), types
    if case.tag == "default":
        assert set(types) == DECLARED[case.name]
    assert isinstance(rule.online, bool)


def test_unknown_rule_name_lists_the_registered_rules():
    with pytest.raises(ValueError, match="registered rules"):
        make_rule("nope")


@pytest.mark.parametrize("case", _cases())
def test_unknown_option_is_refused(case):
    with pytest.raises(TypeError, match="bogus_option"):
        make_rule(case.name, **case.options, bogus_option=1)


@pytest.mark.parametrize("case", [p for p in _cases() if p.values[0].tag == "default"])
def test_bogus_string_option_values_raise_value_error(case):
    """Every option whose default is a string refuses a bogus value, at construction or at the first call."""
    defaults = [f for f in dataclasses.fields(RULES[case.name]) if f.init and isinstance(f.default, str)]
    for f in defaults:
        with pytest.raises(ValueError, match="'bogus'"):
            rule = make_rule(case.name, **{**case.options, f.name: "bogus"})
            for kind in rule.model_types:
                _grads(rule, _model(kind))


# ------------------------------------------------------------------------------------------------ hyperparameters
@pytest.mark.parametrize("case", _cases())
def test_hyperparameters_are_frozen(case):
    rule = _rule(case)
    for f in dataclasses.fields(rule):
        if f.init:
            with pytest.raises(dataclasses.FrozenInstanceError):
                setattr(rule, f.name, getattr(rule, f.name))
    with pytest.raises(dataclasses.FrozenInstanceError):
        rule.some_new_attribute = 1


@pytest.mark.parametrize("case", _cases())
def test_equality_and_hash_by_value(case):
    a, b = _rule(case), _rule(case)
    assert a == b and hash(a) == hash(b)
    others = [_rule(c) for c in CASES if c.name == case.name and c.tag != case.tag]
    assert all(o != a for o in others)
    h = hash(a)
    kind = next(k for k in a.model_types if k in case.only)
    _grads(a, _model(kind))
    assert a == b and hash(a) == h  # a gradient call changes no hyperparameter


# ------------------------------------------------------------------------------------------------ gradients
@pytest.mark.parametrize("case, kind", _pairs())
def test_gradients_contract(case, kind):
    rule, model = _rule(case), _model(kind)
    params = dict(model.named_parameters())
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    x, y, mask = _data()
    loss, grads = rule.gradients(model, x, y, mask, TASK.loss)
    # loss: a detached finite scalar, the task loss of the model's run
    assert isinstance(loss, torch.Tensor) and loss.dim() == 0 and torch.isfinite(loss) and not loss.requires_grad
    if case.name not in NOISY_LOSS:
        with torch.no_grad():
            want = TASK.loss(model(x).y, y, mask)
        torch.testing.assert_close(loss, want, rtol=1e-12, atol=0)
    # one gradient per trainable parameter, keyed, shaped and typed as the parameter, detached and finite
    assert set(grads) == {n for n, p in params.items() if p.requires_grad}
    for n, g in grads.items():
        assert g.shape == params[n].shape and g.dtype == params[n].dtype == torch.float64, n
        assert not g.requires_grad and torch.isfinite(g).all(), n
    assert float(grads["theta_rec"].abs().max()) > 0 and float(grads["theta_in"].abs().max()) > 0
    # absent edges (recurrent, input, readout) get exactly zero
    for pname, mname in (("theta_rec", "mask_rec"), ("theta_in", "mask_in"), ("theta_out", "mask_out")):
        m = getattr(model, mname)
        assert (m == 0).any(), mname  # the circuit has absent edges: the check is not vacuous
        assert torch.all(grads[pname][m == 0] == 0), pname
    # the model is untouched: parameters, buffers, .grad
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in params.values())


@pytest.mark.parametrize("case, kind", _pairs())
def test_float32_model_gets_float32_gradients(case, kind):
    model = _model(kind, "float32")
    loss, grads = _grads(_rule(case), model, torch.float32)
    assert torch.isfinite(loss)
    params = dict(model.named_parameters())
    for n, g in grads.items():
        assert g.dtype == torch.float32 and g.shape == params[n].shape and torch.isfinite(g).all(), n


@pytest.mark.parametrize("case, kind", _pairs())
def test_deterministic_for_an_equal_fresh_rule(case, kind):
    model = _model(kind)
    _, a = _grads(_rule(case), model)
    _, b = _grads(_rule(case), model)
    _assert_identical(a, b)


@pytest.mark.parametrize("case, kind", _pairs())
def test_deterministic_for_the_same_rule_called_again(case, kind):
    rule, model = _rule(case), _model(kind)
    _, a = _grads(rule, model)
    _, b = _grads(rule, model)
    _assert_identical(a, b)


@pytest.mark.parametrize("case, kind", _pairs())
def test_training_with_an_optimizer_keeps_masks_and_signs(case, kind):
    rule, model = _rule(case), _model(kind)
    W0 = model.effective_weights()
    _train(rule, model)
    W = model.effective_weights()
    for wname, mname, sname in _EDGES:
        w = getattr(W, wname).detach()
        mask, sign = getattr(model, mname), getattr(model, sname)
        assert torch.all(w[mask == 0] == 0), f"{wname}: an absent edge appeared"
        signed = sign != 0
        assert torch.all(w[signed] * sign[signed] >= 0), f"{wname}: a sign flipped"
    assert (model.sign_rec != 0).any() and (model.sign_in != 0).any()  # Dale's law is really tested
    assert not torch.equal(W.W_rec, W0.W_rec) and not torch.equal(W.W_in, W0.W_in)


# ------------------------------------------------------------------------------------------------ wrong models
MODEL_CLASS = {"rate": "RateRNN", "spiking": "SpikingRNN"}


@pytest.mark.parametrize("case, kind", _undeclared_pairs())
def test_undeclared_model_type_raises_type_error_naming_it(case, kind):
    """The message names the model's type and the type(s) the rule applies to."""
    rule, model = _rule(case), _model(kind)
    with pytest.raises(TypeError, match=type(model).__name__) as err:
        _grads(rule, model)
    for k in rule.model_types:
        assert MODEL_CLASS[k] in str(err.value), str(err.value)


@pytest.mark.parametrize("case", [p for p in _cases() if _base_name(p.values[0]) not in MODEL_AGNOSTIC])
def test_foreign_module_raises_type_error_naming_it(case):
    """Rules that read model internals refuse any other module, naming it and the type(s) they apply to."""
    rule = _rule(case)
    with pytest.raises(TypeError, match="Linear") as err:
        _grads(rule, torch.nn.Linear(N_IN, N_OUT).double())
    for k in rule.model_types:
        assert MODEL_CLASS[k] in str(err.value), str(err.value)


# ------------------------------------------------------------------------------------------------ rule state
@pytest.mark.parametrize("case, kind", _pairs())
def test_no_hidden_state_across_calls(case, kind):
    """A rule used for training computes the same gradients as an equal fresh rule (cross-call state, e.g. an
    adaptive feedback matrix or a reward baseline, lives in an explicit state object, not in the rule)."""
    rule, model = _rule(case), _model(kind)
    _train(rule, model)
    _, used = _grads(rule, model)
    _, fresh = _grads(_rule(case), model)
    _assert_identical(used, fresh)


@pytest.mark.parametrize("case, kind", _pairs())
def test_explicit_state_update_matches_gradients(case, kind):
    """``state = rule.init_state(model)``; ``loss, grads, state = rule.update(model, x, y, mask, loss_fn, state)``:
    the first update equals ``gradients``, and ``update`` does not mutate the state it is given."""
    rule, model = _rule(case), _model(kind)
    x, y, mask = _data()
    loss, grads = rule.gradients(model, x, y, mask, TASK.loss)
    state0 = rule.init_state(model)
    loss1, g1, state1 = rule.update(model, x, y, mask, TASK.loss, state0)
    assert torch.equal(loss1, loss)
    _assert_identical(g1, grads)
    loss2, g2, _ = rule.update(model, x, y, mask, TASK.loss, state0)  # the same input state: the same result
    assert torch.equal(loss2, loss1)
    _assert_identical(g2, g1)
    _, g3, _ = rule.update(model, x, y, mask, TASK.loss, state1)  # the returned state carries on
    assert g3.keys() == g1.keys()
