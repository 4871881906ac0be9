"""Bad input is refused with a message that names it: NaN samples, wrong dimensions, a drift whose output shape
disagrees with the data, an unknown route, D that would scale away."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from spikelearn.objectives import (
    AffineDrift,
    GMMScore,
    KDEScore,
    fit_affine,
    fp_residual,
    linear_drift,
    lorenz,
    ou_samples,
    train_drift,
)
from spikelearn.objectives.validation import as_samples


def _x(m=50, d=3):
    return torch.randn(m, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 5


def test_nan_samples_are_refused():
    x = _x()
    x[7, 1] = float("nan")
    x[9, 0] = float("inf")
    with pytest.raises(ValueError, match=r"samples contain NaN or infinite values in 2 of 50 rows \(first rows: \[7, 9\]\)"):
        fit_affine(x, lorenz(), D=1.0)
    with pytest.raises(ValueError, match="NaN"):
        KDEScore().fit(x)
    with pytest.raises(ValueError, match="NaN"):
        GMMScore(1).fit(x.numpy())


def test_wrong_dimensions_are_refused():
    with pytest.raises(ValueError, match=r"samples have d=2 dimensions but the drift expects dim=3"):
        fit_affine(_x(d=2), lorenz(), D=1.0)
    with pytest.raises(ValueError, match=r"2-D array .* got shape \(50,\)"):
        fit_affine(_x()[:, 0], lorenz(), D=1.0)
    with pytest.raises(ValueError, match="at least 2 samples"):
        as_samples(np.zeros((1, 3)))
    est = GMMScore(1).fit(_x())
    with pytest.raises(ValueError, match="d=2 dimensions but the drift expects dim=3"):
        est.evaluate(_x(d=2))


def test_a_drift_whose_output_shape_disagrees_is_refused():
    x = _x()
    s, div = torch.zeros_like(x), torch.zeros(50, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"drift output shape \(50, 2\) disagrees with the samples' shape \(50, 3\)"):
        fp_residual(lambda v: v[:, :2], x, s, div, 1.0)

    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(3, 4, dtype=torch.float64))

        def forward(self, v):
            return v @ self.w

    with pytest.raises(ValueError, match=r"drift output shape \(2, 4\) disagrees with the samples' shape \(2, 3\)"):
        train_drift(Bad(), x, D=1.0, steps=1)
    bad_features = AffineDrift(lambda v: v[:, :, None], 3, ("a", "b"))
    with pytest.raises(ValueError, match=r"drift features have shape \(2, 3, 1\), expected \(M, d, p\) = \(2, 3, 2\)"):
        fit_affine(x, bad_features, D=1.0)
    bad_offset = AffineDrift(lambda v: v[:, :, None], 3, ("a",), offset=lambda v: v[:, :1])
    with pytest.raises(ValueError, match=r"drift offset output shape \(2, 1\) disagrees"):
        fit_affine(x, bad_offset, D=None)


def test_bad_options_are_refused():
    x = ou_samples(np.array([[-1.0, 0.0], [0.0, -2.0]]), 1.0, 100)
    with pytest.raises(ValueError, match="route 'exact'"):
        fit_affine(x, linear_drift(2), D=1.0, route="exact")
    with pytest.raises(ValueError, match="D must be a positive number"):
        fit_affine(x, linear_drift(2), D=-1.0)
    with pytest.raises(ValueError, match=r"scales away|D cannot be estimated"):
        fit_affine(x, linear_drift(2), D=None)
