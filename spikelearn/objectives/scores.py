"""Score estimates ``s = ∇ log p`` and their divergences ``∇·s`` from samples, for the local route (§15.2).

Every estimator is a small object with hyperparameters only; ``fit(x)`` learns from samples ``(M, d)`` and returns
the fitted estimator, ``evaluate(x)`` returns ``(s, div_s)``, ``(M, d)`` and ``(M,)``.

* :class:`KDEScore` — a Gaussian-kernel density estimate with kernel covariance ``c² Σ̂`` (Scott's factor
  ``c = M^{−1/(d+4)}`` unless given); evaluated at its own training points it leaves each point out (only the point
  itself: the duplicates of a bootstrap resample stay in).
* :class:`GMMScore` — a Gaussian mixture fitted by scikit-learn (full covariances; ``n_components`` an int or a list
  chosen by BIC).
* :class:`DSMScore` — denoising score matching with a small MLP (Vincent 2011): minimises
  ``E|s_φ(x + σε) + ε/σ|²``, the score of ``p`` smoothed by ``N(0, σ²)`` on standardised data. Its divergence is exact
  in low dimension and a Hutchinson estimate in high dimension.

For a mixture with components ``N(μ_k, P_k⁻¹)`` and responsibilities ``γ_k(x)`` (the KDE is one, with one component per
sample): ``s = Σ γ_k s_k`` with ``s_k = −P_k (x − μ_k)``, and ``∇·s = Σ γ_k (|s_k|² − tr P_k) − |s|²`` (since
``∇γ_k = γ_k (s_k − s)``) — closed forms in any dimension.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from spikelearn.objectives.drifts import divergence
from spikelearn.objectives.validation import as_samples
from spikelearn.optional import require

__all__ = ["KDEScore", "GMMScore", "DSMScore", "ScoreEstimator", "mixture_score"]


def mixture_score(x: Tensor, means: Tensor, precisions: Tensor, log_weights: Tensor,
                   exclude: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Score and its divergence of a Gaussian mixture: means ``(K, d)``, precisions ``(K, d, d)``."""
    diff = x[:, None, :] - means[None]                           # (M, K, d)
    sk = -torch.einsum("kij,mkj->mki", precisions, diff)         # s_k = −P_k (x − μ_k)
    _, logdet = torch.linalg.slogdet(precisions)
    logp = log_weights + 0.5 * logdet - 0.5 * (-(diff * sk).sum(-1))
    if exclude is not None:
        logp = logp.masked_fill(exclude, float("-inf"))
    gamma = torch.softmax(logp, dim=1)                           # (M, K)
    s = (gamma[:, :, None] * sk).sum(1)
    tr = torch.diagonal(precisions, dim1=1, dim2=2).sum(-1)      # (K,)
    div = (gamma * ((sk * sk).sum(-1) - tr)).sum(1) - (s * s).sum(1)
    return s, div


class ScoreEstimator:
    """Base of the score estimators: ``fit(x) -> self``, ``evaluate(x) -> (s, div_s)``."""

    def fit(self, x: Tensor) -> "ScoreEstimator":  # pragma: no cover - interface
        raise NotImplementedError

    def evaluate(self, x: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass
class KDEScore(ScoreEstimator):
    """Gaussian-kernel density score; ``bandwidth_factor`` ``c`` scales the sample covariance (Scott's if None)."""

    bandwidth_factor: float | None = None
    chunk: int = 512
    x_: Tensor | None = field(default=None, repr=False)
    precision_: Tensor | None = field(default=None, repr=False)

    def fit(self, x: Tensor) -> "KDEScore":
        x = as_samples(x)
        m, d = x.shape
        c = self.bandwidth_factor if self.bandwidth_factor is not None else m ** (-1.0 / (d + 4))
        cov = torch.atleast_2d(torch.cov(x.T)) * c * c
        self.x_, self.precision_ = x, torch.linalg.inv(cov)
        return self

    def evaluate(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.x_ is None or self.precision_ is None:
            raise RuntimeError("KDEScore.evaluate before fit")
        x = as_samples(x, dim=self.x_.shape[1])
        xs, P = self.x_, self.precision_
        own = x.shape == xs.shape and bool(torch.equal(x, xs))   # leave each training point out
        qs = ((xs @ P) * xs).sum(1)                               # x_mᵀ P x_m
        P2 = P @ P
        s_out, d_out = [], []
        for start in range(0, x.shape[0], self.chunk):
            xc = x[start:start + self.chunk]
            logw = xc @ P @ xs.T - 0.5 * qs[None]                 # log kernel up to a per-row constant
            if own:
                rows = torch.arange(xc.shape[0])
                logw[rows, rows + start] = float("-inf")
            g = torch.softmax(logw, dim=1)                        # (A, M)
            mean = g @ xs                                         # Σ γ_m x_m
            s = -(xc - mean) @ P
            # Σ γ_m |P (x − x_m)|² = xᵀP²x − 2 xᵀP² x̄_γ + Σ γ_m x_mᵀ P² x_m
            q2 = ((xs @ P2) * xs).sum(1)
            sum_sk2 = ((xc @ P2) * xc).sum(1) - 2 * ((xc @ P2) * mean).sum(1) + g @ q2
            s_out.append(s)
            d_out.append(sum_sk2 - torch.trace(P) - (s * s).sum(1))
        return torch.cat(s_out), torch.cat(d_out)


@dataclass
class GMMScore(ScoreEstimator):
    """Gaussian-mixture score (scikit-learn ``GaussianMixture``, full covariances); a list of ``n_components``
    is searched by BIC."""

    n_components: int | tuple[int, ...] = 8
    seed: int = 0
    reg_covar: float = 1e-6
    max_iter: int = 200
    means_: Tensor | None = field(default=None, repr=False)
    precisions_: Tensor | None = field(default=None, repr=False)
    log_weights_: Tensor | None = field(default=None, repr=False)
    chosen_components_: int | None = None

    def fit(self, x: Tensor) -> "GMMScore":
        x = as_samples(x)
        mixture = require("sklearn.mixture", "GMMScore (a Gaussian-mixture score)")
        xn = x.detach().cpu().numpy()
        ks = (self.n_components,) if isinstance(self.n_components, int) else tuple(self.n_components)
        best, best_bic = None, np.inf
        for k in ks:
            gm = mixture.GaussianMixture(k, covariance_type="full", random_state=self.seed, reg_covar=self.reg_covar,
                                         max_iter=self.max_iter).fit(xn)
            bic = gm.bic(xn) if len(ks) > 1 else 0.0
            if best is None or bic < best_bic:
                best, best_bic = gm, bic
        assert best is not None
        self.means_ = torch.as_tensor(best.means_, dtype=x.dtype)
        self.precisions_ = torch.as_tensor(best.precisions_, dtype=x.dtype)
        self.log_weights_ = torch.as_tensor(np.log(best.weights_), dtype=x.dtype)
        self.chosen_components_ = int(best.n_components)
        return self

    def evaluate(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.means_ is None or self.precisions_ is None or self.log_weights_ is None:
            raise RuntimeError("GMMScore.evaluate before fit")
        x = as_samples(x, dim=self.means_.shape[1])
        return mixture_score(x, self.means_, self.precisions_, self.log_weights_)


class _MLP(nn.Module):
    def __init__(self, d: int, hidden: int, dtype: torch.dtype):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, hidden, dtype=dtype), nn.SiLU(), nn.Linear(hidden, hidden, dtype=dtype),
                                 nn.SiLU(), nn.Linear(hidden, d, dtype=dtype))

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


@dataclass
class DSMScore(ScoreEstimator):
    """Denoising-score-matching network; ``noise_std`` in units of each dimension's standard deviation."""

    hidden: int = 64
    noise_std: float = 0.1
    steps: int = 2000
    batch_size: int = 512
    lr: float = 2e-3
    seed: int = 0
    divergence_method: str = "auto"
    n_probes: int = 8
    net_: nn.Module | None = field(default=None, repr=False)
    loc_: Tensor | None = field(default=None, repr=False)
    scale_: Tensor | None = field(default=None, repr=False)

    def fit(self, x: Tensor) -> "DSMScore":
        x = as_samples(x)
        g = torch.Generator().manual_seed(self.seed)
        loc, scale = x.mean(0), x.std(0).clamp_min(1e-12)
        z = (x - loc) / scale
        with torch.random.fork_rng():          # seeded initialisation without touching the caller's global RNG
            torch.manual_seed(self.seed)
            net = _MLP(x.shape[1], self.hidden, x.dtype)
        opt = torch.optim.Adam(net.parameters(), lr=self.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, self.steps)
        for _ in range(self.steps):
            idx = torch.randint(z.shape[0], (min(self.batch_size, z.shape[0]),), generator=g)
            eps = torch.randn(len(idx), z.shape[1], generator=g, dtype=z.dtype)
            loss = ((net(z[idx] + self.noise_std * eps) + eps / self.noise_std) ** 2).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        self.net_, self.loc_, self.scale_ = net, loc, scale
        return self

    def evaluate(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.net_ is None or self.loc_ is None or self.scale_ is None:
            raise RuntimeError("DSMScore.evaluate before fit")
        x = as_samples(x, dim=self.loc_.shape[0])
        net, loc, scale = self.net_, self.loc_, self.scale_
        g = torch.Generator().manual_seed(self.seed + 1)
        # s_x(x) = s_z(z) / scale with z = (x − loc)/scale; ∇_x· s_x = Σ_i ∂s_z,i/∂z_i / scale_i²
        s, div = divergence(lambda xx: net((xx - loc) / scale) / scale, x, method=self.divergence_method,
                            n_probes=self.n_probes, generator=g, create_graph=False)
        return s.detach(), div.detach()
