"""Text inputs: strings, embedded by a text twin (the tokenizer is the encoder's own)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..data.download import DatasetError
from ..data.textpairs import TextPairs
from ..embedding import embed_texts
from ..siamese import SiameseNetwork
from .base import InputAdapter, Progress

__all__ = ["TextInput"]


class TextInput(InputAdapter):
    """Texts -> the list of strings a text twin embeds."""

    takes = "texts"

    def prepare(self, items: Sequence[Any], names: Sequence[str] | None = None) -> list[str]:
        if not items:
            raise DatasetError("no texts given")
        for i, t in enumerate(items):
            if not isinstance(t, str) or not t.strip():
                raise DatasetError(f"text {i} is empty or not a string")
        return list(items)

    def embed(self, model: SiameseNetwork, batch: Any, progress: Progress = None
              ) -> torch.Tensor:
        return embed_texts(model, batch, on_batch=progress)

    def embed_pairs(self, model: SiameseNetwork, pairs: TextPairs, progress: Progress = None
                    ) -> torch.Tensor:
        return embed_texts(model, pairs.texts, on_batch=progress)
