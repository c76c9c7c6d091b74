"""Miners: choose which pairs or triplets of a batch the loss should learn from.

A miner takes embeddings (B, D) and labels (B,) and returns a typed index tuple,
:class:`Pairs` or :class:`Triplets`, that losses accept. Distances are computed once
as a (B, B) matrix; nothing of size B x B x B is ever built, so batches of thousands
fit in memory (candidate triplets are enumerated in chunks of anchor-positive pairs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from .distances import Distance, EuclideanDistance, squared_distances
from .topk import blocked_topk

__all__ = [
    "Miner",
    "Pairs",
    "Triplets",
    "ScoredPairs",
    "row_pairs",
    "as_pairs",
    "AllPairsMiner",
    "AllTripletsMiner",
    "BatchHardMiner",
    "SemiHardMiner",
    "HardnessSchedule",
    "corpus_hard_negatives",
    "label_masks",
    "same_label_pairs",
]

# Largest (anchor-positive pairs x batch) boolean block materialised at once.
_CHUNK_ELEMENTS = 1 << 24


class Pairs(NamedTuple):
    """Index tensors of positive pairs (a1[i], p[i]) and negative pairs (a2[j], n[j])."""

    a1: torch.Tensor
    p: torch.Tensor
    a2: torch.Tensor
    n: torch.Tensor


class Triplets(NamedTuple):
    """Index tensors of triplets (anchor a[i], positive p[i], negative n[i])."""

    a: torch.Tensor
    p: torch.Tensor
    n: torch.Tensor


class ScoredPairs(NamedTuple):
    """Index tensors of pairs (left[i], right[i]) with a graded target ``score[i]`` (STS-B)."""

    left: torch.Tensor
    right: torch.Tensor
    score: torch.Tensor


def as_pairs(indices: Pairs | Triplets) -> Pairs:
    """Pairs from mined indices: a triplet (a, p, n) gives the positive pair (a, p) and the
    negative pair (a, n), as pytorch-metric-learning converts them for pair losses."""
    if isinstance(indices, Triplets):
        return Pairs(indices.a, indices.p, indices.a, indices.n)
    return indices


def row_pairs(n: int, same: torch.Tensor | np.ndarray | None = None,
              score: torch.Tensor | np.ndarray | None = None) -> Pairs | ScoredPairs:
    """The adapter of row-aligned pair batches to the loss contract.

    A batch of ``n`` pairs is embedded as one tensor, left sides then right sides
    (``torch.cat([e_left, e_right])``, shape (2n, D)); pair ``i`` is rows ``(i, n + i)``.
    With ``same`` (n,) bool the pairs are labelled: :class:`Pairs` of the positive and
    negative ones. With ``score`` (n,) they are graded: :class:`ScoredPairs`. With neither,
    every pair is a positive one (in-batch negatives losses).

    Example:
        >>> emb = net.embed(torch.cat([x_left, x_right]))  # (2n, D)
        >>> loss = ContrastiveLoss()(emb, None, row_pairs(len(x_left), same=y))
    """
    rows = torch.arange(n)
    if score is not None:
        return ScoredPairs(rows, rows + n, torch.as_tensor(score, dtype=torch.float32))
    if same is None:
        empty = rows[:0]
        return Pairs(rows, rows + n, empty, empty)
    same = torch.as_tensor(same, dtype=torch.bool)
    if same.shape != (n,):
        raise ValueError(f"same must hold one flag per pair: shape {tuple(same.shape)} for "
                         f"{n} pairs")
    return Pairs(rows[same], rows[same] + n, rows[~same], rows[~same] + n)


class Miner:
    """Chooses which pairs or triplets of a batch a loss learns from.

    ``miner(embeddings (B, D), labels (B,))`` returns :class:`Pairs` or :class:`Triplets`.
    The training loop calls :meth:`set_step` before every step (a schedule's hook) and
    saves :meth:`state_dict` with a resumable run; most miners keep no state.
    """

    def __call__(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Pairs | Triplets:
        raise NotImplementedError

    def set_step(self, step: int) -> None:
        """The training step about to run; stateless miners ignore it."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Random state to save with a resumable run (tensors only)."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_dict` gave."""


def label_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean (B, B) masks of positive pairs (same label, not self) and negative pairs."""
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def same_label_pairs(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ordered pair (i, j) of equal labels, i == j included, as index tensors.

    The cells a (B, B) ``labels[:, None] == labels[None, :]`` mask would mark, listed
    from the sorted labels in O(sum of class sizes squared) without building that mask:
    B x K entries for a P x K batch instead of B^2.
    """
    sorted_labels, order = labels.sort(stable=True)
    _, counts = torch.unique_consecutive(sorted_labels, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    group = torch.repeat_interleave(torch.arange(len(counts), device=labels.device), counts)
    reps = counts[group]  # each sorted position pairs with every member of its group
    rows = torch.repeat_interleave(torch.arange(len(labels), device=labels.device), reps)
    first = torch.cumsum(reps, 0) - reps
    cols = starts[group][rows] + (torch.arange(len(rows), device=labels.device)
                                  - torch.repeat_interleave(first, reps))
    return order[rows], order[cols]


def _as_distance(distance: Distance, embeddings: torch.Tensor) -> torch.Tensor:
    """(B, B) matrix where lower always means closer, without gradients."""
    with torch.no_grad():
        values = distance.pairwise(embeddings.detach())
    return values if not distance.higher_is_closer else -values


def _empty(device: torch.device) -> torch.Tensor:
    return torch.zeros(0, dtype=torch.long, device=device)


class AllPairsMiner(Miner):
    """Every positive and every negative pair of the batch (each unordered pair once)."""

    def __call__(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Pairs:
        pos, neg = label_masks(labels)
        upper = torch.ones_like(pos).triu(1)
        a1, p = torch.nonzero(pos & upper, as_tuple=True)
        a2, n = torch.nonzero(neg & upper, as_tuple=True)
        return Pairs(a1, p, a2, n)


def _positive_pairs(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    pos, _ = label_masks(labels)
    return torch.nonzero(pos, as_tuple=True)


def _triplets_where(
    a: torch.Tensor,
    p: torch.Tensor,
    keep: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    batch: int,
) -> Triplets:
    """Enumerate (a, p, n) for every anchor-positive pair and negative n with keep(...) true.

    ``keep(a_chunk, p_chunk)`` returns a (chunk, B) boolean mask of admissible negatives;
    pairs are processed in chunks so the mask never exceeds ``_CHUNK_ELEMENTS``.
    """
    step = max(1, _CHUNK_ELEMENTS // max(batch, 1))
    out_a, out_p, out_n = [], [], []
    for s in range(0, len(a), step):
        ac, pc = a[s : s + step], p[s : s + step]
        rows, n = torch.nonzero(keep(ac, pc), as_tuple=True)
        out_a.append(ac[rows])
        out_p.append(pc[rows])
        out_n.append(n)
    if not out_a:
        e = _empty(a.device)
        return Triplets(e, e, e)
    return Triplets(torch.cat(out_a), torch.cat(out_p), torch.cat(out_n))


class AllTripletsMiner(Miner):
    """Every (anchor, positive, negative) triplet of the batch."""

    def __call__(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Triplets:
        _, neg = label_masks(labels)
        a, p = _positive_pairs(labels)
        return _triplets_where(a, p, lambda ac, pc: neg[ac], len(labels))


class SemiHardMiner(Miner):
    """Semi-hard triplets: the negative is farther than the positive, but within the margin.

    ``d(a, p) < d(a, n) < d(a, p) + margin`` in distance terms (for similarities the
    same with signs flipped). With ``select="all"`` every such triplet is returned
    (the definition of pytorch-metric-learning); with ``select="hardest"`` one per
    anchor-positive pair: the closest negative that is still farther than the positive
    (FaceNet).
    """

    def __init__(
        self, margin: float = 0.2, distance: Distance | None = None, select: str = "all"
    ) -> None:
        if select not in ("all", "hardest"):
            raise ValueError(f"select must be 'all' or 'hardest', got {select!r}")
        self.margin = margin
        self.distance = distance or EuclideanDistance()
        self.select = select

    def __call__(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Triplets:
        d = _as_distance(self.distance, embeddings)  # (B, B), lower is closer
        _, neg = label_masks(labels)
        a, p = _positive_pairs(labels)
        if self.select == "all":

            def keep(ac: torch.Tensor, pc: torch.Tensor) -> torch.Tensor:
                dap = d[ac, pc][:, None]  # (C, 1)
                dan = d[ac]  # (C, B)
                return neg[ac] & (dan > dap) & (dan < dap + self.margin)

            return _triplets_where(a, p, keep, len(labels))
        # "hardest": per anchor-positive pair, the smallest d(a, n) above d(a, p).
        out_n = torch.empty_like(a)
        found = torch.zeros_like(a, dtype=torch.bool)
        step = max(1, _CHUNK_ELEMENTS // max(len(labels), 1))
        for s in range(0, len(a), step):
            ac, pc = a[s : s + step], p[s : s + step]
            dan = d[ac].masked_fill(~neg[ac] | (d[ac] <= d[ac, pc][:, None]), float("inf"))
            best, idx = dan.min(1)
            out_n[s : s + step] = idx
            found[s : s + step] = torch.isfinite(best)
        return Triplets(a[found], p[found], out_n[found])


class BatchHardMiner(Miner):
    """Batch-hard triplets (Hermans et al. 2017): per anchor, its farthest positive and
    closest negative. Anchors without a positive or a negative are skipped."""

    def __init__(self, distance: Distance | None = None) -> None:
        self.distance = distance or EuclideanDistance()

    def __call__(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Triplets:
        b = len(labels)
        with torch.no_grad():
            x = embeddings.detach()
            if isinstance(self.distance, EuclideanDistance):
                # only the order matters: squared distances rank alike (no sqrt), and the
                # row norms go in with the matrix product
                d = squared_distances(x)
            else:
                d = _as_distance(self.distance, x)  # (B, B), lower is closer
            # positives are few (K - 1 per anchor in a P x K batch): work on their list
            # instead of masking the whole matrix
            si, sj = same_label_pairs(labels)
            same_count = torch.bincount(si, minlength=b)
            off = si != sj
            i, j = si[off], sj[off]
            vals = d[i, j]
            far = torch.full((b,), float("-inf"), dtype=d.dtype, device=d.device)
            far = far.scatter_reduce(0, i, vals, "amax")
            top = vals == far[i]  # the first (lowest j) of ties, as argmax picks
            hardest_p = torch.full((b,), b, dtype=torch.long, device=d.device)
            hardest_p = hardest_p.scatter_reduce(0, i[top], j[top], "amin")
            d[si, sj] = float("inf")
            hardest_n = d.argmin(1)  # (B,)
            valid = (same_count > 1) & (same_count < b)
        anchors = torch.arange(b, device=labels.device)[valid]
        return Triplets(anchors, hardest_p[valid], hardest_n[valid])


class HardnessSchedule(Miner):
    """Start semi-hard, end hard: a mining curriculum over training steps.

    Before ``start_step`` every anchor is mined semi-hard; after ``end_step`` every anchor
    is mined batch-hard; in between, a fraction of anchors that grows linearly from 0 to 1
    is mined hard and the rest semi-hard. The training loop calls :meth:`set_step`.
    """

    def __init__(
        self,
        margin: float = 0.2,
        start_step: int = 0,
        end_step: int = 1000,
        distance: Distance | None = None,
        seed: int = 0,
    ) -> None:
        if end_step < start_step:
            raise ValueError(f"end_step ({end_step}) must not be before start_step ({start_step})")
        self.semi_hard = SemiHardMiner(margin, distance, select="hardest")
        self.hard = BatchHardMiner(distance)
        self.start_step, self.end_step = start_step, end_step
        self.step = 0
        self._gen = torch.Generator().manual_seed(seed)

    def set_step(self, step: int) -> None:
        """Tell the schedule which training step comes next."""
        self.step = step

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"generator": self._gen.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self._gen.set_state(state["generator"])

    def hard_fraction(self) -> float:
        """Fraction of anchors mined hard at the current step, in [0, 1]."""
        if self.step <= self.start_step:
            return 0.0
        if self.step >= self.end_step:
            return 1.0
        return (self.step - self.start_step) / (self.end_step - self.start_step)

    def __call__(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Triplets:
        frac = self.hard_fraction()
        if frac == 0.0:
            return self.semi_hard(embeddings, labels)
        if frac == 1.0:
            return self.hard(embeddings, labels)
        hard_anchor = torch.rand(len(labels), generator=self._gen) < frac
        hard_anchor = hard_anchor.to(labels.device)
        h, s = self.hard(embeddings, labels), self.semi_hard(embeddings, labels)
        kh, ks = hard_anchor[h.a], ~hard_anchor[s.a]
        return Triplets(
            torch.cat([h.a[kh], s.a[ks]]),
            torch.cat([h.p[kh], s.p[ks]]),
            torch.cat([h.n[kh], s.n[ks]]),
        )


def corpus_hard_negatives(embeddings: torch.Tensor, distance: Distance, anchors: np.ndarray,
                          groups: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` items of a whole corpus closest to each anchor outside the anchor's group.

    For pair data without class ids: ``groups`` are the duplicate groups (connected
    components of positive pairs), so an item joined to the anchor by a chain of positive
    pairs is never returned as its negative. Searched by blocked top-k (no N x N matrix).

    Args:
        embeddings: (N, D) embeddings of every item.
        distance: the model's distance (which way is closer is its own).
        anchors: (A,) item indices to mine for.
        groups: (N,) duplicate-group id of every item.
        k: negatives per anchor.

    Returns:
        (A, k) item indices, closest first; -1 where fewer than ``k`` items lie outside the
        anchor's group.
    """
    anchors, groups = np.asarray(anchors, dtype=np.int64), np.asarray(groups)
    if len(groups) != len(embeddings):
        raise ValueError(f"groups must give one id per item: {len(groups)} for "
                         f"{len(embeddings)} items")
    out = np.full((len(anchors), k), -1, dtype=np.int64)
    if len(anchors) == 0 or k == 0:
        return out
    x = embeddings.detach()
    anchor_groups = torch.from_numpy(groups[anchors])[:, None]
    item_groups = torch.from_numpy(groups)

    def scores(q: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        # the anchor's own group scores -inf: never returned while another item is left
        s = distance.to_similarity(distance.pairwise(q, x[start:stop]))
        return s.masked_fill(anchor_groups == item_groups[start:stop], -torch.inf)

    with torch.no_grad():
        top, idx = blocked_topk(x[torch.from_numpy(anchors)], len(x), k, scores)
    found = torch.isfinite(top).numpy()  # -inf only once the items outside run out
    out[:, : idx.shape[1]][found] = idx.numpy()[found]
    return out
