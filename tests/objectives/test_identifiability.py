"""T15.2 (OU with rotation: the identifiable part recovered, the rotation reported unidentifiable, no value for ω) and
T15.3 (stochastic Lorenz: the relative error falls from M = 10³ to 10⁴ on every one of 5 seeds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spikelearn.objectives import (
    GMMScore,
    euler_maruyama,
    fit_affine,
    linear_drift,
    lorenz,
    lorenz_drift,
    ou_samples,
    rotation_drift,
)

A_RATE, OMEGA, D = 1.0, 2.0, 0.5          # A = [[−a, −ω], [ω, −a]]: Σ = (D/a) I, so a = D/σ²
A = np.array([[-A_RATE, -OMEGA], [OMEGA, -A_RATE]])
ROTATION = np.array([0.0, -1.0, 1.0, 0.0]) / np.sqrt(2)   # (a11, a12, a21, a22) direction of ω


@pytest.mark.parametrize("route", ["ksd", "local"])
def test_ou_rotation_is_reported_unidentifiable(route):
    x = ou_samples(A, D, 2000, seed=11)
    sigma2 = D / A_RATE
    kw = {"score": GMMScore(1)} if route == "local" else {}
    fit = fit_affine(x, linear_drift(2), D=D, route=route, n_bootstrap=20, **kw)
    assert fit.rank == 3 and fit.null_directions.shape == (1, 4)
    assert abs(float(fit.null_directions[0] @ ROTATION)) >= 0.99
    # the identifiable part: a11 = a22 = −D/σ², within its bootstrap sampling error
    for name in ("a11", "a22"):
        k = fit.names.index(name)
        assert fit.identifiable[k]
        assert 0 < fit.se[k] < 0.1 * A_RATE
        assert abs(fit.estimate[k] + D / sigma2) < 4 * fit.se[k], (name, fit.estimate[k], fit.se[k])
    # no value for the off-diagonal entries, which carry ω
    assert np.isnan(fit.value("a12")) and np.isnan(fit.value("a21"))
    assert fit.spectrum()["identifiable"].sum() == 3


@pytest.mark.parametrize("route", ["ksd", "local"])
def test_ou_omega_has_no_value(route):
    x = ou_samples(A, D, 2000, seed=12)
    kw = {"score": GMMScore(1)} if route == "local" else {}
    fit = fit_affine(x, rotation_drift(), D=D, route=route, n_bootstrap=20, **kw)
    assert np.isnan(fit.value("omega")) and not fit.identifiable[fit.names.index("omega")]
    assert abs(float(fit.null_directions[0] @ np.array([0.0, 1.0]))) >= 0.99
    k = fit.names.index("a")
    assert abs(fit.estimate[k] - A_RATE) < 4 * fit.se[k] and fit.se[k] < 0.1
    assert "bootstrap" in fit.rule and fit.threshold.shape == (2,)


def test_d_scales_away_without_a_fixed_part():
    x = ou_samples(A, D, 200, seed=0)
    with pytest.raises(ValueError, match="D cannot be estimated"):
        fit_affine(x, linear_drift(2), D=None)


def _lorenz_seeds(n_seeds: int, per_seed: int, *, chains_per_seed: int, dt: float = 2e-3):
    """Stationary samples from one stochastic-Heun run (O(dt²) bias): 15 time units of burn-in (the ensemble's spread oscillates
    for about 10), then a record every 0.5 time units; seed k is the k-th disjoint set of chains, shuffled."""
    g = torch.Generator().manual_seed(2024)
    n = n_seeds * chains_per_seed
    x0 = torch.randn(n, 3, generator=g, dtype=torch.float64) * 5 + torch.tensor([0, 0, 25.0])
    every = round(0.5 / dt)
    rec = euler_maruyama(lorenz_drift(), 1.0, x0, dt=dt, n_steps=every * (per_seed // chains_per_seed),
                         record_every=every, burn_in=round(15.0 / dt), generator=g, scheme="heun")   # (R, n, 3)
    out = []
    for k in range(n_seeds):
        xs = rec[:, k * chains_per_seed:(k + 1) * chains_per_seed].reshape(-1, 3)
        out.append(xs[torch.randperm(xs.shape[0], generator=g)])
    return out


def test_lorenz_parameters_recovered_with_d_estimated():
    """One seed, 2000 samples: (σ, ρ, β) within 10 % and the rank full (D estimated: the fixed terms identify it)."""
    (xs,) = _lorenz_seeds(1, 2000, chains_per_seed=500)
    fit = fit_affine(xs, lorenz(), D=None, route="ksd", n_bootstrap=10)
    truth = np.array(lorenz().true_values)
    assert fit.rank == 4 and fit.D_estimated
    assert np.all(np.abs(fit.estimate[:3] - truth) / truth < 0.1), fit.table()


@pytest.mark.slow
def test_lorenz_error_falls_with_the_sample_count_on_every_seed():
    """T15.3: relative error ‖(θ̂ − θ)/θ‖ (per parameter, then the norm) at M = 10³ (a subset) and 10⁴, 5 seeds."""
    truth = np.array(lorenz().true_values)
    errors = []
    for xs in _lorenz_seeds(5, 10_000, chains_per_seed=1000):
        err = []
        for m in (1_000, 10_000):
            fit = fit_affine(xs[:m], lorenz(), D=1.0, route="ksd", n_bootstrap=0, max_pairs=1e8, block_size=1000)
            assert fit.rank == 3
            err.append(np.linalg.norm((fit.estimate - truth) / truth))
        errors.append(err)
    errors = np.array(errors)
    assert (errors[:, 1] < errors[:, 0]).all(), errors
