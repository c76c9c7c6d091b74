"""The shared gallery store: a PostgreSQL database that several replicas write and follow.

Open it by URL, ``postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE`` (libpq's; a password
may also come from ``PGPASSWORD`` or ``~/.pgpass``, and a schema other than the first of
the search path from ``?options=-csearch_path%3DNAME``). Needs psycopg 3 (``pip install
'siamkit[postgres]'``). Tables, in that schema:

* ``siamkit_meta``: one row, the settings (JSON, with the model identity) and the
  gallery's *version*;
* ``siamkit_refs``: references (label, source, float32 embedding bytes, content hash) with
  the version that added them;
* ``siamkit_changes``: one row per version (``add`` or ``remove`` of a label);
* ``siamkit_keys``: idempotency keys.

Every enroll and removal is one transaction that first locks the meta row, so writers
commit one at a time and versions are committed in order (a replica that has read version
``v`` never later finds a change numbered below ``v``). The transaction announces its
version on the channel ``siamkit_gallery`` (``NOTIFY``, delivered at commit). Creating a
gallery is one transaction too, under an advisory lock, so replicas starting together on an
empty database make one gallery.

Errors: a URL that does not parse, or a server that cannot be reached, is one line naming
the URL without its password and what to check; a connection lost while working raises
:class:`~siamkit.gallery.store.StoreUnavailable` (nothing acknowledged is lost: a write
whose commit was not confirmed was not acknowledged, and retrying it with its idempotency
key applies it once).
"""

from __future__ import annotations

import json
import os
import re
import select
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from ..search import GalleryError
from .store import (
    Change,
    Enrolled,
    Rows,
    SharedStore,
    StoreUnavailable,
    Watch,
    Written,
    dedupe,
    replay,
)

__all__ = ["CHANNEL", "PostgresStore", "redact"]

CHANNEL = "siamkit_gallery"
_LOCK_ID = 0x5A3C_0001  # advisory lock: one create at a time in a database
_SCHEMA = (
    "CREATE TABLE siamkit_meta (id integer PRIMARY KEY CHECK (id = 1), info text NOT NULL, "
    "version bigint NOT NULL)",
    "CREATE TABLE siamkit_refs (id bigserial PRIMARY KEY, version bigint NOT NULL, "
    "label text NOT NULL, source text, embedding bytea NOT NULL, hash text NOT NULL)",
    "CREATE INDEX siamkit_refs_version ON siamkit_refs (version)",
    "CREATE INDEX siamkit_refs_label ON siamkit_refs (label)",
    "CREATE INDEX siamkit_refs_hash ON siamkit_refs (hash)",
    "CREATE TABLE siamkit_changes (version bigint PRIMARY KEY, op text NOT NULL "
    "CHECK (op IN ('add', 'remove')), label text, refs integer NOT NULL, "
    "at timestamptz NOT NULL DEFAULT now())",
    "CREATE TABLE siamkit_keys (key text PRIMARY KEY, label text NOT NULL, "
    "added integer NOT NULL, skipped integer NOT NULL, created double precision NOT NULL)",
)
_USAGE = "postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE"


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise GalleryError("a PostgreSQL gallery needs psycopg 3: pip install "
                           "'siamkit[postgres]'") from None
    return psycopg


def redact(url: str) -> str:
    """``url`` without its password (nor any query part, which may hold one); a folder
    path is returned as it is."""
    if "://" not in url:
        return url
    try:
        parts = urllib.parse.urlsplit(url)
        user = f"{parts.username}@" if parts.username else ""
        host = parts.hostname or ""
        if ":" in host:  # an IPv6 address
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
        query = "?..." if parts.query else ""
        return f"{parts.scheme}://{user}{host}{port}{parts.path}{query}"
    except ValueError:  # a port that is not a number...
        return f"{url.split('://', 1)[0]}://..."


def _secrets(url: str) -> list[str]:
    """Passwords in ``url`` (in the authority or a ``password=`` parameter)."""
    found = re.findall(r"://[^/@:]*:([^@/]*)@", url)
    found += re.findall(r"[?&]password=([^&]*)", url)
    return [s for s in found if s]


def _one_line(exc: BaseException, url: str) -> str:
    """A driver error as one line, without the URL's password."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    for secret in _secrets(url):
        text = text.replace(secret, "***").replace(urllib.parse.unquote(secret), "***")
    return text


def _connect(url: str, role: str = "siamkit") -> Any:
    """An autocommit connection to ``url`` (``application_name`` ``role``: ``siamkit``
    for reads and writes, ``siamkit-follow`` for a replica's listening connection), or one
    clear GalleryError / StoreUnavailable."""
    psycopg = _psycopg()
    where = redact(url)
    try:
        urllib.parse.urlsplit(url).port  # noqa: B018 - raises on a port that is no number
        params = psycopg.conninfo.conninfo_to_dict(url)
    except (ValueError, psycopg.Error) as exc:
        raise GalleryError(f"bad gallery database URL {where} ({_one_line(exc, url)}): "
                           f"expected {_USAGE}") from None
    # fail fast on a server that is down, and notice a dead peer within seconds
    for name, value in (("connect_timeout", "5"), ("keepalives", "1"),
                        ("keepalives_idle", "5"), ("keepalives_interval", "2"),
                        ("keepalives_count", "3"), ("application_name", role)):
        params.setdefault(name, value)
    try:
        return psycopg.connect(autocommit=True, **params)
    except psycopg.Error as exc:
        raise StoreUnavailable(
            f"cannot reach the gallery database {where} ({_one_line(exc, url)}): check that "
            f"the server is running and the URL's host, port, database name, user and "
            f"password (or PGPASSWORD / ~/.pgpass)") from None


def _has_gallery(con: Any) -> bool:
    return con.execute("SELECT to_regclass('siamkit_meta')").fetchone()[0] is not None


def _read_changes(con: Any, since: int, dim: int,
                  where: str) -> tuple[int, list[Change]] | None:
    """The version now and the changes after ``since`` (one consistent snapshot)."""
    with con.transaction():
        con.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        head = con.execute("SELECT version FROM siamkit_meta").fetchone()[0]
        if head < since:
            return None
        if head == since:
            return head, []
        log = con.execute("SELECT version, op, label FROM siamkit_changes WHERE version > %s "
                          "ORDER BY version", (since,)).fetchall()
        rows = con.cursor(binary=True).execute(
            "SELECT version, label, embedding, hash FROM siamkit_refs WHERE version > %s "
            "ORDER BY id", (since,)).fetchall()
    added: dict[int, list[tuple]] = {}
    for row in rows:
        added.setdefault(row[0], []).append(row)
    changes = []
    for version, op, label in log:
        if op == "remove":
            changes.append(Change(version, removed=label))
        else:
            changes.append(Change(version, rows=_rows(added.get(version, []), dim, where)))
    return head, changes


def _rows(rows: Sequence[tuple], dim: int, where: str) -> Rows:
    """Rows (..., label, embedding, hash) as :class:`Rows`, refusing wrong sizes."""
    bad = [r[-3] for r in rows if len(r[-2]) != 4 * dim]
    if bad:
        raise GalleryError(f"{where}: {len(bad)} references have the wrong size (e.g. class "
                           f"{bad[0]!r})")
    vecs = np.frombuffer(b"".join(bytes(r[-2]) for r in rows), dtype=np.float32)
    return Rows([r[-3] for r in rows], vecs.reshape(-1, dim).copy(), [r[-1] for r in rows])


class PostgresWatch(Watch):
    """A LISTENing connection (see :class:`~siamkit.gallery.sync.Follower`)."""

    def __init__(self, url: str, where: str) -> None:
        self.url, self.where = url, where
        self._con = _connect(url, "siamkit-follow")
        self._wake_r, self._wake_w = os.pipe()
        # a notification read from the socket while another statement ran (a catch-up)
        # leaves nothing for select() to see: the handler remembers it
        self._pending = False
        self._con.add_notify_handler(self._notified)
        try:
            self._con.execute(f"LISTEN {CHANNEL}")
        except Exception as exc:
            self.close()
            raise StoreUnavailable(f"{where}: {_one_line(exc, url)}") from None

    @contextmanager
    def _errors(self) -> Iterator[None]:
        psycopg = _psycopg()
        try:
            yield
        except psycopg.Error as exc:
            raise StoreUnavailable(f"{self.where}: {_one_line(exc, self.url)}") from None

    def _notified(self, _: Any) -> None:
        self._pending = True

    def wait(self, timeout: float) -> None:
        with self._errors():
            if not self._pending:
                select.select([self._con.fileno(), self._wake_r], [], [], timeout)
            self._pending = False
            # reads whatever arrived (notifications are drained into the connection) and
            # fails if the server went away
            self._con.execute("SELECT 1")

    def changes(self, since: int, dim: int) -> tuple[int, list[Change]] | None:
        with self._errors():
            return _read_changes(self._con, since, dim, self.where)

    def interrupt(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:  # closed already
            pass

    def close(self) -> None:
        try:
            self._con.close()
        finally:
            for fd in (self._wake_r, self._wake_w):
                try:
                    os.close(fd)
                except OSError:
                    pass


class PostgresStore(SharedStore):
    """A gallery in a PostgreSQL database (see the module docstring); use :meth:`create`
    or :meth:`open`."""

    def __init__(self, url: str, info: dict[str, Any], con: Any) -> None:
        self.url, self.where = url, redact(url)
        self._info = info
        self._con = con
        self._lock = threading.Lock()  # one statement at a time on the connection
        self._closed = False

    @staticmethod
    def exists(url: str) -> bool:
        """Whether the database at ``url`` holds a gallery."""
        con = _connect(url)
        try:
            return _has_gallery(con)
        except _psycopg().Error as exc:
            raise StoreUnavailable(f"{redact(url)}: {_one_line(exc, url)}") from None
        finally:
            con.close()

    @classmethod
    def create(cls, url: str, info: dict[str, Any]) -> PostgresStore:
        """Create the gallery's tables (one transaction; refused where a gallery is)."""
        con = _connect(url)
        where = redact(url)
        try:
            with con.transaction():
                con.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
                if _has_gallery(con):
                    raise GalleryError(f"{where} already holds a gallery; open it instead")
                for statement in _SCHEMA:
                    con.execute(statement)
                con.execute("INSERT INTO siamkit_meta VALUES (1, %s, 0)", (json.dumps(info),))
        except _psycopg().Error as exc:
            con.close()
            raise GalleryError(f"{where}: cannot create the gallery "
                               f"({_one_line(exc, url)})") from None
        except BaseException:
            con.close()
            raise
        return cls(url, info, con)

    @classmethod
    def open(cls, url: str) -> PostgresStore:
        """The gallery at ``url``, its settings read (not yet loaded)."""
        con = _connect(url)
        where = redact(url)
        try:
            if not _has_gallery(con):
                raise GalleryError(f"no gallery in {where}: create one first (enroll, or "
                                   f"start the service, with this URL)")
            row = con.execute("SELECT info FROM siamkit_meta WHERE id = 1").fetchone()
            if row is None:
                raise ValueError("no settings row")
            info = json.loads(row[0])
            if not isinstance(info, dict):
                raise ValueError("its settings are not a JSON object")
        except (ValueError, _psycopg().Error) as exc:
            con.close()
            raise GalleryError(f"{where}: not a readable gallery "
                               f"({_one_line(exc, url)})") from None
        except BaseException:
            con.close()
            raise
        return cls(url, info, con)

    def settings(self) -> dict[str, Any]:
        return dict(self._info)

    @contextmanager
    def _using(self) -> Iterator[Any]:
        """The connection (reconnected if it was lost), driver errors mapped: a lost
        connection is StoreUnavailable, anything else a GalleryError."""
        psycopg = _psycopg()
        with self._lock:
            if self._closed:
                raise GalleryError(f"the gallery in {self.where} is closed; open it again "
                                   f"to change it")
            if self._con is None or self._con.closed or self._con.broken:
                self._con = _connect(self.url)
            con = self._con
            try:
                yield con
            except psycopg.Error as exc:
                if con.closed or con.broken or isinstance(exc, psycopg.OperationalError |
                                                          psycopg.InterfaceError):
                    if con.closed or con.broken:
                        con.close()
                        self._con = None
                    raise StoreUnavailable(
                        f"the gallery database {self.where} is unavailable "
                        f"({_one_line(exc, self.url)}): nothing was acknowledged; retry "
                        f"(an enroll with an idempotency key is applied once)") from None
                raise GalleryError(f"{self.where}: the write failed and changed nothing "
                                   f"({_one_line(exc, self.url)})") from None

    def load(self, dim: int) -> tuple[int, Rows]:
        with self._using() as con:
            with con.transaction():
                con.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                head = con.execute("SELECT version FROM siamkit_meta").fetchone()[0]
                rows = con.cursor(binary=True).execute(
                    "SELECT label, embedding, hash FROM siamkit_refs ORDER BY id").fetchall()
        return head, _rows(rows, dim, self.where)

    def changes(self, since: int, dim: int) -> tuple[int, list[Change]] | None:
        with self._using() as con:
            return _read_changes(con, since, dim, self.where)

    def watch(self) -> PostgresWatch:
        return PostgresWatch(self.url, self.where)

    def add(self, labels: Sequence[str], vectors: np.ndarray, hashes: Sequence[str],
            sources: Sequence[str] | None, key: str | None,
            skip_duplicates: bool) -> Written:
        with self._using() as con, con.transaction():
            # the row lock orders writers: versions commit in sequence
            head = con.execute("SELECT version FROM siamkit_meta WHERE id = 1 "
                               "FOR UPDATE").fetchone()[0]
            if key is not None:
                row = con.execute("SELECT label, added, skipped FROM siamkit_keys "
                                  "WHERE key = %s", (key,)).fetchone()
                if row is not None:
                    return Written(head, replay(key, row, labels[0]))
            stored = None
            if skip_duplicates:
                stored = {h for (h,) in con.execute(
                    "SELECT DISTINCT hash FROM siamkit_refs WHERE hash = ANY(%s)",
                    (sorted(set(hashes)),))}
            keep = dedupe(hashes, stored)
            result = Enrolled(len(keep), len(hashes) - len(keep))
            version = head
            if keep:
                version = head + 1
                with con.cursor().copy("COPY siamkit_refs (version, label, source, embedding, "
                                       "hash) FROM STDIN") as copy:
                    for i in keep:
                        copy.write_row((version, labels[i],
                                        None if sources is None else str(sources[i]),
                                        vectors[i].tobytes(), hashes[i]))
                one = len({labels[i] for i in keep}) == 1
                con.execute("INSERT INTO siamkit_changes (version, op, label, refs) "
                            "VALUES (%s, 'add', %s, %s)",
                            (version, labels[keep[0]] if one else None, len(keep)))
                con.execute("UPDATE siamkit_meta SET version = %s WHERE id = 1", (version,))
                con.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(version)))
            if key is not None:
                con.execute("INSERT INTO siamkit_keys VALUES (%s, %s, %s, %s, %s)",
                            (key, labels[0], result.added, result.skipped, time.time()))
        return Written(version, result, keep)

    def remove(self, label: str) -> Written:
        with self._using() as con, con.transaction():
            head = con.execute("SELECT version FROM siamkit_meta WHERE id = 1 "
                               "FOR UPDATE").fetchone()[0]
            n = con.execute("DELETE FROM siamkit_refs WHERE label = %s", (label,)).rowcount
            if not n:
                raise KeyError(label)
            version = head + 1
            con.execute("INSERT INTO siamkit_changes (version, op, label, refs) "
                        "VALUES (%s, 'remove', %s, %s)", (version, label, n))
            con.execute("UPDATE siamkit_meta SET version = %s WHERE id = 1", (version,))
            con.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(version)))
        return Written(version, removed=n)

    def keys(self) -> list[tuple]:
        with self._using() as con:
            return [tuple(r) for r in con.execute(
                "SELECT key, label, added, skipped, created FROM siamkit_keys").fetchall()]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._con is not None:
                self._con.close()
                self._con = None
