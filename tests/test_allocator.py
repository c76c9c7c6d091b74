"""siamkit.allocator: glibc keeps freed memory for the next training step."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_large_blocks_stay_in_the_process_after_it():
    """A 64 MB block freed and allocated again: before, glibc unmaps it and the second
    allocation faults every page in again; after, the pages stay mapped and it faults none.
    Counted in a fresh process (the setting holds for the rest of a process)."""
    script = """
import resource, torch
from siamkit.allocator import keep_freed_memory

def faults_of_a_fresh_64mb_block():
    x = torch.ones(16 * 2**20)  # 64 MB, every page touched
    del x
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    y = torch.ones(16 * 2**20)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

returned = faults_of_a_fresh_64mb_block()
assert keep_freed_memory() and keep_freed_memory()  # idempotent
faults_of_a_fresh_64mb_block()  # the first block of the new heap is faulted in once
kept = faults_of_a_fresh_64mb_block()
print(returned, kept)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout.split()
    returned, kept = int(out[0]), int(out[1])
    assert returned > 10_000  # 16,384 pages of 4 KB faulted in again
    assert kept < returned / 10


@pytest.mark.parametrize("how", ["musl", "env"])
def test_off_glibc_or_when_turned_off_nothing_is_touched(monkeypatch, how):
    from siamkit import allocator

    allocator.keep_freed_memory.cache_clear()
    if how == "musl":
        monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("musl", "1.2"))
    else:
        monkeypatch.setenv("SIAMKIT_KEEP_FREED_MEMORY", "0")
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda *a: 1 / 0)  # never reached
    try:
        assert allocator.keep_freed_memory() is False
    finally:
        allocator.keep_freed_memory.cache_clear()


def test_every_command_asks_for_it(monkeypatch, capsys):
    from siamkit import cli

    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(1) or True)
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert calls == []  # --version exits while parsing, before any work
    assert cli.main(["eval", "verification", "--model", "/nonexistent", "--pairs", "x"]) == 1
    assert calls == [1] and "model folder not found" in capsys.readouterr().err
