"""Command line: ``spikelearn train CONFIG.toml``, ``spikelearn demo``, ``spikelearn info``."""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys

import pandas as pd
import torch

import spikelearn
from spikelearn import connectomes
from spikelearn.build import load_run_file, resolve_measurements, train
from spikelearn.config import ConfigError
from spikelearn.demo import run_demo
from spikelearn.sweep.cli import add_sweep_parser
from spikelearn.train import TrainingDiverged
from spikelearn.validate.cli import add_validate_parser

__all__ = ["main"]


def _cmd_info(args: argparse.Namespace) -> int:
    print(f"spikelearn {spikelearn.__version__}")
    print(f"torch {torch.__version__}; device: {'cuda (' + torch.cuda.get_device_name(0) + ')' if torch.cuda.is_available() else 'cpu'}")
    print("\nconnectomes:")
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(connectomes.available().to_string(index=False))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    cfg, meas = load_run_file(args.config)
    if args.quiet:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, quiet=True))
    hist, _ = train(cfg, out_dir=args.out, resume=args.resume, measurements=resolve_measurements(meas),
                    overwrite=args.overwrite)
    out = args.out or cfg.train.out_dir
    last = hist.dropna(subset=["accuracy"]).tail(1)
    print(last.to_string(index=False))
    print(f"\nwrote {out}/history.csv, model.pt, checkpoint.pt, config.json, settings.json")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    run_demo(out_dir=pathlib.Path(args.out), iterations=args.iterations, quiet=args.quiet)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spikelearn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train from a TOML configuration")
    p.add_argument("config", help="path to the TOML run configuration")
    p.add_argument("--out", default=None, help="output folder (default: [train] out_dir)")
    p.add_argument("--resume", action="store_true", help="continue from the output folder's checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="train into an output folder that already holds a run, replacing it")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch intra-op threads (default: torch's; 1 is fastest for small networks and on a "
                        "machine busy with other jobs, where spinning threads slow small ops down a lot)")
    p.set_defaults(fn=_cmd_train)
    p = sub.add_parser("demo", help="few-minute end-to-end run on the C. elegans connectome")
    p.add_argument("--out", default="demo_out", help="output folder for the table and PNGs")
    p.add_argument("--iterations", type=int, default=None, help="override the demo's iteration budget")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="torch intra-op threads (as for train)")
    p.set_defaults(fn=_cmd_demo)
    p = sub.add_parser("info", help="version, shipped connectomes, torch device")
    p.set_defaults(fn=_cmd_info)
    add_sweep_parser(sub)
    add_validate_parser(sub)
    args = parser.parse_args(argv)
    threads = getattr(args, "threads", None)
    if threads is not None:
        if threads < 1:
            parser.error(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    try:
        return args.fn(args)
    except ConfigError as e:
        print(f"spikelearn: configuration error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"spikelearn: training diverged: {e}", file=sys.stderr)
        return 1
    except FileNotFoundError as e:
        print(f"spikelearn: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
