"""Sweep specification: grid expansion, stable run ids, and bad input rejected before anything runs."""

import copy

import pytest

from spikelearn.config import ConfigError, RunConfig
from spikelearn.sweep import expand, load_sweep, run_id, sweep_from_dict


def test_crossed_and_zipped_axes_expand_in_order(tiny):
    d = tiny()
    d["sweep"] = {"axes": {"rule.name": ["bptt"], "train.seed": [0, 1, 2]},
                  "zip": [{"circuit.options.g": [0.5, 2.0], "optimizer.lr": [1e-2, 1e-3]}]}
    runs = expand(sweep_from_dict(d))
    assert len(runs) == 1 * 3 * 2
    assert [(r.config.train.seed, r.config.circuit.options["g"], r.config.optimizer.lr) for r in runs] == [
        (s, g, lr) for s in (0, 1, 2) for g, lr in ((0.5, 1e-2), (2.0, 1e-3))]
    assert runs[0].axes == {"rule.name": "bptt", "train.seed": 0, "circuit.options.g": 0.5, "optimizer.lr": 1e-2}
    for r in runs:  # out_dir derived from the id; quiet forced; the rest of the base kept
        assert r.config.train.out_dir == f"runs/{r.id}"
        assert r.config.train.quiet and r.config.train.iterations == 10
        assert r.config.model.options == {"form": "richlazy"}


def test_no_axes_is_one_run(tiny):
    d = tiny()
    d["sweep"] = {}
    assert len(expand(sweep_from_dict(d))) == 1


def test_run_ids_are_stable_and_depend_on_the_resolved_config_only(tiny):
    a = expand(sweep_from_dict(tiny()))
    b = expand(sweep_from_dict(tiny()))
    assert [r.id for r in a] == [r.id for r in b]
    assert len({r.id for r in a}) == len(a)
    assert all(len(r.id) == 12 and int(r.id, 16) >= 0 for r in a)
    # the same run reached through a different sweep (base value instead of axis value) has the same id
    d = tiny()
    d["train"]["seed"] = 1
    d["sweep"] = {"name": "other", "axes": {"optimizer.lr": [1e-2]}}
    assert expand(sweep_from_dict(d))[0].id == a[1].id
    # out_dir and quiet do not enter the id; anything else does
    cfg = a[0].config.to_dict()
    cfg["train"]["out_dir"], cfg["train"]["quiet"] = "elsewhere", False
    assert run_id(cfg) == a[0].id
    cfg["train"]["batch_size"] = 9
    assert run_id(cfg) != a[0].id
    # a known value pins the hash recipe: changing it would orphan every stored sweep
    assert run_id(RunConfig()) == "22dabc02b7d6"
    # ... and with non-default values in nested options and a measurement hook (the default-only config above
    # hashes an empty dict, so it alone would not notice a change in how values are written)
    from spikelearn.config import MeasurementSpec, config_from_dict

    pinned = config_from_dict({"circuit": {"kind": "dale", "n": 50, "options": {"frac_exc": 0.8, "g": 1.5}},
                               "model": {"type": "spiking", "options": {"tau_mem_ms": 20.0, "n_adaptive": 10}},
                               "rule": {"name": "mdgl", "options": {"cell_types": "ei"}},
                               "train": {"iterations": 300, "seed": 4}})
    hook = MeasurementSpec(name="lyap", fn="spikelearn.analysis.hooks:max_lyapunov_exponent", every=50,
                           options={"k": 1})
    assert run_id(pinned, [hook]) == "fc2fef523227"
    # fields at their default do not enter the id, so adding a defaulted field to the schema keeps old ids
    import dataclasses

    explicit = dataclasses.replace(RunConfig(), train=dataclasses.replace(RunConfig().train, batch_size=32))
    assert RunConfig().train.batch_size == 32 and run_id(explicit) == run_id(RunConfig())
    d = RunConfig().to_dict()
    d.pop("flossing")  # a config written before the [flossing] section existed
    assert run_id(d) == run_id(RunConfig())


def test_section_axis_replaces_named_fields(tiny):
    d = tiny()
    d["sweep"] = {"axes": {"circuit": [{"kind": "gaussian", "options": {"g": 0.5}},
                                       {"kind": "erdos_renyi", "options": {"p": 0.3}}]}}
    runs = expand(sweep_from_dict(d))
    assert [(r.config.circuit.kind, r.config.circuit.options, r.config.circuit.n) for r in runs] == [
        ("gaussian", {"g": 0.5}, 16), ("erdos_renyi", {"p": 0.3}, 16)]
    assert runs[1].axes["circuit"] == '{"kind": "erdos_renyi", "options": {"p": 0.3}}'


def test_flossing_section_is_an_axis(tiny):
    """``[flossing]`` varies like any section: a zipped rule × flossing pairing in one sweep file."""
    d = tiny()
    d["sweep"] = {"zip": [{"rule.name": ["bptt", "rflo", "rflo"],
                           "flossing": [{}, {}, {"pre_steps": 5, "options": {"k": 2}}]}]}
    runs = expand(sweep_from_dict(d))
    assert [(r.config.rule.name, r.config.flossing.pre_steps, r.config.flossing.options) for r in runs] == [
        ("bptt", 0, {}), ("rflo", 0, {}), ("rflo", 5, {"k": 2})]
    assert len({r.id for r in runs}) == 3
    d["sweep"] = {"axes": {"flossing.pre_steps": [0, 3]}}
    assert [r.config.flossing.pre_steps for r in expand(sweep_from_dict(d))] == [0, 3]


def test_every_table_field_takes_sub_keys(tiny):
    """Sub-keys vary inside any table field ([optimizer] schedule_options as well as options); a scalar field has
    none."""
    d = tiny()
    d["optimizer"]["schedule"] = "steplr"
    d["optimizer"]["schedule_options"] = {"step_size": 5, "gamma": 0.8}
    d["sweep"] = {"axes": {"optimizer.schedule_options.gamma": [0.5, 0.9]}}
    runs = expand(sweep_from_dict(d))
    assert [r.config.optimizer.schedule_options for r in runs] == [{"step_size": 5, "gamma": 0.5},
                                                                  {"step_size": 5, "gamma": 0.9}]
    d["sweep"] = {"axes": {"optimizer.lr.x": [1]}}
    with pytest.raises(ConfigError, match=r"only the tables \['options', 'schedule_options'\] have sub-keys"):
        expand(sweep_from_dict(d))


def test_toml_file_round_trip(tmp_path, tiny):
    (tmp_path / "grid.toml").write_text("""
[circuit]
kind = "gaussian"
n = 16
[model]
type = "rate"
options = {form = "richlazy"}
[train]
iterations = 5

[sweep]
workers = 2
[sweep.axes]
"train.seed" = [0, 1]
"rule.name" = ["bptt", "tbptt"]
""")
    spec = load_sweep(tmp_path / "grid.toml")
    assert spec.name == "grid" and spec.workers == 2 and spec.executor == "local"
    assert len(expand(spec)) == 4


@pytest.mark.parametrize("axes, match", [
    ({"train.sed": [0, 1]}, "unknown axis key 'train.sed'"),
    ({"training.seed": [0]}, "unknown axis key 'training.seed'"),
    ({"circuit.g": [1.0]}, "unknown axis key 'circuit.g'"),
    ({"train.seed.x": [1]}, "unknown axis key 'train.seed.x'"),
    ({"train.seed": []}, "axis 'train.seed' in \\[sweep.axes\\] is empty"),
    ({"train.seed": 3}, "must be a list"),
    ({"train.out_dir": ["a", "b"]}, "cannot vary"),
    ({"circuit": [{"kind": "gaussian"}], "circuit.n": [8]}, "overlaps"),
    ({"train.seed": ["zero"]}, "\\[train\\] seed must be an integer"),
    ({"train.seed": [1, 1]}, "identical runs"),
])
def test_bad_axes_are_config_errors(tiny, axes, match):
    d = tiny()
    d["sweep"] = {"axes": axes}
    with pytest.raises(ConfigError, match=match):
        sweep_from_dict(d)


def test_other_bad_input(tiny):
    d = tiny()
    d["sweep"] = {"zip": [{"train.seed": [0, 1], "optimizer.lr": [1e-2]}]}
    with pytest.raises(ConfigError, match="equal length"):
        sweep_from_dict(d)
    d = tiny()
    d["sweep"]["executer"] = "dask"
    with pytest.raises(ConfigError, match="unknown key.*executer.*\\[sweep\\]"):
        sweep_from_dict(d)
    d = tiny()
    d["train"]["iteration"] = 3
    with pytest.raises(ConfigError, match="unknown key 'iteration' in section \\[train\\]"):
        sweep_from_dict(d)
    d = tiny()
    d["sweep"]["executor"] = "slurm"
    with pytest.raises(ConfigError, match="executor"):
        sweep_from_dict(d)
    d = tiny()
    d["measurements"] = [{"name": "m", "fn": "no_such_module_xyz:f"}]
    with pytest.raises(ConfigError, match="cannot import 'no_such_module_xyz:f'"):
        sweep_from_dict(d)
    d["measurements"] = [{"name": "m", "fn": "math:sqrt", "every": 0}]
    with pytest.raises(ConfigError, match="every must be an integer >= 1"):
        sweep_from_dict(d)


def test_measurements_enter_the_id(tiny, hooks_on_path):
    d = tiny()
    base = [r.id for r in expand(sweep_from_dict(d))]
    d2 = copy.deepcopy(d)
    d2["measurements"] = [{"name": "wn", "fn": "_sweep_hooks:weight_norm", "every": 5}]
    runs = expand(sweep_from_dict(d2))
    assert [r.id for r in runs] != base
    assert runs[0].measurements[0].fn == "_sweep_hooks:weight_norm"
