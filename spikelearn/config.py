"""Typed run configuration; the same dataclasses are the schema of the TOML files read by ``spikelearn train``.

A TOML file has the sections ``[circuit]``, ``[model]``, ``[task]``, ``[rule]``, ``[optimizer]``, ``[train]`` and
(optional) ``[flossing]``, plus optional ``[[measurements]]`` hooks (``name``, ``fn = "module:attribute"``,
``every``, ``options``; read by :func:`load_run_file`; :class:`MeasurementSpec`).
Each section's keys are the fields of its dataclass below; free-form options of the thing a section builds go
in its ``options`` sub-table (``[model.options]`` ...) and are checked against that thing's signature. An unknown
key anywhere is an error naming the key and its section. Example::

    [circuit]
    kind = "connectome"          # or a generator: gaussian, erdos_renyi, dale, low_rank, block_model ...
    name = "celegans_varshney2011"
    [circuit.options]
    weight_per_synapse = 0.05
    [model]
    type = "spiking"
    [task]
    name = "evidence_accumulation"
    [rule]
    name = "bptt"
    [optimizer]
    name = "adam"
    lr = 5e-3
    [train]
    iterations = 200
    seed = 1

Optional training extras, all off by default (a file without them trains exactly as before)::

    [optimizer]
    schedule = "steplr"          # any torch.optim.lr_scheduler class (case-insensitive), stepped once per iteration
    schedule_options = {step_size = 300, gamma = 0.8}    # lr x 0.8 every 300 iterations (ALGORITHMS.md §4.4)
    [train]
    l2 = 5e-4                    # + l2/2 (|W_in|^2 + |W_rec|^2 + |W_out|^2) on the effective weights, any rule
    stop_at_accuracy = 0.93      # stop after the first evaluation with accuracy >= 0.93 (§10.1: error < 7 %)

With a schedule the history gains a column ``lr`` (the rate the iteration's update used); with ``l2 > 0`` a column
``l2_penalty`` (``loss`` stays the task loss; the objective trained is ``loss + l2_penalty``); with
``stop_at_accuracy > 0`` the run's ``summary.json`` gains ``stopped_at`` (the iteration, or null).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import math
import pathlib
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["CircuitConfig", "ModelConfig", "TaskConfig", "RuleConfig", "OptimizerConfig", "TrainConfig", "FlossingSectionConfig",
           "RunConfig", "ConfigError", "load_config", "load_run_file", "MeasurementSpec", "parse_measurements",
           "resolve_measurements", "read_toml", "config_from_dict", "check_options"]


class ConfigError(ValueError):
    """A configuration problem; the message names the section and key."""


@dataclass(frozen=True)
class CircuitConfig:
    kind: str = "gaussian"          # a generator name, or "connectome"
    name: str = ""                  # connectome name when kind = "connectome"
    n: int = 100                    # neurons (generators; the connectome loaders take n in options if they need it)
    options: dict = field(default_factory=dict)  # generator / loader keyword arguments


@dataclass(frozen=True)
class ModelConfig:
    type: str = "spiking"           # "spiking" (SpikingRNN) or "rate" (RateRNN)
    options: dict = field(default_factory=dict)  # constructor keyword arguments


@dataclass(frozen=True)
class TaskConfig:
    name: str = "delayed_match_to_sample"
    options: dict = field(default_factory=dict)  # task dataclass fields


@dataclass(frozen=True)
class RuleConfig:
    name: str = "bptt"
    options: dict = field(default_factory=dict)  # rule hyperparameters


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = "adam"              # any torch.optim class name, case-insensitive (adam, sgd, adamw, ...)
    lr: float = 1e-3
    options: dict = field(default_factory=dict)  # other optimizer keyword arguments (momentum, ...)
    schedule: str = ""              # "" = constant lr; else any torch.optim.lr_scheduler class name, case-insensitive
    #                                 (steplr, multisteplr, exponentiallr, cosineannealinglr, linearlr, onecyclelr,
    #                                 ...), stepped once per training iteration after its update(s); state checkpointed
    schedule_options: dict = field(default_factory=dict)  # the scheduler's keyword arguments (step_size, gamma, ...)


@dataclass(frozen=True)
class TrainConfig:
    iterations: int = 100
    batch_size: int = 32
    seed: int = 0                   # one seed determines circuit, initial weights and every trial
    eval_every: int = 10            # evaluate accuracy / firing rate on a fixed batch every k iterations
    eval_batch_size: int = 64
    checkpoint_every: int = 0       # 0 = only at the end
    grad_clip: float = 0.0          # max gradient norm; 0 = no clipping
    update_every_steps: int = 0     # online rules: apply updates every k time steps (0 = once per trial)
    rewiring: bool = False          # sign-preserving DEEP R rewiring at temperature 0 (connection count constant)
    rewiring_l1: float = 1e-2       # DEEP R L1 shrinkage per unit learning rate
    l2: float = 0.0                 # L2 penalty l2/2·(‖W_in‖² + ‖W_rec‖² + ‖W_out‖²) on the effective weights (masks
    #                                 and signs applied; biases not penalised, unlike optimizer weight_decay); its
    #                                 gradient l2·W (through the parametrisation) is added to every update the rule's
    #                                 gradient makes, for every rule; logged as column l2_penalty; 0 = off
    stop_at_accuracy: float = 0.0   # early stop: training ends after the first evaluation with accuracy >= this
    #                                 (needs eval_every > 0; the run is complete, resuming trains no further); 0 = off
    device: str = "cpu"             # "cpu", "cuda" or "auto"
    dtype: str = "float32"          # "float32" or "float64"
    quiet: bool = False             # no progress bar
    out_dir: str = "runs/run"


@dataclass(frozen=True)
class FlossingSectionConfig:
    """Gradient-flossing schedule (rules.flossing.FlossingSchedule); all zeros = off."""

    pre_steps: int = 0              # flossing steps before iteration 1 (developmental pre-flossing)
    every: int = 0                  # inter-flossing every k iterations (0 = never)
    steps: int = 0                  # flossing steps each time
    max_times: int = 2              # inter-flossing at most this many times (0 = no limit)
    batch_size: int = 1             # task trials per flossing step
    lr: float = 1e-3                # flossing AdamW learning rate (pre-flossing, and inter-flossing unless inter_lr)
    inter_lr: float = 0.0           # inter-flossing learning rate (0 = lr); one AdamW state for both
    pre_mode: str = ""              # "", "autodiff" or "local" ("" = the config's mode)
    options: dict = field(default_factory=dict)  # FlossingConfig fields (k, mode, target, transient_steps, ...)

    @property
    def enabled(self) -> bool:
        return self.pre_steps > 0 or (self.every > 0 and self.steps > 0)


@dataclass(frozen=True)
class RunConfig:
    circuit: CircuitConfig = field(default_factory=CircuitConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    rule: RuleConfig = field(default_factory=RuleConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    flossing: FlossingSectionConfig = field(default_factory=FlossingSectionConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


_SECTIONS = {f.name: f.type for f in dataclasses.fields(RunConfig)}
_SECTION_CLASSES = {"circuit": CircuitConfig, "model": ModelConfig, "task": TaskConfig, "rule": RuleConfig,
                    "optimizer": OptimizerConfig, "train": TrainConfig,
                    "flossing": FlossingSectionConfig}


def _build_section(section: str, values: Any):
    cls = _SECTION_CLASSES[section]
    if not isinstance(values, dict):
        raise ConfigError(f"[{section}] must be a table, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, val in values.items():
        if key not in fields:
            raise ConfigError(f"unknown key {key!r} in section [{section}]; allowed keys: {sorted(fields)}")
        default = fields[key].default if fields[key].default is not dataclasses.MISSING else fields[key].default_factory()
        if key == "options" or isinstance(default, dict):
            if not isinstance(val, dict):
                raise ConfigError(f"[{section}] {key} must be a table")
        elif isinstance(default, bool):
            if not isinstance(val, bool):
                raise ConfigError(f"[{section}] {key} must be true or false, got {val!r}")
        elif isinstance(default, int):
            if isinstance(val, bool) or not isinstance(val, int):
                raise ConfigError(f"[{section}] {key} must be an integer, got {val!r}")
        elif isinstance(default, float):
            if isinstance(val, bool) or not isinstance(val, (int, float)):
                raise ConfigError(f"[{section}] {key} must be a number, got {val!r}")
            if not math.isfinite(val):
                raise ConfigError(f"[{section}] {key} must be a finite number, got {val!r}")
            values = {**values, key: float(val)}
        elif isinstance(default, str) and not isinstance(val, str):
            raise ConfigError(f"[{section}] {key} must be a string, got {val!r}")
    return cls(**values)


def config_from_dict(d: dict) -> RunConfig:
    """Build a :class:`RunConfig` from nested dicts, rejecting unknown sections and keys by name."""
    unknown = set(d) - set(_SECTIONS)
    if unknown:
        raise ConfigError(f"unknown section(s) {sorted(unknown)}; allowed sections: {sorted(_SECTIONS)}")
    return RunConfig(**{s: _build_section(s, v) for s, v in d.items()})


@dataclass(frozen=True)
class MeasurementSpec:
    """A measurement hook named by import path, so it travels to workers as text."""

    name: str
    fn: str                         # "module:attribute"; called as fn(model, task, iteration, **options)
    #                                 (plus initial_model=... when fn declares it; spikelearn.train.Measurement)
    every: int = 10
    options: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_MEASUREMENT_KEYS = {"name", "fn", "every", "options"}


def _check_int(where: str, v: Any, low: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ConfigError(f"{where} must be an integer >= {low}, got {v!r}")
    return v


def _parse_measurement(m: Any, i: int) -> MeasurementSpec:
    where = f"[[measurements]] #{i + 1}"
    if not isinstance(m, Mapping):
        raise ConfigError(f"{where} must be a table")
    unknown = set(m) - _MEASUREMENT_KEYS
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)} in {where}; allowed keys: {sorted(_MEASUREMENT_KEYS)}")
    for k in ("name", "fn"):
        if not isinstance(m.get(k), str) or not m[k]:
            raise ConfigError(f"{where} needs a string {k!r}")
    options = m.get("options", {})
    if not isinstance(options, Mapping):
        raise ConfigError(f"{where} options must be a table")
    spec = MeasurementSpec(name=m["name"], fn=m["fn"], every=_check_int(f"{where} every", m.get("every", 10), 1),
                           options=dict(options))
    fn = _import_hook(spec)
    check_options(f"measurements.{spec.name}", fn, spec.options, skip=("model", "task", "iteration", "initial_model"))
    return spec


def _import_hook(spec: MeasurementSpec):
    mod_name, _, attr = spec.fn.partition(":")
    if not attr:
        raise ConfigError(f"measurement {spec.name!r}: fn must be 'module:attribute', got {spec.fn!r}")
    try:
        obj = importlib.import_module(mod_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"measurement {spec.name!r}: cannot import {spec.fn!r}: {e}") from None
    if not callable(obj):
        raise ConfigError(f"measurement {spec.name!r}: {spec.fn!r} is not callable")
    return obj


def parse_measurements(meas: Any) -> tuple:
    """Parse the ``[[measurements]]`` array of tables into :class:`MeasurementSpec` s (hooks imported and their
    options checked now, so a typo fails before anything runs)."""
    if not isinstance(meas, list):
        raise ConfigError("[[measurements]] must be an array of tables")
    measurements = tuple(_parse_measurement(m, i) for i, m in enumerate(meas))
    names = [m.name for m in measurements]
    if len(set(names)) != len(names):
        raise ConfigError(f"measurement names must be unique, got {names}")
    return measurements


def resolve_measurements(specs) -> tuple:
    """Turn :class:`MeasurementSpec` s (or their dicts) into :class:`spikelearn.train.Measurement` hooks."""
    import functools

    from spikelearn.train import Measurement

    out = []
    for s in specs:
        s = s if isinstance(s, MeasurementSpec) else MeasurementSpec(**s)
        fn = _import_hook(s)
        out.append(Measurement(s.name, functools.partial(fn, **s.options) if s.options else fn, s.every))
    return tuple(out)


def read_toml(path: str | pathlib.Path, what: str = "configuration file") -> dict:
    """Parse a TOML file; a missing file or invalid TOML is a :class:`ConfigError` naming the file."""
    p = pathlib.Path(path)
    try:
        return tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{what} {str(p)!r} not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: invalid TOML: {e}") from None


def load_config(path: str | pathlib.Path) -> RunConfig:
    """Read a TOML run configuration (see module docstring); a ``[[measurements]]`` array is refused here — read
    such a file with :func:`load_run_file`."""
    return config_from_dict(read_toml(path))


def load_run_file(path: str | pathlib.Path) -> tuple[RunConfig, tuple]:
    """Read a TOML run file: the configuration and its ``[[measurements]]`` hooks (:class:`MeasurementSpec` s),
    in the same format as a sweep file's."""
    d = read_toml(path)
    meas = parse_measurements(d.pop("measurements", []))
    return config_from_dict(d), meas


def check_options(section: str, target: Any, options: dict, *, skip: tuple[str, ...] = (),
                  table: str | None = None) -> None:
    """Raise :class:`ConfigError` naming any key of ``options`` that ``target`` (a callable) does not accept
    (the message names the table ``[table]``, default ``[section.options]``)."""
    sig = inspect.signature(target)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return
    allowed = [n for n, p in sig.parameters.items()
               if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
               and n not in skip]
    for key in options:
        if key not in allowed:
            raise ConfigError(f"unknown key {key!r} in section [{table or section + '.options'}]; "
                              f"{getattr(target, '__name__', target)} accepts: {sorted(allowed)}")
