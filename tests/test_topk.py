"""blocked_topk: exact against torch.topk over the whole score matrix."""

from __future__ import annotations

import pytest
import torch

from siamkit.topk import blocked_topk


@pytest.mark.parametrize(("n", "k", "block", "group"), [
    (2000, 10, 128, 8),    # many screened blocks
    (1003, 50, 100, 16),   # ragged last block, groups straddling it
    (300, 300, 64, 8),     # k = all references: one ranked block
    (500, 1, 37, 3),
])
def test_blocked_topk_equals_full_topk(n: int, k: int, block: int, group: int) -> None:
    g = torch.Generator().manual_seed(n)
    q, r = torch.randn(40, 8, generator=g), torch.randn(n, 8, generator=g)
    exclude = torch.randint(0, n, (40,), generator=g)
    v, i = blocked_topk(q, n, k, lambda qq, a, b: qq @ r[a:b].T, block=block, group=group,
                        exclude=exclude)
    # the same block products (a product's rounding can depend on its shape)
    full = torch.cat([q @ r[a : a + block].T for a in range(0, n, block)], 1)
    full[torch.arange(40), exclude] = -torch.inf
    want_v, _ = full.topk(k, dim=1)
    assert torch.equal(v, want_v)
    assert torch.equal(full.gather(1, i), v)  # the indices point at those values
    if k < n:
        assert not (i == exclude[:, None]).any()


def test_blocked_topk_scores_each_reference_block_once() -> None:
    """The screening never asks for a block twice (cost = one pass of matrix products)."""
    calls: list[tuple[int, int]] = []
    q, r = torch.randn(5, 4), torch.randn(1000, 4)

    def scores(qq: torch.Tensor, a: int, b: int) -> torch.Tensor:
        calls.append((a, b))
        return qq @ r[a:b].T

    blocked_topk(q, 1000, 3, scores, block=100)
    assert calls == [(a, min(a + 100, 1000)) for a in range(0, 1000, 100)]
