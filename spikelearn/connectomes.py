"""Public entry point for the shipped connectomes: ``spikelearn.connectomes.load(name, **options)``.

A thin re-export of :mod:`spikelearn.circuit.connectomes`; see there for the loaders, their options and the
conventions. ``available()`` lists the connectomes with organism, counts, licence and citation.

Example::

    import spikelearn.connectomes as sc
    sc.available()[["name", "neurons", "edges"]]
    worm = sc.load("celegans_varshney2011", signs="gaba_inhibitory")
"""

from spikelearn.circuit.connectomes import (
    available,
    celegans_neuron_class,
    celegans_varshney2011,
    drosophila_optic_lobe,
    hex_columns,
    load,
    loader,
    mouse_v1,
    names,
)

__all__ = [
    "available",
    "load",
    "names",
    "loader",
    "celegans_varshney2011",
    "mouse_v1",
    "drosophila_optic_lobe",
    "celegans_neuron_class",
    "hex_columns",
]
