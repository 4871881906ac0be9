"""Spike statistics on spike trains with known answers, and the raster / PSTH plots."""

import math

import numpy as np
import pytest
import torch

from spikelearn.analysis.plots_stability import plot_psth, plot_raster
from spikelearn.analysis.spikes import (
    SpikeStats,
    cv_isi,
    fano_factor,
    firing_rates,
    psth,
    spike_stats,
    spike_stats_measurement,
    synchrony,
)
from spikelearn.circuit import gaussian
from spikelearn.models import SpikingRNN


def _bernoulli(T, B, N, p, seed=0):
    return (np.random.default_rng(seed).random((T, B, N)) < p).astype(np.float64)


def test_poisson_trains_cv_and_fano_near_one():
    """Bernoulli(p) per 1-ms step ≈ Poisson: rate = 1000 p Hz, CV = √(1−p) ≈ 1, Fano = 1 − p ≈ 1."""
    p = 0.02
    z = _bernoulli(10000, 40, 10, p)
    rates = firing_rates(z, 1.0)
    np.testing.assert_allclose(rates, 1000 * p, rtol=0.05)
    np.testing.assert_allclose(cv_isi(z), math.sqrt(1 - p), atol=0.04)
    np.testing.assert_allclose(fano_factor(z, 1.0, window_ms=100.0), 1 - p, atol=0.08)
    # a single long trial: Fano across windows (200 windows per neuron: check the mean over neurons)
    assert fano_factor(z[:, :1], 1.0, window_ms=50.0).mean() == pytest.approx(1 - p, abs=0.06)


def test_regular_trains_cv_zero():
    """A spike every 10 steps: rate 100 Hz at dt = 1 ms, CV = 0, Fano = 0 for windows of whole periods."""
    T, B, N = 1000, 3, 4
    z = np.zeros((T, B, N))
    for j in range(N):
        z[j::10, :, j] = 1
    st = spike_stats(z, 1.0, window_ms=50.0)
    np.testing.assert_allclose(st.per_neuron["rate_hz"], 100.0)
    np.testing.assert_allclose(st.per_neuron["cv_isi"], 0.0, atol=1e-12)
    np.testing.assert_allclose(st.per_neuron["fano"], 0.0, atol=1e-12)
    # 0.5 ms steps: same trains are 200 Hz
    np.testing.assert_allclose(firing_rates(z, 0.5), 200.0)


def test_isis_do_not_span_trials():
    z = np.zeros((10, 2, 1))
    z[8, 0, 0] = 1
    z[1, 1, 0] = 1
    assert np.isnan(cv_isi(z)[0])  # one spike per trial: no interval
    z[3, 1, 0] = 1
    z[6, 1, 0] = 1
    assert cv_isi(z)[0] == pytest.approx(np.std([2, 3]) / 2.5)


def test_synchrony_extremes():
    rng = np.random.default_rng(1)
    one = (rng.random((2000, 2, 1)) < 0.05).astype(float)
    same = np.repeat(one, 50, axis=2)
    assert synchrony(same, 1.0, bin_ms=5.0) == pytest.approx(1.0)
    indep = _bernoulli(2000, 2, 100, 0.05, seed=2)
    chi = synchrony(indep, 1.0, bin_ms=5.0)
    assert chi < 0.2 and chi == pytest.approx(1 / math.sqrt(100), abs=0.05)
    assert math.isnan(synchrony(np.zeros((100, 1, 5)), 1.0))


def test_per_type_rows_and_tidy_frame():
    z = np.concatenate([_bernoulli(2000, 4, 6, 0.01), _bernoulli(2000, 4, 4, 0.05, seed=3)], axis=2)
    types = ["E"] * 6 + ["I"] * 4
    st = spike_stats(torch.as_tensor(z), 1.0, cell_types=types)
    assert isinstance(st, SpikeStats)
    pt = st.per_type.set_index("cell_type")
    assert list(pt.index) == ["all", "E", "I"]
    assert pt.loc["E", "n_neurons"] == 6 and pt.loc["I", "n_neurons"] == 4
    assert pt.loc["E", "rate_hz"] == pytest.approx(10.0, rel=0.1)
    assert pt.loc["I", "rate_hz"] == pytest.approx(50.0, rel=0.1)
    assert pt.loc["all", "rate_hz"] == pytest.approx(st.per_neuron["rate_hz"].mean())
    long = st.to_frame()
    assert list(long.columns) == ["scope", "neuron", "cell_type", "metric", "value"]
    assert set(long.metric) == {"rate_hz", "cv_isi", "fano", "n_spikes", "n_neurons", "synchrony", "n_cv", "n_fano"}
    assert len(long[long.scope == "neuron"]) == 10 * 4
    assert pt.loc["E", "n_cv"] == 6 and pt.loc["all", "n_fano"] == 10
    with pytest.raises(ValueError, match="10 entries"):
        spike_stats(z, 1.0, cell_types=["E"])
    with pytest.raises(ValueError, match="'all' is reserved"):
        spike_stats(z, 1.0, cell_types=["all"] * 2 + ["E"] * 8)


def test_neurons_without_a_defined_cv_are_counted_not_hidden():
    z = np.zeros((300, 1, 3))
    z[::10, 0, 0] = 1      # regular: CV 0
    z[5, 0, 1] = 1         # one spike: no interval
    st = spike_stats(z, 1.0, cell_types=["a", "a", "a"]).per_type.set_index("cell_type")
    assert st.loc["a", "cv_isi"] == 0.0 and st.loc["a", "n_cv"] == 1 and st.loc["a", "n_neurons"] == 3


def test_fano_pools_variance_and_mean_over_windows():
    """Σ_w Var_b / Σ_w Mean_b, not the mean of per-window ratios: counts (0, 2) then (2, 2) in two 2-step windows
    give (2 + 0) / (1 + 2) = 2/3 (the per-window average would be (2 + 0) / 2 = 1)."""
    z = np.zeros((4, 2, 1))
    z[0:2, 1, 0] = 1       # window 1: trial 0 -> 0 spikes, trial 1 -> 2
    z[2:4, :, 0] = 1       # window 2: both trials 2 spikes
    assert fano_factor(z, 1.0, window_ms=2.0)[0] == pytest.approx(2 / 3)


def test_bad_input_names_the_argument():
    z = _bernoulli(200, 2, 4, 0.05)
    for call, name in [(lambda: firing_rates(z, 0.0), "dt_ms"), (lambda: firing_rates(z, -1.0), "dt_ms"),
                       (lambda: fano_factor(z, 1.0, window_ms=0.0), "window_ms"),
                       (lambda: fano_factor(z, 1.0, window_ms=500.0), "window_ms"),
                       (lambda: synchrony(z, 1.0, bin_ms=-3.0), "bin_ms"),
                       (lambda: psth(z, 1.0, bin_ms=0.0), "bin_ms"),
                       (lambda: cv_isi(z, min_isis=1), "min_isis"),
                       (lambda: firing_rates(2 * z, 1.0), "0/1")]:
        with pytest.raises(ValueError, match=name):
            call()
    assert math.isnan(synchrony(z, 1.0, neurons=[]))


def test_psth_known_rate_and_2d_input():
    z = np.zeros((100, 5))
    z[:50] = _bernoulli(50, 1, 5, 0.5)[:, 0]
    df = psth(z, 1.0, bin_ms=10.0, cell_types=["a", "a", "b", "b", "b"])
    allr = df[df.cell_type == "all"]
    assert list(allr.t_ms) == list(np.arange(0, 100, 10.0))
    assert allr.rate_hz.iloc[5:].eq(0).all() and allr.rate_hz.iloc[:5].mean() == pytest.approx(500, rel=0.2)
    assert set(df.cell_type) == {"all", "a", "b"}


def test_spiking_record_input_and_measurement(tmp_path):
    from spikelearn.tasks import HierarchicalDelayedXOR

    model = SpikingRNN(gaussian(20, 1.0, seed=0), 1, 2, v_th=0.3, n_ref=2)
    x = torch.rand(200, 3, 1)
    with torch.no_grad():
        rec = model(x, record=True).record
    assert rec.z.sum() > 0
    st = spike_stats(rec, 1.0)
    np.testing.assert_allclose(st.per_neuron["n_spikes"], rec.z.sum((0, 1)).numpy())
    task = HierarchicalDelayedXOR(level=0, delay_steps=5, n_steps=100)
    res = spike_stats_measurement(batch_size=2)(model, task, 0)
    assert set(res) == {"rate_hz", "cv_isi", "fano", "synchrony"}
    for p in (plot_raster(rec.z, 1.0, tmp_path / "r.png", cell_types=["E"] * 15 + ["I"] * 5),
              plot_psth(rec, 1.0, tmp_path / "p.png", cell_types=["E"] * 15 + ["I"] * 5)):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
