"""Distances and similarities between embeddings, each knowing which way is closer."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .registry import class_path, import_class

__all__ = [
    "Distance",
    "EuclideanDistance",
    "CosineSimilarity",
    "DotProductSimilarity",
    "create_distance",
    "distance_spec",
    "squared_distances",
]


def squared_distances(x: torch.Tensor) -> torch.Tensor:
    """(B, B) squared Euclidean distances between the rows of ``x``: the row norms go in
    with one fused matrix product plus one in-place add (not clamped: float rounding can
    leave tiny negatives)."""
    sq_norm = (x * x).sum(1)
    return torch.addmm(sq_norm[:, None], x, x.T, alpha=-2.0).add_(sq_norm[None, :])


class Distance:
    """Base class: a measure between embeddings.

    ``higher_is_closer`` tells losses, calibration and search whether a larger value
    means more similar (similarities) or less similar (distances), so none of them
    branches on which measure is in use.
    """

    higher_is_closer: bool = False
    name: str = "distance"

    def pairwise(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Matrix of values between every row of ``x`` (N, D) and of ``y`` (M, D) -> (N, M)."""
        raise NotImplementedError

    def paired(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Value between row i of ``x`` and row i of ``y``: (N, D), (N, D) -> (N,)."""
        raise NotImplementedError

    def closer(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Boolean mask: is value ``a`` strictly closer than value ``b``?"""
        return a > b if self.higher_is_closer else a < b

    def to_similarity(self, values: torch.Tensor) -> torch.Tensor:
        """Map values so that higher always means closer (negates distances)."""
        return values if self.higher_is_closer else -values

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class EuclideanDistance(Distance):
    """L2 distance (or its square with ``squared=True``); lower is closer."""

    higher_is_closer = False
    name = "euclidean"

    def __init__(self, squared: bool = False, eps: float = 1e-12) -> None:
        self.squared = squared
        self.eps = eps

    def pairwise(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        y = x if y is None else y
        # ||x||^2 + ||y||^2 - 2 x.y: one matrix product, no (N, M, D) tensor.
        sq = (x * x).sum(1, keepdim=True) + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)  # (N, M)
        sq = sq.clamp_min(0.0)
        if self.squared:
            return sq
        # The gradient of sqrt at 0 is infinite: clamp, then zero the (near-)identical pairs.
        return torch.sqrt(sq.clamp_min(self.eps)).masked_fill(sq <= self.eps, 0.0)

    def paired(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        sq = ((x - y) ** 2).sum(-1)
        if self.squared:
            return sq
        return torch.sqrt(sq.clamp_min(self.eps)).masked_fill(sq <= self.eps, 0.0)

    def __repr__(self) -> str:
        return f"EuclideanDistance(squared={self.squared})"


class CosineSimilarity(Distance):
    """Cosine of the angle between embeddings; higher is closer."""

    higher_is_closer = True
    name = "cosine"

    def pairwise(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        xn = F.normalize(x, dim=-1)
        yn = xn if y is None else F.normalize(y, dim=-1)
        return xn @ yn.T

    def paired(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (F.normalize(x, dim=-1) * F.normalize(y, dim=-1)).sum(-1)


class DotProductSimilarity(Distance):
    """Plain inner product; higher is closer."""

    higher_is_closer = True
    name = "dot"

    def pairwise(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return x @ (x if y is None else y).T

    def paired(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x * y).sum(-1)


_DISTANCES = {
    "euclidean": lambda: EuclideanDistance(),
    "squared_euclidean": lambda: EuclideanDistance(squared=True),
    "cosine": CosineSimilarity,
    "dot": DotProductSimilarity,
}


def create_distance(name: str) -> Distance:
    """Build a distance by name: ``euclidean``, ``squared_euclidean``, ``cosine`` or ``dot``;
    or a :class:`Distance` subclass by import path (``"package.module:Class"``, built with
    no arguments), as :func:`distance_spec` records one."""
    if ":" in name:
        return import_class(name, Distance)()
    try:
        return _DISTANCES[name]()
    except KeyError:
        raise ValueError(
            f"unknown distance {name!r}; expected one of {sorted(_DISTANCES)}"
        ) from None


def distance_spec(distance: Distance) -> str:
    """The name :func:`create_distance` rebuilds ``distance`` from: its registered name, or
    the import path of a user's :class:`Distance` subclass (which must take no arguments)."""
    if distance.name in _DISTANCES and type(distance) is type(_DISTANCES[distance.name]()):
        return distance.name
    return class_path(type(distance))
