"""``siamkit train`` and ``siamkit demo``."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from .common import add_command, add_progress, progress_bars, show_progress, training_errors

__all__ = ["add_train", "add_demo"]


def add_train(sub: Any) -> None:
    """Register ``train``."""
    p = add_command(sub, "train", "train a Siamese network from a config")
    p.add_argument("--config", required=True, help="YAML config file")
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. optim.lr=3e-4 (repeatable)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the run folder's saved state")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    add_progress(p)
    p.set_defaults(handler=run_train)


def add_demo(sub: Any) -> None:
    """Register ``demo``."""
    d = add_command(sub, "demo", "train on Omniglot's background set, test on Lake's runs")
    d.add_argument("--out", default="runs/demo", help="run folder (replaced on every demo)")
    d.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value of the demo's config (repeatable)")
    add_progress(d)
    d.set_defaults(handler=run_demo)


def run_train(args: argparse.Namespace) -> int:
    """Train from a config; under torchrun only rank 0 reports."""
    from ..config import load_config
    from ..training import train
    from ..training.distributed import DistInfo, cleanup

    rank = int(os.environ.get("RANK", "0"))
    if rank != 0:
        logging.getLogger().setLevel(logging.WARNING)
    config = load_config(args.config, args.overrides)
    with training_errors():
        res = train(config, args.out, resume=args.resume, progress=show_progress(args),
                    overwrite=args.overwrite)
    cleanup(DistInfo(rank, int(os.environ.get("WORLD_SIZE", "1"))))
    if rank != 0:
        return 0
    if res.metric_name is None:
        best = "no validation set: the last model is kept"
    else:
        best = (f"best validation {res.metric_name} {res.best_metric:.4f} at step "
                f"{res.best_step}")
        if res.start_metric is not None:
            best += f" (step 0: {res.start_metric:.4f})"
    print(f"trained {res.steps} steps in {res.minutes:.1f} min ({res.items_per_second:.0f} "
          f"items/s); {best}; model in {res.run_dir}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    """Train the demo preset and test it on Lake's runs."""
    from .. import demo

    with training_errors(), progress_bars(show_progress(args)) as progress:
        res = demo.run_demo(args.out, args.overrides, progress=show_progress(args),
                            runs_progress=progress)
    print(f"Omniglot 20-way one-shot (Lake's 20 runs, 400 queries): error "
          f"{100 * res['error']:.2f}%  [Koch et al. 8.0%, people 4.5%, BPL 3.3%]\n"
          f"trained {res['train_minutes']:.1f} min, {res['images_per_second']:.0f} images/s; "
          f"results in {Path(args.out) / demo.RESULTS}")
    return 0
