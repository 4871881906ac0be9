r"""Convolutional networks with lateral connections learned by an unsupervised co-activation rule (ALGORITHMS-2 §16).

After Hu & Mihalas 2018 (arXiv 1810.11594, "CNNEx"): a small CNN trained by backprop whose last feature maps are
followed by **lateral connections** between maps at spatial offsets ``|Δ|∞ ≤ r``, applied recurrently for a few steps
before the classifier; the lateral weights are not trained by backprop but computed from activity statistics on
unlabeled images. Only the paper's abstract could be read: the rule below is **this package's own specification**
(ALGORITHMS-2 §16, tagged [D]), not the paper's.

The rule. With ``a_k(x) ≥ 0`` the activity of map ``k`` at position ``x`` (the last conv layer, after its ReLU),

.. math::

    R_{kk'}(Δ) = \frac{E[a_k(x)\, a_{k'}(x+Δ)]}{E[a_k]\, E[a_{k'}] + ε} - 1, \qquad
    W_{kk'}(Δ) = R_{kk'}(Δ) - β \langle R \rangle

(co-activation above chance, minus a global inhibitory term: ``β`` times the mean of ``R`` over every pair and
offset, so that with ``β = 1`` excitation and inhibition balance). ``E[a_k(x) a_{k'}(x+Δ)]`` averages over images and
over the positions where both ``x`` and ``x + Δ`` lie inside the map; ``E[a_k]`` over images and all positions.
A channel whose mean activity is at most ``silent_threshold`` is *silent*: its pairs get weight 0 (``ε`` alone would
give them ``-1``). The self-connection ``W_{kk}(0)`` is 0 unless asked for. Variants (``kind``):

* ``"ratio"``: the rule above;
* ``"covariance"``: ``C_{kk'}(Δ) = E[a_k a_{k'}(·+Δ)] - E[a_k]E[a_{k'}]`` with subtractive normalisation (each
  post map's incoming weights made to sum to zero);
* ``"pmi"``: pointwise mutual information of the events ``a > active_threshold``,
  ``log((P(both) + ε) / (P(k) P(k') + ε))``.

One pass or online: the rule keeps running estimates of its sufficient statistics (the means, the co-activations,
and the event probabilities), :class:`CoactivationStats`. ``update`` with ``rate=None`` is the exact cumulative
average, so streaming the data batch by batch gives the one-pass estimate; a constant ``rate = η`` is the local
Hebbian form ``S ← S + η (a_post a_pre − S)`` of each synapse's own trace (and ``m ← m + η (a − m)`` for each unit).

Conventions. Lateral weights are a conv kernel ``(C_post, C_pre, 2r+1[, 2r+1])`` with ``W[k, k', r + Δ] =
W_{kk'}(Δ)`` (the package's ``(post, pre)`` order; torch's conv is a cross-correlation, so the post unit at ``x``
reads the pre unit at ``x + Δ``). The recurrent lateral steps are time-first: ``h_0 = a`` and
``h_t = relu(a + W ⋆ h_{t-1})`` for ``t = 1..T``; :meth:`LateralCNN.lateral_steps` returns ``(T, B, C, *spatial)``,
index ``t-1`` = after step ``t``. ``W = 0`` gives ``h_t = a`` (``a ≥ 0``): the network is then exactly the plain CNN.
The lateral connectivity of a small grid, positions × channels expanded into units, is a
:class:`~spikelearn.circuit.Circuit` (:func:`lateral_circuit`).

Data: scikit-learn's 8×8 digits (:func:`load_digits_images`, the 1437/360 split of
:class:`~spikelearn.tasks.SequentialDigits`), ``mnist1d`` generated locally (:func:`load_mnist1d`), and a user's
local MNIST (IDX files) or CIFAR-10 (python pickles) copy (:func:`load_mnist`, :func:`load_cifar10`); nothing is
ever downloaded.

Example — the three training phases (a test runs this block)::

    import torch
    from spikelearn.lateral import (CoactivationRule, LateralCNN, accuracy, add_noise, lateral_circuit,
                                    learn_lateral, load_digits_images, train_classifier)

    xtr, ytr, xte, yte = load_digits_images()
    torch.manual_seed(0)
    net = LateralCNN(2, (1, 8, 8), 10, channels=(8, 16), radius=1, lateral_steps=3)
    train_classifier(net, xtr, ytr, epochs=2)                                        # 1: backprop, clean images
    W, stats = learn_lateral(net, xtr, CoactivationRule(kind="ratio", radius=1), gain=0.5)  # 2: the rule, unlabeled
    train_classifier(net, xtr, ytr, epochs=1, head_only=True)                        # 3: classifier retrained
    noisy = accuracy(net, add_noise(xte, 0.3, torch.Generator().manual_seed(0)), yte)
    circuit = lateral_circuit(net.lateral_weight, (4, 4))                            # 16 positions x 16 maps
"""

from __future__ import annotations

import functools
import gzip
import pathlib
import pickle
import random
import struct
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spikelearn.circuit import Circuit
from spikelearn.optional import require
from spikelearn.tasks import SequentialDigits

__all__ = [
    "CoactivationRule", "CoactivationStats", "LateralCNN", "accuracy", "add_noise", "lateral_circuit",
    "learn_lateral", "load_cifar10", "load_digits_images", "load_mnist", "load_mnist1d", "scale_lateral",
    "train_classifier",
]

KINDS = ("ratio", "covariance", "pmi")


# --------------------------------------------------------------------------------------------------- the network
class LateralCNN(nn.Module):
    """A small CNN (1-D or 2-D) with recurrent lateral connections on its last feature maps.

    ``x → [conv → ReLU] × len(channels) → a → lateral steps → h_T → max-pool(pool) → flatten → dropout → linear``.
    Convolutions keep the spatial size (padding ``kernel_size // 2``). The lateral kernel is a buffer (learned by
    :class:`CoactivationRule`, not by backprop), zero at construction.

    Args:
        dim: 1 (inputs ``(B, C_in, L)``) or 2 (inputs ``(B, C_in, H, W)``).
        in_shape: ``(C_in, *spatial)`` of one input, e.g. ``(1, 8, 8)`` or ``(1, 40)``.
        n_classes: number of outputs.
        channels: output channels of each conv layer; the last is ``C``, the number of maps with lateral links.
        kernel_size: conv kernel width.
        radius: lateral radius ``r`` (offsets ``|Δ|∞ ≤ r``).
        lateral_steps: ``T``, the number of recurrent lateral steps.
        pool: max-pool factor before the classifier.
        dropout: dropout probability before the linear classifier (0 = none).
    """

    lateral_weight: Tensor  # (C, C, *(2r+1,)*dim) buffer, (post, pre, offset)

    def __init__(self, dim: int, in_shape: tuple[int, ...], n_classes: int, *, channels: tuple[int, ...] = (16, 32),
                 kernel_size: int = 3, radius: int = 1, lateral_steps: int = 3, pool: int = 2,
                 dropout: float = 0.0):
        super().__init__()
        if dim not in (1, 2) or len(in_shape) != dim + 1:
            raise ValueError(f"dim must be 1 or 2 with in_shape (C_in, *spatial) of length dim + 1, got "
                             f"dim={dim}, in_shape={in_shape}")
        self.dim, self.in_shape, self.radius, self.n_lateral_steps = dim, tuple(in_shape), radius, lateral_steps
        conv = nn.Conv1d if dim == 1 else nn.Conv2d
        c_prev, layers = in_shape[0], []
        for c in channels:
            layers += [conv(c_prev, c, kernel_size, padding=kernel_size // 2), nn.ReLU()]
            c_prev = c
        self.features = nn.Sequential(*layers)
        self.n_maps = c_prev
        self.register_buffer("lateral_weight", torch.zeros(c_prev, c_prev, *(2 * radius + 1,) * dim))
        self.pool = (nn.MaxPool1d if dim == 1 else nn.MaxPool2d)(pool)
        self.dropout = nn.Dropout(dropout)
        n_flat = c_prev * int(np.prod([s // pool for s in in_shape[1:]]))
        self.classifier = nn.Linear(n_flat, n_classes)

    def lateral_steps(self, a: Tensor) -> Tensor:
        """The recurrent lateral steps on feature maps ``a`` ``(B, C, *spatial)``, ``a ≥ 0``.

        Returns ``(T, B, C, *spatial)``: ``h_t = relu(a + W ⋆ h_{t-1})``, ``h_0 = a``; row ``t-1`` is after step t.
        """
        conv = F.conv1d if self.dim == 1 else F.conv2d
        w = self.lateral_weight.to(a.dtype)
        h, out = a, []
        for _ in range(self.n_lateral_steps):
            h = F.relu(a + conv(h, w, padding=self.radius))
            out.append(h)
        return torch.stack(out) if out else a[None]

    def head(self, h: Tensor) -> Tensor:
        """Classifier on the final maps ``h`` ``(B, C, *spatial)`` -> logits ``(B, n_classes)``."""
        return self.classifier(self.dropout(self.pool(h).flatten(1)))

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, n_classes)`` of inputs ``x`` ``(B, *in_shape)``."""
        return self.head(self.lateral_steps(self.features(x))[-1])

    def set_lateral(self, weight: Tensor) -> None:
        """Install a lateral kernel ``(C, C, *(2r+1,)*dim)`` (``(post, pre, offset)``)."""
        if tuple(weight.shape) != tuple(self.lateral_weight.shape):
            raise ValueError(f"lateral kernel has shape {tuple(weight.shape)}, expected "
                             f"{tuple(self.lateral_weight.shape)}")
        with torch.no_grad():
            self.lateral_weight.copy_(weight)


def scale_lateral(weight: Tensor, gain: float) -> Tensor:
    """``weight`` scaled so that the largest total absolute input of a post map, ``max_k Σ_{k',Δ} |W_{kk'}(Δ)|``, is
    ``gain``. With ``gain < 1`` one lateral step is a contraction (ReLU is 1-Lipschitz), so the recurrence settles;
    an all-zero kernel stays zero. This normalisation is our choice, not the paper's."""
    total = weight.abs().flatten(1).sum(1).max()
    return weight * (gain / total) if total > 0 else weight.clone()


def lateral_circuit(weight: Tensor | np.ndarray, grid: tuple[int, ...], *, include_self: bool = False) -> Circuit:
    """The lateral connectivity of a grid of positions ``grid`` (``(L,)`` or ``(H, W)``) × ``C`` maps as a Circuit.

    Unit ``(k, *x)`` (node id) is map ``k`` at position ``x``; the edge from ``(k', x + Δ)`` to ``(k, x)`` exists for
    every in-grid offset ``|Δ|∞ ≤ r`` (zero weights stay edges) and carries ``weight[k, k', r + Δ]``. The self-edge
    ``(k, x) → (k, x)`` is left out unless ``include_self``. Cell type = ``"map<k>"``.
    """
    w = np.asarray(weight.detach().cpu() if isinstance(weight, Tensor) else weight, dtype=np.float64)
    C, dim = w.shape[0], w.ndim - 2
    if len(grid) != dim:
        raise ValueError(f"grid {grid} has {len(grid)} dimensions, the kernel {dim}")
    r = (w.shape[2] - 1) // 2
    positions = list(np.ndindex(*grid))
    units = [(k, *x) for k in range(C) for x in positions]
    index = {u: i for i, u in enumerate(units)}
    n = len(units)
    W, mask = np.zeros((n, n)), np.zeros((n, n), dtype=bool)
    for (k, *x) in units:
        for kp in range(C):
            for d in np.ndindex(*(2 * r + 1,) * dim):
                delta = [di - r for di in d]
                y = tuple(xi + di for xi, di in zip(x, delta))
                if any(not 0 <= yi < g for yi, g in zip(y, grid)):
                    continue
                if kp == k and not any(delta) and not include_self:
                    continue
                i, j = index[(k, *x)], index[(kp, *y)]
                mask[i, j] = True
                W[i, j] = w[(k, kp, *d)]
    return Circuit.from_dense(W, mask=mask, node_ids=units, cell_types=[f"map{u[0]}" for u in units],
                              metadata={"generator": "lateral_circuit", "grid": tuple(grid), "radius": r})


# ------------------------------------------------------------------------------------------------------ the rule
class CoactivationStats(NamedTuple):
    """Running sufficient statistics of :class:`CoactivationRule` (``C`` maps, window ``w = 2r+1``).

    n: number of images seen (float). mean: ``(C,)`` ``E[a_k]``. coact: ``(C, C, *(w,)*dim)``
    ``E[a_k(x) a_{k'}(x+Δ)]`` at ``[k, k', r + Δ]``. p_active: ``(C,)`` ``P(a_k > θ)``. p_joint: like ``coact``,
    ``P(a_k(x) > θ, a_{k'}(x+Δ) > θ)``.
    """

    n: float
    mean: Tensor
    coact: Tensor
    p_active: Tensor
    p_joint: Tensor


def _shifted_products(a: Tensor, b: Tensor, radius: int) -> Tensor:
    """``out[k, k', r + Δ]`` = mean over batch and valid positions ``x`` of ``a[:, k, x] · b[:, k', x + Δ]``;
    ``a, b``: ``(B, C, *spatial)`` -> ``(C, C, *(2r+1,)*dim)``."""
    spatial = a.shape[2:]
    dim = len(spatial)
    C = a.shape[1]
    out = a.new_zeros((C, C) + (2 * radius + 1,) * dim)
    for d in np.ndindex(*(2 * radius + 1,) * dim):
        post_sl, pre_sl = [], []
        for di, size in zip(d, spatial):
            delta = di - radius
            post_sl.append(slice(max(0, -delta), size - max(0, delta)))
            pre_sl.append(slice(max(0, delta), size + min(0, delta)))
        pa = a[(slice(None), slice(None), *post_sl)].flatten(2)  # (B, C, P) posts at x
        pb = b[(slice(None), slice(None), *pre_sl)].flatten(2)   # (B, C, P) pres at x + Δ
        if pa.shape[2] == 0:
            continue
        out[(slice(None), slice(None), *d)] = torch.einsum("bkp,bjp->kj", pa, pb) / (pa.shape[0] * pa.shape[2])
    return out


@dataclass(frozen=True)
class CoactivationRule:
    """The unsupervised lateral rule of ALGORITHMS-2 §16 (this package's specification; see the module docstring).

    Reads feature maps ``a`` ``(B, C, *spatial)`` (non-negative); updates only its own statistics; writes a lateral
    kernel ``(C, C, *(2r+1,)*dim)`` (``(post, pre, offset)``).

    Attributes:
        kind: ``"ratio"`` (co-activation above chance), ``"covariance"`` (subtractive normalisation) or ``"pmi"``.
        radius: ``r``; offsets ``|Δ|∞ ≤ r``.
        eps: ``ε`` in the denominators.
        inhibition: ``β``, the global inhibitory term ``β ⟨R⟩`` subtracted from every weight.
        silent_threshold: a map whose mean activity (``"pmi"``: event probability) is at most this is silent and
            gets no lateral weights.
        active_threshold: ``θ``, the activity above which a unit counts as active (``"pmi"``).
        self_connection: keep ``W_{kk}(0)`` (default: set to 0).
    """

    kind: str = "ratio"
    radius: int = 1
    eps: float = 1e-6
    inhibition: float = 1.0
    silent_threshold: float = 1e-6
    active_threshold: float = 0.0
    self_connection: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.radius < 0:
            raise ValueError(f"radius must be >= 0, got {self.radius}")

    def init_state(self, n_maps: int, dim: int, dtype: torch.dtype = torch.float64) -> CoactivationStats:
        """Empty statistics for ``n_maps`` maps of a ``dim``-dimensional layer."""
        kshape = (n_maps, n_maps) + (2 * self.radius + 1,) * dim
        return CoactivationStats(0.0, torch.zeros(n_maps, dtype=dtype), torch.zeros(kshape, dtype=dtype),
                                 torch.zeros(n_maps, dtype=dtype), torch.zeros(kshape, dtype=dtype))

    def update(self, state: CoactivationStats, a: Tensor, rate: float | None = None) -> CoactivationStats:
        """Fold a batch of maps ``a`` ``(B, C, *spatial)`` into the statistics.

        ``rate=None``: exact running average (weight ``B / (n + B)``), so any split of the data into batches gives
        the one-pass statistics. ``rate=η``: the local Hebbian trace ``S ← S + η (batch mean − S)``.
        """
        a = a.detach().to(state.mean.dtype)
        B = a.shape[0]
        spatial_axes = (0,) + tuple(range(2, a.ndim))
        act = (a > self.active_threshold).to(a.dtype)
        batch = (a.mean(spatial_axes), _shifted_products(a, a, self.radius),
                 act.mean(spatial_axes), _shifted_products(act, act, self.radius))
        eta = B / (state.n + B) if rate is None else float(rate)
        new = [s + eta * (b - s) for s, b in zip(state[1:], batch)]
        return CoactivationStats(state.n + B, *new)

    def fit(self, a: Tensor) -> Tensor:
        """One pass: the lateral kernel of maps ``a`` ``(B, C, *spatial)``."""
        return self.weights(self.update(self.init_state(a.shape[1], a.ndim - 2), a))

    def weights(self, state: CoactivationStats) -> Tensor:
        """The lateral kernel ``(C, C, *(2r+1,)*dim)`` of the statistics (float64)."""
        if self.kind == "pmi":
            m, joint = state.p_active, state.p_joint
        else:
            m, joint = state.mean, state.coact
        C, dim = m.shape[0], joint.ndim - 2
        bcast = (C, C) + (1,) * dim
        chance = (m[:, None] * m[None, :]).reshape(bcast)
        if self.kind == "ratio":
            W = joint / (chance + self.eps) - 1.0
        elif self.kind == "pmi":
            W = torch.log((joint + self.eps) / (chance + self.eps))
        else:
            W = joint - chance
        alive = m > self.silent_threshold
        keep = (alive[:, None] & alive[None, :]).reshape(bcast).expand_as(W).clone()
        if not self.self_connection:
            centre = (slice(None), slice(None)) + (self.radius,) * dim
            eye = torch.eye(C, dtype=torch.bool)
            keep[centre] = keep[centre] & ~eye
        W = torch.where(keep, W, torch.zeros_like(W))
        per_post = (C,) + (1,) * (dim + 1)
        n_in = keep.flatten(1).sum(1).clamp(min=1).reshape(per_post)
        if self.kind == "covariance":  # subtractive normalisation: each post map's inputs sum to zero
            W = torch.where(keep, W - W.flatten(1).sum(1).reshape(per_post) / n_in, W)
        if self.inhibition and keep.any():
            W = torch.where(keep, W - self.inhibition * W[keep].mean(), W)
        return W


def learn_lateral(model: LateralCNN, x: Tensor, rule: CoactivationRule, *, gain: float,
                  batch_size: int = 256) -> tuple[Tensor, CoactivationStats]:
    """Phase 2: the rule's statistics of ``model``'s feature maps on unlabeled images ``x`` ``(n, *in_shape)``
    (feed-forward weights untouched, no gradients), streamed in batches; installs ``scale_lateral(W, gain)``.

    Returns the raw kernel (before scaling, float64) and the statistics.
    """
    state = rule.init_state(model.n_maps, model.dim)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            state = rule.update(state, model.features(x[i:i + batch_size]))
    model.train(was_training)
    W = rule.weights(state)
    model.set_lateral(scale_lateral(W, gain).to(model.lateral_weight.dtype))
    return W, state


# ------------------------------------------------------------------------------------------------------ training
def train_classifier(model: LateralCNN, x: Tensor, y: Tensor, *, epochs: int, lr: float = 3e-3,
                     weight_decay: float = 0.0, batch_size: int = 64, head_only: bool = False,
                     generator: torch.Generator | None = None) -> list[float]:
    """Backprop with Adam (decoupled weight decay, AdamW) on cross-entropy; ``head_only`` trains the linear
    classifier alone (phase 3). Mini-batches are shuffled with ``generator``. Returns the mean loss per epoch."""
    params = model.classifier.parameters() if head_only else model.parameters()
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    model.train()
    losses = []
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=generator)
        total = 0.0
        for i in range(0, x.shape[0], batch_size):
            idx = perm[i:i + batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * idx.numel()
        losses.append(total / x.shape[0])
    model.eval()
    return losses


def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1024) -> float:
    """Fraction of ``x`` classified as ``y`` (eval mode, no gradients)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
                      for i in range(0, x.shape[0], batch_size))
    model.train(was_training)
    return correct / x.shape[0]


def add_noise(x: Tensor, sigma: float, generator: torch.Generator | None = None) -> Tensor:
    """``x + N(0, σ²)`` per element, not clipped (σ is in the data's own units)."""
    return x + sigma * torch.randn(x.shape, generator=generator, dtype=x.dtype)


# ---------------------------------------------------------------------------------------------------------- data
Split = tuple[Tensor, Tensor, Tensor, Tensor]  # x_train, y_train, x_test, y_test


def load_digits_images(test_fraction: float = 0.2, split_seed: int = 0) -> Split:
    """scikit-learn's 8×8 digits as images ``(n, 1, 8, 8)`` in [0, 1] (float32) with int64 labels, in the train/test
    split of :class:`~spikelearn.tasks.SequentialDigits` (1437 / 360 by default)."""
    out = []
    for split in ("train", "test"):
        images, labels = SequentialDigits(split=split, test_fraction=test_fraction, split_seed=split_seed).data()
        out += [images[:, None].float(), labels]
    return out[0], out[1], out[2], out[3]


@functools.lru_cache(maxsize=2)
def _mnist1d_arrays(seed: int, num_samples: int) -> tuple[np.ndarray, ...]:
    data = require("mnist1d.data", "the mnist1d data set")
    args = data.get_dataset_args()
    args.seed, args.num_samples = seed, num_samples
    np_state, py_state = np.random.get_state(), random.getstate()  # make_dataset seeds the global generators
    try:
        d = data.make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return d["x"], d["y"], d["x_test"], d["y_test"]


def load_mnist1d(seed: int = 42, num_samples: int = 5000) -> Split:
    """The ``mnist1d`` data set generated locally (its default arguments: length-40 signals, 80/20 split; never the
    download): ``(n, 1, 40)`` float32 signals and int64 labels. Needs the optional package ``mnist1d``."""
    xtr, ytr, xte, yte = _mnist1d_arrays(seed, num_samples)
    return (torch.as_tensor(xtr, dtype=torch.float32)[:, None], torch.as_tensor(ytr, dtype=torch.int64),
            torch.as_tensor(xte, dtype=torch.float32)[:, None], torch.as_tensor(yte, dtype=torch.int64))


def _read_idx(path: pathlib.Path) -> np.ndarray:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {raw[:4].hex()})")
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: {data.size} bytes of data for shape {shape}")
    return data.reshape(shape)


def _find(root: pathlib.Path, stem: str) -> pathlib.Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"no {stem}[.gz] in {root} (expected a local copy of MNIST's IDX files)")


def load_mnist(path: str | pathlib.Path) -> Split:
    """A local copy of MNIST (the four IDX files ``train-images-idx3-ubyte`` ... ``t10k-labels-idx1-ubyte``, optionally
    gzipped) in folder ``path``: images ``(n, 1, 28, 28)`` in [0, 1] (float32), int64 labels. Never downloads."""
    root = pathlib.Path(path)
    parts = [_read_idx(_find(root, f"{s}-{k}")) for s in ("train", "t10k")
             for k in ("images-idx3-ubyte", "labels-idx1-ubyte")]
    for images, labels in (parts[:2], parts[2:]):
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{root}: {images.shape[0]} images but {labels.shape[0]} labels")
    x_tr, x_te = (torch.as_tensor(parts[i].astype(np.float32) / 255.0)[:, None] for i in (0, 2))
    return x_tr, torch.as_tensor(parts[1].astype(np.int64)), x_te, torch.as_tensor(parts[3].astype(np.int64))


def load_cifar10(path: str | pathlib.Path) -> Split:
    """A local copy of CIFAR-10's python version (folder ``path``, or its subfolder ``cifar-10-batches-py``, with
    ``data_batch_1..5`` and ``test_batch``): images ``(n, 3, 32, 32)`` in [0, 1] (float32), int64 labels. Never
    downloads. The batches are pickles: load only a copy you trust."""
    root = pathlib.Path(path)
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"

    def batch(name: str) -> tuple[np.ndarray, np.ndarray]:
        with open(root / name, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        return np.asarray(d[b"data"], dtype=np.uint8), np.asarray(d[b"labels"], dtype=np.int64)

    train_names = sorted(p.name for p in root.glob("data_batch_*"))
    if not train_names or not (root / "test_batch").is_file():
        raise FileNotFoundError(f"no data_batch_* / test_batch in {root} (expected CIFAR-10's python version)")
    tr = [batch(n) for n in train_names]
    te = batch("test_batch")
    x_tr, x_te = (torch.as_tensor(a.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)
                  for a in (np.concatenate([t[0] for t in tr]), te[0]))
    return x_tr, torch.as_tensor(np.concatenate([t[1] for t in tr])), x_te, torch.as_tensor(te[1])
