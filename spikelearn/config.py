"""Typed run configuration; the same dataclasses are the schema of the TOML files read by ``spikelearn train``.

A TOML file has the sections ``[circuit]``, ``[model]``, ``[task]``, ``[rule]``, ``[optimizer]``, ``[train]`` and
(optional) ``[flossing]``, plus optional ``[[measurements]]`` hooks (``name``, ``fn = "module:attribute"``,
``every``, ``options``; :class:`MeasurementSpec`; a run file with hooks is read by
:func:`spikelearn.build.load_run_file`). Each section's keys are the fields of its dataclass below; free-form
options of the thing a section builds go in its ``options`` sub-table (``[model.options]`` ...). An unknown key
anywhere is an error naming the key and its section. Example::

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

This module is the schema only — dataclasses, TOML parsing, unknown keys and value types — and imports nothing from
spikelearn. The values a field accepts are declared beside it (``ranged(default, low=..., choices=...)``, an
:class:`Allowed` in the field's metadata); :mod:`spikelearn.build` checks them, and everything else that needs the
package (registered names, the options a constructor accepts, the rule's model types), in one place.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found]  # a dependency on Python < 3.11 only

__all__ = ["CircuitConfig", "ModelConfig", "TaskConfig", "RuleConfig", "OptimizerConfig", "TrainConfig",
           "FlossingSectionConfig", "RunConfig", "ConfigError", "Allowed", "ranged", "allowed_values", "load_config",
           "MeasurementSpec", "measurement_specs", "read_toml", "config_from_dict"]


class ConfigError(ValueError):
    """A configuration problem; the message names the section and key."""


@dataclass(frozen=True)
class Allowed:
    """The values a configuration field accepts, declared beside the field with :func:`ranged` and checked (with
    the error message made from the same declaration) by :func:`spikelearn.build.validate_config`.

    A number within ``[low, high]`` (``low`` excluded when ``low_open``; either bound may be absent), or one of
    ``choices``, or a string matching ``pattern`` (a regular expression, the whole string); ``off`` lists further
    accepted values that switch the feature off; ``note`` is added to the message in parentheses and ``text``
    replaces the message's statement of the range.
    """

    low: float | None = None
    low_open: bool = False
    high: float | None = None
    choices: tuple = ()
    pattern: str = ""
    off: tuple = ()
    note: str = ""
    text: str = ""


def ranged(default: Any, **allowed: Any) -> Any:
    """A dataclass field defaulting to ``default`` that accepts the values ``Allowed(**allowed)`` declares."""
    return field(default=default, metadata={"allowed": Allowed(**allowed)})


def allowed_values(cls: type) -> dict[str, Allowed]:
    """``{field name: Allowed}`` of the fields of dataclass ``cls`` declared with :func:`ranged`."""
    return {f.name: f.metadata["allowed"] for f in dataclasses.fields(cls) if "allowed" in f.metadata}


@dataclass(frozen=True)
class CircuitConfig:
    kind: str = "gaussian"          # a generator name, or "connectome"
    name: str = ""                  # connectome name when kind = "connectome"
    n: int = ranged(100, low=1)     # neurons (generators; the connectome loaders take n in options if they need it)
    options: dict = field(default_factory=dict)  # generator / loader keyword arguments


@dataclass(frozen=True)
class ModelConfig:
    type: str = ranged("spiking", choices=("spiking", "rate"))  # SpikingRNN or RateRNN
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
    lr: float = ranged(1e-3, low=0, low_open=True)
    options: dict = field(default_factory=dict)  # other optimizer keyword arguments (momentum, ...)
    schedule: str = ""              # "" = constant lr; else any torch.optim.lr_scheduler class name, case-insensitive
    #                                 (steplr, multisteplr, exponentiallr, cosineannealinglr, linearlr, onecyclelr,
    #                                 ...), stepped once per training iteration after its update(s); state checkpointed
    schedule_options: dict = field(default_factory=dict)  # the scheduler's keyword arguments (step_size, gamma, ...)


@dataclass(frozen=True)
class TrainConfig:
    iterations: int = ranged(100, low=1)
    batch_size: int = ranged(32, low=1)
    seed: int = ranged(0, low=0)    # one seed determines circuit, initial weights and every trial
    eval_every: int = ranged(10, low=0, note="0 = no evaluation")
    #                                 evaluate accuracy / firing rate on a fixed batch every k iterations
    eval_batch_size: int = ranged(64, low=1)
    checkpoint_every: int = ranged(0, low=0, note="0 = only at the end")
    grad_clip: float = ranged(0.0, low=0)          # max gradient norm; 0 = no clipping
    update_every_steps: int = ranged(0, low=0)     # online rules: apply updates every k time steps (0 = once per trial)
    rewiring: bool = False          # sign-preserving DEEP R rewiring at temperature 0 (connection count constant)
    rewiring_l1: float = ranged(1e-2, low=0)       # DEEP R L1 shrinkage per unit learning rate
    l2: float = ranged(0.0, low=0)  # L2 penalty l2/2·(‖W_in‖² + ‖W_rec‖² + ‖W_out‖²) on the effective weights (masks
    #                                 and signs applied; biases not penalised, unlike optimizer weight_decay); its
    #                                 gradient l2·W (through the parametrisation) is added to every update the rule's
    #                                 gradient makes, for every rule; logged as column l2_penalty; 0 = off
    stop_at_accuracy: float = ranged(0.0, low=0, high=1, note="0 = off")
    #                                 early stop: training ends after the first evaluation with accuracy >= this
    #                                 (needs eval_every > 0; the run is complete, resuming trains no further); 0 = off
    device: str = ranged("cpu", pattern=r"cpu|auto|cuda(:\d+)?", text="'cpu', 'cuda[:k]' or 'auto'")
    dtype: str = ranged("float32", choices=("float32", "float64"))
    quiet: bool = False             # no progress bar
    out_dir: str = "runs/run"


@dataclass(frozen=True)
class FlossingSectionConfig:
    """Gradient-flossing schedule (rules.flossing.FlossingSchedule); all zeros = off."""

    pre_steps: int = ranged(0, low=0)   # flossing steps before iteration 1 (developmental pre-flossing)
    every: int = ranged(0, low=0)       # inter-flossing every k iterations (0 = never)
    steps: int = ranged(0, low=0)       # flossing steps each time
    max_times: int = ranged(2, low=0)   # inter-flossing at most this many times (0 = no limit)
    batch_size: int = ranged(1, low=1)  # task trials per flossing step
    lr: float = ranged(1e-3, low=0, low_open=True)
    #                                     flossing AdamW learning rate (pre-flossing, and inter-flossing unless inter_lr)
    inter_lr: float = ranged(0.0, low=0, low_open=True, off=(0,), note="or 0 = lr")
    #                                     inter-flossing learning rate (0 = lr); one AdamW state for both
    pre_mode: str = ranged("", choices=("", "autodiff", "local"))  # "" = the config's mode
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
    fields = [f.name for f in dataclasses.fields(cls)]
    defaults = cls()  # every field of a section has a default
    for key, val in values.items():
        if key not in fields:
            raise ConfigError(f"unknown key {key!r} in section [{section}]; allowed keys: {sorted(fields)}")
        default = getattr(defaults, key)
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
    """A measurement hook named by import path, so it travels to workers as text
    (:func:`spikelearn.build.resolve_measurements` imports it)."""

    name: str
    fn: str                         # "module:attribute"; called as fn(model, task, iteration, **options)
    #                                 (plus initial_model=... when fn declares it; spikelearn.train.Measurement)
    every: int = ranged(10, low=1, text="an integer >= 1")
    options: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_MEASUREMENT_KEYS = {"name", "fn", "every", "options"}


def _measurement_spec(m: Any, i: int) -> MeasurementSpec:
    where = f"[[measurements]] #{i + 1}"
    if not isinstance(m, Mapping):
        raise ConfigError(f"{where} must be a table")
    unknown = set(m) - _MEASUREMENT_KEYS
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)} in {where}; allowed keys: {sorted(_MEASUREMENT_KEYS)}")
    for k in ("name", "fn"):
        if not isinstance(m.get(k), str) or not m[k]:
            raise ConfigError(f"{where} needs a string {k!r}")
    every = m.get("every", 10)
    if isinstance(every, bool) or not isinstance(every, int):
        raise ConfigError(f"{where} every must be an integer >= 1, got {every!r}")
    options = m.get("options", {})
    if not isinstance(options, Mapping):
        raise ConfigError(f"{where} options must be a table")
    return MeasurementSpec(name=m["name"], fn=m["fn"], every=every, options=dict(options))


def measurement_specs(meas: Any) -> tuple[MeasurementSpec, ...]:
    """The ``[[measurements]]`` array of tables as :class:`MeasurementSpec` s: tables, keys, types and unique
    names checked here; :func:`spikelearn.build.parse_measurements` also imports the hooks and checks their
    options and ``every``."""
    if not isinstance(meas, list):
        raise ConfigError("[[measurements]] must be an array of tables")
    measurements = tuple(_measurement_spec(m, i) for i, m in enumerate(meas))
    names = [m.name for m in measurements]
    if len(set(names)) != len(names):
        raise ConfigError(f"measurement names must be unique, got {names}")
    return measurements


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
    such a file with :func:`spikelearn.build.load_run_file`."""
    return config_from_dict(read_toml(path))
