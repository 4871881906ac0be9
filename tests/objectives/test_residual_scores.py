"""The local route: the Fokker–Planck residual vanishes at the truth with the exact score (OU, analytic), its affine
system reproduces the residual, and the score estimators' closed-form divergences equal autograd's."""

from __future__ import annotations

import numpy as np
import torch

from spikelearn.objectives import (
    DSMScore,
    GMMScore,
    KDEScore,
    divergence,
    fp_residual,
    linear_drift,
    local_system,
    lorenz,
    ou_samples,
    ou_stationary_covariance,
)


def _ou_case():
    A = np.array([[-1.0, -0.7, 0.2], [0.5, -1.5, 0.3], [0.0, -0.4, -0.8]])
    D = 0.6
    S = ou_stationary_covariance(A, D)
    return A, D, S


def test_lyapunov_solution():
    A, D, S = _ou_case()
    assert np.allclose(A @ S + S @ A.T + 2 * D * np.eye(3), 0, atol=1e-12)


def test_residual_is_zero_at_the_truth_with_the_exact_score():
    A, D, S = _ou_case()
    x = ou_samples(A, D, 200, seed=0)
    P = torch.as_tensor(np.linalg.inv(S))
    s = -x @ P                                   # exact score of N(0, S)
    div_s = -torch.trace(P).expand(200)
    At = torch.as_tensor(A)
    r = fp_residual(lambda v: v @ At.T, x, s, div_s, D).detach()
    assert float(r.abs().max()) < 1e-10
    r_wrong = fp_residual(lambda v: v @ (At + 0.1 * torch.eye(3, dtype=torch.float64)).T, x, s, div_s, D).detach()
    assert float(r_wrong.abs().max()) > 1e-2


def test_local_system_reproduces_the_residual():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 3, generator=g, dtype=torch.float64) * 3 + 10
    s = torch.randn(50, 3, generator=g, dtype=torch.float64)
    div_s = torch.randn(50, generator=g, dtype=torch.float64)
    fam = lorenz()
    theta = torch.tensor([8.0, 20.0, 3.0], dtype=torch.float64)
    D = 0.45
    H = local_system(fam, x, s, div_s, chunk=16)[0]
    z = torch.cat([theta, torch.tensor([1.0, D], dtype=torch.float64)])
    r = fp_residual(lambda v: fam(v, theta), x, s, div_s, D).detach()
    assert torch.isclose(z @ H @ z, (r ** 2).mean(), rtol=1e-10)
    # ∇·Φ_k of the linear family A x: 1 for the diagonal entries a_ii, 0 otherwise; Hutchinson is unbiased
    lin = linear_drift(3)
    exact = lin.column_divergence(x, method="exact")
    assert torch.allclose(exact, torch.tensor([1.0, 0, 0, 0, 1, 0, 0, 0, 1], dtype=torch.float64).expand(50, 9))
    hutch = lin.column_divergence(x, method="hutchinson", n_probes=4000, generator=g)
    assert float((hutch - exact).abs().max()) < 5 / 4000 ** 0.5


def test_hutchinson_divergence_is_unbiased():
    g = torch.Generator().manual_seed(2)
    B = torch.randn(20, 20, generator=g, dtype=torch.float64)
    x = torch.randn(4000, 20, generator=g, dtype=torch.float64)
    _, exact = divergence(lambda v: v @ B.T, x, method="exact", create_graph=False)
    assert torch.allclose(exact, torch.trace(B).expand(4000))
    _, est = divergence(lambda v: v @ B.T, x, method="hutchinson", n_probes=1, generator=g, create_graph=False)
    # one Rademacher probe: variance 2 Σ_{i≠j} B_ij² sym... bound the mean by 5 standard errors
    sd = float(est.std())
    assert abs(float(est.mean()) - float(torch.trace(B))) < 5 * sd / 4000 ** 0.5


def test_mixture_and_kde_divergences_equal_autograd():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(300, 2, generator=g, dtype=torch.float64) - 2,
                   torch.randn(300, 2, generator=g, dtype=torch.float64) * 0.5 + 2])
    y = torch.randn(25, 2, generator=g, dtype=torch.float64) * 2
    for est in (GMMScore(2), KDEScore()):
        est.fit(x)
        s, div = est.evaluate(y)
        s_ag, div_ag = divergence(lambda v: est.evaluate(v)[0], y, method="exact", create_graph=False)
        assert torch.allclose(s, s_ag, rtol=1e-10, atol=1e-12)
        assert torch.allclose(div, div_ag, rtol=1e-8, atol=1e-10), type(est).__name__


def test_gaussian_scores_approach_the_exact_score():
    A, D, S = _ou_case()
    x = ou_samples(A, D, 4000, seed=1)
    y = ou_samples(A, D, 200, seed=2)
    exact = -y @ torch.as_tensor(np.linalg.inv(S))
    rel = {}
    for name, est in [("gmm", GMMScore(1)), ("kde", KDEScore()), ("dsm", DSMScore(hidden=32, steps=300))]:
        s, _ = est.fit(x).evaluate(y)
        rel[name] = float((s - exact).norm() / exact.norm())
    assert rel["gmm"] < 0.05          # one Gaussian component: only the covariance's sampling error
    assert rel["dsm"] < 0.5, rel


def test_kde_score_is_the_gradient_of_its_log_density():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 2, generator=g, dtype=torch.float64)
    y = torch.randn(7, 2, generator=g, dtype=torch.float64)
    est = KDEScore(0.3).fit(x)
    assert est.precision_ is not None
    P = est.precision_

    def log_density(v):
        diff = v[:, None, :] - x[None]
        return torch.logsumexp(-0.5 * torch.einsum("mnd,de,mne->mn", diff, P, diff), 1)

    v = y.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(log_density(v).sum(), v)
    assert torch.allclose(est.evaluate(y)[0], grad, rtol=1e-10, atol=1e-12)
