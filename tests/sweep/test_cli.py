"""`spikelearn sweep run | resume | status | report`, and the driver killed mid-sweep then resumed."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import pandas as pd
import torch

from spikelearn.cli import main
from spikelearn.store import RunStore
from spikelearn.sweep import run_sweep

HERE = pathlib.Path(__file__).parent

_SWEEP_TOML = """
[circuit]
kind = "gaussian"
n = 16
[model]
type = "rate"
options = {{form = "richlazy"}}
[task]
name = "delayed_match_to_sample"
[optimizer]
lr = 1e-2
[train]
iterations = {iterations}
batch_size = 8
eval_every = 5
eval_batch_size = 16
checkpoint_every = 5

[[measurements]]
name = "{hook_name}"
fn = "_sweep_hooks:{hook}"
every = {every}
{options}

[sweep]
[sweep.axes]
{axes}
"""


def _write(tmp_path, *, axes='"train.seed" = [0, 1]', iterations=10, hook="weight_norm", every=5, options=""):
    path = tmp_path / "grid.toml"
    path.write_text(_SWEEP_TOML.format(axes=axes, iterations=iterations, hook=hook, hook_name=hook, every=every,
                                       options=options))
    return path


def test_run_status_report(tmp_path, hooks_on_path, capsys):
    toml = _write(tmp_path, axes='rule = [{name = "bptt", options = {}}, {name = "tbptt", options = {k = 5}}]')
    out = tmp_path / "sw"
    assert main(["sweep", "run", str(toml), "--out", str(out), "--quiet"]) == 0
    assert "2 done, 0 failed" in capsys.readouterr().out
    assert main(["sweep", "status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "no driver running" in text and "2/2" in text
    assert main(["sweep", "report", str(out), "--per-run"]) == 0
    report = out / "report"
    assert len(list(out.glob("runs/*/learning_curve.png"))) == 2
    for name in ("tidy.csv", "runs.csv", "final.csv", "learning_curves.png", "final_accuracy_by_axis.png",
                 "regime_by_axis.png"):
        assert (report / name).stat().st_size > 0, name
    tidy = pd.read_csv(report / "tidy.csv")
    assert {"run_id", "status", "rule", "rule.name", "train.seed", "iteration", "name", "value"} <= set(tidy.columns)
    assert set(tidy["rule.name"]) == {"bptt", "tbptt"} and tidy["run_id"].nunique() == 2
    final = pd.read_csv(report / "final.csv")
    assert len(final) == 2 and final["accuracy"].between(0, 1).all() and (final["weight_norm"] > 0).all()
    # snapshot: a consistent, resumable copy; an existing non-empty destination or a missing store is refused
    assert main(["sweep", "snapshot", str(out), str(tmp_path / "snap")]) == 0
    assert main(["sweep", "status", str(tmp_path / "snap")]) == 0 and "2/2" in capsys.readouterr().out
    assert main(["sweep", "snapshot", str(out), str(tmp_path / "snap")]) == 2
    assert main(["sweep", "snapshot", str(tmp_path / "nothing"), str(tmp_path / "snap2")]) == 2
    assert "no sweep store" in capsys.readouterr().err
    # --compact drops the large artifacts; its checkpoint default (unfinished: none here) yields to --checkpoints
    assert list(out.glob("runs/*/checkpoint.pt")) and list(out.glob("runs/*/model.pt"))
    assert main(["sweep", "snapshot", str(out), str(tmp_path / "c1"), "--compact"]) == 0
    assert not list((tmp_path / "c1").glob("runs/*/checkpoint.pt"))
    assert not list((tmp_path / "c1").glob("runs/*/model.pt"))
    assert main(["sweep", "snapshot", str(out), str(tmp_path / "c2"), "--compact", "--checkpoints", "all"]) == 0
    assert len(list((tmp_path / "c2").glob("runs/*/checkpoint.pt"))) == 2
    assert not list((tmp_path / "c2").glob("runs/*/model.pt"))
    assert main(["sweep", "snapshot", str(out), str(tmp_path / "c3"), "--no-checkpoints", "--checkpoints", "all"]) == 2
    assert "--no-checkpoints contradicts --checkpoints all" in capsys.readouterr().err
    assert not (tmp_path / "c3").exists()


def test_bad_input_exits_before_anything_runs(tmp_path, hooks_on_path, capsys):
    out = tmp_path / "sw"
    toml = _write(tmp_path, axes='"train.sed" = [0, 1]')
    assert main(["sweep", "run", str(toml), "--out", str(out)]) == 2
    assert "unknown axis key 'train.sed'" in capsys.readouterr().err
    toml = _write(tmp_path, axes='"train.seed" = []')
    assert main(["sweep", "run", str(toml), "--out", str(out)]) == 2
    assert "axis 'train.seed' in [sweep.axes] is empty" in capsys.readouterr().err
    toml = _write(tmp_path)
    assert main(["sweep", "run", str(toml), "--out", str(out), "--scheduler", "tcp://127.0.0.1:9",
                 "--connect-timeout", "1"]) == 2
    assert "no Dask scheduler answers at 'tcp://127.0.0.1:9'" in capsys.readouterr().err
    assert not out.exists()
    assert main(["sweep", "status", str(out)]) == 2
    assert "no sweep store" in capsys.readouterr().err


def test_importing_spikelearn_does_not_import_dask():
    code = ("import sys, spikelearn, spikelearn.cli, spikelearn.sweep, spikelearn.store; "
            "from spikelearn.cli import main; "
            "sys.exit(any(m.split('.')[0] in ('dask', 'distributed') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def _checkpoint_iteration(path: pathlib.Path) -> int | None:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["iteration"])
    except Exception:  # not there yet, or being replaced
        return None


def test_killed_driver_resumes_every_run_exactly_once(tmp_path, hooks_on_path, capsys):
    """Kill the driver (SIGKILL) after one run is done and while another is past its first checkpoint; resume."""
    toml = _write(tmp_path, axes='"train.seed" = [0, 1, 2]', iterations=30, hook="sleepy", every=1,
                  options="options = {seconds = 0.02}")
    out = tmp_path / "sw"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "spikelearn.cli", "sweep", "run", str(toml), "--out", str(out),
                             "--quiet", "--threads-per-run", "1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killed_at = victim = None
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
            if not (out / "store.sqlite").exists():
                continue
            try:
                with RunStore(out, readonly=True) as store:
                    runs = store.runs()
            except Exception:  # the driver is creating the schema
                continue
            if not (runs["status"] == "done").any():
                continue
            for rid in runs.loc[runs["status"] == "running", "id"]:
                it = _checkpoint_iteration(out / "runs" / rid / "checkpoint.pt")
                if it is not None and 5 <= it < 25:
                    proc.send_signal(signal.SIGKILL)
                    killed_at, victim = it, rid
                    break
            if victim:
                break
    finally:
        if proc.poll() is None and victim is None:
            proc.kill()
        proc.wait()
    assert victim is not None, f"could not catch the sweep mid-run; stderr: {proc.stderr.read().decode()[-2000:]}"
    proc.stderr.close()
    with RunStore(out, readonly=True) as store:
        before = store.runs().set_index("id")
    assert before.loc[victim, "status"] == "running"
    done_before = before.index[before["status"] == "done"]
    assert len(done_before) >= 1

    assert main(["sweep", "status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "were interrupted" in text and "runs in progress" in text
    from spikelearn.sweep import sweep_status

    prog = sweep_status(out)["in_progress"].set_index("id")
    assert prog.loc[victim, "iteration"] >= killed_at and prog.loc[victim, "iterations"] == 30
    assert main(["sweep", "resume", str(out), "--quiet"]) == 0
    with RunStore(out, readonly=True) as store:
        after = store.runs().set_index("id")
    assert (after["status"] == "done").all()
    for rid in done_before:  # finished runs were not run again
        assert after.loc[rid, "attempts"] == 1 and after.loc[rid, "end_time"] == before.loc[rid, "end_time"]
    assert after.loc[victim, "attempts"] == 2
    assert after.loc[victim, "resumed_from"] >= killed_at >= 5  # from its checkpoint, not from iteration 0

    # results equal those of an uninterrupted sweep
    from spikelearn.sweep import load_sweep

    ref = run_sweep(load_sweep(toml), tmp_path / "ref")
    assert ref.ok
    frames = []
    for folder in (out, tmp_path / "ref"):
        with RunStore(folder, readonly=True) as store:
            m = store.metrics()
        frames.append(m[m["name"] != "wall_time_s"].sort_values(["run_id", "name", "iteration"])
                      .reset_index(drop=True))
    pd.testing.assert_frame_equal(*frames)
    assert frames[0].groupby("run_id")["iteration"].max().eq(30).all()


def test_pool_workers_exit_when_their_driver_is_killed(tmp_path, hooks_on_path):
    """SIGKILL the driver of a 2-worker pool mid-run: its workers notice and stop (no orphan keeps training into
    the run folders), and the resumed sweep finishes every run."""
    toml = _write(tmp_path, axes='"train.seed" = [0, 1]', iterations=200, hook="sleepy", every=1,
                  options="options = {seconds = 0.02}")
    out = tmp_path / "sw"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "spikelearn.cli", "sweep", "run", str(toml), "--out", str(out),
                             "--quiet", "--workers", "2", "--threads-per-run", "1"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cks = []
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            cks = list(out.glob("runs/*/checkpoint.pt"))
            if any((_checkpoint_iteration(c) or 0) >= 10 for c in cks):
                break
    finally:
        proc.kill()
        proc.wait()
    assert cks, "no run reached a checkpoint"

    def progress():
        return {c.parent.name: _checkpoint_iteration(c) for c in out.glob("runs/*/checkpoint.pt")}

    time.sleep(3.0)  # the workers poll for their parent every second
    first = progress()
    time.sleep(2.0)
    assert progress() == first, "pool workers kept training after their driver was killed"
    assert all(it is not None and it < 200 for it in first.values())
    assert main(["sweep", "resume", str(out), "--quiet", "--workers", "1"]) == 0
    with RunStore(out, readonly=True) as store:
        runs = store.runs()
    assert (runs["status"] == "done").all() and (runs["resumed_from"] > 0).any()
