"""Turn a :class:`~siamkit.config.Config` into objects: model, loss, miner, sampler, augment.

The only place where config strings become classes (the CLI and the trainer use it);
library code takes the objects themselves.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import nn

from .augment import Chain, RandomAffine, RandomBrightnessContrast
from .config import Config, ConfigError, ModelConfig
from .distances import create_distance
from .encoders import create_encoder
from .losses import (
    ContrastiveLoss,
    HeadBCELoss,
    NormalizedSoftmaxLoss,
    PrototypicalLoss,
    TripletLoss,
)
from .miners import BatchHardMiner, HardnessSchedule, SemiHardMiner
from .samplers import BalancedPairSampler, PKSampler
from .siamese import LearnedHead, SiameseNetwork

__all__ = ["build_model", "build_loss", "build_miner", "build_sampler", "build_augment"]

logger = logging.getLogger(__name__)


def build_model(cfg: ModelConfig, channels: int, size: int) -> SiameseNetwork:
    """The Siamese network a :class:`ModelConfig` describes, for images of this shape."""
    args: dict[str, Any] = dict(cfg.encoder_args)
    kind = args.get("member", "conv4") if cfg.encoder == "ensemble" else cfg.encoder
    if kind in ("conv4", "koch"):
        args.setdefault("in_channels", channels)
        args.setdefault("input_size", size)
    try:
        encoder = create_encoder(cfg.encoder, **args)
        distance = create_distance(cfg.distance)
    except ValueError as exc:
        raise ConfigError(f"model: {exc}") from None
    head = (LearnedHead(encoder.output_dim, cfg.head_features, cfg.head_hidden)
            if cfg.head else None)
    return SiameseNetwork(encoder, distance, head)


def build_loss(config: Config, model: SiameseNetwork, num_classes: int) -> nn.Module:
    """The loss ``config.loss`` names, measuring with the model's distance."""
    lc = config.loss
    if lc.name == "prototypical":
        return PrototypicalLoss(model.distance, n_support=lc.n_support, scale=lc.scale)
    if lc.name == "triplet":
        return TripletLoss(model.distance, margin=lc.margin)
    if lc.name == "contrastive":
        return ContrastiveLoss(model.distance, pos_margin=lc.pos_margin, neg_margin=lc.margin)
    if lc.name == "proxy":
        return NormalizedSoftmaxLoss(num_classes, model.encoder.output_dim, scale=lc.scale,
                                     margin=lc.margin)
    if lc.name == "bce":
        if model.head is None:
            raise ConfigError("loss.name=bce trains a learned head: set model.head=true")
        return HeadBCELoss(model.head)
    raise ConfigError(f"unknown loss.name {lc.name!r}")


def build_miner(config: Config) -> Any:
    """The miner ``config.loss.miner`` names, or None (the loss takes every pair/triplet)."""
    lc, steps = config.loss, config.optim.steps
    dist = create_distance(config.model.distance)
    if lc.miner == "none":
        return None
    if lc.miner == "semihard":
        return SemiHardMiner(lc.margin, dist)
    if lc.miner == "batch_hard":
        return BatchHardMiner(dist)
    if lc.miner == "schedule":
        return HardnessSchedule(lc.margin, int(lc.schedule_start * steps),
                                int(lc.schedule_end * steps), dist, seed=config.seed)
    raise ConfigError(f"unknown loss.miner {lc.miner!r}")


def build_sampler(
    config: Config, labels: np.ndarray, groups: np.ndarray | None, class_names: list[str]
) -> PKSampler | BalancedPairSampler:
    """P x K batches, or balanced pairs when ``optim.sampler`` is ``pairs``."""
    o, lc = config.optim, config.loss
    if o.sampler == "pairs":
        return BalancedPairSampler(labels, o.pair_batch, o.steps, lc.pos_fraction,
                                   class_names=class_names, seed=config.seed)
    floor = lc.n_support + 1 if lc.name == "prototypical" else 2
    k = max(o.k, floor)
    labels = np.asarray(labels)
    ids, counts = np.unique(labels, return_counts=True)
    smallest = int(counts.min()) if len(labels) else k
    if smallest < floor:
        few = [(class_names[int(c)], int(n)) for c, n in zip(ids, counts, strict=True)
               if n < floor]
        raise ValueError(f"{len(few)} training classes have fewer than {floor} items (e.g. "
                         f"{few[0][0]!r} with {few[0][1]}): every class needs {floor} to form "
                         f"positives; leave such classes out or merge them")
    if floor <= smallest < k:  # a config tuned on 10 images per identity, data with fewer
        logger.warning("optim.k=%d but the smallest class has %d items: batches take K=%d "
                       "of each class", k, smallest, smallest)
        k = smallest
    return PKSampler(labels, min(o.p, len(class_names)), k, o.steps, groups=groups,
                     same_group=o.same_group, class_names=class_names, seed=config.seed,
                     whole_groups=o.whole_groups)


def build_augment(config: Config) -> Chain | None:
    """Koch's affine distortions (plus optional mirroring and brightness/contrast jitter),
    sharing one seeded generator."""
    a = config.augment
    if not a.enabled:
        return None
    gen = torch.Generator().manual_seed(config.seed)
    steps: list = [RandomAffine(a.rotation, a.shear, (a.scale[0], a.scale[1]), a.translate,
                                a.p, generator=gen, hflip=a.hflip)]
    if a.brightness > 0:
        steps.append(RandomBrightnessContrast(a.brightness, generator=gen))
    return Chain(steps, gen)
