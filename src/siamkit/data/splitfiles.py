"""Split files: which groups are train, val and test, written once by ``siamkit split`` and
followed by training and evaluation.

A split file is JSON: ``{"train": [...], "val": [...], "test": [...]}`` lists of group
names, with how items map to groups (``group_depth``: 1 when groups are folders above the
class folders; ``group_pattern``: a regular expression on class names whose group 1 is the
group), and facts about how it was made. Text pairs are split into pair files instead
(:func:`write_text_split`), with a ``split.json`` record beside them.

    >>> record = write_split("faces/", "split.json", val=0.15, test=0.15, seed=0)
    >>> split = SplitFile.read("split.json")
    >>> test_set = split_classes(load_image_folder("faces/"), split, "test")
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_text
from .download import DatasetError
from .images import ImageDataset, scan_folder, with_groups_from_names
from .pairs import PairList
from .splits import classes_in, group_of, split_groups, split_text_pairs
from .tabular import read_table
from .textpairs import TextPairs, write_text_pairs

__all__ = ["SUBSETS", "SplitFile", "split_classes", "restrict_pairs", "items_by_group",
           "write_split", "write_text_split"]

SUBSETS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitFile:
    """A split file as read: the groups of each subset and how items map to groups.

    Attributes:
        path: the file, for messages.
        train, val, test: group names of each subset.
        group_pattern: regular expression on class names whose group 1 is the group, or
            None (groups are classes, or folders with ``group_depth`` 1).
        group_depth: 1 when groups are the folders above the class folders, else 0;
            None when the file does not say.
    """

    path: str
    train: tuple[str, ...] = ()
    val: tuple[str, ...] = ()
    test: tuple[str, ...] = ()
    group_pattern: str | None = None
    group_depth: int | None = None

    @classmethod
    def read(cls, path: str | Path) -> SplitFile:
        """Read and check a split file; a missing or malformed one is a DatasetError."""
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DatasetError(f"split file not found: {path}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DatasetError(f"{path}: unreadable split file ({exc})") from None
        if not isinstance(raw, dict):
            raise DatasetError(f"{path}: a split file is a JSON object of train, val and test "
                               f"groups, not {type(raw).__name__}")
        subsets = {}
        for name in SUBSETS:
            groups = raw.get(name) or []
            if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
                raise DatasetError(f"{path}: {name} must be a list of group names")
            subsets[name] = tuple(groups)
        pattern, depth = raw.get("group_pattern"), raw.get("group_depth")
        if pattern is not None and not isinstance(pattern, str):
            raise DatasetError(f"{path}: group_pattern must be a regular expression (text)")
        if depth not in (None, 0, 1) or isinstance(depth, bool):
            raise DatasetError(f"{path}: group_depth must be 0 or 1, not {depth!r}")
        return cls(str(path), **subsets, group_pattern=pattern, group_depth=depth)

    def groups(self, subset: str) -> tuple[str, ...]:
        """The group names of one subset (``train``, ``val`` or ``test``)."""
        if subset not in SUBSETS:
            raise ValueError(f"subset must be one of {', '.join(SUBSETS)}, not {subset!r}")
        return getattr(self, subset)


def split_classes(data: ImageDataset, split: SplitFile, subset: str) -> ImageDataset:
    """The classes of ``data`` whose group is in one subset of a split file.

    A class's group is the data's own (folders, with ``group_depth`` 1), else the split
    file's ``group_pattern`` on its name, else the class itself.

    Raises:
        DatasetError: the pattern gives no group for a class, or no class is in the subset.
    """
    if split.group_pattern and data.groups is None:
        try:
            data = with_groups_from_names(data, split.group_pattern)
        except ValueError as exc:
            raise DatasetError(f"{split.path}: {exc}") from None
    keep = classes_in(data, split.groups(subset))
    if not keep:
        raise DatasetError(f"no class of the data is in the {subset} subset of {split.path}")
    return data.subset_classes(keep)


def restrict_pairs(pairs: PairList, split: SplitFile, subset: str,
                   group_pattern: str | None = None) -> PairList:
    """The pairs whose two images are in groups of one subset of a split file, with the
    images of other groups dropped (indices renumbered).

    An image's group is its class folder's name (its parent's with the file's
    ``group_depth`` 1), or group 1 of ``group_pattern`` (default: the file's) on it.

    Raises:
        DatasetError: no pair has both images in the subset, or the pattern gives no group.
    """
    wanted = set(split.groups(subset))
    pattern = group_pattern or split.group_pattern

    def group(path: str) -> str:
        folder = Path(path).parent if not split.group_depth else Path(path).parent.parent
        return group_of(folder.name, pattern) if pattern else folder.name

    try:
        inside = np.array([group(p) in wanted for p in pairs.paths])
    except ValueError as exc:  # a bad pattern, or a folder it gives no group for
        raise DatasetError(f"{split.path}: {exc}") from None
    keep = inside[pairs.left] & inside[pairs.right]
    if not keep.any():
        raise DatasetError(f"no pair has both images in the {subset} groups of {split.path}")
    left, right = pairs.left[keep], pairs.right[keep]
    used = np.unique(np.concatenate([left, right]))
    remap = np.full(len(pairs.paths), -1)
    remap[used] = np.arange(len(used))
    return PairList([pairs.paths[i] for i in used], remap[left], remap[right],
                    pairs.same[keep])


def items_by_group(source: str | Path, group_depth: int = 0, group_pattern: str | None = None,
                   label_column: str = "label") -> dict[str, list[str]]:
    """Items by group: image paths of a folder-per-class tree, or a class-labelled table's
    rows as ``FILE#row``. A group is the class, its folder (``group_depth`` 1), or group 1
    of ``group_pattern`` on the class (or folder) name.

    Raises:
        DatasetError: no such folder or table, or the pattern gives no group for a class.
    """
    out: dict[str, list[str]] = {}
    if not Path(source).exists():
        raise DatasetError(f"{source}: no such folder or table file")
    if Path(source).is_file():  # a class-labelled table: its rows by class
        keyed = [(label, f"{source}#{n}")
                 for n, label in enumerate(read_table(source, label_column)[1])]
    else:
        keyed = [(group if group_depth else name, path)
                 for path, name, group in scan_folder(source, group_depth)]
    try:
        for key, item in keyed:
            out.setdefault(group_of(key, group_pattern) if group_pattern else key,
                           []).append(item)
    except ValueError as exc:  # a bad pattern, or a class it gives no group for
        raise DatasetError(f"{source}: {exc}") from None
    return out


def write_split(source: str | Path, out: str | Path, *, group_depth: int = 0,
                group_pattern: str | None = None, val: float = 0.15, test: float = 0.15,
                seed: int = 0, label_column: str = "label") -> dict[str, Any]:
    """Split the groups of a folder-per-class tree or a class-labelled table
    (:func:`items_by_group`) into train / val / test at random and write the split file.

    Returns:
        What was written: ``train``, ``val``, ``test`` (group names), ``data``,
        ``group_depth``, ``group_pattern``, ``seed``, and the number of items of each
        subset under ``images`` (a folder) or ``rows`` (a table).
    """
    groups = items_by_group(source, group_depth, group_pattern, label_column)
    try:
        split = split_groups(list(groups), val, test, seed)
    except ValueError as exc:  # fractions, or too few groups for them
        raise DatasetError(f"{source}: {exc}") from None
    items = "rows" if Path(source).is_file() else "images"
    record = {**split, "data": str(source), "group_depth": group_depth,
              "group_pattern": group_pattern, "seed": seed,
              items: {k: sum(len(groups[g]) for g in v) for k, v in split.items()}}
    atomic_write_text(out, json.dumps(record, indent=2))
    return record


def write_text_split(pairs: TextPairs, source: str, out: str | Path, val: float = 0.15,
                     test: float = 0.15, seed: int = 0, link_negatives: str = "auto"
                     ) -> dict[str, Any]:
    """Split labelled text pairs by duplicate groups (:func:`split_text_pairs`) into the
    folder ``out``: ``train.csv``, ``val.csv``, ``test.csv`` and the record ``split.json``.

    Returns:
        The record: ``pairs`` (``source``), ``seed``, ``val``, ``test``,
        ``dropped_cross_split_negatives``, and per subset its ``file``, ``pairs``,
        ``positives`` and ``texts``.
    """
    try:
        parts, dropped = split_text_pairs(pairs, val, test, seed, link_negatives)
    except ValueError as exc:  # no labels, fractions, or a subset left without a pair
        raise DatasetError(f"{source}: {exc}") from None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"pairs": str(source), "seed": seed, "val": val, "test": test,
                              "dropped_cross_split_negatives": dropped}
    for name, part in parts.items():
        write_text_pairs(out / f"{name}.csv", part)
        record[name] = {"file": str(out / f"{name}.csv"), "pairs": len(part),
                        "positives": int(part.same.sum()), "texts": len(part.texts)}
    atomic_write_text(out / "split.json", json.dumps(record, indent=2))
    return record
