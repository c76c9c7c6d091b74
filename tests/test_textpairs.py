"""Text pair files: CSV / TSV / JSONL, named or positional columns, labels or scores."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import MIRROR
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
    with pytest.raises(DatasetError, match="line 2: not a JSON row"):
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


# ---------------------------------------------------------------- named datasets, real files



@pytest.mark.skipif(not (MIRROR / "mrpc").is_dir(), reason="MRPC mirror not present")
def test_mrpc_counts_and_balance_from_the_real_files():
    from siamkit.data.textpairs import load_mrpc

    train, test = load_mrpc("train", MIRROR), load_mrpc("test", MIRROR)
    assert (len(train), int(train.same.sum())) == (4076, 2753)
    assert (len(test), int(test.same.sum())) == (1725, 1147)
    assert any('"' in t for t in train.texts)  # bare quotes survive (no CSV quoting)
    assert any("\x12" in t for t in train.texts)  # the original's control character


@pytest.mark.skipif(not (MIRROR / "stsbenchmark").is_dir(), reason="STS-B mirror not present")
def test_stsb_counts_and_scores_from_the_real_files():
    from siamkit.data.textpairs import load_stsb

    sizes = {s: len(load_stsb(s, MIRROR)) for s in ("train", "dev", "test")}
    assert sizes == {"train": 5749, "dev": 1500, "test": 1379}
    test = load_stsb("test", MIRROR)
    assert test.same is None and 0.0 <= test.score.min() and test.score.max() <= 5.0


@pytest.mark.skipif(not (MIRROR / "er_magellan").is_dir(), reason="ER mirror not present")
def test_every_ditto_dataset_in_the_mirror_loads_with_its_own_attributes():
    from siamkit.data.textpairs import load_ditto

    folders = sorted(p.parent for p in (MIRROR / "er_magellan").glob("*/*/train.txt"))
    assert folders  # whatever datasets are there, none is named in the code
    for folder in folders:
        for split in ("train", "valid", "test"):
            pairs = load_ditto(folder, split)
            assert len(pairs) > 0 and 0 < pairs.same.mean() < 0.5
            assert len(pairs.records) == len(pairs.texts)
            assert all(":" in t for t in pairs.texts[:20])
    ag = load_ditto(MIRROR / "er_magellan" / "Structured" / "Amazon-Google", "train")
    assert (len(ag), int(ag.same.sum())) == (6874, 699)
    assert set(ag.records[0]) == {"title", "manufacturer", "price"}


def test_ditto_parser_on_missing_values_and_odd_attributes(tmp_path):
    from siamkit.data.textpairs import parse_ditto_record, read_ditto, serialize_record

    rec = parse_ditto_record("COL title VAL acme VAL-pro 2 COL manufacturer VAL  "
                             "COL unit price VAL 9.99 COL notes VAL")
    assert rec == {"title": "acme VAL-pro 2", "manufacturer": "", "unit price": "9.99",
                   "notes": ""}
    assert serialize_record(rec) == "title: acme VAL-pro 2; unit price: 9.99"
    assert serialize_record(rec, order=["unit price"], missing="?") == (
        "unit price: 9.99; title: acme VAL-pro 2; manufacturer: ?; notes: ?")
    # a value repeating an earlier one at its start drops the repeat (at word boundaries)
    rep = {"name": "lg tv 42", "description": "lg tv 42 big screen", "size": "420 mm",
           "model": "42", "copy": "lg tv 42"}
    assert serialize_record(rep) == ("name: lg tv 42; description: big screen; size: 420 mm; "
                                     "model: 42")
    assert serialize_record(rep, missing="?").endswith("; copy: ?")
    f = tmp_path / "p.txt"
    f.write_text("COL a VAL x COL b VAL\tCOL a VAL y\t1\nCOL a VAL x COL b VAL\tCOL c VAL z\t0\n")
    pairs = read_ditto(f)
    assert pairs.texts == ["a: x", "a: y", "c: z"] and pairs.same.tolist() == [True, False]
    for bad, needle in [("COL a VAL x\tCOL a VAL y\n", "expected left"),
                        ("COL a VAL x\tCOL a VAL y\t2\n", "labels must be 0 or 1"),
                        ("a VAL x\tCOL a VAL y\t1\n", "starts with 'COL'"),
                        ("COL a x\tCOL a VAL y\t1\n", "has no VAL")]:
        f.write_text(bad)
        with pytest.raises(DatasetError, match=needle):
            read_ditto(f)


def test_a_second_label_must_read_as_different(tmp_path):
    """A two-valued label column whose other value is not a 'different' label (a typo such
    as 'maybe') is refused, for text and image pair files alike; numbers and the usual
    words pass."""
    from siamkit.data.download import DatasetError
    from siamkit.data.pairs import read_pair_csv
    from siamkit.data.textpairs import read_text_pairs

    f = tmp_path / "p.csv"
    f.write_text("a,b,label\nx,y,1\nz,w,maybe\n")
    with pytest.raises(DatasetError, match=r"pair 2: label 'maybe' .* neither '1'"):
        read_text_pairs(f)
    for other in ("0", "no", "False", "different", "-1"):
        f.write_text(f"a,b,label\nx,y,1\nz,w,{other}\n")
        assert read_text_pairs(f).same.tolist() == [True, False]
    (tmp_path / "i1.png").write_bytes(b"")
    (tmp_path / "i2.png").write_bytes(b"")
    g = tmp_path / "img.csv"
    g.write_text("i1.png,i2.png,1\ni2.png,i1.png,maybe\n")
    with pytest.raises(DatasetError, match="label 'maybe'"):
        read_pair_csv(g, tmp_path)
