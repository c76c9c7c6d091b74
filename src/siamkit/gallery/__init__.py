"""A persistent gallery of reference embeddings: enroll a class, identify queries, open-set.

Adding a class is adding its reference embeddings, never retraining. The gallery keeps
its search index in memory and its references in a store (:mod:`siamkit.gallery.store`),
chosen by where it is opened:

* a folder (``Gallery.open("galleries/faces")``): a SQLite database ``gallery.sqlite`` in
  it, readable by anything, written by one process (:mod:`siamkit.gallery.sqlite`, the
  embedded default; crash-safe creation, enrolls and saves);
* a PostgreSQL URL (``Gallery.open("postgresql://user@db-host/faces")``): a database that
  several replicas share (:mod:`siamkit.gallery.postgres`, ``pip install
  'siamkit[postgres]'``). Each replica keeps its own index and follows the others' changes
  (LISTEN / NOTIFY, with polling of the version as the fallback,
  :mod:`siamkit.gallery.sync`): an enroll acknowledged by one replica is searched by every
  other within :data:`~siamkit.gallery.sync.POLL_SECONDS` (typically milliseconds). While
  the database is unreachable, changes and searches raise :class:`StoreUnavailable`.

Every change (an enroll that adds references, a removal) is one transaction, committed
before it returns, and numbered: :attr:`Gallery.version` grows with each, and
:meth:`Gallery.wait_for` waits until a replica has applied a given version
(read-your-writes). The store records the model's identity (a hash of its weights and
config), metric and embedding size; opening it with another model, or expecting another
metric or size, is refused.

The label rule (:func:`check_label`, for enrolling and removing alike): a string, valid
UTF-8, stored in NFC, not empty, at most 256 characters, not ``unknown``, without control
characters or invisible / direction-changing ones, so no label can pose as another.

Duplicates and retries: every reference stores :func:`content_hash` (SHA-256 of the label
and the stored float32 embedding bytes); ``skip_duplicates=True`` leaves out references
already stored. An enroll with an ``idempotency_key`` records the key in the same
transaction as its references: a retry adds nothing and returns the first result.

Search goes through :class:`~siamkit.search.Search` (:func:`create_search`): ``exact``
(default; chunked matrix products, memory bounded by ``chunk`` x references) or ``faiss``
(optional extra ``faiss-cpu``: ``flat``, ``ivf`` and ``hnsw`` indexes). Scores are reported
in the model's own convention (a distance for Euclidean models, a similarity for cosine
ones); ``higher_is_closer`` says which.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..search import (
    METRICS,
    ExactIndex,
    FaissIndex,
    GalleryError,
    Search,
    create_search,
    higher_is_closer,
)
from .labels import MAX_LABEL_CHARS, UNKNOWN, check_key, check_label, content_hash, show
from .references import References
from .sqlite import DB, SCHEMA_VERSION, SQLiteStore, write_database
from .store import (
    Change,
    Enrolled,
    IdempotencyConflict,
    MemoryStore,
    Rows,
    SharedStore,
    Store,
    StoreUnavailable,
    Written,
    check_settings,
    is_database_url,
)
from .sync import Follower

__all__ = ["Gallery", "GalleryError", "IdempotencyConflict", "StoreUnavailable", "Enrolled",
           "Match", "Search", "Store", "ExactIndex", "FaissIndex", "METRICS", "MAX_LABEL_CHARS",
           "DB", "SCHEMA_VERSION", "check_label", "content_hash", "create_search", "metric_of"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Match:
    """One ranked answer: a class label and its score (model convention)."""

    label: str
    score: float


def metric_of(model: Any) -> str:
    """The gallery metric matching a Siamese network's distance."""
    if getattr(model, "head", None) is not None:
        raise GalleryError("a model with a learned similarity head has no index metric; "
                           "use a model trained with a distance (euclidean or cosine)")
    name = getattr(model.distance, "name", "")
    if name == "euclidean":
        return "sqeuclidean" if getattr(model.distance, "squared", False) else "euclidean"
    if name in ("cosine", "dot"):
        return name
    raise GalleryError(f"no gallery metric for distance {name!r}")


def _postgres() -> Any:
    """The PostgreSQL store module (imported only for a database URL)."""
    from . import postgres

    return postgres


class Gallery:
    """Reference embeddings by class label, searchable, optionally kept in a store.

    Args:
        dim: embedding size.
        metric: ``cosine``, ``dot``, ``euclidean`` or ``sqeuclidean`` (see :func:`metric_of`).
        model_id: identity of the model whose embeddings these are (see ``model_identity``).
        class_score: ``nearest`` (a class scores as its closest reference) or ``prototype``
            (as the mean of its references).
        backend, backend_args: the search index (``exact`` or ``faiss`` with its options).
        embedder: optional function items -> (N, dim) embeddings; without it ``enroll``
            and ``identify`` take embeddings.
        path: kept for older callers; use :meth:`create` / :meth:`open` for a folder or a
            database URL.

    Example:
        >>> g = Gallery.open_or_create("postgresql://siamkit@db/faces", 128,
        ...                            metric="cosine", model_id=model_id)
        >>> g.enroll("ada", embeddings)          # committed, then searched everywhere
        >>> g.identify(queries, k=3)[0][0].label
        'ada'
    """

    def __init__(
        self, dim: int, metric: str = "cosine", model_id: str | None = None,
        class_score: str = "nearest", backend: str = "exact",
        backend_args: dict[str, Any] | None = None,
        embedder: Callable[[Any], Any] | None = None, path: str | Path | None = None,
    ) -> None:
        if metric not in METRICS:
            raise GalleryError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
        if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim < 1:
            raise GalleryError(f"the embedding size must be a positive integer, not {dim!r}")
        if class_score not in ("nearest", "prototype"):
            raise GalleryError(f"class_score must be 'nearest' or 'prototype', not "
                               f"{class_score!r}")
        self.dim, self.metric, self.model_id = int(dim), metric, model_id
        self.class_score, self.backend = class_score, backend
        self.backend_args = dict(backend_args or {})
        self.embedder = embedder
        self.path = Path(path) if path is not None else None
        self.url: str | None = str(self.path) if self.path is not None else None
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._write_lock = threading.Lock()  # one write of this process at a time
        self._refs = References(self.dim, metric, class_score, backend, self.backend_args)
        self._version = 0
        self._follower: Follower | None = None
        # a gallery given a folder here is attached by create / open; until then it is
        # closed (a write would change memory only, and be lost)
        self._store: Store | None = (MemoryStore(self._known_hashes) if path is None
                                     else None)
        create_search(backend, metric, **self.backend_args)  # fail early on bad options

    @property
    def higher_is_closer(self) -> bool:
        """Whether a larger score is closer (similarities) or not (distances)."""
        return higher_is_closer(self.metric)

    @property
    def version(self) -> int:
        """The store's version that this gallery has applied: it grows by one with each
        committed change (an enroll that added references, a removal)."""
        return self._version

    # ---- persistence

    @classmethod
    def exists(cls, url: str | Path) -> bool:
        """Whether ``url`` holds a gallery: a folder with a database that is not empty, or
        a PostgreSQL database (``postgresql://...``) with the gallery's tables.

        An empty database file (0 bytes, or SQLite without tables), which older versions
        left when killed while creating a gallery, counts as none: :meth:`create`
        replaces it. A damaged one counts as a gallery, for :meth:`open` to refuse.

        Raises:
            StoreUnavailable: a database URL that cannot be reached.
        """
        if is_database_url(url):
            return _postgres().PostgresStore.exists(url)
        return SQLiteStore.exists(url)

    @classmethod
    def create(cls, url: str | Path, dim: int, *, follow: bool = True,
               **kwargs: Any) -> Gallery:
        """A new, empty gallery kept in ``url`` (a folder, created, or a PostgreSQL URL);
        it must not hold a gallery. ``kwargs`` are those of the constructor, ``follow``
        that of :meth:`open`.

        Crash-safe: a folder's database is built aside and renamed into place (an empty
        database left by an older version is replaced with a warning); a PostgreSQL
        gallery's tables are created in one transaction. Either way a kill at any moment
        leaves no gallery or a complete, empty one.
        """
        g = cls(dim, **kwargs)  # options are checked before anything is touched
        info = g._info()
        if is_database_url(url):
            store: Store = _postgres().PostgresStore.create(url, info)
        else:
            g.path = Path(url)
            store = SQLiteStore.create(g.path, info)
        g._attach(store, url, follow=follow)
        return g

    @classmethod
    def open(cls, url: str | Path, model_id: str | None = None,
             embedder: Callable[[Any], Any] | None = None, *, metric: str | None = None,
             dim: int | None = None, backend: str | None = None,
             backend_args: dict[str, Any] | None = None,
             class_score: str | None = None, follow: bool = True) -> Gallery:
        """Open the gallery kept in ``url``, refusing one that does not fit the caller.

        Args:
            url: the gallery's folder, or a PostgreSQL URL
                (``postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE``; a schema other than
                the first of the search path: ``?options=-csearch_path%3DNAME``).
            model_id: refuse the gallery if it was built with another model.
            embedder: as for the constructor.
            metric, dim: refuse the gallery unless its metric and embedding size are these
                (a service passes its model's: a gallery whose settings were edited, or one
                built without a model id for a model of another size, is refused instead
                of being searched with the wrong geometry).
            backend, backend_args, class_score: search differently this time (the stored
                settings are kept).
            follow: for a shared (PostgreSQL) store, apply the changes other replicas make
                as they are committed (a background thread); False: only on
                :meth:`refresh`.

        Raises:
            GalleryError: no gallery, a damaged one, stored settings that are not valid
                (an unknown metric, a bad size), stored references that are not finite, or
                a gallery that does not fit ``model_id``, ``metric`` or ``dim``.
            StoreUnavailable: a database URL that cannot be reached (a GalleryError).
        """
        if is_database_url(url):
            store: Store = _postgres().PostgresStore.open(url)
            name = where = store.where
        else:
            store = SQLiteStore.open(Path(url))
            name, where = str(url), store.where
        try:
            settings = check_settings(store.settings(), name, where, model_id=model_id,
                                      dim=dim, metric=metric, backend=backend,
                                      backend_args=backend_args, class_score=class_score)
            try:
                g = cls(embedder=embedder, **settings)
            except GalleryError as exc:
                raise GalleryError(f"opening {where}: {exc}") from None
            if not is_database_url(url):
                g.path = Path(url)
            g._attach(store, url, follow=follow)
        except BaseException:
            store.close()
            raise
        return g

    @classmethod
    def open_or_create(cls, url: str | Path, dim: int, metric: str,
                       model_id: str | None = None,
                       embedder: Callable[[Any], Any] | None = None, *, follow: bool = True,
                       **kwargs: Any) -> Gallery:
        """The gallery in ``url`` (a folder or a PostgreSQL URL) if it holds one, else a
        new one: what a service or an enroll command wants.

        An existing gallery is opened as by :meth:`open` with ``model_id``, ``metric`` and
        ``dim`` as expectations (so a gallery of another model, metric or size is refused),
        ``kwargs`` (``class_score``, ``backend``, ``backend_args``) as overrides; a new one
        is created as by :meth:`create` with all of them. Replicas starting together on
        a new database make one gallery: those that lose the race open it.
        """
        if not cls.exists(url):
            try:
                return cls.create(url, dim, metric=metric, model_id=model_id,
                                  embedder=embedder, follow=follow, **kwargs)
            except GalleryError:
                if not cls.exists(url):  # not a lost race: the create itself failed
                    raise
        return cls.open(url, model_id=model_id, embedder=embedder, metric=metric, dim=dim,
                        follow=follow, **kwargs)

    def _info(self) -> dict[str, Any]:
        return {"version": SCHEMA_VERSION, "dim": self.dim, "metric": self.metric,
                "model_id": self.model_id, "class_score": self.class_score, "backend": self.backend,
                "backend_args": self.backend_args}

    def _attach(self, store: Store, url: str | Path, follow: bool = True) -> None:
        """Load ``store``'s references (refusing ones that are not finite) and keep it;
        start following a shared store's changes."""
        version, rows = store.load(self.dim)
        self._check_finite(rows, store.where)
        self._store = store
        self.url = store.where if store.shared else str(url)
        with self._lock:
            if len(rows.labels):
                self._refs.append(rows.labels, rows.vectors, rows.hashes)
            self._version = version
        if store.shared and follow:
            assert isinstance(store, SharedStore)
            self._follower = Follower(
                store, lambda watch: self._catch_up(watch.changes(self._version, self.dim),
                                                    store), name=store.where)
            self._follower.start()

    @staticmethod
    def _check_finite(rows: Rows, where: str) -> None:
        # enroll refuses them; only another program (or damage) stores them, and a NaN
        # reference would answer every query "unknown (nan)"
        finite = np.isfinite(rows.vectors).all(axis=1)
        if not finite.all():
            bad = sorted({rows.labels[i] for i in np.flatnonzero(~finite)})
            more = f" and {len(bad) - 1} more classes" if len(bad) > 1 else ""
            raise GalleryError(
                f"{where}: {int((~finite).sum())} stored references are not finite (NaN or "
                f"infinity), of class {show(bad[0])}{more}: the database was damaged "
                f"or written by other software; delete those rows or rebuild the gallery")

    def save(self, path: str | Path) -> Path:
        """Write a copy of the gallery to the folder ``path`` (atomically: a temporary
        database, fsynced, then renamed into place, replacing any gallery there)."""
        from .sqlite import folder_lock

        path = Path(path)
        if self.path is not None and path.resolve() == self.path.resolve():
            raise GalleryError(f"{path} is this gallery's own folder: save to another one")
        path.mkdir(parents=True, exist_ok=True)
        with self._lock:
            rows = self._refs.rows()
            keys = self._store.keys() if self._store is not None else []
        with folder_lock(path):
            write_database(path, self._info(), rows, keys)
        return path

    @classmethod
    def load(cls, path: str | Path, **kwargs: Any) -> Gallery:
        """Same as :meth:`open`."""
        return cls.open(path, **kwargs)

    def close(self) -> None:
        """Close the store's connections and stop following it (the gallery stays
        searchable in memory; one kept in a folder or a database refuses changes from now
        on)."""
        if self._follower is not None:
            self._follower.stop()
            self._follower = None
        with self._lock:
            if self._store is not None:
                self._store.close()

    # ---- following a shared store

    def refresh(self) -> int:
        """Apply the changes committed to the store since :attr:`version` (other
        replicas' enrolls and removals), in order; returns the version reached.

        Raises:
            StoreUnavailable: the store cannot be reached.
        """
        store = self._store
        if not isinstance(store, SharedStore):
            return self._version
        return self._catch_up(store.changes(self._version, self.dim), store)

    def _catch_up(self, found: tuple[int, list[Change]] | None, store: Store) -> int:
        """Apply ``found`` (the version reached and the changes since a version this
        gallery had), skipping those already applied; None: reload everything."""
        if found is None:  # the store is older than this gallery: it was rebuilt
            version, rows = store.load(self.dim)
            self._check_finite(rows, store.where)
            logger.warning("%s: the store's version went back to %d: reloaded", store.where,
                           version)
            with self._lock:
                self._refs.clear()
                if len(rows.labels):
                    self._refs.append(rows.labels, rows.vectors, rows.hashes)
                self._version = version
                self._changed.notify_all()
                return version
        head, changes = found
        with self._lock:
            for change in changes:
                if change.version <= self._version:
                    continue
                if change.removed is not None:
                    self._refs.drop(change.removed)
                elif change.rows is not None and len(change.rows.labels):
                    self._check_finite(change.rows, store.where)
                    self._refs.append(change.rows.labels, change.rows.vectors,
                                      change.rows.hashes)
                self._version = change.version
            self._version = max(self._version, head)
            self._changed.notify_all()
            return self._version

    def wait_for(self, version: int, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until this gallery has applied ``version`` of its
        store (read-your-writes across replicas); whether it has."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._version < version:
                left = deadline - time.monotonic()
                if left <= 0 or self._follower is None:
                    return self._version >= version
                self._changed.wait(left)
            return True

    def check_current(self) -> None:
        """Raise StoreUnavailable when this gallery follows a store it has lost contact
        with: its answers could miss changes acknowledged elsewhere."""
        if self._follower is not None:
            self._follower.check()

    # ---- contents

    def __len__(self) -> int:
        """Number of reference embeddings."""
        return len(self._refs)

    def labels(self) -> list[str]:
        """Enrolled class labels, sorted."""
        with self._lock:
            return self._refs.labels()

    def counts(self) -> dict[str, int]:
        """References per class label."""
        with self._lock:
            return self._refs.counts()

    def __contains__(self, label: object) -> bool:
        """Whether the class ``label`` (compared in NFC form) has references."""
        if not isinstance(label, str):
            return False
        with self._lock:
            return label in self._refs

    def _prepare(self, items: Any) -> np.ndarray:
        x = self.embedder(items) if self.embedder is not None else items
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise GalleryError(f"expected embeddings of size {self.dim}, got shape "
                               f"{tuple(x.shape)}")
        if not np.isfinite(x).all():
            raise GalleryError("embeddings contain NaN or infinity")
        if self.metric == "cosine":
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(x)

    def _known_hashes(self) -> set[bytes]:
        """Content hashes of the references in memory (the memory store's contents)."""
        with self._lock:
            return self._refs.known_hashes()

    def enroll(self, label: str, items: Any, sources: Sequence[str] | None = None, *,
               skip_duplicates: bool = False, idempotency_key: str | None = None) -> Enrolled:
        """Add references (items, or embeddings without an embedder) for ``label``; a new
        label is a new class. Committed to the store before it returns, and searched by
        this gallery from then on (by other replicas of a shared store within their
        follow delay).

        Args:
            label: the class label (:func:`check_label`; stored normalised).
            items: what the embedder takes, or embeddings (N, dim) without one.
            sources: one name per item, stored beside each reference (file names...).
            skip_duplicates: leave out references already stored for ``label`` (equal
                :func:`content_hash`: same label, same embedding bytes), and repeats
                within ``items``.
            idempotency_key: a retried enroll with the same key adds nothing and returns
                the first one's result (``replayed`` set). Keys are stored in the database
                in the same transaction as the references, so they survive restarts.

        Returns:
            :class:`Enrolled`: the number added (an int), with ``skipped`` and ``replayed``.

        Raises:
            IdempotencyConflict: ``idempotency_key`` was used for another label.
            StoreUnavailable: the store's database cannot be reached (nothing was added).
            GalleryError: a bad label, key or embeddings.
        """
        label = check_label(label)
        if idempotency_key is not None:
            idempotency_key = check_key(idempotency_key)
        x = self._prepare(items)
        if len(x) == 0:
            raise GalleryError("nothing to enroll")
        if sources is not None and len(sources) != len(x):
            raise GalleryError("give one source per item")
        return self._add([label] * len(x), x, sources, skip_duplicates, idempotency_key)

    def enroll_many(self, labels: Sequence[str], items: Any, *,
                    skip_duplicates: bool = False) -> Enrolled:
        """Enroll items of several classes at once (one label per item), in one
        transaction; ``skip_duplicates`` as for :meth:`enroll`."""
        x = self._prepare(items)
        labels = [check_label(lab) for lab in labels]
        if len(labels) != len(x):
            raise GalleryError(f"{len(labels)} labels for {len(x)} items")
        return self._add(labels, x, None, skip_duplicates, None)

    def _store_or_closed(self) -> Store:
        if self._store is None:  # never change memory alone: it would not persist
            raise GalleryError(f"the gallery in {self.path} is closed; open it again "
                               f"to change it")
        return self._store

    def _add(self, labels: list[str], x: np.ndarray, sources: Sequence[str] | None,
             skip_duplicates: bool, key: str | None) -> Enrolled:
        """Commit, then publish, checked references (and the idempotency key)."""
        hashes = [content_hash(lab, v) for lab, v in zip(labels, x, strict=True)]
        with self._write_lock:
            store = self._store_or_closed()
            written = store.add(labels, x, hashes, sources, key, skip_duplicates)
            keep = written.keep
            self._publish(written, store, lambda: self._refs.append(
                [labels[i] for i in keep], x[keep], [hashes[i] for i in keep]))
        assert written.enrolled is not None
        return written.enrolled

    def _publish(self, written: Written, store: Store, apply: Callable[[], Any]) -> None:
        """Apply a committed write to memory in version order: directly when it is the
        next version, else by catching up with the store (a shared store's other writers
        came in between)."""
        with self._lock:
            if written.version <= self._version:
                return  # nothing changed, or a follower already applied it
            # a store nobody else writes has no changes to fetch in between (should another
            # program write a folder's database anyway, its changes show on the next open)
            if written.version == self._version + 1 or not isinstance(store, SharedStore):
                apply()
                self._version = written.version
                self._changed.notify_all()
                return
        self._catch_up(store.changes(self._version, self.dim), store)

    def remove(self, label: str) -> int:
        """Remove a class and all its references; returns how many.

        The label is checked and normalised as for enrolling (:func:`check_label`), so
        whatever was enrolled can be removed by the label it was enrolled with; a label
        stored by an older version under looser rules is removed by its exact text.
        Idempotency keys of its enrolls are kept: a late retry of one adds nothing.

        Raises:
            KeyError: no class ``label`` in the gallery.
            GalleryError: ``label`` breaks the label rule (and is not stored as it is).
            StoreUnavailable: the store's database cannot be reached (nothing removed).
        """
        if not (isinstance(label, str) and self._refs.stored_as(label)):
            label = check_label(label)
        with self._write_lock:
            store = self._store_or_closed()
            written = store.remove(label)
            self._publish(written, store, lambda: self._refs.drop(label))
        return written.removed

    # ---- search

    def identify(self, queries: Any, k: int = 5) -> list[list[Match]]:
        """The ``k`` best classes for each query, best first, with their scores.

        Raises:
            StoreUnavailable: the gallery follows a shared store it has lost contact with
                (its answers could miss enrolls acknowledged by other replicas).
        """
        if k < 1:
            raise GalleryError("k must be at least 1")
        q = self._prepare(queries)
        self.check_current()
        # an index that allows concurrent searches is immutable once built, so only its
        # construction takes the lock; others (FAISS) are searched under the lock
        with self._lock:
            index, codes, labels, per_class = self._refs.search_state()
            if len(codes) == 0:
                return [[] for _ in range(len(q))]
            if not index.concurrent_search:
                sims, rows = index.search(q, min(len(codes), k * per_class))
        if index.concurrent_search:
            sims, rows = index.search(q, min(len(codes), k * per_class))
        sign = 1.0 if self.higher_is_closer else -1.0
        out = []
        for s_row, i_row in zip(sims, rows, strict=True):
            seen: dict[int, float] = {}
            for s, i in zip(s_row, i_row, strict=True):
                if i < 0:
                    continue
                c = int(codes[i])
                if c not in seen:
                    seen[c] = float(s)
                    if len(seen) == k:
                        break
            out.append([Match(labels[c], sign * s) for c, s in seen.items()])
        return out

    def decide(self, matches: list[Match], threshold: float | None) -> str:
        """The best label if its score passes ``threshold`` (model convention), else
        ``unknown``; without a threshold, the best label (closed set)."""
        if not matches:
            return UNKNOWN
        best = matches[0]
        if threshold is None:
            return best.label
        ok = best.score >= threshold if self.higher_is_closer else best.score <= threshold
        return best.label if ok else UNKNOWN
