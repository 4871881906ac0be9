"""e-prop (ALGORITHMS.md §2.8): detach-recipe equivalence, exact factorisation, limiting cases, regulariser,
online = batched, feedback variants, trainer ``update_every_steps`` (the rule contract:
tests/rules/test_contract.py)."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from spikelearn.circuit import Circuit, gaussian
from spikelearn.config import TrainConfig
from spikelearn.models import SpikingRNN
from spikelearn.rules import BPTT, EProp, output_error
from spikelearn.rules import _reference as ref
from spikelearn.rules.eprop import rate_regularizer, run_online
from spikelearn.train import Trainer


def _mse(y_hat, y, mask):
    return 0.5 * (((y_hat - y) ** 2).sum(-1) * mask).sum() / y.shape[1]


def _mean_mse(y_hat, y, mask):
    return (((y_hat - y) ** 2).mean(-1) * mask).sum() / mask.sum()


def _model(neuron="alif", *, scaling="A", readout="filtered_spikes", n=8, circuit=None, **kw):
    torch.manual_seed(1)
    circuit = gaussian(n, 0.6, seed=2) if circuit is None else circuit
    # scaling B with v_th^B = v_th^A (1 − α) has the same spikes as scaling A (A↔B map)
    opts = dict(n_adaptive=n // 2 if neuron == "alif" else 0, tau_adapt_ms=50.0, n_ref=2, scaling=scaling,
                readout=readout, v_th=0.3 if scaling == "A" else 0.3 * (1 - math.exp(-1 / 20)), tau_out_ms=10.0,
                w_in=0.3 * torch.randn(circuit.n, 3, dtype=torch.float64))
    opts.update(kw)
    return SpikingRNN(circuit, 3, 2, **opts).double()


def _data(T=30, B=3, n_in=3, n_out=2, seed=0, p=0.3):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(T, B, n_in, generator=g, dtype=torch.float64) < p).double()
    y = torch.randn(T, B, n_out, generator=g, dtype=torch.float64)
    mask = (torch.rand(T, B, generator=g, dtype=torch.float64) > 0.3).double()
    return x, y, mask


def _assert_rel(got, want, tol=1e-10, keys=None):  # ALGORITHMS.md §11.1: equivalence tests < 1e-10 relative
    for k in keys or want:
        nw = want[k].norm()
        assert nw > 0, f"{k}: reference gradient is zero (test would be vacuous)"
        err = float((got[k] - want[k]).norm() / nw)
        assert err < tol, f"{k}: relative error {err:.3g}"


# ------------------------------------------------------------------------------------------ T2.2
@pytest.mark.parametrize("mode", ["batched", "online"])
@pytest.mark.parametrize("feedback", ["symmetric", "random"])
@pytest.mark.parametrize("neuron", ["lif", "alif"])
@pytest.mark.parametrize("reset_in_trace", [False, True])
def test_eprop_equals_detached_autograd(mode, feedback, neuron, reset_in_trace):
    """T2.2: hard-coded e-prop = autograd with recurrent spikes (and reset, unless reset_in_trace) detached."""
    model = _model(neuron)
    x, y, mask = _data()
    rule = EProp(feedback=feedback, reset_in_trace=reset_in_trace, mode=mode, chunk_steps=7)
    loss, g = rule.gradients(model, x, y, mask, _mse)
    B = None if feedback == "symmetric" else rule.feedback_matrix(model)
    ref_loss, want = ref.eprop_autograd(model, x, y, mask, _mse, B=B, reset_in_trace=reset_in_trace)
    assert torch.allclose(loss, ref_loss, rtol=1e-12)
    assert set(g) == set(want)
    _assert_rel(g, want)


@pytest.mark.parametrize("scaling", ["A", "B"])
@pytest.mark.parametrize("readout", ["filtered_spikes", "filtered_current"])
@pytest.mark.parametrize("readout_norm", [True, False])
def test_scalings_readouts_and_mean_loss(scaling, readout, readout_norm):
    """Both scalings, both readout forms with and without the (1−κ) readout normalisation; a loss normalised by
    the number of masked steps (any loss_fn)."""
    model = _model("alif", scaling=scaling, readout=readout, refractory="counter", readout_norm=readout_norm)
    x, y, mask = _data(seed=3)
    for mode in ("batched", "online"):
        _, g = EProp(mode=mode, chunk_steps=11).gradients(model, x, y, mask, _mean_mse)
        _, want = ref.eprop_autograd(model, x, y, mask, _mean_mse)
        _assert_rel(g, want)


@pytest.mark.parametrize("variant", ["plain", "synaptic", "reset_zero"])
def test_per_neuron_constants_and_gap_junctions(variant):
    """Heterogeneous τ_m (non-presynaptic traces) and gap junctions: own term local, others' potentials dropped;
    also with per-neuron synaptic time constants (some 0; gap junctions unfiltered) and with the reset to zero.
    Batched and online."""
    rng = np.random.default_rng(0)
    base = gaussian(8, 1.5, seed=2)
    G = sp.random(8, 8, density=0.4, random_state=1, data_rvs=lambda k: 0.05 * rng.random(k))
    G = sp.csr_array(G + G.T)
    params = {"tau_mem_ms": np.linspace(10.0, 30.0, 8)}
    if variant == "synaptic":
        params["tau_syn_ms"] = np.array([0.0, 2.0, 4.0, 0.0, 8.0, 3.0, 5.0, 1.0])
    circuit = Circuit.from_dense(base.weights(dense=True), mask=base.mask(dense=True), gap=G, neuron_params=params)
    model = _model("alif", circuit=circuit, reset="zero" if variant == "reset_zero" else "subtract")
    x, y, mask = _data()
    with torch.no_grad():
        assert torch.allclose(ref.spiking_forward(model, x, detach_rec=False, detach_reset=False)[0], model(x).y,
                              atol=1e-12)
    for rit in (False, True):
        _, want = ref.eprop_autograd(model, x, y, mask, _mse, reset_in_trace=rit)
        for mode in ("batched", "online"):
            _, g = EProp(mode=mode, reset_in_trace=rit, chunk_steps=9).gradients(model, x, y, mask, _mse)
            _assert_rel(g, want)


def test_reset_in_trace_and_feedback_change_the_gradient():
    model = _model("alif")
    x, y, mask = _data()
    _, a = EProp().gradients(model, x, y, mask, _mse)
    _, b = EProp(reset_in_trace=True).gradients(model, x, y, mask, _mse)
    _, c = EProp(feedback="random").gradients(model, x, y, mask, _mse)
    assert not torch.allclose(a["theta_rec"], b["theta_rec"])
    assert not torch.allclose(a["theta_rec"], c["theta_rec"])
    torch.testing.assert_close(a["theta_out"], c["theta_out"], rtol=1e-12, atol=0)  # W_out exact either way


# ------------------------------------------------------------------------------------------ T2.1
def test_exact_factorisation_total_derivatives_times_traces_is_bptt():
    """T2.1 (eq. F): Σ_t (dE/dz_j^t)_total e_ji^t = BPTT, 4 LIF + 4 ALIF, 3 inputs, T = 50, 100 Hz Poisson input."""
    torch.manual_seed(5)
    model = SpikingRNN(gaussian(8, 1.0, seed=4), 3, 1, n_adaptive=4, tau_adapt_ms=500.0, beta=0.07, v_th=0.62,
                       n_ref=2, scaling="A", w_in=1.5 * torch.randn(8, 3, dtype=torch.float64)).double()
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(50, 2, 3, generator=g, dtype=torch.float64) < 0.1).double()
    y = torch.randn(50, 2, 1, generator=g, dtype=torch.float64)
    mask = torch.ones(50, 2, dtype=torch.float64)
    W = model.effective_weights()
    leaves = type(W)(*(None if w is None else w.detach().clone().requires_grad_(True) for w in W))
    zeta: list[torch.Tensor] = []
    y_hat, _ = ref.spiking_forward(model, x, detach_rec=False, detach_reset=False, weights=leaves, zeta=zeta)
    loss = _mse(y_hat, y, mask)
    *dz, g_rec, g_in = torch.autograd.grad(loss, zeta + [leaves.W_rec, leaves.W_in])
    dE_dz = torch.stack(dz)  # (T, B, N) total derivatives w.r.t. the outgoing spike copy
    with torch.no_grad():
        rec = model(x, record=True).record
    e = ref.eprop_traces(model, rec, reset_in_trace=False)  # (T, B, N, N + n_in)
    assert float(rec.z.mean()) > 0.02
    fact = torch.einsum("tbj,tbji->ji", dE_dz, e)
    g_rec = g_rec * model.mask_rec  # no autapses
    for got, want in ((fact[:, :8] * model.mask_rec, g_rec), (fact[:, 8:], g_in)):
        err = float(((got - want).abs().max() / want.abs().max()))
        assert err < 1e-10, err
    # and BPTT through the reference equals the rule BPTT
    _, bptt = BPTT().gradients(model, x, y, mask, _mse)
    torch.testing.assert_close(model.param_grads({"W_rec": g_rec, "W_in": g_in})["theta_rec"], bptt["theta_rec"],
                               rtol=1e-10, atol=1e-14)


# ------------------------------------------------------------------------------------------ T2.3 / limits
@pytest.mark.parametrize("neuron", ["lif", "alif"])
def test_no_recurrence_equals_bptt(neuron):
    """T2.3: W_rec = 0 ⇒ e-prop (symmetric) = BPTT: reset in trace vs full BPTT, reset detached in both."""
    x, y, mask = _data(T=40)
    for rit, detach_reset in ((True, False), (False, True)):
        model = _model(neuron, detach_reset=detach_reset)
        with torch.no_grad():
            model.theta_rec.zero_()
        _, g = EProp(reset_in_trace=rit).gradients(model, x, y, mask, _mse)
        _, want = BPTT().gradients(model, x, y, mask, _mse)
        _assert_rel(g, want, tol=1e-10)


def test_recurrent_network_differs_from_bptt_with_positive_cosine():
    model = _model("alif", n=30, circuit=gaussian(30, 2.0, seed=7))
    x, y, mask = _data(T=80, B=4, seed=2)
    _, g = EProp().gradients(model, x, y, mask, _mse)
    _, want = BPTT().gradients(model, x, y, mask, _mse)
    for k in ("theta_rec", "theta_in"):
        cos = float(torch.nn.functional.cosine_similarity(g[k].flatten(), want[k].flatten(), dim=0))
        assert 0 < cos < 1 - 1e-6, (k, cos)


# ------------------------------------------------------------------------------------------ T2.4
@pytest.mark.parametrize("mode", ["batched", "online"])
def test_alif_traces_with_zero_beta_reduce_to_lif(mode, monkeypatch):
    """T2.4: with β = 0 the ALIF traces (ε^v, ε^a and e = ψ(ε^v − β ε^a)) reduce to the LIF traces: the hard-coded
    engine forced onto its ALIF path for an all-LIF model gives the LIF path's gradients."""
    model = _model("lif")
    x, y, mask = _data()
    rule = EProp(mode=mode, chunk_steps=7)
    _, lif = rule.gradients(model, x, y, mask, _mse)
    plain = EProp._consts

    def forced(self, m):
        k = plain(self, m)
        assert not k.adaptive and bool((k.beta == 0).all())
        return k._replace(adaptive=True, sl_a=slice(0, k.N))

    monkeypatch.setattr(EProp, "_consts", forced)
    _, alif = rule.gradients(model, x, y, mask, _mse)
    _assert_rel(alif, lif, tol=1e-12)


@pytest.mark.parametrize("mode", ["batched", "online"])
def test_mixed_zero_and_nonzero_beta_not_in_one_block(mode):
    """Adaptive neurons interleaved with β = 0 ones (ε^a kept for every row): still T2.2 exact."""
    beta = torch.tensor([0.3, 0.0, 0.3, 0.0, 0.3, 0.0, 0.0, 0.3], dtype=torch.float64)
    model = _model("alif", beta=beta)
    assert torch.equal(model.beta != 0, beta != 0)  # interleaved, as given (float32 build, then double)
    x, y, mask = _data(seed=5)
    _, g = EProp(mode=mode, chunk_steps=7).gradients(model, x, y, mask, _mse)
    _, want = ref.eprop_autograd(model, x, y, mask, _mse)
    _assert_rel(g, want)


# ------------------------------------------------------------------------------------------ T2.5 regulariser
@pytest.mark.parametrize("form, mode", [("batch", "batched"), ("batch", "online"), ("running", "batched"),
                                        ("running", "online"), ("concatenated", "batched"), ("trial", "batched"),
                                        ("trial", "online")])
def test_regulariser_gradient_equals_autograd(form, mode):
    model = _model("alif")
    x, y, mask = _data()
    rule = EProp(mode=mode, reg_coeff=3.0, reg_target_hz=50.0, reg_form=form, chunk_steps=8)
    _, g = rule.gradients(model, x, y, mask, _mse)
    reg = dict(coeff=3.0, target_hz=50.0, form=form)
    _, want = ref.eprop_autograd(model, x, y, mask, _mse, reg=reg)
    _assert_rel(g, want)
    # the regulariser alone: zero task loss
    _, g0 = rule.gradients(model, x, y, mask * 0, _mse)
    _, want0 = ref.eprop_autograd(model, x, y, mask * 0, _mse, reg=reg)
    _assert_rel(g0, want0, keys=["theta_rec", "theta_in"])


def test_trial_regulariser_is_each_trials_whole_trial_rate_against_the_target():
    """"trial": (c/B) Σ_b Σ_j (f_bj − f_0)², f_bj = each trial's own spike count / (T dt), by hand; = "batch" for
    B = 1, differs from it for B > 1."""
    g = torch.Generator().manual_seed(1)
    T, B, N, dt, c, target_hz = 9, 3, 4, 0.5, 2.0, 30.0
    z = (torch.rand(T, B, N, generator=g, dtype=torch.float64) < 0.3).double()
    f0 = target_hz / 1000.0
    want = 0.0
    for b in range(B):
        for j in range(N):
            f = sum(float(z[t, b, j]) for t in range(T)) / (T * dt)  # spikes per ms in trial b
            want += (f - f0) ** 2
    want *= c / B
    got = rate_regularizer(z, dt, c, target_hz, "trial")
    assert abs(float(got) - want) < 1e-14 * max(1.0, want)
    assert torch.equal(rate_regularizer(z[:, :1], dt, c, target_hz, "trial"),
                       rate_regularizer(z[:, :1], dt, c, target_hz, "batch"))
    assert not torch.allclose(got, rate_regularizer(z, dt, c, target_hz, "batch"))


def test_concatenated_regulariser_is_the_running_one_on_one_long_trial():
    """"concatenated" = "running" on the batch's trials laid end to end (trial 0 first); B = 1: the same; and it
    is batched-only."""
    g = torch.Generator().manual_seed(0)
    z = (torch.rand(7, 3, 4, generator=g, dtype=torch.float64) < 0.3).double()
    long = torch.cat([z[:, b] for b in range(3)])[:, None, :]
    a = rate_regularizer(z, 1.0, 2.0, 30.0, "concatenated")
    assert torch.equal(a, rate_regularizer(long, 1.0, 2.0, 30.0, "running"))
    assert not torch.allclose(a, rate_regularizer(z, 1.0, 2.0, 30.0, "running"))
    assert torch.equal(rate_regularizer(z[:, :1], 1.0, 2.0, 30.0, "concatenated"),
                       rate_regularizer(z[:, :1], 1.0, 2.0, 30.0, "running"))
    with pytest.raises(ValueError, match="concatenated.*batched"):
        EProp(mode="online", reg_coeff=1.0, reg_form="concatenated")


def test_running_regulariser_online_in_small_chunks_is_exact():
    """The "running" form is causal: reading only at the end after many chunks equals batched."""
    model = _model("lif")
    x, y, mask = _data()
    kw = dict(reg_coeff=2.0, reg_form="running")
    _, a = EProp(mode="online", chunk_steps=4, **kw).gradients(model, x, y, mask, _mse)
    _, b = EProp(**kw).gradients(model, x, y, mask, _mse)
    _assert_rel(a, b, tol=1e-10)


# ------------------------------------------------------------------------------------------ online API
def test_step_by_step_equals_batched():
    """init/step with one record step at a time: the step contributions sum to the batched gradient."""
    model = _model("alif")
    x, y, mask = _data()
    rule = EProp(reset_in_trace=True, feedback="random")
    _, want = rule.gradients(model, x, y, mask, _mse)
    with torch.no_grad():
        out = model(x, record=True)
    _, dE_dy = output_error(out.y, y, mask, _mse)
    state = rule.init(model, x.shape[1])
    total = {k: torch.zeros_like(v) for k, v in want.items()}
    for t in range(x.shape[0]):
        rec_t = type(out.record)(*(f[t] for f in out.record))
        g, state = rule.step(model, rec_t, dE_dy[t], state)
        for k in g:
            total[k] += g[k]
    _assert_rel(total, want, tol=1e-10)


def test_online_state_size_is_independent_of_T():
    model = _model("alif")
    rule = EProp(mode="online", reset_in_trace=True, reg_coeff=1.0, reg_form="running")
    sizes = []
    for T in (10, 40):
        x, y, mask = _data(T=T)
        with torch.no_grad():
            out = model(x, record=True)
        _, dE = output_error(out.y, y, mask, _mse)
        s = rule.advance(model, out.record, dE, rule.init(model, 3))
        sizes.append(sum(f.numel() for f in s if isinstance(f, torch.Tensor)))
    assert sizes[0] == sizes[1]


def test_float32():
    m64 = _model("alif")
    m32 = _model("alif").float()
    x, y, mask = _data()
    for mode in ("batched", "online"):
        _, g64 = EProp(mode=mode).gradients(m64, x, y, mask, _mse)
        _, g32 = EProp(mode=mode).gradients(m32, x.float(), y.float(), mask.float(), _mse)
        for k in g64:
            assert g32[k].dtype == torch.float32
            assert float((g32[k].double() - g64[k]).norm() / g64[k].norm()) < 1e-4


# ------------------------------------------------------------------------------------------ feedback
def test_random_feedback_is_seeded_and_adaptive_follows_w_out():
    model = _model("lif")
    r1, r2 = EProp(feedback="random", feedback_seed=3), EProp(feedback="random", feedback_seed=3)
    assert torch.equal(r1.feedback_matrix(model), r2.feedback_matrix(model))
    assert not torch.equal(r1.feedback_matrix(model), EProp(feedback="random", feedback_seed=4).feedback_matrix(model))
    assert torch.allclose(r1.feedback_matrix(model).std(), torch.tensor(1 / math.sqrt(8.0), dtype=torch.float64),
                          rtol=0.5)
    ad = EProp(feedback="adaptive", feedback_seed=3, feedback_decay=0.1)
    st = ad.init_state(model)  # the adaptive B lives in the rule state, not in the rule
    B0 = ad.feedback_matrix(model, st).clone()
    torch.testing.assert_close(B0, r1.feedback_matrix(model))
    torch.testing.assert_close(ad.feedback_matrix(model, st), B0)  # unchanged W_out: no update, no decay
    W0 = model.effective_weights().W_out.detach().clone()
    with torch.no_grad():
        model.theta_out.add_(0.5)
    dW = model.effective_weights().W_out.detach() - W0
    torch.testing.assert_close(ad.feedback_matrix(model, st), 0.9 * B0 + dW.T)
    x, y, mask = _data()
    B1 = ad.feedback_matrix(model, st)
    _, g, st2 = ad.update(model, x, y, mask, _mse, st)
    _, want = ref.eprop_autograd(model, x, y, mask, _mse, B=B1)
    _assert_rel(g, want)
    torch.testing.assert_close(st2["feedback_B"], B1)  # the returned state holds the updated B ...
    torch.testing.assert_close(st["feedback_B"], B0)   # ... and the state passed in is unchanged
    assert ad == EProp(feedback="adaptive", feedback_seed=3, feedback_decay=0.1)  # the rule keeps nothing


def test_bad_numeric_options():
    """(Bogus string options, the wrong model type and the registry entry: tests/rules/test_contract.py.)"""
    for kw in (dict(chunk_steps=0), dict(reg_coeff=-1.0), dict(feedback_decay=1.0)):
        with pytest.raises(ValueError):
            EProp(**kw)


# ------------------------------------------------------------------------------------------ trainer
class _Task:
    """A tiny regression task with the task interface the trainer needs."""

    n_in, n_out, dt_ms = 3, 2, 1.0

    def sample(self, batch_size, generator, dtype=torch.float32):
        T = 20
        x = (torch.rand(T, batch_size, 3, generator=generator, dtype=torch.float64) < 0.3).to(dtype)
        y = torch.sin(torch.arange(T, dtype=torch.float64) / 3)[:, None, None].expand(T, batch_size, 2).to(dtype)
        return x, y, torch.ones(T, batch_size, dtype=dtype)

    def loss(self, y_hat, y, mask):
        return _mse(y_hat, y, mask)

    def accuracy(self, y_hat, y, mask):
        return 0.0


def _trainer(rule, k, lr=0.01):
    model = _model("alif")
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    cfg = TrainConfig(iterations=2, batch_size=3, eval_every=0, update_every_steps=k, quiet=True, dtype="float64")
    return model, Trainer(model, _Task(), rule, opt, cfg, out_dir=None)


def test_trainer_update_every_steps():
    # k >= T: one update per trial, identical to the whole-trial path
    m1, t1 = _trainer(EProp(), 0)
    m2, t2 = _trainer(EProp(), 50)
    t1.run()
    t2.run()
    for a, b in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # k = 5 on T = 20: 4 updates per trial; the first equals run_online's first read
    m3, t3 = _trainer(EProp(), 5)
    updates = []
    t3._apply_update = (lambda f: (lambda g: (updates.append(g), f(g))[1]))(t3._apply_update)
    t3.run()
    assert len(updates) == 8 and t3.iteration == 2
    assert not any(torch.equal(a, b) for a, b in zip(m1.parameters(), m3.parameters()))
    # a whole-trial rule refuses update_every_steps
    _, t4 = _trainer(BPTT(), 5)
    with pytest.raises(ValueError, match="online"):
        t4.run()


def test_run_online_applies_updates_mid_trial():
    """With on_update, the rest of the trial runs with the updated weights."""
    model = _model("lif")
    x, y, mask = _data(T=20)
    seen = []

    def on_update(grads):
        seen.append(model.effective_weights().W_rec.detach().clone())
        with torch.no_grad():
            model.theta_rec.sub_(0.1 * grads["theta_rec"])

    loss, grads, _ = run_online(EProp(), model, x, y, mask, _mse, chunk_steps=5, on_update=on_update)
    assert grads is None and len(seen) == 4 and torch.isfinite(loss)
    assert not torch.equal(seen[0], seen[-1])


@pytest.mark.parametrize("path", sorted((__import__("pathlib").Path(__file__).resolve().parents[2] / "experiments")
                                        .glob("eprop_*/*.toml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_experiment_configs_build(path, tmp_path):
    """The experiments' TOML files are valid `spikelearn train` configurations with an e-prop rule."""
    from spikelearn.config import load_config
    from spikelearn.build import build

    cfg = load_config(path)
    _, model, task, rule, _, _ = build(cfg, out_dir=str(tmp_path))
    assert isinstance(rule, EProp) and isinstance(model, SpikingRNN) and model.n_in == task.n_in


# ------------------------------------------------------------------------------------------ current-based synapses
@pytest.mark.parametrize("mode", ["batched", "online"])
@pytest.mark.parametrize("neuron", ["lif", "alif"])
@pytest.mark.parametrize("reset_in_trace", [False, True])
@pytest.mark.parametrize("scaling", ["A", "B"])
def test_eprop_with_synaptic_currents_equals_detached_autograd(mode, neuron, reset_in_trace, scaling):
    """With tau_syn_ms > 0 the filtered presynaptic signal replaces pre (module docstring): e-prop equals autograd on
    the detached graph in which the synaptic current is the postsynaptic neuron's own state."""
    model = _model(neuron, scaling=scaling, tau_syn_ms=5.0)
    x, y, mask = _data(T=40)
    assert model(x, record=True).record.z.sum() > 5
    rule = EProp(reset_in_trace=reset_in_trace, mode=mode, chunk_steps=7, feedback="random")
    _, g = rule.gradients(model, x, y, mask, _mse)
    _, want = ref.eprop_autograd(model, x, y, mask, _mse, B=rule.feedback_matrix(model), reset_in_trace=reset_in_trace)
    _assert_rel(g, want)
    # and the synaptic filter matters: the gradient without it (same weights) is a different one
    plain = _model(neuron, scaling=scaling)
    _, g0 = rule.gradients(plain, x, y, mask, _mse)
    assert float((g0["theta_in"] - g["theta_in"]).norm() / g["theta_in"].norm()) > 1e-2


@pytest.mark.parametrize("options", [{"tau_syn_ms": 6.0}, {"reset": "zero"}], ids=["synaptic", "reset_zero"])
def test_eprop_with_synapses_or_reset_zero_and_no_recurrence_equals_bptt(options):
    """T2.3 with synaptic currents or the reset to zero: W_rec = 0 and the reset in the trace ⇒ e-prop = BPTT."""
    x, y, mask = _data(T=40)
    model = _model("alif", **options)
    with torch.no_grad():
        model.theta_rec.zero_()
    _, g = EProp(reset_in_trace=True).gradients(model, x, y, mask, _mse)
    _, want = BPTT().gradients(model, x, y, mask, _mse)
    _assert_rel(g, want)


# ------------------------------------------------------------------------------------------ reset to zero
@pytest.mark.parametrize("mode", ["batched", "online"])
@pytest.mark.parametrize("neuron", ["lif", "alif"])
@pytest.mark.parametrize("reset_in_trace", [False, True])
def test_eprop_with_reset_zero_equals_detached_autograd(mode, neuron, reset_in_trace):
    """reset="zero": local leak α (1 − z_j^{t-1}) (the neuron's own spike, constant on the detached graph) and, in
    the trace, the reset path −α v_j^{t-1}; e-prop equals autograd on the §2.7 graph, also with synapses."""
    x, y, mask = _data(T=40)
    for tau_syn in (0.0, 4.0):
        model = _model(neuron, reset="zero", tau_syn_ms=tau_syn)
        assert model(x, record=True).record.z.sum() > 10
        rule = EProp(reset_in_trace=reset_in_trace, mode=mode, chunk_steps=7)
        _, g = rule.gradients(model, x, y, mask, _mse)
        _, want = ref.eprop_autograd(model, x, y, mask, _mse, reset_in_trace=reset_in_trace)
        _assert_rel(g, want)


@pytest.mark.parametrize("mode", ["batched", "online"])
def test_eprop_from_a_relaxed_initial_state(mode):
    """A model whose trials start from ongoing activity (init_state_std / init_relax_steps: spikes, adaptation and
    refractoriness in the initial state) — the initial spikes are presynaptic at the first step; = autograd."""
    x, y, mask = _data(T=30)
    model = _model("alif", init_state_std=2.0, init_relax_steps=3, init_seed=5, tau_syn_ms=3.0)
    s0 = model.init_state(3)
    assert s0.z.any() and s0.v.abs().sum() > 0
    rule = EProp(mode=mode, chunk_steps=7, reset_in_trace=True)
    _, g = rule.gradients(model, x, y, mask, _mse)
    _, want = ref.eprop_autograd(model, x, y, mask, _mse, reset_in_trace=True)
    _assert_rel(g, want)
    rest = _model("alif", tau_syn_ms=3.0)
    _, g0 = rule.gradients(rest, x, y, mask, _mse)
    assert float((g0["theta_rec"] - g["theta_rec"]).norm()) > 1e-3 * float(g["theta_rec"].norm())
