"""The learning-rule contract shared by BPTT and the local rules.

A rule is a small frozen object holding hyperparameters only (immutable: equal rules behave the same). Its one
required method is::

    loss, grads = rule.gradients(model, x, y, mask, loss_fn)

What a rule carries from one call to the next — the adaptive feedback matrix of the local rules, the reward rule's
running baseline and noise generator — is an explicit *rule state*, a ``dict`` of tensors, numbers and
``torch.Generator`` s that the rule creates and returns::

    state = rule.init_state(model)                                       # {} for a stateless rule
    loss, grads, state = rule.update(model, x, y, mask, loss_fn, state)  # pass it back in at the next call

``gradients`` starts from ``init_state(model)`` at every call (so two calls with the same inputs agree).
:func:`init_rule_state` and :func:`update_rule` give any rule — a user's rule with ``gradients`` only included — these
two forms; the trainer checkpoints the state generically (:func:`pack_rule_state`, :func:`unpack_rule_state`).
Capabilities are asked of rule *instances*: ``model_types`` (a subset of ``("rate", "spiking")``), ``online``.

* ``x``: ``(T, B, n_in)`` inputs; ``y``, ``mask``: targets and loss mask as the task returns them.
* ``loss_fn(y_hat, y, mask)``: any differentiable scalar (means or sums).
* ``grads``: ``dict[str, Tensor]`` keyed by ``model.named_parameters()`` names, each the shape of its parameter
  (descent direction is ``-grads``, as with ``.grad``). Parameters a rule does not train are absent.

Local rules obtain ``∂E/∂ŷ`` by autograd on ``ŷ`` alone (:func:`output_error`) and never back-propagate
through the network. Online rules (``online = True``) additionally offer
``init(model, batch_size, n_steps=None, *, initial_state=None) -> state`` (``initial_state``: the model state the
trials start from, when the caller already has it; optional in a user's rule), ``advance(model, record_chunk,
dE_dy_chunk, state) -> state`` and ``read(model, state) -> (grads, state)``; :func:`spikelearn.rules.local.run_online`
drives them, and the trainer's ``update_every_steps`` is reserved for them.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

import torch
from torch import Tensor

Grads = dict[str, Tensor]
LossFn = Callable[[Tensor, Tensor, Tensor], Tensor]
RuleState = dict[str, Any]

__all__ = ["Grads", "LossFn", "RuleState", "LearningRule", "StatelessRule", "apply_gradients", "output_error",
           "zero_grads", "init_rule_state", "update_rule", "pack_rule_state", "unpack_rule_state"]


@runtime_checkable
class LearningRule(Protocol):
    """What every rule offers (see module docstring)."""

    def gradients(self, model: Any, x: Tensor, y: Tensor, mask: Tensor,
                  loss_fn: LossFn) -> tuple[Tensor, Grads]: ...


def output_error(y_hat: Tensor, y: Tensor, mask: Tensor, loss_fn: LossFn) -> tuple[Tensor, Tensor]:
    """``(loss, ∂E/∂ŷ)`` by autograd on the output alone: ``ŷ`` is detached from the network first.

    Returns the detached scalar loss and ``dE_dy`` of shape ``y_hat.shape``.
    """
    y_leaf = y_hat.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(y_leaf, y, mask)
        if loss.dim() != 0:
            raise ValueError(f"loss_fn must return a scalar, got shape {tuple(loss.shape)}")
        (g,) = torch.autograd.grad(loss, y_leaf)
    return loss.detach(), g


def zero_grads(model: Any) -> Grads:
    """A zero gradient for every trainable parameter."""
    return {n: torch.zeros_like(p) for n, p in model.named_parameters() if p.requires_grad}


def apply_gradients(model: Any, grads: Grads, *, accumulate: bool = False) -> None:
    """Write ``grads`` into ``p.grad`` so any ``torch.optim`` optimizer applies them.

    Unknown names or wrong shapes raise ``KeyError``/``ValueError`` naming the parameter; parameters absent
    from ``grads`` get ``grad = None`` (optimizers skip them) unless ``accumulate``.
    """
    params = dict(model.named_parameters())
    unknown = set(grads) - set(params)
    if unknown:
        raise KeyError(f"gradients for unknown parameter(s) {sorted(unknown)}; model has {sorted(params)}")
    for name, p in params.items():
        g = grads.get(name)
        if g is None:
            if not accumulate:
                p.grad = None
            continue
        if g.shape != p.shape:
            raise ValueError(f"gradient for {name!r} has shape {tuple(g.shape)}, parameter has {tuple(p.shape)}")
        g = g.detach().to(dtype=p.dtype, device=p.device)
        if accumulate and p.grad is not None:
            p.grad.add_(g)
        else:
            p.grad = g.clone()


class StatelessRule:
    """Mixin for rules that carry nothing between calls: ``init_state`` is ``{}`` and ``update`` is ``gradients``."""

    stateful = False

    def init_state(self, model: Any) -> RuleState:
        """No state: ``{}``."""
        del model
        return {}

    def update(self, model: Any, x: Tensor, y: Tensor, mask: Tensor, loss_fn: LossFn,
               state: RuleState | None = None) -> tuple[Tensor, Grads, RuleState]:
        """``(loss, grads, state)``: :meth:`gradients` with the (empty) state passed through."""
        loss, grads = self.gradients(model, x, y, mask, loss_fn)  # type: ignore[attr-defined]
        return loss, grads, {} if state is None else state


def init_rule_state(rule: Any, model: Any) -> RuleState:
    """``rule.init_state(model)``, or ``{}`` for a rule without state methods."""
    return rule.init_state(model) if hasattr(rule, "init_state") else {}


def update_rule(rule: Any, model: Any, x: Tensor, y: Tensor, mask: Tensor, loss_fn: LossFn,
                state: RuleState) -> tuple[Tensor, Grads, RuleState]:
    """``rule.update(...)``, or ``gradients`` with the state passed through for a rule without it."""
    if hasattr(rule, "update"):
        return rule.update(model, x, y, mask, loss_fn, state)
    loss, grads = rule.gradients(model, x, y, mask, loss_fn)
    return loss, grads, state


def pack_rule_state(state: RuleState) -> dict:
    """A rule state as something ``torch.save(weights_only=True)`` accepts: generators become their state (nested
    dicts are packed too)."""
    out: dict = {}
    for k, v in state.items():
        if isinstance(v, torch.Generator):
            out[k] = {"generator_state": v.get_state(), "device": str(v.device)}
        elif isinstance(v, dict):
            out[k] = {"nested": pack_rule_state(v)}
        else:
            out[k] = v
    return out


def unpack_rule_state(packed: dict, device: Any = None) -> RuleState:
    """Inverse of :func:`pack_rule_state`; tensors moved to ``device`` (if given)."""
    out: RuleState = {}
    for k, v in packed.items():
        if isinstance(v, dict) and "generator_state" in v:
            g = torch.Generator(device=v["device"])
            g.set_state(v["generator_state"].cpu())
            out[k] = g
        elif isinstance(v, dict) and "nested" in v:
            out[k] = unpack_rule_state(v["nested"], device)
        elif isinstance(v, Tensor) and device is not None:
            out[k] = v.to(device)
        else:
            out[k] = v
    return out
