"""The optic-lobe lattice against the counts flyvis documents (TuragaLab/flyvis @ b0b3365), and its hull fill."""

from importlib.resources import files
from typing import cast

import numpy as np
import pandas as pd
import pytest

import spikelearn.connectomes as sc
from spikelearn.circuit import CircuitError
from spikelearn.circuit.connectomes import _hull_gaps

DATA = files("spikelearn._connectome_data")


def _gaps_by_pair(off):
    """{(pre, post): hull gaps} for every type pair of the offsets table."""
    return {(str(a), str(b)): _hull_gaps(list(zip(g.du, g.dv)))
            for (a, b), g in ((cast(tuple, k), g) for k, g in off.groupby(["pre_type", "post_type"]))}


def _csv(name):
    with (DATA / "drosophila_optic_lobe_flyvis" / name).open("rb") as fh:
        return pd.read_csv(fh)


@pytest.fixture(scope="module")
def r15():
    return sc.load("drosophila_optic_lobe", lattice_radius=15)


def test_radius_15_matches_flyvis(r15):
    c, m = r15, r15.metadata
    # flyvis docs/docs/examples/01_flyvision_connectome.md:25 "our network models 45,669 cells" and :55
    # "our network models 1,513,231 synapses" (ConnectomeFromAvgFilters, extent=15, n_syn_fill=1, line 19)
    assert c.n == 45_669 and c.n_edges == 1_513_231
    # flyvis docs/docs/examples/02_flyvision_optic_flow_task.md:674 "NumberOfParams(free=734, fixed=2959)";
    # flyvis/config/network: free = bias and time_const per type (65 + 65) + syn_strength per (source, target)
    # type pair present in the edge table; fixed = sign per type pair + syn_count per (pair, du, dv).
    pairs = {(str(a), str(b)) for a, b in zip(c.cell_types[c.pre], c.cell_types[c.post])}
    assert len(pairs) == m["type_pairs_with_edges"] == 734 - 2 * 65 == 604
    u = np.array([a[1] for a in c.node_ids])
    v = np.array([a[2] for a in c.node_ids])
    keys = pd.DataFrame({"s": c.cell_types[c.pre], "t": c.cell_types[c.post],
                         "du": u[c.post] - u[c.pre], "dv": v[c.post] - v[c.pre]})
    assert len(keys.drop_duplicates()) == 2959 - 604
    # the table's 605th pair: Lawf1 -> Lawf1 at the one offset (1, 0) never meets a Lawf1 cell (stride 3 in u)
    assert m["type_pairs_without_edges"] == [["Lawf1", "Lawf1"]]
    # accounting: the table's offsets give 1,357,269 edges, the hull fill the rest
    assert m["edges_from_fill"] == 1_513_231 - 1_357_269 and m["fill_offsets"] == 238
    raw = sc.load("drosophila_optic_lobe", lattice_radius=15, n_syn_fill=0)
    assert raw.n == c.n and raw.n_edges == 1_357_269 and raw.metadata["edges_from_fill"] == 0


def test_fill_edges_and_weights(r15):
    c = r15
    ed = _csv("edges_celltype.csv")
    off = _csv("edges_offsets.csv").merge(ed[["pre_type", "post_type", "sign"]])
    table = {(a, b, du, dv): s * n for a, b, du, dv, s, n in
             zip(off.pre_type, off.post_type, off.du, off.dv, off.sign, off.n_syn)}
    sign = dict(zip(zip(ed.pre_type, ed.post_type), ed.sign))
    gaps = {(a, b, du, dv) for (a, b), gs in _gaps_by_pair(off).items() for du, dv in gs}
    assert len(gaps) == 238 and not gaps & table.keys()
    ids = c.node_ids
    for k in np.random.default_rng(1).choice(c.n_edges, size=3000, replace=False):
        (a, ua, va), (b, ub, vb) = ids[c.pre[k]], ids[c.post[k]]
        key = (a, b, ub - ua, vb - va)
        assert c.w[k] == (table[key] if key in table else sign[(a, b)] * 1.0), key
        assert (key in table) != (key in gaps)
    # per-source accounting still closes with the filled offsets
    n_cells = {str(t): int(n) for t, n in zip(*np.unique(c.cell_types.astype(str), return_counts=True))}
    gap_src = sum(n_cells[a] for a, _, _, _ in gaps)
    m = c.metadata
    assert c.n_edges + m["edges_outside_lattice"] + m["edges_without_target_cell"] == \
        sum(n_cells[a] for a in off.pre_type) + gap_src
    # n_syn_fill sets the filled edges' synapse count; weight_per_synapse scales every edge
    base = sc.load("drosophila_optic_lobe", lattice_radius=2)
    scaled = sc.load("drosophila_optic_lobe", lattice_radius=2, n_syn_fill=2.5, weight_per_synapse=0.1)
    assert np.array_equal(scaled.pre, base.pre) and np.array_equal(scaled.post, base.post)
    bid = base.node_ids
    filled = np.array([(bid[i][0], bid[j][0], bid[j][1] - bid[i][1], bid[j][2] - bid[i][2]) in gaps
                       for i, j in zip(base.pre.tolist(), base.post.tolist())])
    assert filled.sum() == base.metadata["edges_from_fill"] > 0
    assert np.allclose(scaled.w, 0.1 * np.where(filled, 2.5 * base.w, base.w), rtol=1e-12)


def test_hull_gaps_rule():
    # square with a hole in the middle and holes on every side: bottom side excluded (flyvis's point test)
    sq = [(0, 0), (2, 0), (2, 2), (0, 2)]
    assert _hull_gaps(sq) == [(0, 1), (1, 1), (1, 2), (2, 1)]
    assert _hull_gaps([(0, 0), (1, 0), (0, 1)]) == []          # a filled triangle has no gaps
    assert _hull_gaps([(0, 0), (4, 0)]) == []                  # fewer than 3 offsets: no fill
    # collinear: a segment; a horizontal one is all lowest row, any other keeps its inner lattice points
    assert _hull_gaps([(0, 0), (2, 0), (4, 0)]) == []
    assert _hull_gaps([(0, 0), (0, 2), (0, 4)]) == [(0, 1), (0, 3)]
    assert _hull_gaps([(-4, -4), (-1, -1), (0, 0)]) == [(-3, -3), (-2, -2)]
    # a sloped bottom edge keeps its inner points, a horizontal top edge too
    assert _hull_gaps([(0, 0), (2, 2), (0, 2)]) == [(0, 1), (1, 1), (1, 2)]


def test_type_graph_fill_option():
    base = sc.load("drosophila_optic_lobe")
    assert base.metadata["n_syn_fill"] == 0.0 and base.metadata["fill_offsets"] == 0
    filled = sc.load("drosophila_optic_lobe", n_syn_fill=1)
    assert filled.n_edges == base.n_edges == 605 and filled.metadata["fill_offsets"] == 238
    ed = _csv("edges_celltype.csv")
    gaps = {k: len(gs) for k, gs in _gaps_by_pair(_csv("edges_offsets.csv")).items()}
    idx = {t: k for k, t in enumerate(base.node_ids)}
    W = filled.weights(dense=True)
    got = W[ed.post_type.map(idx), ed.pre_type.map(idx)]
    want = ed.sign * (ed.n_syn_total + [gaps[(a, b)] for a, b in zip(ed.pre_type, ed.post_type)])
    assert np.allclose(got, want, rtol=1e-12)
    with pytest.raises(CircuitError, match="n_syn_fill"):
        sc.load("drosophila_optic_lobe", lattice_radius=1, n_syn_fill=-1)
