"""Training configuration: dataclasses loaded from YAML, overridable with ``key=value``."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from .errors import ConfigError

__all__ = [
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "LossConfig",
    "AugmentConfig",
    "OptimConfig",
    "EvalConfig",
    "Config",
    "load_config",
    "config_to_yaml",
    "config_path",
    "packaged_configs",
    "check_config",
    "apply_overrides",
    "config_to_dict",
    "config_from_dict",
    "data_root",
]


@dataclass
class DataConfig:
    """Where the training images come from and how they are prepared."""

    dataset: str = "omniglot"  # omniglot, folder; digits, table; pairs, mrpc, stsb, ditto
    root: str | None = None  # folder-per-class tree (folder); a CSV/TSV/JSONL file (table)
    label_column: str = "label"  # dataset=table: the column of each row's class
    feature_columns: list[str] | None = None  # dataset=table: None takes all but the label
    numeric_scaling: str = "log"  # table and record MLP twins: log, standard or none
    group_depth: int = 0  # 1: root/<group>/<class>/ (e.g. alphabets)
    size: int = 28  # images are resized to size x size (or size x width)
    width: int | None = None  # for wide images, e.g. signatures
    channels: int = 1  # 1: grayscale, 3: RGB
    invert: bool = False  # 255 - pixel (dark ink on white paper); Omniglot always inverts
    val_groups: int = 4  # groups (or, without groups, classes) held out for validation
    val_fraction: float = 0.0  # if > 0, hold out this fraction of groups/classes instead
    rotations: list[int] = field(default_factory=lambda: [0])  # quarter turns as new classes
    keep_aspect: bool = False  # resize the longer side and pad, instead of stretching
    group_pattern: str | None = None  # regex on class names; group 1 is the group (writer)
    split_file: str | None = None  # JSON of train/val/test groups (siamkit split) to follow
    allow_overlap: bool = False  # accept a split file whose val/test groups are in train


@dataclass
class ModelConfig:
    """The encoder and how a pair is scored."""

    encoder: str = "conv4"  # conv4, koch, mlp, text, or an encoder a package registers
    encoder_args: dict[str, Any] = field(default_factory=dict)  # the encoder's own options
    distance: str = "euclidean"  # euclidean, squared_euclidean, cosine, dot
    head: bool = False  # learned similarity head (Koch) instead of a fixed distance
    head_features: str = "abs"  # abs: |u - v| (Koch); sbert: [u, v, |u - v|, u * v]
    head_hidden: int = 0  # hidden units of the head's MLP (0: linear)
    init_from: str | None = None  # a trained run folder whose encoder weights start training


@dataclass
class LossConfig:
    """The loss, its miner and their parameters."""

    name: str = "prototypical"  # prototypical, triplet, contrastive, bce
    miner: str = "none"  # none (all pairs/triplets), semihard, batch_hard, schedule
    margin: float = 0.2  # triplet margin; contrastive negative margin
    pos_margin: float | None = None  # contrastive positive margin (default: distance's ideal)
    n_support: int = 1  # prototypical: support examples per class in a batch
    scale: float = 1.0  # prototypical: logit scale (temperature)
    schedule_start: float = 0.0  # schedule miner: fraction of training when hardening starts
    schedule_end: float = 0.5  # ... and when it is fully hard
    pos_fraction: float = 0.5  # pair training (contrastive, bce): fraction of positive pairs
    # pair files, contrastive / online_contrastive: weight of an added in-batch negatives
    # term (MNRL, scale 20): each positive pair's left side ranks its right side above every
    # other right side of the batch (duplicate groups guarded); 0 = off
    in_batch: float = 0.0


@dataclass
class AugmentConfig:
    """Random affine distortions during training (Koch et al. 2015)."""

    enabled: bool = True  # distort training images (images only)
    hflip: float = 0.0  # probability of a mirror image (faces: yes; characters: no)
    brightness: float = 0.0  # random contrast/brightness change of up to this fraction
    rotation: float = 10.0  # largest rotation, degrees
    shear: float = 0.3  # largest shear
    scale: list[float] = field(default_factory=lambda: [0.8, 1.2])  # [min, max] zoom
    translate: float = 2.0  # pixels at the training size
    p: float = 0.5  # probability that an image is distorted


@dataclass
class OptimConfig:
    """Optimiser, schedule and the length of training."""

    steps: int = 2000  # optimiser steps
    time_limit_minutes: float | None = None  # stop early (checkpointing) when reached
    p: int = 20  # classes per batch (ways of a training episode)
    k: int = 5  # examples per class
    same_group: float = 0.8  # fraction of batches drawn within one group (alphabet)
    whole_groups: bool = False  # batches of whole groups (a writer's genuine + forgeries)
    # groups smaller than p give within-group batches too, filled up from other groups
    group_fill: bool = False
    sampler: str = "pk"  # pk: P classes x K examples; pairs: balanced pairs (contrastive, bce)
    pair_batch: int = 128  # pairs per batch, with sampler=pairs
    lr: float = 1e-3  # peak learning rate (AdamW)
    # learning rate of what starts untrained beside a pretrained encoder: the learned head,
    # a field-wise text encoder's field weights (None: lr)
    head_lr: float | None = None
    weight_decay: float = 0.0  # AdamW's decoupled weight decay
    warmup_steps: int = 100  # linear warm-up, then optim.schedule
    schedule: str = "cosine"  # cosine or constant
    channels_last: bool = True  # channels-last memory order (faster CPU convolutions)
    threads: int | None = None  # torch intra-op threads; None leaves torch's default
    # auto: bf16 autocast of the encoder where the CPU computes bf16 natively (AMX,
    # AVX512-BF16), fp32 elsewhere; fp32; bf16
    precision: str = "auto"
    # under torchrun: losses and miners see the embeddings of every rank (global batch)
    gather_embeddings: bool = True
    # glibc: keep freed memory for the next step instead of returning it to the system
    # (large activations were page-faulted back at every step; siamkit.allocator)
    keep_freed_memory: bool = True


@dataclass
class EvalConfig:
    """Validation during training, on held-out groups of the training data."""

    every: int = 500  # steps between validations (and at the end)
    episodes: int = 200  # validation episodes (the same ones at every validation)
    way: int = 20  # classes per episode (N), capped by what validation holds
    shot: int = 1  # support examples per class (K)
    queries: int = 1  # queries per class
    within_group: bool = True  # episodes inside one group, as Lake's runs are
    tta: int = 0  # evaluation commands: extra distorted views averaged into each embedding
    # each view's left-right mirror image averaged in too (faces: yes; characters: no)
    mirror: bool = False
    calibrate_on: str = "all_pairs"  # after training: all_pairs, skilled_pairs or none
    calibrate_target: str = "eer"  # the stored threshold's target: eer, accuracy, f1


@dataclass
class PairsConfig:
    """Pair datasets (text and records, ``data.dataset`` pairs / mrpc / stsb / ditto)."""

    train: str | None = None  # data.dataset=pairs: the training pair file
    val: str | None = None  # its validation file; None carves val_fraction out of train
    format: str | None = None  # csv, tsv, jsonl, ditto (default: from the suffix)
    a: str = "a"  # first text column (name, or 0-based position)
    b: str = "b"  # second text column
    label: str | None = "label"  # label column (None for graded files)
    score: str | None = None  # graded-score column (STS-B style)
    positive_label: str = "1"  # the label value meaning "same"
    val_fraction: float = 0.1  # by duplicate groups, when there is no validation file
    max_score: float = 5.0  # graded scores are divided by this for the cosine loss
    pos_fraction: float | None = None  # labelled pairs: positives per batch (None: as drawn)
    # labelled pairs: each positive pair of a batch adds a negative pair of one of its texts
    # and one of that text's `hard_negatives` closest training texts outside its duplicate
    # group (0: off), mined by the model itself every `mine_every` steps
    hard_negatives: int = 0
    mine_every: int = 250  # steps between two mining passes (pairs.hard_negatives)


@dataclass
class Config:
    """Everything a training run needs."""

    seed: int = 0  # weights, splits, batches and augmentation
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)


def data_root(config: Config) -> str:
    """``data.root`` with ``~`` and environment variables expanded; a variable that is not
    set is a ConfigError (the path would silently keep its ``$NAME``)."""
    root = os.path.expanduser(os.path.expandvars(config.data.root))
    if "$" in root:
        raise ConfigError(f"data.root {config.data.root!r} names an environment variable "
                          f"that is not set")
    return root


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check and convert a loaded value against a field's type hint."""
    text = str(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _build(hint, value, key + ".")
    if value is None:
        if "None" in text:
            return None
        raise ConfigError(f"{key}: may not be empty")
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    for kind in (int, float):
        if hint is kind or text in (f"{kind.__name__} | None",):
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise ConfigError(f"{key}: expected a number, got {value!r}")
            try:
                out = kind(value)
            except ValueError:
                raise ConfigError(f"{key}: expected {kind.__name__}, got {value!r}") from None
            if kind is int and isinstance(value, float) and value != int(value):
                raise ConfigError(f"{key}: expected an integer, got {value!r}")
            return out
    if hint is str or text == "str | None":
        if not isinstance(value, str | int | float):
            raise ConfigError(f"{key}: expected text, got {value!r}")
        return str(value)
    if text.startswith("list"):
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return value
    if text.startswith("dict"):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return value
    return value


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown config key {prefix + unknown[0]!r}; "
                          f"known keys here: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in values.items()}
    return cls(**kwargs)


def config_from_dict(values: dict[str, Any]) -> Config:
    """Build a :class:`Config` from nested dicts, rejecting unknown keys and bad types."""
    return _build(Config, values or {})


def config_to_dict(config: Config) -> dict[str, Any]:
    """Nested plain dicts, JSON- and YAML-serialisable."""
    return dataclasses.asdict(config)


def config_to_yaml(config: Config, notes: list[str] | None = None) -> str:
    """A config as YAML a ``--config`` reads back, ``notes`` as comments at its top."""
    head = "".join(f"# {n}\n" for n in notes or [])
    return head + yaml.safe_dump(config_to_dict(config), sort_keys=False)


def packaged_configs() -> list[str]:
    """Names of the worked-example configs that ship inside the package (``omniglot``,
    ``att_faces``, ``signatures``, ``stsb``...), for ``--config NAME``."""
    from importlib import resources

    folder = resources.files("siamkit") / "configs"
    return sorted(f.name[:-5] for f in folder.iterdir() if f.name.endswith(".yaml"))


def config_path(name: str | Path) -> Path:
    """A config file: the path given, or the packaged config of that name (``omniglot``
    finds ``siamkit/configs/omniglot.yaml``)."""
    p = Path(name)
    if p.is_file():
        return p
    from importlib import resources

    packaged = resources.files("siamkit") / "configs" / f"{p.name.removesuffix('.yaml')}.yaml"
    if p.parent == Path(".") and packaged.is_file():
        return Path(str(packaged))
    raise ConfigError(f"config file not found: {p}; packaged configs: "
                      f"{', '.join(packaged_configs())}")


def _beside(config: Config, folder: Path) -> Config:
    """A relative ``data.split_file`` that is not found from the current directory is read
    relative to the config file's folder (the packaged configs name their split files so)."""
    split = config.data.split_file
    if split and not Path(split).is_absolute() and not Path(split).exists():
        candidate = folder / split
        if candidate.is_file():
            config.data.split_file = str(candidate.resolve())
    return config


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML (or JSON) config and apply ``key=value`` overrides, e.g. ``optim.lr=3e-4``.

    ``path`` may name a packaged config (``omniglot``); a relative ``data.split_file`` is
    found from the current directory or, failing that, beside the config file."""
    values: dict[str, Any] = {}
    if path is not None:
        p = config_path(path)
        try:
            text = p.read_text()
            values = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
        except (yaml.YAMLError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{p}: not valid YAML/JSON: {exc}") from None
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ConfigError(f"{p}: expected a mapping at the top level")
        return _beside(apply_overrides(config_from_dict(values), overrides or []), p.parent)
    return apply_overrides(config_from_dict(values), overrides or [])


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """Return a new config with dotted ``key=value`` overrides (values parsed as YAML)."""
    values = config_to_dict(config)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node = values
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"unknown config key {key!r}")
            node = node[part]
        if parts[-1] not in node and not (len(parts) > 1 and parts[-2].endswith("_args")):
            raise ConfigError(f"unknown config key {key!r}")
        node[parts[-1]] = value
    return config_from_dict(values)


LOSSES = ("prototypical", "triplet", "contrastive", "bce", "proxy", "mnrl",
          "online_contrastive", "cosine", "cosent")
PAIR_DATASETS = ("pairs", "mrpc", "stsb", "ditto")
TABLE_DATASETS = ("digits", "table")  # feature vectors for the MLP twin
PAIR_LOSSES = ("contrastive", "bce", "mnrl", "online_contrastive", "cosine", "cosent")
GRADED_LOSSES = ("cosine", "cosent")  # losses on graded scores (STS-B)
MINERS = ("none", "semihard", "batch_hard", "schedule")


def check_config(config: Config) -> None:
    """Reject unknown names and impossible values, before any data is loaded."""
    from .distances import create_distance
    from .encoders import list_encoders

    d, m, lc, o, e = config.data, config.model, config.loss, config.optim, config.eval

    from .data.records import NUMERIC_SCALINGS

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    need(d.dataset in ("omniglot", "folder") + TABLE_DATASETS + PAIR_DATASETS,
         f"unknown data.dataset {d.dataset!r}; expected omniglot, folder, digits, table, "
         f"{', '.join(PAIR_DATASETS)}")
    need(d.dataset not in TABLE_DATASETS or (m.encoder == "mlp" and d.rotations == [0]
                                             and not config.augment.enabled),
         f"data.dataset={d.dataset} (tabular) trains model.encoder=mlp, without image "
         f"augmentation (augment.enabled=false) or rotations")
    need(d.dataset != "table" or bool(d.root),
         "data.dataset=table needs data.root, a CSV/TSV/JSONL file with a class column")
    need(d.dataset not in TABLE_DATASETS or d.group_depth == 0,
         f"data.dataset={d.dataset} has no folders: group classes with data.group_pattern, "
         f"not data.group_depth")
    need(d.feature_columns is None or (isinstance(d.feature_columns, list)
                                       and all(isinstance(c, str) for c in d.feature_columns)),
         f"data.feature_columns must be a list of column names, got {d.feature_columns!r}")
    need(d.numeric_scaling in NUMERIC_SCALINGS,
         f"data.numeric_scaling must be one of {', '.join(NUMERIC_SCALINGS)} (numeric "
         f"columns: log1p then standardised, standardised, or as they are), got "
         f"{d.numeric_scaling!r}")
    need(m.encoder != "ensemble",
         "model.encoder=ensemble is not trained: train each member as its own run (seeds "
         "0, 1, ...) and join them with `siamkit ensemble RUN RUN ... --out DIR`")
    pairs = d.dataset in PAIR_DATASETS
    need(not pairs or lc.name in PAIR_LOSSES,
         f"pair datasets train with {', '.join(PAIR_LOSSES)}, not loss.name={lc.name}")
    need(pairs or lc.name not in ("mnrl", "online_contrastive") + GRADED_LOSSES,
         f"loss.name={lc.name} trains on pair datasets (data.dataset pairs, mrpc, stsb, "
         f"ditto)")
    need(d.dataset != "pairs" or bool(config.pairs.train),
         "data.dataset=pairs needs pairs.train, a pair file")
    need(d.dataset != "ditto" or bool(d.root),
         "data.dataset=ditto needs data.root, the folder with train/valid/test.txt")
    need(0 < config.pairs.val_fraction < 1, "pairs.val_fraction must be in (0, 1)")
    need(e.calibrate_target in ("eer", "accuracy", "f1"),
         f"eval.calibrate_target must be eer, accuracy or f1, not {e.calibrate_target!r}")
    need(d.dataset != "folder" or bool(d.root),
         "data.root must name a folder when data.dataset is 'folder'")
    need(d.size >= 4, f"data.size must be at least 4, got {d.size}")
    need(d.channels in (1, 3), f"data.channels must be 1 or 3, got {d.channels}")
    need(bool(d.rotations) and set(d.rotations) <= {0, 1, 2, 3}
         and len(set(d.rotations)) == len(d.rotations),
         f"data.rotations must be distinct quarter turns in 0..3, got {d.rotations}")
    need(lc.name in LOSSES, f"unknown loss.name {lc.name!r}; expected one of "
                            f"{', '.join(LOSSES)}")
    need(lc.miner in MINERS, f"unknown loss.miner {lc.miner!r}; expected one of "
                             f"{', '.join(MINERS)}")
    need(lc.miner == "none" or lc.name in ("triplet", "contrastive", "bce"),
         f"loss.miner={lc.miner} mines pairs/triplets; loss.name={lc.name} does not take them")
    need(lc.name != "bce" or m.head, "loss.name=bce trains a learned head: set model.head=true")
    need(m.head_features in ("abs", "sbert"),
         f"model.head_features must be abs or sbert, not {m.head_features!r}")
    need(m.head_hidden >= 0, "model.head_hidden must be >= 0")
    need(m.encoder in list_encoders(),
         f"unknown model.encoder {m.encoder!r}; expected one of {', '.join(list_encoders())}")
    need(m.encoder != "mlp" or d.dataset in TABLE_DATASETS + ("ditto",),
         "model.encoder=mlp takes feature vectors (data.dataset=digits or table, or ditto "
         "records), not images")
    need(not pairs or m.encoder in ("text", "mlp"),
         f"pair datasets train a text twin (model.encoder=text), or for ditto records the "
         f"MLP twin; not model.encoder={m.encoder}")
    try:
        create_distance(m.distance)
    except ValueError as exc:
        raise ConfigError(f"model.distance: {exc}") from None
    need(o.precision in ("auto", "fp32", "bf16"),
         f"optim.precision must be auto, fp32 or bf16, got {o.precision!r}")
    need(o.schedule in ("cosine", "constant"),
         f"unknown optim.schedule {o.schedule!r}; expected cosine or constant")
    need(o.sampler in ("pk", "pairs"), f"unknown optim.sampler {o.sampler!r}; expected pk or "
                                       f"pairs")
    need(o.sampler != "pairs" or lc.name in ("contrastive", "bce"),
         f"optim.sampler=pairs feeds pair losses (contrastive, bce), not {lc.name}")
    need(o.sampler != "pairs" or lc.miner == "none", "optim.sampler=pairs takes no miner")
    for key, value, low in (("optim.steps", o.steps, 1), ("optim.p", o.p, 2),
                            ("optim.k", o.k, 1), ("optim.pair_batch", o.pair_batch, 2),
                            ("eval.every", e.every, 1), ("eval.episodes", e.episodes, 1),
                            ("eval.way", e.way, 2), ("eval.shot", e.shot, 1),
                            ("eval.queries", e.queries, 1), ("eval.tta", e.tta, 0),
                            ("loss.n_support", lc.n_support, 1)):
        need(value >= low, f"{key} must be at least {low}, got {value}")
    need(o.lr > 0, f"optim.lr must be positive, got {o.lr}")
    need(o.head_lr is None or o.head_lr > 0, f"optim.head_lr must be positive, got {o.head_lr}")
    need(o.head_lr is None or m.head or bool(m.encoder_args.get("fields")),
         "optim.head_lr is the learning rate of a learned head or of field weights: set "
         "model.head=true or model.encoder_args.fields (or drop optim.head_lr)")
    need(0.0 <= lc.pos_fraction <= 1.0, f"loss.pos_fraction must be in [0, 1], got "
                                        f"{lc.pos_fraction}")
    need(lc.in_batch >= 0, f"loss.in_batch must be >= 0, got {lc.in_batch}")
    need(lc.in_batch == 0 or (pairs and lc.name in ("contrastive", "online_contrastive")),
         f"loss.in_batch adds in-batch negatives to contrastive / online_contrastive on "
         f"labelled pair datasets, not to loss.name={lc.name} on data.dataset={d.dataset}")
    pf = config.pairs.pos_fraction
    need(pf is None or (pairs and 0.0 < pf < 1.0 and lc.name not in ("mnrl",) + GRADED_LOSSES),
         f"pairs.pos_fraction (positives per batch of labelled pairs) must be in (0, 1), for "
         f"contrastive, online_contrastive or bce on a pair dataset; got {pf} with "
         f"loss.name={lc.name}")
    hn = config.pairs.hard_negatives
    need(hn >= 0 and config.pairs.mine_every >= 1,
         f"pairs.hard_negatives must be >= 0 and pairs.mine_every >= 1, got {hn} and "
         f"{config.pairs.mine_every}")
    need(hn == 0 or (pairs and lc.name in ("contrastive", "online_contrastive", "bce")),
         f"pairs.hard_negatives adds mined negative pairs for contrastive, "
         f"online_contrastive or bce on a labelled pair dataset; got loss.name={lc.name} on "
         f"data.dataset={d.dataset}")
    need(0.0 <= o.same_group <= 1.0, f"optim.same_group must be in [0, 1], got {o.same_group}")
    need(not (o.group_fill and o.whole_groups),
         "optim.group_fill and optim.whole_groups are two ways to fill a batch: set one")
    need(len(config.augment.scale) == 2, "augment.scale must be [min, max]")
    need(e.calibrate_on in ("all_pairs", "skilled_pairs", "none"),
         f"unknown eval.calibrate_on {e.calibrate_on!r}; expected all_pairs, skilled_pairs "
         f"or none")
    need(o.time_limit_minutes is None or o.time_limit_minutes >= 0,
         "optim.time_limit_minutes must not be negative")
