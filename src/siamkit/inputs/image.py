"""Image inputs: files or uploaded bytes, decoded, resized and scaled as the card says."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..data.download import DatasetError
from ..data.images import ImageDataset, load_image, load_image_folder
from ..embedding import embed_images
from ..siamese import SiameseNetwork
from .base import InputAdapter, Progress
from .spec import InputSpec

__all__ = ["ImageInput"]


class ImageInput(InputAdapter):
    """Image files (paths) or encoded bytes -> (N, C, H, W) uint8 at the model's size.

    Args:
        spec: the model's input spec (kind ``image``).
        max_pixels, max_side: refuse images with more pixels, or a longer side, from their
            header, before decoding them (decompression bombs).
    """

    takes = "images"

    def __init__(self, spec: InputSpec, max_pixels: int = 40_000_000,
                 max_side: int = 16384) -> None:
        super().__init__(spec)
        self.max_pixels, self.max_side = max_pixels, max_side

    def read(self, source: str | Path | bytes, name: str | None = None) -> torch.Tensor:
        """One image with the model's preprocessing: (C, H, W) uint8."""
        from PIL import Image, UnidentifiedImageError

        name = name or (str(source) if not isinstance(source, bytes | bytearray) else "image")
        if isinstance(source, bytes | bytearray):
            if not source:
                raise DatasetError(f"{name}: empty upload")
            source = io.BytesIO(source)
        try:
            with Image.open(source) as img:
                w, h = img.size
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
                Image.DecompressionBombError) as exc:
            raise DatasetError(f"{name}: not a readable image ({exc})") from None
        if w * h > self.max_pixels or max(w, h) > self.max_side:
            raise DatasetError(f"{name}: {w} x {h} pixels is over the limits "
                               f"({self.max_pixels} pixels, {self.max_side} a side)")
        if isinstance(source, io.BytesIO):
            source.seek(0)
        s = self.spec
        try:
            return load_image(source, s.size, s.channels, s.invert, s.keep_aspect)
        except DatasetError as exc:
            reason = str(exc).split(": ", 1)[-1]
            raise DatasetError(f"{name}: {reason}") from None

    def prepare(self, items: Sequence[Any], names: Sequence[str] | None = None
                ) -> torch.Tensor:
        if not items:
            raise DatasetError("no images given")
        names = list(names) if names is not None else [None] * len(items)
        return torch.stack([self.read(x, n) for x, n in zip(items, names, strict=True)])

    def embed(self, model: SiameseNetwork, batch: Any, progress: Progress = None
              ) -> torch.Tensor:
        s = self.spec
        return embed_images(model, batch, tta=s.tta, mean=s.mean, std=s.std, on_batch=progress)

    def load_dataset(self, path: str, group_depth: int = 0, drawer_pattern: str | None = None,
                     use_cache: bool = True, **options: Any) -> ImageDataset:
        if path == "sklearn:digits":
            raise DatasetError("sklearn:digits holds the digits' 64 features, for a tabular "
                               "(MLP) model trained on them: not this model")
        if Path(path).is_file():
            raise DatasetError(f"{path}: an image model reads a folder per class, not a file")
        s = self.spec
        return load_image_folder(path, size=s.size, channels=s.channels, invert=s.invert,
                                 keep_aspect=s.keep_aspect, group_depth=group_depth,
                                 drawer_pattern=drawer_pattern, use_cache=use_cache)
