"""Back-propagation through time and its truncated variants (ALGORITHMS.md §6).

BPTT reads the model's output only; the spike nonlinearity's backward is the surrogate ψ of the model.
Truncated BPTT:

* ``mode="chunked"``: the state is detached every ``k`` steps and each chunk's loss is back-propagated within
  the chunk. Implemented with O(k N) activation memory: one forward without graph gives the chunk-start states
  and ``∂E/∂ŷ``; each chunk is then re-run from its (detached) start state and back-propagated with its slice
  of ``∂E/∂ŷ``. Time: two forward passes and one backward.
* ``mode="sliding"`` (Williams & Peng k1 = 1, k2 = k): the loss at step t is back-propagated through at most
  ``k`` steps (steps t−k+1 … t). Time O(T k) steps; for tests and small models.

With ``k ≥ T`` both equal BPTT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from spikelearn.rules.base import Grads, LossFn, StatelessRule, output_error
from spikelearn.rules.registry import register

__all__ = ["BPTT", "TruncatedBPTT"]


def _trainable(model: Any) -> tuple[list[str], list[nn.Parameter]]:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [n for n, _ in named], [p for _, p in named]


def _detach_state(state):
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.detach()
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        return type(state)(*(_detach_state(s) for s in state))  # type: ignore[call-arg]
    if isinstance(state, (tuple, list)):
        return type(state)(_detach_state(s) for s in state)  # type: ignore[call-arg]
    return state


@register("bptt")
@dataclass(frozen=True)
class BPTT(StatelessRule):
    """Exact gradient by autograd through the unrolled network (surrogate gradient for spikes).

    Reads: ``out.y`` only. Updates: every trainable parameter.
    """

    online = False
    model_types = ("rate", "spiking")

    def gradients(self, model: Any, x: Tensor, y: Tensor, mask: Tensor,
                  loss_fn: LossFn) -> tuple[Tensor, Grads]:
        names, params = _trainable(model)
        with torch.enable_grad():
            out = model(x)
            loss = loss_fn(out.y, y, mask)
            g = torch.autograd.grad(loss, params, allow_unused=True)
        return loss.detach(), {n: torch.zeros_like(p) if gi is None else gi for n, p, gi in zip(names, params, g)}


@register("tbptt")
@dataclass(frozen=True)
class TruncatedBPTT(StatelessRule):
    """Truncated BPTT with truncation length ``k`` steps; ``mode`` "chunked" or "sliding" (see module doc)."""

    k: int
    mode: Literal["chunked", "sliding"] = "chunked"
    online = False
    model_types = ("rate", "spiking")

    def __post_init__(self) -> None:
        if not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"TruncatedBPTT: k must be a positive integer, got {self.k!r}")
        if self.mode not in ("chunked", "sliding"):
            raise ValueError(f"TruncatedBPTT: mode must be 'chunked' or 'sliding', got {self.mode!r}")

    def gradients(self, model: Any, x: Tensor, y: Tensor, mask: Tensor,
                  loss_fn: LossFn) -> tuple[Tensor, Grads]:
        names, params = _trainable(model)
        T = x.shape[0]
        k = min(self.k, T)
        # Pass 1 (no graph): states at every step boundary we need and dE/dy for all steps.
        starts = list(range(0, T, k)) if self.mode == "chunked" else list(range(T))
        keep = set(starts) if self.mode == "chunked" else {max(0, t - k + 1) for t in range(T)}
        states: dict[int, object] = {0: None}
        ys = []
        with torch.no_grad():
            state = None
            bounds = sorted(keep | {T})
            for a, b in zip(bounds[:-1], bounds[1:]):
                states[a] = state
                out = model(x[a:b], state=state)
                ys.append(out.y)
                state = out.state
        loss, dE_dy = output_error(torch.cat(ys), y, mask, loss_fn)
        total = [torch.zeros_like(p) for p in params]
        with torch.enable_grad():
            if self.mode == "chunked":
                for a in starts:
                    b = min(a + k, T)
                    out = model(x[a:b], state=_detach_state(states[a]))
                    g = torch.autograd.grad(out.y, params, grad_outputs=dE_dy[a:b], allow_unused=True)
                    total = [t if gi is None else t + gi for t, gi in zip(total, g)]
            else:
                for t in range(T):
                    a = max(0, t - k + 1)
                    out = model(x[a:t + 1], state=_detach_state(states[a]))
                    g = torch.autograd.grad(out.y[-1], params, grad_outputs=dE_dy[t], allow_unused=True)
                    total = [tt if gi is None else tt + gi for tt, gi in zip(total, g)]
        return loss, dict(zip(names, total))
