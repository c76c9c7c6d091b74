"""The references a gallery searches, in memory: vectors, label codes, content hashes,
and the search index built over them when first needed after a change."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..search import Search, create_search
from .labels import content_hash

__all__ = ["References"]


class References:
    """Reference vectors by class label, and their :class:`~siamkit.search.Search` index.

    Not thread-safe: the gallery calls it under its lock. Changes replace the arrays
    (never write into them), so a search holding the old ones is unharmed.

    Args:
        dim, metric, class_score, backend, backend_args: as for the gallery.
    """

    def __init__(self, dim: int, metric: str, class_score: str, backend: str,
                 backend_args: dict[str, Any]) -> None:
        self.dim, self.metric, self.class_score = dim, metric, class_score
        self.backend, self.backend_args = backend, backend_args
        self.clear()

    def clear(self) -> None:
        """Forget every reference."""
        self.vectors = np.zeros((0, self.dim), np.float32)  # (N, dim)
        self.codes = np.zeros(0, np.int64)  # label code of every reference
        self.hashes = np.zeros(0, "S64")  # content_hash of every reference (hex, ASCII)
        self._labels: list[str] = []  # code -> label
        self._code_of: dict[str, int] = {}
        self._hash_set: set[bytes] | None = None  # built when first needed
        self._index: Any = None  # built lazily; None = stale

    def __len__(self) -> int:
        return len(self.codes)

    def labels(self) -> list[str]:
        """Class labels with references, sorted."""
        return sorted(self._labels[c] for c in np.unique(self.codes))

    def counts(self) -> dict[str, int]:
        """References per class label."""
        codes, n = np.unique(self.codes, return_counts=True)
        return {self._labels[c]: int(k) for c, k in zip(codes, n, strict=True)}

    def stored_as(self, label: str) -> bool:
        """Whether ``label`` was ever held with exactly this text (no normalisation)."""
        return label in self._code_of

    def __contains__(self, label: str) -> bool:
        """Whether the class ``label`` (compared in NFC form) has references."""
        code = self._code_of.get(unicodedata.normalize("NFC", label))
        return code is not None and bool((self.codes == code).any())

    def known_hashes(self) -> set[bytes]:
        """Content hashes of the references (ASCII bytes)."""
        if self._hash_set is None:
            self._hash_set = set(self.hashes.tolist())
        return self._hash_set

    def rows(self) -> list[tuple]:
        """(label, source, embedding bytes, hash) of every reference, for a copy."""
        return [(self._labels[c], None, v.tobytes(), h.decode())
                for c, v, h in zip(self.codes, self.vectors, self.hashes, strict=True)]

    def append(self, labels: Sequence[str], vectors: np.ndarray,
               hashes: Sequence[str | None]) -> None:
        """Add references (a hash of None is computed)."""
        codes = []
        for lab in labels:
            if lab not in self._code_of:
                self._code_of[lab] = len(self._labels)
                self._labels.append(lab)
            codes.append(self._code_of[lab])
        hashed = np.array([h if h is not None else content_hash(lab, v)
                           for h, lab, v in zip(hashes, labels, vectors, strict=True)], "S64")
        self.vectors = np.concatenate([self.vectors, vectors])
        self.codes = np.concatenate([self.codes, np.array(codes, dtype=np.int64)])
        self.hashes = np.concatenate([self.hashes, hashed])
        if self._hash_set is not None:
            self._hash_set.update(hashed.tolist())
        self._index = None

    def drop(self, label: str) -> int:
        """Remove the class ``label`` (its exact text); how many references it had."""
        code = self._code_of.get(label)
        if code is None:
            return 0
        keep = self.codes != code
        removed = int((~keep).sum())
        if removed:
            self.vectors, self.codes = self.vectors[keep], self.codes[keep]
            self.hashes = self.hashes[keep]
            self._hash_set = None  # rebuilt when next needed
            self._index = None
        return removed

    def search_state(self) -> tuple[Search, np.ndarray, list[str], int]:
        """(index, label code of each index row, labels, max references per class), the
        index built first if a change made it stale."""
        if self._index is None:
            vectors, codes = self.vectors, self.codes
            if self.class_score == "prototype" and len(codes):
                present = np.unique(codes)
                sums = np.zeros((len(self._labels), self.dim), np.float64)
                np.add.at(sums, codes, vectors)
                means = (sums[present] / np.bincount(codes)[present, None]).astype(np.float32)
                if self.metric == "cosine":
                    means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
                vectors, codes = means, present
            index = create_search(self.backend, self.metric, **self.backend_args)
            index.build(vectors)
            per_class = int(np.bincount(codes).max()) if len(codes) else 0
            self._index = (index, codes, per_class)
        index, codes, per_class = self._index
        return index, codes, list(self._labels), per_class
