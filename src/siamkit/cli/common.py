"""What the command modules share: argparse helpers, progress bars, printing results."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["CommandError", "HelpFormatter", "add_command", "positive_int", "port_number",
           "positive_float", "finite_float", "json_object", "add_json", "add_progress",
           "add_text_columns", "pair_columns", "emit", "progress_bars", "show_progress",
           "training_errors"]


class CommandError(Exception):
    """A mistake reported to the user as one line (exit 1): flags that do not go together,
    which argparse cannot tell, or a bad value the training library reports as a bare
    ValueError (:func:`training_errors`)."""


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, as ArgumentDefaultsHelpFormatter does,
    except where there is nothing to show (None, a flag that is off): the help text itself
    says what happens then."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        nothing = default is None or default is False or default == argparse.SUPPRESS
        if nothing or "%(default)" in text:  # 0 is shown: 0 == False, but it is a value
            return action.help
        return f"{text} (default: %(default)s)"


def add_command(sub: Any, name: str, help: str) -> argparse.ArgumentParser:
    """A subcommand whose help shows the defaults."""
    return sub.add_parser(name, help=help, description=help, formatter_class=HelpFormatter)


# ---------------------------------------------------------------- argparse value types


def _whole_number(text: str, low: int, high: int | None, what: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < low or (high is not None and n > high):
        raise argparse.ArgumentTypeError(f"{n}: {what}")
    return n


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    return _whole_number(text, 1, None, "give at least 1")


def port_number(text: str) -> int:
    """argparse type: a TCP port, 0 (any free port) to 65535."""
    return _whole_number(text, 0, 65535, "a port is 0 (any free port) to 65535")


def finite_float(text: str) -> float:
    """argparse type: a finite number (not nan or inf)."""
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"{text}: give a finite number")
    return x


def positive_float(text: str) -> float:
    """argparse type: a finite number above 0."""
    x = finite_float(text)
    if x <= 0:
        raise argparse.ArgumentTypeError(f"{text}: give a number above 0")
    return x


def json_object(text: str | None, flag: str) -> dict[str, Any] | None:
    """The JSON object given to ``flag`` (None when not given)."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(f"{flag} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CommandError(f"{flag} must be a JSON object")
    return value


# ---------------------------------------------------------------- shared flags


def add_json(p: argparse.ArgumentParser) -> None:
    """``--json``: print the result as JSON."""
    p.add_argument("--json", action="store_true", help="print JSON")


def add_progress(p: argparse.ArgumentParser) -> None:
    """``--no-progress``: no progress bars (they are off anyway when stderr is not a
    terminal, or with --quiet)."""
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (also off with --quiet or when stderr is not a "
                        "terminal)")


def add_text_columns(p: Any, scores: bool = True) -> None:
    """The flags every pair file reader takes."""
    p.add_argument("--format", dest="pair_format", choices=("csv", "tsv", "jsonl", "ditto"),
                   help="pair file format (default: from the suffix; ditto: DeepMatcher / "
                        "Ditto 'COL attr VAL value' records)")
    p.add_argument("--a", dest="col_a", default="a", help="first text column (name or 0-based "
                                                           "position)")
    p.add_argument("--b", dest="col_b", default="b", help="second text column")
    p.add_argument("--label", dest="col_label", default="label", help="label column")
    if scores:
        p.add_argument("--score", dest="col_score", default=None,
                       help="graded score column (instead of a label)")


def pair_columns(args: argparse.Namespace) -> Any:
    """How the flags of :func:`add_text_columns` say to read a pair file."""
    from ..pairsets import PairFileColumns

    return PairFileColumns(args.pair_format, args.col_a, args.col_b, args.col_label,
                           getattr(args, "col_score", None),
                           getattr(args, "positive_label", "1"))


# ---------------------------------------------------------------- output


def emit(result: dict[str, Any], as_json: bool, summary: str) -> None:
    """Print ``result`` as JSON, or the one-paragraph ``summary``."""
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        print(summary)


def show_progress(args: argparse.Namespace) -> bool:
    """Whether to draw progress bars: stderr is a terminal, no --quiet, no --no-progress."""
    return (not getattr(args, "quiet", False) and not getattr(args, "no_progress", False)
            and sys.stderr.isatty())


class _Bars:
    """A :data:`siamkit.progress.Progress` drawing one tqdm bar per stage on stderr."""

    def __init__(self) -> None:
        self.bar: Any = None

    def __call__(self, stage: str, total: int | None) -> Any:
        from tqdm import tqdm

        self.close()
        self.bar = tqdm(total=total, desc=stage, dynamic_ncols=True, leave=False,
                        file=sys.stderr)
        return self.bar.update

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@contextmanager
def progress_bars(enabled: bool) -> Iterator[Any]:
    """The progress callback to give library functions (:mod:`siamkit.progress`): tqdm
    bars on stderr when ``enabled`` (see :func:`show_progress`), else None; the last bar is
    closed on leaving."""
    if not enabled:
        yield None
        return
    bars = _Bars()
    try:
        yield bars
    finally:
        bars.close()


@contextmanager
def training_errors() -> Iterator[None]:
    """Training still reports some mistakes in the data or config as a bare ValueError
    (a class too small for a positive pair, embeddings that overflow at step 1): the one
    place those become a one-line error. Elsewhere a ValueError is a bug and shows as one."""
    try:
        yield
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
