"""Delayed XOR tasks (ALGORITHMS.md §10.6).

* :class:`DelayedXOR` — the ModProp "delayed XOR" (Liu et al. NeurIPS 2022, arXiv:2206.01338), analog inputs.
* :class:`HierarchicalDelayedXOR` — the gradient-flossing hierarchical delayed XOR / copy task (Engelken,
  NeurIPS 2023, arXiv:2312.17306).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from spikelearn.tasks.base import Task, Trials, check, ms_to_steps

__all__ = ["DelayedXOR", "HierarchicalDelayedXOR"]


@dataclass(frozen=True)
class DelayedXOR(Task):
    """ModProp delayed XOR ("match") task with two analog channels.

    Trial: ``fixation_ms`` (default 0) + cue window ``cue_ms`` + ``delay_ms`` + cue window ``cue_ms``
    (defaults 0 + 100 + 700 + 100 = 900 steps). Both channels sit at ``baseline``; bit a adds a Gaussian bump
    ``bump_amplitude · exp(−s²/(2 bump_std_ms²))`` to channel 0 in the first cue window if a = 1, and bit b adds
    it to channel 1 in the last cue window (the last ``cue_ms`` of the trial) if b = 1. As in the source, the bump
    is sampled at ``cue_ms/dt_ms`` points evenly spaced over ``s ∈ [−cue_ms/2, cue_ms/2]`` (``linspace``), which
    reconciles "s = −50..50" with a 100-step window: the two end points are included and the spacing is 100/99 ms.
    Then ``N(0, noise_std²)`` is added to every sample (part of the task, independent of ``input_noise_std``).

    Label: 1 iff a = b (XNOR / "match"), 0 otherwise, tiled over all steps. Mask and accuracy: last step
    (the network answers while b is still being shown, as in the source). Outputs: 2 logits.

    ``info``: ``bits (B, 2)`` int64 (a, b), ``label (B,)``.
    """

    kind: ClassVar[str] = "classification"
    encoding: ClassVar[str] = "analog"

    fixation_ms: float = 0.0
    cue_ms: float = 100.0
    delay_ms: float = 700.0
    baseline: float = 0.02
    bump_amplitude: float = 2.0
    bump_std_ms: float = 25.0
    noise_std: float = 0.01
    dt_ms: float = 1.0
    input_noise_std: float = 0.0

    @property
    def n_in(self) -> int:
        return 2

    @property
    def n_out(self) -> int:
        return 2

    @property
    def n_steps(self) -> int:
        return ms_to_steps(self.fixation_ms + 2 * self.cue_ms + self.delay_ms, self.dt_ms, "trial duration")

    def cue_windows(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """Step ranges ``[start, stop)`` of the a-cue (channel 0) and the b-cue (channel 1)."""
        f = ms_to_steps(self.fixation_ms, self.dt_ms, "fixation_ms")
        c = ms_to_steps(self.cue_ms, self.dt_ms, "cue_ms")
        T = self.n_steps
        return (f, f + c), (T - c, T)

    def bump(self) -> Tensor:
        """The bump added for a 1 bit (without baseline), ``(cue_ms/dt_ms,)`` float64."""
        n = ms_to_steps(self.cue_ms, self.dt_ms, "cue_ms")
        s = torch.linspace(-self.cue_ms / 2, self.cue_ms / 2, n, dtype=torch.float64)
        return self.bump_amplitude * torch.exp(-(s**2) / (2 * self.bump_std_ms**2))

    def _validate(self) -> None:
        ms_to_steps(self.fixation_ms, self.dt_ms, "fixation_ms")
        ms_to_steps(self.cue_ms, self.dt_ms, "cue_ms", allow_zero=False)
        ms_to_steps(self.delay_ms, self.dt_ms, "delay_ms")
        check(math.isfinite(self.bump_std_ms) and self.bump_std_ms > 0, "bump_std_ms", "be > 0", self.bump_std_ms)
        check(math.isfinite(self.noise_std) and self.noise_std >= 0, "noise_std", "be >= 0", self.noise_std)
        check(math.isfinite(self.baseline), "baseline", "be finite", self.baseline)
        check(math.isfinite(self.bump_amplitude), "bump_amplitude", "be finite", self.bump_amplitude)

    def _generate(self, batch_size: int, generator: torch.Generator) -> Trials:
        dev = generator.device
        T = self.n_steps
        bits = torch.randint(0, 2, (batch_size, 2), generator=generator, device=dev)
        x = torch.full((T, batch_size, 2), self.baseline, dtype=torch.float64, device=dev)
        bump = self.bump().to(dev)[:, None]  # (n_cue, 1)
        for ch, (s0, s1) in enumerate(self.cue_windows()):
            x[s0:s1, :, ch] += bump * bits[:, ch].to(torch.float64)[None, :]
        x += self.noise_std * torch.randn(x.shape, generator=generator, dtype=x.dtype, device=dev)
        label = (bits[:, 0] == bits[:, 1]).to(torch.int64)
        y = label[None, :].expand(T, batch_size).clone()
        mask = torch.zeros(T, batch_size, dtype=torch.float64, device=dev)
        mask[-1] = 1.0
        return Trials(x, y, mask, {"bits": bits.to(torch.int64), "label": label})


@dataclass(frozen=True)
class HierarchicalDelayedXOR(Task):
    """Gradient-flossing hierarchical delayed XOR (level ``h``) and copy task (``h = 0``).

    Input: one stream ``x^t = input_scale · s^t``, ``s^t ~ Bernoulli(0.5)`` i.i.d., ``(T, B, 1)``. Target at step
    t (0-based): ``y^t = s^{t−d} ⊕ s^{t−2d} ⊕ … ⊕ s^{t−2^h d}``, the XOR (parity) of the ``2^h`` lagged values at
    lags ``d, 2d, …, 2^h d`` — every multiple of d up to ``2^h d``, as in the source's
    ``s[i−d : −d : i−2^h d]`` (h = 0: copy task ``y^t = s^{t−d}``; h = 1: ``s^{t−d} ⊕ s^{t−2d}``; h = 2: four lags).
    Mask: steps ``t ≥ d·2^h`` (all lagged inputs have been shown); ``y = 0`` before that. The source generates
    ``T + d`` steps and drops the first d; generating T steps directly gives the same distribution.

    Loss: 2-logit softmax cross-entropy. The source uses binary CE on one logit; softmax CE on logits
    ``(l_0, l_1)`` equals binary CE on ``l_1 − l_0``, so the two are the same objective with an extra redundant
    logit. Accuracy: per-step argmax over the masked steps. Durations are in steps (``dt_ms = 1`` nominal).

    ``info``: ``stream (T, B)`` int64 (s), ``label (T, B)`` (target before masking, 0 where undefined).
    """

    kind: ClassVar[str] = "classification"
    encoding: ClassVar[str] = "analog"

    level: int = 1  # h
    delay_steps: int = 10  # d
    n_steps: int = 300  # T
    input_scale: float = 1.0  # I1
    dt_ms: float = 1.0
    input_noise_std: float = 0.0

    @property
    def n_in(self) -> int:
        return 1

    @property
    def n_out(self) -> int:
        return 2

    @property
    def first_loss_step(self) -> int:
        """``d · 2^h``: the first step with a defined target."""
        return self.delay_steps * 2**self.level

    def _validate(self) -> None:
        check(isinstance(self.level, int) and self.level >= 0, "level", "be an int >= 0", self.level)
        check(
            isinstance(self.delay_steps, int) and self.delay_steps >= 1,
            "delay_steps",
            "be an int >= 1",
            self.delay_steps,
        )
        check(
            isinstance(self.n_steps, int) and self.n_steps > self.first_loss_step,
            "n_steps",
            f"be an int > delay_steps * 2**level = {self.first_loss_step}",
            self.n_steps,
        )
        check(math.isfinite(self.input_scale), "input_scale", "be finite", self.input_scale)

    def _generate(self, batch_size: int, generator: torch.Generator) -> Trials:
        dev = generator.device
        T, d, t0 = self.n_steps, self.delay_steps, self.first_loss_step
        s = torch.randint(0, 2, (T, batch_size), generator=generator, device=dev)
        y = torch.zeros(T, batch_size, dtype=torch.int64, device=dev)
        for k in range(1, 2**self.level + 1):
            y[t0:] ^= s[t0 - k * d : T - k * d]
        mask = torch.zeros(T, batch_size, dtype=torch.float64, device=dev)
        mask[t0:] = 1.0
        x = self.input_scale * s.to(torch.float64)[..., None]
        return Trials(x, y, mask, {"stream": s.to(torch.int64), "label": y.clone()})
