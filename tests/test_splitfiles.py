"""Split files: read and checked, classes and pairs kept to a subset, groups of folders and
tables, split files and text pair splits written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import make_image_tree
from siamkit.data.download import DatasetError
from siamkit.data.images import ImageDataset
from siamkit.data.pairs import PairList
from siamkit.data.splitfiles import (
    SplitFile,
    items_by_group,
    restrict_pairs,
    split_classes,
    write_split,
    write_text_split,
)
from siamkit.data.textpairs import TextPairs


def _write(path, value) -> str:
    path.write_text(json.dumps(value) if not isinstance(value, str) else value)
    return str(path)


def test_read_a_split_file_and_its_errors(tmp_path):
    f = _write(tmp_path / "s.json", {"train": ["a"], "test": ["b", "c"], "group_pattern": "^(.)",
                                     "group_depth": 1, "seed": 3})
    split = SplitFile.read(f)
    assert split.train == ("a",) and split.val == () and split.test == ("b", "c")
    assert split.group_pattern == "^(.)" and split.group_depth == 1
    assert split.groups("test") == ("b", "c")
    assert SplitFile.read(_write(tmp_path / "t.json", {"test": []})).group_depth is None
    with pytest.raises(DatasetError, match="split file not found"):
        SplitFile.read(tmp_path / "none.json")
    for bad, why in (("{", "unreadable split file"), ([1], "JSON object"),
                     ({"train": "a"}, "train must be a list"),
                     ({"group_depth": 2}, "group_depth must be 0 or 1"),
                     ({"group_pattern": 3}, "group_pattern must be")):
        with pytest.raises(DatasetError, match=why):
            SplitFile.read(_write(tmp_path / "bad.json", bad))
    with pytest.raises(ValueError, match="subset must be one of"):
        split.groups("dev")


def _classes(names: list[str]) -> ImageDataset:
    n = len(names)
    return ImageDataset(torch.zeros(2 * n, 1, 2, 2, dtype=torch.uint8),
                        torch.arange(n).repeat_interleave(2), names)


def test_split_classes_by_class_or_by_the_files_pattern(tmp_path):
    data = _classes(["001", "001_forg", "002", "002_forg", "003"])
    by_pattern = SplitFile(str(tmp_path / "s"), test=("001", "003"), group_pattern=r"^(\d+)")
    kept = split_classes(data, by_pattern, "test")
    assert kept.class_names == ["001", "001_forg", "003"] and len(kept) == 6
    by_class = SplitFile("s", test=("002",))
    assert split_classes(data, by_class, "test").class_names == ["002"]
    with pytest.raises(DatasetError, match="no class of the data is in the val subset of s"):
        split_classes(data, by_class, "val")
    with pytest.raises(DatasetError, match="gives no group"):
        split_classes(data, SplitFile("s", test=("x",), group_pattern=r"^(x)"), "test")


def test_restrict_pairs_keeps_pairs_inside_the_subset_and_renumbers():
    paths = ["r/a/1.png", "r/a/2.png", "r/b/1.png", "r/c/1.png"]
    pairs = PairList(paths, np.array([0, 0, 1, 2]), np.array([1, 2, 3, 3]),
                     np.array([True, False, False, False]))
    kept = restrict_pairs(pairs, SplitFile("s", test=("a", "b")), "test")
    assert kept.paths == paths[:3]
    assert kept.left.tolist() == [0, 0] and kept.right.tolist() == [1, 2]
    assert kept.same.tolist() == [True, False]
    # the group of a folder by a pattern: a_x and a_y are writer a
    forged = PairList(["r/a_x/1.png", "r/a_y/1.png", "r/b_x/1.png"], np.array([0, 0]),
                      np.array([1, 2]), np.array([True, False]))
    assert len(restrict_pairs(forged, SplitFile("s", test=("a",)), "test", "^(.)_")) == 1
    with pytest.raises(DatasetError, match="no pair has both images in the val groups of s"):
        restrict_pairs(pairs, SplitFile("s", test=("a",)), "val")


def test_items_by_group_of_folders_tables_and_patterns(tmp_path):
    root = make_image_tree(tmp_path / "tree", classes=3, per_class=2)
    groups = items_by_group(root)
    assert sorted(groups) == ["c0", "c1", "c2"] and all(len(v) == 2 for v in groups.values())
    assert sorted(items_by_group(root, group_pattern="^(c)")) == ["c"]
    table = tmp_path / "t.csv"
    table.write_text("x,kind\n1,ax\n2,ay\n3,bx\n")
    assert items_by_group(table, label_column="kind") == {
        "ax": [f"{table}#0"], "ay": [f"{table}#1"], "bx": [f"{table}#2"]}
    assert sorted(items_by_group(table, group_pattern="^(.)", label_column="kind")) == ["a",
                                                                                       "b"]
    with pytest.raises(DatasetError, match="no such folder or table file"):
        items_by_group(tmp_path / "nope")
    with pytest.raises(DatasetError, match="gives no group"):
        items_by_group(root, group_pattern="^(x)")


def test_write_split_records_groups_and_counts(tmp_path):
    root = make_image_tree(tmp_path / "tree", classes=6, per_class=2)
    out = tmp_path / "split.json"
    record = write_split(root, out, val=0.2, test=0.2, seed=1)
    assert json.loads(out.read_text()) == record
    assert sorted(record["train"] + record["val"] + record["test"]) == [f"c{i}" for i in
                                                                        range(6)]
    assert record["images"] == {k: 2 * len(record[k]) for k in ("train", "val", "test")}
    assert record["seed"] == 1 and record["group_depth"] == 0
    with pytest.raises(DatasetError, match="cannot fill 3 splits"):
        write_split(make_image_tree(tmp_path / "two", classes=2), out)


def test_write_text_split_writes_three_pair_files_and_a_record(tmp_path):
    texts = [f"t{i}" for i in range(40)]
    left, right = np.arange(0, 40, 2), np.arange(1, 40, 2)
    pairs = TextPairs(texts, left, right, np.arange(20) % 2 == 0)
    record = write_text_split(pairs, "pairs.csv", tmp_path / "out", val=0.2, test=0.2)
    assert json.loads((tmp_path / "out" / "split.json").read_text()) == record
    assert sum(record[k]["pairs"] for k in ("train", "val", "test")) == 20
    for k in ("train", "val", "test"):
        assert (tmp_path / "out" / f"{k}.csv").is_file()
    with pytest.raises(DatasetError, match="needs labelled pairs"):
        write_text_split(TextPairs(texts, left, right, None, np.ones(20)), "g.csv",
                         tmp_path / "o2")
