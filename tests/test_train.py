"""Trainer: learning to criterion, same-seed determinism, kill-and-resume, NaN detection, measurement hooks."""

import dataclasses
import math

import pytest
import torch

from spikelearn.config import (CircuitConfig, ModelConfig, OptimizerConfig, RuleConfig, RunConfig, TaskConfig,
                               TrainConfig)
from spikelearn.train import Measurement, TrainingDiverged, build, train


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


def test_kill_and_resume_is_bit_identical(tmp_path):
    full, m_full = train(_small_cfg(tmp_path / "full", iterations=12, checkpoint_every=5))
    # "killed" run: stops after 5 iterations (its checkpoint is at 5), then resumed to 12 from a fresh process state
    cfg = _small_cfg(tmp_path / "killed", iterations=12, checkpoint_every=5)
    *_, trainer = build(cfg)
    trainer.run(iterations=5)
    torch.manual_seed(999)  # disturb global RNG state: resuming must not depend on it
    hist, m_res = train(cfg, resume=True)
    assert hist["loss"].tolist() == full["loss"].tolist()
    assert hist["iteration"].tolist() == list(range(1, 13))
    for (n, p), (_, q) in zip(m_full.named_parameters(), m_res.named_parameters()):
        assert torch.equal(p, q), n


def test_nan_loss_stops_with_iteration_and_keeps_checkpoint(tmp_path):
    cfg = _small_cfg(tmp_path, iterations=10, checkpoint_every=2)
    *_, trainer = build(cfg)
    task_loss = trainer.task.loss

    def loss_fn(y_hat, y, mask):  # becomes NaN during iteration 5 (trainer.iteration counts finished ones)
        out = task_loss(y_hat, y, mask)
        return out * math.nan if trainer.iteration == 4 else out

    trainer.loss_fn = loss_fn
    with pytest.raises(TrainingDiverged, match=r"iteration 5.*checkpoint.*iteration 4"):
        trainer.run()
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ck["iteration"] == 4
    assert all(math.isfinite(float(v)) for v in ck["model"].values() for v in v.flatten()[:3])


def test_measurements_join_history(tmp_path):
    cfg = _small_cfg(tmp_path, iterations=6)
    *_, trainer = build(cfg)
    trainer.measurements = (
        Measurement("w_norm", lambda m, t, it: float(m.effective_weights().W_rec.detach().norm()), every=3),
        Measurement("pair", lambda m, t, it: {"a": it, "b": 2 * it}, every=2),
    )
    hist = trainer.run()
    assert hist.loc[hist.iteration == 3, "w_norm"].notna().all()
    assert hist.loc[hist.iteration == 4, "w_norm"].isna().all()
    assert hist.loc[hist.iteration == 4, "pair.b"].item() == 8
    assert {"iteration", "loss", "accuracy", "firing_rate_hz", "wall_time_s"} <= set(hist.columns)
    assert hist["wall_time_s"].is_monotonic_increasing
