"""Corpus deduplication: the range self-join, union-find clusters, and the CLI on real
MRPC paraphrases planted in a corpus of unrelated sentences."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from conftest import MIRROR, make_text_run
from siamkit.data.splits import connected_components
from siamkit.gallery import ExactIndex


def test_connected_components_by_hand():
    ids = connected_components(7, np.array([0, 3, 4, 1]), np.array([2, 4, 5, 0]))
    # {0, 1, 2}, {3, 4, 5}, {6}
    assert ids[0] == ids[1] == ids[2] and ids[3] == ids[4] == ids[5]
    assert len({ids[0], ids[3], ids[6]}) == 3
    assert connected_components(3, np.array([], int), np.array([], int)).tolist() == [0, 1, 2]


@pytest.mark.parametrize("metric", ["cosine", "euclidean", "sqeuclidean"])
def test_pairs_above_equals_brute_force_across_blocks(metric):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(53, 6)).astype(np.float32)
    if metric == "cosine":
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        sim = x @ x.T
        t = 0.3
    else:
        d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
        sim = -(d2 if metric == "sqeuclidean" else np.sqrt(d2))
        t = -7.0 if metric == "sqeuclidean" else -2.6
    idx = ExactIndex(metric)
    idx.build(x)
    i, j, s = idx.pairs_above(t, block=16)  # 4 block rows, the last one partial
    want = {(a, b) for a in range(53) for b in range(a + 1, 53) if sim[a, b] >= t}
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == want and len(i) == len(want)
    assert (i < j).all()
    np.testing.assert_allclose(s, sim[i, j], atol=1e-4)


def test_dedupe_finds_planted_paraphrases_in_a_real_corpus(tmp_path, capsys):
    if not (MIRROR / "mrpc").is_dir():
        pytest.skip("MRPC mirror absent")
    from siamkit.cli import main
    from siamkit.data.textpairs import load_mrpc

    run = make_text_run(tmp_path / "run", threshold=0.7, max_seq_length=64)
    mrpc = load_mrpc("test", MIRROR)
    pos = np.flatnonzero(mrpc.same)[:30]
    planted = [(mrpc.texts[mrpc.left[k]], mrpc.texts[mrpc.right[k]]) for k in pos]
    rest = np.setdiff1d(np.arange(len(mrpc)), pos)[:200]  # one side of other pairs
    others = list(dict.fromkeys(mrpc.texts[mrpc.left[k]] for k in rest))
    corpus = others + [t for pair in planted for t in pair] + [others[0]]  # + an exact copy
    rng = np.random.default_rng(0)
    corpus = [corpus[i] for i in rng.permutation(len(corpus))]
    src = tmp_path / "corpus.jsonl"
    src.write_text("".join(json.dumps({"id": n, "body": t}) + "\n" for n, t in
                           enumerate(corpus)))
    out = tmp_path / "pairs.csv"
    assert main(["--quiet", "dedupe", "--model", str(run), "--input", str(src), "--column",
                 "body", "--out", str(out), "--no-progress", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert res["texts"] == len(corpus) and res["pairs"] == len(rows) and res["threshold"] == 0.7
    found = {frozenset((r["a"], r["b"])) for r in rows}
    hit = sum(frozenset(p) in found for p in planted)
    assert hit >= 0.7 * len(planted)  # most real paraphrases are found
    assert frozenset((others[0],)) in {frozenset((r["a"], r["b"])) for r in rows
                                       if r["a"] == r["b"]}  # the exact copy
    # exactly the pairs brute force finds, and few of the ~20,000 unrelated pairs (those
    # found are templated market reports: "The Dow Jones ... was off 58.69 points")
    from siamkit.checkpoint import load_model
    from siamkit.embedding import embed_texts

    e = embed_texts(load_model(run)[0], corpus).numpy()
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    sim = e @ e.T
    want = {(a, b) for a in range(len(corpus)) for b in range(a + 1, len(corpus))
            if sim[a, b] >= 0.7}
    assert {(int(r["row_a"]) - 1, int(r["row_b"]) - 1) for r in rows} == want
    planted_texts = {t for p in planted for t in p} | {others[0]}
    false = [r for r in rows if r["a"] not in planted_texts or r["b"] not in planted_texts]
    assert len(false) <= 0.001 * len(others) ** 2 / 2
    for r in rows:  # rows are 1-based input rows holding those texts; clusters are shared
        assert corpus[int(r["row_a"]) - 1] == r["a"] and corpus[int(r["row_b"]) - 1] == r["b"]
        assert float(r["score"]) >= 0.7
    assert res["clusters"] >= hit


def test_dedupe_errors_are_clear(tmp_path, capsys):
    from siamkit.cli import main

    src = tmp_path / "c.csv"
    src.write_text("text\nhello\n\nworld\n,\n")
    assert main(["dedupe", "--model", str(tmp_path / "none"), "--input", str(src), "--out",
                 str(tmp_path / "o.csv")]) == 1
    assert "not found" in capsys.readouterr().err


def test_write_duplicates_writes_rows_and_texts(tmp_path):
    from siamkit.dedupe import DuplicateResult, write_duplicates

    res = DuplicateResult(np.array([0, 1]), np.array([1, 2]), np.array([0.95, 0.9123456]),
                          np.array([0, 0, 0, 3]), 0.9)
    out = write_duplicates(res, ["a", "b", "c", "d"], [2, 3, 5, 7], tmp_path / "x" / "o.csv")
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    assert rows == [["cluster", "row_a", "row_b", "score", "a", "b"],
                    ["0", "2", "3", "0.95", "a", "b"], ["0", "3", "5", "0.912346", "b", "c"]]
    assert res.cluster_sizes.tolist() == [3]


def test_dedupe_file_summarises_and_reports_progress(tmp_path):
    from siamkit.checkpoint import load_model
    from siamkit.dedupe import dedupe_file

    model = load_model(make_text_run(tmp_path / "run"))[0]
    src = tmp_path / "c.csv"
    src.write_text("id,text\n1,the cat sat on the mat\n2,\n3,the cat sat on the mat\n"
                   "4,stocks fell\n")
    stages = []
    res = dedupe_file(model, src, tmp_path / "o.csv", 0.99, skip_empty=True,
                      progress=lambda stage, n: stages.append((stage, n)) or (lambda k: None))
    assert stages == [("embedding", 3), ("searching", 3)]
    assert (res["texts"], res["pairs"], res["clusters"], res["largest_cluster"]) == (3, 1, 1, 2)
    assert res["out"] == str(tmp_path / "o.csv") and set(res["seconds"]) == {
        "embed_s", "search_s", "cluster_s"}
    with open(tmp_path / "o.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert (row["row_a"], row["row_b"]) == ("1", "3")  # rows of the file, the empty one too


def test_find_duplicates_refuses_what_it_cannot_do(tmp_path):
    from siamkit.builders import build_model
    from siamkit.checkpoint import load_model
    from siamkit.config import Config
    from siamkit.data.download import DatasetError
    from siamkit.dedupe import find_duplicates
    from siamkit.inputs import InputSpec

    image = build_model(Config().model, 1, 16)
    image.input_spec = InputSpec(kind="image", size=16)
    with pytest.raises(DatasetError, match="not a text model"):
        find_duplicates(image, ["a"], 0.5)
    with pytest.raises(DatasetError, match="no texts"):
        find_duplicates(image, [], 0.5)
    model = load_model(make_text_run(tmp_path / "run"))[0]
    with pytest.raises(DatasetError, match="raise the threshold"):
        find_duplicates(model, ["a b", "a c", "a d"], -1.0, max_pairs=1)
