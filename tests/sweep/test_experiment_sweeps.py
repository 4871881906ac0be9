"""Every sweep file under experiments/ loads, expands to the number of runs its axes promise, and each distinct run
configuration passes configuration validation (names, options, rule/model pairing), and its first run builds — so a
sweep prepared for a later session or a lent machine cannot fail on arrival for a typo."""

import math
import pathlib

import pytest

from spikelearn.sweep.spec import check_run_config, expand, load_sweep
from spikelearn.build import validate_config

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[2] / "experiments"
SWEEPS = sorted(p for p in EXPERIMENTS.glob("*/*.toml") if "[sweep" in p.read_text())


def test_there_are_sweep_files():
    assert len(SWEEPS) >= 10


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_experiment_sweep_expands_and_validates(path):
    spec = load_sweep(path)
    runs = expand(spec)
    zipped = math.prod(len(next(iter(g.values()))) for g in spec.zip)
    assert len(runs) == math.prod(len(v) for v in spec.axes.values()) * zipped
    assert len({r.id for r in runs}) == len(runs)
    for r in runs:
        validate_config(r.config)
    check_run_config(runs[0].config)  # built once (untrained, on the CPU): option values too
