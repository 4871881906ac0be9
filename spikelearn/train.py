"""A plain training loop (no framework): any model, task, rule and ``torch.optim`` optimizer.

``Trainer(model, task, rule, optimizer, config).run()`` returns the history as a tidy DataFrame with one row per
iteration: ``iteration, loss, accuracy, eval_loss, firing_rate_hz, wall_time_s`` plus one column per measurement
result (``accuracy``, ``eval_loss``, ``firing_rate_hz`` and measurements are filled on evaluation iterations
only, NaN elsewhere). Checkpoints (model, optimizer, RNG state, history) are written atomically; a killed run
resumed from its checkpoint continues bit-identically on CPU.

Options that are off by default (and then change nothing, columns included): a learning-rate ``scheduler``
(``torch.optim.lr_scheduler``; stepped once per iteration after the update, column ``lr`` = the rate the update
used), an L2 penalty ``config.l2`` on the effective weights (its gradient added to whatever gradient the rule
returns, column ``l2_penalty``; ``loss`` stays the task loss) and early stopping ``config.stop_at_accuracy`` (the
run ends after the first evaluation at or above it; :attr:`Trainer.stopped_at`). Scheduler and stop state are
checkpointed.

``build(run_config)`` turns a :class:`~spikelearn.config.RunConfig` into those pieces, and ``train(run_config)``
builds and runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import math
import os
import uuid
import pathlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn

from spikelearn.config import CircuitConfig, ConfigError, RunConfig, TrainConfig, check_options
from spikelearn.rules import apply_gradients, make_rule
from spikelearn.rules.base import LossFn, load_rule_state_dict, rule_state_dict

__all__ = ["Measurement", "Trainer", "TrainingDiverged", "build", "check_build", "train", "validate_config", "derive_seeds", "resolve_device"]

CHECKPOINT = "checkpoint.pt"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the iteration and the last good checkpoint."""


@dataclass(frozen=True)
class Measurement:
    """A measurement hook: ``fn(model, task, iteration) -> float | dict[str, float]`` every ``every`` iterations
    and at the last iteration (so the final model is always measured).

    Results join the history as columns ``name`` (float) or ``name.key`` (dict). A hook that declares a keyword
    parameter ``initial_model`` also receives a frozen copy of the model as it was built (before any pre-flossing or
    training; kept in checkpoints, so a resumed run compares against the same reference) — what weight-change,
    kernel-alignment and other rich/lazy measures need.
    """

    name: str
    fn: Callable[[nn.Module, Any, int], Any]
    every: int = 10


def _wants_initial_model(fn: Callable) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    p = params.get("initial_model")
    return p is not None and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)


def derive_seeds(seed: int) -> dict[str, int]:
    """Independent seeds for circuit generation (numpy), weight init, training and evaluation trials, flossing
    inputs and rewiring draws."""
    s = np.random.SeedSequence(seed).generate_state(6)
    return {"circuit": int(s[0]), "init": int(s[1]), "trials": int(s[2]), "eval": int(s[3]), "flossing": int(s[4]),
            "rewiring": int(s[5])}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _settings_value(v: Any) -> Any:
    """A constructor setting as JSON: scalars and strings as they are, containers element-wise, small arrays
    as lists, anything else (large arrays, objects) by type and shape/repr so that a change still shows."""
    if dataclasses.is_dataclass(v) and not isinstance(v, type):  # private fields only when they are settings
        items = ((f.name, getattr(v, f.name)) for f in dataclasses.fields(v))
        return {k: _settings_value(x) for k, x in items
                if not k.startswith("_") or (dataclasses.is_dataclass(x) and not isinstance(x, type))}
    if hasattr(v, "_asdict"):  # NamedTuple configs
        return {k: _settings_value(x) for k, x in v._asdict().items()}
    if isinstance(v, (np.generic,)):
        v = v.item()
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else repr(v)
    if isinstance(v, dict):
        return {str(k): _settings_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_settings_value(x) for x in v]
    if isinstance(v, (np.ndarray, torch.Tensor)):
        a = v.detach().cpu().double().numpy() if isinstance(v, torch.Tensor) else np.asarray(v, dtype=float)
        return a.tolist() if a.size <= 16 else f"array{list(a.shape)} sum={float(a.sum()):.12g}"
    if isinstance(v, torch.dtype):
        return str(v)
    cfg = getattr(v, "config", None)  # e.g. a Surrogate
    if callable(cfg):
        return {"type": type(v).__name__, "config": _settings_value(cfg())}
    return f"{type(v).__name__}"


def resolved_settings(model: nn.Module, task: Any, rule: Any, flossing: Any = None) -> dict:
    """Every setting the run's objects were built with, package defaults included: the model's constructor
    arguments, the task's and the rule's fields, the flossing schedule. A run config names only what the user
    gave, so this is what shows when a package default has changed under a checkpoint (see :func:`train`)."""
    model_cfg = {k: v for k, v in getattr(model, "_config", {}).items() if k not in ("dtype", "device")}
    out = {"model": {"class": type(model).__name__, **_settings_value(model_cfg)},
           "task": {"class": type(task).__name__, **(_settings_value(task) if dataclasses.is_dataclass(task)
                                                     else {})},
           "rule": {"class": type(rule).__name__, **(_settings_value(rule) if dataclasses.is_dataclass(rule)
                                                     else {})}}
    if flossing is not None:
        out["flossing"] = _settings_value(flossing)
    return out


def _check_same_settings(now: dict, saved: str | None, checkpoint: pathlib.Path) -> None:
    """Resuming under different resolved settings (a package default changed since the run started) is a
    ConfigError naming each setting with its old and new value. Settings that did not exist when the run started
    are not compared (a new option's default keeps the old behaviour)."""
    if saved is None:
        return
    old = json.loads(saved)
    now = json.loads(json.dumps(now))

    def flat(d: Any, prefix: str = "") -> dict:
        if not isinstance(d, dict):
            return {prefix: d}
        r: dict = {}
        for k, v in d.items():
            r.update(flat(v, f"{prefix}.{k}" if prefix else k))
        return r

    a, b = flat(old), flat(now)  # a setting added since (absent from the checkpoint) is not a change: its
    # default is the behaviour the run started with, or the change would be a changed default of an old key
    diff = [f"{k}: {a[k]!r} -> {b.get(k, '(absent)')!r}" for k in sorted(a) if a[k] != b.get(k, "(absent)")]
    if diff:
        raise ConfigError(f"cannot resume {checkpoint.parent}: the run was started with other settings than this "
                          f"spikelearn builds from the same configuration (a default changed?): "
                          f"{'; '.join(diff[:8])}{' ...' if len(diff) > 8 else ''}; resume with the version "
                          f"that started it, or start a new run folder")


def _atomic_save(obj: Any, path: pathlib.Path) -> None:
    # a temporary name of this process's own: two writers never share one half-written file
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


RESERVED_COLUMNS = ("iteration", "loss", "accuracy", "eval_loss", "firing_rate_hz", "wall_time_s", "n_rewired",
                    "floss_loss", "floss_lambda_max")


class Trainer:
    """Train ``model`` on ``task`` with ``rule`` and ``optimizer`` (see module docstring).

    Args:
        model: a spikelearn model (``model(x, state=None, record=False)``).
        task: a task object (``sample``, ``loss``, ``accuracy``).
        rule: any learning rule (``rule.gradients(model, x, y, mask, loss_fn)``).
        optimizer: any ``torch.optim`` optimizer over ``model.parameters()``.
        config: :class:`~spikelearn.config.TrainConfig` (iterations, batch size, seed, evaluation, checkpoints).
        measurements: measurement hooks run on evaluation schedules of their own.
        loss_fn: defaults to ``task.loss``.
        out_dir: where checkpoints go (default ``config.out_dir``); ``None`` disables checkpoints.
        scheduler: a ``torch.optim.lr_scheduler`` of ``optimizer`` (``None``: constant lr), stepped once per
            training iteration after its update(s).

    ``config.l2`` (> 0) adds ``∂/∂θ [l2/2 (‖W_in‖² + ‖W_rec‖² + ‖W_out‖²)]`` — the effective weights, through the
    mask/sign parametrisation, biases excluded — to every gradient the rule returns, for the parameters that
    gradient names (a parameter the rule leaves alone stays alone), before clipping. ``config.stop_at_accuracy``
    (> 0) ends training after the first evaluation whose accuracy is >= it (:attr:`stopped_at`).
    """

    def __init__(self, model: nn.Module, task: Any, rule: Any, optimizer: torch.optim.Optimizer,
                 config: TrainConfig, *, measurements: tuple[Measurement, ...] = (), loss_fn: LossFn | None = None,
                 out_dir: str | pathlib.Path | None = "config", run_config: RunConfig | None = None,
                 flossing: Any = None, scheduler: Any = None):
        self.model, self.task, self.rule, self.optimizer, self.config = model, task, rule, optimizer, config
        self.scheduler = scheduler
        self._settings: dict | None = None  # resolved_settings, see settings()
        self.stopped_at: int | None = None    # iteration whose evaluation met config.stop_at_accuracy
        self.measurements = tuple(measurements)
        self.loss_fn = loss_fn or task.loss
        self.out_dir = pathlib.Path(config.out_dir) if out_dir == "config" else (
            None if out_dir is None else pathlib.Path(out_dir))
        self.run_config = run_config
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        seeds = derive_seeds(config.seed)
        self.trial_gen = torch.Generator(device="cpu").manual_seed(seeds["trials"])
        eval_gen = torch.Generator(device="cpu").manual_seed(seeds["eval"])
        self.eval_batch = self._to_device(task.sample(config.eval_batch_size, eval_gen, dtype=self.dtype))
        self.iteration = 0
        self._it = 0
        self._saved_at: int | None = None     # iteration of the checkpoint this trainer wrote or loaded
        self.rows: list[dict] = []
        self.wall_time_s = 0.0
        self.preflossed = False
        # Gradient flossing on a schedule (rules.flossing.FlossingSchedule), usable with any rule.
        self.flosser = None
        if flossing is not None:
            from spikelearn.rules.flossing import Flosser

            self.flosser = Flosser(model, flossing, seed=seeds["flossing"])
        # Sign-preserving DEEP R rewiring (off by default), applied around every optimizer step.
        self.rewire = self.rw_state = None
        if config.rewiring:
            from spikelearn.rules.rewiring import DeepR

            self.rewire = DeepR(l1=config.rewiring_l1, seed=seeds["rewiring"])
            self.rw_state = self.rewire.init(model)
        # The model as built (reference of `initial_model` measurement hooks); saved in checkpoints.
        self.initial_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self._initial_model: nn.Module | None = None

    def initial_model(self) -> nn.Module:
        """A frozen copy of the model as it was built (see :class:`Measurement`)."""
        if self._initial_model is None:
            import copy

            m = copy.deepcopy(self.model)
            m.load_state_dict(self.initial_state)
            for p in m.parameters():
                p.requires_grad_(False)
            self._initial_model = m
        return self._initial_model

    def _sample_x(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """Fresh task inputs for flossing steps (their own generator; training trials are not disturbed)."""
        return self.task.sample(batch_size, generator, dtype=self.dtype)[0].to(self.device)

    def _to_device(self, batch):
        return tuple(t.to(self.device) for t in batch)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Loss, accuracy and mean firing rate (Hz; spiking models) on the fixed evaluation batch."""
        from spikelearn.models import SpikingRNN

        x, y, mask = self.eval_batch
        if isinstance(self.model, SpikingRNN):  # spikes only, 100 steps at a time (a whole record costs 2-3x)
            from spikelearn.rules.eprop import _record_chunks

            chunks = _record_chunks(self.model, x, 100, ("z",))
            y_hat = torch.cat([c[0] for c in chunks])
            n_spikes = sum(float(c[1][0].sum()) for c in chunks)
        else:
            y_hat, n_spikes = self.model(x).y, None
        res = {"eval_loss": float(self.loss_fn(y_hat, y, mask)), "accuracy": float(self.task.accuracy(y_hat, y, mask))}
        if n_spikes is not None:
            res["firing_rate_hz"] = n_spikes / (x.shape[0] * x.shape[1] * self.model.n) * 1000.0 / self.model.dt_ms
        return res

    def _measure(self, it: int, last: bool = False) -> dict[str, float]:
        res: dict[str, float] = {}
        for m in self.measurements:
            if it % m.every and not last:
                continue
            if _wants_initial_model(m.fn):
                v = m.fn(self.model, self.task, it, initial_model=self.initial_model())
            else:
                v = m.fn(self.model, self.task, it)
            got = {f"{m.name}.{k}": float(x) for k, x in v.items()} if isinstance(v, Mapping) else {m.name: float(v)}
            clash = sorted(set(got) & (set(res) | set(RESERVED_COLUMNS) | set(self._optional_columns())))
            if clash:
                raise ValueError(f"measurement {m.name!r} writes column(s) {clash}, which another measurement or "
                                 f"the trainer already writes; rename it")
            res.update(got)
        return res

    def _optional_columns(self) -> tuple[str, ...]:
        """Columns written only with a scheduler (``lr``) or an L2 penalty (``l2_penalty``), reserved only then."""
        return (("lr",) if self.scheduler is not None else ()) + (("l2_penalty",) if self.config.l2 > 0 else ())

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {"iteration": self.iteration, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "trial_generator": self.trial_gen.get_state(),
                "history": self.rows, "wall_time_s": self.wall_time_s, "preflossed": self.preflossed,
                "flosser": None if self.flosser is None else self.flosser.state_dict(),
                "rewiring": None if self.rewire is None else {
                    "active": self.rw_state.active, "sign": self.rw_state.sign,
                    "n_rewired": self.rw_state.n_rewired, "generator": self.rw_state.generator.get_state()},
                "initial_state": self.initial_state,
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                "stopped_at": self.stopped_at,
                "rule": rule_state_dict(self.rule, self.model), "torch_rng": torch.get_rng_state(),
                "run_config": None if self.run_config is None else self.run_config.to_json(),
                "settings": json.dumps(self.settings())}

    def settings(self) -> dict:
        """:func:`resolved_settings` of this trainer's model, task, rule and flossing schedule (fixed once built:
        computed on the first call)."""
        if self._settings is None:
            self._settings = resolved_settings(self.model, self.task, self.rule,
                                               None if self.flosser is None else self.flosser.schedule)
        return self._settings

    def save_checkpoint(self) -> pathlib.Path | None:
        if self.out_dir is None:
            return None
        bad = [n for n, p in self.model.named_parameters() if not torch.isfinite(p).all()]
        if bad:  # never call a broken model a good checkpoint
            raise TrainingDiverged(f"non-finite parameters {bad} at iteration {self.iteration}; training stopped, "
                                   f"no checkpoint written for it")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / CHECKPOINT
        _atomic_save(self.state_dict(), path)
        self._saved_at = self.iteration
        return path

    def load_checkpoint(self, path: str | pathlib.Path | None = None, *, state: dict | None = None) -> None:
        """Restore model, optimizer, trial RNG, rule state and history from a checkpoint (default: ``out_dir``'s),
        or from its already loaded contents ``state``.

        Loaded on the CPU (generator states must stay there); model, optimizer and rule tensors move to the
        model's device as they are restored."""
        ck = state
        if ck is None:
            path = pathlib.Path(path) if path is not None else self.out_dir / CHECKPOINT
            ck = torch.load(path, map_location="cpu", weights_only=True)
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.trial_gen.set_state(ck["trial_generator"])
        self.iteration, self.rows, self.wall_time_s = ck["iteration"], list(ck["history"]), ck["wall_time_s"]
        self._saved_at = int(ck["iteration"])
        self.preflossed = bool(ck.get("preflossed", False))
        self.stopped_at = None if ck.get("stopped_at") is None else int(ck["stopped_at"])
        if self.scheduler is not None and ck.get("scheduler") is not None:
            self.scheduler.load_state_dict(ck["scheduler"])
        if ck.get("initial_state") is not None:
            self.initial_state, self._initial_model = ck["initial_state"], None
        if self.flosser is not None and ck.get("flosser") is not None:
            self.flosser.load_state_dict(ck["flosser"])
        if self.rewire is not None and ck.get("rewiring") is not None:
            from spikelearn.rules.rewiring import DeepRState

            rw = ck["rewiring"]
            gen = torch.Generator(device=self.rw_state.generator.device)  # where DeepR.init made it
            gen.set_state(rw["generator"])
            self.rw_state = DeepRState(active={k: v.to(self.device) for k, v in rw["active"].items()},
                                       sign={k: v.to(self.device) for k, v in rw["sign"].items()},
                                       n_rewired=int(rw["n_rewired"]), generator=gen)
        if ck.get("rule"):
            load_rule_state_dict(self.rule, self.model, ck["rule"])
        if ck.get("torch_rng") is not None:  # rules that draw from torch's global generator (e.g. reward noise)
            torch.set_rng_state(ck["torch_rng"])

    # ------------------------------------------------------------------ loop
    def run(self, iterations: int | None = None) -> pd.DataFrame:
        """Train until ``iterations`` (default ``config.iterations``) in total, or until an evaluation meets
        ``config.stop_at_accuracy`` (then, and on any later call, nothing more is trained); return :meth:`history`.

        The forced evaluation and measurements of the last iteration happen at ``config.iterations`` (the run's
        end) or at the early stop, not at an intermediate ``iterations``: training in chunks gives the same history
        as one call."""
        from tqdm.auto import tqdm

        cfg = self.config
        total = cfg.iterations if iterations is None else iterations
        bar = tqdm(total=total, initial=self.iteration, disable=cfg.quiet, desc="train", leave=False)
        if self.flosser is not None and not self.preflossed and self.iteration == 0:
            t0 = time.perf_counter()
            self.flosser.pre_floss(self._sample_x)
            self.wall_time_s += time.perf_counter() - t0  # part of the run's cost (wall_time_s is cumulative)
            self.preflossed = True
        try:
            while self.iteration < total and self.stopped_at is None:
                self._one_iteration()
                bar.update(1)
                if self.rows and not math.isnan(self.rows[-1]["loss"]):
                    bar.set_postfix(loss=f"{self.rows[-1]['loss']:.4g}")
                if cfg.checkpoint_every and self.iteration % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
        finally:
            bar.close()
        self.save_checkpoint()
        return self.history()

    def _one_iteration(self) -> None:
        cfg = self.config
        t0 = time.perf_counter()
        it = self.iteration + 1
        x, y, mask = self._to_device(self.task.sample(cfg.batch_size, self.trial_gen, dtype=self.dtype))
        self.model.train()
        self._it = it
        lr = float(self.optimizer.param_groups[0]["lr"]) if self.scheduler is not None else None
        l2_penalty = self._l2_penalty() if cfg.l2 > 0 else None  # at the weights this iteration starts from
        if cfg.update_every_steps > 0:
            # online rules: updates applied every k steps during the trial (continual learning)
            if not getattr(self.rule, "online", False):
                raise ValueError(f"update_every_steps = {cfg.update_every_steps} needs an online rule (init/advance/"
                                 f"read, e.g. eprop, rflo); {type(self.rule).__name__} computes whole-trial gradients")
            from spikelearn.rules.eprop import run_online

            loss, _ = run_online(self.rule, self.model, x, y, mask, self.loss_fn,
                                 chunk_steps=cfg.update_every_steps, on_update=self._apply_update)
            self._check_loss(loss, it)
        else:
            loss, grads = self.rule.gradients(self.model, x, y, mask, self.loss_fn)
            self._check_loss(loss, it)
            self._apply_update(grads)
        if self.scheduler is not None:
            self.scheduler.step()
        loss_v = float(loss)
        self.iteration = it
        row = {"iteration": it, "loss": loss_v}
        if lr is not None:
            row["lr"] = lr
        if l2_penalty is not None:
            row["l2_penalty"] = l2_penalty
        if self.rewire is not None:
            row["n_rewired"] = self.rw_state.n_rewired
        if self.flosser is not None:
            fl = self.flosser.after_iteration(it, self._sample_x)
            if fl:
                row["floss_loss"] = float(np.mean([r["floss_loss"] for r in fl]))
                row["floss_lambda_max"] = float(np.mean([r["floss_lambda_max"] for r in fl]))
        if cfg.eval_every and (it % cfg.eval_every == 0 or it == cfg.iterations or it == 1):
            self.model.eval()
            ev = self.evaluate()
            if not math.isfinite(ev["eval_loss"]):
                raise TrainingDiverged(f"evaluation loss is {ev['eval_loss']} after the update of iteration {it} "
                                       f"(the updated model diverged); training stopped")
            row.update(ev)
        stop = cfg.stop_at_accuracy > 0 and "accuracy" in row and row["accuracy"] >= cfg.stop_at_accuracy
        row.update(self._measure(it, last=it == cfg.iterations or stop))
        self.wall_time_s += time.perf_counter() - t0
        row["wall_time_s"] = self.wall_time_s
        self.rows.append(row)
        if stop:
            self.stopped_at = it

    def _check_loss(self, loss: torch.Tensor, it: int) -> None:
        loss_v = float(loss)
        if not math.isfinite(loss_v):
            ck = (self.out_dir / CHECKPOINT) if self.out_dir is not None else None
            where = (f"last good checkpoint: {ck} (iteration {self._saved_at})"  # this run's, not an older run's
                     if ck is not None and self._saved_at is not None and ck.exists() else
                     "no checkpoint was written")
            raise TrainingDiverged(f"loss is {loss_v} at iteration {it}; training stopped, {where}")

    def _l2_weights(self) -> tuple[torch.Tensor, ...]:
        W = self.model.effective_weights()
        return W.W_in, W.W_rec, W.W_out

    @torch.no_grad()
    def _l2_penalty(self) -> float:
        """``l2/2 (‖W_in‖² + ‖W_rec‖² + ‖W_out‖²)`` of the effective weights."""
        return float(0.5 * self.config.l2 * sum(w.double().square().sum() for w in self._l2_weights()))

    def _l2_grads(self) -> dict[str, torch.Tensor]:
        """Autograd of the L2 penalty w.r.t. the trainable parameters it depends on (``l2·M⊙θ`` for
        ``W = M⊙θ``; for a sign-constrained entry ``W = s|θ|``, ``W² = θ²``, so also ``l2·θ``)."""
        with torch.enable_grad():
            pen = 0.5 * self.config.l2 * sum(w.square().sum() for w in self._l2_weights())
            named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
            gs = torch.autograd.grad(pen, [p for _, p in named], allow_unused=True)
        return {n: g for (n, _), g in zip(named, gs) if g is not None}

    def _apply_update(self, grads: dict[str, torch.Tensor]) -> None:
        """One optimizer step with ``grads`` (finite check, L2 penalty gradient, optional clipping)."""
        bad = [n for n, g in grads.items() if not torch.isfinite(g).all()]
        if bad:
            raise TrainingDiverged(f"non-finite gradient for {bad} at iteration {self._it}; training stopped")
        if self.config.l2 > 0:
            pen = self._l2_grads()
            grads = {n: (g + pen[n].to(g.dtype) if n in pen else g) for n, g in grads.items()}
        self.optimizer.zero_grad(set_to_none=True)
        apply_gradients(self.model, grads)
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        if self.rewire is not None:
            self.rewire.mask_grads(self.model, self.rw_state)
        self.optimizer.step()
        if self.rewire is not None:
            self.rw_state = self.rewire.step(self.model, self.rw_state, lr=self.optimizer.param_groups[0]["lr"])

    def history(self) -> pd.DataFrame:
        """Tidy history, one row per iteration (see module docstring)."""
        cols = ["iteration", "loss", "accuracy", "eval_loss", "firing_rate_hz", "wall_time_s"]
        df = pd.DataFrame(self.rows)
        for c in cols:
            if c not in df:
                df[c] = np.nan
        extra = [c for c in df.columns if c not in cols]
        return df[cols + extra]


# ---------------------------------------------------------------------- building from a RunConfig

def _check_required(section: str, target: Any, options: Mapping, provided: tuple[str, ...] = (), *,
                    table: str | None = None) -> None:
    """Raise :class:`ConfigError` naming a required argument of ``target`` that neither options nor build give."""
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):  # pragma: no cover - builtins without signatures
        return
    for name, p in sig.parameters.items():
        if (p.default is inspect.Parameter.empty and name not in options and name not in provided
                and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)):
            raise ConfigError(f"[{table or section + '.options'}] misses {name!r}, required by "
                              f"{getattr(target, '__name__', target)}")


def validate_config(cfg: RunConfig) -> None:
    """Check a run configuration without building anything: names exist, options are accepted, required
    arguments are given. :func:`build` and the sweep runner call it first.

    Raises:
        ConfigError: naming the section and key.
    """
    import torch

    from spikelearn import circuit as circ
    from spikelearn import connectomes, tasks
    from spikelearn.rules import RULES

    c = cfg.circuit
    if c.kind == "connectome":
        if c.name not in connectomes.names():
            raise ConfigError(f"[circuit] connectome name {c.name!r} unknown; shipped connectomes: "
                              f"{list(connectomes.names())}")
        check_options("circuit", connectomes.loader(c.name), c.options)
    else:
        gens = [n for n in circ.generators.__all__ if n != "truncate_rank"]
        if c.kind not in gens:
            raise ConfigError(f"[circuit] kind {c.kind!r} unknown; use 'connectome' or one of {sorted(gens)}")
        gen = getattr(circ.generators, c.kind)
        check_options("circuit", gen, c.options)
        first = next(iter(inspect.signature(gen).parameters))  # build() passes n positionally to most generators
        from_task = tuple(k for k in ("n_in", "n_out") if k in inspect.signature(gen).parameters)
        given = [k for k in from_task if k in c.options]
        if given:
            raise ConfigError(f"[circuit.options] {given} come from the task; leave them out")
        _check_required("circuit", gen, c.options,
                        ("seed",) + from_task if c.kind in ("block_model", "low_rank_aligned")
                        else ("seed", first) + from_task)
    if cfg.task.name not in tasks.TASKS:
        raise ConfigError(f"[task] name {cfg.task.name!r} unknown; available: {sorted(tasks.TASKS)}")
    check_options("task", tasks.TASKS[cfg.task.name], cfg.task.options)
    _check_required("task", tasks.TASKS[cfg.task.name], cfg.task.options)
    if cfg.model.type not in ("spiking", "rate"):
        raise ConfigError(f"[model] type must be 'spiking' or 'rate', got {cfg.model.type!r}")
    from spikelearn import models

    model_cls = models.SpikingRNN if cfg.model.type == "spiking" else models.RateRNN
    check_options("model", model_cls, cfg.model.options, skip=("circuit", "n_in", "n_out"))
    _check_required("model", model_cls, cfg.model.options, ("circuit", "n_in", "n_out"))
    if cfg.rule.name not in RULES:
        raise ConfigError(f"[rule] name {cfg.rule.name!r} unknown; registered rules: {sorted(RULES)}")
    kinds = getattr(RULES[cfg.rule.name], "model_types", ("rate", "spiking"))
    if cfg.model.type not in kinds:
        raise ConfigError(f"[rule] {cfg.rule.name!r} applies to {list(kinds)} models, not to [model] type "
                          f"{cfg.model.type!r}")
    check_options("rule", RULES[cfg.rule.name], cfg.rule.options)
    _check_required("rule", RULES[cfg.rule.name], cfg.rule.options)
    opt = _optimizer_classes()
    if cfg.optimizer.name.lower() not in opt:
        raise ConfigError(f"[optimizer] name {cfg.optimizer.name!r} unknown; torch.optim offers {sorted(opt)}")
    check_options("optimizer", opt[cfg.optimizer.name.lower()], cfg.optimizer.options, skip=("params", "lr"))
    _check_required("optimizer", opt[cfg.optimizer.name.lower()], cfg.optimizer.options, ("params", "lr"))
    if cfg.optimizer.schedule:
        sch = _scheduler_classes()
        if cfg.optimizer.schedule.lower() not in sch:
            raise ConfigError(f"[optimizer] schedule {cfg.optimizer.schedule!r} unknown; torch.optim.lr_scheduler "
                              f"offers {sorted(sch)} (\"\" = constant lr)")
        cls = sch[cfg.optimizer.schedule.lower()]
        check_options("optimizer", cls, cfg.optimizer.schedule_options, skip=("optimizer", "last_epoch"),
                      table="optimizer.schedule_options")
        _check_required("optimizer", cls, cfg.optimizer.schedule_options, ("optimizer",),
                        table="optimizer.schedule_options")
    elif cfg.optimizer.schedule_options:
        raise ConfigError("[optimizer] schedule_options are given but no schedule; name one (schedule = \"steplr\")")
    if cfg.flossing.enabled or cfg.flossing.options:
        from spikelearn.dynamics import FlossingConfig

        check_options("flossing", FlossingConfig, cfg.flossing.options)
        if cfg.flossing.pre_mode not in ("", "autodiff", "local"):
            raise ConfigError(f"[flossing] pre_mode must be '', 'autodiff' or 'local', got {cfg.flossing.pre_mode!r}")
        if not cfg.flossing.lr > 0:
            raise ConfigError(f"[flossing] lr must be > 0, got {cfg.flossing.lr!r}")
        if not cfg.flossing.inter_lr >= 0:
            raise ConfigError(f"[flossing] inter_lr must be > 0 (or 0 = lr), got {cfg.flossing.inter_lr!r}")
    t = cfg.train
    for key, least in (("iterations", 1), ("batch_size", 1), ("eval_batch_size", 1), ("seed", 0),
                       ("eval_every", 0), ("checkpoint_every", 0), ("update_every_steps", 0)):
        v = getattr(t, key)
        if v < least:
            raise ConfigError(f"[train] {key} must be >= {least}, got {v}" +
                              (" (0 = no evaluation)" if key == "eval_every" else
                               " (0 = only at the end)" if key == "checkpoint_every" else ""))
    for key in ("grad_clip", "rewiring_l1", "l2"):
        if getattr(t, key) < 0:
            raise ConfigError(f"[train] {key} must be >= 0, got {getattr(t, key)}")
    if not 0 <= t.stop_at_accuracy <= 1:
        raise ConfigError(f"[train] stop_at_accuracy must be in [0, 1] (0 = off), got {t.stop_at_accuracy}")
    if t.stop_at_accuracy > 0 and t.eval_every == 0:
        raise ConfigError(f"[train] stop_at_accuracy = {t.stop_at_accuracy} needs evaluations: set eval_every > 0")
    if not cfg.optimizer.lr > 0:
        raise ConfigError(f"[optimizer] lr must be > 0, got {cfg.optimizer.lr}")
    f = cfg.flossing
    for key, least in (("pre_steps", 0), ("every", 0), ("steps", 0), ("max_times", 0), ("batch_size", 1)):
        if getattr(f, key) < least:
            raise ConfigError(f"[flossing] {key} must be >= {least}, got {getattr(f, key)}")
    if (f.every > 0) != (f.steps > 0):
        raise ConfigError(f"[flossing] every ({f.every}) and steps ({f.steps}) go together: inter-flossing runs "
                          f"`steps` steps every `every` iterations; set both, or neither")
    if cfg.train.dtype not in ("float32", "float64"):
        raise ConfigError(f"[train] dtype must be 'float32' or 'float64', got {cfg.train.dtype!r}")
    if cfg.train.device not in ("cpu", "auto") and not cfg.train.device.startswith("cuda"):
        raise ConfigError(f"[train] device must be 'cpu', 'cuda[:k]' or 'auto', got {cfg.train.device!r}")



def _optimizer_classes() -> dict[str, type]:
    return {k.lower(): v for k, v in vars(torch.optim).items()
            if inspect.isclass(v) and issubclass(v, torch.optim.Optimizer) and v is not torch.optim.Optimizer}


# take callables or other schedulers (not expressible in TOML), or a metric at each step
_UNUSABLE_SCHEDULERS = ("lrscheduler", "_lrscheduler", "lambdalr", "multiplicativelr", "sequentiallr",
                        "chainedscheduler", "reducelronplateau")


def _scheduler_classes() -> dict[str, type]:
    from torch.optim import lr_scheduler

    base = getattr(lr_scheduler, "LRScheduler", lr_scheduler._LRScheduler)
    return {k.lower(): v for k, v in vars(lr_scheduler).items()
            if inspect.isclass(v) and issubclass(v, base) and k.lower() not in _UNUSABLE_SCHEDULERS}


def build_circuit(cfg: RunConfig, seed: int, task: Any = None):
    """The circuit of ``cfg``: a connectome, or a generator. Whatever draws at random (a generator, or a connectome
    loader that samples, such as ``mouse_v1``) is seeded with ``seed`` unless its options give a ``seed``. A
    generator that takes ``n_in``/``n_out`` (``task_aligned_low_rank``) gets them from ``task`` (built from
    ``cfg.task`` when not given)."""
    from spikelearn import circuit as circ
    from spikelearn import connectomes

    c = cfg.circuit
    if c.kind == "connectome":
        opts = dict(c.options)
        if "seed" in inspect.signature(connectomes.loader(c.name)).parameters:
            opts.setdefault("seed", seed)
        return _check_circuit_n(cfg, connectomes.load(c.name, **opts))
    fn = getattr(circ.generators, c.kind)
    opts = dict(c.options)
    params = inspect.signature(fn).parameters
    if "seed" in params:
        opts.setdefault("seed", seed)
    if "n_in" in params and "n_out" in params:
        if task is None:
            from spikelearn import tasks

            task = tasks.make_task(cfg.task.name, **cfg.task.options)
        opts.update(n_in=task.n_in, n_out=task.n_out)
    if c.kind in ("block_model", "low_rank_aligned"):
        return _check_circuit_n(cfg, fn(**opts))
    return fn(c.n, **opts)


_DEFAULT_CIRCUIT_N = CircuitConfig().n


def _check_circuit_n(cfg: RunConfig, circuit):
    """``[circuit] n`` sizes generators that take it; a connectome or a ``block_model`` / ``low_rank_aligned``
    circuit has its size from its data or options. An ``n`` other than the default that disagrees with that size
    is an error rather than being ignored (the default cannot be told from an explicit 100, so it is let pass)."""
    n = cfg.circuit.n
    if n != _DEFAULT_CIRCUIT_N and n != circuit.n:
        what = f"connectome {cfg.circuit.name!r}" if cfg.circuit.kind == "connectome" else cfg.circuit.kind
        raise ConfigError(f"[circuit] n = {n}, but the {what} circuit has {circuit.n} neurons: n does not size "
                          f"a {cfg.circuit.kind} circuit (its size comes from "
                          f"{'the data' if cfg.circuit.kind == 'connectome' else '[circuit.options]'}); "
                          f"remove n or set it to {circuit.n}")
    return circuit


@contextlib.contextmanager
def _section(section: str, what: str):
    """A ValueError/TypeError from building a config section's object (a bad value in its options table) becomes
    a ConfigError naming the section and the thing built, chained to the original error."""
    try:
        yield
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(f"[{section}] building {what}: {e}") from e


def build(cfg: RunConfig, *, out_dir: str | None = None):
    """Build ``(circuit, model, task, rule, optimizer, trainer)`` from a run configuration.

    One seed determines everything: circuit generation (numpy), initial weights (torch) and the training and
    evaluation trials (torch generators), each from its own stream derived with :func:`derive_seeds`.
    """
    from spikelearn import models, tasks

    validate_config(cfg)
    seeds = derive_seeds(cfg.train.seed)
    with _section("task", cfg.task.name):
        task = tasks.make_task(cfg.task.name, **cfg.task.options)
    with _section("circuit", cfg.circuit.name or cfg.circuit.kind):
        circuit = build_circuit(cfg, seeds["circuit"], task)
    model_cls = models.SpikingRNN if cfg.model.type == "spiking" else models.RateRNN
    model_opts = dict(cfg.model.options)
    model_opts.setdefault("dt_ms", float(task.dt_ms))  # one time step for model and task
    if float(model_opts["dt_ms"]) != float(task.dt_ms):
        raise ConfigError(f"[model.options] dt_ms = {model_opts['dt_ms']} differs from the task's dt_ms = "
                          f"{task.dt_ms}; leave it out to use the task's")
    torch.manual_seed(seeds["init"])
    with _section("model", model_cls.__name__):
        model = model_cls(circuit, task.n_in, task.n_out, **model_opts)
    model = model.to(device=resolve_device(cfg.train.device), dtype=getattr(torch, cfg.train.dtype))
    with _section("rule", cfg.rule.name):
        rule = make_rule(cfg.rule.name, **cfg.rule.options)
    opt_cls = _optimizer_classes()[cfg.optimizer.name.lower()]
    with _section("optimizer", opt_cls.__name__):
        optimizer = opt_cls(model.parameters(), lr=cfg.optimizer.lr, **cfg.optimizer.options)
    scheduler = None
    if cfg.optimizer.schedule:
        sch_cls = _scheduler_classes()[cfg.optimizer.schedule.lower()]
        with _section("optimizer", sch_cls.__name__):
            scheduler = sch_cls(optimizer, **cfg.optimizer.schedule_options)
    train_cfg = cfg.train if out_dir is None else dataclasses.replace(cfg.train, out_dir=out_dir)
    flossing = None
    if cfg.flossing.enabled:
        from spikelearn.rules.flossing import FlossingSchedule

        f = cfg.flossing
        with _section("flossing", "FlossingSchedule"):
            flossing = FlossingSchedule(pre_steps=f.pre_steps, every=f.every, steps=f.steps, max_times=f.max_times,
                                        batch_size=f.batch_size, lr=f.lr, config=dict(f.options),
                                        pre_mode=f.pre_mode or None, inter_lr=f.inter_lr or None)
    trainer = Trainer(model, task, rule, optimizer, train_cfg, run_config=cfg, flossing=flossing, scheduler=scheduler)
    return circuit, model, task, rule, optimizer, trainer


def check_build(cfg: RunConfig) -> None:
    """Everything :func:`build` checks, by building once on the CPU: the names and options of
    :func:`validate_config`, and the values inside the options tables (a negative time constant, a probability
    above 1, ...), as ConfigErrors naming the section. Nothing is trained or written, the global torch RNG is left
    as it was, and ``train.device`` is ignored (a driver without the GPU can check runs meant for one)."""
    cpu = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, device="cpu"))
    with torch.random.fork_rng(devices=[]):
        build(cpu)


_RESUMABLE_CHANGES = {("train", "iterations"), ("train", "quiet"), ("train", "out_dir"), ("train", "device")}


def _check_same_config(cfg: RunConfig, saved: str | None, checkpoint: pathlib.Path) -> None:
    """A run resumes only under the configuration it was started with (``saved``, the checkpoint's run config as
    JSON): anything but ``train.iterations`` (train longer), ``quiet``, ``out_dir`` and ``device`` differing is a
    ConfigError naming the keys. A key added to the schema after the run started counts as its default there (the
    behaviour the run was started with), so a resume may not switch a new option on."""
    if saved is None:
        return
    old, new = json.loads(saved), json.loads(cfg.to_json())
    defaults = json.loads(RunConfig().to_json())
    for sec, fields in defaults.items():
        if sec not in old or isinstance(old[sec], dict):
            old[sec] = {**fields, **old.get(sec, {})}
    diff = []
    for sec in sorted(set(old) | set(new)):
        a, b = old.get(sec, {}), new.get(sec, {})
        if not isinstance(a, dict) or not isinstance(b, dict):
            if a != b:
                diff.append(sec)
            continue
        diff += [f"{sec}.{k}" for k in sorted(set(a) | set(b))
                 if (sec, k) not in _RESUMABLE_CHANGES and k in a and a.get(k) != b.get(k)]
    if diff:
        raise ConfigError(f"cannot resume {checkpoint.parent}: the configuration differs from the one the run was "
                          f"started with in {diff}; resume with the original configuration (only train.iterations "
                          f"may grow), or start a new run folder")


def train(cfg: RunConfig, *, out_dir: str | None = None, resume: bool = False,
          measurements: tuple[Measurement, ...] = (), overwrite: bool = False) -> tuple[pd.DataFrame, Any]:
    """Build from ``cfg`` and train; writes ``config.json``, ``history.csv``, ``model.pt`` and the checkpoint
    into the output folder. With ``resume``, continue from the folder's checkpoint. A folder that already holds a
    run's checkpoint is not trained over unless ``resume`` or ``overwrite``. Returns ``(history, model)``."""
    circuit, model, task, rule, optimizer, trainer = build(cfg, out_dir=out_dir)
    trainer.measurements = tuple(measurements)
    out = trainer.out_dir
    out.mkdir(parents=True, exist_ok=True)
    if not resume and not overwrite and (out / CHECKPOINT).exists():
        raise FileExistsError(f"{out} already holds a run ({CHECKPOINT}); continue it with resume (--resume), "
                              f"train into another folder, or replace it with overwrite (--overwrite)")
    if resume:
        if not (out / CHECKPOINT).exists():
            raise FileNotFoundError(f"cannot resume: no checkpoint in {out}")
        ck = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=True)  # read once: check, then restore
        _check_same_config(cfg, ck.get("run_config"), out / CHECKPOINT)
        _check_same_settings(trainer.settings(), ck.get("settings"), out / CHECKPOINT)
        trainer.load_checkpoint(state=ck)
    (out / "config.json").write_text(cfg.to_json())
    (out / "settings.json").write_text(json.dumps(trainer.settings(), indent=2))
    hist = trainer.run()
    hist.to_csv(out / "history.csv", index=False)
    model.save(out / "model.pt")
    summary = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in hist.iloc[-1].to_dict().items()}
    if trainer.config.stop_at_accuracy > 0:
        summary["stopped_at"] = trainer.stopped_at
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    return hist, model
