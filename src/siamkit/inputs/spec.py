"""How a model reads its inputs: one typed record, written into and read from the model card.

Every consumer of a model (the evaluation commands, the service, export, ensembles) reads
the card's ``input`` through :meth:`InputSpec.from_card`, once, instead of re-reading an
untyped dict with its own fallbacks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["InputSpec", "KINDS"]

# image: image files; text: strings; tabular: feature vectors (a table's rows through a
# fitted featuriser when ``featurizer`` is set); records: entity-matching records through a
# fitted featuriser (pair files)
KINDS = ("image", "text", "tabular", "records")


def _size(value: Any) -> int | tuple[int, int] | None:
    if value is None or isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, list | tuple) and len(value) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        return (int(value[0]), int(value[1]))
    raise ValueError(f"input size must be a side or [height, width] in pixels, got {value!r}")


@dataclass(frozen=True)
class InputSpec:
    """How a model reads its inputs.

    Attributes:
        kind: ``image``, ``text``, ``tabular`` or ``records``.
        size: images: a side, or (height, width), in pixels.
        channels: images: 1 (grayscale) or 3 (RGB).
        invert: images: ``255 - pixel`` (dark ink on white paper).
        keep_aspect: images: scale the longer side and pad, instead of stretching.
        mean, std: images: per-channel normalisation after scaling to [0, 1], as a
            pretrained backbone expects (``(x - mean) / std``); None: none.
        tta: images: extra distorted views averaged into each embedding at inference (the
            stored threshold was calibrated with them).
        mirror: images: each view's left-right mirror image is averaged in too.
        features: tabular: the width of the feature vectors.
        featurizer: tabular and records: the fitted ``RecordFeaturizer`` (as a dict) that
            turns rows into feature vectors.
        label_column: tabular: the table's class column (dropped from rows given to it).
        feature_columns: tabular: the columns the featuriser reads.
    """

    kind: str = "image"
    size: int | tuple[int, int] | None = None
    channels: int = 1
    invert: bool = False
    keep_aspect: bool = False
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    tta: int = 0
    mirror: bool = False
    features: int | None = None
    featurizer: dict[str, Any] | None = None
    label_column: str | None = None
    feature_columns: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"input kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        object.__setattr__(self, "size", _size(self.size))
        if self.kind == "image" and self.size is None:
            raise ValueError("an image input needs its size (a side or [height, width])")
        for name in ("invert", "keep_aspect", "mirror"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"input {name} must be true or false, got "
                                 f"{getattr(self, name)!r}")
        if self.channels not in (1, 3):
            raise ValueError(f"input channels must be 1 or 3, got {self.channels!r}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None:
                if (not isinstance(value, list | tuple) or len(value) != self.channels
                        or not all(isinstance(v, int | float) for v in value)):
                    raise ValueError(f"input {name} must hold one number per channel "
                                     f"({self.channels}), got {value!r}")
                object.__setattr__(self, name, tuple(float(v) for v in value))
        if self.std is not None and any(v <= 0 for v in self.std):
            raise ValueError(f"input std must be positive, got {self.std}")
        if not isinstance(self.tta, int) or isinstance(self.tta, bool) or self.tta < 0:
            raise ValueError(f"input tta must be a whole number >= 0, got {self.tta!r}")
        if self.featurizer is not None and not isinstance(self.featurizer, dict):
            raise ValueError(f"input featurizer must be a mapping, got {self.featurizer!r}")
        if self.kind == "records" and self.featurizer is None:
            raise ValueError("a records input needs its fitted featurizer")
        if self.feature_columns is not None:
            object.__setattr__(self, "feature_columns", tuple(self.feature_columns))

    @property
    def is_table(self) -> bool:
        """Rows of a class-labelled table, featurised (``tabular`` with a featuriser)."""
        return self.kind == "tabular" and self.featurizer is not None

    @property
    def takes_rows(self) -> bool:
        """Inputs are rows ``{column: value}`` (a table's or records)."""
        return self.featurizer is not None

    @property
    def shape(self) -> tuple[int, ...] | None:
        """The shape of one input tensor: (C, H, W) for images, (F,) for feature vectors;
        None for texts and for rows whose width only the featuriser knows."""
        if self.kind == "image":
            h, w = (self.size, self.size) if isinstance(self.size, int) else self.size
            return (self.channels, h, w)
        if self.kind in ("tabular", "records") and self.features is not None:
            return (self.features,)
        return None

    def to_dict(self) -> dict[str, Any]:
        """The card's ``input`` entry: the fields that apply to this kind."""
        if self.kind == "image":
            keys = ["channels", "size", "invert", "keep_aspect", "tta"]
            keys += ["mirror"] if self.mirror else []  # older readers know no mirror
            keys += [k for k in ("mean", "std") if getattr(self, k) is not None]
        elif self.kind == "text":
            keys = []
        else:
            keys = [k for k in ("features", "featurizer", "label_column", "feature_columns")
                    if getattr(self, k) is not None]
        out: dict[str, Any] = {"kind": self.kind}
        for k in keys:
            v = getattr(self, k)
            out[k] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any], defaults: dict[str, Any] | None = None
                  ) -> InputSpec:
        """An InputSpec from a card's ``input`` entry; ``defaults`` fill what an older card
        left out (its training config's ``data.size``, ``data.channels``, ...). Unknown
        keys are refused."""
        if not isinstance(values, dict):
            raise ValueError(f"the card's input must be a mapping, got {values!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown input field {unknown[0]!r}; known: "
                             f"{', '.join(sorted(known))}")
        merged = {**(defaults or {}), **values}
        merged.setdefault("kind", "image")
        if merged["kind"] != "image":  # image defaults (from an old config) do not apply
            merged = {k: v for k, v in merged.items() if k in values or k == "kind"}
        try:
            return cls(**merged)
        except TypeError as exc:
            raise ValueError(f"bad input entry {values!r}: {exc}") from None
