"""Using a loaded model: its galleries, references from a folder, two items scored,
identification answers (what the CLI and the service share)."""

from __future__ import annotations

import pytest
import torch

from conftest import make_image_run, make_image_tree
from siamkit.checkpoint import load_model, model_identity
from siamkit.data.download import DatasetError
from siamkit.gallery import Gallery, GalleryError
from siamkit.inference import (
    Embedder,
    embed_references,
    identify_results,
    open_model_gallery,
    score_items,
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("inference")
    run = make_image_run(root / "run")
    return run, load_model(run)[0], make_image_tree(root / "tree", classes=3, per_class=3)


def test_open_model_gallery_creates_opens_and_refuses(setup, tmp_path):
    run, model, _ = setup
    ident = model_identity(run)
    with pytest.raises(GalleryError, match="enroll classes first"):
        open_model_gallery(model, ident, tmp_path / "g")
    g = open_model_gallery(model, ident, tmp_path / "g", create=True, class_score="prototype")
    assert (g.dim, g.metric, g.class_score) == (model.embedding_dim, "euclidean", "prototype")
    g.close()
    again = open_model_gallery(model, ident, tmp_path / "g", backend="exact")
    assert again.class_score == "prototype"  # stored settings unless overridden
    again.close()
    Gallery.create(tmp_path / "other", model.embedding_dim + 1, metric="euclidean").close()
    with pytest.raises(GalleryError, match="embeddings of size"):
        open_model_gallery(model, ident, tmp_path / "other")
    assert Embedder(run).open_gallery(tmp_path / "g").counts() == {}


def test_embed_references_takes_the_first_shots_and_checks_labels_first(setup, tmp_path):
    _, model, tree = setup
    ticks = []
    labels, emb = embed_references(model, str(tree), shots=2,
                                   progress=lambda stage, n: ticks.append)
    assert labels == ["c0", "c0", "c1", "c1", "c2", "c2"] and emb.shape[0] == 6
    assert sum(ticks) == 6
    bad = make_image_tree(tmp_path / "bad", classes=1, per_class=1)
    (bad / "c0").rename(bad / "unknown")
    with pytest.raises(GalleryError, match="reserved"):
        embed_references(model, str(bad))


def test_score_items_and_identify_results(setup, tmp_path):
    _, model, tree = setup
    a, b = sorted((tree / "c0").iterdir())[:2]
    c = sorted((tree / "c2").iterdir())[0]
    assert score_items(model, str(a), str(a)) == pytest.approx(0.0, abs=1e-4)
    assert score_items(model, str(a), str(b)) < score_items(model, str(a), str(c))
    with pytest.raises(DatasetError, match="not a readable image"):
        (tmp_path / "junk.png").write_bytes(b"x")
        score_items(model, str(a), str(tmp_path / "junk.png"))
    g = Gallery(2, metric="euclidean")
    g.enroll_many(["x", "y"], torch.tensor([[0.0, 0.0], [3.0, 4.0]]))
    found = identify_results(g, ["q1", "q2"], torch.tensor([[0.0, 1.0], [3.0, 4.0]]), k=2,
                             threshold=0.5, key="text")
    assert found[0] == {"text": "q1", "decision": "unknown",
                        "matches": [{"label": "x", "score": 1.0}, {"label": "y", "score":
                                                                    pytest.approx(18 ** 0.5)}]}
    assert found[1]["decision"] == "y" and found[1]["matches"][0]["score"] == 0.0


def test_text_models_enroll_texts_not_folders(tmp_path):
    from conftest import make_text_run

    model = load_model(make_text_run(tmp_path / "t"))[0]
    with pytest.raises(DatasetError, match="a text model enrolls texts"):
        embed_references(model, str(tmp_path))
