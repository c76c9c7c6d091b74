"""One readable training loop, plus the small builders it uses.

``train(config, out_dir)`` loads the data, splits off validation groups, builds the model,
loss, miner and sampler from the config, and runs::

    for step in steps:
        batch -> augment -> embed -> mine -> loss -> backward -> optimiser step
        every N steps: validate on held-out groups, keep the best checkpoint

The run folder gets ``model.safetensors`` (best by validation accuracy), ``config.json``
(config, input format, validation figures), ``state.pt`` (to resume) and ``history.jsonl``.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .augment import RandomAffine, rotate_as_new_classes
from .checkpoint import RunError, build_model, save_model
from .config import Config, ConfigError, config_to_dict
from .data.images import ImageDataset, load_image_folder
from .data.omniglot import load_omniglot
from .distances import create_distance
from .encoders import list_encoders
from .evaluate import EpisodeEvaluator, to_float
from .losses import (
    ContrastiveLoss,
    HeadBCELoss,
    NormalizedSoftmaxLoss,
    PrototypicalLoss,
    TripletLoss,
)
from .miners import BatchHardMiner, HardnessSchedule, Pairs, SemiHardMiner
from .samplers import BalancedPairSampler, PKSampler
from .siamese import SiameseNetwork

__all__ = ["train", "load_training_data", "split_validation", "build_loss", "build_miner",
           "TrainResult"]

logger = logging.getLogger(__name__)


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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


LOSSES = ("prototypical", "triplet", "contrastive", "bce", "proxy")
MINERS = ("none", "semihard", "batch_hard", "schedule")


def check_config(config: Config) -> None:
    """Reject unknown names and impossible values before any data is loaded."""

    lc, o = config.loss, config.optim
    if config.data.dataset not in ("omniglot", "folder"):
        raise ConfigError(f"unknown data.dataset {config.data.dataset!r}; expected 'omniglot' "
                          f"or 'folder'")
    if lc.name not in LOSSES:
        raise ConfigError(f"unknown loss.name {lc.name!r}; expected one of {', '.join(LOSSES)}")
    if lc.miner not in MINERS:
        raise ConfigError(f"unknown loss.miner {lc.miner!r}; expected one of {', '.join(MINERS)}")
    if lc.name == "bce" and not config.model.head:
        raise ConfigError("loss.name=bce trains a learned head: set model.head=true")
    if config.model.encoder not in list_encoders():
        raise ConfigError(f"unknown model.encoder {config.model.encoder!r}; expected one of "
                          f"{', '.join(list_encoders())}")
    try:
        create_distance(config.model.distance)
    except ValueError as exc:
        raise ConfigError(f"model.distance: {exc}") from None
    lr_factor(0.0, 0.0, o.schedule)
    for key, value in (("optim.steps", o.steps), ("optim.p", o.p), ("optim.k", o.k),
                       ("eval.every", config.eval.every)):
        if value < 1:
            raise ConfigError(f"{key} must be at least 1, got {value}")
    if o.p < 2:
        raise ConfigError(f"optim.p must be at least 2 (negatives need two classes), got {o.p}")
    if not set(config.data.rotations) <= {0, 1, 2, 3}:
        raise ConfigError(f"data.rotations are quarter turns in 0..3, got {config.data.rotations}")


def load_training_data(config: Config) -> ImageDataset:
    """The training images the config names (Omniglot's background set or an image folder)."""
    d = config.data
    if d.dataset == "omniglot":
        return load_omniglot("background", size=d.size)
    if d.dataset == "folder":
        if not d.root:
            raise ConfigError("data.root must name a folder when data.dataset is 'folder'")
        return load_image_folder(d.root, size=d.size, channels=d.channels, invert=d.invert,
                                 group_depth=d.group_depth)
    raise ConfigError(f"unknown data.dataset {d.dataset!r}; expected 'omniglot' or 'folder'")


def split_validation(
    data: ImageDataset, n_val: int, fraction: float, seed: int
) -> tuple[ImageDataset, ImageDataset | None]:
    """Hold out whole groups (or, without groups, whole classes) for validation."""
    units = data.groups if data.groups is not None else np.arange(data.num_classes)
    ids = np.unique(units)
    n = int(round(fraction * len(ids))) if fraction > 0 else n_val
    if n <= 0:
        return data, None
    if n >= len(ids):
        kind = "groups" if data.groups is not None else "classes"
        raise ConfigError(f"data.val_groups/val_fraction asks to hold out {n} {kind} for "
                          f"validation, but the data has only {len(ids)}")
    val_ids = set(np.random.default_rng(seed).permutation(ids)[:n].tolist())
    val_classes = [c for c in range(data.num_classes) if int(units[c]) in val_ids]
    train_classes = [c for c in range(data.num_classes) if int(units[c]) not in val_ids]
    return data.subset_classes(train_classes), data.subset_classes(val_classes)


def build_miner(config: Config, total_steps: int) -> Any:
    """The miner the loss config names (None: the loss takes every pair/triplet)."""
    lc = config.loss
    dist = create_distance(config.model.distance)
    if lc.miner == "none":
        return None
    if lc.miner == "semihard":
        return SemiHardMiner(lc.margin, dist)
    if lc.miner == "batch_hard":
        return BatchHardMiner(dist)
    if lc.miner == "schedule":
        return HardnessSchedule(lc.margin, int(lc.schedule_start * total_steps),
                                int(lc.schedule_end * total_steps), dist, seed=config.seed)
    raise ConfigError(f"unknown loss.miner {lc.miner!r}; expected none, semihard, batch_hard "
                      f"or schedule")


def build_loss(config: Config, model: SiameseNetwork, num_classes: int = 0) -> nn.Module:
    """The loss the config names, measuring with the model's distance."""
    lc = config.loss
    if lc.name == "proxy":
        return NormalizedSoftmaxLoss(num_classes, model.encoder.output_dim, scale=lc.scale,
                                     margin=lc.margin)
    if lc.name == "prototypical":
        return PrototypicalLoss(model.distance, n_support=lc.n_support, scale=lc.scale)
    if lc.name == "triplet":
        return TripletLoss(model.distance, margin=lc.margin)
    if lc.name == "contrastive":
        return ContrastiveLoss(model.distance, pos_margin=lc.pos_margin, neg_margin=lc.margin)
    if lc.name == "bce":
        if model.head is None:
            raise ConfigError("loss.name=bce trains a learned head: set model.head=true")
        return HeadBCELoss(model.head)
    raise ConfigError(f"unknown loss.name {lc.name!r}; expected prototypical, triplet, "
                      f"contrastive or bce")


def lr_factor(progress: float, warmup: float, schedule: str) -> float:
    """Learning-rate multiplier at a point of training (``progress`` and ``warmup`` in [0, 1]):
    linear warm-up, then cosine decay to 0 (or constant)."""
    if progress < warmup:
        return max(progress / warmup, 1e-3)
    if schedule == "constant":
        return 1.0
    if schedule != "cosine":
        raise ConfigError(f"unknown optim.schedule {schedule!r}; expected cosine or constant")
    rest = (progress - warmup) / max(1e-9, 1.0 - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, rest)))


def train(
    config: Config, out_dir: str | Path, resume: bool = False, progress: bool = False,
    data: ImageDataset | None = None,
    callbacks: Sequence[Callable[[int, float], bool | None]] = (),
) -> TrainResult:
    """Train a Siamese network as ``config`` says, writing checkpoints to ``out_dir``.

    Args:
        config: the full configuration.
        out_dir: run folder (created).
        resume: continue from ``out_dir/state.pt``.
        progress: show a progress bar (the CLI turns it on).
        data: already-loaded training images (otherwise loaded as the config says).
        callbacks: called as ``cb(step, loss)`` after every step; one returning True stops
            training there (after a validation and a checkpoint).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    o, lc = config.optim, config.loss
    check_config(config)
    if o.threads:
        torch.set_num_threads(o.threads)
    seed_everything(config.seed)

    # ---- data: hold out validation groups, optionally add rotated copies as new classes
    data = data if data is not None else load_training_data(config)
    train_set, val_set = split_validation(data, config.data.val_groups,
                                          config.data.val_fraction, config.seed)
    images, labels = train_set.images, train_set.labels
    groups = train_set.groups
    if config.data.rotations != [0]:
        images, labels = rotate_as_new_classes(images, labels, tuple(config.data.rotations))
        if groups is not None:
            n_rot = len(config.data.rotations)
            groups = np.concatenate([groups + i * (groups.max() + 1) for i in range(n_rot)])
    channels, size = int(images.shape[1]), int(images.shape[2])
    logger.info("training on %d images of %d classes; validating on %s", len(labels),
                int(labels.max()) + 1, f"{val_set.num_classes} classes" if val_set else "none")

    # ---- model, loss, miner, sampler, optimiser
    model = build_model(config.model, channels, size)
    loss_fn = build_loss(config, model, num_classes=int(labels.max()) + 1)
    miner = build_miner(config, o.steps)
    pair_mode = lc.name in ("contrastive", "bce") and lc.miner == "none" and o.pair_batch > 0 \
        and o.k <= 1
    if pair_mode:
        sampler: Any = BalancedPairSampler(labels.numpy(), o.pair_batch, o.steps,
                                           lc.pos_fraction, seed=config.seed)
    else:
        k = max(o.k, lc.n_support + 1) if lc.name == "prototypical" else o.k
        sampler = PKSampler(labels.numpy(), min(o.p, int(labels.max()) + 1), k, o.steps,
                            groups=groups, same_group=o.same_group, seed=config.seed)
    augment = None
    if config.augment.enabled:
        a = config.augment
        augment = RandomAffine(a.rotation, a.shear, tuple(a.scale), a.translate, a.p,
                               generator=torch.Generator().manual_seed(config.seed))
    if o.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # the model's, plus the loss's own (proxies); a head shared by both is listed once
    params = list({id(p): p for p in [*model.parameters(), *loss_fn.parameters()]}.values())
    optimiser = torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
    evaluator = None
    if val_set is not None:
        e = config.eval
        way = min(e.way, val_set.num_classes)
        if e.within_group and val_set.groups is not None:
            per_group = np.bincount(val_set.groups)
            way = min(way, int(per_group.max()))
        evaluator = EpisodeEvaluator(val_set, way=way, shot=e.shot, queries=e.queries,
                                     episodes=e.episodes, within_group=e.within_group,
                                     seed=config.seed, tta=e.tta)

    # ---- resume
    start, best, best_step, history = 0, -math.inf, -1, []
    state_path = out / "state.pt"
    if resume:
        if not state_path.is_file():
            raise RunError(f"{out}: nothing to resume (no state.pt)")
        st = torch.load(state_path, weights_only=False)
        model.load_state_dict(st["model"])
        loss_fn.load_state_dict(st["loss"])
        optimiser.load_state_dict(st["optimiser"])
        sampler.rng.bit_generator.state = st["sampler_rng"]
        if augment is not None:
            augment.generator.set_state(st["augment_rng"])
        torch.set_rng_state(st["torch_rng"])
        start, best, best_step, history = st["step"], st["best"], st["best_step"], st["history"]
        logger.info("resuming at step %d (best %.4f at step %d)", start, best, best_step)
    extra = {"input": {"channels": channels, "size": size,
                       "invert": config.data.invert or config.data.dataset == "omniglot"}}

    def validate(step: int) -> None:
        nonlocal best, best_step
        record: dict[str, Any] = {"step": step, "loss": float(np.mean(recent or [math.nan]))}
        if evaluator is not None:
            metrics = evaluator(model)
            record.update(val_accuracy=metrics["accuracy"], val_ci95=metrics["ci95"])
            score = metrics["accuracy"]
        else:
            score = step  # without validation data the latest model is kept
        history.append(record)
        with open(out / "history.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        logger.info("step %d: %s", step, ", ".join(f"{k}={v:.4g}" for k, v in record.items()
                                                  if k != "step"))
        if score > best:
            best, best_step = score, step
            save_model(out, model, config, {**extra, "best_step": step,
                                            "validation": record})

    def save_state(step: int) -> None:
        torch.save({
            "model": model.state_dict(), "loss": loss_fn.state_dict(),
            "optimiser": optimiser.state_dict(),
            "sampler_rng": sampler.rng.bit_generator.state, "elapsed": elapsed_before + elapsed,
            "augment_rng": augment.generator.get_state() if augment is not None else None,
            "torch_rng": torch.get_rng_state(), "step": step, "best": best,
            "best_step": best_step, "history": history, "config": config_to_dict(config),
        }, out / "state.pt.tmp")
        (out / "state.pt.tmp").replace(state_path)

    # ---- the loop
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=o.steps, initial=start, unit="step", dynamic_ncols=True)
    # Progress through training is the step count, or the time used if a time limit comes
    # first: the learning rate then still anneals fully. (Deterministic when steps finish first.)
    limit_s = 60 * o.time_limit_minutes if o.time_limit_minutes is not None else math.inf
    elapsed_before = st["elapsed"] if resume else 0.0
    t0, seen, recent, elapsed = time.perf_counter(), 0, [], 0.0
    step = start
    batches = iter(sampler)  # on resume its random state was restored: same batches follow
    model.train()
    for step in range(start + 1, o.steps + 1):
        elapsed = time.perf_counter() - t0
        progress = max((step - 1) / o.steps, (elapsed_before + elapsed) / max(limit_s, 1e-9))
        for group in optimiser.param_groups:
            group["lr"] = o.lr * lr_factor(progress, o.warmup_steps / o.steps, o.schedule)
        batch = next(batches)
        if pair_mode:
            idx = torch.from_numpy(np.concatenate([batch.left, batch.right]))
            n = len(batch.left)
            rows = torch.arange(n)
            same = torch.from_numpy(batch.same).bool()
            indices: Any = Pairs(rows[same], rows[same] + n, rows[~same], rows[~same] + n)
        else:
            idx = torch.tensor(batch)
        x = to_float(images[idx])  # (B, C, H, W)
        y = labels[idx]  # (B,)
        if augment is not None:
            x = augment(x)
        if o.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        emb = model.embed(x)  # (B, D)
        if not pair_mode:
            if miner is not None and hasattr(miner, "set_step"):
                miner.set_step(step)
            indices = miner(emb, y) if miner is not None else None
        loss = loss_fn(emb, y, indices)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

        seen += len(idx)
        recent = (recent + [loss.item()])[-50:]
        elapsed = time.perf_counter() - t0
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(recent):.4f}", img_s=f"{seen / elapsed:.0f}")
        out_of_time = elapsed_before + elapsed >= limit_s
        stop = any([bool(cb(step, loss.item())) for cb in callbacks])
        if step % config.eval.every == 0 or step == o.steps or out_of_time or stop:
            validate(step)
            save_state(step)
        if out_of_time:
            logger.warning("time limit of %.1f minutes reached at step %d of %d",
                           o.time_limit_minutes, step, o.steps)
        if out_of_time or stop:
            break
    if bar is not None:
        bar.close()
    minutes = (time.perf_counter() - t0) / 60
    if best_step < 0:  # no step ran (e.g. resumed a finished run)
        validate(step)
    result = TrainResult(out, step, best, best_step, minutes,
                         seen / max(1e-9, minutes * 60), history)
    summary = {"steps": step, "best_val_accuracy": best, "best_step": best_step,
               "train_minutes": minutes, "images_per_second": result.images_per_second}
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2))
    return result
