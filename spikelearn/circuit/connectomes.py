"""Connectome loaders: the shipped connectivity tables as :class:`Circuit` objects.

Three connectomes ship with the package (top-level ``connectomes/`` folder, installed as the package
``spikelearn._connectome_data``; every file is read through :mod:`importlib.resources`, so loading works from
any working directory and from a non-editable install):

* ``"celegans_varshney2011"`` — *C. elegans* hermaphrodite, neuron-level EM synapse counts (Varshney et al.
  2011, doi:10.1371/journal.pcbi.1001066). Chemical synapses directed, gap junctions in ``Circuit.gap``.
* ``"mouse_v1"`` — mouse V1, a cell-type stochastic block model: EM (V1DD) peak connection probabilities
  ``pmax`` for 19 cell types, PSP amplitudes from paired recordings (Campagnola et al. 2022,
  doi:10.1126/science.abj5861), signs by cell class (Dale).
* ``"drosophila_optic_lobe"`` — *Drosophila* optic-lobe motion pathways, 65 cell types, EM synapse counts per
  hexagonal column offset with flyvis signs (Lappalainen et al. 2024, doi:10.1038/s41586-024-07939-3); the
  cell-type graph, or the column-expanded lattice.

All matrices are ``(post, pre)``. ``load(name, **options)`` records every option (defaults included) and the
provenance (folder, files, citation, licence) in ``circuit.metadata``. Any sign not measured by EM is a
modelling assumption and ``metadata`` says so.
"""

from __future__ import annotations

import functools
import inspect
import numbers
import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, Callable, Literal, cast

import numpy as np
import pandas as pd
import scipy.sparse as sp

from spikelearn.circuit.core import Circuit, CircuitError
from spikelearn.circuit.generators import largest_remainder

__all__ = [
    "available",
    "load",
    "celegans_varshney2011",
    "mouse_v1",
    "drosophila_optic_lobe",
    "celegans_neuron_class",
    "hex_columns",
]

_DATA_PACKAGE = "spikelearn._connectome_data"


def _data_root():
    """The shipped connectome folder: the installed package data, or ``connectomes/`` of a source checkout.

    An install (editable or not) maps the top-level ``connectomes/`` folder to ``spikelearn._connectome_data``;
    a source checkout used through ``PYTHONPATH`` without installing has no such package, so the folder beside
    ``spikelearn/`` is read instead.
    """
    try:
        return files(_DATA_PACKAGE)
    except ModuleNotFoundError:
        checkout = Path(__file__).resolve().parents[2] / "connectomes"
        if checkout.is_dir():
            return checkout
        raise CircuitError(
            f"the connectome data package {_DATA_PACKAGE} is not installed and no connectomes/ folder was found "
            f"at {checkout}; install spikelearn (pip install .) or run from a full source checkout"
        ) from None


# ---------------------------------------------------------------------------------------------- file helpers
def _read_csv(folder: str, name: str, columns: list[str], **kwargs: Any) -> pd.DataFrame:
    """Read ``<folder>/<name>`` from the package data and check that ``columns`` are present."""
    path = _data_root() / folder / name
    try:
        with path.open("rb") as fh:
            df = pd.read_csv(fh, **kwargs)
    except FileNotFoundError:
        raise CircuitError(f"{folder}/{name}: file not found in the package data ({_DATA_PACKAGE})") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise CircuitError(f"{folder}/{name}: cannot be parsed as CSV ({e})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise CircuitError(f"{folder}/{name}: missing column(s) {missing}; found {list(df.columns)}")
    return df


def _read_matrix(folder: str, name: str) -> pd.DataFrame:
    """Square ``pre\\post`` matrix with labels; float values."""
    df = _read_csv(folder, name, [], index_col=0)
    df.index = df.index.astype(str)
    df.columns = df.columns.astype(str)
    return df


def _fail(folder: str, name: str, msg: str) -> CircuitError:
    return CircuitError(f"{folder}/{name}: {msg}")


def _as_int_counts(df: pd.DataFrame, col: str, folder: str, name: str, *, positive: bool) -> np.ndarray:
    # pd.to_numeric is unannotated (its inferred return is a union of every path): a Series here
    v = cast(pd.Series, pd.to_numeric(df[col], errors="coerce")).to_numpy(dtype=np.float64)
    bad = ~np.isfinite(v) | (v != np.round(v)) | ((v <= 0) if positive else (v < 0))
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise _fail(folder, name, f"row {k + 1}: {col}={df[col].iloc[k]!r} is not a "
                                  f"{'positive' if positive else 'non-negative'} integer count")
    return v.astype(np.int64)


# ---------------------------------------------------------------------------------------------- option helpers
def _real(name: str, value: Any, *, low: float | None = None, strict: bool = False) -> float:
    # numbers.Real is no array-like to numpy's stubs; np.isfinite takes any real
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not np.isfinite(value):  # type: ignore[arg-type]
        raise CircuitError(f"option {name}={value!r} must be a finite real number")
    if low is not None and (value <= low if strict else value < low):
        raise CircuitError(f"option {name}={value!r} must be {'>' if strict else '>='} {low}")
    return float(value)


def _int(name: str, value: Any, *, low: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise CircuitError(f"option {name}={value!r} must be an integer")
    if value < low:
        raise CircuitError(f"option {name}={value!r} must be >= {low}")
    return int(value)


def _choice(name: str, value: Any, choices: tuple) -> Any:
    if value not in choices:
        raise CircuitError(f"option {name}={value!r} must be one of {list(choices)}")
    return value


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise CircuitError(f"option {name}={value!r} must be True or False")
    return bool(value)


def _metadata(name: str, options: dict[str, Any], **extra: Any) -> dict[str, Any]:
    e = _REGISTRY[name]
    return {"connectome": name, "options": dict(options), "folder": f"connectomes/{e.folder}",
            "files": list(e.files), "organism": e.organism, "em_derived": e.em_derived,
            "citation": e.citation, "licence": e.licence, **extra}


# ============================================================================================ C. elegans
_CE = "celegans_varshney2011"
_CE_NEURONS = "celegans_neurons.csv"
_CE_EDGES = "varshney2011_edges.csv"
_CE_NMJ = "varshney2011_nmj.csv"
_COOK_CLASSES = ("sensory", "interneuron", "motor", "pharyngeal", "unknown")


def celegans_neuron_class(names: list[str]) -> dict[str, str]:
    """Neuron class of each *C. elegans* neuron name (e.g. ``AVAL -> AVA``, ``VA8 -> VA``, ``IL1DL -> IL1``).

    Rule, applied with ``names`` as the set of all known neurons (pass all 302 for the standard answer):

    1. ``[A-Z]{2}`` followed by digits (ventral-cord and VC motor neurons): strip the digits
       (``VA8 -> VA``, ``DD1 -> DD``, ``AS11 -> AS``, ``VC6 -> VC``).
    2. Otherwise strip a final ``L``/``R`` when the mirror name also exists (``AVAL -> AVA``; ``AVL``,
       ``PVR``, ``RIR`` stay, having no mirror).
    3. Then strip a final ``D``/``V`` when the stem has at least 3 characters and the opposite D/V form also
       exists after step 2 (``IL1DL -> IL1D -> IL1``, ``RMED -> RME``, ``SABVL -> SAB``; ``RID``/``RIV`` stay,
       their stem ``RI`` being too short).

    On the 302 hermaphrodite neurons this gives the 118 classes of White et al. 1986 / WormAtlas.
    """
    known = set(names)
    step: dict[str, str] = {}
    for n in names:
        m = re.fullmatch(r"([A-Z]{2})(\d+)", n)
        if m:
            step[n] = m.group(1)
        elif len(n) > 1 and n[-1] in "LR" and n[:-1] + ("R" if n[-1] == "L" else "L") in known:
            step[n] = n[:-1]
        else:
            step[n] = n
    stems = set(step.values())

    def dv(s: str) -> str:
        if len(s) >= 4 and s[-1] in "DV" and s[:-1] + ("V" if s[-1] == "D" else "D") in stems:
            return s[:-1]
        return s

    return {n: dv(s) for n, s in step.items()}


def _celegans_tables() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    nrn = _read_csv(_CE, _CE_NEURONS, ["neuron", "cook2019_class", "cook2019_subcategory", "owmeta_types",
                                       "owmeta_neurotransmitters", "in_varshney2011"], dtype=str,
                    keep_default_na=False)
    if nrn["neuron"].duplicated().any():
        raise _fail(_CE, _CE_NEURONS, f"duplicate neuron name(s) {sorted(set(nrn.neuron[nrn.neuron.duplicated()]))}")
    bad = sorted(set(nrn["cook2019_class"]) - set(_COOK_CLASSES))
    if bad:
        raise _fail(_CE, _CE_NEURONS, f"unknown cook2019_class value(s) {bad}")
    if not set(nrn["in_varshney2011"]) <= {"0", "1"}:
        raise _fail(_CE, _CE_NEURONS, "in_varshney2011 must be 0 or 1")
    edges = _read_csv(_CE, _CE_EDGES, ["pre", "post", "type", "synapses"])
    edges["pre"] = edges["pre"].astype(str)
    edges["post"] = edges["post"].astype(str)
    edges["synapses"] = _as_int_counts(edges, "synapses", _CE, _CE_EDGES, positive=True)
    bad = sorted(set(edges["type"]) - {"chemical", "electrical"})
    if bad:
        raise _fail(_CE, _CE_EDGES, f"unknown edge type(s) {bad} (expected 'chemical' or 'electrical')")
    unknown = sorted((set(edges.pre) | set(edges.post)) - set(nrn.neuron))
    if unknown:
        raise _fail(_CE, _CE_EDGES, f"neuron(s) {unknown} are not in {_CE_NEURONS}")
    dup = edges.duplicated(["pre", "post", "type"])
    if dup.any():
        r = edges[dup].iloc[0]
        raise _fail(_CE, _CE_EDGES, f"duplicate {r.type} row {r.pre} -> {r.post}")
    el = edges[edges.type == "electrical"]
    fwd = {(a, b): s for a, b, s in zip(el.pre, el.post, el.synapses)}
    for (a, b), s in fwd.items():
        if fwd.get((b, a)) != s:
            raise _fail(_CE, _CE_EDGES, f"electrical junction {a} -- {b} is not listed symmetrically "
                                        f"({s} vs {fwd.get((b, a))})")
    nmj = _read_csv(_CE, _CE_NMJ, ["neuron", "nmj_count"])
    nmj["neuron"] = nmj["neuron"].astype(str)
    nmj["nmj_count"] = _as_int_counts(nmj, "nmj_count", _CE, _CE_NMJ, positive=False)
    unknown = sorted(set(nmj.neuron) - set(nrn.neuron))
    if unknown:
        raise _fail(_CE, _CE_NMJ, f"neuron(s) {unknown} are not in {_CE_NEURONS}")
    listed = set(nrn.neuron[nrn.in_varshney2011 == "1"])
    named = set(edges.pre) | set(edges.post) | set(nmj.neuron)
    if listed != named:
        raise _fail(_CE, _CE_NEURONS, f"in_varshney2011 disagrees with {_CE_EDGES}/{_CE_NMJ}: "
                                      f"{sorted(listed ^ named)}")
    return nrn, edges, nmj


def celegans_varshney2011(*, weight_per_synapse: float = 1.0, gap_junctions: bool = True,
                          gap_weight_per_junction: float = 1.0, include_isolated: bool = False,
                          cell_type: Literal["class", "cook2019_class", "cook2019_subcategory"] = "class",
                          signs: Literal[None, "none", "gaba_inhibitory"] = None,
                          self_loops: Literal["keep", "error"] = "keep",
                          io: Literal["sensory_motor", "none", None] = "sensory_motor") -> Circuit:
    """*C. elegans* hermaphrodite connectome (White 1986 / Varshney 2011 EM), neuron level.

    Neurons: the 279 neurons that take part in a chemical or electrical synapse of
    ``varshney2011_edges.csv``, in the row order of ``celegans_neurons.csv`` (alphabetical). VC6, which only
    has neuromuscular junctions, is added (280 neurons, no synapses) with ``include_isolated=True``.

    Args:
        weight_per_synapse: chemical weight per EM synapse; ``weights[post, pre] = synapses *
            weight_per_synapse`` for each ``type == "chemical"`` row (pre -> post; polyadic contacts counted
            once per postsynaptic partner, as in the source). 2194 edges, 6394 synapses.
        gap_junctions: build ``Circuit.gap`` from the ``electrical`` rows (never added to the chemical weights).
        gap_weight_per_junction: gap conductance per junction: ``gap[i, j] = gap[j, i] = count *
            gap_weight_per_junction``. The file lists each pair in both directions with equal counts; the 3
            self-pairs (RIBL, RIBR, VA8; listed once) sit on the diagonal, where they are electrically inert
            under the usual ``Σ_j g_ij (v_j - v_i)`` coupling. Junction count = sum of the strict upper
            triangle + trace = 890 (the paper's number).
        include_isolated: add VC6 (NMJs only).
        cell_type: ``"class"`` (118 neuron classes, see :func:`celegans_neuron_class`), ``"cook2019_class"``
            (sensory / interneuron / motor / pharyngeal) or ``"cook2019_subcategory"``.
        signs: ``None``: all signs 0 and all weights positive. ``"gaba_inhibitory"``: neurons whose
            owmeta_neurotransmitters contain GABA (26: DD, VD, RME, RIS, AVL, DVB) get sign -1 and negative
            outgoing chemical weights; all other neurons keep sign 0 (unknown). A modelling assumption.
        self_loops: ``"keep"`` or ``"error"`` (raise if a chemical autapse exists; the file has none).
        io: ``"sensory_motor"``: ``input_mask`` = Cook 2019 sensory neurons, ``output_mask`` = motor neurons.
            ``None`` (or ``"none"``, the spelling a TOML file can use): no masks (all neurons).

    Node attributes: ``neuron_class``, ``cook2019_class``, ``cook2019_subcategory``, ``owmeta_types``,
    ``neurotransmitters`` (``""`` = unannotated), ``nmj_count`` (0 where none).
    """
    io = None if io == "none" else io
    signs = None if signs == "none" else signs
    options = dict(weight_per_synapse=weight_per_synapse, gap_junctions=gap_junctions,
                   gap_weight_per_junction=gap_weight_per_junction, include_isolated=include_isolated,
                   cell_type=cell_type, signs=signs, self_loops=self_loops, io=io)
    wps = _real("weight_per_synapse", weight_per_synapse, low=0, strict=True)
    gwj = _real("gap_weight_per_junction", gap_weight_per_junction, low=0, strict=True)
    gap_junctions = _bool("gap_junctions", gap_junctions)
    include_isolated = _bool("include_isolated", include_isolated)
    _choice("cell_type", cell_type, ("class", "cook2019_class", "cook2019_subcategory"))
    _choice("signs", signs, (None, "gaba_inhibitory"))
    _choice("self_loops", self_loops, ("keep", "error"))
    _choice("io", io, ("sensory_motor", None))

    nrn, edges, nmj = _celegans_tables()
    in_edges = set(edges.pre) | set(edges.post)
    keep = nrn.neuron.isin(in_edges) | ((nrn.in_varshney2011 == "1") & include_isolated)
    table = nrn[keep].reset_index(drop=True)
    names = table.neuron.tolist()
    index = {u: k for k, u in enumerate(names)}
    n = len(names)

    chem = edges[edges.type == "chemical"]
    pre = chem.pre.map(index).to_numpy(np.int64)
    post = chem.post.map(index).to_numpy(np.int64)
    w = chem.synapses.to_numpy(np.float64) * wps
    autapses = sorted(names[i] for i in pre[pre == post])
    if autapses and self_loops == "error":
        raise CircuitError(f"{_CE}/{_CE_EDGES}: chemical self-loop(s) {autapses} rejected (self_loops='error')")

    gap = None
    el = edges[edges.type == "electrical"]
    gi, gj = el.post.map(index).to_numpy(np.int64), el.pre.map(index).to_numpy(np.int64)
    g_counts = sp.csr_array((el.synapses.to_numpy(np.float64), (gi, gj)), shape=(n, n))
    n_gap = float(sp.triu(g_counts, k=1).sum() + g_counts.diagonal().sum())
    if gap_junctions:
        gap = g_counts * gwj

    neuron_class = celegans_neuron_class(nrn.neuron.tolist())
    types = {"class": [neuron_class[u] for u in names], "cook2019_class": table.cook2019_class.tolist(),
             "cook2019_subcategory": table.cook2019_subcategory.tolist()}[cell_type]

    gaba = table.owmeta_neurotransmitters.str.split(";").apply(lambda t: "GABA" in t).to_numpy(bool)
    sg = np.zeros(n, np.int8)
    extra: dict[str, Any] = {}
    if signs == "gaba_inhibitory":
        sg[gaba] = -1
        w = np.where(gaba[pre], -w, w)
        extra["sign_assumption"] = (
            "MODELLING ASSUMPTION, not data: EM gives no synaptic sign. Neurons annotated GABA in the OpenWorm "
            "owmeta neurotransmitter table are treated as inhibitory (sign -1, outgoing chemical weights "
            "negated); every other neuron has sign 0 (unknown): cholinergic and glutamatergic synapses can be "
            "either sign in C. elegans and 59 neurons are unannotated.")
    else:
        extra["sign_assumption"] = "none: EM gives no synaptic sign; all signs 0, all weights positive"

    nmj_of = dict(zip(nmj.neuron, nmj.nmj_count))
    attrs = tuple({"neuron_class": neuron_class[u], "cook2019_class": r.cook2019_class,
                   "cook2019_subcategory": r.cook2019_subcategory, "owmeta_types": r.owmeta_types,
                   "neurotransmitters": r.owmeta_neurotransmitters, "nmj_count": int(nmj_of.get(u, 0))}
                  for u, r in zip(names, table.itertuples()))
    cls = table.cook2019_class.to_numpy()
    input_mask = cls == "sensory" if io == "sensory_motor" else None
    output_mask = cls == "motor" if io == "sensory_motor" else None

    meta = _metadata(_CE, options, **extra,
                     neuron_order=f"row order of {_CE_NEURONS} (alphabetical by name)",
                     n_chemical_synapses=int(chem.synapses.sum()), n_chemical_self_loops=len(autapses),
                     n_gap_junctions=n_gap, gap_self_pairs=sorted(el.pre[el.pre == el.post].tolist()),
                     gaba_neurons=[u for u, g in zip(names, gaba) if g],
                     weight_units="synapse counts x weight_per_synapse",
                     io_rule=("input_mask: Cook 2019 sensory; output_mask: Cook 2019 motor"
                              if io == "sensory_motor" else "none"))
    return Circuit(node_ids=tuple(names), post=post, pre=pre, w=w, cell_types=np.array(types, dtype=object),
                   signs=sg, gap=gap, node_attrs=attrs, input_mask=input_mask, output_mask=output_mask,
                   metadata=meta)


# ============================================================================================ mouse V1
_V1 = "mouse_v1_celltype_connectivity"
_V1_PMAX = "em_pmax_v1dd.csv"
_V1_NAMES = "cell_type_naming_scheme.csv"
_V1_POPS = "populations.csv"
_V1_LOOKUP = "psp_lookup_table.csv"
_V1_PSP = "psp_paired_recording.csv"
_V1_SIGMA = "sigma_um_ei.csv"
_CLASS_SIGN = {"Exc": 1, "ET": 1, "IT": 1, "NP": 1, "Inh": -1, "PV": -1, "SST": -1, "VIP": -1}
_PYR_CLASSES = ("l23_pyr", "l4_pyr", "l5_IT_pyr", "l5_ET_pyr", "l6_pyr", "all_pyr")
_INT_CLASSES = ("pvalb", "sst", "vip", "all_int")


@dataclass(frozen=True)
class _V1Tables:
    types: list[str]               # the 19 EM types, pmax order
    pmax: np.ndarray               # (19, 19) [pre, post]
    type_sign: np.ndarray          # (19,) +1 / -1
    type_ei: list[str]             # "e" / "i"
    proportions: np.ndarray        # (19,) cell fractions
    representative: list[str]      # model population used for the PSP lookup of each EM type
    psp_key: list[list[str]]       # [pre][post] connection key (before fallback)
    lookup_inconsistent: list[str]
    psp: pd.DataFrame              # indexed by connection
    sigma: pd.DataFrame            # e/i x e/i, µm


def _v1_tables() -> _V1Tables:
    pm = _read_matrix(_V1, _V1_PMAX)
    types = pm.index.tolist()
    if pm.shape != (19, 19) or types != pm.columns.tolist():
        raise _fail(_V1, _V1_PMAX, f"expected a 19 x 19 matrix with identical row/column labels, got {pm.shape}")
    P = pm.to_numpy(np.float64)
    if not np.isfinite(P).all() or (P < 0).any() or (P > 1).any():
        raise _fail(_V1, _V1_PMAX, "entries must be probabilities in [0, 1]")
    nm = _read_csv(_V1, _V1_NAMES, ["pop_name", "ei", "class", "cell_type"], dtype=str)
    if nm.pop_name.duplicated().any():
        raise _fail(_V1, _V1_NAMES, "duplicate pop_name")
    if set(nm.cell_type) != set(types):
        raise _fail(_V1, _V1_NAMES, f"cell_type labels {sorted(set(nm.cell_type) ^ set(types))} do not match "
                                    f"{_V1_PMAX}")
    bad = sorted(set(nm["class"]) - set(_CLASS_SIGN))
    if bad:
        raise _fail(_V1, _V1_NAMES, f"unknown class(es) {bad}")
    type_sign, type_ei = {}, {}
    for t, cl, ei in zip(nm.cell_type, nm["class"], nm.ei):
        s = _CLASS_SIGN[cl]
        if {"e": 1, "i": -1}.get(ei) != s or type_sign.get(t, s) != s:
            raise _fail(_V1, _V1_NAMES, f"type {t}: class {cl!r} and ei {ei!r} disagree on the sign")
        type_sign[t], type_ei[t] = s, ei
    pops = _read_csv(_V1, _V1_POPS, ["pop_name", "pop_combined_count"])
    if sorted(pops.pop_name.astype(str)) != sorted(nm.pop_name):
        raise _fail(_V1, _V1_POPS, f"pop_name set differs from {_V1_NAMES}")
    count = dict(zip(pops.pop_name.astype(str),
                     _as_int_counts(pops, "pop_combined_count", _V1, _V1_POPS, positive=True)))
    pop_type = dict(zip(nm.pop_name, nm.cell_type))
    members = {t: [p for p in nm.pop_name if pop_type[p] == t] for t in types}
    props = np.array([sum(count[p] for p in members[t]) for t in types], np.float64)
    # representative population: the most numerous of the type (first in file order on ties)
    rep = [max(members[t], key=lambda p: count[p]) for t in types]

    lk = _read_matrix(_V1, _V1_LOOKUP)
    if sorted(lk.index) != sorted(nm.pop_name) or sorted(lk.columns) != sorted(nm.pop_name):
        raise _fail(_V1, _V1_LOOKUP, f"row/column labels must be the 22 pop_name values of {_V1_NAMES}")
    psp = _read_csv(_V1, _V1_PSP, ["connection", "pre", "post", "syntype", "N_90th", "logn_shape_90th",
                                   "logn_scale_90th"])
    psp["connection"] = psp["connection"].astype(str)
    if psp.connection.duplicated().any():
        raise _fail(_V1, _V1_PSP, "duplicate connection key")
    psp = psp.set_index("connection")
    bad = sorted(set(psp.syntype.astype(str)) - {"ex", "in"})
    if bad:
        raise _fail(_V1, _V1_PSP, f"unknown syntype(s) {bad}")
    unknown = sorted(set(lk.to_numpy().ravel().astype(str)) - set(psp.index))
    if unknown:
        raise _fail(_V1, _V1_LOOKUP, f"connection key(s) {unknown} not in {_V1_PSP}")
    keys = [[str(lk.loc[rep[a], rep[b]]) for b in range(len(types))] for a in range(len(types))]
    inconsistent = []
    for a, ta in enumerate(types):
        for b, tb in enumerate(types):
            ks = {str(lk.loc[p, q]) for p in members[ta] for q in members[tb]}
            if len(ks) > 1:
                inconsistent.append(f"{ta}->{tb}: {sorted(ks)}")
    sigma = _read_matrix(_V1, _V1_SIGMA)
    if sorted(sigma.index) != ["e", "i"] or sorted(sigma.columns) != ["e", "i"]:
        raise _fail(_V1, _V1_SIGMA, "expected a 2 x 2 e/i matrix")
    return _V1Tables(types=types, pmax=P, type_sign=np.array([type_sign[t] for t in types], np.int8),
                     type_ei=[type_ei[t] for t in types], proportions=props / props.sum(), representative=rep,
                     psp_key=keys, lookup_inconsistent=inconsistent, psp=psp, sigma=sigma)


def _psp_usable(psp: pd.DataFrame, key: str) -> bool:
    if key not in psp.index:
        return False
    r = psp.loc[key]
    s, sc, nn = (pd.to_numeric(r[c], errors="coerce") for c in ("logn_shape_90th", "logn_scale_90th", "N_90th"))
    # pd.to_numeric is unannotated (its inferred return is a union of every path): numbers here
    return bool(np.isfinite(s) and np.isfinite(sc) and np.isfinite(nn) and nn > 0 and s > 0 and sc > 0)  # type: ignore[call-overload, operator]


def _psp_resolve(psp: pd.DataFrame, key: str) -> str:
    """The key itself if it has statistics, else the documented fallback chain (post class generalised to
    all_pyr/all_int, then pre class, then both)."""
    if _psp_usable(psp, key):
        return key
    pre, post = str(psp.loc[key, "pre"]), str(psp.loc[key, "post"])

    def general(c: str) -> str:
        return "all_pyr" if c in _PYR_CLASSES else "all_int" if c in _INT_CLASSES else c

    for cand in (f"{pre}__to__{general(post)}", f"{general(pre)}__to__{post}",
                 f"{general(pre)}__to__{general(post)}"):
        if _psp_usable(psp, cand):
            return cand
    raise _fail(_V1, _V1_PSP, f"no usable PSP statistics for {key!r} nor any fallback class")


def mouse_v1(*, n: int = 500, seed: int = 0, p_scale: float = 1.0, radius_um: float | None = None,
             weight_scale: float = 1.0, self_loops: bool = False) -> Circuit:
    """Mouse V1 cell-type block model: EM (V1DD) connection probabilities, paired-recording PSP weights.

    Cell types are the 19 EM types of ``em_pmax_v1dd.csv`` (in that order; neurons grouped by type, node ids
    ``"<type>#<k>"``). Type sizes: the 22 model populations of ``populations.csv`` are mapped to the EM types
    by ``cell_type_naming_scheme.csv`` (``cell_type`` column), their ``pop_combined_count`` summed per type,
    and ``n`` is split by largest-remainder rounding with at least one neuron per type.

    Each ordered pair (pre, post) of distinct neurons is an edge independently with probability
    ``min(1, p_scale * pmax[pre_type, post_type] * f)``. ``pmax`` is the distance-zero PEAK probability of
    ``p(d) = pmax exp(-d²/2σ²)``, so with ``radius_um=None`` (``f = 1``) and ``p_scale=1`` the density is an
    upper bound on the true average. ``radius_um=R`` uses the average over postsynaptic somata uniformly
    spread in a disc of lateral radius R around the presynaptic one:
    ``f = (2σ²/R²)(1 - exp(-R²/2σ²))`` with σ from ``sigma_um_ei.csv`` (by pre/post e/i).

    Weight magnitude of each edge: one draw from the log-normal of the PSP amplitude (mV) of the connection
    class, ``scipy.stats.lognorm(s=logn_shape_90th, scale=logn_scale_90th)`` i.e. ``scale * exp(s Z)``
    (median = scale; the tabulated means agree with ``scale exp(s²/2)`` to ~2 %), times ``weight_scale``.
    The class is ``psp_lookup_table.csv[rep(pre), rep(post)]`` where ``rep`` is the most numerous model
    population of each EM type (the lookup is identical for all populations of a type; any disagreement is
    listed in ``metadata['psp_lookup_inconsistent']``). Classes with N = 0 or no fitted log-normal fall back
    to the same pre class onto ``all_pyr``/``all_int`` (the post's syntype family), then ``all_pyr``/``all_int``
    onto the post class, then both; fallbacks used are listed in ``metadata['psp_fallbacks']``.

    Signs (Dale, by class): Exc/ET/IT/NP +1, Inh/PV/SST/VIP -1; the weight carries the presynaptic sign.

    Args:
        n: number of neurons (>= 19).
        seed: seed of the numpy Generator (edges, then magnitudes).
        p_scale: multiplies every probability (>= 0), clipped at 1.
        radius_um: optional lateral radius (µm) for distance-averaged probabilities (see above).
        weight_scale: multiplies the PSP magnitudes (mV); weights are in ``weight_scale x mV``.
        self_loops: allow autapses (the data have none; default excluded).
    """
    options = dict(n=n, seed=seed, p_scale=p_scale, radius_um=radius_um, weight_scale=weight_scale,
                   self_loops=self_loops)
    n = _int("n", n, low=1)
    if n < 19:
        raise CircuitError(f"option n={n} is too small: mouse_v1 has 19 cell types and needs at least one "
                           "neuron per type (n >= 19)")
    seed = _int("seed", seed, low=0)
    p_scale = _real("p_scale", p_scale, low=0)
    weight_scale = _real("weight_scale", weight_scale, low=0, strict=True)
    if radius_um is not None:
        radius_um = _real("radius_um", radius_um, low=0, strict=True)
    self_loops = _bool("self_loops", self_loops)

    tb = _v1_tables()
    T = len(tb.types)
    factor = np.ones((T, T))
    if radius_um is not None:
        sig = np.array([[float(tb.sigma.loc[a, b]) for b in tb.type_ei] for a in tb.type_ei])
        x = radius_um**2 / (2 * sig**2)
        factor = -np.expm1(-x) / x
    P = np.minimum(1.0, p_scale * tb.pmax * factor)          # (pre_type, post_type)

    keys = [[_psp_resolve(tb.psp, k) for k in row] for row in tb.psp_key]
    fallbacks = {f"{tb.types[a]}->{tb.types[b]}": {"lookup": tb.psp_key[a][b], "used": keys[a][b]}
                 for a in range(T) for b in range(T) if keys[a][b] != tb.psp_key[a][b]}
    for a in range(T):
        for b in range(T):
            syn = str(tb.psp.loc[keys[a][b], "syntype"])
            if (syn == "ex") != (tb.type_sign[a] > 0):
                raise _fail(_V1, _V1_LOOKUP, f"{tb.types[a]} -> {tb.types[b]} uses {keys[a][b]!r} of syntype "
                                             f"{syn!r}, contradicting the presynaptic class sign")
    shape = np.array([[float(tb.psp.loc[k, "logn_shape_90th"]) for k in row] for row in keys])
    scale = np.array([[float(tb.psp.loc[k, "logn_scale_90th"]) for k in row] for row in keys])

    counts = largest_remainder(n, tb.proportions)
    tix = np.repeat(np.arange(T), counts)                     # (N,) type of each neuron
    rng = np.random.default_rng(seed)
    posts, pres = [], []
    for lo in range(0, n, 1024):   # row blocks of post neurons (same stream as one (n, n) draw), bounded memory
        rows = np.arange(lo, min(n, lo + 1024))
        block = rng.random((rows.size, n)) < P[tix[None, :], tix[rows, None]]  # (post, pre): P[pre_t, post_t]
        if not self_loops:
            block[np.arange(rows.size), rows] = False
        r, q = np.nonzero(block)
        posts.append(rows[r])
        pres.append(q)
    post, pre = np.concatenate(posts), np.concatenate(pres)
    tpre, tpost = tix[pre], tix[post]
    mag = scale[tpre, tpost] * np.exp(shape[tpre, tpost] * rng.standard_normal(post.size))
    sign = tb.type_sign[tix]
    w = weight_scale * sign[pre] * mag

    within: dict[str, int] = {}
    ids = []
    for t in tix:
        name = tb.types[t]
        ids.append(f"{name}#{within.get(name, 0)}")
        within[name] = within.get(name, 0) + 1
    meta = _metadata("mouse_v1", options,
                     types=list(tb.types), type_counts=dict(zip(tb.types, counts.tolist())),
                     type_proportions=dict(zip(tb.types, tb.proportions.tolist())),
                     p_table_pre_post=P.tolist(),
                     probability_note=("pmax is the distance-zero peak of p(d) = pmax exp(-d^2/2 sigma^2); "
                                       "with p_scale=1 and radius_um=None the sampled density is an upper bound "
                                       "on the true average connection probability"),
                     psp_class={f"{tb.types[a]}->{tb.types[b]}": keys[a][b] for a in range(T) for b in range(T)},
                     psp_fallbacks=fallbacks, psp_lookup_inconsistent=tb.lookup_inconsistent,
                     representative_population=dict(zip(tb.types, tb.representative)),
                     weight_units="PSP amplitude in mV x weight_scale (signed by the presynaptic class)",
                     sign_rule="Dale by class: Exc/ET/IT/NP +1, Inh/PV/SST/VIP -1 (cell_type_naming_scheme.csv)",
                     seed=seed)
    return Circuit(node_ids=tuple(ids), post=post, pre=pre, w=w,
                   cell_types=np.array([tb.types[t] for t in tix], dtype=object), signs=sign, metadata=meta)


# ============================================================================================ Drosophila
_FLY = "drosophila_optic_lobe_flyvis"
_FLY_TYPES = "celltypes.csv"
_FLY_EDGES = "edges_celltype.csv"
_FLY_OFFSETS = "edges_offsets.csv"


def hex_columns(radius: int) -> np.ndarray:
    """``(3r²+3r+1, 2)`` int64 axial coordinates ``(u, v)`` with ``|u|, |v|, |u+v| <= radius``, in flyvis
    order (u ascending, then v ascending)."""
    r = _int("radius", radius, low=0)
    return np.array([(u, v) for u in range(-r, r + 1) for v in range(max(-r, -r - u), min(r, r - u) + 1)],
                    dtype=np.int64).reshape(-1, 2)


def _fly_tables() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    ct = _read_csv(_FLY, _FLY_TYPES, ["cell_type", "pattern", "stride_u", "stride_v", "is_input", "is_output"])
    ct["cell_type"] = ct["cell_type"].astype(str)
    if len(ct) != 65 or ct.cell_type.duplicated().any():
        raise _fail(_FLY, _FLY_TYPES, f"expected 65 unique cell types, got {ct.cell_type.nunique()}")
    bad = sorted(set(ct.pattern.astype(str)) - {"stride", "tile", "single"})
    if bad:
        raise _fail(_FLY, _FLY_TYPES, f"unknown pattern(s) {bad}")
    for c in ("stride_u", "stride_v"):
        ct[c] = _as_int_counts(ct, c, _FLY, _FLY_TYPES, positive=True)
    for c in ("is_input", "is_output"):
        if not set(ct[c].tolist()) <= {0, 1}:
            raise _fail(_FLY, _FLY_TYPES, f"{c} must be 0 or 1")
    ed = _read_csv(_FLY, _FLY_EDGES, ["pre_type", "post_type", "edge_type", "sign", "n_syn_total", "n_offsets"])
    types = set(ct.cell_type)
    unknown = sorted((set(ed.pre_type.astype(str)) | set(ed.post_type.astype(str))) - types)
    if unknown:
        raise _fail(_FLY, _FLY_EDGES, f"cell type(s) {unknown} not in {_FLY_TYPES}")
    if ed.duplicated(["pre_type", "post_type"]).any():
        raise _fail(_FLY, _FLY_EDGES, "duplicate (pre_type, post_type) rows")
    if not set(ed.sign.tolist()) <= {1, -1}:
        raise _fail(_FLY, _FLY_EDGES, "sign must be +1 or -1")
    if not set(ed.edge_type.astype(str)) <= {"chem"}:
        raise _fail(_FLY, _FLY_EDGES, f"unexpected edge_type(s) {sorted(set(ed.edge_type.astype(str)))}")
    off = _read_csv(_FLY, _FLY_OFFSETS, ["pre_type", "post_type", "du", "dv", "n_syn"])
    for c in ("du", "dv"):
        v = cast(pd.Series, pd.to_numeric(off[c], errors="coerce"))
        if v.isna().any() or (v != v.round()).any():
            raise _fail(_FLY, _FLY_OFFSETS, f"{c} must be integers")
        off[c] = v.astype(np.int64)
    ns = cast(pd.Series, pd.to_numeric(off.n_syn, errors="coerce")).to_numpy(np.float64)
    if not (np.isfinite(ns) & (ns > 0)).all():
        raise _fail(_FLY, _FLY_OFFSETS, "n_syn must be positive and finite")
    if off.duplicated(["pre_type", "post_type", "du", "dv"]).any():
        raise _fail(_FLY, _FLY_OFFSETS, "duplicate (pre_type, post_type, du, dv) rows")
    agg = off.groupby(["pre_type", "post_type"], sort=False).n_syn.agg(["sum", "count"])
    m = ed.set_index(["pre_type", "post_type"]).join(agg, how="outer")
    if m["sum"].isna().any() or m["n_syn_total"].isna().any():
        raise _fail(_FLY, _FLY_OFFSETS, f"(pre, post) pairs differ from {_FLY_EDGES}")
    if not np.allclose(m["sum"], m["n_syn_total"], rtol=1e-9, atol=1e-9) or (m["count"] != m["n_offsets"]).any():
        raise _fail(_FLY, _FLY_OFFSETS, f"per-pair n_syn sums / offset counts disagree with {_FLY_EDGES}")
    return ct, ed, off


def _hull_gaps(offsets: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Column offsets flyvis adds to one type pair's filter ("fill the hull"), in (du, dv) ascending order.

    The listed offsets span a convex polygon in the (du, dv) plane (exact integer hull; a segment when they
    are collinear). Every integer point of that closed polygon that is not listed is a gap — except points on
    its lowest row (dv equal to the smallest listed dv): flyvis tests membership with matplotlib's
    ray-crossing rule (``flyvis/connectome/connectome.py``, ``fill_hull``), which counts a point on a bottom
    horizontal hull edge as outside and every other boundary point of its counter-clockwise polygon as inside
    (so a horizontal segment gets no gaps, any other segment its inner lattice points). Fewer than 3 offsets
    give no gaps (flyvis's condition). On the shipped table this gives 238 gaps in 80 pairs, the same points
    as flyvis's fill; on random offset sets it agrees with scipy's hull plus matplotlib's test as flyvis calls
    them (checked while writing this, not a shipped test: neither is a reference here).
    """
    pts = sorted(set(offsets))
    if len(pts) < 3:
        return []

    def turn(o: tuple[int, int], a: tuple[int, int], b: tuple[int, int]) -> int:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    def chain(seq: list[tuple[int, int]]) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        for q in seq:
            while len(out) >= 2 and turn(out[-2], out[-1], q) <= 0:
                out.pop()
            out.append(q)
        return out[:-1]

    hull = chain(pts) + chain(pts[::-1])   # counter-clockwise corners; the two end points if collinear
    edges = list(zip(hull, hull[1:] + hull[:1]))
    known = set(pts)
    u0, u1 = min(p[0] for p in pts), max(p[0] for p in pts)
    v0, v1 = min(p[1] for p in pts), max(p[1] for p in pts)
    return [(u, v) for u in range(u0, u1 + 1) for v in range(v0 + 1, v1 + 1)
            if (u, v) not in known and all(turn(a, b, (u, v)) >= 0 for a, b in edges)]


def drosophila_optic_lobe(*, lattice_radius: int | None = None, weight_per_synapse: float = 1.0,
                          n_syn_fill: float | None = None,
                          self_loops: Literal["keep", "error"] = "keep") -> Circuit:
    """*Drosophila* optic lobe (flyvis fib25-fib19_v2.2, EM), as a cell-type graph or a column lattice.

    ``lattice_radius=None``: one node per cell type (65, ``celltypes.csv`` order, node id = type name).
    The weight of type pair (pre, post) is ``sign * weight_per_synapse * Σ_offsets n_syn`` (the sum of the
    per-offset average counts of ``edges_offsets.csv``, equal to ``edges_celltype.csv``'s ``n_syn_total``, plus
    ``n_syn_fill`` per hull gap when a fill is asked for): the synapses one postsynaptic cell receives from all
    presynaptic cells of the type. 605 edges.

    ``lattice_radius=r``: flyvis's column expansion (``ConnectomeFromAvgFilters``). Columns are the hexagonal
    lattice ``(u, v)`` with ``|u|, |v|, |u+v| <= r`` (3r²+3r+1 columns, see :func:`hex_columns`); each type has
    one cell per column where ``u % stride_u == 0 and v % stride_v == 0`` (all types stride 1 except
    Lawf1/Lawf2, stride (3, 2)). Node ids ``(type, u, v)``, grouped by type then column. For each offset row
    and each presynaptic cell at ``(u, v)`` there is an edge to the postsynaptic cell at ``(u+du, v+dv)`` of
    weight ``sign * weight_per_synapse * n_syn``. Candidate edges whose target column lies outside the lattice
    are counted in ``metadata['edges_outside_lattice']``, those whose target column has no cell of the
    postsynaptic type (stride) in ``metadata['edges_without_target_cell']``; flyvis drops both silently.

    Hull fill (``n_syn_fill``): flyvis fills the gaps of each type pair's offset set — the unlisted lattice
    offsets inside the convex hull of its listed offsets, for pairs with at least 3 offsets — with
    ``n_syn_fill`` synapses each (its default 1; see :func:`_hull_gaps` for the exact rule). ``None`` (default)
    means flyvis's 1 on the lattice and no fill on the type graph (the table's own sums); a number applies at
    both levels; 0 gives the raw table. The shipped table has 238 gaps in 80 of the 605 pairs. With the fill,
    radius 15 gives flyvis's documented 45,669 cells and 1,513,231 edges (1,357,269 from the table's offsets,
    155,962 from the fill; ``metadata['edges_from_fill']``), and 604 type pairs with at least one edge: the
    pair Lawf1→Lawf1 has the single offset (1, 0), which never lands on a Lawf1 cell (stride 3 in u), so it has
    no edge on any lattice (``metadata['type_pairs_without_edges']``). flyvis trains one gain per type pair
    present in its edge table, hence its 604 gains against the table's 605 pairs.

    Signs: per edge from the ``sign`` column (flyvis, from transmitter identity and literature: an assumption,
    not EM). A neuron's sign is its type's if all the type's outgoing edges agree, else 0 (Am, C2, C3 and R8
    have both signs; types without outgoing edges are 0 too). ``input_mask``: ``is_input`` (photoreceptors
    R1-R8); ``output_mask``: ``is_output`` (the 34 T/Tm/TmY read-out types of flyvis).
    """
    options = dict(lattice_radius=lattice_radius, weight_per_synapse=weight_per_synapse, n_syn_fill=n_syn_fill,
                   self_loops=self_loops)
    if lattice_radius is not None:
        lattice_radius = _int("lattice_radius", lattice_radius, low=0)
    wps = _real("weight_per_synapse", weight_per_synapse, low=0, strict=True)
    fill = (0.0 if lattice_radius is None else 1.0) if n_syn_fill is None else _real("n_syn_fill", n_syn_fill, low=0)
    _choice("self_loops", self_loops, ("keep", "error"))
    ct, ed, raw = _fly_tables()
    types = ct.cell_type.tolist()
    tindex = {t: k for k, t in enumerate(types)}
    T = len(types)
    esign = dict(zip(zip(ed.pre_type.astype(str), ed.post_type.astype(str)), ed.sign.astype(int)))

    # each pair's table offsets, then its hull gaps (flyvis's order), as one offset table
    parts, n_gaps = [], 0
    for key, g in raw.groupby(["pre_type", "post_type"], sort=False):
        a, b = cast(tuple[str, str], key)
        parts.append(g.assign(from_fill=False))
        gaps = _hull_gaps(list(zip(g.du.tolist(), g.dv.tolist()))) if fill > 0 else []
        if gaps:
            n_gaps += len(gaps)
            parts.append(pd.DataFrame({"pre_type": a, "post_type": b, "du": [p[0] for p in gaps],
                                       "dv": [p[1] for p in gaps], "n_syn": fill, "from_fill": True}))
    off = pd.concat(parts, ignore_index=True)

    pos = np.zeros(T, bool)
    neg = np.zeros(T, bool)
    for (a, _), s in esign.items():
        (pos if s > 0 else neg)[tindex[a]] = True
    tsign = (pos & ~neg).astype(np.int8) - (neg & ~pos).astype(np.int8)
    is_in = ct.is_input.to_numpy() == 1
    is_out = ct.is_output.to_numpy() == 1
    extra = dict(mixed_sign_types=[t for t, p, q in zip(types, pos, neg) if p and q],
                 types_without_outgoing_edges=[t for t, p, q in zip(types, pos, neg) if not (p or q)],
                 input_types=[t for t, f in zip(types, is_in) if f], output_types=[t for t, f in zip(types, is_out) if f],
                 sign_assumption="edge signs assigned by flyvis from transmitter identity and literature, not EM",
                 weight_units="signed synapse counts (per-offset averages) x weight_per_synapse",
                 n_syn_fill=fill, fill_offsets=n_gaps,
                 total_signed_synapses=float(sum(esign[(str(a), str(b))] * s for a, b, s in
                                                 zip(off.pre_type, off.post_type, off.n_syn))))

    o_pre = off.pre_type.astype(str).map(tindex).to_numpy(np.int64)
    o_post = off.post_type.astype(str).map(tindex).to_numpy(np.int64)
    o_w = np.array([esign[(str(a), str(b))] for a, b in zip(off.pre_type, off.post_type)], np.float64) \
        * off.n_syn.to_numpy(np.float64) * wps

    if lattice_radius is None:
        W = np.zeros((T, T))
        np.add.at(W, (o_post, o_pre), o_w)
        M = np.zeros((T, T), bool)
        M[o_post, o_pre] = True
        post, pre = np.nonzero(M)
        ids: tuple = tuple(types)
        cell_types = np.array(types, dtype=object)
        signs, input_mask, output_mask, attrs = tsign, is_in, is_out, ()
        w = W[post, pre]
        meta = _metadata("drosophila_optic_lobe", options, level="cell types", **extra)
    else:
        r = lattice_radius
        cols = hex_columns(r)
        su, sv = ct.stride_u.to_numpy(), ct.stride_v.to_numpy()
        pattern = ct.pattern.astype(str).tolist()
        lut = np.full((T, 2 * r + 1, 2 * r + 1), -1, np.int64)   # (type, u+r, v+r) -> neuron index
        node_t, node_u, node_v = [], [], []
        for k in range(T):
            if pattern[k] == "single":
                sel = (cols[:, 0] == 0) & (cols[:, 1] == 0)
            else:
                sel = (cols[:, 0] % su[k] == 0) & (cols[:, 1] % sv[k] == 0)
            cu, cv = cols[sel, 0], cols[sel, 1]
            lut[k, cu + r, cv + r] = len(node_t) + np.arange(cu.size)
            node_t += [k] * cu.size
            node_u += cu.tolist()
            node_v += cv.tolist()
        node_t_a, node_u_a, node_v_a = np.array(node_t), np.array(node_u), np.array(node_v)
        by_type = [np.flatnonzero(node_t_a == k) for k in range(T)]
        posts, pres, ws = [], [], []
        outside = no_target = from_fill = 0
        paired = np.zeros((T, T), bool)
        for a, b, du, dv, wv, filled in zip(o_pre, o_post, off.du.to_numpy(), off.dv.to_numpy(), o_w,
                                            off.from_fill.to_numpy()):
            src = by_type[a]
            tu, tv = node_u_a[src] + du, node_v_a[src] + dv
            inside = (np.abs(tu) <= r) & (np.abs(tv) <= r) & (np.abs(tu + tv) <= r)
            outside += int((~inside).sum())
            tgt = lut[b, tu[inside] + r, tv[inside] + r]
            ok = tgt >= 0
            kept = int(ok.sum())
            no_target += tgt.size - kept
            from_fill += kept if filled else 0
            paired[a, b] |= kept > 0
            posts.append(tgt[ok])
            pres.append(src[inside][ok])
            ws.append(np.full(kept, wv))
        post, pre, w = np.concatenate(posts), np.concatenate(pres), np.concatenate(ws)
        ids = tuple(zip((types[k] for k in node_t), node_u, node_v))
        cell_types = np.array([types[k] for k in node_t], dtype=object)
        signs, input_mask, output_mask = tsign[node_t_a], is_in[node_t_a], is_out[node_t_a]
        attrs = tuple({"u": u, "v": v} for u, v in zip(node_u, node_v))
        absent = [[a, b] for a, b in esign if not paired[tindex[a], tindex[b]]]
        meta = _metadata("drosophila_optic_lobe", options, level="column lattice", **extra, n_columns=len(cols),
                         lattice_convention="axial (u, v), |u|,|v|,|u+v| <= r; offsets (du, dv) = post - pre column",
                         edges_outside_lattice=outside, edges_without_target_cell=no_target,
                         edges_from_fill=from_fill, type_pairs_with_edges=len(esign) - len(absent),
                         type_pairs_without_edges=absent)
    loops = int((pre == post).sum())
    if loops and self_loops == "error":
        raise CircuitError(f"{_FLY}/{_FLY_OFFSETS}: {loops} self-loop(s) (e.g. "
                           f"{ids[int(pre[pre == post][0])]!r}) rejected (self_loops='error')")
    meta["n_self_loops"] = loops
    return Circuit(node_ids=ids, post=post, pre=pre, w=w, cell_types=cell_types, signs=signs, node_attrs=attrs,
                   input_mask=input_mask, output_mask=output_mask, metadata=meta)


# ============================================================================================ registry
@dataclass(frozen=True)
class _Entry:
    name: str
    folder: str
    files: tuple[str, ...]
    organism: str
    em_derived: bool | str
    licence: str
    citation: str
    loader: Callable[..., Circuit]


_REGISTRY: dict[str, _Entry] = {e.name: e for e in (
    _Entry(_CE, _CE, (_CE_EDGES, _CE_NEURONS, _CE_NMJ),
           "Caenorhabditis elegans (hermaphrodite)", True,
           "MIT (openworm/c302, openworm/ConnectomeToolbox); article CC BY",
           "Varshney LR et al. (2011) PLoS Comput Biol 7:e1001066, doi:10.1371/journal.pcbi.1001066; "
           "White JG et al. (1986) Phil Trans R Soc B 314:1-340, doi:10.1098/rstb.1986.0056",
           celegans_varshney2011),
    _Entry("mouse_v1", _V1, (_V1_PMAX, _V1_NAMES, _V1_POPS, _V1_LOOKUP, _V1_PSP, _V1_SIGMA),
           "Mus musculus (primary visual cortex)", "mixed",
           "BSD-3-Clause (AllenInstitute/biorealistic-v1-model)",
           "Allen Institute biorealistic-v1-model (V1DD EM pmax); Campagnola L, Seeman SC et al. (2022) "
           "Science 375:eabj5861, doi:10.1126/science.abj5861; Billeh YN et al. (2020) Neuron 106:388-403, "
           "doi:10.1016/j.neuron.2020.01.040",
           mouse_v1),
    _Entry("drosophila_optic_lobe", _FLY, (_FLY_TYPES, _FLY_EDGES, _FLY_OFFSETS),
           "Drosophila melanogaster (optic lobe)", True,
           "MIT (TuragaLab/flyvis)",
           "Lappalainen JK et al. (2024) Nature 634:1132-1140, doi:10.1038/s41586-024-07939-3",
           drosophila_optic_lobe),
)}


def _unknown_name(name: Any) -> CircuitError:
    return CircuitError(f"unknown connectome {name!r}; available: {', '.join(_REGISTRY)}")


def names() -> tuple[str, ...]:
    """Names of the shipped connectomes (the ``name`` argument of :func:`load`)."""
    return tuple(_REGISTRY)


def loader(name: str) -> Any:
    """The loader function behind ``load(name, ...)`` (its signature lists the options)."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise _unknown_name(name)
    return _REGISTRY[name].loader


def load(name: str, **options: Any) -> Circuit:
    """Load a shipped connectome as a :class:`Circuit`.

    Args:
        name: one of ``available()['name']``: ``"celegans_varshney2011"``, ``"mouse_v1"``,
            ``"drosophila_optic_lobe"``.
        options: keyword options of the loader of the same name (:func:`celegans_varshney2011`,
            :func:`mouse_v1`, :func:`drosophila_optic_lobe`); an unknown option raises :class:`CircuitError`.

    Returns:
        The circuit; ``metadata['options']`` holds every option (defaults included) and ``metadata`` the
        folder, files, citation and licence.
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        raise _unknown_name(name)
    loader = _REGISTRY[name].loader
    valid = list(inspect.signature(loader).parameters)
    bad = [k for k in options if k not in valid]
    if bad:
        raise CircuitError(f"unknown option(s) {bad} for connectome {name!r}; valid options: {valid}")
    return loader(**options)


@functools.lru_cache(maxsize=None)
def _default_counts(name: str) -> tuple[int, int, int]:
    c = _REGISTRY[name].loader()
    return c.n, c.n_edges, len(c.type_names())


def available() -> pd.DataFrame:
    """One row per shipped connectome.

    Columns: ``name`` (for :func:`load`), ``organism``, ``em_derived`` (True or ``"mixed"``), ``neurons``,
    ``edges`` (chemical), ``types`` — as the default ``load(name)`` gives them (``mouse_v1``: n=500, seed 0) —
    ``licence``, ``citation`` and ``folder`` (under the top-level ``connectomes/``).
    """
    rows = []
    for e in _REGISTRY.values():
        n, m, t = _default_counts(e.name)
        rows.append(dict(name=e.name, organism=e.organism, em_derived=e.em_derived, neurons=n, edges=m, types=t,
                         licence=e.licence, citation=e.citation, folder=e.folder))
    return pd.DataFrame(rows, columns=["name", "organism", "em_derived", "neurons", "edges", "types", "licence",
                                       "citation", "folder"])
