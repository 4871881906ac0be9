"""Circuit: graph round trip, signs and Dale's law, gap junctions, summary, bad input."""

import dataclasses

import networkx as nx
import numpy as np
import pandas as pd
import pytest

from spikelearn import Circuit, CircuitError
from spikelearn.circuit import effective_rank


def _graph():
    G = nx.DiGraph()
    G.add_node("e1", cell_type="E", sign=1, tau_mem_ms=20.0, label="first", input=True)
    G.add_node("e2", cell_type="E", sign=1, tau_mem_ms=25.0, label="second", output=True)
    G.add_node("i1", cell_type="I", sign=-1, tau_mem_ms=10.0, label="third", output=True, output_sign=1)
    G.add_node("m", cell_type="X", sign=0, tau_mem_ms=15.0, label="mixed")
    G.add_edge("e1", "e2", weight=0.5)
    G.add_edge("e1", "i1", weight=1.5)
    G.add_edge("i1", "e1", weight=-2.0)
    G.add_edge("m", "e1", weight=0.3)
    G.add_edge("m", "i1", weight=-0.7)  # m has outgoing edges of both signs
    G.add_edge("e2", "e1", weight=0.0)  # an edge of weight 0 is still an edge
    G.add_edge("e2", "m", gap_weight=0.25)
    G.add_edge("m", "e2", gap_weight=0.25)
    G.add_edge("i1", "i1", weight=-0.1)  # autapse
    return G


def test_round_trip_exact():
    G = _graph()
    c = Circuit.from_graph(G)
    assert c.node_ids == ("e1", "e2", "i1", "m")
    H = c.to_graph()
    assert list(H.nodes) == list(G.nodes)
    for u in G.nodes:
        assert H.nodes[u] == G.nodes[u]
    assert set(H.edges) == set(G.edges)
    for u, v, d in G.edges(data=True):
        assert H.edges[u, v] == d
    c2 = Circuit.from_graph(H)
    np.testing.assert_array_equal(c2.weights(dense=True), c.weights(dense=True))
    np.testing.assert_array_equal(c2.gap_junctions(dense=True), c.gap_junctions(dense=True))


def test_orientation_post_pre_and_mask():
    c = Circuit.from_graph(_graph())
    W = c.weights(dense=True)
    e1, e2, i1, m = (c.index_of(k) for k in ("e1", "e2", "i1", "m"))
    assert W[e2, e1] == 0.5 and W[i1, e1] == 1.5 and W[e1, i1] == -2.0
    M = c.mask()
    assert M[e1, e2] and W[e1, e2] == 0.0  # zero-weight edge kept in the mask
    assert M.sum() == 7 == c.n_edges
    assert M[i1, i1]  # autapse kept with self_loops="keep"
    sp = c.weights()
    assert sp.nnz == 7  # explicit zero kept in the sparse view


def test_gap_junctions_separate_and_symmetric():
    c = Circuit.from_graph(_graph())
    G = c.gap_junctions(dense=True)
    np.testing.assert_array_equal(G, G.T)
    e2, m = c.index_of("e2"), c.index_of("m")
    assert G[e2, m] == 0.25 and G.sum() == 0.5
    assert c.weights(dense=True)[e2, m] == 0 and not c.mask()[e2, m]  # never summed into chemical weights


def test_gap_junction_one_direction_symmetrised_and_conflict_rejected():
    G = nx.DiGraph()
    G.add_edge("a", "b", gap_weight=2.0)
    c = Circuit.from_graph(G)
    np.testing.assert_array_equal(c.gap_junctions(dense=True), [[0, 2.0], [2.0, 0]])
    G.add_edge("b", "a", gap_weight=3.0)
    with pytest.raises(CircuitError, match="'a' <-> 'b'|'b' <-> 'a'"):
        Circuit.from_graph(G)


def test_multidigraph_sums_parallel_edges():
    G = nx.MultiDiGraph()
    G.add_edge(0, 1, weight=1.0)
    G.add_edge(0, 1, weight=2.5)
    G.add_edge(1, 0, weight=-1.0)
    G.add_edge(0, 1, gap_weight=0.5)
    c = Circuit.from_graph(G)
    W = c.weights(dense=True)
    assert W[1, 0] == 3.5 and W[0, 1] == -1.0
    assert c.gap_junctions(dense=True)[0, 1] == 0.5


def test_signs_mixed_neurons_keep_edge_signs_and_dale_refused():
    c = Circuit.from_graph(_graph())
    assert c.signs.tolist() == [1, 1, -1, 0]
    assert c.mixed_sign_neurons() == ["m"]
    assert c.edge_sign_per_neuron()[c.index_of("m")] == 0
    W = c.weights(dense=True)
    assert W[c.index_of("e1"), c.index_of("m")] > 0 and W[c.index_of("i1"), c.index_of("m")] < 0
    with pytest.raises(CircuitError, match="'m'"):
        c.dale_signs()
    with pytest.raises(CircuitError, match="'m'"):
        Circuit.from_graph(_graph(), dale=True)


def test_dale_violation_names_neuron():
    G = nx.DiGraph()
    G.add_node("a", sign=1)
    G.add_node("b", sign=-1)
    G.add_edge("a", "b", weight=-1.0)  # excitatory neuron with a negative outgoing weight
    G.add_edge("b", "a", weight=-1.0)
    with pytest.raises(CircuitError, match="contradict.*'a'"):
        Circuit.from_graph(G, dale=True)
    G.edges["a", "b"]["weight"] = 1.0
    assert Circuit.from_graph(G, dale=True).dale_signs().tolist() == [1, -1]


def test_node_params_and_io_masks():
    c = Circuit.from_graph(_graph())
    np.testing.assert_array_equal(c.neuron_params["tau_mem_ms"], [20.0, 25.0, 10.0, 15.0])
    assert "label" not in c.neuron_params  # non-numeric attributes are kept only as node attributes
    assert c.node_attrs[0]["label"] == "first"
    assert c.input_mask.tolist() == [True, False, False, False]
    assert c.output_mask.tolist() == [False, True, True, False]
    assert c.output_sign.tolist() == [0, 0, 1, 0]
    assert c.input_sign is None


def test_node_order_option():
    c = Circuit.from_graph(_graph(), node_order=["m", "i1", "e2", "e1"])
    ref = Circuit.from_graph(_graph())
    perm = [ref.index_of(k) for k in c.node_ids]
    np.testing.assert_array_equal(c.weights(dense=True), ref.weights(dense=True)[np.ix_(perm, perm)])
    with pytest.raises(CircuitError, match="permutation"):
        Circuit.from_graph(_graph(), node_order=["m", "i1"])


def test_with_weights_same_edge_set():
    c = Circuit.from_graph(_graph())
    W = c.weights(dense=True) * 2
    assert np.array_equal(c.with_weights(W).weights(dense=True), W)
    bad = np.ones((4, 4))
    with pytest.raises(CircuitError, match="outside"):
        c.with_weights(bad)


# ---------------------------------------------------------------- summary

def test_summary_known_values():
    # 3-cycle with weight 2: eigenvalues 2·(cube roots of unity) -> spectral radius 2; a permutation
    # matrix times 2 has three equal singular values -> both effective ranks equal 3.
    G = nx.DiGraph()
    for k, t in enumerate(["A", "A", "B"]):
        G.add_node(k, cell_type=t, sign=1 if t == "A" else -1)
    G.add_edge(0, 1, weight=2.0)
    G.add_edge(1, 2, weight=2.0)
    G.add_edge(2, 0, weight=-2.0)
    s = Circuit.from_graph(G).summary()
    assert list(s.columns) == ["quantity", "group", "value"]
    v = {(q, g): x for q, g, x in s.itertuples(index=False)}
    assert v[("n_neurons", "all")] == 3 and v[("n_edges", "all")] == 3
    assert v[("density", "all")] == pytest.approx(1 / 3)
    assert v[("neurons", "A")] == 2 and v[("neurons", "B")] == 1
    assert v[("excitatory", "all")] == 2 and v[("inhibitory", "all")] == 1
    assert v[("spectral_radius", "all")] == pytest.approx(2.0)
    assert v[("participation_ratio", "all")] == pytest.approx(3.0)
    assert v[("roy_vetterli", "all")] == pytest.approx(3.0)
    assert v[("weight_mean", "edges")] == pytest.approx(2 / 3)
    assert v[("frobenius_norm", "all")] == pytest.approx(np.sqrt(12))


def test_effective_rank_rank_one_and_zero():
    u = np.arange(1, 6.0)
    assert effective_rank(np.outer(u, u)) == pytest.approx({"participation_ratio": 1.0, "roy_vetterli": 1.0})
    assert effective_rank(np.zeros((3, 3))) == {"participation_ratio": 0.0, "roy_vetterli": 0.0}
    # two singular values 3 and 1: PR = (9+1)^2/(81+1); RV = exp(-(.75 ln .75 + .25 ln .25))
    r = effective_rank(np.diag([3.0, 1.0]))
    assert r["participation_ratio"] == pytest.approx(100 / 82)
    assert r["roy_vetterli"] == pytest.approx(np.exp(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25))))


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("bad", ["x", float("nan"), float("inf"), None, True])
def test_bad_weight_names_edge(bad):
    G = nx.DiGraph()
    G.add_edge("pre", "post", weight=bad)
    with pytest.raises(CircuitError, match="'pre' -> 'post'"):
        Circuit.from_graph(G)


def test_missing_weight_names_edge():
    G = nx.DiGraph()
    G.add_edge("a", "b")
    with pytest.raises(CircuitError, match="'a' -> 'b'.*no 'weight'"):
        Circuit.from_graph(G)


def test_empty_graph_and_undirected():
    with pytest.raises(CircuitError, match="empty"):
        Circuit.from_graph(nx.DiGraph())
    with pytest.raises(CircuitError, match="DiGraph"):
        Circuit.from_graph(nx.Graph([(0, 1)]))


def test_required_cell_type_and_sign_name_node():
    G = nx.DiGraph()
    G.add_node("a", cell_type="E", sign=1)
    G.add_node("b")
    G.add_edge("a", "b", weight=1.0)
    with pytest.raises(CircuitError, match="node 'b'.*cell type"):
        Circuit.from_graph(G, require_cell_type=True)
    with pytest.raises(CircuitError, match="node 'b'.*sign"):
        Circuit.from_graph(G, require_sign=True)
    c = Circuit.from_graph(G)
    assert c.cell_types.tolist() == ["E", "unknown"] and c.signs.tolist() == [1, 0]


def test_bad_sign_value_names_node():
    G = nx.DiGraph()
    G.add_node("a", sign=2)
    with pytest.raises(CircuitError, match="node 'a'"):
        Circuit.from_graph(G)


def test_self_loops_option():
    G = nx.DiGraph()
    G.add_edge("a", "a", weight=1.0)
    assert Circuit.from_graph(G).n_edges == 1
    with pytest.raises(CircuitError, match="'a' -> 'a'.*self-loop"):
        Circuit.from_graph(G, self_loops="error")


def test_no_edge_dropped():
    rng = np.random.default_rng(1)
    G = nx.gnp_random_graph(60, 0.2, seed=1, directed=True)
    for u, v in G.edges:
        G.edges[u, v]["weight"] = float(rng.normal())
    G.edges[next(iter(G.edges))]["weight"] = 0.0
    c = Circuit.from_graph(G)
    assert c.n_edges == G.number_of_edges()
    assert c.w.sum() == pytest.approx(sum(d["weight"] for *_, d in G.edges(data=True)))


def test_from_dense_errors():
    with pytest.raises(CircuitError, match="square"):
        Circuit.from_dense(np.ones((2, 3)))
    with pytest.raises(CircuitError, match="mask shape"):
        Circuit.from_dense(np.ones((2, 2)), mask=np.ones((3, 3), bool))
    with pytest.raises(CircuitError, match="outside the mask"):
        Circuit.from_dense(np.ones((2, 2)), mask=np.eye(2, dtype=bool))
    with pytest.raises(CircuitError, match="not finite"):
        Circuit.from_dense(np.array([[0, np.nan], [1, 0]]))
    with pytest.raises(CircuitError, match="neuron parameter 'tau'"):
        Circuit.from_dense(np.eye(2), neuron_params={"tau": np.ones(3)})


def test_summary_is_dataframe():
    assert isinstance(Circuit.from_dense(np.eye(2)).summary(), pd.DataFrame)


def test_input_and_readout_weights_validate_and_survive_graph_and_dict_round_trips():
    import networkx as nx

    from spikelearn.circuit import task_aligned_low_rank
    from spikelearn.models import circuit_from_dict, circuit_to_dict

    c = task_aligned_low_rank(12, 3, 2, rank=3, seed=1)
    c = dataclasses.replace(c, input_mask=np.arange(12) < 8, output_sign=np.where(np.arange(12) < 6, 1, 0))
    for back in (Circuit.from_graph(c.to_graph()), circuit_from_dict(circuit_to_dict(c))):
        np.testing.assert_array_equal(back.weights(dense=True), c.weights(dense=True))
        np.testing.assert_array_equal(back.input_weights, c.input_weights)
        np.testing.assert_array_equal(back.output_weights, c.output_weights)
        np.testing.assert_array_equal(back.input_mask, c.input_mask)
        np.testing.assert_array_equal(back.output_sign, c.output_sign)
    with pytest.raises(CircuitError, match="input_weights has shape"):
        dataclasses.replace(c, input_weights=np.zeros((11, 3)))
    with pytest.raises(CircuitError, match="output_weights has non-finite"):
        dataclasses.replace(c, output_weights=np.full((2, 12), np.nan))
    G = c.to_graph()
    with pytest.raises(CircuitError, match="node_order cannot be combined"):
        Circuit.from_graph(G, node_order=list(reversed(list(G.nodes))))
    assert isinstance(G, nx.DiGraph)


def test_round_trip_keeps_graph_attributes_metadata_and_params():
    G = _graph()
    G.graph.update(name="toy", source_doi="10.0/x")
    c = Circuit.from_graph(G, metadata={"note": "kept"})
    H = c.to_graph()
    assert H.graph["name"] == "toy" and H.graph["source_doi"] == "10.0/x"
    assert H.graph["metadata"]["note"] == "kept"
    c2 = Circuit.from_graph(H)
    assert c2.metadata["note"] == "kept" and c2.metadata["graph"] == {"name": "toy", "source_doi": "10.0/x"}
    # neuron parameters of a circuit not built from a graph are written as node attributes
    d = Circuit.from_dense(np.array([[0.0, 1.0], [2.0, 0.0]]), neuron_params={"tau_mem_ms": [10.0, 20.0]},
                           metadata={"generator": "hand"})
    e = Circuit.from_graph(d.to_graph())
    np.testing.assert_array_equal(e.neuron_params["tau_mem_ms"], [10.0, 20.0])
    assert e.metadata["generator"] == "hand"


def test_replaced_masks_are_exported_not_the_stale_node_flags():
    c = Circuit.from_graph(_graph())                     # input flag on e1 only
    new = np.array([False, True, True, False])
    d = c.with_weights(c.weights(dense=True), input_mask=new)
    H = d.to_graph()
    assert [bool(H.nodes[u].get("input", False)) for u in H.nodes] == new.tolist()
    np.testing.assert_array_equal(Circuit.from_graph(H).input_mask, new)


def test_values_are_checked_before_they_are_cast():
    W = np.array([[0.0, 1.0], [1.0, 0.0]])
    with pytest.raises(CircuitError, match="signs must be"):
        Circuit.from_dense(W, signs=[0.5, 1])
    with pytest.raises(CircuitError, match="signs must be"):
        Circuit.from_dense(W, signs=np.array([255, 1], dtype=np.uint8))
    with pytest.raises(CircuitError, match="input_sign must be"):
        Circuit.from_dense(W, input_sign=[0.7, 1])
    with pytest.raises(CircuitError, match="edge indices post must be integers"):
        Circuit(node_ids=(0, 1), post=[1.5], pre=[0], w=[1.0], cell_types=["a", "a"], signs=[0, 0])
    with pytest.raises(CircuitError, match="negative conductances"):
        Circuit.from_dense(W, gap=np.array([[0.0, -1.0], [-1.0, 0.0]]))
    with pytest.raises(CircuitError, match="self_loops must be"):
        Circuit.from_graph(_graph(), self_loops="drop")


def test_edge_sign_with_negative_weight_is_an_error_not_a_flip():
    G = nx.DiGraph()
    G.add_edge("a", "b", weight=2.0, s=-1)
    assert Circuit.from_graph(G, edge_sign="s").w.tolist() == [-2.0]
    G.add_edge("b", "a", weight=-2.0, s=1)
    with pytest.raises(CircuitError, match="negative although an edge sign"):
        Circuit.from_graph(G, edge_sign="s")


def test_to_graph_refuses_to_overwrite_a_node_attribute():
    G = nx.DiGraph()
    G.add_node("a", ct="E", cell_type="something else")
    G.add_node("b", ct="I", cell_type="other")
    G.add_edge("a", "b", weight=1.0)
    c = Circuit.from_graph(G, cell_type="ct")
    with pytest.raises(CircuitError, match="already use \\['cell_type'\\]"):
        c.to_graph()


def test_summary_of_a_large_circuit_needs_no_dense_matrix(monkeypatch):
    """Above DENSE_SUMMARY_MAX_N the summary uses ARPACK and ‖W‖_F⁴/‖WᵀW‖_F²: same numbers as the dense path."""
    import spikelearn.circuit.core as core
    from spikelearn.circuit import erdos_renyi

    c = erdos_renyi(300, 0.05, g=1.5, seed=2)
    dense = c.summary().set_index("quantity")["value"]
    monkeypatch.setattr(core, "DENSE_SUMMARY_MAX_N", 100)
    sparse = c.summary().set_index("quantity")["value"]
    assert sparse["spectral_radius"] == pytest.approx(dense["spectral_radius"], rel=1e-6)
    assert sparse["participation_ratio"] == pytest.approx(dense["participation_ratio"], rel=1e-10)
    assert np.isnan(sparse["roy_vetterli"]) and not np.isnan(dense["roy_vetterli"])
