r"""Gradient flossing for any learning rule (ALGORITHMS.md §7.2–7.3).

Flossing (Engelken, NeurIPS 2023, arXiv:2312.17306) pushes the k leading Lyapunov exponents of the network's
input-driven dynamics towards ``λ* = 0`` by descending ``L = (1/k) Σ_{i≤k} (λ_i − λ*)²``; the exponents come from
the QR method of :mod:`spikelearn.dynamics`. Two ways to use it here:

* :class:`Flosser` — the separate flossing optimiser of the source (AdamW, lr 1e-3, betas (0.9, 0.999), no
  weight decay; fresh input per step) for the **schedules**: *pre-flossing* (``pre_steps`` flossing steps before
  training) and *inter-flossing* (``steps`` flossing steps after every ``every``-th iteration, at most
  ``max_times`` times). :class:`FlossingSchedule` holds the numbers; the trainer calls :meth:`Flosser.pre_floss`
  before iteration 1 and :meth:`Flosser.after_iteration` after every iteration.
* :class:`Flossed` — a rule wrapper adding ``weight · ∇L`` to the gradients of **any** rule at every call
  (flossing as a regulariser on the task batch).

``FlossingConfig.mode`` picks the gradient: ``"autodiff"`` (Engelken: reverse mode through trajectory, Jacobian
products and QR) or ``"local"`` — **this package's design** of a biologically plausible flossing rule (§7.3 option
2; the published bio-plausible variant, Zhang, Liu & Liu 2024, arXiv:2410.11164, is not specified anywhere we could
read): with the trajectory and tangent frames held fixed, ``ΔW_rec[j,i] ∝ −Σ_l (λ_l − λ*) Σ_t u_{t,l,j} p_{t,l,i}``,
a post × pre product of the tangent-space activity modulated by a global scalar per exponent (for k = 1:
``−λ_1 Σ_t ĝ_{t,j} γ f'(h_i^{t-1}) q_{t-1,i}/||g_t||``). It updates ``W_rec`` only. Bio-plausible rules (e-prop,
RFLO, MDGL) can thus be flossed either *developmentally* (pre-flossing with ``pre_mode="autodiff"`` before training
only; the rule itself stays local) or with the local rule during training (inter-flossing with
``config.mode="local"``, or ``Flossed(rule, FlossingConfig(mode="local"))``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from spikelearn.dynamics import FlossingConfig, dynamics_parameters, flossing_grads
from spikelearn.rules.base import Grads, LossFn, RuleState, init_rule_state, update_rule
from spikelearn.rules.registry import make_rule, register

__all__ = ["FlossingConfig", "FlossingSchedule", "Flosser", "Flossed", "flossing_gradients"]


def flossing_gradients(model: Any, x: Tensor, config: FlossingConfig = FlossingConfig(),
                       state0: Any = None) -> tuple[Tensor, Grads]:
    """``(L, grads)`` of one flossing step on input ``x (T, B, n_in)`` (readout parameters excluded)."""
    loss, grads, _ = flossing_grads(model, x, state0, config)
    return loss, grads


@dataclass(frozen=True)
class FlossingSchedule:
    """When to floss (Engelken's example: ``pre_steps = 50``, ``every = 10``, ``steps = 50``, ``max_times = 2``).

    Semantics (for the trainer): before iteration 1 run ``pre_steps`` flossing steps with gradient mode
    ``pre_mode`` (default ``config.mode``; ``"autodiff"`` = developmental pre-flossing for local rules); after
    iteration ``it`` run :meth:`steps_after` ``(it)`` steps with ``config.mode`` (``steps`` when ``every > 0``,
    ``it % every == 0`` and ``it // every ≤ max_times``; ``max_times = 0`` means no limit). Each flossing step draws
    a fresh input batch of ``batch_size`` task trials. :meth:`Flosser.pre_floss` and :meth:`Flosser.after_iteration`
    implement exactly this. Pre-flossing steps use learning rate ``lr``, inter-flossing steps ``inter_lr``
    (``None``: ``lr``); both share one AdamW state (its moment estimates carry over from pre- to inter-flossing).
    """

    pre_steps: int = 0
    every: int = 0
    steps: int = 0
    max_times: int = 2
    batch_size: int = 1
    lr: float = 1e-3
    config: Any = field(default_factory=FlossingConfig)
    pre_mode: str | None = None
    inter_lr: float | None = None

    def __post_init__(self) -> None:
        for name in ("pre_steps", "every", "steps", "max_times", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"FlossingSchedule.{name} must be a non-negative int, got {v!r}")
        if self.batch_size < 1:
            raise ValueError("FlossingSchedule.batch_size must be >= 1")
        if not self.lr > 0:
            raise ValueError(f"FlossingSchedule.lr must be > 0, got {self.lr}")
        if self.inter_lr is not None and not self.inter_lr > 0:
            raise ValueError(f"FlossingSchedule.inter_lr must be > 0 or None (= lr), got {self.inter_lr}")
        if isinstance(self.config, dict):
            object.__setattr__(self, "config", FlossingConfig(**self.config))
        if self.pre_mode not in (None, "autodiff", "local"):
            raise ValueError(f"FlossingSchedule.pre_mode must be None, 'autodiff' or 'local', got {self.pre_mode!r}")

    def steps_after(self, iteration: int) -> int:
        """Flossing steps to run after training iteration ``iteration`` (1-based)."""
        if self.every <= 0 or self.steps <= 0 or iteration % self.every:
            return 0
        if self.max_times and iteration // self.every > self.max_times:
            return 0
        return self.steps


class Flosser:
    """Runs flossing steps on ``model`` with its own AdamW optimiser over the dynamics parameters.

    Args:
        model: any package model. schedule: :class:`FlossingSchedule` (lr, batch size, flossing config).
        seed: seed of the flossing input generator.

    ``run(n, sample_x)`` performs ``n`` steps, each on a fresh input ``sample_x(batch_size, generator)``
    (e.g. ``lambda b, g: task.sample(b, g, dtype=dtype)[0]``), and returns one dict per step
    (``floss_step, floss_loss, floss_lambda_max``). ``state_dict()`` / ``load_state_dict()`` checkpoint the
    optimiser, the generator and the step count.
    """

    def __init__(self, model: Any, schedule: FlossingSchedule = FlossingSchedule(), *, seed: int = 0):
        self.model, self.schedule = model, schedule
        params = dict(model.named_parameters())
        self.names = dynamics_parameters(model)
        self.optimizer = torch.optim.AdamW([params[n] for n in self.names], lr=schedule.lr, betas=(0.9, 0.999),
                                           weight_decay=0.0)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.n_steps = 0

    def step(self, x: Tensor, mode: str | None = None) -> dict[str, float]:
        """One flossing step on input ``x (T, B, n_in)`` (gradient ``mode``, default ``config.mode``)."""
        cfg = self.schedule.config if mode is None else self.schedule.config._replace(mode=mode)
        loss, grads, lam = flossing_grads(self.model, x, None, cfg)
        bad = [n for n, g in grads.items() if not torch.isfinite(g).all()]
        if not torch.isfinite(loss) or bad:
            raise ValueError(
                f"flossing step {self.n_steps + 1}: non-finite flossing loss/gradient ({float(loss)}; parameters "
                f"{bad}) — the tangent map is singular along the trajectory (an exponent is -inf, e.g. every ReLU "
                f"unit silent at some step), so it cannot be pushed towards {cfg.target}. Use a smooth activation, "
                f"fewer exponents k, or no flossing; the model was left unchanged")
        params = dict(self.model.named_parameters())
        self.optimizer.zero_grad(set_to_none=True)
        for n in self.names:
            if n in grads:
                params[n].grad = grads[n].detach().to(params[n].dtype).clone()
        self.optimizer.step()
        self.n_steps += 1
        return {"floss_step": self.n_steps, "floss_loss": float(loss), "floss_lambda_max": float(lam.max(1)[0].mean())}

    def run(self, n_steps: int, sample_x: Callable[[int, torch.Generator], Tensor], mode: str | None = None,
            lr: float | None = None) -> list[dict[str, float]]:
        """``n_steps`` flossing steps, each on a fresh input batch (see class docstring), at learning rate ``lr``
        (default ``schedule.lr``)."""
        for group in self.optimizer.param_groups:
            group["lr"] = float(self.schedule.lr if lr is None else lr)
        p = next(self.model.parameters())
        rows = []
        for _ in range(int(n_steps)):
            x = sample_x(self.schedule.batch_size, self.generator).to(dtype=p.dtype, device=p.device)
            rows.append(self.step(x, mode))
        return rows

    def pre_floss(self, sample_x: Callable[[int, torch.Generator], Tensor]) -> list[dict[str, float]]:
        """Pre-flossing: ``schedule.pre_steps`` steps with ``schedule.pre_mode`` at ``schedule.lr``; call before
        iteration 1."""
        return self.run(self.schedule.pre_steps, sample_x, self.schedule.pre_mode)

    def after_iteration(self, iteration: int, sample_x: Callable[[int, torch.Generator], Tensor]
                        ) -> list[dict[str, float]]:
        """Inter-flossing: ``schedule.steps_after(iteration)`` steps (often none) at ``schedule.inter_lr``; call
        after each iteration."""
        return self.run(self.schedule.steps_after(iteration), sample_x, lr=self.schedule.inter_lr)

    def state_dict(self) -> dict[str, Any]:
        """A snapshot (deep copy: later steps do not change it)."""
        return copy.deepcopy({"optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
                              "n_steps": self.n_steps})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.n_steps = int(state["n_steps"])


@register("flossed")
@dataclass(frozen=True)
class Flossed:
    """Wrap any rule: ``grads = base.gradients(...) + weight · ∇L_floss`` at every call.

    The flossing gradient is computed on the first ``n_trajectories`` trials of the task batch ``x`` (from the
    model's initial state), with ``config`` (mode ``"autodiff"`` or ``"local"``). Reads: what ``base`` reads, plus
    the tangent dynamics of the run. Updates: what ``base`` updates, plus the dynamics parameters (``"autodiff"``:
    ``W_rec``, ``W_in``, biases; ``"local"``: ``W_rec``). The returned loss is the base rule's task loss.

    Attributes:
        base: a rule object, or the name of a registered rule (built once with ``base_options``), so that
            configuration files can write ``rule = "flossed"``, ``base = "rflo"``.
        config: :class:`FlossingConfig` or a dict of its fields. weight: factor on the flossing gradient.
        n_trajectories: trials of the batch used for the flossing gradient.

    Only the whole-trial form ``gradients`` is offered (``online = False``), whatever ``base`` is.
    """

    base: Any = "bptt"
    config: Any = field(default_factory=FlossingConfig)
    weight: float = 1.0
    n_trajectories: int = 1
    base_options: dict = field(default_factory=dict, compare=False)  # already part of ``base`` (a built rule)

    online = False

    def __post_init__(self) -> None:
        if isinstance(self.base, str):
            object.__setattr__(self, "base", make_rule(self.base, **self.base_options))
        elif self.base_options:
            raise ValueError("Flossed: base_options only apply when base is a rule name")
        if isinstance(self.config, dict):
            object.__setattr__(self, "config", FlossingConfig(**self.config))
        if not isinstance(self.config, FlossingConfig):
            raise TypeError(f"Flossed: config must be a FlossingConfig or a dict, got {type(self.config).__name__}")
        if int(self.n_trajectories) < 1:
            raise ValueError(f"Flossed: n_trajectories must be >= 1, got {self.n_trajectories}")

    @property
    def model_types(self) -> tuple[str, ...]:
        """The base rule's model types."""
        return tuple(getattr(self.base, "model_types", ("rate", "spiking")))

    @property
    def stateful(self) -> bool:
        """Whether the base rule carries state between calls."""
        return bool(getattr(self.base, "stateful", False))

    def init_state(self, model: Any) -> RuleState:
        """The base rule's state (flossing itself carries none)."""
        return init_rule_state(self.base, model)

    def gradients(self, model: Any, x: Tensor, y: Tensor, mask: Tensor,
                  loss_fn: LossFn) -> tuple[Tensor, Grads]:
        """``(loss, grads)`` from the base rule's initial state (see :meth:`update`)."""
        loss, grads, _ = self.update(model, x, y, mask, loss_fn)
        return loss, grads

    def update(self, model: Any, x: Tensor, y: Tensor, mask: Tensor, loss_fn: LossFn,
               state: RuleState | None = None) -> tuple[Tensor, Grads, RuleState]:
        """The base rule's ``(loss, grads, state)`` with ``weight · ∇L_floss`` added to the gradients."""
        state = self.init_state(model) if state is None else state
        loss, grads, state = update_rule(self.base, model, x, y, mask, loss_fn, state)
        if self.weight == 0:
            return loss, grads, state
        _, fg, _ = flossing_grads(model, x[:, : self.n_trajectories], None, self.config)
        out = dict(grads)
        for n, g in fg.items():
            out[n] = out[n] + self.weight * g if n in out else self.weight * g
        return loss, out, state
