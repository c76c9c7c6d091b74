"""The gallery store interface: where references, labels, settings and changes live.

A :class:`Store` keeps what a gallery must not lose (reference embeddings by class label,
their content hashes, idempotency keys, the gallery's settings with the model identity)
and numbers every change: the *version* grows by one with each enroll that adds
references and each removal, and a change is acknowledged only once it is committed.
The gallery keeps its search index in memory and applies the store's changes in
version order.

Stores (chosen by :func:`siamkit.gallery.Gallery.open`'s URL):

* :class:`MemoryStore`: a gallery without a folder (nothing persists);
* :class:`~siamkit.gallery.sqlite.SQLiteStore`: a folder holding ``gallery.sqlite``, the
  embedded default, written by one process;
* :class:`~siamkit.gallery.postgres.PostgresStore`: a PostgreSQL database
  (``postgresql://...``), shared by several replicas, each following the changes
  (:class:`SharedStore`, :mod:`siamkit.gallery.sync`).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..search import METRICS, GalleryError
from .labels import show

__all__ = ["Change", "Enrolled", "IdempotencyConflict", "MemoryStore", "Rows", "SharedStore",
           "Store", "StoreUnavailable", "Watch", "Written", "check_settings",
           "is_database_url"]


class IdempotencyConflict(GalleryError):
    """An idempotency key already used for an enroll of another class label."""


class StoreUnavailable(GalleryError):
    """The gallery's database cannot be reached now (down, restarting, unreachable): the
    request changed nothing that was acknowledged; retry later. A service answers 503."""


class Enrolled(int):
    """What an enroll did: an ``int``, the number of references added (so ``added =
    gallery.enroll(...)`` reads as before), carrying ``skipped`` (references left out as
    duplicates of stored ones, with ``skip_duplicates``) and ``replayed`` (True when an
    earlier enroll with the same idempotency key had done the work: the numbers are that
    enroll's, and nothing was added now).

        >>> r = gallery.enroll("a", x, skip_duplicates=True)
        >>> (r.added, r.skipped, r.replayed)
        (2, 1, False)
    """

    skipped: int
    replayed: bool

    def __new__(cls, added: int, skipped: int = 0, replayed: bool = False) -> Enrolled:
        self = super().__new__(cls, added)
        self.skipped, self.replayed = int(skipped), bool(replayed)
        return self

    @property
    def added(self) -> int:
        """References added (the int value itself)."""
        return int(self)

    def __repr__(self) -> str:
        return f"Enrolled(added={int(self)}, skipped={self.skipped}, replayed={self.replayed})"

    __str__ = int.__repr__  # printed, it is the number


def replay(key: str, row: Sequence[Any], label: str) -> Enrolled:
    """The stored result ``row`` (label, added, skipped) of the enroll made with ``key``,
    or IdempotencyConflict when that enroll was of another label."""
    if row[0] != label:
        raise IdempotencyConflict(f"idempotency key {show(key)} was used to enroll class "
                                  f"{show(row[0])}, not {show(label)}; use a new key "
                                  f"for a new enroll")
    return Enrolled(row[1], row[2], replayed=True)


@dataclass
class Rows:
    """References as stored: one label and content hash per row of ``vectors`` (N, D)."""

    labels: list[str]
    vectors: np.ndarray
    hashes: list[str]


@dataclass
class Change:
    """One numbered change: references added (``rows``, those still stored) or a class
    removed (``removed``, its label)."""

    version: int
    rows: Rows | None = None
    removed: str | None = None


@dataclass
class Written:
    """A committed write: the store's version after it, and what it did (an enroll:
    ``enrolled`` and ``keep``, the indices of the given references stored; a removal:
    ``removed`` references)."""

    version: int
    enrolled: Enrolled | None = None
    keep: list[int] = field(default_factory=list)
    removed: int = 0


class Store(ABC):
    """Where a gallery persists: references, settings, idempotency keys, a version.

    Attributes:
        where: what to name in messages (a database file, or a URL without its password).
        shared: True when other processes write the same store, so a gallery must follow
            its changes (:class:`SharedStore`).
    """

    where: str
    shared: ClassVar[bool] = False

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """The stored settings (dim, metric, model_id, class_score, backend...)."""

    @abstractmethod
    def load(self, dim: int) -> tuple[int, Rows]:
        """Every stored reference, in the order stored, and the version they make up."""

    @abstractmethod
    def add(self, labels: Sequence[str], vectors: np.ndarray, hashes: Sequence[str],
            sources: Sequence[str] | None, key: str | None,
            skip_duplicates: bool) -> Written:
        """Store checked references (and the idempotency ``key``) in one transaction.

        A ``key`` already used returns that enroll's result (``replayed``) and adds
        nothing, or raises IdempotencyConflict for another label; ``skip_duplicates``
        leaves out references whose content hash is stored, and repeats in the batch.
        """

    @abstractmethod
    def remove(self, label: str) -> Written:
        """Remove every reference of ``label`` in one transaction (KeyError: none)."""

    @abstractmethod
    def keys(self) -> list[tuple]:
        """The idempotency keys: (key, label, added, skipped, created) rows."""

    def close(self) -> None:  # noqa: B027 - a store without connections has nothing to do
        """Release the store's connections."""


class Watch(ABC):
    """A connection that waits for the changes of a :class:`SharedStore`."""

    @abstractmethod
    def wait(self, timeout: float) -> None:
        """Return when a change was announced, or after ``timeout`` seconds; raise
        StoreUnavailable when the connection is lost."""

    @abstractmethod
    def changes(self, since: int, dim: int) -> tuple[int, list[Change]] | None:
        """As :meth:`SharedStore.changes`, on this connection."""

    @abstractmethod
    def interrupt(self) -> None:
        """Make a pending :meth:`wait` return now (from another thread)."""

    @abstractmethod
    def close(self) -> None:
        """Close the connection."""


class SharedStore(Store):
    """A store that several processes write: each follows its changes in version order."""

    shared = True

    @abstractmethod
    def changes(self, since: int, dim: int) -> tuple[int, list[Change]] | None:
        """The version now and the changes after version ``since``, in order (the added
        references that are still stored); None when ``since`` cannot be followed (the
        store is older than it: reload everything)."""

    @abstractmethod
    def watch(self) -> Watch:
        """A new connection announcing changes (StoreUnavailable when unreachable)."""


class MemoryStore(Store):
    """The store of a gallery without a folder: it holds idempotency keys and numbers
    changes; the references are the gallery's own arrays, whose content hashes it asks
    for with ``known`` (called only for ``skip_duplicates``)."""

    where = "memory"

    def __init__(self, known: Callable[[], set[bytes]]) -> None:
        self._known = known
        self._version = 0
        self._keys: dict[str, tuple[str, int, int, float]] = {}
        self._counts: dict[str, int] = {}

    def settings(self) -> dict[str, Any]:
        return {}

    def load(self, dim: int) -> tuple[int, Rows]:
        return self._version, Rows([], np.zeros((0, dim), np.float32), [])

    def add(self, labels: Sequence[str], vectors: np.ndarray, hashes: Sequence[str],
            sources: Sequence[str] | None, key: str | None,
            skip_duplicates: bool) -> Written:
        if key is not None and key in self._keys:
            return Written(self._version, replay(key, self._keys[key], labels[0]))
        keep = dedupe(hashes, self._known() if skip_duplicates else None)
        result = Enrolled(len(keep), len(hashes) - len(keep))
        if key is not None:
            self._keys[key] = (labels[0], result.added, result.skipped, time.time())
        for i in keep:
            self._counts[labels[i]] = self._counts.get(labels[i], 0) + 1
        if keep:
            self._version += 1
        return Written(self._version, result, keep)

    def remove(self, label: str) -> Written:
        n = self._counts.pop(label, 0)
        if not n:
            raise KeyError(label)
        self._version += 1
        return Written(self._version, removed=n)

    def keys(self) -> list[tuple]:
        return [(k, *v) for k, v in self._keys.items()]


def dedupe(hashes: Sequence[str], stored: set[bytes] | set[str] | None) -> list[int]:
    """Indices of ``hashes`` to store: all without ``stored``; else those not in it and
    not repeated earlier in ``hashes`` (``stored`` holds ASCII bytes or str)."""
    if stored is None:
        return list(range(len(hashes)))
    as_bytes = bool(stored) and isinstance(next(iter(stored)), bytes)
    seen = set(stored)
    keep = []
    for i, h in enumerate(hashes):
        item = h.encode() if as_bytes else h
        if item not in seen:
            seen.add(item)
            keep.append(i)
    return keep


def is_database_url(url: Any) -> bool:
    """Whether ``url`` names a PostgreSQL database (``postgresql://`` or ``postgres://``)
    rather than a gallery folder.

    Raises:
        GalleryError: a database URL passed as a ``Path``, which folded its ``//`` (it
            would otherwise be taken for a folder named ``postgresql:``).
    """
    if isinstance(url, str):
        return url.lower().startswith(("postgresql://", "postgres://"))
    if str(url).lower().startswith(("postgresql:/", "postgres:/")):
        scheme = str(url).split(":", 1)[0]
        raise GalleryError(f"a {scheme}:// database URL was given as a file path (Path() "
                           f"folds its '//'): pass the URL as a string")
    return False


def check_settings(info: Any, name: str, where: str, *, model_id: str | None,
                   dim: int | None, metric: str | None, backend: str | None,
                   backend_args: dict[str, Any] | None,
                   class_score: str | None) -> dict[str, Any]:
    """The gallery constructor's arguments from stored settings ``info``, or a
    GalleryError: settings that are not valid (named with ``where``), or a gallery that
    does not fit the caller's ``model_id``, ``dim`` or ``metric`` (named by ``name``).
    ``backend``, ``backend_args`` and ``class_score`` override the stored ones."""
    if not isinstance(info, dict):
        raise GalleryError(f"{where}: not a readable gallery (its settings are not a JSON "
                           f"object)")
    stored_id = info.get("model_id")
    if model_id is not None and stored_id not in (None, model_id):
        raise GalleryError(
            f"{name} was built with another model (model id {str(stored_id)[:12]}, "
            f"this model is {model_id[:12]}): its embeddings are not comparable; enroll "
            f"into a new gallery")
    size, kind = info.get("dim"), info.get("metric")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise GalleryError(f"{where}: the stored embedding size {size!r} is not a positive "
                           f"integer (edited or damaged settings); rebuild the gallery")
    if kind not in METRICS:
        raise GalleryError(f"{where}: the stored metric {kind!r} is not one of "
                           f"{', '.join(METRICS)} (edited or damaged settings); rebuild "
                           f"the gallery")
    if dim is not None and size != dim:
        raise GalleryError(f"{name} holds embeddings of size {size}, this model makes "
                           f"embeddings of size {dim}: they are not comparable; enroll "
                           f"into a new gallery")
    if metric is not None and kind != metric:
        raise GalleryError(f"{name} is a {kind} gallery, this model scores with {metric}: "
                           f"its scores and threshold would not apply; enroll into a new "
                           f"gallery (or restore the gallery's settings)")
    args = backend_args if backend_args is not None else info.get("backend_args") or {}
    if not isinstance(args, dict):
        raise GalleryError(f"{where}: the stored backend options {args!r} are not a JSON "
                           f"object (edited or damaged settings); rebuild the gallery")
    return {"dim": size, "metric": kind, "model_id": stored_id,
            "class_score": class_score or info.get("class_score", "nearest"),
            "backend": backend or info.get("backend", "exact"), "backend_args": args}
