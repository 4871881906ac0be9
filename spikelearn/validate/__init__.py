"""Validation against Brian2 and neuromorphic export. The only part of spikelearn that imports brian2.

* :func:`compare_with_brian2` — run a :class:`~spikelearn.models.SpikingRNN` in spikelearn and in Brian2 on the
  same input; per-neuron report with a one-line verdict (:class:`ValidationReport`).
* :func:`run_brian2` — the Brian2 network alone; :func:`eprop_brian2` — e-prop as Brian2 synapse equations.
* :func:`to_nir` / :func:`from_nir` — NIR export and import (optional extra ``[nir]``).

Importing this package imports neither brian2 nor nir; they are imported when a function needs them.
"""

from spikelearn.validate.brian2 import (
    TARGETS,
    Brian2Result,
    EPropBrian2Result,
    ExportSpec,
    UnsupportedFeatureError,
    ValidationReport,
    brian2_session,
    compare_with_brian2,
    eprop_brian2,
    export_spec,
    run_brian2,
)
from spikelearn.validate.nir import from_nir, simulate_nir, to_nir

__all__ = [
    "TARGETS",
    "Brian2Result",
    "EPropBrian2Result",
    "ExportSpec",
    "UnsupportedFeatureError",
    "ValidationReport",
    "brian2_session",
    "compare_with_brian2",
    "eprop_brian2",
    "export_spec",
    "run_brian2",
    "to_nir",
    "from_nir",
    "simulate_nir",
]
