"""spikelearn: spiking and rate RNNs built from connectivity graphs, trained with BPTT and local rules.

Layers (imports flow one way; ``tests/test_import_graph.py`` checks it): ``cli`` -> ``build`` -> ``train``, ``sweep``
-> ``rules`` -> ``models`` -> ``neurons``, ``weights`` -> ``circuit``; ``tasks`` are torch trial generators used by
``build`` and ``train``; ``config`` is the configuration schema and imports nothing of the package.
"""

__version__ = "0.1.0"

from spikelearn import connectomes  # noqa: E402
from spikelearn.circuit import Circuit, CircuitError  # noqa: E402

__all__ = ["Circuit", "CircuitError", "connectomes", "__version__"]
