"""The committed experiment stores re-open with identical report tables (issue 18, "done when").

For every committed sweep store ``experiments/<name>/store_<tag>/`` that has a committed report folder
``experiments/<name>/report_<tag>/``:

* the store opens through :class:`spikelearn.sweep.store.RunStore` (read-only), and every stored run configuration
  parses with :func:`spikelearn.config.config_from_dict`, passes :func:`spikelearn.build.validate_config`, keeps
  every stored key and value, and still hashes to its stored run id (so re-submitting the sweep file finds the run
  instead of running it again);
* the experiment's ``report.py`` regenerates its CSV tables from the store (its ``main()``, run in-process with
  the plotting functions replaced by no-ops: the figures are not compared and are the slow part), and every
  committed CSV is byte-for-byte equal to the regenerated one.

Tables the current ``report.py`` writes but the committed folder lacks (the report gained them after the folder
was written: ``gain_tests.csv``, ``flossing_tests.csv`` of some gain_lyapunov reports) are not compared.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import sys

import pandas as pd
import pytest

from spikelearn.build import validate_config
from spikelearn.config import config_from_dict
from spikelearn.sweep.spec import run_id
from spikelearn.sweep.store import RunStore

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[2] / "experiments"
STORES = sorted(s for s in EXPERIMENTS.glob("*/store_*") if (s / "store.sqlite").is_file())
REPORTED = [s for s in STORES if (s.parent / s.name.replace("store_", "report_", 1)).is_dir()]

# Committed tables written by an older report.py, kept as they are: {(experiment, table): {committed column:
# (column the current report writes in its place, RunStore.runs() column the committed values come from)}}.
# rank_rich_lazy: commit d06f8ab ("run cost from the trainer's cumulative wall time") made report.py write
# ``train_time_s`` (the trainer's cumulative wall time) where it wrote ``duration_s`` (the last attempt's end - start)
# without regenerating the rank reports. Every other column is compared byte for byte (the file with the
# committed column put back must equal the committed file), and the committed column against the store.
RENAMED = {("rank_rich_lazy", "runs.csv"): {"duration_s": ("train_time_s", "duration_s")}}


def _id(p: pathlib.Path) -> str:
    return f"{p.parent.name}/{p.name}"


def test_there_are_committed_stores_with_reports():
    assert len(REPORTED) >= 13
    for s in REPORTED:
        assert list((s.parent / s.name.replace("store_", "report_", 1)).glob("*.csv")), s


# ------------------------------------------------------------------------------------------- stored configurations

@pytest.mark.parametrize("store", STORES, ids=_id)
def test_stored_run_configs_validate(store):
    with RunStore(store, readonly=True) as st:
        runs = st.runs()
        rows = st._conn.execute("SELECT id, config, measurements FROM runs ORDER BY position").fetchall()
    assert len(rows) == len(runs) > 0
    bad = []
    for rid, text, meas in rows:
        stored = json.loads(text)
        try:
            cfg = config_from_dict(stored)
            validate_config(cfg)
        except Exception as e:  # noqa: BLE001 - collected and reported together
            bad.append(f"{rid}: {type(e).__name__}: {e}")
            continue
        now = cfg.to_dict()  # the schema may only add fields (with defaults): stored keys and values survive
        lost = {f"{sec}.{k}": (v, now.get(sec, {}).get(k, "<missing>")) for sec, fields in stored.items()
                for k, v in fields.items() if now.get(sec, {}).get(k, "<missing>") != v}
        if lost:
            bad.append(f"{rid}: stored fields read back differently (stored, now): {lost}")
        elif run_id(cfg, json.loads(meas)) != rid:
            bad.append(f"{rid}: the configuration now hashes to {run_id(cfg, json.loads(meas))}")
    assert not bad, f"{len(bad)} of {len(rows)} stored runs of {_id(store)}:\n" + "\n".join(bad[:20])


# ------------------------------------------------------------------------------------------- report tables

def _load_report(exp: pathlib.Path):
    spec = importlib.util.spec_from_file_location(f"_report_{exp.name}", exp / "report.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _regenerate(store: pathlib.Path, out: pathlib.Path, monkeypatch) -> None:
    mod = _load_report(store.parent)
    for name in dir(mod):  # figures are not compared: skip drawing them
        if name.startswith("plot") and callable(getattr(mod, name)):
            monkeypatch.setattr(mod, name, lambda *a, **k: None)
    if hasattr(mod, "densities"):  # curvature: SLQ densities of model.pt files (not in the compact stores)
        monkeypatch.setattr(mod, "densities", lambda *a, **k: {})
    monkeypatch.setattr(sys, "argv", ["report.py", str(store), "--out", str(out)])
    mod.main()


def _explain(committed: pathlib.Path, regenerated: pathlib.Path) -> str:
    """Which columns and rows differ (parsed tables), for the failure message."""
    a, b = pd.read_csv(committed), pd.read_csv(regenerated)
    if list(a.columns) != list(b.columns):
        gone, extra = [c for c in a.columns if c not in b.columns], [c for c in b.columns if c not in a.columns]
        return (f"columns differ: committed only {gone}, regenerated only {extra}" if gone or extra
                else f"columns in another order: committed {list(a.columns)}, regenerated {list(b.columns)}")
    if a.shape != b.shape:
        return f"shapes differ: committed {a.shape}, regenerated {b.shape}"
    cols = [c for c in a.columns if not a[c].equals(b[c])]
    rows = {c: a.index[(a[c] != b[c]) & ~(a[c].isna() & b[c].isna())].tolist()[:10] for c in cols}
    return f"parsed values differ in columns {cols} (rows {rows})" if cols else "same values, different text"


@pytest.mark.parametrize("store", REPORTED, ids=_id)
def test_report_tables_regenerate_identically(store, tmp_path, monkeypatch):
    report = store.parent / store.name.replace("store_", "report_", 1)
    _regenerate(store, tmp_path, monkeypatch)
    monkeypatch.undo()
    failures = []
    for committed in sorted(report.glob("*.csv")):
        regenerated = tmp_path / committed.name
        if not regenerated.exists():
            failures.append(f"{committed.name}: not written by report.py")
            continue
        renamed = RENAMED.get((store.parent.name, committed.name), {})
        if renamed:
            regenerated = _put_back(store, committed, regenerated, renamed, failures)
        if committed.read_bytes() != regenerated.read_bytes():
            failures.append(f"{committed.name}: {_explain(committed, regenerated)}")
    assert not failures, f"{_id(report)} regenerated from {_id(store)}:\n" + "\n".join(failures)


def _put_back(store, committed, regenerated, renamed, failures) -> pathlib.Path:
    """The regenerated table with each renamed column swapped for the committed one (after checking the committed
    values against the store), written beside it; compared byte for byte like the others."""
    old, new = pd.read_csv(committed, dtype=str, keep_default_na=False), pd.read_csv(regenerated)
    with RunStore(store, readonly=True) as st:
        runs = st.runs().set_index("id")
    text = regenerated.read_text(encoding="utf-8").splitlines(keepends=True)
    header = text[0].rstrip("\n").split(",")
    for col, (now_col, store_col) in renamed.items():
        assert now_col in header and col in old.columns, (col, now_col, header)
        expect = runs.loc[new["run_id"], store_col].to_numpy()
        if not (old[col].astype(float).to_numpy() == expect).all():
            failures.append(f"{committed.name}: committed {col} is not the store's {store_col}")
        header[header.index(now_col)] = col
    # only the renamed columns are replaced; they hold plain numbers (no quoted commas), so a split is exact
    i = {col: header.index(col) for col in renamed}
    if list(old["run_id"]) != list(new["run_id"]):
        failures.append(f"{committed.name}: runs in a different order")
        return regenerated
    lines = [",".join(header) + "\n"]
    for k, line in enumerate(text[1:]):
        cells = line.rstrip("\n").split(",")
        assert len(cells) == len(header), f"{regenerated.name} row {k}: a cell holds a comma; compare with csv"
        for col, j in i.items():
            cells[j] = old[col].iloc[k]
        lines.append(",".join(cells) + "\n")
    out = regenerated.with_name(regenerated.stem + ".committed_columns.csv")
    out.write_text("".join(lines), encoding="utf-8")
    return out
