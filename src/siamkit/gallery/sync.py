"""Replicas follow a shared store: apply its changes in version order as they commit.

A :class:`Follower` is a background thread with its own connection to the store. It
waits for change announcements (PostgreSQL LISTEN / NOTIFY: a committed enroll or removal
notifies at commit) and, at the latest every :data:`POLL_SECONDS`, asks for the version
anyway: the fallback that catches up after a dropped connection, when announcements made
meanwhile were lost. Each wake-up applies every change after the version the gallery has,
in order. A lost connection is retried with a short backoff, and the first thing done on
reconnecting is catching up.

While the connection is lost (or silent for longer than ``stale_after``),
:meth:`Follower.check` raises :class:`~siamkit.gallery.store.StoreUnavailable`: a replica
that cannot see the store must not answer from an index that may miss enrolls
acknowledged by the others.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ..search import GalleryError
from .store import SharedStore, StoreUnavailable, Watch

__all__ = ["POLL_SECONDS", "Follower"]

logger = logging.getLogger(__name__)

#: the longest a replica waits before asking the store's version without an announcement:
#: the bound on how late a change is seen when announcements are lost
POLL_SECONDS = 1.0


class Follower:
    """Keep a gallery in step with a shared store from a background thread.

    Args:
        store: the shared store.
        catch_up: applies the changes read through a :class:`Watch` (the gallery's).
        name: what to call the store in messages.
        poll: seconds between version checks without announcements.
        stale_after: seconds without contact after which :meth:`check` refuses.
    """

    def __init__(self, store: SharedStore, catch_up: Callable[[Watch], object], name: str,
                 poll: float = POLL_SECONDS, stale_after: float | None = None) -> None:
        self.store, self.name, self.poll = store, name, poll
        self.stale_after = stale_after if stale_after is not None else max(5.0, 5 * poll)
        self._catch_up = catch_up
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._watch: Watch | None = None
        self._connected = True  # the gallery was just loaded from the store
        self._last_ok = time.monotonic()
        self._lost_at: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"siamkit-follow {name}",
                                        daemon=True)

    def start(self) -> None:
        """Start following."""
        self._thread.start()

    def stop(self) -> None:
        """Stop following and close the connection."""
        self._stop.set()
        with self._lock:
            if self._watch is not None:
                self._watch.interrupt()
        self._thread.join(timeout=self.poll + 5)

    @property
    def connected(self) -> bool:
        """Whether the store was reachable at the last contact, recently enough."""
        return self._connected and time.monotonic() - self._last_ok <= self.stale_after

    def check(self) -> None:
        """Raise StoreUnavailable when the store has not been reachable lately."""
        if self.connected:
            return
        lost = self._lost_at if self._lost_at is not None else self._last_ok
        raise StoreUnavailable(
            f"the gallery database {self.name} has been unreachable for "
            f"{time.monotonic() - lost:.0f} s: answers could miss enrolls acknowledged by "
            f"other replicas; retry shortly")

    def _lost(self, exc: BaseException) -> None:
        if self._connected:
            logger.warning("lost the gallery database %s: %s", self.name, exc)
            self._lost_at = time.monotonic()
        self._connected = False

    def _run(self) -> None:
        delay = 0.05
        while not self._stop.is_set():
            watch = None
            try:
                watch = self.store.watch()
                with self._lock:
                    self._watch = watch
                if self._stop.is_set():
                    break
                self._catch_up(watch)  # what was committed while nobody listened
                self._last_ok = time.monotonic()
                was_lost, self._connected, self._lost_at, delay = (
                    not self._connected, True, None, 0.05)  # current again, before logging
                if was_lost:
                    logger.warning("the gallery database %s is back: caught up", self.name)
                while not self._stop.is_set():
                    watch.wait(self.poll)
                    if self._stop.is_set():
                        break
                    self._catch_up(watch)
                    self._last_ok = time.monotonic()
            except GalleryError as exc:  # StoreUnavailable, or a change that cannot apply
                self._lost(exc)
            except Exception as exc:  # a driver error the store did not map: same thing
                logger.debug("following %s", self.name, exc_info=True)
                self._lost(StoreUnavailable(f"{type(exc).__name__}: {exc}"))
            finally:
                with self._lock:
                    self._watch = None
                if watch is not None:
                    watch.close()
            self._stop.wait(delay)
            delay = min(2 * delay, 1.0)
