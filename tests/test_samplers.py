"""Tests for siamkit.samplers: P x K batches, balanced pairs, N-way K-shot episodes."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from siamkit.samplers import BalancedPairSampler, Episode, EpisodeSampler, PairBatch, PKSampler


def _labels(counts: list[int], seed: int = 0) -> np.ndarray:
    """Class c repeated counts[c] times, in a shuffled order (samplers must not rely on order)."""
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    return np.random.default_rng(seed).permutation(labels)


# ---------------------------------------------------------------- PKSampler


def test_pk_batches_have_p_classes_of_k_distinct_examples():
    labels = _labels([5] * 7)
    sampler = PKSampler(labels, p=3, k=4, steps=20, seed=1)
    batches = list(sampler)
    assert len(sampler) == 20 and len(batches) == 20
    for batch in batches:
        assert len(batch) == 12
        assert len(set(batch)) == 12  # no item twice
        counts = Counter(labels[batch].tolist())
        assert len(counts) == 3
        assert set(counts.values()) == {4}


def test_pk_batches_are_class_major():
    labels = _labels([4] * 5)
    for batch in PKSampler(labels, p=2, k=3, steps=5, seed=0):
        blocks = labels[batch].reshape(2, 3)
        assert (blocks == blocks[:, :1]).all()


def test_pk_is_deterministic_with_seed():
    labels = _labels([6] * 10)
    a = list(PKSampler(labels, p=4, k=2, steps=8, seed=3))
    b = list(PKSampler(labels, p=4, k=2, steps=8, seed=3))
    c = list(PKSampler(labels, p=4, k=2, steps=8, seed=4))
    assert a == b
    assert a != c


def test_pk_same_group_one_keeps_every_batch_in_one_group():
    labels = _labels([3] * 9)
    groups = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    sampler = PKSampler(labels, p=3, k=2, steps=30, groups=groups, same_group=1.0, seed=0)
    seen = set()
    for batch in sampler:
        batch_groups = set(groups[labels[batch]].tolist())
        assert len(batch_groups) == 1
        seen |= batch_groups
    assert seen == {0, 1, 2}  # every group gets drawn


def test_pk_same_group_skips_groups_smaller_than_p():
    labels = _labels([3] * 6)
    groups = np.array([0, 0, 0, 0, 1, 1])  # group 1 cannot supply P=3 classes
    sampler = PKSampler(labels, p=3, k=1, steps=20, groups=groups, same_group=1.0, seed=0)
    for batch in sampler:
        assert set(groups[labels[batch]].tolist()) == {0}


def test_pk_group_fill_takes_a_small_group_whole_and_fills_from_others():
    """Groups of 2 and 1 classes at P=3: with group_fill the 2-class group gives batches
    holding both its classes plus one other; the 1-class group never leads a batch."""
    labels = _labels([3] * 7)
    groups = np.array([0, 0, 0, 0, 1, 1, 2])
    sampler = PKSampler(labels, p=3, k=1, steps=200, groups=groups, same_group=1.0, seed=0,
                        group_fill=True)
    led = Counter()
    for batch in sampler:
        classes = labels[batch]
        assert len(set(classes.tolist())) == 3
        if {4, 5} <= set(classes.tolist()):
            led[1] += 1
            assert classes[0] in (4, 5) and classes[1] in (4, 5)  # the group first, whole
        elif set(groups[classes].tolist()) == {0}:
            led[0] += 1
    assert led[0] > 50 and led[1] > 50  # both groups lead about half the batches
    assert sum(led.values()) == 200  # group 2 (one class) leads none
    plain = PKSampler(labels, p=3, k=1, steps=50, groups=groups, same_group=1.0, seed=0)
    assert all(set(groups[labels[b]].tolist()) == {0} for b in plain)  # the control
    with pytest.raises(ValueError, match="two ways to fill a batch"):
        PKSampler(labels, p=3, k=1, steps=5, groups=groups, same_group=1.0, group_fill=True,
                  whole_groups=True)


def test_pk_same_group_zero_mixes_groups():
    # the control for the test above: without same_group, batches do cross groups
    labels = _labels([3] * 9)
    groups = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    sampler = PKSampler(labels, p=3, k=2, steps=30, groups=groups, same_group=0.0, seed=0)
    assert any(len(set(groups[labels[b]].tolist())) > 1 for b in sampler)


def test_pk_small_class_error_names_class_and_counts():
    labels = _labels([5, 5, 2, 5])
    names = ["Latin/a", "Latin/b", "Greek/alpha", "Greek/beta"]
    with pytest.raises(ValueError, match=r"class 'Greek/alpha' has 2 examples but K=3.*"
                                         r"lower K \(optim.k in a config\) or pass drop_small"):
        PKSampler(labels, p=2, k=3, steps=1, class_names=names)


def test_pk_small_class_error_without_names_uses_class_id():
    with pytest.raises(ValueError, match=r"class 1 has 1 examples but K=2"):
        PKSampler(_labels([3, 1, 3]), p=2, k=2, steps=1)


def test_pk_drop_small_never_draws_the_small_class():
    labels = _labels([4, 1, 4, 4])
    sampler = PKSampler(labels, p=3, k=2, steps=10, drop_small=True, seed=0)
    assert sampler.classes.tolist() == [0, 2, 3]
    for batch in sampler:
        assert 1 not in labels[batch]


def test_pk_too_few_classes_and_bad_p_k():
    with pytest.raises(ValueError, match=r"P=4 classes.*only 3 classes"):
        PKSampler(_labels([2, 2, 2]), p=4, k=2, steps=1)
    with pytest.raises(ValueError, match=r"only 2 classes have at least K=2"):
        PKSampler(_labels([2, 1, 2]), p=3, k=2, steps=1, drop_small=True)
    with pytest.raises(ValueError, match="P and K must be positive"):
        PKSampler(_labels([2, 2]), p=0, k=1, steps=1)


# ---------------------------------------------------------------- BalancedPairSampler


@pytest.mark.parametrize("batch_size, pos_fraction, n_pos", [(10, 0.3, 3), (8, 0.5, 4),
                                                             (6, 0.0, 0), (6, 1.0, 6)])
def test_pairs_positive_fraction_is_exact(batch_size, pos_fraction, n_pos):
    labels = _labels([3, 4, 2, 5])
    sampler = BalancedPairSampler(labels, batch_size, steps=5, pos_fraction=pos_fraction)
    batches = list(sampler)
    assert len(sampler) == 5 and len(batches) == 5
    for b in batches:
        assert isinstance(b, PairBatch)
        assert b.left.shape == b.right.shape == b.same.shape == (batch_size,)
        assert b.same.tolist() == [1] * n_pos + [0] * (batch_size - n_pos)


def test_pairs_positives_same_class_negatives_different():
    labels = _labels([3, 1, 4, 2, 5])  # class 1 has one item: it can only be a negative
    for b in BalancedPairSampler(labels, 16, steps=20, pos_fraction=0.5, seed=2):
        pos, neg = b.same == 1, b.same == 0
        assert (labels[b.left[pos]] == labels[b.right[pos]]).all()
        assert (b.left[pos] != b.right[pos]).all()  # two different items
        assert (labels[b.left[pos]] != 1).all()
        assert (labels[b.left[neg]] != labels[b.right[neg]]).all()


def test_pairs_are_deterministic_with_seed():
    labels = _labels([3, 3, 3, 3])

    def draw(seed):
        return [np.concatenate([b.left, b.right])
                for b in BalancedPairSampler(labels, 8, steps=4, seed=seed)]

    assert all((x == y).all() for x, y in zip(draw(5), draw(5), strict=True))
    assert not all((x == y).all() for x, y in zip(draw(5), draw(6), strict=True))


def test_pairs_errors():
    with pytest.raises(ValueError, match=r"pos_fraction must be in \[0, 1\], got 1.5"):
        BalancedPairSampler(_labels([2, 2]), 4, 1, pos_fraction=1.5)
    with pytest.raises(ValueError, match="no class has 2 examples"):
        BalancedPairSampler([0, 1, 2], 4, 1, pos_fraction=0.5)
    with pytest.raises(ValueError, match="negative pairs need 2 classes, found 1"):
        BalancedPairSampler([0, 0, 0], 4, 1, pos_fraction=0.5)
    # the edge cases that need only one kind of pair are fine
    BalancedPairSampler([0, 1, 2], 4, 1, pos_fraction=0.0)
    BalancedPairSampler([0, 0, 0], 4, 1, pos_fraction=1.0)


# ---------------------------------------------------------------- EpisodeSampler


def test_episode_shapes_and_labels():
    labels = _labels([6] * 8)
    sampler = EpisodeSampler(labels, n_way=5, k_shot=2, n_query=3, episodes=6, seed=0)
    episodes = list(sampler)
    assert len(sampler) == 6 and len(episodes) == 6
    for ep in episodes:
        assert isinstance(ep, Episode)
        assert ep.support.shape == ep.support_labels.shape == (10,)
        assert ep.query.shape == ep.query_labels.shape == (15,)
        assert ep.support_labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
        assert ep.query_labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3 + [4] * 3
        assert len(set(ep.classes.tolist())) == 5
        # episode label i means dataset class classes[i]
        assert (labels[ep.support] == ep.classes[ep.support_labels]).all()
        assert (labels[ep.query] == ep.classes[ep.query_labels]).all()
        assert not set(ep.support.tolist()) & set(ep.query.tolist())
        assert len(set(ep.support.tolist())) == 10 and len(set(ep.query.tolist())) == 15


def test_episode_is_deterministic_with_seed():
    labels = _labels([4] * 6)

    def draw(seed):
        return [np.concatenate([e.support, e.query])
                for e in EpisodeSampler(labels, 3, 1, 2, episodes=5, seed=seed)]

    assert all((x == y).all() for x, y in zip(draw(1), draw(1), strict=True))
    assert not all((x == y).all() for x, y in zip(draw(1), draw(2), strict=True))


def test_episode_classes_come_from_one_group():
    labels = _labels([3] * 10)
    groups = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])  # group 2 is too small for 3-way
    sampler = EpisodeSampler(labels, 3, 1, 1, episodes=30, groups=groups, seed=0)
    seen = set()
    for ep in sampler:
        g = set(groups[ep.classes].tolist())
        assert len(g) == 1
        seen |= g
    assert seen == {0, 1}


def test_episode_no_group_large_enough():
    with pytest.raises(ValueError, match=r"no group has 3 classes.*largest has 2"):
        EpisodeSampler(_labels([2] * 4), 3, 1, 1, 1, groups=[0, 0, 1, 1])


def test_episode_support_and_query_drawers_are_disjoint():
    n_classes, n_drawers = 6, 8
    labels = np.repeat(np.arange(n_classes), n_drawers)
    drawers = np.tile(np.arange(n_drawers), n_classes)  # every class drawn by every drawer
    sampler = EpisodeSampler(labels, 4, 2, 3, episodes=20, drawers=drawers, seed=0)
    for ep in sampler:
        s, q = set(drawers[ep.support].tolist()), set(drawers[ep.query].tolist())
        assert not s & q


def test_episode_single_drawer_class_is_refused_up_front_naming_it():
    # class "x" was drawn by drawer 0 only: support and queries can never differ in drawer
    labels = np.array([0, 0, 0, 1, 1, 1])
    drawers = np.array([0, 0, 0, 1, 2, 3])
    with pytest.raises(ValueError, match=r"class 'x' has a single drawer"):
        EpisodeSampler(labels, 2, 1, 1, episodes=1, drawers=drawers, class_names=["x", "y"])


def test_episode_drawer_split_falls_back_to_a_class_own_drawers():
    # classes share no drawers, so an episode-wide split often leaves one class one-sided;
    # every episode must still take support and query from different drawers
    labels = np.repeat(np.arange(4), 4)
    drawers = np.arange(16) // 2  # class c: drawers 2c and 2c + 1
    sampler = EpisodeSampler(labels, 4, 1, 1, episodes=50, drawers=drawers, seed=0)
    for ep in sampler:
        assert not set(drawers[ep.support]) & set(drawers[ep.query])


def test_episode_errors():
    with pytest.raises(ValueError, match=r"3-way episodes need 3 classes, found 2"):
        EpisodeSampler(_labels([4, 4]), 3, 1, 1, 1)
    names = ["a", "b", "short"]
    with pytest.raises(ValueError, match=r"class 'short' has 3 examples but K \+ Q = 4"):
        EpisodeSampler(_labels([5, 5, 3]), 2, 2, 2, 1, class_names=names)
    with pytest.raises(ValueError, match="need N >= 2"):
        EpisodeSampler(_labels([4, 4]), 1, 1, 1, 1)


def test_pk_whole_groups_keeps_groups_together():
    # 6 classes in 3 groups of 2 (a writer's genuine and forged signatures)
    labels = np.repeat(np.arange(6), 4)
    groups = np.array([0, 0, 1, 1, 2, 2])
    sampler = PKSampler(labels, p=4, k=2, steps=20, groups=groups, whole_groups=True, seed=0)
    for batch in sampler:
        classes = set(labels[batch].tolist())
        assert len(classes) == 4 and len(batch) == 8
        for c in classes:  # the partner class of every class is in the batch
            assert (c ^ 1) in classes
