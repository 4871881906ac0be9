r"""NIR export/import of a LIF :class:`~spikelearn.models.SpikingRNN` (optional extra ``[nir]``; needs ``nir``); LIF or,
with current-based synapses, CubaLIF populations.

Graph written by :func:`to_nir` (``(post, pre)`` weights, time in seconds)::

    input ─ w_in (Linear) ─► lif (LIF) ─ w_out (Linear) ─► readout (LI) ─ bias (Affine, identity) ─► output
                              ▲    │
                              └────┴─ w_rec (Linear) ─ delay (Delay, dt)        (explicit one-step delay, §0.3)

Parameter map (spikes are unit-area Dirac pulses; an input ``x^t`` is a pulse of area ``x^t`` at step ``t``):
``tau = τ_m``, ``r = c_in·τ_m`` (so a pulse through weight ``w`` raises ``v`` by ``c_in w``: scaling A or B),
``v_leak = 0``, ``v_threshold = v_th``; readout ``LI(τ_out, r = (1−κ) τ_out)``, ``y = W_out z̄ + b``. With the
leak integrated exactly over ``dt`` this is spikelearn's map **except for two things NIR's LIF cannot express**:

* **reset**: NIR sets ``v ← v_reset`` at the spike; spikelearn subtracts ``v_th`` one step later, after the leak
  (``v^{t+1} = α v^t − v_th + …``). The exported ``v_reset`` is 0 (NIR's usual choice).
* **refractoriness**: NIR's LIF has none (spikelearn blocks ``n_ref`` steps).

**Current-based synapses** (``tau_syn_ms > 0`` for every neuron) export as one ``nir.CubaLIF`` with ``w_in = 1``,
``tau_syn = τ_s``, ``tau_mem = τ_m`` and ``r = c_in (τ_m − τ_s)/(α − α_s)`` (``c_in τ_m²/(α dt)`` where τ_s = τ_m):
NIR's continuous-time CubaLIF, driven by a pulse at the *start* of a step and read at its *end*, then gives
spikelearn's ``v^t = c_in w (α^{t+1} − α_s^{t+1})/(α − α_s)`` exactly (the current jumps by ``w/τ_s``; ``v`` is
continuous, so it answers within the step, as spikelearn's ``v^t = α v^{t-1} + i^t`` does); :func:`simulate_nir`
integrates it that way. A population mixing τ_s = 0 and τ_s > 0 is refused, as is the snnTorch dialect.

Both are kept in ``graph.metadata["spikelearn"]`` (with ``dt``, scaling, masks), so :func:`from_nir` restores the
model exactly and a spikelearn → NIR → spikelearn round trip reproduces every spike. :func:`simulate_nir` runs the
graph with NIR's own semantics instead (exact leak, pulses, reset to ``v_reset``): its spikes agree with spikelearn
up to the first spike and differ afterwards — the documented mismatch. ALIF (adaptive threshold) has no NIR
primitive and is refused; so are gap junctions.

snnTorch (``snntorch`` 1.0, ``nirtorch`` 2.x; tested in ``tests/validate/test_nir.py``): there is no top-level
``import_from_nir``; ``snntorch.import_nir.import_from_nir`` maps Linear/Affine, LIF/CubaLIF/IF (and Conv, pooling)
but not LI or Delay, so the default graph is refused ("Unknown node type ... LI"). It converts a LIF with a fixed
``dt = 1e-4`` s by forward Euler (``β = 1 − dt/τ``, input gain ``r·dt/τ`` which must be 1 or is folded into the
threshold), takes one ``v_threshold`` for all neurons, and hard-codes ``reset_mechanism="zero"``,
``reset_delay=False`` (v ← 0 in the step of the spike: NIR's reset). A direct ``lif ↔ w_rec`` 2-cycle is rewritten
into an RNN subgraph with an edge ``subgraph.input → w_rec``; its ``RLeaky`` mapping is never used (the node map
has no ``NIRGraph`` entry), so nirtorch runs the subgraph literally and the input passes through ``W_rec`` too:
wrong from the first spike. ``to_nir(model, for_snntorch=True)`` therefore writes: ``τ' = dt/(1−α)`` (so ``β = α``),
``r = τ'/dt``, ``c_in`` folded into ``W_in``/``W_rec`` rows, the loop ``lif → w_rec → w_rec_hop (identity) → lif``
(nirtorch then feeds back the previous step's spikes: spikelearn's one-step delay), ``w_out`` as an Affine with
``b_out`` (per-step ``W_out z^t + b``, no κ filter) and no LI. Its τ are re-timed (one step = 0.1 ms): it is a
graph for snnTorch, not for continuous-time toolchains, and :func:`from_nir` / :func:`simulate_nir` refuse it.
Measured (N = 60, p = 0.2, τ_m ∈ [20, 30] ms, 2 × 300 steps, 5 % input spikes, snnTorch's float32 network vs
spikelearn in float64):

* **as imported**: every spike equals :func:`simulate_nir` of the default graph (NIR semantics, 36000/36000) and
  spikelearn's up to each trial's first spike (step 2); the rasters part 1–5 steps later (reset convention):
  spike Jaccard 0.22 / 0.28, rates 43 vs 80 Hz (scaling A) and 31 vs 42 Hz (B).
* **switched to spikelearn's reset** — on the imported ``snn.Leaky``: ``reset_mechanism = "subtract"``,
  ``state_function = _base_sub``, ``reset_delay = True`` (snnTorch's own defaults): with ``n_ref = 0`` and one
  ``v_th`` every spike is reproduced (A: 80 Hz, B: 42 Hz; 0 of 36000 differ) and the readout matches
  ``W_out z + b`` to 1e-7. Exact in semantics; numerically the float32 ``β``/weights (≈ 3e-8 relative) could flip
  a spike only when ``v`` lands within ~1e-7 of ``v_th``, which did not happen here.
* **refractoriness** (``n_ref > 0``) has no snnTorch Leaky counterpart: with ``n_ref = 3`` and the switched reset
  the rasters agree up to the first spike and part 1–2 steps after (Jaccard 0.17; 56 vs 80 Hz).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from spikelearn.circuit import Circuit
from spikelearn.models import SpikingRNN
from spikelearn.validate.brian2 import UnsupportedFeatureError, export_spec

#: The largest per-edge (``storage="sparse"``) network :func:`to_nir` writes: NIR holds dense weight matrices.
NIR_MAX_SPARSE_N = 4096

__all__ = ["to_nir", "from_nir", "simulate_nir", "SNNTORCH_DT_S"]


def _import_nir():
    try:
        import nir
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("NIR export needs the optional dependency 'nir' (pip install 'spikelearn[nir]')") from e
    return nir


SNNTORCH_DT_S = 1e-4
"""The time step snnTorch 1.0's NIR importer assumes for every LIF (``β = 1 − dt/τ``), in seconds."""


def to_nir(model: Any, *, explicit_delay: bool | None = None, for_snntorch: bool = False) -> Any:
    """Export a LIF :class:`~spikelearn.models.SpikingRNN` (trained or not) as a ``nir.NIRGraph``.

    Args:
        model: LIF network (β = 0 everywhere; refractoriness and the subtractive reset are stored in the graph's
            metadata, see the module docstring). No gap junctions.
        explicit_delay: put the one-step recurrent delay in a ``nir.Delay`` node (default); ``False`` writes the
            direct ``lif → w_rec → lif`` loop. Not allowed with ``for_snntorch`` (which has its own loop).
        for_snntorch: write the graph in the dialect ``snntorch.import_nir.import_from_nir`` (snnTorch 1.0 with
            nirtorch 2.x) imports correctly, see the module docstring: time re-scaled so one step is snnTorch's
            fixed ``dt = 1e-4`` s with ``τ' = dt/(1−α)`` (its Euler ``β = 1 − dt/τ'`` is then spikelearn's
            ``α``), ``r = τ'/dt``, ``c_in`` folded into the rows of ``W_in`` and ``W_rec``, the loop
            ``lif → w_rec → w_rec_hop (identity Linear) → lif``, and no LI readout (``w_out`` is an Affine with
            ``b_out``: the per-step, unfiltered ``W_out z^t + b``). Its τ are not the model's: a graph for snnTorch,
            not for continuous-time toolchains; :func:`from_nir` and :func:`simulate_nir` refuse it.

    Raises:
        UnsupportedFeatureError: ALIF neurons (adaptive threshold), gap junctions, a population mixing τ_s = 0 and
            τ_s > 0, ``reset="zero"``, a model Brian2 export refuses, or
            (``for_snntorch``) thresholds that differ between neurons (snnTorch's importer takes one ``v_threshold``).
    """
    nir = _import_nir()
    cuba = bool(getattr(model, "synaptic", False))
    if cuba:
        tau_s_ms = model.tau_syn_ms.detach().cpu().double().numpy()
        if (np.broadcast_to(tau_s_ms, (model.n,)) <= 0).any():
            raise UnsupportedFeatureError(
                "tau_syn_ms = 0 for some neurons and > 0 for others: one NIR population is either LIF or CubaLIF")
        if for_snntorch:
            raise UnsupportedFeatureError("current-based synapses with for_snntorch=True: the snnTorch dialect is "
                                          "written for LIF populations only")
    if getattr(model, "reset", "subtract") != "subtract":
        raise UnsupportedFeatureError(
            f"reset={model.reset!r}: the export writes spikelearn's subtractive reset into the graph's metadata; "
            f"NIR's own reset (v ← v_reset at the spike) is neither")
    if for_snntorch and explicit_delay:
        raise ValueError("for_snntorch=True writes its own recurrent loop (snnTorch cannot import nir.Delay); "
                         "leave explicit_delay unset")
    explicit_delay = (not for_snntorch) if explicit_delay is None else explicit_delay
    per_edge = getattr(model, "storage", "dense") != "dense"
    if per_edge and model.n > NIR_MAX_SPARSE_N:
        raise UnsupportedFeatureError(f"storage='sparse' with N = {model.n} > {NIR_MAX_SPARSE_N}: NIR has no sparse "
                                      f"primitive (its Affine/Linear nodes hold dense weight matrices), so the export "
                                      f"would write an N x N array ({model.n ** 2 * 8 / 1e9:.1f} GB in float64)")
    spec = export_spec(model)
    if per_edge:  # a small per-edge network: NIR's dense matrices from the edges
        assert spec.rec_post is not None and spec.rec_pre is not None and spec.rec_values is not None
        W_rec = np.zeros((spec.n, spec.n))
        W_rec[spec.rec_post, spec.rec_pre] = spec.rec_values
        mask_rec = np.zeros((spec.n, spec.n), dtype=bool)
        mask_rec[spec.rec_post, spec.rec_pre] = True
        spec = dataclasses.replace(spec, W_rec=W_rec, mask_rec=mask_rec)
    assert spec.W_rec is not None and spec.mask_rec is not None
    if (spec.beta != 0).any():
        raise UnsupportedFeatureError(f"adaptive threshold (ALIF, {int((spec.beta != 0).sum())} neurons with "
                                      "beta != 0): NIR has no adaptive LIF primitive")
    if spec.gap is not None:
        raise UnsupportedFeatureError("gap junctions: not exported to NIR")
    if for_snntorch and np.unique(spec.v_th).size != 1:
        raise UnsupportedFeatureError("per-neuron thresholds: snnTorch's NIR importer takes one v_threshold for "
                                      "the whole LIF population")
    dt_s = spec.dt_ms * 1e-3
    N, n_in, n_out = spec.n, spec.n_in, spec.n_out
    tau = spec.tau_mem_ms * 1e-3
    tau_o = model.tau_out_ms * 1e-3
    meta = {
        "format": "spikelearn.nir/1",
        "synapses": ("current-based: an input pulse at the start of step t, v read at its end (spikelearn's v^t)"
                     if cuba else "instantaneous"),
        "dt": dt_s,
        "scaling": model.scaling,
        "reset": "subtract v_threshold one step after the spike, after the leak",
        "refractory": model.refractory,
        "n_ref": _np_nref(model),
        "mask_rec": spec.mask_rec.astype(np.int8),
        "mask_in": spec.mask_in.astype(np.int8),
        "recurrent_delay_steps": 1,
        # the trials' initial state (spikelearn option; NIR graphs start at rest)
        "init_state": {"std": model.init_state_std, "relax_steps": model.init_relax_steps, "seed": model.init_seed},
    }
    if for_snntorch:
        tau_s = SNNTORCH_DT_S / (1.0 - spec.alpha)  # snnTorch: beta = 1 - dt/tau' = alpha
        c = spec.c_in[:, None]
        nodes = {
            "input": nir.Input(input_type={"input": np.array([n_in])}),
            "w_in": nir.Linear(weight=c * spec.W_in),
            "lif": nir.LIF(tau=tau_s, r=tau_s / SNNTORCH_DT_S, v_leak=np.zeros(N), v_threshold=spec.v_th.copy(),
                           v_reset=np.zeros(N)),
            "w_rec": nir.Linear(weight=c * spec.W_rec),
            "w_rec_hop": nir.Linear(weight=np.eye(N)),
            "w_out": nir.Affine(weight=spec.W_out.copy(), bias=spec.b_out.copy()),
            "output": nir.Output(output_type={"output": np.array([n_out])}),
        }
        edges = [("input", "w_in"), ("w_in", "lif"), ("lif", "w_rec"), ("w_rec", "w_rec_hop"), ("w_rec_hop", "lif"),
                 ("lif", "w_out"), ("w_out", "output")]
        meta.update({"layout": "snntorch", "time_step_s": SNNTORCH_DT_S, "tau_mem_s": tau.copy(),
                     "c_in_folded_into_weights": True,
                     "readout": f"unfiltered W_out z + b per step (model: tau_out = {tau_o} s, kappa = {spec.kappa})"})
        return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"spikelearn": meta})
    nodes = {
        "input": nir.Input(input_type={"input": np.array([n_in])}),
        "w_in": nir.Linear(weight=spec.W_in.copy()),
        "lif": (_cuba_node(nir, spec, tau, np.broadcast_to(tau_s_ms, (N,)) * 1e-3) if cuba else
                nir.LIF(tau=tau.copy(), r=spec.c_in * tau, v_leak=np.zeros(N), v_threshold=spec.v_th.copy(),
                        v_reset=np.zeros(N))),
        "w_rec": nir.Linear(weight=spec.W_rec.copy()),
        "w_out": nir.Linear(weight=spec.W_out.copy()),
        "readout": nir.LI(tau=np.full(n_out, tau_o), r=np.full(n_out, spec.c_kappa * tau_o),
                          v_leak=np.zeros(n_out)),
        "bias": nir.Affine(weight=np.eye(n_out), bias=spec.b_out.copy()),
        "output": nir.Output(output_type={"output": np.array([n_out])}),
    }
    edges = [("input", "w_in"), ("w_in", "lif"), ("lif", "w_rec"), ("lif", "w_out"), ("w_out", "readout"),
             ("readout", "bias"), ("bias", "output")]
    if explicit_delay:
        nodes["delay"] = nir.Delay(delay=np.full(N, dt_s))
        edges += [("w_rec", "delay"), ("delay", "lif")]
    else:
        edges += [("w_rec", "lif")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"spikelearn": meta})


def _cuba_kernel(tau_m: np.ndarray, tau_s: np.ndarray, dt: float) -> np.ndarray:
    """``v`` at the end of a step per unit of NIR CubaLIF current ``I`` at its start, per unit of ``R`` (times in s):
    ``τ_s (α − α_s)/(τ_m − τ_s)``, ``dt α/τ_m`` in the limit ``τ_s = τ_m``. Export (``R = c_in τ_s / kernel`` with
    ``w_in = 1``), import (its inverse) and :func:`simulate_nir` all use it."""
    a, a_s = np.exp(-dt / tau_m), np.exp(-dt / tau_s)
    close = np.isclose(tau_m, tau_s, rtol=1e-9, atol=0)
    return np.where(close, dt * a / tau_m, tau_s * (a - a_s) / np.where(close, 1.0, tau_m - tau_s))


def _cuba_node(nir: Any, spec: Any, tau_m: np.ndarray, tau_s: np.ndarray) -> Any:
    """The LIF population as a NIR CubaLIF (module docstring): ``R = c_in τ_s / kernel`` = ``c_in (τ_m − τ_s)/(α −
    α_s)`` makes NIR's response to a pulse at the start of a step, read at its end, spikelearn's ``v^t``."""
    dt = spec.dt_ms * 1e-3
    return nir.CubaLIF(tau_syn=tau_s, tau_mem=tau_m.copy(), r=spec.c_in * tau_s / _cuba_kernel(tau_m, tau_s, dt),
                       v_leak=np.zeros(spec.n), v_threshold=spec.v_th.copy(), v_reset=np.zeros(spec.n),
                       w_in=np.ones(spec.n))


def _cuba_c_in(lif: Any, dt: float) -> np.ndarray:
    """Inverse of the export's ``R`` for a CubaLIF node (``w_in`` folded in): ``c_in = R w_in kernel / τ_s``."""
    tau_m = np.asarray(lif.tau_mem, dtype=np.float64)
    tau_s = np.asarray(lif.tau_syn, dtype=np.float64)
    R = np.asarray(lif.r, dtype=np.float64) * np.broadcast_to(np.asarray(lif.w_in, dtype=np.float64), tau_m.shape)
    return R * _cuba_kernel(tau_m, tau_s, dt) / tau_s


def _np_nref(model: Any) -> np.ndarray:
    return np.broadcast_to(model.n_ref.detach().cpu().double().numpy(), (model.n,)).copy()


def _parse(graph: Any) -> dict[str, Any]:
    """Find the nodes of the :func:`to_nir` layout by type and edges."""
    nir = _import_nir()
    meta = graph.metadata.get("spikelearn", {}) if isinstance(graph.metadata, dict) else {}
    if meta.get("layout") == "snntorch":
        raise UnsupportedFeatureError("graph written with to_nir(..., for_snntorch=True): its time constants are "
                                      "re-scaled to snnTorch's dt = 1e-4 s; use the default layout here")
    nodes, edges = graph.nodes, list(graph.edges)
    succ: dict[str, list[str]] = {}
    for a, b in edges:
        succ.setdefault(a, []).append(b)
    lifs = [k for k, n in nodes.items() if isinstance(n, (nir.LIF, nir.CubaLIF))]
    if len(lifs) != 1:
        raise UnsupportedFeatureError(f"expected one LIF or CubaLIF population, found {len(lifs)} "
                                      f"({', '.join(type(n).__name__ for n in nodes.values())})")
    lif = lifs[0]
    inps = [k for k, n in nodes.items() if isinstance(n, nir.Input)]
    if len(inps) != 1 or not succ.get(inps[0]):
        raise UnsupportedFeatureError(f"expected one Input node feeding a Linear/Affine input layer, found {len(inps)}")
    w_in = succ[inps[0]][0]
    if not isinstance(nodes[w_in], (nir.Linear, nir.Affine)):
        raise UnsupportedFeatureError(f"the Input node feeds a {type(nodes[w_in]).__name__}; expected a Linear or "
                                      f"Affine input layer before the LIF population")
    outs = [b for b in succ.get(lif, []) if isinstance(nodes[b], (nir.Linear, nir.Affine))]
    w_rec = w_out = None
    for b in outs:
        chain = succ.get(b, [])
        if lif in chain or any(isinstance(nodes[c], nir.Delay) and lif in succ.get(c, []) for c in chain):
            w_rec = b
        else:
            w_out = b
    if w_out is None:
        raise UnsupportedFeatureError("no readout (LIF -> Linear -> LI) found in the NIR graph")
    readout = succ[w_out][0]
    if not isinstance(nodes[readout], nir.LI):
        raise UnsupportedFeatureError(f"the readout layer feeds a {type(nodes[readout]).__name__}; spikelearn's "
                                      f"readout is a leaky integrator (LIF -> Linear -> LI)")
    bias = next((b for b in succ.get(readout, []) if isinstance(nodes[b], nir.Affine)), None)
    delay = None
    if w_rec is not None:
        delay = next((nodes[c] for c in succ.get(w_rec, []) if isinstance(nodes[c], nir.Delay)), None)
    return {"lif": nodes[lif], "w_in": nodes[w_in], "w_rec": None if w_rec is None else nodes[w_rec],
            "w_out": nodes[w_out], "readout": nodes[readout], "bias": None if bias is None else nodes[bias],
            "delay": delay}


def _check_foreign(p: dict[str, Any], dt_ms: float) -> None:
    """Parameters of the layout that spikelearn cannot represent are errors, not silently dropped."""
    for key in ("w_in", "w_rec", "w_out"):
        node = p[key]
        b = getattr(node, "bias", None)
        if node is not None and b is not None and np.any(np.asarray(b) != 0):
            raise UnsupportedFeatureError(f"{key}: an Affine bias is not representable (only the readout has a "
                                          f"bias, as a separate Affine after the LI)")
    ro = p["readout"]
    tau = np.asarray(ro.tau, dtype=np.float64).ravel()
    if not np.all(tau == tau[0]):
        raise UnsupportedFeatureError(f"readout LI time constants differ per output ({tau.tolist()}); spikelearn "
                                      f"has one readout time constant")
    if not np.allclose(np.asarray(ro.v_leak, dtype=np.float64), 0.0):
        raise UnsupportedFeatureError("readout LI v_leak != 0 is not representable")
    kappa = np.exp(-dt_ms * 1e-3 / tau[0])
    r_over_tau = np.asarray(ro.r, dtype=np.float64).ravel() / tau
    if not (np.allclose(r_over_tau, 1.0 - kappa, rtol=1e-9) or np.allclose(r_over_tau, 1.0, rtol=1e-9)):
        raise UnsupportedFeatureError(f"readout LI r/tau = {r_over_tau[0]:.6g} is neither 1 − exp(−dt/τ) "
                                      f"({1 - kappa:.6g}) nor 1")
    if p["delay"] is not None:
        d_ms = np.asarray(p["delay"].delay, dtype=np.float64) * 1e3
        if not np.allclose(d_ms, dt_ms, rtol=1e-9):
            raise UnsupportedFeatureError(f"recurrent Delay of {d_ms.ravel()[:3].tolist()} ms; spikelearn's "
                                          f"recurrent delay is one step (dt_ms = {dt_ms})")
    bias = p["bias"]
    if bias is not None and not np.allclose(np.asarray(bias.weight, dtype=np.float64),
                                            np.eye(np.asarray(bias.weight).shape[0])):
        raise UnsupportedFeatureError("the readout bias Affine must have identity weights")


def _initial_state_options(meta: dict) -> dict:
    init = meta.get("init_state")
    if not init:
        return {}
    return {"init_state_std": float(np.asarray(init["std"])), "init_relax_steps": int(np.asarray(init["relax_steps"])),
            "init_seed": int(np.asarray(init["seed"]))}


def from_nir(graph: Any, *, dt_ms: float | None = None, dtype: Any = torch.float64) -> Any:
    """Build a :class:`~spikelearn.models.SpikingRNN` from a graph of the :func:`to_nir` layout.

    spikelearn's own metadata (reset convention, refractoriness, masks) is used when present, which makes the round
    trip exact; a foreign graph gets spikelearn's reset and no refractoriness (``dt_ms`` required then).
    """

    p = _parse(graph)
    meta = dict(graph.metadata.get("spikelearn", {})) if isinstance(graph.metadata, dict) else {}
    if dt_ms is None:
        if "dt" not in meta:
            raise ValueError("dt_ms is required for a graph without spikelearn metadata")
        dt_ms = float(np.asarray(meta["dt"])) * 1e3
    _check_foreign(p, dt_ms)
    lif = p["lif"]
    nir = _import_nir()
    cuba = isinstance(lif, nir.CubaLIF)
    tau = np.asarray(lif.tau_mem if cuba else lif.tau, dtype=np.float64)
    N = tau.size
    if not np.allclose(np.asarray(lif.v_leak), 0.0):
        raise UnsupportedFeatureError("LIF v_leak != 0 is not representable in spikelearn")
    alpha = np.exp(-dt_ms * 1e-3 / tau)
    c_in = _cuba_c_in(lif, dt_ms * 1e-3) if cuba else np.asarray(lif.r, dtype=np.float64) / tau
    tau_syn_ms = np.asarray(lif.tau_syn, dtype=np.float64) * 1e3 if cuba else 0.0
    if np.allclose(c_in, 1.0):
        scaling = "A"
    elif np.allclose(c_in, 1.0 - alpha):
        scaling = "B"
    else:
        raise UnsupportedFeatureError("LIF r/tau must be 1 (scaling A) or 1 - exp(-dt/tau) (scaling B)"
                                      + (" (for a CubaLIF: r·w_in = c_in (τ_m − τ_s)/(α − α_s) with c_in one of "
                                         "those)" if cuba else ""))
    W_in = np.asarray(p["w_in"].weight, dtype=np.float64)
    W_rec = np.zeros((N, N)) if p["w_rec"] is None else np.asarray(p["w_rec"].weight, dtype=np.float64)
    W_out = np.asarray(p["w_out"].weight, dtype=np.float64)
    n_out = W_out.shape[0]
    mask = np.asarray(meta["mask_rec"], bool) if "mask_rec" in meta else (W_rec != 0)
    circuit = Circuit.from_dense(W_rec, mask=mask)
    if "mask_in" in meta and not np.asarray(meta["mask_in"], bool).all():
        circuit = Circuit.from_dense(W_rec, mask=mask, input_mask=np.asarray(meta["mask_in"], bool))
    tau_o_ms = float(np.asarray(p["readout"].tau).ravel()[0]) * 1e3
    r_over_tau = float(np.asarray(p["readout"].r, dtype=np.float64).ravel()[0]) / (tau_o_ms * 1e-3)
    # the checks above allow r/τ = 1 − κ (the normalised filter) or 1 (the paper form): keep which it is
    readout_norm = bool(np.isclose(r_over_tau, 1.0 - np.exp(-dt_ms / tau_o_ms), rtol=1e-9))
    bias = p["bias"]
    model = SpikingRNN(circuit, W_in.shape[1], n_out, scaling=scaling, tau_mem_ms=tau * 1e3, tau_syn_ms=tau_syn_ms,
                       v_th=np.asarray(lif.v_threshold, dtype=np.float64), beta=np.zeros(N),
                       n_ref=np.asarray(meta.get("n_ref", np.zeros(N)), dtype=np.float64),
                       refractory=str(meta.get("refractory", "lsnn")), tau_out_ms=tau_o_ms, dt_ms=dt_ms,
                       sign_constraint="none", w_in=W_in, w_out=W_out, readout_bias=bias is not None,
                       readout_norm=readout_norm, allow_autapses=bool(np.diag(mask).any()), dtype=dtype,
                       **_initial_state_options(meta))
    if bias is not None:
        assert model.b_out is not None  # readout_bias=True
        with torch.no_grad():
            model.b_out.copy_(torch.as_tensor(np.asarray(bias.bias, dtype=np.float64)))
    return model


def simulate_nir(graph: Any, x: Any, *, dt_ms: float | None = None) -> dict[str, np.ndarray]:
    """Simulate a :func:`to_nir`-layout graph with **NIR's** LIF semantics, discretised at ``dt_ms``.

    Per step: ``v ← e^{−dt/τ} v + (r/τ) I`` with ``I = W_in x^t + W_rec z^{t−1}`` (pulses; the recurrent delay is
    one step), ``z = v > v_threshold``, then ``v ← v_reset`` where ``z``; no refractoriness; readout LI with pulses.
    A CubaLIF population is integrated exactly over each step with the pulses at the step's start:
    ``I ← e^{−dt/τ_s} I + (w_in/τ_s) S``, ``v ← e^{−dt/τ_m} v + R τ_s (e^{−dt/τ_m} − e^{−dt/τ_s})/(τ_m − τ_s) I``
    (the v-contribution of the current ``I`` held over the step).
    Returns ``{"z": (T, B, N), "v": (T, B, N) before the reset, "y": (T, B, n_out)}``.
    """
    p = _parse(graph)
    meta = graph.metadata.get("spikelearn", {}) if isinstance(graph.metadata, dict) else {}
    if dt_ms is None:
        dt_ms = float(np.asarray(meta["dt"])) * 1e3
    xa = np.asarray(x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    T, B, _ = xa.shape
    lif = p["lif"]
    nir = _import_nir()
    cuba = isinstance(lif, nir.CubaLIF)
    dt = dt_ms * 1e-3
    if cuba:  # exact over a step, pulses at its start: I ← α_s I + (w_in/τ_s) S; v ← α v + R τ_s (α − α_s)/(τ_m − τ_s) I
        tau = np.asarray(lif.tau_mem, np.float64)
        tau_s = np.asarray(lif.tau_syn, np.float64)
        dec, dec_s = np.exp(-dt / tau), np.exp(-dt / tau_s)
        w_in_c = np.broadcast_to(np.asarray(lif.w_in, np.float64), tau.shape) / tau_s
        gain = np.asarray(lif.r, np.float64) * _cuba_kernel(tau, tau_s, dt)  # v per unit of I at the step's start
        cur = np.zeros((xa.shape[1], tau.size))
    else:
        tau = np.asarray(lif.tau, np.float64)
        dec, gain = np.exp(-dt / tau), np.asarray(lif.r, np.float64) / tau
    vth = np.asarray(lif.v_threshold, np.float64)
    vreset = np.zeros_like(tau) if lif.v_reset is None else np.asarray(lif.v_reset, np.float64)
    W_in = np.asarray(p["w_in"].weight, np.float64)
    W_rec = np.zeros((tau.size, tau.size)) if p["w_rec"] is None else np.asarray(p["w_rec"].weight, np.float64)
    W_out = np.asarray(p["w_out"].weight, np.float64)
    ro = p["readout"]
    tau_o = np.asarray(ro.tau, np.float64)
    dec_o, gain_o = np.exp(-dt_ms * 1e-3 / tau_o), np.asarray(ro.r, np.float64) / tau_o
    b = np.zeros(W_out.shape[0]) if p["bias"] is None else np.asarray(p["bias"].bias, np.float64)
    v = np.zeros((B, tau.size))
    z = np.zeros_like(v)
    yc = np.zeros((B, W_out.shape[0]))
    Z, V, Y = (np.zeros((T, B, tau.size)), np.zeros((T, B, tau.size)), np.zeros((T, B, W_out.shape[0])))
    for t in range(T):
        if cuba:
            cur = dec_s * cur + w_in_c * (xa[t] @ W_in.T + z @ W_rec.T)  # type: ignore[operator]  # bound: cuba
            v = dec * v + gain * cur
        else:
            v = dec * v + gain * (xa[t] @ W_in.T + z @ W_rec.T)
        V[t] = v
        z = (v > vth).astype(np.float64)
        v = np.where(z > 0, vreset, v)
        yc = dec_o * yc + gain_o * (z @ W_out.T)
        Z[t], Y[t] = z, yc + b
    return {"z": Z, "v": V, "y": Y}
