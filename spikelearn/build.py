"""The build layer: a run configuration becomes the objects that train it, checked in one place.

* :func:`build` turns a :class:`~spikelearn.config.RunConfig` into ``(circuit, model, task, rule, optimizer,
  trainer)`` (the trainer holds the learning-rate scheduler, the flossing schedule and the measurement hooks);
  :func:`build_task` and :func:`build_circuit` build one piece. One seed determines everything
  (:func:`~spikelearn.train.derive_seeds`).
* :func:`validate_config` is every check of a run configuration: the ranges and choices its fields declare
  (:func:`spikelearn.config.ranged`), the fields that go together, the registered names (circuit generator or
  connectome, task, rule, optimizer, scheduler), the options each accepts and requires, and the rule's
  capabilities, asked of the rule *instance* (``rule.model_types``, ``rule.online``). :func:`check_build` also
  builds once on the CPU, so bad values inside options tables are caught too. Every problem is a
  :class:`~spikelearn.config.ConfigError` of one line naming the section and key.
* Measurement hooks: :func:`parse_measurements` / :func:`check_measurements` (importable, options accepted),
  :func:`resolve_measurements` (specs -> :class:`~spikelearn.train.Measurement` hooks), :func:`load_run_file`.
* Resuming: :func:`check_resume` refuses a checkpoint started under another configuration, or under settings that
  this version of spikelearn resolves differently (:func:`resolved_settings`).
* :func:`train` builds, (resumes,) trains and writes the run folder — what ``spikelearn train`` and the sweep
  workers call.

Imports flow one way: ``cli``, ``sweep`` -> ``build`` -> ``train`` (the loop) -> ``rules`` -> ``models``;
:mod:`spikelearn.config` (the schema) imports nothing from spikelearn.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import inspect
import json
import math
import pathlib
import re
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.optim import lr_scheduler

from spikelearn import connectomes, models, tasks
from spikelearn.circuit import generators
from spikelearn.config import (
    Allowed,
    CircuitConfig,
    ConfigError,
    MeasurementSpec,
    RunConfig,
    allowed_values,
    config_from_dict,
    measurement_specs,
    read_toml,
)
from spikelearn.dynamics import FlossingConfig
from spikelearn.rules import RULES, make_rule
from spikelearn.rules.base import init_rule_state
from spikelearn.rules.flossing import FlossingSchedule
from spikelearn.train import CHECKPOINT, Measurement, Trainer, derive_seeds

__all__ = ["build", "build_task", "build_circuit", "check_build", "validate_config", "check_allowed", "check_options",
           "optimizer_classes", "scheduler_classes", "resolve_device", "resolved_settings", "check_resume",
           "parse_measurements", "check_measurements", "resolve_measurements", "load_run_file", "train"]


# ---------------------------------------------------------------------- declared ranges and options tables

def _describe(a: Allowed) -> str:
    """What ``a`` admits, as the error message states it."""
    if a.text:
        text = a.text
    elif a.choices:
        quoted = [repr(c) for c in a.choices]
        text = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
    elif a.low is not None and a.high is not None:
        text = f"in {'(' if a.low_open else '['}{a.low:g}, {a.high:g}]"
    elif a.low is not None:
        text = f"{'>' if a.low_open else '>='} {a.low:g}"
    else:
        text = f"<= {a.high:g}"
    return f"{text} ({a.note})" if a.note else text


def _admits(a: Allowed, v: Any) -> bool:
    if any(v == o and type(v) is not bool for o in a.off):
        return True
    if a.choices:
        return v in a.choices
    if a.pattern:
        return isinstance(v, str) and re.fullmatch(a.pattern, v) is not None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    if a.low is not None and (v <= a.low if a.low_open else v < a.low):
        return False
    return a.high is None or v <= a.high


def check_allowed(where: str, key: str, value: Any, allowed: Allowed) -> None:
    """Raise :class:`ConfigError` ``"{where} {key} must be <what allowed admits>, got value"`` unless ``allowed``
    (a field's declaration, :func:`spikelearn.config.ranged`) admits ``value``."""
    if not _admits(allowed, value):
        raise ConfigError(f"{where} {key} must be {_describe(allowed)}, got {value!r}")


def _check_declared(cfg: RunConfig) -> None:
    """Every field of every section against the values it declares."""
    for f in dataclasses.fields(cfg):
        sec = getattr(cfg, f.name)
        for key, allowed in allowed_values(type(sec)).items():
            check_allowed(f"[{f.name}]", key, getattr(sec, key), allowed)


def check_options(section: str, target: Any, options: Mapping, *, skip: tuple[str, ...] = (),
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


def _check_required(section: str, target: Any, options: Mapping, provided: tuple[str, ...] = (), *,
                    table: str | None = None) -> None:
    """Raise :class:`ConfigError` naming a required argument of ``target`` that neither options nor build give."""
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):  # pragma: no cover - builtins without signatures
        return
    for name, p in sig.parameters.items():
        if (p.default is inspect.Parameter.empty and name not in options and name not in provided
                and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)):
            raise ConfigError(f"[{table or section + '.options'}] misses {name!r}, required by "
                              f"{getattr(target, '__name__', target)}")


@contextlib.contextmanager
def _section(section: str, what: str):
    """A ValueError/TypeError from building a config section's object (a bad value in its options table) becomes
    a ConfigError naming the section and the thing built, chained to the original error."""
    try:
        yield
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(f"[{section}] building {what}: {e}") from e


def optimizer_classes() -> dict[str, type]:
    """``{lower-case name: class}`` of the ``torch.optim`` optimizers a configuration may name."""
    return {k.lower(): v for k, v in vars(torch.optim).items()
            if inspect.isclass(v) and issubclass(v, torch.optim.Optimizer) and v is not torch.optim.Optimizer}


# take callables or other schedulers (not expressible in TOML), or a metric at each step
_UNUSABLE_SCHEDULERS = ("lrscheduler", "_lrscheduler", "lambdalr", "multiplicativelr", "sequentiallr",
                        "chainedscheduler", "reducelronplateau")


def scheduler_classes() -> dict[str, type]:
    """``{lower-case name: class}`` of the ``torch.optim.lr_scheduler`` schedulers a configuration may name."""
    return {k.lower(): v for k, v in vars(lr_scheduler).items()
            if inspect.isclass(v) and issubclass(v, lr_scheduler.LRScheduler)
            and k.lower() not in _UNUSABLE_SCHEDULERS}


# ---------------------------------------------------------------------- validation

def _check_circuit_section(cfg: RunConfig) -> None:
    c = cfg.circuit
    if c.kind == "connectome":
        if c.name not in connectomes.names():
            raise ConfigError(f"[circuit] connectome name {c.name!r} unknown; shipped connectomes: "
                              f"{list(connectomes.names())}")
        check_options("circuit", connectomes.loader(c.name), c.options)
        return
    gens = [n for n in generators.__all__ if n != "truncate_rank"]
    if c.kind not in gens:
        raise ConfigError(f"[circuit] kind {c.kind!r} unknown; use 'connectome' or one of {sorted(gens)}")
    gen = getattr(generators, c.kind)
    check_options("circuit", gen, c.options)
    params = inspect.signature(gen).parameters
    first = next(iter(params))  # build_circuit passes n positionally to most generators
    from_task = tuple(k for k in ("n_in", "n_out") if k in params)
    given = [k for k in from_task if k in c.options]
    if given:
        raise ConfigError(f"[circuit.options] {given} come from the task; leave them out")
    _check_required("circuit", gen, c.options,
                    ("seed",) + from_task if c.kind in ("block_model", "low_rank_aligned")
                    else ("seed", first) + from_task)


def _check_optimizer_section(cfg: RunConfig) -> None:
    o = cfg.optimizer
    opt = optimizer_classes()
    if o.name.lower() not in opt:
        raise ConfigError(f"[optimizer] name {o.name!r} unknown; torch.optim offers {sorted(opt)}")
    check_options("optimizer", opt[o.name.lower()], o.options, skip=("params", "lr"))
    _check_required("optimizer", opt[o.name.lower()], o.options, ("params", "lr"))
    if o.schedule:
        sch = scheduler_classes()
        if o.schedule.lower() not in sch:
            raise ConfigError(f"[optimizer] schedule {o.schedule!r} unknown; torch.optim.lr_scheduler "
                              f"offers {sorted(sch)} (\"\" = constant lr)")
        cls = sch[o.schedule.lower()]
        check_options("optimizer", cls, o.schedule_options, skip=("optimizer", "last_epoch"),
                      table="optimizer.schedule_options")
        _check_required("optimizer", cls, o.schedule_options, ("optimizer",), table="optimizer.schedule_options")
    elif o.schedule_options:
        raise ConfigError("[optimizer] schedule_options are given but no schedule; name one (schedule = \"steplr\")")


def _checked_rule(cfg: RunConfig) -> Any:
    """Every check of :func:`validate_config`; returns the rule instance it asked for capabilities."""
    _check_declared(cfg)
    t, f = cfg.train, cfg.flossing
    if t.stop_at_accuracy > 0 and t.eval_every == 0:
        raise ConfigError(f"[train] stop_at_accuracy = {t.stop_at_accuracy} needs evaluations: set eval_every > 0")
    if (f.every > 0) != (f.steps > 0):
        raise ConfigError(f"[flossing] every ({f.every}) and steps ({f.steps}) go together: inter-flossing runs "
                          f"`steps` steps every `every` iterations; set both, or neither")
    _check_circuit_section(cfg)
    if cfg.task.name not in tasks.TASKS:
        raise ConfigError(f"[task] name {cfg.task.name!r} unknown; available: {sorted(tasks.TASKS)}")
    check_options("task", tasks.TASKS[cfg.task.name], cfg.task.options)
    _check_required("task", tasks.TASKS[cfg.task.name], cfg.task.options)
    model_cls = _model_class(cfg)
    check_options("model", model_cls, cfg.model.options, skip=("circuit", "n_in", "n_out"))
    _check_required("model", model_cls, cfg.model.options, ("circuit", "n_in", "n_out"))
    name = cfg.rule.name
    if name not in RULES:
        raise ConfigError(f"[rule] name {name!r} unknown; registered rules: {sorted(RULES)}")
    check_options("rule", RULES[name], cfg.rule.options)
    _check_required("rule", RULES[name], cfg.rule.options)
    with _section("rule", name):
        rule = make_rule(name, **cfg.rule.options)
    kinds = tuple(getattr(rule, "model_types", ("rate", "spiking")))  # the instance's: a wrapper's depend on its base
    if cfg.model.type not in kinds:
        raise ConfigError(f"[rule] {name!r} applies to {list(kinds)} models, not to [model] type "
                          f"{cfg.model.type!r}")
    if t.update_every_steps > 0 and not getattr(rule, "online", False):
        raise ConfigError(f"[train] update_every_steps = {t.update_every_steps} needs an online rule (init/advance/"
                          f"read, e.g. eprop, rflo); [rule] {name!r} computes whole-trial gradients")
    _check_optimizer_section(cfg)
    if f.enabled or f.options:
        check_options("flossing", FlossingConfig, f.options)
    return rule


def validate_config(cfg: RunConfig) -> None:
    """Check a run configuration without building its circuit, model or task (see module docstring): declared
    ranges and choices, fields that go together, names exist, options are accepted, required arguments are given,
    the rule applies to the model type. :func:`build` calls it first.

    Raises:
        ConfigError: one line naming the section and key.
    """
    _checked_rule(cfg)


# ---------------------------------------------------------------------- building

def resolve_device(device: str) -> torch.device:
    """``"auto"``: CUDA when available, else the CPU; any other name as torch reads it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _model_class(cfg: RunConfig) -> type:
    return models.SpikingRNN if cfg.model.type == "spiking" else models.RateRNN


def build_task(cfg: RunConfig) -> Any:
    """The task of ``cfg`` (``[task]`` name and options checked; a bad option value is a ConfigError)."""
    if cfg.task.name not in tasks.TASKS:
        raise ConfigError(f"[task] name {cfg.task.name!r} unknown; available: {sorted(tasks.TASKS)}")
    check_options("task", tasks.TASKS[cfg.task.name], cfg.task.options)
    with _section("task", cfg.task.name):
        return tasks.make_task(cfg.task.name, **cfg.task.options)


def build_circuit(cfg: RunConfig, seed: int, task: Any = None):
    """The circuit of ``cfg``: a connectome, or a generator. Whatever draws at random (a generator, or a connectome
    loader that samples, such as ``mouse_v1``) is seeded with ``seed`` unless its options give a ``seed``. A
    generator that takes ``n_in``/``n_out`` (``task_aligned_low_rank``) gets them from ``task`` (built from
    ``cfg.task`` when not given)."""
    c = cfg.circuit
    if c.kind == "connectome":
        opts = dict(c.options)
        if "seed" in inspect.signature(connectomes.loader(c.name)).parameters:
            opts.setdefault("seed", seed)
        return _check_circuit_n(cfg, connectomes.load(c.name, **opts))
    fn = getattr(generators, c.kind)
    opts = dict(c.options)
    params = inspect.signature(fn).parameters
    if "seed" in params:
        opts.setdefault("seed", seed)
    if "n_in" in params and "n_out" in params:
        if task is None:
            task = tasks.make_task(cfg.task.name, **cfg.task.options)
        opts.update(n_in=task.n_in, n_out=task.n_out)
    if c.kind in ("block_model", "low_rank_aligned"):
        return _check_circuit_n(cfg, fn(**opts))
    return fn(c.n, **opts)


_DEFAULT_CIRCUIT_N = CircuitConfig().n


def _check_circuit_n(cfg: RunConfig, circuit):
    """``[circuit] n`` sizes generators that take it; a connectome or a ``block_model`` / ``low_rank_aligned``
    circuit has its size from its data or options. An ``n`` other than the default that disagrees with that size
    is an error rather than being ignored (the default cannot be told from an explicit 100, so it is let pass)."""
    n = cfg.circuit.n
    if n != _DEFAULT_CIRCUIT_N and n != circuit.n:
        what = f"connectome {cfg.circuit.name!r}" if cfg.circuit.kind == "connectome" else cfg.circuit.kind
        raise ConfigError(f"[circuit] n = {n}, but the {what} circuit has {circuit.n} neurons: n does not size "
                          f"a {cfg.circuit.kind} circuit (its size comes from "
                          f"{'the data' if cfg.circuit.kind == 'connectome' else '[circuit.options]'}); "
                          f"remove n or set it to {circuit.n}")
    return circuit


def build(cfg: RunConfig, *, out_dir: str | None = None,
          measurements: Iterable[Measurement | MeasurementSpec] = ()):
    """Build ``(circuit, model, task, rule, optimizer, trainer)`` from a run configuration (checked first with
    :func:`validate_config`); ``measurements`` (hooks, or specs resolved here) go to the trainer.

    One seed determines everything: circuit generation (numpy), initial weights (torch) and the training and
    evaluation trials (torch generators), each from its own stream derived with
    :func:`~spikelearn.train.derive_seeds`.
    """
    rule = _checked_rule(cfg)
    seeds = derive_seeds(cfg.train.seed)
    task = build_task(cfg)
    with _section("circuit", cfg.circuit.name or cfg.circuit.kind):
        circuit = build_circuit(cfg, seeds["circuit"], task)
    model_cls = _model_class(cfg)
    model_opts = dict(cfg.model.options)
    model_opts.setdefault("dt_ms", float(task.dt_ms))  # one time step for model and task
    if float(model_opts["dt_ms"]) != float(task.dt_ms):
        raise ConfigError(f"[model.options] dt_ms = {model_opts['dt_ms']} differs from the task's dt_ms = "
                          f"{task.dt_ms}; leave it out to use the task's")
    torch.manual_seed(seeds["init"])
    with _section("model", model_cls.__name__):
        model = model_cls(circuit, task.n_in, task.n_out, **model_opts)
    model = model.to(device=resolve_device(cfg.train.device), dtype=getattr(torch, cfg.train.dtype))
    with _section("rule", type(rule).__name__):
        init_rule_state(rule, model)  # fits the rule to this model (e.g. a given feedback matrix's shape)
    opt_cls = optimizer_classes()[cfg.optimizer.name.lower()]
    with _section("optimizer", opt_cls.__name__):
        optimizer = opt_cls(model.parameters(), lr=cfg.optimizer.lr, **cfg.optimizer.options)
    scheduler = None
    if cfg.optimizer.schedule:
        sch_cls = scheduler_classes()[cfg.optimizer.schedule.lower()]
        with _section("optimizer", sch_cls.__name__):
            scheduler = sch_cls(optimizer, **cfg.optimizer.schedule_options)
    train_cfg = cfg.train if out_dir is None else dataclasses.replace(cfg.train, out_dir=out_dir)
    flossing = None
    if cfg.flossing.enabled:
        f = cfg.flossing
        with _section("flossing", "FlossingSchedule"):
            flossing = FlossingSchedule(pre_steps=f.pre_steps, every=f.every, steps=f.steps, max_times=f.max_times,
                                        batch_size=f.batch_size, lr=f.lr, config=dict(f.options),
                                        pre_mode=f.pre_mode or None, inter_lr=f.inter_lr or None)
    hooks = tuple(m for s in measurements
                  for m in (resolve_measurements([s]) if isinstance(s, MeasurementSpec) else (s,)))
    trainer = Trainer(model, task, rule, optimizer, train_cfg, run_config=cfg, flossing=flossing,
                      scheduler=scheduler, measurements=hooks,
                      settings=resolved_settings(model, task, rule, flossing))
    return circuit, model, task, rule, optimizer, trainer


def check_build(cfg: RunConfig) -> None:
    """Everything :func:`build` checks, by building once on the CPU: the names and options of
    :func:`validate_config`, and the values inside the options tables (a negative time constant, a probability
    above 1, ...), as ConfigErrors naming the section. Nothing is trained or written, the global torch RNG is left
    as it was, and ``train.device`` is ignored (a driver without the GPU can check runs meant for one)."""
    cpu = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, device="cpu"))
    with torch.random.fork_rng(devices=[]):
        build(cpu)


# ---------------------------------------------------------------------- measurement hooks

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


def check_measurements(specs: Sequence[MeasurementSpec]) -> tuple[MeasurementSpec, ...]:
    """Check hooks before anything runs: ``every`` in its declared range, ``fn`` importable and callable, its
    options accepted. Returns ``specs`` as a tuple."""
    every = allowed_values(MeasurementSpec)["every"]
    for i, spec in enumerate(specs):
        check_allowed(f"[[measurements]] #{i + 1}", "every", spec.every, every)
        fn = _import_hook(spec)
        check_options(f"measurements.{spec.name}", fn, spec.options,
                      skip=("model", "task", "iteration", "initial_model"))
    return tuple(specs)


def parse_measurements(meas: Any) -> tuple[MeasurementSpec, ...]:
    """Parse the ``[[measurements]]`` array of tables into :class:`~spikelearn.config.MeasurementSpec` s (hooks
    imported and their options checked now, so a typo fails before anything runs)."""
    return check_measurements(measurement_specs(meas))


def resolve_measurements(specs: Iterable[MeasurementSpec | Mapping]) -> tuple[Measurement, ...]:
    """Turn :class:`~spikelearn.config.MeasurementSpec` s (or their dicts) into
    :class:`~spikelearn.train.Measurement` hooks."""
    out = []
    for s in specs:
        s = s if isinstance(s, MeasurementSpec) else MeasurementSpec(**s)
        fn = _import_hook(s)
        out.append(Measurement(s.name, functools.partial(fn, **s.options) if s.options else fn, s.every))
    return tuple(out)


def load_run_file(path: str | pathlib.Path) -> tuple[RunConfig, tuple[MeasurementSpec, ...]]:
    """Read a TOML run file: the configuration and its ``[[measurements]]`` hooks (checked), in the same format
    as a sweep file's."""
    d = read_toml(path)
    meas = parse_measurements(d.pop("measurements", []))
    return config_from_dict(d), meas


# ---------------------------------------------------------------------- resolved settings and resuming

def _settings_value(v: Any) -> Any:
    """A constructor setting as JSON: scalars and strings as they are, containers element-wise, small arrays
    as lists, anything else (large arrays, objects) by type and shape/repr so that a change still shows."""
    if dataclasses.is_dataclass(v) and not isinstance(v, type):  # private fields only when they are settings
        items = ((f.name, getattr(v, f.name)) for f in dataclasses.fields(v))
        return {k: _settings_value(x) for k, x in items
                if not k.startswith("_") or (dataclasses.is_dataclass(x) and not isinstance(x, type))}
    if isinstance(v, tuple) and hasattr(v, "_fields"):  # NamedTuple configs
        return {k: _settings_value(getattr(v, k)) for k in getattr(v, "_fields")}
    if isinstance(v, (np.generic,)):
        v = v.item()
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else repr(v)
    if isinstance(v, dict):
        return {str(k): _settings_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_settings_value(x) for x in v]
    if isinstance(v, (np.ndarray, torch.Tensor)):
        a = v.detach().cpu().double().numpy() if isinstance(v, torch.Tensor) else np.asarray(v, dtype=float)
        return a.tolist() if a.size <= 16 else f"array{list(a.shape)} sum={float(a.sum()):.12g}"
    if isinstance(v, torch.dtype):
        return str(v)
    cfg = getattr(v, "config", None)  # e.g. a Surrogate
    if callable(cfg):
        return {"type": type(v).__name__, "config": _settings_value(cfg())}
    return f"{type(v).__name__}"


def resolved_settings(model: nn.Module, task: Any, rule: Any, flossing: Any = None) -> dict:
    """Every setting the run's objects were built with, package defaults included: the model's constructor
    arguments, the task's and the rule's fields, the flossing schedule. A run config names only what the user
    gave, so this is what shows when a package default has changed under a checkpoint (see :func:`check_resume`)."""
    model_cfg = {k: v for k, v in getattr(model, "_config", {}).items() if k not in ("dtype", "device")}
    out = {"model": {"class": type(model).__name__, **_settings_value(model_cfg)},
           "task": {"class": type(task).__name__, **(_settings_value(task) if dataclasses.is_dataclass(task)
                                                     else {})},
           "rule": {"class": type(rule).__name__, **(_settings_value(rule) if dataclasses.is_dataclass(rule)
                                                     else {})}}
    if flossing is not None:
        out["flossing"] = _settings_value(flossing)
    return out


_RESUMABLE_CHANGES = {("train", "iterations"), ("train", "quiet"), ("train", "out_dir"), ("train", "device")}


def _check_same_config(cfg: RunConfig, saved: str | None, checkpoint: pathlib.Path) -> None:
    """A run resumes only under the configuration it was started with (``saved``, the checkpoint's run config as
    JSON): anything but ``train.iterations`` (train longer), ``quiet``, ``out_dir`` and ``device`` differing is a
    ConfigError naming the keys. A key added to the schema after the run started counts as its default there (the
    behaviour the run was started with), so a resume may not switch a new option on."""
    if saved is None:
        return
    old, new = json.loads(saved), json.loads(cfg.to_json())
    defaults = json.loads(RunConfig().to_json())
    for sec, fields in defaults.items():
        if sec not in old or isinstance(old[sec], dict):
            old[sec] = {**fields, **old.get(sec, {})}
    diff = []
    for sec in sorted(set(old) | set(new)):
        a, b = old.get(sec, {}), new.get(sec, {})
        if not isinstance(a, dict) or not isinstance(b, dict):
            if a != b:
                diff.append(sec)
            continue
        diff += [f"{sec}.{k}" for k in sorted(set(a) | set(b))
                 if (sec, k) not in _RESUMABLE_CHANGES and k in a and a.get(k) != b.get(k)]
    if diff:
        raise ConfigError(f"cannot resume {checkpoint.parent}: the configuration differs from the one the run was "
                          f"started with in {diff}; resume with the original configuration (only train.iterations "
                          f"may grow), or start a new run folder")


def _check_same_settings(now: dict | None, saved: str | None, checkpoint: pathlib.Path) -> None:
    """Resuming under different resolved settings (a package default changed since the run started) is a
    ConfigError naming each setting with its old and new value. Settings that did not exist when the run started
    are not compared (a new option's default keeps the old behaviour)."""
    old = None if saved is None else json.loads(saved)
    if old is None or now is None:
        return
    now = json.loads(json.dumps(now))

    def flat(d: Any, prefix: str = "") -> dict:
        if not isinstance(d, dict):
            return {prefix: d}
        r: dict = {}
        for k, v in d.items():
            r.update(flat(v, f"{prefix}.{k}" if prefix else k))
        return r

    a, b = flat(old), flat(now)  # a setting added since (absent from the checkpoint) is not a change: its
    # default is the behaviour the run started with, or the change would be a changed default of an old key
    diff = [f"{k}: {a[k]!r} -> {b.get(k, '(absent)')!r}" for k in sorted(a) if a[k] != b.get(k, "(absent)")]
    if diff:
        raise ConfigError(f"cannot resume {checkpoint.parent}: the run was started with other settings than this "
                          f"spikelearn builds from the same configuration (a default changed?): "
                          f"{'; '.join(diff[:8])}{' ...' if len(diff) > 8 else ''}; resume with the version "
                          f"that started it, or start a new run folder")


def check_resume(cfg: RunConfig, settings: dict | None, state: Mapping, checkpoint: pathlib.Path) -> None:
    """Refuse to resume the checkpoint ``state`` (read from ``checkpoint``) under ``cfg`` unless the run was
    started with the same configuration (``train.iterations``, ``quiet``, ``out_dir`` and ``device`` may differ)
    and this spikelearn resolves the same ``settings`` (:func:`resolved_settings`) from it.

    Raises:
        ConfigError: naming the keys, or the settings with their old and new values.
    """
    _check_same_config(cfg, state.get("run_config"), checkpoint)
    _check_same_settings(settings, state.get("settings"), checkpoint)


# ---------------------------------------------------------------------- build and train

def train(cfg: RunConfig, *, out_dir: str | None = None, resume: bool = False,
          measurements: Iterable[Measurement | MeasurementSpec] = (),
          overwrite: bool = False) -> tuple[pd.DataFrame, Any]:
    """Build from ``cfg`` and train; writes ``config.json``, ``history.csv``, ``model.pt`` and the checkpoint
    into the output folder. With ``resume``, continue from the folder's checkpoint (:func:`check_resume`). A folder
    that already holds a run's checkpoint is not trained over unless ``resume`` or ``overwrite``. Returns
    ``(history, model)``."""
    circuit, model, task, rule, optimizer, trainer = build(cfg, out_dir=out_dir, measurements=measurements)
    out = pathlib.Path(cfg.train.out_dir if out_dir is None else out_dir)  # the trainer's out_dir
    out.mkdir(parents=True, exist_ok=True)
    if not resume and not overwrite and (out / CHECKPOINT).exists():
        raise FileExistsError(f"{out} already holds a run ({CHECKPOINT}); continue it with resume (--resume), "
                              f"train into another folder, or replace it with overwrite (--overwrite)")
    if resume:
        if not (out / CHECKPOINT).exists():
            raise FileNotFoundError(f"cannot resume: no checkpoint in {out}")
        ck = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=True)  # read once: check, then restore
        check_resume(cfg, trainer.settings, ck, out / CHECKPOINT)
        trainer.load_checkpoint(state=ck)
    (out / "config.json").write_text(cfg.to_json())
    (out / "settings.json").write_text(json.dumps(trainer.settings, indent=2))
    hist = trainer.run()
    hist.to_csv(out / "history.csv", index=False)
    model.save(out / "model.pt")
    summary = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in hist.iloc[-1].to_dict().items()}
    if trainer.config.stop_at_accuracy > 0:
        summary["stopped_at"] = trainer.stopped_at
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    return hist, model
