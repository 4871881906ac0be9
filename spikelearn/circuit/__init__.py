"""Circuits: network wiring as numpy/scipy data (no torch). Generators and connectome loaders live here."""

from spikelearn.circuit import generators
from spikelearn.circuit.core import Circuit, CircuitError, effective_rank
from spikelearn.circuit.generators import (
    block_model,
    dale,
    erdos_renyi,
    gaussian,
    low_rank,
    low_rank_aligned,
    task_aligned_low_rank,
    truncate_rank,
)

__all__ = [
    "Circuit",
    "CircuitError",
    "effective_rank",
    "generators",
    "gaussian",
    "erdos_renyi",
    "dale",
    "low_rank",
    "low_rank_aligned",
    "task_aligned_low_rank",
    "truncate_rank",
    "block_model",
]
