r"""Reward-modulated learning: an eligibility trace times a global reward-prediction error (node perturbation;
Fiete & Seung 2006, Phys. Rev. Lett. 97:048104, doi:10.1103/PhysRevLett.97.048104; Miconi 2017, eLife 6:e20899).

Every trial ``b`` runs with independent Gaussian exploration noise ``η_bj^t ~ N(0, σ²)`` added to each neuron's
drive (its membrane / pre-activation ``h_j^t``). Each synapse keeps the eligibility trace of its own noise-driven
coincidences, and one global scalar per trial — the reward-prediction error — gates it::

    eligibility    e_b,ji = Σ_t η_bj^t c_in,j pre_bi^t / σ²          (pre = r^{t-1} or z^{t-1} for W_rec, x^t for W_in)
    RPE            δ_b = R_b − R̄,      R_b = reward of trial b (``reward_fn``; default −loss of the trial alone)
    baseline       "running": R̄ ← λ R̄ + (1−λ) mean_b R_b after every batch (first batch: its mean);
                   "batch": R̄_b = mean of the other trials' rewards (leave-one-out, unbiased)
    update         ∂E/∂W_ji ≈ −(1/B) Σ_b δ_b e_b,ji

Since ``E[(R − R̄) η^t] = σ² ∂E[R]/∂η^t`` for Gaussian noise and ``∂h_j^t/∂W_ji = c_in,j pre_i^t`` (the direct
effect), the expected update is the gradient of the Gaussian-smoothed batch-mean loss: unbiased for ``σ → 0``
with a constant baseline, whatever the network's recurrence. With ``δ = 0`` the reward-modulated update (``W_rec``,
``W_in``, biases) is exactly zero. ``W_out``/``b_out`` get their exact local gradient (the delta rule on the noisy
run, not gated by δ) when ``readout="exact"``; with ``readout="none"`` they are not updated, and then a zero RPE
means no update at all.

Current-based synapses (``SpikingRNN`` with ``tau_syn_ms > 0``): the noise still enters ``v``, but ``W`` acts on
``v^s`` through the synaptic current ``i^t`` (``t ≤ s``), ``∂v^s/∂W_ji = c_in Σ_{t≤s} α_s^{s−t} pre_i^t`` along the
direct path, so the eligibility is ``Σ_s η^s c_in P^s`` with the filtered ``P``; it is computed as the transposed sum
``Σ_t w̃^t pre^t`` with ``w̃^t = w^t + α_s w̃^{t+1}`` (per-neuron ``τ_s`` allowed).

Implementation: the noise is injected by the model itself, ``model(x, i_ext=η)`` — into ``v^t`` of a ``SpikingRNN``
(also right after a reset to zero), into the pre-activation ``h^t`` of a ``RateRNN`` (every form); with gap
junctions the next step's gap current then carries the perturbation on as part of its effect. One forward pass
per batch (memory ``O(T B N)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch
from torch import Tensor

from spikelearn.models import RateRNN, SpikingRNN
from spikelearn.rules.base import Grads, LossFn, RuleState, output_error
from spikelearn.rules.registry import register
from spikelearn.weights import DENSE, weight_ops

__all__ = ["RewardModulated"]


@register("reward")
@dataclass(frozen=True)
class RewardModulated:
    """Node-perturbation eligibility × global reward-prediction error (module docstring).

    Reads: the trajectory record of one noisy run (``r``/``z`` presynaptic activity, the readout input), the inputs,
    the trial's reward; from the model: ``c_in`` (and ``α_s`` with synaptic currents). Updates: ``theta_rec``,
    ``theta_in``, ``b_rec`` (reward-modulated) and
    ``theta_out``, ``b_out`` (exact, when ``readout="exact"``), through ``model.param_grads``.

    Attributes:
        noise_std: σ of the exploration noise in drive units.
        baseline: ``"running"`` (exponential average of past rewards) or ``"batch"`` (leave-one-out batch mean).
        baseline_decay: λ of the running baseline.
        reward_fn: ``reward_fn(y_hat, y, mask) -> (B,)`` rewards (the task's reward); ``None`` = ``−loss_fn`` of each
            trial on its own.
        readout: ``"exact"`` (delta rule for ``W_out``, ``b_out``) or ``"none"`` (readout not trained).
        seed: seed of the noise generator (``None``: torch's global generator).
    """

    noise_std: float = 0.05
    baseline: Literal["running", "batch"] = "running"
    baseline_decay: float = 0.9
    reward_fn: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None
    readout: Literal["exact", "none"] = "exact"
    seed: int | None = None

    online = False
    model_types = ("rate", "spiking")

    def __post_init__(self) -> None:
        if not self.noise_std > 0:
            raise ValueError(f"RewardModulated: noise_std must be positive, got {self.noise_std!r}")
        if self.baseline not in ("running", "batch"):
            raise ValueError(f"RewardModulated: baseline must be 'running' or 'batch', got {self.baseline!r}")
        if not 0.0 <= self.baseline_decay < 1.0:
            raise ValueError(f"RewardModulated: baseline_decay must lie in [0, 1), got {self.baseline_decay!r}")
        if self.readout not in ("exact", "none"):
            raise ValueError(f"RewardModulated: readout must be 'exact' or 'none', got {self.readout!r}")

    @property
    def stateful(self) -> bool:
        """Whether the rule carries state between calls: the running baseline, the seeded noise generator."""
        return self.baseline == "running" or self.seed is not None

    def init_state(self, model: Any) -> RuleState:
        """``{"baseline": None (set by the first batch), "generator": the seeded noise generator or None}``."""
        self._setup(model)
        gen = None if self.seed is None else torch.Generator(device=model.device).manual_seed(int(self.seed))
        return {"baseline": None, "generator": gen}

    def _setup(self, model: Any) -> tuple[str, Tensor]:
        if not isinstance(model, (RateRNN, SpikingRNN)):
            raise TypeError(f"RewardModulated applies to RateRNN or SpikingRNN, got {type(model).__name__}")
        kw: dict[str, Any] = dict(dtype=model.dtype, device=model.device)
        c_in = torch.as_tensor(model.constants().c_in, **kw).expand(model.n).clone()
        return ("v" if isinstance(model, SpikingRNN) else "h"), c_in

    def _noise(self, model: Any, shape: tuple, gen: torch.Generator | None) -> Tensor:
        return torch.randn(shape, generator=gen, dtype=model.dtype, device=model.device) * self.noise_std

    def rewards(self, y_hat: Tensor, y: Tensor, mask: Tensor, loss_fn: LossFn) -> Tensor:
        """Per-trial rewards ``(B,)``."""
        if self.reward_fn is not None:
            R = torch.as_tensor(self.reward_fn(y_hat, y, mask)).to(y_hat.dtype)
            if R.shape != (y_hat.shape[1],):
                raise ValueError(f"RewardModulated: reward_fn must return one reward per trial, shape "
                                 f"({y_hat.shape[1]},), got {tuple(R.shape)}")
            return R
        return torch.stack([-loss_fn(y_hat[:, b:b + 1], y[:, b:b + 1], mask[:, b:b + 1])
                            for b in range(y_hat.shape[1])])

    def prediction_error(self, R: Tensor, baseline: float | None) -> tuple[Tensor, float | None]:
        """``(δ, new running baseline)``: ``δ_b = R_b − R̄`` ``(B,)`` with the running baseline ``baseline`` (``None``:
        this batch's mean) or, with ``baseline="batch"``, the leave-one-out mean."""
        if self.baseline == "batch":
            B = R.shape[0]
            if B < 2:
                raise ValueError("RewardModulated: baseline='batch' needs at least 2 trials per batch")
            return R - (R.sum() - R) / (B - 1), baseline
        base = float(R.mean()) if baseline is None else baseline
        return R - base, self.baseline_decay * base + (1.0 - self.baseline_decay) * float(R.mean())

    def gradients(self, model: Any, x: Tensor, y: Tensor, mask: Tensor,
                  loss_fn: LossFn) -> tuple[Tensor, Grads]:
        """``(loss, grads)`` of one batch of noisy trials from ``init_state(model)`` (a first batch: the running
        baseline is its own mean, the seeded generator starts afresh); ``loss`` is the loss of the noisy run."""
        loss, grads, _ = self.update(model, x, y, mask, loss_fn)
        return loss, grads

    def update(self, model: Any, x: Tensor, y: Tensor, mask: Tensor, loss_fn: LossFn,
               state: RuleState | None = None) -> tuple[Tensor, Grads, RuleState]:
        """``(loss, grads, new_state)`` of one batch of noisy trials from the rule ``state`` (running baseline,
        noise generator; ``init_state(model)`` when ``None``). The state passed in is not modified."""
        field_, c_in = self._setup(model)
        state = self.init_state(model) if state is None else state
        gen = state.get("generator")
        if gen is not None:  # advance a copy: the caller's state stays as it was
            g2 = torch.Generator(device=gen.device)
            g2.set_state(gen.get_state())
            gen = g2
        T, B = x.shape[0], x.shape[1]
        N = model.n
        eta = self._noise(model, (T, B, N), gen)
        exact = self.readout == "exact"
        with torch.no_grad():  # one run with the noise injected into v^t (spiking) or h^t (rate)
            mstate = model.init_state(B)  # computed once (a relaxed initial state runs the network)
            out = model(x, state=mstate, record=True, i_ext=eta)
            y_hat = out.y
            rec = out.record
            act, first = (rec.z, mstate.z) if field_ == "v" else (rec.r, mstate.r)
            pre = torch.cat([first[None], act[:-1]])  # presynaptic activity of step t: z^{t-1} or r^{t-1}
            read = rec.z_filt if field_ == "v" else (rec.h if model.readout_from == "h" else rec.r)
        loss, dE_dy = output_error(y_hat, y, mask, loss_fn)
        with torch.no_grad():
            R = self.rewards(y_hat, y, mask, loss_fn)
            delta, base = self.prediction_error(R, state.get("baseline"))
            w = -(delta[None, :, None] * eta * c_in) / (B * self.noise_std ** 2)  # (T, B, N)
            if getattr(model, "synaptic", False):  # W acts through the synaptic current: w̃^t = w^t + α_s w̃^{t+1}
                a_s = model.constants().alpha_syn
                for t in range(T - 2, -1, -1):
                    w[t].addcmul_(a_s.expand(N), w[t + 1])
            ops = weight_ops(model)
            W_rec = model.effective_weights().W_rec.detach()
            dW: dict[str, Tensor] = {"W_rec": ops.edge_outer(w, pre, like=W_rec),
                                     "W_in": DENSE.edge_outer(w, x.to(w.dtype))}
            if model.b_rec is not None:
                dW["b_rec"] = w.sum((0, 1))
            if exact:
                dW["W_out"] = dE_dy.reshape(-1, dE_dy.shape[-1]).T @ read.reshape(-1, N)
                if model.b_out is not None:
                    dW["b_out"] = dE_dy.sum((0, 1))
        return loss, model.param_grads(dW), {"baseline": base, "generator": gen}
