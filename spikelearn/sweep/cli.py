"""``spikelearn sweep ...`` sub-commands (registered by spikelearn.cli).

::

    spikelearn sweep run SWEEP.toml [--out DIR] [--executor local|dask] [--scheduler ADDRESS] [--workers N]
    spikelearn sweep resume DIR [--executor local|dask] [--scheduler ADDRESS] [--workers N] [--retry-failed]
    spikelearn sweep status DIR [--watch]
    spikelearn sweep report DIR [--out REPORT_DIR] [--per-run]
    spikelearn sweep snapshot DIR DEST [--checkpoints all|unfinished|none] [--compact]

The sweep file format is in spikelearn.sweep.spec; running on a Slurm cluster with dask-jobqueue workers is
described in spikelearn.sweep.executors (start the workers, then --executor dask --scheduler ADDRESS).
``run`` and ``resume`` exit with 0 when every run is done, 1 when some failed, 2 on a bad specification or an
executor that cannot start (nothing has run then).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

import pandas as pd
from tqdm.auto import tqdm

from spikelearn.sweep.executors import SweepError
from spikelearn.sweep.report import write_report
from spikelearn.sweep.runner import resume_sweep, run_sweep, snapshot_sweep, sweep_status
from spikelearn.sweep.spec import SECTIONS

__all__ = ["add_sweep_parser"]


def _err(msg: str) -> int:
    print(f"spikelearn sweep: {msg}", file=sys.stderr)
    return 2


def _finish(res) -> int:
    c = res.counts
    print(f"{res.folder}: {c['done']} done, {c['failed']} failed, {c['pending'] + c['running']} not finished "
          f"({res.executed} run in {res.elapsed_s:.1f} s" + (f"; {len(res.resumed)} resumed" if res.resumed else "")
          + ")")
    for rid, err in res.failed.items():
        print(f"  failed {rid}: {err}")
    return 0 if res.ok else 1


def _stop_on_sigterm() -> None:
    """SIGTERM (``kill``, a batch system's time limit) ends the driver like Ctrl-C: the runner's cleanup stops the
    pool workers and the runs in flight stay 'running', to resume from their checkpoints."""

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def _cmd_run(args: argparse.Namespace) -> int:
    _stop_on_sigterm()

    try:
        res = run_sweep(args.sweep, args.out, executor=args.executor, workers=args.workers,
                        scheduler=args.scheduler, max_retries=args.max_retries, retry_failed=args.retry_failed,
                        connect_timeout_s=args.connect_timeout, threads_per_run=args.threads_per_run,
                        progress=not args.quiet)
    except SweepError as e:
        return _err(str(e))
    return _finish(res)


def _cmd_resume(args: argparse.Namespace) -> int:
    _stop_on_sigterm()

    try:
        res = resume_sweep(args.dir, executor=args.executor, workers=args.workers, scheduler=args.scheduler,
                           max_retries=args.max_retries, retry_failed=args.retry_failed,
                           connect_timeout_s=args.connect_timeout, threads_per_run=args.threads_per_run,
                           progress=not args.quiet)
    except (SweepError, FileNotFoundError) as e:
        return _err(str(e))
    return _finish(res)


def _bar(done: int, total: int, width: int = 30) -> str:
    k = int(width * done / total) if total else width
    return f"[{'#' * k}{'.' * (width - k)}] {done}/{total}"


def _cmd_status(args: argparse.Namespace) -> int:
    try:
        st = sweep_status(args.dir)
    except FileNotFoundError as e:
        return _err(str(e))
    if args.watch and st["running"]:
        finished = st["counts"]["done"] + st["counts"]["failed"]
        with tqdm(total=st["total"], initial=finished, desc="sweep", unit="run") as bar:
            while st["running"]:
                time.sleep(args.interval)
                st = sweep_status(args.dir)
                now = st["counts"]["done"] + st["counts"]["failed"]
                bar.total = st["total"]
                bar.update(now - finished)
                finished = now
    c = st["counts"]
    print(f"sweep {args.dir}: {'driver running' if st['running'] else 'no driver running'}")
    print(_bar(c["done"] + c["failed"], st["total"]))
    print(pd.DataFrame([c], index=["runs"]).assign(total=st["total"]).to_string())
    prog = st["in_progress"]
    if len(prog):
        print("\nruns in progress (iteration of the last checkpoint):")
        cols = [k for k in prog.columns if k == "id" or "." in k
                or k in SECTIONS] + ["iteration", "iterations"]
        with pd.option_context("display.width", 200, "display.max_colwidth", 60):
            print(prog[cols].to_string(index=False))
    if not st["running"] and c["running"]:
        print(f"{c['running']} run(s) were interrupted; continue with `spikelearn sweep resume {args.dir}`")
    if len(st["failed"]):
        print("\nfailed runs:")
        cols = [k for k in st["failed"].columns if k in ("id", "error") or "." in k]
        with pd.option_context("display.width", 200, "display.max_colwidth", 100):
            print(st["failed"][cols].to_string(index=False))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    try:
        paths = write_report(args.dir, args.out, per_run=args.per_run)
    except FileNotFoundError as e:
        return _err(str(e))
    for p in paths:
        print(f"wrote {p}")
    return 0


def _cmd_snapshot(args: argparse.Namespace) -> int:
    if args.no_checkpoints and args.checkpoints not in (None, "none"):
        return _err(f"--no-checkpoints contradicts --checkpoints {args.checkpoints}")
    checkpoints = "none" if args.no_checkpoints else args.checkpoints
    if checkpoints is None:  # --compact keeps what a resume needs; a full copy keeps everything
        checkpoints = "unfinished" if args.compact else "all"
    try:
        dst = snapshot_sweep(args.dir, args.dest, checkpoints=checkpoints, artifacts=not args.compact)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        return _err(str(e))
    print(f"wrote a consistent copy of {args.dir} to {dst}; continue it with `spikelearn sweep resume {dst}`")
    return 0


def _executor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--executor", choices=["local", "dask"], default=None,
                   help="where runs execute (default: the sweep file's [sweep] executor, else local)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="Dask scheduler address (implies --executor dask); without it dask starts a LocalCluster")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="local: N > 1 runs a pool of N processes (1 = in-process); dask: LocalCluster workers")
    p.add_argument("--max-retries", type=int, default=None, metavar="K",
                   help="re-runs of a run whose worker was lost (default: [sweep] max_retries, else 2)")
    p.add_argument("--retry-failed", action="store_true", help="run failed runs again (from scratch; runs failed by lost workers resume from their checkpoint)")
    p.add_argument("--threads-per-run", type=int, default=None, metavar="T",
                   help="torch threads for each run (default: cores / workers in a pool, 1 on dask, unchanged "
                        "in-process); tiny networks run fastest with 1")
    p.add_argument("--connect-timeout", type=float, default=10.0, metavar="S",
                   help="seconds to wait for a Dask scheduler to answer (default 10)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_sweep_parser(subparsers) -> None:
    """Register the ``sweep`` command (``run``, ``resume``, ``status``, ``report``, ``snapshot``) on the main parser."""
    assert __doc__ is not None  # the module docstring holds the usage text
    doc = __doc__.split("::", 1)[1]
    sweep = subparsers.add_parser("sweep", help="run grids of training runs into a run store",
                                  description="Grids of training runs, recorded in DIR/store.sqlite.\n" + doc,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = sweep.add_subparsers(dest="sweep_command", required=True)
    p = sub.add_parser("run", help="expand a sweep file and run it (finished runs are skipped)")
    p.add_argument("sweep", help="sweep TOML file")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="sweep folder (default: [sweep] out_dir, else sweeps/<name>)")
    _executor_args(p)
    p.set_defaults(fn=_cmd_run)
    p = sub.add_parser("resume", help="continue a killed sweep: skip finished runs, resume interrupted ones")
    p.add_argument("dir", help="sweep folder")
    _executor_args(p)
    p.set_defaults(fn=_cmd_resume)
    p = sub.add_parser("status", help="counts per status and the failed runs")
    p.add_argument("dir", help="sweep folder")
    p.add_argument("--watch", action="store_true", help="follow a running sweep with a progress bar")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between polls with --watch")
    p.set_defaults(fn=_cmd_status)
    p = sub.add_parser("report", help="tidy CSV and the standard plots")
    p.add_argument("dir", help="sweep folder")
    p.add_argument("--out", default=None, metavar="DIR", help="report folder (default DIR/report)")
    p.add_argument("--per-run", action="store_true", help="also a learning-curve plot in each run's folder")
    p.set_defaults(fn=_cmd_report)
    p = sub.add_parser("snapshot", help="consistent copy of a (possibly running) sweep folder, resumable")
    p.add_argument("dir", help="sweep folder")
    p.add_argument("dest", help="new (or empty) folder for the copy")
    p.add_argument("--checkpoints", choices=["all", "unfinished", "none"], default=None,
                   help="which checkpoint.pt files to copy: all (default without --compact), those of unfinished "
                        "runs (enough to resume; small enough to commit; default with --compact), none (results "
                        "only)")
    p.add_argument("--no-checkpoints", action="store_true", help="same as --checkpoints none")
    p.add_argument("--compact", action="store_true",
                   help="what a repository should hold: the database and small per-run files (no model.pt / "
                        "history.csv: the metrics are in the database); checkpoints as --checkpoints says, "
                        "default those of unfinished runs")
    p.set_defaults(fn=_cmd_snapshot)
