import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_determinism():
    torch.manual_seed(0)
    np.random.seed(0)
    yield


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Test networks are small: one intra-op thread is faster than two and does not oversubscribe a busy
    2-core machine; the previous setting is restored after each test."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
