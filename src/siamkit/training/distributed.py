"""Data-parallel training under ``torchrun``: process group, batch shards, global batches.

Every run (``siamkit train``, ``fit``) runs unchanged under ``torchrun --nproc-per-node N``:
every rank draws the same global batch (same seed) and embeds its own contiguous share (whole
classes of a P x K batch, or a slice of a batch of pairs); with ``gather_embeddings`` the
embeddings of all ranks are gathered (gradients flow to each rank's own part), so miners
and losses see the global batch. DistributedDataParallel averages gradients, and the loss
is scaled by the world size so the update equals a single process's on the global batch.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["DistInfo", "setup", "shard", "shard_bounds", "pair_rows", "gather_with_grad",
           "broadcast_floats", "average_gradients", "barrier", "cleanup"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """This process's place: ``rank`` of ``world_size`` (1 = not distributed)."""

    rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup() -> DistInfo:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1), else run alone.

    gloo on CPU, NCCL when CUDA is available.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
        logger.info("rank %d of %d (%s)", dist.get_rank(), world, backend)
    return DistInfo(dist.get_rank(), dist.get_world_size())


def shard(indices: list[int], info: DistInfo) -> list[int]:
    """This rank's contiguous share of a global batch (whole classes of a P x K batch)."""
    n = len(indices) // info.world_size
    return indices[info.rank * n : (info.rank + 1) * n]


def shard_bounds(n: int, info: DistInfo) -> list[tuple[int, int]]:
    """(start, stop) of every rank's contiguous share of ``n`` items, as even as can be (the
    first ``n % world_size`` ranks take one more)."""
    base, extra = divmod(n, info.world_size)
    bounds, start = [], 0
    for r in range(info.world_size):
        stop = start + base + (r < extra)
        bounds.append((start, stop))
        start = stop
    return bounds


def pair_rows(bounds: list[tuple[int, int]]) -> np.ndarray:
    """Where each row of a gathered pair batch belongs. Rank r embeds its pairs' left sides
    then right sides (pairs ``bounds[r]``); gathered in rank order, indexing with this
    gives every left side, then every right side, in pair order."""
    offsets = np.cumsum([0] + [2 * (b - a) for a, b in bounds[:-1]])
    spans = list(zip(offsets, bounds, strict=True))
    lefts = [o + np.arange(b - a) for o, (a, b) in spans]
    rights = [o + (b - a) + np.arange(b - a) for o, (a, b) in spans]
    return np.concatenate(lefts + rights)


def gather_with_grad(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate ``x`` (n_r, ...) of every rank in rank order; only this rank's part has
    gradients. Ranks may hold different numbers of rows."""
    if not info.enabled:
        return x
    sizes = [torch.zeros(1, dtype=torch.long) for _ in range(info.world_size)]
    dist.all_gather(sizes, torch.tensor([len(x)]))
    longest = int(max(s.item() for s in sizes))
    padded = x.detach().new_zeros((longest, *x.shape[1:]))
    padded[: len(x)] = x.detach()
    parts = [torch.empty_like(padded) for _ in range(info.world_size)]
    dist.all_gather(parts, padded.contiguous())
    parts = [p[: int(s.item())] for p, s in zip(parts, sizes, strict=True)]
    parts[info.rank] = x
    return torch.cat(parts)


def broadcast_floats(values: list[float], info: DistInfo) -> list[float]:
    """Rank 0's values on every rank (schedules and stop decisions must agree)."""
    if not info.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.broadcast(t, src=0)
    return t.tolist()


def average_gradients(params: list[torch.nn.Parameter], info: DistInfo) -> None:
    """All-reduce (mean) gradients of parameters outside DDP (a loss's proxies, a head)."""
    if not info.enabled:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= info.world_size


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    """Leave the process group once every rank is done: a rank that tears down while
    another still works can abort in gloo ("terminate called without an active exception",
    seen once in CI when rank 0 alone ran extra work)."""
    if info.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
