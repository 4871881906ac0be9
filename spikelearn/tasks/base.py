"""Shared task contract: trial sampling, losses, accuracies and spike encoders.

Every task is a frozen dataclass of hyperparameters. ``sample(batch_size, generator)`` returns time-first
tensors ``x (T, B, n_in)``, ``y`` and ``mask (T, B)``; all randomness comes from the ``torch.Generator`` that is
passed in, so one seed fixes the trials exactly (numpy's global RNG is never used).

Trials are generated in float64 on the generator's device and cast afterwards, so a float32 and a float64 batch
drawn from the same seed agree up to rounding.

Losses (ALGORITHMS.md §1.1):

* classification: ``sum_{t,b} mask * CE(y_hat[t, b], y[t, b]) / sum_{t,b} mask`` (mean over counted steps);
* regression: ``(1/B) * sum_{t,b,k} mask * ½ (y_hat - y)²`` (½ Σ_t ||y − y*||² per trial, averaged over the batch).
"""

from __future__ import annotations

import math
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Task",
    "Trials",
    "bernoulli_spikes",
    "classification_loss",
    "poisson_spikes",
    "regression_loss",
    "regression_score",
]


class Trials(NamedTuple):
    """One batch of trials.

    ``x``: inputs ``(T, B, n_in)``; ``y``: int64 labels ``(T, B)`` (classification) or targets ``(T, B, n_out)``
    (regression); ``mask``: ``(T, B)``, 1.0 where the loss counts; ``info``: task-specific latent variables
    (cue sides, bits, angles, ...), each with the batch on the first axis unless documented otherwise.
    """

    x: Tensor
    y: Tensor
    mask: Tensor
    info: dict[str, Tensor]


# --------------------------------------------------------------------------------------------------------------
# encoders


def bernoulli_spikes(rate_hz: Tensor, dt_ms: float, generator: torch.Generator) -> Tensor:
    """Bernoulli spikes with per-step probability ``p = rate_hz * dt_ms / 1000``.

    Args:
        rate_hz: firing rate, any shape, Hz; on the generator's device.
        dt_ms: time step, ms.
        generator: source of randomness.

    Returns:
        ``{0, 1}`` tensor with the shape and dtype of ``rate_hz``.
    """
    p = rate_hz * (dt_ms / 1000.0)
    if bool((p > 1.0).any()) or bool((p < 0.0).any()):
        raise ValueError("rate_hz * dt_ms / 1000 must lie in [0, 1] for Bernoulli spikes")
    u = torch.rand(p.shape, generator=generator, dtype=p.dtype, device=p.device)
    return (u < p).to(p.dtype)


def poisson_spikes(
    rate_hz: Tensor, dt_ms: float, generator: torch.Generator, *, counts: bool = False
) -> Tensor:
    """Poisson input spikes.

    With ``counts=False`` (default) this is the usual per-step Bernoulli approximation, ``p = rate_hz*dt_ms/1000``
    (e-prop). With ``counts=True`` each step holds a Poisson *count* with mean ``rate_hz*dt_ms/1000`` (MDGL; almost
    always 0 or 1 at 1 ms).

    Args:
        rate_hz: firing rate, any shape, Hz; on the generator's device.
        dt_ms: time step, ms.
        generator: source of randomness.
        counts: draw Poisson counts instead of Bernoulli spikes.

    Returns:
        tensor with the shape and dtype of ``rate_hz``.
    """
    if not counts:
        return bernoulli_spikes(rate_hz, dt_ms, generator)
    lam = rate_hz * (dt_ms / 1000.0)
    if bool((lam < 0.0).any()):
        raise ValueError("rate_hz must be non-negative")
    return torch.poisson(lam, generator=generator)


# --------------------------------------------------------------------------------------------------------------
# losses and scores


def classification_loss(y_hat: Tensor, y: Tensor, mask: Tensor) -> Tensor:
    """Masked softmax cross-entropy, averaged over the counted steps.

    Args:
        y_hat: logits ``(T, B, K)``.
        y: int64 labels ``(T, B)``.
        mask: ``(T, B)``, weight of each step (1.0 where the loss counts).

    Returns:
        scalar ``sum(mask * ce) / sum(mask)``.
    """
    T, B, K = y_hat.shape
    ce = F.cross_entropy(y_hat.reshape(T * B, K), y.reshape(T * B), reduction="none").reshape(T, B)
    m = mask.to(ce.dtype)
    return (m * ce).sum() / m.sum()


def regression_loss(y_hat: Tensor, y: Tensor, mask: Tensor) -> Tensor:
    """Masked ½ sum of squared errors over time and outputs, averaged over the batch.

    Args:
        y_hat: predictions ``(T, B, K)``.
        y: targets ``(T, B, K)``.
        mask: ``(T, B)``.

    Returns:
        scalar ``(1/B) Σ_{t,b,k} mask[t,b] · ½ (y_hat − y)²``.
    """
    B = y_hat.shape[1]
    m = mask.to(y_hat.dtype)
    return 0.5 * (m[..., None] * (y_hat - y) ** 2).sum() / B


def regression_score(y_hat: Tensor, y: Tensor, mask: Tensor) -> float:
    """Coefficient of determination ``1 − SSE/SST`` over masked steps.

    ``SST`` is taken around each trial's and output's masked time-mean of the target, so predicting that mean
    scores 0 and a perfect prediction scores 1 (negative for worse than the mean).
    """
    m = mask.to(y.dtype)[..., None]  # (T, B, 1)
    mean = (m * y).sum(0, keepdim=True) / m.sum(0, keepdim=True).clamp_min(1.0)
    sse = (m * (y_hat.to(y.dtype) - y) ** 2).sum()
    sst = (m * (y - mean) ** 2).sum()
    return float(1.0 - sse / sst)


# --------------------------------------------------------------------------------------------------------------
# helpers for subclasses


def ms_to_steps(value_ms: float, dt_ms: float, name: str, *, allow_zero: bool = True) -> int:
    """Convert a duration to a whole number of steps; ValueError naming ``name`` otherwise."""
    if not math.isfinite(value_ms) or value_ms < 0 or (value_ms == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound} ms, got {value_ms}")
    r = value_ms / dt_ms
    n = round(r)
    if abs(r - n) > 1e-9 * max(1.0, abs(r)):
        raise ValueError(f"{name}={value_ms} ms is not a whole multiple of dt_ms={dt_ms}")
    return int(n)


def check(cond: bool, name: str, requirement: str, value: object) -> None:
    """Raise ``ValueError("<name> must <requirement>, got <value>")`` unless ``cond``."""
    if not cond:
        raise ValueError(f"{name} must {requirement}, got {value!r}")


# --------------------------------------------------------------------------------------------------------------
# base class


class Task:
    """Base of every task (subclasses are frozen dataclasses).

    Subclasses define the fields ``dt_ms`` and ``input_noise_std``, the properties ``n_in``, ``n_out``,
    ``n_steps``, and ``_generate``; they set the class constants ``kind`` ("classification" | "regression") and
    ``encoding`` ("analog" | "bernoulli" | "poisson"); a task that offers both spike encodings makes ``encoding`` a
    field instead (ALGORITHMS.md §11 item 3).

    ``input_noise_std`` adds ``N(0, input_noise_std²)`` to ``x`` after the trial is generated (drawn from the
    same generator, after everything else, so the clean part of the trial is unchanged). Use it for test-time
    noise: ``dataclasses.replace(task, input_noise_std=0.2)``.
    """

    kind: ClassVar[str] = "classification"
    encoding: ClassVar[str] = "analog"

    dt_ms: float
    input_noise_std: float

    # -- to be provided by subclasses --------------------------------------------------------------------------
    @property
    def n_in(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def n_out(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def n_steps(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _validate(self) -> None:
        """Raise ValueError naming the offending field; called from ``__post_init__``."""

    def _generate(self, batch_size: int, generator: torch.Generator) -> Trials:  # pragma: no cover
        """Clean trials in float64 on ``generator.device``."""
        raise NotImplementedError

    def _postprocess_noisy(self, x: Tensor) -> Tensor:
        """Hook applied after input noise is added (e.g. clipping pixels to [0, 1])."""
        return x

    # -- shared ------------------------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        check(math.isfinite(self.dt_ms) and self.dt_ms > 0, "dt_ms", "be > 0", self.dt_ms)
        check(
            math.isfinite(self.input_noise_std) and self.input_noise_std >= 0,
            "input_noise_std",
            "be >= 0",
            self.input_noise_std,
        )
        self._validate()

    def sample_with_info(
        self,
        batch_size: int,
        generator: torch.Generator,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Trials:
        """Draw ``batch_size`` trials together with their latent variables.

        Args:
            batch_size: B.
            generator: all randomness comes from it; trials are drawn on its device, then moved to ``device``.
            dtype: floating dtype of ``x``, ``mask`` (and ``y`` for regression).
            device: output device (default: the generator's device).

        Returns:
            :class:`Trials` ``(x (T, B, n_in), y, mask (T, B), info)``.
        """
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise ValueError(f"dtype must be a floating torch dtype (inputs and masks are real-valued), got {dtype!r}")
        x, y, mask, info = self._generate(batch_size, generator)
        if self.input_noise_std > 0:
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            x = self._postprocess_noisy(x + self.input_noise_std * noise)
        device = generator.device if device is None else torch.device(device)
        x = x.to(device=device, dtype=dtype)
        mask = mask.to(device=device, dtype=dtype)
        y = y.to(device=device, dtype=torch.int64 if self.kind == "classification" else dtype)
        info = {k: v.to(device=device) for k, v in info.items()}
        return Trials(x, y, mask, info)

    def sample(
        self,
        batch_size: int,
        generator: torch.Generator,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Draw ``batch_size`` trials: ``(x (T, B, n_in), y, mask (T, B))``.

        ``y`` is int64 ``(T, B)`` for classification (a valid class index at every step) and ``(T, B, n_out)``
        for regression. See :meth:`sample_with_info` for the arguments.
        """
        x, y, mask, _ = self.sample_with_info(batch_size, generator, dtype=dtype, device=device)
        return x, y, mask

    def loss(self, y_hat: Tensor, y: Tensor, mask: Tensor) -> Tensor:
        """Task loss (scalar, differentiable in ``y_hat``).

        Classification: masked cross-entropy on logits ``y_hat (T, B, n_out)`` averaged over counted steps.
        Regression: ``(1/B) Σ mask · ½ (y_hat − y)²``.
        """
        if self.kind == "classification":
            return classification_loss(y_hat, y, mask)
        return regression_loss(y_hat, y, mask)

    def accuracy(self, y_hat: Tensor, y: Tensor, mask: Tensor) -> float:
        """Fraction of correct decisions (classification) or R² (regression); see each task's docstring.

        Default classification rule: per-step ``argmax(y_hat) == y`` averaged over the masked steps.
        """
        if self.kind == "regression":
            return regression_score(y_hat, y, mask)
        correct = (y_hat.argmax(-1) == y).to(torch.float64)
        m = mask.to(torch.float64)
        return float((m * correct).sum() / m.sum())
