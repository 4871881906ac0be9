"""Objectives that fit stochastic dynamics to timestamp-free stationary samples (ALGORITHMS-2.md §15).

Lu, Kuśmierz & Mihalas 2025 (arXiv 2502.17690, "Identifying Stochastic Dynamics from Non-Sequential Data"): samples
``x_1..x_M`` of the stationary density of ``dx = f_θ(x) dt + √(2D) dW``, with no order and no time stamps, identify θ
(and D where the drift has a fixed part). Two routes:

* local — the Fokker–Planck residual ``∇·f + f·s − D(∇·s + |s|²)`` with an estimated score ``s``
  (:mod:`~spikelearn.objectives.residual`, :mod:`~spikelearn.objectives.scores`);
* global — the kernel Stein discrepancy of the generator ``f·∇ + DΔ`` with an RBF kernel, needing neither density nor
  score (:mod:`~spikelearn.objectives.kernels`).

For an affine drift ``Φ(x)θ + f₀(x)`` both are a quadratic form solved directly, with the rank and the unidentifiable
directions reported under a stated rule (:mod:`~spikelearn.objectives.linear`); any differentiable drift trains on
either loss (:func:`train_drift`). Systems and samplers: :mod:`~spikelearn.objectives.systems`. Density from
known dynamics (a Gaussian mixture trained by the residual): :mod:`~spikelearn.objectives.density`.
"""

from spikelearn.objectives.density import MixtureDensity, fit_density_from_dynamics, total_variation_2d
from spikelearn.objectives.drifts import AffineDrift, divergence
from spikelearn.objectives.fit import MatrixFreeFit, fit_affine, fit_affine_matrix_free, train_drift
from spikelearn.objectives.kernels import ksd, ksd_gram, median_bandwidth, stein_kernel
from spikelearn.objectives.linear import LinearFit, solve_quadratic
from spikelearn.objectives.residual import fp_residual, fp_residual_loss, local_system
from spikelearn.objectives.scores import DSMScore, GMMScore, KDEScore, ScoreEstimator
from spikelearn.objectives.systems import (
    LORENZ_PARAMETERS,
    RateNetworkDrift,
    dt_halving_check,
    euler_maruyama,
    linear_drift,
    lorenz,
    lorenz_drift,
    ou_samples,
    ou_stationary_covariance,
    rate_network,
    rotation_drift,
    stationary_samples,
)

__all__ = [
    "AffineDrift", "divergence", "fit_affine", "fit_affine_matrix_free", "MatrixFreeFit", "train_drift", "ksd",
    "ksd_gram", "median_bandwidth", "stein_kernel", "LinearFit", "solve_quadratic", "fp_residual", "fp_residual_loss",
    "local_system", "KDEScore", "GMMScore", "DSMScore", "ScoreEstimator", "LORENZ_PARAMETERS", "RateNetworkDrift",
    "dt_halving_check", "euler_maruyama", "linear_drift", "lorenz", "lorenz_drift", "ou_samples",
    "ou_stationary_covariance", "rate_network", "rotation_drift", "stationary_samples", "MixtureDensity",
    "fit_density_from_dynamics", "total_variation_2d",
]
