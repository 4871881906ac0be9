"""Report of the initial-gain x rule x flossing sweep (experiments/gain_lyapunov/*_sweep*.toml).

Opens a sweep store folder (``spikelearn.sweep.RunStore``), builds one row per run — rule, flossing, gain g, seed,
final accuracy (mean of the last two evaluations), best accuracy, λ_max of the initial model, after pre-flossing
and the first update (iteration 1), and at the end of training, relative change of W_rec — prints the per-cell
mean ± s.d. over seeds and writes into ``--out`` (default ``<store>/report``):

* ``runs.csv`` (one row per run), ``summary.csv`` (per condition × g: mean, sd, n of every measure),
  ``pooled.csv`` (per condition, all gains pooled), ``gain_tests.csv`` (per condition: Kruskal–Wallis of accuracy
  over g, Spearman of ΔW_rec vs g, runs at chance or solved, λ_max before/after), ``flossing_tests.csv`` (paired
  flossing vs none per rule);
* ``gain.png`` (accuracy, λ_max before, λ_max after, ΔW_rec/W_rec vs g; mean ± s.e.m., one line per condition);
* ``lambda_during_training.png`` (λ_max vs iteration, iteration 0 = the initial model; mean over seeds, one
  panel per g).

Usage::

    python experiments/gain_lyapunov/report.py STORE_DIR [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np
import pandas as pd

from spikelearn.analysis.plots_stability import plot_gain_sweep
from spikelearn.sweep.report import mean_sd_table, seed_summary
from spikelearn.sweep.store import RunStore

MEASURES = ["accuracy", "best_accuracy", "lambda_before", "lambda_start", "lambda_after", "dW_rel"]


def load(folder: str | pathlib.Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(runs, metrics)``: one row per run (see module docstring) and the tidy metrics with run labels."""
    with RunStore(folder, readonly=True) as store:
        runs = store.runs()
        met = store.metrics()
    rows = []
    for r in runs.itertuples():
        cfg = json.loads(r.config)
        fl = cfg.get("flossing", {})
        floss = bool(fl.get("pre_steps", 0) or (fl.get("every", 0) and fl.get("steps", 0)))
        rule = cfg["rule"]["name"]
        rows.append({"run_id": r.id, "status": r.status, "rule": rule, "flossing": floss,
                     "condition": rule + (" + flossing" if floss else ""), "g": float(cfg["circuit"]["options"]["g"]),
                     "seed": int(cfg["train"]["seed"]), "iterations": int(cfg["train"]["iterations"]),
                     "train_time_s": r.train_time_s})
    df = pd.DataFrame(rows)
    met = met.merge(df[["run_id", "condition", "g", "seed"]], on="run_id")

    def last(name: str) -> pd.Series:
        m = met[met["name"] == name].sort_values("iteration")
        return m.groupby("run_id")["value"].last()

    acc = met[met["name"] == "accuracy"].sort_values("iteration")
    df = df.set_index("run_id")
    df["accuracy"] = acc.groupby("run_id")["value"].apply(lambda v: float(v.iloc[-2:].mean()))
    df["best_accuracy"] = acc.groupby("run_id")["value"].max()
    df["lambda_before"] = last("lyap.initial_lambda_max")
    df["lambda_start"] = last("lyap_start.lambda_max")
    df["lambda_after"] = last("lyap.lambda_max")
    df["dW_rel"] = last("dW.W_rec.rel")
    return df.reset_index(), met


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Per (condition, g): mean, sd and n over seeds of every measure (finished runs only)."""
    return seed_summary(df, ["condition", "g"], MEASURES, count="n", sort=True)


def table(summary: pd.DataFrame) -> str:
    """The summary as text: ``mean ± sd`` per cell."""
    return mean_sd_table(summary, MEASURES, count="n").to_string()


def flossing_tests(done: pd.DataFrame) -> pd.DataFrame:
    """Per rule: final and best accuracy with vs without flossing, all gains pooled. Runs with and without
    flossing at the same (g, seed) start from the same network and see the same trials, so the test is paired:
    Wilcoxon signed-rank over the (g, seed) pairs (two-sided; zero differences dropped, ``zero_method="wilcox"``),
    with the mean paired difference; Mann-Whitney U (unpaired) is kept beside it for comparison."""
    from scipy.stats import mannwhitneyu, wilcoxon

    rows = []
    for rule, sub in done.groupby("rule", sort=False):
        a, b = sub[sub["flossing"]], sub[~sub["flossing"]]
        if not (len(a) and len(b)):
            continue
        pairs = a.merge(b, on=["g", "seed"], suffixes=("_with", "_without"))
        for m in ("accuracy", "best_accuracy"):
            d = pairs[f"{m}_with"] - pairs[f"{m}_without"]
            p_w = float(wilcoxon(d).pvalue) if (d != 0).any() else float("nan")
            rows.append({"rule": rule, "measure": m, "with_flossing": a[m].mean(), "without": b[m].mean(),
                         "n_pairs": len(pairs), "mean_paired_diff": float(d.mean()), "p_wilcoxon_paired": p_w,
                         "p_mannwhitney": float(mannwhitneyu(a[m], b[m], alternative="two-sided").pvalue)})
    return pd.DataFrame(rows)


def gain_tests(done: pd.DataFrame, chance: float = 0.6, solved: float = 0.95) -> pd.DataFrame:
    """Per condition, all gains: does final accuracy depend on g (Kruskal–Wallis H test over the gains' groups of
    seeds), does the relative W_rec change fall with g (Spearman ρ over runs), how many runs end at chance (final
    accuracy < ``chance``), how many solved the task at some evaluation (best accuracy ≥ ``solved``) and at the
    end, and λ_max before and after training (mean over runs, and their mean change)."""
    from scipy.stats import kruskal, spearmanr

    rows = []
    for cond, sub in done.groupby("condition", sort=False):
        groups = [v["accuracy"].to_numpy() for _, v in sub.groupby("g")]
        same = len({round(float(x), 12) for gr in groups for x in gr}) == 1  # kruskal is undefined when all equal
        kw = float("nan") if same or len(groups) < 2 else float(kruskal(*groups).pvalue)
        rho = spearmanr(sub["g"], sub["dW_rel"])
        rows.append({"condition": cond, "n_runs": len(sub), "p_kruskal_acc_vs_g": kw,
                     "spearman_dW_vs_g": float(rho.statistic), "p_spearman": float(rho.pvalue),
                     "n_at_chance": int((sub["accuracy"] < chance).sum()),
                     # ≥ 0.95 on the 64 evaluation trials (61 of 64) has probability < 1e-14 by chance
                     "n_solved_ever": int((sub["best_accuracy"] >= solved).sum()),
                     "n_solved_at_end": int((sub["accuracy"] >= solved).sum()),
                     "lambda_before": float(sub["lambda_before"].mean()),
                     "lambda_after": float(sub["lambda_after"].mean()),
                     "lambda_change": float((sub["lambda_after"] - sub["lambda_before"]).mean())})
    return pd.DataFrame(rows)


def plot_lambda_trajectories(met: pd.DataFrame, path: pathlib.Path, order: list) -> None:
    """λ_max vs iteration (0 = the initial model, 1 = after pre-flossing and the first update), mean over seeds,
    one panel per g, one line per condition (colours in ``order``, as in gain.png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lam = met[met["name"] == "lyap.lambda_max"]
    ini = met[met["name"] == "lyap.initial_lambda_max"].sort_values("iteration").groupby("run_id").first()
    lam = pd.concat([ini.reset_index().assign(iteration=0), met[met["name"] == "lyap_start.lambda_max"], lam])
    gains = sorted(lam["g"].unique())
    fig, axes = plt.subplots(1, len(gains), figsize=(3.2 * len(gains), 3.0), sharey=True, squeeze=False)
    for ax, g in zip(axes[0], gains):
        sub = lam[lam["g"] == g]
        for i, cond in enumerate(order):
            m = sub[sub["condition"] == cond].groupby("iteration")["value"].mean()
            ax.plot(m.index, m.values, marker="o", ms=2, color=f"C{i}", label=cond)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_title(f"g = {g:g}")
        ax.set_xlabel("iteration")
    axes[0][0].set_ylabel("λ_max (1/step)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("store", help="sweep store folder (contains store.sqlite)")
    ap.add_argument("--out", default=None, help="output folder (default: <store>/report)")
    a = ap.parse_args()
    out = pathlib.Path(a.out) if a.out else pathlib.Path(a.store) / "report"
    out.mkdir(parents=True, exist_ok=True)
    df, met = load(a.store)
    print(f"{len(df)} runs: {df['status'].value_counts().to_dict()}; training time {df['train_time_s'].sum():.0f} s (cumulative over resumed attempts) "
          f"in total")
    s = summarize(df)
    print(table(s))
    done = df[df["status"] == "done"]
    pooled = done.groupby("condition", sort=False)[["accuracy", "best_accuracy", "dW_rel"]].agg(
        ["mean", "std", "count"])
    print("\npooled over g (mean, sd, n runs):")
    print(pooled.round(3).to_string())
    gt = gain_tests(done)
    print("\nper condition, all gains (Kruskal-Wallis of final accuracy over g; Spearman of dW_rel vs g; runs with "
          "final accuracy < 0.6; runs with best / final accuracy >= 0.95; lambda_max per step before/after):")
    print(gt.round(4).to_string(index=False))
    tests = flossing_tests(done)
    if len(tests):
        print("\nflossing vs none, pooled over g (paired by (g, seed): Wilcoxon signed-rank; Mann-Whitney U unpaired):")
        print(tests.round(4).to_string(index=False))
    df.to_csv(out / "runs.csv", index=False)
    s.to_csv(out / "summary.csv")
    pooled.to_csv(out / "pooled.csv")
    gt.to_csv(out / "gain_tests.csv", index=False)
    if len(tests):
        tests.to_csv(out / "flossing_tests.csv", index=False)
    plot_gain_sweep(done, out / "gain.png", ys=("accuracy", "lambda_before", "lambda_after", "dW_rel"),
                    hue="condition")
    plot_lambda_trajectories(met[met["run_id"].isin(done["run_id"])], out / "lambda_during_training.png",
                             order=list(dict.fromkeys(done["condition"])))
    print(f"wrote {out}/runs.csv, summary.csv, pooled.csv, gain_tests.csv, gain.png, lambda_during_training.png")


if __name__ == "__main__":
    main()
