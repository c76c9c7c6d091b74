"""Tabular data for the MLP twin: feature vectors of several classes, in memory.

A tabular dataset is an :class:`~siamkit.data.images.ImageDataset` whose ``images`` are
float32 feature vectors (N, F) instead of uint8 images; samplers, splits, episodes and the
training loop treat both alike (no image augmentation, no channels_last).

:func:`load_digits`: scikit-learn's bundled handwritten digits (8 x 8 = 64 features,
1,797 samples, classes ``"0"`` .. ``"9"``), scaled to [0, 1].
"""

from __future__ import annotations

import numpy as np
import torch

from .images import ImageDataset

__all__ = ["load_digits", "is_tabular", "TABULAR_SOURCES"]

TABULAR_SOURCES = ("sklearn:digits",)


def is_tabular(data: ImageDataset) -> bool:
    """True when the dataset holds feature vectors (N, F) rather than images."""
    return data.images.dim() == 2


def _dataset(x: np.ndarray, y: list[str], source: str) -> ImageDataset:
    names = sorted(set(y), key=lambda s: (len(s), s))
    code = {n: i for i, n in enumerate(names)}
    return ImageDataset(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                        torch.tensor([code[v] for v in y], dtype=torch.int64), names,
                        [f"{source}#{i}" for i in range(len(y))])


def load_digits() -> ImageDataset:
    """scikit-learn's handwritten digits: (1797, 64) features in [0, 1], classes 0..9."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    return _dataset(d.data / 16.0, [str(int(t)) for t in d.target], "sklearn:digits")
