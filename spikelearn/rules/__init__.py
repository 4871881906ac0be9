"""Learning rules: one contract (``loss, grads = rule.gradients(model, x, y, mask, loss_fn)``), a plain registry.

``RULES`` maps a rule's name to its class so tests and configuration files can iterate over all of them.
"""

from spikelearn.rules.base import Grads, LearningRule, LossFn, apply_gradients, output_error, zero_grads
from spikelearn.rules.bptt import BPTT, TruncatedBPTT
from spikelearn.rules.eprop import EProp
from spikelearn.rules.rflo import RFLO

RULES: dict[str, type] = {
    "bptt": BPTT,
    "tbptt": TruncatedBPTT,
    "eprop": EProp,
    "rflo": RFLO,
}


def make_rule(name: str, **options):
    """Instantiate a registered rule by name; an unknown name lists the registered ones."""
    try:
        cls = RULES[name]
    except KeyError:
        raise ValueError(f"unknown learning rule {name!r}; registered rules: {sorted(RULES)}") from None
    return cls(**options)


__all__ = ["RULES", "make_rule", "BPTT", "TruncatedBPTT", "EProp", "RFLO", "LearningRule", "Grads", "LossFn",
           "apply_gradients", "output_error", "zero_grads"]
