"""Duplicate detection at corpus scale: embed a corpus, find every pair above a threshold
with a range self-join of the gallery's exact index (never an N x N matrix), and group the
pairs into duplicate clusters (connected components of the graph of pairs).

    >>> result = find_duplicates(model, texts, threshold=0.8)
    >>> result.clusters  # cluster id per text; singletons keep their own id
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .data.splits import connected_components
from .gallery import ExactIndex, metric_of

__all__ = ["DuplicateResult", "find_duplicates"]

logger = logging.getLogger(__name__)


@dataclass
class DuplicateResult:
    """Pairs above the threshold (``left < right``, scores in the model's convention) and
    a cluster id per item (``clusters[i] == clusters[j]`` when linked by a chain of pairs)."""

    left: np.ndarray
    right: np.ndarray
    scores: np.ndarray
    clusters: np.ndarray
    threshold: float
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def cluster_sizes(self) -> np.ndarray:
        """Sizes of the clusters with at least two items, largest first."""
        sizes = np.bincount(self.clusters)
        return np.sort(sizes[sizes > 1])[::-1]


def find_duplicates(model: Any, texts: list[str], threshold: float, batch_size: int = 128,
                    block: int = 2048, max_pairs: int = 20_000_000,
                    progress: bool = False) -> DuplicateResult:
    """All pairs of ``texts`` the model scores as duplicates at ``threshold`` (model
    convention: a similarity for cosine models, a distance for Euclidean ones).

    Raises ``ValueError`` when more than ``max_pairs`` pairs pass (a threshold that low
    makes the answer quadratic in the corpus: raise the threshold).
    """
    from .embedding import embed_texts

    if not texts:
        raise ValueError("no texts to deduplicate")
    metric = metric_of(model)  # refuses models with a learned head
    bar: Any = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(texts), desc="embedding", unit="text", dynamic_ncols=True)
    t0 = time.perf_counter()
    emb = embed_texts(model, texts, batch_size,
                      on_batch=(lambda k: bar.update(k)) if bar is not None else None)
    t1 = time.perf_counter()
    if bar is not None:
        bar.close()
        bar = tqdm(total=len(texts), desc="searching", unit="text", dynamic_ncols=True)
    index = ExactIndex(metric)
    x = emb.numpy().astype(np.float32)
    if metric == "cosine":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    index.build(x)
    higher = metric in ("cosine", "dot")
    left, right, sims = index.pairs_above(threshold if higher else -threshold, block,
                                          bar.update if bar is not None else None)
    if bar is not None:
        bar.close()
    if len(left) > max_pairs:
        raise ValueError(f"{len(left)} pairs pass threshold {threshold:g} (limit {max_pairs}): "
                         f"raise the threshold")
    t2 = time.perf_counter()
    clusters = connected_components(len(texts), left, right)
    t3 = time.perf_counter()
    order = np.lexsort((right, left))
    scores = sims if higher else -sims
    logger.info("%d texts: %d pairs at threshold %g, %d duplicate clusters", len(texts),
                len(left), threshold, int((np.bincount(clusters) > 1).sum()))
    return DuplicateResult(left[order], right[order], scores[order].astype(np.float64),
                           clusters, threshold,
                           {"embed_s": t1 - t0, "search_s": t2 - t1, "cluster_s": t3 - t2})
