"""The ``siamkit`` command line: train, eval, calibrate, verify, demo."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["main", "build_parser"]

logger = logging.getLogger("siamkit")


class CLIError(Exception):
    """An error reported to the user as one line, without a traceback."""


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a Siamese network from a config")
    p.add_argument("--config", required=True, help="YAML config file")
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. optim.lr=3e-4 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/state.pt")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_eval(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    p = sub.add_parser("eval", help="evaluate a trained model")
    es = p.add_subparsers(dest="eval_command",
                          metavar="{omniglot-runs,episodes,verification,similarity,retrieval,"
                                  "identification}")
    es.required = True
    r = es.add_parser("omniglot-runs", help="Lake's 20 within-alphabet 20-way one-shot runs")
    r.add_argument("--model", required=True, help="run folder of a trained model")
    r.add_argument("--tta", type=int, default=None,
                   help="test-time augmentation views (default: the model's config)")
    r.add_argument("--json", action="store_true", help="print JSON")
    e = es.add_parser("episodes", help="N-way K-shot episodes on a folder-per-class tree")
    e.add_argument("--model", required=True, help="run folder of a trained model")
    e.add_argument("--data", required=True, help="folder-per-class tree; for a tabular (MLP) "
                   "model, sklearn:digits or the table file (data.dataset=table)")
    e.add_argument("--split", help="split file: keep only the classes (groups) of --subset")
    e.add_argument("--subset", default="test", choices=("train", "val", "test"))
    e.add_argument("--way", type=int, required=True, help="classes per episode (N)")
    e.add_argument("--shot", type=int, required=True, help="support examples per class (K)")
    e.add_argument("--queries", type=int, default=1, help="queries per class (Q)")
    e.add_argument("--episodes", type=int, default=600)
    e.add_argument("--group-depth", type=int, default=0, choices=(0, 1),
                   help="1: classes are FOLDER/<group>/<class>, and episodes stay in a group")
    e.add_argument("--drawer-pattern", default=None,
                   help="regex whose group 1, on the file name, is the drawer; support and "
                        r"queries then come from different drawers (Omniglot: '_(\d+)\.png$')")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--tta", type=int, default=None, help="test-time augmentation views")
    e.add_argument("--json", action="store_true", help="print JSON")
    return es


def _positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n}: give at least 1")
    return n


def _add_pair_source(p: argparse.ArgumentParser, default_subset: str = "test"
                     ) -> argparse._MutuallyExclusiveGroup:
    p.add_argument("--model", required=True, help="run folder of a trained model")
    p.add_argument("--data", help="folder the images (and pair paths) are in (image models); "
                                  "a tabular model's table file, or sklearn:digits")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pairs", help="image models: CSV of a,b,label rows (header optional), "
                                     "paths relative to --data; text models: a pair file "
                                     "(see --format, --a, --b, --label)")
    src.add_argument("--all-pairs", action="store_true",
                     help="every pair of images of the folder-per-class tree --data "
                          "(same folder = same), or of rows of a table (same class = same)")
    src.add_argument("--skilled-pairs", action="store_true",
                     help="within each --group-pattern group: genuine-genuine pairs (same) "
                          "and genuine-forgery pairs (different); the genuine class is the "
                          "one named like its group (001 vs 001_forg)")
    p.add_argument("--positive-label", default="1",
                   help="label value meaning 'same' in --pairs or --scores (default 1)")
    p.add_argument("--split", help="split file (siamkit split): keep only pairs whose two "
                                   "images are in groups of --subset")
    p.add_argument("--subset", default=default_subset, choices=("train", "val", "test"),
                   help=f"which groups of --split to keep (default {default_subset})")
    p.add_argument("--group-pattern", default=None,
                   help="regex on an image's folder name whose group 1 is its group "
                        r"(e.g. '^(\d+)' puts 001 and 001_forg in writer 001)")
    p.add_argument("--tta", type=int, default=None,
                   help="test-time augmentation views (default: the model's eval.tta, which "
                        "its stored threshold was calibrated with)")
    _add_text_columns(p.add_argument_group("text and record pair files"), scores=False)
    p.add_argument("--json", action="store_true", help="print JSON")
    return src


def _add_verification(sub: argparse._SubParsersAction, eval_sub: argparse._SubParsersAction
                      ) -> None:
    c = sub.add_parser("calibrate", help="fit the decision threshold on validation pairs")
    _add_pair_source(c, default_subset="val").add_argument(
        "--scores", help="CSV with columns score and label (1 = same, or --positive-label): "
                         "validation scores computed elsewhere the way this model scores, "
                         "e.g. the out-of-fold scores of benchmarks/group_cv.py for a model "
                         "refitted on all non-test groups")
    c.add_argument("--allow-test", action="store_true",
                   help="permit calibrating on the test subset of --split (not advised)")
    c.add_argument("--target", default="eer",
                   help="eer, accuracy, far=<max FAR> or precision=<min precision>")
    v = sub.add_parser("verify", help="are two images (or texts) of the same class?")
    v.add_argument("--model", required=True, help="run folder of a calibrated model")
    v.add_argument("a", help="first image (a text model: the first text)")
    v.add_argument("b", help="second image (or text)")
    v.add_argument("--json", action="store_true", help="print JSON")
    e = eval_sub.add_parser("verification", help="verification metrics at the frozen threshold")
    _add_pair_source(e)
    e.add_argument("--ci", type=int, nargs="?", const=1000, default=0, metavar="RESAMPLES",
                   help="add bootstrap 95%% intervals for AUC, EER, accuracy and F1 "
                        "(default 1000 resamples of the pairs)")
    s = eval_sub.add_parser("similarity", help="Spearman / Pearson of a text model's "
                                               "similarity against graded pair scores")
    s.add_argument("--model", required=True, help="run folder of a text model")
    s.add_argument("--pairs", required=True, help="graded pair file (e.g. STS-B)")
    _add_text_columns(s)
    s.set_defaults(col_score="score")
    s.add_argument("--json", action="store_true", help="print JSON")
    r = eval_sub.add_parser("retrieval", help="leave-one-out retrieval: Recall@K, MAP@R, MRR")
    r.add_argument("--model", required=True, help="run folder of a trained model")
    r.add_argument("--data", required=True, help="folder-per-class tree, or a tabular model's "
                                                 "table file (queries search all other items)")
    r.add_argument("--k", type=int, nargs="+", default=[1, 5, 10], help="K values of Recall@K")
    r.add_argument("--split", help="split file: keep only the classes of --subset")
    r.add_argument("--subset", default="test", choices=("train", "val", "test"))
    r.add_argument("--tta", type=int, default=None, help="test-time augmentation views")
    r.add_argument("--json", action="store_true", help="print JSON")


def _add_split(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("split", help="group-disjoint train/val/test split, or a leakage check")
    s.add_argument("--data", help="folder-per-class tree to split, or a class-labelled "
                                  "table (CSV/TSV/JSONL; --label names its class column)")
    s.add_argument("--group-depth", type=int, default=0, choices=(0, 1),
                   help="1: groups are FOLDER/<group>/ (e.g. writers, alphabets); 0: classes")
    s.add_argument("--group-pattern", default=None,
                   help=r"regex on class names whose group 1 is the group, e.g. '^(\d+)'")
    s.add_argument("--out", help="split file to write (JSON of train/val/test groups)")
    s.add_argument("--val", type=float, default=0.15, help="fraction of groups for validation")
    s.add_argument("--test", type=float, default=0.15, help="fraction of groups for test")
    s.add_argument("--seed", type=int, default=0)
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
                                   "gets train.csv, val.csv, test.csv and split.json")
    t.add_argument("--train-pairs", help="with --check: training pair file")
    t.add_argument("--test-pairs", help="with --check: test (or validation) pair file")
    _add_text_columns(t)
    t.add_argument("--positive-label", default="1", help="label value meaning 'same'")
    t.add_argument("--link-negatives", choices=("auto", "always", "never"), default="auto",
                   help="negative pairs also join groups, so none is dropped (auto: unless "
                        "that makes one group of over half the pairs)")
    t.add_argument("--min-similarity", type=float, default=0.8,
                   help="near-duplicate texts: estimated Jaccard of word 3-grams at least this")
    s.add_argument("--json", action="store_true", help="print JSON")


def _add_text_columns(p: Any, scores: bool = True) -> None:
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


def _read_text_pairs(args: argparse.Namespace, path: str) -> Any:
    from .data.textpairs import read_text_pairs

    score = getattr(args, "col_score", None)
    return read_text_pairs(path, args.pair_format, args.col_a, args.col_b,
                           None if score else args.col_label, score,
                           getattr(args, "positive_label", "1"))


def _add_gallery(sub: argparse._SubParsersAction, eval_sub: argparse._SubParsersAction
                 ) -> None:
    e = sub.add_parser("enroll", help="add classes to a gallery (created if missing)")
    e.add_argument("--model", required=True, help="run folder of a trained model")
    e.add_argument("--gallery", required=True, help="gallery folder")
    e.add_argument("--label", help="class label of FILE...")
    e.add_argument("files", nargs="*", metavar="FILE",
                   help="reference images of --label (texts, for a text model; JSON rows "
                        "'{\"column\": value}', for a table model)")
    e.add_argument("--from-folder", help="enroll a folder-per-class tree (class = folder), "
                                         "or the table file of a table model")
    e.add_argument("--shots", type=_positive_int, default=None,
                   help="with --from-folder: the first N images (by name) of each class")
    e.add_argument("--class-score", choices=("nearest", "prototype"), default="nearest",
                   help="new gallery: a class scores as its nearest reference or its mean")
    e.add_argument("--json", action="store_true", help="print JSON")
    i = sub.add_parser("identify", help="rank gallery classes for query images")
    i.add_argument("--model", required=True, help="run folder of the gallery's model")
    i.add_argument("--gallery", required=True, help="gallery folder")
    i.add_argument("files", nargs="+", metavar="FILE",
                   help="query images (texts, for a text model; JSON rows, for a table "
                        "model)")
    i.add_argument("--k", type=int, default=5, help="classes to list per query")
    i.add_argument("--threshold", type=float, default=None,
                   help="open-set threshold (default: the model's calibrated one)")
    i.add_argument("--backend", choices=("exact", "faiss"), default=None,
                   help="search backend (default: the gallery's)")
    i.add_argument("--index-args", default=None, metavar="JSON",
                   help='backend options, e.g. \'{"kind": "hnsw", "m": 32, "ef_search": 64}\' '
                        'or \'{"kind": "ivf", "nlist": 1024, "nprobe": 16}\'')
    i.add_argument("--json", action="store_true", help="print JSON")
    v = eval_sub.add_parser("identification",
                            help="rank-1 and DIR@FAR against a gallery built from a folder")
    v.add_argument("--model", required=True, help="run folder of a trained model")
    v.add_argument("--gallery-from", required=True, help="folder-per-class tree to enroll (a "
                                                         "tabular model: a table file)")
    v.add_argument("--queries", required=True, help="folder-per-class tree (or table) of "
                                                    "queries (items enrolled from "
                                                    "--gallery-from are skipped)")
    v.add_argument("--unknown", help="folder-per-class tree (or table) of classes not enrolled")
    v.add_argument("--shots", type=_positive_int, default=None,
                   help="enroll the first N images (by name; a table's rows in order) of "
                        "each class (default: all)")
    v.add_argument("--class-score", choices=("nearest", "prototype"), default="nearest")
    v.add_argument("--far", type=float, nargs="+", default=[0.01, 0.1],
                   help="false-alarm rates for DIR@FAR")
    v.add_argument("--tta", type=int, default=None, help="test-time augmentation views")
    v.add_argument("--json", action="store_true", help="print JSON")


def _add_serve(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("serve", help="HTTP service: embed, verify, identify, enroll (FastAPI)")
    s.add_argument("--model", required=True, help="run folder of a trained model")
    s.add_argument("--gallery", required=True, help="gallery folder (created if missing)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default "
                                                       "127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--api-key-file", help="file holding the API key (default: "
                                          "$SIAMKIT_API_KEY)")
    s.add_argument("--admin-key-file", help="file holding the key for enroll and delete "
                                            "(default: $SIAMKIT_ADMIN_KEY; none: the API key)")
    s.add_argument("--no-auth", action="store_true", help="serve without a key (local tests)")
    s.add_argument("--max-body-mb", type=float, default=32, help="request body limit")
    s.add_argument("--max-pixels", type=int, default=40_000_000,
                   help="refuse images with more pixels (decompression bombs)")
    s.add_argument("--max-files", type=int, default=64, help="files (or texts) per request")
    s.add_argument("--max-text-chars", type=int, default=10_000,
                   help="longest text accepted (text models)")


def _add_dedupe(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("dedupe", help="find duplicate texts in a corpus and cluster them")
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
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    d.add_argument("--json", action="store_true", help="print JSON")


def _add_export(sub: argparse._SubParsersAction) -> None:
    x = sub.add_parser("export", help="export the encoder and the whole verifier (ONNX)")
    x.add_argument("--model", required=True, help="run folder of a trained model")
    x.add_argument("--format", default="onnx", choices=("onnx",))
    x.add_argument("--out", required=True, help="folder to write")
    x.add_argument("--data", help="real inputs for the parity check: a folder-per-class tree "
                                  "of images, or for a text model a pair file (default: "
                                  "random inputs, or a few built-in sentences)")
    x.add_argument("--pair-format", choices=("csv", "tsv", "jsonl", "ditto"),
                   help="format of a text --data pair file (default: from the suffix)")
    x.add_argument("--opset", type=int, default=18,
                   help="ONNX opset (18 is the lowest the exporter writes natively)")
    x.add_argument("--json", action="store_true", help="print JSON")


def _add_ensemble(sub: argparse._SubParsersAction) -> None:
    x = sub.add_parser("ensemble", help="join runs of one config (other seeds) into one model")
    x.add_argument("runs", nargs="+", help="run folders of trained models")
    x.add_argument("--out", required=True, help="run folder to write")
    x.add_argument("--no-calibrate", action="store_true",
                   help="do not fit a threshold on the config's validation split")
    x.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``siamkit`` command."""
    parser = argparse.ArgumentParser(prog="siamkit", description=(
        "Siamese networks for verification and one-shot recognition."))
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command",
                                metavar="{train,eval,calibrate,verify,split,report,enroll,"
                                        "identify,serve,export,dedupe,ensemble,demo}")
    sub.required = True
    _add_train(sub)
    eval_sub = _add_eval(sub)
    _add_verification(sub, eval_sub)
    _add_split(sub)
    _add_gallery(sub, eval_sub)
    _add_serve(sub)
    _add_export(sub)
    _add_dedupe(sub)
    _add_ensemble(sub)
    r = sub.add_parser("report", help="HTML report: metrics, ROC/DET, histograms, errors, map")
    _add_pair_source(r)
    r.add_argument("--out", required=True, help="HTML file to write")
    d = sub.add_parser("demo", help="train on Omniglot's background set, test on Lake's runs")
    d.add_argument("--out", default="runs/demo",
                   help="run folder (default runs/demo; replaced on every demo)")
    d.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    d.add_argument("--no-progress", action="store_true")
    return parser


def _emit(result: dict[str, Any], as_json: bool, summary: str) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        print(summary)


def _cmd_train(args: argparse.Namespace) -> int:
    import os

    from .config import load_config
    from .training import train
    from .training.distributed import DistInfo, cleanup

    rank = int(os.environ.get("RANK", "0"))
    if rank != 0:  # under torchrun only rank 0 reports
        logging.getLogger().setLevel(logging.WARNING)
    config = load_config(args.config, args.overrides)
    res = train(config, args.out, resume=args.resume, progress=not args.no_progress,
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


def _cmd_ensemble(args: argparse.Namespace) -> int:
    from .checkpoint import CONFIG
    from .ensemble import ensemble_runs

    out = ensemble_runs(args.runs, args.out, calibrate=not args.no_calibrate,
                        overwrite=args.overwrite)
    threshold = json.loads((out / CONFIG).read_text()).get("threshold")  # the card alone
    note = (f"threshold {threshold['threshold_']:.4g} from {threshold['source']}"
            if threshold else "no threshold")
    print(f"joined {len(args.runs)} runs into {out} ({note})")
    return 0


def _tta(args: argparse.Namespace, model: Any) -> int:
    return model.input_spec.tta if args.tta is None else args.tta


def _cmd_eval_runs(args: argparse.Namespace) -> int:
    from .checkpoint import load_model
    from .data.omniglot import load_lake_runs
    from .evaluate import evaluate_runs

    model, config, card = load_model(args.model)
    runs = load_lake_runs(model.input_spec.size)
    res = evaluate_runs(model, runs, tta=_tta(args, model))
    res.pop("primary_metric", None)
    _emit(res, args.json, f"Lake one-shot runs: error {100 * res['error']:.2f}% "
                          f"({res['total'] - res['correct']} of {res['total']} wrong)")
    return 0


def _cmd_eval_episodes(args: argparse.Namespace) -> int:
    from .checkpoint import load_model
    from .evaluate import evaluate_episodes

    model, config, card = load_model(args.model)
    if model.input_spec.kind == "tabular" and (args.group_depth or args.drawer_pattern):
        raise ValueError("--group-depth and --drawer-pattern read image folders and file "
                         "names; a table's rows have neither (its split file's "
                         "group_pattern groups classes)")
    data = _eval_data(model, args, group_depth=args.group_depth,
                      drawer_pattern=args.drawer_pattern)
    res = evaluate_episodes(model, data, way=args.way, shot=args.shot, queries=args.queries,
                            episodes=args.episodes, within_group=args.group_depth == 1,
                            use_drawers=args.drawer_pattern is not None, seed=args.seed,
                            tta=_tta(args, model))
    res.pop("primary_metric", None)
    _emit(res, args.json, f"{args.way}-way {args.shot}-shot accuracy over {res['episodes']} "
                          f"episodes: {100 * res['accuracy']:.2f}% +- {100 * res['ci95']:.2f}")
    return 0


def _split_classes(data: Any, split_file: str, subset: str) -> Any:
    """The classes of ``data`` (or of its groups: its own, or the split file's
    ``group_pattern`` on class names) named in one subset of a split file."""
    from .data.images import with_groups_from_names
    from .data.splits import classes_in

    split = json.loads(Path(split_file).read_text())
    if split.get("group_pattern") and data.groups is None:
        data = with_groups_from_names(data, split["group_pattern"])
    keep = classes_in(data, split.get(subset, []))
    if not keep:
        raise ValueError(f"no class of the data is in the {subset} subset of {split_file}")
    return data.subset_classes(keep)


def _eval_data(model: Any, args: argparse.Namespace, **kwargs: Any) -> Any:
    """``--data`` loaded as the model takes it (:func:`_load_folder`; ``kwargs`` go there),
    kept to the classes of ``--subset`` of ``--split`` when one is given; a tabular model
    scored on its whole table gets a warning: its training classes are in it too."""
    data = _load_folder(model, args.data, **kwargs)
    if args.split:
        return _split_classes(data, args.split, args.subset)
    if model.input_spec.kind == "tabular":
        logger.warning("no --split: every class of %s is scored, the model's training "
                       "classes included (give the split file and --subset test)", args.data)
    return data


def _load_files(model: Any, paths: list[str]) -> Any:
    """Load image files with the model's own preprocessing: (N, C, H, W) uint8."""
    from .inputs import ImageInput

    return ImageInput(model.input_spec).prepare(paths)


def _embed_inputs(model: Any, items: list[str]) -> Any:
    """Embed command-line inputs as the model takes them: image files, texts (a text
    model), or rows for a featurised MLP twin: JSON objects (``{"column": value, ...}``) for
    a table model, those or Ditto's ``COL attr VAL value ...`` for a record model."""
    from .inputs import adapter_for

    adapter = adapter_for(model.input_spec)
    return adapter.embed_items(model, [adapter.parse(x) for x in items])


def _scored_pairs(args: argparse.Namespace) -> tuple[Any, Any, Any, dict, Any]:
    """(model, scores, same, card, config) for the pairs that --pairs / --all-pairs name."""
    model, scores, pairs, _, _, card, config = _scored_pair_list(args)
    return model, scores, pairs.same, card, config


def _scored_pair_list(args: argparse.Namespace) -> tuple[Any, ...]:
    """(model, scores, pair list, images, embeddings, card, config) for the named pairs."""
    import numpy as np

    from .checkpoint import load_model
    from .data.images import scan_folder
    from .data.pairs import PairList, all_pairs, read_pair_csv, skilled_pairs
    from .evaluate import score_pairs

    model, config, card = load_model(args.model)
    if model.input_spec.kind in ("text", "records"):
        return _scored_text_pairs(args, model, card, config)
    if model.input_spec.kind == "tabular":
        return _scored_table_pairs(args, model, card, config)
    if not args.data:
        raise ValueError("an image model needs --data (the folder the images are in)")
    if args.skilled_pairs:
        pattern = args.group_pattern or (json.loads(Path(args.split).read_text())
                                         .get("group_pattern") if args.split else None)
        if not pattern:
            raise ValueError("--skilled-pairs needs --group-pattern (or a split file with one)")
        from .data.splits import group_of

        items = scan_folder(args.data, group_depth=0)
        names = [n for _, n, _ in items]
        i, j, same = skilled_pairs(names, [group_of(n, pattern) for n in names])
        pairs = PairList([p for p, _, _ in items], i, j, same)
    elif args.all_pairs:
        items = scan_folder(args.data, group_depth=0)
        names = sorted({n for _, n, _ in items})
        labels = np.array([names.index(n) for _, n, _ in items])
        i, j, same = all_pairs(labels)
        pairs = PairList([p for p, _, _ in items], i, j, same)
    else:
        pairs = read_pair_csv(args.pairs, args.data, args.positive_label)
    if args.split:
        pairs = _restrict_to_split(pairs, args.split, args.subset, args.group_pattern)
    _need_both(pairs.same)
    from .embedding import embed_images

    images = _load_files(model, pairs.paths)
    emb = embed_images(model, images, tta=_tta(args, model), mean=model.input_spec.mean,
                       std=model.input_spec.std)
    scores = score_pairs(model, emb, pairs.left, pairs.right)
    return model, scores, pairs, images, emb, card, config


def _need_both(same: Any) -> None:
    """Verification metrics need both kinds of pair."""
    if len(same) == 0 or same.all() or not same.any():
        raise ValueError(f"need both same and different pairs; got {int(same.sum())} same "
                         f"and {int((~same).sum())} different")


def _is_text(model: Any) -> bool:
    return model.input_spec.kind == "text"


def _scored_table_pairs(args: argparse.Namespace, model: Any, card: dict, config: Any
                        ) -> tuple[Any, ...]:
    """The table branch of :func:`_scored_pair_list`: every pair of rows of the table
    (or ``sklearn:digits``) ``--data``, same class = same; ``--split`` keeps one subset's
    classes."""
    from .data.pairs import PairList, all_pairs
    from .embedding import embed_images
    from .evaluate import score_pairs

    if not (args.data and args.all_pairs):
        raise ValueError("a tabular model is evaluated on every pair of rows of a table: "
                         "give --data FILE (or sklearn:digits) --all-pairs")
    data = _eval_data(model, args)
    left, right, same = all_pairs(data.labels.numpy())
    _need_both(same)
    pairs = PairList(list(data.paths), left, right, same)
    emb = embed_images(model, data.images)
    return model, score_pairs(model, emb, left, right), pairs, None, emb, card, config


def _scored_text_pairs(args: argparse.Namespace, model: Any, card: dict, config: Any
                       ) -> tuple[Any, ...]:
    """The text / record branch of :func:`_scored_pair_list`: pairs from a pair file."""
    from .evaluate import score_pairs
    from .inputs import adapter_for

    if not args.pairs:
        raise ValueError("a text model reads its pairs from a pair file: give --pairs FILE")
    pairs = _read_text_pairs(args, args.pairs)
    if pairs.same is None:
        raise ValueError(f"{args.pairs}: graded scores, not labels; use siamkit eval "
                         "similarity for those")
    _need_both(pairs.same)
    emb = adapter_for(model.input_spec).embed_pairs(model, pairs)
    scores = score_pairs(model, emb, pairs.left, pairs.right)
    return model, scores, pairs, None, emb, card, config


def _cmd_eval_similarity(args: argparse.Namespace) -> int:
    from .checkpoint import load_model
    from .evaluate import evaluate_similarity

    model, _, _ = load_model(args.model)
    if not _is_text(model):
        raise ValueError("eval similarity scores text pairs: this model is not a text model")
    res = evaluate_similarity(model, _read_text_pairs(args, args.pairs))
    _emit(res, args.json, f"{res['pairs']} pairs: Spearman {res['spearman']:.2f}, Pearson "
                          f"{res['pearson']:.2f} (x100)")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .evaluate import verification_report
    from .report import build_report, write_report

    model, scores, pairs, images, emb, card, _ = _scored_pair_list(args)
    if model.input_spec.kind == "tabular":
        raise ValueError("the HTML report shows the images or texts of its pairs; for a "
                         "tabular model use siamkit eval verification --all-pairs")
    cal = _calibrator(card, args.model) if "threshold" in card else None
    metrics = verification_report(scores, pairs.same, model.higher_is_closer, cal)
    if images is None:  # text pairs: show the texts; map colours are duplicate groups
        from .data.splits import positive_pair_groups

        items = [(pairs.texts[a], pairs.texts[b]) for a, b in zip(pairs.left, pairs.right,
                                                                  strict=True)]
        groups = positive_pair_groups(len(pairs.texts), pairs.left, pairs.right, pairs.same)
        labels = [str(g) for g in groups]
    else:
        arrays = images.numpy()
        items = [(arrays[a], arrays[b]) for a, b in zip(pairs.left, pairs.right, strict=True)]
        labels = [Path(p).parent.name for p in pairs.paths]
    text = build_report(metrics, scores, pairs.same, model.higher_is_closer, items,
                        emb.numpy(), labels, title=f"siamkit verification report: {args.model}"
                                                   f" on {args.data or args.pairs}")
    out = write_report(args.out, text)
    _emit({**metrics, "report": str(out)}, args.json, f"report written to {out}")
    return 0


def _restrict_to_split(pairs: Any, split_file: str, subset: str, pattern: str | None) -> Any:
    """Keep the pairs whose two images belong to groups of one subset of a split file."""
    import numpy as np

    from .data.pairs import PairList
    from .data.splits import group_of

    split = json.loads(Path(split_file).read_text())
    wanted = set(split.get(subset, []))
    pattern = pattern or split.get("group_pattern")
    depth = int(split.get("group_depth", 0))

    def group(path: str) -> str:
        folder = Path(path).parent if depth == 0 else Path(path).parent.parent
        return group_of(folder.name, pattern) if pattern else folder.name

    inside = np.array([group(p) in wanted for p in pairs.paths])
    keep = inside[pairs.left] & inside[pairs.right]
    if not keep.any():
        raise ValueError(f"no pair has both images in the {subset} groups of {split_file}")
    left, right = pairs.left[keep], pairs.right[keep]
    used = np.unique(np.concatenate([left, right]))  # drop images of other groups
    remap = np.full(len(pairs.paths), -1)
    remap[used] = np.arange(len(used))
    return PairList([pairs.paths[i] for i in used], remap[left], remap[right],
                    pairs.same[keep])


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from .calibrate import ThresholdCalibrator, parse_target
    from .checkpoint import update_card

    target, value = parse_target(args.target)
    if args.split and args.subset == "test" and not args.allow_test:
        raise ValueError("refusing to calibrate on the test subset: the threshold must come "
                         "from validation data (use --subset val, or --allow-test)")
    if args.scores:  # validation scores computed elsewhere (out-of-fold, say)
        from .checkpoint import load_model
        from .data.textpairs import read_scores
        from .metrics import auc

        ignored = [f"--{k.replace('_', '-')}" for k in ("data", "split", "group_pattern", "tta")
                   if getattr(args, k) is not None]
        if ignored:
            raise ValueError(f"--scores brings its own scores: {', '.join(ignored)} would be "
                             f"ignored, so drop it")
        model = load_model(args.model)[0]
        scores, same = read_scores(args.scores, args.positive_label)
        closer = "higher" if model.higher_is_closer else "lower"
        if auc(scores if model.higher_is_closer else -scores, same) < 0.5:
            raise ValueError(f"{args.scores}: the scores rank same pairs below different ones "
                             f"in this model's direction ({closer} is closer): similarities "
                             f"for a distance model, or the reverse? Negate them")
        source = f"scores in {args.scores}"
    else:
        model, scores, same, _, _ = _scored_pairs(args)
        source = args.pairs if args.pairs else f"all pairs of {args.data}"
        if args.split:
            source += f", {args.subset} groups of {args.split}"
    cal = ThresholdCalibrator(target, value, model.higher_is_closer).fit(scores, same)
    update_card(args.model, {"threshold": {**cal.to_dict(), "source": str(source)}})
    res = {"threshold": cal.threshold_, "target": args.target, "validation": cal.validation_}
    _emit(res, args.json, f"threshold {cal.threshold_:.6g} ({args.target}) stored in "
                          f"{args.model}; on these pairs: accuracy "
                          f"{cal.validation_['accuracy']:.4f}, FAR {cal.validation_['far']:.4f}, "
                          f"FRR {cal.validation_['frr']:.4f}")
    return 0


def _calibrator(card: dict, run_dir: str) -> Any:
    from .checkpoint import calibrator_of

    cal = calibrator_of(card)
    if cal is None:
        raise ValueError(f"{run_dir} has no calibrated threshold: run siamkit calibrate first")
    return cal


def _cmd_verify(args: argparse.Namespace) -> int:
    import torch

    from .checkpoint import load_model

    model, config, card = load_model(args.model)
    cal = _calibrator(card, args.model)
    emb = _embed_inputs(model, [args.a, args.b])
    with torch.no_grad():
        score = float(model.score_embeddings(emb[:1], emb[1:])[0])
    same = bool(cal.predict([score])[0])
    res = {"score": score, "same": same, "threshold": cal.threshold_}
    _emit(res, args.json, f"{'same' if same else 'different'} (score {score:.4g}, threshold "
                          f"{cal.threshold_:.4g})")
    return 0


def _cmd_eval_verification(args: argparse.Namespace) -> int:
    from .evaluate import verification_report

    model, scores, same, card, _ = _scored_pairs(args)
    cal = _calibrator(card, args.model) if "threshold" in card else None
    res = verification_report(scores, same, model.higher_is_closer, cal, ci=args.ci)
    summary = (f"{res['positives']} same / {res['negatives']} different pairs: AUC "
               f"{res['auc']:.4f}, EER {100 * res['eer']:.2f}%")
    if args.ci:
        lo, hi = res["ci95"]["eer"]
        summary += f" (95% CI {100 * lo:.2f}-{100 * hi:.2f}%)"
    if cal is not None:
        summary += (f"; at the frozen threshold {res['threshold']:.4g}: accuracy "
                    f"{100 * res['accuracy']:.2f}%, F1 {res['f1']:.4f}")
    _emit(res, args.json, summary)
    return 0


def _cmd_eval_retrieval(args: argparse.Namespace) -> int:
    from .checkpoint import load_model
    from .evaluate import evaluate_retrieval

    model, config, card = load_model(args.model)
    data = _eval_data(model, args)
    res = evaluate_retrieval(model, data, ks=args.k, tta=_tta(args, model))
    res.pop("primary_metric", None)
    recalls = ", ".join(f"R@{k} {100 * res[f'recall@{k}']:.2f}%" for k in args.k)
    _emit(res, args.json, f"{res['queries']} queries over {res['classes']} classes: {recalls}, "
                          f"MAP@R {100 * res['map@r']:.2f}%, MRR {res['mrr']:.4f}")
    return 0


def _load_folder(model: Any, folder: str, **kwargs: Any) -> Any:
    """A folder-per-class tree, loaded with the model's own preprocessing (``kwargs`` go
    to :func:`load_image_folder`: grouping, drawers, cache); for a tabular model, its
    class-labelled table file (featurised as in training) or ``sklearn:digits``."""
    from .inputs import adapter_for

    return adapter_for(model.input_spec).load_dataset(folder, **kwargs)


def _first_shots(data: Any, shots: int | None) -> list[int]:
    """Indices of the first ``shots`` items (by path; a table's ``FILE#row`` by row
    number) of every class; all when None."""

    def key(i: int) -> tuple[str, int]:
        head, sep, row = str(data.paths[i]).rpartition("#")
        return (head, int(row)) if sep and row.isdigit() else (str(data.paths[i]), -1)

    order = sorted(range(len(data)), key=key)
    taken: dict[int, int] = {}
    keep = []
    for i in order:
        c = int(data.labels[i])
        if shots is None or taken.get(c, 0) < shots:
            taken[c] = taken.get(c, 0) + 1
            keep.append(i)
    return keep


def _open_gallery(args: argparse.Namespace, model: Any, create: bool, **kw: Any) -> Any:
    from .checkpoint import model_identity
    from .gallery import Gallery, metric_of

    ident = model_identity(args.model)
    if (Path(args.gallery) / "gallery.sqlite").is_file():
        return Gallery.open(args.gallery, model_id=ident, **kw)
    if not create:
        raise FileNotFoundError(f"no gallery in {args.gallery}: enroll classes first")
    dim = model.embedding_dim
    return Gallery.create(args.gallery, dim, metric=metric_of(model), model_id=ident, **kw)


def _cmd_enroll(args: argparse.Namespace) -> int:
    from .checkpoint import load_model

    model, config, card = load_model(args.model)
    if args.from_folder and (args.files or args.label):
        raise ValueError("give either --label with files, or --from-folder")
    if not args.from_folder and not (args.label and args.files):
        raise ValueError("enroll needs --label NAME FILE... or --from-folder FOLDER")
    if args.from_folder and model.input_spec.kind in ("text", "records"):
        raise ValueError("--from-folder reads images; a text model enrolls texts: --label "
                         "NAME TEXT...")
    from .gallery import Gallery

    # everything is read, checked and embedded before a gallery is created: a failed
    # enroll leaves no empty gallery behind
    if args.from_folder:
        data = _load_folder(model, args.from_folder, use_cache=False)
        data = data.subset_items(_first_shots(data, args.shots))
        from .inputs import adapter_for

        labels = [data.class_names[c] for c in data.labels.tolist()]
        for name in dict.fromkeys(labels):
            Gallery._check_label(name)
        emb = adapter_for(model.input_spec).embed_dataset(model, data)
        gallery = _open_gallery(args, model, create=True, class_score=args.class_score)
        added = gallery.enroll_many(labels, emb)
    else:
        Gallery._check_label(args.label)
        emb = _embed_inputs(model, args.files)
        gallery = _open_gallery(args, model, create=True, class_score=args.class_score)
        added = gallery.enroll(args.label, emb, sources=[x[:200] for x in args.files])
    res = {"added": added, "classes": len(gallery.labels()), "references": len(gallery),
           "gallery": str(args.gallery)}
    _emit(res, args.json, f"enrolled {added} references; the gallery has {res['classes']} "
                          f"classes, {res['references']} references")
    return 0


def _cmd_identify(args: argparse.Namespace) -> int:
    from .checkpoint import load_model

    model, config, card = load_model(args.model)
    kw: dict[str, Any] = {"backend": args.backend} if args.backend else {}
    if args.index_args:
        try:
            kw["backend_args"] = json.loads(args.index_args)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--index-args is not JSON: {exc}") from None
        if not isinstance(kw["backend_args"], dict):
            raise ValueError("--index-args must be a JSON object")
    gallery = _open_gallery(args, model, create=False, **kw)
    threshold = args.threshold
    if threshold is None and "threshold" in card:
        threshold = _calibrator(card, args.model).threshold_
    emb = _embed_inputs(model, args.files)
    results = []
    for path, matches in zip(args.files, gallery.identify(emb, k=args.k), strict=True):
        results.append({"file": path, "decision": gallery.decide(matches, threshold),
                        "matches": [{"label": m.label, "score": m.score} for m in matches]})
    res = {"threshold": threshold, "higher_is_closer": gallery.higher_is_closer,
           "results": results}
    lines = [f"{r['file']}: {r['decision']}" + (f" ({r['matches'][0]['score']:.4g})"
                                                 if r["matches"] else "") for r in results]
    if threshold is None:
        lines.append("(no calibrated threshold: closed-set answers; run siamkit calibrate)")
    _emit(res, args.json, "\n".join(lines))
    return 0


def _cmd_eval_identification(args: argparse.Namespace) -> int:
    from .checkpoint import load_model
    from .evaluate import evaluate_identification

    model, config, card = load_model(args.model)
    refs = _load_folder(model, args.gallery_from, use_cache=False)
    chosen = _first_shots(refs, args.shots)
    used = {refs.paths[i] for i in chosen}
    refs = refs.subset_items(chosen)
    queries = _load_folder(model, args.queries, use_cache=False)
    queries = queries.subset_items([i for i, p in enumerate(queries.paths) if p not in used])
    if len(queries) == 0:
        raise ValueError("no query images left after removing the enrolled ones")
    unknown = (_load_folder(model, args.unknown, use_cache=False) if args.unknown
               else None)
    threshold = _calibrator(card, args.model).threshold_ if "threshold" in card else None
    res = evaluate_identification(model, refs, queries, unknown, threshold, args.far,
                                  args.class_score, _tta(args, model))
    res.pop("primary_metric", None)
    summary = (f"{len(queries)} queries, {res['classes']} enrolled classes "
               f"({res['references']} references): rank-1 {100 * res['rank1']:.2f}%")
    if "dir_at_far" in res:
        summary += "; " + ", ".join(f"DIR@FAR={f} {100 * v:.2f}%"
                                    for f, v in res["dir_at_far"].items())
    _emit(res, args.json, summary)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from .serve import ServeSettings, run

    settings = ServeSettings(max_body_bytes=int(args.max_body_mb * 2**20),
                             max_pixels=args.max_pixels, max_files=args.max_files,
                             max_text_chars=args.max_text_chars)
    run(args.model, args.gallery, args.host, args.port, args.api_key_file,
        args.admin_key_file, args.no_auth, settings)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    import numpy as np

    from .checkpoint import load_model
    from .export import export_onnx

    inputs: Any = None
    if args.data:
        model, config, card = load_model(args.model)
        if _is_text(model):
            from .data.textpairs import read_text_pairs

            texts = read_text_pairs(args.data, args.pair_format).texts
            inputs = [texts[i] for i in np.random.default_rng(0).permutation(len(texts))[:32]]
        else:
            data = _load_folder(model, args.data, use_cache=False)
            pick = np.random.default_rng(0).permutation(len(data))[:32]
            from .embedding import to_float

            inputs = to_float(data.images[pick]).numpy()
    else:
        logging.getLogger(__name__).warning("no --data: checking parity on random inputs")
    manifest = export_onnx(args.model, args.out, args.opset, inputs)
    p = manifest["parity"]
    same = "identical" if p["decisions_equal"] else "DIFFER"
    written = ", ".join(sorted(f.name for f in Path(args.out).iterdir()))
    kind = "real" if p["real_inputs"] else "random"
    _emit(manifest, args.json,
          f"exported to {args.out} ({written}); ONNX Runtime vs PyTorch on {p['inputs']} "
          f"{kind} inputs: "
          f"embeddings within {p['max_embedding_diff_relative']:.1e} (relative), scores within "
          f"{p['max_score_diff']:.1e}, decisions {same}")
    return 0


def _cmd_dedupe(args: argparse.Namespace) -> int:
    import csv

    from .checkpoint import load_model
    from .data.textpairs import read_texts
    from .dedupe import find_duplicates

    model, _, card = load_model(args.model)
    if not _is_text(model):
        raise ValueError("dedupe embeds texts: this model is not a text model")
    threshold = args.threshold
    if threshold is None:
        cal = _calibrator(card, args.model) if "threshold" in card else None
        if cal is None:
            raise ValueError(f"{args.model} has no calibrated threshold: give --threshold")
        threshold = cal.threshold_
    texts, rows = read_texts(args.input, args.column, args.pair_format, args.skip_empty)
    res = find_duplicates(model, texts, float(threshold), max_pairs=args.max_pairs,
                          progress=not args.no_progress)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["cluster", "row_a", "row_b", "score", "a", "b"])
        for i, j, s in zip(res.left.tolist(), res.right.tolist(), res.scores.tolist(),
                           strict=True):
            w.writerow([int(res.clusters[i]), rows[i], rows[j], f"{s:.6g}", texts[i],
                        texts[j]])
    tmp.replace(out)
    sizes = res.cluster_sizes
    summary = {"texts": len(texts), "pairs": len(res.left), "clusters": len(sizes),
               "texts_in_clusters": int(sizes.sum()), "largest_cluster": int(sizes[0])
               if len(sizes) else 0, "threshold": float(threshold), "out": str(out),
               "seconds": {k: round(v, 3) for k, v in res.timings.items()}}
    _emit(summary, args.json, f"{len(texts)} texts: {len(res.left)} duplicate pairs in "
                              f"{len(sizes)} clusters (threshold {threshold:.4g}) -> {out}")
    return 0


def _items_by_group(folder: str, depth: int, pattern: str | None = None,
                    label_column: str = "label") -> dict[str, list[str]]:
    """Items (image paths, or a table's ``FILE#row``) by group: the class, its folder
    (``depth`` 1) or group 1 of ``pattern`` on the class name."""
    from .data.images import scan_folder
    from .data.splits import group_of

    out: dict[str, list[str]] = {}
    if not Path(folder).exists():
        raise ValueError(f"{folder}: no such folder or table file")
    if Path(folder).is_file():  # a class-labelled table: its rows by class
        from .data.tabular import read_table

        for n, label in enumerate(read_table(folder, label_column)[1]):
            key = group_of(label, pattern) if pattern else label
            out.setdefault(key, []).append(f"{folder}#{n}")
        return out
    for path, name, group in scan_folder(folder, depth):
        key = group if depth else name
        out.setdefault(group_of(key, pattern) if pattern else key, []).append(path)
    return out


def _cmd_split(args: argparse.Namespace) -> int:
    from .data.splits import split_groups

    if args.check:
        if args.train_pairs or args.test_pairs:
            return _cmd_split_check_text(args)
        return _cmd_split_check(args)
    if args.pairs:
        return _cmd_split_text(args)
    if not args.data or not args.out:
        raise ValueError("siamkit split needs --data and --out (or --check)")
    groups = _items_by_group(args.data, args.group_depth, args.group_pattern, args.col_label)
    split = split_groups(list(groups), args.val, args.test, args.seed)
    items = "rows" if Path(args.data).is_file() else "images"  # a table, or a folder
    record = {**split, "data": str(args.data), "group_depth": args.group_depth,
              "group_pattern": args.group_pattern,
              "seed": args.seed, items: {k: sum(len(groups[g]) for g in v)
                                         for k, v in split.items()}}
    Path(args.out).write_text(json.dumps(record, indent=2))
    _emit(record, args.json, "; ".join(f"{k}: {len(v)} groups, {record[items][k]} {items}"
                                       for k, v in split.items()) + f" -> {args.out}")
    return 0


def _cmd_split_check(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from .data.splits import image_hash, near_duplicates, overlap

    if args.data and Path(args.data).is_file():
        raise ValueError(f"--check looks for near-duplicate images; {args.data} is a table")
    if args.split:
        if not args.data:
            raise ValueError("--check --split needs --data, the folder the split describes")
        split = json.loads(Path(args.split).read_text())
        groups = _items_by_group(args.data, split.get("group_depth", args.group_depth),
                                 split.get("group_pattern", args.group_pattern))
        train_g, test_g = split.get("train", []), split.get("test", []) + split.get("val", [])
        train = {g: groups.get(g, []) for g in train_g}
        test = {g: groups.get(g, []) for g in test_g}
    elif args.train and args.test_dir:
        train = _items_by_group(args.train, args.group_depth, args.group_pattern)
        test = _items_by_group(args.test_dir, args.group_depth, args.group_pattern)
    else:
        raise ValueError("--check needs --split (with --data) or --train and --test-dir")

    def hashes(paths: list[str]) -> np.ndarray:
        out = []
        for p in paths:
            try:
                with Image.open(p) as img:
                    out.append(image_hash(np.asarray(img.convert("L"))))
            except OSError as exc:
                raise ValueError(f"{p}: not a readable image ({exc})") from None
        return np.array(out, dtype=np.uint64)

    train_paths = [p for v in train.values() for p in v]
    test_paths = [p for v in test.values() for p in v]
    found = near_duplicates(hashes(test_paths), hashes(train_paths), args.max_distance)
    shared = overlap(list(train), list(test))
    report = {"train_images": len(train_paths), "test_images": len(test_paths),
              "shared_groups": shared, "near_duplicates": len(found),
              "examples": [{"test": test_paths[i], "train": train_paths[j], "bits": d}
                           for i, j, d in found[:10]],
              "max_leaks": args.max_leaks}
    ok = len(found) <= args.max_leaks and not shared
    report["ok"] = ok
    lines = [f"{len(found)} of {len(test_paths)} test images have a near-duplicate in train "
             f"(<= {args.max_distance} bits of 64); {len(shared)} groups on both sides"]
    lines += [f"  {e['test']}  ~  {e['train']}  ({e['bits']} bits)" for e in report["examples"]]
    _emit(report, args.json, "\n".join(lines))
    return 0 if ok else 3


def _cmd_split_text(args: argparse.Namespace) -> int:
    from .data.splits import split_text_pairs
    from .data.textpairs import write_text_pairs

    if not args.out:
        raise ValueError("siamkit split --pairs needs --out, a folder for the split files")
    pairs = _read_text_pairs(args, args.pairs)
    parts, dropped = split_text_pairs(pairs, args.val, args.test, args.seed,
                                      args.link_negatives)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"pairs": str(args.pairs), "seed": args.seed, "val": args.val,
                              "test": args.test, "dropped_cross_split_negatives": dropped}
    for name, part in parts.items():
        write_text_pairs(out / f"{name}.csv", part)
        record[name] = {"file": str(out / f"{name}.csv"), "pairs": len(part),
                        "positives": int(part.same.sum()), "texts": len(part.texts)}
    (out / "split.json").write_text(json.dumps(record, indent=2))
    summary = "; ".join(f"{k}: {v['pairs']} pairs ({v['positives']} same)"
                        for k, v in record.items() if isinstance(v, dict))
    _emit(record, args.json, f"{summary}; {dropped} negative pairs across splits dropped "
                             f"-> {out}")
    return 0


def _cmd_split_check_text(args: argparse.Namespace) -> int:
    from .data.splits import text_near_duplicates

    if not (args.train_pairs and args.test_pairs):
        raise ValueError("--check on text needs both --train-pairs and --test-pairs")
    train = _read_text_pairs(args, args.train_pairs).texts
    test = _read_text_pairs(args, args.test_pairs).texts
    found = text_near_duplicates(test, train, args.min_similarity)
    exact = sum(1 for _, _, sim in found if sim == 1.0)
    report = {"train_texts": len(train), "test_texts": len(test), "near_duplicates": len(found),
              "exact_after_normalisation": exact, "min_similarity": args.min_similarity,
              "examples": [{"test": test[i], "train": train[j], "similarity": round(sim, 3)}
                           for i, j, sim in found[:10]],
              "max_leaks": args.max_leaks}
    report["ok"] = len(found) <= args.max_leaks
    lines = [f"{len(found)} of {len(test)} test texts have a near-duplicate in train "
             f"({exact} equal after normalisation; others MinHash >= {args.min_similarity})"]
    lines += [f"  {e['test'][:60]!r}  ~  {e['train'][:60]!r}  ({e['similarity']})"
              for e in report["examples"]]
    _emit(report, args.json, "\n".join(lines))
    return 0 if report["ok"] else 3


def _cmd_demo(args: argparse.Namespace) -> int:
    from .checkpoint import load_model
    from .config import load_config
    from .data.omniglot import load_lake_runs
    from .evaluate import evaluate_runs
    from .training import train

    preset = resources.files("siamkit") / "presets" / "omniglot_demo.yaml"
    with resources.as_file(preset) as path:
        config = load_config(path, args.overrides)
    logger.info("demo: training on Omniglot's background set (at most %s minutes), then "
                "testing on Lake's 20 one-shot runs", config.optim.time_limit_minutes)
    res = train(config, args.out, progress=not args.no_progress, overwrite=True)
    model, config, card = load_model(args.out)
    runs = load_lake_runs(model.input_spec.size)
    ev = evaluate_runs(model, runs, tta=config.eval.tta)
    result = {
        "task": "Omniglot, Lake et al. (2015) 20-way within-alphabet one-shot runs",
        "error": ev["error"], "accuracy": ev["accuracy"], "per_run": ev["per_run"],
        "train_minutes": res.minutes, "train_steps": res.steps,
        "images_per_second": res.items_per_second, "best_val_accuracy": res.best_metric,
        "published_error": {"Koch et al. Siamese ConvNet": 0.080, "people": 0.045,
                            "Bayesian Program Learning": 0.033},
    }
    out = Path(args.out) / "results.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"Omniglot 20-way one-shot (Lake's 20 runs, 400 queries): error "
          f"{100 * ev['error']:.2f}%  [Koch et al. 8.0%, people 4.5%, BPL 3.3%]\n"
          f"trained {res.minutes:.1f} min, {res.items_per_second:.0f} images/s; "
          f"results in {out}")
    return 0


def _setup_logging(debug: bool, quiet: bool) -> None:
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``siamkit`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.debug, args.quiet)
    commands = {
        ("train", None): _cmd_train,
        ("eval", "omniglot-runs"): _cmd_eval_runs,
        ("eval", "episodes"): _cmd_eval_episodes,
        ("eval", "verification"): _cmd_eval_verification,
        ("eval", "retrieval"): _cmd_eval_retrieval,
        ("eval", "similarity"): _cmd_eval_similarity,
        ("dedupe", None): _cmd_dedupe,
        ("eval", "identification"): _cmd_eval_identification,
        ("enroll", None): _cmd_enroll,
        ("identify", None): _cmd_identify,
        ("serve", None): _cmd_serve,
        ("export", None): _cmd_export,
        ("ensemble", None): _cmd_ensemble,
        ("calibrate", None): _cmd_calibrate,
        ("verify", None): _cmd_verify,
        ("split", None): _cmd_split,
        ("report", None): _cmd_report,
        ("demo", None): _cmd_demo,
    }
    handler = commands[(args.command, getattr(args, "eval_command", None))]
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("siamkit: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one clear line for the user; the traceback with --debug
        if args.debug:
            raise
        from .checkpoint import RunError
        from .config import ConfigError
        from .data.download import DatasetError
        from .export import ExportError
        from .gallery import GalleryError

        known = (ConfigError, RunError, DatasetError, GalleryError, ExportError, ValueError,
                 FileNotFoundError, KeyError)
        kind = "error" if isinstance(exc, known) else f"unexpected error ({type(exc).__name__})"
        print(f"siamkit: {kind}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
