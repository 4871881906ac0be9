"""Row-wise sequential digits: a small, offline stand-in for sequential MNIST (ALGORITHMS.md §10.7)."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from spikelearn.tasks.base import Task, Trials, check

__all__ = ["SequentialDigits"]


@functools.lru_cache(maxsize=8)
def _digits_split(split: str, test_fraction: float, split_seed: int) -> tuple[Tensor, Tensor]:
    """Images ``(n, 8, 8)`` in [0, 1] (float64) and labels ``(n,)`` (int64) of one split, CPU, cached."""
    from sklearn.datasets import load_digits  # lazy: sklearn is only needed when this task is sampled

    data: Any = load_digits()  # a Bunch (its annotation also allows the return_X_y tuple)
    images = torch.as_tensor(data.images, dtype=torch.float64) / 16.0
    labels = torch.as_tensor(data.target, dtype=torch.int64)
    n = images.shape[0]
    n_test = math.ceil(n * test_fraction)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    idx = perm[:n_test] if split == "test" else perm[n_test:]
    idx = idx.sort().values
    return images[idx].contiguous(), labels[idx].contiguous()


@dataclass(frozen=True)
class SequentialDigits(Task):
    """Classify scikit-learn's 8×8 handwritten digits presented one row per step.

    ``x[t, b] = image_b[row t] / 16`` (8 analog inputs in [0, 1], T = 8 steps), 10 classes, label tiled over all
    steps, mask and accuracy on the last step only. Data: ``sklearn.datasets.load_digits`` (1797 images, shipped
    with scikit-learn, no download); a fixed permutation from ``split_seed`` puts ``ceil(1797·test_fraction)``
    images in ``"test"`` and the rest in ``"train"`` (1437/360 by default). ``sample`` draws images uniformly with
    replacement from the chosen split using the passed generator.

    Differences from row-wise sequential MNIST (BiolHessRNN, rich/lazy): 8×8 instead of 28×28 images, so T = 8
    instead of 28 steps and 8 instead of 28 inputs; 1797 instead of 70 000 images; coarse 17-level pixels
    (0–16). It is much easier and shorter, meant for fast tests and CPU experiments, not for comparing numbers with
    the sMNIST papers.

    ``input_noise_std`` adds ``N(0, σ²)`` per pixel and clips to [0, 1], like BiolHessRNN's noisy test set.

    ``info``: ``index (B,)`` (row in the split), ``label (B,)``.
    """

    kind: ClassVar[str] = "classification"
    encoding: ClassVar[str] = "analog"

    split: str = "train"
    test_fraction: float = 0.2
    split_seed: int = 0
    dt_ms: float = 1.0  # nominal: one step per image row
    input_noise_std: float = 0.0

    @property
    def n_in(self) -> int:
        return 8

    @property
    def n_out(self) -> int:
        return 10

    @property
    def n_steps(self) -> int:
        return 8

    def _validate(self) -> None:
        check(self.split in ("train", "test"), "split", "be 'train' or 'test'", self.split)
        check(0 < self.test_fraction < 1, "test_fraction", "lie in (0, 1)", self.test_fraction)
        check(isinstance(self.split_seed, int), "split_seed", "be an int", self.split_seed)

    def data(self) -> tuple[Tensor, Tensor]:
        """All images ``(n, 8, 8)`` in [0, 1] and labels ``(n,)`` of this split (float64 / int64, CPU)."""
        images, labels = _digits_split(self.split, float(self.test_fraction), self.split_seed)
        return images.clone(), labels.clone()

    def _postprocess_noisy(self, x: Tensor) -> Tensor:
        return x.clamp(0.0, 1.0)

    def _generate(self, batch_size: int, generator: torch.Generator) -> Trials:
        dev = generator.device
        images, labels = _digits_split(self.split, float(self.test_fraction), self.split_seed)
        idx = torch.randint(0, images.shape[0], (batch_size,), generator=generator, device=dev)
        idx_cpu = idx.cpu()
        x = images[idx_cpu].permute(1, 0, 2).to(dev)  # (8 rows = T, B, 8 columns)
        label = labels[idx_cpu].to(dev)
        y = label[None, :].expand(self.n_steps, batch_size).clone()
        mask = torch.zeros(self.n_steps, batch_size, dtype=torch.float64, device=dev)
        mask[-1] = 1.0
        return Trials(x.contiguous(), y, mask, {"index": idx.to(torch.int64), "label": label})
