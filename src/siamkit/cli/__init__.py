"""The ``siamkit`` command line: thin handlers over the library, one module per command
group. A handler parses its flags, calls public library functions and prints; this module
builds the parser, sets up logging and turns errors into one line for the user."""

from __future__ import annotations

import argparse
import logging
import sys

from ..allocator import keep_freed_memory
from . import dedupe, evaluate, export, gallery, serve, split, train, verification
from .common import CommandError, HelpFormatter

__all__ = ["main", "build_parser"]

COMMANDS = ("{train,eval,calibrate,verify,split,report,enroll,identify,remove,serve,export,"
            "dedupe,ensemble,demo,config}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``siamkit`` command."""
    from .. import __version__

    parser = argparse.ArgumentParser(prog="siamkit", formatter_class=HelpFormatter,
                                     description="Siamese networks for verification and "
                                                 "one-shot recognition.")
    parser.add_argument("--version", action="version", version=f"siamkit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--quiet", action="store_true",
                        help="only warnings and errors, no progress bars")
    sub = parser.add_subparsers(dest="command", metavar=COMMANDS)
    sub.required = True
    train.add_train(sub)
    eval_sub = evaluate.add_eval(sub)
    verification.add_commands(sub, eval_sub)
    split.add_split(sub)
    gallery.add_commands(sub)
    serve.add_serve(sub)
    export.add_commands(sub)
    dedupe.add_dedupe(sub)
    train.add_demo(sub)
    train.add_config(sub)
    return parser


def _setup_logging(debug: bool, quiet: bool) -> None:
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    if not debug:  # other libraries' start-up chatter (faiss: "Loading faiss with AVX2 ...")
        for name in ("faiss", "faiss.loader", "httpx", "sentence_transformers"):
            logging.getLogger(name).setLevel(logging.WARNING)


def _user_errors() -> tuple[type[BaseException], ...]:
    """The errors that are the user's to fix, printed as one line: siamkit's own types."""
    from ..checkpoint import RunError
    from ..config import ConfigError
    from ..data.download import DatasetError
    from ..export import ExportError
    from ..gallery import GalleryError
    from ..training.state import StateError

    return (ConfigError, RunError, DatasetError, GalleryError, ExportError, StateError,
            FileNotFoundError, CommandError)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``siamkit`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    _setup_logging(args.debug, args.quiet)
    keep_freed_memory()  # large embedding batches are not page-faulted in again each time
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("siamkit: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one clear line for the user; the traceback with --debug
        if args.debug:
            raise
        if isinstance(exc, _user_errors()):
            print(f"siamkit: error: {exc}", file=sys.stderr)
        else:  # a bug, most likely: say so, and how to see where
            print(f"siamkit: unexpected error ({type(exc).__name__}): {exc} (rerun with "
                  f"--debug for the traceback)", file=sys.stderr)
        return 1
