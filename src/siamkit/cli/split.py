"""``siamkit split``: group-disjoint train / val / test splits, and leakage checks."""

from __future__ import annotations

import argparse
from typing import Any

from .common import CommandError, add_command, add_text_columns, emit, pair_columns

__all__ = ["add_split"]

LEAK = 3  # exit code of a leakage check that finds more than --max-leaks


def add_split(sub: Any) -> None:
    """Register ``split``."""
    s = add_command(sub, "split", "group-disjoint train/val/test split, or a leakage check")
    s.add_argument("--data", help="folder-per-class tree to split, or a class-labelled "
                                  "table (CSV/TSV/JSONL; --label names its class column)")
    s.add_argument("--group-depth", type=int, default=0, choices=(0, 1),
                   help="1: groups are FOLDER/<group>/ (e.g. writers, alphabets); 0: classes")
    s.add_argument("--group-pattern", default=None,
                   help=r"regex on class names whose group 1 is the group, e.g. '^(\d+)' "
                        "(default: groups are classes, or folders with --group-depth 1)")
    s.add_argument("--out", help="split file to write (JSON of train/val/test groups)")
    s.add_argument("--val", type=float, default=0.15, help="fraction of groups for validation")
    s.add_argument("--test", type=float, default=0.15, help="fraction of groups for test")
    s.add_argument("--seed", type=int, default=0, help="which groups go where")
    s.add_argument("--check", action="store_true",
                   help="report test images with a near-duplicate in train, and shared groups")
    s.add_argument("--split", help="with --check: the split file of --data to check")
    s.add_argument("--train", help="with --check: training folder (instead of --split)")
    s.add_argument("--test-dir", help="with --check: test folder (instead of --split)")
    s.add_argument("--max-distance", type=int, default=4,
                   help="near-duplicate: at most this many of 64 hash bits differ")
    s.add_argument("--max-leaks", type=int, default=0,
                   help="exit non-zero when more test items than this have a near-duplicate")
    t = s.add_argument_group("text pairs (duplicate groups = connected components of "
                             "positive pairs)")
    t.add_argument("--pairs", help="labelled pair file to split; --out is then a folder that "
                                   "gets train.csv, val.csv, test.csv (columns a, b, label: "
                                   "the defaults of --a, --b, --label) and split.json")
    t.add_argument("--train-pairs", help="with --check: training pair file")
    t.add_argument("--test-pairs", help="with --check: test (or validation) pair file")
    add_text_columns(t)
    t.add_argument("--positive-label", default="1", help="label value meaning 'same'")
    t.add_argument("--link-negatives", choices=("auto", "always", "never"), default="auto",
                   help="negative pairs also join groups, so none is dropped (auto: unless "
                        "that makes one group of over half the pairs)")
    t.add_argument("--min-similarity", type=float, default=0.8,
                   help="near-duplicate texts: estimated Jaccard of word 3-grams at least this")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(handler=split)


def split(args: argparse.Namespace) -> int:
    """Write a split file (or split a pair file), or check one for leakage."""
    if args.check:
        if args.train_pairs or args.test_pairs:
            return _check_text(args)
        return _check_images(args)
    if args.pairs:
        return _split_text(args)
    if not args.data or not args.out:
        raise CommandError("siamkit split needs --data and --out (or --check)")
    from ..data.splitfiles import write_split

    record = write_split(args.data, args.out, group_depth=args.group_depth,
                         group_pattern=args.group_pattern, val=args.val, test=args.test,
                         seed=args.seed, label_column=args.col_label)
    items = "rows" if "rows" in record else "images"
    emit(record, args.json, "; ".join(f"{k}: {len(record[k])} groups, {record[items][k]} "
                                      f"{items}" for k in ("test", "val", "train"))
         + f" -> {args.out}")
    return 0


def _check_images(args: argparse.Namespace) -> int:
    from ..data.leakage import folder_leakage, split_leakage
    from ..data.splitfiles import SplitFile

    options = {"max_distance": args.max_distance, "max_leaks": args.max_leaks,
               "group_depth": args.group_depth, "group_pattern": args.group_pattern}
    if args.split:
        if not args.data:
            raise CommandError("--check --split needs --data, the folder the split describes")
        report = split_leakage(args.data, SplitFile.read(args.split), **options)
    elif args.train and args.test_dir:
        report = folder_leakage(args.train, args.test_dir, **options)
    else:
        raise CommandError("--check needs --split (with --data) or --train and --test-dir")
    side = "val and test" if args.split else "test"  # a split file's val groups are held out too
    lines = [f"{report['near_duplicates']} of {report['test_images']} {side} images have a "
             f"near-duplicate in train (<= {args.max_distance} bits of 64); "
             f"{len(report['shared_groups'])} groups on both sides"]
    lines += [f"  {e['test']}  ~  {e['train']}  ({e['bits']} bits)" for e in report["examples"]]
    emit(report, args.json, "\n".join(lines))
    return 0 if report["ok"] else LEAK


def _split_text(args: argparse.Namespace) -> int:
    from ..data.splitfiles import write_text_split

    if not args.out:
        raise CommandError("siamkit split --pairs needs --out, a folder for the split files")
    record = write_text_split(pair_columns(args).read(args.pairs), args.pairs, args.out,
                              args.val, args.test, args.seed, args.link_negatives)
    summary = "; ".join(f"{k}: {v['pairs']} pairs ({v['positives']} same)"
                        for k, v in record.items() if isinstance(v, dict))
    emit(record, args.json, f"{summary}; {record['dropped_cross_split_negatives']} negative "
                            f"pairs across splits dropped -> {args.out}")
    return 0


def _check_text(args: argparse.Namespace) -> int:
    from ..data.leakage import text_leakage

    if not (args.train_pairs and args.test_pairs):
        raise CommandError("--check on text needs both --train-pairs and --test-pairs")
    columns = pair_columns(args)
    report = text_leakage(columns.read(args.train_pairs).texts,
                          columns.read(args.test_pairs).texts, args.min_similarity,
                          args.max_leaks)
    lines = [f"{report['near_duplicates']} of {report['test_texts']} test texts have a "
             f"near-duplicate in train ({report['exact_after_normalisation']} equal after "
             f"normalisation; others MinHash >= {args.min_similarity})"]
    lines += [f"  {e['test'][:60]!r}  ~  {e['train'][:60]!r}  ({e['similarity']})"
              for e in report["examples"]]
    emit(report, args.json, "\n".join(lines))
    return 0 if report["ok"] else LEAK
