"""Omniglot (Lake et al. 2015): the image sets and the 20 one-shot classification runs."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .download import DatasetError, cache_dir, extract_zip, fetch
from .images import ImageDataset, load_image, load_image_folder

__all__ = ["OMNIGLOT_FILES", "omniglot_folder", "load_omniglot", "OneShotRun", "load_lake_runs"]

logger = logging.getLogger(__name__)

_UPSTREAM = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/"

# file -> (upstream address, upstream md5)
OMNIGLOT_FILES: dict[str, tuple[str, str | None]] = {
    "images_background.zip": (_UPSTREAM + "images_background.zip",
                              "68d2efa1b9178cc56df9314c21c6e718"),
    "images_evaluation.zip": (_UPSTREAM + "images_evaluation.zip",
                              "6b91aef0f799c5bb55b94e3f2daec811"),
    "all_runs.zip": (_UPSTREAM + "one-shot-classification/all_runs.zip",
                     "e8996daecdf12afeeb4a53a179f06b19"),
}

# Omniglot file names are <character id>_<drawer>.png
DRAWER_PATTERN = r"_(\d+)\.png$"


def omniglot_folder(name: str) -> Path:
    """Extracted folder of an Omniglot archive (``images_background``, ``images_evaluation``
    or ``all_runs``), fetching and extracting it on first use."""
    filename = f"{name}.zip"
    if filename not in OMNIGLOT_FILES:
        raise ValueError(f"unknown Omniglot archive {name!r}; expected one of "
                         f"{sorted(f[:-4] for f in OMNIGLOT_FILES)}")
    url, md5 = OMNIGLOT_FILES[filename]
    archive = fetch(filename, url, md5, subdir="omniglot")
    out = extract_zip(archive, cache_dir() / "omniglot" / name)
    inner = out / name
    return inner if inner.is_dir() else out


def load_omniglot(split: str = "background", size: int = 28, **kwargs: object) -> ImageDataset:
    """Load an Omniglot image set: alphabets as groups, characters as classes, drawers parsed.

    Ink is made bright on a zero background (inverted), and images are resized to ``size``.
    """
    root = omniglot_folder(f"images_{split}")
    return load_image_folder(root, size=size, channels=1, invert=True, group_depth=1,
                             drawer_pattern=DRAWER_PATTERN, **kwargs)


@dataclass
class OneShotRun:
    """One of Lake's 20-way one-shot runs.

    Attributes:
        name: e.g. ``run01``.
        references: (20, 1, H, W) uint8: one drawing of each class.
        queries: (20, 1, H, W) uint8: the test items.
        answers: (20,) index into ``references`` of each query's true class.
    """

    name: str
    references: torch.Tensor
    queries: torch.Tensor
    answers: torch.Tensor


def load_lake_runs(size: int = 28, root: str | Path | None = None) -> list[OneShotRun]:
    """Parse Lake's one-shot runs (``all_runs.zip``) with the same preprocessing as training."""
    base = Path(root) if root is not None else omniglot_folder("all_runs")
    run_dirs = sorted(p for p in base.iterdir() if p.is_dir() and re.fullmatch(r"run\d+", p.name))
    if not run_dirs:
        raise DatasetError(f"{base}: no runNN folders found")
    runs = []
    for rd in run_dirs:
        labels_file = rd / "class_labels.txt"
        if not labels_file.is_file():
            raise DatasetError(f"{labels_file}: missing")
        refs = sorted((rd / "training").glob("*.png"))
        index = {p.name: i for i, p in enumerate(refs)}
        queries, answers = [], []
        for line in labels_file.read_text().split("\n"):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2:
                raise DatasetError(f"{labels_file}: bad line {line!r}")
            q, r = (base / parts[0]), Path(parts[1]).name
            if r not in index:
                raise DatasetError(f"{labels_file}: unknown reference {parts[1]!r}")
            queries.append(load_image(q, size, 1, invert=True))
            answers.append(index[r])
        runs.append(OneShotRun(
            name=rd.name,
            references=torch.stack([load_image(p, size, 1, invert=True) for p in refs]),
            queries=torch.stack(queries),
            answers=torch.tensor(answers),
        ))
    return runs
