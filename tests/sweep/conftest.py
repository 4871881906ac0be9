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


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny networks run fastest on one thread (and do not fight over a busy 2-core machine); restored after."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
