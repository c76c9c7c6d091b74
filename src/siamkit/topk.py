"""Exact top-k of queries against many references, a block of scores at a time.

Shared by gallery search and retrieval metrics. Scores come ``block`` references at a
time (small enough for the matrix product's output to stay in cache: on the 2-core
benchmark machine 1024 x 4096 blocks ran at 131 GFLOP/s against 84 GFLOP/s for 512 x
100,000 rows). Where a C compiler is available (:mod:`siamkit.native`), a small compiled
kernel makes one pass over each block and pushes every score above its query's current
k-th best straight into that query's top-k heap (the queries split between two threads).
Without one, the first block is ranked with ``topk`` and every later block is only
screened: the maxima of groups of ``group`` columns (one reduction) are compared with each
query's current k-th best score, and only the few groups above it are looked at and
merged. Exact either way: nothing at or below a query's k-th best belongs in its top k.

``self_topk`` is the same search of a set against itself under a symmetric similarity
(``x @ x.T``): each pair is scored once, and a block feeds both its rows' and its columns'
top k (half the matrix products of searching row by row).

Inner products can be screened in bfloat16 (``screen="bf16"``; ``auto`` where the CPU
multiplies bfloat16 tiles natively, AMX): the products run on the vectors rounded to
bfloat16, and every entry within the rounding bound (:func:`bf16_rounding_bound`) of its
row's threshold is scored again in float32 from the original vectors before it may enter a
top k. The results are those of a float32 search: the kept scores are float32 dot products.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

__all__ = ["SCREENS", "bf16_rounding_bound", "blocked_topk", "inner_topk", "score_block",
           "screen_precision", "self_topk"]

SCREENS = ("auto", "fp32", "bf16")


def screen_precision(screen: str = "auto", flags: frozenset[str] | None = None) -> str:
    """The precision of the screening products, ``fp32`` or ``bf16``. ``auto`` takes bf16
    where the CPU multiplies bfloat16 tiles natively (the ``amx_bf16`` flag: 4.5x float32's
    products on the 2-core benchmark machine) and the compiled kernel is available.
    ``flags`` overrides the CPU's flags (for tests)."""
    if screen not in SCREENS:
        raise ValueError(f"screen must be one of {', '.join(SCREENS)}: {screen!r}")
    if screen != "auto":
        return screen
    from .machine import cpu_flags

    amx = "amx_bf16" in (cpu_flags() if flags is None else flags)
    return "bf16" if amx and _heap_kernel_bf16() is not None else "fp32"


def bf16_rounding_bound(dim: int, norm_a: float, norm_b: float) -> float:
    """An upper bound on |bf16 score - float32 score| for vectors of ``dim`` dimensions and
    norms at most ``norm_a`` and ``norm_b``: the bf16 score is the product of the vectors
    rounded to bfloat16 (relative error 2^-8 each), accumulated in float32 and rounded to
    bfloat16 (2^-8 of the result); the float32 score has its own accumulation error (``dim``
    float32 roundings). By Cauchy-Schwarz every term scales with ``norm_a * norm_b``."""
    u = 2.0**-8
    eps = 3 * u + 4 * u * u + 2.02 * dim * 2.0**-24
    return 1.01 * eps * norm_a * norm_b + 1e-30

Scores = Callable[[torch.Tensor, int, int], torch.Tensor]


def blocked_topk(
    queries: torch.Tensor, n_refs: int, k: int, scores: Scores, block: int = 4096,
    group: int = 8, exclude: torch.Tensor | None = None,
    rescore: tuple[torch.Tensor, torch.Tensor, float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` highest ``scores`` of each query over references ``0 .. n_refs - 1``.

    Args:
        queries: (Q, D) query vectors, passed through to ``scores``.
        n_refs: number of references.
        k: how many to keep per query (at most ``n_refs``).
        scores: ``scores(queries, start, stop)`` -> (Q, stop - start) scores of the queries
            against references ``start .. stop - 1``; higher is closer.
        block: references scored at a time (memory is Q x block scores).
        group: columns per screening group.
        exclude: optional (Q,) reference index per query that must not be returned (a
            query searching its own set leaves itself out).
        rescore: (queries, references, delta), float32 and contiguous, when ``scores``
            returns bfloat16 products of these vectors rounded (use :func:`inner_topk`):
            the entries within ``delta`` of a threshold are scored again in float32.

    Returns:
        (values (Q, k), indices (Q, k)), best first. Excluded references score -inf: with
        ``k`` equal to ``n_refs`` they come last.
    """
    k = min(k, n_refs)
    if rescore is not None:
        kernel16 = _heap_kernel_bf16()
        if kernel16 is None or not 0 < k < n_refs:
            raise ValueError("a bf16 screen needs the compiled kernel and 0 < k < n_refs")
        return _blocked_heaps(queries, n_refs, k, scores, block, exclude, kernel16, rescore)
    kernel = _heap_kernel(torch.float32) if 0 < k < n_refs else None
    if kernel is not None:
        found = _blocked_heaps(queries, n_refs, k, scores, block, exclude, kernel)
        if found is not None:
            return found
    first = min(n_refs, max(block, 2 * k))
    s = score_block(queries, scores, 0, first, exclude)
    best_v, best_i = s.topk(k, dim=1)
    if first == n_refs or k == 0:
        return best_v, best_i
    thr = best_v[:, -1].clone()  # each query's k-th best so far (contiguous)
    for start in range(first, n_refs, block):
        s = score_block(queries, scores, start, min(n_refs, start + block), exclude)
        rows, cols, vals = _screen(s, thr, group, 0, start)
        if len(rows):
            best_v, best_i, thr = _merge(best_v, best_i, thr, rows, cols, vals, k)
    return best_v, best_i


def _blocked_heaps(queries: torch.Tensor, n_refs: int, k: int, scores: Scores, block: int,
                   exclude: torch.Tensor | None, kernel: Callable[..., None],
                   rescore: tuple[torch.Tensor, torch.Tensor, float] | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """:func:`blocked_topk` through the compiled kernel: each block of scores folded into
    the queries' top-k heaps, the two halves of the queries on two threads where torch has
    more than one (ctypes calls release the GIL). None if the scores are not float32 (the
    caller then screens in torch), or, with ``rescore``, bfloat16. Needs k < n_refs, so
    that every query has k scores above -inf (at most one is excluded)."""
    n_q = len(queries)
    heap_v = torch.full((n_q, k), -torch.inf)
    heap_i = torch.zeros((n_q, k), dtype=torch.int32)
    thr = torch.full((n_q,), -torch.inf)
    bar = thr.clone()
    half = n_q // 2
    for start in range(0, n_refs, block):
        stop = min(n_refs, start + block)
        s = score_block(queries, scores, start, stop, exclude)
        if s.dtype != (torch.float32 if rescore is None else torch.bfloat16):
            return None
        s = s.contiguous()

        parts = [(0, half), (half, n_q)] if (half >= _THREAD_MIN_ROWS
                                              and torch.get_num_threads() > 1) else [(0, n_q)]
        jobs = [_pool().submit(_fold_part, kernel, s, r0, r1, start, stop, thr, bar, heap_v,
                               heap_i, rescore) for r0, r1 in parts[1:]]
        _fold_part(kernel, s, *parts[0], start, stop, thr, bar, heap_v, heap_i, rescore)
        for job in jobs:
            job.result()
    best_v, order = heap_v.sort(dim=1, descending=True)
    return best_v, heap_i.gather(1, order).long()


def _fold_part(kernel: Callable[..., None], s: torch.Tensor, r0: int, r1: int, start: int,
               stop: int, thr: torch.Tensor, bar: torch.Tensor, heap_v: torch.Tensor,
               heap_i: torch.Tensor, rescore: tuple[torch.Tensor, torch.Tensor, float] | None
               ) -> None:
    """Fold queries ``r0 .. r1 - 1`` of a block of scores (references ``start .. stop - 1``)
    into their heaps, rescoring from ``rescore``'s vectors when the block is bfloat16."""
    if rescore is None:
        fold_tile(kernel, s[r0:r1], r0, start, thr, bar, heap_v, heap_i)
    else:
        q32, refs32, delta = rescore
        fold_tile_bf16(kernel, s[r0:r1], r0, start, thr, bar, heap_v, heap_i, q32[r0:r1],
                       refs32[start:stop], delta)


def inner_topk(queries: torch.Tensor, refs: torch.Tensor, k: int, block: int = 4096,
               exclude: torch.Tensor | None = None, screen: str = "auto",
               refs_bf16: torch.Tensor | None = None, refs_norm: float | None = None,
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` highest inner products ``queries @ refs.T`` of each query (exact), through
    :func:`blocked_topk` with the products screened in ``screen`` precision (see
    :func:`screen_precision`). ``refs_bf16`` and ``refs_norm``: ``refs`` rounded to
    bfloat16 and their largest norm, when an index keeps them (computed once, not per
    search). Returns (values (Q, k), indices (Q, k))."""
    n = len(refs)
    k = min(k, n)
    use_bf16 = (screen_precision(screen) == "bf16" and 0 < k < n and queries.dtype
                == refs.dtype == torch.float32 and _heap_kernel_bf16() is not None)
    if use_bf16:
        q32, r32 = queries.contiguous(), refs.contiguous()
        delta = bf16_rounding_bound(q32.shape[1], _max_norm(q32),
                                    _max_norm(r32) if refs_norm is None else refs_norm)
        use_bf16 = math.isfinite(delta)
    if not use_bf16:
        return blocked_topk(queries, n, k, lambda q, a, b: q @ refs[a:b].T, block=block,
                            exclude=exclude)
    qb = q32.to(torch.bfloat16)
    rb = r32.to(torch.bfloat16) if refs_bf16 is None else refs_bf16
    return blocked_topk(qb, n, k, lambda q, a, b: q @ rb[a:b].T, block=block,
                        exclude=exclude, rescore=(q32, r32, delta))


def _max_norm(x: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(x, dim=1).max()) if len(x) else 0.0


_THREAD_MIN_ROWS = 64  # fewer queries per half: one thread folds the block
_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(1, thread_name_prefix="siamkit-fold")
    return _POOL


def _forget_pool() -> None:
    """A forked child has no thread behind the parent's pool: it starts its own."""
    global _POOL
    _POOL = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def self_topk(
    x: torch.Tensor, k: int, block: int = 2048, rows: int = 2048, group: int = 8,
    floor: torch.Tensor | None = None, buffer: int = 1 << 23, screen: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` highest ``x[i] @ x[j]`` of each row ``i`` over every other row ``j``.

    Each unordered pair is scored once: the rows are cut into blocks of ``block``, and a
    pair of blocks (a, b) with a < b is scored as (``rows``, ``block``) tiles, each screened
    for entries above their row's threshold (candidates for block a's rows) and above their
    column's (for block b's rows); a block against itself is screened by rows only. Where a
    C compiler is available the screen is one pass of a compiled kernel
    (:mod:`siamkit.native`) that pushes each entry it finds straight into its row's
    running top-k heap, so a row's threshold rises as soon as a better score is met.
    Without one, group maxima in torch and the hits in numpy give candidates, which wait
    in a buffer until their block's rows have met every other row (or the buffer holds
    ``buffer`` of them) and are then merged into the running top k, once per row instead
    of once per tile. Holds the top k of every row (N x k values and int32 indices), one
    tile and (numpy) the buffer.

    Args:
        x: (N, D) vectors (normalised ones give cosine similarity).
        k: how many to keep per row (at most N - 1).
        block: rows per block.
        rows: rows per tile (at most ``block``): a tile is ``rows`` x ``block`` scores.
        group: rows or columns per screening group (numpy screen).
        floor: optional (N,) values known to lie strictly below each row's k-th best score
            (e.g. the k-th best of any k other rows, lowered by a rounding margin): nothing
            at or below it is looked at. The tighter, the fewer candidates; without it
            every score is a candidate until the first merge.
        buffer: candidates held before an early merge (numpy screen).
        screen: precision of the screening products (:func:`screen_precision`); a bf16
            screen rescores near-threshold entries in float32 (float32 input and the
            compiled kernel only; otherwise the screen is in ``x``'s own precision).

    Returns:
        (values (N, k), indices (N, k) int32), best first; a row never returns itself.
    """
    x = x.detach()
    n = len(x)
    k = min(k, n - 1)
    rows = min(rows, block)
    if floor is not None and floor.shape != (n,):
        raise ValueError(f"floor must hold one value per row: {tuple(floor.shape)} for {n} rows")
    best_v = torch.full((n, k), -torch.inf, dtype=x.dtype)
    best_i = torch.zeros((n, k), dtype=torch.int32)
    if k <= 0:
        return best_v, best_i
    thr = (torch.full((n,), -torch.inf, dtype=x.dtype) if floor is None
           else floor.to(x.dtype).clone())
    bar = thr.clone()  # a row's threshold never drops below its floor
    starts = range(0, n, block)
    kernel = _heap_kernel(x.dtype)
    if kernel is not None:
        x = x.contiguous()
    kernel16, delta, xs = None, 0.0, x
    if x.dtype == torch.float32 and screen_precision(screen) == "bf16":
        norm = _max_norm(x)
        delta = bf16_rounding_bound(x.shape[1], norm, norm)
        kernel16 = _heap_kernel_bf16() if math.isfinite(delta) else None
        if kernel16 is not None:  # products of the rounded vectors; kept scores rescored
            xs = x.to(torch.bfloat16)
    tile = torch.empty(rows * min(n, block), dtype=xs.dtype)
    waiting: dict[int, list[tuple[torch.Tensor, ...]]] = {a: [] for a in starts}
    held = tiles = 0

    def merge(blocks: list[int]) -> None:
        nonlocal best_v, best_i, thr, held
        parts = [c for a in blocks for c in waiting[a]]
        for a in blocks:
            waiting[a] = []
        if parts:
            c_rows, c_cols, c_vals = (torch.cat(t) for t in zip(*parts, strict=True))
            held -= len(c_rows)
            best_v, best_i, thr = _merge(best_v, best_i, thr, c_rows, c_cols, c_vals, k, bar)

    for a in starts:
        for r0 in range(a, min(n, a + block), rows):
            r1 = min(n, r0 + rows, a + block)
            for b in range(a, n, block):
                b1 = min(n, b + block)
                # one buffer for every tile: allocating each one afresh grew the process
                # by gigabytes (the allocator kept the freed tiles between small arrays)
                s = torch.mm(xs[r0:r1], xs[b:b1].T, out=tile[: (r1 - r0) * (b1 - b)].view(
                    r1 - r0, b1 - b))
                if b == a:  # the diagonal block: each of its pairs is met twice, rows only
                    i = torch.arange(r0, r1)
                    s[i - r0, i - b] = -torch.inf
                if kernel16 is not None:  # bf16 products, rescored near the thresholds
                    fold_tile_bf16(kernel16, s, r0, b, thr, bar, best_v, best_i, x[r0:r1],
                                   x[b:b1], delta, columns=b != a)
                    continue
                if kernel is not None:  # straight into the heaps: no candidates, no merges
                    fold_tile(kernel, s, r0, b, thr, bar, best_v, best_i, columns=b != a)
                    continue
                found = [(a, _screen(s, thr[r0:r1], group, r0, b))]
                if b != a:
                    found.append((b, _screen(s, thr[b:b1], group, b, r0, by_column=True)))
                for owner, cand in found:
                    if len(cand[0]):
                        waiting[owner].append(cand)
                        held += len(cand[0])
                if held > buffer:
                    merge(list(starts))
                tiles += 1
                if tiles % 64 == 0:  # numpy's many temporaries
                    _release_freed_memory()
        if kernel is None:
            merge([a])  # block a's rows have now met every row
            _release_freed_memory()
    if kernel is not None or kernel16 is not None:  # heaps in heap order: best first now
        best_v, order = best_v.sort(dim=1, descending=True)
        best_i = best_i.gather(1, order)
    return best_v, best_i


def _heap_kernel(dtype: torch.dtype) -> Callable[..., None] | None:
    """The compiled screen-and-fold kernel (``_screen.c`` via :mod:`siamkit.native`), or None
    where it is unavailable or the scores are not float32."""
    from .native import screen_kernel

    return screen_kernel() if dtype == torch.float32 else None


def _heap_kernel_bf16() -> Callable[..., None] | None:
    """The compiled kernel that folds bfloat16 scores with float32 rescoring, or None."""
    from .native import screen_kernel_bf16

    return screen_kernel_bf16()


def fold_tile_bf16(kernel: Callable[..., None], s: torch.Tensor, row0: int, col0: int,
                   thr: torch.Tensor, bar: torch.Tensor, heap_v: torch.Tensor,
                   heap_i: torch.Tensor, xr: torch.Tensor, xc: torch.Tensor, delta: float,
                   rows: bool = True, columns: bool = False) -> None:
    """:func:`fold_tile` for a bfloat16 tile ``s`` of the products of ``xr`` and ``xc``
    (float32, contiguous) rounded: an entry whose score plus ``delta`` (its rounding bound)
    clears a threshold is scored again as ``xr[r] @ xc[c]`` in float32, and enters with
    that score if it still clears it."""
    n_r, n_c = s.shape
    kernel(s.data_ptr(), n_r, n_c, row0, col0, int(rows) | 2 * int(columns), thr.data_ptr(),
           bar.data_ptr(), heap_v.data_ptr(), heap_i.data_ptr(), heap_v.shape[1],
           xr.data_ptr(), xc.data_ptr(), xr.shape[1], delta)


def fold_tile(kernel: Callable[..., None], s: torch.Tensor, row0: int, col0: int,
              thr: torch.Tensor, bar: torch.Tensor, heap_v: torch.Tensor,
              heap_i: torch.Tensor, rows: bool = True, columns: bool = False) -> None:
    """Fold tile ``s`` (float32, contiguous: rows ``row0 ..`` against columns ``col0 ..``)
    into running top-k min-heaps ``heap_v`` / ``heap_i`` (N x k, float32 / int32,
    contiguous): with ``rows`` each row's entries into the heap of its row, with ``columns``
    each column's entries into the heap of the row its column stands for (a set scored
    against itself). ``thr`` is kept at each heap's k-th best or its ``bar``, whichever is
    higher."""
    n_r, n_c = s.shape
    kernel(s.data_ptr(), n_r, n_c, row0, col0, int(rows) | 2 * int(columns), thr.data_ptr(),
           bar.data_ptr(), heap_v.data_ptr(), heap_i.data_ptr(), heap_v.shape[1])


def _release_freed_memory() -> None:
    """Hand memory freed by the many short-lived arrays of a search back to the system.
    glibc otherwise keeps it: its allocation thresholds rise as large blocks are freed, and
    on 100,000 rows the process grew by 2 GB (against about 150 MB in use). ``malloc_trim``
    only returns free pages; it changes no allocator setting. No-op off Linux."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _malloc_trim() if sys.platform.startswith("linux") else None


def _screen(s: torch.Tensor, thr: torch.Tensor, group: int, row0: int, col0: int,
            by_column: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Entries of the score block ``s`` above their row's ``thr`` (their column's, with
    ``by_column``: candidates for the block's transpose), found through maxima of groups of
    ``group`` columns (rows). Returns (row + row0, column + col0, value) with int32
    positions, in the transposed block's terms with ``by_column``. The few hits are handled
    in numpy, whose small-array operations cost a fraction of torch's here."""
    n_r, width = s.shape
    if by_column:  # group g holds rows g, g + n_groups, ...: reduce over a leading axis
        if n_r % group:
            s = torch.nn.functional.pad(s, (0, 0, 0, group - n_r % group), value=-torch.inf)
        n_groups = s.shape[0] // group
        maxima = s.view(group, n_groups, width).amax(0).numpy()  # (n_groups, width)
        hit = np.flatnonzero(maxima > thr.numpy()[None, :])
        line, g = hit % width, hit // width
        across = g[:, None] + np.arange(group) * n_groups  # (hits, group) rows of s
        flat = across * width + line[:, None]
    else:  # group g holds columns g, g + n_groups, ...: reduce over a middle axis
        if width % group:
            s = torch.nn.functional.pad(s, (0, group - width % group), value=-torch.inf)
            width = s.shape[1]
        n_groups = width // group
        maxima = s.view(n_r, group, n_groups).amax(1).numpy()  # (n_r, n_groups)
        hit = np.flatnonzero(maxima > thr.numpy()[:, None])
        line, g = hit // n_groups, hit % n_groups
        across = g[:, None] + np.arange(group) * n_groups  # (hits, group) columns of s
        flat = line[:, None] * width + across
    vals = s.numpy().ravel()[flat]
    keep = vals > thr.numpy()[line][:, None]
    rows = np.broadcast_to(line[:, None], keep.shape)[keep] + row0
    return (torch.from_numpy(rows.astype(np.int32)),
            torch.from_numpy((across[keep] + col0).astype(np.int32)), torch.from_numpy(vals[keep]))


def score_block(queries: torch.Tensor, scores: Scores, start: int, stop: int,
                exclude: torch.Tensor | None = None) -> torch.Tensor:
    """``scores(queries, start, stop)`` with each query's ``exclude`` reference (when it
    falls in this block) set to -inf."""
    s = scores(queries, start, stop)
    if exclude is not None:
        inside = (exclude >= start) & (exclude < stop)
        s[inside.nonzero(as_tuple=True)[0], exclude[inside] - start] = -torch.inf
    return s


def _merge(best_v: torch.Tensor, best_i: torch.Tensor, thr: torch.Tensor, rows: torch.Tensor,
           cols: torch.Tensor, vals: torch.Tensor, k: int, bar: torch.Tensor | None = None
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fold candidates (row, column, value) into the running top k of their rows (each
    row's threshold becomes its k-th best, or its ``bar`` if that is higher)."""
    # each row's candidates together, best first; only the first k of a row can matter
    if vals.dtype == torch.float32:  # one sort of (row, descending value) keys
        order = torch.argsort(_row_value_keys(rows, vals))
    else:  # the keys hold float32 bits only
        order = torch.argsort(vals, descending=True, stable=True)
        order = order[torch.argsort(rows[order], stable=True)]
    rows, cols, vals = rows[order], cols[order], vals[order]
    touched, counts = torch.unique_consecutive(rows, return_counts=True)
    slot = torch.arange(len(rows), device=rows.device) - (
        torch.cumsum(counts, 0) - counts).repeat_interleave(counts)
    keep = slot < k
    which = torch.arange(len(touched), device=rows.device).repeat_interleave(counts)[keep]
    slot = slot[keep]
    width = min(k, int(counts.max()))
    touched = touched.long()
    pad_v = torch.full((len(touched), width), -torch.inf, dtype=best_v.dtype,
                       device=best_v.device)
    pad_i = torch.zeros((len(touched), width), dtype=best_i.dtype, device=best_i.device)
    pad_v[which, slot] = vals[keep].to(pad_v.dtype)
    pad_i[which, slot] = cols[keep].to(pad_i.dtype)
    v, pick = torch.cat([best_v[touched], pad_v], 1).topk(k, dim=1)
    best_v[touched] = v
    best_i[touched] = torch.cat([best_i[touched], pad_i], 1).gather(1, pick)
    thr[touched] = v[:, -1] if bar is None else torch.maximum(v[:, -1], bar[touched])
    return best_v, best_i, thr


def _row_value_keys(rows: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
    """int64 keys ordering (row, float32 value) pairs by row, then by value from highest: a
    float32's bits, with the magnitude bits of negatives flipped, order like the floats."""
    bits = vals.contiguous().view(torch.int32).long()
    rising = torch.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)  # in [-2^31, 2^31)
    return rows.long() * (1 << 32) + ((1 << 31) - 1 - rising)
