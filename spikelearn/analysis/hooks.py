"""Measurement hooks addressable by import path, for ``[[measurements]]`` tables of run and sweep files.

Every hook is ``fn(model, task, iteration, **options) -> float | dict[str, float]``; a hook that needs the model
as it was built declares the keyword ``initial_model`` and the trainer passes a frozen copy
(:class:`spikelearn.train.Measurement`). Options are plain TOML values (numbers, strings, lists), so a hook
travels to sweep workers as text::

    [[measurements]]
    name = "dW"
    fn = "spikelearn.analysis.hooks:weight_change"
    every = 100
"""

from __future__ import annotations

from typing import Any, Sequence

from torch import nn

from spikelearn.analysis.regime import model_weight_change

__all__ = ["weight_change"]


def weight_change(model: nn.Module, task: Any, iteration: int, *, initial_model: nn.Module,
                  which: Sequence[str] = ("W_rec",)) -> dict[str, float]:
    """Absolute (Frobenius) and relative change of the effective weights since the model was built, per matrix
    in ``which`` (whole matrix, no cell-type breakdown): keys ``"<W>.abs"`` and ``"<W>.rel"``."""
    del task, iteration
    df = model_weight_change(initial_model, model, which=tuple(which), by_cell_type=False)
    out: dict[str, float] = {}
    for _, r in df.iterrows():
        out[f"{r['weight']}.abs"] = float(r["abs_change"])
        out[f"{r['weight']}.rel"] = float(r["rel_change"])
    return out
