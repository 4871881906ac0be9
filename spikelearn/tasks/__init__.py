"""Trial generators for the benchmark tasks (ALGORITHMS.md §10).

Every task is a frozen dataclass with ``n_in``, ``n_out``, ``n_steps`` (T), ``dt_ms``, ``kind``
("classification" | "regression"), ``encoding`` ("analog" | "bernoulli" | "poisson"; a field where a task offers
both spike encodings, ALGORITHMS.md §11 item 3) and

* ``sample(batch_size, generator, *, dtype=torch.float32, device=None) -> (x, y, mask)``, time-first:
  ``x (T, B, n_in)``; ``y`` int64 ``(T, B)`` or float ``(T, B, n_out)``; ``mask (T, B)``;
* ``sample_with_info(...)`` -> :class:`Trials` with the latent variables in ``info``;
* ``loss(y_hat, y, mask)`` and ``accuracy(y_hat, y, mask)``.

All randomness comes from the ``torch.Generator`` passed to ``sample``. Test-time input noise:
``dataclasses.replace(task, input_noise_std=0.2)``.

Example::

    import torch
    from spikelearn.tasks import make_task

    task = make_task("evidence_accumulation", n_cues=3, delay_ms=200.0)
    x, y, mask = task.sample(8, torch.Generator().manual_seed(0))
    assert x.shape == (task.n_steps, 8, task.n_in)
"""

from __future__ import annotations

import dataclasses
from typing import Any

from spikelearn.tasks.base import (
    Task,
    Trials,
    bernoulli_spikes,
    classification_loss,
    poisson_spikes,
    regression_loss,
    regression_score,
)
from spikelearn.tasks.digits import SequentialDigits
from spikelearn.tasks.evidence import EvidenceAccumulation, EvidenceAccumulationMDGL
from spikelearn.tasks.neurogym_like import (
    ContextDecisionMaking,
    DelayedMatchToSample,
    PerceptualDecisionMaking,
)
from spikelearn.tasks.patterns import PatternGeneration
from spikelearn.tasks.store_recall import StoreRecall
from spikelearn.tasks.xor import DelayedXOR, HierarchicalDelayedXOR

__all__ = [
    "TASKS",
    "ContextDecisionMaking",
    "DelayedMatchToSample",
    "DelayedXOR",
    "EvidenceAccumulation",
    "EvidenceAccumulationMDGL",
    "HierarchicalDelayedXOR",
    "PatternGeneration",
    "PerceptualDecisionMaking",
    "SequentialDigits",
    "StoreRecall",
    "Task",
    "Trials",
    "bernoulli_spikes",
    "classification_loss",
    "make_task",
    "poisson_spikes",
    "regression_loss",
    "regression_score",
]

TASKS: dict[str, type[Task]] = {
    "evidence_accumulation": EvidenceAccumulation,
    "evidence_accumulation_mdgl": EvidenceAccumulationMDGL,
    "pattern_generation": PatternGeneration,
    "delayed_match_to_sample": DelayedMatchToSample,
    "perceptual_decision_making": PerceptualDecisionMaking,
    "context_decision_making": ContextDecisionMaking,
    "delayed_xor": DelayedXOR,
    "hierarchical_delayed_xor": HierarchicalDelayedXOR,
    "sequential_digits": SequentialDigits,
    "store_recall": StoreRecall,
}


def make_task(name: str, **kwargs: Any) -> Task:
    """Build the task registered as ``name`` with field overrides ``kwargs``.

    Raises:
        ValueError: unknown ``name`` (the message lists the available names), unknown field names, or invalid
            values (the message names the field).
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; available: {', '.join(sorted(TASKS))}")
    cls = TASKS[name]
    assert dataclasses.is_dataclass(cls)  # every registered task is a dataclass
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for task {name!r}; valid: {', '.join(sorted(fields))}"
        )
    return cls(**kwargs)
