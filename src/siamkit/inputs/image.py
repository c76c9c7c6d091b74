"""Image inputs: files or uploaded bytes, decoded, resized and scaled as the card says.

Guarantees of :class:`ImageInput` (files, folders and uploaded bytes alike): only the
accepted formats are opened (default :data:`~siamkit.data.images.DEFAULT_FORMATS`: PNG, JPEG,
BMP, TIFF, GIF, WebP, PGM/PPM/PBM); an image with more pixels, or a longer side, than the
limits (default 40 M pixels, 16384 a side) is refused from its header, before it is
decoded; a large image is decoded at a reduced size where the format allows (JPEG) and
shrunk cheaply before the final resize; and any image that cannot be read (another format,
damaged, truncated, empty, too large) raises one :class:`DatasetError` naming it, whatever
the decoder raised.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..data.download import DatasetError
from ..data.images import (
    DEFAULT_FORMATS,
    MAX_PIXELS,
    MAX_SIDE,
    ImageDataset,
    check_formats,
    load_image,
    load_image_folder,
)
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
        formats: the image formats read (Pillow's names, see
            :func:`~siamkit.data.images.check_formats`); others are refused unopened.
    """

    takes = "images"

    def __init__(self, spec: InputSpec, max_pixels: int = MAX_PIXELS,
                 max_side: int = MAX_SIDE, formats: str | Sequence[str] = DEFAULT_FORMATS
                 ) -> None:
        super().__init__(spec)
        self.max_pixels, self.max_side = max_pixels, max_side
        self.formats = formats

    @property
    def formats(self) -> tuple[str, ...]:
        """The accepted image formats (Pillow's names); set from names, checked."""
        return self._formats

    @formats.setter
    def formats(self, value: str | Sequence[str]) -> None:
        self._formats = check_formats(value)

    def read(self, source: str | Path | bytes, name: str | None = None) -> torch.Tensor:
        """One image with the model's preprocessing: (C, H, W) uint8."""
        name = name or (str(source) if not isinstance(source, bytes | bytearray) else "image")
        if isinstance(source, bytes | bytearray):
            if not source:
                raise DatasetError(f"{name}: empty upload")
            source = io.BytesIO(source)
        s = self.spec
        return load_image(source, s.size, s.channels, s.invert, s.keep_aspect,
                          formats=self.formats, max_pixels=self.max_pixels,
                          max_side=self.max_side, name=name)

    def prepare(self, items: Sequence[Any], names: Sequence[str] | None = None
                ) -> torch.Tensor:
        if not items:
            raise DatasetError("no images given")
        names = list(names) if names is not None else [None] * len(items)
        return torch.stack([self.read(x, n) for x, n in zip(items, names, strict=True)])

    def embed(self, model: SiameseNetwork, batch: Any, progress: Progress = None
              ) -> torch.Tensor:
        s = self.spec
        return embed_images(model, batch, tta=s.tta, mean=s.mean, std=s.std, on_batch=progress,
                            mirror=s.mirror)

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
                                 drawer_pattern=drawer_pattern, use_cache=use_cache,
                                 formats=self.formats, max_pixels=self.max_pixels,
                                 max_side=self.max_side)
