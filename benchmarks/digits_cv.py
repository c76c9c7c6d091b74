"""The tabular example: scikit-learn's digits, an MLP twin, one-shot on unseen digits.

1. Validation (what the config was chosen by): three class folds of the training digits
   (train on 3 of 0-4, 2-way one-shot on the other 2), for ``configs/digits.yaml`` with any
   ``--set`` overrides, next to nearest neighbour on the raw features.
2. Test (``--test``): train on digits 0-4 as the config says, 5-way one-shot on 5-9.

``--table`` runs the same through the generic table path instead of the digits loader: the
digits are written out as a CSV (``p0..p63`` as 0-16 counts, a ``digit`` column), trained
with ``data.dataset=table`` (featuriser fitted on the training digits) and evaluated on the
rows featurised as the model card says.

Prints a table and writes JSON.

    python benchmarks/digits_cv.py --test
    python benchmarks/digits_cv.py --test --table
    python benchmarks/digits_cv.py --set optim.steps=1500 --out /tmp/d.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
FOLDS = [(["0", "1", "2"], ["3", "4"]), (["2", "3", "4"], ["0", "1"]),
         (["0", "3", "4"], ["1", "2"])]


class _Raw(torch.nn.Module):
    """The identity: nearest neighbour on the raw features."""

    output_dim = 64

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _accuracy(model, data, classes: list[str], way: int, episodes: int) -> float:
    from siamkit.evaluate import evaluate_episodes

    d = data.subset_classes([data.class_names.index(c) for c in classes])
    return evaluate_episodes(model, d, way=way, shot=1, queries=1, episodes=episodes,
                             within_group=False, seed=0)["accuracy"]


def _write_csv(data, path: Path) -> Path:
    """The digits as a table: 64 pixel columns of 0-16 counts and a ``digit`` column."""
    with open(path, "w") as f:
        f.write(",".join([f"p{i}" for i in range(64)] + ["digit"]) + "\n")
        for x, y in zip(data.images.tolist(), data.labels.tolist(), strict=True):
            f.write(",".join(f"{16 * v:g}" for v in x) + f",{data.class_names[y]}\n")
    return path


def _train(config_path: Path, overrides: list[str], train: list[str], work: Path,
           table: Path | None = None):
    """(the trained model, the digits as that model's features)."""
    from siamkit.checkpoint import load_model
    from siamkit.config import load_config
    from siamkit.data.records import RecordFeaturizer
    from siamkit.data.tabular import load_digits, read_table, table_dataset
    from siamkit.training import train as run

    work.mkdir(parents=True, exist_ok=True)
    split = work / "split.json"
    # every digit not trained on is named (as "test"): none is left out unawares
    rest = sorted(set(map(str, range(10))) - set(train))
    split.write_text(json.dumps({"train": train, "val": [], "test": rest}))
    source = [] if table is None else ["data.dataset=table", f"data.root={table}",
                                       "data.label_column=digit"]
    cfg = load_config(config_path, [f"data.split_file={split}", f"optim.p={len(train)}",
                                    *source, *overrides])
    run(cfg, work / "run", overwrite=True)
    model, _, card = load_model(work / "run")
    if table is None:
        return model, load_digits()
    inp = card["input"]
    records, labels = read_table(table, "digit", inp["feature_columns"])
    return model, table_dataset(records, labels, RecordFeaturizer.from_dict(inp["featurizer"]),
                                str(table))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "digits.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--test", action="store_true", help="also the test figure (5-9)")
    parser.add_argument("--table", action="store_true",
                        help="train and evaluate through data.dataset=table (a CSV)")
    parser.add_argument("--out", type=Path, help="JSON (default benchmarks/results/digits.json"
                                                 ", or digits_table.json with --table)")
    args = parser.parse_args(argv)
    results = ROOT / "benchmarks" / "results"
    args.out = args.out or results / ("digits_table.json" if args.table else "digits.json")
    logging.getLogger("siamkit").setLevel(logging.WARNING)
    from siamkit.data.tabular import load_digits
    from siamkit.distances import EuclideanDistance
    from siamkit.siamese import SiameseNetwork

    data = load_digits()
    raw = SiameseNetwork(_Raw(), EuclideanDistance())
    report: dict = {"config": str(args.config), "overrides": args.set, "validation": {},
                    "source": "table (CSV)" if args.table else "sklearn:digits"}
    with tempfile.TemporaryDirectory() as tmp:
        table = _write_csv(data, Path(tmp) / "digits.csv") if args.table else None
        folds = []
        for k, (train, val) in enumerate(FOLDS):
            model, feats = _train(args.config, args.set, train, Path(tmp) / f"f{k}", table)
            folds.append({"train": train, "val": val,
                          "twin": _accuracy(model, feats, val, 2, args.episodes),
                          "raw": _accuracy(raw, data, val, 2, args.episodes)})
        report["validation"] = {"folds": folds,
                                "twin_mean": float(np.mean([f["twin"] for f in folds])),
                                "raw_mean": float(np.mean([f["raw"] for f in folds]))}
        rows = [("validation 2-way 1-shot (mean of 3 folds)", report["validation"]["twin_mean"],
                 report["validation"]["raw_mean"])]
        if args.test:
            train, test = [str(d) for d in range(5)], [str(d) for d in range(5, 10)]
            model, feats = _train(args.config, args.set, train, Path(tmp) / "test", table)
            report["test"] = {"way": 5, "shot": 1, "episodes": args.episodes,
                              "twin": _accuracy(model, feats, test, 5, args.episodes),
                              "raw": _accuracy(raw, data, test, 5, args.episodes)}
            rows.append(("test 5-way 1-shot on digits 5-9", report["test"]["twin"],
                         report["test"]["raw"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"{'':<44} {'MLP twin':>9} {'raw NN':>8}")
    for name, twin, base in rows:
        print(f"{name:<44} {100 * twin:>8.2f}% {100 * base:>7.2f}%")
    print(f"JSON written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
