r"""Spike-train statistics: firing rate, CV of inter-spike intervals, Fano factor, synchrony, PSTH.

Input spike trains are time-first ``z (T, B, N)`` (a :class:`~spikelearn.models.SpikingRecord`'s ``z``, a tensor or
an array; ``(T, N)`` is read as one trial) with ``dt_ms`` per step. Definitions (per neuron j):

* rate ``ν_j = Σ_{t,b} z / (B T dt)`` in Hz;
* ``CV_j = std(ISI)/mean(ISI)`` over the inter-spike intervals of all trials pooled (intervals never span two
  trials); NaN with fewer than ``min_isis`` intervals;
* Fano factor ``F_j = Σ_w Var_b(n_{w,b}) / Σ_w Mean_b(n_{w,b})`` of spike counts in windows of ``window_ms``
  (variance across trials, pooled over windows: robust to rate modulation by the task); with one trial, the
  variance and mean are taken across windows instead (assumes stationarity). NaN without spikes;
* synchrony (population / cell type): Golomb's ``χ² = Var_t(⟨c⟩_j) / ⟨Var_t(c_j)⟩_j`` of spike counts ``c`` in
  bins of ``bin_ms`` (Golomb & Rinzel 1993, doi:10.1103/PhysRevE.48.4810), averaged over trials: 1 for identical
  trains, ≈ 1/√N for independent ones.

Cell-type rows average the per-neuron rate, CV and Fano over the type's neurons (NaNs skipped; ``n_cv`` and
``n_fano`` say how many neurons had a defined value) and compute χ over its neurons; the population row is named
``"all"``, so no cell type may be called that. Counting windows and bins tile the recording from its start; the last
``T mod w`` steps (an incomplete window) are left out. Spike trains must hold 0/1 (or boolean) values. :class:`SpikeStats` ``.to_frame()`` gives the tidy long table (one row per neuron or type × metric).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch

from spikelearn.models import SpikingRecord

__all__ = ["SpikeStats", "spike_stats", "firing_rates", "cv_isi", "fano_factor", "synchrony", "psth",
           "spike_stats_measurement"]


def as_spikes(z: Any) -> np.ndarray:
    if isinstance(z, SpikingRecord):
        z = z.z
    if isinstance(z, torch.Tensor):
        z = z.detach().cpu().numpy()
    a = np.asarray(z, dtype=np.float64)
    if a.ndim == 2:
        a = a[:, None, :]
    if a.ndim != 3:
        raise ValueError(f"spikes must be (T, B, N) or (T, N), got shape {a.shape}")
    bad = ~((a == 0) | (a == 1))
    if bad.any():
        raise ValueError(f"spikes must be 0/1 (or boolean); {int(bad.sum())} entries are not, e.g. "
                         f"{a[bad][0]!r} at (t, b, n) = {tuple(int(i) for i in np.argwhere(bad)[0])}")
    return a


def _positive(value: float, name: str) -> float:
    """``value`` as a float, if it is a finite number > 0 (else a ValueError naming argument ``name``)."""
    if not (isinstance(value, (int, float, np.floating, np.integer)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _window_steps(ms: float, dt_ms: float, name: str) -> int:
    """``ms`` (a window or bin length, argument ``name``) in steps of ``dt_ms``, at least one step."""
    dt = _positive(dt_ms, "dt_ms")
    return max(1, int(round(_positive(ms, name) / dt)))


def firing_rates(z: Any, dt_ms: float) -> np.ndarray:
    """Per-neuron rate in Hz, ``(N,)``."""
    dt = _positive(dt_ms, "dt_ms")
    a = as_spikes(z)
    T, B, _ = a.shape
    return a.sum((0, 1)) / (B * T * dt * 1e-3)


def _isis(a: np.ndarray) -> list[np.ndarray]:
    """Inter-spike intervals (steps) of every neuron, pooled over trials."""
    N = a.shape[2]
    t_idx, b_idx, n_idx = np.nonzero(a > 0)
    order = np.lexsort((t_idx, b_idx, n_idx))
    t_idx, b_idx, n_idx = t_idx[order], b_idx[order], n_idx[order]
    same = (n_idx[1:] == n_idx[:-1]) & (b_idx[1:] == b_idx[:-1])
    d = np.diff(t_idx)[same]
    owner = n_idx[1:][same]
    return [d[owner == j].astype(np.float64) for j in range(N)]


def cv_isi(z: Any, *, min_isis: int = 2) -> np.ndarray:
    """Per-neuron coefficient of variation of the inter-spike intervals, ``(N,)`` (NaN with fewer than
    ``min_isis`` ≥ 2 intervals)."""
    if isinstance(min_isis, bool) or not isinstance(min_isis, (int, np.integer)) or min_isis < 2:
        raise ValueError(f"min_isis must be an int >= 2 (a CV needs two intervals), got {min_isis!r}")
    a = as_spikes(z)
    cv = np.full(a.shape[2], np.nan)
    for j, d in enumerate(_isis(a)):
        if d.size >= min_isis and d.mean() > 0:
            cv[j] = d.std() / d.mean()
    return cv


def _counts(a: np.ndarray, window_steps: int, name: str) -> np.ndarray:
    T, B, N = a.shape
    W = T // window_steps
    if W < 1:
        raise ValueError(f"{name} ({window_steps} steps) is longer than the {T}-step recording")
    return a[: W * window_steps].reshape(W, window_steps, B, N).sum(1)  # (W, B, N)


def fano_factor(z: Any, dt_ms: float, *, window_ms: float = 100.0) -> np.ndarray:
    """Per-neuron Fano factor of spike counts in windows of ``window_ms`` (module docstring), ``(N,)``."""
    w = _window_steps(window_ms, dt_ms, "window_ms")
    a = as_spikes(z)
    c = _counts(a, w, "window_ms")
    if c.shape[1] >= 2:
        var, mean = c.var(1, ddof=1).sum(0), c.mean(1).sum(0)
    else:
        if c.shape[0] < 2:
            raise ValueError(f"the Fano factor of a single trial needs at least two windows; window_ms = {window_ms} "
                             f"fits {c.shape[0]} into the {a.shape[0]}-step recording")
        var, mean = c[:, 0].var(0, ddof=1), c[:, 0].mean(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mean > 0, var / np.where(mean > 0, mean, 1.0), np.nan)


def synchrony(z: Any, dt_ms: float, *, bin_ms: float = 5.0, neurons: Sequence[int] | np.ndarray | None = None
              ) -> float:
    """Golomb's synchrony ``χ`` of a population (module docstring), averaged over the trials in which some neuron
    varies; NaN if none does (or ``neurons`` is empty)."""
    w = _window_steps(bin_ms, dt_ms, "bin_ms")
    a = as_spikes(z)
    if neurons is not None:
        a = a[:, :, np.asarray(neurons, dtype=np.intp)]
    if a.shape[2] == 0:
        return math.nan
    c = _counts(a, w, "bin_ms")  # (W, B, N)
    if c.shape[0] < 2:
        raise ValueError(f"synchrony needs at least two bins; bin_ms = {bin_ms} fits {c.shape[0]} into the "
                         f"{a.shape[0]}-step recording")
    pop_var = c.mean(2).var(0)          # (B,)
    ind_var = c.var(0).mean(1)          # (B,)
    ok = ind_var > 0
    if not ok.any():
        return math.nan
    return float(np.sqrt(np.mean(pop_var[ok] / ind_var[ok])))


def psth(z: Any, dt_ms: float, *, bin_ms: float = 10.0, cell_types: Sequence[str] | None = None) -> pd.DataFrame:
    """Peri-stimulus time histogram (trial-averaged population rate, Hz) per cell type.

    Returns a tidy frame with columns ``t_ms`` (bin start), ``cell_type`` (``"all"`` plus each type) and ``rate_hz``.
    """
    w = _window_steps(bin_ms, dt_ms, "bin_ms")
    a = as_spikes(z)
    T, B, N = a.shape
    c = _counts(a, w, "bin_ms")  # (W, B, N)
    t = np.arange(c.shape[0]) * w * dt_ms
    groups: dict[str, np.ndarray] = {"all": np.arange(N)}
    if cell_types is not None:
        ct = _type_names(cell_types, N)
        for name in dict.fromkeys(ct.tolist()):
            groups[name] = np.flatnonzero(ct == name)
    frames = [pd.DataFrame({"t_ms": t, "cell_type": name,
                            "rate_hz": c[:, :, idx].mean((1, 2)) / (w * dt_ms * 1e-3)})
              for name, idx in groups.items()]
    return pd.concat(frames, ignore_index=True)


@dataclass(frozen=True)
class SpikeStats:
    """Per-neuron and per-type spike statistics (:func:`spike_stats`).

    Attributes:
        per_neuron: wide frame, one row per neuron: ``neuron, cell_type, rate_hz, cv_isi, fano, n_spikes``.
        per_type: wide frame, one row per cell type and one ``"all"`` row: ``cell_type, n_neurons, rate_hz,
            cv_isi, fano, synchrony, n_cv, n_fano`` (means over neurons, NaNs skipped; ``n_cv``/``n_fano``: neurons
            with a defined CV / Fano factor; χ over the group).
    """

    per_neuron: pd.DataFrame
    per_type: pd.DataFrame

    def to_frame(self) -> pd.DataFrame:
        """Tidy long table: ``scope`` (``"neuron"``/``"cell_type"``), ``neuron`` (NaN for groups), ``cell_type``,
        ``metric``, ``value``."""
        n = self.per_neuron.melt(id_vars=["neuron", "cell_type"], var_name="metric", value_name="value")
        n.insert(0, "scope", "neuron")
        t = self.per_type.melt(id_vars=["cell_type"], var_name="metric", value_name="value")
        t.insert(0, "scope", "cell_type")
        t.insert(1, "neuron", np.nan)
        return pd.concat([n, t], ignore_index=True)


def spike_stats(z: Any, dt_ms: float, *, cell_types: Sequence[str] | None = None, window_ms: float = 100.0,
                bin_ms: float = 5.0, min_isis: int = 2) -> SpikeStats:
    """All spike statistics of ``z (T, B, N)`` per neuron and per cell type (module docstring).

    Args:
        z: spikes ``(T, B, N)`` (or ``(T, N)``, or a SpikingRecord). dt_ms: step.
        cell_types: ``(N,)`` type names (e.g. ``model.circuit.cell_types``); default one type ``"all"``.
        window_ms: Fano counting window. bin_ms: synchrony bin. min_isis: fewest intervals for a CV.
    """
    a = as_spikes(z)
    N = a.shape[2]
    ct = np.asarray(["all"] * N, dtype=object) if cell_types is None else _type_names(cell_types, N)
    per = pd.DataFrame({"neuron": np.arange(N), "cell_type": ct, "rate_hz": firing_rates(a, dt_ms),
                        "cv_isi": cv_isi(a, min_isis=min_isis), "fano": fano_factor(a, dt_ms, window_ms=window_ms),
                        "n_spikes": a.sum((0, 1))})
    groups: dict[str, np.ndarray] = {"all": np.arange(N)}
    for name in dict.fromkeys(ct.tolist()):
        if name != "all":
            groups[name] = np.flatnonzero(ct == name)
    rows = []
    for name, idx in groups.items():
        sub = per.iloc[idx]
        rows.append({"cell_type": name, "n_neurons": len(idx), "rate_hz": sub["rate_hz"].mean(),
                     "cv_isi": _nanmean(sub["cv_isi"]), "fano": _nanmean(sub["fano"]),
                     "synchrony": synchrony(a, dt_ms, bin_ms=bin_ms, neurons=idx),
                     "n_cv": int(np.isfinite(sub["cv_isi"]).sum()), "n_fano": int(np.isfinite(sub["fano"]).sum())})
    return SpikeStats(per_neuron=per, per_type=pd.DataFrame(rows))


def _type_names(cell_types: Sequence[str], n: int) -> np.ndarray:
    ct = np.asarray([str(s) for s in cell_types], dtype=object)
    if ct.shape != (n,):
        raise ValueError(f"cell_types must have {n} entries (one per neuron), got {ct.shape}")
    if (ct == "all").any():
        raise ValueError(f"cell_types: the name 'all' is reserved for the population row; neurons "
                         f"{np.flatnonzero(ct == 'all')[:10].tolist()} use it — rename that type")
    return ct


def _nanmean(s: pd.Series) -> float:
    v = s.to_numpy(dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else math.nan


def spike_stats_measurement(batch_size: int = 8, seed: int = 12345, **kwargs: Any
                            ) -> Callable[[Any, Any, int], dict[str, float]]:
    """A trainer measurement hook ``fn(model, task, iteration)`` returning the ``"all"``-row statistics
    (``rate_hz, cv_isi, fano, synchrony``) of a spiking model on one fixed batch of task trials."""
    cache: dict[str, Any] = {}

    def fn(model: Any, task: Any, iteration: int) -> dict[str, float]:
        del iteration
        p = next(model.parameters())
        if "x" not in cache:
            cache["x"] = task.sample(batch_size, torch.Generator().manual_seed(seed), dtype=torch.float64)[0]
        with torch.no_grad():
            rec = model(cache["x"].to(dtype=p.dtype, device=p.device), record=True).record
        st = spike_stats(rec.z, float(model.dt_ms), **kwargs).per_type
        row = st[st["cell_type"] == "all"].iloc[0]
        return {k: float(row[k]) for k in ("rate_hz", "cv_isi", "fano", "synchrony")}

    return fn
