"""Inputs as the model card says: :class:`InputSpec` and one adapter per kind of input.

    >>> adapter = adapter_for(model.input_spec)
    >>> emb = adapter.embed_items(model, ["a.png", "b.png"])   # (2, D)
"""

from __future__ import annotations

from typing import Any

from ..data.download import DatasetError
from .base import InputAdapter
from .image import ImageInput
from .rows import RowInput, VectorInput
from .spec import KINDS, InputSpec
from .text import TextInput

__all__ = ["InputSpec", "KINDS", "InputAdapter", "ImageInput", "TextInput", "RowInput",
           "VectorInput", "adapter_for"]


def adapter_for(spec: InputSpec | None, **limits: Any) -> InputAdapter:
    """The adapter that reads ``spec``'s kind of input (``limits``: an image adapter's
    ``max_pixels`` and ``max_side``)."""
    if spec is None:
        raise DatasetError("this model's card does not say how it reads its inputs: save it "
                           "with an input_spec (siamkit.InputSpec) to load files or rows")
    if spec.kind == "image":
        return ImageInput(spec, **limits)
    if spec.kind == "text":
        return TextInput(spec)
    if spec.featurizer is not None:
        return RowInput(spec)
    return VectorInput(spec)
