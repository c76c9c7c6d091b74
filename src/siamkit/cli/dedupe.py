"""``siamkit dedupe``: duplicate texts in a corpus, clustered."""

from __future__ import annotations

import argparse
from typing import Any

from .common import add_command, add_json, add_progress, emit, progress_bars, show_progress

__all__ = ["add_dedupe"]


def add_dedupe(sub: Any) -> None:
    """Register ``dedupe``."""
    d = add_command(sub, "dedupe", "find duplicate texts in a corpus and cluster them")
    d.add_argument("--model", required=True, help="run folder of a text model")
    d.add_argument("--input", required=True, help="CSV, TSV or JSONL corpus")
    d.add_argument("--column", default="text", help="text column (name, or 0-based position "
                                                    "for a file without a header)")
    d.add_argument("--format", dest="pair_format", choices=("csv", "tsv", "jsonl"),
                   help="corpus format (default: from the suffix)")
    d.add_argument("--threshold", type=float, default=None,
                   help="duplicate threshold (default: the model's calibrated threshold)")
    d.add_argument("--out", required=True, help="CSV of duplicate pairs to write")
    d.add_argument("--skip-empty", action="store_true", help="skip empty texts instead of "
                                                             "stopping")
    d.add_argument("--max-pairs", type=int, default=20_000_000,
                   help="stop when more pairs than this pass the threshold")
    add_progress(d)
    add_json(d)
    d.set_defaults(handler=dedupe)


def dedupe(args: argparse.Namespace) -> int:
    """Find the duplicates of a corpus at a threshold and write them as CSV."""
    from ..checkpoint import load_model, require_calibrator
    from ..dedupe import dedupe_file

    model, _, card = load_model(args.model)
    threshold = args.threshold
    if threshold is None:
        threshold = require_calibrator(card, args.model, "give --threshold").threshold_
    with progress_bars(show_progress(args)) as progress:
        res = dedupe_file(model, args.input, args.out, threshold, args.column,
                          args.pair_format, args.skip_empty, args.max_pairs, progress)
    emit(res, args.json, f"{res['texts']} texts: {res['pairs']} duplicate pairs in "
                         f"{res['clusters']} clusters (threshold {threshold:.4g}) -> "
                         f"{res['out']}")
    return 0
