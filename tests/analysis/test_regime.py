"""Rich/lazy measures (ALGORITHMS.md §8.5, T8.1–T8.4): alignments, tangent kernel, weight change, rule alignment."""

import copy

import numpy as np
import pytest
import torch

from spikelearn.analysis.regime import (
    activity_effective_rank,
    cka,
    default_rules,
    gradient_alignment,
    hidden_activity,
    kernel_alignment,
    model_weight_change,
    output_jacobian,
    regime_measurement,
    regime_summary,
    representation_alignment,
    representation_kernel,
    sign_similarity,
    tangent_kernel,
    tangent_kernel_alignment,
    weight_change,
    weight_effective_rank,
)
from spikelearn.circuit import dale, gaussian, low_rank
from spikelearn.models import RateRNN, SpikingRNN
from spikelearn.rules import BPTT, TruncatedBPTT
from spikelearn.tasks import classification_loss, regression_loss


def _rate(n=6, n_in=2, n_out=3, seed=1, **kw):
    torch.manual_seed(seed)
    opts = dict(form="richlazy", tau_ms=100.0, dt_ms=100.0, readout_bias=False, dtype=torch.float64)
    opts.update(kw)
    return RateRNN(gaussian(n, 1.25, seed=seed), n_in, n_out, **opts)


def _x(T=4, B=3, n_in=2, seed=0):
    return torch.randn(T, B, n_in, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _perturbed(model, scale=0.3, seed=5):
    m = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return m


# ---------------------------------------------------------------------------------------------- T8.2
def test_t82_alignments_one_for_unchanged_scale_invariant_and_symmetric():
    model, x = _rate(), _x()
    H = hidden_activity(model, x)
    K = tangent_kernel(model, x)
    assert representation_alignment(H, H) == pytest.approx(1.0, abs=1e-12)
    assert cka(H, H) == pytest.approx(1.0, abs=1e-12)
    assert kernel_alignment(K, K) == pytest.approx(1.0, abs=1e-12)
    assert tangent_kernel_alignment(model, copy.deepcopy(model), x) == pytest.approx(1.0, abs=1e-12)
    other = _perturbed(model)
    K1, H1 = tangent_kernel(other, x), hidden_activity(other, x)
    ka = kernel_alignment(K, K1)
    assert 0 < ka < 1 - 1e-6
    assert kernel_alignment(3.0 * K, 0.2 * K1) == pytest.approx(ka, abs=1e-12)
    assert kernel_alignment(K1, K) == pytest.approx(ka, abs=1e-12)
    ra = representation_alignment(H, H1)
    assert representation_alignment(5 * H, H1) == pytest.approx(ra, abs=1e-12)
    assert representation_alignment(H1, H) == pytest.approx(ra, abs=1e-12)
    with pytest.raises(ValueError, match="zero kernel"):
        kernel_alignment(K, 0 * K)


def test_rotation_translation_and_definition_of_uncentred_alignment_and_cka():
    g = torch.Generator().manual_seed(0)
    H0 = torch.randn(20, 7, generator=g, dtype=torch.float64)
    H1 = H0 @ torch.randn(7, 5, generator=g, dtype=torch.float64) + 0.3 * torch.randn(20, 5, generator=g,
                                                                                       dtype=torch.float64)
    Q, _ = torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=torch.float64))
    c = cka(H0, H1)
    # CKA: invariant to orthogonal rotation, isotropic scaling and translation of the features
    assert cka(H0, H1 @ Q) == pytest.approx(c, abs=1e-12)
    assert cka(H0, 4.0 * H1 + 2.5) == pytest.approx(c, abs=1e-12)
    # uncentred alignment: the kernel H Hᵀ of rotated features is the kernel of the unrotated ones
    ra = representation_alignment(H0, H1)
    assert representation_alignment(H0, H1 @ Q) == pytest.approx(ra, abs=1e-12)
    assert representation_alignment(H1, H1 @ Q) == pytest.approx(1.0, abs=1e-12)
    # ... but not to translation, and it equals its definition ⟨K0,K1⟩/(|K0||K1|) with K = H Hᵀ
    shifted = H1 + 2.5
    K0, K1 = H0 @ H0.T, shifted @ shifted.T
    direct = float((K0 * K1).sum() / (K0.norm() * K1.norm()))
    assert representation_alignment(H0, shifted) == pytest.approx(direct, abs=1e-12)
    assert abs(direct - ra) > 1e-3
    Kc = representation_kernel(H1, centered=True)
    C = torch.eye(20, dtype=torch.float64) - 1 / 20
    torch.testing.assert_close(Kc, C @ (H1 @ H1.T) @ C)
    # a rotation of the *samples* changes the kernel: RA of rotated vs unrotated inputs is below 1
    P = torch.linalg.qr(torch.randn(20, 20, generator=g, dtype=torch.float64))[0]
    assert representation_alignment(H1, P @ H1) < 0.99


def test_sign_similarity():
    a = torch.tensor([[1.0, -2.0, 0.0, 3.0]])
    assert sign_similarity(a, a * 7) == 1.0
    assert sign_similarity(a, torch.tensor([[1.0, 2.0, 0.0, -1.0]])) == 0.5
    assert sign_similarity(a, torch.tensor([[1.0, -2.0, 1e-9, 3.0]])) == 0.75


# ---------------------------------------------------------------------------------------------- T8.3 / T8.4
def _train(model, x, y, mask, loss, steps, lr):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss(model(x).y, y, mask).backward()
        opt.step()


def test_t83_lazy_limit_model_linear_in_its_parameters_keeps_its_kernel():
    # identity activation, zero initial state, T = 2: y^2 = W_out((1−γ) r^1 + γ(W_in x^2 + W_rec r^1)) with
    # r^1 = γ W_in x^1 is affine in W_rec, so its tangent kernel w.r.t. W_rec cannot change
    def make(T):
        m = _rate(n=5, activation="identity", tau_ms=200.0)
        m.theta_in.requires_grad_(False)
        m.theta_out.requires_grad_(False)
        return m, _x(T=T), torch.randn(T, 3, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    for T, lazy in ((2, True), (4, False)):
        m0, x, y = make(T)
        m1 = copy.deepcopy(m0)
        _train(m1, x, y, torch.ones(T, 3, dtype=torch.float64), regression_loss, 200, 0.05)
        dW = float((m1.theta_rec - m0.theta_rec).detach().norm() / m0.theta_rec.detach().norm())
        assert dW > 0.2  # the weights moved a lot
        ka = tangent_kernel_alignment(m0, m1, x)
        if lazy:
            assert ka == pytest.approx(1.0, abs=1e-12)
            torch.testing.assert_close(tangent_kernel(m0, x), tangent_kernel(m1, x), rtol=1e-10, atol=1e-12)
        else:
            assert ka < 1 - 1e-4  # a model nonlinear in W_rec: the kernel moves


@pytest.mark.parametrize("method", ["vmap", "autograd"])
def test_t84_per_output_gradient_assembly(method):
    model, x = _rate(), _x()
    J = output_jacobian(model, x, params=("W_rec", "W_in"), method=method, chunk_size=2)
    y = model(x).y
    c = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    g = torch.autograd.grad(y, [model.theta_rec, model.theta_in], grad_outputs=c, retain_graph=True)
    one_vjp = torch.cat([gi.reshape(-1) for gi in g])
    torch.testing.assert_close(c.reshape(-1) @ J, one_vjp, rtol=1e-10, atol=1e-12)
    # rows are ordered (t, b, k): compare a few rows with single backward passes
    for t, b, k in ((0, 0, 0), (3, 2, 1), (2, 1, 2)):
        (row,) = torch.autograd.grad(y[t, b, k], model.theta_rec, retain_graph=True)
        r = (t * 3 + b) * 3 + k
        torch.testing.assert_close(J[r, :36], row.reshape(-1), rtol=1e-10, atol=1e-12)


def test_jacobian_methods_agree_and_time_selection():
    model, x = _rate(), _x()
    Jv = output_jacobian(model, x, method="vmap")
    Ja = output_jacobian(model, x, method="autograd")
    torch.testing.assert_close(Jv, Ja, rtol=1e-10, atol=1e-12)
    last = output_jacobian(model, x, time_index=-1)
    torch.testing.assert_close(last, Jv[-9:], rtol=1e-10, atol=1e-12)
    K = tangent_kernel(model, x, time_index=[1, 3])
    assert K.shape == (18, 18)
    spk = SpikingRNN(gaussian(5, 1.5, seed=1), 2, 3, v_th=0.3, n_ref=0, dtype=torch.float64)
    Ks = tangent_kernel(spk, (torch.rand(20, 3, 2, generator=torch.Generator().manual_seed(0)) < 0.4).double())
    assert Ks.shape == (180, 180) and torch.isfinite(Ks).all() and float(Ks.abs().max()) > 0
    with pytest.raises(ValueError, match="method"):
        output_jacobian(model, x, method="loop")


# ---------------------------------------------------------------------------------------------- T8.1 and ranks
def test_t81_low_rank_inits_in_the_model_exact_rank_and_matched_norm():
    # the generator side is tested in tests/circuit/test_generators.py::test_low_rank_exact_rank_and_frobenius_norm;
    # here: what the *model* uses. Autapses must be allowed, else masking the diagonal breaks the exact rank.
    n = 40
    W0 = low_rank(n, n, seed=0).weights(dense=True)
    for r in (1, 5, n):
        c = low_rank(n, r, seed=0)
        W = RateRNN(c, 2, 2, allow_autapses=True, dtype=torch.float64).effective_weights().W_rec.detach().numpy()
        s = np.linalg.svd(W, compute_uv=False)
        assert int((s > 1e-10 * s[0]).sum()) == r
        info = weight_effective_rank(W)
        assert info["frobenius"] == pytest.approx(np.linalg.norm(W0), rel=1e-12)
        assert info["spectral"] == pytest.approx(s[0])
        if r == 1:
            assert info["participation_ratio"] == pytest.approx(1.0)
    masked = RateRNN(low_rank(n, 1, seed=0), 2, 2, dtype=torch.float64).effective_weights().W_rec.detach().numpy()
    assert np.linalg.matrix_rank(masked) > 1


def test_activity_effective_rank():
    g = torch.Generator().manual_seed(0)
    Q = torch.linalg.qr(torch.randn(30, 30, generator=g, dtype=torch.float64))[0][:, :4]
    Z = torch.randn(5000, 4, generator=g, dtype=torch.float64)
    H = Z @ Q.T + 3.0  # 4 equal-variance latent dimensions plus an offset
    assert activity_effective_rank(H)["participation_ratio"] == pytest.approx(4.0, rel=0.05)
    assert activity_effective_rank(H, centered=False)["participation_ratio"] < 2.0


# ---------------------------------------------------------------------------------------------- weight change
def test_weight_change_blocks_partition_the_total():
    g = torch.Generator().manual_seed(0)
    W0 = torch.randn(6, 6, generator=g, dtype=torch.float64)
    W1 = W0 + 0.1 * torch.randn(6, 6, generator=g, dtype=torch.float64)
    types = ["E", "E", "E", "I", "I", "P"]
    df = weight_change(W0, W1, post_types=types, pre_types=types, name="W_rec")
    total = df[(df.post_type == "all") & (df.pre_type == "all")].iloc[0]
    assert total.abs_change == pytest.approx(float((W1 - W0).norm()))
    assert total.rel_change == pytest.approx(float((W1 - W0).norm() / W0.norm()))
    blocks = df[df.post_type != "all"]
    assert len(blocks) == 9 and blocks.n_entries.sum() == 36
    assert float((blocks.abs_change**2).sum()) == pytest.approx(total.abs_change**2)
    ei = blocks[(blocks.post_type == "E") & (blocks.pre_type == "I")].iloc[0]
    assert ei.abs_change == pytest.approx(float((W1 - W0)[:3, 3:5].norm()))
    same = weight_change(W0, W0)
    assert same.abs_change.iloc[0] == 0 and same.rel_change.iloc[0] == 0


def test_model_weight_change_by_cell_type():
    torch.manual_seed(0)
    m0 = RateRNN(dale(10, 0.8, seed=0), 2, 2, dtype=torch.float64)
    m1 = _perturbed(m0, 0.05)
    df = model_weight_change(m0, m1)
    assert set(df.weight) == {"W_rec", "W_in", "W_out"}
    rec = df[df.weight == "W_rec"]
    assert {(a, b) for a, b in zip(rec.post_type, rec.pre_type)} >= {("E", "E"), ("E", "I"), ("I", "E"), ("I", "I")}
    assert set(df[df.weight == "W_in"].pre_type) == {"input", "all"}
    assert set(df[df.weight == "W_out"].post_type) == {"output", "all"}
    W0, W1 = m0.effective_weights().W_rec, m1.effective_weights().W_rec
    got = rec[(rec.post_type == "all") & (rec.pre_type == "all")].abs_change.iloc[0]
    assert got == pytest.approx(float((W1 - W0).detach().norm()))


# ---------------------------------------------------------------------------------------------- rules
def test_gradient_alignment_between_rules():
    model, x = _rate(n=8, n_in=2, n_out=3), _x(T=6, B=4)
    y = torch.randint(0, 3, (6, 4), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(6, 4, dtype=torch.float64)
    assert "bptt" in default_rules() and "tbptt" not in default_rules()  # tbptt needs k
    # every registered rule for rate models; a rule refusing this particular model (e.g. its form) is reported
    default = gradient_alignment(model, x, y, mask, classification_loss, on_error="skip")
    assert set(default.rule) == set(default_rules(model)) and "eprop" not in set(default.rule)
    assert (default.error.eq("") | default.cosine.isna()).all()
    assert default[(default.rule == "bptt") & (default.parameter == "all")].cosine.iloc[0] == pytest.approx(1.0)
    rules = {"bptt": BPTT(), "tbptt_full": TruncatedBPTT(k=6), "tbptt_k1": TruncatedBPTT(k=1)}
    df = gradient_alignment(model, x, y, mask, classification_loss, rules=rules)
    allrow = df[df.parameter == "all"].set_index("rule")
    assert allrow.loc["bptt", "cosine"] == pytest.approx(1.0, abs=1e-12)
    assert allrow.loc["tbptt_full", "cosine"] == pytest.approx(1.0, abs=1e-10)
    rec = df[df.parameter == "theta_rec"].set_index("rule")
    assert rec.loc["tbptt_k1", "cosine"] < 0.999
    # the readout gradient does not depend on truncation
    out = df[df.parameter == "theta_out"].set_index("rule")
    assert out.loc["tbptt_k1", "cosine"] == pytest.approx(1.0, abs=1e-10)
    assert out.loc["tbptt_k1", "norm_ratio"] == pytest.approx(1.0, abs=1e-10)

    class _Broken:
        def gradients(self, *args):
            raise NotImplementedError("spiking models only")

    with pytest.raises(NotImplementedError):
        gradient_alignment(model, x, y, mask, classification_loss, rules={"broken": _Broken()})
    skipped = gradient_alignment(model, x, y, mask, classification_loss, rules={"broken": _Broken()},
                                 on_error="skip")
    assert skipped.cosine.isna().all() and "spiking" in skipped.error.iloc[0]


# ---------------------------------------------------------------------------------------------- summaries
def test_regime_summary_and_measurement_hook():
    model, x = _rate(n=8), _x(T=4, B=5)
    same = regime_summary(model, copy.deepcopy(model), x).set_index("measure").value
    for k in ("rep_alignment", "cka", "kernel_alignment", "sign_similarity"):
        assert same[k] == pytest.approx(1.0, abs=1e-12)
    assert same["weight_change"] == 0
    assert same["frobenius_W0"] == pytest.approx(float(model.effective_weights().W_rec.detach().norm()))
    fn = regime_measurement(model, x, kernel_trials=2)
    moved = _perturbed(model, 0.2)
    out = fn(moved, None, 10)
    assert out["weight_change"] > 0 and out["kernel_alignment"] < 1 and out["rep_alignment"] < 1
    # the reference was frozen when the hook was made: changing the model in place is measured
    with torch.no_grad():
        model.theta_rec.mul_(1.5)
    assert fn(model, None, 20)["weight_change_rel"] == pytest.approx(0.5, rel=1e-6)


def test_measurement_hooks_run_in_the_trainer(tmp_path):
    from spikelearn.analysis.hessian import hessian_measurement
    from spikelearn.config import TrainConfig
    from spikelearn.tasks import make_task
    from spikelearn.train import Measurement, Trainer

    task = make_task("delayed_match_to_sample")
    torch.manual_seed(0)
    model = RateRNN(gaussian(12, 1.25, seed=0), task.n_in, task.n_out, form="richlazy", tau_ms=100.0,
                    dt_ms=100.0, readout_bias=False)
    xp, yp, mp = task.sample(8, torch.Generator().manual_seed(9))
    hooks = (Measurement("regime", regime_measurement(model, xp), every=2),
             Measurement("hess", hessian_measurement(xp, yp, mp), every=2))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    hist = Trainer(model, task, BPTT(), opt, TrainConfig(iterations=4, batch_size=8, quiet=True),
                   measurements=hooks, out_dir=None).run()
    row = hist[hist.iteration == 4].iloc[0]
    assert 0 < row["regime.kernel_alignment"] <= 1 and row["regime.weight_change"] > 0
    assert np.isfinite(row["hess.lambda_max"]) and row["hess.n_hvp"] >= 1


def test_plots_write_pngs(tmp_path):
    import pandas as pd

    from spikelearn.analysis.plots_regime import (plot_curvature_trajectories, plot_regime_vs_rank, plot_scatter,
                                                  plot_spectral_density)

    df = pd.DataFrame({"init": ["rank 1", "rank 1", "rank 30", "rank 30"], "rule": ["bptt"] * 4,
                       "eff_rank_W0": [1.0, 1.0, 27.0, 27.5], "weight_change_rel": [0.3, 0.35, 0.1, 0.12],
                       "rep_alignment": [0.8, 0.85, 0.99, 0.98], "kernel_alignment": [0.2, 0.3, 0.6, 0.7]})
    hist = pd.DataFrame({"iteration": [1, 2, 1, 2], "lambda_max": [3.0, 2.0, 5.0, np.nan],
                         "rule": ["bptt", "bptt", "rflo", "rflo"], "seed": [0, 0, 0, 0]})
    dens = pd.DataFrame({"eigenvalue": np.linspace(-1, 5, 50), "density": np.exp(-np.linspace(-1, 5, 50) ** 2)})
    paths = [plot_regime_vs_rank(df, tmp_path / "a.png", title="t"),
             plot_curvature_trajectories(hist, tmp_path / "b.png", hline=2.5, hline_label="2/lr"),
             plot_spectral_density({"bptt": dens}, tmp_path / "c.png"),
             plot_scatter(hist.dropna(), tmp_path / "d" / "e.png", x="iteration", y="lambda_max")]
    for p in paths:
        assert p.exists() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
