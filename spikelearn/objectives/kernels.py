"""The kernel Stein discrepancy of a diffusion's generator with a Gaussian (RBF) kernel, in closed form (§15.3).

For ``dx = f(x) dt + √(2D) dW`` with stationary density ``p``, every smooth ``g`` has ``E_p[𝓛g] = 0`` with the generator
``𝓛g = f·∇g + D Δg``. Over the unit ball of the RKHS of ``k(x, x') = exp(−|x − x'|²/2h²)``::

    KSD²(f, D) = E_{x, x'~p} [𝓛_x 𝓛_{x'} k(x, x')]
               = E[ f(x)ᵀ K₁ f(x') + D f(x)ᵀ g(u) − D f(x')ᵀ g(u) + D² K₄ ]       u = x − x', r² = |u|²
    K₁ = ∇_x∇_{x'}ᵀk = (I/h² − u uᵀ/h⁴) k          g = ∇_xΔ_{x'}k = u k ((d+2)/h⁴ − r²/h⁶) = −∇_{x'}Δ_x k
    K₄ = Δ_xΔ_{x'}k = (r⁴/h⁸ − 2(d+2) r²/h⁶ + d(d+2)/h⁴) k

estimated by the V-statistic over sample pairs. For a generator linear in its coefficients (:func:`ksd_gram`) the pair
sums are computed as matrix products of the kernel matrix with per-sample factors, expanding ``u = x − x'`` in
``uᵀC(x)`` and ``uᵀC(x')``. Beyond a pair budget the pairs are drawn as random blocks of samples
(an incomplete V-statistic, unbiased for the complete one), so that 10⁵ samples fit in memory and time.
Derivation ours (ALGORITHMS-2.md §15.3 [D]); cf. Lorch, Krause & Schölkopf, AISTATS 2024 (KDS).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

__all__ = ["median_bandwidth", "pair_blocks", "stein_kernel", "ksd", "ksd_gram"]


def median_bandwidth(x: Tensor, *, max_points: int = 2000, seed: int = 0) -> float:
    """Median heuristic: ``h`` = median distance between distinct samples (over at most ``max_points`` of them)."""
    if x.shape[0] > max_points:
        g = torch.Generator().manual_seed(seed)
        x = x[torch.randperm(x.shape[0], generator=g)[:max_points]]
    d = torch.cdist(x, x)
    iu = torch.triu_indices(x.shape[0], x.shape[0], offset=1)
    h = float(d[iu[0], iu[1]].median())
    if not h > 0:
        raise ValueError("median bandwidth is 0: the samples are (nearly) all identical; give bandwidth= explicitly")
    return h


def pair_blocks(m: int, *, block_size: int = 1024, max_pairs: float = 4e7,
                generator: torch.Generator | None = None) -> list[tuple[Tensor, Tensor]]:
    """Index blocks ``(I, J)`` over which a V-statistic of ``m`` samples is summed.

    All pairs (a fixed partition into blocks) when ``m² ≤ max_pairs``; otherwise ``max_pairs / block_size²`` random
    block pairs of one random partition (an incomplete V-statistic; pairs with I = J occur with their share)."""
    if m * m <= max_pairs:
        chunks = list(torch.arange(m).split(block_size))
        return [(a, b) for a in chunks for b in chunks]
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    chunks = list(torch.randperm(m, generator=g).split(block_size))
    n = max(1, int(max_pairs // (block_size * block_size)))
    i = torch.randint(len(chunks), (n,), generator=g).tolist()
    j = torch.randint(len(chunks), (n,), generator=g).tolist()
    return [(chunks[a], chunks[b]) for a, b in zip(i, j)]


def _pieces(xa: Tensor, xb: Tensor, h: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``u`` ``(A, B, d)``, ``k`` ``(A, B)``, ``k·((d+2)/h⁴ − r²/h⁶)`` and ``K₄``."""
    d = xa.shape[1]
    u = xa[:, None, :] - xb[None, :, :]
    r2 = (u * u).sum(-1)
    k = torch.exp(-r2 / (2 * h * h))
    h2 = h * h
    kg = k * ((d + 2) / h2**2 - r2 / h2**3)
    k4 = k * (r2 * r2 / h2**4 - 2 * (d + 2) * r2 / h2**3 + d * (d + 2) / h2**2)
    return u, k, kg, k4


def stein_kernel(xa: Tensor, xb: Tensor, fa: Tensor, fb: Tensor, D: Tensor | float, h: float) -> Tensor:
    """``𝓛_x 𝓛_{x'} k(x, x')`` for every pair: ``(A, B)`` from states ``xa`` ``(A, d)``, ``xb`` ``(B, d)`` and
    drifts ``fa``, ``fb`` at them; differentiable in ``fa``, ``fb`` and ``D``."""
    u, k, kg, k4 = _pieces(xa, xb, h)
    ufa = (u * fa[:, None, :]).sum(-1)
    ufb = (u * fb[None, :, :]).sum(-1)
    h2 = h * h
    ff = (fa @ fb.T) * k / h2 - ufa * ufb * k / (h2 * h2)
    return ff + D * (ufa - ufb) * kg + D * D * k4


def ksd(x: Tensor, f: Tensor, D: Tensor | float, bandwidth: float, *, block_size: int = 1024,
        max_pairs: float = 4e7, generator: torch.Generator | None = None, statistic: str = "V") -> Tensor:
    """V-statistic of ``KSD²`` from samples ``x`` ``(M, d)`` and the drift at them ``f`` ``(M, d)``: a scalar,
    differentiable in ``f`` (hence in the drift's parameters) and ``D``; ``statistic="U"`` leaves out self-pairs."""
    if statistic not in ("V", "U"):
        raise ValueError(f"statistic {statistic!r}: use 'V' or 'U'")
    total = x.new_zeros(())
    count = 0
    for ia, ib in pair_blocks(x.shape[0], block_size=block_size, max_pairs=max_pairs, generator=generator):
        kern = stein_kernel(x[ia], x[ib], f[ia], f[ib], D, bandwidth)
        count += len(ia) * len(ib)
        if statistic == "U" and ia is ib:
            kern = kern - torch.diag(torch.diagonal(kern))
            count -= len(ia)
        total = total + kern.sum()
    return total / count


def ksd_gram(x: Tensor, columns: Callable[[Tensor], Tensor], bandwidth: float, *, weights: Tensor | None = None,
             block_size: int = 512, max_pairs: float = 4e7, generator: torch.Generator | None = None,
             statistic: str = "V") -> Tensor:
    """The quadratic form of ``KSD²`` for a generator linear in its coefficients.

    With ``f(x) = Σ_k z_k C_k(x)`` (``columns(x)`` is ``(A, d, P)``) and the coefficient ``z_{P}`` = D, returns
    ``H`` ``(n_w, P+1, P+1)`` such that ``KSD² = zᵀ H z`` (a weighted V-statistic for each row of ``weights``
    ``(n_w, M)``, e.g. bootstrap multiplicities; default one row of ones). ``statistic="U"`` leaves out the
    pairs of a sample with itself (the V-statistic's ``O(1/M)`` ridge ``E|f|²/(M h²)``, which shrinks the drift).
    """
    if statistic not in ("V", "U"):
        raise ValueError(f"statistic {statistic!r}: use 'V' or 'U'")
    m = x.shape[0]
    w = torch.ones(1, m, dtype=x.dtype) if weights is None else weights.to(x.dtype)
    blocks = pair_blocks(m, block_size=block_size, max_pairs=max_pairs, generator=generator)
    c_all = columns(x) if m * x.shape[1] * _n_columns(columns, x) <= 5e7 else None

    def cols(idx: Tensor) -> Tensor:
        return c_all[idx] if c_all is not None else columns(x[idx])

    num = None
    den = torch.zeros(w.shape[0], dtype=x.dtype)
    h2 = bandwidth * bandwidth
    nw = w.shape[0]
    for ia, ib in blocks:
        ca, cb = cols(ia), cols(ib)                              # (A, d, P), (B, d, P)
        xa, xb = x[ia], x[ib]
        A, d, P = ca.shape
        B = len(ib)
        _, k, kg, k4 = _pieces(xa, xb, bandwidth)
        wa, wb = w[:, ia], w[:, ib]                              # (n_w, A), (n_w, B)
        alpha = torch.einsum("ad,adp->ap", xa, ca)               # x_aᵀ C(x_a)
        beta = torch.einsum("bd,bdp->bp", xb, cb)                # x_bᵀ C(x_b)
        # Every pair sum Σ_ab w_a w_b k_ab F(a) G(b) is a GEMM of k with the b-side factors (u = x_a − x_b expanded),
        # for all weight rows at once; see the module docstring for the terms.
        R = torch.cat([cb.reshape(B, -1), (xb[:, :, None, None] * cb[:, None]).reshape(B, -1),
                       (xb[:, :, None] * beta[:, None, :]).reshape(B, -1), beta], 1)
        Rg = torch.cat([torch.ones(B, 1, dtype=x.dtype), xb, cb.reshape(B, -1)], 1)
        Y = (k @ (wb.T[:, :, None] * R[:, None, :]).reshape(B, -1)).reshape(A, nw, -1) * wa.T[:, :, None]
        Yg = (kg @ (wb.T[:, :, None] * Rg[:, None, :]).reshape(B, -1)).reshape(A, nw, -1) * wa.T[:, :, None]
        o = [0, d * P, d * P + d * d * P, 2 * d * P + d * d * P, 2 * d * P + d * d * P + P]
        Y1 = Y[:, :, o[0]:o[1]].reshape(A, nw, d, P)             # Σ_b K C(x_b)
        Y3 = Y[:, :, o[1]:o[2]].reshape(A, nw, d, d, P)          # Σ_b K x_b C(x_b)
        Y4 = Y[:, :, o[2]:o[3]].reshape(A, nw, d, P)             # Σ_b K x_b β_b
        Yb = Y[:, :, o[3]:o[4]]                                  # Σ_b K β_b
        t1 = torch.einsum("adp,awdq->wpq", ca, Y1)
        t_i = torch.einsum("ap,awq->wpq", alpha, torch.einsum("ae,aweq->awq", xa, Y1))
        t_ii = torch.einsum("ap,awq->wpq", alpha, Yb)
        t_iii = torch.einsum("adp,ae,awdeq->wpq", ca, xa, Y3)
        t_iv = torch.einsum("adp,awdq->wpq", ca, Y4)
        ff = t1 / h2 - (t_i - t_ii - t_iii + t_iv) / (h2 * h2)  # Σ f(x)ᵀ K₁ f(x') per column pair
        g1, gx, gC = Yg[:, :, 0], Yg[:, :, 1:1 + d], Yg[:, :, 1 + d:].reshape(A, nw, d, P)
        fd = torch.einsum("ap,aw->wp", alpha, g1) - torch.einsum("adp,awd->wp", ca, gx)    # f(x)ᵀ ∇_xΔ_{x'}k
        df = -torch.einsum("ae,aweq->wq", xa, gC) + ((wa @ kg) * wb) @ beta               # f(x')ᵀ ∇_{x'}Δ_x k
        part = torch.empty(nw, P + 1, P + 1, dtype=x.dtype)
        part[:, :P, :P] = ff
        part[:, :P, P] = fd
        part[:, P, :P] = df
        part[:, P, P] = torch.einsum("wa,ab,wb->w", wa, k4, wb)
        den += wa.sum(1) * wb.sum(1)
        if statistic == "U" and ia is ib:       # the same block on both sides: remove the self-pairs (u = 0, k = 1)
            w2 = wa * wa
            part[:, :P, :P] -= torch.einsum("wa,adp,adq->wpq", w2, ca, ca) / h2
            part[:, P, P] -= w2.sum(1) * d * (d + 2) / (h2 * h2)
            den -= w2.sum(1)
        num = part if num is None else num + part
    assert num is not None
    H = num / den[:, None, None]
    return 0.5 * (H + H.transpose(1, 2))




def _n_columns(columns: Callable[[Tensor], Tensor], x: Tensor) -> int:
    return int(columns(x[:2]).shape[2])
