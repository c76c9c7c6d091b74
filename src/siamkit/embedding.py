"""Embedding primitives: a model's embeddings of images (or feature vectors), texts and
records, in eval mode and in batches. Evaluators, input adapters and the trainer's
validation all embed through these.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from .augment import RandomAffine
from .data.download import DatasetError
from .siamese import SiameseNetwork

__all__ = ["to_float", "too_large", "embed_images", "embed_texts", "embed_records"]


def too_large(emb: torch.Tensor) -> torch.Tensor:
    """Rows of ``emb`` (N, D) whose squared distances could overflow: |a - b|^2 <= 4
    max(|a|^2, |b|^2), so where 4 |a|^2 is finite every squared distance is. -> (N,) bool."""
    return ~torch.isfinite(4 * emb.detach().float().pow(2).sum(1))


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (B, C, H, W) in 0..255 -> float32 in [0, 1]; float inputs (tabular
    feature vectors) are returned as float32 unchanged."""
    if images.is_floating_point():
        return images.float()
    return images.float().div_(255.0)


@torch.no_grad()
def embed_images(
    model: SiameseNetwork,
    images: torch.Tensor,
    batch_size: int = 512,
    tta: int = 0,
    seed: int = 0,
    channels_last: bool = False,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    on_batch: Callable[[int], None] | None = None,
    mirror: bool | None = None,
) -> torch.Tensor:
    """Embed uint8 images (N, C, H, W) -> (N, D), in eval mode and in batches.

    With ``tta`` > 0 each embedding is the mean over the image and ``tta`` mildly
    distorted copies (fixed seed, so results are repeatable). With ``mirror`` each view's
    left-right mirror image is averaged in too; None: as the model's input spec says
    (``eval.mirror`` of its config), so every evaluation embeds as the model was calibrated.
    ``mean`` and ``std`` (one per channel) normalise the [0, 1] images, as a pretrained
    backbone expects. ``on_batch(n)`` is called after each batch (progress). Feature
    vectors (N, F) whose embeddings are too large to compare are a :class:`DatasetError`.
    """
    was_training = model.training
    model.eval()
    if mirror is None:
        mirror = bool(getattr(getattr(model, "input_spec", None), "mirror", False))
    if images.dim() == 2:  # tabular feature vectors: no image distortions
        tta, channels_last, mirror = 0, False, False
    views = [None] + [RandomAffine(rotation=5, shear=0.1, scale=(0.9, 1.1), translate=1.0,
                                   p=1.0, generator=torch.Generator().manual_seed(seed + v))
                      for v in range(tta)]
    norm = None
    if mean is not None and std is not None and images.dim() == 4:
        norm = (torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1))
    out = []
    for s in range(0, len(images), batch_size):
        x = to_float(images[s : s + batch_size])
        acc = None
        for view in views:
            xv = x if view is None else view(x)
            if norm is not None:
                xv = (xv - norm[0]) / norm[1]
            if channels_last:
                xv = xv.contiguous(memory_format=torch.channels_last)
            e = model.embed(xv).float()
            if mirror:  # the mirror image: the last (width) axis reversed
                e = e + model.embed(xv.flip(-1)).float()
            acc = e if acc is None else acc + e
        out.append(acc / (len(views) * (2 if mirror else 1)))
        if on_batch is not None:
            on_batch(len(x))
    model.train(was_training)
    if not out:
        return torch.zeros(0, 0)
    emb = torch.cat(out)
    if images.dim() == 2:  # feature vectors can be large enough to overflow the encoder
        bad = too_large(emb).nonzero().flatten()
        if len(bad):
            raise DatasetError(f"{len(bad)} of {len(emb)} items embed to values too large "
                             f"(item {int(bad[0])} first): their features are too large for "
                             f"the model (data.numeric_scaling: none keeps values as they are)")
    return emb


@torch.no_grad()
def embed_texts(model: SiameseNetwork, texts: Sequence[str], batch_size: int = 64,
                on_batch: Callable[[int], None] | None = None) -> torch.Tensor:
    """Embed texts with a text twin -> (N, D), in eval mode and in
    batches (longest first, so padding stays short); ``on_batch(n)`` after each batch."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out = torch.empty(0)
    parts = []
    for s in range(0, len(order), batch_size):
        parts.append(model.embed([texts[i] for i in order[s : s + batch_size]]).float())
        if on_batch is not None:
            on_batch(len(parts[-1]))
    if parts:
        emb = torch.cat(parts)
        out = torch.empty_like(emb)
        out[torch.tensor(order)] = emb
    model.train(was_training)
    return out


def embed_records(model: SiameseNetwork, records: list[dict[str, str]], featurizer: Any
                  ) -> torch.Tensor:
    """Embed records (attribute -> value) through an MLP twin: their feature vectors from
    a fitted :class:`~siamkit.data.records.RecordFeaturizer` -> (N, D)."""
    return embed_images(model, torch.from_numpy(featurizer.transform(records)))
