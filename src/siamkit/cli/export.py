"""``siamkit export`` (ONNX) and ``siamkit ensemble`` (runs of one config joined)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from .common import add_command, add_json, add_progress, emit, progress_bars, show_progress

__all__ = ["add_commands"]

logger = logging.getLogger(__name__)


def add_commands(sub: Any) -> None:
    """Register ``export`` and ``ensemble``."""
    x = add_command(sub, "export", "export the encoder and the whole verifier (ONNX), or a "
                                   "text twin as a sentence-transformers model")
    x.add_argument("--model", required=True, help="run folder of a trained model")
    x.add_argument("--format", default="onnx", choices=("onnx", "sentence-transformers"),
                   help="onnx: encoder.onnx + verifier.onnx + predict.py; "
                        "sentence-transformers: a folder SentenceTransformer(path) loads "
                        "(text twins only)")
    x.add_argument("--out", required=True, help="folder to write")
    x.add_argument("--data", help="real inputs for the parity check: a folder-per-class tree "
                                  "of images, or for a text model a pair file (default: "
                                  "random inputs, or a few built-in sentences)")
    x.add_argument("--pair-format", choices=("csv", "tsv", "jsonl", "ditto"),
                   help="format of a text --data pair file (default: from the suffix)")
    x.add_argument("--a", dest="col_a", default="a",
                   help="first text column of a text --data pair file (name or position)")
    x.add_argument("--b", dest="col_b", default="b", help="second text column")
    x.add_argument("--opset", type=int, default=18,
                   help="ONNX opset (18 is the lowest the exporter writes natively)")
    add_progress(x)
    add_json(x)
    x.set_defaults(handler=export)
    e = add_command(sub, "ensemble", "join runs of one config (other seeds) into one model")
    e.add_argument("runs", nargs="+", help="run folders of trained models")
    e.add_argument("--out", required=True, help="run folder to write")
    e.add_argument("--no-calibrate", action="store_true",
                   help="do not fit a threshold on the config's validation split")
    e.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    add_progress(e)
    e.set_defaults(handler=ensemble)


def export(args: argparse.Namespace) -> int:
    """Export to ONNX (or sentence-transformers) and check it against PyTorch."""
    from ..checkpoint import load_model
    from ..export import export_onnx, export_sentence_transformers, parity_inputs

    inputs: Any = None
    if args.data:
        inputs = parity_inputs(load_model(args.model)[0], args.data, args.pair_format,
                               a=args.col_a, b=args.col_b)
    elif args.format == "onnx":
        logger.warning("no --data: checking parity on random inputs")
    if args.format == "sentence-transformers":
        manifest = export_sentence_transformers(args.model, args.out, texts=inputs)
        emit(manifest, args.json,
             f"exported to {args.out}: SentenceTransformer('{args.out}') embeds "
             f"{manifest['parity']['texts']} texts within "
             f"{manifest['parity']['max_embedding_diff']:.1e} of siamkit")
        return 0
    with progress_bars(show_progress(args)) as progress:
        manifest = export_onnx(args.model, args.out, args.opset, inputs, progress=progress)
    p = manifest["parity"]
    same = "identical" if p["decisions_equal"] else "DIFFER"
    written = ", ".join(sorted(f.name for f in Path(args.out).iterdir()))
    kind = "real" if p["real_inputs"] else "random"
    emit(manifest, args.json,
         f"exported to {args.out} ({written}); ONNX Runtime vs PyTorch on {p['inputs']} "
         f"{kind} inputs: embeddings within {p['max_embedding_diff_relative']:.1e} "
         f"(relative), scores within {p['max_score_diff']:.1e}, decisions {same}")
    return 0


def ensemble(args: argparse.Namespace) -> int:
    """Join trained runs into one model (and calibrate its threshold)."""
    from ..checkpoint import read_card, threshold_of
    from ..ensemble import ensemble_runs

    with progress_bars(show_progress(args)) as progress:
        out = ensemble_runs(args.runs, args.out, calibrate=not args.no_calibrate,
                            overwrite=args.overwrite, progress=progress)
    card = read_card(out)
    threshold = threshold_of(card)
    note = (f"threshold {threshold:.4g} from {card['threshold'].get('source', 'the card')}"
            if threshold is not None else "no threshold")
    print(f"joined {len(args.runs)} runs into {out} ({note})")
    return 0
