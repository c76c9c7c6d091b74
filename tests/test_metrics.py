"""Tests for siamkit.metrics: hand-computed accuracies, nearest references and intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from siamkit.metrics import accuracy, mean_and_ci95, nearest_reference_predictions


def test_mean_and_ci95_hand_computed():
    # mean 2, sample std 1 -> half-width 1.96 / sqrt(3)
    mean, half = mean_and_ci95([1.0, 2.0, 3.0])
    assert mean == pytest.approx(2.0)
    assert half == pytest.approx(1.96 / math.sqrt(3))


def test_mean_and_ci95_uses_sample_std():
    # values 0, 0, 0, 4: mean 1, sample variance 12 / 3 = 4 -> std 2 -> 1.96 * 2 / 2
    mean, half = mean_and_ci95(np.array([0.0, 0.0, 0.0, 4.0]))
    assert mean == pytest.approx(1.0)
    assert half == pytest.approx(1.96)


def test_mean_and_ci95_edge_cases():
    assert mean_and_ci95([0.75]) == (0.75, 0.0)
    mean, half = mean_and_ci95([])
    assert math.isnan(mean) and math.isnan(half)
    assert mean_and_ci95([0.5, 0.5, 0.5]) == (0.5, 0.0)


def test_accuracy_hand_computed():
    assert accuracy(torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 0, 0])) == 0.5
    assert accuracy(np.array([2, 2, 2]), np.array([2, 2, 1])) == pytest.approx(2 / 3)
    assert isinstance(accuracy([1], [1]), float)


def test_accuracy_empty_and_shape_mismatch():
    assert math.isnan(accuracy(np.array([]), np.array([])))
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\) differ in shape"):
        accuracy(np.array([1, 2, 3]), np.array([1, 2]))


def test_nearest_reference_follows_direction():
    scores = torch.tensor([[0.9, 0.1, 0.5],
                           [0.2, 0.3, 0.8]])  # (Q=2, R=3)
    # similarities: the largest is the nearest
    assert nearest_reference_predictions(scores, higher_is_closer=True).tolist() == [0, 2]
    # distances: the smallest is the nearest
    assert nearest_reference_predictions(scores, higher_is_closer=False).tolist() == [1, 0]


# ---------------------------------------------------------------- verification metrics
# Scores: positives 0.9, 0.8, 0.4; negatives 0.7, 0.3, 0.2, 0.1 (higher = more alike).
SCORES = [0.9, 0.8, 0.7, 0.4, 0.3, 0.2, 0.1]
LABELS = [1, 1, 0, 1, 0, 0, 0]


def test_auc_hand_computed():
    from siamkit.metrics import auc

    # positive-negative pairs won: 0.9 beats 4, 0.8 beats 4, 0.4 beats 3 -> 11 of 12
    assert auc(SCORES, LABELS) == pytest.approx(11 / 12)


def test_roc_hand_computed_with_ties():
    from siamkit.metrics import auc, roc

    # 0.8 is shared by a positive and a negative: one ROC point for both, a tie worth 1/2
    far, tar, thr = roc([0.9, 0.8, 0.8, 0.1], [1, 1, 0, 0])
    assert far.tolist() == [0, 0, 0.5, 1] and tar.tolist() == [0, 0.5, 1, 1]
    assert thr.tolist() == [np.inf, 0.9, 0.8, 0.1]
    # pairs won: 0.9 beats both negatives, 0.8 beats 0.1 and ties 0.8 -> 3.5 of 4
    assert auc([0.9, 0.8, 0.8, 0.1], [1, 1, 0, 0]) == pytest.approx(3.5 / 4)


def test_roc_and_auc_match_scikit_learn():
    from sklearn.metrics import roc_auc_score, roc_curve

    from siamkit.metrics import auc, roc

    rng = np.random.default_rng(0)
    for n in (2, 7, 500):
        s = rng.integers(0, 20, n) / 10  # many ties
        y = np.arange(n) % 2 == 0
        want = roc_curve(y, s, drop_intermediate=False)
        for got, ref in zip(roc(s, y), want, strict=True):
            np.testing.assert_allclose(got, ref)
        assert auc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_best_accuracy_threshold_hand_computed():
    from siamkit.metrics import best_accuracy_threshold

    # accept {0.9, 0.8}: 2 TP + 4 TN = 6/7; accept down to 0.4: 3 TP + 3 TN = 6/7 too;
    # the first maximum is kept, halfway between 0.8 and 0.7
    acc, thr = best_accuracy_threshold(SCORES, LABELS)
    assert acc == pytest.approx(6 / 7) and thr == pytest.approx(0.75)


def test_rates_at_threshold_hand_computed():
    from siamkit.metrics import confusion_at, rates_at

    assert confusion_at(SCORES, LABELS, 0.5) == {"tp": 2, "fp": 1, "tn": 3, "fn": 1}
    r = rates_at(SCORES, LABELS, 0.5)
    assert r["precision"] == pytest.approx(2 / 3) and r["recall"] == pytest.approx(2 / 3)
    assert r["f1"] == pytest.approx(2 / 3) and r["accuracy"] == pytest.approx(5 / 7)
    assert r["far"] == pytest.approx(1 / 4) and r["frr"] == pytest.approx(1 / 3)


def test_eer_on_a_symmetric_case():
    from siamkit.metrics import eer

    # positives 2, 3; negatives 0, 1: any threshold in (1, 2] separates perfectly
    rate, thr = eer([0, 1, 2, 3], [0, 0, 1, 1])
    assert rate == pytest.approx(0.0) and 1.0 < thr <= 2.0
    # one positive below one negative: positives 3, 1; negatives 2, 0 -> FAR = FRR = 1/2
    rate, thr = eer([3, 2, 1, 0], [1, 0, 1, 0])
    assert rate == pytest.approx(0.5)


def test_tar_at_far_hand_computed():
    from siamkit.metrics import tar_at_far

    # FAR 0 allows accepting only 0.9, 0.8 -> TAR 2/3; FAR 1/4 allows down to 0.4 -> TAR 1
    res = tar_at_far(SCORES, LABELS, targets=(0.1, 0.25))
    assert res[0.1] == pytest.approx(2 / 3) and res[0.25] == pytest.approx(1.0)


def test_verification_metrics_reject_one_class_and_nan():
    from siamkit.metrics import auc

    with pytest.raises(ValueError, match="both positive and negative"):
        auc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="NaN"):
        auc([0.1, float("nan")], [1, 0])


def test_bootstrap_ci_brackets_the_estimate():
    from siamkit.metrics import auc, bootstrap_ci

    lo, hi = bootstrap_ci(auc, SCORES, LABELS, n=200, seed=0)
    assert 0.0 <= lo <= 11 / 12 <= hi <= 1.0


# ---------------------------------------------------------------- retrieval metrics


def test_retrieval_metrics_hand_computed():
    """1-D points with Euclidean distance, searched against themselves.

    labels a a a b b at positions 0, 0.9, 5, 2, 6.
    query 0 (a): order 0.9(a) 2(b) 5(a) 6(b): R=2, within the first R only rank 1 is
        relevant: MAP@R = (1/1)/2 = 0.5; RR = 1
    query 0.9 (a): order 0(a) 2(b) 5(a): AP@R = 1/2; RR = 1
    query 5 (a): order 6(b), then 2(b) at 3, then 1(a) at 4: AP@R = 0; RR: 2 refs above -> 1/3
    query 2 (b): order 1(a), 0(a)... 6(b) at 4: AP@R = 0 (R=1); RR = 1/4 (3 above)
    query 6 (b): order 5(a), 2(b): AP@R = 0; RR = 1/2
    """
    from siamkit.distances import EuclideanDistance
    from siamkit.metrics import retrieval_metrics

    x = torch.tensor([[0.0], [0.9], [5.0], [2.0], [6.0]])
    y = torch.tensor([0, 0, 0, 1, 1])
    res = retrieval_metrics(x, y, distance=EuclideanDistance(), ks=(1, 2), chunk=2)
    assert res["recall@1"] == pytest.approx(2 / 5)
    assert res["recall@2"] == pytest.approx(3 / 5)  # query 6 finds 2 at rank 2
    assert res["map@r"] == pytest.approx((0.5 + 0.5 + 0 + 0 + 0) / 5)
    assert res["mrr"] == pytest.approx((1 + 1 + 1 / 3 + 1 / 4 + 1 / 2) / 5)


def test_retrieval_metrics_against_separate_references():
    from siamkit.distances import EuclideanDistance
    from siamkit.metrics import retrieval_metrics

    refs, ref_y = torch.tensor([[0.0], [10.0]]), torch.tensor([0, 1])
    qs, q_y = torch.tensor([[1.0], [9.0], [4.0]]), torch.tensor([0, 1, 1])
    res = retrieval_metrics(qs, q_y, refs, ref_y, EuclideanDistance(), ks=(1,))
    assert res["recall@1"] == pytest.approx(2 / 3)
    assert res["mrr"] == pytest.approx((1 + 1 + 0.5) / 3)


def test_eer_threshold_is_a_real_roc_point_nearest_equality():
    from siamkit.metrics import eer, rates_at

    rng = np.random.default_rng(0)
    for _ in range(50):
        s = rng.normal(size=30)
        y = rng.random(30) < 0.4
        if y.all() or not y.any():
            continue
        _, t = eer(s, y)
        r = rates_at(s, y, t)
        gap = abs(r["far"] - r["frr"])
        # no other threshold on the scores gets FAR and FRR closer together
        best = min(abs(rates_at(s, y, c)["far"] - rates_at(s, y, c)["frr"]) for c in s)
        assert gap <= best + 1e-12


def test_open_set_identification_hand_computed():
    from siamkit.metrics import open_set_identification

    known = [0.9, 0.8, 0.7, 0.4]
    correct = [True, False, True, True]
    unknown = [0.85, 0.6, 0.5, 0.3, 0.2, 0.1, 0.05, 0.0, -0.1, -0.2]
    res = open_set_identification(known, correct, unknown, fars=(0.0, 0.1, 0.2, 1.0))
    assert res["rank1"] == 0.75 and res["unknown_queries"] == 10
    # FAR 0: above 0.85 -> only 0.9 (correct): 1/4
    assert res["dir_at_far"]["0"] == 0.25 and res["threshold_at_far"]["0"] == 0.85
    # FAR 0.1 (one false alarm): above 0.6 -> 0.9, 0.7 correct: 2/4
    assert res["dir_at_far"]["0.1"] == 0.5
    # FAR 0.2: above 0.5 -> same two: 2/4; FAR 1: everything -> rank-1 rate
    assert res["dir_at_far"]["0.2"] == 0.5 and res["dir_at_far"]["1"] == 0.75
    assert "dir_at_far" not in open_set_identification(known, correct)
    with pytest.raises(ValueError):
        open_set_identification([], [])


@pytest.mark.parametrize("block", [4096, 8, 5])
def test_retrieval_metrics_match_brute_force_when_relevant_items_rank_low(block: int):
    """Few relevant items per query, so the first one is often beyond the top-K window;
    small ``block`` sizes make the references come in screened blocks (8: even; 5: a
    ragged last block and groups that straddle it)."""
    from siamkit.distances import EuclideanDistance
    from siamkit.metrics import retrieval_metrics

    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 4, generator=g)
    y = torch.arange(30).repeat(2)  # two items per label, unrelated to position
    res = retrieval_metrics(x, y, distance=EuclideanDistance(), ks=(1,), chunk=7, block=block)
    d = torch.cdist(x, x)
    d.fill_diagonal_(float("inf"))
    rr, hit1, ap = [], [], []
    for i in range(60):
        order = torch.argsort(d[i])[:-1].tolist()  # the last one is the query itself
        ranks = [r for r, j in enumerate(order, 1) if y[j] == y[i]]
        rr.append(1 / ranks[0])
        hit1.append(float(ranks[0] == 1))
        ap.append(1.0 if ranks[0] == 1 else 0.0)  # R = 1
    assert res["mrr"] == pytest.approx(np.mean(rr))
    assert res["recall@1"] == pytest.approx(np.mean(hit1))
    assert res["map@r"] == pytest.approx(np.mean(ap))
    assert res["mrr"] < 0.5  # the check exercised queries ranked far down


def test_best_f1_threshold_hand_computed():
    from siamkit.metrics import best_f1_threshold, rates_at

    # sorted high to low: 0.9 (same), 0.8 (diff), 0.7 (same), 0.6 (same), 0.1 (diff)
    s = [0.9, 0.8, 0.7, 0.6, 0.1]
    y = [True, False, True, True, False]
    f1, t = best_f1_threshold(s, y)
    # accept 4: TP 3, FP 1, FN 0 -> 6/7; accept 1: 2/4; accept 3: 4/6
    assert f1 == pytest.approx(6 / 7) and t == pytest.approx(0.35)
    assert rates_at(s, y, t)["f1"] == pytest.approx(6 / 7)


def test_calibrator_f1_target():
    from siamkit.calibrate import ThresholdCalibrator, parse_target

    assert parse_target("f1") == ("f1", None)
    cal = ThresholdCalibrator("f1", higher_is_closer=False).fit([0.1, 0.2, 0.3, 0.4, 0.9],
                                                                [1, 0, 1, 1, 0])
    assert cal.threshold_ == pytest.approx(0.65) and cal.validation_["f1"] == pytest.approx(6 / 7)


def test_label_floor_bounds_every_rows_kth_best_from_below():
    """Uneven labels (one of 1 item, several of 2, a few large) with and without the
    nearest-label pool: the bound must hold for every row, and be finite where k other
    rows exist."""
    from siamkit.metrics import _label_floor

    g = torch.Generator().manual_seed(3)
    sizes = [1, 2, 2, 2, 40, 35, 30, 9]
    y = torch.cat([torch.full((s,), c) for c, s in enumerate(sizes)])
    y = y[torch.randperm(len(y), generator=g)]
    centres = torch.randn(len(sizes), 8, generator=g)
    x = torch.nn.functional.normalize(centres[y] + 0.8 * torch.randn(len(y), 8, generator=g),
                                      dim=1)
    full = x @ x.T
    full.fill_diagonal_(-torch.inf)
    for k in (1, 10, 39, 60):
        kth = full.topk(k, dim=1).values[:, -1]
        for neighbours in (0, 3):
            floor = _label_floor(x, y, k, neighbours=neighbours, chunk=16)
            assert (floor < kth).all(), (k, neighbours)
            assert torch.isfinite(floor).all()


@pytest.mark.parametrize("block", [4096, 64, 37])
def test_retrieval_metrics_symmetric_self_search_matches_row_by_row(block, monkeypatch):
    """The default cosine self-search scores each pair once (self_topk); it must give what
    searching query by query gives, with uneven labels and tiles of every shape."""
    import siamkit.metrics as m

    g = torch.Generator().manual_seed(1)
    sizes = [1, 2, 3, 50, 40, 7, 7, 20]
    y = torch.cat([torch.full((s,), c) for c, s in enumerate(sizes)])
    y = y[torch.randperm(len(y), generator=g)]
    centres = torch.randn(len(sizes), 5, generator=g)
    x = centres[y] + torch.randn(len(y), 5, generator=g)
    calls = []
    real = m.self_topk
    monkeypatch.setattr(m, "self_topk", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    got = m.retrieval_metrics(x, y, ks=(1, 5), chunk=16, block=block)
    assert calls  # the symmetric path ran
    want = m.retrieval_metrics(x, y, ks=(1, 5), chunk=16, block=block, symmetric=False)
    assert len(calls) == 1
    assert got == pytest.approx(want, abs=1e-6)


def test_retrieval_metrics_bad_input_and_awkward_labels():
    """Embeddings that still require grad, labels with huge gaps (the bound must not
    allocate by the largest id), NaN rows refused by name; exact duplicates of different
    labels: MRR (ties never count) agrees between the two search paths."""
    from siamkit.metrics import retrieval_metrics

    g = torch.Generator().manual_seed(5)
    x = torch.randn(40, 6, generator=g)
    y = torch.tensor([0, 10**9, 7, 123456] * 10)
    want = retrieval_metrics(x, y, ks=(1,), symmetric=False)
    assert retrieval_metrics(x.clone().requires_grad_(), y, ks=(1,)) == pytest.approx(want)
    bad = x.clone()
    bad[3, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite values in 1 rows"):
        retrieval_metrics(bad, y)
    dup = torch.cat([x[:10], x[:10]])  # every item twice, the copy under another label
    y2 = torch.cat([torch.arange(10) % 3, 3 + torch.arange(10) % 3])
    a = retrieval_metrics(dup, y2, ks=(1,))
    b = retrieval_metrics(dup, y2, ks=(1,), symmetric=False)
    assert a["mrr"] == pytest.approx(b["mrr"])
