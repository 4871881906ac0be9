"""Cross-simulator tests: spikelearn vs Brian2 (float64), e-prop as Brian2 synapse equations, CLI, global state."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from spikelearn import connectomes
from spikelearn.circuit import erdos_renyi
from spikelearn.models import RateRNN, SpikingRNN
from spikelearn.neurons.lif import ALIFState, alif_update
from spikelearn.validate import UnsupportedFeatureError, compare_with_brian2, eprop_brian2, run_brian2

pytestmark = pytest.mark.brian2


def _poisson(T, B, n_in, p, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, B, n_in, generator=g, dtype=torch.float64) < p).to(torch.float64)


def _assert_binding(model, rep):
    """Rates in 2–50 Hz; refractoriness blocks would-be spikes and hits the minimum ISI; thresholds rise."""
    rec = rep.spikelearn["record"]
    rate = rep.summary["rate_hz"]
    assert 2.0 <= rate <= 50.0, rate
    blocked_above = ((rec.ref) & (rec.v > rec.thr)).sum().item()
    assert blocked_above > 0, "refractoriness never prevented a spike"
    z = rec.z[:, 0].numpy()
    n_block = model.constants().n_block.numpy()
    isis = [np.diff(np.flatnonzero(z[:, j])) for j in range(z.shape[1])]
    at_min = sum(int((d == n_block[j] + 1).sum()) for j, d in enumerate(isis))
    assert at_min > 0, "no inter-spike interval equals the refractory minimum"
    assert min(d.min() for d in isis if d.size) == int(n_block.min()) + 1
    adaptive = model.beta > 0
    rise = (rec.thr[..., adaptive] - model.v_th[adaptive]).amax().item()
    assert rise > 0.5 * model.v_th[adaptive].max().item(), f"thresholds rise by only {rise}"


@pytest.mark.parametrize("scaling,refractory,v_th", [("A", "lsnn", 0.6), ("B", "counter", 0.03)])
def test_random_circuit_200_neurons_1000_steps(scaling, refractory, v_th, same_as_brian2):
    """Sparse 200-neuron random circuit, half LIF half ALIF, per-neuron τ_m, refractory on: identical spikes."""
    torch.manual_seed(0)
    tau_m = 20.0 + 10.0 * torch.rand(200, dtype=torch.float64)
    v_th = v_th * (0.95 + 0.1 * torch.rand(200, dtype=torch.float64))  # per-neuron parameters
    model = SpikingRNN(erdos_renyi(200, 0.1, g=1.0, seed=1), 20, 2, scaling=scaling, refractory=refractory,
                       v_th=v_th, tau_mem_ms=tau_m, n_adaptive=100, n_ref=4, tau_adapt_ms=300.0, dtype="float64")
    x = _poisson(1000, 1, 20, 0.03, seed=1)
    rep = same_as_brian2(model, x)
    _assert_binding(model, rep)
    assert rep.ok and rep.verdict.startswith("IDENTICAL")
    assert (rep.frame["spikes_spikelearn"] == rep.frame["spikes_brian2"]).all()
    assert rep.frame["first_divergence_ms"].isna().all()


def test_connectome_circuit_with_gap_junctions(same_as_brian2):
    """C. elegans (Varshney 2011, 279 neurons, chemical + gap junctions, GABA signs), LIF + ALIF, 1000 steps."""
    circ = connectomes.load("celegans_varshney2011", signs="gaba_inhibitory", io=None, weight_per_synapse=0.02,
                            gap_weight_per_junction=0.005)
    assert circ.has_gap_junctions
    torch.manual_seed(0)
    model = SpikingRNN(circ, 20, 2, scaling="A", n_adaptive=140, n_ref=3, tau_adapt_ms=300.0, dtype="float64")
    assert model.gap is not None
    rep = same_as_brian2(model, _poisson(1000, 1, 20, 0.03, seed=1))
    _assert_binding(model, rep)
    assert rep.frame["node_id"].iloc[0] == str(circ.node_ids[0])


def test_analog_input_batch_and_float32_model(same_as_brian2):
    """Analog inputs (TimedArray path), several trials at once, a float32 model (compared in float64)."""
    torch.manual_seed(1)
    model = SpikingRNN(erdos_renyi(40, 0.2, seed=2), 3, 2, n_adaptive=10, n_ref=2, readout="filtered_current")
    x = torch.rand(150, 3, 3, dtype=torch.float64) * 0.8
    rep = same_as_brian2(model, x)
    assert rep.summary["spikes_spikelearn"] > 0 and rep.summary["n_trials"] == 3
    assert model.dtype == torch.float32  # the caller's model is untouched
    # scaling B: c_in = 1 − α must be exported in float64 too (float32 constants gave |dv| ≈ 3e-7, a "MISMATCH")
    torch.manual_seed(1)
    model_b = SpikingRNN(erdos_renyi(40, 0.2, seed=2), 3, 2, scaling="B", v_th=0.03, n_adaptive=10, n_ref=2)
    rep_b = same_as_brian2(model_b, x)
    assert rep_b.summary["spikes_spikelearn"] > 0 and rep_b.summary["max_abs_v_diff"] <= 1e-9


def test_report_detects_a_difference():
    """A perturbed Brian2 network is reported as diverged, with the first divergent spike."""
    torch.manual_seed(0)
    model = SpikingRNN(erdos_renyi(30, 0.2, seed=3), 5, 1, dtype="float64")
    x = _poisson(200, 1, 5, 0.1, seed=4)
    import spikelearn.validate.brian2 as vb

    orig = vb.export_spec

    def perturbed(m):
        s = orig(m)
        return vb.ExportSpec(**{**s.__dict__, "v_th": s.v_th * 1.05})

    vb.export_spec = perturbed
    try:
        rep = compare_with_brian2(model, x)
    finally:
        vb.export_spec = orig
    assert not rep.ok and rep.verdict.startswith("DIVERGED")
    assert rep.summary["first_divergence_ms"] is not None
    assert rep.summary["identical_spike_fraction"] < 1.0
    assert rep.frame["first_divergence_ms"].notna().any()


# ------------------------------------------------------------------------------------------------ trained network
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A small LIF/ALIF network trained with BPTT on a one-cue evidence-accumulation task (run folder)."""
    from spikelearn.build import train
    from spikelearn.config import (CircuitConfig, ModelConfig, OptimizerConfig, RuleConfig, RunConfig, TaskConfig,
                                   TrainConfig)

    out = tmp_path_factory.mktemp("validate") / "ea"
    torch.manual_seed(0)
    cfg = RunConfig(
        circuit=CircuitConfig(kind="erdos_renyi", n=40, options={"p": 0.2, "g": 1.0}),
        model=ModelConfig(type="spiking", options={"n_adaptive": 20, "tau_adapt_ms": 500.0, "v_th": 0.6,
                                                    "scaling": "A", "n_ref": 5}),
        task=TaskConfig(name="evidence_accumulation", options={"n_cues": 1, "cue_ms": 30.0, "gap_ms": 10.0,
                                                               "delay_ms": 20.0, "recall_ms": 30.0}),
        rule=RuleConfig(name="bptt"),
        optimizer=OptimizerConfig(name="adam", lr=2e-2),
        train=TrainConfig(iterations=8, batch_size=16, seed=0, eval_every=8, eval_batch_size=32, quiet=True,
                          out_dir=str(out)),
    )
    hist, _ = train(cfg)
    return out, float(hist["accuracy"].dropna().iloc[-1])


def test_trained_network_same_accuracy(trained_run, same_as_brian2):
    from spikelearn.models import load
    from spikelearn.tasks import make_task

    run, train_acc = trained_run
    cfg = json.loads((run / "config.json").read_text())
    task = make_task(cfg["task"]["name"], **cfg["task"]["options"])
    x, y, mask = task.sample(32, torch.Generator().manual_seed(7), dtype=torch.float64)
    model = load(run / "model.pt")
    rep = same_as_brian2(model, x, task=task, y=y, mask=mask)
    acc_sl, acc_b2 = rep.summary["accuracy_spikelearn"], rep.summary["accuracy_brian2"]
    assert acc_sl >= 0.8, (acc_sl, train_acc)
    assert acc_b2 == acc_sl
    assert "accuracy" in rep.verdict


def test_cli_validate(trained_run, capsys, tmp_path):
    from spikelearn.cli import main

    run, _ = trained_run
    csv = tmp_path / "report.csv"
    code = main(["validate", str(run), "--trials", "8", "--out", str(csv)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "IDENTICAL" in out and "accuracy_brian2" in out
    assert csv.exists()
    assert main(["validate", str(tmp_path / "nothing")]) == 2


def test_cli_registration_does_not_import_brian2():
    import subprocess

    code = ("import sys, argparse; from spikelearn.validate.cli import add_validate_parser; "
            "p = argparse.ArgumentParser(); add_validate_parser(p.add_subparsers()); "
            "import spikelearn.validate; assert 'brian2' not in sys.modules, 'brian2 imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------------------------ e-prop
def _eprop_reference(model, x, y_star, mask):
    """ALGORITHMS.md §2.7: autograd with recurrent spikes and the reset detached (adaptation and readout not)."""
    W = model.effective_weights()
    W_in, W_rec, W_out = (w.detach().clone().requires_grad_(True) for w in (W.W_in, W.W_rec, W.W_out))
    b = W.b_out.detach().clone().requires_grad_(True)
    c = model.constants()._replace(detach_reset=True)
    T, B, _ = x.shape
    zero = torch.zeros(B, model.n, dtype=torch.float64)
    s = ALIFState(zero, zero, zero, zero)
    zf, ys = zero, []
    k = model.kappa
    for t in range(T):
        drive = c.c_in * (x[t] @ W_in.T + s.z.detach() @ W_rec.T)
        s, _ = alif_update(c, s, drive, model.surrogate)
        zf = k * zf + (1 - k) * s.z
        ys.append(zf @ W_out.T + b)
    y = torch.stack(ys)
    loss = (mask[..., None] * 0.5 * (y - y_star) ** 2).sum() / B
    g = torch.autograd.grad(loss, [W_in, W_rec, W_out, b])
    return float(loss.detach()), dict(zip(("W_in", "W_rec", "W_out", "b_out"), (t.detach().numpy() for t in g)))


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _eprop_setup(n_adaptive, **kw):
    torch.manual_seed(3)
    model = SpikingRNN(erdos_renyi(30, 0.3, g=1.0, seed=5), 8, 2, scaling="B", v_th=0.03, n_ref=2,
                       n_adaptive=n_adaptive, tau_adapt_ms=200.0, tau_out_ms=15.0, dtype="float64", **kw)
    T, B = 120, 2
    x = _poisson(T, B, 8, 0.08, seed=6)
    t = torch.arange(T, dtype=torch.float64)
    y_star = torch.stack([torch.sin(2 * torch.pi * t / 60), torch.cos(2 * torch.pi * t / 40)], -1)[:, None, :]
    y_star = y_star.expand(T, B, 2).clone()
    mask = torch.ones(T, B, dtype=torch.float64)
    mask[:20] = 0.0
    return model, x, y_star, mask


@pytest.mark.parametrize("n_adaptive", [0, 15], ids=["LIF", "ALIF"])
def test_eprop_in_brian2_matches_autograd_reference(n_adaptive):
    model, x, y_star, mask = _eprop_setup(n_adaptive)
    loss_ref, ref = _eprop_reference(model, x, y_star, mask)
    res = eprop_brian2(model, x, y_star, mask)
    assert res.loss == pytest.approx(loss_ref, rel=1e-12)
    M = model.mask_rec.numpy() != 0
    ref["W_rec"] = ref["W_rec"] * M  # off-mask entries are not synapses (and not weights of the model)
    for k in ("W_rec", "W_in", "W_out", "b_out"):
        assert np.linalg.norm(ref[k]) > 1e-3, f"{k}: update too small to be a meaningful test"
        assert _rel(res.grads[k], ref[k]) < 1e-10, (k, _rel(res.grads[k], ref[k]))
    pg = res.param_grads(model)  # sign_constraint "none": W_eff = mask ⊙ θ
    np.testing.assert_allclose(pg["theta_rec"].numpy(), res.grads["W_rec"], rtol=0, atol=0)
    dW = res.delta(lr=0.1)["W_rec"]
    assert np.allclose(dW, -0.1 * res.grads["W_rec"])
    assert (np.abs(res.grads["W_rec"]) > 0).sum() > 0.3 * M.sum()  # synapses from silent neurons stay at 0


@pytest.mark.parametrize("readout_norm", [True, False])
def test_eprop_in_brian2_matches_spikelearn_rule(readout_norm):
    from spikelearn.rules import EProp
    from spikelearn.tasks import regression_loss

    model, x, y_star, mask = _eprop_setup(0, readout_norm=readout_norm)
    _, grads = EProp().gradients(model, x, y_star, mask, regression_loss)
    res = eprop_brian2(model, x, y_star, mask)
    mine = res.param_grads(model)
    for name in ("theta_rec", "theta_in", "theta_out", "b_out"):
        a, g = mine[name].detach().numpy(), grads[name].detach().double().numpy()
        assert _rel(a, g) < 1e-10, (name, _rel(a, g))


# ------------------------------------------------------------------------------------------------ bad input, state
def test_unsupported_features_are_named():
    from spikelearn.neurons.surrogate import Surrogate

    c = erdos_renyi(10, 0.3, seed=0)
    x = torch.zeros(5, 1, 2, dtype=torch.float64)
    with pytest.raises(UnsupportedFeatureError, match="neuron type of RateRNN"):
        compare_with_brian2(RateRNN(c, 2, 1), x)
    with pytest.raises(UnsupportedFeatureError, match="smooth=True"):
        run_brian2(SpikingRNN(c, 2, 1, surrogate=Surrogate("eprop", smooth=True)), x)
    with pytest.raises(UnsupportedFeatureError, match="surrogate 'fast_sigmoid'"):
        eprop_brian2(SpikingRNN(c, 2, 1, surrogate="fast_sigmoid"), x, torch.zeros(5, 1, 1))
    with pytest.raises(UnsupportedFeatureError, match="readout 'filtered_current'"):
        eprop_brian2(SpikingRNN(c, 2, 1, readout="filtered_current"), x, torch.zeros(5, 1, 1))
    with pytest.raises(ValueError, match=r"x must have shape \(T, B, 2\)"):
        run_brian2(SpikingRNN(c, 2, 1), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="target must be one of"):
        run_brian2(SpikingRNN(c, 2, 1), x, target="gpu")
    import numpy as np

    from spikelearn import Circuit
    W = np.asarray(c.weights(dense=True))
    gap = np.zeros((10, 10))
    gap[0, 1] = gap[1, 0] = 0.5
    with pytest.raises(UnsupportedFeatureError, match="gap junctions"):
        eprop_brian2(SpikingRNN(Circuit.from_dense(W, gap=gap), 2, 1), x, torch.zeros(5, 1, 1))


def test_a_silent_network_is_flagged():
    c = erdos_renyi(10, 0.3, seed=0)
    rep = compare_with_brian2(SpikingRNN(c, 2, 1), torch.zeros(20, 1, 2, dtype=torch.float64))
    assert rep.summary["spikes_spikelearn"] == 0 and "WARNING: no neuron spiked" in rep.verdict


def test_brian2_global_state_is_restored():
    import brian2 as b2

    old_dt, old_target = b2.defaultclock.dt, b2.prefs["codegen.target"]
    b2.defaultclock.dt = 0.25 * b2.ms
    try:
        run_brian2(SpikingRNN(erdos_renyi(10, 0.3, seed=0), 2, 1, dt_ms=1.0), _poisson(20, 1, 2, 0.3, seed=0))
        assert b2.defaultclock.dt == 0.25 * b2.ms
        assert b2.prefs["codegen.target"] == old_target
        assert b2.get_device().__class__.__name__ == "RuntimeDevice"
    finally:
        b2.defaultclock.dt = old_dt


@pytest.mark.slow
@pytest.mark.parametrize("target", ["cython", "cpp_standalone"])
def test_compiled_targets(target, tmp_path, same_as_brian2):
    """Compiled Brian2 targets give the same spikes; compiled code goes into tmp_path."""
    torch.manual_seed(0)
    model = SpikingRNN(erdos_renyi(60, 0.2, seed=1), 10, 2, n_adaptive=30, n_ref=3, tau_adapt_ms=200.0,
                       dtype="float64")
    x = _poisson(300, 2, 10, 0.05, seed=2)
    rep = same_as_brian2(model, x, target=target, build_dir=tmp_path / "build")
    assert any((tmp_path / "build").iterdir())
    if target == "cpp_standalone":
        res = eprop_brian2(model, x, torch.zeros(300, 2, 2), target=target, build_dir=tmp_path / "build2")
        assert np.isfinite(res.grads["W_rec"]).all()
    assert rep.summary["target"] == target


def test_eprop_in_brian2_analog_input_scaling_a():
    """The TimedArray input path with traces of analog inputs; scaling A, ALIF, refractory."""
    torch.manual_seed(3)
    model = SpikingRNN(erdos_renyi(20, 0.3, seed=5), 4, 1, scaling="A", n_ref=2, n_adaptive=5,
                       tau_adapt_ms=100.0, dtype="float64")
    x = torch.rand(80, 2, 4, dtype=torch.float64) * 0.7
    y_star = torch.sin(torch.arange(80, dtype=torch.float64) / 10)[:, None, None].expand(80, 2, 1).clone()
    mask = torch.ones(80, 2, dtype=torch.float64)
    _, ref = _eprop_reference(model, x, y_star, mask)
    res = eprop_brian2(model, x, y_star, mask)
    ref["W_rec"] = ref["W_rec"] * (model.mask_rec.numpy() != 0)
    for k in ("W_rec", "W_in"):
        assert np.linalg.norm(ref[k]) > 1e-3
        assert _rel(res.grads[k], ref[k]) < 1e-10, (k, _rel(res.grads[k], ref[k]))


# ------------------------------------------------------------------------------------------------ current-based synapses
@pytest.mark.parametrize("scaling,v_th", [("A", 0.6), ("B", 0.03)])
def test_current_based_synapses_match_brian2(scaling, v_th, same_as_brian2):
    """tau_syn_ms > 0 (per neuron, some 0 = instantaneous), LIF + ALIF, refractory, spike input: identical spikes
    and membranes in Brian2, where the synaptic current decays by α_s at the end of each step."""
    torch.manual_seed(0)
    n = 80
    tau_s = np.where(np.arange(n) % 5 == 0, 0.0, 2.0 + 8.0 * np.random.default_rng(0).random(n))
    model = SpikingRNN(erdos_renyi(n, 0.15, g=1.0, seed=1), 20, 2, scaling=scaling, v_th=v_th, tau_syn_ms=tau_s,
                       n_adaptive=40, n_ref=3, tau_adapt_ms=300.0, dtype="float64")
    x = _poisson(500, 2, 20, 0.04, seed=1)
    rep = same_as_brian2(model, x)
    assert rep.summary["spikes_spikelearn"] > 200
    # the filter changes the network's response: the same weights without synapses spike differently
    torch.manual_seed(0)
    plain = SpikingRNN(erdos_renyi(n, 0.15, g=1.0, seed=1), 20, 2, scaling=scaling, v_th=v_th, n_adaptive=40,
                       n_ref=3, tau_adapt_ms=300.0, dtype="float64")
    assert not torch.equal(plain(x, record=True).record.z, rep.spikelearn["record"].z)


def test_current_based_synapses_with_analog_input_match_brian2(same_as_brian2):
    torch.manual_seed(1)
    model = SpikingRNN(erdos_renyi(40, 0.2, seed=2), 3, 2, n_adaptive=10, n_ref=2, tau_syn_ms=5.0,
                       dtype="float64")
    x = torch.rand(200, 2, 3, dtype=torch.float64) * 0.5
    rep = same_as_brian2(model, x)
    assert rep.summary["spikes_spikelearn"] > 0


@pytest.mark.parametrize("n_adaptive", [0, 15], ids=["LIF", "ALIF"])
def test_eprop_in_brian2_with_current_based_synapses_matches_the_rule(n_adaptive):
    """Brian2 synapses filter their presynaptic signal (P = α_s P + pre) before the e-prop trace; the gradients
    equal spikelearn's EProp (batched adjoint form, per-neuron τ_s) and the §2.7 autograd reference."""
    from spikelearn.rules import EProp
    from spikelearn.rules import _reference as ref
    from spikelearn.tasks import regression_loss

    model, x, y_star, mask = _eprop_setup(n_adaptive, tau_syn_ms=np.linspace(1.0, 8.0, 30))
    _, grads = EProp().gradients(model, x, y_star, mask, regression_loss)
    _, want = ref.eprop_autograd(model, x, y_star, mask, regression_loss)
    res = eprop_brian2(model, x, y_star, mask)
    mine = res.param_grads(model)
    for name in ("theta_rec", "theta_in", "theta_out", "b_out"):
        a, g, w = mine[name].detach().numpy(), grads[name].detach().numpy(), want[name].detach().numpy()
        assert np.linalg.norm(w) > 1e-3, name
        assert _rel(a, g) < 1e-10 and _rel(g, w) < 1e-10, (name, _rel(a, g), _rel(g, w))


def test_reset_zero_matches_brian2(same_as_brian2):
    """reset="zero" (v ← v (1 − z) after the leak, then the drive), LIF + ALIF, refractory, synapses on half the
    neurons and gap junctions (the C. elegans connectome): identical spikes and membranes."""
    circ = connectomes.load("celegans_varshney2011", signs="gaba_inhibitory", io=None, weight_per_synapse=0.02,
                            gap_weight_per_junction=0.005)
    torch.manual_seed(0)
    tau_s = np.where(np.arange(circ.n) % 2 == 0, 0.0, 4.0)
    model = SpikingRNN(circ, 20, 2, scaling="A", n_adaptive=140, n_ref=3, tau_adapt_ms=300.0, reset="zero",
                       tau_syn_ms=tau_s, dtype="float64")
    rep = same_as_brian2(model, _poisson(400, 1, 20, 0.05, seed=1))
    assert rep.summary["spikes_spikelearn"] > 100


@pytest.mark.parametrize("n_adaptive", [0, 15], ids=["LIF", "ALIF"])
def test_eprop_in_brian2_with_reset_zero_matches_the_rule(n_adaptive):
    """reset="zero": the Brian2 trace leaks by α (1 − z_post^{t-1}); = spikelearn's EProp (and synapses on)."""
    from spikelearn.rules import EProp
    from spikelearn.tasks import regression_loss

    model, x, y_star, mask = _eprop_setup(n_adaptive, reset="zero", tau_syn_ms=3.0)
    assert model(x, record=True).record.z.sum() > 50
    _, grads = EProp().gradients(model, x, y_star, mask, regression_loss)
    mine = eprop_brian2(model, x, y_star, mask).param_grads(model)
    for name in ("theta_rec", "theta_in", "theta_out", "b_out"):
        a, g = mine[name].detach().numpy(), grads[name].detach().numpy()
        assert np.linalg.norm(g) > 1e-3 and _rel(a, g) < 1e-10, (name, _rel(a, g))


def test_relaxed_initial_state_matches_brian2(same_as_brian2):
    """A model whose trials start from ongoing activity: its initial state (v, adaptation, last spikes,
    refractory counters, synaptic currents, readout filter) is written into the Brian2 network first."""
    torch.manual_seed(0)
    model = SpikingRNN(erdos_renyi(60, 0.2, g=1.5, seed=3), 10, 2, scaling="A", n_adaptive=30, n_ref=3,
                       tau_adapt_ms=300.0, tau_syn_ms=4.0, init_state_std=2.0, init_relax_steps=20, init_seed=1,
                       dtype="float64")
    s0 = model.init_state(2)
    assert s0.z.any() and s0.ref.any() and s0.a.any()
    rep = same_as_brian2(model, _poisson(200, 2, 10, 0.05, seed=2))
    assert rep.summary["spikes_spikelearn"] > 50


def test_eprop_in_brian2_from_a_relaxed_initial_state_matches_the_rule():
    from spikelearn.rules import EProp
    from spikelearn.tasks import regression_loss

    model, x, y_star, mask = _eprop_setup(15, init_state_std=2.0, init_relax_steps=5, init_seed=2)
    assert model.init_state(x.shape[1]).z.any()
    _, grads = EProp().gradients(model, x, y_star, mask, regression_loss)
    mine = eprop_brian2(model, x, y_star, mask).param_grads(model)
    for name in ("theta_rec", "theta_in", "theta_out", "b_out"):
        a, g = mine[name].detach().numpy(), grads[name].detach().numpy()
        assert np.linalg.norm(g) > 1e-3 and _rel(a, g) < 1e-10, (name, _rel(a, g))
