"""PNG plots for the stability and spike analyses (matplotlib's Agg canvas; no pyplot, no global backend).

Every function writes one PNG to ``path`` and returns the path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from spikelearn.analysis.lyapunov import LyapunovResult
from spikelearn.analysis.spikes import as_spikes, psth

__all__ = ["plot_spectrum", "plot_convergence", "plot_raster", "plot_psth", "plot_gain_sweep"]


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def plot_spectrum(results: LyapunovResult | Mapping[str, LyapunovResult], path: str | Path, *,
                  per: str = "step") -> Path:
    """Lyapunov spectra (exponent vs index), one line per labelled result; ``per`` = ``"step"`` or ``"s"``."""
    if isinstance(results, LyapunovResult):
        results = {"": results}
    fig = Figure(figsize=(5, 3.5))
    ax = fig.add_subplot()
    for label, r in results.items():
        lam = r.mean if per == "step" else r.per_s
        ax.plot(np.arange(1, r.k + 1), np.sort(lam)[::-1], marker="o", ms=3, label=label or None)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel("index i")
    ax.set_ylabel("λ_i (1/step)" if per == "step" else "λ_i (1/s)")
    if any(results):
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_convergence(result: LyapunovResult, path: str | Path, *, max_lines: int = 8) -> Path:
    """Running estimate of the first ``max_lines`` exponents vs steps."""
    df = result.convergence_frame()
    fig = Figure(figsize=(5, 3.5))
    ax = fig.add_subplot()
    for i, sub in df[df["index"] <= max_lines].groupby("index"):
        ax.plot(sub["step"], sub["lambda_per_step"], lw=1, label=f"λ_{i}")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("running estimate (1/step)")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def plot_raster(z: Any, dt_ms: float, path: str | Path, *, trial: int = 0,
                cell_types: Sequence[str] | None = None, max_neurons: int = 200) -> Path:
    """Spike raster of one trial (neurons grouped and coloured by cell type)."""
    a = as_spikes(z)[:, trial]
    N = a.shape[1]
    ct = np.asarray(["all"] * N if cell_types is None else [str(s) for s in cell_types])
    order = np.argsort(ct, kind="stable")[:max_neurons]
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    for k, name in enumerate(dict.fromkeys(ct[order].tolist())):
        rows = np.flatnonzero(ct[order] == name)
        t, j = np.nonzero(a[:, order[rows]] > 0)
        ax.scatter(t * dt_ms, rows[j], s=1.5, color=f"C{k}", label=name, marker="|")
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("neuron")
    ax.set_ylim(-1, len(order))
    if cell_types is not None:
        ax.legend(fontsize=7, markerscale=4, loc="upper right")
    return _save(fig, path)


def plot_psth(z: Any, dt_ms: float, path: str | Path, *, bin_ms: float = 10.0,
              cell_types: Sequence[str] | None = None) -> Path:
    """Trial-averaged population rate (Hz) per cell type."""
    df = psth(z, dt_ms, bin_ms=bin_ms, cell_types=cell_types)
    fig = Figure(figsize=(6, 3))
    ax = fig.add_subplot()
    for name, sub in df.groupby("cell_type", sort=False):
        ax.step(sub["t_ms"], sub["rate_hz"], where="post", label=str(name))
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("rate (Hz)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_gain_sweep(df: pd.DataFrame, path: str | Path, *, x: str = "g", ys: Sequence[str] = ("accuracy",),
                    hue: str | None = "rule", logx: bool = True) -> Path:
    """One panel per column in ``ys``: mean ± s.e.m. over rows (seeds) vs ``x``, one line per ``hue`` value."""
    fig = Figure(figsize=(4 * len(ys), 3.3))
    groups = [("", df)] if hue is None else list(df.groupby(hue, sort=False))
    for p, col in enumerate(ys):
        ax = fig.add_subplot(1, len(ys), p + 1)
        for k, (label, sub) in enumerate(groups):
            st = sub.groupby(x)[col].agg(["mean", "std", "count"]).reset_index()
            sem = st["std"].fillna(0) / np.sqrt(st["count"])
            ax.errorbar(st[x], st["mean"], yerr=sem, marker="o", ms=3, capsize=2, color=f"C{k}",
                        label=str(label) or None)
        if logx:
            ax.set_xscale("log")
            ax.set_xticks(sorted(df[x].unique()))
            ax.set_xticklabels([f"{v:g}" for v in sorted(df[x].unique())])
            ax.minorticks_off()
        if col.startswith("lambda"):
            ax.axhline(0, color="k", lw=0.8)
        ax.set_xlabel(x)
        ax.set_ylabel(col)
        if hue is not None and p == 0:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)
