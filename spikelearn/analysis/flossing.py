r"""Gradient flossing as an analysis tool: the differentiable exponent loss, its gradients and a flossing loop.

``L(θ) = (1/(B k)) Σ_b Σ_{i≤k} (λ_{b,i}(θ) − λ*)²`` over the k leading per-step exponents of B input-driven
trajectories (ALGORITHMS.md §7.2; Engelken, NeurIPS 2023, arXiv:2312.17306). Two gradients:

* ``mode="autodiff"``: reverse mode through the trajectory, the Jacobian products and the QR decompositions
  (the source's method); flosses ``W_rec``, ``W_in`` and the recurrent bias, never the readout.
* ``mode="local"``: the local flossing rule of §7.3 — **this package's design**, not a published algorithm — the
  exact gradient of the same loss with the trajectory and tangent frames held fixed; post × pre products times a
  global scalar per exponent; updates ``W_rec`` only (formula in :func:`spikelearn.dynamics.local_flossing_grads`).

The machinery lives in :mod:`spikelearn.dynamics` (shared with the rule wrapper :mod:`spikelearn.rules.flossing`);
this module re-exports it and adds :func:`floss`, a flossing loop returning a tidy history.
"""

from __future__ import annotations

from typing import Any, Callable

import pandas as pd
import torch
from torch import Tensor, nn

from spikelearn.dynamics import FlossingConfig, flossing_grads, flossing_loss, local_flossing_grads
from spikelearn.rules.flossing import Flosser, FlossingSchedule

__all__ = ["FlossingConfig", "flossing_loss", "flossing_grads", "local_flossing_grads", "floss", "task_inputs"]


def task_inputs(task: Any, *, dtype: torch.dtype = torch.float32) -> Callable[[int, torch.Generator], Tensor]:
    """``sample_x(batch_size, generator) -> x`` drawing fresh trials of ``task`` (for :func:`floss`)."""
    def sample_x(batch_size: int, generator: torch.Generator) -> Tensor:
        return task.sample(batch_size, generator, dtype=dtype)[0]

    return sample_x


def floss(model: nn.Module, sample_x: Callable[[int, torch.Generator], Tensor], n_steps: int, *,
          config: FlossingConfig = FlossingConfig(), lr: float = 1e-3, batch_size: int = 1, seed: int = 0
          ) -> pd.DataFrame:
    """Run ``n_steps`` flossing steps on ``model`` in place (AdamW, betas (0.9, 0.999), no weight decay), each on a
    fresh input ``sample_x(batch_size, generator)`` (e.g. :func:`task_inputs`).

    Returns:
        one row per step: ``floss_step, floss_loss, floss_lambda_max`` (the exponents *before* the step's update).
    """
    fl = Flosser(model, FlossingSchedule(lr=lr, batch_size=batch_size, config=config), seed=seed)
    return pd.DataFrame(fl.run(n_steps, sample_x))
