"""native: the screening kernel compiles into the cache, and can be switched off."""

from __future__ import annotations

import shutil

import pytest
import torch


@pytest.fixture()
def fresh_native(monkeypatch, tmp_path):
    from siamkit import native

    monkeypatch.setattr(native, "_kernel", None)
    monkeypatch.setattr(native, "_tried", False)
    monkeypatch.setenv("SIAMKIT_CACHE_DIR", str(tmp_path))
    return native


def test_kernel_compiles_into_the_cache_and_screens_a_tile(fresh_native, tmp_path):
    if shutil.which("gcc") is None:
        pytest.skip("no C compiler")
    kernel = fresh_native.screen_kernel()
    assert kernel is not None and len(list(tmp_path.glob("screen-*.so"))) == 1
    from siamkit.topk import _NativeScreen

    s = torch.tensor([[0.1, 0.9, 0.3], [0.8, 0.2, 0.7]])
    found = _NativeScreen(kernel)(s, torch.tensor([0.5, 0.75]), torch.tensor([0.5, 0.5, 0.5]),
                                  10, 20, owner=0)
    (owner_a, (ra, ca, va)), (owner_b, (rb, cb, vb)) = found
    assert owner_a == 0 and owner_b == 20
    # rows: row 10 keeps column 21 (0.9 > 0.5); row 11 keeps column 20 (0.8 > 0.75)
    assert list(zip(ra.tolist(), ca.tolist(), strict=True)) == [(10, 21), (11, 20)]
    assert torch.allclose(va, torch.tensor([0.9, 0.8]))
    # columns (threshold 0.5 each): 0.9 (col 21, row 10), 0.8 (col 20, row 11), 0.7
    assert sorted(zip(rb.tolist(), cb.tolist(), strict=True)) == [(20, 11), (21, 10), (22, 11)]


def test_switched_off_or_without_a_compiler_gives_none(fresh_native, monkeypatch):
    monkeypatch.setenv("SIAMKIT_NATIVE", "0")
    assert fresh_native.screen_kernel() is None
    monkeypatch.setattr(fresh_native, "_tried", False)
    monkeypatch.setenv("SIAMKIT_NATIVE", "1")
    monkeypatch.setenv("CC", "/nonexistent/cc")
    assert fresh_native.screen_kernel() is None  # logged, not raised


@pytest.mark.parametrize("isa", [[], ["-mno-avx512f"], ["-mno-avx512f", "-mno-avx2"]],
                         ids=["native", "avx2", "plain"])
def test_every_instruction_set_path_screens_a_wide_tile_alike(fresh_native, monkeypatch,
                                                              isa):
    """The kernel's AVX-512, AVX2 and plain paths (whichever the CPU and flags allow) find
    exactly the entries above their row's or column's threshold, in full 16-wide chunks
    and the ragged end alike."""
    if shutil.which("gcc") is None:
        pytest.skip("no C compiler")
    monkeypatch.setattr(fresh_native, "_FLAGS", [*fresh_native._FLAGS, *isa])
    kernel = fresh_native.screen_kernel()
    assert kernel is not None
    from siamkit.topk import _NativeScreen

    g = torch.Generator().manual_seed(0)
    s = torch.rand(9, 37, generator=g)
    thr_r, thr_c = torch.rand(9, generator=g) * 0.3 + 0.7, torch.rand(37, generator=g) + 0.2
    (_, (ra, ca, va)), (_, (rb, cb, vb)) = _NativeScreen(kernel)(s, thr_r, thr_c, 0, 0,
                                                                 owner=0)
    want_rows = {(r, c) for r in range(9) for c in range(37) if s[r, c] > thr_r[r]}
    want_cols = {(c, r) for r in range(9) for c in range(37) if s[r, c] > thr_c[c]}
    assert set(zip(ra.tolist(), ca.tolist(), strict=True)) == want_rows
    assert set(zip(rb.tolist(), cb.tolist(), strict=True)) == want_cols
    assert torch.equal(va, s[ra, ca]) and want_rows and want_cols
