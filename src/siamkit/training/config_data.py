"""The training and validation data a config names, split without leakage.

Class data (Omniglot, an image folder, digits, a class-labelled table): validation holds
out whole groups (alphabets, writers, identities) or follows a split file, then rotated
copies of training classes join as classes. Pair data (a pair file, MRPC, STS-B, a Ditto
folder): the validation file, or validation pairs carved out of train by duplicate group.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..augment import rotate_as_new_classes
from ..config import Config, ConfigError, data_root
from ..data.images import ImageDataset, load_image_folder, with_groups_from_names
from ..data.omniglot import load_omniglot
from ..data.records import RecordFeaturizer
from ..data.splits import classes_in, overlap, split_by_group, split_text_pairs, split_units
from ..data.tabular import labelled_vectors, load_digits, read_table
from ..data.textpairs import TextPairs, load_ditto, load_mrpc, load_stsb, read_text_pairs

__all__ = ["TrainingData", "load_training_data", "prepare_data", "prepare_table",
           "load_pair_data", "val_is_seeded"]

logger = logging.getLogger(__name__)


@dataclass
class TrainingData:
    """Training items (with rotated copies as extra classes) and the validation set."""

    images: torch.Tensor  # (N, C, H, W) uint8, or (N, F) float feature vectors
    labels: torch.Tensor  # (N,)
    groups: np.ndarray | None  # group of each class
    class_names: list[str]
    val_set: ImageDataset | None
    trained_classes: list[str]  # the classes as the data names them, before rotated copies


def load_training_data(config: Config) -> ImageDataset:
    """The training items the config names (Omniglot's background set, an image folder,
    the digits)."""
    d = config.data
    if d.dataset == "omniglot":
        return load_omniglot("background", size=d.size)
    if d.dataset == "digits":
        return load_digits()
    if d.dataset == "table":  # its featuriser is fitted after the split: prepare_table
        raise ConfigError("data.dataset=table is loaded with its split by prepare_table")
    size = d.size if d.width is None else (d.size, d.width)
    data = load_image_folder(data_root(config), size=size, channels=d.channels, invert=d.invert,
                             group_depth=d.group_depth, keep_aspect=d.keep_aspect)
    if d.group_pattern:
        data = with_groups_from_names(data, d.group_pattern)
    return data


def prepare_table(config: Config) -> tuple[TrainingData, RecordFeaturizer]:
    """A class-labelled table (data.dataset=table): its classes are split first and the
    featuriser is fitted on the training rows alone, so no statistic of a validation or
    test row reaches the scaling; (training data, the fitted featuriser)."""
    d = config.data
    path = data_root(config)
    records, labels = read_table(path, d.label_column, d.feature_columns)
    if len(records) > 2**24:  # the row numbers below travel as float32
        raise ConfigError(f"{path}: {len(records)} rows; tables of up to 2**24 rows train")
    row_numbers = np.arange(len(records), dtype=np.float32)[:, None]
    data = labelled_vectors(row_numbers, labels, path)
    if d.group_pattern:  # e.g. a writer or identity in the class name
        data = with_groups_from_names(data, d.group_pattern)
    td = prepare_data(config, data)

    def rows(features: torch.Tensor) -> list[dict[str, str]]:
        return [records[i] for i in features[:, 0].long().tolist()]

    try:
        featurizer = RecordFeaturizer(numeric_scaling=d.numeric_scaling).fit(rows(td.images))
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    logger.info("table %s: %d rows of %d classes; numeric columns %s, categorical %s, "
                "skipped (free text) %s", path, len(records), len(set(labels)),
                list(featurizer.numeric), list(featurizer.categorical), featurizer.skipped)
    td.images = torch.from_numpy(featurizer.transform(rows(td.images)))
    if td.val_set is not None:
        td.val_set.images = torch.from_numpy(featurizer.transform(rows(td.val_set.images)))
    return td, featurizer


def _follow_split_file(config: Config, data: ImageDataset) -> tuple[ImageDataset,
                                                                     ImageDataset | None]:
    """Train and validation sets from a split file's groups (``siamkit split``)."""
    path = Path(config.data.split_file)
    if not path.is_file():
        where = "" if path.is_absolute() else f" (relative to the current directory, {Path.cwd()})"
        raise ConfigError(f"data.split_file {path}: no such file{where}; make one with "
                          f"siamkit split, or run from the folder the path is relative to")
    try:
        split = json.loads(path.read_text())
        train_g, val_g, test_g = (list(split.get(k, [])) for k in ("train", "val", "test"))
    except (OSError, json.JSONDecodeError, AttributeError) as exc:
        raise ConfigError(f"data.split_file {path}: unreadable ({exc})") from None
    for name, other in (("val", val_g), ("test", test_g)):
        shared = overlap(train_g, other)
        if shared and not config.data.allow_overlap:
            raise ConfigError(f"{path}: {len(shared)} groups are in both train and {name} "
                              f"(e.g. {shared[:3]}); set data.allow_overlap=true to accept")
    units = set(split_units(data))
    missing = sorted(set(train_g) - units)
    if missing:
        raise ConfigError(f"{path}: train groups not found in the data, e.g. {missing[:3]}")
    unlisted = sorted(units - set(train_g) - set(val_g) - set(test_g))
    if unlisted:  # e.g. a larger copy of the dataset than the split file was made from
        logger.warning("%s names %d of the data's %d groups; %d are in no split and unused "
                       "(e.g. %s): make a split file for this data with siamkit split",
                       path, len(units) - len(unlisted), len(units), len(unlisted),
                       unlisted[:3])
    val = data.subset_classes(classes_in(data, val_g)) if val_g else None
    return data.subset_classes(classes_in(data, train_g)), val


def prepare_data(config: Config, data: ImageDataset) -> TrainingData:
    """Hold out validation groups, then add rotated copies of training classes as classes."""
    if config.data.split_file:
        train_set, val_set = _follow_split_file(config, data)
    else:
        try:
            train_set, val_set = split_by_group(data, config.data.val_groups,
                                                config.data.val_fraction, config.seed)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    images, labels, groups = train_set.images, train_set.labels, train_set.groups
    names = list(train_set.class_names)
    turns = config.data.rotations
    if turns != [0]:
        images, labels = rotate_as_new_classes(images, labels, tuple(turns))
        names = [n if t == 0 else f"{n}@rot{90 * t}" for t in turns for n in train_set.class_names]
        if groups is not None:
            groups = np.concatenate([groups + i * (groups.max() + 1) for i in range(len(turns))])
    return TrainingData(images, labels, groups, names, val_set, list(train_set.class_names))


def val_is_seeded(config: Config) -> bool:
    """True when :func:`load_pair_data` carves the validation pairs out of train with
    ``config.seed`` (MRPC, or a pair file without ``pairs.val``): runs with other seeds
    then validated on other pairs."""
    return config.data.dataset == "mrpc" or (config.data.dataset == "pairs"
                                             and not config.pairs.val)


def load_pair_data(config: Config) -> tuple[TextPairs, TextPairs]:
    """(train, validation) pairs as the config names them."""
    d, pc = config.data, config.pairs
    root = data_root(config) if d.root else None

    def load(split: str) -> TextPairs:  # "train", or the dataset's validation split
        if d.dataset == "mrpc":
            return load_mrpc(split, root)
        if d.dataset == "stsb":
            return load_stsb(split, root)
        if d.dataset == "ditto":
            return load_ditto(root, split)
        return read_text_pairs(pc.train if split == "train" else pc.val, pc.format, pc.a,
                               pc.b, pc.label, pc.score, pc.positive_label)

    train = load("train")
    if val_is_seeded(config):  # carved out of train by duplicate groups
        if train.same is None:
            raise ConfigError("graded pairs without pairs.val: give a validation file")
        parts, _ = split_text_pairs(train, val=pc.val_fraction, test=0.0, seed=config.seed)
        train, val = parts["train"], parts["val"]
    else:
        val = load({"stsb": "dev", "ditto": "valid"}.get(d.dataset, "val"))
    return train, val
