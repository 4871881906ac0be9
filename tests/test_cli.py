"""CLI: configuration errors name the key and section; train writes its outputs; info lists connectomes."""

import json

import pandas as pd
import pytest

from spikelearn.cli import main
from spikelearn.config import ConfigError, config_from_dict, load_config

GOOD = """
[circuit]
kind = "gaussian"
n = 24
[circuit.options]
g = 1.2
[model]
type = "rate"
[model.options]
form = "richlazy"
[task]
name = "delayed_match_to_sample"
[rule]
name = "bptt"
[optimizer]
name = "sgd"
lr = 0.01
[optimizer.options]
momentum = 0.9
[train]
iterations = 4
batch_size = 8
eval_every = 2
seed = 2
quiet = true
"""


def _write(tmp_path, text):
    p = tmp_path / "run.toml"
    p.write_text(text)
    return p


def test_train_from_toml(tmp_path, capsys):
    p = _write(tmp_path, GOOD)
    assert main(["train", str(p), "--out", str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    hist = pd.read_csv(out / "history.csv")
    assert hist["iteration"].tolist() == [1, 2, 3, 4]
    assert json.loads((out / "config.json").read_text())["optimizer"]["options"] == {"momentum": 0.9}
    assert (out / "model.pt").exists() and (out / "checkpoint.pt").exists()
    # resume a finished run: nothing more to do, history unchanged
    assert main(["train", str(p), "--out", str(out), "--resume"]) == 0
    assert pd.read_csv(out / "history.csv")["loss"].tolist() == hist["loss"].tolist()


@pytest.mark.parametrize("text, match", [
    (GOOD.replace("n = 24", "n = 24\nsize = 3"), r"'size'.*\[circuit\]"),
    (GOOD + "\n[extra]\na = 1\n", r"unknown section.*extra"),
    (GOOD.replace("g = 1.2", "gain = 1.2"), r"'gain'.*\[circuit.options\]"),
    (GOOD.replace('form = "richlazy"', 'shape = "x"'), r"'shape'.*\[model.options\]"),
    (GOOD.replace("momentum = 0.9", "moment = 0.9"), r"'moment'.*\[optimizer.options\]"),
    (GOOD.replace('name = "bptt"', 'name = "magic"'), r"magic.*registered rules"),
    (GOOD.replace('name = "delayed_match_to_sample"', 'name = "chess"'), r"chess"),
    (GOOD.replace("iterations = 4", 'iterations = "four"'), r"\[train\] iterations"),
    (GOOD.replace('kind = "gaussian"', 'kind = "spaghetti"'), r"spaghetti"),
    # bad values inside options tables: one line naming the section and the thing built, not a traceback
    (GOOD.replace('form = "richlazy"', 'form = "richlazy"\ntau_ms = -5.0'), r"\[model\] building RateRNN:.*tau"),
    (GOOD.replace("momentum = 0.9", "momentum = -1.0"), r"\[optimizer\] building SGD:.*momentum"),
    (GOOD.replace('name = "delayed_match_to_sample"', 'name = "delayed_match_to_sample"\n[task.options]\n'
                  'dt_ms = -1.0'), r"\[task\] building delayed_match_to_sample:.*dt_ms"),
    (GOOD.replace('kind = "gaussian"', 'kind = "erdos_renyi"').replace("g = 1.2", "g = 1.2\np = 2.0"),
     r"\[circuit\] building erdos_renyi:.*p"),
    # lr schedule, L2 penalty, early stopping
    (GOOD.replace("lr = 0.01", 'lr = 0.01\nschedule = "stepp"'), r"\[optimizer\] schedule 'stepp' unknown"),
    (GOOD.replace("lr = 0.01", 'lr = 0.01\nschedule = "steplr"\nschedule_options = {step = 2}'),
     r"'step'.*\[optimizer.schedule_options\]"),
    (GOOD.replace("lr = 0.01", 'lr = 0.01\nschedule = "onecyclelr"\nschedule_options = {max_lr = 0.1}'),
     r"\[optimizer\] building OneCycleLR"),
    (GOOD.replace("quiet = true", "quiet = true\nl2 = -0.1"), r"\[train\] l2 must be >= 0"),
    (GOOD.replace("quiet = true", "quiet = true\nstop_at_accuracy = 93.0"), r"\[train\] stop_at_accuracy"),
])
def test_config_errors_name_key_and_section(tmp_path, capsys, text, match):
    p = _write(tmp_path, text)
    assert main(["train", str(p), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    import re
    assert re.search(match, err), err


def test_config_errors_raise_configerror(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(_write(tmp_path, "[train\n"))
    with pytest.raises(ConfigError, match="'lr'.*\\[rule\\]"):
        config_from_dict({"rule": {"lr": 1}})


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "celegans_varshney2011" in out and "torch" in out


def test_train_toml_with_measurements(tmp_path):
    """``spikelearn train`` reads ``[[measurements]]`` hooks (same format as sweep files); a bad hook is refused."""
    text = GOOD + '\n[[measurements]]\nname = "dW"\nfn = "spikelearn.analysis.hooks:weight_change"\nevery = 2\n' \
                  '[measurements.options]\nwhich = ["W_rec", "W_out"]\n'
    p = _write(tmp_path, text)
    assert main(["train", str(p), "--out", str(tmp_path / "out")]) == 0
    hist = pd.read_csv(tmp_path / "out" / "history.csv").set_index("iteration")
    assert hist.loc[[2, 4], "dW.W_out.rel"].gt(0).all() and hist.loc[[2, 4], "dW.W_rec.abs"].notna().all()
    bad = _write(tmp_path, text.replace("weight_change", "no_such_hook"))
    assert main(["train", str(bad), "--out", str(tmp_path / "bad")]) == 2
    bad = _write(tmp_path, text.replace('which = ["W_rec", "W_out"]', "wich = 1"))
    assert main(["train", str(bad), "--out", str(tmp_path / "bad")]) == 2


def test_threads_option(tmp_path):
    import torch

    p = _write(tmp_path, GOOD)
    before = torch.get_num_threads()
    try:
        assert main(["train", str(p), "--out", str(tmp_path / "out"), "--threads", "2", "--quiet"]) == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    with pytest.raises(SystemExit):
        main(["train", str(p), "--threads", "0"])


def test_train_toml_with_schedule_l2_and_early_stop(tmp_path):
    """The keys of §4.4/§10.1 in a run file: history.csv gains ``lr`` and ``l2_penalty``; a stop criterion met at
    the first evaluation ends the run there and summary.json says so."""
    text = GOOD.replace("lr = 0.01", 'lr = 0.01\nschedule = "steplr"\nschedule_options = {step_size = 2, gamma = 0.8}')
    text = text.replace("quiet = true", "quiet = true\nl2 = 5e-4")
    assert main(["train", str(_write(tmp_path, text)), "--out", str(tmp_path / "out")]) == 0
    hist = pd.read_csv(tmp_path / "out" / "history.csv")
    assert hist["lr"].tolist() == pytest.approx([0.01, 0.01, 0.008, 0.008], rel=1e-12)
    assert (hist["l2_penalty"] > 0).all()
    stop = _write(tmp_path, GOOD.replace("quiet = true", "quiet = true\nstop_at_accuracy = 1e-6"))
    assert main(["train", str(stop), "--out", str(tmp_path / "stop")]) == 0
    assert pd.read_csv(tmp_path / "stop" / "history.csv")["iteration"].tolist() == [1]
    assert json.loads((tmp_path / "stop" / "summary.json").read_text())["stopped_at"] == 1
