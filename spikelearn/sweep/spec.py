"""Sweep specification: a base run configuration, axes to vary, and the expansion into runs with stable ids.

A sweep file is a ``spikelearn train`` TOML file (sections ``[circuit]`` ... ``[train]``, the base configuration)
plus measurement hooks and a ``[sweep]`` table::

    [circuit]
    kind = "gaussian"
    n = 64
    [model]
    type = "rate"
    [train]
    iterations = 200
    checkpoint_every = 50

    [[measurements]]                  # optional hooks: fn(model, task, iteration, **options) -> float | dict
    name = "weight_change"
    fn = "mypackage.measures:relative_weight_change"   # "module:attribute", importable on every worker
    every = 50
    options = {}

    [sweep]
    name = "rule_x_gain"              # default: the file's stem
    out_dir = "sweeps/rule_x_gain"    # default: sweeps/<name>; `spikelearn sweep run --out` overrides
    executor = "local"                # "local" or "dask"; CLI flags override these four
    workers = 1                       # local: 1 = in-process, N > 1 = a pool of N processes
    scheduler = ""                    # dask: scheduler address; empty = start a LocalCluster
    max_retries = 2                   # re-runs of a run whose worker was lost

    [sweep.axes]                      # crossed: every combination
    "rule.name" = ["bptt", "tbptt"]
    "train.seed" = [0, 1, 2, 3, 4]

    [[sweep.zip]]                     # each group: its lists vary together (equal lengths), crossed with the rest
    "circuit.options.g" = [0.5, 1.0, 2.0]
    "optimizer.lr" = [1e-2, 5e-3, 1e-3]

Axis keys are dotted paths into the run configuration: ``section.field`` (``train.seed``), ``section.options.key``
(``circuit.options.g``, nested keys allowed) or a whole ``section`` whose values are tables replacing the fields
they name (``circuit = [{kind = "gaussian", options = {g = 1.0}}, {kind = "connectome", name = "mouse_v1",
options = {}}]``). ``train.out_dir`` cannot vary: each run's folder is ``<sweep dir>/runs/<run id>``.

The run id is the first 12 hex digits of the SHA-256 of the canonical JSON (sorted keys) of the resolved
configuration and the measurement hooks, with ``train.out_dir`` left out and ``train.quiet`` forced true, so
re-submitting the same sweep finds the same runs, and the same run in two sweeps has the same id.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import math
import pathlib
from dataclasses import dataclass, field
from typing import Any, Mapping

from spikelearn.build import check_build, parse_measurements, resolve_measurements
from spikelearn.config import ConfigError, MeasurementSpec, RunConfig, config_from_dict, read_toml

__all__ = ["MeasurementSpec", "SweepSpec", "RunSpec", "load_sweep", "sweep_from_dict", "expand", "run_id",
           "check_run_config", "resolve_measurements", "SECTIONS"]

SECTIONS = ("circuit", "model", "task", "rule", "optimizer", "train", "flossing")
EXECUTORS = ("local", "dask")
_SWEEP_KEYS = {"name", "out_dir", "executor", "workers", "scheduler", "max_retries", "axes", "zip"}


def _check_int(where: str, v: Any, low: int) -> int:
    """A ``[sweep]`` count: an integer >= ``low`` (the run configurations are checked by spikelearn.build)."""
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ConfigError(f"{where} must be an integer >= {low}, got {v!r}")
    return v


@dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep: base configuration, crossed axes, zipped groups, hooks and executor defaults."""

    base: dict                                      # RunConfig as nested dicts (validated)
    axes: dict = field(default_factory=dict)        # key -> list of values, crossed
    zip: tuple = ()                                 # tuple of {key -> list}, each group zipped
    measurements: tuple = ()                        # tuple[MeasurementSpec, ...]
    name: str = "sweep"
    out_dir: str = ""
    executor: str = "local"
    workers: int = 1
    scheduler: str = ""
    max_retries: int = 2

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["zip"] = [dict(g) for g in self.zip]
        return d


@dataclass(frozen=True)
class RunSpec:
    """One expanded run: its id, resolved configuration, hooks and the axis values that produced it."""

    id: str
    config: RunConfig               # train.out_dir = "runs/<id>" (relative to the sweep folder), quiet = true
    measurements: tuple             # tuple[MeasurementSpec, ...]
    axes: dict                      # axis key -> value for this run

    def config_dict(self) -> dict:
        return self.config.to_dict()


# ---------------------------------------------------------------------------------------------- parsing

def load_sweep(path: str | pathlib.Path) -> SweepSpec:
    """Read a sweep TOML file (see module docstring); the sweep's name defaults to the file's stem."""
    p = pathlib.Path(path)
    data = read_toml(p, "sweep file")
    data.setdefault("sweep", {})
    if isinstance(data["sweep"], dict):
        data["sweep"].setdefault("name", p.stem)
    return sweep_from_dict(data)


def sweep_from_dict(d: Mapping) -> SweepSpec:
    """Build a :class:`SweepSpec` from nested dicts (the TOML file's structure), validating everything.

    Raises:
        ConfigError: unknown section or key, unknown axis key, empty axis, zipped lists of unequal length,
            an expanded run that is not a valid configuration, or an unimportable measurement hook.
    """
    d = dict(d)
    sweep = d.pop("sweep", {})
    meas = d.pop("measurements", [])
    if not isinstance(sweep, Mapping):
        raise ConfigError("[sweep] must be a table")
    unknown = set(sweep) - _SWEEP_KEYS
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)} in section [sweep]; allowed keys: {sorted(_SWEEP_KEYS)}")
    base_cfg = config_from_dict(d)  # unknown sections/keys of the base configuration raise here
    base = base_cfg.to_dict()
    axes = sweep.get("axes", {})
    zips = sweep.get("zip", [])
    if isinstance(zips, Mapping):
        zips = [zips]
    if not isinstance(axes, Mapping):
        raise ConfigError("[sweep.axes] must be a table of axis key -> list of values")
    if not isinstance(zips, list) or not all(isinstance(g, Mapping) for g in zips):
        raise ConfigError("[[sweep.zip]] must be tables of axis key -> list of values")
    seen: list[str] = []
    for where, group in [("[sweep.axes]", axes)] + [(f"[[sweep.zip]] #{i + 1}", g) for i, g in enumerate(zips)]:
        for key, values in group.items():
            _check_axis_key(key)
            if not isinstance(values, list):
                raise ConfigError(f"axis {key!r} in {where} must be a list of values, got {values!r}")
            if not values:
                raise ConfigError(f"axis {key!r} in {where} is empty")
            for other in seen:
                if key == other or key.startswith(other + ".") or other.startswith(key + "."):
                    raise ConfigError(f"axis {key!r} overlaps axis {other!r}; each setting may vary on one axis only")
            seen.append(key)
        lengths = {k: len(v) for k, v in group.items()}
        if where != "[sweep.axes]" and len(set(lengths.values())) > 1:
            raise ConfigError(f"zipped axes in {where} need lists of equal length, got {lengths}")
    measurements = parse_measurements(meas)
    executor = sweep.get("executor", "local")
    if executor not in EXECUTORS:
        raise ConfigError(f"[sweep] executor must be one of {list(EXECUTORS)}, got {executor!r}")
    for k in ("name", "out_dir", "scheduler"):
        if not isinstance(sweep.get(k, ""), str):
            raise ConfigError(f"[sweep] {k} must be a string, got {sweep[k]!r}")
    spec = SweepSpec(base=base, axes={k: list(v) for k, v in axes.items()},
                     zip=tuple({k: list(v) for k, v in g.items()} for g in zips), measurements=measurements,
                     name=sweep.get("name", "sweep") or "sweep", out_dir=sweep.get("out_dir", ""),
                     executor=executor, workers=_check_int("[sweep] workers", sweep.get("workers", 1), 1),
                     scheduler=sweep.get("scheduler", ""),
                     max_retries=_check_int("[sweep] max_retries", sweep.get("max_retries", 2), 0))
    runs = expand(spec)  # every expanded run must be a valid configuration
    ids = [r.id for r in runs]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ConfigError(f"the sweep expands to identical runs (ids {dup}); remove duplicate axis values")
    return spec


def _check_axis_key(key: Any) -> None:
    if not isinstance(key, str) or not key:
        raise ConfigError(f"axis key must be a non-empty string, got {key!r}")
    parts = key.split(".")
    section = parts[0]
    if section not in SECTIONS:
        raise ConfigError(f"unknown axis key {key!r}: {section!r} is not a section; sections: {list(SECTIONS)}")
    if len(parts) == 1:
        return
    sec = getattr(RunConfig(), section)
    fields = [f.name for f in dataclasses.fields(sec)]
    if parts[1] not in fields:
        raise ConfigError(f"unknown axis key {key!r}: [{section}] has no field {parts[1]!r}; fields: {fields}")
    if key == "train.out_dir":
        raise ConfigError("axis key 'train.out_dir' cannot vary: each run's folder is <sweep dir>/runs/<run id>")
    tables = [f for f in fields if isinstance(getattr(sec, f), dict)]  # options, schedule_options, ...
    if len(parts) > 2 and parts[1] not in tables:
        raise ConfigError(f"unknown axis key {key!r}: only the tables {tables} have sub-keys in [{section}]")
    if any(not p for p in parts):
        raise ConfigError(f"axis key {key!r} has an empty component")


# ---------------------------------------------------------------------------------------------- expansion

def _set_path(d: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    if len(parts) == 1:
        if not isinstance(value, Mapping):
            raise ConfigError(f"axis {key!r}: values of a section axis must be tables, got {value!r}")
        d[key] = {**d[key], **copy.deepcopy(dict(value))}
        return
    node = d
    for p in parts[:-1]:
        nxt = node.get(p)
        if not isinstance(nxt, dict):
            nxt = node[p] = {}
        node = nxt
    node[parts[-1]] = copy.deepcopy(value)


_MISSING = object()


def run_id(config: RunConfig | Mapping, measurements=()) -> str:
    """Stable id: SHA-256 (12 hex digits) of the canonical JSON of config and hooks.

    ``train.out_dir`` and ``train.quiet`` are left out, and so is every field at its default value, so that a
    field (or section) added to the schema later with a default leaves existing runs' ids unchanged.
    """
    cfg = config.to_dict() if isinstance(config, RunConfig) else copy.deepcopy(dict(config))
    defaults = RunConfig().to_dict()
    cfg = {sec: {k: v for k, v in fields.items()
                 if not (sec == "train" and k in ("out_dir", "quiet")) and v != defaults.get(sec, {}).get(k, _MISSING)}
           for sec, fields in cfg.items()}
    cfg = {sec: fields for sec, fields in cfg.items() if fields}
    meas = [m.to_dict() if isinstance(m, MeasurementSpec) else dict(m) for m in measurements]
    text = json.dumps({"config": cfg, "measurements": meas}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _axis_label(v: Any) -> Any:
    return json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v


def _non_finite(obj: Any, path: str = "") -> tuple[str, float] | None:
    """``(dotted key, value)`` of the first NaN/infinite float in nested dicts/lists, or ``None``."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return path, obj
    items = obj.items() if isinstance(obj, Mapping) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for k, v in items:
        found = _non_finite(v, f"{path}.{k}" if path else str(k))
        if found is not None:
            return found
    return None


def expand(spec: SweepSpec) -> list[RunSpec]:
    """Every run of the sweep, in a deterministic order (axes in file order, crossed; zipped groups together)."""
    groups: list[list[dict]] = [[{k: v} for v in vals] for k, vals in spec.axes.items()]
    groups += [[{k: g[k][i] for k in g} for i in range(len(next(iter(g.values()))))] for g in spec.zip if g]
    runs = []
    for combo in itertools.product(*groups):
        assign: dict = {}
        for part in combo:
            assign.update(part)
        d = copy.deepcopy(spec.base)
        for k, v in assign.items():
            _set_path(d, k, v)
        d["train"]["quiet"] = True
        d["train"]["out_dir"] = ""
        try:
            cfg = config_from_dict(d)
        except ConfigError as e:
            raise ConfigError(f"run with {assign}: {e}") from None
        bad = _non_finite(cfg.to_dict())
        if bad is not None:
            raise ConfigError(f"run with {assign}: {bad[0]} = {bad[1]!r} is not a finite number (a run id, and a "
                              f"JSON store, cannot hold NaN or infinity)")
        rid = run_id(cfg, spec.measurements)
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, out_dir=f"runs/{rid}"))
        runs.append(RunSpec(rid, cfg, tuple(spec.measurements), {k: _axis_label(v) for k, v in assign.items()}))
    return runs


# ---------------------------------------------------------------------------------------------- validation

def check_run_config(cfg: RunConfig) -> None:
    """The checks of :func:`spikelearn.build.build`: the run is built once on the CPU, untrained and unwritten
    (:func:`spikelearn.build.check_build`), so a bad name, option or option value is a ConfigError before
    anything runs."""
    check_build(cfg)


