"""Losses over embeddings, one contract: ``loss(embeddings, labels=None, indices=None)``.

As in pytorch-metric-learning, ``embeddings`` is (B, D), ``labels`` (B,) class (or
duplicate-group) ids, and ``indices`` an optional typed tuple that says which pairs or
triplets count: :class:`~siamkit.miners.Pairs` or :class:`~siamkit.miners.Triplets` from a
miner, or, for a batch of row-aligned pairs, what :func:`~siamkit.miners.row_pairs` makes
of it (``Pairs``, or ``ScoredPairs`` for graded pairs). Losses never see the model. Each
holds a :class:`~siamkit.distances.Distance` and works the same whichever way that distance
points, because margins are applied to values turned into "lower is closer" form.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .distances import (
    CosineSimilarity,
    Distance,
    DotProductSimilarity,
    EuclideanDistance,
    squared_distances,
)
from .miners import (
    AllPairsMiner,
    AllTripletsMiner,
    Pairs,
    ScoredPairs,
    Triplets,
    as_pairs,
    same_label_pairs,
)
from .siamese import LearnedHead

__all__ = [
    "ContrastiveLoss",
    "TripletLoss",
    "HeadBCELoss",
    "PrototypicalLoss",
    "NormalizedSoftmaxLoss",
    "MultipleNegativesRankingLoss",
    "CoSENTLoss",
    "CosineSimilarityLoss",
    "OnlineContrastiveLoss",
]


def _mined_or_all(
    loss: nn.Module, embeddings: torch.Tensor, labels: torch.Tensor | None,
    indices: Pairs | Triplets | None, miner: AllPairsMiner | AllTripletsMiner,
) -> Pairs | Triplets:
    """The mined indices, or every pair/triplet of the batch when none were mined; pair
    losses get :class:`Pairs` (mined triplets converted)."""
    if indices is None:
        if labels is None:
            kind = "Triplets" if isinstance(miner, AllTripletsMiner) else "Pairs"
            raise ValueError(f"{type(loss).__name__} needs labels or mined {kind}")
        indices = miner(embeddings, labels)
    return as_pairs(indices) if isinstance(miner, AllPairsMiner) else indices


def _scored(loss: nn.Module, indices: object) -> ScoredPairs:
    if not isinstance(indices, ScoredPairs):
        raise ValueError(f"{type(loss).__name__} learns from graded pairs: give indices="
                         f"ScoredPairs(left, right, score) (row_pairs(n, score=...) for a "
                         f"batch of row-aligned pairs)")
    return indices


def _values(distance: Distance, embeddings: torch.Tensor, i: torch.Tensor,
            j: torch.Tensor) -> torch.Tensor:
    """``distance`` between embeddings ``i[k]`` and ``j[k]``.

    With more index pairs than embeddings (all pairs, all triplets) one (B, B) matrix
    product and a lookup cost far less than gathering two rows per pair; otherwise the
    rows are gathered and compared directly.
    """
    if len(i) > 2 * len(embeddings):
        return distance.pairwise(embeddings)[i, j]
    return distance.paired(embeddings[i], embeddings[j])


def _reduce_masked(terms: torch.Tensor, mask: torch.Tensor, reduction: str) -> torch.Tensor:
    """:func:`_reduce` of ``terms[mask]`` (zero outside ``mask``) without gathering them."""
    if reduction == "sum":
        return terms.sum()
    count = mask.sum() if reduction == "mean" else (terms > 0).sum()
    if reduction not in ("mean", "mean_nonzero"):
        raise ValueError(f"unknown reduction {reduction!r}; expected mean, sum or mean_nonzero")
    return terms.sum() / count.clamp_min(1)


def _reduce(losses: torch.Tensor, reduction: str) -> torch.Tensor:
    if losses.numel() == 0:
        return losses.sum() * 0.0  # keeps the graph alive, value 0
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    if reduction == "mean_nonzero":
        nonzero = losses > 0
        return losses[nonzero].mean() if nonzero.any() else losses.sum() * 0.0
    raise ValueError(f"unknown reduction {reduction!r}; expected mean, sum or mean_nonzero")


def _fused_kind(distance: Distance) -> str | None:
    """Which closed-form all-pairs contrastive applies to ``distance``, if any."""
    if type(distance) is EuclideanDistance:
        return "sqeuclidean" if distance.squared else "euclidean"
    if type(distance) is CosineSimilarity:
        return "cosine"
    if type(distance) is DotProductSimilarity:
        return "dot"
    return None


class _AllPairsContrastive(torch.autograd.Function):
    """Contrastive loss over every pair of a batch with a hand-written backward.

    The loss is a sum of hinge terms h(v_ij) of one (B, B) matrix of values v (Euclidean
    or squared distances, or dot products), so its gradient is ``C`` = dL/dv, a symmetric
    (B, B) matrix, pushed through v: for a distance ``(rowsum(M) x - M x)`` with
    ``M = C / d`` (Euclidean) or ``2 C`` (squared), for a dot product ``C x``. One matrix
    product forward and one backward, a dozen in-place passes over the (B, B) matrix, and
    no index tensor of all pairs (autograd through the same expression keeps several
    (B, B) intermediates and twice the passes). Values equal :class:`ContrastiveLoss`'s
    generic path; pairs closer than 1e-6 get no gradient, as there.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, labels: torch.Tensor, kind: str, pos_margin: float,
                neg_margin: float, squared: bool, reduction: str) -> torch.Tensor:
        if reduction not in ("mean", "sum", "mean_nonzero"):
            raise ValueError(f"unknown reduction {reduction!r}; expected mean, sum or "
                             "mean_nonzero")
        x = x.detach()
        sim = kind == "dot"
        if sim:
            v = x @ x.T
        else:
            # clamped at 1e-12, which is also the floor below which pairs count as identical
            v = squared_distances(x).clamp_(min=1e-12)
            if kind == "euclidean":
                v.sqrt_()
        tiny = 1e-6 if kind == "euclidean" else 1e-12
        # same-label cells as a list (B x K of them), never a (B, B) mask
        si, sj = same_label_pairs(labels)
        upper = si < sj
        i, j = si[upper], sj[upper]  # positives, each unordered pair once
        vp = v[i, j]
        tp = (pos_margin - vp) if sim else (vp - pos_margin)
        if not sim:
            tp = torch.where(vp > tiny, tp, vp.new_zeros(()) - pos_margin)  # identical: 0 - m
        tp = tp.clamp_min(0.0)
        # negatives: the whole matrix, both triangles, same-label cells zeroed
        t = (v - neg_margin) if sim else (neg_margin - v)
        t.clamp_(min=0.0)
        t[si, sj] = 0.0
        ii = jj = None
        if not sim and len(t) and float(t.max()) >= neg_margin - 2 * tiny:
            # some negatives at distance ~0: the generic path's d = 0 exactly, no gradient
            ii, jj = (v <= tiny).nonzero(as_tuple=True)
            differ = labels[ii] != labels[jj]
            ii, jj = ii[differ], jj[differ]
            t[ii, jj] = max(neg_margin, 0.0)
        flat = t.view(-1)
        neg_sum = flat.dot(flat) if squared else flat.sum()
        # C = dL/dv on unordered pairs, stored symmetric: the hinge's slope h'(t) is 1 (or
        # 2t squared) where active, times dt/dv (+-1 by which way is closer); t becomes C
        # in place. The negatives' common factor is applied in backward (no pass here).
        c = t if squared else t.sign_()
        if reduction == "mean":
            cp = max(len(vp), 1)
            cn = max(len(labels) ** 2 - len(si), 1) / 2
        elif reduction == "sum":
            cp, cn = 1.0, 1.0
        else:  # t holds each negative pair twice (both triangles); sign(t) counts them
            active = torch.count_nonzero(flat) if squared else flat.sum()
            cp, cn = max(int(torch.count_nonzero(tp)), 1), max(int(active), 1) / 2
        loss = (tp.dot(tp) if squared else tp.sum()) / cp + neg_sum / (2 * cn)
        sign_n = 1.0 if sim else -1.0
        slope = 2.0 if squared else 1.0  # d(t^2)/dt = 2t, dt/dt = 1
        scale = slope * sign_n / cn
        cpos = (tp if squared else tp.sign()) * (slope * -sign_n / cp)
        if not sim:
            if ii is not None:
                c[ii, jj] = 0.0
            cpos = torch.where(vp > tiny, cpos, cpos.new_zeros(()))
        cpos = cpos / scale
        c.index_put_((i, j), cpos)
        c.index_put_((j, i), cpos)
        if kind == "euclidean":
            c.div_(v)  # M = C / d
        elif kind == "sqeuclidean":
            scale *= 2.0
        ctx.save_for_backward(x, c)
        ctx.sim, ctx.scale = sim, scale
        return loss

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        x, m = ctx.saved_tensors
        if ctx.sim:
            grad = m @ x
        else:
            grad = torch.addmm(m.sum(1, keepdim=True) * x, m, x, alpha=-1.0)
        return grad * (grad_out * ctx.scale), None, None, None, None, None, None


class ContrastiveLoss(nn.Module):
    """Contrastive loss (Hadsell et al. 2006) over positive and negative pairs.

    With a distance d: positives pay ``max(0, d - pos_margin)``, negatives pay
    ``max(0, neg_margin - d)``; with a similarity s the signs flip
    (``max(0, pos_margin - s)`` and ``max(0, s - neg_margin)``). ``squared=True`` squares
    each term, as in the original paper. Positive and negative terms are reduced
    separately and added, so a batch with many more negatives does not drown the positives.

    Args:
        distance: measure between embeddings (default Euclidean).
        pos_margin: positives closer than this pay nothing (distance: 0; cosine: 1).
        neg_margin: negatives farther than this pay nothing.
        squared: square the hinge terms.
        reduction: "mean_nonzero" (average of the terms that are > 0), "mean" or "sum".
    """

    def __init__(
        self,
        distance: Distance | None = None,
        pos_margin: float | None = None,
        neg_margin: float | None = None,
        squared: bool = False,
        reduction: str = "mean_nonzero",
    ) -> None:
        super().__init__()
        self.distance = distance or EuclideanDistance()
        sim = self.distance.higher_is_closer
        self.pos_margin = pos_margin if pos_margin is not None else (1.0 if sim else 0.0)
        self.neg_margin = neg_margin if neg_margin is not None else (0.0 if sim else 1.0)
        self.squared = squared
        self.reduction = reduction

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor | None = None,
        indices: Pairs | Triplets | None = None,
    ) -> torch.Tensor:
        if indices is None and labels is not None:
            kind = _fused_kind(self.distance)
            if kind is not None:
                x = F.normalize(embeddings, dim=-1) if kind == "cosine" else embeddings
                return _AllPairsContrastive.apply(
                    x, labels, "dot" if kind == "cosine" else kind, self.pos_margin,
                    self.neg_margin, self.squared, self.reduction)
            # any other distance: every pair from one (B, B) matrix through autograd: the
            # few positives by index, the many negatives as a masked matrix (both
            # triangles: each pair twice, which leaves means unchanged and is halved for
            # sums), so no index tensor of all pairs
            d = self.distance.pairwise(embeddings)
            same = labels[:, None] == labels[None, :]
            i, j = torch.triu(same, 1).nonzero(as_tuple=True)
            sim = self.distance.higher_is_closer
            pos = F.relu(self.pos_margin - d[i, j]) if sim else F.relu(d[i, j] - self.pos_margin)
            gap = d - self.neg_margin if sim else self.neg_margin - d
            neg = torch.where(same, torch.zeros_like(d), gap).clamp_min(0.0)
            if self.squared:
                pos, neg = pos**2, neg**2
            neg_loss = _reduce_masked(neg, ~same, self.reduction)
            return _reduce(pos, self.reduction) + (neg_loss / 2 if self.reduction == "sum"
                                                   else neg_loss)
        else:
            a1, p, a2, n = _mined_or_all(self, embeddings, labels, indices, AllPairsMiner())
            d_pos = _values(self.distance, embeddings, a1, p)
            d_neg = _values(self.distance, embeddings, a2, n)
        if self.distance.higher_is_closer:
            pos, neg = F.relu(self.pos_margin - d_pos), F.relu(d_neg - self.neg_margin)
        else:
            pos, neg = F.relu(d_pos - self.pos_margin), F.relu(self.neg_margin - d_neg)
        if self.squared:
            pos, neg = pos**2, neg**2
        return _reduce(pos, self.reduction) + _reduce(neg, self.reduction)


class TripletLoss(nn.Module):
    """Triplet margin loss: ``max(0, d(a, p) - d(a, n) + margin)`` (for similarities,
    ``max(0, s(a, n) - s(a, p) + margin)``).

    Without mined ``indices`` every triplet of the batch is used.

    Args:
        distance: measure between embeddings (default Euclidean).
        margin: required gap between the positive and the negative.
        reduction: "mean_nonzero" (default, as pytorch-metric-learning), "mean" or "sum".
    """

    def __init__(
        self, distance: Distance | None = None, margin: float = 0.2,
        reduction: str = "mean_nonzero",
    ) -> None:
        super().__init__()
        self.distance = distance or EuclideanDistance()
        self.margin = margin
        self.reduction = reduction

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor | None = None,
        indices: Triplets | None = None,
    ) -> torch.Tensor:
        indices = _mined_or_all(self, embeddings, labels, indices, AllTripletsMiner())
        a, p, n = indices
        if len(a) > 2 * len(embeddings):  # many triplets: one (B, B) matrix, then lookups
            d = self.distance.pairwise(embeddings)
            d_ap, d_an = d[a, p], d[a, n]
        else:
            d_ap = self.distance.paired(embeddings[a], embeddings[p])
            d_an = self.distance.paired(embeddings[a], embeddings[n])
        gap = d_an - d_ap if self.distance.higher_is_closer else d_ap - d_an
        return _reduce(F.relu(gap + self.margin), self.reduction)


class HeadBCELoss(nn.Module):
    """Binary cross-entropy of a :class:`LearnedHead` on positive (1) and negative (0) pairs.

    The two classes are weighted equally (each averaged separately, then averaged), so an
    unbalanced pair list does not bias the head.
    """

    def __init__(self, head: LearnedHead) -> None:
        super().__init__()
        self.head = head

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor | None = None,
        indices: Pairs | Triplets | None = None,
    ) -> torch.Tensor:
        indices = _mined_or_all(self, embeddings, labels, indices, AllPairsMiner())
        a1, p, a2, n = indices
        terms = []
        if len(a1):
            lp = self.head.logits(embeddings[a1], embeddings[p])
            terms.append(F.binary_cross_entropy_with_logits(lp, torch.ones_like(lp)))
        if len(a2):
            ln = self.head.logits(embeddings[a2], embeddings[n])
            terms.append(F.binary_cross_entropy_with_logits(ln, torch.zeros_like(ln)))
        if not terms:
            return embeddings.sum() * 0.0
        return torch.stack(terms).mean()


class PrototypicalLoss(nn.Module):
    """Prototypical-network loss (Snell et al. 2017) on an episode.

    For every class in the batch the first ``n_support`` examples (in batch order) form
    the support set and their mean the prototype; the remaining examples are queries,
    classified by softmax over ``scale * closeness`` to the prototypes. Uses squared
    Euclidean distance by default, as the paper does.

    Args:
        distance: measure between queries and prototypes.
        n_support: support examples per class; the rest of each class are queries.
        scale: multiplies the logits (a temperature; useful with cosine similarity).
    """

    def __init__(
        self, distance: Distance | None = None, n_support: int = 1, scale: float = 1.0
    ) -> None:
        super().__init__()
        self.distance = distance or EuclideanDistance(squared=True)
        if n_support < 1:
            raise ValueError(f"n_support must be at least 1, got {n_support}")
        self.n_support = n_support
        self.scale = scale

    def split(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (classes, support mask, query class index) for a batch of labels."""
        classes, inverse = torch.unique(labels, return_inverse=True)
        # rank of each item within its class, in batch order
        order = torch.argsort(inverse, stable=True)
        rank = torch.empty_like(order)
        counts = torch.bincount(inverse, minlength=len(classes))
        starts = torch.cumsum(counts, 0) - counts
        rank[order] = torch.arange(len(labels), device=labels.device) - starts[inverse[order]]
        support = rank < self.n_support
        if (counts <= self.n_support).any():
            first = int(torch.nonzero(counts <= self.n_support)[0])
            bad, n_bad = classes[first].item(), int(counts[first])
            raise ValueError(
                f"class {bad} has {n_bad} examples in the batch; the prototypical "
                f"loss needs more than n_support={self.n_support} (support plus a query)"
            )
        return classes, support, inverse

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor, indices: object = None
    ) -> torch.Tensor:
        classes, support, inverse = self.split(labels)
        dim = embeddings.shape[1]
        sums = torch.zeros(len(classes), dim, dtype=embeddings.dtype, device=embeddings.device)
        sums.index_add_(0, inverse[support], embeddings[support])
        protos = sums / self.n_support  # (C, D)
        values = self.distance.pairwise(embeddings[~support], protos)  # (Q, C)
        logits = self.scale * self.distance.to_similarity(values)
        return F.cross_entropy(logits, inverse[~support])


class NormalizedSoftmaxLoss(nn.Module):
    """Proxy-based loss: one learned proxy per training class, softmax over cosine scores.

    ``logits = scale * (cos(e, proxy_c) - margin * [c == label])`` then cross-entropy
    (NormSoftmax of Zhai and Wu 2018; with ``margin`` > 0 it is CosFace, Wang et al. 2018).
    Every example is compared with every class at once, so each step sees all
    negatives of the training set, not only those of the batch. The proxies are this loss's
    own parameters: give them to the optimiser; inference uses only the encoder.

    Args:
        num_classes: number of training classes (labels are 0..num_classes-1).
        dim: embedding size.
        scale: inverse temperature of the softmax.
        margin: additive cosine margin for the true class.
    """

    def __init__(self, num_classes: int, dim: int, scale: float = 16.0, margin: float = 0.1):
        super().__init__()
        self.proxies = nn.Parameter(torch.randn(num_classes, dim) / dim**0.5)
        self.scale, self.margin = scale, margin

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor, indices: object = None
    ) -> torch.Tensor:
        if int(labels.max()) >= len(self.proxies) or int(labels.min()) < 0:
            raise ValueError(f"labels must be in 0..{len(self.proxies) - 1}")
        cos = F.normalize(embeddings, dim=-1) @ F.normalize(self.proxies, dim=-1).T  # (B, C)
        cos = cos - self.margin * F.one_hot(labels, len(self.proxies)).to(cos.dtype)
        return F.cross_entropy(self.scale * cos, labels)


class MultipleNegativesRankingLoss(nn.Module):
    """In-batch negatives ranking loss (Henderson et al. 2017; SBERT's MNRL) for pairs.

    ``indices`` (:class:`Pairs`) names the positive pairs ``(a1[i], p[i])``: each anchor
    should rank its own positive above every other candidate, the positives of the other
    anchors and the right sides ``n`` of the negative pairs (hard negatives):
    cross-entropy over ``scale * similarity(anchor_i, candidate_j)``. With ``labels``
    (a duplicate-group id per embedding row, e.g. a connected component of positive pairs)
    a candidate of the anchor's own group is never used as its negative: in duplicate
    data two rows of one batch can be paraphrases of each other, and pushing them apart
    would teach the wrong thing.

    Args:
        distance: similarity or distance between embeddings (default cosine).
        scale: inverse temperature (20 as in SBERT).
    """

    def __init__(self, distance: Distance | None = None, scale: float = 20.0) -> None:
        super().__init__()
        self.distance = distance or CosineSimilarity()
        self.scale = scale

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None,
                indices: Pairs | None = None) -> torch.Tensor:
        if not isinstance(indices, Pairs):
            raise ValueError("MultipleNegativesRankingLoss ranks row-aligned pairs: give "
                             "indices=Pairs(a1, p, a2, n) (row_pairs(n) for a batch of "
                             "positive pairs)")
        a1, p, _, n = indices
        if len(a1) != len(p):
            raise ValueError(f"{len(a1)} anchors and {len(p)} positives must pair row by row")
        candidates = torch.cat([p, n])
        logits = self.scale * self.distance.to_similarity(
            self.distance.pairwise(embeddings[a1], embeddings[candidates]))  # (A, A + M)
        if labels is not None:
            labels = torch.as_tensor(labels, device=embeddings.device)
            if labels.shape != embeddings.shape[:1]:
                raise ValueError(f"labels must give one group per embedding row: "
                                 f"{tuple(labels.shape)} for {len(embeddings)} rows")
            same_group = labels[a1][:, None] == labels[candidates][None, :]
            own = torch.eye(len(a1), len(candidates), dtype=torch.bool,
                            device=embeddings.device)
            logits = logits.masked_fill(same_group & ~own, float("-inf"))
        return F.cross_entropy(logits, torch.arange(len(a1), device=embeddings.device))


class CoSENTLoss(nn.Module):
    """Ranking loss on graded pairs (CoSENT, Su 2022): every pair scored higher than
    another should be more similar, ``log(1 + sum over (i, j) with score_i > score_j of
    exp(scale * (sim_j - sim_i)))``. Only the order of the gold scores matters, which is
    what Spearman correlation (STS-B's measure) rewards. ``indices``: :class:`ScoredPairs`.

    Args:
        distance: similarity or distance between embeddings (default cosine).
        scale: inverse temperature (20 as in the paper).
    """

    def __init__(self, distance: Distance | None = None, scale: float = 20.0) -> None:
        super().__init__()
        self.distance = distance or CosineSimilarity()
        self.scale = scale

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None,
                indices: ScoredPairs | None = None) -> torch.Tensor:
        left, right, scores = _scored(self, indices)
        sim = self.distance.to_similarity(
            self.distance.paired(embeddings[left], embeddings[right])) * self.scale
        scores = torch.as_tensor(scores, dtype=sim.dtype, device=sim.device)
        diff = sim[None, :] - sim[:, None]  # diff[i, j] = sim_j - sim_i
        ordered = scores[:, None] > scores[None, :]  # pairs (i, j) with score_i > score_j
        terms = diff[ordered]
        zero = torch.zeros(1, dtype=sim.dtype, device=sim.device)
        return torch.logsumexp(torch.cat([zero, terms]), dim=0)


class CosineSimilarityLoss(nn.Module):
    """SBERT's cosine similarity loss on graded pairs: the mean squared error between the
    pair's cosine similarity and its score divided by ``max_score`` (STS-B: 5).
    ``indices``: :class:`ScoredPairs`."""

    def __init__(self, max_score: float = 5.0) -> None:
        super().__init__()
        if max_score <= 0:
            raise ValueError(f"max_score must be positive, got {max_score}")
        self.max_score = max_score

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None,
                indices: ScoredPairs | None = None) -> torch.Tensor:
        left, right, scores = _scored(self, indices)
        cos = F.cosine_similarity(embeddings[left], embeddings[right])
        target = torch.as_tensor(scores, dtype=cos.dtype, device=cos.device) / self.max_score
        return F.mse_loss(cos, target)


class OnlineContrastiveLoss(nn.Module):
    """Contrastive loss on the hard pairs of a batch only (SBERT's OnlineContrastiveLoss).

    Of the positive and negative pairs (``indices``, or every pair of the batch by
    ``labels``), the hard positives are those farther apart than the closest negative, and
    the hard negatives those closer than the farthest positive (if a side has no pairs,
    all of the other side count); positives pay ``d^2``, negatives ``relu(margin - d)^2``,
    summed over the hard pairs and divided by the number of pairs (as SBERT sums them).

    Args:
        distance: measure between embeddings (default cosine distance ``1 - cos``).
        margin: negatives farther than this pay nothing.
    """

    def __init__(self, distance: Distance | None = None, margin: float = 0.5) -> None:
        super().__init__()
        self.distance = distance or CosineSimilarity()
        self.margin = margin

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None,
                indices: Pairs | Triplets | None = None) -> torch.Tensor:
        a1, p, a2, n = _mined_or_all(self, embeddings, labels, indices, AllPairsMiner())

        def dist(i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
            v = self.distance.paired(embeddings[i], embeddings[j])
            return 1.0 - v if self.distance.higher_is_closer else v  # lower is closer

        pos, neg = dist(a1, p), dist(a2, n)
        hard_pos = pos[pos > neg.min()] if len(neg) else pos
        hard_neg = neg[neg < pos.max()] if len(pos) else neg
        loss = (hard_pos**2).sum() + (F.relu(self.margin - hard_neg) ** 2).sum()
        return loss / max(1, len(pos) + len(neg))
