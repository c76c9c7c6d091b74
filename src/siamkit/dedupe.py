"""Duplicate detection at corpus scale: embed a corpus, find every pair above a threshold
with a range self-join of the gallery's exact index (never an N x N matrix), and group the
pairs into duplicate clusters (connected components of the graph of pairs).

    >>> result = find_duplicates(model, texts, threshold=0.8)
    >>> result.clusters  # cluster id per text; singletons keep their own id

:func:`dedupe_file` does it for a corpus file and writes the pairs as CSV.
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write
from .data.download import DatasetError
from .data.splits import connected_components
from .data.textpairs import read_texts
from .gallery import ExactIndex, metric_of
from .progress import Progress, start

__all__ = ["DuplicateResult", "find_duplicates", "write_duplicates", "dedupe_file"]

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
                    progress: Progress | None = None) -> DuplicateResult:
    """All pairs of ``texts`` the model scores as duplicates at ``threshold`` (model
    convention: a similarity for cosine models, a distance for Euclidean ones).
    ``progress`` (:mod:`siamkit.progress`) counts the texts embedded, then searched.

    Raises:
        DatasetError: no texts, a model that is not a text model, or more than
            ``max_pairs`` pairs pass (a threshold that low makes the answer quadratic in
            the corpus: raise the threshold).
    """
    from .embedding import embed_texts

    if not texts:
        raise DatasetError("no texts to deduplicate")
    spec = getattr(model, "input_spec", None)
    if spec is not None and spec.kind != "text":
        raise DatasetError("dedupe embeds texts: this model is not a text model")
    metric = metric_of(model)  # refuses models with a learned head
    t0 = time.perf_counter()
    emb = embed_texts(model, texts, batch_size,
                      on_batch=start(progress, "embedding", len(texts)))
    t1 = time.perf_counter()
    index = ExactIndex(metric)
    x = emb.numpy().astype(np.float32)
    if metric == "cosine":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    index.build(x)
    higher = metric in ("cosine", "dot")
    left, right, sims = index.pairs_above(threshold if higher else -threshold, block,
                                          start(progress, "searching", len(texts)))
    if len(left) > max_pairs:
        raise DatasetError(f"{len(left)} pairs pass threshold {threshold:g} (limit {max_pairs}): "
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


def write_duplicates(result: DuplicateResult, texts: list[str], rows: list[int],
                     out: str | Path) -> Path:
    """Write the duplicate pairs as CSV (atomically; folders created): ``cluster``,
    ``row_a``, ``row_b`` (the texts' row numbers, ``rows``), ``score``, ``a``, ``b``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["cluster", "row_a", "row_b", "score", "a", "b"])
            for i, j, s in zip(result.left.tolist(), result.right.tolist(),
                               result.scores.tolist(), strict=True):
                w.writerow([int(result.clusters[i]), rows[i], rows[j], f"{s:.6g}", texts[i],
                            texts[j]])

    return atomic_write(out, write)


def dedupe_file(model: Any, path: str | Path, out: str | Path, threshold: float,
                column: str = "text", fmt: str | None = None, skip_empty: bool = False,
                max_pairs: int = 20_000_000, progress: Progress | None = None
                ) -> dict[str, Any]:
    """Find the duplicates in one text column of a CSV / TSV / JSONL corpus
    (:func:`~siamkit.data.textpairs.read_texts`, :func:`find_duplicates`) and write them
    to ``out`` (:func:`write_duplicates`).

    Returns:
        A summary: ``texts``, ``pairs``, ``clusters`` (of two texts or more),
        ``texts_in_clusters``, ``largest_cluster``, ``threshold``, ``out`` and ``seconds``
        (embedding, search, clustering).
    """
    texts, rows = read_texts(path, column, fmt, skip_empty)
    res = find_duplicates(model, texts, float(threshold), max_pairs=max_pairs,
                          progress=progress)
    out = write_duplicates(res, texts, rows, out)
    sizes = res.cluster_sizes
    return {"texts": len(texts), "pairs": len(res.left), "clusters": len(sizes),
            "texts_in_clusters": int(sizes.sum()),
            "largest_cluster": int(sizes[0]) if len(sizes) else 0,
            "threshold": float(threshold), "out": str(out),
            "seconds": {k: round(v, 3) for k, v in res.timings.items()}}
