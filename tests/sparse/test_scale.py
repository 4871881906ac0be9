"""Connectome scale without a dense matrix (issue 19, done-when): each test runs in a subprocess whose private
memory is capped at 1.5 GB (RLIMIT_DATA, imports included) and whose peak resident set must stay below it — far below
one dense N x N array at these sizes.

* Brian2 gives identical spikes on a sparse circuit of 20,000 neurons built without any dense matrix (a dense
  float64 W_rec alone is 3.2 GB);
* the forward and one batched e-prop gradient on 100,000 neurons at 0.05 % density (5 M edges; dense: 80 GB).
Both are short (small T and B)."""

import subprocess
import sys
import textwrap

import pytest

# RLIMIT_DATA bounds the process's private writable memory (heap and anonymous mappings: every tensor and array),
# i.e. what can become resident; shared-library text is outside it. The peak resident set is asserted as well.
CAP = textwrap.dedent("""
    import resource
    cap = 1_500_000_000
    resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
""")

_BRIAN2 = CAP + textwrap.dedent("""
    import numpy as np
    import torch
    from spikelearn.circuit import dale
    from spikelearn.models import SpikingRNN
    from spikelearn.validate import compare_with_brian2

    torch.manual_seed(0)
    n = 20_000
    c = dale(n, 0.8, p=0.001, seed=3, draw="sparse")              # 400 k edges, drawn per edge
    m = SpikingRNN(c, 5, 2, storage="sparse", v_th=0.02, n_ref=2, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(12, 1, 5, generator=g, dtype=torch.float64) < 0.5).double()
    rep = compare_with_brian2(m, x, atol=1e-9)
    print("spikes", rep.summary["spikes_spikelearn"], rep.summary["spikes_brian2"], "ok", rep.ok)
    print("peak_rss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
    assert rep.ok, rep.verdict
    assert rep.summary["spikes_spikelearn"] > 100
""")

_EPROP = CAP + textwrap.dedent("""
    import torch
    from spikelearn.circuit import dale
    from spikelearn.models import SpikingRNN
    from spikelearn.rules import EProp

    torch.manual_seed(0)
    n = 100_000
    c = dale(n, 0.8, p=0.0005, seed=4, draw="sparse")             # 5 M edges
    m = SpikingRNN(c, 4, 2, storage="sparse", v_th=0.05)
    g = torch.Generator().manual_seed(2)
    x = (torch.rand(8, 2, 4, generator=g) < 0.5).float()
    with torch.no_grad():
        out = m(x, record=True)
    y, mask = torch.randn(8, 2, 2, generator=g), torch.ones(8, 2)
    loss, grads = EProp().gradients(m, x, y, mask, lambda a, b, k: ((a - b) ** 2).sum(-1).mul(k).sum())
    assert grads["theta_rec"].shape == m.theta_rec.shape == (c.n_edges,)
    assert torch.isfinite(grads["theta_rec"]).all() and bool((grads["theta_rec"] != 0).any())
    print("edges", c.n_edges, "spikes", int(out.record.z.sum()), "loss", float(loss))
    print("peak_rss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
""")


def _run(code: str) -> str:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r.stdout


@pytest.mark.brian2
def test_brian2_identical_spikes_on_20k_neurons_without_a_dense_matrix():
    out = _run(_BRIAN2)
    assert "ok True" in out
    assert int(out.split("peak_rss_mb")[1].split()[0]) < 1500


def test_forward_and_eprop_on_100k_neurons_under_a_memory_cap():
    out = _run(_EPROP)
    assert int(out.split("peak_rss_mb")[1].split()[0]) < 1500
