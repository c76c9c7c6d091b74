"""Leakage checks: test items with a near-duplicate in training, and groups on both sides.

Images are compared by a 64-bit perceptual hash (:func:`~siamkit.data.splits.image_hash`),
texts by normalised equality and MinHash (:func:`~siamkit.data.splits.text_near_duplicates`).
Each check returns a report (a dict ready for JSON) whose ``ok`` says whether at most
``max_leaks`` test items leak (and, for images, no group is on both sides).

    >>> report = split_leakage("faces/", SplitFile.read("split.json"))
    >>> report["ok"], report["near_duplicates"], report["examples"][:1]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .download import DatasetError
from .splitfiles import SplitFile, items_by_group
from .splits import image_hash, near_duplicates, overlap, text_near_duplicates

__all__ = ["hash_images", "image_leakage", "split_leakage", "folder_leakage", "text_leakage"]

EXAMPLES = 10  # near-duplicates listed in a report


def hash_images(paths: Sequence[str]) -> np.ndarray:
    """Perceptual hashes (N,) uint64 of image files (grayscale); an unreadable file is a
    DatasetError naming it."""
    from PIL import Image

    out = []
    for p in paths:
        try:
            with Image.open(p) as img:
                out.append(image_hash(np.asarray(img.convert("L"))))
        except OSError as exc:
            raise DatasetError(f"{p}: not a readable image ({exc})") from None
    return np.array(out, dtype=np.uint64)


def image_leakage(train: dict[str, list[str]], test: dict[str, list[str]],
                  max_distance: int = 4, max_leaks: int = 0) -> dict[str, Any]:
    """Near-duplicate images and shared groups between two sides, each given as image
    paths by group (:func:`~siamkit.data.splitfiles.items_by_group`).

    Returns:
        ``train_images``, ``test_images``, ``shared_groups`` (names on both sides),
        ``near_duplicates`` (test images with a train image within ``max_distance`` of 64
        hash bits), ``examples`` (up to 10: ``test``, ``train``, ``bits``), ``max_leaks``
        and ``ok`` (at most ``max_leaks`` near-duplicates and no shared group).
    """
    train_paths = [p for v in train.values() for p in v]
    test_paths = [p for v in test.values() for p in v]
    found = near_duplicates(hash_images(test_paths), hash_images(train_paths), max_distance)
    shared = overlap(list(train), list(test))
    return {"train_images": len(train_paths), "test_images": len(test_paths),
            "shared_groups": shared, "near_duplicates": len(found),
            "examples": [{"test": test_paths[i], "train": train_paths[j], "bits": d}
                         for i, j, d in found[:EXAMPLES]],
            "max_leaks": max_leaks, "ok": len(found) <= max_leaks and not shared}


def split_leakage(data: str | Path, split: SplitFile, max_distance: int = 4,
                  max_leaks: int = 0, group_depth: int = 0,
                  group_pattern: str | None = None) -> dict[str, Any]:
    """:func:`image_leakage` of the folder-per-class tree ``data`` between the train groups
    of a split file and its test and val groups. The file's ``group_depth`` and
    ``group_pattern`` say how images map to groups; ``group_depth`` and ``group_pattern``
    here are used where it says nothing."""
    if Path(data).is_file():
        raise DatasetError(f"the leakage check looks for near-duplicate images; {data} is a "
                           f"table")
    depth = split.group_depth if split.group_depth is not None else group_depth
    groups = items_by_group(data, depth, split.group_pattern or group_pattern)
    train = {g: groups.get(g, []) for g in split.train}
    test = {g: groups.get(g, []) for g in split.test + split.val}
    return image_leakage(train, test, max_distance, max_leaks)


def folder_leakage(train_dir: str | Path, test_dir: str | Path, max_distance: int = 4,
                   max_leaks: int = 0, group_depth: int = 0,
                   group_pattern: str | None = None) -> dict[str, Any]:
    """:func:`image_leakage` between a training and a test folder-per-class tree (groups as
    :func:`~siamkit.data.splitfiles.items_by_group` finds them)."""
    for folder in (train_dir, test_dir):
        if Path(folder).is_file():
            raise DatasetError(f"the leakage check looks for near-duplicate images; {folder} "
                               f"is a table")
    return image_leakage(items_by_group(train_dir, group_depth, group_pattern),
                         items_by_group(test_dir, group_depth, group_pattern),
                         max_distance, max_leaks)


def text_leakage(train: Sequence[str], test: Sequence[str], min_similarity: float = 0.8,
                 max_leaks: int = 0) -> dict[str, Any]:
    """Test texts with a near-duplicate among the training texts.

    Returns:
        ``train_texts``, ``test_texts``, ``near_duplicates``, ``exact_after_normalisation``
        (equal once case, punctuation and spaces are normalised), ``min_similarity``,
        ``examples`` (up to 10: ``test``, ``train``, ``similarity``), ``max_leaks`` and
        ``ok`` (at most ``max_leaks`` near-duplicates).
    """
    found = text_near_duplicates(list(test), list(train), min_similarity)
    return {"train_texts": len(train), "test_texts": len(test), "near_duplicates": len(found),
            "exact_after_normalisation": sum(1 for _, _, sim in found if sim == 1.0),
            "min_similarity": min_similarity,
            "examples": [{"test": test[i], "train": train[j], "similarity": round(sim, 3)}
                         for i, j, sim in found[:EXAMPLES]],
            "max_leaks": max_leaks, "ok": len(found) <= max_leaks}
