r"""A :class:`~spikelearn.models.SpikingRNN` as a Brian2 network, run side by side with spikelearn.

The export writes out the model of ALGORITHMS.md §1.1 as Brian2 equations with the *same discretisation* as
:mod:`spikelearn.neurons.lif` (one Brian2 step = one spikelearn step, float64)::

    dv/dt = -v/tau_m     dA/dt = -a/tau_a          (method="exact": v ← α v, a ← ρ a)
    v ← v + I_syn + I_ff + I_gap − v_th z           (I_* already scaled by c_in, z = spike of the previous step;
                                                     reset="zero": v ← v (1 − z) + I_syn + I_ff + I_gap)
    I_syn ← 0                                        (current-based synapses: I_syn ← α_s I_syn, I_ff joins I_syn)
    a ← a + c_a z
    spike if (v − (v_th + β a))/v_th > 0 and not refractory;  reset: z = 1, ref = n_block

Brian2 schedule of one step ``k`` (spikelearn's step ``t = k + 1``, i.e. index ``k`` of a record)::

    groups           summed variables I_ff = Σ c_in W_in x^t (analog input), I_gap = Σ c_in G (v_i − v_j)
                     (v of the previous step), then the exact leak of v and a
    thresholds       SpikeGeneratorGroup emits the input spikes x^t
    synapses         on_pre: I_syn += c_in W_in (input spikes of step t) and c_in W_rec (network spikes z^{t-1}:
                     the threshold below ran in the previous step, hence the one-step delay of §0.3)
    after_synapses   explicit update (above), refractory counter, then the threshold
    resets           z = 1, ref = n_block, z̄ += 1 − κ
    end              readout y = W_out z̄ + b (summed variable), e-prop traces (learning only), monitors

Refractoriness is a counter in the update code (not Brian2's ``refractory=``): ``lsnn`` blocks ``n_ref`` steps
after a spike, ``counter`` ``n_ref − 1``, exactly as spikelearn. Gap junctions use the potentials of the previous
step. Several trials run as ``B`` disconnected copies of the network in one Brian2 run.

Brian2's global state (``start_scope``, ``defaultclock.dt``, code-generation prefs, the device) is set and
restored around every run by :func:`brian2_session`; compiled code goes into ``build_dir`` (a fresh temporary
folder when not given, never the home directory).
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from spikelearn.models import SpikingRNN
from spikelearn.weights import SparseWeights

__all__ = ["UnsupportedFeatureError", "ExportSpec", "export_spec", "brian2_session", "Brian2Result", "run_brian2",
           "ValidationReport", "compare_with_brian2", "EPropBrian2Result", "eprop_brian2", "TARGETS"]

TARGETS = ("numpy", "cython", "cpp_standalone")


class UnsupportedFeatureError(ValueError):
    """The model uses a feature the Brian2 (or NIR) export does not support; the message names the feature."""


# ---------------------------------------------------------------------------------------------- export spec
@dataclass(frozen=True)
class ExportSpec:
    """Everything the Brian2 network needs, as float64 numpy arrays (weights ``(post, pre)``, already ``· c_in``)."""

    n: int
    n_in: int
    n_out: int
    dt_ms: float
    W_in: np.ndarray       # (N, n_in) effective input weights (unscaled)
    W_rec: np.ndarray | None  # (N, N) effective recurrent weights (unscaled); None with per-edge storage
    W_out: np.ndarray      # (n_out, N)
    b_out: np.ndarray      # (n_out,) zeros without a bias
    mask_in: np.ndarray    # (N, n_in) bool: synapses that exist
    mask_rec: np.ndarray | None  # (N, N) bool; None with per-edge storage
    gap: Any  # (N, N) gap conductances (unscaled; a scipy CSR matrix with per-edge storage) or None
    tau_mem_ms: np.ndarray
    tau_adapt_ms: np.ndarray
    alpha: np.ndarray
    rho: np.ndarray
    c_in: np.ndarray
    c_a: np.ndarray
    v_th: np.ndarray
    beta: np.ndarray
    n_block: np.ndarray
    kappa: float
    c_kappa: float  # readout filter input factor (1 − κ, or 1 without readout normalisation)
    adaptive: bool
    gamma_pd: float | None  # e-prop surrogate's γ_pd (None for other surrogates)
    alpha_syn: np.ndarray | None = None  # (N,) synaptic-current decay (current-based synapses), else None
    reset_zero: bool = False  # reset="zero": v ← 0 after a spike, before the leak (else subtract v_th)
    rec_post: np.ndarray | None = None    # (nnz,) per-edge storage: the edges' postsynaptic neurons
    rec_pre: np.ndarray | None = None     # (nnz,) their presynaptic neurons
    rec_values: np.ndarray | None = None  # (nnz,) effective recurrent weights (unscaled)


def _f64(model: Any) -> Any:
    """``model`` in float64 on the CPU (a copy when it is not already)."""
    if model.dtype == torch.float64 and model.device.type == "cpu":
        return model
    return copy.deepcopy(model).to(device="cpu", dtype=torch.float64)


def _np(t: Any) -> np.ndarray:
    return np.asarray(t.detach().cpu().to(torch.float64).numpy() if isinstance(t, torch.Tensor) else t,
                      dtype=np.float64).copy()


def _gap_export(gap: Any) -> Any:
    """The model's gap conductances for the export: dense float64, or a scipy CSR matrix from per-edge storage."""
    if gap is None:
        return None
    if isinstance(gap, SparseWeights):
        return sp.csr_array((_np(gap.values), (gap.post.cpu().numpy(), gap.pre.cpu().numpy())), shape=gap.shape)
    return _np(gap)


def export_spec(model: Any) -> ExportSpec:
    """Check that ``model`` can be exported and extract its float64 parameters.

    Raises:
        UnsupportedFeatureError: not a :class:`~spikelearn.models.SpikingRNN` (e.g. a RateRNN: unknown neuron type
            for a spiking simulator), a smooth surrogate forward, non-finite weights or parameters.
    """

    if not isinstance(model, SpikingRNN):
        raise UnsupportedFeatureError(
            f"neuron type of {type(model).__name__}: the Brian2 export supports SpikingRNN (LIF/ALIF) only")
    if getattr(model.surrogate, "smooth", False):
        raise UnsupportedFeatureError("surrogate with smooth=True: its forward is not a spike (Heaviside), "
                                      "so the network is not a spiking network")
    if model.dtype != torch.float64:  # constants such as c_in = 1 − α must not carry float32 rounding into Brian2
        model = copy.deepcopy(model).to(device="cpu", dtype=torch.float64)
    with torch.no_grad():
        W = model.effective_weights()
        c = model.constants()
    n = model.n
    per = lambda t: np.broadcast_to(_np(t), (n,)).copy()  # noqa: E731
    per_edge = model.storage == "sparse"  # synapse index arrays straight from the edges: no N x N array
    if per_edge:
        edges = dict(rec_post=model.rec_post.cpu().numpy().copy(), rec_pre=model.rec_pre.cpu().numpy().copy(),
                     rec_values=_np(W.W_rec.values))
        W_rec, mask_rec = None, None
    else:
        edges = {}
        W_rec = _np(W.W_rec)
        mask_rec = (_np(model.mask_rec) != 0) if model.parametrization == "per_edge" else W_rec != 0
    spec = ExportSpec(
        n=n, n_in=model.n_in, n_out=model.n_out, dt_ms=float(model.dt_ms),
        W_in=_np(W.W_in), W_rec=W_rec, W_out=_np(W.W_out),
        b_out=_np(W.b_out) if W.b_out is not None else np.zeros(model.n_out),
        mask_in=_np(model.mask_in) != 0, mask_rec=mask_rec,
        gap=_gap_export(model.gap),
        tau_mem_ms=per(model.tau_mem_ms), tau_adapt_ms=per(model.tau_adapt_ms),
        alpha=per(c.alpha), rho=per(c.rho), c_in=per(c.c_in), c_a=per(c.c_a), v_th=per(c.v_th),
        beta=per(c.beta), n_block=per(c.n_block), kappa=float(model.kappa),
        c_kappa=float(model.c_kappa), adaptive=bool(c.adaptive),
        gamma_pd=(float(model.surrogate.params["gamma_pd"]) if model.surrogate.name == "eprop" else None),
        alpha_syn=per(c.alpha_syn) if c.synaptic else None, reset_zero=bool(c.reset_zero), **edges,
    )
    for name in ("W_in", "W_rec", "rec_values", "W_out", "b_out", "tau_mem_ms", "tau_adapt_ms", "v_th", "beta"):
        a = getattr(spec, name)
        if a is None:
            continue
        if not np.isfinite(a).all() and not (name == "tau_adapt_ms" and (a > 0).all()):
            raise UnsupportedFeatureError(f"non-finite values in {name}")
    if spec.gap is not None and not np.isfinite(spec.gap.data if sp.issparse(spec.gap) else spec.gap).all():
        raise UnsupportedFeatureError("non-finite gap-junction conductances")
    return spec


# ---------------------------------------------------------------------------------------------- brian2 state
_PREFS = ("codegen.target", "core.default_float_dtype", "codegen.runtime.cython.cache_dir")


@contextlib.contextmanager
def brian2_session(dt_ms: float, target: str = "numpy", build_dir: str | Path | None = None) -> Iterator[Any]:
    """Set Brian2's global state for one run and restore it afterwards; yields the ``brian2`` module.

    Sets ``start_scope()``, ``defaultclock.dt``, float64, the code-generation target and, for ``cython`` /
    ``cpp_standalone``, the folder compiled code goes into (``build_dir``; a fresh temporary folder when None).
    On exit the clock, the prefs and the device are restored (``cpp_standalone`` is reinitialised).
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    import brian2 as b2

    old_dt = b2.defaultclock.dt
    old_prefs = {k: b2.prefs[k] for k in _PREFS}
    old_device = b2.get_device()
    standalone = target == "cpp_standalone"
    if target != "numpy" and build_dir is None:
        build_dir = tempfile.mkdtemp(prefix="spikelearn-brian2-")
    try:
        b2.start_scope()
        b2.prefs["core.default_float_dtype"] = np.float64
        if target == "cython":
            assert build_dir is not None  # set above for every target but numpy
            Path(build_dir).mkdir(parents=True, exist_ok=True)
            b2.prefs["codegen.runtime.cython.cache_dir"] = str(build_dir)
        b2.prefs["codegen.target"] = "cython" if target == "cython" else "numpy"
        if standalone:
            b2.set_device("cpp_standalone", directory=str(build_dir), build_on_run=True)
        b2.defaultclock.dt = dt_ms * b2.ms
        yield b2
    finally:
        if standalone:
            from brian2.devices.device import reset_device

            b2.device.reinit()
            reset_device(old_device)
        for k, v in old_prefs.items():
            b2.prefs[k] = v
        b2.defaultclock.dt = old_dt
        b2.start_scope()


# ---------------------------------------------------------------------------------------------- network
def _is_spike_input(x: np.ndarray) -> bool:
    return bool(np.isin(x, (0.0, 1.0)).all())


def _replicate(mask: Any, B: int, n_post: int, n_pre: int, pre_off: int | None = None,
               post_off: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Synapse index arrays for ``B`` disconnected copies: (i_pre, j_post, post, pre) of the base matrix
    (``mask``: a boolean matrix, or the edges ``(post, pre)`` as two index arrays)."""
    post, pre = (np.asarray(mask[0]), np.asarray(mask[1])) if isinstance(mask, tuple) else np.nonzero(mask)
    b = np.repeat(np.arange(B), post.size)
    i = np.tile(pre, B) + b * (n_pre if pre_off is None else pre_off)
    j = np.tile(post, B) + b * (n_post if post_off is None else post_off)
    return i.astype(np.int64), j.astype(np.int64), np.tile(post, B), np.tile(pre, B)


@dataclass
class _Learning:
    """Inputs of the Brian2 e-prop run (regression loss)."""

    y_target: np.ndarray   # (T, B, n_out)
    mask: np.ndarray       # (T, B)
    B_fb: np.ndarray       # (N, n_out) feedback
    inv_batch: float


def _build(b2: Any, spec: ExportSpec, x: np.ndarray, *, record_state: bool, learning: _Learning | None):
    """Create the Brian2 objects for input ``x`` (T, B, n_in); returns (objects dict, namespace)."""
    T, B, _ = x.shape
    N, n_in, n_out = spec.n, spec.n_in, spec.n_out
    dt = spec.dt_ms * b2.ms
    ns: dict[str, Any] = {"kappa": spec.kappa, "omk": spec.c_kappa}
    spikes_in = _is_spike_input(x)
    tile = lambda a: np.tile(np.asarray(a, dtype=np.float64), B)  # noqa: E731
    eqs = """
    dv/dt = -v/tau_m : 1
    da/dt = -a/tau_a : 1
    tau_m : second (constant)
    tau_a : second (constant)
    v_th : 1 (constant)
    beta : 1 (constant)
    c_a : 1 (constant)
    n_block : 1 (constant)
    I_syn : 1
    z : 1
    zpre : 1
    ref : 1
    blocked : boolean
    zbar : 1
    """
    drive = "I_syn"
    syn = spec.alpha_syn is not None
    pre_update = ""
    if not spikes_in:
        eqs += "I_ff : 1\n"
        if syn:  # the analog input joins the synaptic current (it is filtered too)
            pre_update = "I_syn = I_syn + I_ff\n"
        else:
            drive += " + I_ff"
    if spec.gap is not None:
        eqs += "I_gap : 1\n"
        drive += " + I_gap"
    if syn:
        eqs += "alpha_s : 1 (constant)\n"
    v_new = f"v*(1 - z) + {drive}" if spec.reset_zero else f"v + {drive} - v_th*z"  # v: leaked already
    update = pre_update + f"""
    v = {v_new}
    a = a + c_a*z
    I_syn = {"alpha_s*I_syn" if syn else "0"}
    blocked = ref > 0
    ref = clip(ref - 1, 0, inf)
    zpre = z
    z = 0
    zbar = kappa*zbar
    """
    if learning is not None:
        eqs += """
        alpha : 1 (constant)
        rho : 1 (constant)
        c_in : 1 (constant)
        psi : 1
        L : 1
        """
        ns["gamma_pd"] = spec.gamma_pd
        update += "psi = int(not blocked)*(gamma_pd/v_th)*clip(1 - abs((v - (v_th + beta*a))/v_th), 0, inf)\n"
    net = b2.NeuronGroup(B * N, eqs, threshold="(v - (v_th + beta*a))/v_th > 0 and not blocked",
                         reset="z = 1\nref = n_block\nzbar = zbar + omk", method="exact", name="spikelearn_net")
    net.set_event_schedule("spike", when="after_synapses", order=1)
    net.run_regularly(update, when="after_synapses", order=0, name="spikelearn_net_update")
    net.tau_m = tile(spec.tau_mem_ms) * b2.ms
    net.tau_a = tile(spec.tau_adapt_ms) * b2.ms
    net.v_th = tile(spec.v_th)
    net.beta = tile(spec.beta)
    net.c_a = tile(spec.c_a if spec.adaptive else np.zeros(N))  # spikelearn leaves a untouched without adaptation
    net.n_block = tile(spec.n_block)
    if syn:
        net.alpha_s = tile(spec.alpha_syn)
    if learning is not None:
        net.alpha, net.rho, net.c_in = tile(spec.alpha), tile(spec.rho), tile(spec.c_in)
    objs: dict[str, Any] = {"net": net}

    # ---- input and recurrent synapses (with e-prop traces when learning)
    W_in_s = spec.c_in[:, None] * spec.W_in
    trace = learning is not None
    if spikes_in:
        tt, bb, kk = np.nonzero(x)
        inp = b2.SpikeGeneratorGroup(B * n_in, (bb * n_in + kk).astype(np.int64), tt * dt, name="spikelearn_input")
        on_pre = "I_syn_post += w" + ("\nxs = 1" if trace else "")
        syn_in = _synapses(b2, inp, net, "xs : 1\n" if trace else "", on_pre, spec.mask_in, B, N, n_in, W_in_s,
                           "xs" if trace else None, "spikelearn_syn_in", syn, spec.reset_zero)
    else:
        ns["x_ta"] = b2.TimedArray(x.reshape(T, B * n_in), dt=dt)
        inp = b2.NeuronGroup(B * n_in, "x = x_ta(t, i) : 1", name="spikelearn_input")
        syn_in = _synapses(b2, inp, net, "I_ff_post = w*x_pre : 1 (summed)\n", None, spec.mask_in, B, N, n_in,
                           W_in_s, "x_pre" if trace else None, "spikelearn_syn_in", syn, spec.reset_zero)
    if spec.W_rec is not None:
        rec_edges: Any = spec.mask_rec
        W_rec_s: Any = spec.c_in[:, None] * spec.W_rec
    else:  # per-edge storage: the synapses are the edges, their weights c_in,post w_e
        assert spec.rec_post is not None and spec.rec_pre is not None and spec.rec_values is not None
        rec_edges = (spec.rec_post, spec.rec_pre)
        W_rec_s = spec.c_in[spec.rec_post] * spec.rec_values
    syn_rec = _synapses(b2, net, net, "", "I_syn_post += w", rec_edges, B, N, N, W_rec_s,
                        "zpre_pre" if trace else None, "spikelearn_syn_rec", syn, spec.reset_zero)
    objs.update(input=inp, syn_in=syn_in, syn_rec=syn_rec)

    if spec.gap is not None:
        if sp.issparse(spec.gap):  # per edge: synapses from the stored edges, no N x N array
            G_s: Any = sp.csr_array(sp.diags_array(spec.c_in) @ spec.gap)
            g_coo = sp.coo_array(G_s)
            i, j, post, pre = _replicate((g_coo.row, g_coo.col), B, N, N)
        else:
            G_s = spec.c_in[:, None] * spec.gap
            i, j, post, pre = _replicate(G_s != 0, B, N, N)
        syn_gap = b2.Synapses(net, net, "g : 1 (constant)\nI_gap_post = g*(v_pre - v_post) : 1 (summed)",
                              name="spikelearn_gap")
        syn_gap.connect(i=i, j=j)
        syn_gap.g = np.asarray(G_s[post, pre]).ravel()
        objs["syn_gap"] = syn_gap

    # ---- readout y = W_out z̄ + b
    out_eqs = "y_c : 1\nb : 1 (constant)\ny = y_c + b : 1\n"
    if learning is not None:
        ns["ystar_ta"] = b2.TimedArray(learning.y_target.reshape(T, B * n_out), dt=dt)
        ns["m_ta"] = b2.TimedArray(np.repeat(learning.mask, n_out, axis=1).reshape(T, B * n_out), dt=dt)
        ns["inv_batch"] = learning.inv_batch
        out_eqs += "err = m_ta(t, i)*(y - ystar_ta(t, i))*inv_batch : 1\ngb : 1\n"
    out = b2.NeuronGroup(B * n_out, out_eqs, name="spikelearn_readout")
    out.b = tile(spec.b_out)
    i, j, post, pre = _replicate(np.ones((n_out, N), bool), B, n_out, N)
    syn_out = b2.Synapses(net, out, "w : 1 (constant)\n" + ("gw : 1\n" if learning is not None else "")
                          + "y_c_post = w*zbar_pre : 1 (summed)", name="spikelearn_syn_out")
    syn_out.connect(i=i, j=j)
    syn_out.w = spec.W_out[post, pre]
    upd = syn_out.summed_updaters["y_c_post"]
    upd.when, upd.order = "end", 0
    objs.update(out=out, syn_out=syn_out)

    if learning is not None:
        # learning signal L_j = Σ_k B_jk dE/dy_k (broadcast from the readout error), then synapse-local traces
        i, j, post, pre = _replicate(np.ones((N, n_out), bool), B, N, n_out)
        syn_fb = b2.Synapses(out, net, "wfb : 1 (constant)\nL_post = wfb*err_pre : 1 (summed)",
                             name="spikelearn_feedback")
        syn_fb.connect(i=i, j=j)
        syn_fb.wfb = learning.B_fb[post, pre]
        upd = syn_fb.summed_updaters["L_post"]
        upd.when, upd.order = "end", 1
        objs["syn_fb"] = syn_fb
        syn_out.run_regularly("gw = gw + err_post*zbar_pre", when="end", order=3, name="spikelearn_grad_out")
        out.run_regularly("gb = gb + err", when="end", order=3, name="spikelearn_grad_b")

    # ---- monitors
    objs["spikes"] = b2.SpikeMonitor(net, record=True, when="end", order=10, name="spikelearn_spikes")
    if record_state:
        objs["state"] = b2.StateMonitor(net, ["v", "a"], record=True, when="end", order=10, name="spikelearn_state")
    objs["y"] = b2.StateMonitor(out, "y", record=True, when="end", order=10, name="spikelearn_y")
    return objs, ns


def _synapses(b2, source, target, extra_eqs, on_pre, mask, B, N, n_pre, W_s, pre_sig, name, filtered=False,
              reset_zero=False):
    """Synapses ``w`` for ``B`` copies of ``mask``; with ``pre_sig`` also the e-prop traces (§2.2, §2.4):
    ε^v, ε^a (ALIF), e, the κ-filtered ē and the gradient ``g = Σ_t L_post ē``; with current-based synapses
    (``filtered``) ``pre`` is first filtered by the postsynaptic synaptic decay, ``P = α_s P + pre``; with
    ``reset_zero`` the trace's leak is ``α (1 − z_post^{t-1})``."""
    eqs = "w : 1 (constant)\n" + extra_eqs
    if pre_sig is not None:
        eqs += "eps_v : 1\neps_a : 1\ne_prev : 1\nebar : 1\ng : 1\n" + ("P : 1\n" if filtered else "")
    kw = {"on_pre": on_pre} if on_pre else {}
    syn = b2.Synapses(source, target, eqs, name=name, **kw)
    i, j, post, pre = _replicate(mask, B, N, n_pre)
    syn.connect(i=i, j=j)
    syn.w = W_s[post, pre] if np.ndim(W_s) == 2 else np.tile(np.asarray(W_s), B)  # per-edge values: edge order
    if pre_sig is not None:
        code = ("P = alpha_s_post*P + " + pre_sig + "\n") if filtered else ""
        code += f"""
        eps_v = alpha_post*{"(1 - zpre_post)*" if reset_zero else ""}eps_v + c_in_post*{"P" if filtered else pre_sig}
        eps_a = rho_post*eps_a + c_a_post*e_prev
        e_prev = psi_post*(eps_v - beta_post*eps_a)
        ebar = kappa*ebar + omk*e_prev
        g = g + L_post*ebar
        """
        if pre_sig == "xs":
            code += "xs = 0\n"
        syn.run_regularly(code, when="end", order=2, name=name + "_traces")
    return syn


# ---------------------------------------------------------------------------------------------- run
@dataclass
class Brian2Result:
    """Trajectories of a Brian2 run, time-first like :class:`~spikelearn.models.SpikingRecord`."""

    z: np.ndarray            # (T, B, N) spikes
    y: np.ndarray            # (T, B, n_out) readout
    v: np.ndarray | None     # (T, B, N) membrane (after the step's update, before its reset term)
    a: np.ndarray | None     # (T, B, N) adaptation
    wall_s: float            # seconds of net.run (build/compile included)
    target: str
    extra: dict = field(default_factory=dict)


def _initial_state(model: Any, B: int) -> dict[str, np.ndarray] | None:
    """The model's initial state for ``B`` trials as Brian2 variables ``(B·N,)`` (``None`` at rest)."""
    with torch.no_grad():
        s0 = model.init_state(B)
    if not any(bool(t.any()) for t in s0 if t is not None):
        return None
    c = model.constants()
    i0 = s0.i_syn if s0.i_syn is not None else torch.zeros_like(s0.v)
    # Brian2's I_syn holds α_s i at the end of a step (decayed for the next one), and the initial spikes z⁰ never
    # fired in Brian2: their recurrent input c_in W_rec z⁰ (delivered at the first step) is added by hand
    with torch.no_grad():
        rec0 = model.weight_ops.product(model.scaled_recurrent(model.effective_weights().W_rec, c.c_in), s0.z)
    out = {"v": s0.v, "a": s0.a, "z": s0.z, "ref": s0.ref, "zbar": s0.z_filt,
           "I_syn": (c.alpha_syn * i0 if c.synaptic else torch.zeros_like(i0)) + rec0}
    return {k: _np(t).reshape(-1) for k, t in out.items()}


def _sim(spec: ExportSpec, x: np.ndarray, *, target: str, build_dir: Any, record_state: bool,
         learning: _Learning | None = None, state0: dict[str, np.ndarray] | None = None) -> Brian2Result:
    T, B, _ = x.shape
    N = spec.n
    with brian2_session(spec.dt_ms, target, build_dir) as b2:
        objs, ns = _build(b2, spec, x, record_state=record_state, learning=learning)
        if state0 is not None:  # the model's (relaxed) initial state; at rest every variable starts at 0
            for name, val in state0.items():
                setattr(objs["net"], name, val)
        netw = b2.Network(*objs.values())
        t0 = time.perf_counter()
        netw.run(T * spec.dt_ms * b2.ms, namespace=ns)
        wall = time.perf_counter() - t0
        sm = objs["spikes"]
        steps = np.rint(np.asarray(sm.t / b2.ms) / spec.dt_ms).astype(np.int64)
        idx = np.asarray(sm.i, dtype=np.int64)
        z = np.zeros((T, B * N))
        z[steps, idx] = 1.0
        z = z.reshape(T, B, N)
        y = np.asarray(objs["y"].y).T.reshape(T, B, spec.n_out)
        v = a = None
        if record_state:
            v = np.asarray(objs["state"].v).T.reshape(T, B, N)
            a = np.asarray(objs["state"].a).T.reshape(T, B, N)
        extra: dict[str, Any] = {}
        if target == "cpp_standalone" and getattr(b2.device, "_last_run_time", None) is not None:
            extra["run_time_s"] = float(b2.device._last_run_time)  # simulation only, as the device reports it
        if learning is not None:
            for key, nm, shape in (("syn_rec", "W_rec", (N, N)), ("syn_in", "W_in", (N, spec.n_in))):
                syn = objs[key]
                post = np.asarray(syn.j) % N
                pre = np.asarray(syn.i) % shape[1]
                G = np.zeros(shape)
                np.add.at(G, (post, pre), np.asarray(syn.g))
                extra[nm] = G
            syn = objs["syn_out"]
            G = np.zeros((spec.n_out, N))
            np.add.at(G, (np.asarray(syn.j) % spec.n_out, np.asarray(syn.i) % N), np.asarray(syn.gw))
            extra["W_out"] = G
            extra["b_out"] = np.asarray(objs["out"].gb).reshape(B, spec.n_out).sum(0)
    return Brian2Result(z=z, y=y, v=v, a=a, wall_s=wall, target=target, extra=extra)


def _x_numpy(model: Any, x: Any) -> np.ndarray:
    xa = _np(x)
    if xa.ndim != 3 or xa.shape[-1] != model.n_in:
        raise ValueError(f"x must have shape (T, B, {model.n_in}), got {xa.shape}")
    return xa


def run_brian2(model: Any, x: Any, *, target: str = "numpy", build_dir: str | Path | None = None,
               record_state: bool = True) -> Brian2Result:
    """Run ``model`` exported to Brian2 on input ``x`` ``(T, B, n_in)`` (float64).

    Inputs in {0, 1} enter through a ``SpikeGeneratorGroup``; any other input (analog values, spike counts)
    through a ``TimedArray`` and summed synapses. ``target``: ``"numpy"`` (default, no compiler), ``"cython"``
    or ``"cpp_standalone"``; ``build_dir``: where compiled code goes.
    """
    spec = export_spec(model)
    xa = _x_numpy(model, x)
    return _sim(spec, xa, target=target, build_dir=build_dir, record_state=record_state,
                state0=_initial_state(_f64(model), xa.shape[1]))


# ---------------------------------------------------------------------------------------------- compare
@dataclass
class ValidationReport:
    """Result of :func:`compare_with_brian2`.

    ``frame``: one row per neuron (spike counts in both simulators, identical fraction, time of the first
    differing spike ``(k + 1)·dt`` for record index ``k``, max |Δv| before the trial's first divergence);
    ``summary``: network-level numbers; ``verdict``: one line;
    ``ok``: spikes identical everywhere and ``max |Δv|``, ``max |Δy|`` within ``atol``. The frame's ``attrs``
    carry ``verdict`` and ``summary`` too.
    """

    frame: pd.DataFrame
    summary: dict
    verdict: str
    ok: bool
    spikelearn: Any = None   # SpikingRecord (float64) and y
    brian2: Brian2Result | None = None

    def __str__(self) -> str:
        rows = "\n".join(f"  {k}: {v}" for k, v in self.summary.items())
        return f"{rows}\n{self.verdict}"


def _first_true(a: np.ndarray, axis: int = 0) -> np.ndarray:
    """Index of the first True along ``axis`` (size of the axis when there is none)."""
    any_ = a.any(axis=axis)
    return np.where(any_, a.argmax(axis=axis), a.shape[axis])


def compare_with_brian2(model: Any, x: Any, *, task: Any = None, y: Any = None, mask: Any = None,
                        target: str = "numpy", build_dir: str | Path | None = None,
                        atol: float = 1e-9) -> ValidationReport:
    """Run ``model`` in spikelearn and in Brian2 on the same input and report the differences.

    Both run in float64 (a float64 copy of the model is used). Args: ``x`` ``(T, B, n_in)``; ``task``, ``y``,
    ``mask`` (optional, as returned by ``task.sample``) add the task accuracy in both simulators;
    ``target``/``build_dir`` as :func:`run_brian2`; ``atol`` for the membrane and output differences.
    """
    m64 = copy.deepcopy(model).to(device="cpu", dtype=torch.float64)
    spec = export_spec(m64)
    xa = _x_numpy(model, x)
    with torch.no_grad():
        t0 = time.perf_counter()
        out = m64(torch.from_numpy(xa), record=True)
        t_sl = time.perf_counter() - t0
    rec = out.record
    z1, v1, a1, y1 = (_np(rec.z), _np(rec.v), _np(rec.a), _np(out.y))
    res = _sim(spec, xa, target=target, build_dir=build_dir, record_state=True,
               state0=_initial_state(m64, xa.shape[1]))
    T, B, N = z1.shape
    dt = spec.dt_ms
    diff = z1 != res.z                                    # (T, B, N)
    first_b = _first_true(diff.any(2), axis=0)            # (B,) first divergent step of each trial
    before = np.arange(T)[:, None] < first_b[None, :]     # (T, B) steps before the trial's first divergence
    dv = np.abs(v1 - res.v) * before[..., None]
    dy = np.abs(y1 - res.y) * before[..., None]
    adapt = spec.beta != 0
    da = (np.abs(a1 - res.a) * before[..., None])[..., adapt]
    first_n = _first_true(diff.reshape(T, B * N), axis=0).reshape(B, N).min(0)  # (N,)
    both = (z1 == 1) & (res.z == 1)
    union = (z1 == 1) | (res.z == 1)
    node_ids = list(model.circuit.node_ids)
    frame = pd.DataFrame({
        "neuron": np.arange(N),
        "node_id": [str(u) for u in node_ids],
        "spikes_spikelearn": z1.sum((0, 1)).astype(np.int64),
        "spikes_brian2": res.z.sum((0, 1)).astype(np.int64),
        "rate_hz": z1.mean((0, 1)) * 1000.0 / dt,
        "identical_fraction": 1.0 - diff.mean((0, 1)),
        "first_divergence_ms": np.where(first_n < T, (first_n + 1) * dt, np.nan),
        "max_abs_v_diff": dv.max((0, 1)) if T else np.zeros(N),
    })
    n_div = int(diff.sum())
    first = int(first_b.min()) if B else T
    summary: dict[str, Any] = {
        "n_neurons": N, "n_steps": T, "n_trials": B, "dt_ms": dt, "target": target,
        "spikes_spikelearn": int(z1.sum()), "spikes_brian2": int(res.z.sum()),
        "rate_hz": float(z1.mean() * 1000.0 / dt),
        "differing_spike_entries": n_div,
        "identical_spike_fraction": float(both.sum() / union.sum()) if union.any() else 1.0,
        "first_divergence_ms": (first + 1) * dt if first < T else None,
        "first_divergence_neuron": (int(np.flatnonzero(diff[first].any(0))[0]) if first < T else None),
        "max_abs_v_diff": float(dv.max()) if dv.size else 0.0,
        "max_abs_a_diff": float(da.max()) if da.size else 0.0,
        "max_abs_y_diff": float(dy.max()) if dy.size else 0.0,
        "wall_s_spikelearn": t_sl, "wall_s_brian2": res.wall_s,
    }
    if task is not None and y is not None:
        msk = mask if mask is not None else torch.ones(T, B)
        yt = torch.as_tensor(y) if not isinstance(y, torch.Tensor) else y
        if yt.is_floating_point():
            yt = yt.to(torch.float64)
        mt = torch.as_tensor(msk).to(torch.float64)
        summary["accuracy_spikelearn"] = float(task.accuracy(torch.from_numpy(y1), yt, mt))
        summary["accuracy_brian2"] = float(task.accuracy(torch.from_numpy(res.y), yt, mt))
    ok = n_div == 0 and summary["max_abs_v_diff"] <= atol and summary["max_abs_y_diff"] <= atol \
        and summary["max_abs_a_diff"] <= atol
    acc = ""
    if "accuracy_spikelearn" in summary:
        acc = f"; accuracy {summary['accuracy_spikelearn']:.4f} (spikelearn) vs {summary['accuracy_brian2']:.4f}" \
              f" (Brian2)"
    if n_div == 0:
        verdict = (f"{'IDENTICAL' if ok else 'MISMATCH'}: spikes identical in all {N} neurons x {T} steps x {B} "
                   f"trial(s) ({summary['spikes_spikelearn']} spikes, {summary['rate_hz']:.1f} Hz); "
                   f"max |dv| = {summary['max_abs_v_diff']:.2e}, max |dy| = {summary['max_abs_y_diff']:.2e} "
                   f"(atol {atol:g}){acc}")
        if summary["spikes_spikelearn"] == 0:
            verdict += ("; WARNING: no neuron spiked, so reset, refractoriness and adaptation were not compared "
                        "(use a stronger input or a lower threshold)")
    else:
        verdict = (f"DIVERGED: first spike difference at t = {summary['first_divergence_ms']:g} ms (neuron "
                   f"{summary['first_divergence_neuron']}); {summary['identical_spike_fraction']:.2%} of spikes "
                   f"identical; max |dv| before it = {summary['max_abs_v_diff']:.2e}{acc}")
    summary["verdict"] = verdict
    frame.attrs["verdict"] = verdict
    frame.attrs["summary"] = dict(summary)
    return ValidationReport(frame=frame, summary=summary, verdict=verdict, ok=ok,
                            spikelearn={"record": rec, "y": out.y}, brian2=res)


# ---------------------------------------------------------------------------------------------- e-prop
@dataclass
class EPropBrian2Result:
    """Gradients of one e-prop trial computed by Brian2 synapses (w.r.t. the effective weights)."""

    grads: dict[str, np.ndarray]   # W_rec (N, N), W_in (N, n_in), W_out (n_out, N), b_out (n_out,)
    loss: float
    run: Brian2Result

    def delta(self, lr: float) -> dict[str, np.ndarray]:
        """The weight change ``−lr · grad`` of a plain gradient step."""
        return {k: -lr * g for k, g in self.grads.items()}

    def param_grads(self, model: Any) -> dict[str, torch.Tensor]:
        """The gradients w.r.t. ``model.named_parameters()`` (chain rule through masks and signs)."""
        return model.param_grads({k: torch.as_tensor(g, dtype=model.dtype, device=model.device)
                                  for k, g in self.grads.items()})


def eprop_brian2(model: Any, x: Any, y_target: Any, mask: Any = None, *, feedback: Any = "symmetric",
                 target: str = "numpy", build_dir: str | Path | None = None) -> EPropBrian2Result:
    """e-prop (ALGORITHMS.md §2.2–2.5) as Brian2 synapse-local equations, for the regression loss
    ``E = (1/B) Σ_{t,b,k} mask · ½ (y − y*)²``.

    Every synapse ``j ← i`` keeps ``ε^v = α ε^v + c_in pre_i`` (``pre`` = ``z_i^{t-1}`` or ``x_i^t``), for ALIF
    ``ε^a = ρ ε^a + c_a e^{t-1}``, ``e = ψ_j (ε^v − β_j ε^a)``, the readout-filtered ``ē = κ ē + (1−κ) e`` and
    accumulates ``g += L_j ē``; the learning signal ``L_j = Σ_k B_jk ∂E/∂y_k`` is broadcast from the readout
    through feedback synapses (``feedback="symmetric"``: ``B = W_outᵀ``, or an ``(N, n_out)`` array).
    Readout gradients ``Σ_t ∂E/∂y_k z̄_j`` are exact. Requires the ``"eprop"`` surrogate and the
    ``filtered_spikes`` readout (the one whose e-prop traces are κ-filtered, §2.4).

    Args:
        x: ``(T, B, n_in)``. y_target: ``(T, B, n_out)``. mask: ``(T, B)`` (default ones).
    """
    spec = export_spec(model)
    if spec.W_rec is None:
        raise UnsupportedFeatureError("storage='sparse': Brian2 e-prop returns dense (N, N) gradients; compare "
                                      "e-prop on a model built with storage='dense' (spike runs export per edge)")
    if spec.gamma_pd is None:
        raise UnsupportedFeatureError(f"surrogate {model.surrogate.name!r}: Brian2 e-prop implements the 'eprop' "
                                      "(triangular) pseudo-derivative only")
    if model.readout != "filtered_spikes":
        raise UnsupportedFeatureError(f"readout {model.readout!r}: Brian2 e-prop needs readout='filtered_spikes'")
    if getattr(model, "gap", None) is not None:
        raise UnsupportedFeatureError("gap junctions: the Brian2 e-prop traces use the membrane leak alone, while "
                                      "e-prop with gap junctions uses the local leak α + c_in(G_jj − Σ_i G_ji)")
    xa = _x_numpy(model, x)
    T, B, _ = xa.shape
    yt = _np(y_target)
    if yt.shape != (T, B, spec.n_out):
        raise ValueError(f"y_target must have shape {(T, B, spec.n_out)}, got {yt.shape}")
    mk = np.ones((T, B)) if mask is None else _np(mask)
    if isinstance(feedback, str):
        if feedback != "symmetric":
            raise ValueError(f"feedback must be 'symmetric' or an (N, n_out) array, got {feedback!r}")
        B_fb = spec.W_out.T.copy()
    else:
        B_fb = _np(feedback)
        if B_fb.shape != (spec.n, spec.n_out):
            raise ValueError(f"feedback must have shape {(spec.n, spec.n_out)}, got {B_fb.shape}")
    learn = _Learning(y_target=yt, mask=mk, B_fb=B_fb, inv_batch=1.0 / B)
    res = _sim(spec, xa, target=target, build_dir=build_dir, record_state=True, learning=learn,
               state0=_initial_state(_f64(model), B))
    loss = float((mk[..., None] * 0.5 * (res.y - yt) ** 2).sum() / B)
    return EPropBrian2Result(grads=dict(res.extra), loss=loss, run=res)
