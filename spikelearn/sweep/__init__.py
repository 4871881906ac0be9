"""Sweeps: grids of training runs (rule x connectivity x task x seed), an embedded SQLite run store, and
executors (in-process, a local process pool, or Dask ``distributed``).

Typical use::

    from spikelearn.sweep import run_sweep, resume_sweep
    from spikelearn.store import RunStore

    res = run_sweep("sweep.toml", "sweeps/rules", workers=2)   # or executor="dask", scheduler="tcp://..."
    with RunStore("sweeps/rules") as store:
        df = store.tidy()                                      # run_id, status, <axes>, iteration, name, value

The sweep file format is described in :mod:`spikelearn.sweep.spec`; the command line is ``spikelearn sweep
run | resume | status | report``. dask is imported only by the dask executor.
"""

from spikelearn.sweep.executors import SweepError, WorkerLost, make_executor
from spikelearn.sweep.report import write_report
from spikelearn.sweep.runner import SweepResult, driver_running, resume_sweep, run_sweep, snapshot_sweep, sweep_status
from spikelearn.sweep.spec import (
    MeasurementSpec,
    RunSpec,
    SweepSpec,
    check_run_config,
    expand,
    load_sweep,
    run_id,
    sweep_from_dict,
)
from spikelearn.sweep.store import RunStore
from spikelearn.sweep.worker import run_one

__all__ = ["SweepSpec", "RunSpec", "MeasurementSpec", "load_sweep", "sweep_from_dict", "expand", "run_id",
           "check_run_config", "run_sweep", "resume_sweep", "snapshot_sweep", "sweep_status", "driver_running", "SweepResult",
           "SweepError", "WorkerLost", "make_executor", "RunStore", "run_one", "write_report"]
