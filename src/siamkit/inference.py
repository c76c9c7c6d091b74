"""A trained model ready to serve: its preprocessing, embeddings, scores and threshold."""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

import torch

from .checkpoint import load_model, model_identity
from .data.download import DatasetError
from .data.images import load_image
from .evaluate import embed_images

__all__ = ["Embedder"]


class Embedder:
    """Load a run folder once; embed images given as paths or bytes (texts, for a text
    model: ``kind == "text"``; rows ``{column: value}``, for an MLP twin trained on a table or
    on records: ``featurizer`` set), score pairs.

    Args:
        run_dir: a trained model's run folder.
        max_pixels, max_side: refuse images with more pixels, or a longer side, before
            decoding them (a decompression bomb is refused from its header alone).
    """

    def __init__(self, run_dir: str | Path, max_pixels: int = 40_000_000,
                 max_side: int = 16384) -> None:
        self.run_dir = Path(run_dir)
        self.model, self.config, self.card = load_model(run_dir)
        self.model_id = model_identity(run_dir)
        inp = self.card.get("input", {})
        size = inp.get("size", self.config.data.size)
        self.size = size if isinstance(size, int) else tuple(size)
        self.channels = inp.get("channels", self.config.data.channels)
        self.invert = inp.get("invert", self.config.data.invert)
        self.keep_aspect = inp.get("keep_aspect", False)
        self.tta = self.config.eval.tta
        self.max_pixels, self.max_side = max_pixels, max_side
        self.dim = int(self.model.encoder.output_dim)
        self.kind = inp.get("kind", "image")
        self.featurizer = None  # rows of a table or of records: a fitted RecordFeaturizer
        self.label_column = inp.get("label_column")
        if "featurizer" in inp:
            from .data.records import RecordFeaturizer

            self.featurizer = RecordFeaturizer.from_dict(inp["featurizer"])
        elif self.kind not in ("image", "text"):
            raise DatasetError(f"{run_dir}: a {self.kind} model on raw feature vectors; the "
                               f"Embedder (and the HTTP service) takes image and text models "
                               f"and MLP twins trained on tables or records")
        self._lock = threading.Lock()  # one forward pass at a time keeps CPU threads sane

    @property
    def threshold(self) -> float | None:
        """The calibrated decision threshold (model convention), if any."""
        return self.card.get("threshold", {}).get("threshold_")

    @property
    def higher_is_closer(self) -> bool:
        return self.model.higher_is_closer

    def load(self, source: str | Path | bytes, name: str = "image") -> torch.Tensor:
        """One image (path or encoded bytes) with the model's preprocessing: (C, H, W)."""
        from PIL import Image, UnidentifiedImageError

        if self.kind == "text" or self.featurizer is not None:
            takes = "texts" if self.kind == "text" else "rows"
            raise DatasetError(f"{name}: this model embeds {takes}, not images")
        if isinstance(source, bytes | bytearray):
            if not source:
                raise DatasetError(f"{name}: empty upload")
            try:
                with Image.open(io.BytesIO(source)) as img:
                    w, h = img.size
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
                    Image.DecompressionBombError) as exc:
                raise DatasetError(f"{name}: not a readable image ({exc})") from None
            if w * h > self.max_pixels or max(w, h) > self.max_side:
                raise DatasetError(f"{name}: {w} x {h} pixels is over the limits "
                                   f"({self.max_pixels} pixels, {self.max_side} a side)")
            try:
                return load_image(io.BytesIO(source), self.size, self.channels, self.invert,
                                  self.keep_aspect)
            except DatasetError as exc:
                reason = str(exc).split(": ", 1)[-1]
                raise DatasetError(f"{name}: {reason}") from None
        return load_image(source, self.size, self.channels, self.invert, self.keep_aspect)

    def embed(self, images: list[torch.Tensor]) -> torch.Tensor:
        """Embed preprocessed images: list of (C, H, W) uint8 -> (N, D)."""
        with self._lock, torch.no_grad():
            return embed_images(self.model, torch.stack(images), tta=self.tta)

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """Embed texts with a text model -> (N, D)."""
        from .evaluate import embed_texts

        if self.kind != "text":
            raise DatasetError(f"this model embeds {'rows' if self.featurizer else 'images'}"
                               f", not texts")
        with self._lock:
            return embed_texts(self.model, texts)

    def check_rows(self, rows: list[Any]) -> list[dict[str, str]]:
        """Rows (``{column: value}``) as a table or record model takes them; a table's class
        column is dropped, an unknown column or a non-object is refused (DatasetError)."""
        if self.featurizer is None:
            raise DatasetError(f"this model embeds {self.kind}s, not rows of a table")
        out = []
        for i, row in enumerate(rows):
            try:
                out.append(self.featurizer.check_row(row, self.label_column))
            except ValueError as exc:
                raise DatasetError(f"row {i}: {exc}") from None
        return out

    def embed_rows(self, rows: list[Any]) -> torch.Tensor:
        """Embed rows of a table (or records) with an MLP twin trained on them -> (N, D)."""
        from .evaluate import embed_records

        checked = self.check_rows(rows)
        with self._lock:
            try:
                return embed_records(self.model, checked, self.featurizer)
            except ValueError as exc:  # non-finite embeddings: values too large
                raise DatasetError(str(exc)) from None

    def embed_sources(self, sources: list[str | Path | bytes], names: list[str] | None = None
                      ) -> torch.Tensor:
        names = names or [str(s) if not isinstance(s, bytes) else f"item {i}"
                          for i, s in enumerate(sources)]
        return self.embed([self.load(s, n) for s, n in zip(sources, names, strict=True)])

    def score(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Scores of row-aligned embedding pairs (model convention)."""
        with torch.no_grad():
            return self.model.score_embeddings(a, b)

    def decide(self, score: float) -> bool | None:
        """Same (True) / different (False) at the calibrated threshold; None without one."""
        t = self.threshold
        if t is None:
            return None
        return score >= t if self.higher_is_closer else score <= t
