"""A persistent gallery of reference embeddings: enroll a class, identify queries, open-set.

Adding a class is adding its reference embeddings, never retraining. The gallery keeps
the references in memory for search and, when it has a folder, in a SQLite database in
it (``gallery.sqlite``, readable by anything). The folder also records the model's
identity (a hash of its weights and config), metric and embedding size; opening it with
another model, or expecting another metric or size, is refused.

What survives a crash (SIGKILL, power loss) at any moment:

* creating: the database is built aside and renamed into place, so the folder holds
  either no gallery or a complete, empty one (an empty database left by older versions
  counts as none and is replaced with a warning);
* enroll and remove: each is one transaction (WAL journal, fsync), committed before it
  returns, so the last acknowledged state is what opens next time;
* save: a temporary database, fsynced, renamed over the copy.

The label rule (:func:`check_label`, for enrolling and removing alike): a string, valid
UTF-8, stored in NFC, not empty, at most 256 characters, not ``unknown``, without control
characters or invisible / direction-changing ones, so no label can pose as another.

Duplicates and retries: every reference stores :func:`content_hash` (SHA-256 of the label
and the stored float32 embedding bytes); ``skip_duplicates=True`` leaves out references
already stored. An enroll with an ``idempotency_key`` records the key in the same
transaction as its references: a retry adds nothing and returns the first result.
Databases of schema version 1 are upgraded in place, in one transaction, when opened.

Search goes through :class:`~siamkit.search.Search` (:func:`create_search`): ``exact``
(default; chunked matrix products, memory bounded by ``chunk`` x references) or ``faiss``
(optional extra ``faiss-cpu``: ``flat``, ``ivf`` and ``hnsw`` indexes). Scores are reported
in the model's own convention (a distance for Euclidean models, a similarity for cosine
ones); ``higher_is_closer`` says which.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: creates are not serialised across processes
    fcntl = None  # type: ignore[assignment]

from .search import (
    METRICS,
    ExactIndex,
    FaissIndex,
    GalleryError,
    Search,
    create_search,
    higher_is_closer,
)

__all__ = ["Gallery", "GalleryError", "IdempotencyConflict", "Enrolled", "Match", "Search",
           "ExactIndex", "FaissIndex", "METRICS", "MAX_LABEL_CHARS", "check_label",
           "content_hash", "create_search", "metric_of"]

logger = logging.getLogger(__name__)

DB = "gallery.sqlite"
# 1: meta, refs (label, source, embedding); 2: refs.hash (content_hash), enroll_keys
SCHEMA_VERSION = 2
_KEYS_TABLE = ("CREATE TABLE IF NOT EXISTS enroll_keys (key TEXT PRIMARY KEY, "
               "label TEXT NOT NULL, added INTEGER NOT NULL, skipped INTEGER NOT NULL, "
               "created REAL NOT NULL)")
UNKNOWN = "unknown"
MAX_LABEL_CHARS = 256

# characters that are invisible or reorder text, so that a label holding one can pose as
# another ("s\u200b5" shows as "s5"): soft hyphen, Arabic letter mark, Mongolian vowel
# separator, zero-width spaces and joiners, directional marks, line and paragraph
# separators, bidirectional embeddings / overrides / isolates, word joiner and invisible
# operators, byte order mark
_INVISIBLE = frozenset([0x00AD, 0x061C, 0x180E, *range(0x200B, 0x2010), 0x2028, 0x2029,
                        *range(0x202A, 0x202F), *range(0x2060, 0x2065), *range(0x2066, 0x206A),
                        0xFEFF])


def _show(label: str) -> str:
    """A label quoted for an error message, hidden characters spelled out, cut at 40."""
    cut = label[:40]
    shown = "".join(ch if ch.isprintable() and ord(ch) not in _INVISIBLE else ascii(ch)[1:-1]
                    for ch in cut)
    return f"'{shown}'" + ("..." if len(label) > 40 else "")


def check_label(label: Any) -> str:
    """The class label as stored (NFC-normalised), or a GalleryError saying what is wrong.

    The one label rule, for enrolling and removing alike: a ``str`` that is valid UTF-8
    (no lone surrogates), not empty or only spaces, at most :data:`MAX_LABEL_CHARS`
    characters once normalised, not the reserved ``unknown``, without control characters
    (C0, DEL, C1) and without invisible or direction-changing characters (zero-width
    spaces and joiners, bidirectional overrides and isolates, byte order marks...), so no
    label can pose as another.

        >>> check_label("cafe\\u0301")  # a decomposed e-acute becomes one character
        'café'
    """
    if not isinstance(label, str):
        raise GalleryError(f"a class label must be a string, not {type(label).__name__}")
    try:
        label.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise GalleryError(f"class label {_show(label)}: not valid UTF-8 (a lone surrogate "
                           f"at character {exc.start}); send the label as UTF-8 text") from None
    label = unicodedata.normalize("NFC", label)
    if not label.strip():
        raise GalleryError("a class label must be a non-empty string (not only spaces)")
    if label == UNKNOWN:
        raise GalleryError(f"{UNKNOWN!r} is reserved for open-set rejections; choose "
                           f"another label")
    if len(label) > MAX_LABEL_CHARS:
        raise GalleryError(f"class label {_show(label)} ({len(label)} characters): a label "
                           f"must be at most {MAX_LABEL_CHARS} printable characters")
    for i, ch in enumerate(label):
        if unicodedata.category(ch) == "Cc":
            raise GalleryError(f"class label {_show(label)}: control character "
                               f"U+{ord(ch):04X} at character {i}; a label must be "
                               f"printable text")
        if ord(ch) in _INVISIBLE:
            name = unicodedata.name(ch, "format character")
            raise GalleryError(f"class label {_show(label)}: U+{ord(ch):04X} ({name}) at "
                               f"character {i} is invisible or changes the text direction, "
                               f"so the label could pose as another; remove it")
    return label


class IdempotencyConflict(GalleryError):
    """An idempotency key already used for an enroll of another class label."""


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


def content_hash(label: str, embedding: np.ndarray | bytes) -> str:
    """The content hash of a reference: SHA-256 (hex) of the UTF-8 label, a NUL byte and
    the float32 embedding bytes as stored (cosine galleries store them normalised). Two
    references are duplicates when their hashes are equal."""
    blob = embedding if isinstance(embedding, bytes) else np.ascontiguousarray(
        embedding, dtype=np.float32).tobytes()
    return hashlib.sha256(label.encode("utf-8") + b"\0" + blob).hexdigest()


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not 1 <= len(key) <= 255 or not key.isprintable():
        shown = _show(key) if isinstance(key, str) else type(key).__name__
        raise GalleryError(f"idempotency key {shown}: must be 1 to 255 printable characters")
    return key


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


# ---------------------------------------------------------------- the folder


@contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Serialise creating and replacing the database of ``folder`` across processes (an
    exclusive ``flock`` on the folder itself; no lock where ``fcntl`` is missing)."""
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:  # a file system without locks (some network mounts)
            logger.debug("%s: no folder lock (%s)", folder, exc)
        yield
    finally:
        os.close(fd)  # releases the lock


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable."""
    if fcntl is None:  # pragma: no cover - Windows cannot open a folder
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _probe(db: Path) -> str:
    """``missing`` (no file), ``empty`` (0 bytes or SQLite without tables: an interrupted
    create of an older version) or ``present`` (a gallery, or a file open() refuses)."""
    if not db.exists():
        return "missing"
    if not db.is_file():
        return "present"
    try:
        con = sqlite3.connect(db)  # replays a committed -wal, as opening the gallery would
        try:
            tables = con.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        finally:
            con.close()
    except sqlite3.DatabaseError:
        return "present"
    return "present" if tables else "empty"


# ---------------------------------------------------------------- the gallery


class Gallery:
    """Reference embeddings by class label, searchable, optionally kept in a folder.

    Args:
        dim: embedding size.
        metric: ``cosine``, ``dot``, ``euclidean`` or ``sqeuclidean`` (see :func:`metric_of`).
        model_id: identity of the model whose embeddings these are (see ``model_identity``).
        class_score: ``nearest`` (a class scores as its closest reference) or ``prototype``
            (as the mean of its references).
        backend, backend_args: the search index (``exact`` or ``faiss`` with its options).
        embedder: optional function items -> (N, dim) embeddings; without it ``enroll``
            and ``identify`` take embeddings.
        path: folder to keep the gallery in (use :meth:`create` / :meth:`open`).
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
        self._lock = threading.RLock()
        self._vectors = np.zeros((0, self.dim), np.float32)
        self._codes = np.zeros(0, np.int64)  # label code of every reference
        self._labels: list[str] = []  # code -> label
        self._code_of: dict[str, int] = {}
        self._hashes = np.zeros(0, "S64")  # content_hash of every reference (hex, ASCII)
        self._hash_set: set[bytes] | None = None  # built when first needed
        self._keys: dict[str, tuple[str, int, int, float]] = {}  # idempotency, no folder
        self._index: Any = None  # built lazily; None = stale
        self._index_rows: np.ndarray | None = None  # prototype mode: code of each row
        self._db: sqlite3.Connection | None = None
        create_search(backend, metric, **self.backend_args)  # fail early on bad options

    @property
    def higher_is_closer(self) -> bool:
        """Whether a larger score is closer (similarities) or not (distances)."""
        return higher_is_closer(self.metric)

    # ---- persistence

    @classmethod
    def exists(cls, path: str | Path) -> bool:
        """Whether the folder ``path`` holds a gallery (a database that is not empty).

        An empty database (0 bytes, or SQLite without tables), which older versions left
        when killed while creating a gallery, counts as none: :meth:`create` replaces it.
        A damaged database counts as a gallery, for :meth:`open` to refuse with the reason.
        """
        return _probe(Path(path) / DB) == "present"

    @classmethod
    def create(cls, path: str | Path, dim: int, **kwargs: Any) -> Gallery:
        """A new, empty gallery kept in ``path`` (created; must not hold a gallery).

        Crash-safe: the database is built aside (a temporary file in ``path``, schema
        committed and fsynced) and renamed into place, so a kill at any moment leaves
        either no database or a complete, empty gallery. An empty database left by an
        older version is replaced with a warning. ``kwargs`` are those of the constructor.
        """
        path = Path(path)
        g = cls(dim, path=path, **kwargs)  # options are checked before the disk is touched
        path.mkdir(parents=True, exist_ok=True)
        with _folder_lock(path):
            state = _probe(path / DB)
            if state == "present":
                raise GalleryError(f"{path} already holds a gallery; open it instead")
            if state == "empty":
                logger.warning("%s is empty (an interrupted create of an older version): "
                               "creating the gallery anew", path / DB)
            g._write_database(path, [])
        g._connect()
        return g

    @classmethod
    def open(cls, path: str | Path, model_id: str | None = None,
             embedder: Callable[[Any], Any] | None = None, *, metric: str | None = None,
             dim: int | None = None, backend: str | None = None,
             backend_args: dict[str, Any] | None = None,
             class_score: str | None = None) -> Gallery:
        """Open the gallery kept in ``path``, refusing one that does not fit the caller.

        Args:
            path: the gallery's folder.
            model_id: refuse the gallery if it was built with another model.
            embedder: as for the constructor.
            metric, dim: refuse the gallery unless its metric and embedding size are these
                (a service passes its model's: a gallery whose settings were edited, or one
                built without a model id for a model of another size, is refused instead
                of being searched with the wrong geometry).
            backend, backend_args, class_score: search differently this time (the stored
                settings are kept).

        Raises:
            GalleryError: no gallery, a damaged one, stored settings that are not valid
                (an unknown metric, a bad size), stored references that are not finite, or
                a gallery that does not fit ``model_id``, ``metric`` or ``dim``.
        """
        path = Path(path)
        db = path / DB
        state = _probe(db)
        if state == "missing":
            raise GalleryError(f"no gallery in {path} (expected {db})")
        if state == "empty":
            raise GalleryError(f"no gallery in {path}: {DB} is empty (an interrupted create "
                               f"of an older version); creating the gallery replaces it")
        try:
            con = sqlite3.connect(db)
            try:
                meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
            finally:
                con.close()
            info = json.loads(meta["info"])
            if not isinstance(info, dict):
                raise ValueError("its settings are not a JSON object")
        except (sqlite3.DatabaseError, KeyError, ValueError) as exc:
            raise GalleryError(f"{db}: not a readable gallery ({exc})") from None
        stored_id = info.get("model_id")
        if model_id is not None and stored_id not in (None, model_id):
            raise GalleryError(
                f"{path} was built with another model (model id {str(stored_id)[:12]}, "
                f"this model is {model_id[:12]}): its embeddings are not comparable; enroll "
                f"into a new gallery")
        size, kind = info.get("dim"), info.get("metric")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise GalleryError(f"{db}: the stored embedding size {size!r} is not a positive "
                               f"integer (edited or damaged settings); rebuild the gallery")
        if kind not in METRICS:
            raise GalleryError(f"{db}: the stored metric {kind!r} is not one of "
                               f"{', '.join(METRICS)} (edited or damaged settings); rebuild "
                               f"the gallery")
        if dim is not None and size != dim:
            raise GalleryError(f"{path} holds embeddings of size {size}, this model makes "
                               f"embeddings of size {dim}: they are not comparable; enroll "
                               f"into a new gallery")
        if metric is not None and kind != metric:
            raise GalleryError(f"{path} is a {kind} gallery, this model scores with {metric}: "
                               f"its scores and threshold would not apply; enroll into a new "
                               f"gallery (or restore the gallery's settings)")
        settings = {"class_score": class_score or info.get("class_score", "nearest"),
                    "backend": backend or info.get("backend", "exact"),
                    "backend_args": (backend_args if backend_args is not None
                                     else info.get("backend_args") or {})}
        if not isinstance(settings["backend_args"], dict):
            raise GalleryError(f"{db}: the stored backend options "
                               f"{settings['backend_args']!r} are not a JSON object (edited "
                               f"or damaged settings); rebuild the gallery")
        try:
            g = cls(size, metric=kind, model_id=stored_id, embedder=embedder, path=path,
                    **settings)
        except GalleryError as exc:
            raise GalleryError(f"opening {db}: {exc}") from None
        g._connect()
        return g

    @classmethod
    def open_or_create(cls, path: str | Path, dim: int, metric: str,
                       model_id: str | None = None,
                       embedder: Callable[[Any], Any] | None = None,
                       **kwargs: Any) -> Gallery:
        """The gallery in ``path`` if it holds one, else a new one: what a service or an
        enroll command wants.

        An existing gallery is opened as by :meth:`open` with ``model_id``, ``metric`` and
        ``dim`` as expectations (so a gallery of another model, metric or size is refused),
        ``kwargs`` (``class_score``, ``backend``, ``backend_args``) as overrides; a new one
        is created as by :meth:`create` with all of them.
        """
        if cls.exists(path):
            return cls.open(path, model_id=model_id, embedder=embedder, metric=metric, dim=dim,
                            **kwargs)
        return cls.create(path, dim, metric=metric, model_id=model_id, embedder=embedder,
                          **kwargs)

    def _info(self) -> dict[str, Any]:
        return {"version": SCHEMA_VERSION, "dim": self.dim, "metric": self.metric,
                "model_id": self.model_id, "class_score": self.class_score, "backend": self.backend,
                "backend_args": self.backend_args}

    def _create_schema(self, con: sqlite3.Connection) -> None:
        """Tables of a new gallery database, inside the caller's transaction."""
        con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        con.execute("CREATE TABLE refs (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                    "label TEXT NOT NULL, source TEXT, embedding BLOB NOT NULL, hash TEXT)")
        con.execute("CREATE INDEX refs_label ON refs(label)")
        con.execute("CREATE INDEX refs_hash ON refs(hash)")
        con.execute(_KEYS_TABLE)
        con.execute("INSERT INTO meta VALUES ('info', ?)", (json.dumps(self._info()),))

    def _write_database(self, folder: Path, rows: list[tuple],
                        keys: list[tuple] | None = None) -> None:
        """Build a complete database aside (a temporary file in ``folder``: schema,
        ``rows`` (label, source, embedding, hash) and idempotency ``keys`` committed and
        fsynced) and rename it over ``folder / DB``. The caller holds :func:`_folder_lock`
        on ``folder``."""
        for stale in folder.glob(f".{DB}.*"):  # left by a create or save that was killed
            stale.unlink(missing_ok=True)
        # SQLite creates the file, with the usual permissions (mkstemp's would be 0600)
        tmp = folder / f".{DB}.{uuid.uuid4().hex}"
        try:
            con = sqlite3.connect(tmp, isolation_level=None)
            try:
                con.execute("PRAGMA journal_mode=DELETE")  # no -wal file to carry along
                con.execute("PRAGMA synchronous=FULL")
                con.execute("BEGIN")
                self._create_schema(con)
                con.executemany("INSERT INTO refs (label, source, embedding, hash) "
                                "VALUES (?, ?, ?, ?)", rows)
                con.executemany("INSERT INTO enroll_keys VALUES (?, ?, ?, ?, ?)", keys or [])
                con.execute("COMMIT")
            finally:
                con.close()
            with open(tmp, "rb+") as f:  # the rename must not land before the data
                os.fsync(f.fileno())
            # logs beside a database being replaced belong to the old one: replayed into
            # the new one they would corrupt it
            for suffix in ("-wal", "-shm", "-journal"):
                Path(f"{folder / DB}{suffix}").unlink(missing_ok=True)
            os.replace(tmp, folder / DB)
            _fsync_dir(folder)
        finally:
            tmp.unlink(missing_ok=True)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection | None]:
        """One committed write transaction on the folder's database (None for a gallery
        without a folder); rolled back if anything fails. The caller holds the lock."""
        con = self._db
        if con is None:
            if self.path is not None:  # never change memory alone: it would not persist
                raise GalleryError(f"the gallery in {self.path} is closed; open it again "
                                   f"to change it")
            yield None
            return
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as exc:  # disk full, read-only, locked too long...
            raise GalleryError(f"{self.path / DB}: the write failed and changed nothing "
                               f"({exc})") from None

    @staticmethod
    def _migrate(con: sqlite3.Connection, db: Path) -> None:
        """Bring a database of an older schema up to :data:`SCHEMA_VERSION` in place, in one
        transaction: the ``hash`` column (filled with :func:`content_hash`) and the
        ``enroll_keys`` table."""
        columns = {row[1] for row in con.execute("PRAGMA table_info(refs)")}
        keys_table = con.execute("SELECT 1 FROM sqlite_master WHERE name = 'enroll_keys'")
        if ("hash" in columns and keys_table.fetchone() is not None and
                con.execute("SELECT 1 FROM refs WHERE hash IS NULL LIMIT 1").fetchone() is None):
            return
        con.execute("BEGIN IMMEDIATE")
        try:
            if "hash" not in columns:
                con.execute("ALTER TABLE refs ADD COLUMN hash TEXT")
            # rows written by an older version (also after this upgrade) have no hash
            rows = con.execute("SELECT id, label, embedding FROM refs WHERE hash IS NULL")
            con.executemany("UPDATE refs SET hash = ? WHERE id = ?",
                            [(content_hash(lab, bytes(blob)), i) for i, lab, blob in rows])
            con.execute("CREATE INDEX IF NOT EXISTS refs_hash ON refs(hash)")
            con.execute(_KEYS_TABLE)
            info = json.loads(con.execute("SELECT value FROM meta WHERE key = 'info'")
                              .fetchone()[0])
            old = info.get("version")
            info["version"] = max(SCHEMA_VERSION, old if isinstance(old, int) else 0)
            con.execute("UPDATE meta SET value = ? WHERE key = 'info'", (json.dumps(info),))
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
        logger.info("%s: upgraded from gallery schema %s to %s", db, old, SCHEMA_VERSION)

    def _connect(self) -> None:
        """Open the folder's database (upgrading an older schema) and load its references."""
        assert self.path is not None
        db = self.path / DB
        con = sqlite3.connect(db, check_same_thread=False, isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")
            self._migrate(con, db)
            rows = con.execute("SELECT label, embedding, hash FROM refs ORDER BY id").fetchall()
        except sqlite3.DatabaseError as exc:
            con.close()
            raise GalleryError(f"{db}: cannot open the gallery ({exc})") from None
        except BaseException:
            con.close()
            raise
        bad = [lab for lab, blob, _ in rows if len(blob) != 4 * self.dim]
        if bad:
            con.close()
            raise GalleryError(f"{db}: {len(bad)} references have the wrong "
                               f"size (e.g. class {bad[0]!r})")
        if rows:
            vecs = np.frombuffer(b"".join(b for _, b, _ in rows), dtype=np.float32)
            vecs = vecs.reshape(-1, self.dim).copy()
            # enroll refuses them; only another program (or damage) stores them, and a NaN
            # reference would answer every query "unknown (nan)"
            finite = np.isfinite(vecs).all(axis=1)
            if not finite.all():
                con.close()
                bad = sorted({rows[i][0] for i in np.flatnonzero(~finite)})
                more = f" and {len(bad) - 1} more classes" if len(bad) > 1 else ""
                raise GalleryError(
                    f"{db}: {int((~finite).sum())} stored references are not finite (NaN or "
                    f"infinity), of class {_show(bad[0])}{more}: the database was damaged "
                    f"or written by other software; delete those rows or rebuild the gallery")
            self._append([lab for lab, _, _ in rows], vecs, [h for _, _, h in rows])
        self._db = con

    def save(self, path: str | Path) -> Path:
        """Write a copy of the gallery to the folder ``path`` (atomically: a temporary
        database, fsynced, then renamed into place, replacing any gallery there)."""
        path = Path(path)
        if self.path is not None and path.resolve() == self.path.resolve():
            raise GalleryError(f"{path} is this gallery's own folder: save to another one")
        path.mkdir(parents=True, exist_ok=True)
        with self._lock:
            rows = [(self._labels[c], None, v.tobytes(), h.decode())
                    for c, v, h in zip(self._codes, self._vectors, self._hashes, strict=True)]
            keys = (self._db.execute("SELECT * FROM enroll_keys").fetchall()
                    if self._db is not None else
                    [(k, *v) for k, v in self._keys.items()])
        with _folder_lock(path):
            self._write_database(path, rows, keys)
        return path

    @classmethod
    def load(cls, path: str | Path, **kwargs: Any) -> Gallery:
        """Same as :meth:`open`."""
        return cls.open(path, **kwargs)

    def close(self) -> None:
        """Close the folder's database (the gallery stays searchable in memory)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # ---- contents

    def __len__(self) -> int:
        """Number of reference embeddings."""
        return len(self._codes)

    def labels(self) -> list[str]:
        """Enrolled class labels, sorted."""
        with self._lock:
            present = np.unique(self._codes)
            return sorted(self._labels[c] for c in present)

    def counts(self) -> dict[str, int]:
        """References per class label."""
        with self._lock:
            codes, n = np.unique(self._codes, return_counts=True)
            return {self._labels[c]: int(k) for c, k in zip(codes, n, strict=True)}

    def __contains__(self, label: object) -> bool:
        """Whether the class ``label`` (compared in NFC form) has references."""
        if not isinstance(label, str):
            return False
        with self._lock:
            code = self._code_of.get(unicodedata.normalize("NFC", label))
            return code is not None and bool((self._codes == code).any())

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

    def _append(self, labels: Sequence[str], vectors: np.ndarray,
                hashes: Sequence[str | None]) -> None:
        codes = []
        for lab in labels:
            if lab not in self._code_of:
                self._code_of[lab] = len(self._labels)
                self._labels.append(lab)
            codes.append(self._code_of[lab])
        hashed = np.array([h if h is not None else content_hash(lab, v)
                           for h, lab, v in zip(hashes, labels, vectors, strict=True)], "S64")
        # new arrays, never writes into old ones: a search holding the old arrays is unharmed
        self._vectors = np.concatenate([self._vectors, vectors])
        self._codes = np.concatenate([self._codes, np.array(codes, dtype=np.int64)])
        self._hashes = np.concatenate([self._hashes, hashed])
        if self._hash_set is not None:
            self._hash_set.update(hashed.tolist())
        self._index = None

    def enroll(self, label: str, items: Any, sources: Sequence[str] | None = None, *,
               skip_duplicates: bool = False, idempotency_key: str | None = None) -> Enrolled:
        """Add references (items, or embeddings without an embedder) for ``label``; a new
        label is a new class. Persisted before it returns.

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
            GalleryError: a bad label, key or embeddings.
        """
        label = check_label(label)
        if idempotency_key is not None:
            idempotency_key = _check_key(idempotency_key)
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

    def _add(self, labels: list[str], x: np.ndarray, sources: Sequence[str] | None,
             skip_duplicates: bool, key: str | None) -> Enrolled:
        """Persist, then publish, checked references (and the idempotency key)."""
        hashes = [content_hash(lab, v) for lab, v in zip(labels, x, strict=True)]
        with self._lock:
            with self._transaction() as con:
                if key is not None:
                    done = self._key_result(con, key, labels[0])
                    if done is not None:
                        return done
                keep = list(range(len(x)))
                if skip_duplicates:
                    if self._hash_set is None:
                        self._hash_set = set(self._hashes.tolist())
                    seen = self._hash_set.copy()
                    keep = []
                    for i, h in enumerate(hashes):
                        if h.encode() not in seen:
                            seen.add(h.encode())
                            keep.append(i)
                result = Enrolled(len(keep), len(x) - len(keep))
                if con is not None:
                    con.executemany("INSERT INTO refs (label, source, embedding, hash) "
                                    "VALUES (?, ?, ?, ?)",
                                    [(labels[i], None if sources is None else str(sources[i]),
                                      x[i].tobytes(), hashes[i]) for i in keep])
                    if key is not None:
                        con.execute("INSERT INTO enroll_keys VALUES (?, ?, ?, ?, ?)",
                                    (key, labels[0], result.added, result.skipped, time.time()))
            if key is not None and con is None:
                self._keys[key] = (labels[0], result.added, result.skipped, time.time())
            if keep:
                self._append([labels[i] for i in keep], x[keep], [hashes[i] for i in keep])
        return result

    def _key_result(self, con: sqlite3.Connection | None, key: str,
                    label: str) -> Enrolled | None:
        """The stored result of the enroll made with ``key`` (None: the key is new)."""
        if con is not None:
            row = con.execute("SELECT label, added, skipped FROM enroll_keys WHERE key = ?",
                              (key,)).fetchone()
        else:
            row = self._keys.get(key)
        if row is None:
            return None
        if row[0] != label:
            raise IdempotencyConflict(f"idempotency key {_show(key)} was used to enroll class "
                                      f"{_show(row[0])}, not {_show(label)}; use a new key "
                                      f"for a new enroll")
        return Enrolled(row[1], row[2], replayed=True)

    def remove(self, label: str) -> int:
        """Remove a class and all its references; returns how many.

        The label is checked and normalised as for enrolling (:func:`check_label`), so
        whatever was enrolled can be removed by the label it was enrolled with; a label
        stored by an older version under looser rules is removed by its exact text.
        Idempotency keys of its enrolls are kept: a late retry of one adds nothing.

        Raises:
            KeyError: no class ``label`` in the gallery.
            GalleryError: ``label`` breaks the label rule (and is not stored as it is).
        """
        with self._lock:
            if not (isinstance(label, str) and label in self._code_of):
                label = check_label(label)
            code = self._code_of.get(label)
            keep = self._codes != code if code is not None else None
            if keep is None or keep.all():
                raise KeyError(label)
            with self._transaction() as con:
                if con is not None:
                    con.execute("DELETE FROM refs WHERE label = ?", (label,))
            removed = int((~keep).sum())
            self._vectors, self._codes = self._vectors[keep], self._codes[keep]
            self._hashes = self._hashes[keep]
            self._hash_set = None  # rebuilt when next needed
            self._index = None
            return removed

    # ---- search

    def _search_state(self) -> tuple[Search, np.ndarray, list[str], int]:
        """(index, label code of each index row, labels, max references per class)."""
        with self._lock:
            if self._index is None:
                vectors, codes = self._vectors, self._codes
                if self.class_score == "prototype" and len(codes):
                    present = np.unique(codes)
                    sums = np.zeros((len(self._labels), self.dim), np.float64)
                    np.add.at(sums, codes, vectors)
                    means = (sums[present] / np.bincount(codes)[present, None]).astype(
                        np.float32)
                    if self.metric == "cosine":
                        means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
                    vectors, codes = means, present
                index = create_search(self.backend, self.metric, **self.backend_args)
                index.build(vectors)
                per_class = int(np.bincount(codes).max()) if len(codes) else 0
                self._index = (index, codes, per_class)
            index, codes, per_class = self._index
            return index, codes, list(self._labels), per_class

    def identify(self, queries: Any, k: int = 5) -> list[list[Match]]:
        """The ``k`` best classes for each query, best first, with their scores."""
        if k < 1:
            raise GalleryError("k must be at least 1")
        q = self._prepare(queries)
        # an index that allows concurrent searches is immutable once built, so only its
        # construction takes the lock; others (FAISS) are searched under the lock
        with self._lock:
            index, codes, labels, per_class = self._search_state()
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
