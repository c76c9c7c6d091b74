"""Verify two inputs with an exported siamkit model: onnxruntime and numpy, plus Pillow for
images or the tokenizers package for texts (no torch).

Copied as ``predict.py`` into every ONNX export folder (next to ``verifier.onnx`` and
``export.json``); it imports nothing from siamkit or torch.

    python predict.py A.png B.png            # prints {"score": ..., "same": ..., ...}
    python predict.py --embed A.png B.png    # prints the embeddings
    python predict.py "a text" "another"     # a text model: the arguments are the texts
    python predict.py "[0.1, ...]" x.npy     # a tabular model: JSON arrays or .npy files
    python predict.py '{"height": 2}' '{"height": 3}'  # a table model: rows as JSON
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

HERE = Path(__file__).resolve().parent


def preprocess(path: str, spec: dict) -> np.ndarray:
    """An image as the model's input: (C, H, W) float32 in [0, 1], as siamkit loads it."""
    from PIL import Image

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


def featurize(row: dict, f: dict) -> np.ndarray:
    """A row ``{column: value}`` as the model's featuriser (``export.json``'s
    ``featurizer``) turns it into features, as siamkit's RecordFeaturizer.transform does:
    numbers scaled and standardised with a missing flag, categories one-hot with "other"
    and missing slots."""
    import math
    import re

    number = re.compile(r"^[-+]?\d+(\.\d+)?([eE][-+]?\d+)?$")
    out: list[float] = []
    for name, (mean, std) in f["numeric"].items():
        v = str(row.get(name) if row.get(name) is not None else "")
        v = v.strip().replace(",", "").lstrip("$€£").strip()
        x = float(v) if number.match(v) else None
        if x is None or abs(x) > 3.4e38:
            out += [0.0, 1.0]
            continue
        if f.get("numeric_scaling", "log") == "log":
            x = math.copysign(math.log1p(abs(x)), x)
        out += [(x - mean) / std, 0.0]
    for name, vocab in f["categorical"].items():
        v = str(row.get(name) if row.get(name) is not None else "").strip().lower()
        slots = [0.0] * (len(vocab) + 2)
        slots[vocab.index(v) if v in vocab else len(vocab) + 1 if not v else len(vocab)] = 1.0
        out += slots
    return np.asarray(out, dtype=np.float32)


def features(arg: str, spec: dict) -> np.ndarray:
    """A tabular model's input: a JSON array of numbers, or a .npy file -> (F,) float32; a
    model trained on a table (or records) also takes a row as a JSON object."""
    if arg.lstrip().startswith("{"):
        if "featurizer" not in spec:
            raise SystemExit("this model takes feature vectors (JSON arrays or .npy files), "
                             "not rows")
        row = json.loads(arg)
        f = spec["featurizer"]
        known = set(f["numeric"]) | set(f["categorical"]) | set(f.get("skipped", []))
        unknown = [k for k in row if k not in known and k != spec.get("label_column")]
        if unknown:
            raise SystemExit(f"column {unknown[0]!r} is not one of the model's")
        return featurize(row, spec["featurizer"])
    if not arg.lstrip().startswith("[") and not Path(arg).is_file():
        raise SystemExit(f"{arg[:80]}: not a JSON array of numbers, a JSON row or a .npy file")
    x = np.asarray(json.loads(arg) if arg.lstrip().startswith("[") else np.load(arg),
                   dtype=np.float32).reshape(-1)
    if x.shape != tuple(spec["shape"]):
        raise SystemExit(f"expected {spec['shape'][0]} features, got {x.size}")
    return x


def tokenize(texts: list[str], spec: dict, folder: Path = HERE
             ) -> tuple[np.ndarray, np.ndarray]:
    """Texts as a text model's inputs, as sentence-transformers prepares them: stripped,
    lower-cased if the model says so, cut to ``max_seq_length`` tokens, padded to the
    longest -> (input_ids, attention_mask), int64 (N, L)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(folder) / spec["tokenizer"]))
    tok.enable_truncation(spec["max_seq_length"])
    tok.enable_padding(pad_id=spec["pad_id"])
    texts = [t.strip() for t in texts]
    if spec.get("join_codes"):  # as siamkit.encoders.join_codes: DSC-W150 -> DSCW150
        import re

        code = re.compile(spec["join_codes"], re.IGNORECASE)

        def join(m: re.Match) -> str:
            t = m.group()
            return re.sub(r"[-/]", "", t) if any(c.isdigit() for c in t) else t
        texts = [code.sub(join, t) for t in texts]
    if spec.get("lowercase"):
        texts = [t.lower() for t in texts]
    enc = tok.encode_batch(texts)
    ids = np.array([e.ids for e in enc], dtype=np.int64)
    mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
    return ids, mask


def load(arg: str, spec: dict) -> np.ndarray:
    """One input of an image or tabular model, as the model takes it."""
    return features(arg, spec) if spec.get("kind") == "tabular" else preprocess(arg, spec)


def main(argv: list[str]) -> int:
    manifest = json.loads((HERE / "export.json").read_text())
    embed = argv[:1] == ["--embed"]
    paths = argv[1:] if embed else argv
    if (not embed and len(paths) != 2) or not paths:
        print(__doc__, file=sys.stderr)
        return 2
    spec = manifest["input"]
    text = spec.get("kind") == "text"
    if embed:
        sess = ort.InferenceSession(str(HERE / "encoder.onnx"),
                                    providers=["CPUExecutionProvider"])
        if text:
            ids, mask = tokenize(paths, spec)
            (emb,) = sess.run(None, {"input_ids": ids, "attention_mask": mask})
        else:
            x = np.stack([load(p, spec) for p in paths])
            (emb,) = sess.run(None, {"inputs": x})
        print(json.dumps({"embeddings": emb.tolist()}))
        return 0
    sess = ort.InferenceSession(str(HERE / "verifier.onnx"), providers=["CPUExecutionProvider"])
    if text:
        ids_a, mask_a = tokenize([paths[0]], spec)
        ids_b, mask_b = tokenize([paths[1]], spec)
        score, same = sess.run(None, {"ids_a": ids_a, "mask_a": mask_a, "ids_b": ids_b,
                                      "mask_b": mask_b})
    else:
        x = np.stack([load(p, spec) for p in paths])
        score, same = sess.run(None, {"a": x[:1], "b": x[1:]})
    threshold = manifest["threshold"]
    print(json.dumps({"score": float(score[0]),
                      "same": bool(same[0]) if threshold is not None else None,
                      "threshold": threshold}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
