"""Tests for siamkit.miners: counts, hand-placed points, brute-force agreement, large batches."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.testing import assert_close

import siamkit.miners as miners
from siamkit.distances import CosineSimilarity, Distance, EuclideanDistance
from siamkit.miners import (
    AllPairsMiner,
    AllTripletsMiner,
    BatchHardMiner,
    HardnessSchedule,
    Pairs,
    SemiHardMiner,
    Triplets,
    label_masks,
)


def _idx(values: list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


def _points(xs: list[float]) -> torch.Tensor:
    """1-D embeddings (B, 1) in float64."""
    return torch.tensor(xs, dtype=torch.float64)[:, None]


def _as_set(t: Triplets) -> set[tuple[int, int, int]]:
    return set(zip(t.a.tolist(), t.p.tolist(), t.n.tolist(), strict=True))


def _random_batch(
    n_classes: int, per_class: int, dim: int, seed: int, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random embeddings with P x K labels, shuffled."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    labels = labels[torch.randperm(len(labels), generator=g)]
    return torch.randn(len(labels), dim, generator=g, dtype=dtype), labels


def _lower_is_closer(distance: Distance, emb: torch.Tensor) -> torch.Tensor:
    """Brute-force (B, B) matrix in 'lower is closer' form, one paired() call per entry."""
    b = len(emb)
    rows = [
        [distance.paired(emb[i : i + 1], emb[j : j + 1]).item() for j in range(b)] for i in range(b)
    ]
    d = torch.tensor(rows, dtype=torch.float64)
    return -d if distance.higher_is_closer else d


def _brute_semi_hard_all(
    d: torch.Tensor, labels: list[int], margin: float
) -> set[tuple[int, int, int]]:
    b = len(labels)
    return {
        (a, p, n)
        for a, p, n in itertools.product(range(b), repeat=3)
        if a != p
        and labels[a] == labels[p]
        and labels[n] != labels[a]
        and d[a, p] < d[a, n] < d[a, p] + margin
    }


def _brute_semi_hard_hardest(d: torch.Tensor, labels: list[int]) -> set[tuple[int, int, int]]:
    out = set()
    b = len(labels)
    for a, p in itertools.product(range(b), repeat=2):
        if a == p or labels[a] != labels[p]:
            continue
        beyond = [n for n in range(b) if labels[n] != labels[a] and d[a, n] > d[a, p]]
        if beyond:
            out.add((a, p, min(beyond, key=lambda n: d[a, n].item())))
    return out


def _brute_batch_hard(d: torch.Tensor, labels: list[int]) -> set[tuple[int, int, int]]:
    out = set()
    b = len(labels)
    for a in range(b):
        pos = [p for p in range(b) if p != a and labels[p] == labels[a]]
        neg = [n for n in range(b) if labels[n] != labels[a]]
        if pos and neg:
            out.add(
                (a, max(pos, key=lambda p: d[a, p].item()), min(neg, key=lambda n: d[a, n].item()))
            )
    return out


# --- label masks and AllPairsMiner ---------------------------------------------------------


def test_label_masks() -> None:
    pos, neg = label_masks(_idx([0, 0, 1]))
    assert pos.tolist() == [[False, True, False], [True, False, False], [False, False, False]]
    assert neg.tolist() == [[False, False, True], [False, False, True], [True, True, False]]


def test_all_pairs_counts_and_content() -> None:
    """Labels [0, 0, 1, 1, 1]: C(2,2) + C(3,2) = 4 positive pairs, 2 * 3 = 6 negative pairs."""
    labels = _idx([0, 0, 1, 1, 1])
    pairs = AllPairsMiner()(torch.zeros(5, 2), labels)
    assert isinstance(pairs, Pairs)
    assert set(zip(pairs.a1.tolist(), pairs.p.tolist(), strict=True)) == {
        (0, 1),
        (2, 3),
        (2, 4),
        (3, 4),
    }
    assert set(zip(pairs.a2.tolist(), pairs.n.tolist(), strict=True)) == {
        (0, 2),
        (0, 3),
        (0, 4),
        (1, 2),
        (1, 3),
        (1, 4),
    }


@pytest.mark.parametrize(("n_classes", "per_class"), [(1, 4), (3, 3), (5, 2), (6, 1)])
def test_all_pairs_counts_p_by_k(n_classes: int, per_class: int) -> None:
    """P x K batch: P * C(K, 2) positive and C(P, 2) * K^2 negative unordered pairs."""
    _, labels = _random_batch(n_classes, per_class, 2, seed=0)
    pairs = AllPairsMiner()(torch.zeros(len(labels), 2), labels)
    assert len(pairs.a1) == n_classes * per_class * (per_class - 1) // 2
    assert len(pairs.a2) == n_classes * (n_classes - 1) // 2 * per_class**2
    assert (labels[pairs.a1] == labels[pairs.p]).all() and (pairs.a1 < pairs.p).all()
    assert (labels[pairs.a2] != labels[pairs.n]).all() and (pairs.a2 < pairs.n).all()


# --- AllTripletsMiner ----------------------------------------------------------------------


@pytest.mark.parametrize("labels", [[0, 0, 1, 1], [0, 0, 0, 1, 2, 2], [3, 1, 3, 3, 1, 7, 7, 9]])
def test_all_triplets_count(labels: list[int]) -> None:
    """Count = sum over anchors of (#positives) * (#negatives); each triplet valid and unique."""
    lab = _idx(labels)
    t = AllTripletsMiner()(torch.zeros(len(labels), 2), lab)
    expected = sum((labels.count(y) - 1) * (len(labels) - labels.count(y)) for y in labels)
    assert len(t.a) == expected
    assert len(_as_set(t)) == expected
    assert (lab[t.a] == lab[t.p]).all() and (t.a != t.p).all() and (lab[t.a] != lab[t.n]).all()


def test_all_triplets_no_positives_is_empty() -> None:
    t = AllTripletsMiner()(torch.zeros(3, 2), _idx([0, 1, 2]))
    assert isinstance(t, Triplets) and len(t.a) == len(t.p) == len(t.n) == 0
    assert t.a.dtype == torch.long


def test_all_triplets_chunking_gives_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny chunks (one anchor-positive pair at a time) enumerate the same triplets."""
    _, labels = _random_batch(3, 4, 2, seed=1)
    full = AllTripletsMiner()(torch.zeros(12, 2), labels)
    monkeypatch.setattr(miners, "_CHUNK_ELEMENTS", 5)
    chunked = AllTripletsMiner()(torch.zeros(12, 2), labels)
    assert _as_set(chunked) == _as_set(full) and len(chunked.a) == len(full.a)


# --- BatchHardMiner ------------------------------------------------------------------------
# 1-D points, labels [0, 0, 0, 1, 1]:  x = [0, 1, 5, 2, 10]
#   anchor 0: positives at 1, 5 -> farthest 2 (x=5); negatives 2, 10 -> closest 3 (x=2)
#   anchor 1: positives 0 (d1), 5 (d4) -> 2; negatives d(1,3)=1, d(1,4)=9 -> 3
#   anchor 2: positives d5, d4 -> 0; negatives d3, d5 -> 3
#   anchor 3: positive 4; negatives d2, d1, d3 -> 1
#   anchor 4: positive 3; negatives d10, d9, d5 -> 2

HARD_X = [0.0, 1.0, 5.0, 2.0, 10.0]
HARD_LABELS = [0, 0, 0, 1, 1]
HARD_EXPECTED = {(0, 2, 3), (1, 2, 3), (2, 0, 3), (3, 4, 1), (4, 3, 2)}


def test_batch_hard_hand_placed_points() -> None:
    t = BatchHardMiner()(_points(HARD_X), _idx(HARD_LABELS))
    assert t.a.tolist() == [0, 1, 2, 3, 4]
    assert _as_set(t) == HARD_EXPECTED


def test_batch_hard_skips_anchors_without_positive() -> None:
    """Label 2 has a single example (index 2): it cannot be an anchor, but can be a negative."""
    t = BatchHardMiner()(_points([0.0, 1.0, 0.4, 3.0]), _idx([0, 0, 2, 1]))
    assert _as_set(t) == {(0, 1, 2), (1, 0, 2)}


def test_batch_hard_matches_brute_force() -> None:
    emb, labels = _random_batch(4, 3, 5, seed=2)
    d = _lower_is_closer(EuclideanDistance(), emb)
    assert _as_set(BatchHardMiner()(emb, labels)) == _brute_batch_hard(d, labels.tolist())



def test_batch_hard_ties_pick_the_first_index_and_lone_labels_are_skipped() -> None:
    """Equally far positives (or equally close negatives): the lowest index wins, as
    argmax / argmin pick; a batch of one label has no negatives, so no triplets."""
    x = _points([0.0, 1.0, -1.0, 2.0, -2.0])  # 1 and 2 tie as positives of 0; 3, 4 tie
    t = BatchHardMiner()(x, _idx([0, 0, 0, 1, 1]))
    assert (t.p[0].item(), t.n[0].item()) == (1, 3)
    assert len(BatchHardMiner()(x, _idx([7] * 5)).a) == 0


# --- SemiHardMiner -------------------------------------------------------------------------


def test_semi_hard_hand_placed_points() -> None:
    """1-D, labels [0, 0, 1, 1, 1], margin 1: x = [0, 1, 1.5, 1.9, 3].

    (0,1): d_ap 1, negatives at 1.5, 1.9 (in (1, 2)), 3 (too far) -> n = 2, 3
    (1,0): d_ap 1, negatives at 0.5 (closer than positive), 0.9, 2 -> none in (1, 2)
    positives among class 1 (2,3,4): (2,4) d_ap 1.5, negatives d 1.5 (equal: not strictly
    farther), 0.5 -> none; (4,2) d_ap 1.5, negs d 3, 2 -> n = 1 (2 < 2.5);
    (4,3) d_ap 1.1, negs 3, 2 -> n = 1 (2 < 2.1);
    (3,4) d_ap 1.1, negs 1.9, 0.9 -> n = 0 (1.9 < 2.1);
    (2,3) d_ap 0.4, negs 1.5, 0.5 -> n = 1 (0.5 in (0.4, 1.4));
    (3,2) d_ap 0.4, negs 1.9, 0.9 -> n = 1

    "hardest" (closest negative strictly beyond the positive, no upper bound) adds (1,0,4):
    the only negative of anchor 1 beyond d_ap = 1 is x=3 at d 2; (0,1) keeps n = 2 (d 1.5 < 1.9);
    (2,4) still has none (d(2,0) = 1.5 only ties d_ap).
    """
    emb, labels = _points([0.0, 1.0, 1.5, 1.9, 3.0]), _idx([0, 0, 1, 1, 1])
    t = SemiHardMiner(margin=1.0)(emb, labels)
    expected = {(0, 1, 2), (0, 1, 3), (4, 2, 1), (4, 3, 1), (3, 4, 0), (2, 3, 1), (3, 2, 1)}
    assert _as_set(t) == expected and len(t.a) == len(expected)
    hardest = SemiHardMiner(margin=1.0, select="hardest")(emb, labels)
    assert _as_set(hardest) == (expected - {(0, 1, 3)}) | {(1, 0, 4)}


@pytest.mark.parametrize("margin", [0.3, 1.0])
@pytest.mark.parametrize("distance", [EuclideanDistance(), CosineSimilarity()], ids=repr)
def test_semi_hard_all_matches_brute_force(distance: Distance, margin: float) -> None:
    """Exactly the triplets with d_ap < d_an < d_ap + margin (similarities: sign-flipped)."""
    emb, labels = _random_batch(4, 4, 3, seed=3)
    d = _lower_is_closer(distance, emb)
    expected = _brute_semi_hard_all(d, labels.tolist(), margin)
    got = SemiHardMiner(margin=margin, distance=distance)(emb, labels)
    assert len(expected) > 0
    assert _as_set(got) == expected and len(got.a) == len(expected)


@pytest.mark.parametrize("distance", [EuclideanDistance(), CosineSimilarity()], ids=repr)
def test_semi_hard_hardest_matches_brute_force(distance: Distance) -> None:
    emb, labels = _random_batch(4, 4, 3, seed=4)
    d = _lower_is_closer(distance, emb)
    got = SemiHardMiner(margin=0.2, distance=distance, select="hardest")(emb, labels)
    assert _as_set(got) == _brute_semi_hard_hardest(d, labels.tolist())
    assert len(got.a) == len(_as_set(got))  # at most one per anchor-positive pair


def test_semi_hard_chunking_gives_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    emb, labels = _random_batch(3, 5, 3, seed=5)
    full_all = _as_set(SemiHardMiner(margin=1.0)(emb, labels))
    full_hard = SemiHardMiner(margin=1.0, select="hardest")(emb, labels)
    monkeypatch.setattr(miners, "_CHUNK_ELEMENTS", 40)  # 2-3 pairs per chunk
    assert _as_set(SemiHardMiner(margin=1.0)(emb, labels)) == full_all
    chunked = SemiHardMiner(margin=1.0, select="hardest")(emb, labels)
    assert _as_set(chunked) == _as_set(full_hard) and len(chunked.a) == len(full_hard.a)


def test_semi_hard_bad_select_raises() -> None:
    with pytest.raises(ValueError, match="hardest"):
        SemiHardMiner(select="easy")


# --- similarity direction ------------------------------------------------------------------


def test_batch_hard_cosine_picks_lowest_similarity_positive() -> None:
    """Unit circle, labels [0, 0, 0, 1, 1] at 0, 20, 90, 40, 180 degrees.

    anchor 0 (cosine): positives at 20 and 90 deg -> hardest is 90 deg (index 2), the lowest
    similarity; negatives at 40 and 180 deg -> hardest is 40 deg (index 3), the highest.
    A miner that ignored the direction would pick the opposite.
    """
    import math

    deg = [0.0, 20.0, 90.0, 40.0, 180.0]
    emb = torch.tensor(
        [[math.cos(math.radians(a)), math.sin(math.radians(a))] for a in deg], dtype=torch.float64
    )
    t = BatchHardMiner(CosineSimilarity())(emb, _idx([0, 0, 0, 1, 1]))
    assert (t.a[0].item(), t.p[0].item(), t.n[0].item()) == (0, 2, 3)


def test_cosine_and_euclidean_mine_alike_on_unit_vectors() -> None:
    """On unit vectors ||a - b||^2 = 2 - 2 cos, so the orders agree and so do the miners."""
    emb, labels = _random_batch(4, 3, 4, seed=6)
    emb = torch.nn.functional.normalize(emb, dim=1)
    assert _as_set(BatchHardMiner(CosineSimilarity())(emb, labels)) == _as_set(
        BatchHardMiner(EuclideanDistance())(emb, labels)
    )
    cos = SemiHardMiner(distance=CosineSimilarity(), select="hardest")(emb, labels)
    euc = SemiHardMiner(distance=EuclideanDistance(), select="hardest")(emb, labels)
    assert _as_set(cos) == _as_set(euc)


# --- HardnessSchedule ----------------------------------------------------------------------


def test_hardness_schedule_fraction() -> None:
    """0 up to start_step, 1 from end_step, linear in between."""
    sched = HardnessSchedule(start_step=100, end_step=300)
    for step, frac in [
        (0, 0.0),
        (100, 0.0),
        (150, 0.25),
        (200, 0.5),
        (250, 0.75),
        (300, 1.0),
        (10_000, 1.0),
    ]:
        sched.set_step(step)
        assert sched.hard_fraction() == pytest.approx(frac)


def test_hardness_schedule_start_equals_end() -> None:
    sched = HardnessSchedule(start_step=5, end_step=5)
    sched.set_step(5)
    assert sched.hard_fraction() == 0.0
    sched.set_step(6)
    assert sched.hard_fraction() == 1.0


def test_hardness_schedule_end_before_start_raises() -> None:
    with pytest.raises(ValueError, match="end_step"):
        HardnessSchedule(start_step=10, end_step=5)


def test_hardness_schedule_endpoints_use_one_miner() -> None:
    """Before start: the semi-hard ('hardest') miner's output; after end: batch-hard's."""
    emb, labels = _random_batch(4, 3, 4, seed=7)
    sched = HardnessSchedule(margin=0.5, start_step=10, end_step=20)
    sched.set_step(0)
    semi = SemiHardMiner(margin=0.5, select="hardest")(emb, labels)
    assert _as_set(sched(emb, labels)) == _as_set(semi)
    sched.set_step(20)
    assert _as_set(sched(emb, labels)) == _as_set(BatchHardMiner()(emb, labels))


def test_hardness_schedule_mixes_per_anchor() -> None:
    """Midway, each anchor is either hard (batch-hard triplet) or semi-hard (its semi-hard ones),
    chosen by the seeded generator: reproduce the same draw and compare."""
    emb, labels = _random_batch(5, 4, 4, seed=8)
    sched = HardnessSchedule(margin=2.0, start_step=0, end_step=100, seed=3)
    sched.set_step(50)
    got = sched(emb, labels)

    hard_anchor = torch.rand(len(labels), generator=torch.Generator().manual_seed(3)) < 0.5
    hard = BatchHardMiner()(emb, labels)
    semi = SemiHardMiner(margin=2.0, select="hardest")(emb, labels)
    expected = {t for t in _as_set(hard) if hard_anchor[t[0]]} | {
        t for t in _as_set(semi) if not hard_anchor[t[0]]
    }
    assert 0 < hard_anchor.sum() < len(labels)  # the draw really mixes
    assert _as_set(got) == expected and len(got.a) == len(expected)
    hard_anchors = {a for a in got.a.tolist() if hard_anchor[a]}
    assert len(hard_anchors) == int(hard_anchor.sum())  # one batch-hard triplet per hard anchor
    assert sum(hard_anchor[a].item() for a in got.a.tolist()) == len(hard_anchors)


# --- large batch ---------------------------------------------------------------------------


def test_large_batch_mines_in_bounded_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """2048 x 128 with 256 classes x 8: no (B, B, B) tensor (8.6e9 elements) is ever built.

    Every boolean mask handed to torch.nonzero is checked against the chunk budget; 2048 * 7
    anchor-positive pairs need two chunks, so the chunk loop is exercised too.
    """
    emb, labels = _random_batch(256, 8, 128, seed=9, dtype=torch.float32)
    b = len(labels)
    largest = 0
    real_nonzero = torch.nonzero

    def spy(t: torch.Tensor, *args: object, **kw: object) -> object:
        nonlocal largest
        largest = max(largest, t.numel())
        return real_nonzero(t, *args, **kw)

    monkeypatch.setattr(torch, "nonzero", spy)
    hard = BatchHardMiner()(emb, labels)
    semi = SemiHardMiner(margin=0.2)(emb, labels)
    hardest = SemiHardMiner(margin=0.2, select="hardest")(emb, labels)
    assert largest <= max(miners._CHUNK_ELEMENTS, b * b)

    assert len(hard.a) == b
    assert len(semi.a) > 0 and len(hardest.a) > 0
    # Spot-check validity against the miner's own (B, B) distances.
    d = EuclideanDistance().pairwise(emb)
    same = labels[:, None] == labels[None, :]
    assert same[semi.a, semi.p].all() and not same[semi.a, semi.n].any()
    dap, dan = d[semi.a, semi.p], d[semi.a, semi.n]
    assert ((dap < dan) & (dan < dap + 0.2)).all()
    assert (d[hardest.a, hardest.n] > d[hardest.a, hardest.p]).all()
    assert_close(d[hard.a, hard.p], d.masked_fill(~same, -1.0).max(1).values)


def test_smaller_batch_matches_brute_force_all_miners() -> None:
    """The same miners on 24 x 128 (P x K = 6 x 4) agree with triple loops."""
    emb, labels = _random_batch(6, 4, 128, seed=10)
    d = _lower_is_closer(EuclideanDistance(), emb)
    lab = labels.tolist()
    assert _as_set(BatchHardMiner()(emb, labels)) == _brute_batch_hard(d, lab)
    # distances of 128-d Gaussians are ~16 apart; margin 2 keeps a useful number of triplets
    semi = SemiHardMiner(margin=2.0)(emb, labels)
    expected = _brute_semi_hard_all(d, lab, 2.0)
    assert len(expected) > 10 and _as_set(semi) == expected and len(semi.a) == len(expected)
    hardest = SemiHardMiner(margin=2.0, select="hardest")(emb, labels)
    assert _as_set(hardest) == _brute_semi_hard_hardest(d, lab)


def test_corpus_hard_negatives_skip_the_anchors_group() -> None:
    import numpy as np

    # points on a line: 0 and 1 are one duplicate group, so 1 is never 0's negative
    x = torch.tensor([[0.0], [0.1], [0.3], [0.35], [2.0]])
    groups = np.array([0, 0, 1, 2, 3])
    neg = miners.corpus_hard_negatives(x, EuclideanDistance(), np.array([0, 1, 2]), groups, 2)
    assert neg.tolist() == [[2, 3], [2, 3], [3, 1]]
    # cosine: the direction closest to anchor 0 outside its group, whichever way is closer
    y = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.05], [1.0, 1.0],
                                                    [0.0, 1.0], [1.0, 0.2]]), dim=1)
    neg = miners.corpus_hard_negatives(y, CosineSimilarity(), np.array([0]),
                                       np.array([0, 0, 1, 2, 3]), 3)
    assert neg.tolist() == [[4, 2, 3]]
    # fewer items outside the group than asked: -1 pads
    neg = miners.corpus_hard_negatives(x[:3], EuclideanDistance(), np.array([0]),
                                       np.array([0, 0, 1]), 2)
    assert neg.tolist() == [[2, -1]]
    with pytest.raises(ValueError, match="one id per item"):
        miners.corpus_hard_negatives(x, EuclideanDistance(), np.array([0]), groups[:3], 1)


def test_row_pairs_adapts_row_aligned_pair_batches():
    from siamkit.miners import Pairs, ScoredPairs, row_pairs

    p = row_pairs(3, same=torch.tensor([True, False, True]))
    assert isinstance(p, Pairs)
    assert p.a1.tolist() == [0, 2] and p.p.tolist() == [3, 5]
    assert p.a2.tolist() == [1] and p.n.tolist() == [4]
    s = row_pairs(2, score=[4.0, 1.5])
    assert isinstance(s, ScoredPairs) and s.right.tolist() == [2, 3]
    assert s.score.tolist() == [4.0, 1.5]
    every = row_pairs(2)  # in-batch negatives: every pair positive
    assert every.a1.tolist() == [0, 1] and len(every.n) == 0
    with pytest.raises(ValueError, match="one flag per pair"):
        row_pairs(3, same=[True, False])


def test_miner_interface_schedule_hook_and_state():
    """Every miner takes the schedule hook; the schedule's random state round-trips, so a
    resumed run mines the same anchors hard."""
    from siamkit.miners import BatchHardMiner, HardnessSchedule, Miner, as_pairs

    assert isinstance(BatchHardMiner(), Miner)
    BatchHardMiner().set_step(5)  # a no-op for stateless miners
    assert BatchHardMiner().state_dict() == {}
    emb = torch.randn(12, 3, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(4).repeat_interleave(3)
    a = HardnessSchedule(start_step=0, end_step=10, seed=3)
    a.set_step(5)
    state = a.state_dict()
    first = a(emb, labels)
    b = HardnessSchedule(start_step=0, end_step=10, seed=99)
    b.load_state_dict(state)
    b.set_step(5)
    again = b(emb, labels)
    assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))
    t = Triplets(torch.tensor([0]), torch.tensor([1]), torch.tensor([5]))
    assert [x.tolist() for x in as_pairs(t)] == [[0], [1], [0], [5]]
