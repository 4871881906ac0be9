"""Stationary-snapshot fits (issue 23, ALGORITHMS-2 §15): Lorenz (6a), OU with rotation (6b), connectome weights (6d).

    python experiments/stationary_fit/run.py lorenz|ou|connectome [--seeds 5] [--out DIR]

Every row records the git commit it ran. Rows are appended to CSV as they finish (a run can be resumed by hand).
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import spikelearn.connectomes as sc
import spikelearn.objectives as so

HERE = Path(__file__).resolve().parent
COMMIT = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=HERE).stdout.strip()


def _append(path: Path, rows: list[dict]) -> None:
    df = pd.DataFrame(rows)
    df["commit"] = COMMIT
    df.to_csv(path, mode="a", header=not path.exists(), index=False)


def lorenz_samples(m: int, seed: int, *, dt: float = 2e-3, scheme: str = "heun", chains: int = 1000) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(chains, 3, generator=g, dtype=torch.float64) * 5 + torch.tensor([0, 0, 25.0])
    return so.stationary_samples(so.lorenz_drift(), 1.0, x0, m, dt=dt, burn_in_time=15.0, thin_time=0.5,
                                 seed=seed, scheme=scheme)


def run_lorenz(out: Path, seeds: int) -> None:
    truth = np.array(so.lorenz().true_values)
    for seed in range(seeds):
        x_all = lorenz_samples(100_000, seed)
        for m in (1_000, 10_000, 100_000):
            x = x_all[:m]
            for route, D, kw in [("ksd", 1.0, {}), ("ksd", None, {}),
                                 ("local", None, {"score": so.GMMScore(16, seed=seed), "n_bootstrap": 5})]:
                t = time.time()
                fit = so.fit_affine(x, so.lorenz(), D=D, route=route, seed=seed, **{"n_bootstrap": 10, **kw})
                tab = fit.table()
                tab["truth"] = list(truth) + ([1.0] if D is None else [])
                tab["rel_error"] = (tab["estimate"] - tab["truth"]) / tab["truth"]
                tab["min_norm"] = fit.min_norm
                tab = tab.assign(seed=seed, M=m, D_known=D is not None, rank=fit.rank, seconds=time.time() - t)
                _append(out / "lorenz.csv", tab.to_dict("records"))
                print(f"lorenz seed={seed} M={m} {route} D={D}: {np.round(fit.estimate, 3)}", flush=True)


def run_lorenz_bias(out: Path) -> None:
    """Sampler bias at M = 10⁵ (seed 0): Euler–Maruyama and Heun at dt and dt/2, the KSD route with D known."""
    for scheme in ("euler", "heun"):
        for dt in (2e-3, 1e-3):
            fit = so.fit_affine(lorenz_samples(100_000, 0, dt=dt, scheme=scheme), so.lorenz(), D=1.0, n_bootstrap=10)
            tab = fit.table().assign(scheme=scheme, dt=dt, M=100_000, seed=0)
            _append(out / "lorenz_sampler_bias.csv", tab.to_dict("records"))
            print(f"bias {scheme} dt={dt}: {np.round(fit.estimate, 4)}", flush=True)


def run_ou(out: Path, seeds: int) -> None:
    a, omega, D = 1.0, 2.0, 0.5
    A = np.array([[-a, -omega], [omega, -a]])
    rot = np.array([0.0, -1.0, 1.0, 0.0]) / np.sqrt(2)
    for seed in range(seeds):
        for m in (1_000, 10_000):
            x = so.ou_samples(A, D, m, seed=seed)
            for route, kw in [("ksd", {}), ("local", {"score": so.GMMScore(1)})]:
                for fam in (so.linear_drift(2), so.rotation_drift()):
                    fit = so.fit_affine(x, fam, D=D, route=route, seed=seed, **kw)
                    cos = abs(float(fit.null_directions[0] @ (rot if fam.n_params == 4 else np.array([0, 1.0]))))
                    tab = fit.table().assign(seed=seed, M=m, family="A" if fam.n_params == 4 else "a_omega",
                                             rank=fit.rank, null_cos=cos, n_null=len(fit.null_directions))
                    _append(out / "ou.csv", tab.to_dict("records"))
                    print(f"ou seed={seed} M={m} {route} {fam.names}: {np.round(fit.estimate, 3)} cos={cos:.4f}",
                          flush=True)


def grn_family(gamma: float = 1.0, basal: float = 0.2) -> so.AffineDrift:
    """Synthetic gene-regulatory network (stand-in for the paper's B-cell model, which is not available here): genes
    1–3 are regulators, ``dx_i = (basal + Σ_j K_ij h(x_j) − γ x_i) dt + √(2D) dW`` for the 7 genes, ``h(x) = x²/(1+x²)``
    (Hill, n = 2), K ``(7, 3)`` — the 3 × 7 interaction matrix — unknown; the fixed part ``basal − γx`` identifies D."""
    names = tuple(f"K[{i + 1},{j + 1}]" for i in range(7) for j in range(3))

    def features(x: torch.Tensor) -> torch.Tensor:
        h = x[:, :3] ** 2 / (1 + x[:, :3] ** 2)                     # (M, 3)
        phi = torch.zeros(x.shape[0], 7, 7, 3, dtype=x.dtype)
        for i in range(7):
            phi[:, i, i, :] = h
        return phi.reshape(x.shape[0], 7, 21)

    rng = np.random.default_rng(7)
    K = rng.normal(0, 1.0, (7, 3)) * (rng.random((7, 3)) < 0.7)
    return so.AffineDrift(features, 7, names, lambda x: basal - gamma * x, tuple(K.ravel().tolist()))


def run_grn(out: Path, seeds: int) -> None:
    fam = grn_family()
    truth = np.array(fam.true_values)
    f = lambda x: fam(x, torch.tensor(truth, dtype=x.dtype))  # noqa: E731
    for seed in range(seeds):
        g = torch.Generator().manual_seed(seed)
        x0 = torch.rand(500, 7, generator=g, dtype=torch.float64)
        x_all = so.stationary_samples(f, 0.05, x0, 10_000, dt=0.01, burn_in_time=20.0, thin_time=1.0, seed=seed,
                                      scheme="heun")
        for m in (1_000, 10_000):
            for route, kw in [("ksd", {"max_pairs": 1e7}), ("local", {"score": so.GMMScore(4, seed=seed)})]:
                t = time.time()
                fit = so.fit_affine(x_all[:m], fam, D=None, route=route, n_bootstrap=3, seed=seed, **kw)
                k = fit.min_norm[:21]
                rows = [{"route": route, "seed": seed, "M": m, "rank": fit.rank, "n_unknowns": fit.n_unknowns,
                         "pearson_r": float(np.corrcoef(k, truth)[0, 1]),
                         "rel_error": float(np.linalg.norm(k - truth) / np.linalg.norm(truth)),
                         "sign_accuracy_nonzero": float(np.mean(np.sign(k[truth != 0]) == np.sign(truth[truth != 0]))),
                         "max_abs_error_zero_entries": float(np.abs(k[truth == 0]).max()),
                         "D_estimate": fit.D, "seconds": time.time() - t}]
                _append(out / "grn.csv", rows)
                print(f"grn seed={seed} M={m} {route}: {rows[0]}", flush=True)


def run_density(out: Path, seeds: int) -> None:
    """Item 5: density from known dynamics on a 2-D double well, U = (x² − 1)² + y²/2, D = 0.3, f = −∇U; an 8-component
    mixture trained by the residual at M training points (stationary samples, or uniform in the box [−2, 2]×[−2, 2]
    — no samples of p), against maximum likelihood on M stationary samples (sklearn); TV distance to the histogram
    (60 × 60 cells) of 10⁶ Heun samples."""
    D = 0.3

    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([-4 * x[:, 0] * (x[:, 0] ** 2 - 1), -x[:, 1]], 1)

    g = torch.Generator().manual_seed(1234)
    ref = so.stationary_samples(f, D, torch.randn(10_000, 2, generator=g, dtype=torch.float64), 1_000_000, dt=1e-3,
                                burn_in_time=5.0, thin_time=0.5, seed=1234, scheme="heun")
    lim = ((-2.0, 2.0), (-2.0, 2.0))
    for seed in range(seeds):
        pool = so.stationary_samples(f, D, torch.randn(2000, 2, generator=torch.Generator().manual_seed(seed),
                                                       dtype=torch.float64), 10_000, dt=1e-3, burn_in_time=5.0,
                                     thin_time=0.5, seed=seed, scheme="heun")
        for m in (100, 1_000, 10_000):
            xs = pool[:m]
            box = (torch.rand(m, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) - 0.5) * 4
            rows = []
            for name, pts in (("residual_on_samples", xs), ("residual_on_uniform_box", box)):
                model, hist = so.fit_density_from_dynamics(f, D, pts, n_components=8, steps=2000, lr=0.02,
                                                           batch_size=512, seed=seed)
                rows.append({"method": name, "tv": so.total_variation_2d(model.log_prob, ref, limits=lim),
                             "final_loss": float(hist["loss"].iloc[-50:].mean())})
            gm = so.GMMScore(8, seed=seed).fit(xs)
            assert gm.means_ is not None and gm.precisions_ is not None and gm.log_weights_ is not None
            ml = so.MixtureDensity(8, xs)
            with torch.no_grad():
                ml.means.copy_(gm.means_)
                L = torch.linalg.cholesky(gm.precisions_)
                ml.log_diag.copy_(torch.log(torch.diagonal(L, dim1=1, dim2=2)))
                ml.lower.copy_(torch.tril(L, -1))
                ml.logits.copy_(gm.log_weights_)
            rows.append({"method": "max_likelihood_gmm", "tv": so.total_variation_2d(ml.log_prob, ref, limits=lim),
                         "final_loss": np.nan})
            for r in rows:
                r.update(seed=seed, M=m)
            _append(out / "density.csv", rows)
            print(f"density seed={seed} M={m}: {[(r['method'], round(r['tv'], 4)) for r in rows]}", flush=True)


def run_connectome(out: Path, seeds: int, ms: tuple[int, ...], noises: tuple[float, ...],
                   circuit: str = "celegans") -> None:
    """Rate network on C. elegans (GABA-ergic neurons inhibitory) or a 200-neuron mouse V1 cell-type circuit
    (``mouse_v1(n=200, seed=0, radius_um=200)``), W scaled to spectral radius 0.9."""
    if circuit == "celegans":
        c = sc.load("celegans_varshney2011", signs="gaba_inhibitory")
    else:
        c = sc.mouse_v1(n=200, seed=0, radius_um=200.0)
    W = c.weights(dense=True)
    rho = float(np.abs(np.linalg.eigvals(W)).max())
    c = c.with_weights(W * 0.9 / rho)
    fam = so.rate_network(c)
    theta = torch.tensor(fam.true_values, dtype=torch.float64)
    f = fam.drift_fn(theta)
    E, N = c.n_edges, c.n
    w_true = np.asarray(c.w)
    for noise in noises:
        for seed in range(seeds):
            g = torch.Generator().manual_seed(seed)
            x0 = torch.randn(500, N, generator=g, dtype=torch.float64) * 0.1
            dt = 0.05
            mmax = max(ms)
            rec = so.euler_maruyama(f, noise, x0, dt=dt, n_steps=round(1.0 / dt) * (mmax // 500),
                                    record_every=round(1.0 / dt), burn_in=round(20.0 / dt), generator=g,
                                    scheme="heun")
            # time-stamped pairs for the regression bound: one Heun step from each recorded state
            nxt = so.euler_maruyama(f, noise, rec.reshape(-1, N), dt=dt, n_steps=1, generator=g, scheme="heun")[0]
            flat = rec.reshape(-1, N)
            perm = torch.randperm(flat.shape[0], generator=g)
            for m in ms:
                idx = perm[:m]
                x = flat[idx]
                t = time.time()
                fit = so.fit_affine(x, fam, D=None, route="local", score=so.GMMScore(1), n_bootstrap=0, seed=seed)
                w_snap = fit.min_norm[:E]
                t_snap = time.time() - t
                # regression of increments on states (knows the time step): per neuron, incoming edges + bias
                y = (nxt[idx] - x) / dt + x
                ph = torch.tanh(x)
                w_reg = np.zeros(E)
                post, pre = np.asarray(c.post), np.asarray(c.pre)
                for i in range(N):
                    e = np.flatnonzero(post == i)
                    X = torch.cat([ph[:, torch.tensor(pre[e])], torch.ones(m, 1, dtype=torch.float64)], 1)
                    sol = torch.linalg.lstsq(X, y[:, i:i + 1]).solution[:, 0].numpy()
                    w_reg[e] = sol[: len(e)]
                rows = []
                for method, w in (("snapshot_local_gauss", w_snap), ("increment_regression", w_reg)):
                    rows.append({"circuit": circuit, "method": method, "noise_D": noise, "seed": seed, "M": m,
                                 "pearson_r": float(np.corrcoef(w, w_true)[0, 1]),
                                 "sign_accuracy": float(np.mean(np.sign(w) == np.sign(w_true))),
                                 "rel_error": float(np.linalg.norm(w - w_true) / np.linalg.norm(w_true)),
                                 "D_estimate": fit.D if method.startswith("snapshot") else np.nan,
                                 "seconds": t_snap if method.startswith("snapshot") else np.nan,
                                 "n_neurons": N, "n_edges": E})
                _append(out / "connectome.csv", rows)
                print(f"connectome {circuit} D={noise} seed={seed} M={m}: {[(r['method'], round(r['pearson_r'], 3), round(r['sign_accuracy'], 3)) for r in rows]}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["lorenz", "lorenz_bias", "ou", "grn", "density", "connectome"])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--M", type=int, nargs="*", default=[1_000, 10_000])
    p.add_argument("--noise", type=float, nargs="*", default=[0.01, 0.1])
    p.add_argument("--circuit", choices=["celegans", "mouse_v1"], default="celegans")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    if a.what == "lorenz":
        run_lorenz(a.out, a.seeds)
    elif a.what == "lorenz_bias":
        run_lorenz_bias(a.out)
    elif a.what == "ou":
        run_ou(a.out, a.seeds)
    elif a.what == "grn":
        run_grn(a.out, a.seeds)
    elif a.what == "density":
        run_density(a.out, a.seeds)
    else:
        run_connectome(a.out, a.seeds, tuple(a.M), tuple(a.noise), a.circuit)


if __name__ == "__main__":
    main()
