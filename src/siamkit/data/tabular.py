"""Tabular data for the MLP twin: feature vectors of several classes, in memory.

A tabular dataset is an :class:`~siamkit.data.images.ImageDataset` whose ``images`` are
float32 feature vectors (N, F) instead of uint8 images; samplers, splits, episodes and the
training loop treat both alike (no image augmentation, no channels_last).

:func:`load_digits`: scikit-learn's bundled handwritten digits (8 x 8 = 64 features,
1,797 samples, classes ``"0"`` .. ``"9"``), scaled to [0, 1].

:func:`read_table`: any class-labelled table (CSV, TSV or JSONL with a header; one row an
item, one column its class). Its feature columns become vectors through a
:class:`~siamkit.data.records.RecordFeaturizer` (numeric columns standardised, categorical
ones one-hot, free text skipped) fitted on the training rows only: :func:`table_dataset`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .download import DatasetError
from .images import ImageDataset
from .records import RecordFeaturizer
from .textpairs import pair_format, read_rows

__all__ = ["load_digits", "is_tabular", "labelled_vectors", "read_table", "table_dataset",
           "TABULAR_SOURCES"]

TABULAR_SOURCES = ("sklearn:digits",)


def is_tabular(data: ImageDataset) -> bool:
    """True when the dataset holds feature vectors (N, F) rather than images."""
    return data.images.dim() == 2


def labelled_vectors(x: np.ndarray, y: list[str], source: str) -> ImageDataset:
    """Vectors (N, F) and each one's class name as a tabular dataset (``source#row`` paths)."""
    names = sorted(set(y), key=lambda s: (len(s), s))
    code = {n: i for i, n in enumerate(names)}
    return ImageDataset(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                        torch.tensor([code[v] for v in y], dtype=torch.int64), names,
                        [f"{source}#{i}" for i in range(len(y))])


def load_digits() -> ImageDataset:
    """scikit-learn's handwritten digits: (1797, 64) features in [0, 1], classes 0..9."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    return labelled_vectors(d.data / 16.0, [str(int(t)) for t in d.target], "sklearn:digits")


def read_table(path: str | Path, label_column: str = "label",
               feature_columns: list[str] | None = None, min_classes: int = 2
               ) -> tuple[list[dict[str, str]], list[str]]:
    """A class-labelled table -> (each row's feature values by column, each row's class).

    Args:
        path: a CSV, TSV (or .txt) or JSONL file with a header row (JSONL: one object a row).
        label_column: the column holding each row's class (any text; numbers are names too).
        feature_columns: the columns to featurise; None takes every column but the label.
            Leave identifiers out (a row id looks numeric but says nothing).
        min_classes: refuse a table with fewer classes (training needs two; enrolling one
            new class from a file needs one).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"table not found: {path}")
    try:
        fmt = pair_format(path)
    except DatasetError:
        raise DatasetError(f"{path}: a table's format comes from its suffix: name it .csv, "
                           f".tsv (or .txt, tab-separated) or .jsonl") from None
    if fmt == "csv":
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            first = f.readline()
        if ";" in first and "," not in first:
            raise DatasetError(f"{path}: the header is separated by semicolons; save the "
                               f"table comma-separated (decimal points, not commas)")
    rows, _ = read_rows(path, fmt, ["header"])  # named columns: a header row
    if not rows:
        raise DatasetError(f"{path}: no rows under the header")
    header = list(dict.fromkeys(k for r in rows for k in r))  # JSONL rows may differ
    if "" in header:
        raise DatasetError(f"{path}: a column has no name (an index column written by pandas? "
                           f"write with index=False, or name it)")
    if label_column not in header:
        raise DatasetError(f"{path}: no label column {label_column!r}; the header has "
                           f"{header[:12]}")
    columns = [c for c in header if c != label_column] if feature_columns is None \
        else list(feature_columns)
    if label_column in columns:
        raise DatasetError(f"{path}: the label column {label_column!r} cannot be a feature")
    missing = [c for c in columns if c not in header]
    if missing or not columns:
        raise DatasetError(f"{path}: no feature column {missing[0]!r}; the header has "
                           f"{header[:12]}" if missing else f"{path}: no feature columns")
    records, labels = [], []
    for n, row in enumerate(rows, 1):
        label = (row.get(label_column) or "").strip()
        if not label:
            raise DatasetError(f"{path}, row {n}: empty class in column {label_column!r}")
        labels.append(label)
        records.append({c: row.get(c) or "" for c in columns})
    if len(set(labels)) < min_classes:
        raise DatasetError(f"{path}: {len(set(labels))} class(es) in column {label_column!r};"
                           f" at least {min_classes} needed (a metric is learned from two)")
    return records, labels


def table_dataset(records: list[dict[str, str]], labels: list[str],
                  featurizer: RecordFeaturizer, source: str) -> ImageDataset:
    """Rows featurised by a fitted featuriser, as a tabular dataset (``source#row`` paths)."""
    return labelled_vectors(featurizer.transform(records), labels, source)
