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


def _directional_fd(model, loss_fn, *, h=1e-5, seed=0):
    """Autograd gradient of ``loss_fn()`` w.r.t. ``model``'s parameters along a random direction (restricted to
    entries with a non-zero gradient) and the central difference along it; returns ``(analytic, fd)``."""
    params = list(model.parameters())
    model.zero_grad()
    loss_fn().backward()
    grads = [p.grad.clone() for p in params]
    gen = torch.Generator().manual_seed(seed)
    dirs = [torch.randn(p.shape, generator=gen, dtype=p.dtype) * (p.grad != 0) for p in params]
    with torch.no_grad():
        for p, d in zip(params, dirs):
            p.add_(h * d)
        lp = loss_fn()
        for p, d in zip(params, dirs):
            p.sub_(2 * h * d)
        lm = loss_fn()
        for p, d in zip(params, dirs):
            p.add_(h * d)
    an = sum((g * d).sum() for g, d in zip(grads, dirs))
    return float(an), float((lp - lm) / (2 * h))


@pytest.fixture
def directional_fd():
    """:func:`_directional_fd` (float64 models; compare ``|fd − an| / |an|``)."""
    return _directional_fd
