"""Generators: statistics, exact rank, matched norms, block-model probabilities."""

import numpy as np
import pandas as pd
import pytest

from spikelearn.circuit import (
    CircuitError,
    block_model,
    dale,
    erdos_renyi,
    gaussian,
    low_rank,
    low_rank_aligned,
    task_aligned_low_rank,
    truncate_rank,
)


def test_gaussian_statistics_and_seed():
    n = 400
    c = gaussian(n, g=1.5, seed=3)
    W = c.weights(dense=True)
    assert np.all(np.diag(W) == 0) and c.n_edges == n * (n - 1)
    off = W[~np.eye(n, dtype=bool)]
    # std of g N(0,1)/sqrt(N) within 3 standard errors (SE of a sample std ~ sigma/sqrt(2M))
    sigma = 1.5 / np.sqrt(n)
    assert abs(off.std() - sigma) < 3 * sigma / np.sqrt(2 * off.size)
    assert abs(off.mean()) < 3 * sigma / np.sqrt(off.size)
    assert np.array_equal(gaussian(n, 1.5, seed=3).w, c.w)
    assert not np.array_equal(gaussian(n, 1.5, seed=4).w, c.w)


def test_erdos_renyi_density():
    n, p = 300, 0.1
    c = erdos_renyi(n, p, seed=1)
    m = n * (n - 1)
    assert abs(c.n_edges / m - p) < 3 * np.sqrt(p * (1 - p) / m)
    assert not c.mask().diagonal().any()
    with pytest.raises(CircuitError, match="probability"):
        erdos_renyi(10, 1.5)


@pytest.mark.parametrize("balance", [None, "mean", "per_neuron"])
def test_dale_signs_and_balance(balance):
    c = dale(200, frac_exc=0.8, p=0.5, seed=2, balance=balance)
    W = c.weights(dense=True)
    assert (c.signs == 1).sum() == 160 and (c.signs == -1).sum() == 40
    assert (W[:, c.signs == 1] >= 0).all() and (W[:, c.signs == -1] <= 0).all()
    np.testing.assert_array_equal(c.dale_signs(), c.signs)
    if balance == "per_neuron":
        np.testing.assert_allclose(W.sum(1), 0, atol=1e-12)
    if balance == "mean":
        # expected E input equals expected I input: |mean row sum| small relative to the E part
        e = W[:, c.signs == 1].sum(1).mean()
        assert abs(W.sum(1).mean()) < 0.1 * e


def test_low_rank_exact_rank_and_frobenius_norm():
    n = 120
    W0 = gaussian(n, 1.25, seed=0, self_loops=True).weights(dense=True)
    for r in (1, 5, 30, n):
        c = low_rank(n, r, seed=0)
        W = c.weights(dense=True)
        assert np.linalg.matrix_rank(W) == r
        assert abs(np.linalg.norm(W) - np.linalg.norm(W0)) < 1e-12 * np.linalg.norm(W0)
        assert c.metadata["norm_match"] == "frobenius"
    np.testing.assert_allclose(low_rank(n, n, seed=0).weights(dense=True), W0, atol=1e-13)


def test_low_rank_spectral_norm():
    W0 = np.random.default_rng(0).standard_normal((50, 50))
    Wr = truncate_rank(W0, 3, "spectral")
    assert np.linalg.matrix_rank(Wr) == 3
    assert abs(np.linalg.norm(Wr, 2) - np.linalg.norm(W0, 2)) < 1e-12 * np.linalg.norm(W0, 2)
    c = low_rank(50, 3, norm="spectral")
    assert c.metadata["norm_match"] == "spectral"
    with pytest.raises(CircuitError, match="norm"):
        truncate_rank(W0, 3, "nuclear")
    with pytest.raises(CircuitError, match="rank"):
        truncate_rank(W0, 0)


def _rho(W):
    return np.abs(np.linalg.eigvals(W)).max()


def test_low_rank_spectral_radius_matches_the_reference_draw():
    """§8.2 [D] spectral matching by spectral radius: ρ(W_r) = ρ(W_0) for every rank, W_r only rescaled."""
    n = 120
    W0 = gaussian(n, 1.25, seed=0, self_loops=True).weights(dense=True)  # the draw low_rank truncates
    rho0 = _rho(W0)
    for r in (1, 5, 30, n):
        c = low_rank(n, r, norm="spectral_radius", seed=0)
        W = c.weights(dense=True)
        assert np.linalg.matrix_rank(W) == r
        assert abs(_rho(W) - rho0) < 1e-10 * rho0
        assert c.metadata["norm_match"] == "spectral_radius"
        assert c.metadata["target_norm"] == pytest.approx(rho0, rel=1e-12)
        # the same truncation, only rescaled (positive factor)
        Wf = low_rank(n, r, seed=0).weights(dense=True)
        np.testing.assert_allclose(W / np.linalg.norm(W), Wf / np.linalg.norm(Wf), rtol=0, atol=1e-12)
        if r == 1:  # the single non-zero eigenvalue of a rank-1 matrix is its trace
            assert abs(np.trace(W)) == pytest.approx(rho0, rel=1e-10)
    np.testing.assert_allclose(low_rank(n, n, norm="spectral_radius", seed=0).weights(dense=True), W0, atol=1e-12)


def test_truncate_rank_spectral_radius_rank_one_edge_cases():
    """Rank 1: W_1 = σ₁ u₁ v₁ᵀ has the single non-zero eigenvalue σ₁ v₁ᵀu₁ (u₁v₁ᵀ u₁ = (v₁ᵀu₁) u₁)."""
    n = 5
    e = np.eye(n)
    a, c = e[0], e[2]
    b = 0.25 * e[0] + np.sqrt(1 - 0.25**2) * e[1]  # unit, aᵀb = 1/4, both ⊥ c
    # SVD: σ₁ = 2 on (a, b), σ₂ = 1.5 on (c, c); eigenvalues 2·aᵀb = 0.5 (vector a), 1.5 (vector c), 0 ⇒ ρ = 1.5
    W0 = 2.0 * np.outer(a, b) + 1.5 * np.outer(c, c)
    assert _rho(W0) == pytest.approx(1.5, rel=1e-12)
    # W_1 = 2 a bᵀ with eigenvalue 0.5, rescaled by 1.5/0.5 = 3
    np.testing.assert_allclose(truncate_rank(W0, 1, "spectral_radius"), 6.0 * np.outer(a, b), rtol=0, atol=1e-12)
    np.testing.assert_allclose(truncate_rank(W0, 2, "spectral_radius"), W0, rtol=0, atol=1e-12)
    # u₁ ⊥ v₁: the rank-1 truncation is nilpotent (spectral radius 0) and cannot be matched
    W0n = 3.0 * np.outer(e[0], e[1]) + 1.0 * np.outer(e[2], e[2])
    with pytest.raises(ValueError, match="nilpotent"):
        truncate_rank(W0n, 1, "spectral_radius")
    np.testing.assert_allclose(truncate_rank(W0n, 2, "spectral_radius"), W0n, rtol=0, atol=1e-12)  # ρ = 1 both
    # a nilpotent reference, a rectangular one
    with pytest.raises(CircuitError, match="W0 is nilpotent"):
        truncate_rank(np.outer(e[0], e[1]) + 0.5 * np.outer(e[1], e[2]), 1, "spectral_radius")
    with pytest.raises(CircuitError, match="square"):
        truncate_rank(np.ones((3, 4)), 1, "spectral_radius")


def test_aligned_generators_spectral_radius():
    rng = np.random.default_rng(5)
    D = rng.standard_normal((80, 4))
    W = low_rank_aligned(D, rank=3, norm="spectral_radius", seed=1).weights(dense=True)
    Q, _ = np.linalg.qr(D[:, :3])
    assert np.linalg.matrix_rank(W) == 3
    np.testing.assert_allclose(Q @ (Q.T @ W), W, atol=1e-12)
    rho0 = _rho(gaussian(80, 1.25, seed=1, self_loops=True).weights(dense=True))
    assert abs(_rho(W) - rho0) < 1e-10 * rho0
    n = 100
    rho0 = _rho(gaussian(n, 1.25, seed=3, self_loops=True).weights(dense=True))
    for structure, rank, n_io in (("joint", 4, 3), ("input_to_readout", 2, 2), ("input_to_readout", 1, 1)):
        c = task_aligned_low_rank(n, n_io, n_io, rank=rank, structure=structure, norm="spectral_radius", seed=3)
        W = c.weights(dense=True)
        assert np.linalg.matrix_rank(W) == rank and c.metadata["norm_match"] == "spectral_radius"
        assert abs(_rho(W) - rho0) < 1e-10 * rho0
        if rank == 1:  # W = m q_out q_inᵀ: its one eigenvalue m q_inᵀq_out is the trace
            assert abs(np.trace(W)) == pytest.approx(rho0, rel=1e-10)


def test_unknown_norm_is_refused_by_every_low_rank_generator():
    """An unknown ``norm`` used to fall through to spectral matching in the aligned generators."""
    D = np.random.default_rng(0).standard_normal((20, 2))
    for call in (lambda: low_rank(20, 2, norm="nuclear"), lambda: low_rank_aligned(D, norm="spectral radius"),
                 lambda: task_aligned_low_rank(20, 2, 2, norm="radius")):
        with pytest.raises(ValueError, match="norm must be 'frobenius'"):
            call()


def test_low_rank_aligned_subspace():
    rng = np.random.default_rng(5)
    D = rng.standard_normal((80, 4))
    c = low_rank_aligned(D, rank=2, seed=1)
    W = c.weights(dense=True)
    Q, _ = np.linalg.qr(D[:, :2])
    P = Q @ Q.T
    assert np.linalg.matrix_rank(W) == 2
    np.testing.assert_allclose(P @ W, W, atol=1e-12)  # column space inside the task directions
    np.testing.assert_allclose(W @ P, W, atol=1e-12)  # row space too
    W0 = gaussian(80, 1.25, seed=1, self_loops=True).weights(dense=True)
    assert abs(np.linalg.norm(W) - np.linalg.norm(W0)) < 1e-12 * np.linalg.norm(W0)
    with pytest.raises(CircuitError, match="dependent"):
        low_rank_aligned(np.ones((10, 2)))


def _table():
    t = ["E", "PV", "SST"]
    p = pd.DataFrame([[0.2, 0.4, 0.1], [0.5, 0.3, 0.05], [0.3, 0.0, 0.6]], index=t, columns=t)  # rows = pre
    return t, p


def test_block_model_probabilities_within_3_se():
    t, p = _table()
    sizes = {"E": 300, "PV": 120, "SST": 80}
    c = block_model(p, sizes, seed=7, type_signs={"E": 1, "PV": -1, "SST": -1},
                    weight_table=pd.DataFrame(np.full((3, 3), 0.5), index=t, columns=t))
    M = c.mask()
    types = c.cell_types
    for a in t:
        for b in t:
            pre, post = types == a, types == b
            trials = pre.sum() * post.sum() - (pre & post).sum()  # no autapses
            k = M[np.ix_(post, pre)].sum()
            pab = p.loc[a, b]
            if pab in (0.0, 1.0):
                assert k == pab * trials
                continue
            se = np.sqrt(pab * (1 - pab) / trials)
            assert abs(k / trials - pab) < 3 * se, (a, b, k / trials, pab)
    W = c.weights(dense=True)
    assert (W[:, types == "E"] >= 0).all() and (W[:, types != "E"] <= 0).all()
    assert set(np.abs(c.w)) == {0.5}


def test_block_model_orientation_post():
    t, p = _table()
    a = block_model(p, {"E": 50, "PV": 50, "SST": 50}, seed=1)
    b = block_model(p.T, {"E": 50, "PV": 50, "SST": 50}, seed=1, rows="post")
    np.testing.assert_array_equal(a.mask(), b.mask())


def test_block_model_proportions_largest_remainder():
    t, p = _table()
    c = block_model(p, n=101, proportions={"E": 0.8, "PV": 0.15, "SST": 0.05}, seed=0)
    counts = {k: int((c.cell_types == k).sum()) for k in t}
    assert sum(counts.values()) == 101
    exact = {"E": 80.8, "PV": 15.15, "SST": 5.05}
    assert all(abs(counts[k] - exact[k]) < 1 for k in t)
    c = block_model(p, n=3, proportions={"E": 0.98, "PV": 0.01, "SST": 0.01})
    assert sorted(c.cell_types.tolist()) == ["E", "PV", "SST"]  # at least one per type


def test_block_model_bad_tables():
    t, p = _table()
    with pytest.raises(CircuitError, match="square"):
        block_model(p.iloc[:2], {"E": 1, "PV": 1, "SST": 1})
    with pytest.raises(CircuitError, match="sizes keys"):
        block_model(p, {"E": 1, "PV": 1})
    with pytest.raises(CircuitError, match="weight_table"):
        block_model(p, {"E": 1, "PV": 1, "SST": 1}, weight_table=p.iloc[:2, :2])
    bad = p.copy()
    bad.iloc[0, 0] = 1.5
    with pytest.raises(CircuitError, match="probabilities"):
        block_model(bad, {"E": 1, "PV": 1, "SST": 1})
    with pytest.raises(CircuitError, match="type_signs"):
        block_model(p, {"E": 1, "PV": 1, "SST": 1}, type_signs={"E": 1})
    with pytest.raises(CircuitError, match="too small"):
        block_model(p, n=2, proportions={"E": 1, "PV": 1, "SST": 1})


def test_dale_dense_then_sparsify_is_the_mdgl_source_procedure():
    """MDGL source init: dense |N(0,1)|, per-neuron balanced, spectral radius g, then int(p N²) positions drawn with
    replacement: distinct edges follow the with-replacement count, signs follow columns, rows balance on average,
    and the dense scaling is linear in g."""
    from spikelearn.circuit.generators import dale

    n, p = 200, 0.1
    kw = dict(frac_exc=0.81, p=p, balance="per_neuron", procedure="dense_then_sparsify")
    c = dale(n, g=1.0, seed=4, **kw)
    W = c.weights(dense=True)
    assert not np.diag(W).any()
    draws = int(p * n * n)
    q = 1 - (1 - 1 / n**2) ** draws  # probability that a position is drawn at least once
    expected, sd = n * n * q * (1 - 1 / n), np.sqrt(n * n * q * (1 - q))
    assert abs(c.n_edges - expected) < 4 * sd, (c.n_edges, expected, sd)
    n_e = int(round(0.81 * n))
    assert (W[:, :n_e] >= 0).all() and (W[:, n_e:] <= 0).all()
    rows = W.sum(1)  # each dense row sums to 0 and positions are kept independently of their value
    assert abs(rows.mean()) < 4 * rows.std(ddof=1) / np.sqrt(n)
    assert np.array_equal(dale(n, g=2.0, seed=4, **kw).weights(dense=True), 2 * W)
    assert c.metadata["spectral_radius_sparse"] < 1.0
    with pytest.raises(CircuitError, match="procedure"):
        dale(n, seed=0, procedure="magic")


@pytest.mark.parametrize("procedure", ["dense_then_sparsify", "sparse"])
def test_dale_sparse_input_and_readout(procedure):
    """p_in / p_out give 2-D masks drawn after the recurrent weights (which stay bit-identical), the counts of the
    procedure's sampling, N(0, 1/(p·fan_in)) weights on the masks, and channel signs from input_frac_exc."""
    from spikelearn.circuit.generators import dale

    n, n_in, n_out, p_io = 200, 40, 20, 0.1
    kw = dict(frac_exc=0.81, p=0.1, balance="per_neuron" if procedure == "dense_then_sparsify" else "mean",
              procedure=procedure, seed=5)
    plain = dale(n, **kw)
    c = dale(n, n_in=n_in, n_out=n_out, p_in=p_io, p_out=p_io, **kw)
    np.testing.assert_array_equal(c.weights(dense=True), plain.weights(dense=True))
    assert plain.input_mask is None and plain.output_weights is None
    assert dale(n, n_in=n_in, n_out=n_out, **kw).input_mask is None  # p = 1 and no signs: the model's defaults
    for m, w, rows, cols in ((c.input_mask, c.input_weights, n, n_in), (c.output_mask, c.output_weights, n_out, n)):
        assert m.shape == w.shape == (rows, cols) and not w[~m].any() and (w[m] != 0).all()
        if procedure == "dense_then_sparsify":  # int(p·rows·cols) draws with replacement
            q = 1 - (1 - 1 / (rows * cols)) ** int(p_io * rows * cols)
        else:
            q = p_io
        mean, sd = rows * cols * q, np.sqrt(rows * cols * q * (1 - q))
        assert abs(m.sum() - mean) < 4 * sd, (m.sum(), mean, sd)
        fan_in = cols * p_io
        assert abs(w[m].var() * fan_in - 1) < 0.2, w[m].var() * fan_in  # ~800 and ~400 draws
    signed = dale(n, n_in=n_in, n_out=n_out, p_in=p_io, input_frac_exc=0.825, **kw)
    W_in = signed.input_weights
    assert (W_in[:, :33] >= 0).all() and (W_in[:, 33:] <= 0).all() and (W_in[:, :33] > 0).any()
    assert signed.output_mask is None and signed.metadata["n_exc_inputs"] == 33
    with pytest.raises(CircuitError, match="n_in is needed"):
        dale(n, p_in=0.1, **kw)
    with pytest.raises(CircuitError, match="n_out is needed"):
        dale(n, p_out=0.1, **kw)
    with pytest.raises(CircuitError, match="p_in must be in"):
        dale(n, n_in=3, p_in=0.0, **kw)
    with pytest.raises(CircuitError, match="input_frac_exc"):
        dale(n, n_in=3, input_frac_exc=1.5, **kw)


def test_dale_sparse_io_from_a_run_config_keeps_its_connections_under_rewiring(tmp_path):
    """A run file's dale circuit takes n_in/n_out from the task; the model starts from the circuit's sparse W_in /
    W_out with the declared channel signs, and DEEP R keeps each matrix's connection count and every sign."""
    import torch

    from spikelearn.config import config_from_dict
    from spikelearn.build import build

    signs = [1] * 33 + [-1] * 7
    cfg = config_from_dict({
        "circuit": {"kind": "dale", "n": 30, "options": {"frac_exc": 0.8, "p": 0.2, "procedure": "dense_then_sparsify",
                                                          "p_in": 0.1, "p_out": 0.2, "input_frac_exc": 0.825}},
        "model": {"type": "spiking", "options": {"sign_constraint": "dale", "input_channel_sign": signs,
                                                 "v_th": 0.01, "n_ref": 5, "scaling": "B"}},
        "task": {"name": "evidence_accumulation_mdgl", "options": {}},
        "rule": {"name": "eprop", "options": {}},
        "optimizer": {"name": "adam", "lr": 5e-2},
        "train": {"iterations": 4, "batch_size": 4, "eval_every": 100, "seed": 2, "rewiring": True}})
    circuit, model, _task, _rule, _opt, trainer = build(cfg, out_dir=str(tmp_path))
    assert circuit.input_mask.shape == (30, 40) and circuit.output_mask.shape == (2, 30)
    W0 = model.effective_weights()
    # the run's model is float32: equal up to its rounding, and zero exactly where the circuit is
    np.testing.assert_allclose(W0.W_in.detach().numpy(), circuit.input_weights, rtol=1e-7, atol=0)
    np.testing.assert_allclose(W0.W_out.detach().numpy(), circuit.output_weights, rtol=1e-7, atol=0)
    trainer.run()
    W1 = model.effective_weights()
    for a, b, mask in ((W0.W_in, W1.W_in, circuit.input_mask), (W0.W_out, W1.W_out, circuit.output_mask)):
        a, b = a.detach().numpy(), b.detach().numpy()
        assert (b != 0).sum() <= (a != 0).sum() and not b[~mask].any()
        assert (a * b >= 0).all()
    assert not torch.equal(W0.W_in, W1.W_in)  # it did learn
    assert (W1.W_in.detach().numpy()[:, 33:] <= 0).all() and (W1.W_in.detach().numpy()[:, :33] >= 0).all()


@pytest.mark.parametrize("io_init", ["normal", "uniform"])
def test_task_aligned_low_rank_spans_its_own_input_and_readout_weights(io_init):
    n, n_in, n_out = 90, 3, 2
    c = task_aligned_low_rank(n, n_in, n_out, rank=4, sigma0=1.25, io_init=io_init, seed=7)
    W = c.weights(dense=True)
    assert c.input_weights.shape == (n, n_in) and c.output_weights.shape == (n_out, n)
    D = np.concatenate([c.input_weights, c.output_weights.T], axis=1)
    Q, _ = np.linalg.qr(D[:, :4])  # the first 4 directions: the 3 input columns, then readout row 0
    P = Q @ Q.T
    assert np.linalg.matrix_rank(W) == 4
    np.testing.assert_allclose(P @ W, W, atol=1e-12)
    np.testing.assert_allclose(W @ P, W, atol=1e-12)
    # readout row 1 lies outside the rank-4 span: W is not aligned with it
    r1 = c.output_weights[1] / np.linalg.norm(c.output_weights[1])
    assert np.linalg.norm(W @ r1) > 1e-3 * np.linalg.norm(W) or np.linalg.norm(r1 @ W) > 1e-3 * np.linalg.norm(W)
    W0 = gaussian(n, 1.25, seed=7, self_loops=True).weights(dense=True)
    assert abs(np.linalg.norm(W) - np.linalg.norm(W0)) < 1e-12 * np.linalg.norm(W0)
    if io_init == "uniform":
        assert np.abs(c.input_weights).max() <= 1 / np.sqrt(n_in)
        assert np.abs(c.output_weights).max() <= 1 / np.sqrt(n)
    else:  # N(0, 1/fan_in): the sample variance of 90*3 and 2*90 draws within 25 % of the target
        assert abs(c.input_weights.var() * n_in - 1) < 0.25
        assert abs(c.output_weights.var() * n - 1) < 0.3
    again = task_aligned_low_rank(n, n_in, n_out, rank=4, sigma0=1.25, io_init=io_init, seed=7)
    np.testing.assert_array_equal(again.input_weights, c.input_weights)
    np.testing.assert_array_equal(again.weights(dense=True), W)
    assert c.metadata["generator"] == "task_aligned_low_rank" and c.metadata["rank"] == 4


def test_task_aligned_low_rank_input_to_readout_maps_input_span_onto_readout_span():
    n, n_in, n_out = 120, 3, 3
    c = task_aligned_low_rank(n, n_in, n_out, rank=3, structure="input_to_readout", seed=2)
    W = c.weights(dense=True)
    Qi, _ = np.linalg.qr(c.input_weights)
    Qo, _ = np.linalg.qr(c.output_weights.T)
    assert np.linalg.matrix_rank(W) == 3
    np.testing.assert_allclose(Qo @ (Qo.T @ W), W, atol=1e-12)  # column space = readout directions
    np.testing.assert_allclose((W @ Qi) @ Qi.T, W, atol=1e-12)  # row space = input directions
    W0 = gaussian(n, 1.25, seed=2, self_loops=True).weights(dense=True)
    assert abs(np.linalg.norm(W) - np.linalg.norm(W0)) < 1e-12 * np.linalg.norm(W0)
    # nearly nilpotent: W² only through the small overlap of the two random subspaces; the joint structure is not
    rho = np.abs(np.linalg.eigvals(W)).max()
    joint = task_aligned_low_rank(n, n_in, n_out, rank=3, seed=2).weights(dense=True)
    assert rho < 0.5 * np.abs(np.linalg.eigvals(joint)).max()
    assert c.metadata["structure"] == "input_to_readout"
    with pytest.raises(CircuitError, match="rank must be in \\[1, 3\\]"):
        task_aligned_low_rank(n, n_in, n_out, rank=4, structure="input_to_readout")
    with pytest.raises(CircuitError, match="structure"):
        task_aligned_low_rank(n, n_in, n_out, structure="diagonal")


def test_task_aligned_low_rank_bad_input():
    with pytest.raises(CircuitError, match="rank must be in"):
        task_aligned_low_rank(50, 2, 1, rank=4)
    with pytest.raises(CircuitError, match="io_init"):
        task_aligned_low_rank(50, 2, 1, io_init="glorot")
    with pytest.raises(CircuitError, match="n_in must be a positive integer"):
        task_aligned_low_rank(50, 0, 1)


def test_generator_inputs_are_validated():
    from spikelearn import CircuitError
    from spikelearn.circuit import block_model, dale, low_rank, low_rank_aligned

    with pytest.raises(CircuitError, match="g must be a finite gain > 0"):
        dale(50, g=-1.0)
    P = pd.DataFrame([[0.5, 0.5], [0.5, 0.5]], index=["E", "I"], columns=["E", "I"])
    with pytest.raises(CircuitError, match="type_signs must be \\+1 or -1"):
        block_model(P, {"E": 3, "I": 3}, type_signs={"E": 1, "I": 0.5})
    Wt = pd.DataFrame([[1.0, -1.0], [1.0, 1.0]], index=["E", "I"], columns=["E", "I"])
    with pytest.raises(CircuitError, match="negative entries"):
        block_model(P, {"E": 3, "I": 3}, weight_table=Wt, type_signs={"E": 1, "I": -1})
    with pytest.raises(CircuitError, match="non-negative integers"):
        block_model(P, {"E": 2.7, "I": 3})
    # labels that are not strings: dicts keyed by the original labels work
    Pn = pd.DataFrame([[0.5, 0.5], [0.5, 0.5]], index=[1, 2], columns=[1, 2])
    c = block_model(Pn, {1: 3, 2: 3}, type_signs={1: 1, 2: -1}, seed=0)
    assert c.n == 6 and c.signs.tolist() == [1, 1, 1, -1, -1, -1]
    with pytest.raises(CircuitError, match="rank must be in \\[1, 3\\]"):
        low_rank_aligned(np.random.default_rng(0).standard_normal((3, 5)), rank=5)
    with pytest.raises(CircuitError, match="rank must be an integer"):
        low_rank(10, 2.5)
    with pytest.raises(CircuitError, match="sigma0 must be"):
        low_rank(10, 2, sigma0=0.0)
    with pytest.raises(CircuitError, match="n must be a positive integer"):
        task_aligned_low_rank(2.9, 1, 1)
