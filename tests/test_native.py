"""native: the screening kernel compiles into the cache, and can be switched off."""

from __future__ import annotations

import shutil

import pytest
import torch


@pytest.fixture()
def fresh_native(monkeypatch, tmp_path):
    from siamkit import native

    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setattr(native, "_tried", False)
    monkeypatch.setenv("SIAMKIT_CACHE_DIR", str(tmp_path))
    return native


def _fold(kernel, s, n, k, row0, col0, bar, rows=True, columns=True):
    """Fold tile ``s`` into fresh heaps of ``n`` rows; each row's values best first."""
    from siamkit.topk import fold_tile

    thr = bar.clone()
    hv, hi = torch.full((n, k), -torch.inf), torch.zeros((n, k), dtype=torch.int32)
    fold_tile(kernel, s.contiguous(), row0, col0, thr, bar, hv, hi, rows, columns)
    v, order = hv.sort(dim=1, descending=True)
    return v, hi.gather(1, order), thr


def test_kernel_compiles_into_the_cache_and_folds_a_tile(fresh_native, tmp_path):
    if shutil.which("gcc") is None:
        pytest.skip("no C compiler")
    kernel = fresh_native.screen_kernel()
    assert kernel is not None and len(list(tmp_path.glob("screen-*.so"))) == 1
    # a 2 x 3 tile: rows 0-1 against columns 2-4 of a 5-row set, top 2 of each row
    s = torch.tensor([[0.1, 0.9, 0.3], [0.8, 0.2, 0.7]])
    bar = torch.tensor([0.5, 0.75, 0.5, 0.5, -torch.inf])
    v, i, thr = _fold(kernel, s, 5, 2, 0, 2, bar)
    # row 0 keeps 0.9 (column 3); row 1 keeps 0.8 (column 2), not 0.7 (below its bar 0.75)
    assert i[0, 0] == 3 and i[1, 0] == 2 and v[0, 1] == v[1, 1] == -torch.inf
    # columns as rows: row 2 gets 0.8 from row 1; row 3 0.9 from row 0; row 4 0.7 from row 1
    # and 0.3 from row 0 (its bar is -inf); a full row's threshold is its 2nd best
    assert [i[r, 0].item() for r in (2, 3, 4)] == [1, 0, 1] and i[4, 1] == 0
    torch.testing.assert_close(v[4], torch.tensor([0.7, 0.3]))
    torch.testing.assert_close(thr, torch.tensor([0.5, 0.75, 0.5, 0.5, 0.3]))


def test_switched_off_or_without_a_compiler_gives_none(fresh_native, monkeypatch):
    monkeypatch.setenv("SIAMKIT_NATIVE", "0")
    assert fresh_native.screen_kernel() is None
    monkeypatch.setattr(fresh_native, "_tried", False)
    monkeypatch.setenv("SIAMKIT_NATIVE", "1")
    monkeypatch.setenv("CC", "/nonexistent/cc")
    assert fresh_native.screen_kernel() is None  # logged, not raised


@pytest.mark.parametrize(("rows", "columns"), [(True, True), (True, False), (False, True)])
@pytest.mark.parametrize("isa", [[], ["-mno-avx512f"], ["-mno-avx512f", "-mno-avx2"]],
                         ids=["native", "avx2", "plain"])
def test_every_instruction_set_path_screens_a_wide_tile_alike(fresh_native, monkeypatch,
                                                              isa, rows, columns):
    """The kernel's AVX-512, AVX2 and plain paths (whichever the CPU and flags allow) keep
    exactly the top k of the entries above each row's bar, in full 16-wide chunks and the
    ragged end alike, for the tile's rows, its columns or both."""
    if shutil.which("gcc") is None:
        pytest.skip("no C compiler")
    monkeypatch.setattr(fresh_native, "_FLAGS", [*fresh_native._FLAGS, *isa])
    kernel = fresh_native.screen_kernel()
    assert kernel is not None
    g = torch.Generator().manual_seed(0)
    n, k = 60, 5
    s = torch.rand(9, 37, generator=g)  # rows 0-8 against columns 20-56
    bar = torch.rand(n, generator=g) * 0.4 + 0.5
    v, i, _ = _fold(kernel, s, n, k, 0, 20, bar, rows, columns)
    full = torch.full((n, n), -torch.inf)
    if rows:
        full[0:9, 20:57] = s
    if columns:
        full[20:57, 0:9] = s.T
    want = full.masked_fill(full <= bar[:, None], -torch.inf).topk(k, dim=1)
    torch.testing.assert_close(v, want.values)
    hit = torch.isfinite(v)
    assert torch.equal(full.gather(1, i.long())[hit], v[hit])
    assert bool(hit[:9].any()) == rows and bool(hit[20:].any()) == columns


@pytest.mark.parametrize("isa", [[], ["-mno-avx512f"], ["-mno-avx512f", "-mno-avx2"]],
                         ids=["native", "avx2", "plain"])
def test_every_instruction_set_path_rescores_a_bf16_tile_alike(fresh_native, monkeypatch, isa):
    """heap_tile_bf16 on each instruction-set path: from bfloat16 scores of rounded vectors
    it keeps exactly the float32 top k (rows and columns), with float32 scores."""
    if shutil.which("gcc") is None:
        pytest.skip("no C compiler")
    from siamkit.topk import bf16_rounding_bound, fold_tile_bf16

    monkeypatch.setattr(fresh_native, "_FLAGS", [*fresh_native._FLAGS, *isa])
    kernel = fresh_native.screen_kernel_bf16()
    assert kernel is not None
    g = torch.Generator().manual_seed(0)
    n, k, d = 60, 5, 24
    x = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)
    xr, xc = x[0:9].contiguous(), x[20:57].contiguous()  # rows 0-8 against rows 20-56
    s = (xr.bfloat16() @ xc.bfloat16().T).contiguous()
    bar = torch.full((n,), -torch.inf)
    thr = bar.clone()
    hv, hi = torch.full((n, k), -torch.inf), torch.zeros((n, k), dtype=torch.int32)
    fold_tile_bf16(kernel, s, 0, 20, thr, bar, hv, hi, xr, xc, bf16_rounding_bound(d, 1, 1),
                   rows=True, columns=True)
    v, order = hv.sort(dim=1, descending=True)
    full = torch.full((n, n), -torch.inf)
    full[0:9, 20:57] = xr @ xc.T
    full[20:57, 0:9] = (xr @ xc.T).T
    want = full.topk(k, dim=1)
    torch.testing.assert_close(v, want.values, atol=1e-6, rtol=0)
    hit = torch.isfinite(want.values)
    assert torch.equal(hi.gather(1, order)[hit].long(), want.indices[hit])
