"""``spikelearn validate RUN_DIR`` (registered by spikelearn.cli; must not import brian2 at import time: the
Brian2 bridge imports it when it runs).

Loads ``RUN_DIR/model.pt`` and the task of ``RUN_DIR/config.json``, samples evaluation trials, runs the model in
spikelearn and in Brian2 (float64) and prints the report and its one-line verdict. Exit code 0 when the spikes are
identical and the membrane/output differences are within ``--atol``, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import torch

from spikelearn.build import build_task
from spikelearn.config import config_from_dict
from spikelearn.models import load
from spikelearn.validate.brian2 import UnsupportedFeatureError, compare_with_brian2


def _cmd_validate(args: argparse.Namespace) -> int:
    run = pathlib.Path(args.run_dir)
    model_path = run / "model.pt"
    if not model_path.exists():
        print(f"spikelearn validate: {model_path} not found (train a run first)", file=sys.stderr)
        return 2
    model = load(model_path)
    task = y = mask = None
    cfg_path = run / "config.json"
    if cfg_path.exists():
        cfg = config_from_dict(json.loads(cfg_path.read_text()))
        task = build_task(cfg)
        gen = torch.Generator().manual_seed(args.seed)
        x, y, mask = task.sample(args.trials, gen, dtype=torch.float64)
    else:
        print(f"spikelearn validate: no config.json in {run}; using Bernoulli 20 Hz input, no accuracy",
              file=sys.stderr)
        gen = torch.Generator().manual_seed(args.seed)
        x = (torch.rand(args.steps, args.trials, model.n_in, generator=gen, dtype=torch.float64)
             < 0.02 * model.dt_ms).to(torch.float64)
    try:
        rep = compare_with_brian2(model, x, task=task, y=y, mask=mask, target=args.target,
                                  build_dir=args.build_dir, atol=args.atol)
    except UnsupportedFeatureError as e:
        print(f"spikelearn validate: cannot export to Brian2: {e}", file=sys.stderr)
        return 2
    print(rep)
    if args.out:
        rep.frame.to_csv(args.out, index=False)
        print(f"wrote {args.out}")
    return 0 if rep.ok else 1


def add_validate_parser(subparsers) -> None:
    """Register the ``validate`` command."""
    p = subparsers.add_parser("validate", help="run a trained spiking model in Brian2 and compare with spikelearn")
    p.add_argument("run_dir", help="run folder with model.pt (and config.json for the task)")
    p.add_argument("--trials", type=int, default=64, help="number of evaluation trials (default 64)")
    p.add_argument("--steps", type=int, default=500, help="steps of random input when there is no config.json")
    p.add_argument("--seed", type=int, default=0, help="seed of the trial generator")
    p.add_argument("--target", default="numpy", choices=("numpy", "cython", "cpp_standalone"),
                   help="Brian2 code-generation target (default numpy: no compiler)")
    p.add_argument("--build-dir", default=None, help="folder for compiled code (cython / cpp_standalone)")
    p.add_argument("--atol", type=float, default=1e-9, help="tolerance on membrane and output differences")
    p.add_argument("--out", default=None, help="write the per-neuron table to this CSV file")
    p.set_defaults(fn=_cmd_validate)
