"""Training data in the shapes the objectives draw from: items, with class labels or pairs.

:class:`Items` holds what the encoder embeds (image or feature tensors, texts, or a lazy
torch ``Dataset``) and hands out batches by index. :class:`ClassData` adds a class label
per item; :class:`PairData` a list of pairs of items with a label or a graded score.
:func:`class_data` and :func:`pair_data` build them from whatever a user has: a map-style
``Dataset`` or a sequence of ``(input, label)`` or ``(a, b, label | score)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import default_collate

from ..data.images import ImageDataset
from ..data.splits import positive_pair_groups
from ..data.textpairs import TextPairs
from ..embedding import embed_images, embed_texts, to_float
from ..inputs import InputSpec
from ..siamese import SiameseNetwork

__all__ = ["Items", "ClassData", "PairData", "class_data", "pair_data", "infer_input_spec"]


class Items:
    """What the encoder embeds: a tensor (N, ...) of uint8 images or float features, a list
    of texts, or a map-style dataset read lazily (``dataset[i][position]``)."""

    def __init__(self, values: torch.Tensor | list[str] | Any, position: int | None = None
                 ) -> None:
        if isinstance(values, np.ndarray):
            values = torch.from_numpy(values)
        self.values, self.position = values, position

    def __len__(self) -> int:
        return len(self.values)

    @property
    def is_text(self) -> bool:
        return isinstance(self.values, list)

    def take(self, idx: Sequence[int] | np.ndarray | torch.Tensor) -> Any:
        """The encoder's input for items ``idx``: float32 (B, ...) or B strings."""
        idx = [int(i) for i in idx]
        if isinstance(self.values, torch.Tensor):
            return to_float(self.values[idx])
        if self.is_text:
            return [self.values[i] for i in idx]
        batch = default_collate([self.values[i][self.position] for i in idx])
        return to_float(batch) if isinstance(batch, torch.Tensor) else batch

    @torch.no_grad()
    def embed_all(self, model: SiameseNetwork, batch_size: int = 256) -> torch.Tensor:
        """Every item's embedding (N, D), in eval mode (validation, mining)."""
        if isinstance(self.values, torch.Tensor):
            return embed_images(model, self.values)
        if self.is_text:
            return embed_texts(model, self.values)
        was_training = model.training
        model.eval()
        parts = [model.embed(self.take(range(s, min(s + batch_size, len(self)))))
                 for s in range(0, len(self), batch_size)]
        model.train(was_training)
        return torch.cat(parts).float()


@dataclass
class ClassData:
    """Items with a class each (ids ``0..len(class_names)-1``), optionally grouped (the
    alphabet of a character, the writer of a signature: ``groups[class]``) and with the
    drawer (writer, session) of each item (``drawers[item]``: episodes then take support
    and queries from different drawers)."""

    items: Items
    labels: torch.Tensor  # (N,) int64
    class_names: list[str]
    groups: np.ndarray | None = None
    drawers: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.items):
            raise ValueError(f"{len(self.labels)} labels for {len(self.items)} items")

    @classmethod
    def from_dataset(cls, data: ImageDataset) -> ClassData:
        """siamkit's in-memory data sets (image folders, Omniglot, tables)."""
        return cls(Items(data.images), data.labels, list(data.class_names), data.groups,
                   data.drawers)

    def as_dataset(self) -> ImageDataset:
        """The in-memory data set evaluators take (tensor items only)."""
        if not isinstance(self.items.values, torch.Tensor):
            raise TypeError("as_dataset needs items held as one tensor")
        return ImageDataset(self.items.values, self.labels, self.class_names, groups=self.groups,
                            drawers=self.drawers)


@dataclass
class PairData:
    """Pairs ``(left[i], right[i])`` of items with a label ``same[i]`` or a graded
    ``score[i]``; ``groups`` is each item's duplicate group (connected components of
    positive pairs), which in-batch and mined negatives never cross."""

    items: Items
    left: np.ndarray
    right: np.ndarray
    same: np.ndarray | None = None
    score: np.ndarray | None = None

    def __post_init__(self) -> None:
        if (self.same is None) == (self.score is None):
            raise ValueError("pairs need either labels (same) or graded scores, not both")
        self.left = np.asarray(self.left, dtype=np.int64)
        self.right = np.asarray(self.right, dtype=np.int64)
        n = len(self.left)
        for name in ("right", "same", "score"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"{len(value)} values of {name} for {n} pairs")
        if n and (min(self.left.min(), self.right.min()) < 0
                  or max(self.left.max(), self.right.max()) >= len(self.items)):
            raise ValueError(f"pair indices must be in 0..{len(self.items) - 1}")
        self.groups = (positive_pair_groups(len(self.items), self.left, self.right, self.same)
                       if self.same is not None else None)

    def __len__(self) -> int:
        return len(self.left)

    @property
    def graded(self) -> bool:
        return self.score is not None

    @classmethod
    def from_text_pairs(cls, pairs: TextPairs, features: torch.Tensor | None = None
                        ) -> PairData:
        """A pair file's pairs; with ``features`` (a featurised record per text) the items are
        those vectors (the MLP twin of records), else the texts."""
        items = Items(features if features is not None else list(pairs.texts))
        return cls(items, pairs.left, pairs.right, pairs.same, pairs.score)


def _as_input(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    return x


def _stack(values: list[Any], what: str) -> torch.Tensor | list[str]:
    """Inputs of one kind: all strings, or tensors of one shape (stacked)."""
    if all(isinstance(v, str) for v in values):
        return list(values)
    if not all(isinstance(v, torch.Tensor) for v in values):
        kinds = sorted({type(v).__name__ for v in values})
        raise TypeError(f"{what}: inputs must be tensors (images, feature vectors) or texts "
                        f"(str), got {', '.join(kinds)}")
    shapes = {tuple(v.shape) for v in values}
    if len(shapes) > 1:
        raise ValueError(f"{what}: inputs have different shapes {sorted(shapes)[:3]}; resize "
                         f"them to one shape")
    return torch.stack(values)


def _label_ids(raw: list[Any], what: str) -> tuple[torch.Tensor, list[str]]:
    """Class ids 0..C-1 and class names of labels given as ints or strings."""
    bad = [r for r in raw if not isinstance(r, int | str | np.integer)
           and not (isinstance(r, torch.Tensor) and r.numel() == 1 and not r.is_floating_point())]
    if bad:
        raise TypeError(f"{what}: class labels must be ints or strings, got {bad[0]!r}")
    keys = [str(int(r)) if not isinstance(r, str) else r for r in raw]
    names = sorted(set(keys), key=lambda s: (len(s), s))
    code = {n: i for i, n in enumerate(names)}
    return torch.tensor([code[k] for k in keys], dtype=torch.int64), names


def _rows(data: Any, what: str, width: int) -> list[tuple]:
    """Every row of a map-style dataset or sequence, checked to be a tuple of ``width``
    values."""
    try:
        n = len(data)
    except TypeError:
        raise TypeError(f"{what} must be a map-style Dataset or a sequence (it has no len()); "
                        f"an iterable-style dataset: list(it) first") from None
    if n == 0:
        raise ValueError(f"{what} is empty")
    rows = []
    for i in range(n):
        row = data[i]
        if not isinstance(row, tuple | list):
            raise TypeError(f"{what}[{i}] is a {type(row).__name__}: each item must be a "
                            f"tuple (input, label) or (a, b, label | score)")
        rows.append(tuple(row))
    if any(len(r) != width for r in rows):
        n = next(len(r) for r in rows if len(r) != width)
        kind = ("class data yields (input, label)" if width == 2
                else "pair data yields (a, b, label | score)")
        raise ValueError(f"{what}: items of {n} values; {kind}")
    return rows


def class_data(data: Any, what: str = "data") -> ClassData:
    """Class-labelled data from ``(input, label)`` items (a map-style ``Dataset``, a
    sequence, or siamkit's :class:`ImageDataset`). Labels are ints or strings."""
    if isinstance(data, ClassData):
        return data
    if isinstance(data, ImageDataset):
        return ClassData.from_dataset(data)
    rows = _rows(data, what, 2)
    labels, names = _label_ids([r[1] for r in rows], what)
    values = _stack([_as_input(r[0]) for r in rows], what)
    return ClassData(Items(values), labels, names)


def pair_data(data: Any, what: str = "data") -> PairData:
    """Pair data from ``(a, b, label | score)`` items, or siamkit's :class:`TextPairs`.
    Targets that are all 0/1 (or booleans) are labels, any other numbers graded scores."""
    if isinstance(data, PairData):
        return data
    if isinstance(data, TextPairs):
        return PairData.from_text_pairs(data)
    rows = _rows(data, what, 3)
    try:
        targets = np.array([float(r[2]) for r in rows])
    except (TypeError, ValueError):
        raise TypeError(f"{what}: the third value of a pair must be a label (0/1, bool) or a "
                        f"score (a number)") from None
    if not np.isfinite(targets).all():
        raise ValueError(f"{what}: pair targets must be finite numbers")
    labelled = set(np.unique(targets)) <= {0.0, 1.0}
    n = len(rows)
    firsts = [_as_input(r[0]) for r in rows]
    seconds = [_as_input(r[1]) for r in rows]
    if all(isinstance(v, str) for v in firsts + seconds):  # texts: one item per distinct text
        texts = list(dict.fromkeys(firsts + seconds))
        index = {t: i for i, t in enumerate(texts)}
        items = Items(texts)
        left = np.array([index[t] for t in firsts])
        right = np.array([index[t] for t in seconds])
    else:
        items = Items(_stack(firsts + seconds, what))
        left, right = np.arange(n), np.arange(n, 2 * n)
    if labelled:
        return PairData(items, left, right, same=targets.astype(bool))
    return PairData(items, left, right, score=targets)


def infer_input_spec(items: Items) -> InputSpec:
    """How inputs like these are read: texts, feature vectors (N, F), or images (N, C, H, W)
    in their own size, for a model trained on them without a spec."""
    if items.is_text:
        return InputSpec(kind="text")
    sample = items.take([0])
    if not isinstance(sample, torch.Tensor):
        raise TypeError(f"cannot tell the input kind of {type(sample).__name__} items: pass "
                        f"input_spec")
    if sample.dim() == 2:
        return InputSpec(kind="tabular", features=int(sample.shape[1]))
    if sample.dim() == 4 and sample.shape[1] in (1, 3):
        h, w = int(sample.shape[2]), int(sample.shape[3])
        return InputSpec(kind="image", channels=int(sample.shape[1]),
                         size=h if h == w else (h, w))
    raise ValueError(f"cannot tell the input kind of items shaped {tuple(sample.shape[1:])}: "
                     f"images are (C, H, W) with 1 or 3 channels, feature vectors (F,); pass "
                     f"input_spec")
