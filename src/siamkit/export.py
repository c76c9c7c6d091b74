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
augmentation (``eval.tta``, ``eval.mirror``) is not part of the export: the exported model
embeds one view.

Text models (the sentence-transformers twin) export the Transformer, its mean pooling,
projection and normalisation: ``encoder.onnx`` takes ``input_ids`` and ``attention_mask``
(int64, dynamic batch and length); ``verifier.onnx`` takes ``ids_a``, ``mask_a``, ``ids_b``,
``mask_b``. Tokenisation is not in the graph (ONNX has no standard tokenizer operator; it
would need onnxruntime-extensions): the export ships the model's fast tokenizer as
``tokenizer.json``, which ``predict.py`` runs with the ``tokenizers`` package (no torch).
Records (entity matching) must be serialised to text first, as siamkit does
(``data.textpairs.serialize_record``).
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .checkpoint import load_model, model_identity, threshold_of
from .encoders import CODE_TOKEN
from .inputs import InputSpec
from .progress import Progress, start

__all__ = ["export_onnx", "export_sentence_transformers", "check_parity", "ExportError",
           "parity_inputs"]

logger = logging.getLogger(__name__)


class ExportError(RuntimeError):
    """The model cannot be exported, or its export does not match PyTorch."""


class _Encoder(nn.Module):
    """Inputs in [0, 1] -> embeddings, normalised first as the input spec says (a
    pretrained backbone's mean and std), so the graph takes what siamkit loads; with
    ``normalize=False`` the encoder alone (for callers that normalise themselves)."""

    def __init__(self, model: nn.Module, normalize: bool = True) -> None:
        super().__init__()
        self.model = model
        spec = model.input_spec
        self.normalize = normalize and spec.kind == "image" and spec.mean is not None
        if self.normalize:
            self.register_buffer("mean", torch.tensor(spec.mean).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(spec.std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            x = (x - self.mean) / self.std
        return self.model.embed(x)


class _Verifier(nn.Module):
    """Two inputs -> (score, same) with a fixed threshold; the encoder runs once on both."""

    def __init__(self, model: nn.Module, threshold: float | None, higher: bool) -> None:
        super().__init__()
        self.encoder, self.model, self.higher = _Encoder(model), model, higher
        self.register_buffer("threshold", torch.tensor(
            float("nan") if threshold is None else threshold, dtype=torch.float32))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.encoder(torch.cat([a, b]))  # one pass: BatchNorm sees both halves alike
        score = self.model.score_embeddings(e[: a.shape[0]], e[a.shape[0]:]).float()
        same = score >= self.threshold if self.higher else score <= self.threshold
        return score, same


class _TextEncoder(nn.Module):
    """Token ids and attention mask -> embeddings: the text twin without its tokenizer."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        features = {"input_ids": input_ids, "attention_mask": attention_mask,
                    "token_type_ids": torch.zeros_like(input_ids)}
        return self.model.encoder.encode_features(features)


class _TextVerifier(nn.Module):
    def __init__(self, model: nn.Module, threshold: float | None, higher: bool) -> None:
        super().__init__()
        self.encoder, self.model, self.higher = _TextEncoder(model), model, higher
        self.register_buffer("threshold", torch.tensor(
            float("nan") if threshold is None else threshold, dtype=torch.float32))

    def forward(self, ids_a: torch.Tensor, mask_a: torch.Tensor, ids_b: torch.Tensor,
                mask_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        score = self.model.score_embeddings(self.encoder(ids_a, mask_a),
                                            self.encoder(ids_b, mask_b)).float()
        same = score >= self.threshold if self.higher else score <= self.threshold
        return score, same


def _input_shape(model: Any, spec: InputSpec) -> tuple[int, ...]:
    """One input's shape: (C, H, W), or (F,) feature vectors (whatever the featuriser
    gives: the encoder's ``in_features``)."""
    if spec.kind == "image":
        return spec.shape
    features = getattr(model.encoder, "in_features", None) or spec.features
    if not isinstance(features, int):
        raise ExportError("the model's encoder does not say its input width (in_features)")
    return (features,)


def _opset(path: Path) -> int:
    """The default-domain opset the file was written with (the exporter may raise it)."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return int(next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")))


def _export(module: nn.Module, args: tuple, path: Path, names_in: list[str],
            names_out: list[str], opset: int, seq_axis: bool = False) -> None:
    dynamic = {n: {0: "batch"} for n in names_in + names_out}
    if seq_axis:  # token inputs: the sequence length varies too
        for i, n in enumerate(names_in):
            dynamic[n] = {0: "batch", 1: f"length{i // 2}"}
    modes = [(m, m.training) for m in module.modules()]
    module.eval()  # what inference runs; the caller's modes come back after
    quiet = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping torchvision::nms"
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*'dynamic_axes' is not recommended")
            torch.onnx.export(module, args, str(path), input_names=names_in,
                              output_names=names_out, dynamic_axes=dynamic,
                              opset_version=opset, dynamo=True, verbose=False)
    finally:
        quiet.setLevel(level)
        for m, training in modes:
            m.train(training)


def _session(path: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    # idle threads sleep instead of spinning: in the service they would take the cores
    # from gallery search and request parsing between two embeddings
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def check_parity(run_dir: str | Path, out_dir: str | Path, inputs: np.ndarray | list[str],
                 atol: float = 1e-4) -> dict[str, Any]:
    """Compare ONNX Runtime with PyTorch on ``inputs`` (float32 in the model's input format,
    or a list of texts for a text model).

    Embeddings must agree within ``atol`` (absolute, on embeddings scaled to unit norm so
    the tolerance does not depend on their size), and so must scores of consecutive
    pairs; the verifier's same/different decisions must be identical except for pairs
    whose score is within ``atol`` of the threshold. Text goes through the exported
    tokenizer on the ONNX side and through sentence-transformers on the PyTorch side, so
    the check covers tokenisation too.
    """
    model, _, card = load_model(run_dir)
    text = model.input_spec.kind == "text"
    out_dir = Path(out_dir)
    if len(inputs) < 2:
        raise ExportError("parity needs at least two inputs")
    enc, ver = _session(out_dir / "encoder.onnx"), _session(out_dir / "verifier.onnx")
    if text:
        from .onnx_predict import tokenize

        texts = [str(t) for t in inputs]
        spec = json.loads((out_dir / "export.json").read_text())["input"]
        ids, mask = tokenize(texts, spec, out_dir)
        (e_onnx,) = enc.run(None, {"input_ids": ids, "attention_mask": mask})
        ia, ma = tokenize(texts[:-1], spec, out_dir)
        ib, mb = tokenize(texts[1:], spec, out_dir)
        s_onnx, same_onnx = ver.run(None, {"ids_a": ia, "mask_a": ma, "ids_b": ib,
                                           "mask_b": mb})
        with torch.no_grad():
            e_torch = model.embed(texts).float().numpy()
            s_torch = model.score_embeddings(torch.from_numpy(e_torch[:-1]),
                                             torch.from_numpy(e_torch[1:])).float().numpy()
    else:
        x = np.ascontiguousarray(inputs, dtype=np.float32)
        (e_onnx,) = enc.run(None, {"inputs": x})
        s_onnx, same_onnx = ver.run(None, {"a": x[:-1], "b": x[1:]})
        with torch.no_grad():
            e_torch = _Encoder(model)(torch.from_numpy(x)).numpy()
            s_torch = model.score_embeddings(torch.from_numpy(e_torch[:-1]),
                                             torch.from_numpy(e_torch[1:])).float().numpy()
    scale = float(np.linalg.norm(e_torch, axis=1).mean()) or 1.0
    emb_diff = float(np.abs(e_onnx - e_torch).max() / scale)
    score_diff = float(np.abs(s_onnx - s_torch).max())
    t = threshold_of(card)
    decisions_equal = True
    if t is not None:
        same_torch = s_torch >= t if model.higher_is_closer else s_torch <= t
        clear = np.abs(s_torch - t) > atol
        decisions_equal = bool((same_onnx.astype(bool) == same_torch)[clear].all())
    ok = emb_diff <= atol and score_diff <= atol * max(1.0, float(np.abs(s_torch).max()))
    return {"inputs": len(inputs), "max_embedding_diff_relative": emb_diff,
            "max_score_diff": score_diff, "decisions_equal": decisions_equal,
            "tolerance": atol, "ok": bool(ok and decisions_equal)}


SAMPLE_TEXTS = [
    "A man is playing a guitar.", "Someone plays the guitar on stage.",
    "The stock market fell sharply on Monday.", "Shares dropped at the start of the week.",
    "name: lg 24 inch dishwasher; price: 499.0", "name: LG dishwasher 24in white",
    "How do I learn Python quickly?", "What is the fastest way to learn Python?",
]


def _text_tokenizer(model: nn.Module) -> Any:
    """The fast tokenizer a text model's export ships; refuses what does not export (before
    anything is written).

    A text encoder exports when it follows siamkit's text protocol, as ``TextEncoder``
    does: ``tokenize(texts)`` gives the transformer's inputs (``input_ids``,
    ``attention_mask``), ``encode_features(features)`` embeds them, ``tokenizer`` is a fast
    (Rust) Hugging Face tokenizer and ``max_seq_length`` cuts texts."""
    enc = model.encoder
    if getattr(enc, "fields", None):  # a text ensemble: its members' fields
        raise ExportError("a field-wise text encoder (encoder_args.fields) does not export to "
                          "ONNX yet: it takes one token sequence per field")
    missing = [n for n in ("tokenize", "encode_features") if not callable(getattr(enc, n, None))]
    if missing or not isinstance(getattr(enc, "max_seq_length", None), int):
        raise ExportError(f"{type(enc).__qualname__} does not export to ONNX: a text encoder "
                          f"exports when it has tokenize(texts), encode_features(features) and "
                          f"max_seq_length (missing: {missing or ['max_seq_length']})")
    tokenizer = getattr(enc, "tokenizer", None)
    if getattr(tokenizer, "backend_tokenizer", None) is None:
        raise ExportError("this text model has no fast (Rust) tokenizer (its encoder's "
                          "tokenizer) to ship with the export")
    return tokenizer


def _export_text(model: nn.Module, out: Path, opset: int, threshold: float | None
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Write the text encoder, verifier and tokenizer; (input spec, files)."""
    enc = model.encoder
    tokenizer = _text_tokenizer(model)
    tokenizer.backend_tokenizer.save(str(out / "tokenizer.json"))
    features = enc.tokenize(SAMPLE_TEXTS[:2])
    ids, mask = features["input_ids"], features["attention_mask"]
    _export(_TextEncoder(model), (ids, mask), out / "encoder.onnx",
            ["input_ids", "attention_mask"], ["embeddings"], opset, seq_axis=True)
    ids_b, mask_b = ids.flip(0)[:, :-1], mask.flip(0)[:, :-1]  # another length: stays dynamic
    _export(_TextVerifier(model, threshold, model.higher_is_closer),
            (ids, mask, ids_b.contiguous(), mask_b.contiguous()), out / "verifier.onnx",
            ["ids_a", "mask_a", "ids_b", "mask_b"], ["score", "same"], opset, seq_axis=True)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    joined = getattr(model.encoder, "join_codes", False)
    spec = {"kind": "text", "tokenizer": "tokenizer.json",
            "max_seq_length": int(enc.max_seq_length), "pad_id": int(pad),
            "lowercase": bool(getattr(enc, "do_lower_case", False)),
            "join_codes": CODE_TOKEN.pattern if joined else None,
            "dtype": "int64"}
    return spec, {"tokenizer": "tokenizer.json"}


def export_onnx(run_dir: str | Path, out_dir: str | Path, opset: int = 18,
                parity_inputs: np.ndarray | list[str] | None = None,
                progress: Progress | None = None) -> dict[str, Any]:
    """Export ``run_dir``'s model to ``out_dir`` (see the module docstring).

    ``parity_inputs`` (real inputs in the model's format; texts for a text model, see
    :func:`parity_inputs`) are used for the parity check; without them it runs on random
    inputs (for text, a few built-in sentences) and says so. ``progress``
    (:mod:`siamkit.progress`) counts two steps: the graphs written, the parity checked.
    """
    try:
        import onnx  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the optional extra
        raise ExportError("ONNX export needs: pip install 'siamkit[onnx]'") from None
    model, _, card = load_model(run_dir)
    model.eval()
    spec = model.input_spec
    if spec.kind == "text":
        _text_tokenizer(model)  # refuse a model that cannot export before making out_dir
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    before = {p.name for p in out.iterdir()}
    threshold = threshold_of(card)
    tick = start(progress, "exporting", 2)
    files = {"encoder": "encoder.onnx", "verifier": "verifier.onnx", "predict": "predict.py"}
    real = parity_inputs is not None
    if spec.kind == "text":
        spec_out, extra = _export_text(model, out, opset, threshold)
        files.update(extra)
        not_exported = ("tokenisation (shipped as tokenizer.json for the tokenizers package; "
                        "ONNX has no standard tokenizer operator)")
        if parity_inputs is None:
            parity_inputs = SAMPLE_TEXTS
    else:
        shape = _input_shape(model, spec)
        example = torch.rand(2, *shape)
        _export(_Encoder(model), (example,), out / "encoder.onnx", ["inputs"], ["embeddings"],
                opset)
        _export(_Verifier(model, threshold, model.higher_is_closer),
                (example, example.flip(0)), out / "verifier.onnx", ["a", "b"],
                ["score", "same"], opset)
        size = list(spec.size) if isinstance(spec.size, tuple) else spec.size
        exported = {"kind": "image" if len(shape) == 3 else "tabular", "shape": list(shape),
                    "dtype": "float32", "range": [0.0, 1.0], "size": size,
                    "channels": spec.channels, "invert": spec.invert,
                    "keep_aspect": spec.keep_aspect}
        if spec.mean is not None and spec.std is not None:
            exported.update(mean=list(spec.mean), std=list(spec.std))
        not_exported = ("test-time augmentation (eval.tta, eval.mirror): the export embeds one "
                        "view")
        if spec.featurizer is not None:  # the MLP twin of record pairs or of a table's rows
            exported["featurizer"] = spec.featurizer
            exported["range"] = None  # standardised and one-hot features
            if spec.feature_columns is not None:
                exported["feature_columns"] = list(spec.feature_columns)
            if spec.label_column:
                exported["label_column"] = spec.label_column
            not_exported = ("record featurisation in the graphs: they take feature vectors; "
                            "predict.py featurises rows given as JSON objects, as does "
                            "siamkit.data.records.RecordFeaturizer.from_dict(input.featurizer)")
        if parity_inputs is None:
            parity_inputs = np.random.default_rng(0).random((16, *shape), dtype=np.float32)
        spec_out = exported
    tick(1)
    manifest = {
        "format": "onnx", "opset": _opset(out / "encoder.onnx"),
        "model_id": model_identity(run_dir),
        "input": spec_out, "embedding_dim": model.embedding_dim,
        "threshold": threshold, "higher_is_closer": model.higher_is_closer,
        "files": files, "not_exported": not_exported,
    }
    weights = sorted(p.name for p in out.glob("*.onnx.data"))
    if weights:  # large models keep their weights beside the graphs: ship them together
        files["weights"] = weights
    (out / "export.json").write_text(json.dumps(manifest, indent=2))  # parity reads the spec
    parity = check_parity(run_dir, out, parity_inputs)
    tick(1)
    parity["real_inputs"] = real
    manifest["parity"] = parity
    if not parity["ok"]:  # nothing usable-looking stays: only the report of what differed
        for p in out.iterdir():
            if p.name not in before and p.is_file():
                p.unlink()
        (out / "parity_failure.json").write_text(json.dumps(manifest, indent=2))
        raise ExportError(f"ONNX Runtime does not match PyTorch (the export was removed; "
                          f"{out / 'parity_failure.json'} says where): {parity}")
    (out / "export.json").write_text(json.dumps(manifest, indent=2))
    shutil.copyfile(Path(__file__).with_name("onnx_predict.py"), out / "predict.py")
    return manifest


def export_sentence_transformers(run_dir: str | Path, out_dir: str | Path,
                                 texts: list[str] | None = None, atol: float = 1e-5
                                 ) -> dict[str, Any]:
    """Write a text twin as a sentence-transformers folder: ``SentenceTransformer(out_dir)``
    loads it (and a model hub takes it) and embeds exactly as siamkit does, the projection
    and normalisation included. Parity with siamkit is checked on ``texts`` (default: a few
    built-in sentences) and recorded in ``siamkit_export.json``; over ``atol`` it raises."""
    model, _, card = load_model(run_dir)
    to_st = getattr(model.encoder, "to_sentence_transformer", None)
    if model.input_spec is None or model.input_spec.kind != "text" or not callable(to_st):
        raise ExportError("only a text twin (model.encoder=text) exports as a "
                          "sentence-transformers model")
    if model.head is not None:
        raise ExportError("this twin scores pairs with a learned head, which a "
                          "sentence-transformers model cannot hold (it would keep the "
                          "embeddings only): export it to ONNX instead (--format onnx)")
    try:
        st = to_st()
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    st.save(str(out))
    from sentence_transformers import SentenceTransformer

    texts = list(texts or SAMPLE_TEXTS)
    with torch.no_grad():
        ours = model.eval().embed(texts).float().numpy()
    theirs = SentenceTransformer(str(out), device="cpu").encode(texts, convert_to_numpy=True)
    diff = float(np.abs(ours - theirs).max())
    manifest = {"format": "sentence-transformers", "model_id": model_identity(run_dir),
                "threshold": threshold_of(card), "higher_is_closer": model.higher_is_closer,
                "distance": model.distance.name,
                "parity": {"texts": len(texts), "max_embedding_diff": diff, "tolerance": atol,
                           "ok": diff <= atol}}
    (out / "siamkit_export.json").write_text(json.dumps(manifest, indent=2))
    if diff > atol:
        raise ExportError(f"sentence-transformers embeds otherwise than siamkit ({diff:.2e})")
    return manifest


def parity_inputs(model: nn.Module, data: str, pair_format: str | None = None, n: int = 32,
                  seed: int = 0, a: str = "a", b: str = "b") -> np.ndarray | list[str]:
    """Up to ``n`` real inputs for :func:`export_onnx`'s parity check, drawn at random
    (``seed``) from ``data``: texts of a pair file for a text model (``pair_format``: its
    format, default from the suffix; ``a``, ``b``: its text columns), else items of a folder
    per class (or a table model's table) as the model reads them, as float32 in its input
    format."""
    from .data.textpairs import read_pair_texts
    from .embedding import to_float
    from .inputs import adapter_for

    rng = np.random.default_rng(seed)
    if model.input_spec.kind == "text":
        texts = read_pair_texts(data, pair_format, a=a, b=b)
        return [texts[i] for i in rng.permutation(len(texts))[:n]]
    items = adapter_for(model.input_spec).load_dataset(data, use_cache=False)
    return to_float(items.images[rng.permutation(len(items))[:n]]).numpy()
