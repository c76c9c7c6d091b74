"""Leakage-aware splits: group-disjoint splits, pair-graph groups, near-duplicate detection."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from siamkit.cli import main
from siamkit.data.images import ImageDataset
from siamkit.data.splits import (
    hamming,
    image_hash,
    minhash,
    minhash_similarity,
    near_duplicates,
    normalize_text,
    positive_pair_groups,
    split_by_group,
    split_groups,
)

FACES = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "att_faces"


def test_split_groups_is_disjoint_complete_and_seeded():
    groups = [f"w{i}" for i in range(20)]
    s = split_groups(groups, val=0.2, test=0.25, seed=3)
    assert len(s["val"]) == 4 and len(s["test"]) == 5 and len(s["train"]) == 11
    assert set(s["train"]) | set(s["val"]) | set(s["test"]) == set(groups)
    assert not (set(s["train"]) & set(s["test"])) and not (set(s["val"]) & set(s["test"]))
    assert split_groups(groups, 0.2, 0.25, seed=3) == s
    with pytest.raises(ValueError, match="cannot fill 3 splits"):
        split_groups(["a", "b"], 0.3, 0.3)


def test_split_by_group_without_groups_holds_out_classes():
    data = ImageDataset(torch.zeros(6, 1, 2, 2, dtype=torch.uint8),
                        torch.tensor([0, 0, 1, 1, 2, 2]), ["a", "b", "c"])
    kept, held = split_by_group(data, 1, seed=0)
    assert kept.num_classes == 2 and held.num_classes == 1
    assert set(kept.class_names) | set(held.class_names) == {"a", "b", "c"}


def test_positive_pair_groups_are_connected_components():
    # 0-1 same, 1-2 same, 3-4 same, 2-3 different -> {0,1,2}, {3,4}, {5}
    left, right = np.array([0, 1, 3, 2]), np.array([1, 2, 4, 3])
    same = np.array([True, True, True, False])
    g = positive_pair_groups(6, left, right, same)
    assert g[0] == g[1] == g[2] and g[3] == g[4] and len({g[0], g[3], g[5]}) == 3


def test_image_hash_survives_resizing_but_separates_different_images():
    rng = np.random.default_rng(0)
    a = (rng.random((64, 64)) * 255).astype(np.uint8)
    a_big = np.asarray(Image.fromarray(a).resize((128, 128)))
    b = (rng.random((64, 64)) * 255).astype(np.uint8)
    ha, hab, hb = image_hash(a), image_hash(a_big), image_hash(b)
    assert hamming(np.array([ha]), np.array([hab]))[0, 0] <= 4
    assert hamming(np.array([ha]), np.array([hb]))[0, 0] > 10


def test_hamming_hand_computed():
    assert hamming(np.array([0b1011], dtype=np.uint64),
                   np.array([0, 0b1000, 2**64 - 1], dtype=np.uint64)).tolist() == [[3, 2, 61]]


def test_near_duplicates_reports_closest_train_item():
    train = np.array([0, 0xFFFF, 0xF0F0F0F0], dtype=np.uint64)
    test = np.array([0xFFFE, 0x123456789ABCDEF], dtype=np.uint64)
    assert near_duplicates(test, train, max_distance=2) == [(0, 1, 1)]


def test_text_near_duplicates():
    assert normalize_text("  How do I learn   Python?! ") == "how do i learn python"
    a = minhash("How do I learn Python quickly and well?")
    b = minhash("how do i learn python quickly and well")
    c = minhash("What is the capital city of France today?")
    assert minhash_similarity(a, b) == 1.0 and minhash_similarity(a, c) < 0.2


def test_minhash_estimates_jaccard_of_texts_that_share_a_few_grams():
    """Two MRPC sentences sharing a word 3-gram or two (true Jaccard 0.074) were scored
    0.98 when the hash kept the order of the grams' CRCs; and texts built to share half of
    their grams estimate about 0.5."""
    x = ("Physicians who perform the procedure would face up to two years in prison, "
         "the bill says")
    y = "Both executives face up to 10 years in prison if convicted on all counts"

    def grams(t: str) -> set[str]:
        w = normalize_text(t).split()
        return {" ".join(w[i:i + 3]) for i in range(len(w) - 2)}

    true = len(grams(x) & grams(y)) / len(grams(x) | grams(y))
    assert 0.05 < true < 0.1
    assert abs(minhash_similarity(minhash(x), minhash(y)) - true) < 0.15
    words = [f"w{i}" for i in range(82)]  # 60 grams each; 40 shared of 80 in the union
    left, right = " ".join(words[:62]), " ".join(words[20:82])
    assert len(grams(left) & grams(right)) / len(grams(left) | grams(right)) == 0.5
    estimates = [minhash_similarity(minhash(left, 128, seed=s), minhash(right, 128, seed=s))
                 for s in range(5)]
    assert abs(float(np.mean(estimates)) - 0.5) < 0.1


@pytest.mark.skipif(not FACES.is_dir(), reason="AT&T faces not present")
def test_split_cli_and_a_planted_near_duplicate_is_caught(tmp_path, capsys):
    split_file = tmp_path / "split.json"
    assert main(["--quiet", "split", "--data", str(FACES), "--out", str(split_file),
                 "--val", "0.2", "--test", "0.2", "--seed", "1", "--json"]) == 0
    split = json.loads(capsys.readouterr().out)
    subjects = {p.name for p in FACES.iterdir() if p.is_dir()}
    assert set(split["train"]) | set(split["val"]) | set(split["test"]) == subjects
    assert main(["--quiet", "split", "--check", "--data", str(FACES), "--split",
                 str(split_file), "--json"]) == 0
    clean = json.loads(capsys.readouterr().out)
    assert clean["near_duplicates"] == 0 and clean["ok"]

    # copy the faces into train/test folders, and plant a brightened copy of a test face
    # in a training subject's folder: the check must find it and fail
    train_dir, test_dir = tmp_path / "train", tmp_path / "test"
    for g in split["train"]:
        shutil.copytree(FACES / g, train_dir / g)
    for g in split["test"]:
        shutil.copytree(FACES / g, test_dir / g)
    victim = sorted((test_dir / split["test"][0]).iterdir())[0]
    img = np.asarray(Image.open(victim), dtype=np.int16)
    Image.fromarray(np.clip(img + 12, 0, 255).astype(np.uint8)).save(
        train_dir / split["train"][0] / "planted.png")
    code = main(["--quiet", "split", "--check", "--train", str(train_dir), "--test-dir",
                 str(test_dir), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 3 and not report["ok"] and report["near_duplicates"] >= 1
    assert any(e["test"] == str(victim) and e["train"].endswith("planted.png")
               for e in report["examples"])


def _qa_pairs(tmp_path):
    rows = [("How do I learn Python?", "What is the best way to learn Python?", 1),
            ("What is the best way to learn Python?", "Best way to learn python", 1),
            ("How do I cook rice?", "How to boil rice properly", 1),
            ("How do I learn Python?", "How do I cook rice?", 0),
            ("What is the capital of France?", "Which city is the capital of France?", 1),
            ("How tall is Everest?", "How high is Mount Everest?", 1),
            ("How tall is Everest?", "How do I cook rice?", 0),
            ("Why is the sky blue?", "What makes the sky blue?", 1),
            ("Why is the sky blue?", "Which city is the capital of France?", 0)]
    rows += [(f"Question number {i} about topic {i}?", f"Another question {i} on topic {i}?",
              i % 2) for i in range(40)]
    f = tmp_path / "pairs.csv"
    f.write_text("q1,q2,dup\n" + "".join(f"{a},{b},{y}\n" for a, b, y in rows))
    return f


def test_text_split_keeps_duplicate_groups_whole(tmp_path):
    from siamkit.data.splits import split_text_pairs
    from siamkit.data.textpairs import read_text_pairs

    pairs = read_text_pairs(_qa_pairs(tmp_path), a="q1", b="q2", label="dup")
    parts, dropped = split_text_pairs(pairs, 0.2, 0.2, seed=0, link_negatives="never")
    seen = {name: set(p.texts) for name, p in parts.items()}
    assert not (seen["train"] & seen["test"]) and not (seen["train"] & seen["val"])
    assert not (seen["val"] & seen["test"])
    # a chain of positives (learn Python x3) is one group: all three texts on one side
    chain = {"How do I learn Python?", "What is the best way to learn Python?",
             "Best way to learn python"}
    assert sum(chain <= s for s in seen.values()) == 1
    kept = sum(len(p) for p in parts.values())
    assert kept + dropped == len(pairs) and dropped > 0
    assert all(parts[s].same is not None for s in parts)


def test_text_near_duplicates_find_planted_copies_only():
    from siamkit.data.splits import text_near_duplicates

    train = ["How do I learn Python quickly and well as a beginner?",
             "What is the capital city of France today?", "Why is the sky blue in the day?"]
    test = ["how do I learn python quickly and well as a beginner",  # exact after normalising
            "How do I learn Python quickly and well as a total beginner?",  # near
            "Which rivers flow through the middle of Germany?"]  # unrelated
    found = text_near_duplicates(test, train, min_similarity=0.5)
    by_test = {i: (j, s) for i, j, s in found}
    assert by_test[0] == (0, 1.0)
    assert by_test[1][0] == 0 and 0.5 <= by_test[1][1] < 1.0
    assert 2 not in by_test
    assert text_near_duplicates(test, [], 0.5) == []


def test_cli_split_pairs_and_text_leak_check(tmp_path, capsys):
    f = _qa_pairs(tmp_path)
    out = tmp_path / "split"
    assert main(["split", "--pairs", str(f), "--a", "q1", "--b", "q2", "--label", "dup",
                 "--out", str(out), "--val", "0.2", "--test", "0.2", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert {"train", "val", "test"} <= set(rec) and (out / "test.csv").is_file()
    assert main(["split", "--check", "--train-pairs", str(out / "train.csv"),
                 "--test-pairs", str(out / "test.csv"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["near_duplicates"] == 0
    # plant a near-copy of a training text into the test file: the check must fail
    train_text = (out / "train.csv").read_text().splitlines()[1].split(",")[0]
    leaky = tmp_path / "leaky.csv"
    leaky.write_text((out / "test.csv").read_text() + f"{train_text.upper()}!!,other text,1\n")
    assert main(["split", "--check", "--train-pairs", str(out / "train.csv"),
                 "--test-pairs", str(leaky), "--json"]) == 3
    rep = json.loads(capsys.readouterr().out)
    assert rep["near_duplicates"] == 1 and rep["examples"][0]["train"] == train_text


def test_linking_negatives_keeps_every_pair_and_the_label_balance(tmp_path):
    from siamkit.data.splits import split_text_pairs
    from siamkit.data.textpairs import read_text_pairs

    pairs = read_text_pairs(_qa_pairs(tmp_path), a="q1", b="q2", label="dup")
    parts, dropped = split_text_pairs(pairs, 0.2, 0.2, seed=0)  # auto: links negatives
    assert dropped == 0 and sum(len(p) for p in parts.values()) == len(pairs)
    seen = {name: set(p.texts) for name, p in parts.items()}
    assert not (seen["train"] & seen["test"]) and not (seen["train"] & seen["val"])
    with pytest.raises(ValueError, match="link_negatives"):
        split_text_pairs(pairs, link_negatives="sometimes")


MRPC = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "mrpc"


@pytest.mark.skipif(not MRPC.is_dir(), reason="MRPC mirror not present")
def test_mrpc_validation_split_keeps_its_negatives():
    """MRPC's sentences mostly appear once: dropping straddling negatives would leave the
    validation split almost without them (a biased threshold); linking keeps the balance."""
    from siamkit.data.splits import split_text_pairs
    from siamkit.data.textpairs import load_mrpc

    train = load_mrpc("train", MRPC.parent)
    parts, dropped = split_text_pairs(train, val=0.2, test=0.0, seed=0)
    assert dropped == 0
    assert abs(parts["val"].same.mean() - train.same.mean()) < 0.05
    _, dropped_never = split_text_pairs(train, val=0.2, test=0.0, seed=0,
                                        link_negatives="never")
    assert dropped_never > 0.2 * (~train.same).sum()
