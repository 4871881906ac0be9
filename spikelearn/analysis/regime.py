r"""Rich vs lazy learning: how much weights, representations and tangent kernels move during training.

ALGORITHMS.md §8 (Liu et al. ICLR 2024, arXiv:2310.08513; measures as in ``BioRNN_RichLazy/main.py``). All
measures compare a model at initialisation (θ_0) with the trained model (θ_T) on a fixed probe batch:

* weight change ``Δ_W = ||W_T − W_0||_F`` and ``Δ_W/||W_0||_F``, also per (post type, pre type) block
  (:func:`weight_change`, :func:`model_weight_change`);
* representation alignment ``RA = ⟨K_0, K_T⟩_F / (||K_0||_F ||K_T||_F)`` of the kernels ``K = H Hᵀ`` of the
  hidden activity ``H`` (probe trials × units) at one time step (uncentred, as the source), or linear CKA (the
  same on double-centred kernels ``C K C``, ``C = I − 11ᵀ/n``; Kornblith et al. 2019)
  (:func:`representation_alignment`);
* tangent-kernel alignment ``KA`` of ``K_f[(t,b,k),(t',b',k')] = ⟨∂y_k^{t,b}/∂θ, ∂y_{k'}^{t',b'}/∂θ⟩``,
  ``θ`` = W_rec by default (:func:`tangent_kernel`, :func:`tangent_kernel_alignment`); the Jacobian is built by
  batched vector-Jacobian products (``torch.func.vmap`` over trials of ``jacrev``, or autograd with
  ``is_grads_batched``), never one backward pass per kernel entry;
* sign similarity of activities (fraction of entries whose sign is unchanged) (:func:`sign_similarity`);
* effective rank of weights (participation ratio ``(Σσ²)²/Σσ⁴``, Roy–Vetterli; :func:`weight_effective_rank`)
  and of activity (the same on the centred activity matrix, :func:`activity_effective_rank`);
* gradient alignment between rules: cosine of each rule's update with BPTT's on the same batch
  (:func:`gradient_alignment`).

Sparse storage (``storage="sparse"``, ALGORITHMS-2 §12): every measure here takes the model's per-edge ``W_rec``
(:class:`~spikelearn.weights.SparseWeights`) without forming an ``N × N`` array — weight changes from the edge values
and per-block sums, the tangent kernel w.r.t. the per-edge values, matrix functions (effective rank, spectral norm and
radius) from a scipy CSR matrix (exact dense computations only up to ``DENSE_SUMMARY_MAX_N`` = 4000 neurons) — and gives the
dense storage's numbers where the quantity is the same.

Lazy ⇔ small ``Δ_W``, ``RA ≈ 1``, ``KA ≈ 1``. Measures are taken w.r.t. the trainable parameters ``θ`` (with
the model's masks and sign parameterisation; for unconstrained weights ``θ`` and the effective weight coincide
on the active entries).
"""

from __future__ import annotations

import copy
import inspect
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

from spikelearn.analysis.hessian import resolve_params
from spikelearn.circuit.core import effective_rank, spectral_norm, spectral_radius
from spikelearn.models import RateRecord, RateRNN, SpikingRNN
from spikelearn.rules import BPTT, RULES
from spikelearn.weights import SPARSE, SparseWeights

__all__ = ["kernel_alignment", "representation_kernel", "representation_alignment", "cka", "sign_similarity",
           "hidden_activity", "output_jacobian", "tangent_kernel", "tangent_kernel_alignment", "weight_change",
           "model_weight_change", "weight_effective_rank", "weight_spectral_radius", "activity_effective_rank",
           "gradient_alignment", "default_rules", "regime_summary", "regime_measurement", "sparse_to_scipy"]

ArrayLike = Tensor | np.ndarray


def _t64(a: ArrayLike) -> Tensor:
    return torch.as_tensor(a.detach() if isinstance(a, Tensor) else np.asarray(a)).to(torch.float64).cpu()


# ---------------------------------------------------------------------------------------------- kernels
def kernel_alignment(K0: ArrayLike, K1: ArrayLike) -> float:
    """``⟨K0, K1⟩_F / (||K0||_F ||K1||_F)`` (1 for proportional kernels; symmetric; scale invariant)."""
    a, b = _t64(K0), _t64(K1)
    if a.shape != b.shape:
        raise ValueError(f"kernels differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    den = float(a.norm() * b.norm())
    if den == 0.0:
        raise ValueError("kernel alignment is undefined for a zero kernel")
    return float((a * b).sum()) / den


def representation_kernel(H: ArrayLike, *, centered: bool = False) -> Tensor:
    """``K = H Hᵀ`` for ``H`` (n samples, d features), float64; ``centered`` uses ``C K C`` (features centred)."""
    h = _t64(H)
    if h.dim() != 2:
        raise ValueError(f"H must be (samples, features), got shape {tuple(h.shape)}")
    if centered:
        h = h - h.mean(0, keepdim=True)  # C H, so (C H)(C H)ᵀ = C K C
    return h @ h.T


def representation_alignment(H0: ArrayLike, H1: ArrayLike, *, centered: bool = False) -> float:
    """Alignment of the representation kernels of two activity matrices over the same samples.

    Args:
        H0, H1: ``(n, d0)`` and ``(n, d1)`` (rows = the same probe trials; feature counts may differ).
        centered: ``False`` — uncentred kernel alignment (RA of the source); ``True`` — linear CKA.
    """
    return kernel_alignment(representation_kernel(H0, centered=centered), representation_kernel(H1, centered=centered))


def cka(H0: ArrayLike, H1: ArrayLike) -> float:
    """Linear centred kernel alignment (Kornblith et al. 2019) = ``representation_alignment(centered=True)``;
    invariant to orthogonal transforms, isotropic scaling and translations of either feature space."""
    return representation_alignment(H0, H1, centered=True)


def sign_similarity(A0: ArrayLike, A1: ArrayLike) -> float:
    """Fraction of entries with ``sign(A0) == sign(A1)`` (0 counts as its own sign, so silent ReLU units that stay
    silent count as unchanged)."""
    a, b = _t64(A0), _t64(A1)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return float((torch.sign(a) == torch.sign(b)).to(torch.float64).mean())


def _select_time(T: int, time_index: int | Sequence[int] | slice | None) -> list[int]:
    if time_index is None:
        return list(range(T))
    if isinstance(time_index, slice):
        return list(range(T))[time_index]
    ts = [int(time_index)] if isinstance(time_index, (int, np.integer)) else [int(t) for t in time_index]
    bad = [t for t in ts if not -T <= t < T]
    if bad:
        raise IndexError(f"time_index {bad} out of range for T = {T} steps (use -T <= t < T)")
    return [t % T for t in ts]


@torch.no_grad()
def hidden_activity(model: nn.Module, x: Tensor, *, time_index: int | Sequence[int] | slice = -1) -> Tensor:
    """Hidden activity of the probe trials: rates ``r`` (RateRNN) or filtered spikes ``z̄`` (SpikingRNN).

    Args:
        x: ``(T, B, n_in)``. time_index: one step (default the last) -> ``(B, N)``; several steps -> ``(B, n_t·N)``
            (each trial's activity over those steps, concatenated).
    """
    rec = model(x.to(dtype=next(model.parameters()).dtype), record=True).record
    act = rec.r if isinstance(rec, RateRecord) else rec.z_filt
    ts = _select_time(act.shape[0], time_index)
    if isinstance(time_index, (int, np.integer)):
        return act[ts[0]]
    return act[ts].permute(1, 0, 2).reshape(act.shape[1], -1)


# ---------------------------------------------------------------------------------------------- tangent kernel
def output_jacobian(model: nn.Module, x: Tensor, *, params: Sequence[str] = ("W_rec",),
                    time_index: int | Sequence[int] | slice | None = None, method: str = "auto",
                    chunk_size: int | None = None) -> Tensor:
    """Jacobian of the outputs w.r.t. parameters, one row per output entry ``(t, b, k)`` (row-major).

    Args:
        x: ``(T, B, n_in)`` probe inputs. params: as :func:`~spikelearn.analysis.hessian.hessian_operator`
            (default ``W_rec``; all entries, masked ones give zero columns; with ``storage="sparse"`` one column per
            edge, in the order of ``model.rec_post``/``rec_pre`` — the dense storage's active entries in row-major
            order, so ``J_sparse == J_dense[:, mask_rec.flatten()]``).
        time_index: output steps used (default all).
        method: ``"vmap"`` — ``torch.func.vmap`` over trials of ``jacrev`` (each trial back-propagated alone;
            needs a model made of functorch-compatible ops, e.g. :class:`~spikelearn.models.RateRNN`);
            ``"autograd"`` — one batched backward (``is_grads_batched``) over one-hot cotangents (any model,
            e.g. :class:`~spikelearn.models.SpikingRNN`); ``"sequential"`` — each trial run alone and one backward
            pass per output entry of it (``n_t·K`` passes of batch 1 per trial, the work of ``"vmap"`` without
            its vectorisation); ``"auto"`` — sequential with ``storage="sparse"``, else vmap for RateRNN and autograd
            otherwise. Sparse storage needs ``"sequential"``: torch's sparse CSR products, which its forward and
            backward use, have no vmap rule (so neither ``vmap`` nor ``is_grads_batched`` runs through them).
        chunk_size: trials (vmap; default 1, the fastest on CPU as it keeps the working set small) or one-hot
            cotangents (autograd; default all) processed at once; unused by ``"sequential"``.

    Returns:
        ``(n_t·B·K, P)`` with ``P`` the total size of the parameters, in their dtype.
    """
    sparse = getattr(model, "storage", "dense") == "sparse"
    if method == "auto":
        method = "sequential" if sparse else "vmap" if isinstance(model, RateRNN) else "autograd"
    if sparse and method in ("vmap", "autograd"):
        raise ValueError(f"output_jacobian: method={method!r} cannot run on storage='sparse' (torch's sparse CSR "
                         f"products have no vmap rule, and {method!r} vectorises over cotangents or trials with "
                         f"vmap); use method='sequential' (the default 'auto' picks it)")
    sel = resolve_params(model, params)
    names = [n for n, _, _ in sel]
    dtype = sel[0][1].dtype
    x = x.to(dtype=dtype, device=sel[0][1].device)
    T, B, _ = x.shape
    ts = _select_time(T, time_index)
    if method == "vmap":

        base = {k: v.detach() for k, v in model.named_parameters()}
        base.update({k: v.detach() for k, v in model.named_buffers()})

        def f(p: dict[str, Tensor], xb: Tensor) -> Tensor:  # xb (T, n_in) -> (n_t, K)
            return functional_call(model, {**base, **p}, (xb[:, None, :],)).y[ts, 0, :]

        sel_p = {n: base[n] for n in names}
        jac = vmap(jacrev(f), in_dims=(None, 1), chunk_size=chunk_size or 1)(sel_p, x)  # name -> (B, n_t, K, *shape)
        J = torch.cat([jac[n].reshape(B, len(ts), -1, base[n].numel()) for n in names], dim=-1)
        return J.permute(1, 0, 2, 3).reshape(-1, J.shape[-1])
    if method not in ("autograd", "sequential"):
        raise ValueError(f"method must be 'auto', 'vmap', 'autograd' or 'sequential', got {method!r}")
    ps = [p for _, p, _ in sel]
    was = [p.requires_grad for p in ps]
    try:  # a frozen model (e.g. Trainer.initial_model()) is differentiated too; its flags are restored below
        for p in ps:
            p.requires_grad_(True)
        if method == "sequential":
            return _sequential_jacobian(model, x, ts, ps)
        return _autograd_jacobian(model, x, ts, ps, chunk_size)
    finally:
        for p, w in zip(ps, was):
            p.requires_grad_(w)


def _autograd_jacobian(model: nn.Module, x: Tensor, ts: list[int], ps: Sequence[Tensor], chunk_size: int | None
                       ) -> Tensor:
    with torch.enable_grad():
        y = model(x).y[ts]  # (n_t, B, K)
        M = y.numel()
        step = M if chunk_size is None else int(chunk_size)
        rows = []
        for a in range(0, M, step):
            b = min(a + step, M)
            E = torch.zeros(b - a, M, dtype=y.dtype, device=y.device)
            E[torch.arange(b - a), torch.arange(a, b)] = 1.0
            g = torch.autograd.grad(y, ps, grad_outputs=E.reshape(b - a, *y.shape), is_grads_batched=True,
                                    retain_graph=True, allow_unused=True)
            rows.append(torch.cat([(torch.zeros(b - a, p.numel(), dtype=p.dtype, device=p.device) if gi is None
                                    else gi.reshape(b - a, -1)) for p, gi in zip(ps, g)], dim=1))
    return torch.cat(rows)


def _sequential_jacobian(model: nn.Module, x: Tensor, ts: list[int], ps: Sequence[Tensor]) -> Tensor:
    """The Jacobian trial by trial, one backward pass per output entry (no vmap: any storage)."""
    P = sum(int(p.numel()) for p in ps)
    trials = []
    with torch.enable_grad():
        for b in range(x.shape[1]):
            y = model(x[:, b:b + 1]).y[ts, 0]  # (n_t, K)
            flat = y.reshape(-1)
            rows = []
            for i in range(flat.numel()):
                g = torch.autograd.grad(flat[i], ps, retain_graph=i + 1 < flat.numel(), allow_unused=True)
                rows.append(torch.cat([torch.zeros(p.numel(), dtype=p.dtype, device=p.device) if gi is None
                                       else gi.reshape(-1) for p, gi in zip(ps, g)]))
            trials.append(torch.stack(rows).reshape(y.shape[0], y.shape[1], P) if rows
                          else y.new_zeros(y.shape[0], y.shape[1], P))
    return torch.stack(trials, dim=1).reshape(-1, P)  # rows (t, b, k)


def tangent_kernel(model: nn.Module, x: Tensor, *, params: Sequence[str] = ("W_rec",),
                   time_index: int | Sequence[int] | slice | None = None, method: str = "auto",
                   chunk_size: int | None = None) -> Tensor:
    """Empirical tangent kernel ``J Jᵀ`` (``(M, M)``, ``M = n_t·B·K``, rows ``(t, b, k)``); see
    :func:`output_jacobian` for the arguments. Computed in the parameters' dtype."""
    J = output_jacobian(model, x, params=params, time_index=time_index, method=method, chunk_size=chunk_size)
    return J @ J.T


def tangent_kernel_alignment(model0: nn.Module, model1: nn.Module, x: Tensor, **kwargs: Any) -> float:
    """``KA`` between the tangent kernels of two models (e.g. initial and trained) on the probe ``x``; keyword
    arguments as :func:`tangent_kernel`."""
    return kernel_alignment(tangent_kernel(model0, x, **kwargs), tangent_kernel(model1, x, **kwargs))


# ---------------------------------------------------------------------------------------------- weights
def weight_change(W0: ArrayLike | SparseWeights, W1: ArrayLike | SparseWeights, *,
                  post_types: Sequence | np.ndarray | None = None, pre_types: Sequence | np.ndarray | None = None,
                  name: str = "W") -> pd.DataFrame:
    """Absolute and relative change of a weight matrix, overall and per cell-type block.

    Args:
        W0, W1: ``(post, pre)`` before and after: dense matrices, or both
            :class:`~spikelearn.weights.SparseWeights` (per-edge storage; their edge sets may differ, e.g. after
            rewiring — an edge present on one side only counts as 0 on the other). Sparse inputs form no
            ``N × N`` array: the norms are per-block sums of squared edge values (``SPARSE.block_sums``), and
            every number equals the dense computation's on the same matrices (``n_entries`` included: it counts
            every (post, pre) pair of the block, absent edges too).
        post_types, pre_types: optional labels per row / column; blocks are formed for every (post type, pre type)
            pair present (a ``None`` side is one block ``"all"``).
        name: value of the ``weight`` column.

    Returns:
        DataFrame, one row per block plus the whole matrix (``post_type = pre_type = "all"``): ``weight,
        post_type, pre_type, n_entries, norm_before, norm_after, abs_change`` (``||ΔW||_F``), ``rel_change``
        (``||ΔW||_F/||W0||_F``, NaN when ``W0`` is 0 there), ``rms_change`` (``||ΔW||_F/√n_entries``).
    """
    if isinstance(W0, SparseWeights) or isinstance(W1, SparseWeights):
        if not (isinstance(W0, SparseWeights) and isinstance(W1, SparseWeights)):
            raise TypeError(f"weight_change: W0 and W1 must both be SparseWeights or both dense, got "
                            f"{type(W0).__name__} and {type(W1).__name__}")
        return _sparse_weight_change(W0, W1, post_types, pre_types, name)
    a, b = _t64(W0).numpy(), _t64(W1).numpy()
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"W0 and W1 must be matrices of one shape, got {a.shape} and {b.shape}")

    def row(pt: Any, qt: Any, rs: np.ndarray, cs: np.ndarray) -> dict:
        w0, d = a[np.ix_(rs, cs)], (b - a)[np.ix_(rs, cs)]
        n0, dn = float(np.linalg.norm(w0)), float(np.linalg.norm(d))
        return {"weight": name, "post_type": pt, "pre_type": qt, "n_entries": int(w0.size), "norm_before": n0,
                "norm_after": float(np.linalg.norm(b[np.ix_(rs, cs)])), "abs_change": dn,
                "rel_change": dn / n0 if n0 > 0 else float("nan"),
                "rms_change": dn / np.sqrt(w0.size) if w0.size else float("nan")}

    all_r, all_c = np.arange(a.shape[0]), np.arange(a.shape[1])
    rows = [row("all", "all", all_r, all_c)]
    post = np.asarray(post_types, dtype=object) if post_types is not None else None
    pre = np.asarray(pre_types, dtype=object) if pre_types is not None else None
    if post is not None and len(post) != a.shape[0] or pre is not None and len(pre) != a.shape[1]:
        raise ValueError("post_types/pre_types must have one label per row/column")
    if post is not None or pre is not None:
        pts = list(dict.fromkeys(post.tolist())) if post is not None else ["all"]
        qts = list(dict.fromkeys(pre.tolist())) if pre is not None else ["all"]
        for pt in pts:
            rs = np.flatnonzero(post == pt) if post is not None else all_r
            for qt in qts:
                cs = np.flatnonzero(pre == qt) if pre is not None else all_c
                rows.append(row(pt, qt, rs, cs))
    return pd.DataFrame(rows)


def _union_values(W0: SparseWeights, W1: SparseWeights) -> tuple[SparseWeights, Tensor, Tensor]:
    """Both projections' values (float64, CPU) on the union of their edges: ``(structure, v0, v1)``."""
    p0, q0, v0 = W0.post.cpu(), W0.pre.cpu(), W0.values.detach().to(torch.float64).cpu()
    p1, q1, v1 = W1.post.cpu(), W1.pre.cpu(), W1.values.detach().to(torch.float64).cpu()
    if torch.equal(p0, p1) and torch.equal(q0, q1):
        return SparseWeights(v0, p0, q0, W0.shape), v0, v1
    n_pre = W0.shape[1]
    keys, inv = torch.unique(torch.cat([p0 * n_pre + q0, p1 * n_pre + q1]), return_inverse=True)  # sorted
    a = torch.zeros(keys.numel(), dtype=torch.float64).index_add(0, inv[:v0.numel()], v0)
    b = torch.zeros(keys.numel(), dtype=torch.float64).index_add(0, inv[v0.numel():], v1)
    return SparseWeights(a, keys // n_pre, keys % n_pre, W0.shape), a, b


def _codes(labels: Sequence | np.ndarray | None, n: int, side: str) -> tuple[list, Tensor, np.ndarray]:
    """``(block names in order of first appearance, code per row/column, rows/columns per block)``."""
    if labels is None:
        return ["all"], torch.zeros(n, dtype=torch.long), np.array([n])
    lab = np.asarray(labels, dtype=object)
    if len(lab) != n:
        raise ValueError(f"post_types/pre_types must have one label per row/column ({side}: {len(lab)} labels for "
                         f"{n})")
    names = list(dict.fromkeys(lab.tolist()))
    pos = {k: i for i, k in enumerate(names)}
    codes = np.array([pos[k] for k in lab.tolist()], dtype=np.int64)
    return names, torch.as_tensor(codes), np.bincount(codes, minlength=len(names))


def _sparse_weight_change(W0: SparseWeights, W1: SparseWeights, post_types: Sequence | np.ndarray | None,
                          pre_types: Sequence | np.ndarray | None, name: str) -> pd.DataFrame:
    """:func:`weight_change` on per-edge storage: per-block sums of squares of the edge values, no ``N × N``."""
    if W0.shape != W1.shape:
        raise ValueError(f"W0 and W1 must be matrices of one shape, got {W0.shape} and {W1.shape}")
    n_post, n_pre = W0.shape
    S, v0, v1 = _union_values(W0, W1)
    pts, pc, pn = _codes(post_types, n_post, "rows")
    qts, qc, qn = _codes(pre_types, n_pre, "columns")
    sums = [SPARSE.block_sums(S.with_values(v), pc, qc, len(pts), len(qts)).numpy()
            for v in (v0 * v0, v1 * v1, (v1 - v0) ** 2)]

    def row(pt: Any, qt: Any, n_entries: int, s0: float, s1: float, sd: float) -> dict:
        n0, dn = float(np.sqrt(s0)), float(np.sqrt(sd))
        return {"weight": name, "post_type": pt, "pre_type": qt, "n_entries": int(n_entries), "norm_before": n0,
                "norm_after": float(np.sqrt(s1)), "abs_change": dn, "rel_change": dn / n0 if n0 > 0 else float("nan"),
                "rms_change": dn / np.sqrt(n_entries) if n_entries else float("nan")}

    rows = [row("all", "all", n_post * n_pre, *(float((v * v).sum()) for v in (v0, v1, v1 - v0)))]
    if post_types is not None or pre_types is not None:
        for i, pt in enumerate(pts):
            for j, qt in enumerate(qts):
                rows.append(row(pt, qt, int(pn[i]) * int(qn[j]), *(float(m[i, j]) for m in sums)))
    return pd.DataFrame(rows)


def model_weight_change(model0: RateRNN | SpikingRNN, model1: RateRNN | SpikingRNN, *,
                        which: Sequence[str] = ("W_rec", "W_in", "W_out"), by_cell_type: bool = True) -> pd.DataFrame:
    """:func:`weight_change` of the effective weights of two models of the same circuit (before, after).

    Blocks: ``W_rec`` by (post type, pre type); ``W_in`` by post type (pre ``"input"``); ``W_out`` by pre type
    (post ``"output"``); cell types from ``model.circuit.cell_types`` when ``by_cell_type``.
    """
    e0, e1 = model0.effective_weights()._asdict(), model1.effective_weights()._asdict()
    types = np.asarray(model0.circuit.cell_types, dtype=object) if by_cell_type else None
    frames = []
    for w in which:
        if e0.get(w) is None:
            raise KeyError(f"{w!r} is not an effective weight of this model")
        W0, W1 = e0[w].detach(), e1[w].detach()
        if w == "W_rec":
            frames.append(weight_change(W0, W1, post_types=types, pre_types=types, name=w))
        elif w == "W_in":
            frames.append(weight_change(W0, W1, post_types=types, pre_types=["input"] * W0.shape[1], name=w))
        elif w == "W_out":
            frames.append(weight_change(W0, W1, post_types=["output"] * W0.shape[0], pre_types=types, name=w))
        else:  # biases: (n,) -> one row
            frames.append(weight_change(W0.reshape(1, -1), W1.reshape(1, -1), name=w))
    df = pd.concat(frames, ignore_index=True)
    return df.drop_duplicates(subset=["weight", "post_type", "pre_type"], keep="first").reset_index(drop=True)


def sparse_to_scipy(W: SparseWeights) -> sp.csr_array:
    """A per-edge projection as a scipy CSR matrix (float64, from the edge arrays; no dense matrix)."""
    v = W.values.detach().to(torch.float64).cpu().numpy()
    return sp.csr_array((v, (W.post.cpu().numpy(), W.pre.cpu().numpy())), shape=W.shape)


def weight_effective_rank(W: ArrayLike | SparseWeights) -> dict[str, float]:
    """Participation ratio and Roy–Vetterli effective rank of a weight matrix (§8.2), plus its Frobenius and
    spectral norms: ``{"participation_ratio", "roy_vetterli", "frobenius", "spectral"}``.

    ``W`` may be per-edge (:class:`~spikelearn.weights.SparseWeights`): it becomes a scipy CSR matrix, computed
    exactly (the dense numbers) up to ``DENSE_SUMMARY_MAX_N`` neurons; above, no dense matrix is formed — the
    participation ratio is still exact (``‖W‖_F⁴/‖WᵀW‖_F²``), the spectral norm comes from ARPACK (``svds``) and
    ``roy_vetterli``, which needs every singular value, is NaN (:func:`~spikelearn.circuit.core.effective_rank`).
    """
    if isinstance(W, SparseWeights):
        Ws = sparse_to_scipy(W)
        out = effective_rank(Ws)
        out.update(frobenius=float(np.linalg.norm(np.asarray(Ws.data))), spectral=spectral_norm(Ws))
        return out
    a = _t64(W).numpy()
    out = effective_rank(a)
    out.update(frobenius=float(np.linalg.norm(a)), spectral=float(np.linalg.norm(a, 2)) if a.size else 0.0)
    return out


def weight_spectral_radius(W: ArrayLike | SparseWeights) -> float:
    """``max |eigenvalue|`` of a square weight matrix (0 if empty). Dense: every eigenvalue. Per-edge
    (:class:`~spikelearn.weights.SparseWeights`): the same dense computation up to ``DENSE_SUMMARY_MAX_N``
    neurons, above it ARPACK on a scipy CSR matrix (no dense matrix; NaN if it does not converge)."""
    if isinstance(W, SparseWeights):
        return spectral_radius(sparse_to_scipy(W))
    return spectral_radius(_t64(W).numpy())


def activity_effective_rank(H: ArrayLike, *, centered: bool = True) -> dict[str, float]:
    """Effective dimensionality of activity ``H`` (samples × units): participation ratio
    ``(Σλ)²/Σλ²`` of the covariance eigenvalues ``λ`` (``centered``; else of the second-moment matrix) and
    Roy–Vetterli rank of the singular values."""
    h = _t64(H)
    if h.dim() != 2:
        raise ValueError(f"H must be (samples, units), got shape {tuple(h.shape)}")
    if centered:
        h = h - h.mean(0, keepdim=True)
    return effective_rank(h.numpy())


# ---------------------------------------------------------------------------------------------- rules
def default_rules(model: nn.Module | None = None) -> dict[str, Any]:
    """Every rule of :data:`spikelearn.rules.RULES` whose hyperparameters all have defaults, instantiated; with
    ``model``, only those whose ``model_types`` (``"rate"`` / ``"spiking"``) cover it (e.g. no e-prop for a
    :class:`~spikelearn.models.RateRNN`)."""

    kind = None if model is None else ("rate" if isinstance(model, RateRNN) else "spiking")
    out = {}
    for name, cls in RULES.items():
        ps = inspect.signature(cls).parameters.values()
        if not all(p.default is not inspect.Parameter.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                   for p in ps):
            continue
        rule = cls()
        if kind is None or kind in rule.model_types:
            out[name] = rule
    return out


def _cos(a: Tensor, b: Tensor) -> float:
    den = float(a.norm() * b.norm())
    return float(a @ b) / den if den > 0 else float("nan")


def gradient_alignment(model: nn.Module, x: Tensor, y: Tensor, mask: Tensor,
                       loss_fn: Callable[[Tensor, Tensor, Tensor], Tensor], *,
                       rules: Mapping[str, Any] | None = None, reference: Any = None,
                       on_error: str = "raise") -> pd.DataFrame:
    """Cosine similarity of each rule's update with the reference (BPTT) gradient on the same batch.

    Args:
        model, x, y, mask, loss_fn: as in ``rule.gradients(model, x, y, mask, loss_fn)``.
        rules: name -> rule instance (default ``default_rules(model)``: every registered rule constructible
            without arguments that declares no other model type; pass e.g. ``{"tbptt_k1": TruncatedBPTT(k=1)}``).
        reference: the reference rule (default ``BPTT()``).
        on_error: ``"raise"`` or ``"skip"`` — a rule that raises for this model (e.g. a spiking-only rule on a
            rate model) is then reported with NaNs and its message in ``error``.

    Returns:
        DataFrame with ``rule, parameter, cosine, norm_ratio`` (``||g_rule||/||g_ref||``), ``error``; one row per
        parameter the reference trains plus ``parameter = "all"`` (all parameters concatenated; parameters a rule
        leaves out count as zero gradient).
    """

    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    reference = BPTT() if reference is None else reference
    rules = default_rules(model) if rules is None else dict(rules)
    _, g_ref = reference.gradients(model, x, y, mask, loss_fn)
    names = list(g_ref)
    ref_all = torch.cat([g_ref[n].detach().reshape(-1).double().cpu() for n in names])
    rows = []
    for rname, rule in rules.items():
        try:
            _, g = rule.gradients(model, x, y, mask, loss_fn)
        except (TypeError, ValueError, NotImplementedError, RuntimeError) as e:
            if on_error == "raise":
                raise
            rows += [{"rule": rname, "parameter": n, "cosine": np.nan, "norm_ratio": np.nan, "error": str(e)}
                     for n in names + ["all"]]
            continue
        flat = {n: (g[n].detach().reshape(-1).double().cpu() if n in g
                    else torch.zeros(g_ref[n].numel(), dtype=torch.float64)) for n in names}
        for n in names:
            r = g_ref[n].detach().reshape(-1).double().cpu()
            rn = float(r.norm())
            rows.append({"rule": rname, "parameter": n, "cosine": _cos(flat[n], r),
                         "norm_ratio": float(flat[n].norm()) / rn if rn > 0 else np.nan, "error": ""})
        allv = torch.cat([flat[n] for n in names])
        ref_norm = float(ref_all.norm())
        rows.append({"rule": rname, "parameter": "all", "cosine": _cos(allv, ref_all),
                     "norm_ratio": float(allv.norm()) / ref_norm if ref_norm > 0 else np.nan, "error": ""})
    return pd.DataFrame(rows, columns=["rule", "parameter", "cosine", "norm_ratio", "error"])


# ---------------------------------------------------------------------------------------------- summaries
def regime_summary(model0: RateRNN | SpikingRNN, model1: RateRNN | SpikingRNN, x: Tensor, *,
                   time_index: int | Sequence[int] = -1, kernel_trials: int | None = None,
                   kernel_time_index: int | Sequence[int] | slice | None = None,
                   params: Sequence[str] = ("W_rec",), kernel: bool = True) -> pd.DataFrame:
    """All laziness measures between ``model0`` (initial) and ``model1`` (trained) on the probe ``x``.

    Args:
        x: ``(T, B, n_in)`` probe trials. time_index: step(s) of the representation (default last).
        kernel_trials: use the first ``kernel_trials`` probe trials for the tangent kernel (the source uses 32).
        kernel_time_index: output steps of the tangent kernel (default all). params: tangent-kernel parameters.
        kernel: compute the tangent-kernel alignment (the costly part).

    Returns:
        Tidy DataFrame ``measure, value`` with measures ``weight_change``, ``weight_change_rel`` (W_rec),
        ``rep_alignment``, ``cka``, ``sign_similarity``, ``kernel_alignment``, ``eff_rank_W0``, ``eff_rank_W1``
        (participation ratio), ``frobenius_W0``, ``spectral_W0``, ``activity_rank0``, ``activity_rank1``.
    """
    W0 = model0.effective_weights().W_rec.detach()
    W1 = model1.effective_weights().W_rec.detach()
    wc = weight_change(W0, W1, name="W_rec").iloc[0]
    H0 = hidden_activity(model0, x, time_index=time_index)
    H1 = hidden_activity(model1, x, time_index=time_index)
    r0, r1 = weight_effective_rank(W0), weight_effective_rank(W1)
    res = {"weight_change": wc.abs_change, "weight_change_rel": wc.rel_change,
           "rep_alignment": representation_alignment(H0, H1), "cka": cka(H0, H1),
           "sign_similarity": sign_similarity(H0, H1)}
    if kernel:
        xk = x if kernel_trials is None else x[:, :kernel_trials]
        res["kernel_alignment"] = tangent_kernel_alignment(model0, model1, xk, params=params,
                                                           time_index=kernel_time_index)
    res.update(eff_rank_W0=r0["participation_ratio"], eff_rank_W1=r1["participation_ratio"],
               frobenius_W0=r0["frobenius"], spectral_W0=r0["spectral"],
               activity_rank0=activity_effective_rank(H0)["participation_ratio"],
               activity_rank1=activity_effective_rank(H1)["participation_ratio"])
    return pd.DataFrame({"measure": list(res), "value": [float(v) for v in res.values()]})


def regime_measurement(model0: RateRNN | SpikingRNN, x: Tensor, **kwargs: Any
                       ) -> Callable[[RateRNN | SpikingRNN, Any, int], dict]:
    """A trainer measurement ``fn(model, task, iteration) -> dict`` of :func:`regime_summary` against a frozen copy
    of ``model0`` (taken now), e.g. ``Measurement("regime", regime_measurement(model, x_probe), every=500)``."""
    ref = copy.deepcopy(model0)

    def fn(model: RateRNN | SpikingRNN, task: Any, iteration: int) -> dict[str, float]:
        del task, iteration
        df = regime_summary(ref, model, x, **kwargs)
        return dict(zip(df["measure"], df["value"]))

    return fn
