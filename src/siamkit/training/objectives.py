"""What a training step learns from: an objective draws a batch, embeds it and returns the
loss. The one training loop (:class:`~siamkit.training.trainer.Trainer`) runs either.

- :class:`ClassBatches`: class-labelled items, P x K batches (or balanced pairs of
  classes), a miner and a loss over the batch's embeddings and labels.
- :class:`PairBatches`: a list of labelled or graded pairs, batches of pairs
  (``row_pairs``), an optional in-batch negatives term and negatives mined from the whole
  training corpus.

Under torchrun every rank draws the same global batch and embeds its own share; with
``gather`` the embeddings of every rank are gathered so the loss sees the global batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from ..augment import Chain
from ..config import ConfigError
from ..embedding import too_large
from ..miners import Miner, Pairs, corpus_hard_negatives, row_pairs
from ..samplers import BalancedPairSampler, PairBatch, PairDrawer, PKSampler
from ..siamese import SiameseNetwork
from .distributed import DistInfo, gather_with_grad, pair_rows, shard, shard_bounds
from .items import ClassData, PairData
from .state import prefixed, unprefixed

__all__ = ["Objective", "ClassBatches", "PairBatches", "HardNegativePairs"]

logger = logging.getLogger(__name__)

Encode = Callable[[Any], torch.Tensor]


def _embed(encode: Encode, x: Any) -> torch.Tensor:
    emb = encode(x)  # (B, D)
    if not isinstance(emb, torch.Tensor) or emb.dim() != 2:
        shape = tuple(emb.shape) if isinstance(emb, torch.Tensor) else type(emb).__name__
        raise ValueError(f"the encoder must return embeddings of shape (batch, dim), got "
                         f"{shape}: flatten or pool its output")
    if bool(too_large(emb).any()):
        raise ValueError("embeddings too large (inputs too large, or a learning rate that "
                         "diverged; tables: data.numeric_scaling: log tames large values)")
    return emb


class Objective:
    """One training step's loss. Subclasses draw their batches themselves, so a resumed run
    that restores :meth:`state` draws the same batches as an uninterrupted one."""

    def __init__(self, loss_fn: nn.Module) -> None:
        self.loss_fn = loss_fn

    def parameters(self) -> list[nn.Parameter]:
        """Parameters the loss itself learns (proxies), trained beside the model's."""
        return list(self.loss_fn.parameters())

    def check_distributed(self, info: DistInfo) -> None:
        """Refuse what cannot be split over ``info.world_size`` ranks."""

    def before_step(self, step: int, model: SiameseNetwork) -> None:
        """Called before step ``step`` (1-based): schedules, corpus mining."""

    def step(self, encode: Encode, info: DistInfo, gather: bool) -> tuple[torch.Tensor, int]:
        """(loss of the next batch, items the whole world embedded for it)."""
        raise NotImplementedError

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Random state and anything else a resumed run needs: (tensors, JSON values)."""
        return {}, {}

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Restore :meth:`state`."""


class ClassBatches(Objective):
    """Class-labelled items: P x K batches (or balanced pairs of classes), mined pairs or
    triplets, and a loss over the batch.

    Args:
        data: the items and their classes.
        loss_fn: any loss of the contract ``loss(embeddings, labels, indices)``.
        sampler: a :class:`PKSampler` (or :class:`BalancedPairSampler`).
        miner: chooses the batch's pairs or triplets; None gives the loss all of them.
        augment: distortions applied to each batch of images.
        channels_last: feed images in channels-last memory order (faster convolutions).
        seed: seeds each rank's augmentation under torchrun.
    """

    def __init__(self, data: ClassData, loss_fn: nn.Module,
                 sampler: PKSampler | BalancedPairSampler, miner: Miner | None = None,
                 augment: Chain | None = None, channels_last: bool = False,
                 seed: int = 0) -> None:
        super().__init__(loss_fn)
        self.data, self.sampler, self.miner, self.augment = data, sampler, miner, augment
        self.channels_last, self.seed = channels_last, seed
        self._batches: Iterator[Any] | None = None

    def check_distributed(self, info: DistInfo) -> None:
        if not info.enabled:
            return
        p = getattr(self.sampler, "p", 0)
        if not isinstance(self.sampler, PKSampler) or p % info.world_size:
            raise ConfigError(f"under torchrun each of the {info.world_size} ranks takes whole "
                              f"classes of a P x K batch: needs optim.sampler=pk and optim.p "
                              f"divisible by {info.world_size} (p={p})")
        if self.augment is not None:  # each rank distorts its own share differently
            self.augment.generator.manual_seed(self.seed + 7919 * info.rank)

    def before_step(self, step: int, model: SiameseNetwork) -> None:
        if self.miner is not None:
            self.miner.set_step(step)

    def _next(self) -> tuple[torch.Tensor, Pairs | None]:
        """Item indices of the next batch and, for a batch of pairs, its pairs."""
        if self._batches is None:  # after a resume restored the sampler's random state
            self._batches = iter(self.sampler)
        batch = next(self._batches)
        if not isinstance(batch, PairBatch):  # P x K batch
            return torch.tensor(batch), None
        n = len(batch.left)
        idx = torch.from_numpy(np.concatenate([batch.left, batch.right]))  # left, right halves
        return idx, row_pairs(n, same=batch.same.astype(bool))

    def step(self, encode: Encode, info: DistInfo, gather: bool) -> tuple[torch.Tensor, int]:
        idx, pairs = self._next()
        labels = self.data.labels
        local = torch.as_tensor(shard(idx.tolist(), info)) if info.enabled else idx
        x = self.data.items.take(local)  # (B, C, H, W) or (B, F), float
        if self.augment is not None:
            x = self.augment(x)
        if self.channels_last and isinstance(x, torch.Tensor) and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        emb = _embed(encode, x)
        if gather:  # the global batch: every rank's embeddings, gradients to our own part
            emb, y = gather_with_grad(emb, info), labels[idx]
        else:
            y = labels[local]
        indices = pairs if pairs is not None else (
            self.miner(emb, y) if self.miner is not None else None)
        return self.loss_fn(emb, y, indices), len(idx)

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = prefixed("miner", self.miner.state_dict()) if self.miner is not None else {}
        if self.augment is not None:
            tensors["augment"] = self.augment.generator.get_state()
        return tensors, {"sampler_rng": self.sampler.rng.bit_generator.state}

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.sampler.rng.bit_generator.state = meta["sampler_rng"]
        if self.augment is not None:
            self.augment.generator.set_state(tensors["augment"])
        if self.miner is not None:
            self.miner.load_state_dict(unprefixed("miner", tensors))


class HardNegativePairs:
    """Negatives mined from the whole training corpus for the positive pairs of a batch.

    :meth:`mine` embeds every training item and keeps, for each item of a positive pair,
    its ``k`` closest items outside its duplicate group (:func:`corpus_hard_negatives`);
    :meth:`extend` adds to a batch, for each positive pair, a negative pair of one of its
    two items and one of that item's mined negatives.
    """

    def __init__(self, data: PairData, k: int, rng: np.random.Generator) -> None:
        if data.same is None or data.groups is None:
            raise ValueError("hard negatives are mined for labelled pairs")
        self.data, self.k, self.rng = data, k, rng
        pos = data.same
        self.anchors = np.unique(np.concatenate([data.left[pos], data.right[pos]]))
        self.row = np.full(len(data.items), -1)
        self.row[self.anchors] = np.arange(len(self.anchors))
        self.negatives: np.ndarray | None = None

    def mine(self, model: SiameseNetwork) -> None:
        t0 = time.perf_counter()
        emb = self.data.items.embed_all(model)
        self.negatives = corpus_hard_negatives(emb, model.distance, self.anchors,
                                               self.data.groups, self.k)
        logger.info("mined %d hard negatives for each of %d texts in %.0f s", self.k,
                    len(self.anchors), time.perf_counter() - t0)

    def extend(self, left: np.ndarray, right: np.ndarray, same: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.negatives is None:
            raise RuntimeError("mine() before extend()")
        pos = np.flatnonzero(same)
        flip = self.rng.random(len(pos)) < 0.5
        anchor = np.where(flip, right[pos], left[pos])
        cand = self.negatives[self.row[anchor]]
        neg = cand[np.arange(len(cand)), self.rng.integers(0, self.k, len(cand))]
        ok = neg >= 0  # an anchor with fewer than k texts outside its group
        return (np.concatenate([left, anchor[ok]]), np.concatenate([right, neg[ok]]),
                np.concatenate([same, np.zeros(int(ok.sum()), dtype=bool)]))


class PairBatches(Objective):
    """Batches of labelled or graded pairs, embedded left sides then right sides.

    Args:
        data: the pairs and their items.
        loss_fn: a loss of the contract, given ``row_pairs`` of the batch and each item's
            duplicate group as its label.
        batch_size: pairs per batch.
        pos_fraction: positives per batch (labelled pairs); None draws as they come.
        positives_only: draw positive pairs only (in-batch negatives losses, MNRL).
        in_batch: an in-batch negatives loss added with weight ``in_batch_weight``: each
            positive pair's left side ranks its right side above every other right side.
        hard_negatives: add, for each positive pair, a negative mined from the corpus among
            the ``hard_negatives`` closest items outside its group (0: off), mined anew
            every ``mine_every`` steps.
        seed: seeds the drawing of batches and of mined negatives.
    """

    def __init__(self, data: PairData, loss_fn: nn.Module, batch_size: int,
                 pos_fraction: float | None = None, positives_only: bool = False,
                 in_batch: nn.Module | None = None, in_batch_weight: float = 0.0,
                 hard_negatives: int = 0, mine_every: int = 250, seed: int = 0) -> None:
        super().__init__(loss_fn)
        if data.graded and (positives_only or pos_fraction is not None or in_batch is not None
                            or hard_negatives):
            raise ValueError("graded pairs (scores) have no positives: positives_only, "
                             "pos_fraction, in-batch and hard negatives need labelled pairs")
        self.data, self.positives_only = data, positives_only
        self.in_batch, self.in_batch_weight = in_batch, in_batch_weight
        self.mine_every = mine_every
        self.rng = np.random.default_rng(seed)
        pool = np.flatnonzero(data.same) if positives_only else np.arange(len(data))
        if len(pool) < 2:
            raise ValueError(f"{len(pool)} training pairs{' (positive)' if positives_only else ''}"
                             f": a batch needs at least 2")
        self.draw = PairDrawer(pool, batch_size, data.same, pos_fraction, self.rng)
        self.hard = HardNegativePairs(data, hard_negatives, self.rng) if hard_negatives else None

    def before_step(self, step: int, model: SiameseNetwork) -> None:
        if self.hard is not None and (step - 1) % self.mine_every == 0:
            was_training = model.training
            self.hard.mine(model)
            model.train(was_training)

    def step(self, encode: Encode, info: DistInfo, gather: bool) -> tuple[torch.Tensor, int]:
        d = self.data
        batch = self.draw()
        left, right = d.left[batch], d.right[batch]
        same = d.same[batch] if d.same is not None else None
        if self.hard is not None:  # a mined negative pair for each positive one
            left, right, same = self.hard.extend(left, right, same)
        n_global = len(left)
        if info.enabled:  # this rank's slice of the pairs, left sides then right sides
            bounds = shard_bounds(n_global, info)
            start, stop = bounds[info.rank]
            mine = np.concatenate([left[start:stop], right[start:stop]])
            emb = _embed(encode, d.items.take(mine))
            if gather:  # back to the global batch: every left side, then every right side
                emb = gather_with_grad(emb, info)[torch.from_numpy(pair_rows(bounds))]
            else:
                left, right = left[start:stop], right[start:stop]
                same = same[start:stop] if same is not None else None
                batch = batch[start:stop] if len(batch) == n_global else batch
        else:
            emb = _embed(encode, d.items.take(np.concatenate([left, right])))
        n = len(left)
        groups = (torch.from_numpy(d.groups[np.concatenate([left, right])])
                  if d.groups is not None else None)
        if d.score is not None:
            indices: Any = row_pairs(n, score=d.score[batch])
        else:
            indices = row_pairs(n, same=None if self.positives_only else same)
        loss = self.loss_fn(emb, groups, indices)
        if self.in_batch is not None and same.any():  # positives rank against every right
            p = row_pairs(n, same=same)
            loss = loss + self.in_batch_weight * self.in_batch(
                emb, groups, Pairs(p.a1, p.p, p.a2[:0], p.n))
        return loss, 2 * n_global

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {}
        if self.hard is not None and self.hard.negatives is not None:
            tensors["negatives"] = torch.from_numpy(self.hard.negatives)
        return tensors, {"rng": self.rng.bit_generator.state}

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.rng.bit_generator.state = meta["rng"]
        if self.hard is not None and "negatives" in tensors:
            self.hard.negatives = tensors["negatives"].numpy().copy()
