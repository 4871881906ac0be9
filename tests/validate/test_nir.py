"""NIR export (optional extra ``[nir]``): round trip, NIR-semantics mismatch, unsupported features, snnTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spikelearn.circuit import erdos_renyi
from spikelearn.models import SpikingRNN
from spikelearn.validate import UnsupportedFeatureError, from_nir, simulate_nir, to_nir

nir = pytest.importorskip("nir")


def _model(n=60, scaling="B", n_ref=3, **kw):
    torch.manual_seed(0)
    v_th = 0.03 if scaling == "B" else 0.6
    return SpikingRNN(erdos_renyi(n, 0.2, g=1.0, seed=1), 10, 2, scaling=scaling, v_th=v_th, n_ref=n_ref,
                      tau_mem_ms=20.0 + 10.0 * torch.rand(n, dtype=torch.float64), dtype="float64", **kw)


def _x(T=300, B=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, B, 10, generator=g, dtype=torch.float64) < 0.05).to(torch.float64)


@pytest.mark.parametrize("scaling", ["A", "B"])
def test_round_trip_through_nir_file_reproduces_every_spike(scaling, tmp_path):
    model = _model(scaling=scaling)
    x = _x()
    path = tmp_path / "net.nir"
    nir.write(path, to_nir(model))
    back = from_nir(nir.read(path))
    with torch.no_grad():
        a, b = model(x, record=True), back(x, record=True)
    rate = a.record.z.mean().item() * 1000.0
    assert 2.0 <= rate <= 60.0, rate
    assert torch.equal(a.record.z, b.record.z)
    assert torch.allclose(a.record.v, b.record.v, atol=1e-12, rtol=0)
    assert torch.allclose(a.y, b.y, atol=1e-12, rtol=0)


def test_graph_layout_and_parameters():
    model = _model(scaling="A")
    g = to_nir(model)
    assert isinstance(g.nodes["lif"], nir.LIF) and isinstance(g.nodes["delay"], nir.Delay)
    assert ("w_rec", "delay") in g.edges and ("delay", "lif") in g.edges
    np.testing.assert_allclose(g.nodes["lif"].r, g.nodes["lif"].tau)  # scaling A: a pulse w raises v by w
    np.testing.assert_allclose(g.nodes["lif"].tau, model.tau_mem_ms.numpy() * 1e-3)
    W = model.effective_weights()
    np.testing.assert_array_equal(g.nodes["w_rec"].weight, W.W_rec.detach().numpy())
    g2 = to_nir(model, explicit_delay=False)
    assert ("w_rec", "lif") in g2.edges and "delay" not in g2.nodes


def test_nir_semantics_match_until_the_first_reset_then_differ():
    """NIR's LIF (reset to v_reset at the spike, no refractoriness) is spikelearn's map up to the first spike."""
    model = _model(scaling="B", n_ref=0)
    x = _x()
    with torch.no_grad():
        rec = model(x, record=True).record
    sim = simulate_nir(to_nir(model), x)
    z = rec.z.numpy()
    for b in range(z.shape[1]):
        t0 = int(np.argmax(z[:, b].any(1)))
        assert np.array_equal(z[: t0 + 1, b], sim["z"][: t0 + 1, b])
        np.testing.assert_allclose(sim["v"][: t0 + 1, b], rec.v.numpy()[: t0 + 1, b], atol=1e-12)
    both = ((z == 1) & (sim["z"] == 1)).sum() / ((z == 1) | (sim["z"] == 1)).sum()
    assert both < 0.9  # the reset conventions differ: documented mismatch, not silently equal


def test_unsupported_features_are_named():
    with pytest.raises(UnsupportedFeatureError, match="adaptive threshold"):
        to_nir(_model(n_adaptive=5))
    from spikelearn.models import RateRNN

    with pytest.raises(UnsupportedFeatureError, match="neuron type of RateRNN"):
        to_nir(RateRNN(erdos_renyi(10, 0.3, seed=0), 2, 1))


def test_snntorch_importer():
    """snnTorch 1.0 has no top-level ``import_from_nir``; ``snntorch.import_nir`` needs ``nirtorch``."""
    import snntorch

    assert not hasattr(snntorch, "import_from_nir")
    mod = pytest.importorskip("snntorch.import_nir", reason="snntorch.import_nir needs nirtorch (not installed)")
    net = mod.import_from_nir(to_nir(_model(scaling="A", n_ref=0), explicit_delay=False))
    assert isinstance(net, torch.nn.Module)
