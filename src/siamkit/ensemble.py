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

from .checkpoint import RunError, load_model, save_model
from .config import PAIR_DATASETS, config_to_dict
from .data.records import RecordFeaturizer
from .distances import CosineSimilarity, create_distance, distance_spec
from .encoders import (
    EnsembleEncoder,
    create_encoder,
    encoder_spec,
    names_default_text_model,
)
from .progress import Progress, start
from .siamese import SiameseNetwork
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
    """The config without what may differ between members: seed, time limit, threads, and
    how a text run names the default MiniLM (None since 2026-12-06, a path before)."""
    d = config_to_dict(config)  # a fresh copy (dataclasses.asdict)
    d.pop("seed", None)
    for name in ("time_limit_minutes", "threads"):
        d.get("optim", {}).pop(name, None)
    model = d.get("model", {})
    args = model.get("encoder_args")
    if model.get("encoder") == "text" and isinstance(args, dict) and \
            names_default_text_model(args.get("model")):
        args["model"] = None
    return d


def _check_members(runs: Sequence[str | Path], loaded: list[tuple]) -> None:
    """Refuse runs that are not one model trained with other seeds."""
    model0, config0, card0 = loaded[0]
    if model0.head is not None or isinstance(model0.encoder, EnsembleEncoder):
        raise RunError(f"{runs[0]}: only models with a fixed distance join an ensemble "
                       f"(not an ensemble or a learned head)")
    spec0 = model0.input_spec
    for run, (model, config, card) in zip(runs[1:], loaded[1:], strict=True):
        spec = model.input_spec
        if config0 is None or config is None:  # trained from Python: the cards must agree
            if config is not config0 or card.get("model") != card0.get("model") or spec != spec0:
                raise RunError(f"{run} is another model than {runs[0]}: an ensemble joins "
                               f"runs of one model and data that differ only in seed")
            continue
        same_config = _comparable(config) == _comparable(config0)
        if same_config and spec != spec0 and spec.featurizer != spec0.featurizer:
            raise RunError(f"{run} featurises its table's rows otherwise than {runs[0]}: "
                           "table runs join when they trained on the same rows (one "
                           "data.split_file), so their featurisers agree")
        if not same_config or spec != spec0:
            raise RunError(f"{run} was trained with another config than {runs[0]}: an "
                           "ensemble joins runs of one config that differ only in seed")


def _join(models: list[SiameseNetwork]) -> SiameseNetwork:
    """The members' encoders side by side (their weights copied), scored as they were."""
    m0 = models[0]
    cosine = isinstance(m0.distance, CosineSimilarity)
    encoder = create_encoder("ensemble", members=len(models), member=encoder_spec(m0.encoder),
                             normalize_members=cosine, member_dim=m0.embedding_dim)
    joined = SiameseNetwork(encoder, create_distance(distance_spec(m0.distance)),
                            input_spec=m0.input_spec)
    for member, model in zip(encoder.members, models, strict=True):
        member.load_state_dict(model.encoder.state_dict())
    return joined.eval()


def ensemble_runs(runs: Sequence[str | Path], out: str | Path, calibrate: bool = True,
                  overwrite: bool = False, progress: Progress | None = None) -> Path:
    """Join the trained runs ``runs`` (one config, other seeds) into the run folder ``out``.

    With ``calibrate``, the joined model's threshold is fitted on the config's validation
    split as training does (its target: EER for images, ``eval.calibrate_target`` for
    labelled pairs), but only where every member held out the same validation data (a
    ``data.split_file``, or a validation pair file); otherwise the card has no threshold.
    Runs trained from Python (``fit``) join when their cards describe one model; they have
    no config to calibrate from (use ``siamkit calibrate``). Text members (one base model)
    are joined like the others; with a cosine distance each member's embedding is
    normalised, so the joined cosine is the mean of theirs. ``progress``
    (:mod:`siamkit.progress`) counts the runs loaded, then the calibration.
    """
    if len(runs) < 2:
        raise RunError("an ensemble needs at least two trained runs")
    tick = start(progress, "loading runs", len(runs))
    loaded = []
    for r in runs:
        loaded.append(load_model(r))
        tick(1)
    _check_members(runs, loaded)
    config0 = loaded[0][1]
    seeds = [c.seed if c is not None else None for _, c, _ in loaded]
    if config0 is not None and len(set(seeds)) < len(seeds):
        logger.warning("members share a seed (%s): they may be the same model", seeds)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise RunError(f"{out} exists and is not empty (overwrite=True replaces it)")
        shutil.rmtree(out)
    joined = _join([m for m, _, _ in loaded])
    facts = {"members": [{"run": str(r), "seed": s} for r, s in zip(runs, seeds, strict=True)]}
    if config0 is None:
        joined.save(out, facts)
        if calibrate:
            logger.warning("members trained from Python have no config to calibrate from: "
                           "no threshold (siamkit calibrate it on validation pairs)")
        return out
    config = copy.deepcopy(config0)
    config.model.encoder = "ensemble"
    config.model.encoder_args = {"members": len(runs), "member": config0.model.encoder,
                                 "normalize_members": config0.model.distance == "cosine",
                                 **config0.model.encoder_args}
    save_model(out, joined, config, facts)
    logger.info("joined %d runs (seeds %s) into %s", len(runs), seeds, out)
    if not calibrate:
        return out
    spec0 = joined.input_spec
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
