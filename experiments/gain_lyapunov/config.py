"""Configurations of the initial-gain × rule × flossing experiment (ALGORITHMS.md §7.2–7.3, §10.6).

``QUICK`` runs in minutes on 2 shared CPU cores (short delay, 2 seeds, 400 iterations); ``FULL`` is the intended
study (the ModProp delayed XOR at 1 ms resolution would be 900 steps; here a 20-ms-step version with a longer
delay, 5 seeds, 2000 iterations).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class GainConfig:
    n: int = 64                                   # recurrent units (R1 rate network, tanh)
    gains: tuple = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0)  # W_rec ~ g N(0, 1)/√N (spikelearn.circuit.gaussian)
    rules: tuple = ("bptt", "rflo", "eprop", "mdgl")  # rules absent from RULES or not for rate nets are skipped
    seeds: tuple = (0, 1)
    tau_ms: float = 100.0                         # γ = dt/τ = 0.2
    dt_ms: float = 20.0
    cue_ms: float = 100.0                         # delayed XOR (ModProp §10.6) on a 20-ms grid: 5-step cues
    delay_ms: float = 300.0                       # 15-step delay; T = 25 steps
    iterations: int = 400
    batch_size: int = 32
    lr: float = 3e-3                              # Adam
    grad_clip: float = 1.0
    eval_every: int = 50
    lyap_trials: int = 8                          # λ_max measured on 8 trajectories of this many concatenated trials
    lyap_concat: int = 8
    floss_k: int = 16                             # exponents flossed to 0 (Engelken: 75 of 80)
    floss_concat: int = 4                         # flossing input: 4 concatenated fresh trials (T_p = 100 steps)
    pre_steps: int = 100                          # pre-flossing (autodiff, "developmental" for local rules)
    inter_every: int = 100                        # inter-flossing after every 100th iteration ...
    inter_steps: int = 20                         # ... 20 steps (BPTT: autodiff; local rules: local rule) ...
    inter_max_times: int = 2                      # ... at most twice (only early in training)
    floss_lr: float = 1e-3                        # AdamW (Engelken)
    local_floss_lr: float = 3e-3
    threads: int = 1
    extra: dict = field(default_factory=dict)


QUICK = GainConfig()
FULL = GainConfig(seeds=(0, 1, 2, 3, 4), delay_ms=600.0, iterations=2000, pre_steps=500, inter_every=200,
                  inter_steps=100, n=100, floss_k=50)
