"""The Siamese network: one encoder applied to both inputs, and a way to score the pair."""

from __future__ import annotations

import torch
from torch import nn

from .distances import Distance, EuclideanDistance

__all__ = ["LearnedHead", "SiameseNetwork"]


class LearnedHead(nn.Module):
    """A learned similarity over a pair of embeddings; higher is closer.

    ``features="abs"``: Koch et al.'s ``sigmoid(w . |e1 - e2| + b)``. ``features="sbert"``:
    a classifier over ``[u, v, |u - v|, u * v]`` (Reimers and Gurevych 2019), a linear layer
    or, with ``hidden`` > 0, a one-hidden-layer MLP; it is averaged over both orders of the
    pair so the score is symmetric. The same head scores pairs in training (binary
    cross-entropy on ``logits``) and at inference (verification, galleries).

    Shape: (B, D), (B, D) -> (B,).
    """

    higher_is_closer = True

    def __init__(self, dim: int, features: str = "abs", hidden: int = 0) -> None:
        super().__init__()
        if features not in ("abs", "sbert"):
            raise ValueError(f"head features must be 'abs' or 'sbert', got {features!r}")
        self.features = features
        if features == "abs":
            self.linear = nn.Linear(dim, 1)
        else:
            self.mlp = (nn.Sequential(nn.Linear(4 * dim, hidden), nn.ReLU(),
                                      nn.Linear(hidden, 1)) if hidden > 0
                        else nn.Linear(4 * dim, 1))

    def _score(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Logits of broadcastable embedding tensors (..., D) -> (...)."""
        if self.features == "abs":
            return self.linear((u - v).abs()).squeeze(-1)
        u, v = torch.broadcast_tensors(u, v)
        diff, prod = (u - v).abs(), u * v
        forward = self.mlp(torch.cat([u, v, diff, prod], -1)).squeeze(-1)
        backward = self.mlp(torch.cat([v, u, diff, prod], -1)).squeeze(-1)
        return (forward + backward) / 2

    def logits(self, e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid scores of row-aligned pairs: (B, D), (B, D) -> (B,)."""
        return self._score(e1, e2)

    def pairwise_logits(self, q: torch.Tensor, r: torch.Tensor, chunk: int | None = None
                        ) -> torch.Tensor:
        """Logits of every (query, reference) pair, chunked: (Q, D), (R, D) -> (Q, R)."""
        width = q.shape[1] * (1 if self.features == "abs" else 4)
        chunk = chunk or max(1, (1 << 22) // max(1, r.shape[0] * width))
        rows = [self._score(q[i : i + chunk, None, :], r[None, :, :])
                for i in range(0, q.shape[0], chunk)]
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
