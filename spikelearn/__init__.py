"""spikelearn: spiking and rate RNNs built from connectivity graphs, trained with BPTT and local rules.

Layers (imports flow one way): ``cli`` -> ``train`` -> ``rules`` -> ``models`` -> ``neurons`` -> ``circuit``;
``tasks`` are torch trial generators used by ``train``.
"""

__version__ = "0.1.0"

from spikelearn import connectomes  # noqa: E402
from spikelearn.circuit import Circuit, CircuitError  # noqa: E402

__all__ = ["Circuit", "CircuitError", "connectomes", "__version__"]
