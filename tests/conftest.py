import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_determinism():
    torch.manual_seed(0)
    np.random.seed(0)
    yield


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield torch.float64
    torch.set_default_dtype(old)
