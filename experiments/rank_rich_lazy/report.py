"""Report of the rank / rich-vs-lazy sweep (experiments/rank_rich_lazy/*_sweep.toml).

Opens a sweep store folder (``spikelearn.sweep.RunStore``), builds one row per run — init (low-rank r, mouse V1,
C. elegans), rule, seed, final accuracy and the rich/lazy measures of the ``regime`` hook at the last iteration
(weight change, representation alignment, CKA, tangent-kernel alignment, sign similarity; effective ranks and
norms of W_rec at initialisation) and the gradient alignment at initialisation — prints the per-cell
mean ± s.d. over seeds and the Spearman correlation of each measure with the initial effective rank over the
low-rank inits, and writes into ``--out`` (default ``<store>/report``):

* ``runs.csv`` (one row per run), ``summary.csv`` (per rule × init: mean, sd, n), ``init.csv`` (properties of
  each init, mean over seeds), ``spearman.csv``;
* ``regime_vs_rank.png`` (measures vs initial participation ratio, one colour per rule);
* ``kernel_alignment_during_training_<rule>.png`` (KA vs iteration per init, thin lines = seeds).

Usage::

    python experiments/rank_rich_lazy/report.py STORE_DIR [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np
import pandas as pd

from spikelearn.analysis.plots_regime import plot_curvature_trajectories, plot_regime_vs_rank
from spikelearn.sweep.report import mean_sd_table, seed_summary
from spikelearn.sweep.store import RunStore

MEASURES = ["accuracy", "weight_change_rel", "rep_alignment", "cka", "kernel_alignment", "sign_similarity"]
INIT = ["n", "eff_rank_W0", "rv_rank_W0", "frobenius_W0", "spectral_W0", "spectral_radius_W0", "galign.rflo.theta_rec",
        "galign.tbptt_k1.theta_rec"]


def init_label(circuit: dict) -> str:
    if circuit["kind"] == "low_rank":
        return f"rank {circuit['options']['rank']}"
    if circuit["kind"] == "task_aligned_low_rank":
        o = circuit["options"]
        io = " in→out" if o.get("structure") == "input_to_readout" else ""
        return f"aligned{io} {o['rank']}"
    if circuit["kind"] == "connectome":
        return {"mouse_v1": "mouse V1", "celegans_varshney2011": "C. elegans"}.get(circuit["name"], circuit["name"])
    return circuit["kind"]


def load(folder: str | pathlib.Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(runs, metrics)``: one row per run (module docstring) and the tidy metrics with run labels."""
    with RunStore(folder, readonly=True) as store:
        runs = store.runs()
        met = store.metrics()
    rows = []
    for r in runs.itertuples():
        cfg = json.loads(r.config)
        rows.append({"run_id": r.id, "status": r.status, "init": init_label(cfg["circuit"]),
                     "n": circuit_size(cfg["circuit"]), "rule": cfg["rule"]["name"], "seed": int(cfg["train"]["seed"]),
                     "iterations": int(cfg["train"]["iterations"]), "train_time_s": r.train_time_s})
    df = pd.DataFrame(rows)
    met = met.merge(df[["run_id", "init", "rule", "seed"]], on="run_id")
    last = (met.sort_values("iteration").groupby(["run_id", "name"])["value"].last().unstack("name"))
    last.columns = [c.removeprefix("regime.") for c in last.columns]
    df = df.merge(last, left_on="run_id", right_index=True, how="left")
    return df, met


def circuit_size(circuit: dict) -> int:
    """Number of neurons of the init (C. elegans: its own 279)."""
    if circuit["kind"] == "connectome":
        return 279 if circuit["name"] == "celegans_varshney2011" else int(circuit["options"].get("n", 500))
    return int(circuit["n"])


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    return seed_summary(df, ["rule", "init"], MEASURES)


def table(summary: pd.DataFrame, measures) -> str:
    return mean_sd_table(summary, list(measures)).to_string()


def spearman(df: pd.DataFrame) -> pd.DataFrame:
    """Spearman ρ (and p) of each measure with eff_rank_W0 over the low-rank inits' runs, per rule (empty when the
    store has fewer than two ranks: the seed-to-seed scatter of one rank's PR says nothing about rank)."""
    from scipy.stats import spearmanr

    rows = []
    lr = df[(df["status"] == "done") & df["init"].str.startswith("rank")]
    if lr["init"].nunique() < 2:
        return pd.DataFrame(columns=["rule", "measure", "rho", "p", "n_runs"])
    for rule, sub in lr.groupby("rule", sort=False):
        for m in MEASURES[1:]:
            rho, p = spearmanr(sub["eff_rank_W0"], sub[m])
            rows.append({"rule": rule, "measure": m, "rho": float(rho), "p": float(p), "n_runs": len(sub)})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("store", help="sweep store folder (contains store.sqlite)")
    ap.add_argument("--out", default=None, help="output folder (default: <store>/report)")
    a = ap.parse_args()
    out = pathlib.Path(a.out) if a.out else pathlib.Path(a.store) / "report"
    out.mkdir(parents=True, exist_ok=True)
    df, met = load(a.store)
    print(f"{len(df)} runs: {df['status'].value_counts().to_dict()}; training time {df['train_time_s'].sum():.0f} s (cumulative over resumed attempts) in total")
    s = summarize(df)
    print(table(s, MEASURES))
    init = df[df["status"] == "done"].groupby("init", sort=False)[[c for c in INIT if c in df]].mean()
    print("\ninit properties (mean over seeds and rules):")
    print(init.round(3).to_string())
    sp = spearman(df)
    print("\nSpearman correlation with eff_rank_W0 over the low-rank inits:")
    print(sp.round(3).to_string(index=False) if len(sp) else "(fewer than two ranks in this store)")
    df.to_csv(out / "runs.csv", index=False)
    s.to_csv(out / "summary.csv")
    init.to_csv(out / "init.csv")
    sp.to_csv(out / "spearman.csv", index=False)
    done = df[df["status"] == "done"]
    plot_regime_vs_rank(done, out / "regime_vs_rank.png", x="eff_rank_W0",
                        measures=("weight_change_rel", "rep_alignment", "cka", "kernel_alignment"),
                        title=f"regime at the last iteration ({int(done['iterations'].max())} it)")
    ka = met[(met["name"] == "regime.kernel_alignment") & met["run_id"].isin(done["run_id"])]
    order = {name: i for i, name in enumerate(dict.fromkeys(done["init"]))}
    ka = ka.sort_values(["init", "iteration"], key=lambda c: c.map(order) if c.name == "init" else c)
    for rule, sub in ka.groupby("rule", sort=False):
        plot_curvature_trajectories(sub.rename(columns={"value": "kernel_alignment"}),
                                    out / f"kernel_alignment_during_training_{rule}.png", y="kernel_alignment",
                                    hue="init", unit="seed", logy=False, title=f"tangent-kernel alignment ({rule})")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
