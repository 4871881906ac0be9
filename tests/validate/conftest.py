"""Shared pieces of the cross-simulator tests: one helper that runs a model in both simulators and asserts."""

from __future__ import annotations

import pytest


def assert_same_as_brian2(model, x, *, atol: float = 1e-9, rtol: float = 0.0, **kwargs):
    """Run ``model`` in spikelearn and Brian2 (float64); assert identical spikes and ``|Δv|, |Δy| <= atol + rtol|v|``.

    Returns the :class:`~spikelearn.validate.ValidationReport` (the failure message carries its verdict).
    """
    from spikelearn.validate import compare_with_brian2

    rep = compare_with_brian2(model, x, atol=atol, **kwargs)
    s = rep.summary
    assert s["differing_spike_entries"] == 0, rep.verdict
    rec = rep.spikelearn["record"]
    vmax = float(rec.v.abs().max())
    ymax = float(rep.spikelearn["y"].abs().max())
    assert s["max_abs_v_diff"] <= atol + rtol * vmax, f"membrane: {rep.verdict} (atol {atol}, rtol {rtol})"
    assert s["max_abs_y_diff"] <= atol + rtol * ymax, f"output: {rep.verdict} (atol {atol}, rtol {rtol})"
    assert s["max_abs_a_diff"] <= atol, f"adaptation: {rep.verdict} (atol {atol})"
    return rep


@pytest.fixture
def same_as_brian2():
    return assert_same_as_brian2
