"""Verify two images with an exported siamkit model: onnxruntime, numpy and Pillow only.

Copied as ``predict.py`` into every ONNX export folder (next to ``verifier.onnx`` and
``export.json``); it imports nothing from siamkit or torch.

    python predict.py A.png B.png            # prints {"score": ..., "same": ..., ...}
    python predict.py --embed A.png B.png    # prints the embeddings
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

HERE = Path(__file__).resolve().parent


def preprocess(path: str, spec: dict) -> np.ndarray:
    """An image as the model's input: (C, H, W) float32 in [0, 1], as siamkit loads it."""
    size, channels = spec["size"], spec["channels"]
    h, w = (size, size) if isinstance(size, int) else size
    with Image.open(path) as img:
        img = img.convert("L" if channels == 1 else "RGB")
        if spec.get("keep_aspect") and img.size != (w, h):
            scale = min(w / img.size[0], h / img.size[1])
            fit = (max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale)))
            fill = 255 if spec.get("invert") else 0
            canvas = Image.new(img.mode, (w, h), fill if channels == 1 else (fill,) * 3)
            canvas.paste(img.resize(fit, Image.Resampling.BILINEAR),
                         ((w - fit[0]) // 2, (h - fit[1]) // 2))
            img = canvas
        elif img.size != (w, h):
            img = img.resize((w, h), Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
    if spec.get("invert"):
        arr = 255 - arr
    arr = arr[None] if channels == 1 else arr.transpose(2, 0, 1)
    return arr.astype(np.float32) / 255.0


def main(argv: list[str]) -> int:
    manifest = json.loads((HERE / "export.json").read_text())
    embed = argv[:1] == ["--embed"]
    paths = argv[1:] if embed else argv
    if (not embed and len(paths) != 2) or not paths:
        print(__doc__, file=sys.stderr)
        return 2
    x = np.stack([preprocess(p, manifest["input"]) for p in paths])
    if embed:
        sess = ort.InferenceSession(str(HERE / "encoder.onnx"),
                                    providers=["CPUExecutionProvider"])
        (emb,) = sess.run(None, {"inputs": x})
        print(json.dumps({"embeddings": emb.tolist()}))
        return 0
    sess = ort.InferenceSession(str(HERE / "verifier.onnx"), providers=["CPUExecutionProvider"])
    score, same = sess.run(None, {"a": x[:1], "b": x[1:]})
    threshold = manifest["threshold"]
    print(json.dumps({"score": float(score[0]),
                      "same": bool(same[0]) if threshold is not None else None,
                      "threshold": threshold}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
