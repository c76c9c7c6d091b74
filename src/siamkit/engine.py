"""Where a served model's encoder runs: eager PyTorch, or ONNX Runtime.

:func:`onnx_encoder` exports the model's encoder once (cached by model identity under
``$SIAMKIT_DATA/onnx``), checks at start-up that ONNX Runtime embeds as PyTorch does, and
returns a module that embeds through ONNX Runtime and quacks like the model for every
embedding function (``embed``, ``eval``, scores). The input adapters (resizing, test-time
augmentation, normalisation, tokenising, featurising) stay as they are: only the encoder's
forward pass moves.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .data.download import cache_dir
from .export import (
    SAMPLE_TEXTS,
    ExportError,
    _Encoder,
    _export,
    _input_shape,
    _session,
    _TextEncoder,
)
from .precision import autocast, resolve_precision
from .siamese import SiameseNetwork

__all__ = ["ENGINES", "Autocast", "OnnxEncoder", "onnx_encoder", "onnx_available",
           "resolve_engine"]

logger = logging.getLogger(__name__)

ENGINES = ("auto", "torch", "onnx")


def onnx_available() -> bool:
    """True when the ``onnx`` extra (onnx, onnxruntime, onnxscript) is installed."""
    from importlib.util import find_spec

    return all(find_spec(m) is not None for m in ("onnx", "onnxruntime", "onnxscript"))


class _Runner(nn.Module):
    """A model whose encoder runs elsewhere (another engine, another precision): ``embed``
    is the subclass's, the scores go through the model's own distance or head."""

    def __init__(self, model: SiameseNetwork) -> None:
        super().__init__()
        self.model = model
        self.input_spec, self.distance, self.head = model.input_spec, model.distance, model.head
        self.encoder = model.encoder  # what callers read settings from (tokenizer, dim)

    @property
    def higher_is_closer(self) -> bool:
        return self.model.higher_is_closer

    @property
    def embedding_dim(self) -> int:
        return self.model.embedding_dim

    def score_embeddings(self, e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
        return self.model.score_embeddings(e1, e2)

    def pairwise_scores(self, q: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return self.model.pairwise_scores(q, r)


class Autocast(_Runner):
    """The model in PyTorch, its encoder under bf16 autocast; embeddings float32."""

    def embed(self, x: Any) -> torch.Tensor:
        with autocast("bf16"):
            return self.model.embed(x).float()


class OnnxEncoder(_Runner):
    """A model whose encoder runs in ONNX Runtime."""

    def __init__(self, model: SiameseNetwork, session: Any, text: bool) -> None:
        super().__init__(model)
        self.session, self.text = session, text

    def embed(self, x: Any) -> torch.Tensor:
        """Embed a batch: float (B, ...) tensors, or B texts."""
        if self.text:
            features = self.model.encoder.tokenize(list(x))
            feeds = {"input_ids": features["input_ids"].numpy().astype(np.int64),
                     "attention_mask": features["attention_mask"].numpy().astype(np.int64)}
        else:
            feeds = {"inputs": np.ascontiguousarray(x.detach().numpy(), dtype=np.float32)}
        return torch.from_numpy(self.session.run(None, feeds)[0])


def _write(model: SiameseNetwork, folder: Path, opset: int = 18) -> None:
    """Export the encoder graph into ``folder`` (atomically)."""
    spec = model.input_spec
    text = spec.kind == "text"
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        if text:
            features = model.encoder.tokenize(SAMPLE_TEXTS[:2])
            _export(_TextEncoder(model), (features["input_ids"], features["attention_mask"]),
                    tmp / "encoder.onnx", ["input_ids", "attention_mask"], ["embeddings"],
                    opset, seq_axis=True)
        else:
            example = torch.rand(2, *_input_shape(model, spec))
            _export(_Encoder(model, normalize=False), (example,), tmp / "encoder.onnx",
                    ["inputs"], ["embeddings"], opset)
        if (folder / "encoder.onnx").is_file():
            return  # another process (a replica) exported first: keep its copy, maybe in use
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)  # left incomplete by something else
        try:
            tmp.rename(folder)
        except OSError:
            if not (folder / "encoder.onnx").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _parity(model: SiameseNetwork, fast: OnnxEncoder, atol: float) -> float:
    """Largest difference between the engines' embeddings of sample inputs, relative to
    the embeddings' mean norm."""
    if fast.text:
        sample: Any = SAMPLE_TEXTS
    else:
        sample = torch.rand(8, *_input_shape(model, model.input_spec),
                            generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model.embed(sample).float()
    theirs = fast.embed(sample)
    scale = float(ours.norm(dim=1).mean()) or 1.0
    return float((ours - theirs).abs().max()) / scale


def onnx_encoder(model: SiameseNetwork, model_id: str, atol: float = 1e-5,
                 folder: Path | None = None) -> OnnxEncoder:
    """``model`` with its encoder in ONNX Runtime, exported once per model identity (into
    ``folder``, default ``$SIAMKIT_DATA/onnx/<id>``) and checked against PyTorch on sample
    inputs: over ``atol`` (relative to the embeddings' size) it raises ExportError."""
    if not onnx_available():
        raise ExportError("the ONNX engine needs the onnx extra: pip install 'siamkit[onnx]'")
    if model.input_spec is None:
        raise ExportError("the model does not say how it reads inputs (no input spec)")
    if getattr(model.encoder, "fields", None):
        raise ExportError("a field-wise text encoder does not run in ONNX Runtime")
    model.eval()
    folder = folder or cache_dir() / "onnx" / model_id[:32]
    text = model.input_spec.kind == "text"
    if not (folder / "encoder.onnx").is_file():
        logger.info("exporting the encoder to ONNX (%s): once per model", folder)
        try:
            _write(model, folder)
        except ExportError:
            raise
        except Exception as exc:  # the exporter's many failure types: say which, briefly
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ExportError(f"the encoder does not export to ONNX ({type(exc).__name__}: "
                              f"{first[:200]})") from None
    fast = OnnxEncoder(model, _session(folder / "encoder.onnx"), text)
    diff = _parity(model, fast, atol)
    if diff > atol:
        raise ExportError(f"ONNX Runtime embeds otherwise than PyTorch ({diff:.2e} relative, "
                          f"over {atol:g}): use the torch engine")
    logger.info("ONNX Runtime engine: parity with PyTorch %.1e (relative)", diff)
    return fast


def resolve_engine(model: SiameseNetwork, model_id: str, engine: str = "auto",
                   precision: str = "fp32") -> nn.Module:
    """The module to embed with: ``torch`` (the model itself; under bf16 autocast when
    ``precision`` resolves to bf16), ``onnx`` (ONNX Runtime, fp32; errors if it cannot run
    the model), or ``auto`` (ONNX Runtime when the onnx extra is installed and the model
    runs there, else torch, saying why)."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    in_torch = Autocast(model) if resolve_precision(precision) == "bf16" else model
    if engine == "torch" or (engine == "auto" and not onnx_available()):
        return in_torch
    try:
        return onnx_encoder(model, model_id)
    except ExportError as exc:
        if engine == "onnx":
            raise
        logger.warning("embedding with PyTorch: %s", exc)
        return in_torch
