"""Hessian analysis (ALGORITHMS.md §9.4, T9.1–T9.3): HVPs, Lanczos, power iteration, Hutchinson, SLQ (float64)."""

import math

import numpy as np
import pytest
import torch
from torch.func import functional_call

from spikelearn.analysis.hessian import (
    HessianOperator,
    hessian_density,
    hessian_measurement,
    hessian_operator,
    hessian_spectrum,
    hutchinson_trace,
    lanczos,
    power_iteration,
    slq,
    top_eigenvalues,
)
from spikelearn.circuit import gaussian
from spikelearn.models import RateRNN, SpikingRNN
from spikelearn.neurons import Surrogate
from spikelearn.tasks import regression_loss


def _tiny(allow_autapses=True, seed=1):
    """T9.1 model: ReLU RNN, N = 4, N_in = 2, T = 5, MSE, all 16 W_rec entries active."""
    torch.manual_seed(seed)
    model = RateRNN(gaussian(4, 1.5, seed=seed, self_loops=True), 2, 2, form="relu_lif", tau_ms=5.0, dt_ms=10.0,
                    allow_autapses=allow_autapses, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(5, 3, 2, generator=g, dtype=torch.float64) + 0.5
    y = torch.randn(5, 3, 2, generator=g, dtype=torch.float64)
    return model, x, y, torch.ones(5, 3, dtype=torch.float64)


def _dense_reference(model, x, y, mask, name="theta_rec", mask_name="mask_rec", l2=0.0):
    """Hessian over the active entries by torch.autograd.functional.hessian on a functional loss."""
    act = getattr(model, mask_name).bool()
    th0 = dict(model.named_parameters())[name].detach().clone()

    def f(v):
        th = th0.clone()
        th[act] = v
        params = {**dict(model.named_parameters()), name: th}
        loss = regression_loss(functional_call(model, params, (x,)).y, y, mask)
        return loss + 0.5 * l2 * (th * th).sum()

    return torch.autograd.functional.hessian(f, th0[act])


def test_t91_hvp_matches_dense_hessian_and_is_symmetric():
    model, x, y, mask = _tiny()
    op = hessian_operator(model, x, y, mask, regression_loss)
    assert op.n == 16
    H = _dense_reference(model, x, y, mask)
    assert H.abs().max() > 1e-3  # a non-trivial Hessian
    g = torch.Generator().manual_seed(3)
    for _ in range(3):
        v = torch.randn(16, generator=g, dtype=torch.float64)
        torch.testing.assert_close(op(v), H @ v, rtol=0, atol=1e-10)
    u, v = torch.randn(2, 16, generator=g, dtype=torch.float64)
    assert abs(float(u @ op(v) - v @ op(u))) < 1e-12
    torch.testing.assert_close(op.dense(), H, rtol=0, atol=1e-10)
    assert op.asymmetry() < 1e-12


def test_t91_eigen_solvers_match_eigvalsh():
    model, x, y, mask = _tiny()
    op = hessian_operator(model, x, y, mask, regression_loss)
    H = op.dense()
    ev = torch.linalg.eigvalsh(H)
    lm = ev[ev.abs().argmax()]
    pw = power_iteration(op, op.n, generator=torch.Generator().manual_seed(0), max_iter=2000, tol=1e-12)
    assert pw.converged
    assert abs(float(pw.eigenvalues[0] - lm)) < 1e-6 * abs(float(lm))
    # the source's estimator ||Hv|| returns the modulus of the same eigenvalue
    pn = power_iteration(op, op.n, estimate="norm", generator=torch.Generator().manual_seed(0), max_iter=2000,
                         tol=1e-12)
    assert pn.converged
    assert abs(float(pn.eigenvalues[0]) - abs(float(lm))) < 1e-6 * abs(float(lm))
    # Lanczos with m = n reproduces the whole spectrum
    res = lanczos(op, torch.randn(16, dtype=torch.float64), 16)
    torch.testing.assert_close(res.ritz()[0], ev, rtol=0, atol=1e-9)
    # top-k by Lanczos with early stopping
    top = top_eigenvalues(op, op.n, 3, rtol=1e-6, generator=torch.Generator().manual_seed(1))
    assert top.converged and top.n_matvec <= 2 * 16  # one Krylov space, then the repeated-eigenvalue check
    torch.testing.assert_close(top.eigenvalues, ev.flip(0)[:3], rtol=1e-8, atol=1e-12)
    for lam, u in zip(top.eigenvalues, top.eigenvectors):
        assert float((H @ u - lam * u).norm()) < 1e-5
    bottom = top_eigenvalues(op, op.n, 1, which="SA", max_matvec=16, rtol=1e-10)
    assert abs(float(bottom.eigenvalues[0] - ev[0])) < 1e-9


def test_t91_hutchinson_within_three_standard_errors():
    model, x, y, mask = _tiny()
    op = hessian_operator(model, x, y, mask, regression_loss)
    H = op.dense()
    tr = float(torch.trace(H))
    big = hutchinson_trace(lambda v: H @ v, 16, 10_000, generator=torch.Generator().manual_seed(0))
    assert abs(big.trace - tr) < 3 * big.stderr
    # the per-probe variance is 2(||H||_F² − Σ H_ii²)
    var = 2 * (float((H**2).sum()) - float((torch.diag(H) ** 2).sum()))
    assert big.stderr == pytest.approx(math.sqrt(var / 10_000), rel=0.05)
    small = hutchinson_trace(op, op.n, 200, generator=torch.Generator().manual_seed(1))  # through the HVP
    assert small.n_matvec == 200 and abs(small.trace - tr) < 4 * small.stderr


def test_t92_hvp_matches_finite_difference_of_gradients():
    model, x, y, mask = _tiny()
    theta = model.theta_rec
    op = hessian_operator(model, x, y, mask, regression_loss)
    v = torch.randn(16, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    eps = 1e-5

    def grad_at(delta):
        with torch.no_grad():
            theta.add_(delta.reshape(4, 4))
        loss = regression_loss(model(x).y, y, mask)
        (g,) = torch.autograd.grad(loss, theta)
        with torch.no_grad():
            theta.sub_(delta.reshape(4, 4))
        return g.reshape(-1)

    fd = (grad_at(eps * v) - grad_at(-eps * v)) / (2 * eps)
    torch.testing.assert_close(op(v), fd, rtol=1e-6, atol=1e-8)


def _quadratic(n=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    lam = torch.cat([torch.tensor([10.0, 7.0, 5.0], dtype=torch.float64),
                     torch.linspace(-1.0, 2.0, n - 3, dtype=torch.float64)])
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    A = Q @ torch.diag(lam) @ Q.T
    theta = torch.randn(n, generator=g, dtype=torch.float64, requires_grad=True)
    return A, lam, theta


def test_t93_quadratic_loss_known_spectrum():
    A, lam, theta = _quadratic()
    op = HessianOperator(lambda: 0.5 * theta @ A @ theta, [theta])
    v = torch.randn(60, dtype=torch.float64)
    torch.testing.assert_close(op(v), A @ v, rtol=0, atol=1e-12)
    pw = power_iteration(op, op.n, generator=torch.Generator().manual_seed(0))
    assert pw.converged and float(pw.eigenvalues[0]) == pytest.approx(10.0, rel=1e-6)
    top = top_eigenvalues(op, op.n, 3, rtol=1e-8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(top.eigenvalues, lam[:3], rtol=1e-10, atol=0)
    # well separated top eigenvalue: far fewer products than power iteration
    top1 = top_eigenvalues(op, op.n, 1, rtol=1e-8, generator=torch.Generator().manual_seed(0))
    assert float(top1.eigenvalues[0]) == pytest.approx(10.0, rel=1e-10) and top1.n_matvec < pw.n_matvec
    # a dominating negative eigenvalue: LM finds it, LA still finds the top algebraic one
    op_neg = HessianOperator(lambda: 0.5 * theta @ (-2 * A) @ theta + 0.0 * theta.sum(), [theta])
    assert float(top_eigenvalues(op_neg, 60, 1, which="LM", rtol=1e-10).eigenvalues[0]) == pytest.approx(-20.0)
    assert float(top_eigenvalues(op_neg, 60, 1, which="LA", rtol=1e-10, max_matvec=60).eigenvalues[0]) \
        == pytest.approx(2.0)
    shifted = power_iteration(op_neg, 60, shift=25.0, max_iter=5000, tol=1e-12)
    assert float(shifted.eigenvalues[0]) == pytest.approx(2.0, rel=1e-4)


def _symmetric(lam, seed=0):
    """``Q diag(lam) Qᵀ`` with a random orthogonal ``Q`` (float64) and its eigenvectors ``Q``."""
    lam = torch.as_tensor(lam, dtype=torch.float64)
    Q, _ = torch.linalg.qr(torch.randn(lam.numel(), lam.numel(), generator=torch.Generator().manual_seed(seed),
                                       dtype=torch.float64))
    return Q @ torch.diag(lam) @ Q.T, Q


@pytest.mark.parametrize("top", [10.0, -10.0])
def test_power_iteration_estimators_on_a_known_spectrum(top):
    """§9.2: both estimators converge to the dominant |λ|; only the Rayleigh quotient keeps its sign."""
    n = 40
    lam = torch.cat([torch.tensor([top]), torch.linspace(-3.0, 7.0, n - 1)])
    A, Q = _symmetric(lam)
    res = {est: power_iteration(lambda v: A @ v, n, estimate=est, max_iter=5000, tol=1e-13,
                                generator=torch.Generator().manual_seed(1))
           for est in ("rayleigh", "norm")}
    for r in res.values():
        assert r.converged and r.n_matvec < 5000
        assert abs(float(r.eigenvectors[0] @ Q[:, 0])) == pytest.approx(1.0, abs=1e-6)  # the dominant eigenvector
    ray, nrm = float(res["rayleigh"].eigenvalues[0]), float(res["norm"].eigenvalues[0])
    assert ray == pytest.approx(top, rel=1e-10)       # signed: negative when the negative eigenvalue dominates
    assert nrm == pytest.approx(abs(top), rel=1e-10)  # the source's ||Hv||: the modulus
    assert nrm == pytest.approx(abs(ray), rel=1e-10)
    if top < 0:
        assert ray < 0 < nrm


def test_power_iteration_norm_estimate_with_opposite_dominant_eigenvalues():
    """λ = ±5 dominate: the iterate settles on the 2-cycle ``a e1 ± b e2``, whose Rayleigh quotient is
    ``5 (a² − b²)/(a² + b²)`` (not an eigenvalue), while ``||Hv|| = 5`` is the dominant modulus."""
    lam = torch.tensor([5.0, -5.0, 1.0, -0.5, 0.25], dtype=torch.float64)
    A = torch.diag(lam)
    v0 = torch.tensor([2.0, 1.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    a2, b2 = 4.0, 1.0
    ray = power_iteration(lambda v: A @ v, 5, v0=v0, max_iter=500, tol=1e-13)
    nrm = power_iteration(lambda v: A @ v, 5, v0=v0, estimate="norm", max_iter=500, tol=1e-13)
    assert ray.converged and nrm.converged
    assert float(ray.eigenvalues[0]) == pytest.approx(5.0 * (a2 - b2) / (a2 + b2), rel=1e-10)
    assert float(nrm.eigenvalues[0]) == pytest.approx(5.0, rel=1e-12)


def test_power_iteration_stopping_rule_and_bad_input():
    """The source's loop starts from λ = 0, so the norm estimator may stop after one product when ``||Hv|| < tol``;
    the Rayleigh estimator never stops on its first product. Eigenvalue ``1e-9`` of ``1e-9·I`` either way."""
    def tiny(v):
        return 1e-9 * v

    nrm = power_iteration(tiny, 6, estimate="norm", generator=torch.Generator().manual_seed(0))
    ray = power_iteration(tiny, 6, generator=torch.Generator().manual_seed(0))
    assert nrm.converged and nrm.n_matvec == 1 and float(nrm.eigenvalues[0]) == pytest.approx(1e-9, rel=1e-12)
    assert ray.converged and ray.n_matvec == 2 and float(ray.eigenvalues[0]) == pytest.approx(1e-9, rel=1e-12)
    with pytest.raises(ValueError, match="estimate"):
        power_iteration(tiny, 6, estimate="modulus")
    with pytest.raises(ValueError, match="shift"):
        power_iteration(tiny, 6, estimate="norm", shift=1.0)


def test_slq_quadrature_exact_and_density_matches_spectrum():
    A, lam, theta = _quadratic()
    n = 60
    op = HessianOperator(lambda: 0.5 * theta @ A @ theta, [theta])
    res = slq(op, n, n_probes=1, m=n, generator=torch.Generator().manual_seed(0))
    # with m = n the quadrature is exact for any f: n Σ τ f(θ) = vᵀ f(A) v with the same Rademacher probe
    v = (torch.randint(0, 2, (n,), generator=torch.Generator().manual_seed(0)).double() * 2 - 1)
    fA = torch.linalg.matrix_exp(0.1 * A)
    assert res.trace_of(lambda t: torch.exp(0.1 * t)) == pytest.approx(float(v @ fA @ v), rel=1e-9)
    # m < n: exact for polynomials of degree < 2m, here the first two moments
    res = slq(op, n, n_probes=40, m=12, generator=torch.Generator().manual_seed(1))
    tr1 = float(lam.sum())
    assert abs(res.trace_of(lambda t: t) - tr1) < 0.15 * float(lam.abs().sum())
    # smoothed density close to the exact smoothed spectrum
    grid = np.linspace(-3, 12, 600)
    sigma = 0.5
    exact = np.exp(-0.5 * ((grid[:, None] - lam.numpy()[None]) / sigma) ** 2).sum(1) / (n * sigma * np.sqrt(2 * np.pi))
    est = res.density(grid, sigma)
    dx = grid[1] - grid[0]
    assert est.sum() * dx == pytest.approx(1.0, abs=1e-3)
    assert np.abs(est - exact).sum() * dx < 0.15  # L1 distance of two unit-mass densities
    # the isolated top eigenvalue is resolved: mass ≈ 1/n near 10
    near = (grid > 9) & (grid < 11)
    assert est[near].sum() * dx == pytest.approx(1 / n, rel=0.6)


def test_slq_and_density_vs_dense_on_tiny_model():
    model, x, y, mask = _tiny()
    op = hessian_operator(model, x, y, mask, regression_loss)
    H = op.dense()
    ev = torch.linalg.eigvalsh(H)
    res = slq(op, op.n, n_probes=30, m=16, generator=torch.Generator().manual_seed(0))
    # m = n: the nodes are the eigenvalues
    for row, w in zip(res.nodes, res.weights):
        keep = w > 1e-14
        assert torch.all(torch.min((row[keep][:, None] - ev[None]).abs(), dim=1).values < 1e-8)
    df, res2 = hessian_density(model, x, y, mask, regression_loss, n_probes=30, m=16, sigma=0.02)
    dx = float(df.eigenvalue.diff().iloc[1])
    assert float(df.density.sum()) * dx == pytest.approx(1.0, abs=2e-3)
    assert res2.trace_of(lambda t: t ** 2) == pytest.approx(float((ev**2).sum()), rel=0.5)


def test_l2_penalty_shifts_the_spectrum_and_mask_excludes_autapses():
    model, x, y, mask = _tiny(allow_autapses=False)
    op0 = hessian_operator(model, x, y, mask, regression_loss)
    op1 = hessian_operator(model, x, y, mask, regression_loss, l2=0.3)
    assert op0.n == 12  # the 4 masked autapses are not coordinates
    H0 = op0.dense()
    torch.testing.assert_close(op1.dense(), H0 + 0.3 * torch.eye(12, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(H0, _dense_reference(model, x, y, mask), rtol=0, atol=1e-10)
    full = hessian_operator(model, x, y, mask, regression_loss, params=("W_rec", "W_out"))
    assert full.n == 12 + 8
    parts = full.unflatten(torch.arange(full.n, dtype=torch.float64))
    assert set(parts) == {"theta_rec", "theta_out"} and float(parts["theta_rec"].diagonal().abs().sum()) == 0
    with pytest.raises(KeyError, match="W_rec"):
        hessian_operator(model, x, y, mask, regression_loss, params=("nope",))


def test_tidy_spectrum_and_measurement_hook():
    model, x, y, mask = _tiny()
    df = hessian_spectrum(model, x, y, mask, regression_loss, k=2, trace_samples=20)
    assert list(df.columns) == ["quantity", "index", "value", "error", "n_hvp", "converged", "n_params"]
    assert set(df.quantity) == {"loss", "eigenvalue", "trace"}
    ev = torch.linalg.eigvalsh(hessian_operator(model, x, y, mask, regression_loss).dense())
    top = df[df.quantity == "eigenvalue"].value.to_numpy()
    np.testing.assert_allclose(top, ev.flip(0)[:2].numpy(), rtol=1e-5)

    class _Task:
        loss = staticmethod(regression_loss)

    out = hessian_measurement(x, y, mask, k=2)(model, _Task(), 7)
    assert set(out) == {"lambda_max", "lambda_1", "n_hvp"}
    assert out["lambda_max"] == pytest.approx(float(ev[-1]), rel=1e-5)


def test_spiking_operator_is_the_hessian_of_the_surrogate_linearised_network():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(15, 4, 3, generator=g) < 0.4).double()
    y = torch.randn(15, 4, 2, generator=g, dtype=torch.float64)
    mask = torch.ones(15, 4, dtype=torch.float64)
    kw = dict(v_th=0.3, n_ref=0, tau_out_ms=5.0, dtype=torch.float64)
    hard = SpikingRNN(gaussian(6, 2.0, seed=3), 3, 2, **kw)
    smooth = SpikingRNN(gaussian(6, 2.0, seed=3), 3, 2, surrogate=Surrogate("fast_sigmoid", smooth=True), **kw)
    smooth.load_state_dict(hard.state_dict())
    op_h = hessian_operator(hard, x, y, mask, regression_loss)
    Hh = op_h.dense()
    # hard threshold: ψ enters as a frozen slope (no ψ'), so the operator is the (symmetric) Hessian of the
    # network whose spikes are replaced by their surrogate linearisation; the true Hessian would be 0 here
    assert torch.isfinite(Hh).all() and float(Hh.abs().max()) > 1e-3
    assert float((Hh - Hh.T).abs().max()) < 1e-10 * float(Hh.abs().max())
    op_s = hessian_operator(smooth, x, y, mask, regression_loss)
    assert op_s.asymmetry(generator=torch.Generator().manual_seed(1)) < 1e-10  # true Hessian of the smooth net
    assert float((op_s.dense() - Hh).abs().max()) > 1e-3


def test_repeated_eigenvalues_are_all_found():
    """A single Krylov space holds each distinct eigenvalue once; the restart after an invariant subspace finds
    the repeated copies (top 4 of diag(5, 5, 5, 2.63, ...) is 5, 5, 5, 2.63, not 5, 2.63, ...)."""
    d = torch.tensor([5.0, 5.0, 5.0, 2.63, 0.47, 0.15, 0.1, 0.05], dtype=torch.float64)
    res = top_eigenvalues(lambda v: d * v, 8, k=4, rtol=1e-10, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(res.eigenvalues.numpy(), [5.0, 5.0, 5.0, 2.63], rtol=1e-9)
    for lam, u in zip(res.eigenvalues, res.eigenvectors):  # genuine, orthonormal eigenpairs
        assert float((d * u - lam * u).norm()) < 1e-6
    np.testing.assert_allclose((res.eigenvectors @ res.eigenvectors.T).numpy(), np.eye(4), atol=1e-8)
    blind = top_eigenvalues(lambda v: d * v, 8, k=4, rtol=1e-10, check_repeated=False,
                            generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(blind.eigenvalues.numpy(), [5.0, 2.63, 0.47, 0.15], rtol=1e-9)
    with pytest.raises(ValueError, match="k must be"):
        top_eigenvalues(lambda v: d * v, 8, k=0)
    with pytest.raises(ValueError, match="max_matvec"):
        top_eigenvalues(lambda v: d * v, 8, k=3, max_matvec=2)


def test_slq_trace_of_a_log_after_an_early_stop_is_finite():
    d = torch.tensor([1.0, 2.0, 3.0] * 5, dtype=torch.float64)
    res = slq(lambda v: d * v, 15, n_probes=8, m=10, generator=torch.Generator().manual_seed(0))
    assert res.trace_of(torch.log) == pytest.approx(5 * math.log(6.0), rel=1e-9)
