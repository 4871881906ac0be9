"""Measurement hooks of spikelearn.analysis.hooks: equal to the analysis functions they wrap, initial-model values
cached once per run and untouched by training, usable from sweep files (TOML options only)."""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib

import pytest
import torch

from spikelearn.analysis import hooks
from spikelearn.analysis.hessian import hessian_spectrum
from spikelearn.analysis.lyapunov import max_lyapunov
from spikelearn.analysis.regime import gradient_alignment, regime_summary
from spikelearn.analysis.spikes import spike_stats
from spikelearn.build import build, parse_measurements, resolve_measurements
from spikelearn.config import config_from_dict

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _cfg(seed: int = 0, **over) -> dict:
    d = {"circuit": {"kind": "gaussian", "n": 12, "options": {"g": 1.5}},
         "model": {"type": "rate", "options": {"tau_ms": 30.0, "hidden_bias": True}},
         "task": {"name": "delayed_xor", "options": {"cue_ms": 20.0, "delay_ms": 30.0, "dt_ms": 10.0}},
         "rule": {"name": "bptt"}, "optimizer": {"name": "adam", "lr": 2e-2},
         "train": {"iterations": 4, "batch_size": 8, "eval_every": 2, "eval_batch_size": 8, "seed": seed,
                   "quiet": True}}
    d.update(over)
    return d


def _build(tmp_path, seed: int = 0, **over):
    _, model, task, _, _, trainer = build(config_from_dict(_cfg(seed, **over)), out_dir=str(tmp_path / f"r{seed}"))
    trainer.out_dir = None  # no checkpoints
    return model, task, trainer


def test_lyapunov_hook_equals_max_lyapunov_on_concatenated_trials(tmp_path):
    model, task, tr = _build(tmp_path)
    tr.run(3)
    out = hooks.max_lyapunov_exponent(model, task, 3, initial_model=tr.initial_model(), batch_size=3, n_concat=2,
                                      seed=5)
    x = hooks.concat_trials(task, 3, 2, torch.Generator().manual_seed(5))
    assert x.shape == (2 * task.n_steps, 3, task.n_in)
    # trajectory j = trials j and 3 + j of one batch of 6, back to back
    x6 = task.sample(6, torch.Generator().manual_seed(5))[0]
    assert torch.equal(x[:task.n_steps, 1], x6[:, 1]) and torch.equal(x[task.n_steps:, 1], x6[:, 4])
    assert out["lambda_max"] == pytest.approx(max_lyapunov(model, x).max, abs=1e-12)
    assert out["initial_lambda_max"] == pytest.approx(max_lyapunov(tr.initial_model(), x).max, abs=1e-12)
    assert out["lambda_max"] != out["initial_lambda_max"]
    assert set(out) == {"lambda_max", "initial_lambda_max"}
    k3 = hooks.max_lyapunov_exponent(model, task, 3, initial_model=tr.initial_model(), k=3, batch_size=3, seed=5)
    assert {"lambda_sum", "initial_lambda_sum"} <= set(k3) and k3["lambda_sum"] < k3["lambda_max"]


def test_initial_values_computed_once_and_unchanged_by_training(tmp_path, monkeypatch):
    calls = []
    real = hooks.lyapunov_spectrum  # the hook's module-level import
    monkeypatch.setattr(hooks, "lyapunov_spectrum", lambda m, *a, **k: calls.append(id(m)) or real(m, *a, **k))
    model, task, tr = _build(tmp_path)
    opts = dict(batch_size=2, n_concat=2, seed=1)
    first = hooks.max_lyapunov_exponent(model, task, 1, initial_model=tr.initial_model(), **opts)
    assert len(calls) == 2  # current and initial model
    tr.run(4)
    again = hooks.max_lyapunov_exponent(model, task, 4, initial_model=tr.initial_model(), **opts)
    assert len(calls) == 3  # the initial value came from the cache
    assert again["initial_lambda_max"] == first["initial_lambda_max"]
    assert again["lambda_max"] != first["lambda_max"]
    # it is the value of the model as built, recomputed from scratch for a fresh build of the same run
    fresh, _, tr2 = _build(tmp_path)
    x = hooks.concat_trials(task, 2, 2, torch.Generator().manual_seed(1))
    assert first["initial_lambda_max"] == pytest.approx(max_lyapunov(fresh, x).max, abs=1e-12)
    # another run (another initial model) gets its own value, not the cached one
    other_model, _, tr3 = _build(tmp_path, seed=1)
    other = hooks.max_lyapunov_exponent(other_model, task, 1, initial_model=tr3.initial_model(), **opts)
    assert other["initial_lambda_max"] != first["initial_lambda_max"]
    # the cache dies with its run's initial model
    n_before = len(hooks._INITIAL)
    del tr3, other_model
    import gc

    gc.collect()
    assert len(hooks._INITIAL) < n_before


def test_at_restricts_the_schedule(tmp_path):
    model, task, tr = _build(tmp_path)
    assert hooks.max_lyapunov_exponent(model, task, 2, initial_model=tr.initial_model(), at=[1, 5]) == {}
    assert hooks.noisy_accuracy(model, task, 2, at=[3]) == {}
    assert "lambda_max" in hooks.max_lyapunov_exponent(model, task, 5, initial_model=tr.initial_model(), at=[1, 5],
                                                      batch_size=1)


def test_regime_hook_equals_regime_summary(tmp_path):
    over = {"circuit": {"kind": "low_rank", "n": 10, "options": {"rank": 2}},
            "model": {"type": "rate", "options": {"form": "richlazy", "tau_ms": 100.0, "readout_bias": False,
                                                  "sign_constraint": "none", "allow_autapses": True}},
            "task": {"name": "delayed_match_to_sample", "options": {}},
            "optimizer": {"name": "sgd", "lr": 0.1}}
    model, task, tr = _build(tmp_path, **over)
    tr.run(3)
    out = hooks.regime(model, task, 3, initial_model=tr.initial_model(), probe_trials=12, kernel_trials=3, seed=4)
    x = task.sample(12, torch.Generator().manual_seed(4))[0]
    ref = regime_summary(tr.initial_model(), model, x, kernel_trials=3)
    for m, v in zip(ref["measure"], ref["value"]):
        assert out[m] == pytest.approx(v, rel=1e-9, abs=1e-12), m
    assert 0 < out["kernel_alignment"] < 1 and out["weight_change_rel"] > 0
    assert 1.0 <= out["eff_rank_W0"] <= 2.0 + 1e-9  # rank-2 init: participation ratio in [1, 2]
    assert out["rv_rank_W0"] == pytest.approx(2.0, abs=0.5) and out["spectral_radius_W0"] > 0
    no_k = hooks.regime(model, task, 3, initial_model=tr.initial_model(), probe_trials=12, kernel=False, seed=4)
    assert "kernel_alignment" not in no_k and no_k["cka"] == pytest.approx(out["cka"])


def test_initial_gradient_alignment_is_cached_and_matches(tmp_path):
    model, task, tr = _build(tmp_path)
    rules = ["rflo", {"name": "tbptt", "options": {"k": 1}, "label": "tbptt_k1"}]
    a = hooks.initial_gradient_alignment(model, task, 1, initial_model=tr.initial_model(), rules=rules,
                                         batch_size=6, seed=2)
    tr.run(3)
    b = hooks.initial_gradient_alignment(model, task, 3, initial_model=tr.initial_model(), rules=rules,
                                         batch_size=6, seed=2)
    assert a == b
    fresh, _, _ = _build(tmp_path)
    x, y, mask = task.sample(6, torch.Generator().manual_seed(2))
    ref = gradient_alignment(fresh, x, y, mask, task.loss, rules=dict(hooks.rule_specs(rules)))
    for r in ref.itertuples():
        assert a[f"{r.rule}.{r.parameter}"] == pytest.approx(r.cosine, abs=1e-6)
    assert -1 <= a["rflo.theta_rec"] <= 1 and a["tbptt_k1.norm_ratio"] > 0
    with pytest.raises(ValueError, match="rule entry"):
        hooks.rule_specs([{"nme": "rflo"}])


def test_hessian_hook_equals_hessian_spectrum_and_bptt_gain_is_one(tmp_path):
    model, task, tr = _build(tmp_path, model={"type": "rate", "options": {"form": "relu_lif", "tau_ms": 5.0,
                                                                          "sign_constraint": "none"}},
                             task={"name": "sequential_digits", "options": {}},
                             optimizer={"name": "sgd", "lr": 0.05})
    tr.run(2)
    model.train()
    out = hooks.hessian_top(model, task, 2, batch_size=16, seed=3, l2=1e-2, k=2, rtol=1e-6, trace_samples=4,
                            gain_rules=["bptt", {"name": "tbptt", "options": {"k": 1}, "label": "t1"},
                                        {"name": "tbptt", "options": {"k": 10_000}, "label": "tfull"}])
    x, y, mask = task.sample(16, torch.Generator().manual_seed(3))
    ref = hessian_spectrum(model, x, y, mask, task.loss, l2=1e-2, k=2, rtol=1e-6, trace_samples=4, seed=0)
    eig = ref[ref.quantity == "eigenvalue"]["value"].tolist()
    assert out["lambda_max"] == pytest.approx(eig[0], rel=1e-9) and out["lambda_1"] == pytest.approx(eig[1], rel=1e-9)
    assert out["trace"] == pytest.approx(float(ref[ref.quantity == "trace"]["value"].iloc[0]), rel=1e-9)
    assert out["loss"] == pytest.approx(float(ref[ref.quantity == "loss"]["value"].iloc[0]), rel=1e-9)
    assert out["converged"] == 1.0 and out["n_hvp"] >= 2
    # truncation longer than the trial = BPTT, through another code path: its gain along u1 is 1
    assert out["gain_u1.tfull"] == pytest.approx(1.0, abs=1e-6) and out["gain_u1.bptt"] == 1.0
    assert math.isfinite(out["gain_u1.t1"]) and out["gain_u1.t1"] != pytest.approx(1.0, abs=1e-3)
    assert model.training  # train mode restored
    with pytest.raises(ValueError, match="occur more than once"):
        hooks.hessian_top(model, task, 2, batch_size=4, k=1, gain_rules=[{"name": "tbptt", "options": {"k": 1}},
                                                                         {"name": "tbptt", "options": {"k": 5}}])


def test_noisy_accuracy_equals_task_accuracy(tmp_path):
    model, task, _ = _build(tmp_path, model={"type": "rate", "options": {"form": "relu_lif", "tau_ms": 5.0}},
                            task={"name": "sequential_digits", "options": {}})
    out = hooks.noisy_accuracy(model, task, 1, noise_std=[0.0, 0.5], n_trials=64, seed=7, split="test")
    assert set(out) == {"sigma_0", "sigma_0.5"}
    t = dataclasses.replace(task, split="test")
    x, y, mask = t.sample(64, torch.Generator().manual_seed(7))
    with torch.no_grad():
        assert out["sigma_0"] == pytest.approx(float(t.accuracy(model(x).y, y, mask)))
    tn = dataclasses.replace(t, input_noise_std=0.5)
    xn, _, _ = tn.sample(64, torch.Generator().manual_seed(7))
    assert not torch.equal(x, xn) and xn.min() >= 0 and xn.max() <= 1  # noisy, clipped pixels


def test_spike_statistics_and_weight_change(tmp_path):
    over = {"model": {"type": "spiking", "options": {}},
            "task": {"name": "evidence_accumulation", "options": {"n_cues": 1, "cue_ms": 20.0, "gap_ms": 10.0,
                                                                  "delay_ms": 30.0, "recall_ms": 20.0}}}
    d = _cfg(**over)
    d["circuit"] = {"kind": "gaussian", "n": 10, "options": {"g": 1.0}}
    _, model, task, _, _, tr = build(config_from_dict(d), out_dir=str(tmp_path / "s"))
    out = hooks.spike_statistics(model, task, 1, batch_size=2, seed=3, window_ms=20.0)
    x = task.sample(2, torch.Generator().manual_seed(3))[0]
    with torch.no_grad():
        z = model(x, record=True).record.z
    ref = spike_stats(z, float(model.dt_ms), window_ms=20.0).per_type
    for k in ("rate_hz", "cv_isi", "fano", "synchrony"):
        assert out[k] == pytest.approx(float(ref[ref.cell_type == "all"][k].iloc[0]), nan_ok=True), k
    wc = hooks.weight_change(model, task, 1, initial_model=tr.initial_model(), which=["W_rec", "W_in"])
    assert wc == {"W_rec.abs": 0.0, "W_rec.rel": 0.0, "W_in.abs": 0.0, "W_in.rel": 0.0}


TINY_SWEEP = """
[circuit]
kind = "gaussian"
n = 10
[circuit.options]
g = 1.0
[model]
type = "rate"
[model.options]
tau_ms = 30.0
[task]
name = "delayed_xor"
[task.options]
cue_ms = 20.0
delay_ms = 30.0
dt_ms = 10.0
[train]
iterations = 4
batch_size = 4
eval_every = 2
eval_batch_size = 4
[flossing]
pre_steps = 2
[flossing.options]
k = 2

[[measurements]]
name = "lyap"
fn = "spikelearn.analysis.hooks:max_lyapunov_exponent"
every = 2
options = {batch_size = 2, n_concat = 2, seed = 1}
[[measurements]]
name = "lyap_start"
fn = "spikelearn.analysis.hooks:max_lyapunov_exponent"
every = 1
options = {batch_size = 2, n_concat = 2, seed = 1, at = [1]}
[[measurements]]
name = "dW"
fn = "spikelearn.analysis.hooks:weight_change"
every = 4
[[measurements]]
name = "acc"
fn = "spikelearn.analysis.hooks:noisy_accuracy"
every = 4
options = {noise_std = [0.0, 0.3], n_trials = 8}
[[measurements]]
name = "hess"
fn = "spikelearn.analysis.hooks:hessian_top"
every = 4
options = {batch_size = 4, gain_rules = [{name = "tbptt", options = {k = 1}, label = "tbptt_k1"}]}

[sweep]
name = "tiny"
[sweep.axes]
"circuit.options.g" = [0.5, 2.0]
"""


def test_sweep_file_with_hooks_expands_and_runs(tmp_path):
    from spikelearn.sweep import RunStore
    from spikelearn.sweep.runner import run_sweep
    from spikelearn.sweep.spec import expand, load_sweep

    path = tmp_path / "tiny.toml"
    path.write_text(TINY_SWEEP)
    spec = load_sweep(path)
    runs = expand(spec)
    assert len(runs) == 2 and [m.name for m in runs[0].measurements] == ["lyap", "lyap_start", "dW", "acc", "hess"]
    hks = resolve_measurements(runs[0].measurements)
    assert [h.every for h in hks] == [2, 1, 4, 4, 4]
    res = run_sweep(spec, tmp_path / "store", workers=1, threads_per_run=1)
    assert res.ok, res.failed
    with RunStore(tmp_path / "store", readonly=True) as store:
        m = store.metrics()
    names = set(m["name"])
    assert {"lyap.lambda_max", "lyap.initial_lambda_max", "lyap_start.lambda_max", "dW.W_rec.rel", "acc.sigma_0",
            "acc.sigma_0.3", "hess.lambda_max", "hess.gain_u1.tbptt_k1"} <= names
    assert set(m[m["name"] == "lyap_start.lambda_max"]["iteration"]) == {1}
    assert set(m[m["name"] == "lyap.lambda_max"]["iteration"]) == {2, 4}
    ini = m[m["name"] == "lyap.initial_lambda_max"].groupby("run_id")["value"]
    assert (ini.nunique() == 1).all()  # one initial value per run, at every measurement
    # the initial model is the model as built, before pre-flossing: it differs from the value at iteration 1
    start = m[m["name"] == "lyap_start.lambda_max"].set_index("run_id")["value"]
    assert (ini.first() != start).all()


def test_parse_measurements_rejects_unknown_hook_options():
    from spikelearn.config import ConfigError

    with pytest.raises(ConfigError, match="bach_size"):
        parse_measurements([{"name": "l", "fn": "spikelearn.analysis.hooks:max_lyapunov_exponent",
                             "options": {"bach_size": 3}}])


EXPERIMENTS = ("gain_lyapunov", "rank_rich_lazy", "curvature")


@pytest.mark.parametrize("path", sorted(str(p.relative_to(ROOT)) for e in EXPERIMENTS
                                        for p in (ROOT / "experiments" / e).glob("*_sweep*.toml")))
def test_experiment_sweep_files_expand_and_validate(path):
    from spikelearn.sweep.spec import check_run_config, expand, load_sweep

    runs = expand(load_sweep(ROOT / path))
    assert runs and all(m.fn.startswith("spikelearn.analysis.hooks:") for m in runs[0].measurements)
    seen = set()
    for r in runs:  # the cheap checks of build() on each distinct configuration (as the sweep runner does)
        key = json.dumps({k: v for k, v in r.config.to_dict().items() if k != "train"}, sort_keys=True)
        if key not in seen:
            seen.add(key)
            check_run_config(r.config)
