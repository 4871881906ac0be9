"""Density from dynamics (the paper's second application, §15.1): with the drift ``f`` and ``D`` known, train a density
model so that the stationary Fokker–Planck residual vanishes, ``r = ∇·f + f·s_φ − D(∇·s_φ + |s_φ|²)`` with the model's
own score ``s_φ = ∇ log p_φ``. The model is a Gaussian mixture whose score and score divergence have closed forms
(:func:`~spikelearn.objectives.scores.mixture_score`), so the loss ``mean r²`` at the training points is
differentiable in the means, the Cholesky factors of the precisions and the weights. No samples of ``p`` are needed:
the training points only say where the residual is enforced. (A normalising flow is not included: no flow library is
a dependency here.)
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from spikelearn.objectives.drifts import divergence
from spikelearn.objectives.scores import mixture_score
from spikelearn.objectives.validation import as_samples, check_drift_output

__all__ = ["MixtureDensity", "fit_density_from_dynamics", "total_variation_2d"]


class MixtureDensity(nn.Module):
    """Gaussian mixture ``Σ_k π_k N(μ_k, P_k⁻¹)`` with ``P_k = L_k L_kᵀ`` (``L_k`` lower triangular, positive diagonal).

    Args:
        init_points: ``(M, d)`` points; the means start at ``n_components`` of them and every precision at
            ``I / (init_scale · sd)²``.
    """

    def __init__(self, n_components: int, init_points: Tensor, *, init_scale: float = 0.5, seed: int = 0):
        super().__init__()
        x = as_samples(init_points)
        g = torch.Generator().manual_seed(seed)
        d = x.shape[1]
        idx = torch.randperm(x.shape[0], generator=g)[:n_components]
        self.means = nn.Parameter(x[idx].clone())
        sd = float(x.std(0).mean()) * init_scale
        self.log_diag = nn.Parameter(torch.full((n_components, d), -math.log(sd), dtype=x.dtype))
        self.lower = nn.Parameter(torch.zeros(n_components, d, d, dtype=x.dtype))
        self.logits = nn.Parameter(torch.zeros(n_components, dtype=x.dtype))

    def precisions(self) -> Tensor:
        d = self.means.shape[1]
        L = torch.tril(self.lower, diagonal=-1) + torch.diag_embed(self.log_diag.exp())
        return L @ L.transpose(1, 2) + 1e-9 * torch.eye(d, dtype=L.dtype)

    def score_and_divergence(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``s(x)`` ``(M, d)`` and ``∇·s(x)`` ``(M,)``, differentiable in the parameters."""
        return mixture_score(x, self.means, self.precisions(), torch.log_softmax(self.logits, 0))

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x)`` ``(M,)``."""
        P = self.precisions()
        diff = x[:, None, :] - self.means[None]
        quad = torch.einsum("mki,kij,mkj->mk", diff, P, diff)
        logdet = torch.linalg.slogdet(P)[1]
        d = x.shape[1]
        return torch.logsumexp(torch.log_softmax(self.logits, 0) + 0.5 * logdet - 0.5 * quad
                               - 0.5 * d * math.log(2 * math.pi), dim=1)


def fit_density_from_dynamics(drift: Callable[[Tensor], Tensor], D: float, x_train: Tensor, *,
                              n_components: int = 8, steps: int = 2000, lr: float = 1e-2, batch_size: int = 1024,
                              seed: int = 0) -> tuple[MixtureDensity, pd.DataFrame]:
    """Fit a :class:`MixtureDensity` to the stationary law of ``dx = f dt + √(2D) dW`` by the residual loss at the
    training points ``x_train`` ``(M, d)`` (Adam); returns the model and one row per step (``step``, ``loss``)."""
    x = as_samples(x_train)
    f, div_f = divergence(drift, x, create_graph=False)
    check_drift_output(f, x)
    f, div_f = f.detach(), div_f.detach()
    model = MixtureDensity(n_components, x, seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    rows = []
    for step in range(steps):
        idx = torch.randint(x.shape[0], (min(batch_size, x.shape[0]),), generator=g)
        s, div_s = model.score_and_divergence(x[idx])
        r = div_f[idx] + (f[idx] * s).sum(1) - D * (div_s + (s * s).sum(1))
        loss = r.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        rows.append({"step": step, "loss": float(loss.detach())})
    return model, pd.DataFrame(rows)


def total_variation_2d(log_prob: Callable[[Tensor], Tensor], reference: Tensor, *, bins: int = 60,
                       limits: tuple[tuple[float, float], tuple[float, float]] | None = None) -> float:
    """Total-variation distance between a 2-D density (``log_prob``) and the histogram of ``reference`` samples
    ``(N, 2)`` on a ``bins × bins`` grid (the density integrated by its value at cell centres)."""
    ref = as_samples(reference, dim=2)
    if limits is None:
        lo, hi = ref.min(0).values.numpy(), ref.max(0).values.numpy()
        limits = ((float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1])))
    ex = np.linspace(*limits[0], bins + 1)
    ey = np.linspace(*limits[1], bins + 1)
    hist, _, _ = np.histogram2d(ref[:, 0].numpy(), ref[:, 1].numpy(), bins=[ex, ey])
    hist = hist / ref.shape[0]
    cx, cy = (ex[:-1] + ex[1:]) / 2, (ey[:-1] + ey[1:]) / 2
    grid = torch.as_tensor(np.stack(np.meshgrid(cx, cy, indexing="ij"), -1).reshape(-1, 2))
    with torch.no_grad():
        p = log_prob(grid).exp().numpy().reshape(bins, bins) * (ex[1] - ex[0]) * (ey[1] - ey[0])
    return 0.5 * float(np.abs(p - hist).sum() + max(0.0, 1.0 - p.sum()))
