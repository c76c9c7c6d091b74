"""How long-running library functions report progress without printing anything.

A function that can take a while takes ``progress``, a :data:`Progress` callback: it calls
``progress(stage, total)`` when a stage starts (``total`` items, or None when unknown) and
gets back a :data:`Tick`, which it calls with the number of items just done. The caller
decides what that shows: the CLI draws progress bars, a service logs, a test counts.

    >>> seen = []
    >>> def progress(stage, total):
    ...     seen.append((stage, total))
    ...     return lambda n: None
    >>> evaluate_retrieval(model, data, progress=progress)  # seen: [("embedding", 1200)]
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Tick", "Progress", "start"]

Tick = Callable[[int], None]  # called with the number of items just done
Progress = Callable[[str, "int | None"], Tick]  # starts a stage: its name and size


def _nothing(done: int) -> None:
    """The tick of no progress callback."""


def start(progress: Progress | None, stage: str, total: int | None = None) -> Tick:
    """Start ``stage`` of ``total`` items on ``progress``; its tick (one that does nothing
    when ``progress`` is None)."""
    return progress(stage, total) if progress is not None else _nothing
