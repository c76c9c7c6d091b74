"""``siamkit eval``: omniglot-runs, episodes, retrieval, similarity, identification (the
verification evaluation is in :mod:`siamkit.cli.verification`)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from .common import (
    add_command,
    add_json,
    add_progress,
    add_text_columns,
    emit,
    pair_columns,
    positive_int,
    progress_bars,
    show_progress,
)

__all__ = ["add_eval"]

logger = logging.getLogger(__name__)

EVALS = "{omniglot-runs,episodes,verification,similarity,retrieval,identification}"
TTA_HELP = "test-time augmentation views (default: the model's own)"


def add_eval(sub: Any) -> Any:
    """Register ``eval`` and its evaluations; returns its subparsers for the others."""
    p = add_command(sub, "eval", "evaluate a trained model")
    es = p.add_subparsers(dest="eval_command", metavar=EVALS)
    es.required = True
    r = add_command(es, "omniglot-runs", "Lake's 20 within-alphabet 20-way one-shot runs")
    r.add_argument("--model", required=True, help="run folder of a trained model")
    r.add_argument("--tta", type=int, default=None, help=TTA_HELP)
    _finish(r, eval_runs)
    _add_episodes(es)
    _add_retrieval(es)
    s = add_command(es, "similarity", "Spearman / Pearson of a text model's similarity against "
                                      "graded pair scores")
    s.add_argument("--model", required=True, help="run folder of a text model")
    s.add_argument("--pairs", required=True, help="graded pair file (e.g. STS-B)")
    add_text_columns(s)
    s.set_defaults(col_score="score")
    _finish(s, eval_similarity)
    _add_identification(es)
    return es


def _finish(p: argparse.ArgumentParser, handler: Any) -> None:
    add_progress(p)
    add_json(p)
    p.set_defaults(handler=handler)


def _add_episodes(es: Any) -> None:
    e = add_command(es, "episodes", "N-way K-shot episodes on a folder-per-class tree")
    e.add_argument("--model", required=True, help="run folder of a trained model")
    e.add_argument("--data", required=True, help="folder-per-class tree; for a tabular (MLP) "
                   "model, sklearn:digits or the table file (data.dataset=table)")
    e.add_argument("--split", help="split file: keep only the classes (groups) of --subset "
                                   "(default: every class)")
    e.add_argument("--subset", default="test", choices=("train", "val", "test"),
                   help="which groups of --split to keep")
    e.add_argument("--way", type=int, required=True, help="classes per episode (N)")
    e.add_argument("--shot", type=int, required=True, help="support examples per class (K)")
    e.add_argument("--queries", type=int, default=1, help="queries per class (Q)")
    e.add_argument("--episodes", type=int, default=600, help="episodes to average over")
    e.add_argument("--group-depth", type=int, default=0, choices=(0, 1),
                   help="1: classes are FOLDER/<group>/<class>, and episodes stay in a group")
    e.add_argument("--drawer-pattern", default=None,
                   help="regex whose group 1, on the file name, is the drawer; support and "
                        r"queries then come from different drawers (Omniglot: '_(\d+)\.png$'; "
                        "default: drawers are not used)")
    e.add_argument("--seed", type=int, default=0, help="which episodes are drawn")
    e.add_argument("--tta", type=int, default=None, help=TTA_HELP)
    e.add_argument("--baseline", metavar="RUN", default=None,
                   help="a second model scored on the same episodes: adds its accuracy and "
                        "the paired difference (--model minus it) with a 95%% interval")
    _finish(e, eval_episodes)


def _add_retrieval(es: Any) -> None:
    r = add_command(es, "retrieval", "leave-one-out retrieval: Recall@K, MAP@R, MRR")
    r.add_argument("--model", required=True, help="run folder of a trained model")
    r.add_argument("--data", required=True, help="folder-per-class tree, or a tabular model's "
                                                 "table file (queries search all other items)")
    r.add_argument("--k", type=int, nargs="+", default=[1, 5, 10], help="K values of Recall@K")
    r.add_argument("--split", help="split file: keep only the classes of --subset (default: "
                                   "every class)")
    r.add_argument("--subset", default="test", choices=("train", "val", "test"),
                   help="which groups of --split to keep")
    r.add_argument("--tta", type=int, default=None, help=TTA_HELP)
    _finish(r, eval_retrieval)


def _add_identification(es: Any) -> None:
    v = add_command(es, "identification",
                    "rank-1 and DIR@FAR against a gallery built from a folder")
    v.add_argument("--model", required=True, help="run folder of a trained model")
    v.add_argument("--gallery-from", required=True, help="folder-per-class tree to enroll (a "
                                                         "tabular model: a table file)")
    v.add_argument("--queries", required=True, help="folder-per-class tree (or table) of "
                                                    "queries (items enrolled from "
                                                    "--gallery-from are skipped)")
    v.add_argument("--unknown", help="folder-per-class tree (or table) of classes not enrolled")
    v.add_argument("--shots", type=positive_int, default=None,
                   help="enroll the first N images (by name; a table's rows in order) of "
                        "each class (default: all)")
    v.add_argument("--class-score", choices=("nearest", "prototype"), default="nearest",
                   help="a class scores as its nearest reference or its mean")
    v.add_argument("--far", type=float, nargs="+", default=[0.01, 0.1],
                   help="false-alarm rates for DIR@FAR")
    v.add_argument("--tta", type=int, default=None, help=TTA_HELP)
    _finish(v, eval_identification)


def _tta(args: argparse.Namespace, model: Any) -> int:
    return model.input_spec.tta if args.tta is None else args.tta


def eval_runs(args: argparse.Namespace) -> int:
    """Lake's one-shot runs."""
    from ..checkpoint import load_model
    from ..data.omniglot import load_lake_runs
    from ..evaluate import evaluate_runs

    model, _, _ = load_model(args.model)
    runs = load_lake_runs(model.input_spec.size)
    with progress_bars(show_progress(args)) as progress:
        res = evaluate_runs(model, runs, tta=_tta(args, model), progress=progress)
    res.pop("primary_metric", None)
    emit(res, args.json, f"Lake one-shot runs: error {100 * res['error']:.2f}% "
                         f"({res['total'] - res['correct']} of {res['total']} wrong)")
    return 0


def eval_episodes(args: argparse.Namespace) -> int:
    """N-way K-shot episodes; with --baseline, two models on the same episodes."""
    from ..checkpoint import load_model
    from ..evaldata import load_eval_data
    from ..evaluate import compare_episodes, evaluate_episodes, seen_in_training

    def read(m: Any) -> Any:
        return load_eval_data(m, args.data, args.split, args.subset,
                              group_depth=args.group_depth, drawer_pattern=args.drawer_pattern)

    def check_unseen(run: str, card: dict[str, Any], classes: list[str]) -> int | None:
        seen = seen_in_training(card, classes)
        if seen:
            logger.warning("%d of the %d classes in %s were in %s's training data (e.g. %s): "
                           "episodes over them do not measure unseen classes", len(seen),
                           len(classes), args.data, run, seen[0])
        return None if seen is None else len(seen)

    model, _, card = load_model(args.model)
    data = read(model)
    seen = {"seen_in_training": check_unseen(args.model, card, data.class_names)}
    how = dict(way=args.way, shot=args.shot, queries=args.queries, episodes=args.episodes,
               within_group=args.group_depth == 1, use_drawers=args.drawer_pattern is not None,
               seed=args.seed)
    with progress_bars(show_progress(args)) as progress:
        if args.baseline is None:
            res = evaluate_episodes(model, data, tta=_tta(args, model), progress=progress,
                                    **how)
        else:
            base, _, base_card = load_model(args.baseline)
            # read the folder again only if the baseline reads it otherwise (another size)
            base_data = data if base.input_spec == model.input_spec else read(base)
            seen["baseline_seen_in_training"] = check_unseen(args.baseline, base_card,
                                                             base_data.class_names)
            res = compare_episodes(model, base, data, base_data, tta=_tta(args, model),
                                   baseline_tta=_tta(args, base), progress=progress, **how)
    res.pop("primary_metric", None)
    res.update({k: v for k, v in seen.items() if v is not None})
    text = (f"{args.way}-way {args.shot}-shot accuracy over {res['episodes']} episodes: "
            f"{100 * res['accuracy']:.2f}% +- {100 * res['ci95']:.2f}")
    if args.baseline is not None:
        text += (f"; baseline {100 * res['baseline_accuracy']:.2f}% +- "
                 f"{100 * res['baseline_ci95']:.2f}; difference {100 * res['difference']:+.2f} "
                 f"+- {100 * res['difference_ci95']:.2f} points (paired, the same episodes)")
    emit(res, args.json, text)
    return 0


def eval_retrieval(args: argparse.Namespace) -> int:
    """Leave-one-out retrieval."""
    from ..checkpoint import load_model
    from ..evaldata import load_eval_data
    from ..evaluate import evaluate_retrieval

    model, _, _ = load_model(args.model)
    data = load_eval_data(model, args.data, args.split, args.subset)
    with progress_bars(show_progress(args)) as progress:
        res = evaluate_retrieval(model, data, ks=args.k, tta=_tta(args, model),
                                 progress=progress)
    res.pop("primary_metric", None)
    recalls = ", ".join(f"R@{k} {100 * res[f'recall@{k}']:.2f}%" for k in args.k)
    emit(res, args.json, f"{res['queries']} queries over {res['classes']} classes: {recalls}, "
                         f"MAP@R {100 * res['map@r']:.2f}%, MRR {res['mrr']:.4f}")
    return 0


def eval_similarity(args: argparse.Namespace) -> int:
    """Correlation with graded pair scores."""
    from ..checkpoint import load_model
    from ..evaluate import evaluate_similarity

    model, _, _ = load_model(args.model)
    pairs = pair_columns(args).read(args.pairs)
    with progress_bars(show_progress(args)) as progress:
        res = evaluate_similarity(model, pairs, progress=progress)
    emit(res, args.json, f"{res['pairs']} pairs: Spearman {res['spearman']:.2f}, Pearson "
                         f"{res['pearson']:.2f} (x100)")
    return 0


def eval_identification(args: argparse.Namespace) -> int:
    """Closed- and open-set identification against a gallery built from a folder."""
    from ..checkpoint import load_model, threshold_of
    from ..evaldata import identification_sets
    from ..evaluate import evaluate_identification

    model, _, card = load_model(args.model)
    sets = identification_sets(model, args.gallery_from, args.queries, args.unknown,
                               args.shots)
    with progress_bars(show_progress(args)) as progress:
        res = evaluate_identification(model, sets.references, sets.queries, sets.unknown,
                                      threshold_of(card), args.far, args.class_score,
                                      _tta(args, model), progress=progress)
    res.pop("primary_metric", None)
    summary = (f"{len(sets.queries)} queries, {res['classes']} enrolled classes "
               f"({res['references']} references): rank-1 {100 * res['rank1']:.2f}%")
    if "dir_at_far" in res:
        summary += "; " + ", ".join(f"DIR@FAR={f} {100 * v:.2f}%"
                                    for f, v in res["dir_at_far"].items())
    emit(res, args.json, summary)
    return 0
