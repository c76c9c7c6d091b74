"""Several trained runs of one config joined into one model: a seed ensemble.

On small data (a dozen face identities, say) one training run's luck moves the error
rate by points; the same config trained with other seeds and scored together varies
less. Each member is trained as its own run (``siamkit train ... --set seed=1``); this
module puts their encoders side by side in an :class:`~siamkit.encoders.EnsembleEncoder`
(the embedding is their concatenation, so a squared Euclidean distance is the sum of
the members') and writes an ordinary run folder that every command loads. Its
threshold is calibrated afresh on the validation split, because no member's threshold
fits the sum.
"""

from __future__ import annotations

import copy
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

from .builders import build_model
from .checkpoint import RunError, load_model, save_model
from .config import config_to_dict

__all__ = ["ensemble_runs"]

logger = logging.getLogger(__name__)


def _comparable(config: object) -> dict:
    """The config without what may differ between members: seed, time limit, threads."""
    d = config_to_dict(config)  # a fresh copy (dataclasses.asdict)
    d.pop("seed", None)
    for name in ("time_limit_minutes", "threads"):
        d.get("optim", {}).pop(name, None)
    return d


def ensemble_runs(runs: Sequence[str | Path], out: str | Path, calibrate: bool = True,
                  overwrite: bool = False) -> Path:
    """Join the trained runs ``runs`` (one config, other seeds) into the run folder ``out``.

    With ``calibrate``, the joined model's equal-error-rate threshold is fitted on the
    config's validation split, as training does (only with a ``data.split_file``: without
    one, each seed held out other groups); otherwise the card has no threshold.
    """
    if len(runs) < 2:
        raise RunError("an ensemble needs at least two trained runs")
    loaded = [load_model(r) for r in runs]
    model0, config0, card0 = loaded[0]
    if config0.model.encoder in ("text", "ensemble") or model0.head is not None:
        raise RunError(f"{runs[0]}: only image and tabular models with a fixed distance "
                       f"join an ensemble (not encoder={config0.model.encoder!r} or a "
                       "learned head)")
    for run, (_, config, card) in zip(runs[1:], loaded[1:], strict=True):
        if _comparable(config) != _comparable(config0) or card.get("input") != card0.get(
                "input"):
            raise RunError(f"{run} was trained with another config than {runs[0]}: an "
                           "ensemble joins runs of one config that differ only in seed")
    seeds = [c.seed for _, c, _ in loaded]
    if len(set(seeds)) < len(seeds):
        logger.warning("members share a seed (%s): they may be the same model", seeds)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise RunError(f"{out} exists and is not empty (overwrite=True replaces it)")
        shutil.rmtree(out)
    config = copy.deepcopy(config0)
    config.model.encoder = "ensemble"
    config.model.encoder_args = {"members": len(runs), "member": config0.model.encoder,
                                 **config0.model.encoder_args}
    inp = card0.get("input", {})
    joined = build_model(config.model, inp.get("channels", config.data.channels),
                         inp.get("size", config.data.size))
    for member, (model, _, _) in zip(joined.encoder.members, loaded, strict=True):
        member.load_state_dict(model.encoder.state_dict())
    joined.eval()
    save_model(out, joined, config, {"input": inp, "members": [
        {"run": str(r), "seed": s} for r, s in zip(runs, seeds, strict=True)]})
    logger.info("joined %d runs (seeds %s) into %s", len(runs), seeds, out)
    if calibrate and not config.data.split_file and len(set(seeds)) > 1:
        # without a split file each seed held out other validation groups: every group
        # trained some member, and no threshold fitted on them would be honest
        logger.warning("no data.split_file: the members' validation splits differ by seed, "
                       "so no threshold is calibrated (siamkit calibrate it on data no "
                       "member trained on)")
    elif calibrate:
        from .train import calibrate_on_validation, load_training_data, prepare_data

        td = prepare_data(config, load_training_data(config))
        if td.val_set is None:
            logger.warning("the config has no validation split: no threshold calibrated")
        else:
            calibrate_on_validation(out, td.val_set, config.seed,
                                    skilled=config.eval.calibrate_on == "skilled_pairs",
                                    tta=config.eval.tta)
    return out
