"""Neuron dynamics: pure step functions with explicit state.

Symbols (ALGORITHMS.md §1): ``v`` membrane, ``a`` adaptation, ``z`` spikes, ``thr`` adaptive threshold ``A``,
``psi`` pseudo-derivative ``∂z/∂v``, ``ref`` refractory steps left; rate units: ``h`` pre-activation, ``r`` rate.
Shapes are ``(B, N)`` per step; weights are ``(post, pre)``.

* :mod:`~spikelearn.neurons.lif` — LIF/ALIF (``LIFParams``, ``ALIFState``, ``alif_step``; ``alif_constants`` and
  ``alif_recurrent_update``, the step ``SpikingRNN.forward`` loops over).
* :mod:`~spikelearn.neurons.rate` — leaky rate forms R1/R2/R3 (``RateParams``, ``RateState``, ``rate_step``).
* :mod:`~spikelearn.neurons.surrogate` — Heaviside with surrogate derivative (``Surrogate``, ``make_surrogate``).
"""

from spikelearn.neurons.lif import (
    ALIFAux,
    ALIFConstants,
    ALIFState,
    LIFParams,
    alif_constants,
    alif_recurrent_update,
    alif_step,
    alif_step_aux,
    alif_update,
    decay,
    gap_current,
    init_alif_state,
    lif_step,
)
from spikelearn.neurons.rate import (
    ACTIVATIONS,
    RATE_FORMS,
    RateAux,
    RateConstants,
    RateParams,
    RateState,
    activation,
    activation_derivative,
    init_rate_state,
    rate_step,
    rate_step_aux,
    rate_update,
)
from spikelearn.neurons.surrogate import SURROGATES, Surrogate, heaviside, make_surrogate

__all__ = [
    "LIFParams", "ALIFState", "ALIFAux", "ALIFConstants", "alif_step", "alif_step_aux", "alif_update",
    "alif_recurrent_update", "alif_constants", "lif_step", "decay", "gap_current", "init_alif_state",
    "RateParams", "RateState", "RateAux", "RateConstants", "rate_step", "rate_step_aux", "rate_update",
    "activation", "activation_derivative", "ACTIVATIONS", "RATE_FORMS", "init_rate_state",
    "Surrogate", "make_surrogate", "SURROGATES", "heaviside",
]
