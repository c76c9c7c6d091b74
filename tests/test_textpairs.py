"""Text pair files: CSV / TSV / JSONL, named or positional columns, labels or scores."""

from __future__ import annotations

import json

import numpy as np
import pytest

from siamkit.data.download import DatasetError
from siamkit.data.textpairs import pair_format, read_text_pairs, write_text_pairs


def test_csv_with_named_columns_stores_each_text_once(tmp_path):
    f = tmp_path / "q.csv"
    f.write_text('q1,q2,dup\n"Hi, there",Hello,1\nHello,Bye,0\n')
    p = read_text_pairs(f, a="q1", b="q2", label="dup")
    assert p.texts == ["Hi, there", "Hello", "Bye"]
    assert p.left.tolist() == [0, 1] and p.right.tolist() == [1, 2]
    assert p.same.tolist() == [True, False] and p.score is None


def test_tsv_without_header_by_position_keeps_bare_quotes(tmp_path):
    f = tmp_path / "sts.tsv"
    f.write_text('x\t4.5\tA "quoted" man\tA man\nx\t0.2\tA dog\tA cat\n')
    p = read_text_pairs(f, a="2", b="3", label=None, score="1")
    assert p.texts[0] == 'A "quoted" man'
    np.testing.assert_allclose(p.score, [4.5, 0.2])
    assert p.same is None


def test_jsonl_and_positive_label(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in [
        {"a": "x", "b": "y", "label": "match"}, {"a": "x", "b": "z", "label": "no"}]) + "\n")
    p = read_text_pairs(f, positive_label="match")
    assert p.same.tolist() == [True, False]
    with pytest.raises(DatasetError, match="no pair has the positive label '1'"):
        read_text_pairs(f)


@pytest.mark.parametrize("content, needle", [
    ("a,b,label\n,y,1\n", "empty text"),
    ("a,b,score\nx,y,high\n", "not a number"),
    ("x,y,label\nx,y,1\n", "no column 'a'"),
    ("", "no pairs"),
])
def test_bad_files_name_the_problem(tmp_path, content, needle):
    f = tmp_path / "bad.csv"
    f.write_text(content)
    score = "score" if "score" in content else None
    with pytest.raises(DatasetError, match=needle):
        read_text_pairs(f, label=None if score else "label", score=score)


def test_bad_jsonl_line_and_unknown_suffix(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"a": "x", "b": "y", "label": 1}\nnot json\n')
    with pytest.raises(DatasetError, match="line 2: not JSON"):
        read_text_pairs(f)
    with pytest.raises(DatasetError, match="cannot tell the pair format"):
        pair_format(tmp_path / "p.xlsx")
    assert pair_format(tmp_path / "p.xlsx", "tsv") == "tsv"


def test_subset_and_write_round_trip(tmp_path):
    f = tmp_path / "q.csv"
    f.write_text("a,b,label\nx,y,yes\ny,z,no\nw,v,yes\n")
    p = read_text_pairs(f, positive_label="yes")
    sub = p.subset(np.array([False, True, True]))
    assert sub.texts == ["y", "z", "w", "v"] and sub.left.tolist() == [0, 2]
    out = write_text_pairs(tmp_path / "out.csv", sub)
    again = read_text_pairs(out, positive_label="yes")
    assert again.texts == sub.texts and again.same.tolist() == [False, True]
    assert again.raw_labels == ["no", "yes"]
