"""Tables and figures of experiments/stationary_fit from results/*.csv (writes results/*.md and *.png).

    python experiments/stationary_fit/report.py [--res DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from scipy import stats  # noqa: E402

import spikelearn.objectives as so  # noqa: E402

HERE = Path(__file__).resolve().parent


def md(df: pd.DataFrame, index: bool = True) -> str:
    """A pipe table (no tabulate dependency)."""
    d = df.reset_index() if index else df
    fmt = [[f"{v:.4g}" if isinstance(v, (float, np.floating)) else str(v) for v in row] for row in d.to_numpy()]
    head = [str(c) for c in d.columns]
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in fmt])


def slope_ci(m: np.ndarray, err: np.ndarray) -> tuple[float, float, float, float]:
    """OLS slope of log10|err| on log10 M with its 95 % t-interval and the two-sided t-test p-value of slope = 0."""
    r = stats.linregress(np.log10(m), np.log10(np.abs(err)))
    t = stats.t.ppf(0.975, len(m) - 2)
    return r.slope, r.slope - t * r.stderr, r.slope + t * r.stderr, r.pvalue


def lorenz(res: Path, out: list[str]) -> None:
    df = pd.read_csv(res / "lorenz.csv")
    df["arm"] = df["route"] + np.where(df["D_known"], " (D known)", " (D estimated)")
    df["abs_rel_error"] = df["rel_error"].abs()
    tab = df.groupby(["arm", "parameter", "M"])["abs_rel_error"].agg(["mean", "std", "count"]).reset_index()
    out += ["## 6a Lorenz: |relative error| per parameter (mean ± sd over seeds)", "",
            md(tab.pivot_table(index=["arm", "parameter"], columns="M", values="mean")), ""]
    rows = []
    for (arm, par), g in df.dropna(subset=["estimate"]).groupby(["arm", "parameter"]):
        s, lo, hi, p = slope_ci(g["M"].to_numpy(float), g["rel_error"].to_numpy())
        # paired one-sided Wilcoxon signed-rank: error at 10⁴ < error at 10³ over seeds
        a = g[g.M == 1000].sort_values("seed")["abs_rel_error"].to_numpy()
        b = g[g.M == 10000].sort_values("seed")["abs_rel_error"].to_numpy()
        pw = stats.wilcoxon(b, a, alternative="less").pvalue if len(a) == len(b) and len(a) > 0 else np.nan
        rows.append({"arm": arm, "parameter": par, "slope": s, "ci95_low": lo, "ci95_high": hi, "t_test_p": p,
                     "wilcoxon_p_1e4<1e3": pw, "n_fits": len(g)})
    out += ["Log–log slope of |relative error| on M (OLS over all seeds and M, 95 % t-interval; p of the t-test of "
            "slope = 0) and the one-sided paired Wilcoxon signed-rank p that the error at M = 10⁴ is below that at "
            "10³:", "", md(pd.DataFrame(rows), index=False), ""]
    th = df[df.parameter.isin(["sigma", "rho", "beta"])]
    norm = th.groupby(["arm", "seed", "M"])["rel_error"].apply(lambda e: float(np.sqrt((e ** 2).sum()))).unstack("M")
    dec = []
    for arm, g in norm.groupby(level="arm"):
        cols = sorted(g.columns)
        dec.append({"arm": arm, "seeds": len(g),
                    **{f"decreased {a:g}->{b:g}": int((g[b] < g[a]).sum()) for a, b in zip(cols, cols[1:])},
                    **{f"mean norm at {m:g}": float(g[m].mean()) for m in cols}})
    out += ["Per seed, the norm of the (σ, ρ, β) relative errors: number of seeds on which it decreased (NaN "
            "estimates count as not decreased):", "", md(pd.DataFrame(dec), index=False), ""]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5), sharey=True)
    for ax, par in zip(axes, ["sigma", "rho", "beta"]):
        for arm, g in df[df.parameter == par].groupby("arm"):
            mm = g.groupby("M")["abs_rel_error"].agg(["mean", "std"])
            ax.errorbar(mm.index, mm["mean"], mm["std"], marker="o", capsize=3, label=arm)
        ax.set(xscale="log", yscale="log", title=par, xlabel="M")
    axes[0].set_ylabel("|relative error|")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(res / "lorenz_error_vs_M.png", dpi=110)
    if (res / "lorenz_sampler_bias.csv").exists():
        b = pd.read_csv(res / "lorenz_sampler_bias.csv")
        b = b[b.parameter.isin(["sigma", "rho", "beta"])]
        piv = b.pivot_table(index=["scheme", "parameter"], columns="dt", values="estimate")
        piv["halving_difference"] = piv[min(piv.columns)] - piv[max(piv.columns)]
        se = b.groupby(["scheme", "parameter"])["se"].max()
        piv["se_at_1e5"] = se
        err = df[(df.M == 100_000) & (df.arm == "ksd (D known)")].groupby("parameter")["estimate"].std()
        piv["seed_sd_at_1e5"] = [err.get(p, np.nan) for _, p in piv.index]
        out += ["### Sampler bias at M = 10⁵ (seed 0, KSD route, D known): estimate at dt and dt/2", "",
                md(piv), ""]


def ou(res: Path, out: list[str]) -> None:
    df = pd.read_csv(res / "ou.csv")
    a, D = 1.0, 0.5
    g = df[df.parameter.isin(["a11", "a22", "a"])].copy()
    g["truth"] = np.where(g.parameter == "a", a, -a)
    g["z"] = (g["estimate"] - g["truth"]) / g["se"]
    tab = g.groupby(["route", "family", "M"]).agg(mean_estimate_error=("z", lambda z: np.nan),
                                                   coverage_2se=("z", lambda z: float(np.mean(np.abs(z) < 2))),
                                                   mean_abs_z=("z", lambda z: float(np.mean(np.abs(z)))),
                                                   n=("z", "size")).drop(columns="mean_estimate_error")
    nul = df.groupby(["route", "family", "M"]).agg(min_null_cos=("null_cos", "min"), rank=("rank", "max"),
                                                   n_null=("n_null", "max"),
                                                   omega_reported=("estimate", lambda e: "no"))
    om = df[df.parameter.isin(["omega", "a12", "a21"])].groupby(["route", "family", "M"])["estimate"].apply(
        lambda e: "yes" if e.notna().any() else "no")
    nul["omega_reported"] = om
    out += ["## 6b OU with rotation (A = [[−1, −2], [2, −1]], D = 0.5 known)", "",
            "Identifiable part (a₁₁ = a₂₂ = −D/σ² = −1, or a = 1): fraction of fits within 2 bootstrap se of the "
            "truth and the mean |z|:", "", md(tab), "",
            "Rank and null direction (|cos| with the rotation direction; minimum over seeds); whether any value "
            "was reported for ω (or the off-diagonal entries carrying it):", "", md(nul), ""]
    # figure: the KSD² quadratic form along a and along ω (flat), one sample
    x = so.ou_samples(np.array([[-a, -2.0], [2.0, -a]]), D, 2000, seed=0)
    fam = so.rotation_drift()
    h = so.median_bandwidth(x)
    H = so.ksd_gram(x, fam.columns, h, statistic="U")[0]
    grid = np.linspace(-3, 3, 121)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, k in (("a (ω = 2)", 0), ("ω (a = 1)", 1)):
        vals = []
        for v in grid:
            z = torch.tensor([a, 2.0, D], dtype=torch.float64)
            z[k] = v
            vals.append(float(z @ H @ z))
        ax.plot(grid, vals, label=name)
    ax.set(xlabel="parameter value", ylabel="KSD² (U-statistic)", title="OU: KSD² is flat along ω")
    ax.legend()
    fig.tight_layout()
    fig.savefig(res / "ou_ksd_landscape.png", dpi=110)


def grn(res: Path, out: list[str]) -> None:
    df = pd.read_csv(res / "grn.csv")
    tab = df.groupby(["route", "M"]).agg(pearson_r=("pearson_r", "mean"), r_sd=("pearson_r", "std"),
                                         rel_error=("rel_error", "mean"),
                                         sign_accuracy_nonzero=("sign_accuracy_nonzero", "mean"),
                                         max_abs_error_zero_entries=("max_abs_error_zero_entries", "mean"),
                                         D_estimate=("D_estimate", "mean"), full_rank=("rank", lambda r: int((r == 22).sum())),
                                         n=("seed", "size"))
    rows = []
    for route, g in df.groupby("route"):
        a = g[g.M == 1000].sort_values("seed")["rel_error"].to_numpy()
        b = g[g.M == 10000].sort_values("seed")["rel_error"].to_numpy()
        rows.append({"route": route, "decreased_on_seeds": int((b < a).sum()), "n": len(a),
                     "wilcoxon_p_1e4<1e3": float(stats.wilcoxon(b, a, alternative="less").pvalue)})
    out += ["## 6c Synthetic 3 × 7 gene-regulatory network (Hill n = 2; D = 0.05 estimated)", "",
            "K (21 entries, 3 of them zero) and D from stationary samples; mean over seeds (`full_rank` = seeds on which "
            "the rank rule kept all 22 directions):", "", md(tab), "",
            "Relative error of K from M = 10³ to 10⁴ (one-sided paired Wilcoxon signed-rank):", "",
            md(pd.DataFrame(rows), index=False), ""]


def density(res: Path, out: list[str]) -> None:
    df = pd.read_csv(res / "density.csv")
    tab = df.pivot_table(index="method", columns="M", values="tv", aggfunc=["mean", "std"])
    tab.columns = [f"{a} TV, M={m}" for a, m in tab.columns]
    rows = []
    for m, g in df.groupby("M"):
        a = g[g.method == "residual_on_samples"].sort_values("seed")["tv"].to_numpy()
        b = g[g.method == "max_likelihood_gmm"].sort_values("seed")["tv"].to_numpy()
        rows.append({"M": m, "residual_minus_ml_tv": float(np.mean(a - b)),
                     "wilcoxon_two_sided_p": float(stats.wilcoxon(a, b).pvalue), "n": len(a)})
    out += ["## 5 Density from dynamics (double well U = (x² − 1)² + y²/2, D = 0.3; 8-component mixtures)", "",
            "Total-variation distance to the 60 × 60 histogram of 10⁶ Heun samples on [−2, 2]² (mean and sd over "
            "seeds):", "", md(tab), "",
            "Residual-trained (on stationary samples) minus maximum likelihood, paired two-sided Wilcoxon signed-rank:",
            "", md(pd.DataFrame(rows), index=False), ""]


def connectome(res: Path, out: list[str]) -> None:
    df = pd.read_csv(res / "connectome.csv")
    df["circuit"] = df["circuit"].fillna("celegans") if "circuit" in df else "celegans"
    tab = df.groupby(["circuit", "noise_D", "M", "method"]).agg(pearson_r=("pearson_r", "mean"), r_sd=("pearson_r", "std"),
                                                     sign_accuracy=("sign_accuracy", "mean"),
                                                     rel_error=("rel_error", "mean"), n=("seed", "size"))
    out += ["## 6d Rate networks on connectomes: recovered vs true edge weights (mean over seeds)", "",
            md(tab), ""]
    rows = []
    for (circ, noise, m), g in df.groupby(["circuit", "noise_D", "M"]):
        s = g[g.method.str.startswith("snapshot")].sort_values("seed")["pearson_r"].to_numpy()
        r = g[g.method == "increment_regression"].sort_values("seed")["pearson_r"].to_numpy()
        if len(s) == len(r) and len(s) > 1:
            rows.append({"circuit": circ, "noise_D": noise, "M": m, "snapshot_minus_regression_r": float(np.mean(s - r)),
                         "paired_t_p": float(stats.ttest_rel(s, r).pvalue), "n": len(s)})
    if rows:
        out += ["Paired t-test (over seeds) of Pearson r, snapshot (local route, Gaussian score) − increment "
                "regression:", "", md(pd.DataFrame(rows), index=False), ""]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--res", type=Path, default=HERE / "results")
    a = p.parse_args()
    out: list[str] = []
    for name, fn in (("lorenz.csv", lorenz), ("ou.csv", ou), ("grn.csv", grn), ("density.csv", density),
                     ("connectome.csv", connectome)):
        if (a.res / name).exists():
            fn(a.res, out)
    commits = sorted({c for f in a.res.glob("*.csv") for c in pd.read_csv(f)["commit"].unique()})
    out += ["Commits of the rows: " + ", ".join(commits), ""]
    (a.res / "report.md").write_text("\n".join(out))
    print("\n".join(out))


if __name__ == "__main__":
    main()
