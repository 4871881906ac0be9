"""The learning-rule contract shared by BPTT and the local rules.

A rule is a small frozen object holding hyperparameters only. Its one required method is::

    loss, grads = rule.gradients(model, x, y, mask, loss_fn)

* ``x``: ``(T, B, n_in)`` inputs; ``y``, ``mask``: targets and loss mask as the task returns them.
* ``loss_fn(y_hat, y, mask)``: any differentiable scalar (means or sums).
* ``grads``: ``dict[str, Tensor]`` keyed by ``model.named_parameters()`` names, each the shape of its parameter
  (descent direction is ``-grads``, as with ``.grad``). Parameters a rule does not train are absent.

Local rules obtain ``∂E/∂ŷ`` by autograd on ``ŷ`` alone (:func:`output_error`) and never back-propagate
through the network. Online rules (``online = True``) additionally offer
``init(model, batch_size, n_steps=None, *, initial_state=None) -> state`` (``initial_state``: the model state the
trials start from, when the caller already has it; optional in a user's rule), ``advance(model, record_chunk,
dE_dy_chunk, state) -> state`` and ``read(model, state) -> (grads, state)``; :func:`spikelearn.rules.eprop.run_online`
drives them, and the trainer's ``update_every_steps`` is reserved for them.
"""

from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

Grads = dict[str, Tensor]
LossFn = Callable[[Tensor, Tensor, Tensor], Tensor]

__all__ = ["Grads", "LossFn", "LearningRule", "apply_gradients", "output_error", "zero_grads", "rule_state_dict",
           "load_rule_state_dict"]


@runtime_checkable
class LearningRule(Protocol):
    """What every rule offers (see module docstring)."""

    def gradients(self, model: nn.Module, x: Tensor, y: Tensor, mask: Tensor,
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


def zero_grads(model: nn.Module) -> Grads:
    """A zero gradient for every trainable parameter."""
    return {n: torch.zeros_like(p) for n, p in model.named_parameters() if p.requires_grad}


def apply_gradients(model: nn.Module, grads: Grads, *, accumulate: bool = False) -> None:
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


def rule_state_dict(rule: object, model: nn.Module) -> dict:
    """What ``rule`` keeps between calls for ``model`` — the adaptive feedback matrix and its last readout
    snapshot (e-prop, RFLO, MDGL, ModProp with ``feedback = "adaptive"``), the running reward baseline and noise
    generator (RewardModulated) — as a dict of tensors and numbers that ``torch.save(weights_only=True)`` accepts
    (generators as their state). Wrapped rules (``rule.base``) are included. Empty for stateless rules."""
    out: dict = {}
    mem = getattr(rule, "_memory", None)
    if mem is not None and model in mem:
        packed = {}
        for k, v in mem[model].items():
            if isinstance(v, torch.Generator):
                packed[k] = {"generator_state": v.get_state(), "device": str(v.device)}
            else:
                packed[k] = v
        out["memory"] = packed
    for name in _SUB_RULES:  # wrapped rules, and the e-prop / RFLO engines MDGL keeps its feedback in
        sub = getattr(rule, name, None)
        if sub is not None and not isinstance(sub, str):
            inner = rule_state_dict(sub, model)
            if inner:
                out[name] = inner
    return out


_SUB_RULES = ("base", "_eprop", "_rflo")


def load_rule_state_dict(rule: object, model: nn.Module, state: dict) -> None:
    """Restore what :func:`rule_state_dict` saved (tensors moved to the model's device)."""
    p = next(model.parameters())
    if "memory" in state:
        mem = {}
        for k, v in state["memory"].items():
            if isinstance(v, dict) and "generator_state" in v:
                g = torch.Generator(device=v["device"])
                g.set_state(v["generator_state"].cpu())
                mem[k] = g
            elif isinstance(v, Tensor):
                mem[k] = v.to(p.device)
            else:
                mem[k] = v
        rule._memory[model] = mem  # type: ignore[attr-defined]
    for name in _SUB_RULES:
        if name in state:
            load_rule_state_dict(getattr(rule, name), model, state[name])
