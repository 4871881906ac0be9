"""T15.1: the closed-form generator Stein kernel equals the same quantity built from autograd derivatives of the RBF
kernel (float64, 1e-10), and the affine Gram matrix reproduces the direct V- and U-statistics."""

from __future__ import annotations

import torch

from spikelearn.objectives import AffineDrift, ksd, ksd_gram, lorenz, stein_kernel
from spikelearn.objectives.kernels import pair_blocks


def _rbf(x: torch.Tensor, y: torch.Tensor, h: float) -> torch.Tensor:
    return torch.exp(-((x - y) ** 2).sum() / (2 * h * h))


def _generator_pair_autograd(x, y, fx, fy, D, h):
    """𝓛_x 𝓛_y k(x, y) with every derivative of k taken by autograd (Hessians and third/fourth derivatives)."""
    d = x.shape[0]

    def grad_y(xx, yy):                       # ∇_y k
        return torch.autograd.functional.jacobian(lambda b: _rbf(xx, b, h), yy, create_graph=True)

    def lap_y(xx, yy):                        # Δ_y k
        return torch.autograd.functional.hessian(lambda b: _rbf(xx, b, h), yy, create_graph=True).diagonal().sum()

    def gen_y(xx):                            # (𝓛_y k)(xx, y) as a function of xx
        return fy @ grad_y(xx, y) + D * lap_y(xx, y)

    g = torch.autograd.functional.jacobian(gen_y, x, create_graph=True)
    H = torch.autograd.functional.hessian(gen_y, x, create_graph=True)
    assert g.shape == (d,)
    return fx @ g + D * H.diagonal().sum()


def test_stein_kernel_closed_form_equals_autograd():
    g = torch.Generator().manual_seed(3)
    for d in (1, 2, 3, 5):
        xa = torch.randn(3, d, generator=g, dtype=torch.float64)
        xb = torch.randn(4, d, generator=g, dtype=torch.float64) * 1.5
        fa = torch.randn(3, d, generator=g, dtype=torch.float64)
        fb = torch.randn(4, d, generator=g, dtype=torch.float64)
        D, h = 0.37, 1.3
        closed = stein_kernel(xa, xb, fa, fb, D, h)
        ref = torch.stack([torch.stack([_generator_pair_autograd(xa[i], xb[j], fa[i], fb[j], D, h)
                                        for j in range(4)]) for i in range(3)])
        assert torch.allclose(closed, ref, rtol=1e-10, atol=1e-12), (d, (closed - ref).abs().max())


def _quad(H, z):
    return z @ H @ z


def test_gram_quadratic_form_equals_direct_statistic():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(301, 3, generator=g, dtype=torch.float64) * 4 + torch.tensor([0.0, 0.0, 20.0])
    fam = lorenz()
    theta = torch.tensor([9.0, 27.0, 2.5], dtype=torch.float64)
    for statistic in ("V", "U"):
        for D in (0.0, 0.8):
            H = ksd_gram(x, fam.columns, 3.0, block_size=64, statistic=statistic)[0]
            z = torch.cat([theta, torch.tensor([1.0, D], dtype=torch.float64)])
            direct = ksd(x, fam(x, theta), D, 3.0, block_size=50, statistic=statistic)
            assert torch.isclose(_quad(H, z), direct, rtol=1e-10), (statistic, D)


def test_gram_weights_are_a_weighted_v_statistic():
    """A row of integer weights equals the V-statistic of the sample with those multiplicities."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 2, generator=g, dtype=torch.float64)
    w = torch.randint(0, 3, (2, 40), generator=g).to(torch.float64)
    w[0] = 1.0
    fam = AffineDrift(lambda v: torch.stack([-v, torch.stack([-v[:, 1], v[:, 0]], 1)], 2), 2, ("a", "omega"))
    H = ksd_gram(x, fam.columns, 0.9, weights=w, block_size=16)
    z = torch.tensor([1.3, 0.4, 0.6], dtype=torch.float64)
    xr = x.repeat_interleave(w[1].long(), dim=0)
    direct = ksd(xr, fam(xr, z[:2]), 0.6, 0.9)
    assert torch.isclose(_quad(H[1], z), direct, rtol=1e-10)
    assert torch.isclose(_quad(H[0], z), ksd(x, fam(x, z[:2]), 0.6, 0.9), rtol=1e-10)


def test_pair_blocks_cover_every_pair_once_or_sample_blocks():
    blocks = pair_blocks(10, block_size=3, max_pairs=100)
    seen = torch.zeros(10, 10)
    for a, b in blocks:
        seen[a[:, None], b[None, :]] += 1
    assert bool((seen == 1).all())
    sampled = pair_blocks(1000, block_size=100, max_pairs=5e4)
    assert len(sampled) == 5 and all(len(a) == 100 and len(b) == 100 for a, b in sampled)
