"""Reproduce siamkit's Omniglot table: train each config, test on Lake's 20 one-shot runs.

Prints a table (error, training minutes, images/s) and writes JSON.

    python benchmarks/omniglot.py                       # demo preset and configs/omniglot.yaml
    python benchmarks/omniglot.py --config configs/omniglot.yaml --out results/full.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from importlib import resources
from pathlib import Path

from siamkit.checkpoint import load_model
from siamkit.config import load_config
from siamkit.data.omniglot import load_lake_runs
from siamkit.evaluate import evaluate_runs
from siamkit.machine import describe
from siamkit.training import train

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = {"Koch et al. (2015) Siamese ConvNet": 8.0, "people": 4.5,
             "Bayesian Program Learning": 3.3}


def demo_preset() -> Path:
    return Path(str(resources.files("siamkit") / "presets" / "omniglot_demo.yaml"))


def run_one(config_path: Path, overrides: list[str], runs_dir: Path) -> dict:
    config = load_config(config_path, overrides)
    out = runs_dir / config_path.stem
    t = time.perf_counter()
    res = train(config, out, progress=False, overwrite=True)
    model, config, card = load_model(out)
    runs = load_lake_runs(card["input"]["size"])
    ev = evaluate_runs(model, runs, tta=config.eval.tta)
    ev_plain = evaluate_runs(model, runs, tta=0) if config.eval.tta else ev
    return {
        "config": str(config_path.relative_to(ROOT) if config_path.is_relative_to(ROOT)
                      else config_path.name),
        "overrides": overrides,
        "error_percent": round(100 * ev["error"], 2),
        "error_percent_without_tta": round(100 * ev_plain["error"], 2),
        "tta_views": config.eval.tta,
        "train_minutes": round(res.minutes, 2),
        "train_steps": res.steps,
        "images_per_second": round(res.items_per_second, 1),
        "best_val_accuracy": round(res.best_metric, 4),
        "wall_minutes_with_eval": round((time.perf_counter() - t) / 60, 2),
        "per_run_errors": [r["error"] for r in ev["per_run"]],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", type=Path, default=None,
                        help="config to run (repeatable); default: demo preset and "
                             "configs/omniglot.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="override applied to every config, e.g. optim.steps=10")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "benchmark")
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "omniglot.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    configs = args.config or [demo_preset(), ROOT / "configs" / "omniglot.yaml"]
    rows = [run_one(c, args.overrides, args.runs_dir) for c in configs]
    report = {
        "benchmark": "Omniglot, Lake et al. (2015) 20 within-alphabet 20-way one-shot runs",
        "machine": describe(),
        "published_error_percent": PUBLISHED,
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    header = f"{'config':<42} {'error %':>8} {'no TTA %':>9} {'train min':>10} {'img/s':>8}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['config']:<42} {r['error_percent']:>8.2f} "
              f"{r['error_percent_without_tta']:>9.2f} {r['train_minutes']:>10.1f} "
              f"{r['images_per_second']:>8.0f}")
    for name, err in PUBLISHED.items():
        print(f"{'(published) ' + name:<42} {err:>8.2f}")
    print(f"JSON written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
