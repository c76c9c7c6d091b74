"""The machine record every benchmark writes: CPU flags, peaks, FAISS's BLAS."""

from __future__ import annotations

import importlib.util

import pytest

from siamkit import machine


def test_peak_counts_the_widest_units():
    avx2 = machine.peak_gflops(frozenset({"avx2", "fma"}))
    avx512 = machine.peak_gflops(frozenset({"avx2", "avx512f"}))
    assert (avx2["fp32_lanes"], avx512["fp32_lanes"]) == (8, 16)
    assert "bf16_peak_gflops" not in avx2
    amx = machine.peak_gflops(frozenset({"avx512f", "avx512_bf16", "amx_bf16"}))
    bf16 = machine.peak_gflops(frozenset({"avx512f", "avx512_bf16"}))
    if amx["mhz"]:  # the clock is read from /proc/cpuinfo: AMX 1,024 against 2 x 32 lanes
        assert amx["bf16_peak_gflops"] == pytest.approx(16 * bf16["bf16_peak_gflops"])


@pytest.mark.skipif(importlib.util.find_spec("faiss") is None, reason="faiss-cpu not installed")
def test_faiss_blas_names_the_kernels_it_chose():
    blas = machine.faiss_blas()
    if blas is None:
        pytest.skip("this faiss-cpu build bundles no OpenBLAS")
    assert blas["core"] and "OpenBLAS" in blas["config"]
    assert machine.describe()["faiss_blas"] == blas


def test_faiss_blas_is_none_without_faiss(monkeypatch):
    monkeypatch.setattr(machine.importlib.util, "find_spec", lambda name: None)
    assert machine.faiss_blas() is None
