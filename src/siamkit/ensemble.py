"""Several trained runs of one config joined into one model: a seed ensemble.

On small data (a dozen face identities, say) one training run's luck moves the error
rate by points; the same config trained with other seeds and scored together varies
less. Each member is trained as its own run (``siamkit train ... --set seed=1``); this
module puts their encoders side by side in an :class:`~siamkit.encoders.EnsembleEncoder`
(the embedding is their concatenation, so a squared Euclidean distance is the sum of
the members'; with a cosine distance each member is normalised first, so the cosine is
the mean of theirs) and writes an ordinary run folder that every command loads. Image,
tabular, text and record twins join alike (text members share one tokenizer). Its
threshold is calibrated afresh on validation data no member trained on (the split file's
validation groups, or the validation pair file), because no member's threshold fits the
joined score.
"""

from __future__ import annotations

import copy
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch

from .builders import build_model
from .checkpoint import RunError, load_model, save_model
from .config import PAIR_DATASETS, config_to_dict
from .data.records import RecordFeaturizer
from .progress import Progress, start
from .training import (
    ClassData,
    PairData,
    calibrate_classes,
    calibrate_pairs,
    load_pair_data,
    load_training_data,
    prepare_data,
    prepare_table,
    val_is_seeded,
)

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
                  overwrite: bool = False, progress: Progress | None = None) -> Path:
    """Join the trained runs ``runs`` (one config, other seeds) into the run folder ``out``.

    With ``calibrate``, the joined model's threshold is fitted on the config's validation
    split as training does (its target: EER for images, ``eval.calibrate_target`` for
    labelled pairs), but only where every member held out the same validation data (a
    ``data.split_file``, or a validation pair file); otherwise the card has no threshold.
    Text members (one base model) are joined like the others; with a cosine distance each
    member's embedding is normalised, so the joined cosine is the mean of theirs.
    ``progress`` (:mod:`siamkit.progress`) counts the runs loaded, then the calibration.
    """
    if len(runs) < 2:
        raise RunError("an ensemble needs at least two trained runs")
    tick = start(progress, "loading runs", len(runs))
    loaded = []
    for r in runs:
        loaded.append(load_model(r))
        tick(1)
    model0, config0, card0 = loaded[0]
    if config0 is None:
        raise RunError(f"{runs[0]}: an ensemble joins runs trained from a config (siamkit "
                       f"train), which says how to rebuild and calibrate them")
    if config0.model.encoder == "ensemble" or model0.head is not None:
        raise RunError(f"{runs[0]}: only models with a fixed distance join an ensemble "
                       f"(not an ensemble or a learned head)")
    spec0 = model0.input_spec
    for run, (model, config, _) in zip(runs[1:], loaded[1:], strict=True):
        spec = model.input_spec
        same_config = config is not None and _comparable(config) == _comparable(config0)
        if same_config and spec != spec0 and spec.featurizer != spec0.featurizer:
            raise RunError(f"{run} featurises its table's rows otherwise than {runs[0]}: "
                           "table runs join when they trained on the same rows (one "
                           "data.split_file), so their featurisers agree")
        if not same_config or spec != spec0:
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
                                 "normalize_members": config0.model.distance == "cosine",
                                 **config0.model.encoder_args}
    joined = build_model(config.model, spec0.channels, spec0.size or config.data.size)
    joined.input_spec = spec0
    for member, (model, _, _) in zip(joined.encoder.members, loaded, strict=True):
        member.load_state_dict(model.encoder.state_dict())
    joined.eval()
    save_model(out, joined, config, {"members": [
        {"run": str(r), "seed": s} for r, s in zip(runs, seeds, strict=True)]})
    logger.info("joined %d runs (seeds %s) into %s", len(runs), seeds, out)
    if not calibrate:
        return out
    tick = start(progress, "calibrating", 1)
    pairs = config.data.dataset in PAIR_DATASETS
    if len(set(seeds)) > 1 and (val_is_seeded(config) if pairs
                                else not config.data.split_file):
        # each seed held out other validation data: all of it trained some member, and no
        # threshold fitted on it would be honest
        logger.warning("the members' validation data differ by seed (%s), so no threshold "
                       "is calibrated (siamkit calibrate it on data no member trained on)",
                       "carved out of the training pairs" if pairs else "no data.split_file")
    elif pairs:
        _, val = load_pair_data(config)
        if val.same is None or config.eval.calibrate_on == "none":
            logger.info("no threshold calibrated (graded pairs, or eval.calibrate_on=none)")
        else:
            features = None
            if spec0.featurizer is not None:  # records: their features, as the model reads
                f = RecordFeaturizer.from_dict(spec0.featurizer)
                features = torch.from_numpy(f.transform(val.records))
            calibrate_pairs(out, PairData.from_text_pairs(val, features),
                            config.eval.calibrate_target)
    else:
        td = (prepare_table(config)[0] if config.data.dataset == "table"
              else prepare_data(config, load_training_data(config)))
        if td.val_set is None:
            logger.warning("the config has no validation split: no threshold calibrated")
        else:
            calibrate_classes(out, ClassData.from_dataset(td.val_set), config.seed,
                              skilled=config.eval.calibrate_on == "skilled_pairs",
                              group_names=td.val_set.group_names)
    tick(1)
    return out
