"""Names become objects here: the losses, miners, samplers and augmentations a config (or a
``fit`` call) names, and the model a :class:`~siamkit.config.ModelConfig` describes.

The only factory of losses and miners; the trainer, ``fit`` and the CLI take the objects.
Encoders and distances keep their own small registries (``create_encoder``,
``create_distance``), which a saved model's card is read with.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import nn

from .augment import Chain, RandomAffine, RandomBrightnessContrast
from .config import Config, ConfigError, ModelConfig
from .distances import Distance, create_distance
from .encoders import create_encoder
from .losses import (
    ContrastiveLoss,
    CoSENTLoss,
    CosineSimilarityLoss,
    HeadBCELoss,
    MultipleNegativesRankingLoss,
    NormalizedSoftmaxLoss,
    OnlineContrastiveLoss,
    PrototypicalLoss,
    TripletLoss,
)
from .miners import BatchHardMiner, HardnessSchedule, Miner, SemiHardMiner
from .samplers import BalancedPairSampler, PKSampler
from .siamese import LearnedHead, SiameseNetwork

__all__ = ["LOSSES", "MINERS", "create_loss", "create_miner", "build_model", "build_loss",
           "build_in_batch_loss", "build_miner", "build_sampler", "build_augment"]

logger = logging.getLogger(__name__)

# name -> (class, how it is built: "distance", "head" or "proxies")
LOSSES: dict[str, tuple[type[nn.Module], str]] = {
    "contrastive": (ContrastiveLoss, "distance"),
    "triplet": (TripletLoss, "distance"),
    "prototypical": (PrototypicalLoss, "distance"),
    "online_contrastive": (OnlineContrastiveLoss, "distance"),
    "mnrl": (MultipleNegativesRankingLoss, "distance"),
    "cosent": (CoSENTLoss, "distance"),
    "cosine": (CosineSimilarityLoss, "none"),
    "bce": (HeadBCELoss, "head"),
    "proxy": (NormalizedSoftmaxLoss, "proxies"),
}
MINERS = ("none", "semihard", "batch_hard", "schedule")


def create_loss(name: str, distance: Distance | None = None, *,
                head: LearnedHead | None = None, num_classes: int | None = None,
                dim: int | None = None, **options: Any) -> nn.Module:
    """The loss ``name`` measuring with ``distance``, with its own ``options``.

    ``bce`` trains a learned ``head``; ``proxy`` learns ``num_classes`` proxies of size
    ``dim``. Example: ``create_loss("triplet", CosineSimilarity(), margin=0.3)``.
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; expected one of {', '.join(sorted(LOSSES))}")
    cls, kind = LOSSES[name]
    try:
        if kind == "distance":
            return cls(distance, **options)
        if kind == "head":
            if head is None:
                raise ValueError("loss 'bce' trains a learned head: the model needs one "
                                 "(model.head=true)")
            return cls(head, **options)
        if kind == "proxies":
            if num_classes is None or dim is None:
                raise ValueError("loss 'proxy' needs the number of training classes and the "
                                 "embedding size")
            return cls(num_classes, dim, **options)
        return cls(**options)
    except TypeError as exc:
        raise ValueError(f"bad options for loss {name!r}: {exc}") from None


def create_miner(name: str, distance: Distance | None = None, *, margin: float = 0.2,
                 start_step: int = 0, end_step: int = 1000, seed: int = 0) -> Miner | None:
    """The miner ``name`` (``none`` gives None: the loss takes every pair or triplet);
    ``schedule`` hardens from semi-hard to hard between ``start_step`` and ``end_step``."""
    if name == "none":
        return None
    if name == "semihard":
        return SemiHardMiner(margin, distance)
    if name == "batch_hard":
        return BatchHardMiner(distance)
    if name == "schedule":
        return HardnessSchedule(margin, start_step, end_step, distance, seed=seed)
    raise ValueError(f"unknown miner {name!r}; expected one of {', '.join(MINERS)}")


def build_model(cfg: ModelConfig, channels: int, size: int | tuple[int, int]
                ) -> SiameseNetwork:
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


def build_loss(config: Config, model: SiameseNetwork, num_classes: int = 0) -> nn.Module:
    """The loss ``config.loss`` names, measuring with the model's distance."""
    lc = config.loss
    options: dict[str, dict[str, Any]] = {
        "prototypical": {"n_support": lc.n_support, "scale": lc.scale},
        "triplet": {"margin": lc.margin},
        "contrastive": {"pos_margin": lc.pos_margin, "neg_margin": lc.margin},
        "proxy": {"scale": lc.scale, "margin": lc.margin},
        "online_contrastive": {"margin": lc.margin},
        "mnrl": {"scale": lc.scale},
        "cosent": {"scale": lc.scale},
        "cosine": {"max_score": config.pairs.max_score},
    }
    try:
        return create_loss(lc.name, model.distance, head=model.head, num_classes=num_classes,
                           dim=model.embedding_dim, **options.get(lc.name, {}))
    except ValueError as exc:
        raise ConfigError(f"loss.name: {exc}") from None


def build_in_batch_loss(config: Config, model: SiameseNetwork) -> nn.Module | None:
    """The in-batch negatives term ``loss.in_batch`` adds to a pair loss (MNRL at scale 20),
    or None."""
    if config.loss.in_batch <= 0:
        return None
    return create_loss("mnrl", model.distance, scale=20.0)


def build_miner(config: Config) -> Miner | None:
    """The miner ``config.loss.miner`` names, or None (the loss takes every pair/triplet)."""
    lc, steps = config.loss, config.optim.steps
    try:
        return create_miner(lc.miner, create_distance(config.model.distance), margin=lc.margin,
                            start_step=int(lc.schedule_start * steps),
                            end_step=int(lc.schedule_end * steps), seed=config.seed)
    except ValueError as exc:
        raise ConfigError(f"loss.miner: {exc}") from None


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
                     whole_groups=o.whole_groups, group_fill=o.group_fill)


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
