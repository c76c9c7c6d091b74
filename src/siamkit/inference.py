"""A trained model ready to use: its input adapter, embeddings, scores, threshold, gallery.

:class:`Embedder` loads a run folder once and reads every kind of input through the adapter
its card names (images, texts, rows of a table or records); the HTTP service embeds through
it. The functions below do the same for any loaded model (the CLI uses them, as raw-vector
tabular models have no Embedder): open its gallery, embed a folder's references, score two
items, answer identification queries.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .checkpoint import calibrator_of, load_model, model_identity
from .data.download import DatasetError
from .data.images import ImageDataset
from .data.records import RecordFeaturizer
from .data.textpairs import TextPairs
from .engine import OnnxEncoder, resolve_engine
from .gallery import Gallery, GalleryError, check_label, metric_of
from .gallery.postgres import redact
from .inputs import ImageInput, RowInput, adapter_for
from .progress import Progress, start
from .siamese import SiameseNetwork

__all__ = ["Embedder", "open_model_gallery", "embed_references", "score_items",
           "identify_results"]


def open_model_gallery(model: SiameseNetwork, model_id: str, path: str | Path,
                       create: bool = False, *, class_score: str | None = None,
                       backend: str | None = None, backend_args: dict[str, Any] | None = None
                       ) -> Gallery:
    """The gallery in folder ``path`` for ``model`` (whose identity is ``model_id``, see
    :func:`~siamkit.checkpoint.model_identity`), created with the model's embedding size
    and metric when ``create`` and there is none.

    An existing gallery built with another model, metric or embedding size is refused;
    ``class_score``, ``backend`` and ``backend_args`` (None: the gallery's own) apply to
    this session, or are stored when the gallery is created.

    Raises:
        GalleryError: no gallery (without ``create``), or one that does not fit the model.
    """
    options: dict[str, Any] = {k: v for k, v in (("class_score", class_score),
                                                   ("backend", backend),
                                                   ("backend_args", backend_args))
                               if v is not None}
    dim, metric = model.embedding_dim, metric_of(model)
    if create:
        return Gallery.open_or_create(path, dim, metric, model_id=model_id, **options)
    if not Gallery.exists(path):
        raise GalleryError(f"no gallery in {redact(str(path))}: enroll classes first")
    return Gallery.open(path, model_id=model_id, metric=metric, dim=dim, **options)


def embed_references(model: SiameseNetwork, source: str, shots: int | None = None,
                     progress: Progress | None = None) -> tuple[list[str], torch.Tensor]:
    """A gallery's references from a labelled set (a folder per class, or a table model's
    table file, as the model reads it): the first ``shots`` items of each class (all when
    None; :meth:`~siamkit.data.images.ImageDataset.first_items`), their class labels
    checked by the gallery's label rule before anything is embedded, and their
    embeddings (N, D). ``progress`` (:mod:`siamkit.progress`) counts the items embedded.

    Returns:
        (one label per reference, embeddings (N, D)).

    Raises:
        DatasetError: a text or record model (it enrolls texts, not a labelled set), or
            a set the model cannot read.
        GalleryError: a class name that breaks the label rule.
    """
    if model.input_spec.kind in ("text", "records"):
        raise DatasetError(f"{source}: references from a folder are images (or a table's "
                           f"rows); a text model enrolls texts (--label NAME TEXT...)")
    adapter = adapter_for(model.input_spec)
    data = adapter.load_dataset(source, use_cache=False)
    data = data.subset_items(data.first_items(shots))
    labels = [data.class_names[c] for c in data.labels.tolist()]
    for name in dict.fromkeys(labels):  # a bad class name fails before any embedding
        check_label(name)
    emb = adapter.embed_dataset(model, data, start(progress, "embedding", len(data)))
    return labels, emb


def score_items(model: SiameseNetwork, a: str, b: str) -> float:
    """The model's score (its own convention) of two items given as command-line
    arguments: image paths, texts, or rows as JSON objects."""
    emb = adapter_for(model.input_spec).embed_arguments(model, [a, b])
    with torch.no_grad():
        return float(model.score_embeddings(emb[:1], emb[1:])[0])


def identify_results(gallery: Gallery, names: Sequence[Any], queries: torch.Tensor,
                     k: int = 5, threshold: float | None = None, key: str = "file"
                     ) -> list[dict[str, Any]]:
    """The ``k`` best classes of each query embedding (``queries`` (Q, D)) and its open-set
    decision at ``threshold`` (:meth:`Gallery.decide`), ready for JSON: one
    ``{key: name, "decision": label or "unknown", "matches": [{"label", "score"}...]}``
    per query."""
    found = gallery.identify(queries, k=k)
    return [{key: n, "decision": gallery.decide(m, threshold),
             "matches": [{"label": x.label, "score": x.score} for x in m]}
            for n, m in zip(names, found, strict=True)]


class Embedder:
    """Load a run folder once; embed images (paths or bytes), texts or rows as its model
    reads them, score pairs, decide at the calibrated threshold, open its galleries.

    Args:
        run_dir: a trained model's run folder.
        max_pixels, max_side: refuse images with more pixels, or a longer side, before
            decoding them (a decompression bomb is refused from its header alone).
        engine: where the encoder runs: ``torch``, ``onnx`` (ONNX Runtime, exported once
            and checked against PyTorch at start-up) or ``auto`` (ONNX Runtime when the
            onnx extra is installed and the model runs there, else PyTorch); default
            ``$SIAMKIT_ENGINE``, else ``auto``.
        precision: the torch engine's precision: ``auto`` (bf16 autocast where the CPU
            computes bf16 natively), ``fp32`` or ``bf16``; default ``$SIAMKIT_PRECISION``,
            else ``auto``. ONNX Runtime runs fp32.

    Example:
        >>> e = Embedder("runs/faces")
        >>> emb = e.embed_items(["a.png", "b.png"])          # (2, D)
        >>> e.decide(float(e.score(emb[:1], emb[1:])[0]))     # True: same person
    """

    def __init__(self, run_dir: str | Path, max_pixels: int = 40_000_000,
                 max_side: int = 16384, engine: str | None = None,
                 precision: str | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.model, self.config, self.card = load_model(run_dir)
        self.spec = self.model.input_spec
        if self.spec is not None and self.spec.kind == "tabular" and self.spec.featurizer is None:
            raise DatasetError(f"{run_dir}: a tabular model on raw feature vectors; the "
                               f"Embedder (and the HTTP service) takes image and text models "
                               f"and MLP twins trained on tables or records")
        self.adapter = adapter_for(self.spec, max_pixels=max_pixels, max_side=max_side)
        self.model_id = model_identity(run_dir)
        engine = engine or os.environ.get("SIAMKIT_ENGINE", "auto")
        precision = precision or os.environ.get("SIAMKIT_PRECISION", "auto")
        self.runner = resolve_engine(self.model, self.model_id, engine, precision)  # embeds
        self.engine = "onnx" if isinstance(self.runner, OnnxEncoder) else "torch"
        self.calibrator = calibrator_of(self.card)
        self.dim = self.model.embedding_dim
        self._lock = threading.Lock()  # one forward pass at a time keeps CPU threads sane

    @property
    def kind(self) -> str:
        """The model's input kind: image, text, tabular or records."""
        return self.spec.kind

    @property
    def takes(self) -> str:
        """What the model embeds, for messages: images, texts, rows, feature vectors."""
        return self.adapter.takes

    @property
    def featurizer(self) -> RecordFeaturizer | None:
        """The fitted featuriser of a table or record model, else None."""
        return self.adapter.featurizer if isinstance(self.adapter, RowInput) else None

    @property
    def threshold(self) -> float | None:
        """The calibrated decision threshold (model convention), if any."""
        return self.calibrator.threshold_ if self.calibrator is not None else None

    @property
    def higher_is_closer(self) -> bool:
        return self.model.higher_is_closer

    def _refuse(self, wanted: str, name: str | None = None) -> DatasetError:
        where = f"{name}: " if name else ""
        return DatasetError(f"{where}this model embeds {self.takes}, not {wanted}")

    # ---- preparing and embedding

    def load(self, source: str | Path | bytes, name: str = "image") -> torch.Tensor:
        """One image (path or encoded bytes) with the model's preprocessing: (C, H, W)."""
        if not isinstance(self.adapter, ImageInput):
            raise self._refuse("images", name)
        return self.adapter.read(source, name)

    def embed(self, images: list[torch.Tensor]) -> torch.Tensor:
        """Embed preprocessed images (from :meth:`load`): list of (C, H, W) -> (N, D)."""
        return self.embed_batch(torch.stack(images))

    def embed_batch(self, batch: Any) -> torch.Tensor:
        """Embed what the adapter prepared (images, texts, feature vectors) -> (N, D)."""
        with self._lock, torch.no_grad():
            return self.adapter.embed(self.runner, batch)

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """Embed texts with a text model -> (N, D)."""
        if self.kind != "text":
            raise self._refuse("texts")
        return self.embed_batch(self.adapter.prepare(texts))

    def check_rows(self, rows: list[Any]) -> list[dict[str, str]]:
        """Rows (``{column: value}``) as a table or record model takes them; a table's class
        column is dropped, an unknown column or a non-object is refused (DatasetError)."""
        if not isinstance(self.adapter, RowInput):
            raise self._refuse("rows of a table")
        return self.adapter.check(rows)

    def embed_rows(self, rows: list[Any]) -> torch.Tensor:
        """Embed rows of a table (or records) with an MLP twin trained on them -> (N, D)."""
        if not isinstance(self.adapter, RowInput):
            raise self._refuse("rows of a table")
        return self.embed_batch(self.adapter.prepare(rows))

    def embed_items(self, items: Sequence[str], names: Sequence[str] | None = None
                    ) -> torch.Tensor:
        """Embed command-line items as the model reads them: image paths, texts, or rows
        given as JSON objects (a record model also takes Ditto's ``COL attr VAL value``)."""
        with self._lock, torch.no_grad():
            return self.adapter.embed_arguments(self.runner, items, names)

    def embed_sources(self, sources: list[str | Path | bytes], names: list[str] | None = None
                      ) -> torch.Tensor:
        """Embed images given as paths or bytes."""
        names = names or [str(s) if not isinstance(s, bytes) else f"item {i}"
                          for i, s in enumerate(sources)]
        return self.embed([self.load(s, n) for s, n in zip(sources, names, strict=True)])

    def load_dataset(self, path: str, **options: Any) -> ImageDataset:
        """A labelled data set as the model reads it: a folder per class, a table file, or
        ``sklearn:digits`` (options: ``group_depth``, ``drawer_pattern``, ``use_cache``)."""
        return self.adapter.load_dataset(path, **options)

    def embed_dataset(self, data: ImageDataset, progress: Any = None) -> torch.Tensor:
        """Embeddings of a data set from :meth:`load_dataset` -> (N, D)."""
        with self._lock:
            return self.adapter.embed_dataset(self.runner, data, progress)

    def embed_pairs(self, pairs: TextPairs) -> torch.Tensor:
        """Embeddings of a pair file's items (texts, or records for a record model)."""
        with self._lock:
            return self.adapter.embed_pairs(self.runner, pairs)

    # ---- scores and decisions

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

    # ---- galleries

    def open_gallery(self, path: str | Path, create: bool = False, **options: Any) -> Gallery:
        """The gallery at ``path`` (a folder, or a ``postgresql://`` address) for this model
        (created when ``create`` and missing); refuses one built with another model
        (:func:`open_model_gallery`).
        ``options``: ``backend``, ``backend_args``, ``class_score``."""
        return open_model_gallery(self.model, self.model_id, path, create, **options)
