"""Pair sets: pairs of folders, pair CSVs and pair files, kept to a split subset and scored
as the model reads its inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import make_image_run, make_image_tree, make_text_run
from siamkit.checkpoint import load_model
from siamkit.data.download import DatasetError
from siamkit.data.textpairs import TextPairs
from siamkit.embedding import embed_images
from siamkit.inputs import ImageInput
from siamkit.pairsets import (
    PairFileColumns,
    PairSource,
    folder_pairs,
    image_pairs,
    need_both,
    score_pair_source,
)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_image_tree(tmp_path_factory.mktemp("pairsets") / "tree", classes=3,
                           per_class=3)


def test_folder_pairs_all_and_skilled(tmp_path, tree):
    pairs = folder_pairs(str(tree))
    assert len(pairs) == 9 * 8 // 2 and int(pairs.same.sum()) == 3 * 3
    forged = make_image_tree(tmp_path / "sig", classes=2, per_class=2)
    (forged / "c0").rename(forged / "001")
    (forged / "c1").rename(forged / "001_forg")
    skilled = folder_pairs(str(forged), skilled=True, group_pattern=r"^(\d+)")
    # one genuine pair, and each of the 2 genuine with each of the 2 forgeries
    assert int(skilled.same.sum()) == 1 and int((~skilled.same).sum()) == 4
    with pytest.raises(DatasetError, match="needs --group-pattern"):
        folder_pairs(str(forged), skilled=True)
    with pytest.raises(DatasetError, match="no skilled pairs"):
        folder_pairs(str(tree), skilled=True, group_pattern="^(c)")


def test_image_pairs_from_a_csv_kept_to_a_split(tmp_path, tree):
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"val": ["c0", "c1"], "test": ["c2"]}))
    kept = image_pairs(PairSource(data=str(tree), all_pairs=True, split=str(split),
                                  subset="val"))
    assert len(kept.paths) == 6 and len(kept) == 15 and int(kept.same.sum()) == 6
    rows = ["c0/00.png,c0/01.png,0", "c0/00.png,c1/00.png,1"]
    (tmp_path / "p.csv").write_text("\n".join(rows) + "\n")
    source = PairSource(data=str(tree), pairs=str(tmp_path / "p.csv"),
                        columns=PairFileColumns(positive_label="0"))
    pairs = image_pairs(source)
    assert pairs.same.tolist() == [True, False]
    with pytest.raises(DatasetError, match="needs --data"):
        image_pairs(PairSource(pairs="p.csv"))
    with pytest.raises(DatasetError, match="need both same and different pairs"):
        image_pairs(PairSource(data=str(tree), all_pairs=True, split=str(split)))


def test_need_both_and_describe():
    with pytest.raises(DatasetError, match="got 2 same and 0 different"):
        need_both(np.array([True, True]))
    need_both(np.array([True, False]))
    assert PairSource(data="d", all_pairs=True).describe() == "all pairs of d"
    assert PairSource(pairs="p.csv", split="s.json", subset="val").describe() == (
        "p.csv, val groups of s.json")


def test_score_pair_source_scores_image_pairs_as_the_model_reads_them(tmp_path, tree):
    run = make_image_run(tmp_path / "run")
    model = load_model(run)[0]
    seen, done = [], []
    scored = score_pair_source(model, PairSource(data=str(tree), all_pairs=True),
                               progress=lambda stage, n: seen.append((stage, n)) or done.append)
    assert seen == [("embedding", 9)] and sum(done) == 9
    pairs = scored.pairs
    assert scored.images.shape == (9, 1, 16, 16) and scored.embeddings.shape[0] == 9
    emb = embed_images(model, ImageInput(model.input_spec).prepare(pairs.paths))
    want = model.score_embeddings(emb[pairs.left], emb[pairs.right]).detach().numpy()
    np.testing.assert_allclose(scored.scores, want, rtol=1e-5, atol=1e-6)
    assert scored.same.tolist() == pairs.same.tolist()
    with pytest.raises(DatasetError, match="an image model needs --data"):
        score_pair_source(model, PairSource(all_pairs=True))


def test_pair_file_columns_and_a_text_models_pairs(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("q1,q2,dup\nhow are you,how do you do,yes\nhi there,stock prices fell,no\n")
    pairs = PairFileColumns(a="q1", b="q2", label="dup", positive_label="yes").read(str(f))
    assert isinstance(pairs, TextPairs) and pairs.same.tolist() == [True, False]
    run = make_text_run(tmp_path / "text", threshold=0.5)
    model = load_model(run)[0]
    with pytest.raises(DatasetError, match="reads its pairs from a pair file"):
        score_pair_source(model, PairSource(data="x", all_pairs=True))
    source = PairSource(pairs=str(f), columns=PairFileColumns(a="q1", b="q2", label="dup",
                                                              positive_label="yes"))
    scored = score_pair_source(model, source)
    assert scored.images is None and len(scored.scores) == 2
    assert torch.is_tensor(scored.embeddings) and scored.embeddings.shape[0] == 4
    graded = tmp_path / "g.csv"
    graded.write_text("a,b,score\nx y,x z,3.5\nu v,w t,1.0\n")
    with pytest.raises(DatasetError, match="graded scores, not labels"):
        score_pair_source(model, PairSource(pairs=str(graded),
                                            columns=PairFileColumns(score="score")))
