"""ONNX export of a trained model: the encoder alone and the whole verifier.

``export_onnx(run_dir, out_dir)`` writes

- ``encoder.onnx``: ``inputs`` (N, ...) float32 -> ``embeddings`` (N, D), dynamic batch;
- ``verifier.onnx``: ``a``, ``b`` (N, ...) -> ``score`` (N,) and ``same`` (N,) bool, with
  the calibrated threshold baked in (the encoder runs once on both inputs, as in training);
- ``export.json``: input format (size, channels, invert, keep_aspect: how to preprocess),
  threshold, score direction, and the parity figures;
- ``predict.py``: a standalone script that verifies two images with onnxruntime, numpy and
  Pillow only (no torch).

Image inputs are what ``siamkit`` feeds its encoder: grayscale or RGB resized to the model's
size (padded when ``keep_aspect``), inverted when ``invert``, scaled to [0, 1]. Test-time
augmentation (``eval.tta``) is not part of the export: the exported model embeds one view.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .checkpoint import load_model, model_identity

__all__ = ["export_onnx", "check_parity", "ExportError"]

logger = logging.getLogger(__name__)


class ExportError(RuntimeError):
    """The model cannot be exported, or its export does not match PyTorch."""


class _Verifier(nn.Module):
    """Two inputs -> (score, same) with a fixed threshold."""

    def __init__(self, model: nn.Module, threshold: float | None, higher: bool) -> None:
        super().__init__()
        self.model, self.higher = model, higher
        self.register_buffer("threshold", torch.tensor(
            float("nan") if threshold is None else threshold, dtype=torch.float32))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        score = self.model(a, b).float()
        same = score >= self.threshold if self.higher else score <= self.threshold
        return score, same


class _Encoder(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.embed(x)


def _input_shape(model: Any, card: dict, config: Any) -> tuple[int, ...]:
    enc = model.encoder
    if hasattr(enc, "in_features"):
        return (int(enc.in_features),)
    inp = card.get("input", {})
    size = inp.get("size", config.data.size)
    h, w = (size, size) if isinstance(size, int) else size
    return (int(inp.get("channels", config.data.channels)), int(h), int(w))


def _export(module: nn.Module, args: tuple, path: Path, names_in: list[str],
            names_out: list[str], opset: int) -> None:
    dynamic = {n: {0: "batch"} for n in names_in + names_out}
    with torch.no_grad():
        torch.onnx.export(module, args, str(path), input_names=names_in, output_names=names_out,
                          dynamic_axes=dynamic, opset_version=opset, dynamo=True,
                          verbose=False)


def check_parity(run_dir: str | Path, out_dir: str | Path, inputs: np.ndarray,
                 atol: float = 1e-4) -> dict[str, Any]:
    """Compare ONNX Runtime with PyTorch on ``inputs`` (float32, model input format).

    Embeddings must agree within ``atol`` (absolute, on embeddings scaled to unit norm so
    the tolerance does not depend on their size), and so must scores of consecutive
    pairs; the verifier's same/different decisions must be identical except for pairs
    whose score is within ``atol`` of the threshold.
    """
    import onnxruntime as ort

    model, _, card = load_model(run_dir)
    out_dir = Path(out_dir)
    x = np.ascontiguousarray(inputs, dtype=np.float32)
    if len(x) < 2:
        raise ExportError("parity needs at least two inputs")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    enc = ort.InferenceSession(str(out_dir / "encoder.onnx"), opts,
                               providers=["CPUExecutionProvider"])
    ver = ort.InferenceSession(str(out_dir / "verifier.onnx"), opts,
                               providers=["CPUExecutionProvider"])
    (e_onnx,) = enc.run(None, {"inputs": x})
    with torch.no_grad():
        e_torch = model.embed(torch.from_numpy(x)).numpy()
    scale = float(np.linalg.norm(e_torch, axis=1).mean()) or 1.0
    emb_diff = float(np.abs(e_onnx - e_torch).max() / scale)
    a, b = x[:-1], x[1:]
    s_onnx, same_onnx = ver.run(None, {"a": a, "b": b})
    with torch.no_grad():
        s_torch = model(torch.from_numpy(a), torch.from_numpy(b)).float().numpy()
    score_diff = float(np.abs(s_onnx - s_torch).max())
    t = card.get("threshold", {}).get("threshold_")
    decisions_equal = True
    if t is not None:
        same_torch = s_torch >= t if model.higher_is_closer else s_torch <= t
        clear = np.abs(s_torch - t) > atol
        decisions_equal = bool((same_onnx.astype(bool) == same_torch)[clear].all())
    ok = emb_diff <= atol and score_diff <= atol * max(1.0, float(np.abs(s_torch).max()))
    result = {"inputs": len(x), "max_embedding_diff_relative": emb_diff,
              "max_score_diff": score_diff, "decisions_equal": decisions_equal,
              "tolerance": atol, "ok": bool(ok and decisions_equal)}
    return result


def export_onnx(run_dir: str | Path, out_dir: str | Path, opset: int = 17,
                parity_inputs: np.ndarray | None = None) -> dict[str, Any]:
    """Export ``run_dir``'s model to ``out_dir`` (see the module docstring).

    ``parity_inputs`` (real inputs in the model's format) are used for the parity check;
    without them it runs on random inputs and says so.
    """
    try:
        import onnx  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the optional extra
        raise ExportError("ONNX export needs: pip install 'siamkit[onnx]'") from None
    model, config, card = load_model(run_dir)
    model.eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shape = _input_shape(model, card, config)
    example = torch.rand(2, *shape)
    threshold = card.get("threshold", {}).get("threshold_")
    _export(_Encoder(model), (example,), out / "encoder.onnx", ["inputs"], ["embeddings"],
            opset)
    _export(_Verifier(model, threshold, model.higher_is_closer), (example, example.flip(0)),
            out / "verifier.onnx", ["a", "b"], ["score", "same"], opset)
    real = parity_inputs is not None
    if parity_inputs is None:
        parity_inputs = np.random.default_rng(0).random((16, *shape), dtype=np.float32)
    parity = check_parity(run_dir, out, parity_inputs)
    parity["real_inputs"] = real
    inp = card.get("input", {})
    manifest = {
        "format": "onnx", "opset": opset, "model_id": model_identity(run_dir),
        "input": {"shape": list(shape), "dtype": "float32", "range": [0.0, 1.0],
                  "size": inp.get("size", config.data.size),
                  "channels": inp.get("channels", config.data.channels),
                  "invert": inp.get("invert", config.data.invert),
                  "keep_aspect": inp.get("keep_aspect", False)},
        "embedding_dim": int(model.encoder.output_dim),
        "threshold": threshold, "higher_is_closer": model.higher_is_closer,
        "files": {"encoder": "encoder.onnx", "verifier": "verifier.onnx",
                  "predict": "predict.py"},
        "parity": parity,
        "not_exported": "test-time augmentation (eval.tta): the export embeds one view",
    }
    (out / "export.json").write_text(json.dumps(manifest, indent=2))
    shutil.copyfile(Path(__file__).with_name("onnx_predict.py"), out / "predict.py")
    if not parity["ok"]:
        raise ExportError(f"ONNX Runtime does not match PyTorch: {parity}")
    return manifest
