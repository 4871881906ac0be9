"""Learning rules: one contract (``loss, grads = rule.gradients(model, x, y, mask, loss_fn)``), a plain registry.

``RULES`` maps a rule's name to its class so tests and configuration files can iterate over all of them.
Each rule class declares ``model_types`` (a subset of ``("rate", "spiking")``): the models it applies to. Every rule
that applies to spiking models handles current-based synapses (``tau_syn_ms > 0``) and ``reset="zero"``.
"""

from spikelearn.rules.base import Grads, LearningRule, LossFn, apply_gradients, output_error, zero_grads
from spikelearn.rules.bptt import BPTT, TruncatedBPTT
from spikelearn.rules.eprop import EProp
from spikelearn.rules.flossing import Flossed
from spikelearn.rules.mdgl import MDGL
from spikelearn.rules.modprop import ModProp
from spikelearn.rules.registry import RULES, make_rule, register
from spikelearn.rules.reward import RewardModulated
from spikelearn.rules.rflo import RFLO

__all__ = ["RULES", "make_rule", "register", "BPTT", "TruncatedBPTT", "EProp", "RFLO", "MDGL", "ModProp", "RewardModulated", "Flossed", "LearningRule", "Grads", "LossFn",
           "apply_gradients", "output_error", "zero_grads"]
