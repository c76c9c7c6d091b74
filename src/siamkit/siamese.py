"""The Siamese network: one encoder applied to both inputs, and a way to score the pair."""

from __future__ import annotations

import torch
from torch import nn

from .distances import Distance, EuclideanDistance

__all__ = ["LearnedHead", "SiameseNetwork"]


class LearnedHead(nn.Module):
    """Koch et al.'s learned similarity: ``sigmoid(w . |e1 - e2| + b)``.

    ``logits`` gives the value before the sigmoid, for a numerically stable
    binary cross-entropy. Higher is closer.

    Shape: (B, D), (B, D) -> (B,).
    """

    higher_is_closer = True

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, 1)

    def logits(self, e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid scores of row-aligned pairs: (B, D), (B, D) -> (B,)."""
        return self.linear((e1 - e2).abs()).squeeze(-1)

    def pairwise_logits(self, q: torch.Tensor, r: torch.Tensor, chunk: int = 256) -> torch.Tensor:
        """Logits of every (query, reference) pair, chunked: (Q, D), (R, D) -> (Q, R)."""
        rows = [
            self.linear((q[i : i + chunk, None, :] - r[None, :, :]).abs()).squeeze(-1)
            for i in range(0, q.shape[0], chunk)
        ]
        return torch.cat(rows) if rows else q.new_zeros(0, r.shape[0])

    def forward(self, e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(e1, e2))


class SiameseNetwork(nn.Module):
    """Twin networks with shared weights: a single ``encoder`` embeds both inputs.

    The pair is scored either by a fixed ``distance`` (Euclidean, cosine, ...) or by a
    :class:`LearnedHead`. ``higher_is_closer`` tells which way the score points.

    Example:
        >>> from siamkit.encoders import create_encoder
        >>> net = SiameseNetwork(create_encoder("conv4"))
        >>> score = net(x1, x2)  # (B,) Euclidean distances
    """

    def __init__(
        self,
        encoder: nn.Module,
        distance: Distance | None = None,
        head: LearnedHead | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.distance = distance if distance is not None else EuclideanDistance()
        self.head = head

    @property
    def higher_is_closer(self) -> bool:
        """True when a larger score means more similar (learned head, cosine, dot)."""
        return True if self.head is not None else self.distance.higher_is_closer

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Embed a batch: (B, ...) -> (B, D)."""
        return self.encoder(x)

    def score_embeddings(self, e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
        """Score row-aligned embedding pairs: (B, D), (B, D) -> (B,)."""
        if self.head is not None:
            return self.head(e1, e2)
        return self.distance.paired(e1, e2)

    def pairwise_scores(self, queries: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        """Score every query embedding against every reference: (Q, D), (R, D) -> (Q, R)."""
        if self.head is not None:
            return torch.sigmoid(self.head.pairwise_logits(queries, references))
        return self.distance.pairwise(queries, references)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """Score pairs of inputs; both go through the same encoder."""
        e = self.encoder(torch.cat([x1, x2]))  # one pass: BatchNorm sees both halves alike
        e1, e2 = e[: x1.shape[0]], e[x1.shape[0] :]
        return self.score_embeddings(e1, e2)
