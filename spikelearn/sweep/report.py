"""``spikelearn sweep report DIR``: tidy CSV exports and the standard plots of a sweep.

Writes into ``DIR/report/``:

- ``tidy.csv``: one row per metric value: ``run_id, status, <axis columns>, rule.name, train.seed, iteration,
  name, value``;
- ``runs.csv``: one row per run (status, error, times, host, version, axis values, resolved config);
- ``final.csv``: one row per run with its axis values and final measures (last value of every history column);
- ``learning_curves.png``: training loss and evaluation accuracy against iteration, mean ± s.e.m. over runs,
  one line per learning rule;
- ``final_accuracy_by_axis.png``: final accuracy against each axis (seed excepted), one line per rule;
- ``regime_by_axis.png``: final value of each measurement hook against each axis, one line per rule (only when
  the sweep has measurement hooks);
- with ``per_run``: ``DIR/runs/<id>/learning_curve.png`` for every run (loss and accuracy against iteration).
"""

from __future__ import annotations

import json
import pathlib
import sys
from typing import cast

import numpy as np
import pandas as pd

from spikelearn.sweep.spec import SECTIONS
from spikelearn.sweep.store import RunStore

__all__ = ["write_report", "STANDARD_METRICS", "seed_summary", "mean_sd_table"]

STANDARD_METRICS = ("loss", "accuracy", "eval_loss", "firing_rate_hz", "wall_time_s")
_HUE = "rule.name"


def _sem(x: pd.Series) -> float:
    return float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else 0.0


def _axis_order(values: pd.Series) -> list:
    uniq = list(dict.fromkeys(values.tolist()))
    try:
        return sorted(uniq)
    except TypeError:
        return uniq


def write_report(folder: str | pathlib.Path, out_dir: str | pathlib.Path | None = None, *,
                 per_run: bool = False) -> list[pathlib.Path]:
    """Write the CSV tables and plots of the sweep in ``folder`` (see module docstring); returns the paths."""
    if "matplotlib.pyplot" not in sys.modules:  # files only: no display needed
        import matplotlib

        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = pathlib.Path(folder)
    out = pathlib.Path(out_dir) if out_dir is not None else folder / "report"
    out.mkdir(parents=True, exist_ok=True)
    with RunStore(folder, readonly=True) as store:
        runs = store.runs()
        tidy = store.tidy()
        summaries = store.summaries()
    axes = [c for c in runs.columns if "." in c or c in SECTIONS]
    cfgs = [json.loads(c) for c in runs["config"]]
    if _HUE not in runs:
        runs[_HUE] = [c["rule"]["name"] for c in cfgs]
    paths = [out / "tidy.csv", out / "runs.csv", out / "final.csv"]
    tidy.to_csv(paths[0], index=False)
    runs.to_csv(paths[1], index=False)
    info = cast(pd.DataFrame, runs[["id", "status", *dict.fromkeys([*axes, _HUE])]]).rename(columns={"id": "run_id"})
    final = info.merge(summaries, on="run_id", how="left") if len(summaries) else info
    final.to_csv(paths[2], index=False)

    # learning curves by rule, over finished runs (a failed or unfinished run's partial curve would bias the mean
    # of the iterations it reached; they are counted in the legend and kept in tidy.csv)
    not_done = info[info["status"] != "done"].groupby(_HUE)["run_id"].nunique()
    fig, axs = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    for ax, name, label in ((axs[0], "loss", "training loss"), (axs[1], "accuracy", "evaluation accuracy")):
        d = cast(pd.DataFrame, tidy[(tidy["name"] == name) & (tidy["status"] == "done")])
        for rule, g in d.groupby(_HUE, sort=True):
            st = g.groupby("iteration")["value"].agg(["mean", _sem])
            extra = f", {int(not_done[rule])} not done, not shown" if rule in not_done else ""
            ax.plot(st.index, st["mean"], label=f"{rule} ({g['run_id'].nunique()} runs{extra})")
            ax.fill_between(st.index, st["mean"] - st["_sem"], st["mean"] + st["_sem"], alpha=0.25)
        ax.set_xlabel("iteration")
        ax.set_ylabel(label)
        if name == "loss" and len(d) and (d["value"] > 0).all():
            ax.set_yscale("log")
    axs[1].legend(title="rule", fontsize=8)
    fig.savefig(out / "learning_curves.png", dpi=120)
    plt.close(fig)
    paths.append(out / "learning_curves.png")

    by = [a for a in axes if a not in ("train.seed", _HUE, "rule")] or [_HUE]  # rules are the lines already
    done = cast(pd.DataFrame, final[final["status"] == "done"]) if "status" in final else final
    measures = [c for c in summaries.columns if c not in ("run_id", "iteration", *STANDARD_METRICS)]
    for fname, ys in (("final_accuracy_by_axis.png", ["accuracy"]), ("regime_by_axis.png", measures)):
        ys = [y for y in ys if y in done]
        if not ys:
            continue
        fig, axs = plt.subplots(len(ys), len(by), figsize=(4.2 * len(by), 3.3 * len(ys)), squeeze=False,
                                constrained_layout=True)
        for i, y in enumerate(ys):
            for j, a in enumerate(by):
                ax = axs[i, j]
                order = _axis_order(done[a])
                pos = {v: k for k, v in enumerate(order)}
                for rule, g in done.groupby(_HUE, sort=True):
                    st = cast(pd.DataFrame, g.groupby(a)[y].agg(["mean", _sem])).reindex(order).dropna(subset=["mean"])
                    ax.errorbar([pos[v] for v in st.index], st["mean"], yerr=st["_sem"], marker="o", capsize=3,
                                label=str(rule))
                ax.set_xticks(range(len(order)), [str(v) for v in order], rotation=30 if len(order) > 4 else 0,
                              fontsize=8)
                ax.set_xlabel(a)
                ax.set_ylabel(f"final {y}")
        axs[0, -1].legend(title="rule", fontsize=8)
        fig.savefig(out / fname, dpi=120)
        plt.close(fig)
        paths.append(out / fname)

    if per_run:
        for rid, g in tidy.groupby("run_id", sort=False):
            fig, axs = plt.subplots(1, 2, figsize=(8, 3), constrained_layout=True)
            for ax, name in zip(axs, ("loss", "accuracy")):
                d = g[g["name"] == name]
                ax.plot(d["iteration"], d["value"], marker="." if name == "accuracy" else None)
                ax.set_xlabel("iteration")
                ax.set_ylabel(name)
            fig.suptitle(f"run {rid}", fontsize=9)
            path = folder / "runs" / str(rid) / "learning_curve.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, dpi=100)
            plt.close(fig)
            paths.append(path)
    return paths


def seed_summary(df: pd.DataFrame, by: str | list[str], measures: list[str], *,
                 count: str = "n_seeds", sort: bool = False) -> pd.DataFrame:
    """Mean and sd over seeds of ``measures`` per cell of ``by``, from the runs whose ``status`` is ``"done"``
    (one row per run in ``df``); columns ``(measure, "mean"|"std")`` and ``(count, "")``. Cells keep first-seen
    order unless ``sort``."""
    done = df[df["status"] == "done"]
    s = done.groupby(by, sort=sort)[list(measures)].agg(["mean", "std"])
    s[(count, "")] = done.groupby(by, sort=sort).size()
    return s


def mean_sd_table(summary: pd.DataFrame, measures: list[str], *, decimals: dict | None = None,
                  count: str = "n_seeds") -> pd.DataFrame:
    """:func:`seed_summary` as text cells ``"mean ± sd"`` (just the mean where sd is undefined), plus ``n``."""
    decimals = decimals or {}
    out = pd.DataFrame(index=summary.index)
    for m in measures:
        d = decimals.get(m, 3)
        out[m] = [f"{a:.{d}f} ± {b:.{d}f}" if np.isfinite(b) else f"{a:.{d}f}"
                  for a, b in zip(summary[(m, "mean")], summary[(m, "std")])]
    out["n"] = summary[(count, "")]
    return out
