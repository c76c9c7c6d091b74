"""The embedded gallery store: a SQLite database ``gallery.sqlite`` in a folder.

What survives a crash (SIGKILL, power loss) at any moment:

* creating: the database is built aside and renamed into place, so the folder holds
  either no gallery or a complete, empty one (an empty database left by older versions
  counts as none and is replaced with a warning);
* enroll and remove: each is one transaction (WAL journal, fsync), committed before it
  returns, so the last acknowledged state is what opens next time;
* save: a temporary database, fsynced, renamed over the copy.

One process writes a folder's gallery; its version (``meta`` row ``version``) counts the
changes made since the counter was added. Databases of schema version 1 are upgraded in
place, in one transaction, when opened.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: creates are not serialised across processes
    fcntl = None  # type: ignore[assignment]

from ..search import GalleryError
from .labels import content_hash
from .store import Enrolled, Rows, Store, Written, dedupe, replay

__all__ = ["DB", "SCHEMA_VERSION", "SQLiteStore"]

logger = logging.getLogger(__name__)

DB = "gallery.sqlite"
# 1: meta, refs (label, source, embedding); 2: refs.hash (content_hash), enroll_keys
SCHEMA_VERSION = 2
_KEYS_TABLE = ("CREATE TABLE IF NOT EXISTS enroll_keys (key TEXT PRIMARY KEY, "
               "label TEXT NOT NULL, added INTEGER NOT NULL, skipped INTEGER NOT NULL, "
               "created REAL NOT NULL)")
_BUMP = ("INSERT INTO meta VALUES ('version', '1') ON CONFLICT(key) DO UPDATE SET "
         "value = CAST(value AS INTEGER) + 1 RETURNING CAST(value AS INTEGER)")


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
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


def probe(db: Path) -> str:
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


def write_database(folder: Path, info: dict[str, Any], rows: list[tuple],
                   keys: list[tuple] | None = None) -> None:
    """Build a complete database aside (a temporary file in ``folder``: schema, settings
    ``info``, ``rows`` (label, source, embedding, hash) and idempotency ``keys`` committed
    and fsynced) and rename it over ``folder / DB``. The caller holds :func:`folder_lock`
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
            con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            con.execute("CREATE TABLE refs (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                        "label TEXT NOT NULL, source TEXT, embedding BLOB NOT NULL, hash TEXT)")
            con.execute("CREATE INDEX refs_label ON refs(label)")
            con.execute("CREATE INDEX refs_hash ON refs(hash)")
            con.execute(_KEYS_TABLE)
            con.execute("INSERT INTO meta VALUES ('info', ?)", (json.dumps(info),))
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


class SQLiteStore(Store):
    """The gallery database in ``folder`` (see the module docstring); use :meth:`create`
    or :meth:`open`."""

    def __init__(self, folder: Path, info: dict[str, Any]) -> None:
        self.folder = folder
        self.db = folder / DB
        self.where = str(self.db)
        self._info = info
        self._con: sqlite3.Connection | None = None

    @staticmethod
    def exists(folder: str | Path) -> bool:
        """Whether ``folder`` holds a gallery (see :meth:`Gallery.exists`)."""
        return probe(Path(folder) / DB) == "present"

    @classmethod
    def create(cls, folder: Path, info: dict[str, Any]) -> SQLiteStore:
        """A new, empty gallery database in ``folder`` (crash-safe: built aside, renamed)."""
        folder.mkdir(parents=True, exist_ok=True)
        with folder_lock(folder):
            state = probe(folder / DB)
            if state == "present":
                raise GalleryError(f"{folder} already holds a gallery; open it instead")
            if state == "empty":
                logger.warning("%s is empty (an interrupted create of an older version): "
                               "creating the gallery anew", folder / DB)
            write_database(folder, info, [])
        return cls(folder, info)

    @classmethod
    def open(cls, folder: Path) -> SQLiteStore:
        """The gallery database in ``folder``, its settings read (not yet loaded)."""
        db = folder / DB
        state = probe(db)
        if state == "missing":
            raise GalleryError(f"no gallery in {folder} (expected {db})")
        if state == "empty":
            raise GalleryError(f"no gallery in {folder}: {DB} is empty (an interrupted create "
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
        return cls(folder, info)

    def settings(self) -> dict[str, Any]:
        return dict(self._info)

    def load(self, dim: int) -> tuple[int, Rows]:
        """Open the database (upgrading an older schema) and read its references."""
        db = self.db
        con = sqlite3.connect(db, check_same_thread=False, isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")
            _migrate(con, db)
            rows = con.execute("SELECT label, embedding, hash FROM refs ORDER BY id").fetchall()
            version = con.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
        except sqlite3.DatabaseError as exc:
            con.close()
            raise GalleryError(f"{db}: cannot open the gallery ({exc})") from None
        except BaseException:
            con.close()
            raise
        bad = [lab for lab, blob, _ in rows if len(blob) != 4 * dim]
        if bad:
            con.close()
            raise GalleryError(f"{db}: {len(bad)} references have the wrong "
                               f"size (e.g. class {bad[0]!r})")
        vecs = np.frombuffer(b"".join(b for _, b, _ in rows), dtype=np.float32)
        self._con = con
        return (int(version[0]) if version else 0,
                Rows([lab for lab, _, _ in rows], vecs.reshape(-1, dim).copy(),
                     [h for _, _, h in rows]))

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One committed write transaction; rolled back if anything fails."""
        con = self._con
        if con is None:  # never change memory alone: it would not persist
            raise GalleryError(f"the gallery in {self.folder} is closed; open it again "
                               f"to change it")
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
            raise GalleryError(f"{self.db}: the write failed and changed nothing "
                               f"({exc})") from None

    def add(self, labels: Sequence[str], vectors: np.ndarray, hashes: Sequence[str],
            sources: Sequence[str] | None, key: str | None,
            skip_duplicates: bool) -> Written:
        with self._transaction() as con:
            if key is not None:
                row = con.execute("SELECT label, added, skipped FROM enroll_keys "
                                  "WHERE key = ?", (key,)).fetchone()
                if row is not None:
                    version = con.execute("SELECT value FROM meta WHERE key = 'version'"
                                          ).fetchone()
                    return Written(int(version[0]) if version else 0,
                                   replay(key, row, labels[0]))
            stored = None
            if skip_duplicates:
                stored = set()
                unique = list(dict.fromkeys(hashes))
                for s in range(0, len(unique), 500):
                    part = unique[s : s + 500]
                    stored.update(h for (h,) in con.execute(
                        f"SELECT hash FROM refs WHERE hash IN ({','.join('?' * len(part))})",
                        part))
            keep = dedupe(hashes, stored)
            result = Enrolled(len(keep), len(hashes) - len(keep))
            con.executemany("INSERT INTO refs (label, source, embedding, hash) "
                            "VALUES (?, ?, ?, ?)",
                            [(labels[i], None if sources is None else str(sources[i]),
                              vectors[i].tobytes(), hashes[i]) for i in keep])
            if key is not None:
                con.execute("INSERT INTO enroll_keys VALUES (?, ?, ?, ?, ?)",
                            (key, labels[0], result.added, result.skipped, time.time()))
            if keep:
                version = con.execute(_BUMP).fetchone()[0]
            else:
                row = con.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
                version = int(row[0]) if row else 0
        return Written(version, result, keep)

    def remove(self, label: str) -> Written:
        with self._transaction() as con:
            n = con.execute("DELETE FROM refs WHERE label = ?", (label,)).rowcount
            if not n:
                raise KeyError(label)
            version = con.execute(_BUMP).fetchone()[0]
        return Written(version, removed=n)

    def keys(self) -> list[tuple]:
        if self._con is None:
            return []
        return self._con.execute("SELECT * FROM enroll_keys").fetchall()

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
