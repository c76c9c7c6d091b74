"""Evaluators: Lake's protocol and N-way K-shot episodes, on a model whose answers we know."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from siamkit.data.images import ImageDataset
from siamkit.data.omniglot import OneShotRun
from siamkit.distances import EuclideanDistance
from siamkit.embedding import embed_images
from siamkit.evaluate import class_scores, evaluate_episodes, evaluate_runs
from siamkit.inputs import InputSpec
from siamkit.siamese import LearnedHead, SiameseNetwork


class MeanPixel(nn.Module):
    """Embeds an image as its mean intensity: images of one grey level are one class."""

    output_dim = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((1, 2, 3))[:, None]


def grey(levels: list[int], size: int = 4) -> torch.Tensor:
    return torch.tensor(levels, dtype=torch.uint8)[:, None, None, None].expand(-1, 1, size,
                                                                              size).clone()


def test_embed_images_batches_and_scales_to_unit_range():
    model = SiameseNetwork(MeanPixel())
    emb = embed_images(model, grey([0, 255, 51]), batch_size=2)
    torch.testing.assert_close(emb, torch.tensor([[0.0], [1.0], [0.2]]))


def test_embed_images_tta_is_repeatable_and_close():
    model = SiameseNetwork(MeanPixel())
    images = torch.zeros(3, 1, 9, 9, dtype=torch.uint8)
    images[:, :, 3:6, 3:6] = 255
    a, b = embed_images(model, images, tta=4), embed_images(model, images, tta=4)
    torch.testing.assert_close(a, b)
    assert (a - embed_images(model, images)).abs().max() < 0.05


class LeftColumn(nn.Module):
    """Embeds an image as the mean of its leftmost pixel column: not mirror-symmetric."""

    output_dim = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., 0].mean((1, 2))[:, None]


def test_embed_images_mirror_averages_each_image_with_its_mirror_image():
    images = torch.zeros(2, 1, 3, 4, dtype=torch.uint8)
    images[0, :, :, 0] = 255  # left column white: 1.0 alone, its mirror 0.0
    images[1, :, :, 3] = 51   # right column 0.2: 0.0 alone, its mirror 0.2
    model = SiameseNetwork(LeftColumn())
    torch.testing.assert_close(embed_images(model, images), torch.tensor([[1.0], [0.0]]))
    torch.testing.assert_close(embed_images(model, images, mirror=True),
                               torch.tensor([[0.5], [0.1]]))
    # unset, the model's input spec decides, so every evaluation embeds the same way
    model.input_spec = InputSpec(kind="image", size=(3, 4), mirror=True)
    torch.testing.assert_close(embed_images(model, images), torch.tensor([[0.5], [0.1]]))
    torch.testing.assert_close(embed_images(model, images, mirror=False),
                               torch.tensor([[1.0], [0.0]]))
    both = embed_images(model, images, tta=2)  # each of the 3 views and its mirror image
    assert both.shape == (2, 1) and (both - torch.tensor([[0.5], [0.1]])).abs().max() < 0.2


def test_runs_protocol_counts_nearest_reference_hits():
    model = SiameseNetwork(MeanPixel(), EuclideanDistance())
    refs = grey([0, 100, 200])
    # queries near 200, 0, 100 -> answers 2, 0, 1; the last query is mislabelled on purpose
    run = OneShotRun("run01", refs, grey([190, 10, 110, 95]), torch.tensor([2, 0, 1, 2]))
    res = evaluate_runs(model, [run, run])
    assert res["correct"] == 6 and res["total"] == 8
    assert res["error"] == pytest.approx(0.25)
    assert res["per_run"][0] == {"run": "run01", "correct": 3, "total": 4, "error": 0.25}


def test_class_scores_use_prototypes_for_distances_and_mean_score_for_a_head():
    q = torch.tensor([[0.0], [3.0]])
    s = torch.tensor([[1.0], [3.0], [10.0]])
    labels = torch.tensor([0, 0, 1])
    dist_model = SiameseNetwork(MeanPixel(), EuclideanDistance())
    # prototypes: class 0 at 2, class 1 at 10
    torch.testing.assert_close(class_scores(dist_model, q, s, labels, 2),
                               torch.tensor([[2.0, 10.0], [1.0, 7.0]]))
    head = LearnedHead(1)
    with torch.no_grad():
        head.linear.weight.fill_(-1.0)
        head.linear.bias.fill_(0.0)
    head_model = SiameseNetwork(MeanPixel(), head=head)
    sig = torch.sigmoid
    expected = torch.stack([
        torch.stack([(sig(torch.tensor(-1.0)) + sig(torch.tensor(-3.0))) / 2,
                     sig(torch.tensor(-10.0))]),
        torch.stack([(sig(torch.tensor(-2.0)) + sig(torch.tensor(0.0))) / 2,
                     sig(torch.tensor(-7.0))]),
    ])
    torch.testing.assert_close(class_scores(head_model, q, s, labels, 2), expected)


def _six_grey_classes() -> ImageDataset:
    levels = [c * 20 + d for c in range(6) for d in range(4)]  # 6 classes, 4 items each
    return ImageDataset(grey(levels), torch.arange(6).repeat_interleave(4),
                        [f"c{i}" for i in range(6)])


def test_episodes_perfect_on_separable_classes_with_ci():
    data = _six_grey_classes()
    model = SiameseNetwork(MeanPixel())
    res = evaluate_episodes(model, data, way=5, shot=2, queries=2, episodes=30, seed=1)
    assert res["accuracy"] == 1.0 and res["ci95"] == 0.0 and res["episodes"] == 30


def test_episodes_at_chance_on_indistinguishable_classes():
    data = ImageDataset(grey([7] * 40), torch.arange(10).repeat_interleave(4),
                        [f"c{i}" for i in range(10)])
    model = SiameseNetwork(MeanPixel())
    res = evaluate_episodes(model, data, way=5, shot=1, queries=1, episodes=200, seed=0)
    # every score ties, argmin picks class 0: exactly one of the five queries is right
    assert res["accuracy"] == pytest.approx(0.2)


class Constant(nn.Module):
    """Embeds every image at 0: every class ties, so argmin picks class 0."""

    output_dim = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(x), 1)


def test_compare_episodes_pairs_two_models_on_the_same_episodes():
    from siamkit.evaluate import compare_episodes

    data, good = _six_grey_classes(), SiameseNetwork(MeanPixel())
    res = compare_episodes(good, SiameseNetwork(Constant()), data, way=5, shot=1, queries=1,
                           episodes=40, seed=2)
    # the good model is always right; the constant one answers class 0: 1 in 5 right
    assert res["accuracy"] == 1.0 and res["baseline_accuracy"] == pytest.approx(0.2)
    assert res["difference"] == pytest.approx(0.8) and res["difference_ci95"] == 0.0
    assert res["episodes"] == 40
    alone = evaluate_episodes(good, data, way=5, shot=1, episodes=40, seed=2)
    itself = compare_episodes(good, good, data, way=5, shot=1, episodes=40, seed=2)
    assert itself["accuracy"] == alone["accuracy"] and itself["difference"] == 0.0


def test_seen_in_training_is_the_trained_classes_among_those_given():
    from siamkit.evaluate import seen_in_training

    card = {"data": {"train_classes": ["a/1", "a/2", "b/1"], "val_classes": ["c/1"]}}
    assert seen_in_training(card, ["c/1", "b/1", "a/2", "d/9"]) == ["a/2", "b/1"]
    assert seen_in_training(card, ["c/1"]) == []
    assert seen_in_training({"config": {}}, ["a/1"]) is None  # the card does not say


def test_compare_episodes_refuses_datasets_of_other_classes():
    from siamkit.data.download import DatasetError
    from siamkit.evaluate import compare_episodes

    data, model = _six_grey_classes(), SiameseNetwork(MeanPixel())
    other = ImageDataset(data.images, torch.arange(6).repeat(4), list(data.class_names))
    with pytest.raises(DatasetError, match="same episodes"):
        compare_episodes(model, model, data, other, way=5, episodes=3)


def test_retrieval_on_separable_and_interleaved_classes():
    from siamkit.evaluate import RetrievalEvaluator, evaluate_retrieval

    levels = [c * 20 + d for c in range(5) for d in range(3)]
    data = ImageDataset(grey(levels), torch.arange(5).repeat_interleave(3),
                        [f"c{i}" for i in range(5)])
    res = evaluate_retrieval(SiameseNetwork(MeanPixel()), data, ks=(1, 2))
    assert res["recall@1"] == 1.0 and res["map@r"] == 1.0 and res["mrr"] == 1.0
    assert res["queries"] == 15 and res["classes"] == 5
    # labels alternate along the grey axis: every nearest neighbour has the other label
    mixed = ImageDataset(grey([0, 10, 20, 30]), torch.tensor([0, 1, 0, 1]), ["a", "b"])
    res = RetrievalEvaluator(mixed, ks=(1,))(SiameseNetwork(MeanPixel()))
    assert res["recall@1"] == 0.0 and res["map@r"] == 0.0
    # ranks of the same-label item: 0 -> 20 is 2nd, 10 -> 30 2nd, 20 -> 0 3rd, 30 -> 10 3rd
    assert res["mrr"] == pytest.approx((1 / 2 + 1 / 2 + 1 / 3 + 1 / 3) / 4)


def test_retrieval_with_a_learned_head_uses_its_scores():
    from siamkit.evaluate import evaluate_retrieval

    head = LearnedHead(1)
    with torch.no_grad():  # score = -|u - v|: a head that prefers close grey levels
        head.linear.weight.fill_(-1.0)
        head.linear.bias.zero_()
    model = SiameseNetwork(MeanPixel(), head=head)
    levels = [c * 20 + d for c in range(4) for d in range(2)]
    data = ImageDataset(grey(levels), torch.arange(4).repeat_interleave(2),
                        [f"c{i}" for i in range(4)])
    assert model.higher_is_closer
    assert evaluate_retrieval(model, data, ks=(1,))["recall@1"] == 1.0


def test_verification_report_test_optimal_follows_the_calibration_target():
    import numpy as np

    from siamkit.calibrate import ThresholdCalibrator
    from siamkit.evaluate import verification_report

    # similarities; positives 0.9, 0.6, 0.55; negatives 0.7, 0.5, 0.4, 0.3, 0.2
    s = np.array([0.9, 0.6, 0.55, 0.7, 0.5, 0.4, 0.3, 0.2])
    same = np.array([1, 1, 1, 0, 0, 0, 0, 0], dtype=bool)
    f1_cal = ThresholdCalibrator("f1", higher_is_closer=True).fit(s, same)
    opt = verification_report(s, same, True, f1_cal)["test_optimal"]
    # best F1 accepts down to 0.55: TP 3, FP 1 -> F1 6 / 7 (best accuracy, 7 / 8, too)
    assert opt["target"] == "f1" and opt["f1"] == pytest.approx(6 / 7)
    acc = verification_report(s, same, True, None)["test_optimal"]
    assert acc["target"] == "accuracy" and acc["accuracy"] == pytest.approx(7 / 8)


def test_verification_report_bootstrap_intervals_bracket_the_point_values():
    import numpy as np

    from siamkit.calibrate import ThresholdCalibrator
    from siamkit.evaluate import verification_report

    rng = np.random.default_rng(0)
    same = rng.random(400) < 0.3
    dist = rng.normal(size=400) + np.where(same, 0.0, 1.5)  # distances: lower is closer
    cal = ThresholdCalibrator("eer", higher_is_closer=False).fit(dist, same)
    rep = verification_report(dist, same, False, cal, ci=200)
    assert set(rep["ci95"]) == {"auc", "eer", "accuracy", "f1"} and rep["ci_resamples"] == 200
    for name in ("auc", "eer", "accuracy", "f1"):
        lo, hi = rep["ci95"][name]
        assert lo <= rep[name] <= hi and hi - lo < 0.25
    assert "ci95" not in verification_report(dist, same, False, cal)


class TextLength(nn.Module):
    """Embeds a text as its length: texts of close lengths are close."""

    output_dim = 1

    def forward(self, texts):
        return torch.tensor([[float(len(t))] for t in texts])


def test_similarity_correlations_hand_computed():
    import numpy as np

    from siamkit.data.textpairs import TextPairs
    from siamkit.embedding import embed_texts
    from siamkit.evaluate import evaluate_similarity

    texts = ["a", "ab", "abcd", "abcdefgh"]
    model = SiameseNetwork(TextLength())
    torch.testing.assert_close(embed_texts(model, texts, batch_size=3),
                               torch.tensor([[1.0], [2.0], [4.0], [8.0]]))
    # distances |1-2| = 1, |1-4| = 3, |1-8| = 7: similarity falls as the gold score falls
    pairs = TextPairs(texts, np.array([0, 0, 0]), np.array([1, 2, 3]),
                      score=np.array([5.0, 3.0, 0.5]))
    r = evaluate_similarity(model, pairs)
    assert r["spearman"] == pytest.approx(100.0) and r["pairs"] == 3
    # Pearson of similarities (-1, -3, -7) with (5, 3, 0.5)
    assert r["pearson"] == pytest.approx(100 * np.corrcoef([-1, -3, -7], [5, 3, 0.5])[0, 1])
    with pytest.raises(ValueError, match="graded scores"):
        evaluate_similarity(model, TextPairs(texts, np.array([0]), np.array([1]),
                                             same=np.array([True])))


def _counting() -> tuple[list, object]:
    """A progress callback recording each stage and the items ticked in it."""
    log: list = []

    def progress(stage, total):
        log.append([stage, total, 0])

        def tick(n):
            log[-1][2] += n

        return tick

    return log, progress


def test_evaluators_report_progress_by_stage():
    from siamkit.evaluate import evaluate_identification, evaluate_retrieval

    data = ImageDataset(grey([c * 20 + d for c in range(3) for d in range(2)]),
                        torch.arange(3).repeat_interleave(2), ["a", "b", "c"])
    model = SiameseNetwork(MeanPixel(), EuclideanDistance())
    log, progress = _counting()
    evaluate_retrieval(model, data, ks=(1,), progress=progress)
    assert log == [["embedding", 6, 6]]
    log, progress = _counting()
    evaluate_episodes(model, data, way=2, shot=1, episodes=3, progress=progress)
    assert log == [["embedding", 6, 6]]
    log, progress = _counting()
    refs = data.subset_items([0, 2, 4])
    evaluate_identification(model, refs, data.subset_items([1, 3, 5]), refs, progress=progress)
    assert log == [["references", 3, 3], ["queries", 3, 3], ["unknown", 3, 3]]
    log, progress = _counting()
    run = OneShotRun("run01", grey([0, 100]), grey([10, 90]), torch.tensor([0, 1]))
    evaluate_runs(model, [run, run, run], progress=progress)
    assert log == [["runs", 3, 3]]


def test_episodes_the_data_cannot_give_are_a_dataset_error():
    from siamkit.data.download import DatasetError

    data = ImageDataset(grey([0, 1, 2, 3]), torch.tensor([0, 0, 1, 1]), ["a", "b"])
    with pytest.raises(DatasetError, match="5-way episodes need 5 classes, found 2"):
        evaluate_episodes(SiameseNetwork(MeanPixel()), data, way=5, shot=1)


def test_similarity_refuses_a_model_that_is_not_a_text_model():
    import numpy as np

    from siamkit.data.download import DatasetError
    from siamkit.data.textpairs import TextPairs
    from siamkit.evaluate import evaluate_similarity
    from siamkit.inputs import InputSpec

    model = SiameseNetwork(MeanPixel())
    model.input_spec = InputSpec(kind="image", size=4)
    pairs = TextPairs(["a", "b"], np.array([0]), np.array([1]), score=np.array([1.0]))
    with pytest.raises(DatasetError, match="not a text model"):
        evaluate_similarity(model, pairs)


def test_feature_vectors_too_large_to_compare_are_a_dataset_error():
    from siamkit.data.download import DatasetError

    class Scale(nn.Module):
        output_dim = 1

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :1] * 1e30

    with pytest.raises(DatasetError, match="embed to values too large"):
        embed_images(SiameseNetwork(Scale()), torch.full((3, 2), 1e20))
