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

Building these pieces from a :class:`~spikelearn.config.RunConfig` (and ``train(run_config)``, which builds and
runs) is the job of :mod:`spikelearn.build`.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import os
import pathlib
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Mapping, cast

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from spikelearn.config import RunConfig, TrainConfig
from spikelearn.models import RateRNN, SpikingRNN
from spikelearn.rules import apply_gradients
from spikelearn.rules.base import LossFn, init_rule_state, pack_rule_state, unpack_rule_state, update_rule
from spikelearn.rules.flossing import Flosser
from spikelearn.rules.local import record_chunks, run_online
from spikelearn.rules.rewiring import DeepR, DeepRState

__all__ = ["CHECKPOINT", "Measurement", "RESERVED_COLUMNS", "Trainer", "TrainingDiverged", "derive_seeds"]

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
    fn: Callable[..., Any]  # (model, task, iteration), and initial_model= when it declares it
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
        run_config: the :class:`~spikelearn.config.RunConfig` the pieces were built from (kept in checkpoints).
        flossing: a :class:`~spikelearn.rules.flossing.FlossingSchedule` (``None``: no flossing).
        settings: every setting the pieces were built with (:func:`spikelearn.build.resolved_settings`), kept in
            checkpoints so that a resume can tell a changed package default.
        scheduler: a ``torch.optim.lr_scheduler`` of ``optimizer`` (``None``: constant lr), stepped once per
            training iteration after its update(s).

    ``config.l2`` (> 0) adds ``∂/∂θ [l2/2 (‖W_in‖² + ‖W_rec‖² + ‖W_out‖²)]`` — the effective weights, through the
    mask/sign parametrisation, biases excluded — to every gradient the rule returns, for the parameters that
    gradient names (a parameter the rule leaves alone stays alone), before clipping. ``config.stop_at_accuracy``
    (> 0) ends training after the first evaluation whose accuracy is >= it (:attr:`stopped_at`).
    """

    def __init__(self, model: SpikingRNN | RateRNN, task: Any, rule: Any, optimizer: torch.optim.Optimizer,
                 config: TrainConfig, *, measurements: tuple[Measurement, ...] = (), loss_fn: LossFn | None = None,
                 out_dir: str | pathlib.Path | None = "config", run_config: RunConfig | None = None,
                 flossing: Any = None, scheduler: Any = None, settings: dict | None = None):
        self.model, self.task, self.rule, self.optimizer, self.config = model, task, rule, optimizer, config
        self.scheduler = scheduler
        self.settings = settings
        self.stopped_at: int | None = None    # iteration whose evaluation met config.stop_at_accuracy
        self.measurements = tuple(measurements)
        self.loss_fn = loss_fn or task.loss
        self.out_dir = pathlib.Path(config.out_dir) if out_dir == "config" else (
            None if out_dir is None else pathlib.Path(out_dir))
        self.run_config = run_config
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.rule_state = init_rule_state(rule, model)  # what the rule carries between iterations (checkpointed)
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
            self.flosser = Flosser(model, flossing, seed=seeds["flossing"])
        # Sign-preserving DEEP R rewiring (off by default), applied around every optimizer step.
        self.rewire = self.rw_state = None
        if config.rewiring:
            self.rewire = DeepR(l1=config.rewiring_l1, seed=seeds["rewiring"])
            self.rw_state = self.rewire.init(model)
        # The model as built (reference of `initial_model` measurement hooks); saved in checkpoints.
        self.initial_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self._initial_model: SpikingRNN | RateRNN | None = None

    def initial_model(self) -> SpikingRNN | RateRNN:
        """A frozen copy of the model as it was built (see :class:`Measurement`)."""
        if self._initial_model is None:
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
        x, y, mask = self.eval_batch
        if isinstance(self.model, SpikingRNN):  # spikes only, 100 steps at a time (a whole record costs 2-3x)
            chunks = record_chunks(self.model, x, 100, ("z",))
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
        rewiring = None
        if self.rewire is not None:
            assert self.rw_state is not None  # made with self.rewire
            rewiring = {"active": self.rw_state.active, "sign": self.rw_state.sign,
                        "n_rewired": self.rw_state.n_rewired, "generator": self.rw_state.generator.get_state()}
        return {"iteration": self.iteration, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "trial_generator": self.trial_gen.get_state(),
                "history": self.rows, "wall_time_s": self.wall_time_s, "preflossed": self.preflossed,
                "flosser": None if self.flosser is None else self.flosser.state_dict(),
                "rewiring": rewiring,
                "initial_state": self.initial_state,
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                "stopped_at": self.stopped_at,
                "rule": pack_rule_state(self.rule_state), "torch_rng": torch.get_rng_state(),
                "run_config": None if self.run_config is None else self.run_config.to_json(),
                "settings": None if self.settings is None else json.dumps(self.settings)}

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
            if path is not None:
                path = pathlib.Path(path)
            elif self.out_dir is not None:
                path = self.out_dir / CHECKPOINT
            else:
                raise TypeError("load_checkpoint() needs a path: this trainer has no out_dir")
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
            rw = ck["rewiring"]
            assert self.rw_state is not None  # made with self.rewire
            gen = torch.Generator(device=self.rw_state.generator.device)  # where DeepR.init made it
            gen.set_state(rw["generator"])
            self.rw_state = DeepRState(active={k: v.to(self.device) for k, v in rw["active"].items()},
                                       sign={k: v.to(self.device) for k, v in rw["sign"].items()},
                                       n_rewired=int(rw["n_rewired"]), generator=gen)
        if ck.get("rule") is not None:
            self.rule_state = unpack_rule_state(ck["rule"], self.device)
        if ck.get("torch_rng") is not None:  # rules that draw from torch's global generator (e.g. reward noise)
            torch.set_rng_state(ck["torch_rng"])

    # ------------------------------------------------------------------ loop
    def run(self, iterations: int | None = None) -> pd.DataFrame:
        """Train until ``iterations`` (default ``config.iterations``) in total, or until an evaluation meets
        ``config.stop_at_accuracy`` (then, and on any later call, nothing more is trained); return :meth:`history`.

        The forced evaluation and measurements of the last iteration happen at ``config.iterations`` (the run's
        end) or at the early stop, not at an intermediate ``iterations``: training in chunks gives the same history
        as one call."""
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
            loss, _, self.rule_state = run_online(self.rule, self.model, x, y, mask, self.loss_fn,
                                                  chunk_steps=cfg.update_every_steps, on_update=self._apply_update,
                                                  state=self.rule_state)
            self._check_loss(loss, it)
        else:
            loss, grads, self.rule_state = update_rule(self.rule, self.model, x, y, mask, self.loss_fn,
                                                       self.rule_state)
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
            assert self.rw_state is not None  # made with self.rewire
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
            # a sum of the three weights' squares: a tensor (sum()'s type allows its start value, 0)
            pen = cast(torch.Tensor, 0.5 * self.config.l2 * sum(w.square().sum() for w in self._l2_weights()))
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
            assert self.rw_state is not None  # made with self.rewire
            self.rewire.mask_grads(self.model, self.rw_state)
        self.optimizer.step()
        if self.rewire is not None:
            assert self.rw_state is not None  # made with self.rewire
            self.rw_state = self.rewire.step(self.model, self.rw_state, lr=self.optimizer.param_groups[0]["lr"])

    def history(self) -> pd.DataFrame:
        """Tidy history, one row per iteration (see module docstring)."""
        cols = ["iteration", "loss", "accuracy", "eval_loss", "firing_rate_hz", "wall_time_s"]
        df = pd.DataFrame(self.rows)
        for c in cols:
            if c not in df:
                df[c] = np.nan
        extra = [c for c in df.columns if c not in cols]
        return cast(pd.DataFrame, df[cols + extra])
