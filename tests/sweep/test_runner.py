"""Sweep driver on the local executor (in-process and process pool) and on a Dask LocalCluster."""

import pathlib
import time

import pandas as pd
import pytest
import torch

from spikelearn.config import ConfigError
from spikelearn.store import RunStore
from spikelearn.sweep import SweepError, resume_sweep, run_sweep


def _results(folder) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Metrics (wall time excluded) and per-run outcome, sorted: what must not depend on the executor."""
    with RunStore(folder, readonly=True) as store:
        m = store.metrics()
        runs = store.runs()
    m = m[m["name"] != "wall_time_s"].sort_values(["run_id", "name", "iteration"]).reset_index(drop=True)
    runs = runs[["id", "status", "config"]].sort_values("id").reset_index(drop=True)
    return m, runs


def _grid(tiny):
    d = tiny()
    d["sweep"] = {"axes": {"train.seed": [0, 1]}, "zip": [{"circuit.options.g": [0.5, 1.5],
                                                           "optimizer.lr": [1e-2, 5e-3]}]}
    d["measurements"] = [{"name": "wn", "fn": "_sweep_hooks:weight_norm", "every": 5}]
    return d


def test_local_and_dask_give_identical_results(tmp_path, tiny, hooks_on_path):
    from distributed import LocalCluster

    spec = _grid(tiny)
    res = run_sweep(spec, tmp_path / "local")
    assert res.ok and res.counts["done"] == 4 and res.executed == 4
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        res_d = run_sweep(spec, tmp_path / "dask", scheduler=cluster.scheduler_address)
    assert res_d.ok and res_d.counts["done"] == 4
    m_local, runs_local = _results(tmp_path / "local")
    m_dask, runs_dask = _results(tmp_path / "dask")
    assert set(m_local["name"]) == {"loss", "accuracy", "eval_loss", "wn"}
    assert len(m_local) == 4 * (10 + 3 + 3 + 2)
    pd.testing.assert_frame_equal(m_local, m_dask)
    pd.testing.assert_frame_equal(runs_local, runs_dask)
    with RunStore(tmp_path / "dask", readonly=True) as store:
        runs = store.runs()
    assert (runs["host"].notna() & runs["version"].notna() & (runs["duration_s"] > 0)).all()
    for rid in runs["id"]:  # per-run artifacts
        assert {"checkpoint.pt", "model.pt", "history.csv", "summary.json", "config.json"} <= {
            p.name for p in (tmp_path / "dask" / "runs" / rid).iterdir()}


def test_failing_run_is_recorded_and_the_rest_finish(tmp_path, tiny):
    d = tiny()
    d["optimizer"]["name"] = "sgd"
    # lr = 1e6: the first update already breaks the model, which its evaluation after iteration 1 finds
    d["sweep"] = {"axes": {"optimizer.lr": [1e-2, 1e6, 1e-3]}}
    res = run_sweep(d, tmp_path)
    assert res.counts == {"pending": 0, "running": 0, "done": 2, "failed": 1}
    assert not res.ok
    with RunStore(tmp_path, readonly=True) as store:
        runs = store.runs().set_index("optimizer.lr")
        bad_id = runs.loc[1e6, "id"]
        assert runs.loc[1e6, "status"] == "failed"
        assert runs.loc[1e6, "error"].startswith("TrainingDiverged: evaluation loss is nan after the update of "
                                                 "iteration 1")
        assert "Traceback" in runs.loc[1e6, "error"]
        assert list(runs.loc[[1e-2, 1e-3], "status"]) == ["done", "done"]
    assert (tmp_path / "runs" / bad_id / "error.txt").read_text().startswith("TrainingDiverged")
    # re-submitting the same sweep runs nothing: done and failed runs are kept as they are
    again = run_sweep(d, tmp_path)
    assert again.executed == 0 and again.counts == res.counts


def test_resume_skips_done_runs_and_resumes_interrupted_ones(tmp_path, tiny):
    d = tiny()
    d["sweep"] = {"axes": {"train.seed": [0, 1, 2]}}
    d["train"]["iterations"] = 8
    full = run_sweep(d, tmp_path / "full")
    assert full.ok
    # simulate a driver killed while seed 1 was past its first checkpoint and seed 2 had not started
    from spikelearn.config import config_from_dict
    from spikelearn.sweep import expand, sweep_from_dict
    from spikelearn.build import build

    runs = expand(sweep_from_dict(d))
    folder = tmp_path / "killed"
    with RunStore(folder) as store:
        store.add_runs(runs)
    run_sweep({**d, "sweep": {"axes": {"train.seed": [0]}}}, folder)  # seed 0 done
    with RunStore(folder) as store:
        store.mark_running(runs[1].id)
    *_, trainer = build(config_from_dict(runs[1].config.to_dict()), out_dir=str(folder / "runs" / runs[1].id))
    trainer.run(iterations=7)  # checkpoint at 5, killed at 7
    res = resume_sweep(folder)
    assert res.ok and res.executed == 2 and res.resumed == (runs[1].id,)
    with RunStore(folder, readonly=True) as store:
        st = store.runs().set_index("id")
    assert st.loc[runs[0].id, "attempts"] == 1  # not run again
    assert st.loc[runs[1].id, "resumed_from"] == 7 and st.loc[runs[2].id, "resumed_from"] == 0
    # the run's cost counts both attempts (the trainer's cumulative wall time), its duration the last one only
    with RunStore(folder, readonly=True) as store:
        wt = store.metrics(run_ids=[runs[1].id], names=["wall_time_s"]).sort_values("iteration")
    assert st.loc[runs[1].id, "train_time_s"] == wt["value"].iloc[-1] > wt["value"].iloc[6]
    pd.testing.assert_frame_equal(_results(folder)[0], _results(tmp_path / "full")[0])


def test_lost_worker_is_retried_from_its_checkpoint_a_bounded_number_of_times(tmp_path, tiny, hooks_on_path):
    def spec(counter, max_retries):
        d = tiny()
        d["sweep"] = {"axes": {"train.seed": [0]}, "workers": 2, "max_retries": max_retries}
        # the worker process dies at iteration 7 (after the checkpoint at 5), the first time only
        d["measurements"] = [{"name": "die", "fn": "_sweep_hooks:die", "every": 1,
                              "options": {"counter": str(tmp_path / counter), "at": 7, "times": 1}}]
        return d

    res = run_sweep(spec("deaths_a", 1), tmp_path / "a")  # one loss, one retry allowed: the retry resumes
    assert res.ok and (tmp_path / "deaths_a").read_text() == "1"
    with RunStore(tmp_path / "a", readonly=True) as store:
        run = store.runs().iloc[0]
        assert run["resumed_from"] == 5 and run["attempts"] == 2
        assert store.metrics(names=["loss"])["iteration"].tolist() == list(range(1, 11))
    res = run_sweep(spec("deaths_b", 0), tmp_path / "b")  # no retry allowed: recorded as failed, with the reason
    (rid, err), = res.failed.items()
    assert err.startswith("WorkerLost: the worker was lost 1 times (max_retries = 0)")
    with RunStore(tmp_path / "b", readonly=True) as store:  # the lost run keeps its checkpoint's metrics
        assert store.metrics(names=["loss"])["iteration"].tolist() == list(range(1, 6))
    # retrying it later resumes from the checkpoint its lost worker left (here in-process)
    res = resume_sweep(tmp_path / "b", workers=1, retry_failed=True)
    assert res.ok
    with RunStore(tmp_path / "b", readonly=True) as store:
        assert store.runs().iloc[0]["resumed_from"] == 5


def test_a_dying_pool_worker_loses_only_its_own_run(tmp_path, tiny, hooks_on_path):
    """Two runs in flight on two pool workers; one worker process dies. Only its run is lost (recorded failed with
    max_retries = 0); the neighbour finishes normally instead of being charged with a lost worker."""
    d = tiny()
    d["train"]["iterations"] = 20
    d["sweep"] = {"axes": {"train.seed": [0, 1]}, "workers": 2, "max_retries": 0}
    d["measurements"] = [{"name": "nap", "fn": "_sweep_hooks:sleepy", "every": 1, "options": {"seconds": 0.1}},
                         {"name": "die", "fn": "_sweep_hooks:die", "every": 1,
                          "options": {"counter": str(tmp_path / "deaths"), "at": 12, "times": 1}}]
    res = run_sweep(d, tmp_path / "sw")
    assert (tmp_path / "deaths").read_text() == "1"
    assert res.counts["done"] == 1 and res.counts["failed"] == 1
    (err,) = res.failed.values()
    assert err.startswith("WorkerLost: the worker was lost 1 times (max_retries = 0)")


def test_bad_settings_and_non_finite_values_are_errors_before_anything_runs(tmp_path, tiny, hooks_on_path):
    for kw, name in [({"workers": 0}, "workers"), ({"max_retries": -1}, "max_retries"),
                     ({"threads_per_run": 0}, "threads_per_run")]:
        with pytest.raises(SweepError, match=name):
            run_sweep(_grid(tiny), tmp_path / "a", **kw)
    d = _grid(tiny)
    d["sweep"]["axes"]["optimizer.lr"] = [1e-3, float("nan")]
    d["sweep"]["zip"] = []
    with pytest.raises(ConfigError, match=r"\[optimizer\] lr must be a finite number, got nan"):
        run_sweep(d, tmp_path / "b")
    d = _grid(tiny)  # inside free-form options, where no schema types the value
    d["sweep"]["axes"]["rule.options"] = [{}, {"clip": float("inf")}]
    with pytest.raises(ConfigError, match=r"rule.options.clip = inf is not a finite number"):
        run_sweep(d, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_store_folder_names_with_uri_characters(tmp_path, tiny):
    """'#', '?', '%' and spaces in a folder name: the read-only store opens the real database (the path is
    percent-encoded in the SQLite URI), and snapshots work."""
    from spikelearn.sweep import snapshot_sweep

    folder = tmp_path / "sweep #1 ?50%"
    assert run_sweep(_grid(tiny), folder).ok
    with RunStore(folder, readonly=True) as store:
        assert len(store.runs()) == 4
    snap = snapshot_sweep(folder, tmp_path / "snap #2")
    with RunStore(snap, readonly=True) as store:
        assert (store.runs()["status"] == "done").all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snap #2", "sweep #1 ?50%"]


def test_retry_failed_touches_only_the_sweeps_own_runs(tmp_path, tiny):
    """Two sweeps share a folder; retrying the failed runs of one leaves the other's failed run as it was."""
    bad = tiny()
    bad["optimizer"]["lr"] = 1e6  # diverges: recorded as failed
    bad["sweep"] = {"axes": {"train.seed": [7]}}
    assert run_sweep(bad, tmp_path / "sw").counts["failed"] == 1
    other = _grid(tiny)
    assert run_sweep(other, tmp_path / "sw", retry_failed=True).ok
    with RunStore(tmp_path / "sw", readonly=True) as store:
        runs = store.runs()
    assert (runs["status"] == "failed").sum() == 1 and (runs["attempts"] == 1).all()


def test_lost_dask_worker_is_retried_from_its_checkpoint(tmp_path, tiny, hooks_on_path):
    """A Dask worker process that dies mid-run (its nanny restarts it): the scheduler reports the task's worker as
    killed, the driver retries the run, which resumes from its checkpoint; beyond max_retries it is recorded failed."""
    import dask
    from distributed import LocalCluster

    def spec(counter, times, max_retries):
        d = tiny()
        d["sweep"] = {"axes": {"train.seed": [0]}, "max_retries": max_retries}
        d["measurements"] = [{"name": "die", "fn": "_sweep_hooks:die", "every": 1,
                              "options": {"counter": str(tmp_path / counter), "at": 7, "times": times}}]
        return d

    # no rescheduling inside dask: every death reaches the driver as a lost worker
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        res = run_sweep(spec("deaths_a", 1, 1), tmp_path / "a", scheduler=cluster.scheduler_address)
        assert res.ok and (tmp_path / "deaths_a").read_text() == "1"
        with RunStore(tmp_path / "a", readonly=True) as store:
            run = store.runs().iloc[0]
            assert run["status"] == "done" and run["resumed_from"] == 5 and run["attempts"] == 2
            assert store.metrics(names=["loss"])["iteration"].tolist() == list(range(1, 11))
        res = run_sweep(spec("deaths_b", 5, 1), tmp_path / "b", scheduler=cluster.scheduler_address)
    (rid, err), = res.failed.items()
    assert err.startswith("WorkerLost: the worker was lost 2 times (max_retries = 1)")
    assert (tmp_path / "deaths_b").read_text() == "2"


def test_snapshot_of_an_interrupted_sweep_resumes_to_the_same_results(tmp_path, tiny):
    """``snapshot_sweep`` copies a sweep (database by SQLite backup, run folders with checkpoints); the copy resumes
    its interrupted run from the checkpoint and ends with the same results as an uninterrupted sweep."""
    from spikelearn.config import config_from_dict
    from spikelearn.sweep import expand, snapshot_sweep, sweep_from_dict
    from spikelearn.build import build

    d = tiny()
    d["sweep"] = {"axes": {"train.seed": [0, 1]}}
    d["train"]["iterations"] = 8
    assert run_sweep(d, tmp_path / "full").ok
    runs = expand(sweep_from_dict(d))
    folder = tmp_path / "live"
    run_sweep({**d, "sweep": {"axes": {"train.seed": [0]}}}, folder)
    with RunStore(folder) as store:  # the live store stays open (WAL mode) while the snapshot is taken
        store.add_runs(runs)
        store.mark_running(runs[1].id)
        *_, trainer = build(config_from_dict(runs[1].config.to_dict()), out_dir=str(folder / "runs" / runs[1].id))
        trainer.run(iterations=6)  # checkpoint at 5, "killed" at 6
        (folder / "runs" / runs[1].id / "checkpoint.pt.tmp").write_bytes(b"half-written")
        snap = snapshot_sweep(folder, tmp_path / "snap")
    assert sorted(p.name for p in snap.iterdir()) == ["runs", "store.sqlite"]
    assert not (snap / "runs" / runs[1].id / "checkpoint.pt.tmp").exists()
    with pytest.raises(FileExistsError, match="not empty"):
        snapshot_sweep(folder, snap)
    with RunStore(snap, readonly=True) as store:
        assert store.counts() == {"pending": 0, "running": 1, "done": 1, "failed": 0}
    res = resume_sweep(snap)
    assert res.ok and res.resumed == (runs[1].id,)
    pd.testing.assert_frame_equal(_results(snap)[0], _results(tmp_path / "full")[0])
    results_only = snapshot_sweep(snap, tmp_path / "results", checkpoints=False)
    assert not list(results_only.rglob("checkpoint.pt"))
    assert _results(results_only)[0].equals(_results(snap)[0])
    # "unfinished": checkpoints of runs not done only (resumable, small)
    part = snapshot_sweep(folder, tmp_path / "part", checkpoints="unfinished")
    assert [p.parent.name for p in part.rglob("checkpoint.pt")] == [runs[1].id]
    assert (part / "runs" / runs[0].id / "model.pt").exists()
    with pytest.raises(ValueError, match="checkpoints"):
        snapshot_sweep(folder, tmp_path / "bad", checkpoints="some")
    # compact: no large artifacts, still resumable to the same results
    compact = snapshot_sweep(folder, tmp_path / "compact", checkpoints="unfinished", artifacts=False)
    assert sorted(p.name for p in (compact / "runs" / runs[0].id).iterdir()) == ["config.json", "summary.json"]
    assert resume_sweep(compact).ok
    pd.testing.assert_frame_equal(_results(compact)[0], _results(tmp_path / "full")[0])


def test_unreachable_scheduler_is_an_error_before_anything_runs(tmp_path, tiny):
    t0 = time.perf_counter()
    with pytest.raises(SweepError, match="no Dask scheduler answers at 'tcp://127.0.0.1:9'"):
        run_sweep(tiny(), tmp_path / "sw", executor="dask", scheduler="tcp://127.0.0.1:9", connect_timeout_s=1)
    assert time.perf_counter() - t0 < 15
    assert not (tmp_path / "sw").exists()


def test_invalid_run_is_an_error_before_anything_runs(tmp_path, tiny):
    d = tiny()
    d["sweep"] = {"axes": {"circuit.options.gain": [1.0, 2.0]}}  # gaussian() takes g, not gain
    with pytest.raises(ConfigError, match="unknown key 'gain' in section \\[circuit.options\\]"):
        run_sweep(d, tmp_path / "sw")
    d["sweep"] = {"axes": {"rule.name": ["bptt", "nosuchrule"]}}
    with pytest.raises(ConfigError, match="nosuchrule"):
        run_sweep(d, tmp_path / "sw")
    d["sweep"] = {"axes": {"rule.name": ["bptt", "tbptt"]}}  # tbptt needs its window k
    with pytest.raises(ConfigError, match="misses 'k', required by TruncatedBPTT"):
        run_sweep(d, tmp_path / "sw")
    # bad values inside options tables (found by building each distinct configuration once, untrained)
    d["sweep"] = {"axes": {"model.options.tau_ms": [100.0, -5.0]}}
    with pytest.raises(ConfigError, match=r"run \w+ \(\{'model.options.tau_ms': -5.0\}\).*\[model\] building "
                                          r"RateRNN: tau_ms must be finite and > 0"):
        run_sweep(d, tmp_path / "sw")
    d["sweep"] = {"axes": {"circuit": [{"kind": "erdos_renyi", "n": 16, "options": {"p": 0.5}},
                                       {"kind": "erdos_renyi", "n": 16, "options": {"p": 1.5}}]}}
    with pytest.raises(ConfigError, match=r"\[circuit\] building erdos_renyi: .*p must be in \(0, 1\], got 1.5"):
        run_sweep(d, tmp_path / "sw")
    d["sweep"] = {"axes": {"train.seed": [0, 1], "train.batch_size": [8, 0]}}  # train values are checked too
    with pytest.raises(ConfigError, match="batch_size"):
        run_sweep(d, tmp_path / "sw")
    assert not (tmp_path / "sw").exists()


def test_checking_a_sweep_leaves_the_torch_rng_and_the_disk_alone(tmp_path, tiny):
    """check_run_config builds a run on the CPU without touching the global RNG or writing its out_dir."""
    from spikelearn.config import config_from_dict
    from spikelearn.sweep import check_run_config

    d = tiny()
    d.pop("sweep")
    d["train"]["out_dir"] = str(tmp_path / "never")
    d["train"]["device"] = "cuda"  # a driver without the GPU can check a run meant for one
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check_run_config(config_from_dict(d))
    assert torch.equal(torch.rand(3), expected)
    assert not (tmp_path / "never").exists()


def test_second_driver_on_the_same_folder_is_refused(tmp_path, tiny):
    from spikelearn.sweep.runner import _DriverLock

    with _DriverLock(pathlib.Path(tmp_path)):
        with pytest.raises(SweepError, match="another driver"):
            run_sweep(tiny(), tmp_path)


def test_cancelled_dask_call_is_a_lost_worker_not_a_crash():
    """A future cancelled by the cluster (scheduler restart / lost connection) comes back from wait() and is
    reported as WorkerLost, which the driver retries, instead of aborting the driver."""
    from spikelearn.sweep.executors import DaskExecutor, WorkerLost

    ex = DaskExecutor(None, n_workers=1, processes=False)
    try:
        f = ex.submit(time.sleep, 5, key="sleep")
        ex.client.cancel([f])
        deadline = time.monotonic() + 20
        done = []
        while not done and time.monotonic() < deadline:
            done = ex.wait([f], timeout=1.0)
        assert done == [f]
        with pytest.raises(WorkerLost):
            ex.result(f)
    finally:
        ex.close()
