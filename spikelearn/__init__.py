"""spikelearn: spiking and rate RNNs built from connectivity graphs, trained with BPTT and local rules."""

__version__ = "0.1.0"

from spikelearn.circuit import Circuit, CircuitError  # noqa: E402

__all__ = ["Circuit", "CircuitError", "__version__"]
