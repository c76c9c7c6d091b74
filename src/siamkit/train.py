"""The training loop.

``train(config, out_dir)`` loads the data, holds out validation groups, builds model, loss,
miner and sampler from the config (:mod:`siamkit.builders`) and runs::

    for step in steps:
        batch -> augment -> embed -> mine -> loss -> backward -> optimiser step
        every N steps: validate on held-out groups, keep the best checkpoint, save state

The run folder gets ``model.safetensors`` (best by validation accuracy), ``config.json``
(config, input format, validation figures), ``state.pt`` (to resume), ``history.jsonl``
and ``train_summary.json``.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .augment import rotate_as_new_classes
from .builders import build_augment, build_loss, build_miner, build_model, build_sampler
from .calibrate import ThresholdCalibrator
from .checkpoint import (
    RunError,
    load_model,
    read_init_from,
    save_model,
    update_card,
    warm_start,
)
from .config import Config, ConfigError, OptimConfig, check_config, config_to_dict, data_root
from .data.images import ImageDataset, load_image_folder, with_groups_from_names
from .data.omniglot import load_omniglot
from .data.pairs import all_pairs, skilled_pairs
from .data.records import RecordFeaturizer
from .data.splits import classes_in, overlap, split_by_group, split_units
from .data.tabular import labelled_vectors, read_table
from .distributed import (
    average_gradients,
    barrier,
    broadcast_floats,
    gather_with_grad,
    shard,
)
from .distributed import setup as setup_distributed
from .evaluate import EpisodeEvaluator, embed_images, score_pairs, to_float, too_large
from .miners import Pairs

__all__ = ["train", "TrainResult", "TrainingData", "prepare_data", "prepare_table",
           "load_training_data", "lr_factor", "make_optimiser", "set_lr", "seed_everything",
           "calibrate_on_validation"]

logger = logging.getLogger(__name__)

# Keys a resumed run may change; any other difference from the saved config is refused.
RESUMABLE_CHANGES = {"optim.steps", "optim.time_limit_minutes", "optim.threads", "eval.every"}


@dataclass
class TrainResult:
    """What a finished run reports."""

    run_dir: Path
    steps: int
    best_metric: float
    best_step: int
    minutes: float
    images_per_second: float
    history: list[dict[str, Any]]


@dataclass
class TrainingData:
    """Training images (with rotated copies as extra classes) and the validation set."""

    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,)
    groups: np.ndarray | None  # group of each class
    class_names: list[str]
    val_set: ImageDataset | None


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_training_data(config: Config) -> ImageDataset:
    """The training images the config names (Omniglot's background set or an image folder)."""
    d = config.data
    if d.dataset == "omniglot":
        return load_omniglot("background", size=d.size)
    if d.dataset == "digits":
        from .data.tabular import load_digits

        return load_digits()
    if d.dataset == "table":  # its featuriser is fitted after the split: prepare_table
        raise ConfigError("data.dataset=table is loaded with its split by prepare_table")
    size = d.size if d.width is None else (d.size, d.width)
    data = load_image_folder(data_root(config), size=size, channels=d.channels, invert=d.invert,
                             group_depth=d.group_depth, keep_aspect=d.keep_aspect)
    if d.group_pattern:
        data = with_groups_from_names(data, d.group_pattern)
    return data


def prepare_table(config: Config) -> tuple[TrainingData, RecordFeaturizer]:
    """A class-labelled table (data.dataset=table): its classes are split first and the
    featuriser is fitted on the training rows alone, so no statistic of a validation or
    test row reaches the scaling; (training data, the fitted featuriser)."""
    d = config.data
    path = data_root(config)
    records, labels = read_table(path, d.label_column, d.feature_columns)
    if len(records) > 2**24:  # the row numbers below travel as float32
        raise ConfigError(f"{path}: {len(records)} rows; tables of up to 2**24 rows train")
    row_numbers = np.arange(len(records), dtype=np.float32)[:, None]
    data = labelled_vectors(row_numbers, labels, path)
    if d.group_pattern:  # e.g. a writer or identity in the class name
        data = with_groups_from_names(data, d.group_pattern)
    td = prepare_data(config, data)

    def rows(features: torch.Tensor) -> list[dict[str, str]]:
        return [records[i] for i in features[:, 0].long().tolist()]

    try:
        featurizer = RecordFeaturizer(numeric_scaling=d.numeric_scaling).fit(rows(td.images))
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    logger.info("table %s: %d rows of %d classes; numeric columns %s, categorical %s, "
                "skipped (free text) %s", path, len(records), len(set(labels)),
                list(featurizer.numeric), list(featurizer.categorical), featurizer.skipped)
    td.images = torch.from_numpy(featurizer.transform(rows(td.images)))
    if td.val_set is not None:
        td.val_set.images = torch.from_numpy(featurizer.transform(rows(td.val_set.images)))
    return td, featurizer


def _follow_split_file(config: Config, data: ImageDataset) -> tuple[ImageDataset,
                                                                     ImageDataset | None]:
    """Train and validation sets from a split file's groups (``siamkit split``)."""
    path = Path(config.data.split_file)
    if not path.is_file():
        where = "" if path.is_absolute() else f" (relative to the current directory, {Path.cwd()})"
        raise ConfigError(f"data.split_file {path}: no such file{where}; make one with "
                          f"siamkit split, or run from the folder the path is relative to")
    try:
        split = json.loads(path.read_text())
        train_g, val_g, test_g = (list(split.get(k, [])) for k in ("train", "val", "test"))
    except (OSError, json.JSONDecodeError, AttributeError) as exc:
        raise ConfigError(f"data.split_file {path}: unreadable ({exc})") from None
    for name, other in (("val", val_g), ("test", test_g)):
        shared = overlap(train_g, other)
        if shared and not config.data.allow_overlap:
            raise ConfigError(f"{path}: {len(shared)} groups are in both train and {name} "
                              f"(e.g. {shared[:3]}); set data.allow_overlap=true to accept")
    units = set(split_units(data))
    missing = sorted(set(train_g) - units)
    if missing:
        raise ConfigError(f"{path}: train groups not found in the data, e.g. {missing[:3]}")
    unlisted = sorted(units - set(train_g) - set(val_g) - set(test_g))
    if unlisted:  # e.g. a larger copy of the dataset than the split file was made from
        logger.warning("%s names %d of the data's %d groups; %d are in no split and unused "
                       "(e.g. %s): make a split file for this data with siamkit split",
                       path, len(units) - len(unlisted), len(units), len(unlisted),
                       unlisted[:3])
    val = data.subset_classes(classes_in(data, val_g)) if val_g else None
    return data.subset_classes(classes_in(data, train_g)), val


def prepare_data(config: Config, data: ImageDataset) -> TrainingData:
    """Hold out validation groups, then add rotated copies of training classes as classes."""
    if config.data.split_file:
        train_set, val_set = _follow_split_file(config, data)
    else:
        try:
            train_set, val_set = split_by_group(data, config.data.val_groups,
                                                config.data.val_fraction, config.seed)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    images, labels, groups = train_set.images, train_set.labels, train_set.groups
    names = list(train_set.class_names)
    turns = config.data.rotations
    if turns != [0]:
        images, labels = rotate_as_new_classes(images, labels, tuple(turns))
        names = [n if t == 0 else f"{n}@rot{90 * t}" for t in turns for n in train_set.class_names]
        if groups is not None:
            groups = np.concatenate([groups + i * (groups.max() + 1) for i in range(len(turns))])
    return TrainingData(images, labels, groups, names, val_set)


def make_optimiser(model: nn.Module, o: OptimConfig, extra: list[nn.Parameter] | None = None
                   ) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters of ``model`` (and ``extra``, e.g. a loss's proxies);
    with ``o.head_lr`` set, the parameters that start untrained beside a pretrained encoder
    (the learned head, a field-wise text encoder's field weights) at that rate: they learn
    at another pace. :func:`set_lr` scales each group's peak rate.

    Frozen parameters (``requires_grad=False``) are left out: AdamW would skip them anyway,
    but an optimiser state saved before 2026-11-30 from a model with frozen layers lists them
    and no longer loads."""
    params = list({id(p): p for p in [*model.parameters(), *(extra or [])]
                   if p.requires_grad}.values())
    head = getattr(model, "head", None)
    fresh = [*(head.parameters() if head is not None else []),
             *(p for name, p in model.named_parameters() if name.endswith("field_logits"))]
    head_ids = {id(p) for p in fresh if p.requires_grad} if o.head_lr else set()
    groups = [{"params": [p for p in params if id(p) not in head_ids], "lr": o.lr}]
    if head_ids:
        groups.append({"params": [p for p in params if id(p) in head_ids], "lr": o.head_lr})
    optimiser = torch.optim.AdamW(groups, lr=o.lr, weight_decay=o.weight_decay)
    # the peaks live beside the optimiser's state, which a resumed run replaces
    optimiser.peak_lrs = [g["lr"] for g in groups]  # type: ignore[attr-defined]
    return optimiser


def set_lr(optimiser: torch.optim.Optimizer, factor: float) -> None:
    """Every parameter group of an optimiser from :func:`make_optimiser` at ``factor`` times
    its peak rate."""
    peaks = getattr(optimiser, "peak_lrs", None)
    if peaks is None:
        raise TypeError("set_lr takes an optimiser built by make_optimiser (it keeps the "
                        "peak learning rates)")
    for group, peak in zip(optimiser.param_groups, peaks, strict=True):
        group["lr"] = peak * factor


def lr_factor(frac_done: float, warmup: float, schedule: str) -> float:
    """Learning-rate multiplier at a point of training (``frac_done``, ``warmup`` in [0, 1]):
    linear warm-up, then cosine decay to 0 (or constant)."""
    if frac_done < warmup:
        return max(frac_done / warmup, 1e-3)
    if schedule == "constant":
        return 1.0
    rest = (frac_done - warmup) / max(1e-9, 1.0 - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, rest)))


def _validation(config: Config, val_set: ImageDataset | None) -> EpisodeEvaluator | None:
    """Within-group N-way K-shot episodes on the held-out groups (N capped by what fits).

    Without test-time augmentation: validation ranks checkpoints and should be cheap."""
    if val_set is None:
        return None
    e = config.eval
    way = min(e.way, val_set.num_classes)
    within = e.within_group and val_set.groups is not None
    if within:
        way = min(way, int(np.bincount(val_set.groups).max()))
    if way < 2:
        where = "in any one validation group" if within else "held out for validation"
        hint = ", or set eval.within_group=false" if within else ""
        raise ConfigError(f"one class {where}: validation episodes need two; hold out more "
                          f"(data.val_groups, data.val_fraction or the split file's val)"
                          f"{hint}")
    return EpisodeEvaluator(val_set, way=way, shot=e.shot, queries=e.queries,
                            episodes=e.episodes, within_group=within, seed=config.seed)


def _prepare_run_dir(out: Path, resume: bool, overwrite: bool) -> None:
    if resume:
        if not (out / "state.pt").is_file():
            raise RunError(f"{out}: nothing to resume (no state.pt)")
        return
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise RunError(f"{out} already holds files; use --resume to continue that run, "
                           f"--overwrite to replace it, or a new folder")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _check_resumable(saved: dict[str, Any], config: Config) -> None:
    def flat(d: dict, prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            if isinstance(v, dict) and not k.endswith("_args"):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[prefix + k] = v
        return out

    a, b = flat(saved), flat(config_to_dict(config))
    changed = sorted(k for k in a.keys() | b.keys()
                     if a.get(k) != b.get(k) and k not in RESUMABLE_CHANGES)
    if changed:
        raise RunError(f"cannot resume with a different config: {', '.join(changed)} changed "
                       f"(only {', '.join(sorted(RESUMABLE_CHANGES))} may)")


def calibrate_on_validation(run_dir: Path, val_set: ImageDataset, seed: int = 0,
                            max_pairs: int = 200_000, skilled: bool = False, tta: int = 0
                            ) -> ThresholdCalibrator | None:
    """Fit the best checkpoint's equal-error-rate threshold on the validation groups and
    store it in the model card: on all pairs (negatives sampled down to ``max_pairs``), or
    with ``skilled`` on genuine-genuine vs genuine-forgery pairs inside each group."""
    model, _, _ = load_model(run_dir)
    if skilled:
        if val_set.groups is None or val_set.group_names is None:
            raise ConfigError("eval.calibrate_on=skilled_pairs needs groups "
                              "(data.group_pattern or data.group_depth)")
        labels = val_set.labels.numpy()
        classes = [val_set.class_names[c] for c in labels]
        groups = [val_set.group_names[val_set.groups[c]] for c in labels]
        i, j, same = skilled_pairs(classes, groups)
    else:
        i, j, same = all_pairs(val_set.labels.numpy(), max_pairs=max_pairs, seed=seed)
    if same.all() or not same.any():
        logger.warning("validation pairs are all of one kind; no threshold calibrated")
        return None
    scores = score_pairs(model, embed_images(model, val_set.images, tta=tta), i, j)
    cal = ThresholdCalibrator("eer", higher_is_closer=model.higher_is_closer).fit(scores, same)
    kind = "skilled pairs" if skilled else "all pairs"
    update_card(run_dir, {"threshold": {**cal.to_dict(), "source": f"validation groups, {kind}"}})
    logger.info("calibrated threshold %.4g on %d validation pairs (EER %.4f)", cal.threshold_,
                len(same), cal.validation_["eer"])
    return cal


def _batch_indices(batch: Any) -> tuple[torch.Tensor, Pairs | None]:
    """Dataset indices of a batch and, for a batch of pairs, its (positive, negative) pairs."""
    if isinstance(batch, list):  # P x K batch
        return torch.tensor(batch), None
    n = len(batch.left)
    rows, same = torch.arange(n), torch.from_numpy(batch.same).bool()
    idx = torch.from_numpy(np.concatenate([batch.left, batch.right]))  # left half, right half
    return idx, Pairs(rows[same], rows[same] + n, rows[~same], rows[~same] + n)


def train(
    config: Config,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = False,
    data: ImageDataset | None = None,
    callbacks: Sequence[Callable[[int, float], bool | None]] = (),
    overwrite: bool = False,
) -> TrainResult:
    """Train a Siamese network as ``config`` says, writing checkpoints to ``out_dir``.

    Args:
        config: the full configuration.
        out_dir: run folder; must be new or empty unless ``resume`` or ``overwrite``.
        resume: continue from ``out_dir/state.pt`` (same config but for the step budget).
        progress: show a progress bar with loss and images/s (the CLI turns it on).
        data: already-loaded training images (otherwise loaded as the config says).
        callbacks: called as ``cb(step, loss)`` after every step; one returning True stops
            training there (after a validation and a checkpoint).
        overwrite: replace whatever ``out_dir`` holds.

    With ``optim.time_limit_minutes`` the learning rate follows whichever runs out first,
    steps or time, so it always anneals fully; a run is reproducible from its seed when
    the steps run out first.
    """
    check_config(config)
    from .config import PAIR_DATASETS

    if config.data.dataset in PAIR_DATASETS:  # text / record pairs: their own short loop
        if resume:
            raise ConfigError("resume is not supported for pair datasets yet")
        from .train_pairs import train_pairs

        return train_pairs(config, out_dir, progress=progress, overwrite=overwrite)
    info = setup_distributed()  # torchrun: join the process group; alone: rank 0 of 1
    out = Path(out_dir)
    init = (read_init_from(config.model.init_from, out)
            if config.model.init_from and not resume else None)
    if info.is_main:
        _prepare_run_dir(out, resume, overwrite)
    barrier(info)
    o = config.optim
    if info.enabled and (o.sampler != "pk" or o.p % info.world_size):
        raise ConfigError(f"under torchrun each of the {info.world_size} ranks takes whole "
                          f"classes of a P x K batch: needs optim.sampler=pk and optim.p "
                          f"divisible by {info.world_size} (p={o.p}, sampler={o.sampler})")
    progress = progress and info.is_main
    if o.threads:
        torch.set_num_threads(o.threads)
    seed_everything(config.seed)

    featurizer = None
    if data is None and config.data.dataset == "table":
        td, featurizer = prepare_table(config)
    else:
        td = prepare_data(config, data if data is not None else load_training_data(config))
    tabular = td.images.dim() == 2  # feature vectors for the MLP twin
    if tabular:
        features = int(td.images.shape[1])
        config.model.encoder_args.setdefault("in_features", features)
        channels, size, card_input = 1, config.data.size, {"kind": "tabular",
                                                          "features": features}
        if featurizer is not None:  # how eval, enroll and identify featurise a table's rows
            card_input.update(featurizer=featurizer.to_dict(),
                              label_column=config.data.label_column,
                              feature_columns=featurizer.columns)
    else:
        channels, height, width = (int(v) for v in td.images.shape[1:])
        size = height if height == width else [height, width]
        card_input = {"channels": channels, "size": size,
                      "invert": config.data.invert or config.data.dataset == "omniglot",
                      "keep_aspect": config.data.keep_aspect}
    logger.info("training on %d items of %d classes; validating on %s", len(td.labels),
                len(td.class_names),
                f"{td.val_set.num_classes} classes" if td.val_set else "nothing")
    model = build_model(config.model, channels, size)
    if init is not None:
        warm_start(model, init, card_input)
    loss_fn = build_loss(config, model, num_classes=len(td.class_names))
    miner = build_miner(config)
    sampler = build_sampler(config, td.labels.numpy(), td.groups, td.class_names)
    augment = build_augment(config)
    if augment is not None and info.enabled:  # each rank distorts its own share differently
        augment.generator.manual_seed(config.seed + 7919 * info.rank)
    evaluator = _validation(config, td.val_set) if info.is_main else None
    channels_last = o.channels_last and not tabular
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    # the model's parameters and the loss's own (proxies); a shared head is listed once
    optimiser = make_optimiser(model, o, list(loss_fn.parameters()))
    params = [p for g in optimiser.param_groups for p in g["params"]]
    encode: Any = model.embed
    outside_ddp: list[torch.nn.Parameter] = []
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        encode = DistributedDataParallel(model.encoder)  # averages the encoder's gradients
        in_encoder = {id(p) for p in model.encoder.parameters()}
        outside_ddp = [p for p in params if id(p) not in in_encoder]  # head, proxies
    gather = info.enabled and o.gather_embeddings
    card = {"input": card_input}

    # everything whose state a resumed run must get back, to follow the same path
    def snapshot(step: int) -> dict[str, Any]:
        return {"model": model.state_dict(), "loss": loss_fn.state_dict(),
                "optimiser": optimiser.state_dict(), "step": step, "best": best,
                "best_step": best_step, "history": history, "elapsed": elapsed,
                "config": config_to_dict(config), "torch_rng": torch.get_rng_state(),
                "sampler_rng": sampler.rng.bit_generator.state,
                "augment_rng": augment.generator.get_state() if augment else None,
                "miner": miner.state_dict() if miner is not None else {}}

    start, best, best_step, history, elapsed = 0, -math.inf, -1, [], 0.0
    if resume:
        st = torch.load(out / "state.pt", weights_only=False)
        _check_resumable(st["config"], config)
        model.load_state_dict(st["model"])
        loss_fn.load_state_dict(st["loss"])
        optimiser.load_state_dict(st["optimiser"])
        torch.set_rng_state(st["torch_rng"])
        sampler.rng.bit_generator.state = st["sampler_rng"]
        if augment is not None:
            augment.generator.set_state(st["augment_rng"])
        if miner is not None:
            miner.load_state_dict(st["miner"])
        start, best, best_step = st["step"], st["best"], st["best_step"]
        history, elapsed = st["history"], st["elapsed"]
        logger.info("resuming at step %d (best %.4f at step %d)", start, best, best_step)

    def validate(step: int, recent_loss: float) -> None:
        nonlocal best, best_step
        record: dict[str, Any] = {"step": step, "loss": recent_loss}
        score = float(step)  # without validation data the latest model is the best
        if evaluator is not None:
            metrics = evaluator(model)
            record.update(val_accuracy=metrics["accuracy"], val_ci95=metrics["ci95"])
            score = metrics["accuracy"]
        history.append(record)
        with open(out / "history.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        logger.info("step %d: %s", step, ", ".join(f"{k}={v:.4g}" for k, v in record.items()
                                                  if k != "step"))
        if score > best or best_step < 0:
            best, best_step = score, step
            save_model(out, model, config, {**card, "best_step": step, "validation": record})

    limit_s = 60 * o.time_limit_minutes if o.time_limit_minutes is not None else math.inf
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=o.steps, initial=start, unit="step", dynamic_ncols=True)
    elapsed_before = elapsed  # time spent by earlier sessions of a resumed run
    t0, seen, recent, step = time.perf_counter() - elapsed, 0, [], start
    batches = iter(sampler)  # on resume its random state was restored: the same batches follow
    model.train()
    for step in range(start + 1, o.steps + 1):
        elapsed = time.perf_counter() - t0
        frac_done = max((step - 1) / o.steps, elapsed / max(limit_s, 1e-9))
        (frac_done,) = broadcast_floats([frac_done], info)  # one schedule for all ranks
        set_lr(optimiser, lr_factor(frac_done, o.warmup_steps / o.steps, o.schedule))

        idx, pairs = _batch_indices(next(batches))
        if info.enabled:  # every rank drew the same global batch; embed this rank's share
            y_global = td.labels[idx]
            idx = torch.as_tensor(shard(idx.tolist(), info))
        x, y = to_float(td.images[idx]), td.labels[idx]  # (B, C, H, W), (B,)
        if augment is not None:
            x = augment(x)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        emb = encode(x)  # (B, D)
        if bool(too_large(emb).any()):
            raise ValueError(f"step {step}: embeddings too large (inputs too large, or a "
                             f"learning rate that diverged; tables: data.numeric_scaling: log "
                             f"tames large values)")
        if gather:  # the global batch: every rank's embeddings, gradients to our own part
            emb, y = gather_with_grad(emb, info), y_global
        indices: Any = pairs
        if miner is not None:
            miner.set_step(step)
            indices = miner(emb, y)
        loss = loss_fn(emb, y, indices)
        optimiser.zero_grad(set_to_none=True)
        # DDP averages gradients over ranks; each rank's gradient of the global loss covers
        # only its own embeddings, so scaling by the world size gives the full gradient
        (loss * info.world_size if gather else loss).backward()
        average_gradients(outside_ddp, info)
        optimiser.step()

        seen += len(idx) * info.world_size
        recent = (recent + [loss.item()])[-50:]
        elapsed = time.perf_counter() - t0
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(recent):.4f}",
                            img_s=f"{seen / max(1e-9, elapsed - elapsed_before):.0f}")
        out_of_time = elapsed >= limit_s
        stop = any([bool(cb(step, recent[-1])) for cb in callbacks])
        flags = broadcast_floats([float(out_of_time), float(stop)], info)  # rank 0 decides
        out_of_time, stop = bool(flags[0]), bool(flags[1])
        if info.is_main and (step % config.eval.every == 0 or step == o.steps or out_of_time
                             or stop):
            validate(step, float(np.mean(recent)))
            torch.save(snapshot(step), out / "state.pt.tmp")
            (out / "state.pt.tmp").replace(out / "state.pt")
        if out_of_time:
            logger.warning("time limit of %.1f minutes reached at step %d of %d",
                           o.time_limit_minutes, step, o.steps)
        if out_of_time or stop:
            break
    if bar is not None:
        bar.close()
    if info.is_main and best_step < 0:  # no step ran (a finished run resumed): leave a model
        validate(step, math.nan)
    if info.is_main and td.val_set is not None and config.eval.calibrate_on != "none":
        calibrate_on_validation(out, td.val_set, config.seed,
                                skilled=config.eval.calibrate_on == "skilled_pairs",
                                tta=config.eval.tta)
    minutes = (time.perf_counter() - t0) / 60
    run_seconds = max(1e-9, time.perf_counter() - t0 - elapsed_before)
    result = TrainResult(out, step, best, best_step, minutes, seen / run_seconds, history)
    if info.is_main:
        (out / "train_summary.json").write_text(json.dumps(
            {"steps": step, "best_val_accuracy": best, "best_step": best_step,
             "train_minutes": minutes, "images_per_second": result.images_per_second,
             "world_size": info.world_size}, indent=2))
    barrier(info)  # no rank leaves before the checkpoint and threshold are written
    return result
