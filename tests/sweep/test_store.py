"""Run store: round trip through SQLite, transactional writes, DataFrame views."""

import math
import sqlite3

import pandas as pd
import pytest

from spikelearn.store import RunStore
from spikelearn.sweep import expand, sweep_from_dict


def _runs(tiny):
    d = tiny()
    d["sweep"] = {"axes": {"train.seed": [0, 1, 2], "rule.name": ["bptt"]}}
    return expand(sweep_from_dict(d))


def test_round_trip(tmp_path, tiny):
    runs = _runs(tiny)
    with RunStore(tmp_path / "sw") as store:
        assert store.add_runs(runs) == 3
        assert store.add_runs(runs) == 0  # re-submitting finds the same runs
        store.set_meta("settings", {"executor": "local", "workers": 2})
        assert store.counts() == {"pending": 3, "running": 0, "done": 0, "failed": 0}
        store.mark_running(runs[0].id)
        store.record(runs[0].id, status="done", metrics=[(1, "loss", 2.0), (1, "accuracy", 0.5), (2, "loss", 1.5)],
                     summary={"iteration": 2, "loss": 1.5, "accuracy": 0.5}, host="h", version="0.1.0",
                     start_time="2026-01-01T00:00:00.000+00:00", end_time="2026-01-01T00:00:02.500+00:00",
                     resumed_from=0)
        store.mark_running(runs[1].id)
        store.record(runs[1].id, status="failed", error="TrainingDiverged: loss is nan", metrics=[(1, "loss", 9.0)])
        assert [t["id"] for t in store.todo()] == [runs[2].id]
        assert store.todo()[0]["config"] == runs[2].config.to_dict()
    with RunStore(tmp_path / "sw", readonly=True) as store:  # reopened from disk
        assert store.get_meta("settings") == {"executor": "local", "workers": 2}
        df = store.runs()
        assert list(df["id"]) == [r.id for r in runs]
        assert list(df["status"]) == ["done", "failed", "pending"]
        assert list(df["train.seed"]) == [0, 1, 2] and set(df["rule.name"]) == {"bptt"}
        assert df.loc[0, "duration_s"] == pytest.approx(2.5)
        assert df.loc[0, "host"] == "h" and df.loc[0, "attempts"] == 1
        assert df.loc[1, "error"].startswith("TrainingDiverged")
        m = store.metrics()
        assert list(m.columns) == ["run_id", "iteration", "name", "value"]
        assert len(m) == 4 and m.dtypes["value"] == "float64"
        assert len(store.metrics(run_ids=[runs[0].id], names=["loss"])) == 2
        tidy = store.tidy()
        assert {"run_id", "status", "train.seed", "rule.name", "iteration", "name", "value"} <= set(tidy.columns)
        assert len(tidy) == 4
        assert store.summaries().set_index("run_id").loc[runs[0].id, "loss"] == 1.5
        with pytest.raises(sqlite3.OperationalError):  # readonly really is
            store.set_meta("x", 1)


def test_records_replace_metrics_and_are_transactional(tmp_path, tiny):
    runs = _runs(tiny)
    with RunStore(tmp_path) as store:
        store.add_runs(runs)
        store.record(runs[0].id, status="done", metrics=[(1, "loss", 2.0), (2, "loss", float("nan"))])
        store.record(runs[0].id, status="done", metrics=[(1, "loss", 3.0)])  # a re-run replaces, never duplicates
        assert store.metrics()["value"].tolist() == [3.0]
        # a failing write leaves nothing half-written: duplicate key in the batch -> rollback
        with pytest.raises(sqlite3.IntegrityError):
            store.record(runs[1].id, status="done", metrics=[(1, "loss", 1.0), (1, "loss", 1.0)])
        assert store.runs().set_index("id").loc[runs[1].id, "status"] == "pending"
        assert set(store.metrics()["run_id"]) == {runs[0].id}
        with pytest.raises(KeyError):
            store.record("nosuchrun", status="done")
        with pytest.raises(ValueError):
            store.record(runs[1].id, status="running")
        store.mark_running(runs[2].id)
        assert store.reset("running") == [runs[2].id]
        assert store.counts()["pending"] == 2


def test_nan_values_are_stored_as_null(tmp_path, tiny):
    runs = _runs(tiny)
    with RunStore(tmp_path) as store:
        store.add_runs(runs[:1])
        store.record(runs[0].id, status="done", metrics=[(1, "loss", math.inf)], summary={"loss": math.nan})
        assert pd.isna(store.metrics()["value"]).all()
        assert pd.isna(store.summaries()["loss"]).all()


def test_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no sweep store"):
        RunStore(tmp_path / "nothing", readonly=True)
