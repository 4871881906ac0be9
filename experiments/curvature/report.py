"""Report of the curvature sweep (experiments/curvature/*_sweep.toml): BPTT vs TBPTT(1) vs RFLO.

Opens a sweep store folder (``spikelearn.sweep.RunStore``), builds one row per run — rule, seed, final training loss
(mean of the last 50 iterations), final evaluation accuracy, top-3 Hessian eigenvalues, Hutchinson trace,
``lr·λ_max``, the gain of the rule's update along the top eigenvector relative to BPTT's, clean and noisy test
accuracy — prints the per-rule mean ± s.d. over seeds and λ_max along training, and writes into ``--out``
(default ``<store>/report``):

* ``runs.csv`` (one row per run), ``summary.csv`` (per rule: mean, sd, n), ``lambda_progress.csv``;
* ``lambda_max.png`` (top eigenvalue vs training progress, 2/lr dashed), ``noisy_acc_vs_sharpness.png``;
* ``density.png`` (SLQ Hessian densities of the first seed's final models) when the runs' ``model.pt`` files are
  in the store folder (they are not in the copied ``store_quick``).

Usage::

    python experiments/curvature/report.py STORE_DIR [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import sqlite3

import numpy as np
import pandas as pd

from spikelearn.analysis.plots_regime import plot_curvature_trajectories, plot_scatter, plot_spectral_density
from spikelearn.sweep.report import mean_sd_table, seed_summary
from spikelearn.sweep.store import RunStore

MEASURES = ["lambda_max", "lr_x_lambda_max", "trace", "gain_u1", "train_loss", "train_acc", "test_acc",
            "test_acc_noisy", "clean_minus_noisy"]
PROGRESS = (0.1, 0.3, 0.5, 1.0)


def rule_label(rule: dict) -> str:
    if rule["name"] == "tbptt":
        return f"tbptt_k{rule['options'].get('k')}"
    return rule["name"]


def load(folder: str | pathlib.Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(runs, metrics)``: one row per run (module docstring) and the tidy metrics with run labels/progress."""
    with RunStore(folder, readonly=True) as store:
        runs = store.runs()
        met = store.metrics()
    rows = []
    for r in runs.itertuples():
        cfg = json.loads(r.config)
        rows.append({"run_id": r.id, "status": r.status, "rule": rule_label(cfg["rule"]),
                     "seed": int(cfg["train"]["seed"]), "iterations": int(cfg["train"]["iterations"]),
                     "lr": float(cfg["optimizer"]["lr"]), "train_time_s": r.train_time_s})
    df = pd.DataFrame(rows)
    met = met.merge(df[["run_id", "rule", "seed", "iterations"]], on="run_id")
    met["progress"] = met["iteration"] / met["iterations"]
    last = met.sort_values("iteration").groupby(["run_id", "name"])["value"].last().unstack("name")
    df = df.merge(last, left_on="run_id", right_index=True, how="left").set_index("run_id")
    loss = met[met["name"] == "loss"].sort_values("iteration")
    df["train_loss"] = loss.groupby("run_id")["value"].apply(lambda v: float(v.tail(50).mean()))
    df["train_acc"] = df["accuracy"]
    df["lambda_max"] = df["hess_end.lambda_max"]
    df["lr_x_lambda_max"] = df["lr"] * df["lambda_max"]
    df["trace"] = df["hess_end.trace"]
    df["gain_u1"] = df.apply(lambda r: 1.0 if r["rule"] == "bptt" else r.get(f"hess_end.gain_u1.{r['rule']}", np.nan),
                             axis=1)
    df["test_acc"] = df["acc.sigma_0"]
    df["test_acc_noisy"] = df["acc.sigma_0.2"]
    df["clean_minus_noisy"] = df["test_acc"] - df["test_acc_noisy"]
    return df.reset_index(), met


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    return seed_summary(df, "rule", MEASURES)


DECIMALS = {"lambda_max": 0, "trace": 0, "lr_x_lambda_max": 2, "gain_u1": 2}


def table(summary: pd.DataFrame) -> str:
    return mean_sd_table(summary, MEASURES, decimals=DECIMALS).T.to_string()


def progress_table(met: pd.DataFrame, order: list) -> pd.DataFrame:
    """λ_max (mean over seeds) at the measurement closest to each training fraction, with the training loss
    (mean over the 50 iterations up to it)."""
    lam = met[met["name"] == "hess.lambda_max"]
    loss = met[met["name"] == "loss"]
    rows = []
    for rule in order:
        sub = lam[lam["rule"] == rule]
        if sub.empty:
            continue
        for p in PROGRESS:
            its = sub.assign(d=(sub["progress"] - p).abs())
            it = its.loc[its["d"].idxmin(), "iteration"]
            vals = sub[sub["iteration"] == it]["value"]
            ls = loss[(loss["rule"] == rule) & (loss["iteration"] > it - 50) & (loss["iteration"] <= it)]["value"]
            rows.append({"rule": rule, "progress": p, "iteration": int(it), "lambda_max": float(vals.mean()),
                         "lambda_max_sd": float(vals.std()), "train_loss_50it": float(ls.mean())})
    return pd.DataFrame(rows)


def densities(folder: pathlib.Path, df: pd.DataFrame) -> dict:
    """SLQ densities (3 probes × 60 steps) of the first seed's final models, if their model.pt files exist."""
    import torch

    from spikelearn.analysis.hessian import hessian_density
    from spikelearn.analysis.hooks import probe_batch
    from spikelearn.models import load as load_model
    from spikelearn.tasks import make_task

    out = {}
    first = df[(df["status"] == "done") & (df["seed"] == df["seed"].min())]
    for r in first.itertuples():
        path = folder / "runs" / r.run_id / "model.pt"
        if not path.exists():
            return {}
        with contextlib.closing(sqlite3.connect(f"file:{folder / 'store.sqlite'}?mode=ro", uri=True)) as conn:
            meas = json.loads(conn.execute("SELECT measurements FROM runs WHERE id = ?", (r.run_id,)).fetchone()[0])
        opts = next(m["options"] for m in meas if m["name"] == "hess_end")
        torch.manual_seed(0)
        model = load_model(path)
        task = make_task("sequential_digits")
        x, y, mask = probe_batch(task, opts["batch_size"], opts["seed"], model)
        out[r.rule], _ = hessian_density(model, x, y, mask, task.loss, l2=opts["l2"], n_probes=3, m=60)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("store", help="sweep store folder (contains store.sqlite)")
    ap.add_argument("--out", default=None, help="output folder (default: <store>/report)")
    a = ap.parse_args()
    folder = pathlib.Path(a.store)
    out = pathlib.Path(a.out) if a.out else folder / "report"
    out.mkdir(parents=True, exist_ok=True)
    df, met = load(folder)
    print(f"{len(df)} runs: {df['status'].value_counts().to_dict()}; training time {df['train_time_s'].sum():.0f} s (cumulative over resumed attempts) in total")
    s = summarize(df)
    print(table(s))
    rules = list(dict.fromkeys(df["rule"]))
    pt = progress_table(met[met["run_id"].isin(df.loc[df["status"] == "done", "run_id"])], rules)
    print("\nλ_max along training (mean over seeds; training loss, 50-iteration mean):")
    print(pt.pivot(index="rule", columns="progress", values="lambda_max").loc[rules].round(1).to_string())
    print(pt.pivot(index="rule", columns="progress", values="train_loss_50it").loc[rules].round(3).to_string())
    from scipy.stats import spearmanr

    done = df[df["status"] == "done"]
    for y in ("test_acc_noisy", "clean_minus_noisy"):
        rho, p = spearmanr(done["lambda_max"], done[y])
        print(f"Spearman {y} vs final λ_max over {len(done)} runs, rules pooled (mostly a between-rule "
              f"comparison): ρ = {rho:.2f} (p = {p:.3g})")
        for rule, g in done.groupby("rule", sort=False):  # within a rule: across seeds only
            rho_r, p_r = spearmanr(g["lambda_max"], g[y])
            print(f"    within {rule} ({len(g)} seeds): ρ = {rho_r:.2f} (p = {p_r:.3g})")
    df.to_csv(out / "runs.csv", index=False)
    s.to_csv(out / "summary.csv")
    pt.to_csv(out / "lambda_progress.csv", index=False)
    lr = float(df["lr"].iloc[0])
    order = {r: i for i, r in enumerate(dict.fromkeys(df["rule"]))}
    hist = met[met["name"] == "hess.lambda_max"].rename(columns={"value": "lambda_max"})
    hist = hist.sort_values(["rule", "iteration"], key=lambda c: c.map(order) if c.name == "rule" else c)
    plot_curvature_trajectories(hist, out / "lambda_max.png", x="progress", hline=2 / lr, hline_label="2/lr",
                                title="top Hessian eigenvalue (W_rec)")
    plot_scatter(done, out / "noisy_acc_vs_sharpness.png", x="lambda_max", y="test_acc_noisy",
                 title="noisy test accuracy vs final λ_max")
    written = ["runs.csv", "summary.csv", "lambda_progress.csv", "lambda_max.png", "noisy_acc_vs_sharpness.png"]
    dens = densities(folder, df)
    if dens:
        plot_spectral_density(dens, out / "density.png", title=f"Hessian density (seed {int(done['seed'].min())})")
        written.append("density.png")
    print(f"wrote {', '.join(written)} into {out}")


if __name__ == "__main__":
    main()
