"""Executors: where runs execute. The driver submits :func:`~spikelearn.sweep.worker.run_one` calls and collects
their results; only the driver writes the store.

- :class:`InProcessExecutor`: runs each call in the driver's process (``local`` with one worker, the default).
- :class:`PoolExecutor`: N spawned worker processes (``local`` with ``workers = N > 1``), each a one-process pool
  holding one run at a time, so a worker that dies loses only its own run (retried from its checkpoint) and never
  a neighbour's; workers exit on their own when the driver is gone (even after ``kill -9``).
- :class:`DaskExecutor`: a Dask ``distributed`` cluster, either at a scheduler address or a ``LocalCluster``
  started here. dask is imported only when this executor is made.

Every executor raises :class:`WorkerLost` from :meth:`result` when the worker (not the run) failed.

Slurm with dask-jobqueue (``pip install dask-jobqueue``), driver on the login node or in a small job::

    # start_workers.py: keep this process alive while the sweep runs
    from dask_jobqueue import SLURMCluster
    cluster = SLURMCluster(cores=4, processes=4, memory="16GB", walltime="04:00:00",
                           job_extra_directives=["--partition=cpu"],
                           python="/path/to/venv/bin/python")  # the same environment, spikelearn installed
    cluster.scale(jobs=10)                                     # or cluster.adapt(minimum_jobs=1, maximum_jobs=20)
    print(cluster.scheduler_address)                           # e.g. tcp://10.0.0.5:8786
    input("workers running; press Enter to stop\\n")

    $ spikelearn sweep run sweep.toml --executor dask --scheduler tcp://10.0.0.5:8786

The sweep folder must be on a file system that the workers share with the driver (runs write their checkpoints
and artifacts into ``DIR/runs/<id>``). If the driver is killed, ``spikelearn sweep resume DIR --scheduler ...``
continues; runs interrupted on a worker resume from their last checkpoint.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import threading
import time
import uuid
from typing import Any, Callable, Sequence

__all__ = ["Executor", "InProcessExecutor", "PoolExecutor", "DaskExecutor", "WorkerLost", "SweepError",
           "make_executor"]


class SweepError(RuntimeError):
    """A sweep cannot start or continue (no scheduler answers, another driver holds the folder, ...)."""


class WorkerLost(RuntimeError):
    """The worker running a call died or was lost; the run itself did not fail."""


class Executor:
    """Interface: ``submit`` a call, ``wait`` for any of several, take its ``result``, ``close``."""

    name = "executor"

    def slots(self) -> int:
        """How many calls may usefully run at once (the driver keeps at most this many in flight)."""
        raise NotImplementedError

    def submit(self, fn: Callable, *args: Any, key: str = "") -> Any:
        raise NotImplementedError

    def wait(self, handles: Sequence, timeout: float) -> list:
        """The handles among ``handles`` that finished within ``timeout`` seconds (possibly none)."""
        raise NotImplementedError

    def result(self, handle) -> Any:
        raise NotImplementedError

    def close(self, wait: bool = True) -> None:
        """Release the workers; ``wait=False`` (the driver is stopping on an error) abandons calls in flight."""

    def describe(self) -> str:
        return self.name

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class InProcessExecutor(Executor):
    """Runs each call at submission, in this process (no parallelism, no pickling)."""

    name = "local"

    def slots(self) -> int:
        return 1

    def submit(self, fn: Callable, *args: Any, key: str = "") -> cf.Future:
        f: cf.Future = cf.Future()
        f.set_result(fn(*args))
        return f

    def wait(self, handles: Sequence, timeout: float) -> list:
        return list(handles)

    def result(self, handle) -> Any:
        return handle.result()

    def describe(self) -> str:
        return "local (in-process)"


def _exit_with_parent(parent_pid: int, poll_s: float = 1.0) -> None:
    """Pool-worker initializer: a daemon thread ends this process once the driver that spawned it is gone (a
    driver killed with SIGKILL cannot stop its workers; without this they would keep training into the run folders
    while a resumed driver starts the same runs again)."""

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent_pid:
                os._exit(1)  # the run resumes from its last (atomically written) checkpoint

    threading.Thread(target=watch, name="spikelearn-parent-watch", daemon=True).start()


class PoolExecutor(Executor):
    """``workers`` spawned processes (``spawn``: safe with torch's threads), each its own one-process pool.

    The driver keeps at most :meth:`slots` calls in flight and each slot holds one, so a worker that dies
    (``BrokenProcessPool``) is known to have held exactly that call: only it is reported lost, and only that slot's
    pool is rebuilt.
    """

    name = "local"

    def __init__(self, workers: int):
        self.workers = int(workers)
        self._pools: list[cf.ProcessPoolExecutor | None] = [None] * self.workers
        self._slot_of: dict[cf.Future, int] = {}

    def _pool(self, i: int) -> cf.ProcessPoolExecutor:
        pool = self._pools[i]
        if pool is None:
            pool = self._pools[i] = cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                                           initializer=_exit_with_parent, initargs=(os.getpid(),))
        return pool

    def slots(self) -> int:
        return self.workers

    def submit(self, fn: Callable, *args: Any, key: str = "") -> cf.Future:
        busy = set(self._slot_of.values())
        free = [i for i in range(self.workers) if i not in busy]
        if not free:
            raise SweepError(f"all {self.workers} pool workers are busy; take a result before submitting more")
        f = self._pool(free[0]).submit(fn, *args)
        self._slot_of[f] = free[0]
        return f

    def wait(self, handles: Sequence, timeout: float) -> list:
        done, _ = cf.wait(handles, timeout=timeout, return_when=cf.FIRST_COMPLETED)
        return list(done)

    def result(self, handle) -> Any:
        i = self._slot_of.pop(handle, None)
        try:
            return handle.result()
        except cf.process.BrokenProcessPool as e:
            if i is not None and (pool := self._pools[i]) is not None:  # this slot's worker died: a fresh one next time
                pool.shutdown(wait=False, cancel_futures=True)
                self._pools[i] = None
            raise WorkerLost(f"the pool worker process running it died: {e}") from None

    def close(self, wait: bool = True) -> None:
        for pool in self._pools:
            if pool is None:
                continue
            if not wait:  # interrupted: stop the workers now; their runs stay 'running' and resume later
                for proc in list(getattr(pool, "_processes", {}).values()):
                    proc.terminate()
            pool.shutdown(wait=wait, cancel_futures=True)
        self._pools = [None] * self.workers
        self._slot_of.clear()

    def describe(self) -> str:
        return f"local (process pool, {self.workers} workers)"


class DaskExecutor(Executor):
    """Dask ``distributed``: connect to ``scheduler`` or start a ``LocalCluster`` of ``n_workers`` processes.

    Args:
        scheduler: scheduler address (``tcp://host:8786``); empty or ``None`` starts a ``LocalCluster``.
        n_workers: LocalCluster worker processes (one thread each).
        connect_timeout_s: how long to wait for a scheduler to answer.
        client: an existing ``distributed.Client`` to use (not closed by :meth:`close`).
    """

    name = "dask"

    def __init__(self, scheduler: str | None = None, *, n_workers: int = 1, processes: bool = True,
                 connect_timeout_s: float = 10.0, client: Any = None):
        try:
            import distributed
        except ImportError:  # pragma: no cover - depends on the installation
            raise SweepError("the dask executor needs dask.distributed: pip install 'spikelearn[dask]'") from None
        # Any, like the client below: distributed.wait's result is inferred from the sync-or-coroutine Client.sync
        self._distributed: Any = distributed
        self._cluster = None
        self._own_client = client is None
        self.scheduler = scheduler or ""
        # Any: distributed.Client's methods are typed as sync-or-coroutine; used synchronously here
        self.client: Any
        if client is not None:
            self.client = client
        elif scheduler:
            try:
                self.client = distributed.Client(scheduler, timeout=f"{connect_timeout_s}s", set_as_default=False)
            except (OSError, TimeoutError, ValueError) as e:
                raise SweepError(f"no Dask scheduler answers at {scheduler!r} (waited {connect_timeout_s:g} s): "
                                 f"{e}") from None
        else:
            # dashboard_address=None (no dashboard) is accepted though annotated str
            self._cluster = distributed.LocalCluster(n_workers=int(n_workers), threads_per_worker=1,
                                                     processes=processes, dashboard_address=None)  # type: ignore[arg-type]
            self.client = distributed.Client(self._cluster, set_as_default=False)

    def slots(self) -> int:
        return max(1, sum(self.client.nthreads().values()))

    def submit(self, fn: Callable, *args: Any, key: str = "") -> Any:
        return self.client.submit(fn, *args, key=f"{key or 'call'}-{uuid.uuid4().hex[:8]}", pure=False)

    def wait(self, handles: Sequence, timeout: float) -> list:
        try:
            with self.client.as_current():
                done, _ = self._distributed.wait(list(handles), timeout=timeout, return_when="FIRST_COMPLETED")
        except TimeoutError:
            return []
        except Exception:  # noqa: BLE001 - e.g. FuturesCancelledError (scheduler restarted or lost): the
            # cancelled calls are finished too; result() reports them as WorkerLost and the driver retries them
            return [h for h in handles if h.done() or h.status in ("cancelled", "lost", "error")]
        return list(done)

    def result(self, handle) -> Any:
        try:
            return handle.result()
        except Exception as e:  # run_one never raises: anything here is the cluster's (KilledWorker, cancelled...)
            raise WorkerLost(f"{type(e).__name__}: {e}") from None
        finally:
            handle.release()

    def close(self, wait: bool = True) -> None:
        if self._own_client:
            self.client.close()
        if self._cluster is not None:
            self._cluster.close()

    def describe(self) -> str:
        where = self.scheduler or f"LocalCluster, {len(self.client.nthreads())} workers"
        return f"dask ({where})"


def make_executor(executor: str = "local", *, workers: int = 1, scheduler: str | None = None,
                  connect_timeout_s: float = 10.0, client: Any = None) -> Executor:
    """The executor named ``executor`` (``"local"`` or ``"dask"``), connected and ready."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise SweepError(f"workers must be an integer >= 1, got {workers!r}")
    if executor == "local":
        if scheduler:
            raise SweepError("a scheduler address needs the dask executor (--executor dask)")
        return InProcessExecutor() if int(workers) <= 1 else PoolExecutor(workers)
    if executor == "dask":
        return DaskExecutor(scheduler or None, n_workers=workers, connect_timeout_s=connect_timeout_s, client=client)
    raise SweepError(f"unknown executor {executor!r}; use 'local' or 'dask'")


def default_threads_per_run(ex: Executor) -> int | None:
    """torch threads for each run: the cores shared among pool workers, one on Dask workers, unchanged in-process."""
    if isinstance(ex, PoolExecutor):
        return max(1, (os.cpu_count() or 1) // ex.workers)
    if isinstance(ex, DaskExecutor):
        return 1
    return None
