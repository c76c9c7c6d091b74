"""``siamkit calibrate``, ``verify``, ``eval verification`` and ``report``: decisions on
pairs at a threshold fitted on validation pairs."""

from __future__ import annotations

import argparse
from typing import Any

from .common import (
    CommandError,
    add_command,
    add_json,
    add_progress,
    add_text_columns,
    emit,
    pair_columns,
    progress_bars,
    show_progress,
)

__all__ = ["add_commands"]


def add_commands(sub: Any, eval_sub: Any) -> None:
    """Register ``calibrate``, ``verify``, ``eval verification`` and ``report``."""
    c = add_command(sub, "calibrate", "fit the decision threshold on validation pairs")
    _add_pair_source(c, default_subset="val").add_argument(
        "--scores", help="CSV with columns score and label (1 = same, or --positive-label): "
                         "validation scores computed elsewhere the way this model scores, "
                         "e.g. the out-of-fold scores of benchmarks/group_cv.py for a model "
                         "refitted on all non-test groups")
    c.add_argument("--allow-test", action="store_true",
                   help="permit calibrating on the test subset of --split (not advised)")
    c.add_argument("--target", default="eer",
                   help="eer, accuracy, f1, far=<max FAR> or precision=<min precision>")
    c.set_defaults(handler=calibrate)
    v = add_command(sub, "verify", "are two images (or texts) of the same class?")
    v.add_argument("--model", required=True, help="run folder of a calibrated model")
    v.add_argument("a", help="first image (a text model: the first text)")
    v.add_argument("b", help="second image (or text)")
    add_json(v)
    v.set_defaults(handler=verify)
    e = add_command(eval_sub, "verification", "verification metrics at the frozen threshold")
    _add_pair_source(e)
    e.add_argument("--ci", type=int, nargs="?", const=1000, default=0, metavar="RESAMPLES",
                   help="add bootstrap 95%% intervals for AUC, EER, accuracy and F1 "
                        "(1000 resamples of the pairs when given without a number)")
    e.set_defaults(handler=eval_verification)
    r = add_command(sub, "report", "HTML report: metrics, ROC/DET, histograms, errors, map")
    _add_pair_source(r)
    r.add_argument("--out", required=True, help="HTML file to write")
    r.set_defaults(handler=report)


def _add_pair_source(p: argparse.ArgumentParser, default_subset: str = "test") -> Any:
    """The flags of :class:`siamkit.pairsets.PairSource`; returns the group of the
    mutually exclusive sources."""
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
                   help="label value meaning 'same' in --pairs (and calibrate's --scores)")
    p.add_argument("--split", help="split file (siamkit split): keep only pairs whose two "
                                   "images are in groups of --subset (default: every pair)")
    p.add_argument("--subset", default=default_subset, choices=("train", "val", "test"),
                   help="which groups of --split to keep")
    p.add_argument("--group-pattern", default=None,
                   help="regex on an image's folder name whose group 1 is its group "
                        r"(e.g. '^(\d+)' puts 001 and 001_forg in writer 001; default: the split "
                        "file's, else the folder name)")
    p.add_argument("--tta", type=int, default=None,
                   help="test-time augmentation views (default: the model's eval.tta, which "
                        "its stored threshold was calibrated with)")
    add_text_columns(p.add_argument_group("text and record pair files"), scores=False)
    add_progress(p)
    add_json(p)
    return src


def _pair_source(args: argparse.Namespace) -> Any:
    from ..pairsets import PairSource

    return PairSource(args.data, args.pairs, args.all_pairs, args.skilled_pairs, args.split,
                      args.subset, args.group_pattern, pair_columns(args))


def _scored(args: argparse.Namespace) -> tuple[Any, Any, dict]:
    """(model, its scores of the pairs the flags name, its card)."""
    from ..checkpoint import load_model
    from ..pairsets import score_pair_source

    model, _, card = load_model(args.model)
    with progress_bars(show_progress(args)) as progress:
        scored = score_pair_source(model, _pair_source(args), args.tta, progress)
    return model, scored, card


def calibrate(args: argparse.Namespace) -> int:
    """Fit the threshold on validation pairs (or scores) and store it in the model card."""
    from ..calibrate import ThresholdCalibrator, check_direction, parse_target
    from ..checkpoint import load_model, update_card
    from ..data.textpairs import read_scores

    target, value = parse_target(args.target)
    if args.split and args.subset == "test" and not args.allow_test:
        raise CommandError("refusing to calibrate on the test subset: the threshold must come "
                           "from validation data (use --subset val, or --allow-test)")
    if args.scores:  # validation scores computed elsewhere (out-of-fold, say)
        ignored = [f"--{k.replace('_', '-')}" for k in ("data", "split", "group_pattern", "tta")
                   if getattr(args, k) is not None]
        if ignored:
            raise CommandError(f"--scores brings its own scores: {', '.join(ignored)} would "
                               f"be ignored, so drop it")
        model = load_model(args.model)[0]
        scores, same = read_scores(args.scores, args.positive_label)
        check_direction(scores, same, model.higher_is_closer, args.scores)
        source = f"scores in {args.scores}"
    else:
        model, scored, _ = _scored(args)
        scores, same, source = scored.scores, scored.same, _pair_source(args).describe()
    cal = ThresholdCalibrator(target, value, model.higher_is_closer).fit(scores, same)
    update_card(args.model, {"threshold": {**cal.to_dict(), "source": source}})
    res = {"threshold": cal.threshold_, "target": args.target, "validation": cal.validation_}
    emit(res, args.json, f"threshold {cal.threshold_:.6g} ({args.target}) stored in "
                         f"{args.model}; on these pairs: accuracy "
                         f"{cal.validation_['accuracy']:.4f}, FAR {cal.validation_['far']:.4f}, "
                         f"FRR {cal.validation_['frr']:.4f}")
    return 0


def verify(args: argparse.Namespace) -> int:
    """Same or different, at the calibrated threshold."""
    from ..checkpoint import load_model, require_calibrator
    from ..inference import score_items

    model, _, card = load_model(args.model)
    cal = require_calibrator(card, args.model)
    score = score_items(model, args.a, args.b)
    same = bool(cal.predict([score])[0])
    res = {"score": score, "same": same, "threshold": cal.threshold_}
    emit(res, args.json, f"{'same' if same else 'different'} (score {score:.4g}, threshold "
                         f"{cal.threshold_:.4g})")
    return 0


def eval_verification(args: argparse.Namespace) -> int:
    """Verification metrics at the frozen threshold."""
    from ..checkpoint import calibrator_of
    from ..evaluate import verification_report

    model, scored, card = _scored(args)
    cal = calibrator_of(card)
    res = verification_report(scored.scores, scored.same, model.higher_is_closer, cal,
                              ci=args.ci)
    summary = (f"{res['positives']} same / {res['negatives']} different pairs: AUC "
               f"{res['auc']:.4f}, EER {100 * res['eer']:.2f}%")
    if args.ci:
        lo, hi = res["ci95"]["eer"]
        summary += f" (95% CI {100 * lo:.2f}-{100 * hi:.2f}%)"
    if cal is not None:
        summary += (f"; at the frozen threshold {res['threshold']:.4g}: accuracy "
                    f"{100 * res['accuracy']:.2f}%, F1 {res['f1']:.4f}")
    emit(res, args.json, summary)
    return 0


def report(args: argparse.Namespace) -> int:
    """The HTML verification report."""
    from ..checkpoint import calibrator_of
    from ..report import pair_report, write_report

    model, scored, card = _scored(args)
    metrics, text = pair_report(scored, model.higher_is_closer, calibrator_of(card),
                                title=f"siamkit verification report: {args.model} on "
                                      f"{args.data or args.pairs}")
    out = write_report(args.out, text)
    emit({**metrics, "report": str(out)}, args.json, f"report written to {out}")
    return 0
