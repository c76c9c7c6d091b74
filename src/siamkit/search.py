"""Search backends of the gallery: one small interface, an exact index and FAISS behind it.

A :class:`Search` indexes reference vectors (``build``) and answers the ``k`` nearest
references of each query (``search``) as ``(scores, rows)``, scores oriented so that
higher is closer whatever the metric (a Euclidean distance ``d`` is reported as ``-d``).
:func:`create_search` makes one from a backend name, used at the edges (the gallery, its
folder's settings, the CLI):

    >>> index = create_search("exact", "euclidean")
    >>> index.build(np.array([[0.0, 0.0], [3.0, 4.0]]))
    >>> index.search(np.array([[0.0, 0.0]]), k=2)  # (array([[-0., -5.]]), array([[0, 1]]))

``exact`` (the default) is chunked matrix products, memory bounded by ``chunk`` x
references; ``faiss`` (optional extra ``faiss-cpu``) offers ``flat``, ``ivf`` and ``hnsw``.
Bad options raise :class:`GalleryError` naming the option, before anything is built.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch

from .topk import blocked_topk, inner_topk, screen_precision

__all__ = ["GalleryError", "METRICS", "Search", "ExactIndex", "FaissIndex", "SEARCH_BACKENDS",
           "create_search", "higher_is_closer"]

METRICS = ("cosine", "dot", "euclidean", "sqeuclidean")


class GalleryError(RuntimeError):
    """A gallery or its search backend cannot do what was asked (wrong model, bad label,
    bad option, damaged folder). Defined here, the gallery's lowest layer; re-exported by
    :mod:`siamkit.gallery`."""


def higher_is_closer(metric: str) -> bool:
    """Whether a larger score of ``metric`` means closer (similarities) or not (distances)."""
    return metric in ("cosine", "dot")


def _check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise GalleryError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    return metric


def _check_int(owner: str, name: str, value: Any, minimum: int) -> int:
    """``value`` if it is an integer >= ``minimum``; else a GalleryError naming the option."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise GalleryError(f"{owner} option {name}={value!r}: must be an integer >= {minimum}")
    return int(value)


class Search(ABC):
    """A nearest-neighbour index over reference vectors; scores are "higher is closer".

    Attributes:
        metric: one of :data:`METRICS`.
        concurrent_search: True when ``search`` may run in several threads at once and
            while nothing rebuilds the index (the caller serialises searches otherwise).
    """

    metric: str
    concurrent_search: ClassVar[bool] = False

    @abstractmethod
    def build(self, vectors: np.ndarray) -> None:
        """Index ``vectors`` (N, D), replacing anything indexed before."""

    @abstractmethod
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``min(k, N)`` nearest references of each query, nearest first.

        Returns:
            ``(scores, rows)``, both (Q, min(k, N)): scores with higher closer (a distance
            ``d`` as ``-d``), rows the indices of the built vectors (-1: no neighbour).
        """


KERNELS = ("auto", "torch", "faiss")


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        return None
    return faiss


class ExactIndex(Search):
    """Exact top-k, by one of two kernels with the same results.

    ``faiss``: FAISS's flat index (``IndexFlatIP`` / ``IndexFlatL2``), which dispatches its
    kernels per CPU; ``torch``: blocked matrix products (:func:`blocked_topk`), memory at
    about ``chunk`` x ``query_chunk`` scores whatever the number of references. Inner
    products are screened in ``screen`` precision (:func:`screen_precision`: ``auto`` takes
    bfloat16 products, rescored in float32 near each threshold, where the CPU has AMX).
    Euclidean search is an inner-product search too: the nearest reference maximises
    ``q.r - |r|^2 / 2`` = ``[q, 1] . [r, -|r|^2 / 2]``, so it is screened the same way.
    ``auto`` (default) takes the torch kernel where it screens in bfloat16 and FAISS
    otherwise when it is installed: side by side on the CPUs of this project each was the
    faster there (``benchmarks/speed.py --only search``). The references are held once
    (the torch kernel reads FAISS's storage; a bf16 screen adds a bfloat16 copy, half their
    size, and Euclidean search one column each). Euclidean scores of the returned
    neighbours are recomputed from differences, so an item's distance to itself is exactly
    0.
    """

    concurrent_search = True  # immutable once built: searches need no lock

    def __init__(self, metric: str, chunk: int = 2048, query_chunk: int = 1024,
                 kernel: str = "auto", screen: str = "auto") -> None:
        self.metric = _check_metric(metric)
        self.chunk = _check_int("exact", "chunk", chunk, 1)
        self.query_chunk = _check_int("exact", "query_chunk", query_chunk, 1)
        if kernel not in KERNELS:
            raise GalleryError(f"exact option kernel={kernel!r}: must be one of "
                               f"{', '.join(KERNELS)}")
        self.kernel = kernel  # auto is decided at build: importing FAISS takes a moment
        if screen not in ("auto", "fp32", "bf16"):
            raise GalleryError(f"exact option screen={screen!r}: must be auto, fp32 or bf16")
        self.screen = screen
        self._faiss_index: Any = None
        self._refs = torch.zeros(0, 0)
        self._screened = self._refs
        self._refs_bf16: torch.Tensor | None = None
        self._refs_norm = 0.0
        self._sq = torch.zeros(0)

    @property
    def kernel_in_use(self) -> str:
        """The kernel the built index searches with: ``faiss``, ``torch`` or ``torch-bf16``
        (torch with a bfloat16 screen)."""
        if self._faiss_index is not None:
            return "faiss"
        return "torch" if self._refs_bf16 is None else "torch-bf16"

    def _bf16_screen(self) -> bool:
        return screen_precision(self.screen) == "bf16"

    @property
    def _euclid(self) -> bool:
        return not higher_is_closer(self.metric)

    def build(self, vectors: np.ndarray) -> None:
        """Index ``vectors`` (N, D)."""
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        bf16 = self.kernel != "faiss" and self._bf16_screen()
        faiss = _faiss() if self.kernel == "faiss" or (self.kernel == "auto" and not bf16) \
            else None
        if self.kernel == "faiss" and faiss is None:
            raise GalleryError("exact option kernel='faiss' needs faiss-cpu: pip install "
                               "'siamkit[faiss]'")
        self._faiss_index = None
        if faiss is not None and x.ndim == 2 and x.shape[1] > 0:
            index = (faiss.IndexFlatIP if higher_is_closer(self.metric)
                     else faiss.IndexFlatL2)(x.shape[1])
            index.add(x)
            x = faiss.rev_swig_ptr(index.get_xb(), x.size).reshape(x.shape)  # no copy
            self._faiss_index = index
        self._refs = torch.from_numpy(x)
        self._sq = (self._refs * self._refs).sum(1)
        self._screened = self._refs  # what the bf16 screen scores queries against
        self._refs_bf16 = None
        screened_sq = self._sq
        if self._faiss_index is None and bf16 and x.ndim == 2:
            if self._euclid:  # [r, -|r|^2 / 2]: Euclidean nearest = largest inner product
                self._screened = torch.cat([self._refs, -0.5 * self._sq[:, None]], 1)
                self._refs = self._screened[:, :-1]  # held once: a view of the same storage
                screened_sq = self._sq + 0.25 * self._sq ** 2  # |[r, -|r|^2 / 2]|^2
            self._refs_bf16 = self._screened.to(torch.bfloat16)
        self._refs_norm = float(screened_sq.max().sqrt()) if len(screened_sq) else 0.0

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities (Q, k), indices (Q, k)); higher similarity is closer."""
        q_all = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
        n = len(self._refs)
        k = min(k, n)
        if self._faiss_index is not None and n and k:
            scores, rows = self._faiss_index.search(q_all.numpy(), k)
            return self._exact_scores(q_all, torch.from_numpy(scores), torch.from_numpy(rows))
        sims_out, idx_out = [], []
        euclid = self._euclid
        neg_sq = -self._sq
        refs = self._refs

        def scores(q: torch.Tensor, start: int, stop: int) -> torch.Tensor:
            r = refs[start:stop]
            if euclid:  # 2 q.r - ||r||^2, fused: -||q - r||^2 up to ||q||^2
                return torch.addmm(neg_sq[start:stop], q, r.T, alpha=2.0)
            return q @ r.T

        with torch.no_grad():
            for qs in range(0, len(q_all), self.query_chunk):
                q = q_all[qs : qs + self.query_chunk]
                # blocks of about chunk x query_chunk scores: fewer queries take more
                # references at a time (a single query: 2M), so per-block overhead stays small
                block = self.chunk * max(1, self.query_chunk // len(q))
                if self._refs_bf16 is not None:
                    q_in = torch.cat([q, q.new_ones(len(q), 1)], 1) if euclid else q
                    best_s, best_i = inner_topk(q_in, self._screened, k, block=block,
                                                screen="bf16", refs_bf16=self._refs_bf16,
                                                refs_norm=self._refs_norm)
                else:
                    best_s, best_i = blocked_topk(q, n, k, scores, block=block)
                best_s, best_i = self._exact_scores(q, best_s, best_i)
                sims_out.append(best_s)
                idx_out.append(best_i)
        if not sims_out:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        return np.concatenate(sims_out), np.concatenate(idx_out)

    def _exact_scores(self, q: torch.Tensor, best_s: torch.Tensor, best_i: torch.Tensor
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Scores "higher is closer" of the neighbours kept; Euclidean ones recomputed from
        differences (exact, an item's distance to itself 0) and reordered by them."""
        if self.metric in ("euclidean", "sqeuclidean"):
            with torch.no_grad():
                d2 = ((q[:, None, :] - self._refs[best_i]) ** 2).sum(-1)
            best_s = -(d2 if self.metric == "sqeuclidean" else d2.sqrt())
            order = best_s.argsort(dim=1, descending=True, stable=True)
            best_s, best_i = best_s.gather(1, order), best_i.gather(1, order)
        return best_s.numpy(), best_i.numpy().astype(np.int64)

    def pairs_above(self, min_similarity: float, block: int = 2048,
                    on_block: Callable[[int], None] | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every pair ``i < j`` of the references with similarity >= ``min_similarity``
        (a range self-join): (i, j, similarity). Only ``block`` x ``block`` scores exist at
        a time; the upper triangle of blocks is visited once. ``on_block(rows)`` reports
        progress after each block row of ``rows`` references."""
        refs, n = self._refs, len(self._refs)
        euclid = self._euclid
        out_i, out_j, out_s = [], [], []
        with torch.no_grad():
            for qs in range(0, n, block):
                q = refs[qs : qs + block]
                for rs in range(qs, n, block):
                    r = refs[rs : rs + block]
                    if euclid:  # -||q - r||^2 from one fused product, clamped at 0
                        s = torch.addmm(self._sq[rs : rs + block], q, r.T, alpha=-2.0)
                        s = -(s + self._sq[qs : qs + block, None]).clamp_min(0)
                        if self.metric == "euclidean":
                            s = -(-s).sqrt()
                    else:
                        s = q @ r.T
                    if rs == qs:  # the diagonal block: only j > i
                        s = s.masked_fill(torch.ones_like(s, dtype=torch.bool).tril(),
                                          -math.inf)
                    hit = (s >= min_similarity).nonzero()
                    if len(hit):
                        out_i.append(hit[:, 0].numpy() + qs)
                        out_j.append(hit[:, 1].numpy() + rs)
                        out_s.append(s[hit[:, 0], hit[:, 1]].numpy())
                if on_block is not None:
                    on_block(len(q))
        if not out_i:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
        return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_s)


class FaissIndex(Search):
    """FAISS search (``pip install faiss-cpu``): ``flat`` (exact), ``ivf`` or ``hnsw``.

    FAISS indexes are not safe to search while another thread rebuilds them, so
    ``concurrent_search`` is False: the gallery serialises their searches.

    Args:
        metric: the gallery metric (cosine vectors are stored normalised, so inner product).
        kind: ``flat``, ``ivf`` or ``hnsw``.
        nlist: IVF cells (capped at the number of references when building), >= 1.
        nprobe: IVF cells visited per query, >= 1.
        m: HNSW neighbours per node, >= 2.
        ef_search, ef_construction: HNSW search and build breadth, >= 1.
    """

    def __init__(self, metric: str, kind: str = "flat", nlist: int = 1024, nprobe: int = 16,
                 m: int = 32, ef_search: int = 64, ef_construction: int = 80) -> None:
        # options first: a bad one is named whether or not faiss is installed (FAISS itself
        # answers nlist=0 or m=0 with a bare RuntimeError, or a crash, at build time)
        if kind not in ("flat", "ivf", "hnsw"):
            raise GalleryError(f"unknown faiss index {kind!r}; known: flat, ivf, hnsw")
        self.metric = _check_metric(metric)
        self.kind = kind
        self.nlist = _check_int("faiss", "nlist", nlist, 1)
        self.nprobe = _check_int("faiss", "nprobe", nprobe, 1)
        self.m = _check_int("faiss", "m", m, 2)
        self.ef_search = _check_int("faiss", "ef_search", ef_search, 1)
        self.ef_construction = _check_int("faiss", "ef_construction", ef_construction, 1)
        try:
            import faiss
        except ImportError:  # pragma: no cover - depends on the optional extra
            raise GalleryError("the faiss backend needs faiss-cpu: pip install "
                               "'siamkit[faiss]'") from None
        self.faiss = faiss
        self._index: Any = None

    def build(self, vectors: np.ndarray) -> None:
        """Index ``vectors`` (N, D) (an IVF index is trained on them first)."""
        faiss = self.faiss
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        d = x.shape[1] if x.ndim == 2 and x.shape[1] else 1
        ip = higher_is_closer(self.metric)
        mt = faiss.METRIC_INNER_PRODUCT if ip else faiss.METRIC_L2
        if self.kind == "flat":
            index = faiss.IndexFlatIP(d) if ip else faiss.IndexFlatL2(d)
        elif self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, self.m, mt)
            index.hnsw.efConstruction = self.ef_construction
            index.hnsw.efSearch = self.ef_search
        else:
            nlist = max(1, min(self.nlist, len(x) // 39 if len(x) >= 39 else 1))
            quantizer = faiss.IndexFlatIP(d) if ip else faiss.IndexFlatL2(d)
            index = faiss.IndexIVFFlat(quantizer, d, nlist, mt)
            if len(x):
                index.train(x)
            index.nprobe = min(self.nprobe, nlist)
            self._quantizer = quantizer  # keep it alive beside the index
        if len(x):
            index.add(x)
        self._index = index

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores (Q, k), rows (Q, k)); higher is closer, row -1 where FAISS found none."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, self._index.ntotal)
        scores, idx = self._index.search(q, k)
        if self.metric == "euclidean":
            scores = np.sqrt(np.maximum(scores, 0))
        if not higher_is_closer(self.metric):
            scores = -scores
        return scores, idx


SEARCH_BACKENDS: dict[str, type[Search]] = {"exact": ExactIndex, "faiss": FaissIndex}


def create_search(backend: str, metric: str, **args: Any) -> Search:
    """A search index by backend name (:data:`SEARCH_BACKENDS`) with its options.

    Raises:
        GalleryError: an unknown backend or metric, an unknown option, or a bad value (the
            option is named).
    """
    if backend not in SEARCH_BACKENDS:
        raise GalleryError(f"unknown gallery backend {backend!r}; known: "
                           f"{', '.join(SEARCH_BACKENDS)}")
    try:
        return SEARCH_BACKENDS[backend](metric, **args)
    except TypeError as exc:  # an unknown keyword
        raise GalleryError(f"bad options for the {backend} backend: {exc}") from None
