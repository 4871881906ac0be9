"""Trainer: learning to criterion, same-seed determinism, kill-and-resume, NaN detection, measurement hooks."""

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from spikelearn.config import (CircuitConfig, ModelConfig, OptimizerConfig, RuleConfig, RunConfig, TaskConfig,
                               TrainConfig)
from spikelearn.build import build, train, validate_config
from spikelearn.train import CHECKPOINT, Measurement, TrainingDiverged


def _small_cfg(tmp_path, **train_kw):
    return RunConfig(
        circuit=CircuitConfig(kind="gaussian", n=32, options={"g": 1.0}),
        model=ModelConfig(type="rate", options={"form": "richlazy", "activation": "relu"}),
        task=TaskConfig(name="delayed_match_to_sample"),
        rule=RuleConfig(name="bptt"),
        optimizer=OptimizerConfig(name="adam", lr=1e-2),
        train=TrainConfig(**{"iterations": 12, "batch_size": 16, "seed": 3, "eval_every": 4, "quiet": True,
                             "out_dir": str(tmp_path / "run"), **train_kw}),
    )


def test_rate_network_learns_dms(tmp_path):
    """BPTT trains a rate network on delayed match-to-sample to >= 95 % within 500 iterations."""
    cfg = RunConfig(
        circuit=CircuitConfig(kind="gaussian", n=64, options={"g": 1.0}),
        model=ModelConfig(type="rate", options={"form": "richlazy", "activation": "relu"}),
        task=TaskConfig(name="delayed_match_to_sample"),
        rule=RuleConfig(name="bptt"),
        optimizer=OptimizerConfig(name="adam", lr=1e-2),
        train=TrainConfig(iterations=500, batch_size=32, seed=0, eval_every=50, eval_batch_size=512, quiet=True,
                          out_dir=str(tmp_path / "dms")),
    )
    hist, _ = train(cfg)
    acc = hist["accuracy"].dropna()
    assert acc.iloc[-1] >= 0.95, acc.tolist()
    assert acc.iloc[0] < 0.8


def test_spiking_network_learns_short_evidence_accumulation(tmp_path):
    """BPTT trains a LIF/ALIF network on a shortened evidence-accumulation task (3 cues, T = 375 ms) to >= 85 %."""
    cfg = RunConfig(
        circuit=CircuitConfig(kind="gaussian", n=40, options={"g": 1.0}),
        model=ModelConfig(type="spiking", options={"n_adaptive": 20, "tau_adapt_ms": 500.0, "v_th": 0.6,
                                                    "scaling": "A", "n_ref": 5}),
        task=TaskConfig(name="evidence_accumulation",
                        options={"n_cues": 3, "cue_ms": 50.0, "gap_ms": 25.0, "delay_ms": 100.0, "recall_ms": 50.0}),
        rule=RuleConfig(name="bptt"),
        optimizer=OptimizerConfig(name="adam", lr=1e-2),
        train=TrainConfig(iterations=50, batch_size=32, seed=0, eval_every=25, eval_batch_size=256, quiet=True,
                          out_dir=str(tmp_path / "ea")),
    )
    hist, _ = train(cfg)
    acc = hist["accuracy"].dropna()
    assert acc.iloc[0] < 0.7
    assert acc.iloc[-1] >= 0.85, acc.tolist()


def test_same_seed_same_run(tmp_path):
    h1, m1 = train(_small_cfg(tmp_path / "a"))
    h2, m2 = train(_small_cfg(tmp_path / "b"))
    assert h1["loss"].tolist() == h2["loss"].tolist()
    for (n, p), (_, q) in zip(m1.named_parameters(), m2.named_parameters()):
        assert torch.equal(p, q), n
    h3, _ = train(dataclasses.replace(_small_cfg(tmp_path / "c"),
                                      train=dataclasses.replace(_small_cfg(tmp_path).train, seed=4,
                                                                out_dir=str(tmp_path / "c"))))
    assert h3["loss"].tolist() != h1["loss"].tolist()


@pytest.mark.parametrize("extra", [
    {},
    # lr schedule (its state in the checkpoint; steps at 4, 8 straddle the checkpoint at 5) and an L2 penalty
    {"optimizer": OptimizerConfig(name="adam", lr=1e-2, schedule="steplr",
                                  schedule_options={"step_size": 4, "gamma": 0.5}), "l2": 1e-2},
])
def test_kill_and_resume_is_bit_identical(tmp_path, extra):
    def cfg_(out):
        c = _small_cfg(out, iterations=12, checkpoint_every=5, l2=extra.get("l2", 0.0))
        return dataclasses.replace(c, optimizer=extra.get("optimizer", c.optimizer))

    full, m_full = train(cfg_(tmp_path / "full"))
    # "killed" run: stops after 5 iterations (its checkpoint is at 5), then resumed to 12 from a fresh process state
    cfg = cfg_(tmp_path / "killed")
    *_, trainer = build(cfg)
    trainer.run(iterations=5)
    hist, m_res = train(cfg, resume=True)
    assert hist["loss"].tolist() == full["loss"].tolist()
    assert list(hist.columns) == list(full.columns)
    if extra:
        assert hist["lr"].tolist() == full["lr"].tolist() == [1e-2] * 4 + [5e-3] * 4 + [2.5e-3] * 4
    assert hist["iteration"].tolist() == list(range(1, 13))
    for (n, p), (_, q) in zip(m_full.named_parameters(), m_res.named_parameters()):
        assert torch.equal(p, q), n


@pytest.mark.parametrize("rule", [
    RuleConfig(name="rflo", options={"feedback": "adaptive"}),      # adaptive feedback matrix kept by the rule
    RuleConfig(name="reward", options={"seed": 1}),                 # running baseline + the rule's own generator
    RuleConfig(name="reward", options={"baseline": "batch"}),       # noise from torch's global generator
    RuleConfig(name="mdgl", options={"feedback": "adaptive"}),      # kept inside MDGL's e-prop/RFLO engines
])
def test_resume_is_bit_identical_for_rules_with_state(tmp_path, rule):
    def cfg(out):
        c = _small_cfg(out, iterations=8, checkpoint_every=3)
        return dataclasses.replace(c, rule=rule, model=ModelConfig(type="rate", options={
            "form": "pre_activation", "activation": "tanh", "tau_ms": 500.0}))

    full, m_full = train(cfg(tmp_path / "full"))
    *_, trainer = build(cfg(tmp_path / "killed"))
    trainer.run(iterations=4)                   # checkpoint at 3; iteration 4 is lost with the "killed" process
    torch.manual_seed(12345)                    # another process: the global generator is elsewhere
    hist, m_res = train(cfg(tmp_path / "killed"), resume=True)
    assert hist["loss"].tolist() == full["loss"].tolist()
    for (n, p), (_, q) in zip(m_full.named_parameters(), m_res.named_parameters()):
        assert torch.equal(p, q), n


def test_resume_refuses_a_changed_configuration_but_may_train_longer(tmp_path):
    from spikelearn.config import ConfigError

    cfg = _small_cfg(tmp_path, iterations=6, checkpoint_every=3)
    train(cfg)
    changed = dataclasses.replace(cfg, optimizer=OptimizerConfig(name="adam", lr=0.5))
    with pytest.raises(ConfigError, match=r"optimizer.lr"):
        train(changed, resume=True)
    longer = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, iterations=9))
    hist, _ = train(longer, resume=True)
    assert hist["iteration"].tolist() == list(range(1, 10))


def test_resume_refuses_a_changed_package_default(tmp_path, monkeypatch):
    """A run config names only what the user gave; the checkpoint also keeps every resolved setting (defaults
    included), so a default that changed since the run started stops the resume, naming the setting."""
    from spikelearn import models
    from spikelearn.config import ConfigError

    cfg = _small_cfg(tmp_path, iterations=6, checkpoint_every=3)
    train(cfg)
    saved = json.loads((tmp_path / "run" / "settings.json").read_text())
    assert saved["model"]["tau_ms"] == 100.0 and saved["model"]["readout_from"] == "r"
    assert saved["task"]["class"] == "DelayedMatchToSample" and saved["rule"]["class"] == "BPTT"
    longer = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, iterations=9))
    monkeypatch.setitem(models.RateRNN.__init__.__kwdefaults__, "tau_ms", 200.0)  # a "new version" default
    with pytest.raises(ConfigError, match=r"model\.tau_ms: 100\.0 -> 200\.0"):
        train(longer, resume=True)
    monkeypatch.undo()
    ck_path = tmp_path / "run" / "checkpoint.pt"  # a setting that did not exist when the run started is no change
    ck = torch.load(ck_path, weights_only=True)
    s = json.loads(ck["settings"])
    del s["model"]["readout_from"]
    ck["settings"] = json.dumps(s)
    torch.save(ck, ck_path)
    hist, _ = train(longer, resume=True)
    assert hist["iteration"].tolist() == list(range(1, 10))


def test_train_values_out_of_range_are_config_errors():
    from spikelearn.config import ConfigError, FlossingSectionConfig, config_from_dict

    for key, value in [("iterations", 0), ("batch_size", 0), ("eval_batch_size", 0), ("seed", -1),
                       ("eval_every", -2), ("checkpoint_every", -1), ("update_every_steps", -1),
                       ("grad_clip", -1.0), ("rewiring_l1", -1.0), ("l2", -1.0)]:
        bad = dataclasses.replace(RunConfig(), train=dataclasses.replace(RunConfig().train, **{key: value}))
        with pytest.raises(ConfigError, match=rf"\[train\] {key} must be >="):
            validate_config(bad)
    with pytest.raises(ConfigError, match=r"\[optimizer\] lr must be > 0"):
        validate_config(dataclasses.replace(RunConfig(), optimizer=OptimizerConfig(lr=-1.0)))
    with pytest.raises(ConfigError, match=r"every \(5\) and steps \(0\) go together"):
        validate_config(dataclasses.replace(RunConfig(), flossing=FlossingSectionConfig(every=5)))
    with pytest.raises(ConfigError, match=r"\[train\] grad_clip must be a finite number"):
        config_from_dict({"train": {"grad_clip": float("nan")}})


def test_training_in_chunks_gives_the_history_of_one_call(tmp_path):
    calls = []

    def probe(model, task, iteration):
        calls.append(iteration)
        return 1.0

    full = train(_small_cfg(tmp_path / "a", iterations=12, eval_every=5))[0]
    *_, trainer = build(_small_cfg(tmp_path / "b", iterations=12, eval_every=5))
    trainer.measurements = (Measurement("probe", probe, every=100),)
    trainer.run(iterations=7)
    hist = trainer.run()
    assert calls == [12]  # measured at the run's end only, not at the end of the first chunk
    pd.testing.assert_frame_equal(hist.drop(columns=["wall_time_s", "probe"]), full.drop(columns=["wall_time_s"]))


def test_divergence_names_only_a_checkpoint_of_this_run(tmp_path):
    """A fresh run into a folder that holds an older run's checkpoint must not call that one 'last good'."""
    train(_small_cfg(tmp_path, iterations=4, checkpoint_every=2))      # an older run leaves a checkpoint
    *_, trainer = build(_small_cfg(tmp_path, iterations=4))
    task_loss = trainer.task.loss
    trainer.loss_fn = lambda y_hat, y, mask: task_loss(y_hat, y, mask) * math.nan
    with pytest.raises(TrainingDiverged, match="no checkpoint was written"):
        trainer.run()


def test_measurement_may_not_overwrite_a_column(tmp_path):
    def loss(model, task, iteration):
        return 123.0

    cfg = _small_cfg(tmp_path, iterations=2)
    *_, trainer = build(cfg)
    trainer.measurements = (Measurement("loss", loss, every=1),)
    with pytest.raises(ValueError, match=r"measurement 'loss' writes column\(s\) \['loss'\]"):
        trainer.run()


def test_diverged_evaluation_stops_training_without_a_checkpoint_of_it(tmp_path):
    cfg = dataclasses.replace(_small_cfg(tmp_path, iterations=5, eval_every=1, checkpoint_every=1),
                              optimizer=OptimizerConfig(name="sgd", lr=1e38))
    with pytest.raises(TrainingDiverged, match=r"evaluation loss is (nan|inf)|non-finite"):
        train(cfg)
    ck = tmp_path / "run" / CHECKPOINT
    if ck.exists():  # whatever checkpoint exists holds finite parameters
        state = torch.load(ck, weights_only=True)["model"]
        assert all(torch.isfinite(v).all() for v in state.values())


def test_nan_loss_stops_with_iteration_and_keeps_checkpoint(tmp_path):
    cfg = _small_cfg(tmp_path, iterations=10, checkpoint_every=2)
    *_, trainer = build(cfg)
    task_loss = trainer.task.loss

    def loss_fn(y_hat, y, mask):  # becomes NaN during iteration 5 (trainer.iteration counts finished ones)
        out = task_loss(y_hat, y, mask)
        return out * math.nan if trainer.iteration == 4 and trainer.model.training else out

    trainer.loss_fn = loss_fn
    with pytest.raises(TrainingDiverged, match=r"iteration 5.*checkpoint.*iteration 4"):
        trainer.run()
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ck["iteration"] == 4
    assert all(math.isfinite(float(v)) for v in ck["model"].values() for v in v.flatten()[:3])


def test_measurements_join_history(tmp_path):
    cfg = _small_cfg(tmp_path, iterations=7)
    *_, trainer = build(cfg)
    trainer.measurements = (
        Measurement("w_norm", lambda m, t, it: float(m.effective_weights().W_rec.detach().norm()), every=3),
        Measurement("pair", lambda m, t, it: {"a": it, "b": 2 * it}, every=2),
    )
    hist = trainer.run()
    assert hist.loc[hist.iteration == 3, "w_norm"].notna().all()
    assert hist.loc[hist.iteration == 4, "w_norm"].isna().all()
    assert hist.loc[hist.iteration == 4, "pair.b"].item() == 8
    # every `every` iterations and at the last one (7), which is not a multiple of either
    assert hist.dropna(subset=["w_norm"]).iteration.tolist() == [3, 6, 7]
    assert hist.dropna(subset=["pair.a"]).iteration.tolist() == [2, 4, 6, 7]
    assert {"iteration", "loss", "accuracy", "firing_rate_hz", "wall_time_s"} <= set(hist.columns)
    assert hist["wall_time_s"].is_monotonic_increasing


def test_flossing_schedule_and_rewiring_resume_bit_identical(tmp_path):
    """Pre-/inter-flossing and DEEP R rewiring are trainer options; a killed run with both resumes exactly."""
    from spikelearn.config import FlossingSectionConfig

    def cfg(out):
        c = _small_cfg(out, iterations=8, checkpoint_every=3, rewiring=True, rewiring_l1=0.5)
        return dataclasses.replace(
            c, circuit=CircuitConfig(kind="dale", n=24, options={"p": 0.3}),
            model=ModelConfig(type="rate", options={"form": "pre_activation", "activation": "tanh"}),
            flossing=FlossingSectionConfig(pre_steps=2, every=2, steps=1, max_times=2, batch_size=2,
                                           options={"k": 2, "transient_steps": 2}))

    full, m_full = train(cfg(tmp_path / "full"))
    assert full.loc[full.iteration.isin([2, 4]), "floss_loss"].notna().all()
    assert full.loc[full.iteration.isin([1, 3, 6]), "floss_loss"].isna().all()  # max_times = 2
    assert (full["n_rewired"] > 0).any()
    *_, trainer = build(cfg(tmp_path / "killed"))
    trainer.run(iterations=3)
    hist, m_res = train(cfg(tmp_path / "killed"), resume=True)
    assert hist["loss"].tolist() == full["loss"].tolist()
    for (n, p), (_, q) in zip(m_full.named_parameters(), m_res.named_parameters()):
        assert torch.equal(p, q), n


def test_flossing_options_checked():
    from spikelearn.config import ConfigError, FlossingSectionConfig
    from spikelearn.build import validate_config

    bad = dataclasses.replace(RunConfig(), flossing=FlossingSectionConfig(pre_steps=1, options={"kk": 2}))
    with pytest.raises(ConfigError, match=r"'kk'.*\[flossing.options\]"):
        validate_config(bad)
    bad = dataclasses.replace(RunConfig(), flossing=FlossingSectionConfig(pre_steps=1, inter_lr=-1e-3))
    with pytest.raises(ConfigError, match=r"\[flossing\] inter_lr must be > 0"):
        validate_config(bad)


def test_rewiring_keeps_connection_count_and_signs(tmp_path):
    """DEEP R as a trainer option on a circuit whose mask (allowed synapses) is larger than its initial edges."""
    import numpy as np

    from spikelearn import Circuit
    from spikelearn.circuit import dale
    from spikelearn.models import RateRNN
    from spikelearn.rules import BPTT
    from spikelearn.tasks import make_task
    from spikelearn.config import TrainConfig

    sparse = dale(30, frac_exc=0.8, p=0.2, seed=1)
    allowed = ~np.eye(30, dtype=bool)  # every off-diagonal synapse may form; 20 % exist at the start
    circuit = Circuit.from_dense(sparse.weights(dense=True), mask=allowed, signs=sparse.signs,
                                 cell_types=sparse.cell_types)
    task = make_task("delayed_match_to_sample")
    model = RateRNN(circuit, task.n_in, task.n_out, form="pre_activation", activation="tanh", tau_ms=100.0,
                    dt_ms=100.0, sign_constraint="dale")
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    from spikelearn.train import Trainer

    tr = Trainer(model, task, BPTT(), opt, TrainConfig(iterations=15, batch_size=8, quiet=True, rewiring=True,
                                                     rewiring_l1=2.0, eval_every=0), out_dir=None)
    active0 = {k: v.clone() for k, v in tr.rw_state.active.items()}
    assert int(active0["rec"].sum()) == sparse.n_edges
    hist = tr.run()
    active = tr.rw_state.active
    for k in active0:
        assert int(active[k].sum()) == int(active0[k].sum()), k
    assert not torch.equal(active["rec"], active0["rec"])  # synapses moved
    assert hist["n_rewired"].sum() > 0
    W = model.effective_weights().W_rec.detach()
    assert torch.all(W[~active["rec"]] == 0)
    signs = torch.tensor(sparse.signs.astype(float), dtype=W.dtype)
    assert torch.all(W * signs[None, :] >= 0)  # every synapse keeps its presynaptic neuron's sign


def test_initial_model_hook_reference_and_resume(tmp_path):
    """A hook declaring ``initial_model`` gets the model as built (not the live one), also after a resume."""
    from spikelearn.analysis.hooks import weight_change

    built = build(_small_cfg(tmp_path / "ref"))[1]
    seen = {}

    def hook(model, task, iteration, *, initial_model):
        seen["ref"] = initial_model
        assert initial_model is not model
        return weight_change(model, task, iteration, initial_model=initial_model)

    def run(out, stop=None):
        cfg = _small_cfg(out, iterations=9, checkpoint_every=3, eval_every=3)
        *_, trainer = build(cfg)
        trainer.measurements = (Measurement("dW", hook, every=3),)
        if stop is None:
            return trainer.run()
        trainer.run(iterations=stop)
        *_, trainer2 = build(cfg)
        trainer2.measurements = (Measurement("dW", hook, every=3),)
        with torch.no_grad():  # the rebuilt model differs from the first one: the reference must come from the checkpoint
            for p in trainer2.model.parameters():
                p.add_(1.0)
        trainer2.initial_state = {k: v.detach().clone() for k, v in trainer2.model.state_dict().items()}
        trainer2.load_checkpoint()
        return trainer2.run()

    full = run(tmp_path / "full")
    for (n, p), (_, q) in zip(built.named_parameters(), seen["ref"].named_parameters()):
        assert torch.equal(p, q), n
        assert not q.requires_grad
    rel = full.set_index("iteration")["dW.W_rec.rel"].dropna()
    assert list(rel.index) == [3, 6, 9] and (rel > 0).all() and rel.is_monotonic_increasing
    resumed = run(tmp_path / "killed", stop=3)
    assert resumed["dW.W_rec.rel"].dropna().tolist() == rel.tolist()
    assert resumed["loss"].tolist() == full["loss"].tolist()


def test_sampled_connectome_circuit_follows_the_run_seed():
    """A connectome loader that samples (mouse_v1) gets the run's derived seed unless its options fix one."""
    from spikelearn.build import build_circuit
    from spikelearn.train import derive_seeds

    def W(run_seed, **opts):
        cfg = RunConfig(circuit=CircuitConfig(kind="connectome", name="mouse_v1", options={"n": 60, **opts}))
        return build_circuit(cfg, derive_seeds(run_seed)["circuit"]).weights(dense=True)

    assert not np.array_equal(W(0), W(1))
    assert np.array_equal(W(0), W(0))
    assert np.array_equal(W(0, seed=7), W(1, seed=7))


def test_circuit_n_that_disagrees_with_a_connectome_is_an_error():
    """[circuit] n does not size a connectome or a block model: a value that disagrees with the circuit built is
    an error naming both sizes, not silently ignored; the matching value (and the default) pass."""
    from spikelearn.config import ConfigError
    from spikelearn.build import build_circuit

    def cfg(n, **kw):
        return RunConfig(circuit=CircuitConfig(kind="connectome", name="celegans_varshney2011", n=n, **kw))

    assert build_circuit(cfg(279), 0).n == 279
    assert build_circuit(cfg(CircuitConfig().n), 0).n == 279
    with pytest.raises(ConfigError, match=r"n = 300.*'celegans_varshney2011'.*279 neurons"):
        build_circuit(cfg(300), 0)
    p = pd.DataFrame([[0.1, 0.2], [0.3, 0.1]], index=["E", "I"], columns=["E", "I"])
    block = RunConfig(circuit=CircuitConfig(kind="block_model", n=50, options={"p_table": p,
                                                                               "sizes": {"E": 8, "I": 2}}))
    with pytest.raises(ConfigError, match=r"n = 50.*block_model circuit has 10 neurons"):
        build_circuit(block, 0)
    ok = dataclasses.replace(block, circuit=dataclasses.replace(block.circuit, n=10))
    assert build_circuit(ok, 0).n == 10


def test_task_aligned_low_rank_circuit_from_a_run_config(tmp_path):
    """kind = "task_aligned_low_rank" gets n_in/n_out from the task, and the model starts from the circuit's own
    input/readout weights, so W_rec is aligned with the weights the model actually uses."""
    from spikelearn.config import ConfigError

    cfg = dataclasses.replace(
        _small_cfg(tmp_path), circuit=CircuitConfig(kind="task_aligned_low_rank", n=40, options={"rank": 4}),
        model=ModelConfig(type="rate", options={"form": "richlazy", "activation": "relu", "allow_autapses": True}))
    circuit, model, task, *_ = build(cfg)
    eff = model.effective_weights()
    W_in, W_rec, W_out = (eff.W_in.detach().double().numpy(), eff.W_rec.detach().double().numpy(),
                          eff.W_out.detach().double().numpy())
    assert W_in.shape == (40, task.n_in) and circuit.metadata["n_in"] == task.n_in
    np.testing.assert_allclose(W_in, circuit.input_weights, rtol=1e-6)
    np.testing.assert_allclose(W_out, circuit.output_weights, rtol=1e-6)
    Q, _ = np.linalg.qr(np.concatenate([W_in, W_out.T], axis=1)[:, :4])
    np.testing.assert_allclose(Q @ (Q.T @ W_rec), W_rec, atol=1e-5)
    np.testing.assert_allclose((W_rec @ Q) @ Q.T, W_rec, atol=1e-5)
    assert np.linalg.matrix_rank(W_rec, tol=1e-5) == 4
    bad = dataclasses.replace(cfg, circuit=CircuitConfig(kind="task_aligned_low_rank", n=40,
                                                         options={"rank": 4, "n_in": 3}))
    with pytest.raises(ConfigError, match="come from the task"):
        build(bad)


def test_rule_model_mismatch_and_existing_run_folder(tmp_path):
    from spikelearn.config import ConfigError

    bad = dataclasses.replace(_small_cfg(tmp_path), rule=RuleConfig(name="rflo"), model=ModelConfig(type="spiking"))
    with pytest.raises(ConfigError, match=r"'rflo' applies to \['rate'\] models"):
        validate_config(bad)
    cfg = _small_cfg(tmp_path, iterations=3)
    train(cfg)
    with pytest.raises(FileExistsError, match="already holds a run"):
        train(cfg)
    assert len(train(cfg, overwrite=True)[0]) == 3


def test_model_warns_when_it_leaves_out_a_circuits_autapses():
    import networkx as nx

    from spikelearn import Circuit
    from spikelearn.models import SpikingRNN

    G = nx.DiGraph()
    G.add_edge(0, 1, weight=0.5)
    G.add_edge(1, 1, weight=0.3)
    c = Circuit.from_graph(G)
    with pytest.warns(UserWarning, match="1 autapse"):
        m = SpikingRNN(c, 1, 1)
    assert float(m.effective_weights().W_rec[1, 1].detach()) == 0.0
    kept = SpikingRNN(c, 1, 1, allow_autapses=True)
    assert float(kept.effective_weights().W_rec[1, 1].detach()) != 0.0


def test_current_based_synapses_from_a_run_config(tmp_path):
    """[model.options] tau_syn_ms trains end to end with e-prop and resumes bit-identically (the synaptic current
    is re-initialised every trial); every rule accepts synapses and reset = "zero"."""
    def cfg(out, rule="eprop"):
        return RunConfig(
            circuit=CircuitConfig(kind="gaussian", n=24, options={"g": 1.0}),
            model=ModelConfig(type="spiking", options={"n_adaptive": 12, "tau_syn_ms": 5.0, "v_th": 0.6}),
            task=TaskConfig(name="evidence_accumulation", options={"n_cues": 3, "cue_ms": 50.0, "gap_ms": 25.0,
                                                                   "delay_ms": 50.0, "recall_ms": 50.0}),
            rule=RuleConfig(name=rule), optimizer=OptimizerConfig(name="adam", lr=5e-3),
            train=TrainConfig(iterations=6, batch_size=8, seed=2, eval_every=3, eval_batch_size=16, quiet=True,
                              checkpoint_every=3, out_dir=str(out)))

    full, m_full = train(cfg(tmp_path / "full"))
    assert m_full.synaptic and np.isfinite(full["loss"]).all()
    *_, trainer = build(cfg(tmp_path / "killed"))
    trainer.run(iterations=4)
    hist, m_res = train(cfg(tmp_path / "killed"), resume=True)
    assert hist["loss"].tolist() == full["loss"].tolist()
    for (n, p), (_, q) in zip(m_full.named_parameters(), m_res.named_parameters()):
        assert torch.equal(p, q), n
    for rule in ("mdgl", "modprop", "reward"):
        validate_config(cfg(tmp_path / rule, rule))
    zero = dataclasses.replace(cfg(tmp_path / "z", "reward"), model=ModelConfig(type="spiking", options={
        "n_adaptive": 12, "reset": "zero"}))
    validate_config(zero)
