"""PNG plots for the rich/lazy and curvature analyses (matplotlib, Agg backend; no display needed).

Every function takes tidy DataFrames as produced by :mod:`spikelearn.analysis.regime` /
:mod:`spikelearn.analysis.hessian` (or the experiments' tables), writes one PNG and returns its path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence, cast

import numpy as np
import pandas as pd

__all__ = ["plot_regime_vs_rank", "plot_curvature_trajectories", "plot_spectral_density", "plot_scatter"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _finish(fig, ax, path: str | Path, xlabel: str, ylabel: str, title: str | None) -> Path:
    """Labels, grid, legend and optional title of a one-axis figure, then :func:`_save`."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _plt().close(fig)
    return path


def plot_regime_vs_rank(df: pd.DataFrame, path: str | Path, *, x: str = "eff_rank_W0",
                        measures: Sequence[str] = ("weight_change_rel", "rep_alignment", "kernel_alignment"),
                        label: str = "init", group: str | None = "rule", logx: bool = True,
                        title: str | None = None) -> Path:
    """One panel per laziness measure against the initial effective rank; one point per row (mean ± s.d. over
    rows sharing ``label`` and ``group``), annotated with ``label``; one colour per ``group``.

    Args:
        df: wide table with columns ``x``, each of ``measures``, ``label`` and (optionally) ``group``.
    """
    plt = _plt()
    fig, axes = plt.subplots(1, len(measures), figsize=(4.2 * len(measures), 3.6), squeeze=False)
    groups = [None] if group is None or group not in df else list(dict.fromkeys(df[group]))
    for ax, m in zip(axes[0], measures):
        for gi, gname in enumerate(groups):
            sub = df if gname is None else df[df[group] == gname]
            agg = sub.groupby(label, sort=False).agg(xm=(x, "mean"), ym=(m, "mean"), ys=(m, "std")).reset_index()
            ax.errorbar(agg.xm, agg.ym, yerr=agg.ys.fillna(0), fmt="o", color=f"C{gi}", capsize=3,
                        label=str(gname) if gname is not None else None)
            if gi == 0:
                for _, r in agg.iterrows():
                    ax.annotate(str(r[label]), (r.xm, r.ym), fontsize=7, xytext=(3, 3), textcoords="offset points")
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(x)
        ax.set_ylabel(m)
        ax.grid(alpha=0.3)
    if groups != [None]:
        axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_curvature_trajectories(df: pd.DataFrame, path: str | Path, *, x: str = "iteration",
                                y: str = "lambda_max", hue: str = "rule", unit: str | None = "seed",
                                logy: bool = True, hline: float | None = None, hline_label: str = "",
                                title: str | None = None) -> Path:
    """``y`` (e.g. the top Hessian eigenvalue) against training iteration: thin lines per ``unit`` (seed), a thick
    line for the mean of each ``hue`` (rule); optional dashed reference line ``hline`` (e.g. ``2/lr``)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    d = df.dropna(subset=[y])
    for i, (h, sub) in enumerate(d.groupby(hue, sort=False)):
        if unit is not None and unit in sub:
            for _, s in sub.groupby(unit):
                ax.plot(s[x], s[y], color=f"C{i}", alpha=0.3, lw=0.8)
        mean = cast(pd.Series, sub.groupby(x)[y].mean())  # one column: a Series
        # .values: an ndarray here (pandas annotates it ndarray | ExtensionArray, which matplotlib's stubs refuse)
        ax.plot(mean.index, mean.values, color=f"C{i}", lw=2, label=str(h))  # type: ignore[arg-type]
    if hline is not None:
        ax.axhline(hline, color="k", ls="--", lw=1, label=hline_label or None)
    if logy:
        ax.set_yscale("log")
    return _finish(fig, ax, path, x, y, title)


def plot_spectral_density(densities: Mapping[str, pd.DataFrame], path: str | Path, *, logy: bool = True,
                          title: str | None = None) -> Path:
    """Hessian eigenvalue densities (``eigenvalue``, ``density`` columns, as :func:`hessian_density`), one line
    each."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for i, (name, d) in enumerate(densities.items()):
        ax.plot(d["eigenvalue"], np.maximum(d["density"], 1e-12), color=f"C{i}", label=name)
    if logy:
        ax.set_yscale("log")
        ax.set_ylim(bottom=1e-6)
    return _finish(fig, ax, path, "Hessian eigenvalue", "density", title)


def plot_scatter(df: pd.DataFrame, path: str | Path, *, x: str, y: str, hue: str = "rule", logx: bool = False,
                 title: str | None = None) -> Path:
    """Scatter of ``y`` against ``x`` coloured by ``hue`` (e.g. noisy test accuracy vs final sharpness)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.8, 3.8))
    for i, (h, sub) in enumerate(df.groupby(hue, sort=False)):
        ax.scatter(sub[x], sub[y], color=f"C{i}", label=str(h))
    if logx:
        ax.set_xscale("log")
    return _finish(fig, ax, path, x, y, title)
