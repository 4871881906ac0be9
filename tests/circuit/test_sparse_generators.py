"""Sparse draws of the circuit generators (issue 19, ALGORITHMS-2.md §12): the edge set sampled directly, O(edges)
memory. At a size where both draws run, the sparse draw's statistics match the dense draw's (and the theory); below
``SPARSE_DRAW_MIN_N`` every existing seed gives the circuit it always gave; a 100,000-neuron circuit and a sparse
SpikingRNN on it build in a subprocess whose address space is capped at 1.5 GB (one N x N array alone is 10–80 GB)."""

import hashlib
import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pandas as pd
import pytest

from spikelearn.circuit import CircuitError, block_model, dale, erdos_renyi, gaussian, low_rank
from spikelearn.circuit.generators import SPARSE_DRAW_MIN_N

N, P = 1500, 0.04


def _any(x) -> Any:
    """A value the generators' signatures do not admit (the refusal is what is tested)."""
    return x


def _hash(c):
    h = hashlib.sha256()
    for a in (c.post, c.pre, c.w):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def _within(x, mean, sd, k=4.0):
    assert abs(x - mean) <= k * sd, (x, mean, sd)


def _check_edges(c, self_loops=False):
    """No duplicate edges (distinct (post, pre) keys), no autapses unless asked."""
    key = c.post * c.n + c.pre
    assert np.unique(key).size == c.n_edges
    if not self_loops:
        assert not (c.post == c.pre).any()


def _check_bernoulli(c, p, self_loops=False):
    """Edge count within 4 sd of Binomial(M, p); per-row fan-in mean and variance as a Binomial(N - 1, p) row."""
    n = c.n
    cols = n if self_loops else n - 1
    m = n * cols
    _within(c.n_edges, m * p, np.sqrt(m * p * (1 - p)))
    fan_in = np.bincount(c.post, minlength=n)
    mu, var = cols * p, cols * p * (1 - p)
    _within(fan_in.mean(), mu, np.sqrt(var / n))
    _within(fan_in.var(ddof=1), var, var * np.sqrt(2 / (n - 1)))
    return fan_in


def _check_moments(x, mean, var):
    """Sample mean and variance within 4 standard errors (normal approximation for the variance's SE, widened for
    the half-normal's kurtosis by a factor of 1.5)."""
    _within(x.mean(), mean, np.sqrt(var / x.size))
    _within(x.var(), var, 1.5 * var * np.sqrt(2 / x.size))


# ---------------------------------------------------------------- statistics: sparse draw = dense draw (= theory)

@pytest.mark.parametrize("self_loops", [False, True])
def test_erdos_renyi_sparse_matches_dense(self_loops):
    sd = 1.3 / np.sqrt(P * N)
    for draw in ("dense", "sparse"):
        c = erdos_renyi(N, P, 1.3, seed=11, self_loops=self_loops, draw=draw)
        assert c.metadata.get("draw", "dense") == draw
        _check_edges(c, self_loops)
        _check_bernoulli(c, P, self_loops)
        _check_moments(c.w, 0.0, sd**2)
        if self_loops:  # the diagonal is a candidate like any pair
            n_auto = int((c.post == c.pre).sum())
            _within(n_auto, N * P, np.sqrt(N * P * (1 - P)))


@pytest.mark.parametrize("balance", [None, "mean", "per_neuron"])
def test_dale_sparse_matches_dense(balance):
    n, p, g, fe = 1000, 0.1, 1.5, 0.8
    n_e = int(round(fe * n))
    s = g / np.sqrt(p * n)
    m1, var1 = np.sqrt(2 / np.pi), 1 - 2 / np.pi  # |N(0,1)|
    stats = {}
    for draw in ("dense", "sparse"):
        c = dale(n, fe, p=p, g=g, seed=4, balance=balance, draw=draw, n_in=3, n_out=2, p_in=0.5, p_out=0.5)
        assert c.metadata.get("draw", "dense") == draw
        _check_edges(c)
        _check_bernoulli(c, p)
        np.testing.assert_array_equal(c.signs, np.r_[np.ones(n_e), -np.ones(n - n_e)])
        exc = c.signs[c.pre] == 1
        assert (c.w[exc] > 0).all() and (c.w[~exc] < 0).all()  # Dale signs exact
        np.testing.assert_array_equal(c.dale_signs(), c.signs)
        _check_moments(c.w[exc], s * m1, s**2 * var1)
        if balance is None:
            _check_moments(-c.w[~exc], s * m1, s**2 * var1)
        elif balance == "mean":
            r = n_e / (n - n_e)
            _check_moments(-c.w[~exc], r * s * m1, (r * s) ** 2 * var1)
        else:  # each row's E and I inputs cancel
            np.testing.assert_allclose(np.bincount(c.post, c.w, minlength=n), 0.0, atol=1e-12)
        assert c.input_mask is not None and c.input_mask.shape == (n, 3)
        assert c.output_mask is not None and c.output_mask.shape == (2, n)
        stats[draw] = (c.n_edges, c.w[exc].mean(), c.w[~exc].mean())
    # the two draws agree with each other too (difference of two independent estimates, 4 sd)
    _within(stats["sparse"][0] - stats["dense"][0], 0, np.sqrt(2 * n * (n - 1) * p * (1 - p)))


def test_gaussian_sparse_matches_dense():
    n, g = 300, 1.4
    for draw in ("dense", "sparse"):
        c = gaussian(n, g, seed=2, draw=draw)
        assert c.n_edges == n * (n - 1)
        _check_edges(c)
        _check_moments(c.w, 0.0, g**2 / n)
    c = gaussian(n, g, seed=2, self_loops=True, draw="sparse")
    assert c.n_edges == n * n


def test_block_model_sparse_matches_dense():
    t = ["E", "PV", "SST"]
    table = pd.DataFrame([[0.2, 0.4, 0.1], [0.5, 0.3, 0.05], [0.3, 0.0, 1.0]], index=t, columns=t)  # rows = pre
    sizes = {"E": 600, "PV": 250, "SST": 150}
    wt = pd.DataFrame([[0.5, 1.0, 2.0], [0.3, 0.0, 0.7], [1.5, 0.2, 0.4]], index=t, columns=t)
    signs = {"E": 1, "PV": -1, "SST": -1}
    for draw in ("dense", "sparse"):
        c = block_model(table, sizes, seed=9, type_signs=signs, weight_table=wt, weight_scale=0.1, draw=draw)
        assert c.metadata.get("draw", "dense") == draw
        _check_edges(c)
        types = c.cell_types
        for a in t:          # pre
            for b in t:      # post
                sel = (types[c.pre] == a) & (types[c.post] == b)
                m = sizes[a] * sizes[b] - (sizes[a] if a == b else 0)
                pab = table.loc[a, b]
                if pab in (0.0, 1.0):
                    assert sel.sum() == pab * m
                else:
                    _within(sel.sum(), m * pab, np.sqrt(m * pab * (1 - pab)))
                assert np.all(c.w[sel] == 0.1 * wt.loc[a, b] * signs[a])  # the block's constant, Dale sign
        np.testing.assert_array_equal(c.signs[c.pre], np.where(types[c.pre] == "E", 1, -1))


def test_low_rank_sparse_draw():
    n, sigma0 = 300, 1.25
    dense = low_rank(n, 5, sigma0, seed=3).weights(dense=True)
    # p = 1: exactly rank 5, all-to-all with the diagonal, Frobenius norm σ0·√N (dense: ||W0||_F ≈ σ0·√N)
    c = low_rank(n, 5, sigma0, seed=3, draw="sparse")
    assert c.n_edges == n * n and c.metadata["draw"] == "sparse" and c.metadata["norm_match"] == "frobenius"
    W = c.weights(dense=True)
    assert np.linalg.matrix_rank(W) == 5
    assert np.linalg.norm(W) == pytest.approx(sigma0 * np.sqrt(n), rel=1e-12)
    _within(np.linalg.norm(dense), sigma0 * np.sqrt(n), 4 * sigma0)  # ||W0||_F: sd ≈ σ0/√2
    # singular-value profile of the truncation (top 5 of a Gaussian's, nearly equal) matched within 5 %
    sv_s, sv_d = (np.linalg.svd(x, compute_uv=False)[:5] for x in (W, dense))
    np.testing.assert_allclose(sv_s, sv_d, rtol=0.05)
    # p < 1 (any size under draw="auto"): Bernoulli(p) mask, diagonal a candidate, per-edge variance σ0²/(pN)
    p = 0.1
    cm = low_rank(n, 5, sigma0, seed=3, p=p)
    assert cm.metadata["draw"] == "sparse" and cm.metadata["p"] == p
    _check_edges(cm, self_loops=True)
    _check_bernoulli(cm, p, self_loops=True)
    assert np.linalg.norm(cm.w) == pytest.approx(sigma0 * np.sqrt(n), rel=1e-12)
    assert cm.w.var() == pytest.approx(sigma0**2 / (p * n), rel=0.05)
    assert np.array_equal(low_rank(n, 5, sigma0, seed=3, p=p).w, cm.w)  # seeded


# ---------------------------------------------------------------- existing seeds unchanged below the threshold

# sha256 of (post, pre, w) of these calls, recorded from the generators before the sparse draws were added
_TABLE = pd.DataFrame([[0.3, 0.1, 0.0], [0.2, 0.2, 0.4], [0.5, 0.0, 0.1]], index=list("abc"), columns=list("abc"))
SEEDED = {
    "gaussian": (lambda **k: gaussian(60, 1.3, seed=3, **k), "6f3f73e58eeb26a1"),
    "erdos_renyi": (lambda **k: erdos_renyi(80, 0.1, 1.2, seed=4, **k), "e8b446edb9c60837"),
    "dale_mean": (lambda **k: dale(70, 0.8, p=0.3, seed=5, **k), "4f146fc1363d31e1"),
    "block_model": (lambda **k: block_model(_TABLE, {"a": 10, "b": 15, "c": 5}, seed=8,
                                            type_signs={"a": 1, "b": 1, "c": -1}, **k), "403cb2f91f99c20f"),
    # these go through sums, eigenvalues or an SVD (the BLAS may round differently): compared auto vs dense only
    "dale_per_neuron": (lambda **k: dale(70, 0.8, p=0.3, seed=5, balance="per_neuron", **k), None),
    "dale_dts": (lambda **k: dale(50, 0.8, p=0.1, seed=6, procedure="dense_then_sparsify", n_in=4, n_out=2,
                                  p_in=0.5, p_out=0.5, **k), None),
    "low_rank": (lambda **k: low_rank(40, 3, seed=7, **k), None),
}


@pytest.mark.parametrize("name", list(SEEDED))
def test_existing_seeds_unchanged_below_the_threshold(name):
    make, recorded = SEEDED[name]
    auto, dense, default = make(draw="auto"), make(draw="dense"), make()
    for c in (dense, default):
        for f in ("post", "pre", "w", "signs"):
            assert np.array_equal(getattr(auto, f), getattr(c, f)), f
        assert "draw" not in c.metadata
    if recorded is not None:
        assert _hash(auto) == recorded
    sparse = make(draw="sparse") if name not in ("dale_dts",) else None
    if sparse is not None:
        assert sparse.metadata["draw"] == "sparse"


def test_threshold_sits_above_every_size_in_use_and_auto_switches_there():
    assert SPARSE_DRAW_MIN_N == 10_000  # tests and experiments use N ≤ a few thousand
    c = erdos_renyi(SPARSE_DRAW_MIN_N, 2e-5, seed=0)
    assert c.metadata["draw"] == "sparse"
    assert erdos_renyi(SPARSE_DRAW_MIN_N - 1, 2e-5, seed=0, draw="sparse").metadata["draw"] == "sparse"


# ---------------------------------------------------------------- bad parameters

def test_bad_parameters_are_refused_by_name():
    for call in (lambda: gaussian(10, draw=_any("csr")), lambda: erdos_renyi(10, 0.1, draw=_any("Sparse")),
                 lambda: dale(10, draw=_any(None)), lambda: low_rank(10, 2, draw=_any("dense_then_sparsify")),
                 lambda: block_model(_TABLE, {"a": 1, "b": 1, "c": 1}, draw=_any(1))):
        with pytest.raises(CircuitError, match="draw must be 'auto'"):
            call()
    for p in (0, 1.5, -0.1, True):
        with pytest.raises(CircuitError, match=r"low_rank: p \(the edge probability"):
            low_rank(10, 2, p=p)
    with pytest.raises(CircuitError, match="probability p must be in"):
        erdos_renyi(10, 0.0, draw="sparse")
    with pytest.raises(CircuitError, match="p = 0.5 < 1.*only in the sparse draw"):
        low_rank(10, 2, p=0.5, draw="dense")
    with pytest.raises(CircuitError, match="norm='frobenius' only.*norm='spectral'"):
        low_rank(10, 2, p=0.5, norm="spectral")
    with pytest.raises(CircuitError, match=r"rank must be in \[1, 10\]"):
        low_rank(10, 11, draw="sparse")
    # inherently dense draws at the threshold: refused, naming the size and why (before anything is drawn)
    n = SPARSE_DRAW_MIN_N
    with pytest.raises(CircuitError, match=r"low_rank: n = 10,000 neurons.*inherently dense.*0\.8 GB.*give p < 1"):
        low_rank(n, 2)
    with pytest.raises(CircuitError, match=r"dale: n = 10,000 neurons.*dense_then_sparsify.*spectral"):
        dale(n, p=0.01, procedure="dense_then_sparsify")
    with pytest.raises(CircuitError, match="draw='sparse' is not available.*dense_then_sparsify"):
        dale(50, p=0.1, procedure="dense_then_sparsify", draw="sparse")
    with pytest.raises(CircuitError, match="procedure must be"):
        dale(50, p=0.1, procedure=_any("other"), draw="sparse")
    with pytest.raises(CircuitError, match="balance must be"):
        dale(50, p=0.1, balance=_any("row"), draw="sparse")
    with pytest.raises(CircuitError, match="per-neuron balance impossible"):
        dale(200, 0.95, p=0.01, balance="per_neuron", seed=0, draw="sparse")


# ---------------------------------------------------------------- connectome scale, memory capped

_BIG = textwrap.dedent("""
    import resource
    import numpy as np, pandas as pd
    from spikelearn.circuit import block_model, dale, low_rank
    from spikelearn.models import SpikingRNN
    cap = 1_500_000_000
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))   # the whole address space, imports included
    n, p = 100_000, 0.0002                               # density 0.02 % (one dense N x N float64: 80 GB)
    c = dale(n, 0.8, p=p, seed=0)
    assert c.metadata["draw"] == "sparse" and c.n == n
    assert abs(c.n_edges - n * (n - 1) * p) < 4 * np.sqrt(n * (n - 1) * p)
    m = SpikingRNN(c, 2, 2, storage="sparse")
    assert m.storage == "sparse"
    assert all(b.numel() < n * n for b in list(m.buffers()) + list(m.parameters()))
    t = pd.DataFrame([[1e-4, 3e-4], [4e-4, 2e-4]], index=["E", "I"], columns=["E", "I"])
    b = block_model(t, {"E": 80_000, "I": 20_000}, type_signs={"E": 1, "I": -1}, seed=1)
    lr = low_rank(n, 4, p=1e-4, seed=2)
    print("edges", c.n_edges, b.n_edges, lr.n_edges,
          "peak_rss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
""")


def test_connectome_scale_draw_and_sparse_model_under_a_memory_cap():
    r = subprocess.run([sys.executable, "-c", _BIG], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "peak_rss_mb" in r.stdout
