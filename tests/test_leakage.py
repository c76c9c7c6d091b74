"""Leakage checks: a planted near-duplicate image or text is reported, shared groups too,
and the reports' ``ok`` follows ``max_leaks``."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import make_image_tree
from siamkit.data.download import DatasetError
from siamkit.data.leakage import (
    folder_leakage,
    hash_images,
    image_leakage,
    split_leakage,
    text_leakage,
)
from siamkit.data.splitfiles import SplitFile


def _distinct_tree(root, classes: int = 4):
    """Images with different structure (gradients at other angles), so hashes differ."""
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        y, x = np.mgrid[:32, :32]
        img = (127 + 120 * np.sin((x * np.cos(c) + y * np.sin(c)) / (3 + c))).astype(np.uint8)
        Image.fromarray(img).save(root / f"c{c}" / "0.png")
    return root


def test_hash_images_names_an_unreadable_file(tmp_path):
    root = make_image_tree(tmp_path / "t", classes=1, per_class=2)
    assert hash_images([str(p) for p in sorted((root / "c0").iterdir())]).dtype == np.uint64
    (tmp_path / "junk.png").write_bytes(b"no")
    with pytest.raises(DatasetError, match="junk.png: not a readable image"):
        hash_images([str(tmp_path / "junk.png")])


def test_a_planted_copy_and_a_shared_group_are_leaks(tmp_path):
    train = _distinct_tree(tmp_path / "train")
    test = tmp_path / "test"
    (test / "new").mkdir(parents=True)
    shutil.copy(train / "c2" / "0.png", test / "new" / "copy.png")  # the leak
    shutil.copytree(train / "c3", test / "c3")  # a group on both sides
    report = folder_leakage(train, test)
    assert report["near_duplicates"] == 2 and report["shared_groups"] == ["c3"]
    assert report["examples"][0]["bits"] == 0 and not report["ok"]
    assert report["train_images"] == 4 and report["test_images"] == 2
    clean = image_leakage({"a": [str(train / "c0" / "0.png")]},
                          {"b": [str(train / "c1" / "0.png")]}, max_distance=0)
    assert clean["ok"] and clean["near_duplicates"] == 0


def test_split_leakage_follows_the_split_files_groups(tmp_path):
    root = _distinct_tree(tmp_path / "d")
    shutil.copy(root / "c0" / "0.png", root / "c1" / "dup.png")
    split = SplitFile("s.json", train=("c0", "c2"), val=("c3",), test=("c1",))
    report = split_leakage(root, split, max_leaks=1)
    assert report["near_duplicates"] == 1 and report["ok"]  # within --max-leaks
    assert report["test_images"] == 3  # test and val groups together
    table = tmp_path / "t.csv"
    table.write_text("x,label\n1,a\n")
    with pytest.raises(DatasetError, match="is a table"):
        split_leakage(table, split)


def test_text_leakage_counts_exact_and_near_copies():
    train = ["The cat sat on the mat today", "Stocks fell sharply on Monday morning"]
    test = ["the cat sat on the mat, today!", "A completely different sentence here"]
    report = text_leakage(train, test)
    assert report["near_duplicates"] == 1 and report["exact_after_normalisation"] == 1
    assert report["examples"][0]["similarity"] == 1.0 and not report["ok"]
    assert text_leakage(train, test, max_leaks=1)["ok"]
