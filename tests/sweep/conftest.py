import pathlib

import pytest

HERE = pathlib.Path(__file__).parent


@pytest.fixture
def hooks_on_path(monkeypatch):
    """Make tests/sweep/_sweep_hooks.py importable here and in spawned workers."""
    monkeypatch.syspath_prepend(str(HERE))
    return HERE


def tiny_sweep(**sweep) -> dict:
    """A sweep of tiny rate-network runs on delayed match-to-sample (~0.1 s each)."""
    return {
        "circuit": {"kind": "gaussian", "n": 16, "options": {"g": 1.0}},
        "model": {"type": "rate", "options": {"form": "richlazy"}},
        "task": {"name": "delayed_match_to_sample"},
        "rule": {"name": "bptt"},
        "optimizer": {"name": "adam", "lr": 1e-2},
        "train": {"iterations": 10, "batch_size": 8, "eval_every": 5, "eval_batch_size": 16, "checkpoint_every": 5},
        "sweep": {"axes": {"train.seed": [0, 1]}, **sweep},
    }


@pytest.fixture
def tiny():
    """The :func:`tiny_sweep` builder."""
    return tiny_sweep
