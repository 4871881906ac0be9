"""The sweep driver: expand, validate, record every run in the store, execute them, write results as they come.

Nothing is lost: a failing run records its error (a diverged run is ``failed`` with the reason) and the sweep
goes on; a run whose worker is lost is retried up to ``max_retries`` times, resuming from its checkpoint; a killed
driver leaves runs ``running`` in the store, and :func:`resume_sweep` puts them back in the queue (they resume
from their last checkpoint) and skips finished runs. A lock file keeps a second driver off the same folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import sqlite3
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from tqdm.auto import tqdm

from spikelearn.config import ConfigError
from spikelearn.sweep.executors import Executor, SweepError, WorkerLost, default_threads_per_run, make_executor
from spikelearn.sweep.spec import SweepSpec, check_run_config, expand, load_sweep, sweep_from_dict
from spikelearn.sweep.store import STORE_FILE, RunStore
from spikelearn.sweep.worker import RUN_LOCK, checkpoint_results, run_one
from spikelearn.train import CHECKPOINT

__all__ = ["SweepResult", "run_sweep", "resume_sweep", "sweep_status", "driver_running", "snapshot_sweep",
           "LOCK_FILE"]

LOCK_FILE = "driver.lock"


@dataclass(frozen=True)
class SweepResult:
    """What a driver session did: the folder, final counts per status and the failed runs' errors."""

    folder: pathlib.Path
    counts: dict
    failed: dict = field(default_factory=dict)      # run id -> first line of its error
    resumed: tuple = ()                             # runs that were interrupted and put back in the queue
    executed: int = 0                               # runs finished (done or failed) in this session
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.counts.get("failed", 0) == 0 and self.counts.get("pending", 0) == 0 \
            and self.counts.get("running", 0) == 0


class _DriverLock:
    """An exclusive ``flock`` on ``DIR/driver.lock`` for the driver's lifetime (released even when killed)."""

    def __init__(self, folder: pathlib.Path):
        self.path = folder / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no protection against two drivers
            return self
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._fd)
            self._fd = None
            raise SweepError(f"another driver is running the sweep in {self.path.parent} "
                             f"(lock {self.path} is held); wait for it or stop it first") from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode())
        return self

    def __exit__(self, *exc):
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None


def driver_running(folder: str | pathlib.Path) -> bool:
    """Whether a driver currently holds the sweep folder's lock."""
    path = pathlib.Path(folder) / LOCK_FILE
    if not path.exists():
        return False
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def _as_spec(spec: SweepSpec | Mapping | str | pathlib.Path) -> SweepSpec:
    if isinstance(spec, SweepSpec):
        return spec
    if isinstance(spec, Mapping):
        return sweep_from_dict(spec)
    return load_sweep(spec)


def _check_settings(settings: dict, threads_per_run: int | None) -> None:
    """Executor settings are checked before anything runs (a bad value would otherwise fail every run later)."""
    for name, value, least in (("workers", settings["workers"], 1), ("max_retries", settings["max_retries"], 0),
                               ("threads_per_run", threads_per_run, 1)):
        if value is None and name == "threads_per_run":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise SweepError(f"{name} must be an integer >= {least}, got {value!r}")


def run_sweep(spec: SweepSpec | Mapping | str | pathlib.Path, out_dir: str | pathlib.Path | None = None, *,
              executor: str | None = None, workers: int | None = None, scheduler: str | None = None,
              max_retries: int | None = None, retry_failed: bool = False, client: Any = None,
              threads_per_run: int | None = None, connect_timeout_s: float = 10.0, progress: bool = False,
              on_result: Callable[[dict], None] | None = None) -> SweepResult:
    """Run a sweep into ``out_dir``; re-running the same sweep skips finished runs (same ids, same folder).

    Args:
        spec: a :class:`SweepSpec`, its dict form, or the path of a sweep TOML file.
        out_dir: the sweep folder (default: ``[sweep] out_dir``, else ``sweeps/<name>``).
        executor, workers, scheduler, max_retries: override the spec's ``[sweep]`` settings.
        retry_failed: run failed runs again: from scratch, or from the last checkpoint if their worker was lost.
        client: an existing ``distributed.Client`` for the dask executor.
        threads_per_run: torch threads in each worker process (default: cores / workers for a pool, 1 on Dask).
        progress: show a progress bar (stderr).
        on_result: called with each worker result as it is recorded.

    Raises:
        ConfigError: invalid specification (unknown axis key, empty axis, invalid run) — before anything runs.
        SweepError: the executor cannot start (no scheduler answers) or another driver holds the folder.
    """
    spec = _as_spec(spec)
    if executor is None and scheduler:
        executor = "dask"
    settings = {"executor": executor or spec.executor, "workers": spec.workers if workers is None else workers,
                "scheduler": spec.scheduler if scheduler is None else scheduler,
                "max_retries": spec.max_retries if max_retries is None else max_retries}
    _check_settings(settings, threads_per_run)
    runs = expand(spec)
    seen: set[str] = set()
    for r in runs:  # build each distinct configuration (seeds aside) once, before anything runs
        d = r.config.to_dict()
        d["train"] = {k: v for k, v in d["train"].items() if k not in ("seed", "out_dir", "quiet")}
        key = json.dumps(d, sort_keys=True, default=repr)
        if key not in seen:
            seen.add(key)
            try:
                check_run_config(r.config)
            except ConfigError as e:
                raise ConfigError(f"run {r.id} ({r.axes}): {e}") from None
    folder = pathlib.Path(out_dir or spec.out_dir or pathlib.Path("sweeps") / spec.name)
    ex = make_executor(settings["executor"], workers=settings["workers"], scheduler=settings["scheduler"] or None,
                       connect_timeout_s=connect_timeout_s, client=client)
    try:
        with _DriverLock(folder), RunStore(folder) as store:
            store.set_meta("spec", spec.to_dict())
            store.set_meta("settings", settings)
            store.add_runs(runs)
            result = _drive(store, ex, ids={r.id for r in runs}, max_retries=settings["max_retries"],
                            retry_failed=retry_failed, threads_per_run=threads_per_run, progress=progress,
                            on_result=on_result)
    except BaseException:
        ex.close(wait=False)
        raise
    ex.close()
    return result


def resume_sweep(folder: str | pathlib.Path, *, executor: str | None = None, workers: int | None = None,
                 scheduler: str | None = None, max_retries: int | None = None, retry_failed: bool = False,
                 client: Any = None, threads_per_run: int | None = None, connect_timeout_s: float = 10.0,
                 progress: bool = False, on_result: Callable[[dict], None] | None = None) -> SweepResult:
    """Continue the sweep in ``folder``: skip finished runs, resume interrupted ones from their checkpoints.

    Executor settings default to those the sweep was started with. See :func:`run_sweep` for the arguments.
    """
    folder = pathlib.Path(folder)
    with RunStore(folder, readonly=True) as store:
        saved = store.get_meta("settings", {}) or {}
    if executor is None and scheduler:
        executor = "dask"
    executor = executor or saved.get("executor", "local")
    settings = {"executor": executor, "workers": saved.get("workers", 1) if workers is None else workers,
                "scheduler": scheduler if scheduler is not None else (
                    saved.get("scheduler", "") if executor == saved.get("executor") else ""),
                "max_retries": saved.get("max_retries", 2) if max_retries is None else max_retries}
    _check_settings(settings, threads_per_run)
    ex = make_executor(settings["executor"], workers=settings["workers"], scheduler=settings["scheduler"] or None,
                       connect_timeout_s=connect_timeout_s, client=client)
    try:
        with _DriverLock(folder), RunStore(folder) as store:
            result = _drive(store, ex, ids=None, max_retries=settings["max_retries"], retry_failed=retry_failed,
                            threads_per_run=threads_per_run, progress=progress, on_result=on_result)
    except BaseException:
        ex.close(wait=False)
        raise
    ex.close()
    return result


def _drive(store: RunStore, ex: Executor, *, ids: set[str] | None, max_retries: int, retry_failed: bool,
           threads_per_run: int | None, progress: bool, on_result: Callable | None) -> SweepResult:
    t0 = time.perf_counter()
    resumed = tuple(store.reset("running", ids))  # left by a killed driver; their checkpoints stay: they resume
    if retry_failed:
        errors = store.runs("failed").set_index("id")["error"].fillna("")
        for rid in store.reset("failed", ids):  # only this sweep's runs: others in the folder stay as they are  # a run that failed by itself starts afresh; a lost one resumes
            if not errors.get(rid, "").startswith("WorkerLost"):
                (store.run_dir(rid) / CHECKPOINT).unlink(missing_ok=True)
    threads = threads_per_run if threads_per_run is not None else default_threads_per_run(ex)
    todo = deque(r for r in store.todo() if ids is None or r["id"] in ids)
    total = len(ids) if ids is not None else sum(store.counts().values())
    bar = tqdm(total=total, initial=total - len(todo), disable=not progress, desc="sweep", unit="run")
    inflight: dict[Any, dict] = {}
    lost: dict[str, int] = {}
    executed = 0
    try:
        while todo or inflight:
            while todo and len(inflight) < ex.slots():
                r = todo.popleft()
                store.mark_running(r["id"])
                h = ex.submit(run_one, r["id"], r["config"], str(store.run_dir(r["id"])), r["measurements"],
                              threads, key=f"spikelearn-run-{r['id']}")
                inflight[h] = r
            for h in ex.wait(list(inflight), timeout=2.0):
                r = inflight.pop(h)
                try:
                    res = ex.result(h)
                except WorkerLost as e:
                    lost[r["id"]] = lost.get(r["id"], 0) + 1
                    if lost[r["id"]] <= max_retries:
                        todo.appendleft(r)  # again, from its last checkpoint
                        continue
                    res = {"id": r["id"], "status": "failed", "metrics": [], "summary": None,
                           "error": f"WorkerLost: the worker was lost {lost[r['id']]} times "
                                    f"(max_retries = {max_retries}); last: {e}"}
                    res.update(checkpoint_results(store.run_dir(r["id"]) / CHECKPOINT))
                store.record(r["id"], status=res["status"], metrics=res["metrics"], summary=res["summary"],
                             error=res["error"], host=res.get("host"), version=res.get("version"),
                             start_time=res.get("start_time"), end_time=res.get("end_time"),
                             resumed_from=res.get("resumed_from"))
                executed += 1
                bar.update(1)
                if res["status"] == "failed":
                    bar.write(f"run {r['id']} failed: {res['error'].splitlines()[0]}")
                if on_result is not None:
                    on_result(res)
    finally:
        bar.close()
    runs = store.runs()
    if ids is not None:
        runs = runs[runs["id"].isin(ids)]
    counts = {s: int((runs["status"] == s).sum()) for s in ("pending", "running", "done", "failed")}
    failed = {i: (e or "").splitlines()[0] if e else "" for i, e in
              runs.loc[runs["status"] == "failed", ["id", "error"]].itertuples(index=False)}
    return SweepResult(store.folder, counts, failed, resumed, executed, time.perf_counter() - t0)


def sweep_status(folder: str | pathlib.Path) -> dict:
    """``{"counts", "total", "failed": DataFrame(id, axes..., error), "running": bool, "in_progress":
    DataFrame(id, axes..., iteration, iterations)}`` for a sweep folder; ``in_progress`` lists the runs marked
    running with the iteration of their last checkpoint (0 before the first one)."""
    with RunStore(folder, readonly=True) as store:
        counts = store.counts()
        runs = store.runs()
    failed = runs.loc[runs["status"] == "failed"].drop(columns=["config"])
    failed = failed.assign(error=failed["error"].fillna("").map(lambda e: e.splitlines()[0] if e else ""))
    active = runs.loc[runs["status"] == "running"]
    its, totals = [], []
    for rid, cfg in zip(active["id"], active["config"]):
        totals.append(int(json.loads(cfg)["train"]["iterations"]))
        ck = pathlib.Path(folder) / "runs" / rid / "checkpoint.pt"
        try:
            its.append(int(torch.load(ck, map_location="cpu", weights_only=True)["iteration"]) if ck.exists() else 0)
        except Exception:  # noqa: BLE001 - a checkpoint being replaced right now: report it as unknown
            its.append(-1)
    in_progress = active.drop(columns=["config", "error"]).assign(iteration=its, iterations=totals)
    return {"counts": counts, "total": int(sum(counts.values())), "failed": failed,
            "running": driver_running(folder), "in_progress": in_progress}



_SMALL_ARTIFACTS = ("config.json", "summary.json", "error.txt")


def snapshot_sweep(folder: str | pathlib.Path, dest: str | pathlib.Path, *,
                   checkpoints: bool | str = True, artifacts: bool = True) -> pathlib.Path:
    """A consistent copy of a sweep folder, safe to take while its driver is running (e.g. to commit or move a
    long sweep between machines and continue it there with ``spikelearn sweep resume DEST``).

    The database is copied first with SQLite's online backup (one consistent state, no ``-wal`` file), then every
    run folder; files only get newer after the database copy, so a run that is ``done`` in the copy has its
    artifacts, and a ``running`` one resumes from a checkpoint at least as new as its recorded state. Checkpoints
    are written by atomic rename, so each copied checkpoint is whole. Lock files and temporaries are skipped.

    Args:
        dest: a folder that does not exist yet, or an empty one.
        checkpoints: ``True``/``"all"``: copy every ``checkpoint.pt``; ``"unfinished"``: only those of runs not
            done (what resuming needs — finished runs keep ``model.pt`` and their results, which keeps a committed
            snapshot small); ``False``/``"none"``: none (results only).
        artifacts: copy every other per-run file (``model.pt``, ``history.csv``, plots); ``False`` keeps only
            ``config.json``, ``summary.json`` and ``error.txt`` — the metrics are all in the database anyway
            (``spikelearn sweep snapshot --compact`` = ``checkpoints="unfinished", artifacts=False``).
    """
    src = pathlib.Path(folder)
    dst = pathlib.Path(dest)
    db = src / STORE_FILE
    if not db.exists():
        raise FileNotFoundError(f"no sweep store at {db}")
    if dst.exists() and any(dst.iterdir()):
        raise FileExistsError(f"snapshot destination {dst} exists and is not empty")
    if dst.resolve() == src.resolve():
        raise ValueError("snapshot destination is the sweep folder itself")
    mode = ("all" if checkpoints else "none") if isinstance(checkpoints, bool) else checkpoints
    if mode not in ("all", "unfinished", "none"):
        raise ValueError(f"checkpoints must be True, False, 'all', 'unfinished' or 'none', got {checkpoints!r}")
    dst.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True, timeout=30.0)) as s_conn, \
            contextlib.closing(sqlite3.connect(dst / STORE_FILE)) as d_conn:
        s_conn.backup(d_conn)
        d_conn.execute("PRAGMA journal_mode = DELETE")
        done = {r[0] for r in d_conn.execute("SELECT id FROM runs WHERE status = 'done'")}
    runs_src = src / "runs"
    if runs_src.is_dir():
        for run in sorted(p for p in runs_src.iterdir() if p.is_dir()):
            out = dst / "runs" / run.name
            out.mkdir(parents=True, exist_ok=True)
            for f in sorted(run.rglob("*")):
                if f.is_dir() or f.name.endswith(".tmp") or f.name in (LOCK_FILE, RUN_LOCK):
                    continue
                if f.name == "checkpoint.pt":
                    if mode == "none" or (mode == "unfinished" and run.name in done):
                        continue
                elif not artifacts and f.name not in _SMALL_ARTIFACTS:
                    continue
                target = out / f.relative_to(run)
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    shutil.copy2(f, target)
                except FileNotFoundError:  # replaced between listing and copying (atomic rename): copy the new one
                    if f.exists():
                        shutil.copy2(f, target)
    return dst
