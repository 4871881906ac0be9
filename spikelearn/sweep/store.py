"""Run store: one embedded SQLite database per sweep folder (standard library, no server).

Tables (``sqlite3 DIR/store.sqlite .schema``):

- ``runs``: ``id`` (stable run id), ``position`` (order in the sweep), ``config`` (resolved
  :class:`~spikelearn.config.RunConfig` as JSON), ``measurements`` (hooks as JSON), ``axes`` (this run's axis
  values as JSON), ``status`` (``pending``/``running``/``done``/``failed``), ``error`` (exception and traceback),
  ``attempts`` (times started), ``resumed_from`` (checkpoint iteration the last attempt started from; 0 = fresh),
  ``start_time``/``end_time`` (ISO 8601, UTC), ``host``, ``version`` (spikelearn version that ran it) and
  ``summary`` (JSON of the final history row).
- ``metrics``: ``run_id, iteration, name, value``, one row per non-missing history entry (``loss``,
  ``accuracy``, ``eval_loss``, ``firing_rate_hz``, ``wall_time_s`` and measurement columns).
- ``meta``: ``key, value`` (the sweep specification, executor settings, schema version).

Per-run artifacts (checkpoint, model, history.csv, summary.json, error.txt) live in ``DIR/runs/<id>/``.
Every write is one transaction (SQLite write-ahead log); only the sweep driver writes, readers (``status``,
``report``) may read while it runs. Keep the sweep folder on a local or POSIX-locking file system. Results come back as pandas DataFrames: :meth:`RunStore.runs`, :meth:`RunStore.metrics` and the tidy
:meth:`RunStore.tidy` (metrics joined with each run's axis values, one row per value, ready for plotting).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import pathlib
import sqlite3
from typing import Any, Iterable, Sequence, cast

import pandas as pd

__all__ = ["RunStore", "STATUSES", "STORE_FILE", "utc_now"]

STORE_FILE = "store.sqlite"
STATUSES = ("pending", "running", "done", "failed")
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id           TEXT PRIMARY KEY,
    position     INTEGER NOT NULL,
    config       TEXT NOT NULL,
    measurements TEXT NOT NULL DEFAULT '[]',
    axes         TEXT NOT NULL DEFAULT '{}',
    status       TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'done', 'failed')),
    error        TEXT,
    attempts     INTEGER NOT NULL DEFAULT 0,
    resumed_from INTEGER,
    start_time   TEXT,
    end_time     TEXT,
    host         TEXT,
    version      TEXT,
    summary      TEXT
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id    TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    iteration INTEGER NOT NULL,
    name      TEXT NOT NULL,
    value     REAL,
    PRIMARY KEY (run_id, name, iteration)
) WITHOUT ROWID;
"""


def utc_now() -> str:
    """Current time as an ISO 8601 UTC string (the store's time format)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def _json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=float)


def _finite_or_none(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


class RunStore:
    """The SQLite run store of one sweep folder.

    Args:
        path: the sweep folder (the database is ``path/store.sqlite``) or the database file itself.
        readonly: open an existing store for reading only (``FileNotFoundError`` if there is none).

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, path: str | pathlib.Path, *, readonly: bool = False):
        p = pathlib.Path(path)
        self.path = p if p.suffix in (".sqlite", ".sqlite3", ".db") and not p.is_dir() else p / STORE_FILE
        self.readonly = readonly
        if readonly:
            if not self.path.exists():
                raise FileNotFoundError(f"no sweep store at {self.path}")
            # as_uri() percent-encodes '#', '?', '%', spaces: a raw path in a URI would be cut short there
            self._conn = sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro", uri=True, timeout=30.0)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, timeout=30.0)
            # Write-ahead log: commits need no fsync (synchronous=NORMAL), readers never block the writer. A killed
            # process loses nothing committed; a power cut may lose the last commits, i.e. runs rerun on resume.
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            with self._conn:
                self._conn.executescript(_SCHEMA)
                self._conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        self._conn.execute("PRAGMA foreign_keys = ON")

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def folder(self) -> pathlib.Path:
        """The sweep folder (runs' artifacts are in ``folder/runs/<id>``)."""
        return self.path.parent

    def run_dir(self, run_id: str) -> pathlib.Path:
        return self.folder / "runs" / run_id

    # ------------------------------------------------------------------ meta
    def set_meta(self, key: str, value: Any) -> None:
        with self._conn:
            self._conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, _json(value)))

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    # ------------------------------------------------------------------ writes (driver only)
    def add_runs(self, runs: Iterable) -> int:
        """Insert :class:`~spikelearn.sweep.spec.RunSpec` s as pending; runs already stored are left as they are.

        Returns:
            The number of runs added.
        """
        with self._conn:
            start = self._conn.execute("SELECT COALESCE(MAX(position) + 1, 0) FROM runs").fetchone()[0]
            before = self._conn.total_changes
            self._conn.executemany(
                "INSERT OR IGNORE INTO runs (id, position, config, measurements, axes) VALUES (?, ?, ?, ?, ?)",
                [(r.id, start + i, r.config.to_json(), _json([m.to_dict() for m in r.measurements]), _json(r.axes))
                 for i, r in enumerate(runs)])
            return self._conn.total_changes - before

    def mark_running(self, run_id: str) -> None:
        """Status ``running``, one more attempt, start time now."""
        with self._conn:
            self._conn.execute("UPDATE runs SET status = 'running', attempts = attempts + 1, start_time = ?, "
                               "end_time = NULL, error = NULL WHERE id = ?", (utc_now(), run_id))

    def record(self, run_id: str, *, status: str, metrics: Sequence[tuple[int, str, float]] = (),
               summary: dict | None = None, error: str | None = None, host: str | None = None,
               version: str | None = None, start_time: str | None = None, end_time: str | None = None,
               resumed_from: int | None = None) -> None:
        """Write a finished run (``done`` or ``failed``) and its metrics in one transaction.

        Args:
            metrics: ``(iteration, name, value)`` triples; they replace the run's stored metrics.
            summary: final measures (the last history row), stored as JSON.
        """
        if status not in ("done", "failed"):
            raise ValueError(f"a finished run is 'done' or 'failed', got {status!r}")
        with self._conn:
            self._conn.execute("DELETE FROM metrics WHERE run_id = ?", (run_id,))
            self._conn.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?)",
                                   [(run_id, int(i), str(n), _finite_or_none(float(v))) for i, n, v in metrics])
            cur = self._conn.execute(
                "UPDATE runs SET status = ?, error = ?, summary = ?, host = COALESCE(?, host), "
                "version = COALESCE(?, version), start_time = COALESCE(?, start_time), end_time = ?, "
                "resumed_from = COALESCE(?, resumed_from) WHERE id = ?",
                (status, error, None if summary is None else _json({k: _finite_or_none(v) for k, v in summary.items()}),
                 host, version, start_time, end_time or utc_now(), resumed_from, run_id))
            if cur.rowcount != 1:
                raise KeyError(f"run {run_id!r} is not in the store")

    def reset(self, status: str, ids: Iterable[str] | None = None) -> list[str]:
        """Set every run with ``status`` (among ``ids``, default all) back to ``pending``; returns their ids
        (interrupted or failed runs)."""
        wanted = None if ids is None else set(ids)
        with self._conn:
            found = [r[0] for r in self._conn.execute("SELECT id FROM runs WHERE status = ? ORDER BY position",
                                                      (status,))]
            found = [i for i in found if wanted is None or i in wanted]
            self._conn.executemany("UPDATE runs SET status = 'pending' WHERE id = ? AND status = ?",
                                   [(i, status) for i in found])
        return found

    # ------------------------------------------------------------------ reads
    def counts(self) -> dict[str, int]:
        """Number of runs per status (every status present, zeros included)."""
        out: dict[str, int] = dict.fromkeys(STATUSES, 0)
        out.update(dict(self._conn.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall()))
        return out

    def todo(self) -> list[dict]:
        """Runs not finished (``pending``), in sweep order: ``{"id", "config", "measurements", "axes"}``."""
        rows = self._conn.execute("SELECT id, config, measurements, axes FROM runs WHERE status = 'pending' "
                                  "ORDER BY position").fetchall()
        return [{"id": i, "config": json.loads(c), "measurements": json.loads(m), "axes": json.loads(a)}
                for i, c, m, a in rows]

    def runs(self, status: str | None = None) -> pd.DataFrame:
        """One row per run: id, status, error, attempts, resumed_from, start/end time, duration_s, train_time_s,
        host, version, one column per axis key (``rule.name`` ...), and the resolved ``config`` (JSON text).

        ``duration_s`` is the wall time of the run's *last attempt* (end − start); ``train_time_s`` is the
        trainer's cumulative training time over every attempt (its last ``wall_time_s`` metric; checkpointed, so
        a resumed run counts the iterations done before the interruption too) — the run's cost."""
        q = ("SELECT id, status, error, attempts, resumed_from, start_time, end_time, host, version, axes, config, "
             "(SELECT value FROM metrics m WHERE m.run_id = runs.id AND m.name = 'wall_time_s' "
             " ORDER BY iteration DESC LIMIT 1) AS train_time_s "
             "FROM runs" + (" WHERE status = ?" if status else "") + " ORDER BY position")
        df = pd.read_sql_query(q, self._conn, params=[status] if status else None)
        for c in ("start_time", "end_time"):
            df[c] = pd.to_datetime(df[c], utc=True, format="ISO8601")
        df.insert(7, "duration_s", (df["end_time"] - df["start_time"]).dt.total_seconds())
        df.insert(8, "train_time_s", df.pop("train_time_s").astype("float64"))
        axes = pd.DataFrame([json.loads(a) for a in df.pop("axes")], index=df.index)
        cfg = df.pop("config")
        return pd.concat([df, axes], axis=1).assign(config=cfg)

    def metrics(self, run_ids: Sequence[str] | None = None, names: Sequence[str] | None = None) -> pd.DataFrame:
        """Tidy metrics ``run_id, iteration, name, value`` (optionally only some runs / names)."""
        q, params = "SELECT run_id, iteration, name, value FROM metrics", []
        where = []
        if run_ids is not None:
            where.append(f"run_id IN ({','.join('?' * len(run_ids))})")
            params += list(run_ids)
        if names is not None:
            where.append(f"name IN ({','.join('?' * len(names))})")
            params += list(names)
        if where:
            q += " WHERE " + " AND ".join(where)
        df = pd.read_sql_query(q + " ORDER BY run_id, name, iteration", self._conn, params=params or None)
        return df.astype({"iteration": "int64", "value": "float64"})

    def summaries(self) -> pd.DataFrame:
        """Final measures of finished runs: one row per run, one column per history column."""
        rows = self._conn.execute("SELECT id, summary FROM runs WHERE summary IS NOT NULL ORDER BY position")
        return pd.DataFrame([{"run_id": i, **json.loads(s)} for i, s in rows])

    def tidy(self) -> pd.DataFrame:
        """Metrics joined with each run's status and axis values (plus ``rule.name`` and ``train.seed`` always):
        ``run_id, status, <axes...>, iteration, name, value`` — one row per value."""
        runs = self.runs()
        cfgs = [json.loads(c) for c in runs["config"]]
        for key in ("rule.name", "train.seed"):
            if key not in runs:
                sec, fld = key.split(".")
                runs[key] = [c[sec][fld] for c in cfgs]
        axis_cols = [c for c in runs.columns if "." in c or c in ("circuit", "model", "task", "rule", "optimizer",
                                                                 "train", "flossing")]
        info = cast(pd.DataFrame, runs[["id", "status", *axis_cols]]).rename(columns={"id": "run_id"})
        return info.merge(self.metrics(), on="run_id", how="inner")
