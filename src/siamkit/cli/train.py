"""``siamkit train`` and ``siamkit demo``."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from .common import (
    add_command,
    add_progress,
    add_text_columns,
    progress_bars,
    show_progress,
    training_errors,
)

__all__ = ["add_train", "add_demo", "add_config", "data_sources", "resolve_config"]

TRAINED_CONFIG = "train_config.yaml"  # the resolved config, beside the run's card


def data_sources(p: Any, config: bool = True) -> None:
    """The ways to say what to train on: a config (unless not ``config``), a folder, a
    pair file."""
    src = p.add_mutually_exclusive_group(required=True)
    if config:
        src.add_argument("--config", help="a YAML config file, or the name of a packaged "
                                          "one (omniglot, att_faces, signatures, stsb, mrpc, "
                                          "...)")
    src.add_argument("--data", help="a folder of images, one sub-folder per class: a config "
                                    "is chosen from the images")
    src.add_argument("--pairs", help="a file of text pairs (CSV, TSV, JSONL, Ditto): a text "
                                     "twin config is chosen from the pairs (--a, --b, "
                                     "--label or --score name the columns)")
    cols = p.add_argument_group("with --pairs")
    add_text_columns(cols)
    cols.add_argument("--val", help="validation pair file (needed for graded pairs; "
                                    "default: whole duplicate groups carved out of --pairs)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. optim.lr=3e-4 (repeatable)")


def resolve_config(args: argparse.Namespace) -> tuple[Any, list[str]]:
    """(the config, the lines saying what was chosen from the data) for ``--config``,
    ``--data`` or ``--pairs``."""
    from ..config import load_config
    from ..starter import folder_config, pairs_config

    if args.config:
        return load_config(args.config, args.overrides), []
    if args.data:
        return folder_config(args.data, args.overrides)
    label = None if args.col_score else args.col_label
    return pairs_config(args.pairs, args.col_a, args.col_b, label, args.col_score,
                        args.pair_format, args.val, overrides=args.overrides)


def add_train(sub: Any) -> None:
    """Register ``train``."""
    p = add_command(sub, "train", "train a Siamese network: from a config, or from your own "
                                  "folder of images or file of pairs (a config is chosen)")
    data_sources(p)
    p.add_argument("--out", required=True, help="run folder to write")
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
    from ..config import config_to_yaml
    from ..training import train
    from ..training.distributed import DistInfo, cleanup

    rank = int(os.environ.get("RANK", "0"))
    if rank != 0:
        logging.getLogger().setLevel(logging.WARNING)
    config, notes = resolve_config(args)
    if notes and rank == 0:
        print("\n".join(["chosen from the data:", *(f"  {n}" for n in notes)]), flush=True)
    with training_errors():
        res = train(config, args.out, resume=args.resume, progress=show_progress(args),
                    overwrite=args.overwrite)
    cleanup(DistInfo(rank, int(os.environ.get("WORLD_SIZE", "1"))))
    if rank != 0:
        return 0
    (Path(args.out) / TRAINED_CONFIG).write_text(config_to_yaml(config, notes))
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


def add_config(sub: Any) -> None:
    """Register ``config show`` and ``config init``."""
    c = add_command(sub, "config", "print a resolved config, or write a starting one")
    cs = c.add_subparsers(dest="config_command", metavar="{show,init}")
    cs.required = True
    show = add_command(cs, "show", "print the resolved config (a file or packaged config, "
                                   "with --set applied; the defaults without --config)")
    show.add_argument("--config", help="a YAML config file or a packaged config's name")
    show.add_argument("--set", dest="overrides", action="append", default=[],
                      metavar="KEY=VALUE", help="override a config value (repeatable)")
    show.set_defaults(handler=show_config)
    init = add_command(cs, "init", "write a starting config chosen from your data")
    data_sources(init, config=False)
    init.set_defaults(config=None)
    init.add_argument("--out", help="YAML file to write (default: print it)")
    init.set_defaults(handler=init_config)


def show_config(args: argparse.Namespace) -> int:
    """Print a config as YAML."""
    from ..config import config_to_yaml, load_config

    print(config_to_yaml(load_config(args.config, args.overrides)), end="")
    return 0


def init_config(args: argparse.Namespace) -> int:
    """Write (or print) the config ``train --data`` / ``--pairs`` would choose."""
    from ..config import config_to_yaml

    config, notes = resolve_config(args)
    text = config_to_yaml(config, notes)
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}: train with siamkit train --config {args.out} --out RUN")
    else:
        print(text, end="")
    return 0
