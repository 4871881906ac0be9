"""The build layer (spikelearn.build) over the whole rule registry, its declared ranges, and the import direction.

Every (rule, declared model type) pair of ``spikelearn.rules.RULES`` trains two iterations from a TOML file to a
finite loss; every undeclared pair stops with a one-line configuration error naming the rule and the model type.
The model types are asked of the rule *instance* (a wrapper such as ``Flossed`` declares its base's).
"""

from __future__ import annotations

import ast
import dataclasses
import math
import pathlib
import re

import pandas as pd
import pytest

from spikelearn import config as config_module
from spikelearn.build import check_build, validate_config
from spikelearn.cli import main
from spikelearn.config import Allowed, ConfigError, RunConfig, allowed_values, config_from_dict
from spikelearn.rules import RULES, make_rule

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODEL_TYPES = ("rate", "spiking")
REQUIRED_OPTIONS = {"tbptt": {"k": 2}}  # rules with an option that has no default

TOML = """
[circuit]
kind = "gaussian"
n = 10
[circuit.options]
g = 1.0
[model]
type = "{model_type}"
[task]
name = "delayed_xor"
[task.options]
cue_ms = 20.0
delay_ms = 20.0
dt_ms = 10.0
[rule]
name = "{rule}"
{rule_options}
[optimizer]
name = "adam"
lr = 0.01
[train]
iterations = 2
batch_size = 4
eval_every = 1
eval_batch_size = 4
quiet = true
"""


def _toml(rule: str, model_type: str, options: dict) -> str:
    opts = "".join(f"\n{k} = {v!r}" if not isinstance(v, str) else f'\n{k} = "{v}"' for k, v in options.items())
    return TOML.format(model_type=model_type, rule=rule,
                       rule_options=f"[rule.options]{opts}" if options else "")


def _declared(rule: str, options: dict) -> tuple[str, ...]:
    return tuple(make_rule(rule, **options).model_types)


PAIRS = [(r, t) for r in RULES for t in MODEL_TYPES]


@pytest.mark.parametrize("rule, model_type", PAIRS, ids=[f"{r}-{t}" for r, t in PAIRS])
def test_every_rule_and_model_type_from_toml(rule, model_type, tmp_path, capsys):
    options = REQUIRED_OPTIONS.get(rule, {})
    path = tmp_path / "run.toml"
    path.write_text(_toml(rule, model_type, options))
    out = tmp_path / "out"
    code = main(["train", str(path), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    if model_type in _declared(rule, options):
        assert code == 0, err
        hist = pd.read_csv(out / "history.csv")
        assert hist["iteration"].tolist() == [1, 2]
        assert all(math.isfinite(v) for v in hist["loss"]), hist
    else:
        assert code == 2
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("spikelearn: configuration error:"), err
        assert repr(rule) in lines[0] and repr(model_type) in lines[0], err
        assert not (out / "checkpoint.pt").exists()


def test_registry_has_an_undeclared_pair_and_covers_both_types():
    """The test above exercises both branches: some rule refuses a model type, and each type has rules."""
    declared = {r: _declared(r, REQUIRED_OPTIONS.get(r, {})) for r in RULES}
    assert any(set(MODEL_TYPES) - set(k) for k in declared.values())
    assert all(any(t in k for k in declared.values()) for t in MODEL_TYPES)


def test_wrapped_rule_declares_its_base_model_types(tmp_path, capsys):
    """``rule = "flossed"`` reads its model types from the instance (a property of its base): with base = rflo it
    trains a rate network and refuses a spiking one in one line (it once crashed with a TypeError)."""
    cfg = config_from_dict({"circuit": {"kind": "gaussian", "n": 10}, "model": {"type": "spiking"},
                            "rule": {"name": "flossed", "options": {"base": "rflo"}}})
    with pytest.raises(ConfigError, match=r"\[rule\] 'flossed' applies to \['rate'\] models, not to \[model\] type "
                                          r"'spiking'"):
        validate_config(cfg)
    path = tmp_path / "run.toml"
    path.write_text(_toml("flossed", "rate", {"base": "rflo"}))
    assert main(["train", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 0, capsys.readouterr().err


def test_update_every_steps_needs_an_online_rule_instance():
    base = {"circuit": {"kind": "gaussian", "n": 10}, "model": {"type": "spiking"},
            "task": {"name": "delayed_xor", "options": {"cue_ms": 20.0, "delay_ms": 20.0, "dt_ms": 10.0}},
            "train": {"update_every_steps": 2}}
    validate_config(config_from_dict({**base, "rule": {"name": "eprop"}}))
    with pytest.raises(ConfigError, match=r"update_every_steps = 2 needs an online rule.*'bptt'"):
        validate_config(config_from_dict({**base, "rule": {"name": "bptt"}}))


def _outside(a: Allowed):
    """A value the declaration ``a`` refuses."""
    if a.choices or a.pattern:
        return "nonsense"
    if a.high is not None:
        return a.high + 1
    return a.low - 1 if not a.low_open else a.low - (1 if a.off and a.low in a.off else 0)


DECLARED = [(f.name, key, a) for f in dataclasses.fields(RunConfig)
            for key, a in allowed_values(type(getattr(RunConfig(), f.name))).items()]


@pytest.mark.parametrize("section, key, allowed", DECLARED, ids=[f"{s}.{k}" for s, k, _ in DECLARED])
def test_declared_ranges_check_and_explain(section, key, allowed):
    """Each declared field range refuses a value outside it with a message built from the same declaration, and the
    defaults are inside it."""
    assert _outside(allowed) != getattr(getattr(RunConfig(), section), key)
    cfg = RunConfig()
    bad = dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **{key: _outside(allowed)})})
    with pytest.raises(ConfigError, match=rf"^\[{section}\] {key} must be .*, got "):
        validate_config(bad)


def test_default_configuration_builds():
    check_build(RunConfig())


def _spikelearn_imports(path: pathlib.Path) -> set[str]:
    """Modules of spikelearn that ``path`` imports, at module or function level."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "spikelearn"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "spikelearn":
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return out


def test_import_direction():
    """config is the schema and imports nothing from spikelearn; the loop (train) does not import the build layer,
    which imports the loop."""
    assert _spikelearn_imports(pathlib.Path(config_module.__file__)) == set()
    train_imports = _spikelearn_imports(ROOT / "spikelearn" / "train.py")
    assert not any(re.match(r"spikelearn\.(build|cli|sweep|demo)\b", m) for m in train_imports), train_imports
    assert "spikelearn.train" in _spikelearn_imports(ROOT / "spikelearn" / "build.py")


@pytest.mark.parametrize("rule, model_type", [("eprop", "spiking"), ("rflo", "rate"), ("mdgl", "spiking"),
                                              ("modprop", "rate")])
def test_a_given_feedback_matrix_from_a_npy_path_in_toml(rule, model_type, tmp_path):
    """``feedback = "B.npy"`` in a run file: the built rule uses exactly that ``(N, n_out)`` matrix, the run trains,
    and a matrix of the wrong shape is a one-line error naming both shapes."""
    import sys

    import numpy as np

    from spikelearn.build import build

    tomllib = __import__("tomllib") if sys.version_info >= (3, 11) else __import__("tomli")
    B = np.random.default_rng(0).normal(size=(10, 2))  # gaussian n = 10, delayed_xor has two outputs
    path = tmp_path / "B.npy"
    np.save(path, B)
    cfg = config_from_dict(tomllib.loads(_toml(rule, model_type, {"feedback": str(path)})))
    circuit, model, task, built_rule, optimizer, trainer = build(cfg, out_dir=str(tmp_path / "out"))
    assert np.array_equal(built_rule.feedback_matrix(model.double()).numpy(), B)
    hist = trainer.run()
    assert len(hist) == 2 and hist["loss"].map(math.isfinite).all()
    np.save(path, np.zeros((7, 2)))
    cfg2 = config_from_dict(tomllib.loads(_toml(rule, model_type, {"feedback": str(path)})))
    with pytest.raises(ConfigError, match=r"^\[rule\] building .*shape \(7, 2\).*\(10, 2\)") as err:
        build(cfg2, out_dir=str(tmp_path / "out2"))
    assert "\n" not in str(err.value)
