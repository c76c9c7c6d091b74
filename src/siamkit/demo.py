"""The demo: train the Omniglot preset on the background set, test on Lake's 20 runs.

    >>> result = run_demo("runs/demo", ["optim.time_limit_minutes=5"])
    >>> result["error"]  # 20-way one-shot error over 400 queries
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text
from .checkpoint import load_model
from .config import load_config
from .data.omniglot import load_lake_runs
from .evaluate import evaluate_runs
from .progress import Progress
from .training import train

__all__ = ["PRESET", "RESULTS", "PUBLISHED_ERROR", "run_demo"]

logger = logging.getLogger(__name__)

PRESET = "omniglot_demo.yaml"  # in siamkit/presets
RESULTS = "results.json"  # written into the run folder
PUBLISHED_ERROR = {"Koch et al. Siamese ConvNet": 0.080, "people": 0.045,
                   "Bayesian Program Learning": 0.033}


def run_demo(out: str | Path, overrides: Sequence[str] = (), progress: bool = False,
             runs_progress: Progress | None = None) -> dict[str, Any]:
    """Train the shipped Omniglot preset (with ``overrides``, ``KEY=VALUE``) into the run
    folder ``out`` (replaced), test it on Lake's 20 within-alphabet one-shot runs, and
    write the results to ``out/results.json``.

    Args:
        out: the run folder (replaced on every demo).
        overrides: config overrides, as ``siamkit train --set`` takes them.
        progress: show training's progress bar.
        runs_progress: counts the runs tested (:mod:`siamkit.progress`).

    Returns:
        What ``results.json`` holds: ``task``, ``error``, ``accuracy``, ``per_run``,
        ``train_minutes``, ``train_steps``, ``images_per_second``, ``best_val_accuracy``
        and the ``published_error`` of other methods.
    """
    preset = resources.files("siamkit") / "presets" / PRESET
    with resources.as_file(preset) as path:
        config = load_config(path, list(overrides))
    logger.info("demo: training on Omniglot's background set (at most %s minutes), then "
                "testing on Lake's 20 one-shot runs", config.optim.time_limit_minutes)
    res = train(config, out, progress=progress, overwrite=True)
    model, config, _ = load_model(out)
    runs = load_lake_runs(model.input_spec.size)
    ev = evaluate_runs(model, runs, tta=config.eval.tta, progress=runs_progress)
    result = {
        "task": "Omniglot, Lake et al. (2015) 20-way within-alphabet one-shot runs",
        "error": ev["error"], "accuracy": ev["accuracy"], "per_run": ev["per_run"],
        "train_minutes": res.minutes, "train_steps": res.steps,
        "images_per_second": res.items_per_second, "best_val_accuracy": res.best_metric,
        "published_error": dict(PUBLISHED_ERROR),
    }
    atomic_write_text(Path(out) / RESULTS, json.dumps(result, indent=2))
    return result
