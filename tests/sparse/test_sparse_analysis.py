"""The analysis layer on sparse (per-edge) storage (issue 19, ALGORITHMS-2 §12): every analysis of ``W_rec`` gives the
dense storage's numbers, to 1e-12 in float64, on the same circuit — weight change (whole matrix and per cell-type
block, also between different edge sets), effective ranks and spectral norms/radii (and their large-N sparse forms),
the tangent kernel and output Jacobian (columns = the edges), the regime summary, gradient alignment, Hessian-vector
products, top eigenvalues, trace and density, and the measurement hooks built on them."""

import copy
import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from spikelearn.analysis import hooks
from spikelearn.analysis.hessian import hessian_density, hessian_operator, hessian_spectrum
from spikelearn.analysis.regime import (
    gradient_alignment,
    model_weight_change,
    output_jacobian,
    regime_summary,
    sparse_to_scipy,
    tangent_kernel,
    weight_change,
    weight_effective_rank,
    weight_spectral_radius,
)
from spikelearn.circuit import block_model, dale
from spikelearn.circuit.core import effective_rank, spectral_norm, spectral_radius
from spikelearn.models import RateRNN, SpikingRNN
from spikelearn.rules import RFLO, EProp, TruncatedBPTT
from spikelearn.tasks import make_task
from spikelearn.weights import SparseWeights

F64 = torch.float64
N_IN, N_OUT, T, B = 2, 2, 10, 4
TOL = 1e-12


def _circuit(kind):
    if kind == "dale":
        return dale(40, 0.8, p=0.2, seed=1)
    return block_model(pd.DataFrame([[0.3, 0.1, 0.0], [0.2, 0.2, 0.4], [0.5, 0.0, 0.1]], index=list("abc"),
                                    columns=list("abc")), {"a": 10, "b": 15, "c": 5},
                       type_signs={"a": 1, "b": 1, "c": -1}, seed=3)


def _pair(cls, circuit, **kw):
    torch.manual_seed(0)
    dense = cls(circuit, N_IN, N_OUT, storage="dense", dtype=F64, **kw)
    torch.manual_seed(0)
    sparse = cls(circuit, N_IN, N_OUT, storage="sparse", dtype=F64, **kw)
    return dense, sparse


MODELS = {"rate": (RateRNN, dict(hidden_bias=True)), "spiking": (SpikingRNN, dict(v_th=0.05))}


def _models(kind, circuit="dale"):
    cls, kw = MODELS[kind]
    return _pair(cls, _circuit(circuit), **kw)


def _perturbed(dense, sparse, seed=0, scale=0.1):
    """Copies of both with the same change of every edge (and of W_in, W_out)."""
    d, s = copy.deepcopy(dense), copy.deepcopy(sparse)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        delta = scale * torch.randn(s.theta_rec.numel(), generator=g, dtype=F64)
        s.theta_rec += delta
        d.theta_rec[d.mask_rec.bool()] += delta  # the dense active entries in row-major order = the sorted edges
        for name in ("theta_in", "theta_out"):
            dp = scale * torch.randn(getattr(d, name).shape, generator=g, dtype=F64)
            getattr(d, name).add_(dp)
            getattr(s, name).add_(dp)
    return d, s


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(T, B, N_IN, generator=g, dtype=F64) < 0.4).double()
    y = torch.randn(T, B, N_OUT, generator=g, dtype=F64)
    return x, y, torch.ones(T, B, dtype=F64)


def _mse(y_hat, y, mask):
    return 0.5 * (((y_hat - y) ** 2).sum(-1) * mask).sum()


def _num_close(a, b, tol=TOL):
    a, b = float(a), float(b)
    if math.isnan(b):
        assert math.isnan(a), (a, b)
        return
    assert abs(a - b) <= tol * max(1.0, abs(b)), (a, b)


def _t_close(a, b, tol=TOL):
    assert a.shape == b.shape, (a.shape, b.shape)
    err = float((a - b).abs().max()) if a.numel() else 0.0
    assert err <= tol * max(1.0, float(b.abs().max()) if b.numel() else 0.0), err


def _frames_close(a, b, tol=TOL):
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    for c in a.columns:
        if pd.api.types.is_float_dtype(b[c]):
            for u, v in zip(a[c], b[c]):
                _num_close(u, v, tol)
        else:
            assert a[c].tolist() == b[c].tolist(), c


def _dicts_close(a, b, tol=TOL):
    assert set(a) == set(b), (set(a) ^ set(b))
    for k in b:
        _num_close(a[k], b[k], tol)


# ---------------------------------------------------------------------------------------------- weights
@pytest.mark.parametrize("circuit", ["dale", "block"])
def test_weight_change_per_cell_type_block_agrees(circuit):
    d0, s0 = _models("spiking", circuit)
    d1, s1 = _perturbed(d0, s0)
    assert isinstance(s1.effective_weights().W_rec, SparseWeights)
    for by in (True, False):
        dd = model_weight_change(d0, d1, by_cell_type=by)
        ds = model_weight_change(s0, s1, by_cell_type=by)
        _frames_close(ds, dd)
    assert (dd["weight"] == "W_rec").sum() == 1  # by_cell_type=False: the whole matrix only
    full = model_weight_change(d0, d1)
    n_types = len(set(d0.circuit.cell_types.tolist()))
    assert (full["weight"] == "W_rec").sum() == 1 + n_types**2 and float(full["abs_change"].iloc[0]) > 0
    # one side typed only
    Wd0, Wd1 = d0.effective_weights().W_rec.detach(), d1.effective_weights().W_rec.detach()
    Ws0, Ws1 = s0.effective_weights().W_rec.detach(), s1.effective_weights().W_rec.detach()
    types = d0.circuit.cell_types
    for kw in (dict(post_types=types), dict(pre_types=types), {}):
        _frames_close(weight_change(Ws0, Ws1, name="W_rec", **kw), weight_change(Wd0, Wd1, name="W_rec", **kw))
    with pytest.raises(TypeError, match="both be SparseWeights or both dense"):
        weight_change(Ws0, Wd1)
    with pytest.raises(ValueError, match="one label per row/column"):
        weight_change(Ws0, Ws1, post_types=types[:-1])


def test_weight_change_between_different_edge_sets_agrees():
    """Rewiring moves edges: an edge present on one side only counts as zero on the other."""
    g = np.random.default_rng(4)
    n = 30
    A = g.normal(size=(n, n)) * (g.random((n, n)) < 0.15)
    Bm = g.normal(size=(n, n)) * (g.random((n, n)) < 0.15)
    types = np.array(["x"] * 12 + ["y"] * 10 + ["z"] * 8)
    sa, sb = SparseWeights.from_dense(torch.as_tensor(A)), SparseWeights.from_dense(torch.as_tensor(Bm))
    assert not torch.equal(sa.post, sb.post) or not torch.equal(sa.pre, sb.pre)
    _frames_close(weight_change(sa, sb, post_types=types, pre_types=types),
                  weight_change(A, Bm, post_types=types, pre_types=types))


@pytest.mark.parametrize("kind", ["rate", "spiking"])
def test_effective_rank_and_spectra_agree(kind):
    d, s = _perturbed(*_models(kind))
    Wd, Ws = d.effective_weights().W_rec.detach(), s.effective_weights().W_rec.detach()
    _dicts_close(weight_effective_rank(Ws), weight_effective_rank(Wd))
    _num_close(weight_spectral_radius(Ws), weight_spectral_radius(Wd))
    # the large-N forms (no dense matrix), forced at this size: exact participation ratio, ARPACK norms
    C = sparse_to_scipy(Ws)
    assert isinstance(C, sp.csr_array) and C.nnz == Ws.nnz
    a = Wd.numpy()
    big = effective_rank(C, dense_max_n=0)
    _num_close(big["participation_ratio"], effective_rank(a)["participation_ratio"], 1e-12)
    assert math.isnan(big["roy_vetterli"])
    _num_close(spectral_norm(C, dense_max_n=0), np.linalg.norm(a, 2), 1e-10)
    _num_close(spectral_radius(C, dense_max_n=0), np.abs(np.linalg.eigvals(a)).max(), 1e-6)
    assert spectral_norm(sp.csr_array((40, 40)), dense_max_n=0) == 0.0
    assert effective_rank(sp.csr_array((40, 40)), dense_max_n=0) == {"participation_ratio": 0.0, "roy_vetterli": 0.0}


# ---------------------------------------------------------------------------------------------- tangent kernel
@pytest.mark.parametrize("kind", ["rate", "spiking"])
def test_output_jacobian_columns_are_the_edges(kind):
    d, s = _models(kind)
    x = _data()[0][:, :2]
    mask = d.mask_rec.bool().reshape(-1)
    nnz, n2 = s.theta_rec.numel(), d.theta_rec.numel()
    Jd = output_jacobian(d, x, params=("W_rec", "W_in"))
    Js = output_jacobian(s, x, params=("W_rec", "W_in"))
    assert Js.shape == (T * 2 * N_OUT, nnz + d.theta_in.numel())
    assert float(Jd[:, :n2][:, ~mask].abs().max()) == 0.0
    assert float(Js.abs().max()) > 0
    _t_close(Js[:, :nnz], Jd[:, :n2][:, mask])
    _t_close(Js[:, nnz:], Jd[:, n2:])
    _t_close(output_jacobian(d, x, method="sequential"), output_jacobian(d, x))  # the loop itself, on dense storage
    _t_close(tangent_kernel(s, x, time_index=[2, -1]), tangent_kernel(d, x, time_index=[2, -1]))
    for method in ("vmap", "autograd"):
        with pytest.raises(ValueError, match=f"method='{method}' cannot run on storage='sparse'"):
            output_jacobian(s, x, method=method)


@pytest.mark.parametrize("kind", ["rate", "spiking"])
def test_regime_summary_agrees(kind):
    d0, s0 = _models(kind)
    d1, s1 = _perturbed(d0, s0, seed=1)
    x = _data(2)[0]
    rd = regime_summary(d0, d1, x, kernel_trials=2)
    rs = regime_summary(s0, s1, x, kernel_trials=2)
    _frames_close(rs, rd)
    assert float(rd.set_index("measure").loc["weight_change", "value"]) > 0


# ---------------------------------------------------------------------------------------------- rules
@pytest.mark.parametrize("kind", ["rate", "spiking"])
def test_gradient_alignment_agrees(kind):
    d, s = _models(kind)
    x, y, mask = _data(3)
    rules = {"rflo": RFLO(), "tbptt_k3": TruncatedBPTT(k=3)} if kind == "rate" else {"eprop": EProp()}
    gd = gradient_alignment(d, x, y, mask, _mse, rules=rules)
    gs = gradient_alignment(s, x, y, mask, _mse, rules=rules)
    _frames_close(gs, gd)


# ---------------------------------------------------------------------------------------------- curvature
@pytest.mark.parametrize("kind", ["rate", "spiking"])
def test_hessian_agrees(kind):
    d, s = _perturbed(*_models(kind), seed=2)
    x, y, mask = _data(4)
    for params in (("W_rec",), ("theta_rec", "W_in")):
        od = hessian_operator(d, x, y, mask, _mse, params=params, l2=1e-2)
        os_ = hessian_operator(s, x, y, mask, _mse, params=params, l2=1e-2)
        assert od.n == os_.n and od.sizes[0] == s.theta_rec.numel()
        _num_close(os_.loss, od.loss)
        _t_close(os_.gradient, od.gradient)
        g = torch.Generator().manual_seed(0)
        for _ in range(3):
            v = torch.randn(od.n, generator=g, dtype=F64)
            hd, hs = od(v), os_(v)
            assert float(hd.abs().max()) > 0
            _t_close(hs, hd)
        assert od.unflatten(v)["theta_rec"].shape == (40, 40) and os_.unflatten(v)["theta_rec"].shape == (od.sizes[0],)
    sd = hessian_spectrum(d, x, y, mask, _mse, k=2, trace_samples=4, max_matvec=40)
    ss = hessian_spectrum(s, x, y, mask, _mse, k=2, trace_samples=4, max_matvec=40)
    _frames_close(ss, sd)
    (dd, rd), (ds, rs) = (hessian_density(m, x, y, mask, _mse, n_probes=2, m=8, n_grid=50) for m in (d, s))
    _t_close(rs.nodes, rd.nodes)
    _frames_close(ds, dd)


# ---------------------------------------------------------------------------------------------- hooks
def _frozen(m):
    c = copy.deepcopy(m)
    for p in c.parameters():
        p.requires_grad_(False)
    return c


@pytest.mark.parametrize("kind", ["rate", "spiking"])
def test_measurement_hooks_agree(kind):
    task = make_task("delayed_xor", cue_ms=20.0, delay_ms=30.0, dt_ms=10.0)
    assert (task.n_in, task.n_out) == (N_IN, N_OUT)
    d0, s0 = _models(kind)
    d1, s1 = _perturbed(d0, s0, seed=3)
    i_d, i_s = _frozen(d0), _frozen(s0)
    rule = "rflo" if kind == "rate" else "eprop"
    calls = [
        (hooks.weight_change, dict(which=("W_rec", "W_in", "W_out")), True),
        (hooks.regime, dict(probe_trials=6, kernel_trials=2), True),
        (hooks.initial_gradient_alignment, dict(rules=(rule,), batch_size=4), True),
        (hooks.max_lyapunov_exponent, dict(k=2, batch_size=2, n_concat=2), True),
        (hooks.hessian_top, dict(batch_size=4, k=2, max_matvec=30, trace_samples=2, gain_rules=(rule,)), False),
    ]
    if kind == "spiking":
        calls.append((hooks.spike_statistics, dict(batch_size=4, window_ms=3.0, bin_ms=1.0), False))
    for fn, kw, initial in calls:
        od = fn(d1, task, 1, **(dict(initial_model=i_d) if initial else {}), **kw)
        os_ = fn(s1, task, 1, **(dict(initial_model=i_s) if initial else {}), **kw)
        assert od, fn.__name__
        if fn is hooks.spike_statistics:
            assert od["rate_hz"] > 0  # the network spikes: the comparison is not vacuous
        _dicts_close(os_, od)
