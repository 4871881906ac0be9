"""Connectome loaders: counts against the shipped files and the READMEs, signs, masks, sampling statistics."""

from importlib.resources import files

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy import stats

import spikelearn.connectomes as sc
from spikelearn.circuit import CircuitError
from spikelearn.circuit.connectomes import hex_columns

DATA = files("spikelearn._connectome_data")


def _csv(folder, name, **kw):
    with (DATA / folder / name).open("rb") as fh:
        return pd.read_csv(fh, **kw)


# ---------------------------------------------------------------------------------------------- available / load
def test_available_lists_the_three():
    av = sc.available().set_index("name")
    assert list(av.index) == ["celegans_varshney2011", "mouse_v1", "drosophila_optic_lobe"]
    assert {"organism", "em_derived", "neurons", "edges", "types", "licence", "citation"} <= set(av.columns)
    assert "elegans" in av.loc["celegans_varshney2011", "organism"]
    assert "Mus musculus" in av.loc["mouse_v1", "organism"]
    assert "Drosophila" in av.loc["drosophila_optic_lobe", "organism"]
    assert av.loc["celegans_varshney2011", "licence"].startswith("MIT")
    assert av.loc["mouse_v1", "licence"].startswith("BSD-3-Clause")
    assert av.loc["drosophila_optic_lobe", "licence"].startswith("MIT")
    assert av.loc["celegans_varshney2011", "em_derived"] is True
    assert av.loc["mouse_v1", "em_derived"] == "mixed"
    assert "10.1371/journal.pcbi.1001066" in av.loc["celegans_varshney2011", "citation"]
    assert "10.1038/s41586-024-07939-3" in av.loc["drosophila_optic_lobe", "citation"]
    assert tuple(av.loc["celegans_varshney2011", ["neurons", "edges", "types"]]) == (279, 2194, 103)
    assert tuple(av.loc["drosophila_optic_lobe", ["neurons", "edges", "types"]]) == (65, 605, 65)
    assert tuple(av.loc["mouse_v1", ["neurons", "types"]]) == (500, 19)


def test_bad_input():
    with pytest.raises(ValueError, match="celegans_varshney2011.*mouse_v1.*drosophila_optic_lobe"):
        sc.load("zebrafish")
    with pytest.raises(CircuitError, match="wieght_per_synapse"):
        sc.load("celegans_varshney2011", wieght_per_synapse=2.0)
    with pytest.raises(CircuitError, match="lattice"):
        sc.load("mouse_v1", lattice_radius=2)
    for bad_n in (0, -5, 10, 2.5, True):
        with pytest.raises(CircuitError, match="n="):
            sc.load("mouse_v1", n=bad_n)
    with pytest.raises(CircuitError, match="cell_type"):
        sc.load("celegans_varshney2011", cell_type="family")
    with pytest.raises(CircuitError, match="signs"):
        sc.load("celegans_varshney2011", signs="ach_excitatory")
    with pytest.raises(CircuitError, match="lattice_radius"):
        sc.load("drosophila_optic_lobe", lattice_radius=-1)
    with pytest.raises(CircuitError, match="p_scale"):
        sc.load("mouse_v1", p_scale=-0.5)


# ---------------------------------------------------------------------------------------------- C. elegans
@pytest.fixture(scope="module")
def worm():
    # built once, read-only (Circuit is frozen)
    return sc.load("celegans_varshney2011")


def test_celegans_counts(worm):
    assert worm.n == 279 and "VC6" not in worm.node_ids
    assert list(worm.node_ids) == sorted(worm.node_ids)
    assert worm.n_edges == 2194
    assert worm.w.sum() == 6394 and (worm.w > 0).all() and (worm.signs == 0).all()
    assert not (worm.pre == worm.post).any()                      # no chemical autapses in the file
    assert worm.metadata["options"]["weight_per_synapse"] == 1.0
    assert worm.metadata["licence"].startswith("MIT") and "Varshney" in worm.metadata["citation"]
    c2 = sc.load("celegans_varshney2011", weight_per_synapse=0.5, include_isolated=True)
    assert c2.n == 280 and "VC6" in c2.node_ids and np.isclose(c2.w.sum(), 3197)
    assert c2.metadata["options"]["include_isolated"] is True


def test_celegans_gap_junctions(worm):
    G = worm.gap_junctions()
    assert abs(G - G.T).max() == 0
    # README: each pair listed in both directions (÷2), the 3 self-pairs once -> 890 junctions
    n_junctions = sp.triu(G, k=1).sum() + G.diagonal().sum()
    assert n_junctions == 890 == worm.metadata["n_gap_junctions"]
    assert sp.triu(G, k=1).nnz == 514 and np.count_nonzero(G.diagonal()) == 3
    # gap junctions never leak into the chemical weights
    e = _csv("celegans_varshney2011", "varshney2011_edges.csv")
    ch = e[e.type == "chemical"]
    W = worm.weights(dense=True)
    idx = {u: k for k, u in enumerate(worm.node_ids)}
    assert np.array_equal(W[ch.post.map(idx), ch.pre.map(idx)], ch.synapses.to_numpy(float))
    assert W.sum() == ch.synapses.sum()
    assert sc.load("celegans_varshney2011", gap_junctions=False).gap is None
    g2 = sc.load("celegans_varshney2011", gap_weight_per_junction=0.25).gap_junctions()
    assert np.isclose(g2.sum(), 0.25 * G.sum())


def test_celegans_gaba_signs():
    c = sc.load("celegans_varshney2011", signs="gaba_inhibitory")
    nrn = _csv("celegans_varshney2011", "celegans_neurons.csv", keep_default_na=False)
    gaba = set(nrn.neuron[nrn.owmeta_neurotransmitters.str.split(";").apply(lambda t: "GABA" in t)])
    assert len(gaba) == 26
    inhib = {c.node_ids[k] for k in np.flatnonzero(c.signs == -1)}
    assert inhib == gaba and (c.signs[c.signs != -1] == 0).all()
    is_gaba = np.array([u in gaba for u in c.node_ids])
    assert (c.w[is_gaba[c.pre]] < 0).all() and (c.w[~is_gaba[c.pre]] > 0).all()
    assert np.abs(c.w).sum() == 6394
    assert "assumption" in c.metadata["sign_assumption"].lower()
    with pytest.raises(CircuitError, match="without a known sign"):
        c.dale_signs()


def test_celegans_types_attrs_and_io(worm):
    assert worm.cell_types[worm.index_of("AVAL")] == "AVA"
    assert worm.cell_types[worm.index_of("VA8")] == "VA"
    assert worm.cell_types[worm.index_of("DD1")] == "DD"
    assert worm.cell_types[worm.index_of("IL1DL")] == "IL1"
    assert worm.cell_types[worm.index_of("AVL")] == "AVL"
    assert len(set(sc.celegans_neuron_class(_csv("celegans_varshney2011", "celegans_neurons.csv")
                                            .neuron.tolist()).values())) == 118
    ck = sc.load("celegans_varshney2011", cell_type="cook2019_class")
    counts = pd.Series(ck.cell_types).value_counts().to_dict()
    assert counts == {"motor": 115, "sensory": 83, "interneuron": 81}
    assert (ck.input_mask == (ck.cell_types == "sensory")).all()
    assert (ck.output_mask == (ck.cell_types == "motor")).all()
    assert sc.load("celegans_varshney2011", io=None).input_mask is None
    no_io = sc.load("celegans_varshney2011", io="none", signs="none")  # the spellings a TOML file can use
    assert no_io.input_mask is None and no_io.output_mask is None and not np.asarray(no_io.signs).any()
    sub = sc.load("celegans_varshney2011", cell_type="cook2019_subcategory")
    assert sub.cell_types[sub.index_of("AVAL")] == ck.node_attrs[ck.index_of("AVAL")]["cook2019_subcategory"]
    a = worm.node_attrs[worm.index_of("DD1")]
    assert a["neurotransmitters"] == "GABA" and a["cook2019_class"] == "motor" and a["nmj_count"] > 0
    nmj = _csv("celegans_varshney2011", "varshney2011_nmj.csv")
    assert sum(x["nmj_count"] for x in worm.node_attrs) == nmj.nmj_count.sum() - int(
        nmj.nmj_count[nmj.neuron == "VC6"].sum())
    assert sc.load("celegans_varshney2011", self_loops="error").n_edges == 2194


# ---------------------------------------------------------------------------------------------- mouse V1
def _v1_quota(n):
    d = "mouse_v1_celltype_connectivity"
    names = _csv(d, "cell_type_naming_scheme.csv")
    pops = _csv(d, "populations.csv").merge(names[["pop_name", "cell_type"]], on="pop_name")
    per_type = pops.groupby("cell_type").pop_combined_count.sum()
    types = _csv(d, "em_pmax_v1dd.csv", index_col=0).index
    return per_type.reindex(types) / per_type.sum() * n


@pytest.mark.parametrize("n", [500, 2000])
def test_mouse_v1_sizes_types_signs(n):
    c = sc.load("mouse_v1", n=n, seed=1)
    assert c.n == n and len(c.type_names()) == 19
    counts = pd.Series(c.cell_types).value_counts()
    quota = _v1_quota(n)
    assert (counts.reindex(quota.index) >= 1).all()
    assert (np.abs(counts.reindex(quota.index) - quota) < 1).all()
    exc = {"L2/3_Exc", "L4_Exc", "L5_ET", "L5_IT", "L5_NP", "L6_Exc"}
    expected = np.array([1 if t in exc else -1 for t in c.cell_types])
    assert np.array_equal(c.signs, expected)
    assert np.array_equal(c.dale_signs(), expected)
    assert (c.w[c.signs[c.pre] == 1] > 0).all() and (c.w[c.signs[c.pre] == -1] < 0).all()
    assert not (c.pre == c.post).any()
    assert c.metadata["options"] == dict(n=n, seed=1, p_scale=1.0, radius_um=None, weight_scale=1.0,
                                         self_loops=False)


def test_mouse_v1_connection_probabilities():
    n = 2000
    c = sc.load("mouse_v1", n=n, seed=0)
    pmax = _csv("mouse_v1_celltype_connectivity", "em_pmax_v1dd.csv", index_col=0)
    types = list(pmax.index)
    t = np.array([types.index(x) for x in c.cell_types])
    size = np.bincount(t, minlength=19)
    edges = np.zeros((19, 19))
    np.add.at(edges, (t[c.pre], t[c.post]), 1)                   # [pre_type, post_type]
    trials = np.outer(size, size) - np.diag(size)                 # no autapses
    p = pmax.to_numpy()
    expected = trials * p
    enough = (expected >= 5) & (trials - expected >= 5)
    assert enough.sum() > 200
    z = (edges - expected)[enough] / np.sqrt((trials * p * (1 - p))[enough])
    assert np.abs(z).max() < 4.5                                  # ~300 pairs: Bonferroni-safe bound
    chi2 = (z**2).sum()
    assert stats.chi2.sf(chi2, df=z.size) > 1e-3
    # scaled probabilities, clipped at 1
    c2 = sc.load("mouse_v1", n=300, seed=0, p_scale=1e5)  # min pmax 2.4e-5 -> all 1
    assert c2.n_edges == 300 * 299


def test_mouse_v1_weights_and_seed():
    c = sc.load("mouse_v1", n=600, seed=3)
    assert c.metadata["psp_fallbacks"] == {} and c.metadata["psp_lookup_inconsistent"] == []
    psp = _csv("mouse_v1_celltype_connectivity", "psp_paired_recording.csv", index_col=0)
    key = c.metadata["psp_class"]["L2/3_Exc->L2/3_Exc"]
    assert key == "l23_pyr__to__l23_pyr"
    sel = (c.cell_types[c.pre] == "L2/3_Exc") & (c.cell_types[c.post] == "L2/3_Exc")
    logw = np.log(c.w[sel])
    assert sel.sum() > 1000
    assert abs(np.median(c.w[sel]) / psp.loc[key, "logn_scale_90th"] - 1) < 0.1
    assert abs(logw.std() / psp.loc[key, "logn_shape_90th"] - 1) < 0.1
    same = sc.load("mouse_v1", n=600, seed=3)
    assert np.array_equal(same.post, c.post) and np.array_equal(same.w, c.w)
    other = sc.load("mouse_v1", n=600, seed=4)
    assert other.n_edges != c.n_edges or not np.array_equal(other.post, c.post)
    scaled = sc.load("mouse_v1", n=600, seed=3, weight_scale=2.0)
    assert np.allclose(scaled.w, 2 * c.w)
    near = sc.load("mouse_v1", n=600, seed=3, radius_um=200.0)
    assert near.n_edges < c.n_edges


# ---------------------------------------------------------------------------------------------- Drosophila
def test_optic_lobe_type_graph():
    c = sc.load("drosophila_optic_lobe")
    ed = _csv("drosophila_optic_lobe_flyvis", "edges_celltype.csv")
    ct = _csv("drosophila_optic_lobe_flyvis", "celltypes.csv")
    off = _csv("drosophila_optic_lobe_flyvis", "edges_offsets.csv")
    assert c.n == 65 and list(c.node_ids) == ct.cell_type.tolist() and c.n_edges == 605
    idx = {u: k for k, u in enumerate(c.node_ids)}
    W = c.weights(dense=True)
    got = W[ed.post_type.map(idx), ed.pre_type.map(idx)]
    assert np.array_equal(np.sign(got), ed.sign.to_numpy())
    assert np.allclose(got, ed.sign * ed.n_syn_total, rtol=1e-12)
    signed = (off.merge(ed[["pre_type", "post_type", "sign"]]).eval("sign * n_syn")).sum()
    assert np.isclose(c.w.sum(), signed, rtol=1e-12) and np.isclose(c.w.sum(), (ed.sign * ed.n_syn_total).sum())
    # neuron sign = type's sign when all outgoing edges agree, else 0
    for t, g in ed.groupby("pre_type"):
        s = set(g.sign)
        assert c.signs[idx[t]] == (s.pop() if len(s) == 1 else 0)
    assert set(c.metadata["mixed_sign_types"]) == {"Am", "C2", "C3", "R8"}
    assert [c.node_ids[k] for k in np.flatnonzero(c.input_mask)] == [f"R{i}" for i in range(1, 9)]
    outs = {c.node_ids[k] for k in np.flatnonzero(c.output_mask)}
    assert len(outs) == 34 and {"T4a", "T5d", "Tm1", "TmY18"} <= outs and "Mi1" not in outs


@pytest.mark.parametrize("r", [0, 1, 3, 7])
def test_optic_lobe_lattice(r):
    # n_syn_fill=0: the table's own offsets only (flyvis's hull fill is tested in test_flyvis_counts.py)
    c = sc.load("drosophila_optic_lobe", lattice_radius=r, n_syn_fill=0)
    ct = _csv("drosophila_optic_lobe_flyvis", "celltypes.csv")
    ed = _csv("drosophila_optic_lobe_flyvis", "edges_celltype.csv")
    off = _csv("drosophila_optic_lobe_flyvis", "edges_offsets.csv").merge(ed[["pre_type", "post_type", "sign"]])
    n_col = 3 * r * r + 3 * r + 1
    assert c.metadata["n_columns"] == n_col == len(hex_columns(r))
    per_type = pd.Series([u[0] for u in c.node_ids]).value_counts()
    cols = hex_columns(r)
    for t, su, sv in zip(ct.cell_type, ct.stride_u, ct.stride_v):
        assert per_type[t] == ((cols[:, 0] % su == 0) & (cols[:, 1] % sv == 0)).sum()
    assert per_type["R1"] == n_col
    # every (source cell, offset) is an edge, or counted as leaving the lattice / missing a strided target
    sources = off.pre_type.map(per_type).sum()
    assert c.n_edges + c.metadata["edges_outside_lattice"] + c.metadata["edges_without_target_cell"] == sources
    if r == 0:
        assert c.n == 65
    # each edge's weight and offset match an offsets row
    ids = c.node_ids
    table = {(a, b, du, dv): s * n for a, b, du, dv, s, n in
             zip(off.pre_type, off.post_type, off.du, off.dv, off.sign, off.n_syn)}
    for k in np.random.default_rng(0).choice(c.n_edges, size=min(500, c.n_edges), replace=False):
        (a, ua, va), (b, ub, vb) = ids[c.pre[k]], ids[c.post[k]]
        assert c.w[k] == table[(a, b, ub - ua, vb - va)]
    if r == 7:
        # all offsets satisfy |du|,|dv|,|du+dv| <= 7: the central cells reproduce the offset table exactly
        centre = {k for k, (t, u, v) in enumerate(ids) if u == 0 and v == 0}
        out = [(ids[i][0], ids[j][0], ids[j][1], ids[j][2], w)
               for i, j, w in zip(c.pre.tolist(), c.post.tolist(), c.w.tolist()) if i in centre]
        strided = set(ct.cell_type[(ct.stride_u > 1) | (ct.stride_v > 1)])
        want = {key: val for key, val in table.items()
                if key[1] not in strided or (key[2] % 3 == 0 and key[3] % 2 == 0)}
        assert len(out) == len(want) and all(want[o[:4]] == o[4] for o in out)
        assert (c.input_mask == np.isin(c.cell_types, [f"R{i}" for i in range(1, 9)])).all()
        assert c.output_mask.sum() == 34 * n_col
