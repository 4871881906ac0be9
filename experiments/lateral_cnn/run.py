"""Accuracy vs Gaussian input noise for a small CNN with and without learned lateral connections (issue 24).

One process, one thread; appends one row per (seed, arm, model, σ) to ``results_<data>.csv`` (resumable: finished
(seed, arm) pairs are skipped) and saves the raw lateral kernels of every run to ``kernels_<data>.npz``.
The design is fixed in README.md ("Pre-registered design").
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import json
import pathlib
import platform
import subprocess
import time
from dataclasses import dataclass

import numpy as np
import torch

from spikelearn.lateral import (
    CoactivationRule,
    LateralCNN,
    accuracy,
    add_noise,
    learn_lateral,
    load_digits_images,
    load_mnist1d,
    train_classifier,
)

HERE = pathlib.Path(__file__).resolve().parent
ARMS = {"none": (0.0, 0.0), "dropout": (0.3, 0.0), "wd": (0.0, 0.1), "dropout+wd": (0.3, 0.1)}


@dataclass(frozen=True)
class Config:
    data: str = "digits"                  # "digits" (2-D) or "mnist1d" (1-D)
    seeds: tuple[int, ...] = tuple(range(100, 110))
    sigmas: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8)
    channels: tuple[int, ...] = (16, 32)
    radius: int = 1                       # lateral offsets |Δ|∞ ≤ r
    lateral_steps: int = 3
    gain: float = 0.5                     # largest total |lateral input| of a post map
    kind: str = "ratio"                   # the rule variant
    inhibition: float = 1.0
    lr: float = 3e-3
    batch_size: int = 64
    epochs_phase1: int = 10               # 30 for mnist1d (set in main)
    epochs_phase3: int = 5                # classifier only, both models


def git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def cpu_name() -> str:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines() if pathlib.Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def load(data: str):
    if data == "digits":
        return load_digits_images(), (1, 8, 8), 3
    return load_mnist1d(), (1, 40), 5


def run_pair(cfg: Config, seed: int, arm: str, split, in_shape, kernel_size):
    """Phases 1–3 for one seed and arm; returns rows for the baseline and the lateral network and the raw kernel."""
    xtr, ytr, xte, yte = split
    dropout, wd = ARMS[arm]
    torch.manual_seed(seed)
    net = LateralCNN(len(in_shape) - 1, in_shape, 10, channels=cfg.channels, kernel_size=kernel_size,
                     radius=cfg.radius, lateral_steps=cfg.lateral_steps, dropout=dropout)
    train_classifier(net, xtr, ytr, epochs=cfg.epochs_phase1, lr=cfg.lr, weight_decay=wd,
                     batch_size=cfg.batch_size, generator=torch.Generator().manual_seed(seed))
    models, W = {}, None
    for name in ("baseline", "lateral"):
        m = copy.deepcopy(net)
        if name == "lateral":
            W, _ = learn_lateral(m, xtr, CoactivationRule(kind=cfg.kind, radius=cfg.radius,
                                                         inhibition=cfg.inhibition), gain=cfg.gain)
        torch.manual_seed(seed + 1)  # same dropout masks and batch order for both
        train_classifier(m, xtr, ytr, epochs=cfg.epochs_phase3, lr=cfg.lr, weight_decay=wd,
                         batch_size=cfg.batch_size, head_only=True, generator=torch.Generator().manual_seed(seed + 1))
        models[name] = m
    rows = []
    for j, sigma in enumerate(cfg.sigmas):
        xn = add_noise(xte, sigma, torch.Generator().manual_seed(10_000 * seed + j))
        for name, m in models.items():
            rows.append(dict(seed=seed, arm=arm, model=name, sigma=sigma, accuracy=accuracy(m, xn, yte)))
    assert W is not None
    return rows, W.numpy()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="digits", choices=["digits", "mnist1d"])
    p.add_argument("--seeds", type=int, nargs="*")
    p.add_argument("--out", type=pathlib.Path, default=HERE)
    p.add_argument("--arms", nargs="*", choices=list(ARMS), default=list(ARMS))
    p.add_argument("--kind", choices=["ratio", "covariance", "pmi"], help="exploratory runs only")
    p.add_argument("--gain", type=float, help="exploratory runs only")
    args = p.parse_args()
    torch.set_num_threads(1)
    cfg = Config(data=args.data, epochs_phase1=10 if args.data == "digits" else 30)
    if args.seeds:
        cfg = dataclasses.replace(cfg, seeds=tuple(args.seeds))
    if args.kind or args.gain is not None:
        cfg = dataclasses.replace(cfg, kind=args.kind or cfg.kind, gain=cfg.gain if args.gain is None else args.gain)
    split, in_shape, kernel_size = load(cfg.data)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"results_{cfg.data}.csv"
    kpath = args.out / f"kernels_{cfg.data}.npz"
    kernels = dict(np.load(kpath)) if kpath.exists() else {}
    done = set()
    if out.exists():
        with open(out) as f:
            done = {(int(r["seed"]), r["arm"]) for r in csv.DictReader(f)}
    meta = dict(commit=git_commit(), machine=f"{cpu_name()}, {platform.system()}",
                torch=torch.__version__, threads=1)
    (args.out / f"config_{cfg.data}.json").write_text(json.dumps({**dataclasses.asdict(cfg), **meta}, indent=1))
    fields = ["seed", "arm", "model", "sigma", "accuracy", "seconds", "commit", "machine"]
    for seed in cfg.seeds:
        for arm in args.arms:
            if (seed, arm) in done:
                continue
            t0 = time.time()
            rows, W = run_pair(cfg, seed, arm, split, in_shape, kernel_size)
            dt = round(time.time() - t0, 1)
            new = not out.exists()
            with open(out, "a", newline="") as f:
                w = csv.DictWriter(f, fieldnames=fields)
                if new:
                    w.writeheader()
                for r in rows:
                    w.writerow({**r, "seconds": dt, "commit": meta["commit"], "machine": meta["machine"]})
            kernels[f"{seed}_{arm}"] = W.astype(np.float32)
            np.savez_compressed(kpath, **kernels)
            base = np.mean([r["accuracy"] for r in rows if r["model"] == "baseline" and 0.1 <= r["sigma"] <= 0.4])
            lat = np.mean([r["accuracy"] for r in rows if r["model"] == "lateral" and 0.1 <= r["sigma"] <= 0.4])
            print(f"{cfg.data} seed {seed} {arm:10s} primary baseline {base:.4f} lateral {lat:.4f} ({dt} s)",
                  flush=True)


if __name__ == "__main__":
    main()
