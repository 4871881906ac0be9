"""Configurations of the curvature experiment (ALGORITHMS.md §9). ``QUICK`` runs in minutes on 2 CPU cores;
``FULL`` is the BiolHessRNN schedule (10 000 BPTT / 16 000 three-factor iterations, Hessian every 250 / 400
iterations, 5 runs) on the same 8x8 sequential-digits stand-in for sequential MNIST."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CurvatureConfig:
    n: int = 128                          # ReLU units, α = exp(−dt/τ) ≈ 4.5e-5 (τ = 0.1 ms, dt = 1 ms)
    rules: tuple = ("bptt", "tbptt_k1", "rflo")  # tbptt_k1 = BiolHessRNN's three-factor rule on an α≈0 net (§6)
    bptt_iterations: int = 800
    other_iterations: int = 1280          # bio-plausible rules get 1.6x the iterations, as in the source
    n_measurements: int = 10              # Hessian measurements per run (evenly spaced)
    lr: float = 0.01                      # plain SGD
    l2: float = 1e-2                      # ½ λ (||W_in||² + ||W_rec||² + ||W_out||²) in the loss and the Hessian
    batch_size: int = 256
    rflo_grad_clip: float = 1.0           # RFLO (random feedback) diverges at lr 0.01 without it; others: none
    seeds: tuple = (0, 1, 2)
    val_trials: int = 256                 # fixed training-split batch for the Hessian
    test_trials: int = 2048               # test-split trials (with replacement) for accuracy
    test_noise_std: float = 0.2           # BiolHessRNN's noisy test set: N(0, 0.2²) per pixel, clipped to [0, 1]
    top_k: int = 3
    trace_samples: int = 30
    threads: int = 1


QUICK = CurvatureConfig()
FULL = CurvatureConfig(bptt_iterations=10_000, other_iterations=16_000, n_measurements=40, seeds=(0, 1, 2, 3, 4))
