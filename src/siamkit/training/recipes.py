"""Training from a config: ``train(config, out_dir)`` builds the data, model, objective,
validator and calibration a :class:`~siamkit.config.Config` names and runs the one
:class:`~siamkit.training.trainer.Trainer`. The CLI's ``siamkit train`` calls it; ``fit``
builds the same objects from Python values."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..builders import (
    build_augment,
    build_in_batch_loss,
    build_loss,
    build_miner,
    build_model,
    build_sampler,
)
from ..checkpoint import read_init_from, warm_start
from ..config import (
    GRADED_LOSSES,
    PAIR_DATASETS,
    Config,
    ConfigError,
    check_config,
    config_to_dict,
)
from ..data.images import ImageDataset
from ..data.records import RecordFeaturizer
from ..data.textpairs import TextPairs
from ..inputs import InputSpec
from ..siamese import SiameseNetwork
from .config_data import (
    TrainingData,
    load_pair_data,
    load_training_data,
    prepare_data,
    prepare_table,
)
from .items import ClassData, Items, PairData
from .objectives import ClassBatches, Objective, PairBatches
from .trainer import Callback, Trainer, TrainResult, TrainSettings, seed_everything
from .validation import EpisodeValidator, PairValidator, calibrate_classes, calibrate_pairs

__all__ = ["train", "settings_from_config"]

logger = logging.getLogger(__name__)

Init = tuple[Path, SiameseNetwork, dict] | None


def settings_from_config(config: Config) -> TrainSettings:
    """The trainer's settings a config's ``optim`` and ``eval`` sections say; pair datasets
    also validate before the first step (the pretrained encoder is the mark to beat)."""
    o = config.optim
    return TrainSettings(steps=o.steps, lr=o.lr, head_lr=o.head_lr,
                         weight_decay=o.weight_decay, warmup_steps=o.warmup_steps,
                         schedule=o.schedule, time_limit_minutes=o.time_limit_minutes,
                         eval_every=config.eval.every,
                         validate_first=config.data.dataset in PAIR_DATASETS,
                         threads=o.threads, precision=o.precision,
                         gather_embeddings=o.gather_embeddings,
                         keep_freed_memory=o.keep_freed_memory)


def train(config: Config, out_dir: str | Path, resume: bool = False, progress: bool = False,
          data: ImageDataset | tuple[TextPairs, TextPairs] | None = None,
          callbacks: Sequence[Callback] = (), overwrite: bool = False) -> TrainResult:
    """Train a Siamese network as ``config`` says, writing the run folder ``out_dir``.

    Args:
        config: the full configuration.
        out_dir: run folder; must be new or empty unless ``resume`` or ``overwrite``.
        resume: continue from the folder's saved state (same config but for the step
            budget, time limit, threads and validation cadence).
        progress: show a progress bar with loss and items/s (the CLI turns it on).
        data: already-loaded training data (otherwise loaded as the config says): an
            :class:`ImageDataset` for class data, (train, validation) :class:`TextPairs` for
            a pair dataset.
        callbacks: ``cb(step, loss)`` after every step; one returning True stops training
            there (after a validation and a checkpoint).
        overwrite: replace whatever ``out_dir`` holds.

    With ``optim.time_limit_minutes`` the learning rate follows whichever runs out first,
    steps or time, so it always anneals fully; a run is reproducible from its seed when
    the steps run out first.
    """
    check_config(config)
    init = (read_init_from(config.model.init_from, out_dir)
            if config.model.init_from and not resume else None)
    seed_everything(config.seed)
    build = _pair_run if config.data.dataset in PAIR_DATASETS else _class_run
    model, objective, validator, calibrate, about = build(config, data, init)
    trainer = Trainer(model, objective, settings_from_config(config), out_dir,
                      validator=validator, callbacks=callbacks,
                      card={"config": config_to_dict(config), **about},
                      resume_key=config_to_dict(config), calibrate=calibrate, resume=resume,
                      overwrite=overwrite, progress=progress)
    return trainer.fit()


def _class_data(config: Config, data: Any) -> tuple[TrainingData, RecordFeaturizer | None]:
    if data is not None and not isinstance(data, ImageDataset):
        raise ConfigError(f"data for data.dataset={config.data.dataset} is an ImageDataset "
                          f"(images or feature vectors with class labels), not "
                          f"{type(data).__name__}")
    if data is None and config.data.dataset == "table":
        return prepare_table(config)
    return prepare_data(config, data if data is not None else load_training_data(config)), None


def _class_run(config: Config, data: Any, init: Init) -> tuple[Any, ...]:
    """Model, objective, validator and calibration of a class-labelled run."""
    td, featurizer = _class_data(config, data)
    tabular = td.images.dim() == 2  # feature vectors for the MLP twin
    d = config.data
    if tabular:
        features = int(td.images.shape[1])
        config.model.encoder_args.setdefault("in_features", features)
        spec = InputSpec(kind="tabular", features=features,
                         featurizer=featurizer.to_dict() if featurizer else None,
                         label_column=d.label_column if featurizer else None,
                         feature_columns=featurizer.columns if featurizer else None)
        channels, size = 1, d.size
    else:
        channels, height, width = (int(v) for v in td.images.shape[1:])
        size = height if height == width else (height, width)
        spec = InputSpec(kind="image", channels=channels, size=size,
                         invert=d.invert or d.dataset == "omniglot", keep_aspect=d.keep_aspect,
                         tta=config.eval.tta, mirror=config.eval.mirror)
    logger.info("training on %d items of %d classes; validating on %s", len(td.labels),
                len(td.class_names),
                f"{td.val_set.num_classes} classes" if td.val_set else "nothing")
    model = build_model(config.model, channels, size)
    model.input_spec = spec
    if init is not None:
        warm_start(model, init)
    o, e = config.optim, config.eval
    channels_last = o.channels_last and not tabular
    if channels_last:  # convolutions run faster on CPU with both in channels-last order
        model = model.to(memory_format=torch.channels_last)
    objective = ClassBatches(
        ClassData(Items(td.images), td.labels, td.class_names, td.groups),
        build_loss(config, model, num_classes=len(td.class_names)),
        build_sampler(config, td.labels.numpy(), td.groups, td.class_names),
        build_miner(config), build_augment(config),
        channels_last=channels_last, seed=config.seed)
    validator = calibrate = None
    if td.val_set is not None:
        val = ClassData.from_dataset(td.val_set)
        validator = EpisodeValidator(val, way=e.way, shot=e.shot, queries=e.queries,
                                     episodes=e.episodes, within_group=e.within_group,
                                     seed=config.seed)
        if e.calibrate_on != "none":
            def calibrate(run: Path) -> None:
                calibrate_classes(run, val, config.seed, skilled=e.calibrate_on == "skilled_pairs",
                                  group_names=td.val_set.group_names,
                                  target=e.calibrate_target)
    # the card names the classes trained on and validated on, so that an evaluation can
    # tell when its classes are not new to the model (evaluate.seen_in_training)
    about = {"data": {"train_classes": sorted(td.trained_classes),
                      "val_classes": sorted(td.val_set.class_names) if td.val_set else []}}
    return model, objective, validator, calibrate, about


def _pair_data(config: Config, data: Any) -> tuple[TextPairs, TextPairs]:
    if data is None:
        return load_pair_data(config)
    if (isinstance(data, tuple) and len(data) == 2
            and all(isinstance(x, TextPairs) for x in data)):
        return data
    raise ConfigError(f"data for data.dataset={config.data.dataset} is a (train, validation) "
                      f"tuple of TextPairs, not {type(data).__name__}")


def _pair_run(config: Config, data: Any, init: Init) -> tuple[Any, ...]:
    """Model, objective, validator and calibration of a run on a pair dataset."""
    lc, pc = config.loss, config.pairs
    train_pairs, val_pairs = _pair_data(config, data)
    graded = train_pairs.score is not None
    if graded != (lc.name in GRADED_LOSSES):
        raise ConfigError("graded pairs (a score column) train with loss.name=cosine or "
                          "cosent, and those losses need graded pairs")
    logger.info("training on %d pairs of %d texts; validating on %d pairs", len(train_pairs),
                len(train_pairs.texts), len(val_pairs))
    fields = config.model.encoder_args.get("fields") if config.model.encoder == "text" else None
    if fields and train_pairs.records is not None:
        unnamed = sorted({k for r in train_pairs.records for k in r if r[k]} - set(fields))
        if unnamed:
            raise ConfigError(f"model.encoder_args.fields must name every attribute of the "
                              f"records (an unnamed one runs into the field before it); "
                              f"missing: {unnamed}")
    spec, features = InputSpec(kind="text"), None
    if config.model.encoder == "mlp":  # records by their numeric / categorical attributes
        if train_pairs.records is None or val_pairs.records is None:
            raise ConfigError("model.encoder=mlp matches records by their attributes: it "
                              "needs record pairs (data.dataset=ditto)")
        featurizer = RecordFeaturizer(numeric_scaling=config.data.numeric_scaling).fit(
            train_pairs.records)
        config.model.encoder_args.setdefault("in_features", featurizer.dim)
        spec = InputSpec(kind="records", featurizer=featurizer.to_dict())
        logger.info("record features: numeric %s, categorical %s, left to text: %s",
                    list(featurizer.numeric), list(featurizer.categorical), featurizer.skipped)

        def features(pairs: TextPairs) -> torch.Tensor:
            return torch.from_numpy(featurizer.transform(pairs.records))

    model = build_model(config.model, 1, config.data.size)
    model.input_spec = spec
    if init is not None:
        warm_start(model, init)
    train_data = PairData.from_text_pairs(train_pairs, features(train_pairs) if features else None)
    val_data = PairData.from_text_pairs(val_pairs, features(val_pairs) if features else None)
    objective: Objective = PairBatches(
        train_data, build_loss(config, model), config.optim.pair_batch,
        pos_fraction=pc.pos_fraction, positives_only=lc.name == "mnrl",
        in_batch=build_in_batch_loss(config, model), in_batch_weight=lc.in_batch,
        hard_negatives=pc.hard_negatives, mine_every=pc.mine_every, seed=config.seed)
    target = config.eval.calibrate_target
    calibrate = None
    if not graded and config.eval.calibrate_on != "none":
        def calibrate(run: Path) -> None:
            calibrate_pairs(run, val_data, target)
    return model, objective, PairValidator(val_data, target), calibrate, {}
