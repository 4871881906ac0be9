r"""Sign-preserving DEEP R rewiring at temperature 0 (Bellec, Kappel, Maass, Legenstein, ICLR 2018,
arXiv:1711.05136), as used by MDGL (ALGORITHMS.md §3.5; source ``rewiring_tools_NP.py``).

Every synapse has a fixed sign ``s`` and a magnitude ``m = s·W ≥ 0``; only an *active* subset of the allowed
positions (the model's mask) is connected. After each optimizer step::

    m ← m − lr·l1                  on active synapses (L1 shrinkage; temperature 0: no noise)
    active synapses with m ≤ 0  → disconnected (weight 0)
    as many inactive allowed positions, drawn uniformly, → connected with m = 0 (they grow if the gradient says so)

so the number of connections of each matrix stays constant and no synapse changes sign. Before the step,
:meth:`DeepR.mask_grads` zeroes the gradients of inactive positions (the model's ``|θ|`` parameterisation would
otherwise let them grow). Usage (the trainer hook)::

    rewire = DeepR(l1=1e-2, seed=0)
    rw_state = rewire.init(model)                          # active sets = the current non-zero weights
    for each iteration:
        loss, grads = rule.gradients(...); apply_gradients(model, grads)
        rewire.mask_grads(model, rw_state)
        optimizer.step()
        rw_state = rewire.step(model, rw_state, lr=optimizer.param_groups[0]["lr"])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from spikelearn.weights import SparseWeights

__all__ = ["DeepR", "DeepRState"]

_KEYS = {"rec": ("theta_rec", "mask_rec", "sign_rec"), "in": ("theta_in", "mask_in", "sign_in"),
         "out": ("theta_out", "mask_out", "sign_out")}


class DeepRState(NamedTuple):
    """Per rewired matrix: the active set (bool, parameter shape) and the fixed synapse signs (±1)."""

    active: dict[str, Tensor]
    sign: dict[str, Tensor]
    n_rewired: int                # connections replaced at the last step (all matrices)
    generator: torch.Generator


@dataclass(frozen=True)
class DeepR:
    """Sign-preserving DEEP R at temperature 0 (module docstring).

    Attributes:
        l1: L1 shrinkage per unit learning rate (the source: 1e-2).
        matrices: which weight matrices to rewire (``"rec"``, ``"in"``, ``"out"``).
        seed: seed of the generator that draws the reconnected positions.
    """

    l1: float = 1e-2
    matrices: tuple[str, ...] = ("rec", "in", "out")
    seed: int = 0

    def __post_init__(self) -> None:
        bad = set(self.matrices) - set(_KEYS)
        if bad:
            raise ValueError(f"DeepR: unknown matrices {sorted(bad)}; choose from {sorted(_KEYS)}")
        if not self.l1 >= 0:  # also NaN
            raise ValueError(f"DeepR: l1 must be >= 0, got {self.l1!r}")

    def _parts(self, model: Any, key: str) -> tuple[Tensor, Tensor, Tensor]:
        p, m, s = _KEYS[key]
        return getattr(model, p), getattr(model, m), getattr(model, s)

    def _magnitude_sign(self, theta: Tensor, S: Tensor, sign: Tensor) -> Tensor:
        """``θ`` expressed as a magnitude: ``θ`` where the model constrains the sign, ``sign·θ`` where it is free."""
        return torch.where(S != 0, theta, sign * theta)

    def _free_signs(self, W: Tensor, active: Tensor, pre: Tensor | None = None, n_pre: int = 0) -> Tensor:
        """Signs of an unconstrained matrix: an active synapse keeps its own; an inactive position takes the sign
        of its presynaptic column when that column's active synapses agree (the neuron acts as E or I), otherwise
        a random ±1 (its own seeded stream, apart from the reconnection draws) — never all +1, which would let
        rewiring turn a mixed matrix excitatory. Per-edge storage: ``W`` ``(nnz,)`` with the edges' presynaptic
        neurons ``pre``."""
        own = torch.where(W < 0, -1.0, 1.0).to(W.dtype)
        if pre is not None:  # per edge: a presynaptic neuron's active edges, by scatter
            z = torch.zeros(n_pre, dtype=torch.long, device=W.device)
            pos = z.index_add(0, pre, ((W > 0) & active).long()) > 0
            neg = z.index_add(0, pre, ((W < 0) & active).long()) > 0
            colsign = torch.where(pos & ~neg, 1.0, torch.where(neg & ~pos, -1.0, 0.0)).to(W.dtype)
            col = colsign.index_select(0, pre)
        else:
            pos = ((W > 0) & active).any(0)
            neg = ((W < 0) & active).any(0)
            col = torch.where(pos & ~neg, 1.0, torch.where(neg & ~pos, -1.0, 0.0)).to(W.dtype).expand_as(W)
        g = torch.Generator(device="cpu").manual_seed(int(self.seed) + 7919)
        rnd = (torch.randint(0, 2, tuple(W.shape), generator=g) * 2 - 1).to(W.dtype).to(W.device)
        return torch.where(active, own, torch.where(col != 0, col, rnd))

    def init(self, model: Any) -> DeepRState:
        """Active sets = current non-zero effective weights; signs = the model's sign or the weight's own sign."""
        if "rec" in self.matrices and getattr(model, "parametrization", "per_edge") != "per_edge":
            raise ValueError("DEEP R rewires per-edge weights; a type-shared parametrisation has no per-edge "
                             "parameter to move (use matrices=('in', 'out') or parametrization='per_edge')")
        eff = model.effective_weights()
        active, sign = {}, {}
        for key in self.matrices:
            theta, M, S = self._parts(model, key)
            W = getattr(eff, {"rec": "W_rec", "in": "W_in", "out": "W_out"}[key]).detach()
            pre = None
            if isinstance(W, SparseWeights):  # per-edge storage: the allowed positions are the stored edges
                pre, W = W.pre, W.values
            active[key] = (W != 0) & (M != 0)
            sign[key] = torch.where(S != 0, S, self._free_signs(W, active[key], pre, model.n))
            with torch.no_grad():  # a constrained θ < 0 is |θ| in the forward: store it as the magnitude
                theta.copy_(torch.where(S != 0, theta.abs(), theta) * active[key])
        g = torch.Generator(device=model.theta_rec.device).manual_seed(int(self.seed))
        return DeepRState(active=active, sign=sign, n_rewired=0, generator=g)

    def mask_grads(self, model: Any, state: DeepRState) -> None:
        """Zero the gradients of inactive positions (call before ``optimizer.step()``)."""
        for key in self.matrices:
            theta, _, _ = self._parts(model, key)
            if theta.grad is not None:
                theta.grad.mul_(state.active[key])

    @torch.no_grad()
    def step(self, model: Any, state: DeepRState, lr: float) -> DeepRState:
        """Shrink, disconnect synapses whose magnitude reached ≤ 0, reconnect as many (call after the step)."""
        total = 0
        for key in self.matrices:
            theta, M, S = self._parts(model, key)
            act, sgn = state.active[key], state.sign[key]
            mag = self._magnitude_sign(theta, S, sgn) - lr * self.l1 * act
            dead = act & (mag <= 0)
            act = act & ~dead
            n_dead = int(dead.sum())
            if n_dead:
                cand = torch.nonzero(((M != 0) & ~act).flatten()).flatten()
                pick = cand[torch.randperm(cand.numel(), generator=state.generator,
                                           device=cand.device)[:n_dead]]
                act = act.flatten().clone()
                act[pick] = True
                act = act.view_as(theta)
            mag = torch.where(act, mag.clamp(min=0), torch.zeros_like(mag))
            theta.copy_(torch.where(S != 0, mag, sgn * mag))
            state.active[key] = act
            total += n_dead
        return state._replace(n_rewired=total)
