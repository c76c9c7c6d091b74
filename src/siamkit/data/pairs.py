"""Verification pairs: every pair of a labelled set, or a pair list read from a CSV file."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .download import DatasetError

__all__ = ["PairList", "all_pairs", "skilled_pairs", "read_pair_csv"]


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
    labels = [r[2].strip() for r in rows]
    if positive_label not in labels:
        raise DatasetError(f"{path}: no pair has the positive label {positive_label!r} "
                           f"(labels found: {sorted(set(labels))[:5]})")
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
    return PairList(paths, np.array(left), np.array(right),
                    np.array([v == positive_label for v in labels]))
