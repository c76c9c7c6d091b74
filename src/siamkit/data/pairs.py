"""Verification pairs: every pair of a labelled set, or a pair list read from a CSV file."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .download import DatasetError

__all__ = ["PairList", "all_pairs", "skilled_pairs", "read_pair_csv", "same_from_labels",
           "NEGATIVE_LABELS"]

# What a pair file may write for "different" (besides numbers other than the positive one)
NEGATIVE_LABELS = ("0", "false", "no", "n", "f", "different", "diff", "negative", "neg",
                   "non-match", "nonmatch", "mismatch", "not_duplicate", "not_same")


def same_from_labels(path: str | Path, raw: list[str], positive_label: str = "1",
                     column: str = "label") -> np.ndarray:
    """Labels as written -> "same" booleans. Refuses an empty label, a missing positive
    label, more than two values, and a second value that does not read as "different"
    (a number other than the positive label, or one of :data:`NEGATIVE_LABELS`): a typo
    such as ``maybe`` must not silently count as "different"."""
    if positive_label not in raw:
        raise DatasetError(f"{path}: no pair has the positive label {positive_label!r} "
                           f"(labels found: {sorted(set(raw))[:5]})")
    values = sorted(set(raw))
    if "" in values:
        raise DatasetError(f"{path}, pair {raw.index('') + 1}: empty label in column "
                           f"{column!r}")
    if len(values) > 2:
        odd = [v for v in values if v != positive_label]
        counts = {v: raw.count(v) for v in odd}
        rare = min(odd, key=lambda v: counts[v])
        raise DatasetError(f"{path}: label column {column!r} has {len(values)} values "
                           f"{values[:6]}, expected two ({positive_label!r} for same and "
                           f"one other); pair {raw.index(rare) + 1} has {rare!r}")
    for v in values:
        if v != positive_label and not _reads_as_different(v):
            raise DatasetError(f"{path}, pair {raw.index(v) + 1}: label {v!r} in column "
                               f"{column!r} is neither {positive_label!r} (same) nor a "
                               f"'different' label (0, false, no, different, ...)")
    return np.array([v == positive_label for v in raw])


def _reads_as_different(value: str) -> bool:
    try:
        float(value)
        return True
    except ValueError:
        return value.strip().lower() in NEGATIVE_LABELS


@dataclass
class PairList:
    """Pairs of items by index into ``paths``, with ``same`` (True = same class)."""

    paths: list[str]
    left: np.ndarray
    right: np.ndarray
    same: np.ndarray

    def __len__(self) -> int:
        return len(self.same)


def all_pairs(labels: np.ndarray, max_pairs: int | None = None, seed: int = 0) -> tuple[
        np.ndarray, np.ndarray, np.ndarray]:
    """Every unordered pair (i < j) of items, ``same`` when the labels agree.

    With ``max_pairs``, all positive pairs are kept and negatives are sampled so the total
    stays under it (the list stays honest about positives, which are the rare ones).
    """
    labels = np.asarray(labels)
    i, j = np.triu_indices(len(labels), k=1)
    same = labels[i] == labels[j]
    if max_pairs is not None and len(i) > max_pairs:
        pos, neg = np.flatnonzero(same), np.flatnonzero(~same)
        keep_neg = np.random.default_rng(seed).choice(neg, max(0, max_pairs - len(pos)),
                                                      replace=False)
        keep = np.sort(np.concatenate([pos, keep_neg]))
        i, j, same = i[keep], j[keep], same[keep]
    return i, j, same


def skilled_pairs(classes: list[str], groups: list[str]) -> tuple[np.ndarray, np.ndarray,
                                                                  np.ndarray]:
    """Skilled-forgery pairs, inside each group only.

    In a group (a writer), the class named like the group holds the genuine items (``001``)
    and its other classes hold forgeries of them (``001_forg``). Positives are pairs of two
    genuine items; negatives pair a genuine item with a forgery of it. Forgery-forgery and
    cross-group pairs are left out, as in skilled-forgery verification.

    Args:
        classes: class name of each item.
        groups: group name of each item.
    """
    by_group: dict[str, tuple[list[int], list[int]]] = {}
    for idx, (c, g) in enumerate(zip(classes, groups, strict=True)):
        genuine, forged = by_group.setdefault(g, ([], []))
        (genuine if c == g else forged).append(idx)
    found: list[tuple[int, int, bool]] = []
    for genuine, forged in by_group.values():
        for a, g in enumerate(genuine):
            found += [(g, other, True) for other in genuine[a + 1 :]]
            found += [(g, f, False) for f in forged]
    if not found:
        raise ValueError("no skilled pairs: no group has a class named like the group "
                         "(the genuine items)")
    left, right, same = zip(*found, strict=True)
    return np.array(left), np.array(right), np.array(same)


def read_pair_csv(path: str | Path, root: str | Path, positive_label: str = "1") -> PairList:
    """Read ``a,b,label`` rows (header optional); paths are relative to ``root``.

    A pair is "same" when its label equals ``positive_label`` (as text, so ``1`` and ``1.0``
    differ only if written so). The first row is taken as a header when its first field is
    not an existing file under ``root``.
    """
    path, root = Path(path), Path(root)
    if not path.is_file():
        raise DatasetError(f"pair file not found: {path}")
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [r for r in csv.reader(f) if r and any(x.strip() for x in r)]
    if not rows:
        raise DatasetError(f"{path}: no pairs")
    for n, r in enumerate(rows, 1):
        if len(r) < 3:
            raise DatasetError(f"{path}, line {n}: expected a,b,label, got {r!r}")
    first = rows[0]
    if not ((root / first[0].strip()).is_file() and (root / first[1].strip()).is_file()):
        rows = rows[1:]  # a header: its fields are not files under root
        if not rows:
            raise DatasetError(f"{path}: no pairs ({first[0].strip()!r} not found under {root}, "
                               f"so the only row was read as a header)")
    same = same_from_labels(path, [r[2].strip() for r in rows], positive_label)
    index: dict[str, int] = {}
    left, right = [], []
    for r in rows:
        for name, side in ((r[0].strip(), left), (r[1].strip(), right)):
            if name not in index:
                if not (root / name).is_file():
                    raise DatasetError(f"{path}: {name!r} not found under {root}")
                index[name] = len(index)
            side.append(index[name])
    paths = [str(root / p) for p in index]
    return PairList(paths, np.array(left), np.array(right), same)
