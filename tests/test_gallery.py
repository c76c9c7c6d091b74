"""Gallery: enroll / identify / remove, open-set decisions, persistence, backends."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import siamkit
from siamkit.gallery import (
    ExactIndex,
    Gallery,
    GalleryError,
    IdempotencyConflict,
    Match,
    check_label,
    content_hash,
    metric_of,
)


def _points():
    # 2-D references: class a near (0, 0), class b near (10, 0), class c near (0, 10)
    return {"a": [[0.0, 0.0], [1.0, 0.0]], "b": [[10.0, 0.0]], "c": [[0.0, 10.0], [0.0, 12.0]]}


def _gallery(**kw) -> Gallery:
    g = Gallery(2, metric="euclidean", **kw)
    for label, vecs in _points().items():
        g.enroll(label, np.array(vecs))
    return g


def test_identify_ranks_classes_by_nearest_reference_hand_computed():
    g = _gallery()
    assert len(g) == 5 and g.labels() == ["a", "b", "c"]
    assert g.counts() == {"a": 2, "b": 1, "c": 2}
    (m,) = g.identify(np.array([[2.0, 0.0]]), k=3)
    # distances: a 1 (to (1,0)), b 8, c sqrt(4 + 100)
    assert [x.label for x in m] == ["a", "b", "c"]
    assert m[0].score == pytest.approx(1.0) and m[1].score == pytest.approx(8.0)
    assert m[2].score == pytest.approx(np.sqrt(104))
    assert len(g.identify(np.array([[2.0, 0.0]]), k=1)[0]) == 1


def test_prototype_class_score_uses_the_mean():
    g = _gallery(class_score="prototype")
    (m,) = g.identify(np.array([[0.0, 8.0]]), k=2)
    # c's prototype (0, 11): 3; a's prototype (0.5, 0): sqrt(0.25 + 64)
    assert m[0] == Match("c", pytest.approx(3.0))
    assert m[1].label == "a" and m[1].score == pytest.approx(np.sqrt(64.25))


def test_self_distance_is_exactly_zero_for_large_norms():
    rng = np.random.default_rng(0)
    refs = rng.normal(size=(50, 16)).astype(np.float32) * 1000
    g = Gallery(16, metric="euclidean")
    g.enroll_many([f"c{i}" for i in range(50)], refs)
    res = g.identify(refs, k=1)
    assert [r[0].label for r in res] == [f"c{i}" for i in range(50)]
    assert all(r[0].score == 0.0 for r in res)


def test_open_set_decision_and_cosine_direction():
    g = Gallery(2, metric="cosine")
    g.enroll("east", np.array([[1.0, 0.0]]))
    g.enroll("north", np.array([[0.0, 5.0]]))  # stored normalised
    (m,) = g.identify(np.array([[3.0, 3.1]]), k=2)
    assert m[0].label == "north" and m[0].score == pytest.approx(3.1 / np.hypot(3, 3.1))
    assert g.decide(m, threshold=0.9) == "unknown"
    assert g.decide(m, threshold=0.7) == "north"
    assert g.decide(m, threshold=None) == "north" and g.decide([], 0.5) == "unknown"
    eu = _gallery()
    (m,) = eu.identify(np.array([[2.0, 0.0]]), k=1)
    assert eu.decide(m, threshold=0.5) == "unknown" and eu.decide(m, threshold=1.5) == "a"


def test_remove_and_bad_inputs():
    g = _gallery()
    assert g.remove("c") == 2 and "c" not in g and g.labels() == ["a", "b"]
    (m,) = g.identify(np.array([[0.0, 10.0]]), k=5)
    assert [x.label for x in m] == ["a", "b"]
    with pytest.raises(KeyError):
        g.remove("c")
    g.enroll("c", np.array([[0.0, 10.0]]))  # a removed label can come back
    assert g.identify(np.array([[0.0, 10.0]]), k=1)[0][0] == Match("c", 0.0)
    for bad in ("", "unknown", "x" * 300, "tab\tlabel", 7):
        with pytest.raises(GalleryError):
            g.enroll(bad, np.zeros((1, 2)))
    with pytest.raises(GalleryError, match="size 2"):
        g.enroll("d", np.zeros((1, 3)))
    with pytest.raises(GalleryError, match="NaN"):
        g.enroll("d", np.array([[np.nan, 0.0]]))
    with pytest.raises(GalleryError, match="nothing"):
        g.enroll("d", np.zeros((0, 2)))
    with pytest.raises(GalleryError, match="k must"):
        g.identify(np.zeros((1, 2)), k=0)
    assert Gallery(2).identify(np.zeros((2, 2))) == [[], []]


def test_persistence_model_identity_and_save_copy(tmp_path):
    g = Gallery.create(tmp_path / "g", 2, metric="euclidean", model_id="m1")
    for label, vecs in _points().items():
        g.enroll(label, np.array(vecs), sources=[f"{label}{i}.png" for i in range(len(vecs))])
    g.remove("b")
    g.close()
    again = Gallery.open(tmp_path / "g", model_id="m1")
    assert again.counts() == {"a": 2, "c": 2} and again.metric == "euclidean"
    assert again.identify(np.array([[0.0, 11.0]]), k=1)[0][0].label == "c"
    with pytest.raises(GalleryError, match="another model"):
        Gallery.open(tmp_path / "g", model_id="m2")
    with pytest.raises(GalleryError, match="already holds a gallery"):
        Gallery.create(tmp_path / "g", 2)
    with pytest.raises(GalleryError, match="no gallery"):
        Gallery.open(tmp_path / "nothing")
    again.save(tmp_path / "copy")
    copy = Gallery.load(tmp_path / "copy")
    assert copy.counts() == again.counts() and copy.model_id == "m1"
    # the data is in SQLite, readable by anything
    con = sqlite3.connect(tmp_path / "g" / "gallery.sqlite")
    assert con.execute("SELECT COUNT(*) FROM refs").fetchone()[0] == 4


def test_a_damaged_database_is_refused(tmp_path):
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "gallery.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(GalleryError, match="not a readable gallery"):
        Gallery.open(tmp_path / "g")


def test_embedder_turns_items_into_embeddings():
    g = Gallery(1, metric="euclidean", embedder=lambda xs: torch.tensor([[float(len(x))]
                                                                          for x in xs]))
    g.enroll("short", ["ab"])
    g.enroll("long", ["abcdefgh"])
    assert [m[0].label for m in g.identify(["abc", "abcdefg"], k=1)] == ["short", "long"]


def test_exact_index_chunks_give_the_same_answer():
    rng = np.random.default_rng(1)
    refs, qs = rng.normal(size=(1000, 8)), rng.normal(size=(37, 8))
    for metric in ("euclidean", "sqeuclidean", "dot", "cosine"):
        big, small = ExactIndex(metric), ExactIndex(metric, chunk=64, query_chunk=5)
        big.build(refs)
        small.build(refs)
        s1, i1 = big.search(qs, 7)
        s2, i2 = small.search(qs, 7)
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_allclose(s1, s2, rtol=1e-5, atol=1e-5)
    d = np.linalg.norm(qs[:, None] - refs[None], axis=2)
    e = ExactIndex("euclidean", chunk=100)
    e.build(refs)
    s, i = e.search(qs, 3)
    np.testing.assert_array_equal(i, np.argsort(d, 1)[:, :3])
    np.testing.assert_allclose(-s, np.sort(d, 1)[:, :3], rtol=1e-5)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_faiss_flat_ranks_exactly_like_exact(metric):
    pytest.importorskip("faiss")
    rng = np.random.default_rng(2)
    refs = rng.normal(size=(500, 16)).astype(np.float32)
    labels = [f"c{i % 120}" for i in range(500)]
    qs = rng.normal(size=(40, 16)).astype(np.float32)
    exact, flat = (Gallery(16, metric=metric, backend=b) for b in ("exact", "faiss"))
    for g in (exact, flat):
        g.enroll_many(labels, refs)
    a, b = exact.identify(qs, k=10), flat.identify(qs, k=10)
    assert [[m.label for m in r] for r in a] == [[m.label for m in r] for r in b]
    np.testing.assert_allclose([[m.score for m in r] for r in a],
                               [[m.score for m in r] for r in b], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_faiss_approximate_indexes_find_most_neighbours(kind):
    pytest.importorskip("faiss")
    rng = np.random.default_rng(3)
    refs = rng.normal(size=(2000, 16)).astype(np.float32)
    labels = [f"c{i}" for i in range(2000)]
    qs = refs[:100] + 0.01 * rng.normal(size=(100, 16)).astype(np.float32)
    g = Gallery(16, metric="euclidean", backend="faiss",
                backend_args={"kind": kind, "nlist": 16, "nprobe": 4})
    g.enroll_many(labels, refs)
    hits = sum(r[0].label == f"c{i}" for i, r in enumerate(g.identify(qs, k=1)))
    assert hits >= 90
    g.remove("c0")  # removal rebuilds the index
    assert g.identify(qs[:1], k=1)[0][0].label != "c0"


def test_bad_backend_and_metric_options():
    with pytest.raises(GalleryError, match="unknown gallery backend"):
        Gallery(2, backend="annoy")
    with pytest.raises(GalleryError, match="unknown metric"):
        Gallery(2, metric="manhattan")
    with pytest.raises(GalleryError, match="class_score"):
        Gallery(2, class_score="vote")
    for dim in (0, -3, 2.5, "2", True):
        with pytest.raises(GalleryError, match="embedding size must be a positive integer"):
            Gallery(dim)


def test_a_closed_gallery_refuses_changes_instead_of_losing_them(tmp_path):
    g = Gallery.create(tmp_path / "g", 2)
    g.enroll("a", np.ones((1, 2)))
    g.close()
    with pytest.raises(GalleryError, match="is closed"):
        g.enroll("b", np.ones((1, 2)))
    with pytest.raises(GalleryError, match="is closed"):
        g.remove("a")
    assert g.counts() == {"a": 1} and Gallery.open(tmp_path / "g").counts() == {"a": 1}


def test_concurrent_enrolls_are_all_kept(tmp_path):
    g = Gallery.create(tmp_path / "g", 4, metric="euclidean")
    rng = np.random.default_rng(4)
    errors = []

    def worker(t: int) -> None:
        try:
            for i in range(20):
                g.enroll(f"t{t}-{i}", rng.normal(size=(1, 4)))
                g.identify(rng.normal(size=(2, 4)), k=3)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(g) == 80
    g.close()
    assert len(Gallery.open(tmp_path / "g")) == 80


def test_metric_of_follows_the_model_distance():
    from siamkit.distances import CosineSimilarity, EuclideanDistance
    from siamkit.encoders import create_encoder
    from siamkit.siamese import LearnedHead, SiameseNetwork

    enc = create_encoder("mlp", in_features=4, embedding_dim=3)
    assert metric_of(SiameseNetwork(enc, EuclideanDistance())) == "euclidean"
    assert metric_of(SiameseNetwork(enc, EuclideanDistance(squared=True))) == "sqeuclidean"
    assert metric_of(SiameseNetwork(enc, CosineSimilarity())) == "cosine"
    with pytest.raises(GalleryError, match="learned similarity head"):
        metric_of(SiameseNetwork(enc, head=LearnedHead(3)))


# ---------------------------------------------------------------- the label rule


@pytest.mark.parametrize("bad, why", [
    ("", "non-empty"), ("  \u3000 ", "non-empty"), ("unknown", "reserved"),
    ("x" * 257, "257 characters"), ("tab\tlabel", "U\\+0009"), ("nul\x00", "U\\+0000"),
    ("del\x7f", "U\\+007F"), ("next line\x85", "U\\+0085"), ("csi\x9b", "U\\+009B"),
    ("s\u200b5", "U\\+200B"), ("s\u200d5", "U\\+200D"), ("rtl\u200f", "U\\+200F"),
    ("a\u202eb", "U\\+202E"), ("a\u202ab", "U\\+202A"), ("a\u2066b", "U\\+2066"),
    ("a\u2069b", "U\\+2069"), ("a\u2060b", "U\\+2060"), ("\ufeffbom", "U\\+FEFF"),
    ("soft\u00adhyphen", "U\\+00AD"), ("line\u2028sep", "U\\+2028"),
    ("lone\ud800", "UTF-8"), (7, "not int"), (None, "not NoneType"), (b"bytes", "not bytes"),
])
def test_check_label_refuses_what_cannot_be_a_label(bad, why):
    with pytest.raises(GalleryError, match=why):
        check_label(bad)
    g = Gallery(2)
    with pytest.raises(GalleryError, match=why):
        g.enroll(bad, np.zeros((1, 2)))
    with pytest.raises(GalleryError, match=why):
        g.enroll_many(["fine", bad], np.zeros((2, 2)))
    assert len(g) == 0


def test_check_label_names_the_hidden_character_and_normalises_to_nfc():
    with pytest.raises(GalleryError) as err:
        check_label("s\u200b5")
    # the error spells the invisible character out instead of printing "s5"
    assert "'s\\u200b5'" in str(err.value) and "ZERO WIDTH SPACE" in str(err.value)
    assert check_label("cafe\u0301") == "caf\u00e9"  # e + combining acute -> one character
    assert check_label("a/b") == "a/b" and check_label("../../etc/passwd") == "../../etc/passwd"
    assert check_label("x" * 256) == "x" * 256
    # counted once normalised: 256 characters in NFC, 512 as given
    assert check_label("e\u0301" * 256) == "\u00e9" * 256
    hello = "\U0001f600 \u0928\u092e\u0938\u094d\u0924\u0947"  # an emoji, Devanagari
    assert check_label(hello) == hello


def test_labels_are_stored_normalised_and_removed_by_the_same_rule(tmp_path):
    g = Gallery.create(tmp_path / "g", 2, metric="euclidean")
    nfd = "Nan\u0303du\u0301"
    nfc = check_label(nfd)
    assert nfc == "Na\u00f1d\u00fa"
    assert g.enroll(nfd, np.zeros((1, 2))) == 1
    assert g.labels() == [nfc] and nfd in g and nfc in g
    for label in ("a/b", "../../etc/passwd"):
        g.enroll(label, np.ones((1, 2)))
    g.close()
    g = Gallery.open(tmp_path / "g")
    assert g.labels() == sorted([nfc, "a/b", "../../etc/passwd"])
    assert g.remove(nfd) == 1 and nfc not in g  # removed by the form it was enrolled with
    assert g.remove("a/b") == 1 and g.remove("../../etc/passwd") == 1
    with pytest.raises(GalleryError, match="U\\+200B"):
        g.remove("s\u200b5")  # the rule, not a silent KeyError
    with pytest.raises(KeyError):
        g.remove("s5")
    g.close()
    g = Gallery.open(tmp_path / "g")
    assert len(g) == 0  # the removals were persisted


def test_a_label_stored_by_an_older_version_can_still_be_removed(tmp_path):
    Gallery.create(tmp_path / "g", 2).close()
    con = sqlite3.connect(tmp_path / "g" / "gallery.sqlite")
    with con:  # enrolled before the rule refused DEL and zero-width spaces
        con.executemany("INSERT INTO refs (label, embedding) VALUES (?, ?)",
                        [("old\x7f", np.ones(2, np.float32).tobytes()),
                         ("s\u200b5", np.ones(2, np.float32).tobytes())])
    con.close()
    g = Gallery.open(tmp_path / "g")
    assert g.counts() == {"old\x7f": 1, "s\u200b5": 1}
    assert g.remove("old\x7f") == 1 and g.remove("s\u200b5") == 1 and len(g) == 0


# ---------------------------------------------------------------- crash-safe creation

_CREATOR = r"""
import itertools, os, random, signal, sys, time
from pathlib import Path
from siamkit.gallery import Gallery

root, seed, trials = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
for trial in range(trials):
    pid = os.fork()
    if pid == 0:  # creates galleries until it is killed
        for i in itertools.count():
            Gallery.create(root / f"{trial}-{i}", 4, metric="euclidean").close()
    time.sleep(rng.uniform(0.0, 0.03))
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
"""


def test_sigkill_while_creating_never_leaves_a_broken_gallery(tmp_path):
    """Processes creating galleries are killed at 40 random (seeded) moments; afterwards
    every database in place is a complete gallery, and every other folder can be created.
    Before creation was atomic, about one kill in ten left a 0-byte or table-less
    gallery.sqlite that opening, enrolling and serving failed on ('no such table: meta')."""
    if not hasattr(os, "fork"):
        pytest.skip("needs fork")
    trials = 40
    subprocess.run([sys.executable, "-c", _CREATOR, str(tmp_path), "0", str(trials)],
                   check=True, timeout=120, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                       [str(Path(siamkit.__file__).parents[1]),
                        os.environ.get("PYTHONPATH", "")])})
    folders = sorted(tmp_path.iterdir())
    assert len(folders) > trials  # most victims finished some creates before the kill
    interrupted = 0
    for folder in folders:
        if (folder / "gallery.sqlite").exists():
            g = Gallery.open(folder)  # whatever is in place is a whole, empty gallery
            assert (g.dim, g.metric, len(g)) == (4, "euclidean", 0)
            g.close()
            continue
        interrupted += 1
        assert not Gallery.exists(folder)
        with pytest.raises(GalleryError, match="no gallery"):
            Gallery.open(folder)
        g = Gallery.open_or_create(folder, 4, metric="euclidean")  # as the service does
        g.enroll("a", np.ones((1, 4)))
        g.close()
        assert Gallery.open(folder).counts() == {"a": 1}
        assert not list(folder.glob(".gallery.sqlite.*"))  # a killed create's leftovers go
    assert interrupted  # some kills did land inside a create


def _empty_databases(root):
    """What older versions left when killed inside Gallery.create."""
    zero = root / "zero"
    zero.mkdir()
    (zero / "gallery.sqlite").write_bytes(b"")
    header = root / "header"  # the WAL header was written, the schema never committed
    header.mkdir()
    con = sqlite3.connect(header / "gallery.sqlite")
    con.execute("PRAGMA journal_mode=WAL")
    con.close()
    (header / "gallery.sqlite-wal").write_bytes(b"")
    (header / "gallery.sqlite-shm").write_bytes(b"\0" * 32768)
    return zero, header


def test_an_empty_database_left_by_an_older_version_is_no_gallery(tmp_path, caplog):
    for folder in _empty_databases(tmp_path):
        assert not Gallery.exists(folder)
        with pytest.raises(GalleryError, match="no gallery in .*is empty"):
            Gallery.open(folder)  # a clear error, never 'no such table: meta'
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="siamkit.gallery"):
            g = Gallery.create(folder, 2, metric="euclidean")
        assert "creating the gallery anew" in caplog.text
        g.enroll("a", np.zeros((1, 2)))
        g.close()
        assert Gallery.exists(folder) and Gallery.open(folder).counts() == {"a": 1}
    other = tmp_path / "other"
    other.mkdir()
    for folder in _empty_databases(other):  # the service's way in recreates it too
        g = Gallery.open_or_create(folder, 2, metric="cosine", model_id="m")
        assert (len(g), g.metric, g.model_id) == (0, "cosine", "m")
        g.close()
        assert Gallery.open_or_create(folder, 2, metric="cosine", model_id="m").dim == 2


def test_a_database_that_is_not_a_gallery_is_never_replaced(tmp_path):
    folder = tmp_path / "g"
    folder.mkdir()
    con = sqlite3.connect(folder / "gallery.sqlite")  # someone else's data
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    assert Gallery.exists(folder)
    with pytest.raises(GalleryError, match="already holds"):
        Gallery.create(folder, 2)
    with pytest.raises(GalleryError, match="not a readable gallery"):
        Gallery.open(folder)
    assert sqlite3.connect(folder / "gallery.sqlite").execute("SELECT * FROM t").fetchall() == []


def test_concurrent_creates_of_one_folder_make_one_gallery(tmp_path):
    made, refused = [], []

    def create() -> None:
        try:
            made.append(Gallery.create(tmp_path / "g", 2, metric="euclidean"))
        except GalleryError as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=create) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 1 and len(refused) == 5 and "already holds" in refused[0]
    made[0].enroll("a", np.zeros((1, 2)))  # the one made is the one in place
    made[0].close()
    assert Gallery.open(tmp_path / "g").counts() == {"a": 1}


# ---------------------------------------------------------------- duplicates, idempotency


def test_skip_duplicates_leaves_out_stored_and_repeated_references_hand_computed():
    g = Gallery(2, metric="euclidean")
    first = g.enroll("a", np.array([[0.0, 0.0], [1.0, 0.0]]))
    assert first == 2 and (first.added, first.skipped, first.replayed) == (2, 0, False)
    # (1, 0) is stored, (2, 0) is new and given twice: one added, two skipped
    r = g.enroll("a", np.array([[1.0, 0.0], [2.0, 0.0], [2.0, 0.0]]), skip_duplicates=True)
    assert (r.added, r.skipped) == (1, 2) and g.counts() == {"a": 3}
    assert g.enroll("b", np.array([[0.0, 0.0]]), skip_duplicates=True) == 1  # another label
    assert g.enroll("a", np.array([[0.0, 0.0]])) == 1  # the default keeps duplicates
    assert g.counts() == {"a": 4, "b": 1}
    r = g.enroll_many(["a", "c", "c"], np.array([[2.0, 0.0], [5.0, 5.0], [5.0, 5.0]]),
                      skip_duplicates=True)
    assert (r.added, r.skipped) == (1, 2) and g.counts() == {"a": 4, "b": 1, "c": 1}
    g.remove("c")  # a removed class's references are no longer duplicates
    assert g.enroll("c", np.array([[5.0, 5.0]]), skip_duplicates=True) == 1
    # callers that used the int still can: printed, compared, in JSON it is the number added
    assert f"{r} added" == "1 added" and json.dumps({"added": r}) == '{"added": 1}'
    assert repr(r) == "Enrolled(added=1, skipped=2, replayed=False)"


def test_content_hash_is_of_the_label_and_the_stored_float32_bytes(tmp_path):
    e = np.array([3.0, 4.0], np.float32)
    expected = hashlib.sha256(b"a\0" + e.tobytes()).hexdigest()
    assert content_hash("a", e) == expected == content_hash("a", e.tobytes())
    assert content_hash("b", e) != expected
    cos = Gallery.create(tmp_path / "g", 2, metric="cosine")
    cos.enroll("a", np.array([[3.0, 4.0]]))  # stored normalised: (0.6, 0.8)
    assert cos.enroll("a", np.array([[6.0, 8.0]]), skip_duplicates=True).skipped == 1
    cos.close()
    con = sqlite3.connect(tmp_path / "g" / "gallery.sqlite")
    (stored,) = con.execute("SELECT hash FROM refs").fetchone()
    assert stored == content_hash("a", np.array([0.6, 0.8], np.float32))
    again = Gallery.open(tmp_path / "g")  # hashes come back with the references
    r = again.enroll("a", np.array([[0.6, 0.8], [0.0, 1.0]]), skip_duplicates=True)
    assert (r.added, r.skipped) == (1, 1)


def _v1_gallery(folder: Path, rows) -> None:
    """A database exactly as version 1 wrote it: no hash column, no enroll_keys table."""
    folder.mkdir()
    con = sqlite3.connect(folder / "gallery.sqlite")
    con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    con.execute("CREATE TABLE refs (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                "label TEXT NOT NULL, source TEXT, embedding BLOB NOT NULL)")
    con.execute("CREATE INDEX refs_label ON refs(label)")
    info = {"version": 1, "dim": 2, "metric": "euclidean", "model_id": "m",
            "class_score": "nearest", "backend": "exact", "backend_args": {}}
    con.execute("INSERT INTO meta VALUES ('info', ?)", (json.dumps(info),))
    con.executemany("INSERT INTO refs (label, source, embedding) VALUES (?, ?, ?)",
                    [(lab, None, np.array(v, np.float32).tobytes()) for lab, v in rows])
    con.commit()
    con.close()


def test_a_version_1_database_is_upgraded_in_place(tmp_path):
    _v1_gallery(tmp_path / "g", [("a", [0.0, 0.0]), ("a", [1.0, 0.0]), ("b", [9.0, 9.0])])
    g = Gallery.open(tmp_path / "g", model_id="m")
    assert g.counts() == {"a": 2, "b": 1}
    r = g.enroll("a", np.array([[1.0, 0.0], [3.0, 0.0]]), skip_duplicates=True)
    assert (r.added, r.skipped) == (1, 1)  # the old (1, 0) is known by its hash
    assert g.enroll("b", np.zeros((1, 2)), idempotency_key="k") == 1
    g.close()
    con = sqlite3.connect(tmp_path / "g" / "gallery.sqlite")
    hashes = con.execute("SELECT label, embedding, hash FROM refs ORDER BY id").fetchall()
    assert all(h == content_hash(lab, blob) for lab, blob, h in hashes) and len(hashes) == 5
    info = json.loads(con.execute("SELECT value FROM meta").fetchone()[0])
    assert info["version"] == 2
    assert con.execute("SELECT key, label, added FROM enroll_keys").fetchall() == [("k", "b", 1)]
    # an older version writing into the upgraded file leaves a NULL hash: filled on open
    con.execute("INSERT INTO refs (label, embedding) VALUES ('b', ?)",
                (np.array([7.0, 7.0], np.float32).tobytes(),))
    con.commit()
    con.close()
    g = Gallery.open(tmp_path / "g")
    assert g.enroll("b", np.array([[7.0, 7.0]]), skip_duplicates=True).skipped == 1


@pytest.mark.parametrize("on_disk", [False, True])
def test_an_enroll_retried_with_its_idempotency_key_adds_nothing(tmp_path, on_disk):
    g = (Gallery.create(tmp_path / "g", 2, metric="euclidean") if on_disk
         else Gallery(2, metric="euclidean"))
    x = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    first = g.enroll("a", x, idempotency_key="req-1", skip_duplicates=True)
    assert (first.added, first.skipped, first.replayed) == (2, 1, False)
    retry = g.enroll("a", x, idempotency_key="req-1", skip_duplicates=True)
    assert (retry.added, retry.skipped, retry.replayed) == (2, 1, True)
    assert g.enroll("a", x[:1], idempotency_key="req-1").replayed  # the key decides
    assert g.counts() == {"a": 2}
    with pytest.raises(IdempotencyConflict, match="'req-1' was used to enroll class 'a'"):
        g.enroll("b", x, idempotency_key="req-1")
    assert issubclass(IdempotencyConflict, GalleryError) and "b" not in g
    assert g.enroll("a", x[:1], idempotency_key="req-2") == 1  # a new key is a new enroll
    for bad in ("", "x" * 256, "line\nbreak", 7):
        with pytest.raises(GalleryError, match="idempotency key"):
            g.enroll("a", x, idempotency_key=bad)
    assert g.counts() == {"a": 3}
    g.save(tmp_path / "copy")  # keys travel with a copy
    assert Gallery.open(tmp_path / "copy").enroll("a", x, idempotency_key="req-1").replayed
    if on_disk:  # and survive a restart
        g.close()
        g = Gallery.open(tmp_path / "g")
        assert g.enroll("a", x, idempotency_key="req-1") == 2 and g.counts() == {"a": 3}
        g.remove("a")  # a late retry of an enroll whose class was removed adds nothing
        assert g.enroll("a", x, idempotency_key="req-2").replayed and "a" not in g


def test_references_and_their_idempotency_key_commit_together(tmp_path):
    g = Gallery.create(tmp_path / "g", 2, metric="euclidean")
    con = sqlite3.connect(tmp_path / "g" / "gallery.sqlite")
    con.execute("CREATE TRIGGER fail BEFORE INSERT ON enroll_keys "
                "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END")
    con.commit()
    with pytest.raises(GalleryError, match="the write failed and changed nothing.*disk on fire"):
        g.enroll("a", np.zeros((2, 2)), idempotency_key="k")
    assert len(g) == 0  # neither in memory
    assert con.execute("SELECT COUNT(*) FROM refs").fetchone()[0] == 0  # nor on disk
    con.execute("DROP TRIGGER fail")
    con.commit()
    assert g.enroll("a", np.zeros((2, 2)), idempotency_key="k") == 2  # the retry works
    assert con.execute("SELECT COUNT(*) FROM refs").fetchone()[0] == 2


# ---------------------------------------------------------------- what open refuses


def _edit_settings(folder: Path, **changes) -> None:
    con = sqlite3.connect(folder / "gallery.sqlite")
    info = json.loads(con.execute("SELECT value FROM meta WHERE key = 'info'").fetchone()[0])
    info.update(changes)
    con.execute("UPDATE meta SET value = ? WHERE key = 'info'", (json.dumps(info),))
    con.commit()
    con.close()


def test_open_refuses_a_gallery_that_does_not_fit_the_caller(tmp_path):
    g = Gallery.create(tmp_path / "g", 3, metric="euclidean")  # no model id
    g.enroll("a", np.ones((1, 3)))
    g.close()
    assert Gallery.open(tmp_path / "g", dim=3, metric="euclidean").counts() == {"a": 1}
    with pytest.raises(GalleryError, match="embeddings of size 3, this model makes embeddings "
                                           "of size 4"):
        Gallery.open(tmp_path / "g", dim=4)
    with pytest.raises(GalleryError, match="a euclidean gallery, this model scores with cosine"):
        Gallery.open(tmp_path / "g", metric="cosine")
    with pytest.raises(GalleryError, match="size 3.*size 4"):  # as a service opens it
        Gallery.open_or_create(tmp_path / "g", 4, metric="euclidean", model_id="m")
    _edit_settings(tmp_path / "g", metric="dot")  # edited by hand
    with pytest.raises(GalleryError, match="a dot gallery, this model scores with euclidean"):
        Gallery.open(tmp_path / "g", metric="euclidean")
    assert Gallery.open(tmp_path / "g").metric == "dot"  # a caller expecting nothing


@pytest.mark.parametrize("changes, why", [
    ({"metric": "manhattan"}, "stored metric 'manhattan' is not one of"),
    ({"metric": None}, "stored metric None"),
    ({"dim": 0}, "stored embedding size 0"), ({"dim": "3"}, "stored embedding size '3'"),
    ({"dim": True}, "stored embedding size True"),
    ({"backend_args": [1]}, "backend options \\[1\\]"),
    ({"class_score": "vote"}, "opening .*class_score must be"),
    ({"backend": "annoy"}, "opening .*unknown gallery backend 'annoy'"),
])
def test_open_refuses_settings_that_are_not_valid(tmp_path, changes, why):
    Gallery.create(tmp_path / "g", 3, metric="euclidean").close()
    _edit_settings(tmp_path / "g", **changes)
    with pytest.raises(GalleryError, match=why):
        Gallery.open(tmp_path / "g")


def test_open_refuses_stored_references_that_are_not_finite_naming_the_class(tmp_path):
    g = Gallery.create(tmp_path / "g", 2, metric="cosine")
    g.enroll("fine", np.ones((1, 2)))
    g.close()
    con = sqlite3.connect(tmp_path / "g" / "gallery.sqlite")
    con.executemany("INSERT INTO refs (label, embedding) VALUES (?, ?)",
                    [("broken", np.array([np.nan, 1.0], np.float32).tobytes()),
                     ("also broken", np.array([np.inf, 0.0], np.float32).tobytes())])
    con.commit()
    con.close()
    # before, every query was answered "unknown" with a NaN score
    with pytest.raises(GalleryError, match="2 stored references are not finite.*class 'also "
                                           "broken' and 1 more"):
        Gallery.open(tmp_path / "g")


def test_two_processes_writing_one_folder_still_each_apply_their_own_enrolls(tmp_path):
    """A folder's gallery has one writer; should two write it anyway, each applies its own
    enrolls as before (the version sequence has gaps for it, which only a shared store
    fills), and the next open sees both."""
    a = Gallery.create(tmp_path / "g", 2, metric="euclidean")
    b = Gallery.open(tmp_path / "g")
    a.enroll("a", np.zeros((1, 2)))
    b.enroll("b", np.ones((1, 2)))
    assert (a.counts(), b.counts(), a.version, b.version) == ({"a": 1}, {"b": 1}, 1, 2)
    a.close()
    b.close()
    again = Gallery.open(tmp_path / "g")
    assert again.counts() == {"a": 1, "b": 1} and again.version == 2
