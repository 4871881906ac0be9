"""Systems and samplers: the Euler–Maruyama stationary law and its O(dt) bias (analytic for OU), the dt-halving
check, the rate network's structured residual rows, recovery of its edge weights, the matrix-free solve, and training
a torch drift on either loss."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from spikelearn.circuit import generators
from spikelearn.objectives import (
    AffineDrift,
    GMMScore,
    dt_halving_check,
    euler_maruyama,
    fit_affine,
    fit_affine_matrix_free,
    linear_drift,
    lorenz,
    ou_samples,
    rate_network,
    stationary_samples,
    train_drift,
)
from spikelearn.objectives.density import fit_density_from_dynamics, total_variation_2d


def _ou1(a):
    return lambda x: -a * x


def test_euler_maruyama_stationary_variance_is_the_ar1_one():
    """x' = (1 − a dt) x + √(2D dt) ξ has variance D / (a (1 − a dt / 2)), not D / a."""
    a, D, dt = 2.0, 0.5, 0.1
    g = torch.Generator().manual_seed(0)
    rec = euler_maruyama(_ou1(a), D, torch.zeros(20000, 1, dtype=torch.float64), dt=dt, n_steps=10, record_every=5,
                         burn_in=60, generator=g)
    var = float(rec.var())
    exact = D / (a * (1 - a * dt / 2))
    se = exact * (2 / rec.numel()) ** 0.5 * 2          # two weakly correlated records per chain
    assert abs(var - exact) < 4 * se
    assert abs(var - D / a) > 4 * se


def test_heun_stationary_variance_is_second_order():
    """Stochastic Heun on OU: variance (D/a)(1 − h + h²/4)/(1 − h + h²/2 − h³/8), h = a dt (bias O(dt²))."""
    a, D, dt = 2.0, 0.5, 0.1
    h = a * dt
    g = torch.Generator().manual_seed(1)
    rec = euler_maruyama(_ou1(a), D, torch.zeros(20000, 1, dtype=torch.float64), dt=dt, n_steps=10, record_every=5,
                         burn_in=60, generator=g, scheme="heun")
    var = float(rec.var())
    exact = D / a * (1 - h + h * h / 4) / (1 - h + h * h / 2 - h ** 3 / 8)
    se = exact * (2 / rec.numel()) ** 0.5 * 2
    assert abs(var - exact) < 4 * se
    assert abs(exact - D / a) < 0.1 * abs(D / (a * (1 - h / 2)) - D / a)   # far below Euler's bias


def test_dt_halving_check_sees_the_euler_bias():
    """The Euler–Maruyama law is N(0, D / (a (1 − a dt / 2))), so the fitted rate is â = a (1 − a dt / 2) and halving
    dt moves it by a² dt / 4 (here 0.2, with a·dt = 0.4)."""
    a, D, dt = 2.0, 0.5, 0.2

    def sample(step, seed):
        return stationary_samples(_ou1(a), D, torch.zeros(4000, 1, dtype=torch.float64), 8000, dt=step,
                                  burn_in_time=3.0, thin_time=1.0, seed=seed)

    table = dt_halving_check(sample, lambda x: fit_affine(x, linear_drift(1), D=D, n_bootstrap=10), dt, seed=1)
    row = table.iloc[0]
    # f = a11 x with a11 = −â: the half-step estimate is more negative by a² dt / 4
    expected = -a * a * dt / 4
    assert abs(row["difference"] - expected) < 4 * row["se"]
    assert row["z"] > 3


def _small_circuit():
    return generators.dale(8, 0.75, p=0.4, g=1.5, seed=1, self_loops=True)


def test_rate_network_structured_rows_equal_the_generic_ones():
    c = _small_circuit()
    fam = rate_network(c)
    assert (c.post == c.pre).any()                       # an autapse exercises the φ' term
    x = torch.randn(30, 8, dtype=torch.float64)
    s = torch.randn(30, 8, dtype=torch.float64)
    generic = AffineDrift(fam.features, fam.dim, fam.names, fam.offset)
    assert torch.allclose(fam.local_rows(x, s), generic.local_rows(x, s), rtol=1e-12, atol=1e-12)
    theta = torch.tensor(fam.true_values, dtype=torch.float64)
    W = torch.as_tensor(c.weights(dense=True))
    assert torch.allclose(fam(x, theta), -x + torch.tanh(x) @ W.T, atol=1e-12)
    assert torch.allclose(generic(x, theta), fam(x, theta), atol=1e-12)


def test_rate_network_weights_recovered_from_snapshots():
    c = _small_circuit()
    fam = rate_network(c)
    f = fam.drift_fn(torch.tensor(fam.true_values, dtype=torch.float64))
    D = 0.1
    x0 = torch.randn(500, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = stationary_samples(f, D, x0, 4000, dt=1e-2, burn_in_time=20.0, thin_time=1.0, seed=0)
    fit = fit_affine(x, fam, D=None, route="local", score=GMMScore(1), n_bootstrap=5)
    w = fit.min_norm[: c.n_edges]
    assert np.corrcoef(w, c.w)[0, 1] > 0.95
    assert np.mean(np.sign(w) == np.sign(c.w)) > 0.9
    assert fit.D_estimated and abs(fit.D - D) < 0.3 * D   # the leak −x is the fixed part: D is identifiable


def test_matrix_free_solve_equals_the_direct_one():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 3, generator=g, dtype=torch.float64) * 6 + torch.tensor([0.0, 0.0, 24.0])
    fam = lorenz()
    direct = fit_affine(x, fam, D=1.0, n_bootstrap=0, bandwidth=8.0, statistic="V")
    mf = fit_affine_matrix_free(x, fam, 3, D=1.0, bandwidth=8.0, tol=1e-10)
    assert mf.converged and mf.iterations <= 10
    assert np.allclose(mf.theta, direct.estimate, rtol=1e-6)


class _Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.A = nn.Parameter(-torch.eye(2, dtype=torch.float64) * 0.3)

    def forward(self, x):
        return x @ self.A.T


def test_train_drift_on_either_loss_approaches_the_direct_solution():
    A = np.array([[-1.0, -0.5], [0.5, -2.0]])
    x = ou_samples(A, 0.5, 3000, seed=3)
    direct = fit_affine(x, linear_drift(2), D=0.5, n_bootstrap=0)
    for loss, kw in [("ksd", {}), ("local", {"score": GMMScore(1)})]:
        model = _Linear()
        hist = train_drift(model, x, loss=loss, D=0.5, lr=0.05, steps=150, batch_size=256, **kw)
        assert hist["loss"].iloc[-20:].mean() < hist["loss"].iloc[:5].mean()
        learned = model.A.detach().numpy()
        # the identifiable part: the diagonal and the symmetric off-diagonal sum
        assert np.allclose(np.diag(learned), [direct.min_norm[0], direct.min_norm[3]], atol=0.15), (loss, learned)


def test_density_from_dynamics_recovers_the_ou_gaussian():
    """A one-component mixture trained by the residual alone (no samples of p: the training points are uniform in a
    box) converges to the OU stationary law N(0, (D/a) I)."""
    a, D = 2.0, 0.5
    g = torch.Generator().manual_seed(0)
    pts = (torch.rand(500, 2, generator=g, dtype=torch.float64) - 0.5) * 3
    model, hist = fit_density_from_dynamics(lambda x: -a * x, D, pts, n_components=1, steps=2000, lr=0.03)
    assert hist["loss"].iloc[-20:].mean() < 1e-3 * hist["loss"].iloc[:5].mean()
    P = model.precisions().detach()[0]
    assert torch.allclose(P, a / D * torch.eye(2, dtype=torch.float64), rtol=0.02, atol=0.05)
    # its total-variation distance to exact samples is at the histogram's own resolution
    ref = ou_samples(-a * np.eye(2), D, 200_000, seed=1)
    assert total_variation_2d(model.log_prob, ref, bins=30) < 0.03
