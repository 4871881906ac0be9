"""Statistics and plots of experiments/lateral_cnn (the pre-registered test of README.md).

Reads ``results_<data>.csv`` and ``kernels_<data>.npz``; writes ``stats.csv`` (primary outcome: paired t-test per
arm, Holm over the four arms, per data set), ``summary.csv`` (mean ± s.d. accuracy per data set, arm, model, σ),
``accuracy_vs_noise.png`` and ``kernels_<data>.png``; prints the tables as markdown.
"""

from __future__ import annotations

import argparse
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from scipy.stats import ttest_rel  # noqa: E402

from spikelearn.lateral import lateral_circuit, scale_lateral  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
ARMS = ["none", "dropout", "wd", "dropout+wd"]
PRIMARY = (0.1, 0.2, 0.3, 0.4)


def markdown(df: pd.DataFrame, fmt: str = "{:.4f}") -> str:
    """A pipe table of ``df`` (index kept when named)."""
    if any(n is not None for n in df.index.names):
        df = df.reset_index()
    cells = [[fmt.format(v) if isinstance(v, float) else str(v) for v in row] for row in df.itertuples(index=False)]
    head = [str(c) for c in df.columns]
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |"
                                                                                    for r in cells])


def holm(p: np.ndarray) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (step-down, monotone)."""
    order = np.argsort(p)
    adj = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adj[i] = running
    return adj


def primary_stats(df: pd.DataFrame, data: str) -> pd.DataFrame:
    prim = (df[df.sigma.round(3).isin(PRIMARY)].groupby(["arm", "seed", "model"]).accuracy.mean()
            .unstack("model"))
    rows = []
    for arm in ARMS:
        if arm not in prim.index.get_level_values(0):
            continue
        d = prim.loc[arm]
        t = ttest_rel(d["lateral"], d["baseline"])
        diff = d["lateral"] - d["baseline"]
        rows.append(dict(data=data, arm=arm, n_seeds=len(d), baseline=d["baseline"].mean(),
                         lateral=d["lateral"].mean(), diff_mean=diff.mean(), diff_sd=diff.std(ddof=1),
                         t=float(getattr(t, "statistic")), p=float(getattr(t, "pvalue")),
                         lateral_better_seeds=int((diff > 0).sum())))
    out = pd.DataFrame(rows)
    out["p_holm"] = holm(out.p.to_numpy())
    return out


def kernel_plot(W: np.ndarray, path: pathlib.Path, title: str, n: int = 8) -> None:
    """Left: the first ``n`` post × ``n`` pre maps' lateral kernels as one mosaic (post = rows). Right: the kernel
    averaged over same-map pairs (k = k') and over all pairs, per offset."""
    if W.ndim == 3:  # 1-D kernels: each (post, pre) block is one row of 2r+1 offsets
        W = W[:, :, None, :]
    C, kh, kw = W.shape[0], W.shape[2], W.shape[3]
    sub = W[:n, :n]
    img = np.full((n * (kh + 1) - 1, n * (kw + 1) - 1), np.nan)
    for i in range(n):
        for j in range(n):
            img[i * (kh + 1):i * (kh + 1) + kh, j * (kw + 1):j * (kw + 1) + kw] = sub[i, j]
    fig, (a0, a1, a2) = plt.subplots(1, 3, figsize=(11, 4), gridspec_kw=dict(width_ratios=[3, 1, 1]))
    v = np.nanmax(np.abs(img))
    im = a0.imshow(img, cmap="RdBu_r", vmin=-v, vmax=v)
    a0.set(title=f"W_kk'(Δ), first {n}×{n} maps", xlabel="pre map k'", ylabel="post map k", xticks=[], yticks=[])
    fig.colorbar(im, ax=a0, shrink=0.8)
    same = W[np.arange(C), np.arange(C)].mean(0)
    for ax, K, name in ((a1, same, "k = k' (mean)"), (a2, W.mean((0, 1)), "all pairs (mean)")):
        v = np.abs(K).max()
        im = ax.imshow(K, cmap="RdBu_r", vmin=-v, vmax=v)
        ax.set(title=name, xlabel="Δx", ylabel="Δy" if kh > 1 else "", yticks=[] if kh == 1 else range(kh),
               xticks=range(kw), xticklabels=[str(i - kw // 2) for i in range(kw)])
        if kh > 1:
            ax.set_yticklabels([str(i - kh // 2) for i in range(kh)])
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def circuit_summary(kernels: np.lib.npyio.NpzFile, data: str, gain: float = 0.5) -> pd.DataFrame:
    """Each run's installed lateral weights (scaled to ``gain``) on a small grid (4×4 or 8 positions × 32 maps) as a
    Circuit: its summary quantities, one row per run."""
    rows = []
    for key in sorted(kernels.files):
        W = scale_lateral(torch.as_tensor(kernels[key], dtype=torch.float64), gain)
        circ = lateral_circuit(W, (4, 4) if W.ndim == 4 else (8,))
        s = circ.summary().set_index(["quantity", "group"])["value"]
        seed, arm = key.split("_", 1)
        rows.append(dict(data=data, seed=int(seed), arm=arm, n_units=circ.n, n_edges=circ.n_edges,
                         spectral_radius=s[("spectral_radius", "all")],
                         participation_ratio=s[("participation_ratio", "all")],
                         frac_negative=float((circ.w < 0).mean())))
    return pd.DataFrame(rows)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", type=pathlib.Path, default=HERE)
    args = p.parse_args()
    stats, summaries, frames, circuits = [], [], {}, []
    for data in ("digits", "mnist1d"):
        f = args.dir / f"results_{data}.csv"
        if not f.exists():
            continue
        df = pd.read_csv(f)
        frames[data] = df
        stats.append(primary_stats(df, data))
        s = df.groupby(["arm", "model", "sigma"]).accuracy.agg(["mean", "std", "count"]).reset_index()
        s.insert(0, "data", data)
        summaries.append(s)
        kf = args.dir / f"kernels_{data}.npz"
        if kf.exists():
            k = np.load(kf)
            circuits.append(circuit_summary(k, data))
            key = sorted(k.files)[0] if "100_none" not in k.files else "100_none"
            kernel_plot(k[key], args.dir / f"kernels_{data}.png",
                        f"{data}: raw lateral kernel learned by the rule (before scaling), run {key}")
    if not stats:
        raise SystemExit("no results_*.csv found")
    st, sm = pd.concat(stats), pd.concat(summaries)
    st.to_csv(args.dir / "stats.csv", index=False, float_format="%.5g")
    sm.to_csv(args.dir / "summary.csv", index=False, float_format="%.5g")
    print(markdown(st))
    if circuits:
        cs = pd.concat(circuits)
        cs.to_csv(args.dir / "circuits.csv", index=False, float_format="%.5g")
        print(markdown(pd.DataFrame(cs.drop(columns="seed").groupby(["data", "arm"]).mean())))
    fig, axes = plt.subplots(2, len(frames), figsize=(5.5 * len(frames), 7.5), squeeze=False, sharex=True)
    for col, (data, df) in enumerate(frames.items()):
        ax, dax = axes[0, col], axes[1, col]
        for arm, color in zip(ARMS, ["C0", "C1", "C2", "C3"]):
            for model, ls in (("baseline", "--"), ("lateral", "-")):
                g = df[(df.arm == arm) & (df.model == model)].groupby("sigma").accuracy
                m, sd = g.mean(), g.std()
                ax.errorbar(m.index, m.values, yerr=sd.values, color=color, ls=ls, capsize=2,
                            label=f"{arm}, {model}")
            wide = df[df.arm == arm].pivot_table(index=["seed", "sigma"], columns="model", values="accuracy")
            diff = (wide["lateral"] - wide["baseline"]).groupby("sigma")
            se = diff.std() / np.sqrt(diff.count())
            dax.errorbar(se.index, 100 * diff.mean(), yerr=100 * se, color=color, capsize=2, label=arm)
        ax.set(title=f"{data} ({df.seed.nunique()} seeds; mean ± s.d.)", ylabel="test accuracy")
        ax.legend(fontsize=7)
        dax.axhline(0, color="k", lw=0.8)
        dax.axvspan(min(PRIMARY), max(PRIMARY), color="0.9", zorder=0)
        dax.set(xlabel="input noise σ", ylabel="lateral − baseline (% points, mean ± s.e.)",
                title="paired difference (shaded: primary σ range)")
        dax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.dir / "accuracy_vs_noise.png", dpi=110)
    pivot = sm.assign(cell=sm["mean"].map("{:.4f}".format) + " ± " + sm["std"].map("{:.4f}".format))
    table = pivot.pivot_table(index=["data", "arm", "model"], columns="sigma", values="cell", aggfunc="first")
    print(markdown(pd.DataFrame(table)))


if __name__ == "__main__":
    main()
