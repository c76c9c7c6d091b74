"""Tests for siamkit.distances: known values, pairwise/paired agreement, direction, gradients."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from siamkit.distances import (
    CosineSimilarity,
    Distance,
    DotProductSimilarity,
    EuclideanDistance,
    create_distance,
)

ALL_DISTANCES = [
    EuclideanDistance(),
    EuclideanDistance(squared=True),
    CosineSimilarity(),
    DotProductSimilarity(),
]


def _t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


# --- known values -------------------------------------------------------------------------


def test_euclidean_known_3_4_5() -> None:
    """(0,0) to (3,4) is 5 (squared: 25), both pairwise and paired."""
    x, y = _t([[0.0, 0.0]]), _t([[3.0, 4.0]])
    assert_close(EuclideanDistance().paired(x, y), _t([[5.0]])[0])
    assert_close(EuclideanDistance().pairwise(x, y), _t([[5.0]]))
    assert_close(EuclideanDistance(squared=True).paired(x, y), _t([[25.0]])[0])
    assert_close(EuclideanDistance(squared=True).pairwise(x, y), _t([[25.0]]))


def test_euclidean_pairwise_known_matrix() -> None:
    """Three hand-placed points: distances 5, 1, sqrt(3^2 + 3^2) = sqrt(18)."""
    x = _t([[0.0, 0.0], [3.0, 4.0], [3.0, 3.0]])
    expected = _t(
        [
            [0.0, 5.0, math.sqrt(18.0)],
            [5.0, 0.0, 1.0],
            [math.sqrt(18.0), 1.0, 0.0],
        ]
    )
    assert_close(EuclideanDistance().pairwise(x), expected)
    assert_close(EuclideanDistance(squared=True).pairwise(x), expected**2)


def test_cosine_known_angles() -> None:
    """Cosine ignores length: 0 deg -> 1, 90 deg -> 0, 180 deg -> -1, 60 deg -> 0.5."""
    x = _t([[2.0, 0.0], [1.0, 1.0], [1.0, 0.0], [5.0, 0.0]])
    y = _t(
        [
            [0.0, 3.0],
            [-2.0, -2.0],
            [math.cos(math.pi / 3), math.sin(math.pi / 3)],
            [0.1, 0.0],
        ]
    )
    assert_close(CosineSimilarity().paired(x, y), torch.tensor([0.0, -1.0, 0.5, 1.0]).double())


def test_dot_known_values() -> None:
    """(1,2).(3,4) = 11, (1,0).(0,1) = 0, (-1,2).(3,1) = -1."""
    x = _t([[1.0, 2.0], [1.0, 0.0], [-1.0, 2.0]])
    y = _t([[3.0, 4.0], [0.0, 1.0], [3.0, 1.0]])
    assert_close(DotProductSimilarity().paired(x, y), torch.tensor([11.0, 0.0, -1.0]).double())
    assert_close(
        DotProductSimilarity().pairwise(x, y).diagonal(), torch.tensor([11.0, 0.0, -1.0]).double()
    )


# --- pairwise and paired agree ------------------------------------------------------------


@pytest.mark.parametrize("distance", ALL_DISTANCES, ids=repr)
def test_pairwise_matches_paired_on_every_pair(distance: Distance) -> None:
    """pairwise(x, y)[i, j] == paired(x[i], y[j]) for all i, j."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 7, generator=g, dtype=torch.float64)
    y = torch.randn(4, 7, generator=g, dtype=torch.float64)
    full = distance.pairwise(x, y)
    assert full.shape == (5, 4)
    xi = x[:, None, :].expand(5, 4, 7).reshape(-1, 7)
    yj = y[None, :, :].expand(5, 4, 7).reshape(-1, 7)
    assert_close(full, distance.paired(xi, yj).reshape(5, 4))


@pytest.mark.parametrize("distance", ALL_DISTANCES, ids=repr)
def test_pairwise_single_argument_is_self_pairwise(distance: Distance) -> None:
    """pairwise(x) is pairwise(x, x), and symmetric."""
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert_close(distance.pairwise(x), distance.pairwise(x, x))
    assert_close(distance.pairwise(x), distance.pairwise(x).T)


def test_euclidean_pairwise_matches_cdist() -> None:
    """The ||x||^2 + ||y||^2 - 2x.y form agrees with torch.cdist in float64."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(8, 16, generator=g, dtype=torch.float64)
    y = torch.randn(9, 16, generator=g, dtype=torch.float64)
    assert_close(EuclideanDistance().pairwise(x, y), torch.cdist(x, y))


def test_paired_batched_over_leading_dims() -> None:
    """paired reduces the last dimension only."""
    x = torch.ones(2, 3, 4, dtype=torch.float64)
    assert EuclideanDistance().paired(x, torch.zeros_like(x)).shape == (2, 3)
    assert_close(
        EuclideanDistance().paired(x, torch.zeros_like(x)), torch.full((2, 3), 2.0).double()
    )


# --- direction -----------------------------------------------------------------------------


def test_higher_is_closer_flags() -> None:
    assert EuclideanDistance().higher_is_closer is False
    assert EuclideanDistance(squared=True).higher_is_closer is False
    assert CosineSimilarity().higher_is_closer is True
    assert DotProductSimilarity().higher_is_closer is True


@pytest.mark.parametrize("distance", ALL_DISTANCES, ids=repr)
def test_nearer_point_is_closer_in_every_measure(distance: Distance) -> None:
    """(1, 0.1) is nearer (1, 0) than (0, 1) is, whichever way the measure points."""
    a = _t([[1.0, 0.0], [1.0, 0.0]])
    b = _t([[1.0, 0.1], [0.0, 1.0]])
    near, far = distance.paired(a, b)
    assert distance.closer(near, far)
    assert not distance.closer(far, near)
    assert distance.to_similarity(near) > distance.to_similarity(far)


def test_closer_is_strict_and_to_similarity_signs() -> None:
    v = torch.tensor([1.0, 2.0])
    assert EuclideanDistance().closer(v[0], v[1]) and not EuclideanDistance().closer(v[0], v[0])
    assert CosineSimilarity().closer(v[1], v[0]) and not CosineSimilarity().closer(v[0], v[0])
    assert_close(EuclideanDistance().to_similarity(v), -v)
    assert_close(CosineSimilarity().to_similarity(v), v)


# --- gradients at zero distance ------------------------------------------------------------


def test_zero_paired_distance_has_finite_zero_gradient() -> None:
    """sqrt has infinite slope at 0; identical points must give a zero, finite gradient."""
    x = _t([[1.0, 2.0], [0.0, 0.0]]).requires_grad_()
    y = _t([[1.0, 2.0], [3.0, 4.0]])
    d = EuclideanDistance().paired(x, y)
    assert_close(d, torch.tensor([0.0, 5.0]).double())
    d.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert_close(x.grad[0], torch.zeros(2).double())
    # d/dx of ||x - y|| at x=(0,0), y=(3,4) is (x - y)/5 = (-0.6, -0.8)
    assert_close(x.grad[1], torch.tensor([-0.6, -0.8]).double())


def test_zero_pairwise_distance_has_finite_zero_gradient() -> None:
    """Duplicate rows: pairwise distance 0 and its gradient is 0, not NaN."""
    x = _t([[1.0, 2.0], [1.0, 2.0]]).requires_grad_()
    d = EuclideanDistance().pairwise(x)
    assert_close(d, torch.zeros(2, 2).double())
    d.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert_close(x.grad, torch.zeros(2, 2).double())


def test_pairwise_gradient_is_finite_with_duplicates_among_other_points() -> None:
    """A duplicate pair does not poison the gradient of the other pairs with NaN."""
    x = _t([[1.0, 2.0], [1.0, 2.0], [1.0, 0.0]]).requires_grad_()
    d = EuclideanDistance().pairwise(x)
    d.sum().backward()
    assert torch.isfinite(x.grad).all()
    # Row 2 is distance 2 straight below rows 0 and 1; each of the 4 terms d(2,0), d(0,2), d(2,1),
    # d(1,2) pulls x2 with unit slope along (0,-1): gradient (0, -4).
    assert_close(x.grad[2], torch.tensor([0.0, -4.0]).double())


# --- factory -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cls", "squared"),
    [
        ("euclidean", EuclideanDistance, False),
        ("squared_euclidean", EuclideanDistance, True),
        ("cosine", CosineSimilarity, None),
        ("dot", DotProductSimilarity, None),
    ],
)
def test_create_distance_by_name(name: str, cls: type, squared: bool | None) -> None:
    d = create_distance(name)
    assert type(d) is cls
    assert d.name == ("euclidean" if cls is EuclideanDistance else name)
    if squared is not None:
        assert d.squared is squared


def test_create_distance_returns_fresh_objects() -> None:
    assert create_distance("cosine") is not create_distance("cosine")


def test_create_distance_unknown_name_raises_with_choices() -> None:
    with pytest.raises(ValueError, match="manhattan") as info:
        create_distance("manhattan")
    assert "euclidean" in str(info.value) and "cosine" in str(info.value)


def test_squared_distances_hand_computed() -> None:
    from siamkit.distances import squared_distances

    x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [3.0, 0.0]])
    want = torch.tensor([[0.0, 25.0, 9.0], [25.0, 0.0, 16.0], [9.0, 16.0, 0.0]])
    torch.testing.assert_close(squared_distances(x), want)
