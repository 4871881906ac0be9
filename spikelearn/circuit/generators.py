"""Circuit generators. Each returns a :class:`Circuit` (weights ``(post, pre)``) and is seeded.

* :func:`gaussian` — all-to-all ``W ~ g N(0,1)/√N`` (no autapses unless asked).
* :func:`erdos_renyi` — sparse random graph, edge probability ``p``, weights ``g N(0,1)/√(pN)``.
* :func:`dale` — E/I network with excitatory fraction ``frac_exc``, optional per-neuron E/I balance.
* :func:`low_rank` — prescribed rank by SVD truncation of a Gaussian draw, matched to the draw's Frobenius norm,
  largest singular value or spectral radius (ALGORITHMS.md §8.2; ``norm="frobenius" | "spectral" |
  "spectral_radius"``, the same choice in the other low-rank generators).
* :func:`low_rank_aligned` — low rank whose row and column spaces are spanned by given task/input directions.
* :func:`task_aligned_low_rank` — draws input and readout weights, and a low-rank ``W_rec`` aligned with their span;
  the circuit carries those weights, so a model built on it starts from them (a run/sweep file can name it).
* :func:`block_model` — cell-type stochastic block model from a types x types probability table.

Sparse draws (connectome scale, ALGORITHMS-2.md §12). :func:`gaussian`, :func:`erdos_renyi`, :func:`dale`,
:func:`low_rank` and :func:`block_model` take ``draw="auto" | "dense" | "sparse"``:

* ``"dense"``: the original draw, through ``N x N`` arrays (every seed's result is what it always was);
* ``"sparse"``: the edge set is sampled directly — the number of edges ``K ~ Binomial(M, p)`` over the ``M``
  candidate pairs, then ``K`` distinct pairs uniformly (so each pair is an edge independently with probability ``p``,
  as in the dense draw) — and the weights are drawn per edge with the dense draw's distribution (same scale, fan-in
  normalisation, Dale signs and balance). Memory O(edges); never an ``N x N`` array. Another random stream than the
  dense draw: the same seed gives a different (equally distributed) circuit;
* ``"auto"`` (default): ``"dense"`` below :data:`SPARSE_DRAW_MIN_N` neurons, ``"sparse"`` from there on.

:data:`SPARSE_DRAW_MIN_N` = 10,000: above every size the package's tests and experiments use (at most a few
thousand), so their seeds keep their circuits, and where a dense float64 draw is already 0.8 GB per ``N x N`` array
(the dense draws hold two to four at once; at 100,000 neurons one is 80 GB). Inherently dense draws are refused at
and above the threshold, naming the size and why: :func:`low_rank` without a mask (``p = 1``: an all-to-all matrix
truncated by a full SVD) and :func:`dale`'s ``procedure="dense_then_sparsify"`` (balanced and scaled to a spectral
radius on the dense matrix). :func:`low_rank_aligned` and :func:`task_aligned_low_rank` stay dense (all-to-all).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Mapping

import numpy as np
import pandas as pd

from spikelearn.circuit.core import Circuit, CircuitError

__all__ = ["gaussian", "erdos_renyi", "dale", "low_rank", "truncate_rank", "low_rank_aligned", "task_aligned_low_rank",
           "block_model", "SPARSE_DRAW_MIN_N"]

SPARSE_DRAW_MIN_N = 10_000  # draw="auto" samples edges directly (no N x N array) from this many neurons on

Draw = Literal["auto", "dense", "sparse"]


def _sparse_draw(draw: Any, n: int, generator: str) -> bool:
    """Whether ``draw`` (``"auto"``, ``"dense"`` or ``"sparse"``) means the sparse draw for ``n`` neurons."""
    if draw not in ("auto", "dense", "sparse"):
        raise CircuitError(f"{generator}: draw must be 'auto' (dense below {SPARSE_DRAW_MIN_N:,} neurons, sparse "
                           f"from there on), 'dense' or 'sparse', got {draw!r}")
    return draw == "sparse" or (draw == "auto" and n >= SPARSE_DRAW_MIN_N)


def _too_dense(generator: str, n: int, why: str, instead: str) -> CircuitError:
    return CircuitError(f"{generator}: n = {n:,} neurons is at or above the sparse-draw threshold "
                        f"SPARSE_DRAW_MIN_N = {SPARSE_DRAW_MIN_N:,}, and {why} (one dense float64 {n:,} x {n:,} "
                        f"array is {8 * n * n / 1e9:.1f} GB); {instead}")


def _distinct(rng: np.random.Generator, m: int, k: int) -> np.ndarray:
    """``k`` distinct integers of ``[0, m)``, uniformly among the ``k``-subsets, sorted: ``k`` uniform draws, the
    duplicates redrawn until ``k`` distinct remain (the procedure commutes with any relabelling of ``[0, m)`` and
    always ends with ``k`` values, so the set is uniform). Memory O(k); expects ``k ≤ m/2``."""
    s = np.empty(0, np.int64)
    while s.size < k:
        s = np.sort(np.concatenate([s, rng.integers(0, m, k - s.size, dtype=np.int64)]))
        s = s[np.r_[True, s[1:] != s[:-1]]]
    return s


def _bernoulli_pairs(rng: np.random.Generator, rows: int, cols: int, p: float,
                     skip_diag: bool) -> tuple[np.ndarray, np.ndarray]:
    """Each of the ``rows x cols`` pairs (less the diagonal ``row == col`` when ``skip_diag``) independently with
    probability ``p``, without a ``rows x cols`` array: ``K ~ Binomial(M, p)`` over the ``M`` candidate pairs, then
    ``K`` distinct of them uniformly (:func:`_distinct`; ``p > 1/2`` draws the complement). Returns ``(row, col)``
    int64 in row-major order. Memory O(M·min(p, 1−p)) plus the result."""
    m_cols = cols - 1 if skip_diag else cols
    m = rows * m_cols
    if m <= 0 or p <= 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    if p >= 1:
        flat = np.arange(m, dtype=np.int64)
    elif p <= 0.5:
        flat = _distinct(rng, m, int(rng.binomial(m, p)))
    else:
        keep = np.ones(m, dtype=bool)
        keep[_distinct(rng, m, int(rng.binomial(m, 1.0 - p)))] = False
        flat = np.flatnonzero(keep).astype(np.int64)
    r, c = np.divmod(flat, m_cols)
    if skip_diag:
        c += c >= r
    return r, c


def _edge_circuit(n: int, post: np.ndarray, pre: np.ndarray, w: np.ndarray, **kwargs: Any) -> Circuit:
    """A circuit of ``n`` neurons ``0..n-1`` straight from edge arrays (no dense matrix), defaults as
    :meth:`Circuit.from_dense`."""
    kwargs.setdefault("cell_types", np.full(n, "unknown", dtype=object))
    kwargs.setdefault("signs", np.zeros(n, np.int8))
    return Circuit(node_ids=tuple(range(n)), post=post, pre=pre, w=w, **kwargs)


def _check_n(n: int, name: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise CircuitError(f"{name} must be a positive integer, got {n!r}")
    return int(n)


def _check_rank(rank: Any) -> int:
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)):
        raise CircuitError(f"rank must be an integer, got {rank!r}")
    return int(rank)


def _check_sigma0(sigma0: float) -> None:
    if not (isinstance(sigma0, (int, float, np.floating)) and np.isfinite(sigma0) and sigma0 > 0):
        raise CircuitError(f"sigma0 must be a finite number > 0 (it sets the norm the circuit is matched to), "
                           f"got {sigma0!r}")


NormMatch = Literal["frobenius", "spectral", "spectral_radius"]
_NORMS = ("frobenius", "spectral", "spectral_radius")


def _check_norm(norm: Any) -> None:
    if norm not in _NORMS:
        raise CircuitError(f"norm must be 'frobenius' (||W||_F), 'spectral' (σ₁) or 'spectral_radius' "
                           f"(max |eigenvalue|), got {norm!r}")


def _radius(eigenvalues: np.ndarray, sigma1: float | np.floating, what: str) -> float:
    """``max |eigenvalue|``, refused when it is zero up to rounding (``≤ √ε·σ₁``: a nilpotent matrix's computed
    eigenvalues are only that accurate), since a spectral radius of 0 cannot be rescaled to match another."""
    rho = float(np.abs(eigenvalues).max())
    if not rho > np.sqrt(np.finfo(np.float64).eps) * sigma1:
        raise CircuitError(f"norm='spectral_radius' cannot be matched: {what} is nilpotent up to rounding "
                           f"(spectral radius {rho:.3g}, largest singular value {sigma1:.3g}); a rank-1 matrix "
                           f"σ u vᵀ has the single non-zero eigenvalue σ vᵀu, zero when u ⊥ v. "
                           f"Use norm='frobenius' or 'spectral'")
    return rho


def gaussian(n: int, g: float = 1.0, *, seed: int = 0, self_loops: bool = False, draw: Draw = "auto") -> Circuit:
    """All-to-all Gaussian circuit ``W_ij ~ g N(0,1)/√N`` (diagonal absent unless ``self_loops``).

    ``draw`` (module docstring): the sparse draw lists the ``N(N−1)`` edges directly with one ``g N(0,1)/√N`` per
    edge; it avoids the dense draw's ``N x N`` arrays, but an all-to-all circuit's edge list is itself ``O(N²)``
    (24 bytes an edge): at connectome scale use :func:`erdos_renyi` or :func:`dale` with ``p``."""
    n = _check_n(n)
    rng = np.random.default_rng(seed)
    meta = {"generator": "gaussian", "g": g, "seed": seed}
    if _sparse_draw(draw, n, "gaussian"):
        post, pre = _bernoulli_pairs(rng, n, n, 1.0, skip_diag=not self_loops)
        return _edge_circuit(n, post, pre, g * rng.standard_normal(post.size) / np.sqrt(n),
                             metadata={**meta, "draw": "sparse"})
    W = g * rng.standard_normal((n, n)) / np.sqrt(n)
    mask = np.ones((n, n), bool)
    if not self_loops:
        np.fill_diagonal(mask, False)
        np.fill_diagonal(W, 0.0)
    return Circuit.from_dense(W, mask=mask, metadata=meta)


def erdos_renyi(n: int, p: float, g: float = 1.0, *, seed: int = 0, self_loops: bool = False,
                draw: Draw = "auto") -> Circuit:
    """Sparse Erdős–Rényi circuit: each ordered pair is an edge with probability ``p``; weights
    ``g N(0,1)/√(pN)`` so the spectral radius is ≈ g for large N. ``draw``: see the module docstring (the sparse
    draw: the same Bernoulli(``p``) edges and per-edge weights, memory O(edges))."""
    n = _check_n(n)
    if not (isinstance(p, (int, float, np.floating)) and 0 < p <= 1):
        raise CircuitError(f"connection probability p must be in (0, 1], got {p}")
    rng = np.random.default_rng(seed)
    if _sparse_draw(draw, n, "erdos_renyi"):
        post, pre = _bernoulli_pairs(rng, n, n, p, skip_diag=not self_loops)
        return _edge_circuit(n, post, pre, g * rng.standard_normal(post.size) / np.sqrt(p * n),
                             metadata={"generator": "erdos_renyi", "p": p, "g": g, "seed": seed, "draw": "sparse"})
    mask = rng.random((n, n)) < p
    if not self_loops:
        np.fill_diagonal(mask, False)
    W = np.where(mask, g * rng.standard_normal((n, n)) / np.sqrt(p * n), 0.0)
    return Circuit.from_dense(W, mask=mask, metadata={"generator": "erdos_renyi", "p": p, "g": g, "seed": seed})


def dale(n: int, frac_exc: float = 0.8, p: float = 1.0, g: float = 1.0, *, balance: Literal[None, "mean", "per_neuron"] = "mean",
         seed: int = 0, self_loops: bool = False,
         procedure: Literal["sparse", "dense_then_sparsify"] = "sparse",
         n_in: int | None = None, n_out: int | None = None, p_in: float = 1.0, p_out: float = 1.0,
         input_frac_exc: float | None = None, draw: Draw = "auto") -> Circuit:
    """Dale E/I circuit: the first ``round(frac_exc·N)`` neurons are excitatory (+1), the rest inhibitory (−1).

    ``procedure="sparse"`` (default): magnitudes ``|N(0,1)|·g/√(pN)`` on edges drawn with probability ``p``; column
    sign = presynaptic type. ``balance="mean"`` scales inhibitory weights so the expected E and I input to a neuron
    cancel; ``"per_neuron"`` scales each row's inhibitory weights so its E and I inputs cancel exactly (row sums 0);
    ``None`` leaves magnitudes as drawn. Cell types are ``"E"`` and ``"I"``.

    ``procedure="dense_then_sparsify"``: the MDGL source's initialisation (Liu et al. 2021, ALGORITHMS.md §3.5):
    dense ``|N(0,1)|`` magnitudes, balanced on the dense matrix (``"per_neuron"``: each row's E and I sums cancel;
    ``"mean"``: inhibitory magnitudes × N_E/N_I), scaled to spectral radius ``g``, then ``int(p·N²)`` positions drawn
    uniformly *with replacement* keep their dense weight (so slightly fewer than ``p·N²`` distinct edges, and the
    sparse matrix is neither balanced nor of spectral radius ``g``); autapses are dropped unless ``self_loops``.

    Sparse input and readout (the MDGL source's 10 % ``W_in``/``W_out``, §3.5): ``p_in < 1`` (with ``n_in``) gives
    the circuit a 2-D ``input_mask`` ``(N, n_in)``, ``p_out < 1`` (with ``n_out``) a 2-D ``output_mask``
    ``(n_out, N)``, drawn like the recurrent mask (``int(p·rows·cols)`` positions with replacement under
    ``"dense_then_sparsify"``, independent Bernoulli(``p``) under ``"sparse"``), after the recurrent weights (so
    these do not change). The circuit then also carries the initial weights on those masks, drawn with the e-prop
    scale on the *expected* fan-in (the source's scale is not specified; this is the package's choice):
    ``W_in ~ N(0, 1/(p_in·n_in))``, ``W_out ~ N(0, 1/(p_out·N))``. ``input_frac_exc`` makes the first
    ``round(input_frac_exc·n_in)`` input channels excitatory and the rest inhibitory (the source: 33 of 40):
    ``W_in`` magnitudes ``|N(0,1)|/√(p_in·n_in)`` with the channel's sign (give the model the same signs as
    ``input_channel_sign`` to keep them during training). A run/sweep file gets ``n_in``/``n_out`` from its task.

    ``draw`` (module docstring): the sparse draw of ``procedure="sparse"`` samples the Bernoulli(``p``) edges
    directly and one ``|N(0,1)|·g/√(pN)`` magnitude per edge, with the same signs and balance (``"per_neuron"``: each
    row's E and I sums cancel, from per-row sums over its edges); the input/readout masks and weights are drawn as
    in the dense draw (``N x n_in`` and ``n_out x N``). ``procedure="dense_then_sparsify"`` has no sparse draw (it
    balances and scales the dense matrix) and is refused there.
    """
    n = _check_n(n)
    if not (isinstance(g, (int, float, np.floating)) and np.isfinite(g) and g > 0):
        raise CircuitError(f"g must be a finite gain > 0 (the signs come from the E/I populations), got {g!r}")
    if not 0 < frac_exc < 1:
        raise CircuitError(f"frac_exc must be in (0, 1), got {frac_exc}")
    if not 0 < p <= 1:
        raise CircuitError(f"connection probability p must be in (0, 1], got {p}")
    n_e = int(round(frac_exc * n))
    if n_e in (0, n):
        raise CircuitError(f"frac_exc={frac_exc} with n={n} leaves one population empty")
    for nm, v in (("p_in", p_in), ("p_out", p_out)):
        if not (isinstance(v, (int, float, np.floating)) and 0 < v <= 1):
            raise CircuitError(f"{nm} must be in (0, 1], got {v!r}")
    if input_frac_exc is not None and not 0 <= input_frac_exc <= 1:
        raise CircuitError(f"input_frac_exc must be in [0, 1], got {input_frac_exc}")
    for nm, v, need in (("n_in", n_in, p_in < 1 or input_frac_exc is not None), ("n_out", n_out, p_out < 1)):
        if need and v is None:
            raise CircuitError(f"{nm} is needed with {'p_in/input_frac_exc' if nm == 'n_in' else 'p_out'} "
                               f"(a run/sweep file takes it from the task)")
        if v is not None:
            _check_n(v, nm)
    io = {"n_in": n_in, "n_out": n_out, "p_in": p_in, "p_out": p_out, "input_frac_exc": input_frac_exc}
    rng = np.random.default_rng(seed)
    signs = np.r_[np.ones(n_e), -np.ones(n - n_e)].astype(np.int8)
    meta = {"generator": "dale", "frac_exc": frac_exc, "p": p, "g": g, "balance": balance, "seed": seed}
    if _sparse_draw(draw, n, "dale"):
        if procedure == "dense_then_sparsify":
            why = ("procedure='dense_then_sparsify' balances the dense N x N magnitudes and scales them to spectral "
                   "radius g (eigenvalues of the dense matrix) before sparsifying")
            if draw == "auto":
                raise _too_dense("dale", n, why, "use procedure='sparse' (independent Bernoulli(p) edges)")
            raise CircuitError(f"dale: draw='sparse' is not available for {why}; use draw='dense' or "
                               f"procedure='sparse'")
        if procedure != "sparse":
            raise CircuitError(f"procedure must be 'sparse' or 'dense_then_sparsify', got {procedure!r}")
        if balance not in (None, "mean", "per_neuron"):
            raise CircuitError(f"balance must be None, 'mean' or 'per_neuron', got {balance!r}")
        post, pre = _bernoulli_pairs(rng, n, n, p, skip_diag=not self_loops)
        mag = np.abs(rng.standard_normal(post.size)) * g / np.sqrt(p * n)
        inh = pre >= n_e
        if balance == "mean":
            mag[inh] *= n_e / (n - n_e)
        elif balance == "per_neuron":
            e_in = np.bincount(post[~inh], mag[~inh], minlength=n)
            i_in = np.bincount(post[inh], mag[inh], minlength=n)
            bad = np.flatnonzero((i_in == 0) & (e_in > 0))
            if bad.size:
                raise CircuitError(f"per-neuron balance impossible: neuron(s) {bad[:10].tolist()} have excitatory "
                                   "but no inhibitory inputs")
            mag[inh] *= np.divide(e_in, i_in, out=np.zeros(n), where=i_in > 0)[post[inh]]
        meta.update(draw="sparse")
        return _edge_circuit(n, post, pre, mag * signs[pre], cell_types=["E"] * n_e + ["I"] * (n - n_e),
                             signs=signs, metadata=meta, **_dale_io(rng, n, procedure, meta, **io))
    if procedure == "dense_then_sparsify":
        mag = np.abs(rng.standard_normal((n, n)))
        if balance == "per_neuron":
            mag[:, n_e:] *= (mag[:, :n_e].sum(1) / mag[:, n_e:].sum(1))[:, None]
        elif balance == "mean":
            mag[:, n_e:] *= n_e / (n - n_e)
        elif balance is not None:
            raise CircuitError(f"balance must be None, 'mean' or 'per_neuron', got {balance!r}")
        W = mag * signs[None, :].astype(float)
        W *= g / np.abs(np.linalg.eigvals(W)).max()
        mask = _draw_mask(rng, n, n, p, procedure)
        if not self_loops:
            np.fill_diagonal(mask, False)
        W = np.where(mask, W, 0.0)
        meta.update(procedure=procedure, n_edges=int(mask.sum()),
                    spectral_radius_sparse=float(np.abs(np.linalg.eigvals(W)).max()))
        return Circuit.from_dense(W, mask=mask, cell_types=["E"] * n_e + ["I"] * (n - n_e), signs=signs,
                                  metadata=meta, **_dale_io(rng, n, procedure, meta, **io))
    if procedure != "sparse":
        raise CircuitError(f"procedure must be 'sparse' or 'dense_then_sparsify', got {procedure!r}")
    mask = _draw_mask(rng, n, n, p, procedure)
    if not self_loops:
        np.fill_diagonal(mask, False)
    mag = np.abs(rng.standard_normal((n, n))) * g / np.sqrt(p * n) * mask
    if balance == "mean":
        mag[:, n_e:] *= n_e / (n - n_e)
    elif balance == "per_neuron":
        e_in = mag[:, :n_e].sum(1)
        i_in = mag[:, n_e:].sum(1)
        bad = np.flatnonzero((i_in == 0) & (e_in > 0))
        if bad.size:
            raise CircuitError(f"per-neuron balance impossible: neuron(s) {bad[:10].tolist()} have excitatory but "
                               "no inhibitory inputs")
        mag[:, n_e:] *= np.divide(e_in, i_in, out=np.zeros(n), where=i_in > 0)[:, None]
    elif balance is not None:
        raise CircuitError(f"balance must be None, 'mean' or 'per_neuron', got {balance!r}")
    W = mag * signs[None, :].astype(float)
    return Circuit.from_dense(W, mask=mask, cell_types=["E"] * n_e + ["I"] * (n - n_e), signs=signs,
                              metadata=meta, **_dale_io(rng, n, procedure, meta, **io))


def _draw_mask(rng: np.random.Generator, rows: int, cols: int, p: float, procedure: str) -> np.ndarray:
    """:func:`dale`'s connectivity draw: ``int(p·rows·cols)`` positions with replacement (``"dense_then_sparsify"``,
    the MDGL source's) or independent Bernoulli(``p``) (``"sparse"``)."""
    if procedure == "dense_then_sparsify":
        m = np.zeros((rows, cols), dtype=bool)
        m.flat[rng.integers(0, rows * cols, size=int(p * rows * cols))] = True
        return m
    return rng.random((rows, cols)) < p


def _dale_io(rng: np.random.Generator, n: int, procedure: str, meta: dict, *, n_in: int | None, n_out: int | None,
             p_in: float, p_out: float, input_frac_exc: float | None) -> dict:
    """:func:`dale`'s sparse input/readout masks and initial weights (its docstring), as Circuit fields."""
    out: dict = {}
    fe = input_frac_exc
    if p_in < 1 or fe is not None:
        assert n_in is not None  # dale() requires it here
        m = _draw_mask(rng, n, n_in, p_in, procedure) if p_in < 1 else np.ones((n, n_in), dtype=bool)
        scale = 1.0 / np.sqrt(p_in * n_in)
        if fe is None:
            w = rng.standard_normal((n, n_in)) * scale
        else:
            n_e_in = int(round(fe * n_in))
            chan = np.r_[np.ones(n_e_in), -np.ones(n_in - n_e_in)]
            w = np.abs(rng.standard_normal((n, n_in))) * scale * chan[None, :]
            meta.update(input_frac_exc=fe, n_exc_inputs=n_e_in)
        out.update(input_mask=m, input_weights=np.where(m, w, 0.0))
        meta.update(p_in=p_in, n_input_edges=int(m.sum()))
    if p_out < 1:
        assert n_out is not None  # dale() requires it here
        m = _draw_mask(rng, n_out, n, p_out, procedure)
        w = rng.standard_normal((n_out, n)) / np.sqrt(p_out * n)
        out.update(output_mask=m, output_weights=np.where(m, w, 0.0))
        meta.update(p_out=p_out, n_output_edges=int(m.sum()))
    return out


def truncate_rank(W0: np.ndarray, rank: int, norm: NormMatch = "frobenius") -> np.ndarray:
    """Rank-``rank`` SVD truncation ``W_r = U_r S_r V_rᵀ`` of ``W0``, rescaled (ALGORITHMS.md §8.2) to

    * ``"frobenius"``: ``||W0||_F`` (the rich/lazy paper's choice, §8.2 [V-code]);
    * ``"spectral"``: ``W0``'s largest singular value, factor ``σ₁(W0)/σ₁(W_r)`` (§8.2 [D]);
    * ``"spectral_radius"``: ``W0``'s spectral radius ``ρ = max |eigenvalue|``, factor ``ρ(W0)/ρ(W_r)`` (§8.2
      [D]; ``W0`` square). ``ρ(W_r)`` is computed from the ``r x r`` matrix ``S_r V_rᵀ U_r``, which has ``W_r``'s
      non-zero eigenvalues. A truncation that is nilpotent (rank 1: ``ρ(W_r) = σ₁ |v₁ᵀu₁|``, zero when
      ``u₁ ⊥ v₁``) or a nilpotent ``W0`` cannot be matched and raises :class:`CircuitError`.
    """
    _check_norm(norm)
    W0 = np.asarray(W0, dtype=np.float64)
    if not 1 <= rank <= min(W0.shape):
        raise CircuitError(f"rank must be in [1, {min(W0.shape)}], got {rank}")
    if norm == "spectral_radius" and (W0.ndim != 2 or W0.shape[0] != W0.shape[1]):
        raise CircuitError(f"W0 must be square for norm='spectral_radius' (eigenvalues), got shape {W0.shape}")
    U, s, Vt = np.linalg.svd(W0)
    Wr = (U[:, :rank] * s[:rank]) @ Vt[:rank]
    if norm == "frobenius":
        return Wr * (np.linalg.norm(W0) / np.linalg.norm(Wr))
    if norm == "spectral":
        return Wr * (s[0] / np.linalg.svd(Wr, compute_uv=False)[0])
    rho0 = _radius(np.linalg.eigvals(W0), s[0], "W0")
    rho_r = _radius(np.linalg.eigvals(s[:rank, None] * (Vt[:rank] @ U[:, :rank])), s[0],
                    f"the rank-{rank} truncation of W0")
    return Wr * (rho0 / rho_r)


def low_rank(n: int, rank: int, sigma0: float = 1.25, *, norm: NormMatch = "frobenius", seed: int = 0,
             p: float = 1.0, draw: Draw = "auto") -> Circuit:
    """Prescribed-rank circuit (§8.2): ``W0 = σ0 G/√N`` (one draw per seed, shared by all ranks), truncated to
    ``rank`` by SVD and rescaled so that its Frobenius norm (``"frobenius"``, default), largest singular value
    (``"spectral"``) or spectral radius (``"spectral_radius"``) equals ``W0``'s — see :func:`truncate_rank`.
    All-to-all mask, diagonal included (truncation fills it; the model masks autapses at use).
    ``metadata['norm_match']`` reports the choice and ``metadata['target_norm']`` the matched value of ``W0``.

    At connectome scale (``draw``, module docstring) the low-rank *structure* is laid on a sparse mask: the sparse
    draw gives each pair an edge with probability ``p`` (diagonal a candidate, as above) and the edge the value
    ``c·(U S Vᵀ)[post, pre]``, with ``U``, ``V`` Haar-random orthonormal ``N x rank`` bases (the singular vectors
    of a Gaussian matrix are Haar) and ``S`` the large-``N`` top-``rank`` singular values of ``G/√N``
    (quarter-circle quantiles), ``c`` matching the Frobenius norm of the edges to ``σ0·√N`` (the expected
    ``||W0||_F``; per-edge variance ``σ0²/(pN)``, :func:`erdos_renyi`'s scale with ``g = σ0``). Memory
    O(edges + N·rank). With ``p = 1`` it is exactly rank ``rank``; with ``p < 1`` the masked matrix has full rank
    and its expectation ``p·c·U S Vᵀ`` has rank ``rank``. Only ``norm="frobenius"`` (the spectral norms would need
    the dense reference draw). ``p < 1`` exists only in the sparse draw (``"auto"`` takes it at any size); without
    a mask (``p = 1``) ``low_rank`` is inherently dense (``N²`` edges, an SVD of an ``N x N`` draw) and ``"auto"``
    refuses it from :data:`SPARSE_DRAW_MIN_N` neurons on (``draw="sparse"`` forces the all-to-all edge list)."""
    n = _check_n(n)
    rank = _check_rank(rank)
    _check_sigma0(sigma0)
    _check_norm(norm)
    if isinstance(p, bool) or not (isinstance(p, (int, float, np.floating)) and 0 < p <= 1):
        raise CircuitError(f"low_rank: p (the edge probability of the sparse draw's mask) must be in (0, 1], got {p!r}")
    sparse = _sparse_draw(draw, n, "low_rank")
    if draw == "dense" and p < 1:
        raise CircuitError(f"low_rank: p = {p} < 1 (the low-rank structure on a Bernoulli(p) mask) exists only in "
                           f"the sparse draw; draw='dense' is the all-to-all SVD truncation (p = 1)")
    if sparse and draw == "auto" and p == 1:
        raise _too_dense("low_rank", n, "low_rank without a mask (p = 1) is inherently dense: an all-to-all matrix "
                         f"({n * n:,} edges) truncated by an SVD of an N x N Gaussian draw",
                         "give p < 1 for the low-rank structure on a Bernoulli(p) mask (memory O(edges + N·rank)), "
                         "or draw='sparse' to force the all-to-all edge list")
    if sparse or p < 1:
        return _low_rank_sparse(n, rank, sigma0, norm, seed, float(p))
    W0 = sigma0 * np.random.default_rng(seed).standard_normal((n, n)) / np.sqrt(n)
    W = truncate_rank(W0, rank, norm)
    if norm == "spectral_radius":
        target = float(np.abs(np.linalg.eigvals(W0)).max())
    else:
        target = float(np.linalg.norm(W0) if norm == "frobenius" else np.linalg.norm(W0, 2))
    return Circuit.from_dense(W, mask=np.ones((n, n), bool),
                              metadata={"generator": "low_rank", "rank": rank, "sigma0": sigma0, "norm_match": norm,
                                        "target_norm": target, "seed": seed})


def _quarter_circle_top(n: int, rank: int) -> np.ndarray:
    """The ``rank`` largest of ``n`` singular values of ``G/√n`` (``G`` square Gaussian) in the large-``n`` limit:
    the quantiles ``1 − (k − ½)/n`` of the quarter-circle law, density ``√(4 − s²)/π`` on ``[0, 2]``."""
    grid = np.linspace(0.0, 2.0, 20_001)
    cdf = (grid * np.sqrt(4.0 - grid**2) + 4.0 * np.arcsin(grid / 2.0)) / (2.0 * np.pi)
    return np.interp(1.0 - (np.arange(rank) + 0.5) / n, cdf, grid)


def _haar_basis(rng: np.random.Generator, n: int, rank: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((n, rank)))
    return q * np.where(np.diag(r) < 0, -1.0, 1.0)  # sign-fixed QR of a Gaussian: Haar-distributed


def _low_rank_sparse(n: int, rank: int, sigma0: float, norm: str, seed: int, p: float) -> Circuit:
    """:func:`low_rank`'s sparse draw (its docstring)."""
    if norm != "frobenius":
        raise CircuitError(f"low_rank: the sparse draw matches norm='frobenius' only (the expected ||W0||_F = σ0·√N); "
                           f"norm={norm!r} would need the singular values or eigenvalues of the dense N x N "
                           f"reference draw, which the sparse draw never forms")
    if not 1 <= rank <= n:
        raise CircuitError(f"rank must be in [1, {n}], got {rank}")
    rng = np.random.default_rng(seed)
    post, pre = _bernoulli_pairs(rng, n, n, p, skip_diag=False)
    us = _haar_basis(rng, n, rank) * _quarter_circle_top(n, rank)
    v = _haar_basis(rng, n, rank)
    w = np.empty(post.size)
    step = max(1, 2**22 // rank)  # edges per chunk: two (step, rank) gathers of 32 MB
    for a in range(0, post.size, step):
        w[a:a + step] = np.einsum("ek,ek->e", us[post[a:a + step]], v[pre[a:a + step]])
    target = sigma0 * np.sqrt(n)
    fro = float(np.linalg.norm(w))
    if fro > 0:
        w *= target / fro
    return _edge_circuit(n, post, pre, w, metadata={"generator": "low_rank", "rank": rank, "sigma0": sigma0,
                                                    "norm_match": norm, "target_norm": float(target), "p": p,
                                                    "draw": "sparse", "seed": seed})


def low_rank_aligned(directions: np.ndarray, rank: int | None = None, sigma0: float = 1.25, *,
                     norm: NormMatch = "frobenius", seed: int = 0) -> Circuit:
    """Low-rank circuit aligned with given task/input directions.

    ``directions``: ``(N, k)`` columns spanning the task subspace (e.g. input weight vectors). With ``Q`` an
    orthonormal basis of their first ``rank`` columns, ``W = Q M Qᵀ`` with ``M ~ N(0,1)`` (``rank x rank``),
    so both row and column spaces lie in the task subspace; rescaled to the norm of a Gaussian
    ``σ0 G/√N`` draw of the same seed (``norm``: Frobenius, spectral or spectral radius, as :func:`low_rank`;
    ``W``'s eigenvalues are ``M``'s, so its spectral radius is ``ρ(M)``).
    """
    _check_norm(norm)
    D = np.asarray(directions, dtype=np.float64)
    if D.ndim != 2:
        raise CircuitError(f"directions must have shape (N, k), got {D.shape}")
    k: int
    n, k = D.shape
    rank = k if rank is None else _check_rank(rank)
    _check_sigma0(sigma0)
    if not 1 <= rank <= min(k, n):
        raise CircuitError(f"rank must be in [1, {min(k, n)}] for {k} directions of {n} neurons, got {rank}")
    Q, R = np.linalg.qr(D[:, :rank])
    if np.min(np.abs(np.diag(R))) < 1e-12 * max(1.0, np.abs(R).max()):
        raise CircuitError("directions are linearly dependent")
    return _subspace_low_rank(Q, Q, sigma0, norm, seed, "low_rank_aligned")


def _subspace_low_rank(q_col: np.ndarray, q_row: np.ndarray, sigma0: float, norm: str, seed: int,
                       generator: str) -> Circuit:
    """``W = q_col M q_rowᵀ`` (``M ~ N(0, 1)``, ``rank x rank``; column space in span(q_col), row space in
    span(q_row); both orthonormal) rescaled to the norm (``"frobenius"``, ``"spectral"`` or ``"spectral_radius"``)
    of the Gaussian ``σ0 G/√N`` drawn first from the same seed, as an all-to-all circuit. ``W``'s non-zero
    eigenvalues are those of the ``rank x rank`` matrix ``M q_rowᵀ q_col``."""
    _check_norm(norm)
    n, rank = q_col.shape
    rng = np.random.default_rng(seed)
    W0 = sigma0 * rng.standard_normal((n, n)) / np.sqrt(n)
    M = rng.standard_normal((rank, rank))
    W = q_col @ M @ q_row.T
    if norm == "spectral_radius":
        target = _radius(np.linalg.eigvals(W0), np.linalg.norm(W0, 2), "the Gaussian reference draw")
        W *= target / _radius(np.linalg.eigvals(M @ (q_row.T @ q_col)), np.linalg.norm(M, 2),
                              f"the rank-{rank} matrix ({generator})")
    else:
        target = np.linalg.norm(W0) if norm == "frobenius" else np.linalg.norm(W0, 2)
        W *= target / (np.linalg.norm(W) if norm == "frobenius" else np.linalg.norm(W, 2))
    return Circuit.from_dense(W, mask=np.ones((n, n), bool),
                              metadata={"generator": generator, "rank": rank, "sigma0": sigma0,
                                        "norm_match": norm, "target_norm": float(target), "seed": seed})


def task_aligned_low_rank(n: int, n_in: int, n_out: int, rank: int | None = None, sigma0: float = 1.25, *,
                          norm: NormMatch = "frobenius",
                          io_init: Literal["normal", "uniform"] = "normal",
                          structure: Literal["joint", "input_to_readout"] = "joint", seed: int = 0) -> Circuit:
    """Low-rank recurrent init aligned with the task's input and readout directions (ALGORITHMS.md §8.1).

    Draws input weights ``W_in`` ``(n, n_in)`` and readout weights ``W_out`` ``(n_out, n)`` — ``"normal"``:
    ``N(0, 1/n_in)`` and ``N(0, 1/n)`` (the models' ``W_in`` default and ``w_out_init = "normal"``); ``"uniform"``:
    ``U(±1/√fan_in)`` (torch's ``nn.Linear`` default, the rich/lazy paper's) — then ``W_rec`` of rank ``rank``,
    norm-matched to ``σ0 G/√n`` of the same seed, in one of two structures (ALGORITHMS.md §8.4 names the idea — an
    init aligned with the task statistics, their "Proposition 1" for a two-layer network — not an RNN construction,
    so both are offered):

    * ``"joint"``: ``W_rec = low_rank_aligned([W_in, W_outᵀ], rank, sigma0, norm)`` — row *and* column spaces inside
      the span of the first ``rank`` of the ``n_in + n_out`` directions (inputs first). The subspace is invariant, so
      the norm sits in ``rank`` eigenvalues: at the Frobenius norm of a Gaussian init the spectral radius is large
      (≈ σ0 √(n / rank)).
    * ``"input_to_readout"``: ``W_rec = Q_out M Q_inᵀ`` with ``Q_in``/``Q_out`` orthonormal bases of the first
      ``rank`` input columns / readout rows and ``M ~ N(0, 1)`` (``rank ≤ min(n_in, n_out)``) — maps input
      directions onto readout directions; nearly nilpotent (eigenvalues ~ the small overlap of the two bases), so
      ``norm="spectral_radius"`` scales it up by a large factor (and raises if it is nilpotent up to rounding).

    The returned circuit carries ``input_weights = W_in`` and ``output_weights = W_out``, so a model built on it
    starts from the very directions ``W_rec`` is aligned with. In a run file ``n_in``/``n_out`` come from the task.
    """
    n, n_in, n_out = _check_n(n), _check_n(n_in, "n_in"), _check_n(n_out, "n_out")
    _check_sigma0(sigma0)
    _check_norm(norm)
    if io_init not in ("normal", "uniform"):
        raise CircuitError(f"io_init must be 'normal' or 'uniform', got {io_init!r}")
    if structure not in ("joint", "input_to_readout"):
        raise CircuitError(f"structure must be 'joint' or 'input_to_readout', got {structure!r}")
    top = min(n_in + n_out, n) if structure == "joint" else min(n_in, n_out, n)
    rank = top if rank is None else _check_rank(rank)
    if not 1 <= rank <= top:
        raise CircuitError(f"rank must be in [1, {top}] for structure {structure!r} (n_in = {n_in}, n_out = {n_out}, "
                           f"n = {n}), got {rank}")
    rng = np.random.default_rng([seed, 1])  # a stream apart from low_rank_aligned's draws of the same seed
    if io_init == "normal":
        w_in = rng.standard_normal((n, n_in)) / np.sqrt(n_in)
        w_out = rng.standard_normal((n_out, n)) / np.sqrt(n)
    else:
        w_in = rng.uniform(-1.0, 1.0, (n, n_in)) / np.sqrt(n_in)
        w_out = rng.uniform(-1.0, 1.0, (n_out, n)) / np.sqrt(n)
    if structure == "joint":
        c = low_rank_aligned(np.concatenate([w_in, w_out.T], axis=1), rank, sigma0, norm=norm, seed=seed)
    else:
        c = _subspace_low_rank(np.linalg.qr(w_out[:rank].T)[0], np.linalg.qr(w_in[:, :rank])[0], sigma0, norm, seed,
                               "task_aligned_low_rank")
    meta = dict(c.metadata, generator="task_aligned_low_rank", n_in=n_in, n_out=n_out, io_init=io_init,
                structure=structure)
    return dataclasses.replace(c, input_weights=w_in, output_weights=w_out, metadata=meta)


def largest_remainder(n: int, proportions: np.ndarray, min_count: int = 1) -> np.ndarray:
    """Integer counts summing to ``n`` in the given proportions (largest-remainder), each ≥ ``min_count``."""
    p = np.asarray(proportions, dtype=np.float64)
    if (p < 0).any() or p.sum() <= 0:
        raise CircuitError("proportions must be non-negative with a positive sum")
    if n < min_count * p.size:
        raise CircuitError(f"n={n} is too small for {p.size} types with at least {min_count} neuron(s) each")
    p = p / p.sum()
    counts = np.full(p.size, min_count)
    rest = n - counts.sum()
    quota = p * n - counts
    quota = np.clip(quota, 0, None)
    if quota.sum() > 0:
        quota = quota / quota.sum() * rest
    base = np.floor(quota).astype(int)
    counts += base
    left = n - counts.sum()
    order = np.argsort(-(quota - base), kind="stable")
    counts[order[:left]] += 1
    return counts


def block_model(p_table: pd.DataFrame, sizes: Mapping[str, int] | None = None, *, n: int | None = None,
                proportions: Mapping[str, float] | None = None, rows: Literal["pre", "post"] = "pre",
                weight_table: pd.DataFrame | None = None, type_signs: Mapping[str, int] | None = None,
                weight_scale: float = 1.0, seed: int = 0, self_loops: bool = False, draw: Draw = "auto") -> Circuit:
    """Cell-type stochastic block model.

    Args:
        p_table: types x types connection probabilities in [0, 1] (a square DataFrame, same labels on both axes).
            ``rows="pre"`` (default) means rows are presynaptic types and columns postsynaptic, as in most
            published tables; ``rows="post"`` the reverse.
        sizes: neurons per type; or ``n`` with ``proportions`` (largest-remainder rounding, ≥ 1 per type).
        weight_table: optional types x types weight *magnitudes* (same orientation as ``p_table``); default 1.
        type_signs: optional type -> +1/-1 (Dale by type); weights get the presynaptic type's sign.
        weight_scale: multiplies all weights.

    Neurons are grouped by type in ``p_table`` order. ``metadata['p_table']`` keeps the (pre, post) table.
    ``draw`` (module docstring): the sparse draw samples each (post type, pre type) block's Bernoulli edges directly
    (memory O(edges + types²)); the weights are the block's constant, as in the dense draw.
    """
    if not isinstance(p_table, pd.DataFrame):
        raise CircuitError("p_table must be a pandas DataFrame with type labels on both axes")
    if p_table.shape[0] != p_table.shape[1] or list(p_table.index) != list(p_table.columns):
        raise CircuitError(f"p_table must be square with the same type labels on rows and columns, got shape "
                           f"{p_table.shape}")
    P = p_table if rows == "pre" else p_table.T
    if rows not in ("pre", "post"):
        raise CircuitError(f"rows must be 'pre' or 'post', got {rows!r}")
    types = [str(t) for t in P.index]
    Pv = P.to_numpy(dtype=np.float64)
    if not np.isfinite(Pv).all() or (Pv < 0).any() or (Pv > 1).any():
        raise CircuitError("p_table entries must be probabilities in [0, 1]")
    # type labels are compared as strings (p_table's labels are), so dicts keyed by the original labels work too
    sizes = None if sizes is None else {str(k): v for k, v in sizes.items()}
    proportions = None if proportions is None else {str(k): v for k, v in proportions.items()}
    type_signs = None if type_signs is None else {str(k): v for k, v in type_signs.items()}
    if sizes is not None:
        if set(sizes) != set(types):
            raise CircuitError(f"sizes keys {sorted(sizes)} differ from p_table types {types}")
        bad = {t: v for t, v in sizes.items() if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0}
        if bad:
            raise CircuitError(f"sizes must be non-negative integers (neuron counts), got {bad}")
        counts = np.array([int(sizes[t]) for t in types])
    else:
        if n is None or proportions is None:
            raise CircuitError("give either sizes, or n together with proportions")
        if set(proportions) != set(types):
            raise CircuitError(f"proportions keys {sorted(proportions)} differ from p_table types {types}")
        counts = largest_remainder(n, np.array([proportions[t] for t in types]))
    W_mag = np.ones_like(Pv)
    if weight_table is not None:
        Wt = weight_table if rows == "pre" else weight_table.T
        if Wt.shape != P.shape or list(map(str, Wt.index)) != types or list(map(str, Wt.columns)) != types:
            raise CircuitError(f"weight_table shape/labels {Wt.shape} do not match p_table {P.shape}")
        W_mag = Wt.to_numpy(dtype=np.float64)
        if not np.isfinite(W_mag).all():
            raise CircuitError("weight_table has non-finite entries")
        if type_signs is not None and (W_mag < 0).any():
            raise CircuitError("weight_table holds magnitudes when type_signs gives the signs; it has negative "
                               "entries (they would make neurons mixed-sign)")
    tsign = np.ones(len(types), np.int8)
    if type_signs is not None:
        missing = [t for t in types if t not in type_signs]
        if missing:
            raise CircuitError(f"type_signs has no sign for type(s) {missing}")
        bad = {t: type_signs[t] for t in types if type_signs[t] not in (1, -1) or isinstance(type_signs[t], bool)}
        if bad:
            raise CircuitError(f"type_signs must be +1 or -1 per type, got {bad}")
        tsign = np.array([type_signs[t] for t in types], np.int8)
    type_idx = np.repeat(np.arange(len(types)), counts)
    N = int(counts.sum())
    rng = np.random.default_rng(seed)
    signs = tsign[type_idx] if type_signs is not None else np.zeros(N, np.int8)
    meta = {"generator": "block_model", "types": types, "sizes": counts.tolist(), "p_table_pre_post": Pv.tolist(),
            "seed": seed}
    if _sparse_draw(draw, N, "block_model"):
        start = np.r_[0, np.cumsum(counts)].astype(np.int64)
        posts, pres, ws = [np.empty(0, np.int64)], [np.empty(0, np.int64)], [np.empty(0)]
        for a in range(len(types)):          # post type
            for b in range(len(types)):      # pre type
                r, c = _bernoulli_pairs(rng, int(counts[a]), int(counts[b]), float(Pv[b, a]),
                                        skip_diag=a == b and not self_loops)
                posts.append(r + start[a])
                pres.append(c + start[b])
                ws.append(np.full(r.size, weight_scale * W_mag[b, a] * (tsign[b] if type_signs is not None else 1)))
        return _edge_circuit(N, np.concatenate(posts), np.concatenate(pres), np.concatenate(ws),
                             cell_types=[types[k] for k in type_idx], signs=signs, metadata={**meta, "draw": "sparse"})
    prob = Pv[type_idx[None, :], type_idx[:, None]]          # (post, pre): P[pre_type, post_type]
    mask = rng.random((N, N)) < prob
    if not self_loops:
        np.fill_diagonal(mask, False)
    W = np.where(mask, weight_scale * W_mag[type_idx[None, :], type_idx[:, None]]
                 * (tsign[type_idx][None, :] if type_signs is not None else 1), 0.0)
    return Circuit.from_dense(W, mask=mask, cell_types=[types[k] for k in type_idx], signs=signs, metadata=meta)
