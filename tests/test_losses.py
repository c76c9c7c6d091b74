"""Tests for siamkit.losses: hand-computed values on embeddings placed at known positions."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from siamkit.distances import CosineSimilarity, DotProductSimilarity, EuclideanDistance
from siamkit.losses import (
    ContrastiveLoss,
    HeadBCELoss,
    PrototypicalLoss,
    TripletLoss,
)
from siamkit.miners import Pairs, Triplets
from siamkit.siamese import LearnedHead


def _t(values: object) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def _idx(values: list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


def _at(deg: float, r: float = 1.0) -> list[float]:
    """2-D point at angle ``deg`` and radius ``r``."""
    return [r * math.cos(math.radians(deg)), r * math.sin(math.radians(deg))]


def _scalar(x: float) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)



# --- ContrastiveLoss: the closed-form all-pairs path against autograd ------------------------


class _Euclidean(EuclideanDistance):
    """A subclass: ContrastiveLoss takes its generic autograd path for it."""


class _Cosine(CosineSimilarity):
    pass


class _Dot(DotProductSimilarity):
    pass


@pytest.mark.parametrize("reduction", ["mean", "sum", "mean_nonzero"])
@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("make", [
    lambda: (EuclideanDistance(), _Euclidean(), {}),
    lambda: (EuclideanDistance(squared=True), _Euclidean(squared=True), {}),
    lambda: (CosineSimilarity(), _Cosine(), {}),
    lambda: (DotProductSimilarity(), _Dot(), {"pos_margin": 2.0, "neg_margin": 0.5}),
])
def test_contrastive_closed_form_matches_autograd(make: object, squared: bool,
                                                  reduction: str) -> None:
    """Value and gradient of the hand-written backward equal autograd's through the
    generic expression, with an identical negative pair and an identical positive pair
    (distance 0: no gradient, and the negative pays the whole margin)."""
    fused, generic, kw = make()  # type: ignore[operator]
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(40, 8, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 6, (40,), generator=g)
    x0[5], labels[3], labels[5] = x0[3], 0, 1
    x0[7], labels[7], labels[9] = x0[9], 2, 2
    out = []
    for dist in (fused, generic):
        x = x0.clone().requires_grad_(True)
        loss = ContrastiveLoss(dist, squared=squared, reduction=reduction, **kw)(x, labels)
        loss.backward()
        out.append((loss.detach(), x.grad))
    assert_close(out[0][0], out[1][0])
    assert_close(out[0][1], out[1][1])
    assert out[0][1].abs().sum() > 0


# --- ContrastiveLoss with Euclidean distance ----------------------------------------------
# Four points, labels [0, 0, 1, 1]:
#   e0 = (0, 0), e1 = (0.3, 0.4), e2 = (0.6, 0), e3 = (0.6, 0.8)
# positives: d01 = 0.5, d23 = 0.8
# negatives: d02 = 0.6, d03 = 1.0, d12 = sqrt(0.09 + 0.16) = 0.5, d13 = 0.5

EUC_EMB = [[0.0, 0.0], [0.3, 0.4], [0.6, 0.0], [0.6, 0.8]]
EUC_LABELS = [0, 0, 1, 1]


def _contrastive(**kw: object) -> torch.Tensor:
    loss = ContrastiveLoss(EuclideanDistance(), **kw)
    return loss(_t(EUC_EMB), _idx(EUC_LABELS))


def test_contrastive_default_margins() -> None:
    """Euclidean defaults: pos_margin 0, neg_margin 1."""
    loss = ContrastiveLoss()
    assert (loss.pos_margin, loss.neg_margin) == (0.0, 1.0)
    assert isinstance(loss.distance, EuclideanDistance)


def test_contrastive_euclidean_mean_nonzero() -> None:
    """neg_margin 0.9: neg terms 0.3, 0 (d03 = 1 > 0.9), 0.4, 0.4.

    pos: mean(0.5, 0.8) = 0.65; neg: mean of nonzero = 1.1 / 3.
    """
    assert_close(_contrastive(neg_margin=0.9), _scalar(0.65 + 1.1 / 3))


def test_contrastive_euclidean_mean() -> None:
    """Same terms, plain mean: 0.65 + 1.1 / 4."""
    assert_close(_contrastive(neg_margin=0.9, reduction="mean"), _scalar(0.65 + 1.1 / 4))


def test_contrastive_euclidean_sum() -> None:
    """Same terms, summed: (0.5 + 0.8) + (0.3 + 0.4 + 0.4)."""
    assert_close(_contrastive(neg_margin=0.9, reduction="sum"), _scalar(1.3 + 1.1))


def test_contrastive_euclidean_squared() -> None:
    """Squared hinge: pos 0.25, 0.64; neg 0.09, 0, 0.16, 0.16."""
    assert_close(_contrastive(neg_margin=0.9, squared=True), _scalar((0.25 + 0.64) / 2 + 0.41 / 3))
    assert_close(
        _contrastive(neg_margin=0.9, squared=True, reduction="mean"),
        _scalar((0.25 + 0.64) / 2 + 0.41 / 4),
    )


def test_contrastive_euclidean_pos_margin() -> None:
    """pos_margin 0.6: pos terms 0 and 0.2 -> mean_nonzero 0.2, mean 0.1 (neg as above)."""
    assert_close(_contrastive(pos_margin=0.6, neg_margin=0.9), _scalar(0.2 + 1.1 / 3))
    assert_close(
        _contrastive(pos_margin=0.6, neg_margin=0.9, reduction="mean"), _scalar(0.1 + 1.1 / 4)
    )


def test_contrastive_explicit_pairs() -> None:
    """Only the mined pairs count: positive (2, 3) -> 0.8, negative (0, 2) -> 0.9 - 0.6 = 0.3."""
    pairs = Pairs(_idx([2]), _idx([3]), _idx([0]), _idx([2]))
    loss = ContrastiveLoss(EuclideanDistance(), neg_margin=0.9)
    assert_close(loss(_t(EUC_EMB), indices=pairs), _scalar(0.8 + 0.3))


def test_contrastive_all_terms_zero_gives_zero() -> None:
    """Negatives all beyond neg_margin 0.4 and pos_margin 1: nothing to pay."""
    assert_close(_contrastive(pos_margin=1.0, neg_margin=0.4), _scalar(0.0))


def test_contrastive_no_pairs_gives_zero_with_graph() -> None:
    """No positive pair and the one negative is beyond the margin: value 0, backward still works."""
    emb = _t([[0.0, 0.0], [5.0, 0.0]]).requires_grad_()
    out = ContrastiveLoss()(emb, _idx([0, 1]))
    assert_close(out, _scalar(0.0))
    out.backward()
    assert_close(emb.grad, torch.zeros_like(emb))


# --- ContrastiveLoss with cosine similarity ------------------------------------------------
# Labels [0, 0, 1, 1]; angles 0, 60, 90, 120 degrees (lengths differ; cosine ignores them):
# positives: s01 = cos 60 = 0.5, s23 = cos 30
# negatives: s02 = cos 90 = 0, s03 = cos 120 = -0.5, s12 = cos 30, s13 = cos 60 = 0.5

COS_EMB = [_at(0, 2.0), _at(60, 3.0), _at(90, 0.5), _at(120, 1.0)]
COS30 = math.cos(math.radians(30))


def test_contrastive_cosine_default_margins() -> None:
    loss = ContrastiveLoss(CosineSimilarity())
    assert (loss.pos_margin, loss.neg_margin) == (1.0, 0.0)


def test_contrastive_cosine_mean_nonzero() -> None:
    """pos_margin 1: pos terms 0.5, 1 - cos30.

    neg_margin 0.25: neg terms 0, 0, cos30 - 0.25, 0.25.
    """
    loss = ContrastiveLoss(CosineSimilarity(), pos_margin=1.0, neg_margin=0.25)
    expected = (0.5 + 1 - COS30) / 2 + (COS30 - 0.25 + 0.25) / 2
    assert_close(loss(_t(COS_EMB), _idx(EUC_LABELS)), _scalar(expected))


def test_contrastive_cosine_mean_and_squared() -> None:
    """Same terms with plain mean, then squared."""
    mean = ContrastiveLoss(CosineSimilarity(), neg_margin=0.25, reduction="mean")
    assert_close(mean(_t(COS_EMB), _idx(EUC_LABELS)), _scalar((0.5 + 1 - COS30) / 2 + COS30 / 4))
    sq = ContrastiveLoss(CosineSimilarity(), neg_margin=0.25, squared=True)
    expected = (0.25 + (1 - COS30) ** 2) / 2 + ((COS30 - 0.25) ** 2 + 0.0625) / 2
    assert_close(sq(_t(COS_EMB), _idx(EUC_LABELS)), _scalar(expected))


def test_contrastive_cosine_pos_margin() -> None:
    """pos_margin 0.7: positive with s = 0.5 pays 0.2; the one with s = cos30 > 0.7 pays 0."""
    loss = ContrastiveLoss(CosineSimilarity(), pos_margin=0.7, neg_margin=0.25)
    assert_close(loss(_t(COS_EMB), _idx(EUC_LABELS)), _scalar(0.2 + COS30 / 2))


# --- TripletLoss ----------------------------------------------------------------------------
# 1-D points x = [0, 1, 1.5, 4], labels [0, 0, 1, 1], margin 0.2. All 8 triplets (a, p, n):
#   (0,1,2): 1 - 1.5 + .2 < 0 -> 0     (0,1,3): 1 - 4 + .2 -> 0
#   (1,0,2): 1 - 0.5 + .2 = 0.7        (1,0,3): 1 - 3 + .2 -> 0
#   (2,3,0): 2.5 - 1.5 + .2 = 1.2      (2,3,1): 2.5 - 0.5 + .2 = 2.2
#   (3,2,0): 2.5 - 4 + .2 -> 0         (3,2,1): 2.5 - 3 + .2 -> 0

TRI_EMB = [[0.0], [1.0], [1.5], [4.0]]


def test_triplet_all_triplets_mean_nonzero() -> None:
    loss = TripletLoss(EuclideanDistance(), margin=0.2)
    assert_close(loss(_t(TRI_EMB), _idx(EUC_LABELS)), _scalar(4.1 / 3))


def test_triplet_all_triplets_mean_and_sum() -> None:
    mean = TripletLoss(margin=0.2, reduction="mean")
    assert_close(mean(_t(TRI_EMB), _idx(EUC_LABELS)), _scalar(4.1 / 8))
    total = TripletLoss(margin=0.2, reduction="sum")
    assert_close(total(_t(TRI_EMB), _idx(EUC_LABELS)), _scalar(4.1))


def test_triplet_explicit_triplets() -> None:
    """(1,0,2) -> 0.7 and (2,3,0) -> 1.2 only; (0,1,3) -> 0 is dropped by mean_nonzero."""
    trip = Triplets(_idx([1, 2, 0]), _idx([0, 3, 1]), _idx([2, 0, 3]))
    assert_close(TripletLoss(margin=0.2)(_t(TRI_EMB), indices=trip), _scalar(0.95))
    mean = TripletLoss(margin=0.2, reduction="mean")
    assert_close(mean(_t(TRI_EMB), indices=trip), _scalar(1.9 / 3))


def test_triplet_cosine_known_angles() -> None:
    """Anchor 0 deg, positive 60 deg (s = 0.5); negatives at 45 deg (s = cos45) and 90 deg (s = 0).

    Similarity form max(0, s_an - s_ap + 0.2): cos45 - 0.3 and 0.
    """
    emb = _t([_at(0), _at(60, 2.0), _at(45, 0.5), _at(90, 3.0)])
    trip = Triplets(_idx([0, 0]), _idx([1, 1]), _idx([2, 3]))
    loss = TripletLoss(CosineSimilarity(), margin=0.2, reduction="mean")
    assert_close(loss(emb, indices=trip), _scalar((math.cos(math.pi / 4) - 0.3) / 2))


def test_triplet_no_triplets_gives_zero() -> None:
    emb = _t([[0.0], [1.0]]).requires_grad_()
    out = TripletLoss()(emb, _idx([0, 1]))
    assert_close(out, _scalar(0.0))
    out.backward()


def test_unknown_reduction_raises() -> None:
    with pytest.raises(ValueError, match="median"):
        TripletLoss(reduction="median")(_t(TRI_EMB), _idx(EUC_LABELS))


# --- HeadBCELoss ----------------------------------------------------------------------------


def _head() -> LearnedHead:
    """Head with w = (1, -2), b = 0.5: logit = |dx| - 2|dy| + 0.5."""
    head = LearnedHead(2).double()
    with torch.no_grad():
        head.linear.weight.copy_(_t([[1.0, -2.0]]))
        head.linear.bias.fill_(0.5)
    return head


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_head_bce_hand_computed() -> None:
    """e0 = (0,0), e1 = (1,0) [label 0], e2 = (0,1) [label 1].

    positive (0,1): logit 1 + 0.5 = 1.5 -> BCE(label 1) = softplus(-1.5)
    negatives (0,2): logit -2 + 0.5 = -1.5; (1,2): 1 - 2 + 0.5 = -0.5 -> BCE(label 0) = softplus(l)
    Each class averaged separately, then the two averaged.
    """
    emb = _t([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    pos = _softplus(-1.5)
    neg = (_softplus(-1.5) + _softplus(-0.5)) / 2
    out = HeadBCELoss(_head())(emb, _idx([0, 0, 1]))
    assert_close(out, _scalar((pos + neg) / 2))


def test_head_bce_only_one_class_of_pairs() -> None:
    """With only negative pairs mined the loss is the negative term alone."""
    emb = _t([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    pairs = Pairs(_idx([]), _idx([]), _idx([1]), _idx([2]))
    assert_close(HeadBCELoss(_head())(emb, indices=pairs), _scalar(_softplus(-0.5)))


def test_head_bce_no_pairs_is_zero_and_trains_head() -> None:
    emb = _t([[0.0, 0.0], [1.0, 0.0]]).requires_grad_()
    empty = Pairs(_idx([]), _idx([]), _idx([]), _idx([]))
    out = HeadBCELoss(_head())(emb, indices=empty)
    assert_close(out, _scalar(0.0))
    out.backward()


def test_head_bce_gradient_reaches_head_and_embeddings() -> None:
    head = _head()
    emb = _t([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [2.0, 1.0]]).requires_grad_()
    HeadBCELoss(head)(emb, _idx([0, 0, 1, 1])).backward()
    assert head.linear.weight.grad is not None and head.linear.weight.grad.abs().sum() > 0
    assert emb.grad is not None and torch.isfinite(emb.grad).all() and emb.grad.abs().sum() > 0


# --- PrototypicalLoss -----------------------------------------------------------------------


def test_prototypical_one_shot_episode() -> None:
    """1-D, labels [0, 1, 0, 1], n_support 1: prototypes 0 (class 0) and 2 (class 1).

    query x=0.5 (class 0): sq. distances 0.25, 2.25 -> logits (-0.25, -2.25) -> CE log(1 + e^-2)
    query x=1.0 (class 1): sq. distances 1, 1 -> equal logits -> CE log 2
    """
    emb = _t([[0.0], [2.0], [0.5], [1.0]])
    out = PrototypicalLoss()(emb, _idx([0, 1, 0, 1]))
    assert_close(out, _scalar((math.log1p(math.exp(-2.0)) + math.log(2.0)) / 2))


def test_prototypical_two_shot_with_unsorted_labels() -> None:
    """Labels [7, 7, 3, 3, 7, 3], n_support 2: the first two of each class (batch order) support.

    class 7 prototype = mean(0, 2) = 1; class 3 prototype = mean(4, 6) = 5.
    query x=2 (class 7): sq. distances 1 (to 7), 9 (to 3) -> CE log(1 + e^-8)
    query x=3 (class 3): sq. distances 4, 4 -> CE log 2
    """
    emb = _t([[0.0], [2.0], [4.0], [6.0], [2.0], [3.0]])
    out = PrototypicalLoss(n_support=2)(emb, _idx([7, 7, 3, 3, 7, 3]))
    assert_close(out, _scalar((math.log1p(math.exp(-8.0)) + math.log(2.0)) / 2))


def test_prototypical_scale_multiplies_logits() -> None:
    """scale 0.5 on the one-shot episode: first query's logit gap halves to 1 -> log(1 + e^-1)."""
    emb = _t([[0.0], [2.0], [0.5], [1.0]])
    out = PrototypicalLoss(scale=0.5)(emb, _idx([0, 1, 0, 1]))
    assert_close(out, _scalar((math.log1p(math.exp(-1.0)) + math.log(2.0)) / 2))


def test_prototypical_cosine() -> None:
    """Cosine, scale 1: supports at 0 and 90 deg; query of class 0 at 60 deg.

    logits (cos 60, cos 30) = (0.5, cos30) -> CE = -log softmax_0 = log(1 + e^(cos30 - 0.5)).
    """
    emb = _t([_at(0, 2.0), _at(90, 3.0), _at(60), _at(90, 0.2)])
    out = PrototypicalLoss(CosineSimilarity())(emb, _idx([0, 1, 0, 1]))
    q1 = math.log1p(math.exp(COS30 - 0.5))
    q2 = math.log1p(math.exp(0.0 - 1.0))  # query on the class-1 prototype: logits (0, 1)
    assert_close(out, _scalar((q1 + q2) / 2))


def test_prototypical_split() -> None:
    """split marks the first n_support of each class as support and maps labels to class index."""
    classes, support, inverse = PrototypicalLoss(n_support=1).split(_idx([5, 2, 5, 2, 2]))
    assert classes.tolist() == [2, 5]
    assert support.tolist() == [True, True, False, False, False]
    assert inverse.tolist() == [1, 0, 1, 0, 0]


def test_prototypical_too_few_examples_raises() -> None:
    """A class with only n_support examples has no query."""
    emb = _t([[0.0], [1.0], [2.0]])
    with pytest.raises(ValueError, match="n_support=1"):
        PrototypicalLoss()(emb, _idx([0, 0, 1]))
    with pytest.raises(ValueError, match="n_support=2"):
        PrototypicalLoss(n_support=2)(_t([[0.0]] * 5), _idx([0, 0, 0, 1, 1]))


def test_prototypical_error_names_the_bad_class_and_its_count() -> None:
    """Class 0 (2 examples) is the first class without a query; the message gives its count."""
    with pytest.raises(ValueError, match=r"class 0 has 2 examples"):
        PrototypicalLoss(n_support=2)(_t([[0.0]] * 3), _idx([0, 0, 1]))


def test_prototypical_n_support_must_be_positive() -> None:
    with pytest.raises(ValueError, match="n_support"):
        PrototypicalLoss(n_support=0)


# --- missing labels, factory, gradients ----------------------------------------------------


@pytest.mark.parametrize(
    "loss",
    [ContrastiveLoss(), TripletLoss(), HeadBCELoss(LearnedHead(2).double())],
    ids=lambda m: type(m).__name__,
)
def test_missing_labels_and_indices_raise(loss: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match="labels"):
        loss(_t(EUC_EMB))


def test_create_loss() -> None:
    from siamkit.builders import create_loss

    cos = CosineSimilarity()
    loss = create_loss("triplet", distance=cos, margin=0.5)
    assert isinstance(loss, TripletLoss) and loss.distance is cos and loss.margin == 0.5
    assert isinstance(create_loss("contrastive"), ContrastiveLoss)
    assert isinstance(create_loss("prototypical", n_support=2), PrototypicalLoss)
    with pytest.raises(ValueError, match="hinge"):
        create_loss("hinge")


@pytest.mark.parametrize(
    "loss",
    [
        ContrastiveLoss(),
        ContrastiveLoss(CosineSimilarity(), squared=True),
        TripletLoss(margin=1.0),
        TripletLoss(CosineSimilarity(), margin=1.0),
        PrototypicalLoss(),
        PrototypicalLoss(CosineSimilarity(), scale=10.0),
    ],
    ids=lambda m: f"{type(m).__name__}-{type(m.distance).__name__}",
)
def test_gradients_flow_to_embeddings(loss: torch.nn.Module) -> None:
    """Random 3 x 3 episode: the loss is positive and gives a finite, nonzero gradient."""
    emb = torch.randn(9, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    emb.requires_grad_()
    out = loss(emb, _idx([0, 1, 2] * 3))
    assert out.ndim == 0 and out.item() > 0
    out.backward()
    assert torch.isfinite(emb.grad).all() and emb.grad.abs().sum() > 0


def test_contrastive_identical_positive_has_finite_gradient() -> None:
    """A positive pair at distance 0 (sqrt's singular point) must not produce NaN."""
    emb = _t([[1.0, 1.0], [1.0, 1.0], [1.2, 1.0]]).requires_grad_()
    out = ContrastiveLoss()(emb, _idx([0, 0, 1]))
    out.backward()
    assert torch.isfinite(emb.grad).all()


# ---------------------------------------------------------------- NormalizedSoftmaxLoss


def test_normalized_softmax_hand_computed():
    """Two proxies on the axes; an embedding on the first axis, label 0, margin 0.1, scale 2.

    cos to proxies = (1, 0); with the margin the true logit is 2 * (1 - 0.1) = 1.8, the
    other 0: loss = -log(e^1.8 / (e^1.8 + 1)) = log(1 + e^-1.8).
    """
    from siamkit.losses import NormalizedSoftmaxLoss

    loss = NormalizedSoftmaxLoss(2, 2, scale=2.0, margin=0.1)
    with torch.no_grad():
        loss.proxies.copy_(torch.tensor([[3.0, 0.0], [0.0, 0.5]]))  # norms do not matter
    value = loss(torch.tensor([[5.0, 0.0]]), torch.tensor([0]))
    torch.testing.assert_close(value, torch.log1p(torch.exp(torch.tensor(-1.8))))


def test_normalized_softmax_rejects_out_of_range_labels():
    from siamkit.losses import NormalizedSoftmaxLoss

    with pytest.raises(ValueError, match="labels must be in 0..2"):
        NormalizedSoftmaxLoss(3, 4)(torch.randn(2, 4), torch.tensor([0, 3]))


def test_multiple_negatives_ranking_hand_computed_and_false_negative_guard():
    import math

    from siamkit.distances import DotProductSimilarity
    from siamkit.losses import MultipleNegativesRankingLoss
    from siamkit.miners import row_pairs

    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
    mnrl = MultipleNegativesRankingLoss(DotProductSimilarity(), scale=1.0)

    def loss(a: torch.Tensor, p: torch.Tensor, groups: torch.Tensor | None = None
             ) -> torch.Tensor:  # row-aligned pairs, the groups of both sides
        labels = None if groups is None else torch.cat([groups, groups])
        return mnrl(torch.cat([a, p]), labels, row_pairs(len(a)))

    # logits rows: a0.p = (1, 0, 1); a1.p = (0, 2, 0); a2.p = (1, 2, 1); targets 0, 1, 2
    rows = [([1, 0, 1], 0), ([0, 2, 0], 1), ([1, 2, 1], 2)]
    want = sum(-(r[t] - math.log(sum(math.exp(x) for x in r))) for r, t in rows) / 3
    assert float(loss(a, p)) == pytest.approx(want, rel=1e-6)
    # rows 0 and 2 are one duplicate group: neither is the other's negative
    groups = torch.tensor([7, 8, 7])
    rows_g = [([1, 0], 0), ([0, 2, 0], 1), ([2, 1], 1)]  # masked entries dropped
    want_g = sum(-(r[t] - math.log(sum(math.exp(x) for x in r))) for r, t in rows_g) / 3
    assert float(loss(a, p, groups)) == pytest.approx(want_g, rel=1e-6)
    with pytest.raises(ValueError, match="row by row"):
        mnrl(torch.cat([a, p]), None, Pairs(torch.arange(3), torch.arange(3, 5),
                                            torch.arange(0), torch.arange(0)))
    with pytest.raises(ValueError, match="Pairs"):
        mnrl(torch.cat([a, p]), torch.tensor([0, 1, 2, 0, 1, 2]))


def test_multiple_negatives_with_extra_negatives_hand_computed():
    import math

    from siamkit.distances import DotProductSimilarity
    from siamkit.losses import MultipleNegativesRankingLoss

    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    n = torch.tensor([[1.0, 1.0], [0.0, 3.0]])
    mnrl = MultipleNegativesRankingLoss(DotProductSimilarity(), scale=1.0)

    def loss(a: torch.Tensor, p: torch.Tensor, groups: torch.Tensor | None = None,
             negatives: torch.Tensor | None = None,
             negative_groups: torch.Tensor | None = None) -> torch.Tensor:
        """Anchors, their positives and extra negatives as rows of one batch; the negatives
        are the right sides of negative pairs (a2 plays no part)."""
        rows = torch.arange(len(a))
        neg = torch.arange(len(negatives)) + 2 * len(a)
        labels = None
        if groups is not None:  # without negative_groups: too few labels, refused
            labels = torch.cat([groups, groups, *([negative_groups] if negative_groups
                                                   is not None else [])])
        return mnrl(torch.cat([a, p, negatives]), labels,
                    Pairs(rows, rows + len(a), rows[: len(neg)], neg))

    # columns p0, p1, n0, n1: a0 -> (2, 0, 1, 0), a1 -> (0, 1, 1, 3); targets 0 and 1

    def ce(rows: list) -> float:
        return sum(-(r[t] - math.log(sum(math.exp(x) for x in r))) for r, t in rows) / len(rows)

    assert float(loss(a, p, negatives=n)) == pytest.approx(
        ce([([2, 0, 1, 0], 0), ([0, 1, 1, 3], 1)]), rel=1e-6)
    # n1 belongs to a1's duplicate group: it is not a negative of a1 (still of a0)
    got = loss(a, p, torch.tensor([5, 6]), n, torch.tensor([9, 6]))
    assert float(got) == pytest.approx(ce([([2, 0, 1, 0], 0), ([0, 1, 1], 1)]), rel=1e-6)
    with pytest.raises(ValueError, match="one group per embedding row"):
        loss(a, p, torch.tensor([5, 6]), n)


def test_online_contrastive_uses_only_hard_pairs():
    from siamkit.distances import EuclideanDistance
    from siamkit.losses import OnlineContrastiveLoss

    e1 = torch.zeros(4, 1)
    e2 = torch.tensor([[0.2], [0.6], [0.4], [0.9]])
    same = torch.tensor([True, True, False, False])
    from siamkit.miners import row_pairs

    online = OnlineContrastiveLoss(EuclideanDistance(), margin=0.5)

    def loss(e1: torch.Tensor, e2: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
        return online(torch.cat([e1, e2]), None, row_pairs(len(e1), same=same))

    # positives 0.2, 0.6; negatives 0.4, 0.9: hard positive 0.6 (> 0.4), hard negative 0.4
    # (< 0.6): (0.36 + (0.5 - 0.4)^2) / 4
    assert float(loss(e1, e2, same)) == pytest.approx((0.36 + 0.01) / 4)
    # all easy: positives closer than every negative, negatives beyond the margin
    easy = torch.tensor([[0.1], [0.2], [0.8], [0.9]])
    assert float(loss(e1, easy, same)) == 0.0


def test_cosent_loss_by_hand():
    from siamkit.losses import CoSENTLoss
    from siamkit.miners import row_pairs

    e1 = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    e2 = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # cosine similarities 1 and 0

    def cosent(scale: float):
        def loss(e1: torch.Tensor, e2: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            return CoSENTLoss(scale=scale)(torch.cat([e1, e2]), None,
                                           row_pairs(len(e1), score=scores))
        return loss

    loss = cosent(1.0)
    # pair 0 rated higher and more similar: only exp(0 - 1) is summed
    assert float(loss(e1, e2, torch.tensor([2.0, 1.0]))) == pytest.approx(
        math.log(1 + math.exp(-1)), abs=1e-6)
    # rated the other way round: the order is wrong and costs more
    assert float(loss(e1, e2, torch.tensor([1.0, 2.0]))) == pytest.approx(
        math.log(1 + math.exp(1)), abs=1e-6)
    assert float(loss(e1, e2, torch.tensor([3.0, 3.0]))) == pytest.approx(0.0, abs=1e-7)
    # scale sharpens: with scale 20 a well-ordered batch costs almost nothing
    assert float(cosent(20.0)(e1, e2, torch.tensor([2.0, 1.0]))) < 1e-8
    with pytest.raises(ValueError, match="ScoredPairs"):
        CoSENTLoss()(torch.cat([e1, e2]), torch.tensor([0, 1, 0, 1]))
