"""Verification pairs to calibrate, evaluate and report on, scored by a model.

A :class:`PairSource` says which pairs: a CSV of image paths or a text (record) pair file
(``pairs``), every pair of a folder-per-class tree or of a table's rows (``all_pairs``), or
skilled-forgery pairs within each group (``skilled_pairs``), optionally kept to one subset
of a split file. :func:`score_pair_source` builds them as the model reads its inputs and
scores them, returning a :class:`PairScores`.

    >>> source = PairSource(data="signatures/", skilled_pairs=True, split="split.json",
    ...                     subset="val")
    >>> scored = score_pair_source(model, source)
    >>> ThresholdCalibrator("eer", None, model.higher_is_closer).fit(scored.scores,
    ...                                                             scored.same)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .data.download import DatasetError
from .data.images import scan_folder
from .data.pairs import PairList, all_pairs, read_pair_csv, skilled_pairs
from .data.splitfiles import SplitFile, restrict_pairs
from .data.splits import group_of
from .data.textpairs import TextPairs, read_text_pairs
from .embedding import embed_images
from .evaldata import load_eval_data
from .evaluate import score_pairs
from .inputs import ImageInput, adapter_for
from .progress import Progress, start
from .siamese import SiameseNetwork

__all__ = ["PairFileColumns", "PairSource", "PairScores", "need_both", "folder_pairs",
           "image_pairs", "score_pair_source"]


@dataclass(frozen=True)
class PairFileColumns:
    """How to read a text or record pair file (:func:`read_text_pairs`).

    Attributes:
        fmt: ``csv``, ``tsv``, ``jsonl`` or ``ditto``; None: from the suffix.
        a, b: the two text columns (names, or 0-based positions without a header).
        label: the label column (ignored when ``score`` is given).
        score: a graded score column, instead of a label.
        positive_label: the label value meaning "same" (also for CSVs of image paths).
    """

    fmt: str | None = None
    a: str = "a"
    b: str = "b"
    label: str = "label"
    score: str | None = None
    positive_label: str = "1"

    def read(self, path: str) -> TextPairs:
        """The pairs of the file ``path``."""
        return read_text_pairs(path, self.fmt, self.a, self.b,
                               None if self.score else self.label, self.score,
                               self.positive_label)


@dataclass(frozen=True)
class PairSource:
    """Which pairs to score (give one of ``pairs``, ``all_pairs``, ``skilled_pairs``).

    Attributes:
        data: the folder the images (and the paths of ``pairs``) are in; a tabular
            model's table file, or ``sklearn:digits``.
        pairs: image models: a CSV of ``a,b,label`` rows (header optional), paths relative
            to ``data``; text and record models: a pair file read with ``columns``.
        all_pairs: every pair of images of ``data`` (same folder = same), or of a table's
            rows (same class = same).
        skilled_pairs: within each group: genuine-genuine pairs (same) and genuine-forgery
            pairs (different); the genuine class is the one named like its group.
        split, subset: keep only pairs whose two items are in groups of this subset of
            the split file (a table: its classes).
        group_pattern: regular expression on an image's folder name whose group 1 is its
            group (default: the split file's).
        columns: how to read a pair file, and the positive label.
    """

    data: str | None = None
    pairs: str | None = None
    all_pairs: bool = False
    skilled_pairs: bool = False
    split: str | None = None
    subset: str = "test"
    group_pattern: str | None = None
    columns: PairFileColumns = field(default_factory=PairFileColumns)

    def describe(self) -> str:
        """Where the pairs come from, in words (a threshold's ``source``)."""
        text = self.pairs if self.pairs else f"all pairs of {self.data}"
        if self.split:
            text += f", {self.subset} groups of {self.split}"
        return str(text)


@dataclass
class PairScores:
    """Scored pairs.

    Attributes:
        scores: (P,) the model's score of each pair (its own convention).
        same: (P,) bool, True where the pair is of one class.
        pairs: the pairs: a :class:`PairList` (images, or a table's rows) or
            :class:`TextPairs`; ``pairs.left`` / ``pairs.right`` index the items.
        embeddings: (N, D) embeddings of the items.
        images: (N, C, H, W) uint8 images for image pairs, else None.
    """

    scores: np.ndarray
    same: np.ndarray
    pairs: PairList | TextPairs
    embeddings: torch.Tensor
    images: torch.Tensor | None = None


def need_both(same: np.ndarray) -> None:
    """Refuse (DatasetError) pairs that are not both same and different: verification
    metrics and thresholds need both kinds."""
    if len(same) == 0 or same.all() or not same.any():
        raise DatasetError(f"need both same and different pairs; got {int(same.sum())} same "
                           f"and {int((~same).sum())} different")


def folder_pairs(folder: str, skilled: bool = False, group_pattern: str | None = None
                 ) -> PairList:
    """Pairs of the images of a folder-per-class tree: every pair (same folder = same), or
    with ``skilled`` the skilled-forgery pairs of each group (group 1 of ``group_pattern``
    on the folder name; see :func:`~siamkit.data.pairs.skilled_pairs`)."""
    items = scan_folder(folder, group_depth=0)
    paths, names = [p for p, _, _ in items], [n for _, n, _ in items]
    if skilled:
        if not group_pattern:
            raise DatasetError("--skilled-pairs needs --group-pattern (or a split file with "
                               "one)")
        try:
            i, j, same = skilled_pairs(names, [group_of(n, group_pattern) for n in names])
        except ValueError as exc:  # a bad pattern, or no genuine class in any group
            raise DatasetError(f"{folder}: {exc}") from None
    else:
        index = {n: k for k, n in enumerate(sorted(set(names)))}
        i, j, same = all_pairs(np.array([index[n] for n in names]))
    return PairList(paths, i, j, same)


def image_pairs(source: PairSource) -> PairList:
    """The image pairs ``source`` names (kept to its split subset)."""
    if not source.data:
        raise DatasetError("an image model needs --data (the folder the images are in)")
    split = SplitFile.read(source.split) if source.split else None
    if source.skilled_pairs:
        pattern = source.group_pattern or (split.group_pattern if split else None)
        pairs = folder_pairs(source.data, skilled=True, group_pattern=pattern)
    elif source.all_pairs:
        pairs = folder_pairs(source.data)
    elif source.pairs:
        pairs = read_pair_csv(source.pairs, source.data, source.columns.positive_label)
    else:
        raise DatasetError("give --pairs, --all-pairs or --skilled-pairs")
    if split is not None:
        pairs = restrict_pairs(pairs, split, source.subset, source.group_pattern)
    need_both(pairs.same)
    return pairs


def score_pair_source(model: SiameseNetwork, source: PairSource, tta: int | None = None,
                      progress: Progress | None = None) -> PairScores:
    """Build the pairs ``source`` names as the model reads its inputs and score them.

    Image models take image pairs (:func:`image_pairs`), embedded with ``tta`` test-time
    views (default: the model's own, which its threshold was calibrated with); tabular
    models every pair of rows of a table; text and record models a pair file.
    ``progress`` (:mod:`siamkit.progress`) counts the items embedded.

    Raises:
        DatasetError: the source does not fit the model, or its pairs are not both same
            and different.
    """
    spec = model.input_spec
    if spec.kind in ("text", "records"):
        if not source.pairs:
            raise DatasetError("a text model reads its pairs from a pair file: give --pairs "
                               "FILE")
        pairs = source.columns.read(source.pairs)
        if pairs.same is None:
            raise DatasetError(f"{source.pairs}: graded scores, not labels; use siamkit eval "
                               "similarity for those")
        need_both(pairs.same)
        emb = adapter_for(spec).embed_pairs(model, pairs, start(progress, "embedding",
                                                                len(pairs.texts)))
        return PairScores(score_pairs(model, emb, pairs.left, pairs.right), pairs.same, pairs,
                          emb)
    if spec.kind == "tabular":
        if not (source.data and source.all_pairs):
            raise DatasetError("a tabular model is evaluated on every pair of rows of a table: "
                               "give --data FILE (or sklearn:digits) --all-pairs")
        data = load_eval_data(model, source.data, source.split, source.subset)
        left, right, same = all_pairs(data.labels.numpy())
        need_both(same)
        emb = embed_images(model, data.images, on_batch=start(progress, "embedding",
                                                              len(data)))
        return PairScores(score_pairs(model, emb, left, right), same,
                          PairList(list(data.paths), left, right, same), emb)
    pairs = image_pairs(source)
    images = ImageInput(spec).prepare(pairs.paths)
    emb = embed_images(model, images, tta=spec.tta if tta is None else tta, mean=spec.mean,
                       std=spec.std, on_batch=start(progress, "embedding", len(images)))
    return PairScores(score_pairs(model, emb, pairs.left, pairs.right), pairs.same, pairs,
                      emb, images)
