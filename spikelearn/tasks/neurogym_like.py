"""Native re-implementations of three neurogym tasks at dt = 100 ms (ALGORITHMS.md §10.5, §10.8).

Used by the rich/lazy study (Liu et al. ICLR 2024, arXiv:2310.08513) through ``ngym.Dataset(batch_size=32,
seq_len=8)``; every trial lasts exactly 8 steps with the timings used there, so one sequence is one trial.

Conventions (those of the neurogym ``PeriodEnv`` generation of envs, i.e. the 0.0.x line the authors used):

* periods run back to back in the order listed by each task; a 0-ms period has no steps;
* observation channel 0 is fixation: 1 in every period except the decision period (set
  ``fixation_off_at_decision=False`` for the variant in which it stays on throughout, as in some DMS versions);
* Gaussian observation noise with std ``stim_noise_sigma / sqrt(dt_ms)`` is added to *all* observation channels
  during the noisy periods (neurogym's ``add_randn`` without ``where``);
* actions: 0 = fixate, 1 and 2 = the two choices; the label is the correct choice during the decision period and
  0 (fixate) elsewhere;
* ``loss_on="all"`` (default, as the rich/lazy code trains CE on every step) or ``"decision"`` (decision steps only);
* accuracy: fraction of decision-period steps (one per trial by default) whose argmax equals the label,
  independent of ``loss_on``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from spikelearn.tasks.base import Task, Trials, check, ms_to_steps

__all__ = ["ContextDecisionMaking", "DelayedMatchToSample", "PerceptualDecisionMaking"]

FIXATE = 0


class _DecisionTask(Task):
    """Shared period bookkeeping, mask and decision-period accuracy."""

    kind: ClassVar[str] = "classification"
    encoding: ClassVar[str] = "analog"
    _period_names: ClassVar[tuple[str, ...]] = ()
    _noisy_periods: ClassVar[tuple[str, ...]] = ()

    stim_noise_sigma: float
    fixation_off_at_decision: bool
    loss_on: str

    @property
    def n_out(self) -> int:
        return 3

    def periods(self) -> dict[str, tuple[int, int]]:
        """Step ranges ``[start, stop)`` of each period, in trial order."""
        out: dict[str, tuple[int, int]] = {}
        t = 0
        for name in self._period_names:
            n = ms_to_steps(getattr(self, f"{name}_ms"), self.dt_ms, f"{name}_ms")
            out[name] = (t, t + n)
            t += n
        return out

    @property
    def n_steps(self) -> int:
        return max(stop for _, stop in self.periods().values())

    @property
    def sigma_dt(self) -> float:
        """Per-step observation noise std, ``stim_noise_sigma / sqrt(dt_ms)``."""
        return self.stim_noise_sigma / math.sqrt(self.dt_ms)

    def _validate(self) -> None:
        for name in self._period_names:
            ms_to_steps(getattr(self, f"{name}_ms"), self.dt_ms, f"{name}_ms", allow_zero=name != "decision")
        check(
            math.isfinite(self.stim_noise_sigma) and self.stim_noise_sigma >= 0,
            "stim_noise_sigma",
            "be >= 0",
            self.stim_noise_sigma,
        )
        check(self.loss_on in ("all", "decision"), "loss_on", "be 'all' or 'decision'", self.loss_on)

    def _decision_mask(self, batch_size: int, device: torch.device) -> Tensor:
        d0, d1 = self.periods()["decision"]
        mask = torch.zeros(self.n_steps, batch_size, dtype=torch.float64, device=device)
        mask[d0:d1] = 1.0
        return mask

    def _finish(self, x: Tensor, choice: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """Add fixation channel, noise, labels and mask. ``x`` has the stimulus channels filled in."""
        T, B, _ = x.shape
        p = self.periods()
        d0, d1 = p["decision"]
        x[:, :, 0] = 1.0
        if self.fixation_off_at_decision:
            x[d0:d1, :, 0] = 0.0
        for name in self._noisy_periods:
            s0, s1 = p[name]
            noise = torch.randn(s1 - s0, B, x.shape[2], generator=generator, dtype=x.dtype, device=x.device)
            x[s0:s1] += self.sigma_dt * noise
        y = torch.full((T, B), FIXATE, dtype=torch.int64, device=x.device)
        y[d0:d1] = choice[None, :]
        dmask = self._decision_mask(B, x.device)
        mask = torch.ones_like(dmask) if self.loss_on == "all" else dmask
        return x, y, mask

    def accuracy(self, y_hat: Tensor, y: Tensor, mask: Tensor) -> float:
        """Fraction of decision-period steps with ``argmax(y_hat) == y`` (``mask`` is not used)."""
        del mask
        d0, d1 = self.periods()["decision"]
        return float((y_hat[d0:d1].argmax(-1) == y[d0:d1]).to(torch.float64).mean())


@dataclass(frozen=True)
class DelayedMatchToSample(_DecisionTask):
    """Delayed match-to-sample, neurogym ``DelayMatchSample-v0`` (ALGORITHMS.md §10.5).

    Periods: fixation, sample, delay, test, decision (defaults 0/100/500/100/100 ms at ``dt_ms=100`` ⇒ 8 steps:
    sample at step 0, delay 1–5, test at 6, decision at 7). Observations (3): fixation, ``cos θ``, ``sin θ``; the
    sample angle θ_s ∈ {0, π/2} is shown during sample, the test angle during test (θ_t = θ_s on match trials,
    prob. 0.5, else the other angle). Noise std ``sqrt(2·100·0.01)/sqrt(dt_ms)`` on all channels during sample
    and test. Actions: 0 fixate, 1 match, 2 non-match.

    ``info``: ``sample_theta (B,)``, ``test_theta (B,)`` (radians), ``match (B,)`` bool, ``label (B,)``.
    """

    _period_names: ClassVar[tuple[str, ...]] = ("fixation", "sample", "delay", "test", "decision")
    _noisy_periods: ClassVar[tuple[str, ...]] = ("sample", "test")

    fixation_ms: float = 0.0
    sample_ms: float = 100.0
    delay_ms: float = 500.0
    test_ms: float = 100.0
    decision_ms: float = 100.0
    stim_noise_sigma: float = math.sqrt(2 * 100 * 0.01)  # per-step std = stim_noise_sigma / sqrt(dt_ms)
    fixation_off_at_decision: bool = True
    loss_on: str = "all"
    dt_ms: float = 100.0
    input_noise_std: float = 0.0

    @property
    def n_in(self) -> int:
        return 3

    def _generate(self, batch_size: int, generator: torch.Generator) -> Trials:
        dev = generator.device
        match = torch.rand(batch_size, generator=generator, dtype=torch.float64, device=dev) < 0.5
        sample_idx = torch.randint(0, 2, (batch_size,), generator=generator, device=dev)  # θ = idx·π/2
        test_idx = torch.where(match, sample_idx, 1 - sample_idx)
        th_s = sample_idx.to(torch.float64) * (math.pi / 2)
        th_t = test_idx.to(torch.float64) * (math.pi / 2)
        x = torch.zeros(self.n_steps, batch_size, 3, dtype=torch.float64, device=dev)
        p = self.periods()
        for (s0, s1), th in ((p["sample"], th_s), (p["test"], th_t)):
            x[s0:s1, :, 1] = torch.cos(th)
            x[s0:s1, :, 2] = torch.sin(th)
        choice = torch.where(match, 1, 2).to(torch.int64)
        x, y, mask = self._finish(x, choice, generator)
        info = {"sample_theta": th_s, "test_theta": th_t, "match": match, "label": choice}
        return Trials(x, y, mask, info)


@dataclass(frozen=True)
class PerceptualDecisionMaking(_DecisionTask):
    """Two-alternative forced choice, neurogym ``PerceptualDecisionMaking-v0`` ("2AF", ALGORITHMS.md §10.8).

    Periods: fixation, stimulus, delay, decision (defaults 0/700/0/100 ms at ``dt_ms=100`` ⇒ 8 steps). Per trial a
    correct side g ∈ {0, 1} and a coherence c ∈ ``cohs_percent`` are drawn uniformly; during the stimulus channel
    ``1 + g`` has mean ``(1 + c/100)/2`` and the other ``(1 − c/100)/2``. Noise std ``sqrt(2·100·0.01)/sqrt(dt_ms)``
    on all channels during the stimulus. Observations (3): fixation, stimulus 1, stimulus 2. Actions: 0 fixate,
    1 choose stimulus 1, 2 choose stimulus 2 (label ``1 + g``; at c = 0 the label is a coin flip).

    ``info``: ``side (B,)`` (g), ``coherence (B,)`` (percent), ``label (B,)``.
    """

    _period_names: ClassVar[tuple[str, ...]] = ("fixation", "stimulus", "delay", "decision")
    _noisy_periods: ClassVar[tuple[str, ...]] = ("stimulus",)

    fixation_ms: float = 0.0
    stimulus_ms: float = 700.0
    delay_ms: float = 0.0
    decision_ms: float = 100.0
    cohs_percent: tuple[float, ...] = (0.0, 6.4, 12.8, 25.6, 51.2)
    stim_noise_sigma: float = math.sqrt(2 * 100 * 0.01)
    fixation_off_at_decision: bool = True
    loss_on: str = "all"
    dt_ms: float = 100.0
    input_noise_std: float = 0.0

    @property
    def n_in(self) -> int:
        return 3

    def _validate(self) -> None:
        super()._validate()
        check(
            len(self.cohs_percent) >= 1 and all(0 <= c <= 100 for c in self.cohs_percent),
            "cohs_percent",
            "be a non-empty tuple of values in [0, 100]",
            self.cohs_percent,
        )

    def _generate(self, batch_size: int, generator: torch.Generator) -> Trials:
        dev = generator.device
        side = torch.randint(0, 2, (batch_size,), generator=generator, device=dev)
        cohs = torch.tensor(self.cohs_percent, dtype=torch.float64, device=dev)
        coh = cohs[torch.randint(0, len(cohs), (batch_size,), generator=generator, device=dev)]
        signed = torch.where(side == 0, coh, -coh) / 100.0
        x = torch.zeros(self.n_steps, batch_size, 3, dtype=torch.float64, device=dev)
        s0, s1 = self.periods()["stimulus"]
        x[s0:s1, :, 1] = (1 + signed) / 2
        x[s0:s1, :, 2] = (1 - signed) / 2
        choice = (1 + side).to(torch.int64)
        x, y, mask = self._finish(x, choice, generator)
        return Trials(x, y, mask, {"side": side.to(torch.int64), "coherence": coh, "label": choice})


@dataclass(frozen=True)
class ContextDecisionMaking(_DecisionTask):
    """Context-dependent decision making, neurogym ``ContextDecisionMaking-v0`` ("CXT", ALGORITHMS.md §10.8).

    Periods: fixation, stimulus, delay, decision (defaults 0/200/500/100 ms at ``dt_ms=100`` ⇒ 8 steps).
    Observations (7): fixation, stim1_mod1, stim2_mod1, stim1_mod2, stim2_mod2, context1, context2. Per trial: a
    context m ∈ {0, 1} (the relevant modality), a choice for each modality (uniform over {1, 2}, independent) and
    a coherence per modality from ``cohs_percent``. During the stimulus, modality m's channels have means
    ``(1 ± s_m/100)/2`` with signed coherence ``s_m = +coh_m`` if that modality's choice is 1 and ``−coh_m`` if 2.
    The context channel ``5 + m`` is 1 throughout the trial (decision period included), fixation as usual, and
    the stimulus channels are 0 outside the stimulus. Noise std ``sqrt(2·100·0.02)/sqrt(dt_ms)`` on all channels
    during the stimulus. Label: the relevant modality's choice (1 or 2) at the decision.

    ``info``: ``context (B,)``, ``choices (B, 2)`` (per modality), ``coherence (B, 2)`` (percent), ``label (B,)``.
    """

    _period_names: ClassVar[tuple[str, ...]] = ("fixation", "stimulus", "delay", "decision")
    _noisy_periods: ClassVar[tuple[str, ...]] = ("stimulus",)

    fixation_ms: float = 0.0
    stimulus_ms: float = 200.0
    delay_ms: float = 500.0
    decision_ms: float = 100.0
    cohs_percent: tuple[float, ...] = (5.0, 15.0, 50.0)
    stim_noise_sigma: float = math.sqrt(2 * 100 * 0.02)
    fixation_off_at_decision: bool = True
    loss_on: str = "all"
    dt_ms: float = 100.0
    input_noise_std: float = 0.0

    @property
    def n_in(self) -> int:
        return 7

    def _validate(self) -> None:
        super()._validate()
        check(
            len(self.cohs_percent) >= 1 and all(0 <= c <= 100 for c in self.cohs_percent),
            "cohs_percent",
            "be a non-empty tuple of values in [0, 100]",
            self.cohs_percent,
        )

    def _generate(self, batch_size: int, generator: torch.Generator) -> Trials:
        dev = generator.device
        context = torch.randint(0, 2, (batch_size,), generator=generator, device=dev)
        choices = 1 + torch.randint(0, 2, (batch_size, 2), generator=generator, device=dev)
        cohs = torch.tensor(self.cohs_percent, dtype=torch.float64, device=dev)
        coh = cohs[torch.randint(0, len(cohs), (batch_size, 2), generator=generator, device=dev)]
        signed = torch.where(choices == 1, coh, -coh) / 100.0  # (B, 2)
        x = torch.zeros(self.n_steps, batch_size, 7, dtype=torch.float64, device=dev)
        s0, s1 = self.periods()["stimulus"]
        for m in (0, 1):
            x[s0:s1, :, 1 + 2 * m] = (1 + signed[:, m]) / 2
            x[s0:s1, :, 2 + 2 * m] = (1 - signed[:, m]) / 2
        x[:, :, 5] = (context == 0).to(torch.float64)
        x[:, :, 6] = (context == 1).to(torch.float64)
        label = choices.gather(1, context[:, None]).squeeze(1).to(torch.int64)
        x, y, mask = self._finish(x, label, generator)
        info = {"context": context.to(torch.int64), "choices": choices.to(torch.int64), "coherence": coh,
                "label": label}
        return Trials(x, y, mask, info)
