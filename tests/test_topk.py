"""blocked_topk and self_topk: exact against torch.topk over the whole score matrix."""

from __future__ import annotations

import pytest
import torch

from siamkit.topk import blocked_topk, self_topk


@pytest.fixture(autouse=True)
def _two_threads():
    """Two torch threads, so the compiled folds' threaded path runs (a test worker may have
    been given one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(max(2, threads))
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(("n", "k", "block", "group", "n_q"), [
    (2000, 10, 128, 8, 40),    # many screened blocks
    (2000, 10, 128, 8, 150),   # enough queries for the compiled folds' two threads
    (1003, 50, 100, 16, 40),   # ragged last block, groups straddling it
    (300, 300, 64, 8, 40),     # k = all references: one ranked block
    (500, 1, 37, 3, 40),
])
@pytest.mark.parametrize("screen", ["native", "torch"])
def test_blocked_topk_equals_full_topk(n: int, k: int, block: int, group: int, n_q: int,
                                       screen: str, monkeypatch) -> None:
    """Both paths: the compiled kernel folding blocks into heaps, and torch's group maxima
    with merges."""
    from siamkit import topk
    from siamkit.native import screen_kernel

    if screen == "torch":
        monkeypatch.setattr(topk, "_heap_kernel", lambda dtype: None)
    elif screen_kernel() is None:
        pytest.skip("no C compiler: the compiled kernel is unavailable")
    jobs = []
    submit = topk._pool().submit
    monkeypatch.setattr(topk._pool(), "submit", lambda *a: jobs.append(1) or submit(*a))
    g = torch.Generator().manual_seed(n)
    q, r = torch.randn(n_q, 8, generator=g), torch.randn(n, 8, generator=g)
    exclude = torch.randint(0, n, (n_q,), generator=g)
    v, i = blocked_topk(q, n, k, lambda qq, a, b: qq @ r[a:b].T, block=block, group=group,
                        exclude=exclude)
    # the same block products (a product's rounding can depend on its shape)
    full = torch.cat([q @ r[a : a + block].T for a in range(0, n, block)], 1)
    full[torch.arange(n_q), exclude] = -torch.inf
    want_v, _ = full.topk(k, dim=1)
    assert torch.equal(v, want_v)
    assert torch.equal(full.gather(1, i), v)  # the indices point at those values
    if k < n:
        assert not (i == exclude[:, None]).any()
    # the compiled folds split 2 x 64 queries or more over two threads, and only those
    assert bool(jobs) == (screen == "native" and n_q >= 2 * topk._THREAD_MIN_ROWS)


def test_blocked_topk_scores_each_reference_block_once() -> None:
    """The screening never asks for a block twice (cost = one pass of matrix products)."""
    calls: list[tuple[int, int]] = []
    q, r = torch.randn(5, 4), torch.randn(1000, 4)

    def scores(qq: torch.Tensor, a: int, b: int) -> torch.Tensor:
        calls.append((a, b))
        return qq @ r[a:b].T

    blocked_topk(q, 1000, 3, scores, block=100)
    assert calls == [(a, min(a + 100, 1000)) for a in range(0, 1000, 100)]


@pytest.mark.parametrize(("n", "k", "block", "rows", "group", "floor", "buffer"), [
    (700, 10, 128, 64, 8, "none", 1 << 23),   # no floor: the first tiles rank everything
    (701, 25, 100, 30, 7, "loose", 1 << 23),  # ragged blocks, tiles and groups
    (500, 40, 64, 64, 8, "tight", 1 << 23),   # a floor just under the true k-th best
    (400, 12, 50, 20, 4, "none", 50),         # tiny buffer: merges after every tile
    (30, 29, 8, 3, 8, "none", 1 << 23),       # k = every other row
    (2, 1, 4096, 1024, 8, "none", 1 << 23),
])
@pytest.mark.parametrize("screen", ["native", "numpy"])
def test_self_topk_equals_full_topk(n: int, k: int, block: int, rows: int, group: int,
                                    floor: str, buffer: int, screen: str, monkeypatch) -> None:
    """Both screens: the compiled one folding into heaps, and numpy's candidates and merges."""
    from siamkit import topk
    from siamkit.native import screen_kernel

    if screen == "numpy":
        monkeypatch.setattr(topk, "_heap_kernel", lambda dtype: None)
    elif screen_kernel() is None:
        pytest.skip("no C compiler: the compiled screen is unavailable")
    g = torch.Generator().manual_seed(n)
    x = torch.nn.functional.normalize(torch.randn(n, 6, generator=g), dim=1)
    full = x @ x.T
    full.fill_diagonal_(-torch.inf)
    want_v, _ = full.topk(k, dim=1)
    bound = None
    if floor == "loose":  # the k-th best of the first k other rows, as a caller might know
        bound = full[:, :k + 1].topk(k, dim=1).values[:, -1] - 1e-4
    elif floor == "tight":
        bound = want_v[:, -1] - 1e-5
    v, i = self_topk(x, k, block=block, rows=rows, group=group, floor=bound, buffer=buffer)
    assert v.shape == (n, k) and i.dtype == torch.int32
    # a pair's product may round differently in another tile's shape: compare closely
    torch.testing.assert_close(v, want_v, atol=1e-6, rtol=0)
    torch.testing.assert_close(full.gather(1, i.long()), v, atol=1e-6, rtol=0)
    assert not (i.long() == torch.arange(n)[:, None]).any()  # never itself
    assert all(len(set(row)) == k for row in i.tolist())  # no neighbour twice
    assert (v[:, :-1] >= v[:, 1:]).all()  # best first


def test_topk_merges_keep_float64_and_float16_scores_apart() -> None:
    """Scores that are equal only once rounded to float32 still rank right, and self_topk
    takes any float dtype."""
    q, r = torch.ones(1, 1, dtype=torch.float64), torch.zeros(20, 1, dtype=torch.float64)
    r[9], r[10] = 0.5, 0.5 + 1e-12
    v, i = blocked_topk(q, 20, 1, lambda qq, a, b: qq @ r[a:b].T, block=4)
    assert i.tolist() == [[10]]
    for dtype in (torch.float64, torch.float16):
        x = torch.nn.functional.normalize(torch.randn(50, 4), dim=1).to(dtype)
        full = x @ x.T
        full.fill_diagonal_(-torch.inf)
        v, i = self_topk(x, 5, block=16, rows=8)
        assert v.dtype == dtype
        torch.testing.assert_close(v, full.topk(5, dim=1).values, atol=1e-3, rtol=0)


def test_self_topk_takes_tensors_that_require_grad_and_checks_its_floor() -> None:
    x = torch.nn.functional.normalize(torch.randn(30, 4), dim=1).requires_grad_()
    v, _ = self_topk(x, 3, block=8)
    assert not v.requires_grad
    with pytest.raises(ValueError, match="one value per row"):
        self_topk(x, 3, floor=torch.zeros(29))


def test_compiled_screen_is_used_when_available(monkeypatch) -> None:
    from siamkit import topk
    from siamkit.native import screen_kernel

    if screen_kernel() is None:
        pytest.skip("no C compiler")
    calls = []
    real = topk._screen
    monkeypatch.setattr(topk, "_screen", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    x = torch.nn.functional.normalize(torch.randn(300, 4), dim=1)
    self_topk(x, 5, block=64, rows=32)
    assert not calls  # no tile needed the numpy screen



def _needs_kernel() -> None:
    from siamkit.native import screen_kernel_bf16

    if screen_kernel_bf16() is None:
        pytest.skip("no C compiler: the compiled screen is unavailable")


@pytest.mark.parametrize(("n", "d", "k", "block", "rows", "scale"), [
    (700, 6, 10, 128, 64, 0.0),    # unit vectors, few dimensions: large relative rounding
    (1003, 128, 25, 100, 30, 0.0),  # ragged blocks and tiles
    (500, 33, 40, 64, 64, 3.0),    # unnormalised, norms up to about 10 (a wider bound)
    (40, 16, 39, 8, 3, 0.0),       # k = every other row
])
def test_self_topk_bf16_screen_equals_the_float32_search(n: int, d: int, k: int, block: int,
                                                         rows: int, scale: float) -> None:
    """bf16 products only screen: the neighbours and their float32 scores are those of the
    whole float32 matrix, on any CPU (where bf16 is not native it is only slower)."""
    _needs_kernel()
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, d, generator=g)
    x = torch.nn.functional.normalize(x, dim=1) if scale == 0 else x * scale
    full = x @ x.T
    full.fill_diagonal_(-torch.inf)
    want_v, want_i = full.topk(k, dim=1)
    v, i = self_topk(x, k, block=block, rows=rows, screen="bf16")
    torch.testing.assert_close(v, want_v, atol=1e-5 * max(1.0, scale**2), rtol=1e-6)
    assert torch.equal(i.long(), want_i)  # no near-ties in random data
    floor = want_v[:, -1] - 1e-4  # with a floor the heaps start at it
    v2, i2 = self_topk(x, k, block=block, rows=rows, screen="bf16", floor=floor)
    assert torch.equal(i2, i) and torch.equal(v2, v)


def test_inner_topk_bf16_screen_equals_the_float32_search() -> None:
    """Queries against references, with an excluded reference per query, in both screens;
    a neighbour just above another by less than bf16's resolution still ranks first."""
    from siamkit.topk import inner_topk

    _needs_kernel()
    g = torch.Generator().manual_seed(1)
    r = torch.nn.functional.normalize(torch.randn(2000, 64, generator=g), dim=1)
    q = torch.nn.functional.normalize(torch.randn(150, 64, generator=g), dim=1)
    r[7] = q[0]
    r[8] = torch.nn.functional.normalize(q[0] + 1e-3 * r[9], dim=0)  # rounds to r[7]'s score
    exclude = torch.randint(0, 2000, (150,), generator=g)
    exclude[0] = 5
    full = q @ r.T
    full[torch.arange(150), exclude] = -torch.inf
    want_v, want_i = full.topk(10, dim=1)
    for screen in ("bf16", "fp32"):
        v, i = inner_topk(q, r, 10, block=256, exclude=exclude, screen=screen)
        torch.testing.assert_close(v, want_v, atol=1e-6, rtol=0)
        assert torch.equal(i, want_i), screen
    assert want_i[0, :2].tolist() == [7, 8]


def test_bf16_rounding_bound_holds_on_adversarial_vectors() -> None:
    """The bound covers the worst cases met: all-equal components (every rounding in one
    direction) and values at bf16's rounding midpoints, unit and large norms."""
    from siamkit.topk import bf16_rounding_bound

    g = torch.Generator().manual_seed(2)
    for d in (1, 7, 128, 1024):
        mid = 1 + 2.0**-8 + 2.0**-20  # just above a bfloat16 midpoint: rounds up by ~2^-8
        cases = [torch.full((4, d), mid), torch.randn(64, d, generator=g) * 50,
                 torch.nn.functional.normalize(torch.rand(64, d, generator=g), dim=1)]
        for x in cases:
            xb = x.to(torch.bfloat16)
            err = ((xb @ xb.T).float() - x @ x.T).abs().max().item()
            norm = float(x.norm(dim=1).max())
            assert err <= bf16_rounding_bound(d, norm, norm), (d, err)


def test_auto_screen_takes_bf16_only_with_amx() -> None:
    from siamkit.topk import screen_precision

    assert screen_precision("auto", flags=frozenset({"avx2", "avx512f", "avx512_bf16"})) == "fp32"
    assert screen_precision("fp32", flags=frozenset({"amx_bf16"})) == "fp32"
    _needs_kernel()
    assert screen_precision("auto", flags=frozenset({"amx_bf16", "avx512f"})) == "bf16"
    with pytest.raises(ValueError, match="screen must be one of"):
        screen_precision("fp16")
