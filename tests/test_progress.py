"""Progress callbacks: stages started with their size, ticks counted; none means nothing."""

from __future__ import annotations

from siamkit.progress import start


def test_start_opens_a_stage_and_returns_its_tick():
    seen: list = []

    def progress(stage, total):
        seen.append((stage, total))
        return lambda n: seen.append(n)

    tick = start(progress, "embedding", 10)
    tick(4)
    tick(6)
    assert seen == [("embedding", 10), 4, 6]


def test_without_a_callback_the_tick_does_nothing():
    tick = start(None, "embedding", 10)
    assert tick(3) is None  # callable, silent
