"""Configurations of the initial-gain × rule × flossing experiment (ALGORITHMS.md §7.2–7.3, §10.6).

``QUICK`` runs in about 10 minutes on one CPU thread (10-ms steps, 1 s delay = 120-step trials, 2 seeds,
300 iterations, short flossing schedules); ``FULL`` is the intended study (5 seeds, 2 s delay = 220 steps,
1500 iterations, N = 100, Engelken-sized flossing schedules) — about 2–3 CPU hours, not run here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GainConfig:
    n: int = 64                                   # recurrent units (R1 rate network, tanh)
    gains: tuple = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0)  # W_rec ~ g N(0, 1)/√N (spikelearn.circuit.gaussian)
    rules: tuple = ("bptt", "rflo", "eprop", "mdgl")  # rules absent from RULES or not for rate nets are skipped
    seeds: tuple = (0, 1)
    tau_ms: float = 100.0                         # γ = dt/τ = 0.1
    dt_ms: float = 10.0
    cue_ms: float = 100.0                         # delayed XOR (ModProp §10.6) on a 10-ms grid: 10-step cues
    delay_ms: float = 1000.0                      # 100-step delay; T = 120 steps
    iterations: int = 300
    batch_size: int = 32
    lr: float = 1e-3                              # Adam (RFLO collapses into saturation at 3e-3)
    grad_clip: float = 1.0
    eval_every: int = 50
    lyap_trials: int = 8                          # λ_max measured on 8 trajectories of this many concatenated trials
    lyap_concat: int = 8
    floss_k: int = 16                             # exponents flossed to 0 (Engelken: 75 of 80)
    floss_concat: int = 1                         # flossing input: 1 fresh trial per step (T_p = 120 steps)
    pre_steps: int = 50                           # pre-flossing (autodiff, "developmental" for local rules)
    inter_every: int = 100                        # inter-flossing after every 100th iteration ...
    inter_steps: int = 10                         # ... 10 steps (BPTT: autodiff; local rules: local rule) ...
    inter_max_times: int = 2                      # ... at most twice (only early in training)
    floss_lr: float = 1e-3                        # AdamW (Engelken)
    local_floss_lr: float = 3e-3
    threads: int = 1


QUICK = GainConfig()
FULL = GainConfig(n=100, seeds=(0, 1, 2, 3, 4), delay_ms=2000.0, iterations=1500, pre_steps=500, inter_every=100,
                  inter_steps=50, floss_k=75, floss_concat=1)
