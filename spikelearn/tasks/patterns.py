"""Pattern generation from frozen Poisson noise (ALGORITHMS.md §10.4; Bellec et al. 2020, e-prop Fig. 2,
doi:10.1038/s41467-020-17236-y)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from spikelearn.tasks.base import Task, Trials, bernoulli_spikes, check, ms_to_steps

__all__ = ["PatternGeneration"]


@dataclass(frozen=True)
class PatternGeneration(Task):
    """Regress a fixed sum-of-sines target from a fixed ("frozen") Poisson input.

    Input: ``n_in`` channels of Bernoulli spikes at ``rate_hz`` (``p = rate_hz·dt_ms/1000``), ``duration_ms`` long.
    Target (1 output): ``Σ_i A_i sin(2π t/P_i + φ_i)`` with ``t = step·dt_ms`` (ms), periods ``periods_ms``,
    ``A_i ~ U[amplitude_min, amplitude_max]``, ``φ_i ~ U[0, 2π)``; shifted so the first step is 0 and divided by
    its max |value|. Input and target depend only on ``pattern_seed`` (drawn from a private generator, target
    parameters first, then the spikes), so every call returns the same pattern, repeated over the batch; the
    generator passed to ``sample`` is used only for ``input_noise_std``.

    Regression; mask all ones; loss ``(1/B) Σ_t ½ (y − y*)²``; accuracy = R² (``1 − SSE/SST``).

    ``info``: ``amplitudes (P,)``, ``phases (P,)`` (not batched).
    """

    kind: ClassVar[str] = "regression"
    encoding: ClassVar[str] = "bernoulli"

    n_in: int = 100  # input channels
    rate_hz: float = 50.0
    duration_ms: float = 1000.0
    periods_ms: tuple[float, ...] = (1000.0, 500.0, 333.0, 200.0)
    amplitude_min: float = 0.5
    amplitude_max: float = 2.0
    pattern_seed: int = 0
    dt_ms: float = 1.0
    input_noise_std: float = 0.0

    @property
    def n_out(self) -> int:
        return 1

    @property
    def n_steps(self) -> int:
        return ms_to_steps(self.duration_ms, self.dt_ms, "duration_ms", allow_zero=False)

    def _validate(self) -> None:
        check(isinstance(self.n_in, int) and self.n_in >= 1, "n_in", "be an int >= 1",
              self.n_in)
        check(math.isfinite(self.rate_hz) and 0 <= self.rate_hz * self.dt_ms / 1000 <= 1, "rate_hz",
              "satisfy 0 <= rate_hz * dt_ms / 1000 <= 1", self.rate_hz)
        check(self.n_steps >= 2, "duration_ms", "span at least 2 steps", self.duration_ms)
        check(len(self.periods_ms) >= 1 and all(p > 0 for p in self.periods_ms), "periods_ms",
              "be a non-empty tuple of positive periods", self.periods_ms)
        check(0 <= self.amplitude_min <= self.amplitude_max, "amplitude_min",
              "satisfy 0 <= amplitude_min <= amplitude_max", (self.amplitude_min, self.amplitude_max))
        check(self.amplitude_max > 0, "amplitude_max", "be > 0 (the target is normalised by its peak)",
              self.amplitude_max)
        check(isinstance(self.pattern_seed, int), "pattern_seed", "be an int", self.pattern_seed)

    def pattern(self) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """The frozen input ``(T, n_in)``, target ``(T,)`` (float64, CPU) and target parameters."""
        g = torch.Generator().manual_seed(self.pattern_seed)
        P = len(self.periods_ms)
        amp = self.amplitude_min + (self.amplitude_max - self.amplitude_min) * torch.rand(
            P, generator=g, dtype=torch.float64
        )
        phase = 2 * math.pi * torch.rand(P, generator=g, dtype=torch.float64)
        t_ms = torch.arange(self.n_steps, dtype=torch.float64) * self.dt_ms
        periods = torch.tensor(self.periods_ms, dtype=torch.float64)
        target = (amp * torch.sin(2 * math.pi * t_ms[:, None] / periods + phase)).sum(1)
        target = target - target[0]
        target = target / target.abs().max()
        rate = torch.full((self.n_steps, self.n_in), float(self.rate_hz), dtype=torch.float64)
        x = bernoulli_spikes(rate, self.dt_ms, g)
        return x, target, {"amplitudes": amp, "phases": phase}

    def _generate(self, batch_size: int, generator: torch.Generator) -> Trials:
        dev = generator.device
        x, target, info = self.pattern()
        T = self.n_steps
        x = x.to(dev)[:, None, :].expand(T, batch_size, self.n_in).clone()
        y = target.to(dev)[:, None, None].expand(T, batch_size, 1).clone()
        mask = torch.ones(T, batch_size, dtype=torch.float64, device=dev)
        return Trials(x, y, mask, {k: v.to(dev) for k, v in info.items()})
