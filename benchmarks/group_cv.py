"""Group k-fold cross-validation of a verification config on its non-test groups.

A small dataset's validation split (4 face subjects, say) saturates and cannot rank
configs. This script never touches the split file's test groups: it pools the train
and validation groups, cuts them into ``--folds`` group-disjoint folds, trains on all
but one fold and scores every pair of the held-out fold (AUC, EER). The mean over the
folds is what to tune on. Prints a table and writes JSON. With ``--seeds N`` every fold
trains N models (seeds config.seed, +1, ...), joins them as ``siamkit ensemble`` does and
scores the joined model as it is deployed (models with a learned head, which do not join,
by their averaged scores); each seed's own EER is kept beside it: how much of a difference
is one run's luck. (Before 2026-11-30 the joined score was the seeds' averaged distances:
4.07% instead of 4.10% for the faces config with 5 seeds.) ``--scores-out`` writes every held-out
pair's score (``fold,score,label``): out-of-fold validation scores on which ``siamkit
calibrate --scores`` fits the threshold of a model refitted on all the non-test groups.

Where the groups are few, one dealing of them into folds is itself luck: ``--repeats R``
deals them R times (fold seeds ``--fold-seed`` .. + R - 1) and reports the mean EER over
all R x folds held-out folds with a 95% interval. The folds share training groups, so the
interval uses Nadeau and Bengio's (2003) corrected variance, (1 / J + n_test / n_train)
times the folds' variance for J folds, with Student's t (J - 1 degrees of freedom): a plain
standard error over dependent folds would be too narrow. Configs with groups (a writer's
genuine and forged classes, ``data.group_pattern``) are folded by group, and with
``eval.calibrate_on: skilled_pairs`` scored on the held-out writers' skilled-forgery pairs
(genuine-genuine against genuine-forgery) instead of all pairs.

    python benchmarks/group_cv.py --config configs/att_faces.yaml
    python benchmarks/group_cv.py --config configs/att_faces.yaml --set optim.steps=600 \
        --out benchmarks/results/faces_cv_600.json
    python benchmarks/group_cv.py --config configs/att_faces.yaml --seeds 3
    python benchmarks/group_cv.py --config configs/att_faces.yaml --seeds 5 \
        --runs-dir runs/cv_s5 --scores-out runs/cv_s5/oof_scores.csv
    python benchmarks/group_cv.py --config configs/signatures.yaml --repeats 3
    python benchmarks/group_cv.py --config configs/att_faces.yaml --repeats 5 \
        --set optim.p=8 --baseline runs/cv_faces_r5.json   # paired: same dealings

``--baseline`` compares with another report of the same dealings fold by fold. The folds'
people differ far more in difficulty than two configs do, so the two means' intervals
overlap where the paired difference's does not.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import shlex
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
from scipy import stats

from siamkit.checkpoint import load_model
from siamkit.config import config_to_dict, load_config
from siamkit.data.pairs import all_pairs, skilled_pairs
from siamkit.data.splits import classes_in, split_units
from siamkit.embedding import embed_images
from siamkit.ensemble import ensemble_runs
from siamkit.evaluate import score_pairs, verification_report
from siamkit.machine import describe
from siamkit.training import load_training_data, train

ROOT = Path(__file__).resolve().parents[1]


def folds_of(groups: list[str], k: int, seed: int) -> list[list[str]]:
    """``groups`` shuffled with ``seed`` and dealt into ``k`` folds of near-equal size."""
    order = np.random.default_rng(seed).permutation(sorted(groups))
    return [sorted(order[i::k].tolist()) for i in range(k)]


# how a trained model is scored, not how it trains: --reuse may score again with others
SCORING = ("tta", "mirror")


def _score(model, images, i, j, config) -> tuple[np.ndarray, bool]:
    """Scores of the pairs (i, j) of ``images`` by ``model``, with the test-time views of
    ``config`` (this command's: ``eval.tta``, ``eval.mirror``)."""
    emb = embed_images(model, images, tta=config.eval.tta, mirror=config.eval.mirror)
    return score_pairs(model, emb, i, j), model.higher_is_closer


def _trained_as(config) -> dict:
    """``config`` without its scoring settings: what a reused model must have trained with."""
    d = config_to_dict(config)
    d["eval"] = {k: v for k, v in d["eval"].items() if k not in SCORING}
    return d


def run_fold(config, data, train_groups, held_out, out: Path, seeds: int = 1,
             reuse: bool = False) -> dict:
    """Train on ``train_groups`` (``seeds`` times, seeds config.seed, +1, ...) and score
    every pair of ``held_out``; with several seeds also their ensemble (``siamkit
    ensemble``). With ``reuse``, a run folder that already holds a model is not retrained.
    The row's ``scores`` and ``same`` are the fold's final pair scores and labels."""
    fold = data.subset_classes(classes_in(data, held_out))
    if config.eval.calibrate_on == "skilled_pairs":  # genuine-genuine vs genuine-forgery
        labels = fold.labels.numpy()
        fold_groups = split_units(fold)
        i, j, same = skilled_pairs([fold.class_names[c] for c in labels],
                                   [fold_groups[c] for c in labels])
    else:
        i, j, same = all_pairs(fold.labels.numpy())
    # every other group (the split file's test groups, groups left out by --train-groups)
    # as "test": named, so training knows they are left out on purpose. One file for the
    # fold's seeds (beside the fold's folder), so they share a config and join an ensemble.
    rest = sorted(set(split_units(data)) - set(train_groups) - set(held_out))
    split = out.with_name(f"{out.name}.split.json")
    groups = {"train": train_groups, "val": held_out, "test": rest}
    if reuse and split.is_file() and json.loads(split.read_text()) != groups:
        raise SystemExit(f"--reuse: {split} holds other folds than this command's (another "
                         f"--folds, --fold-seed or --train-groups?); its models would have "
                         f"trained on held-out groups. Train again without --reuse")
    split.parent.mkdir(parents=True, exist_ok=True)
    split.write_text(json.dumps(groups))
    config.data.split_file = str(split)
    # validate only at the end, so the held-out fold never picks a checkpoint
    config.eval.every = config.optim.steps
    scores, runs, minutes, reused = [], [], 0.0, 0
    base_seed = config.seed
    for s in range(seeds):
        config.seed = base_seed + s
        run = out if seeds == 1 else out / f"seed{config.seed}"
        runs.append(run)
        loaded = load_model(run) if reuse and (run / "model.safetensors").is_file() else None
        if loaded is not None:
            if _trained_as(loaded[1]) != _trained_as(config):
                raise SystemExit(f"--reuse: {run} was trained with another config than this "
                                 f"command's (or fold); train it again without --reuse")
            logging.getLogger(__name__).warning("reusing the model in %s", run)
            reused += 1
        else:
            t = time.perf_counter()
            train(config, run, overwrite=True)
            minutes += (time.perf_counter() - t) / 60
            loaded = load_model(run)
        sc, higher = _score(loaded[0], fold.images, i, j, config)
        scores.append(sc)
    reps = [verification_report(sc, same, higher) for sc in scores]
    row = {"held_out": held_out, "trained_on": train_groups, "auc": reps[0]["auc"],
           "eer": reps[0]["eer"], "pairs": int(len(same)), "train_minutes": round(minutes, 2),
           "reused_runs": reused, "scores": scores[0], "same": same}
    if seeds > 1:  # each seed alone, and the seeds joined as siamkit ensemble joins them
        if config.model.head:  # a learned head does not join an ensemble: average its scores
            row["scores"] = np.mean(scores, axis=0)
        else:
            joined = ensemble_runs(runs, out / "ensemble", calibrate=False, overwrite=True)
            row["scores"], higher = _score(load_model(joined)[0], fold.images, i, j, config)
        ens = verification_report(row["scores"], same, higher)
        row.update(seed_eers=[r["eer"] for r in reps], auc=ens["auc"], eer=ens["eer"],
                   mean_seed_eer=float(np.mean([r["eer"] for r in reps])))
    return row


def corrected_interval(eers: list[float], n_test: int, n_train: int) -> float:
    """Half-width of a 95% interval for the mean of ``eers`` (one per held-out fold, folds
    sharing training groups): Nadeau and Bengio's corrected variance (1 / J + n_test /
    n_train) s^2, with Student's t at J - 1 degrees of freedom. NaN for a single fold."""
    j = len(eers)
    if j < 2:
        return float("nan")
    var = (1 / j + n_test / n_train) * float(np.var(eers, ddof=1))
    return float(stats.t.ppf(0.975, j - 1) * np.sqrt(var))


def fold_key(row: dict) -> tuple:
    """What identifies a fold across runs: its dealing and its groups."""
    return row["fold_seed"], tuple(row["held_out"]), tuple(row["trained_on"])


def check_baseline(keys: list[tuple], baseline: list[dict]) -> None:
    """Exit, before anything trains, unless ``baseline`` holds exactly the folds ``keys``."""
    base = {fold_key(r) for r in baseline}
    missing = [k for k in keys if k not in base]
    if missing or len(base) != len(keys):
        raise SystemExit(f"--baseline: its folds are not this run's ({len(missing)} of "
                         f"{len(keys)} unmatched); run it with the same --folds, --fold-seed, "
                         f"--repeats and --train-groups")


def paired_difference(rows: list[dict], baseline: list[dict]) -> dict:
    """This run's EER minus ``baseline``'s on the same folds, with a 95% interval.

    Pairing takes out how hard each fold's people are, which dominates the spread of either
    run's EERs alone. The interval is Nadeau and Bengio's corrected one, over the fold-wise
    differences. Returns ``mean_difference``, ``ci95``, ``differences`` and ``folds``."""
    check_baseline([fold_key(r) for r in rows], baseline)
    base = {fold_key(r): r["eer"] for r in baseline}
    diffs = [r["eer"] - base[fold_key(r)] for r in rows]
    return {"mean_difference": float(np.mean(diffs)),
            "ci95": corrected_interval(diffs, len(rows[0]["held_out"]),
                                       len(rows[0]["trained_on"])),
            "differences": diffs, "folds": len(diffs)}


def write_scores(path: Path, rows: list[dict]) -> None:
    """Every fold's held-out pair scores as ``fold,score,label`` (label 1 = same)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["fold", "score", "label"])
        for k, row in enumerate(rows):
            for s, y in zip(row["scores"], row["same"], strict=True):
                w.writerow([k, repr(float(s)), int(y)])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--fold-seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1,
                        help="deal the groups into folds this many times (fold seeds "
                             "--fold-seed, +1, ...); the mean over every held-out fold gets a "
                             "95%% interval")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "cv")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--seeds", type=int, default=1,
                        help="train this many seeds per fold; the fold's EER is then that of "
                             "their averaged scores (each seed's own EER is kept too)")
    parser.add_argument("--train-groups", type=int, default=None,
                        help="train on only this many of each fold's training groups (drawn "
                             "with --fold-seed): a learning curve over the number of groups")
    parser.add_argument("--reuse", action="store_true",
                        help="score the models already in --runs-dir (from an earlier run of "
                             "this command) instead of training them again; the --set of "
                             "eval.tta and eval.mirror may differ (test-time views)")
    parser.add_argument("--scores-out", type=Path, default=None,
                        help="write every held-out pair's score as CSV (fold,score,label): "
                             "out-of-fold validation scores for siamkit calibrate --scores")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="a report of this script on the same folds (--folds, "
                             "--fold-seed, --repeats, --train-groups): adds the fold-wise "
                             "paired difference of EER against it, with its 95%% interval")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    config = load_config(args.config, args.overrides)
    if args.repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    split = json.loads(Path(config.data.split_file).read_text())
    pool = sorted(set(split.get("train", [])) | set(split.get("val", [])))
    data = load_training_data(config)
    plan = []  # (fold seed, fold, held-out groups, training groups, run folder)
    for rep in range(args.repeats):
        fold_seed = args.fold_seed + rep
        runs_dir = args.runs_dir if args.repeats == 1 else args.runs_dir / f"repeat{rep}"
        for f, held_out in enumerate(folds_of(pool, args.folds, fold_seed)):
            train_groups = [g for g in pool if g not in held_out]
            if args.train_groups:
                rng = np.random.default_rng(fold_seed + 1000 * f)
                train_groups = sorted(rng.choice(train_groups, args.train_groups,
                                                 replace=False))
            plan.append((fold_seed, f, held_out, train_groups, runs_dir / f"fold{f}"))
    baseline = json.loads(args.baseline.read_text())["folds"] if args.baseline else None
    if baseline is not None:
        check_baseline([(s, tuple(h), tuple(t)) for s, _, h, t, _ in plan], baseline)
    rows = []
    for fold_seed, f, held_out, train_groups, run_dir in plan:
        cfg = load_config(args.config, args.overrides)
        rows.append(run_fold(cfg, data, train_groups, held_out, run_dir, args.seeds,
                             args.reuse))
        r = rows[-1]
        r["fold_seed"] = fold_seed
        alone = (f"  (seeds alone: {' / '.join(f'{100 * e:.2f}' for e in r['seed_eers'])}%)"
                 if args.seeds > 1 else "")
        print(f"fold seed {fold_seed}, fold {f}: AUC {r['auc']:.4f}  "
              f"EER {100 * r['eer']:.2f}%{alone}  ({r['train_minutes']:.1f} min)",
              flush=True)
    if args.scores_out:
        write_scores(args.scores_out, rows)
    for r in rows:
        del r["scores"], r["same"]
    eers = [r["eer"] for r in rows]
    report = {"config": str(args.config), "overrides": args.overrides, "folds": rows,
              "train_groups": args.train_groups, "seeds": args.seeds,
              "repeats": args.repeats, "fold_seeds": list(range(args.fold_seed,
                                                                 args.fold_seed + args.repeats)),
              "mean_eer": float(np.mean(eers)),
              "eer_ci95": corrected_interval(eers, len(rows[0]["held_out"]),
                                             len(rows[0]["trained_on"])),
              "interval": "95%, Nadeau-Bengio corrected variance over the held-out folds",
              "mean_auc": float(np.mean([r["auc"] for r in rows])),
              "command": shlex.join(["python", "benchmarks/group_cv.py", *argv]),
              "measured": date.today().isoformat(), "machine": describe()}
    if baseline is not None:
        diff = paired_difference(rows, baseline)
        report["against_baseline"] = {
            "baseline": str(args.baseline), **diff,
            "interval": "95%, Nadeau-Bengio corrected variance of the fold-wise differences"}
        print(f"against {args.baseline}: EER {100 * diff['mean_difference']:+.2f} points "
              f"(95% CI +-{100 * diff['ci95']:.2f}) over {diff['folds']} paired folds")
    if args.seeds > 1:
        report["mean_seed_eer"] = float(np.mean([r["mean_seed_eer"] for r in rows]))
        print(f"seeds alone: mean EER {100 * report['mean_seed_eer']:.2f}%")
    print(f"mean EER {100 * report['mean_eer']:.2f}% (95% CI +-{100 * report['eer_ci95']:.2f})"
          f"  mean AUC {report['mean_auc']:.4f}  "
          f"{' '.join(args.overrides)}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
