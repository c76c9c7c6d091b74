"""The HTML report: every section and figure present, numbers equal to the metrics JSON."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import numpy as np

from siamkit.calibrate import ThresholdCalibrator
from siamkit.evaluate import verification_report
from siamkit.report import SECTIONS, build_report, write_report


class Sections(HTMLParser):
    """Collects section ids, the images inside each, and the embedded metrics JSON."""

    def __init__(self) -> None:
        super().__init__()
        self.images: dict[str, int] = {}
        self.current: str | None = None
        self.in_json = False
        self.json_text = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.current = a.get("id")
            self.images[self.current] = 0
        elif tag == "img" and self.current:
            assert a["src"].startswith("data:image/png;base64,")  # self-contained
            self.images[self.current] += 1
        elif tag == "script" and a.get("id") == "metrics-json":
            self.in_json = True

    def handle_endtag(self, tag):
        if tag == "section":
            self.current = None
        if tag == "script":
            self.in_json = False

    def handle_data(self, data):
        if self.in_json:
            self.json_text += data


def make_case(seed: int = 0):
    rng = np.random.default_rng(seed)
    n = 40
    same = np.arange(n) % 2 == 0
    scores = np.where(same, rng.normal(0.5, 0.3, n), rng.normal(1.5, 0.3, n))  # distances
    cal = ThresholdCalibrator("eer", higher_is_closer=False).fit(scores, same)
    metrics = verification_report(scores, same, False, cal)
    items = [(rng.integers(0, 255, (1, 12, 10)), rng.integers(0, 255, (1, 12, 10)))
             for _ in range(n)]
    emb = rng.normal(size=(20, 8))
    labels = [f"c{i % 4}" for i in range(20)]
    return metrics, scores, same, items, emb, labels


def test_report_has_every_section_and_figure_and_matching_numbers(tmp_path):
    metrics, scores, same, items, emb, labels = make_case()
    path = write_report(tmp_path / "r" / "report.html",
                        build_report(metrics, scores, same, False, items, emb, labels))
    text = path.read_text()
    parser = Sections()
    parser.feed(text)
    assert set(SECTIONS) <= set(parser.images)
    for key in ("roc", "det", "histogram", "embedding-map"):
        assert parser.images[key] == 1, key
    embedded = json.loads(parser.json_text)
    assert embedded["auc"] == metrics["auc"] and embedded["threshold"] == metrics["threshold"]
    # the table shows the same figures, rounded to 4 places
    for key in ("auc", "eer", "accuracy", "f1"):
        assert re.search(rf"<th>{key}</th><td>{metrics[key]:.4f}</td>", text), key
    # errors at the threshold are shown as image pairs, as many as there are (up to 6)
    n_fa = int(((scores <= metrics["threshold"]) & ~same).sum())
    n_fr = int(((scores > metrics["threshold"]) & same).sum())
    assert f"false accepts (different, scored alike): {n_fa}" in text
    assert f"false rejects (same, scored apart): {n_fr}" in text
    assert parser.images["errors"] == 2 * (min(n_fa, 6) + min(n_fr, 6))


def test_report_without_threshold_or_embeddings_and_with_text_items(tmp_path):
    metrics, scores, same, _, _, _ = make_case(1)
    metrics = verification_report(scores, same, False, None)
    items = [("how do I <b>learn</b>?", "learning how?")] * len(scores)
    text = build_report(metrics, scores, same, False, items)
    assert "none calibrated" in text and "No threshold" in text
    assert "<b>learn</b>" not in text  # text items are escaped


def test_pair_report_shows_image_pairs_and_text_pairs_and_refuses_table_rows():
    import pytest
    import torch

    from siamkit.data.download import DatasetError
    from siamkit.data.pairs import PairList
    from siamkit.data.textpairs import TextPairs
    from siamkit.pairsets import PairScores
    from siamkit.report import pair_report

    left, right = np.array([0, 0, 1, 2]), np.array([1, 2, 3, 3])
    same = np.array([True, False, False, True])
    scores = np.array([0.1, 0.9, 0.8, 0.2])  # distances: the same pairs are closer
    emb = torch.tensor([[0.0, 0.0], [0.1, 0.0], [1.0, 0.3], [1.2, 0.2]])
    images = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    pairs = PairList(["r/a/1.png", "r/a/2.png", "r/b/1.png", "r/b/2.png"], left, right, same)
    cal = ThresholdCalibrator("eer", higher_is_closer=False).fit(scores, same)
    metrics, text = pair_report(PairScores(scores, same, pairs, emb, images), False, cal,
                                title="pairs")
    assert metrics == verification_report(scores, same, False, cal)
    parsed = Sections()
    parsed.feed(text)
    assert set(SECTIONS) <= set(parsed.images) and parsed.images["errors"] == 0  # no errors
    assert "Embedding map: 4 test images of 2 classes" in text  # classes: image folders
    texts = TextPairs(["w", "x", "y", "z"], left, right, same)
    _, text = pair_report(PairScores(scores, same, texts, emb), False)
    assert "Embedding map: 4 test images of 2 classes" in text  # duplicate groups
    with pytest.raises(DatasetError, match="for a tabular model use"):
        pair_report(PairScores(scores, same, pairs, emb), False)
