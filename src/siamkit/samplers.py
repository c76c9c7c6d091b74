"""Batch samplers: P classes x K examples, balanced pairs, N-way K-shot episodes, and
batches drawn from a list of pairs.

Samplers work on integer label arrays (one label per dataset item) and yield dataset
indices; they never touch the data. Each takes a seed and is deterministic.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["PKSampler", "BalancedPairSampler", "EpisodeSampler", "Episode", "PairBatch",
           "PairDrawer"]

logger = logging.getLogger(__name__)


def _by_class(labels: Sequence[int] | np.ndarray) -> dict[int, np.ndarray]:
    labels = np.asarray(labels)
    order = np.argsort(labels, kind="stable")
    classes, starts = np.unique(labels[order], return_index=True)
    bounds = list(starts[1:]) + [len(labels)]
    return {int(c): order[s:e] for c, s, e in zip(classes, starts, bounds, strict=True)}


def _name(c: int, class_names: Sequence[str] | None) -> str:
    return repr(class_names[c]) if class_names is not None else str(c)


class PKSampler:
    """Batches of P classes with K examples each (B = P * K), for mining and episodic losses.

    With ``groups`` (a group id per class, e.g. the alphabet of each character) and
    ``same_group`` > 0, that fraction of batches draws all P classes from one group,
    which gives harder negatives (characters of one alphabet look alike).

    Args:
        labels: class id of every item.
        p: classes per batch.
        k: examples per class.
        steps: batches per pass (``len(sampler)``).
        groups: group id of each class id (indexable by class id), optional.
        same_group: fraction of batches drawn within one group.
        class_names: names used in error messages.
        drop_small: skip classes with fewer than K examples instead of raising.
        seed: random seed.
        whole_groups: fill each batch with every class of randomly chosen groups (e.g. a
            writer's genuine signatures and their forgeries together), up to P classes.
        group_fill: groups smaller than P give within-group batches too: all of the
            group's classes, and the rest of the P drawn from other groups (without it,
            only groups of at least P classes do).
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        p: int,
        k: int,
        steps: int,
        groups: Sequence[int] | np.ndarray | None = None,
        same_group: float = 0.0,
        class_names: Sequence[str] | None = None,
        drop_small: bool = False,
        seed: int = 0,
        whole_groups: bool = False,
        group_fill: bool = False,
    ) -> None:
        if p < 1 or k < 1:
            raise ValueError(f"P and K must be positive, got P={p}, K={k}")
        if group_fill and whole_groups:
            raise ValueError("group_fill and whole_groups are two ways to fill a batch: "
                             "choose one")
        self.by_class = _by_class(labels)
        small = {c: len(ix) for c, ix in self.by_class.items() if len(ix) < k}
        if small and not drop_small:
            c, n = next(iter(small.items()))
            raise ValueError(
                f"class {_name(c, class_names)} has {n} examples but K={k} are needed per "
                f"batch ({len(small)} classes are too small; lower K (optim.k in a config) or "
                f"pass drop_small=True to leave them out)"
            )
        for c in small:
            logger.warning("skipping class %s: %d examples < K=%d", _name(c, class_names),
                           len(self.by_class[c]), k)
            del self.by_class[c]
        self.classes = np.array(sorted(self.by_class))
        if len(self.classes) < p:
            raise ValueError(f"P={p} classes per batch requested but only "
                             f"{len(self.classes)} classes have at least K={k} examples")
        self.p, self.k, self.steps = p, k, steps
        self.same_group = same_group
        self.whole_groups: list[np.ndarray] = []
        if whole_groups:
            if groups is None:
                raise ValueError("whole_groups needs the group of each class")
            g = np.asarray(groups)
            self.whole_groups = [self.classes[g[self.classes] == gid]
                                 for gid in np.unique(g[self.classes])]
        self.groups: dict[int, np.ndarray] = {}
        if groups is not None and same_group > 0:
            g = np.asarray(groups)
            least = min(2, p) if group_fill else p
            group_ids = np.unique(g[self.classes])
            for gid in group_ids:
                members = self.classes[g[self.classes] == gid]
                if len(members) >= least:
                    self.groups[int(gid)] = members
            if not self.groups:
                logger.warning("no group has %d classes; sampling classes from all groups",
                               least)
            else:
                logger.info("%d of %d groups give within-group batches%s", len(self.groups),
                            len(group_ids), " (the smaller ones filled up from others)"
                            if group_fill else f" (those of {p} classes or more)")
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[int]]:
        group_ids = list(self.groups)
        for _ in range(self.steps):
            pool = self.classes
            if group_ids and self.rng.random() < self.same_group:
                pool = self.groups[group_ids[self.rng.integers(len(group_ids))]]
            if self.whole_groups:
                chosen_list: list[int] = []
                for gi in self.rng.permutation(len(self.whole_groups)):
                    chosen_list.extend(self.whole_groups[gi].tolist())
                    if len(chosen_list) >= self.p:
                        break
                chosen = np.array(chosen_list[: self.p])
            elif len(pool) < self.p:  # a small group (group_fill): all of it, then others
                others = self.classes[~np.isin(self.classes, pool)]
                chosen = np.concatenate([self.rng.permutation(pool), self.rng.choice(
                    others, self.p - len(pool), replace=False)])
            else:
                chosen = self.rng.choice(pool, self.p, replace=False)
            batch = [
                int(i)
                for c in chosen
                for i in self.rng.choice(self.by_class[int(c)], self.k, replace=False)
            ]
            yield batch


@dataclass
class PairBatch:
    """Index arrays of a batch of pairs: items ``left[i]`` and ``right[i]``, ``same[i]``."""

    left: np.ndarray
    right: np.ndarray
    same: np.ndarray


class BalancedPairSampler:
    """Batches of pairs with a set fraction of positives (same class) and negatives.

    Args:
        labels: class id of every item.
        batch_size: pairs per batch.
        steps: batches per pass.
        pos_fraction: fraction of positive pairs in each batch.
        class_names: names used in error messages.
        seed: random seed.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        batch_size: int,
        steps: int,
        pos_fraction: float = 0.5,
        class_names: Sequence[str] | None = None,
        seed: int = 0,
    ) -> None:
        if not 0.0 <= pos_fraction <= 1.0:
            raise ValueError(f"pos_fraction must be in [0, 1], got {pos_fraction}")
        self.by_class = _by_class(labels)
        self.pos_classes = np.array([c for c, ix in self.by_class.items() if len(ix) >= 2])
        if pos_fraction > 0 and len(self.pos_classes) == 0:
            raise ValueError("no class has 2 examples, so no positive pair can be drawn")
        if pos_fraction < 1 and len(self.by_class) < 2:
            raise ValueError(f"negative pairs need 2 classes, found {len(self.by_class)}")
        self.all_classes = np.array(sorted(self.by_class))
        self.batch_size, self.steps, self.pos_fraction = batch_size, steps, pos_fraction
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[PairBatch]:
        n_pos = int(round(self.batch_size * self.pos_fraction))
        n_neg = self.batch_size - n_pos
        for _ in range(self.steps):
            left, right = [], []
            for c in self.rng.choice(self.pos_classes, n_pos) if n_pos else []:
                i, j = self.rng.choice(self.by_class[int(c)], 2, replace=False)
                left.append(i)
                right.append(j)
            for _ in range(n_neg):
                c1, c2 = self.rng.choice(self.all_classes, 2, replace=False)
                left.append(self.rng.choice(self.by_class[int(c1)]))
                right.append(self.rng.choice(self.by_class[int(c2)]))
            same = np.array([1] * n_pos + [0] * n_neg, dtype=np.int64)
            yield PairBatch(np.array(left, dtype=np.int64), np.array(right, dtype=np.int64), same)


@dataclass
class Episode:
    """One N-way K-shot task: support and query item indices, and their episode labels."""

    support: np.ndarray  # (N*K,) dataset indices, class-major
    support_labels: np.ndarray  # (N*K,) in 0..N-1
    query: np.ndarray  # (N*Q,)
    query_labels: np.ndarray  # (N*Q,)
    classes: np.ndarray  # (N,) dataset class ids


class EpisodeSampler:
    """N-way K-shot episodes with Q queries per class.

    Args:
        labels: class id of every item.
        n_way: classes per episode.
        k_shot: support examples per class.
        n_query: query examples per class.
        episodes: number of episodes.
        groups: group id of each class id; if given, each episode's classes come from one
            group (groups with fewer than N classes are never drawn).
        drawers: a drawer (writer, session) id per item; if given, each episode splits the
            drawers in two at random and takes support from one half, queries from the other.
        class_names: names used in error messages.
        seed: random seed.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        n_way: int,
        k_shot: int,
        n_query: int,
        episodes: int,
        groups: Sequence[int] | np.ndarray | None = None,
        drawers: Sequence[int] | np.ndarray | None = None,
        class_names: Sequence[str] | None = None,
        seed: int = 0,
    ) -> None:
        if n_way < 2 or k_shot < 1 or n_query < 1 or episodes < 1:
            raise ValueError(f"need N >= 2, K >= 1, Q >= 1 and at least one episode; got "
                             f"N={n_way}, K={k_shot}, Q={n_query}, episodes={episodes}")
        self.by_class = _by_class(labels)
        need = k_shot + n_query
        small = [(c, len(ix)) for c, ix in self.by_class.items() if len(ix) < need]
        if small:
            c, n = small[0]
            raise ValueError(
                f"class {_name(c, class_names)} has {n} examples but K + Q = {need} are needed "
                f"({len(small)} classes are too small)"
            )
        classes = np.array(sorted(self.by_class))
        if len(classes) < n_way:
            raise ValueError(f"{n_way}-way episodes need {n_way} classes, found {len(classes)}")
        if groups is not None:
            g = np.asarray(groups)
            pools = [classes[g[classes] == gid] for gid in np.unique(g[classes])]
            self.pools = [p for p in pools if len(p) >= n_way]
            if not self.pools:
                raise ValueError(f"no group has {n_way} classes for {n_way}-way episodes "
                                 f"(largest has {max(len(p) for p in pools)})")
        else:
            self.pools = [classes]
        self.drawers = np.asarray(drawers) if drawers is not None else None
        if self.drawers is not None:
            for c, items in self.by_class.items():
                if len(np.unique(self.drawers[items])) < 2:
                    raise ValueError(f"class {_name(c, class_names)} has a single drawer; "
                                     f"support and queries cannot come from different drawers")
        self.class_names = class_names
        self.n_way, self.k_shot, self.n_query, self.episodes = n_way, k_shot, n_query, episodes
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.episodes

    def _draw(self, c: int, support_drawers: set | None) -> tuple[np.ndarray, np.ndarray]:
        items = self.by_class[c]
        if support_drawers is None:
            pick = self.rng.choice(items, self.k_shot + self.n_query, replace=False)
            return pick[: self.k_shot], pick[self.k_shot :]
        # The episode's drawer split first (as in Lake's runs: one drawer set for the
        # support, another for the queries); if this class lacks examples on a side,
        # a random split of its own drawers.
        for attempt in range(20):
            if attempt:
                own = np.unique(self.drawers[items])
                self.rng.shuffle(own)
                support_drawers = set(own[: self.rng.integers(1, len(own))].tolist())
            in_s = np.isin(self.drawers[items], list(support_drawers))
            s_items, q_items = items[in_s], items[~in_s]
            if len(s_items) >= self.k_shot and len(q_items) >= self.n_query:
                return (self.rng.choice(s_items, self.k_shot, replace=False),
                        self.rng.choice(q_items, self.n_query, replace=False))
        raise ValueError(f"class {_name(c, self.class_names)}: no split of its drawers gives "
                         f"{self.k_shot} support and {self.n_query} query examples")

    def __iter__(self) -> Iterator[Episode]:
        for _ in range(self.episodes):
            pool = self.pools[self.rng.integers(len(self.pools))]
            classes = self.rng.choice(pool, self.n_way, replace=False)
            support_drawers = None
            if self.drawers is not None:
                ids = np.unique(self.drawers[np.concatenate([self.by_class[int(c)]
                                                             for c in classes])])
                self.rng.shuffle(ids)
                support_drawers = set(ids[: max(1, len(ids) // 2)].tolist())
            drawn = [self._draw(int(c), support_drawers) for c in classes]
            s, q = [d[0] for d in drawn], [d[1] for d in drawn]
            yield Episode(
                support=np.concatenate(s),
                support_labels=np.repeat(np.arange(self.n_way), self.k_shot),
                query=np.concatenate(q),
                query_labels=np.repeat(np.arange(self.n_way), self.n_query),
                classes=classes,
            )


class PairDrawer:
    """Batches of pairs drawn from a pool of labelled or graded pairs (indices into a pair
    list): uniformly without replacement, or with ``pos_fraction`` of each batch positive
    (each side drawn without replacement while it lasts).

    Args:
        pool: pair indices to draw from.
        batch_size: pairs per batch (at most the pool's size).
        same: the label of every pair of the list (needed with ``pos_fraction``).
        pos_fraction: positives per batch, in (0, 1); None draws as the pool comes.
        seed: random seed, or a numpy Generator to share.
    """

    def __init__(self, pool: np.ndarray, batch_size: int, same: np.ndarray | None = None,
                 pos_fraction: float | None = None,
                 seed: int | np.random.Generator = 0) -> None:
        self.pool = np.asarray(pool, dtype=np.int64)
        if len(self.pool) < 2:
            raise ValueError(f"{len(self.pool)} pairs to draw from: a batch needs at least 2")
        self.size = min(batch_size, len(self.pool))
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.pos = self.neg = None
        if pos_fraction is not None:
            if same is None:
                raise ValueError("pos_fraction needs labelled pairs (same)")
            if not 0.0 < pos_fraction < 1.0:
                raise ValueError(f"pos_fraction must be in (0, 1), got {pos_fraction}")
            self.pos, self.neg = self.pool[same[self.pool]], self.pool[~same[self.pool]]
            if len(self.pos) == 0 or len(self.neg) == 0:
                raise ValueError("pos_fraction needs both positive and negative pairs")
            self.n_pos = min(self.size - 1, max(1, round(self.size * pos_fraction)))

    def __call__(self) -> np.ndarray:
        """The pair indices of the next batch."""
        if self.pos is None:
            return self.rng.choice(self.pool, self.size, replace=False)
        n_neg = self.size - self.n_pos
        return np.concatenate([
            self.rng.choice(self.pos, self.n_pos, replace=self.n_pos > len(self.pos)),
            self.rng.choice(self.neg, n_neg, replace=n_neg > len(self.neg))])
