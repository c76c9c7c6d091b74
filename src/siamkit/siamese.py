"""The Siamese network: one encoder applied to both inputs, and a way to score the pair.

A network saves itself (:meth:`SiameseNetwork.save`) as ``model.safetensors`` plus a JSON
card that describes how to rebuild it (:meth:`SiameseNetwork.describe`: the encoder's spec,
the distance, the head) and how it reads its inputs (``input_spec``); saving refuses a card
that does not rebuild the network it saves.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from .atomic import atomic_write, atomic_write_text
from .distances import Distance, EuclideanDistance, create_distance, distance_spec
from .encoders import build_encoder, encoder_spec

__all__ = ["LearnedHead", "SiameseNetwork", "WEIGHTS", "CARD", "CARD_FORMAT"]

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
WEIGHTS = "model.safetensors"
CARD = "config.json"
CARD_FORMAT = 2  # cards with a "model" section; format 1 (no section) rebuilt from the config


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
        self.dim, self.features, self.hidden = dim, features, hidden
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

    A frozen part stays frozen: in training mode, BatchNorm layers whose parameters are all
    frozen (``requires_grad=False``) stay in eval mode, so a frozen pretrained backbone
    keeps its running statistics too.

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
        input_spec: Any = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.distance = distance if distance is not None else EuclideanDistance()
        self.head = head
        self.input_spec = input_spec  # an InputSpec: how files and rows become inputs
        self._checked: str | None = None  # the description last proven to rebuild this
        self._dim: int | None = None  # the embedding size, when the encoder does not say

    def train(self, mode: bool = True) -> SiameseNetwork:
        super().train(mode)
        if mode:
            for m in self.modules():
                if isinstance(m, _NORMS):
                    params = list(m.parameters(recurse=False))
                    if params and not any(p.requires_grad for p in params):
                        m.eval()  # frozen: its running statistics are frozen too
        return self

    @property
    def embedding_dim(self) -> int:
        """Size D of the embeddings: the encoder's ``output_dim``, or what was measured."""
        dim = getattr(self.encoder, "output_dim", None)
        if isinstance(dim, int):
            return dim
        if self._dim is None:
            raise AttributeError(f"{type(self.encoder).__qualname__} has no integer output_dim "
                                 f"and no embedding was measured: set self.output_dim")
        return self._dim

    def set_embedding_dim(self, dim: int) -> None:
        """Record the embedding size of an encoder that does not say it (measured)."""
        self._dim = int(dim)

    def describe(self, encoder_args: dict[str, Any] | None = None) -> dict[str, Any]:
        """How to rebuild this network: the encoder's spec, the distance, the head."""
        head = self.head
        return {"encoder": encoder_spec(self.encoder, encoder_args),
                "distance": distance_spec(self.distance),
                "head": None if head is None else {"dim": head.dim, "features": head.features,
                                                   "hidden": head.hidden},
                "embedding_dim": self.embedding_dim}

    @classmethod
    def from_description(cls, description: dict[str, Any], input_spec: Any = None
                         ) -> SiameseNetwork:
        """A fresh (untrained) network built as :meth:`describe` says."""
        head = description.get("head")
        net = cls(build_encoder(description["encoder"]),
                  create_distance(description.get("distance", "euclidean")),
                  LearnedHead(**head) if head else None, input_spec)
        if description.get("embedding_dim") is not None:
            net.set_embedding_dim(description["embedding_dim"])
        return net

    def _check_rebuilds(self, description: dict[str, Any]) -> None:
        """Refuse a description that does not rebuild this network's parameters."""
        key = json.dumps(description, sort_keys=True)
        if key == self._checked:
            return
        try:
            fresh = SiameseNetwork.from_description(description)
        except ValueError as exc:
            raise ValueError(f"the model card cannot rebuild this model: {exc}") from None
        ours = {k: tuple(v.shape) for k, v in self.state_dict().items()}
        theirs = {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
        if ours != theirs:
            diff = sorted(set(ours.items()) ^ set(theirs.items()))[:3]
            raise ValueError(f"the model card does not describe this model: built from it, "
                             f"the parameters differ ({diff}); pass the encoder's constructor "
                             f"arguments (encoder_args) or give it get_config()")
        self._checked = key

    def save(self, path: str | Path, extra: dict[str, Any] | None = None,
             encoder_args: dict[str, Any] | None = None) -> Path:
        """Write ``model.safetensors`` and the card ``config.json`` into the folder ``path``.

        The card holds :meth:`describe`, ``input_spec`` and the ``extra`` facts (a
        threshold, a training config, ...). Refuses (ValueError, nothing written) when the
        card would not rebuild this network. Each file is replaced atomically, and a card
        already in ``path`` is replaced whole: a threshold calibrated for other weights does
        not carry over (pass it in ``extra``, or recalibrate).
        """
        description = self.describe(encoder_args)
        self._check_rebuilds(description)
        card: dict[str, Any] = {"format": CARD_FORMAT, "model": description}
        if self.input_spec is not None:
            card["input"] = self.input_spec.to_dict()
        card.update(extra or {})
        text = json.dumps(card, indent=2)
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        atomic_write(path / WEIGHTS, lambda tmp: save_file(state, str(tmp),
                                                           metadata={"format": "siamkit"}))
        atomic_write_text(path / CARD, text)
        return path

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
