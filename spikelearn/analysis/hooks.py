"""Measurement hooks addressable by import path, for ``[[measurements]]`` tables of run and sweep files.

Every hook is ``fn(model, task, iteration, **options) -> float | dict[str, float]``; a dict becomes history
columns ``<measurement name>.<key>``. A hook that needs the model as it was built declares the keyword
``initial_model`` and the trainer passes a frozen copy (:class:`spikelearn.train.Measurement`). Options are plain
TOML values (numbers, strings, lists, small tables), so a hook travels to sweep workers as text::

    [[measurements]]
    name = "lyap"
    fn = "spikelearn.analysis.hooks:max_lyapunov_exponent"
    every = 50
    options = {k = 1, batch_size = 8, n_concat = 8, seed = 10000}

Conventions shared by the hooks here:

* **Probe inputs** are drawn from the run's task with a fixed ``torch.Generator().manual_seed(seed)`` (option
  ``seed``), in the model's dtype, so every call of a run — and every run of a sweep — sees the same probe trials.
* **Initial-model quantities** ("before training") are computed from ``initial_model`` once per run and cached
  in a :class:`weakref.WeakKeyDictionary` keyed on the initial-model object (identity, like ``id(initial_model)``
  but safe against id reuse after a run's model is freed), so the cache never outlives a run and training never
  changes a cached value. Hooks are not called at iteration 0, so these are the only way to get "before"
  values. The initial model is the model as built, before any pre-flossing.
* **Schedule**: ``every`` in the TOML table (the trainer also calls every hook at the last iteration); in
  addition every hook accepts ``at`` (a list of iterations): when non-empty the hook computes only at those
  iterations and returns an empty dict (no columns) otherwise — use it with ``every = 1`` to measure at
  arbitrary iterations (e.g. ``at = [1]`` right after pre-flossing).
* **Rules** (``rules`` / ``gain_rules`` options) are given by registered name (``"rflo"``) or as a table
  ``{name = "tbptt", options = {k = 1}, label = "tbptt_k1"}`` (label defaults to the name).

* **Sparse storage** (``storage="sparse"``): every hook here runs on per-edge ``W_rec`` without an ``N × N`` array
  and gives the dense storage's numbers on the same circuit (see :mod:`spikelearn.analysis.regime` for the matrix
  functions above ``DENSE_SUMMARY_MAX_N`` = 4000 neurons).

Costs are stated per call for the sizes of the experiments under ``experiments/``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import weakref
from typing import Any, Callable, Mapping, Sequence, TypeVar

import torch
from torch import Tensor, nn

from spikelearn.analysis.hessian import WEIGHT_PARAMS, hessian_operator, hutchinson_trace, top_eigenvalues
from spikelearn.analysis.lyapunov import lyapunov_spectrum
from spikelearn.analysis.regime import (
    gradient_alignment,
    model_weight_change,
    regime_summary,
    weight_effective_rank,
    weight_spectral_radius,
)
from spikelearn.analysis.spikes import spike_stats
from spikelearn.models import RateRNN, SpikingRNN
from spikelearn.rules import BPTT, make_rule

__all__ = ["weight_change", "max_lyapunov_exponent", "regime", "initial_gradient_alignment", "hessian_top",
           "noisy_accuracy", "spike_statistics", "concat_trials", "probe_batch", "rule_specs"]

# initial model -> {cache key -> value}; entries disappear with the initial model (one run).
_INITIAL: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def _cached(initial_model: nn.Module, key: Any, compute: Callable[[], Any]) -> Any:
    """``compute()`` once per (initial model, key)."""
    d = _INITIAL.get(initial_model)
    if d is None:
        d = _INITIAL[initial_model] = {}
    if key not in d:
        d[key] = compute()
    return d[key]


def _skip(iteration: int, at: Sequence[int]) -> bool:
    return bool(at) and int(iteration) not in {int(a) for a in at}


def _param(model: nn.Module) -> Tensor:
    return next(model.parameters())


_M = TypeVar("_M", bound=nn.Module)


def _trainable_copy(initial_model: _M) -> _M:
    """A copy of the (frozen) initial model whose parameters require grad (for rules and tangent kernels)."""
    def make() -> _M:
        m = copy.deepcopy(initial_model)
        for p in m.parameters():
            p.requires_grad_(True)
        return m

    return _cached(initial_model, ("trainable_copy",), make)


def probe_batch(task: Any, batch_size: int, seed: int, model: nn.Module | None = None, *,
                split: str = "") -> tuple[Tensor, Tensor, Tensor]:
    """``(x, y, mask)``: ``batch_size`` trials of ``task`` from ``torch.Generator().manual_seed(seed)``, ``x`` in the
    model's dtype and device; ``split`` (e.g. ``"test"``) replaces the task's ``split`` field when given."""
    if split:
        task = dataclasses.replace(task, split=split)
    dtype = _param(model).dtype if model is not None else torch.float32
    x, y, mask = task.sample(int(batch_size), torch.Generator().manual_seed(int(seed)), dtype=dtype)
    if model is not None:
        dev = _param(model).device
        x, y, mask = x.to(dev), y.to(dev), mask.to(dev)
    return x, y, mask


def concat_trials(task: Any, n_traj: int, n_concat: int, generator: torch.Generator, *,
                  dtype: torch.dtype = torch.float32) -> Tensor:
    """``n_traj`` long inputs, each ``n_concat`` fresh task trials back to back: ``(n_concat·T, n_traj, n_in)``
    (trajectory ``j`` is trials ``j, n_traj + j, 2 n_traj + j, …`` of one ``n_traj·n_concat`` batch)."""
    x = task.sample(int(n_traj) * int(n_concat), generator, dtype=dtype)[0]
    T, _, n_in = x.shape
    return x.reshape(T, n_concat, n_traj, n_in).permute(1, 0, 2, 3).reshape(n_concat * T, n_traj, n_in)


def rule_specs(rules: Sequence[Any]) -> list[tuple[str, Any]]:
    """``(label, rule instance)`` for each entry: a registered name, or ``{name, options, label}``."""

    out = []
    for r in rules:
        if isinstance(r, str):
            out.append((r, make_rule(r)))
        elif isinstance(r, Mapping):
            unknown = set(r) - {"name", "options", "label"}
            if unknown or "name" not in r:
                raise ValueError(f"a rule entry is a name or a table {{name, options, label}}, got {dict(r)!r}")
            out.append((str(r.get("label") or r["name"]), make_rule(r["name"], **dict(r.get("options", {})))))
        else:
            raise ValueError(f"a rule entry is a name or a table {{name, options, label}}, got {r!r}")
    labels = [label for label, _ in out]
    dup = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dup:
        raise ValueError(f"rule labels {dup} occur more than once (their results would overwrite each other); give "
                         f"each entry its own 'label'")
    return out


# ---------------------------------------------------------------------------------------------- weights
def weight_change(model: RateRNN | SpikingRNN, task: Any, iteration: int, *, initial_model: RateRNN | SpikingRNN,
                  which: Sequence[str] = ("W_rec",), at: Sequence[int] = ()) -> dict[str, float]:
    """Absolute (Frobenius) and relative change of the effective weights since the model was built, per matrix
    in ``which`` (whole matrix, no cell-type breakdown): keys ``"<W>.abs"`` and ``"<W>.rel"``
    (``||W − W_0||_F`` and ``||W − W_0||_F / ||W_0||_F``; includes pre-flossing changes). Cost: negligible."""
    del task
    if _skip(iteration, at):
        return {}
    df = model_weight_change(initial_model, model, which=tuple(which), by_cell_type=False)
    out: dict[str, float] = {}
    r: Any  # a row (pandas infers a row's items as Series | ndarray | ...)
    for _, r in df.iterrows():
        out[f"{r['weight']}.abs"] = float(r["abs_change"])
        out[f"{r['weight']}.rel"] = float(r["rel_change"])
    return out


# ---------------------------------------------------------------------------------------------- stability
def max_lyapunov_exponent(model: nn.Module, task: Any, iteration: int, *, initial_model: nn.Module, k: int = 1,
                          batch_size: int = 8, n_concat: int = 1, seed: int = 10_000, transient_steps: int = -1,
                          qr_every: int = 1, jacobian: str = "surrogate", at: Sequence[int] = ()
                          ) -> dict[str, float]:
    """Leading Lyapunov exponent(s) per step of the current and of the initial model on fixed long inputs.

    The input is ``batch_size`` trajectories, each ``n_concat`` task trials back to back (:func:`concat_trials`,
    as ``experiments/gain_lyapunov``), drawn once from ``seed``; exponents by
    :func:`~spikelearn.analysis.lyapunov.lyapunov_spectrum` (QR, ``k`` exponents, transient ``10 + ⌈T/10⌉`` when
    ``transient_steps < 0``), averaged over trajectories.

    Returns:
        ``{"lambda_max", "initial_lambda_max"}`` (1/step; × 1000/dt_ms for 1/s), plus ``"lambda_sum"`` and
        ``"initial_lambda_sum"`` (sum of the k exponents) when ``k > 1``. The initial value is computed once
        per run.

    Cost: one linearised run of ``batch_size × n_concat·T`` steps with a k-column QR per step (k = 1, 8 × 960
    steps at N = 64: about 0.1 s on one CPU thread; 8 × 1760 steps at N = 100: about 0.2 s); the same once more, per
    run, for the initial model.
    """
    if _skip(iteration, at):
        return {}

    kw: dict[str, Any] = dict(k=int(k), transient_steps=None if transient_steps < 0 else int(transient_steps),
                              qr_every=int(qr_every), jacobian=jacobian)

    def measure(m: nn.Module) -> tuple[float, float]:
        p = _param(m)
        x = concat_trials(task, batch_size, n_concat, torch.Generator().manual_seed(int(seed)), dtype=p.dtype)
        res = lyapunov_spectrum(m, x.to(p.device), **kw)
        return res.max, res.sum

    cur = measure(model)
    ini = _cached(initial_model, ("lyapunov", int(k), int(batch_size), int(n_concat), int(seed), int(transient_steps),
                                  int(qr_every), jacobian), lambda: measure(initial_model))
    out = {"lambda_max": cur[0], "initial_lambda_max": ini[0]}
    if int(k) > 1:
        out.update(lambda_sum=cur[1], initial_lambda_sum=ini[1])
    return out


# ---------------------------------------------------------------------------------------------- regime
def regime(model: RateRNN | SpikingRNN, task: Any, iteration: int, *, initial_model: RateRNN | SpikingRNN,
           probe_trials: int = 320, kernel_trials: int = 32, time_index: int = -1, kernel: bool = True,
           params: Sequence[str] = ("W_rec",), seed: int = 10_000, at: Sequence[int] = ()) -> dict[str, float]:
    """Rich/lazy measures between the initial and the current model
    (:func:`~spikelearn.analysis.regime.regime_summary` on ``probe_trials`` task trials drawn from ``seed``).

    Returns:
        ``weight_change``, ``weight_change_rel`` (W_rec), ``rep_alignment`` (uncentred), ``cka``,
        ``sign_similarity`` (activity at step ``time_index``), ``kernel_alignment`` (tangent kernel w.r.t.
        ``params`` on the first ``kernel_trials`` probe trials, all steps; only with ``kernel``),
        ``eff_rank_W0``, ``eff_rank_W1`` (participation ratio of W_rec), ``frobenius_W0``, ``spectral_W0``,
        ``activity_rank0``, ``activity_rank1``; plus (initial model, cached) ``rv_rank_W0`` (Roy–Vetterli) and
        ``spectral_radius_W0``. With ``storage="sparse"`` the same numbers, from the per-edge weights (no ``N × N``
        array; above ``DENSE_SUMMARY_MAX_N`` neurons the matrix functions use scipy's sparse ARPACK and
        ``rv_rank_W0``, which needs every singular value, is NaN — :func:`~spikelearn.analysis.regime.
        weight_effective_rank`) and the tangent kernel by one backward pass per output entry.

    Cost: two forward passes over the probe and two tangent kernels (``kernel_trials·T·n_out`` square; 32 trials
    × 8 steps × 3 outputs: about 1–3 s at N = 100, 10 s at N = 300 on one CPU thread); without ``kernel``
    negligible.
    """
    if _skip(iteration, at):
        return {}

    x = probe_batch(task, probe_trials, seed, model)[0]
    model0 = _trainable_copy(initial_model) if kernel else initial_model
    df = regime_summary(model0, model, x, time_index=int(time_index), kernel_trials=int(kernel_trials),
                        params=tuple(params), kernel=bool(kernel))
    out = {str(m): float(v) for m, v in zip(df["measure"], df["value"])}

    def w0_stats() -> dict[str, float]:
        W0 = initial_model.effective_weights().W_rec.detach()  # dense, or per-edge (storage="sparse")
        return {"rv_rank_W0": float(weight_effective_rank(W0)["roy_vetterli"]),
                "spectral_radius_W0": weight_spectral_radius(W0)}

    out.update(_cached(initial_model, ("w0_stats",), w0_stats))
    return out


def initial_gradient_alignment(model: nn.Module, task: Any, iteration: int, *, initial_model: nn.Module,
                               rules: Sequence[Any] = ("rflo",), batch_size: int = 64, seed: int = 10_000,
                               at: Sequence[int] = ()) -> dict[str, float]:
    """Cosine of each rule's update with the BPTT gradient **at initialisation** (θ_0), on one probe batch
    (:func:`~spikelearn.analysis.regime.gradient_alignment`); a property of the init, computed once per run.

    Returns:
        ``"<label>.<parameter>"``: cosine per trained parameter (``theta_rec``, ``theta_in``, ...) and
        ``"<label>.all"`` (all parameters), ``"<label>.norm_ratio"`` (``||g_rule|| / ||g_BPTT||``, all
        parameters). Cost: one BPTT gradient and one gradient per rule on ``batch_size`` trials, once per run.
    """
    del model
    if _skip(iteration, at):
        return {}

    specs = [r if isinstance(r, str) else dict(r) for r in rules]
    key = ("gradient_alignment", repr(specs), int(batch_size), int(seed))

    def compute() -> dict[str, float]:
        m0 = _trainable_copy(initial_model)
        x, y, mask = probe_batch(task, batch_size, seed, m0)
        df = gradient_alignment(m0, x, y, mask, task.loss, rules=dict(rule_specs(rules)))
        rows: list[Any] = list(df.itertuples())  # namedtuples of the columns (typed as plain tuples)
        out = {f"{r.rule}.{r.parameter}": float(r.cosine) for r in rows}
        out.update({f"{r.rule}.norm_ratio": float(r.norm_ratio) for r in rows if r.parameter == "all"})
        return out

    return dict(_cached(initial_model, key, compute))


# ---------------------------------------------------------------------------------------------- curvature
def hessian_top(model: nn.Module, task: Any, iteration: int, *, batch_size: int = 256, seed: int = 99,
                split: str = "", params: Sequence[str] = ("W_rec",), l2: float = 0.0, k: int = 1,
                max_matvec: int = 100, rtol: float = 1e-3, lanczos_seed: int = 0, trace_samples: int = 0,
                gain_rules: Sequence[Any] = (), at: Sequence[int] = ()) -> dict[str, float]:
    """Top Hessian eigenvalue(s) of the untruncated task loss (+ ``½ l2 Σ||W||²``) w.r.t. ``params`` on a fixed
    batch of ``batch_size`` task trials drawn from ``seed`` (Lanczos, :func:`~spikelearn.analysis.hessian.
    top_eigenvalues`, stopping at relative residual ``rtol``; start vector and Hutchinson probes from
    ``lanczos_seed`` in the order of :func:`~spikelearn.analysis.hessian.hessian_spectrum`, so the numbers equal
    ``hessian_spectrum(..., seed=lanczos_seed)``). Measured in eval mode.

    Returns:
        ``lambda_max``, ``lambda_<i>`` (i = 1..k−1), ``n_hvp`` (Hessian-vector products used), ``converged``
        (1/0), ``loss`` (the loss the Hessian is of, at this point); with ``trace_samples > 0`` ``trace`` and
        ``trace_se`` (Hutchinson); for each of ``gain_rules`` ``gain_u1.<label>`` =
        ``u₁·(g_rule + l2 θ) / u₁·(g_BPTT + l2 θ)`` on the same batch (``u₁`` the top eigenvector): the rule's
        effective step gain along the sharpest direction relative to gradient descent (ALGORITHMS.md §9.3).

    Cost: ``n_hvp`` (+ ``trace_samples``) double-backprop passes through the batch, plus one gradient per gain
    rule (N = 128, 256 digits × 8 steps: 6–15 products for the top eigenvalues, a few hundred ms).
    """
    if _skip(iteration, at):
        return {}

    x, y, mask = probe_batch(task, batch_size, seed, model, split=split)
    was_training = model.training
    model.eval()
    try:
        op = hessian_operator(model, x, y, mask, task.loss, params=tuple(params), l2=float(l2))
        gen = torch.Generator().manual_seed(int(lanczos_seed))
        eig = top_eigenvalues(op, op.n, int(k), max_matvec=int(max_matvec), rtol=float(rtol), generator=gen)
        out = {"lambda_max": float(eig.eigenvalues[0]), "n_hvp": float(eig.n_matvec),
               "converged": float(eig.converged), "loss": float(op.loss)}
        out.update({f"lambda_{i}": float(v) for i, v in enumerate(eig.eigenvalues.tolist()) if i > 0})
        if trace_samples:
            tr = hutchinson_trace(op, op.n, int(trace_samples), generator=gen)
            out.update(trace=float(tr.trace), trace_se=float(tr.stderr))
        if gain_rules:

            u = op.unflatten(eig.eigenvectors[0])
            named = dict(model.named_parameters())

            def along_u1(rule: Any) -> float:
                _, g = rule.gradients(model, x, y, mask, task.loss)
                s = 0.0
                for name, un in u.items():
                    gi = g[name].detach() if name in g else torch.zeros_like(un)
                    if l2 and name in WEIGHT_PARAMS:
                        gi = gi + float(l2) * named[name].detach()
                    s += float((gi * un).sum())
                return s

            ref = along_u1(BPTT())
            for label, rule in rule_specs(gain_rules):
                out[f"gain_u1.{label}"] = along_u1(rule) / ref if ref else math.nan
    finally:
        model.train(was_training)
    return out


# ---------------------------------------------------------------------------------------------- generalisation
def noisy_accuracy(model: nn.Module, task: Any, iteration: int, *, noise_std: Sequence[float] = (0.0, 0.2),
                   n_trials: int = 2048, seed: int = 777, split: str = "", at: Sequence[int] = ()
                   ) -> dict[str, float]:
    """Accuracy on ``n_trials`` fixed task trials (drawn from ``seed``; ``split = "test"`` for a held-out split)
    with input noise ``N(0, σ²)`` for each σ in ``noise_std`` (the task's ``input_noise_std``; sequential digits
    clip pixels to [0, 1]). The same trials (same generator) are used for every σ.

    Returns:
        ``"sigma_<σ>"`` per noise level (``sigma_0``, ``sigma_0.2``, ...). Cost: one forward pass of
        ``n_trials`` trials per level (negligible for the digit task).
    """
    if _skip(iteration, at):
        return {}
    out = {}
    with torch.no_grad():
        for s in noise_std:
            t = dataclasses.replace(task, input_noise_std=float(s))
            x, y, mask = probe_batch(t, n_trials, seed, model, split=split)
            out[f"sigma_{float(s):g}"] = float(t.accuracy(model(x).y, y, mask))
    return out


def spike_statistics(model: SpikingRNN, task: Any, iteration: int, *, batch_size: int = 8, seed: int = 12_345,
                     window_ms: float = 100.0, bin_ms: float = 5.0, min_isis: int = 2, at: Sequence[int] = ()
                     ) -> dict[str, float]:
    """Population spike statistics of a spiking model on ``batch_size`` fixed task trials
    (:func:`~spikelearn.analysis.spikes.spike_stats` with ``window_ms`` (Fano counting window, at most the trial
    length), ``bin_ms`` (synchrony bins), ``min_isis``; its ``"all"`` row): ``rate_hz``, ``cv_isi``, ``fano``,
    ``synchrony`` (NaN where undefined, e.g. CV without enough ISIs). Cost: one recorded forward pass."""
    if _skip(iteration, at):
        return {}

    x = probe_batch(task, batch_size, seed, model)[0]
    with torch.no_grad():
        rec = model(x, record=True).record
    st = spike_stats(rec.z, float(model.dt_ms), window_ms=float(window_ms), bin_ms=float(bin_ms),
                     min_isis=int(min_isis)).per_type
    row = st[st["cell_type"] == "all"].iloc[0]
    return {k: float(row[k]) for k in ("rate_hz", "cv_isi", "fano", "synchrony")}
