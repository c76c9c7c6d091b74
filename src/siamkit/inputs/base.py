"""The interface every input adapter follows: load raw items as the model card says, embed
them, load labelled data sets and pair files for evaluation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..data.download import DatasetError
from ..data.images import ImageDataset
from ..data.textpairs import TextPairs
from ..siamese import SiameseNetwork
from .spec import InputSpec

__all__ = ["InputAdapter", "Progress"]

Progress = Callable[[int], None] | None  # called with the number of items just done


class InputAdapter:
    """Reads one kind of input exactly as a model's :class:`InputSpec` says.

    ``prepare`` turns raw items (image paths or bytes, texts, rows ``{column: value}``)
    into what the encoder takes; ``embed`` runs the model on that in batches; ``parse``
    turns a command-line argument into a raw item. Subclasses say what they take in
    ``takes`` ("images", "texts", "rows"), which error messages use.
    """

    takes = "items"

    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec

    def parse(self, text: str) -> Any:
        """A raw item from a command-line argument (a path, a text, a JSON row)."""
        return text

    def prepare(self, items: Sequence[Any], names: Sequence[str] | None = None) -> Any:
        """Raw items -> the encoder's batch input (``names`` label errors)."""
        raise NotImplementedError

    def embed(self, model: SiameseNetwork, batch: Any, progress: Progress = None
              ) -> torch.Tensor:
        """Embeddings (N, D) of a prepared batch, in eval mode."""
        raise NotImplementedError

    def embed_items(self, model: SiameseNetwork, items: Sequence[Any],
                    names: Sequence[str] | None = None) -> torch.Tensor:
        """:meth:`prepare` then :meth:`embed`."""
        return self.embed(model, self.prepare(items, names))

    def embed_arguments(self, model: SiameseNetwork, items: Sequence[str],
                        names: Sequence[str] | None = None) -> torch.Tensor:
        """Embed command-line arguments: :meth:`parse` each (a path, a text, a JSON row),
        then :meth:`embed_items`."""
        return self.embed_items(model, [self.parse(x) for x in items], names)

    def load_dataset(self, path: str, **options: Any) -> ImageDataset:
        """A labelled data set (a folder per class, a class-labelled table) as the model
        reads it."""
        raise DatasetError(f"{path}: this model reads {self.takes}, given as pair files "
                           f"(--pairs), not a labelled folder or table")

    def embed_dataset(self, model: SiameseNetwork, data: ImageDataset,
                      progress: Progress = None) -> torch.Tensor:
        """Embeddings of a data set from :meth:`load_dataset`."""
        return self.embed(model, data.images, progress)

    def embed_pairs(self, model: SiameseNetwork, pairs: TextPairs, progress: Progress = None
                    ) -> torch.Tensor:
        """Embeddings of a pair file's items (``pairs.texts`` or ``pairs.records``);
        ``progress`` is called with the number of items of each batch done."""
        raise DatasetError(f"this model reads {self.takes}: pair files hold texts or records")
