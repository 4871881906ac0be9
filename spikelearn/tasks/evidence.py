"""Evidence accumulation ("accumulating cues") with spiking inputs, ALGORITHMS.md §10.1–10.2.

Inputs are 4 groups of ``n_per_group`` neurons: left cues, right cues, recall cue, background. A sequence of
``n_cues`` cues is shown on the left or right group, then a delay, then the recall cue; the network must report the
side that received the majority of cues. Classes: 0 = left, 1 = right.

The two sources differ in two implementation choices that ALGORITHMS.md §11 item 3 requires to be flags; both
classes take them as fields, defaulting to their own source's choice:

* ``encoding``: ``"bernoulli"`` (per-step spikes, ``p = rate_hz·dt_ms/1000``; e-prop default) or ``"poisson"``
  (Poisson counts per step with mean ``rate_hz·dt_ms/1000``; MDGL default), via :func:`poisson_spikes`;
* ``loss_window``: ``"recall"`` (CE on every step of the last ``recall_ms``, decision = argmax of the logits
  averaged over that window, §10.1; e-prop default) or ``"last_step"`` (CE and decision at the last step only,
  §10.2; MDGL default).

References: Bellec et al. 2020, Nat. Commun. 11:3625, doi:10.1038/s41467-020-17236-y (e-prop, §10.1);
Liu et al. 2021, PNAS 118:e2111821118, doi:10.1073/pnas.2111821118 (MDGL, §10.2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from spikelearn.tasks.base import Task, Trials, check, ms_to_steps, poisson_spikes

__all__ = ["ENCODINGS", "LOSS_WINDOWS", "EvidenceAccumulation", "EvidenceAccumulationMDGL"]

LEFT, RIGHT = 0, 1
ENCODINGS = ("bernoulli", "poisson")  # values of the ``encoding`` field
LOSS_WINDOWS = ("recall", "last_step")  # values of the ``loss_window`` field


class _EvidenceBase(Task):
    """Shared generator, mask and decision rule; subclasses fix cue timing, cue draws and the label rule."""

    kind: ClassVar[str] = "classification"

    encoding: str  # a dataclass field here ("bernoulli" | "poisson"), where Task has a class constant
    loss_window: str  # "recall" | "last_step"

    n_cues: int
    n_per_group: int
    cue_ms: float
    gap_ms: float
    delay_ms: float
    recall_ms: float
    cue_rate_hz: float
    recall_rate_hz: float
    background_rate_hz: float

    # -- sizes -------------------------------------------------------------------------------------------------
    @property
    def n_in(self) -> int:
        return 4 * self.n_per_group

    @property
    def n_out(self) -> int:
        return 2

    def _cue_onset_ms(self, k: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def _cues_end_ms(self) -> float:
        return self._cue_onset_ms(self.n_cues - 1) + self.cue_ms

    @property
    def n_steps(self) -> int:
        return ms_to_steps(self._cues_end_ms + self.delay_ms + self.recall_ms, self.dt_ms, "trial duration")

    def cue_windows(self) -> list[tuple[int, int]]:
        """Step ranges ``[start, stop)`` of the cues, in order."""
        out = []
        for k in range(self.n_cues):
            start = ms_to_steps(self._cue_onset_ms(k), self.dt_ms, "cue onset")
            out.append((start, start + ms_to_steps(self.cue_ms, self.dt_ms, "cue_ms")))
        return out

    def recall_window(self) -> tuple[int, int]:
        """Step range ``[start, stop)`` of the recall cue (the last ``recall_ms``)."""
        T = self.n_steps
        return T - ms_to_steps(self.recall_ms, self.dt_ms, "recall_ms"), T

    def decision_window(self) -> tuple[int, int]:
        """Step range ``[start, stop)`` where the loss counts: :meth:`recall_window` for ``loss_window="recall"``,
        the last step ``(T − 1, T)`` for ``"last_step"``."""
        if self.loss_window == "recall":
            return self.recall_window()
        T = self.n_steps
        return T - 1, T

    def _validate(self) -> None:
        check(self.encoding in ENCODINGS, "encoding", f"be one of {ENCODINGS}", self.encoding)
        check(self.loss_window in LOSS_WINDOWS, "loss_window", f"be one of {LOSS_WINDOWS}", self.loss_window)
        check(isinstance(self.n_cues, int) and self.n_cues >= 1, "n_cues", "be an int >= 1", self.n_cues)
        check(
            isinstance(self.n_per_group, int) and self.n_per_group >= 1,
            "n_per_group",
            "be an int >= 1",
            self.n_per_group,
        )
        ms_to_steps(self.cue_ms, self.dt_ms, "cue_ms", allow_zero=False)
        ms_to_steps(self.gap_ms, self.dt_ms, "gap_ms")
        ms_to_steps(self.delay_ms, self.dt_ms, "delay_ms")
        ms_to_steps(self.recall_ms, self.dt_ms, "recall_ms", allow_zero=False)
        for name in ("cue_rate_hz", "recall_rate_hz", "background_rate_hz"):
            rate = getattr(self, name)
            check(math.isfinite(rate) and rate >= 0, name, "be >= 0 Hz", rate)
            if self.encoding == "bernoulli":
                check(rate * self.dt_ms / 1000.0 <= 1.0, name, "satisfy rate_hz * dt_ms / 1000 <= 1", rate)

    # -- generation --------------------------------------------------------------------------------------------
    def _draw_sides(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError  # pragma: no cover

    def _labels(self, sides: Tensor) -> Tensor:
        raise NotImplementedError  # pragma: no cover

    def _mask(self, batch_size: int, device: torch.device) -> Tensor:
        mask = torch.zeros(self.n_steps, batch_size, dtype=torch.float64, device=device)
        r0, r1 = self.decision_window()
        mask[r0:r1] = 1.0
        return mask

    def accuracy(self, y_hat: Tensor, y: Tensor, mask: Tensor) -> float:
        """Fraction of correct decisions, following ``loss_window``.

        ``"recall"``: per trial, argmax of the logits averaged over the masked steps, compared with the label
        (the e-prop decision rule, §10.1). ``"last_step"``: per-step ``argmax(y_hat) == y`` averaged over the masked
        steps, which with this task's mask is the decision at the last step (§10.2).
        """
        if self.loss_window == "last_step":
            return super().accuracy(y_hat, y, mask)
        m = mask.to(y_hat.dtype)[..., None]  # (T, B, 1)
        mean_logits = (m * y_hat).sum(0) / m.sum(0).clamp_min(1.0)  # (B, K)
        last = mask.shape[0] - 1 - mask.flip(0).argmax(0)  # last masked step per trial, (B,)
        label = y.gather(0, last[None, :]).squeeze(0)
        return float((mean_logits.argmax(-1) == label).to(torch.float64).mean())

    def rates_hz(self, sides: Tensor) -> Tensor:
        """Nominal input rates ``(T, B, n_in)`` in Hz for cue sides ``(B, n_cues)`` (0 left, 1 right)."""
        B = sides.shape[0]
        G = self.n_per_group
        rate = torch.zeros(self.n_steps, B, self.n_in, dtype=torch.float64, device=sides.device)
        for k, (start, stop) in enumerate(self.cue_windows()):
            for side in (LEFT, RIGHT):
                on = sides[:, k] == side  # (B,)
                rate[start:stop, on, side * G : (side + 1) * G] = self.cue_rate_hz
        r0, r1 = self.recall_window()
        rate[r0:r1, :, 2 * G : 3 * G] = self.recall_rate_hz
        rate[:, :, 3 * G :] = self.background_rate_hz
        return rate

    def _generate(self, batch_size: int, generator: torch.Generator) -> Trials:
        sides, info = self._draw_sides(batch_size, generator)
        rate = self.rates_hz(sides)
        x = poisson_spikes(rate, self.dt_ms, generator, counts=self.encoding == "poisson")
        label = self._labels(sides)  # (B,)
        y = label[None, :].expand(self.n_steps, batch_size).clone()
        info = {"cue_sides": sides, "label": label, **info}
        return Trials(x, y, self._mask(batch_size, sides.device), info)


@dataclass(frozen=True)
class EvidenceAccumulation(_EvidenceBase):
    """Evidence accumulation, official e-prop version (ALGORITHMS.md §10.1).

    Inputs: 40 = 4 groups of ``n_per_group`` (left 0–9, right 10–19, recall 20–29, background 30–39), Bernoulli
    spikes with ``p = rate_hz * dt_ms / 1000``. Cue k (k = 0..n_cues−1) occupies
    ``[gap_ms + k (gap_ms + cue_ms), gap_ms + k (gap_ms + cue_ms) + cue_ms)`` ms (a silent gap precedes every cue) on
    the left or right group at ``cue_rate_hz``; each trial picks a majority side uniformly and sends each cue there
    independently with probability ``p_majority``. Then ``delay_ms`` of silence and ``recall_ms`` of recall cue at
    ``recall_rate_hz``; background at ``background_rate_hz`` throughout.
    ``T = n_cues (gap_ms + cue_ms) + delay_ms + recall_ms`` (defaults: 2250 steps).

    Label: right (1) iff more than ``n_cues // 2`` cues were right (ties for even ``n_cues`` go left, as in the
    source's ``sum > int(n_cues/2)``), tiled over all steps. Mask: the recall window (last ``recall_ms``).
    Accuracy: argmax of the logits averaged over the masked steps.

    Options (ALGORITHMS.md §11 item 3; the defaults are §10.1's): ``encoding="poisson"`` draws Poisson counts
    instead of Bernoulli spikes; ``loss_window="last_step"`` puts the mask and the decision on the last step only
    (as in §10.2). See the module docstring.

    ``info``: ``cue_sides (B, n_cues)`` int64 (0 left, 1 right), ``majority_side (B,)``, ``label (B,)``.
    """

    n_cues: int = 7
    n_per_group: int = 10
    cue_ms: float = 100.0  # each cue lasts this long
    gap_ms: float = 50.0  # silence before each cue
    delay_ms: float = 1050.0  # from the end of the last cue to the recall onset
    recall_ms: float = 150.0  # recall cue = loss window at the end of the trial
    cue_rate_hz: float = 40.0
    recall_rate_hz: float = 40.0
    background_rate_hz: float = 10.0
    p_majority: float = 0.7
    dt_ms: float = 1.0
    input_noise_std: float = 0.0
    encoding: str = "bernoulli"  # input spikes: "bernoulli" (§10.1) | "poisson" counts (§10.2)
    loss_window: str = "recall"  # loss and decision: "recall" = last recall_ms (§10.1) | "last_step" (§10.2)

    def _validate(self) -> None:
        super()._validate()
        check(0.0 <= self.p_majority <= 1.0, "p_majority", "lie in [0, 1]", self.p_majority)

    def _cue_onset_ms(self, k: int) -> float:
        return self.gap_ms + k * (self.gap_ms + self.cue_ms)

    def _draw_sides(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
        dev = generator.device
        majority = torch.randint(0, 2, (batch_size,), generator=generator, device=dev)
        u = torch.rand(batch_size, self.n_cues, generator=generator, dtype=torch.float64, device=dev)
        to_majority = u < self.p_majority
        sides = torch.where(to_majority, majority[:, None], 1 - majority[:, None])
        return sides.to(torch.int64), {"majority_side": majority.to(torch.int64)}

    def _labels(self, sides: Tensor) -> Tensor:
        return (sides.sum(1) > self.n_cues // 2).to(torch.int64)


@dataclass(frozen=True)
class EvidenceAccumulationMDGL(_EvidenceBase):
    """Evidence accumulation, MDGL version (ALGORITHMS.md §10.2).

    Same 4 input groups. Cue k occupies ``[k (cue_ms + gap_ms), k (cue_ms + gap_ms) + cue_ms)`` ms (no leading
    silence); ``delay_ms`` runs from the end of the last cue to the recall onset; recall in the last ``recall_ms``;
    ``T = n_cues cue_ms + (n_cues − 1) gap_ms + delay_ms + recall_ms`` (defaults: 2000 steps). Inputs are Poisson
    *counts* per step with mean ``rate_hz * dt_ms / 1000``.

    Cue patterns: all ``2**n_cues`` binary patterns (bit k of pattern p is the side of cue k, 1 = right); a batch
    takes patterns ``perm[b mod 2**n_cues]`` of a random permutation, so up to ``2**n_cues`` trials are distinct.
    Label: left (0) iff at least ``n_cues // 2 + 1`` cues were left (≥ 4 of 7; ties for even ``n_cues`` go
    right), else right (1). Mask and accuracy: last step only.

    Options (ALGORITHMS.md §11 item 3; the defaults are §10.2's): ``encoding="bernoulli"`` draws per-step
    Bernoulli spikes instead of Poisson counts; ``loss_window="recall"`` puts the mask on every step of the last
    ``recall_ms`` and decides by the argmax of the logits averaged over them (as in §10.1). See the module docstring.

    ``info``: ``cue_sides (B, n_cues)``, ``pattern (B,)`` (pattern index), ``label (B,)``.
    """

    n_cues: int = 7
    n_per_group: int = 10
    cue_ms: float = 100.0
    gap_ms: float = 50.0  # silence after each cue but the last
    delay_ms: float = 850.0  # from the end of the last cue to the recall onset
    recall_ms: float = 150.0
    cue_rate_hz: float = 40.0
    recall_rate_hz: float = 40.0
    background_rate_hz: float = 10.0
    dt_ms: float = 1.0
    input_noise_std: float = 0.0
    encoding: str = "poisson"  # input spikes: "poisson" counts (§10.2) | "bernoulli" (§10.1)
    loss_window: str = "last_step"  # loss and decision: "last_step" (§10.2) | "recall" = last recall_ms (§10.1)

    def _validate(self) -> None:
        super()._validate()
        check(self.n_cues <= 20, "n_cues", "be <= 20 (all 2**n_cues patterns are enumerated)", self.n_cues)

    def _cue_onset_ms(self, k: int) -> float:
        return k * (self.cue_ms + self.gap_ms)

    def _draw_sides(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
        dev = generator.device
        n_patterns = 2**self.n_cues
        perm = torch.randperm(n_patterns, generator=generator, device=dev)
        pattern = perm[torch.arange(batch_size, device=dev) % n_patterns]
        bits = torch.arange(self.n_cues, device=dev)
        sides = (pattern[:, None] >> bits[None, :]) & 1
        return sides.to(torch.int64), {"pattern": pattern.to(torch.int64)}

    def _labels(self, sides: Tensor) -> Tensor:
        n_left = (sides == LEFT).sum(1)
        return torch.where(n_left >= self.n_cues // 2 + 1, LEFT, RIGHT).to(torch.int64)
