"""benchmarks/serve.py's search table: FAISS missing is reported, any other error surfaces
(the smoke test in test_benchmarks.py runs the whole benchmark)."""

from __future__ import annotations

import importlib.util

import pytest

from conftest import import_benchmark


@pytest.fixture
def bench():
    return import_benchmark("serve")


def _faiss_installed(monkeypatch, installed: bool) -> None:
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name == "faiss":
            return real("json") if installed else None  # any spec will do
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_a_faiss_error_is_not_taken_for_faiss_missing(bench, monkeypatch):
    import siamkit.gallery

    class Broken:
        def __init__(self, *args, **kwargs) -> None:
            raise RuntimeError("faiss index broke")

    _faiss_installed(monkeypatch, True)
    monkeypatch.setattr(siamkit.gallery, "FaissIndex", Broken)
    with pytest.raises(RuntimeError, match="faiss index broke"):
        bench.bench_search(300, 8, 10)


def test_faiss_missing_is_reported_in_the_table(bench, monkeypatch):
    _faiss_installed(monkeypatch, False)
    rows = bench.bench_search(300, 8, 10)
    assert rows[0]["backend"] == "exact" and rows[0]["recall_at_10_vs_exact"] == 1.0
    assert [r["error"] for r in rows[1:]] == ["faiss not installed"] * 3
