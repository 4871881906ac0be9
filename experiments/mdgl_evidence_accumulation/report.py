"""Report of an MDGL evidence-accumulation sweep store (finished runs, plus the progress of unfinished ones).

For every rule (and cell-type choice) over seeds: final evaluation accuracy (the last evaluation, at iteration
2000 in the full set-up, on the fixed batch of 64 trials), the mean of the last five evaluations (iterations
1960–2000), the mean of the last twenty (iterations 1810–2000: the published metric, ALGORITHMS.md §3.6, which
averages the source's last 20 validations, ≈ its last 200 iterations) and the published value beside it; and the
learning speed: the accuracy averaged over the evaluations in (i − 50, i] for i = 50, 100, 200, 500, 1000, and the
first iteration at which the mean of five consecutive evaluations reaches 0.9 (runs count once they have passed i,
so unfinished runs contribute too). Unfinished runs are listed with the iteration and accuracy of their last
checkpoint, so a store snapshot taken mid-sweep can be read too. Paired comparisons between rules over the seeds
both finished (:func:`paired`). Writes ``final.csv``, ``speed.csv``, ``paired.csv``, ``progress.csv`` and
``learning_curves.png`` into ``--out`` (default ``DIR/report``).

Usage::

    python experiments/mdgl_evidence_accumulation/report.py DIR [--out OUT]
"""

from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np
import pandas as pd
import torch

from spikelearn.store import RunStore

PUBLISHED = {"bptt": "0.979 ± 0.001", "mdgl (ei)": "0.899 ± 0.013", "eprop": "0.75 ± 0.10"}


def rule_label(cfg: dict) -> str:
    """The rule (MDGL with its cell types), tagged with the input/readout condition where a run sets one (the
    ablation store mixes them): ``[sparse io]`` for p_in or p_out < 1, ``[signed in]`` for signed input channels."""
    r = cfg["rule"]
    label = f"mdgl ({r['options'].get('cell_types', 'ei')})" if r["name"] == "mdgl" else r["name"]
    copt, mopt = cfg.get("circuit", {}).get("options", {}), cfg.get("model", {}).get("options", {})
    tags = (["sparse io"] if min(copt.get("p_in", 1.0), copt.get("p_out", 1.0)) < 1 else []) + \
        (["signed in"] if any(mopt.get("input_channel_sign") or ()) else [])
    return f"{label} [{', '.join(tags)}]" if tags else label


def load(folder: pathlib.Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-run table, evaluation accuracy curves) of finished runs and of checkpointed unfinished ones."""
    with RunStore(folder, readonly=True) as store:
        runs = store.runs()
        metrics = store.metrics(names=["accuracy"])
    rows, curves = [], []
    for _, r in runs.iterrows():
        cfg = json.loads(r["config"])
        base = {"run_id": r["id"], "rule": rule_label(cfg), "seed": cfg["train"]["seed"], "status": r["status"]}
        acc = metrics.loc[metrics["run_id"] == r["id"], ["iteration", "value"]].sort_values("iteration")
        if acc.empty:  # unfinished: read the checkpoint's history, if any
            ck = folder / "runs" / r["id"] / "checkpoint.pt"
            if ck.exists():
                hist = torch.load(ck, weights_only=True, map_location="cpu")["history"]
                acc = pd.DataFrame([(h["iteration"], h["accuracy"]) for h in hist if "accuracy" in h],
                                   columns=["iteration", "value"])
        if acc.empty:
            rows.append({**base, "iteration": 0})
            continue
        rows.append({**base, "iteration": int(acc["iteration"].iloc[-1]), "accuracy": float(acc["value"].iloc[-1]),
                     "accuracy_last5": float(acc["value"].iloc[-5:].mean()),
                     "accuracy_last20": float(acc["value"].iloc[-20:].mean()),
                     "train_time_s": r.get("train_time_s", np.nan)})
        curves.append(acc.assign(**base))
    return pd.DataFrame(rows), (pd.concat(curves, ignore_index=True) if curves else pd.DataFrame())


def summarise(df: pd.DataFrame, iterations: int) -> pd.DataFrame:
    done = df[(df["status"] == "done") & (df["iteration"] == iterations)]
    out = done.groupby("rule").agg(n=("seed", "size"), mean=("accuracy", "mean"), sd=("accuracy", "std"),
                                   mean_last5=("accuracy_last5", "mean"), sd_last5=("accuracy_last5", "std"),
                                   mean_last20=("accuracy_last20", "mean"), sd_last20=("accuracy_last20", "std"),
                                   seeds=("seed", lambda s: ",".join(map(str, sorted(s)))))
    out["published"] = [PUBLISHED.get(k.split(" [")[0], "") for k in out.index]
    return out.reset_index()


SPEED_AT = (50, 100, 200, 500, 1000)


def speed(curves: pd.DataFrame, at=SPEED_AT, window: int = 50, target: float = 0.9) -> pd.DataFrame:
    """Per rule: mean ± sd over seeds of the accuracy averaged over evaluations in (i − window, i], for each i in
    ``at`` (runs that have reached i), and of the first iteration where 5 consecutive evaluations average ≥ target."""
    rows = []
    for (rule, seed), g in curves.groupby(["rule", "seed"]):
        g = g.sort_values("iteration")
        row = {"rule": rule, "seed": seed}
        for i in at:
            w = g[(g["iteration"] > i - window) & (g["iteration"] <= i)]
            if g["iteration"].max() >= i and len(w):
                row[f"acc@{i}"] = float(w["value"].mean())
        run5 = g["value"].rolling(5).mean()
        hit = g.loc[run5 >= target, "iteration"]
        row[f"it_to_{target}"] = float(hit.iloc[0]) if len(hit) else np.nan
        rows.append(row)
    per_run = pd.DataFrame(rows)
    cols = [c for c in per_run.columns if c not in ("rule", "seed")]
    agg = per_run.groupby("rule")[cols].agg(["mean", "std", "count"])
    return agg


PAIRS = (("mdgl (circuit)", "mdgl (ei)"), ("mdgl (circuit)", "eprop"), ("mdgl (ei)", "eprop"),
         ("bptt", "mdgl (circuit)"), ("bptt", "mdgl (ei)"), ("bptt", "eprop"))


def paired(df: pd.DataFrame, curves: pd.DataFrame, iterations: int) -> pd.DataFrame:
    """Paired comparisons of finished runs with the same seed (the same circuit, task draws and initial weights
    within a sweep): per measure the mean and sd of the per-seed difference a − b, how many seeds have a > b, a < b,
    and the two-sided paired t-test and Wilcoxon signed-rank p-values (exact; with 5 seeds Wilcoxon cannot go below
    0.0625). Measures: final accuracy, mean of the last five and of the last twenty evaluations, mean accuracy
    over all evaluations (area under the learning curve) and iterations until five consecutive evaluations
    average ≥ 0.9."""
    from scipy import stats

    done = df[(df["status"] == "done") & (df["iteration"] == iterations)]
    auc = curves.groupby(["rule", "seed"])["value"].mean().rename("auc")
    sp = []
    for (rule, seed), g in curves.groupby(["rule", "seed"]):
        g = g.sort_values("iteration")
        hit = g.loc[g["value"].rolling(5).mean() >= 0.9, "iteration"]
        sp.append({"rule": rule, "seed": seed, "it_to_0.9": float(hit.iloc[0]) if len(hit) else np.nan})
    per = done.set_index(["rule", "seed"])[["accuracy", "accuracy_last5", "accuracy_last20"]].join(auc).join(
        pd.DataFrame(sp).set_index(["rule", "seed"]))
    rows = []
    labels = set(per.index.get_level_values(0))
    suffixes = sorted({"" if " [" not in lab else " [" + lab.split(" [", 1)[1] for lab in labels})
    for a, b in ((a + sfx, b + sfx) for sfx in suffixes for a, b in PAIRS):  # pairs within one I/O condition
        if a not in labels or b not in labels:
            continue
        both = per.loc[a].add_suffix("_a").join(per.loc[b].add_suffix("_b"), how="inner")
        for m in ("accuracy", "accuracy_last5", "accuracy_last20", "auc", "it_to_0.9"):
            d = (both[f"{m}_a"] - both[f"{m}_b"]).dropna()
            if len(d) < 2:
                continue
            row = {"a": a, "b": b, "measure": m, "n": len(d), "mean_diff": float(d.mean()), "sd_diff": float(d.std()),
                   "a>b": int((d > 0).sum()), "a<b": int((d < 0).sum())}
            row["t_p"] = float(stats.ttest_rel(both.loc[d.index, f"{m}_a"], both.loc[d.index, f"{m}_b"]).pvalue) \
                if d.std() > 0 else np.nan
            row["wilcoxon_p"] = float(stats.wilcoxon(d).pvalue) if (d != 0).any() else np.nan
            rows.append(row)
    return pd.DataFrame(rows)


def plot(curves: pd.DataFrame, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for rule, g in curves.groupby("rule"):
        piv = g.pivot_table(index="iteration", columns="seed", values="value")
        m, s = piv.mean(axis=1), piv.std(axis=1)
        ax.plot(piv.index, m, label=f"{rule} (n={piv.shape[1]})")
        ax.fill_between(piv.index, m - s, m + s, alpha=0.2)
    ax.set_xlabel("iteration")
    ax.set_ylabel("evaluation accuracy")
    ax.axhline(0.5, color="grey", lw=0.5)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", type=pathlib.Path)
    ap.add_argument("--out", type=pathlib.Path, default=None)
    ap.add_argument("--iterations", type=int, default=2000, help="iterations of a finished run")
    a = ap.parse_args()
    out = a.out or a.dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    df, curves = load(a.dir)
    df.to_csv(out / "progress.csv", index=False)
    summ = summarise(df, a.iterations)
    summ.to_csv(out / "final.csv", index=False)
    with pd.option_context("display.width", 200, "display.float_format", "{:.3f}".format):
        print("finished runs (final evaluation accuracy, mean ± sd over seeds):")
        print(summ.to_string(index=False) if len(summ) else "  none yet")
        if len(curves):
            sp = speed(curves)
            sp.to_csv(out / "speed.csv")
            print("\nlearning speed (accuracy over the evaluations in (i - 50, i]; iterations until 5 consecutive "
                  "evaluations average >= 0.9): mean, sd, n runs")
            print(sp.to_string())
            pr = paired(df, curves, a.iterations)
            pr.to_csv(out / "paired.csv", index=False)
            print("\npaired by seed (a − b over seeds with both finished):")
            print(pr.to_string(index=False) if len(pr) else "  none yet")
        print("\nevery run:")
        print(df.drop(columns=["run_id"]).to_string(index=False))
    if len(curves):
        plot(curves, out / "learning_curves.png")
        print(f"\nwrote {out}/final.csv, speed.csv, paired.csv, progress.csv, learning_curves.png")


if __name__ == "__main__":
    main()
