"""Configurations of the rank / rich-vs-lazy experiment (ALGORITHMS.md §8). ``QUICK`` runs in minutes on 2 CPU
cores; ``QUICK_LONG`` trains BPTT 4000 iterations so that every init (connectomes included) learns; ``FULL`` is
the published set-up (BioRNN_RichLazy ``main.py``: N = 300, 10 000 SGD+momentum iterations)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RankConfig:
    n: int = 100                          # recurrent units (C. elegans keeps its own 279)
    ranks: tuple = (1, 6, 30, 100)        # ranks of the SVD-truncated Gaussian inits (n = full rank)
    aligned_rank: int = 6                 # task-aligned low-rank init spanned by W_in and W_outᵀ (0 = none)
    connectomes: tuple = ("mouse_v1", "celegans_varshney2011")
    rules: tuple = ("bptt", "rflo")       # names in spikelearn.rules.RULES (missing ones are skipped)
    task: str = "delayed_match_to_sample"
    sigma0: float = 1.25                  # W0 = σ0 G/√N, the norm every init is matched to
    norm: str = "frobenius"               # norm matching: "frobenius" (paper) or "spectral"
    iterations: int = 1500
    lr: float = 1e-2                      # SGD with momentum
    momentum: float = 0.9
    batch_size: int = 32
    grad_clip: float = 1.0                # 0 = none (paper); RFLO diverges at lr 1e-2 without it
    seeds: tuple = (0, 1, 2)
    probe_trials: int = 320               # representation probe (10 batches of 32)
    kernel_trials: int = 32               # tangent kernel: 8 steps x 32 trials x 3 outputs = 768 x 768
    threads: int = 1


QUICK = RankConfig()
QUICK_LONG = RankConfig(iterations=4000, rules=("bptt",))  # every init, connectomes included, learns the task
FULL = RankConfig(n=300, ranks=(1, 30, 100, 300), iterations=10_000, lr=3e-3, seeds=(0, 1, 2, 3, 4))
