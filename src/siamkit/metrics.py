"""Metrics as pure functions of scores and labels (numpy or torch in, floats out)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["nearest_reference_predictions", "accuracy", "mean_and_ci95"]


def nearest_reference_predictions(scores: torch.Tensor, higher_is_closer: bool) -> torch.Tensor:
    """Index of the closest reference for each query: (Q, R) scores -> (Q,)."""
    return scores.argmax(1) if higher_is_closer else scores.argmin(1)


def accuracy(predictions: torch.Tensor | np.ndarray, targets: torch.Tensor | np.ndarray) -> float:
    """Fraction of predictions equal to their target."""
    p, t = np.asarray(predictions), np.asarray(targets)
    if p.shape != t.shape:
        raise ValueError(f"predictions {p.shape} and targets {t.shape} differ in shape")
    return float((p == t).mean()) if p.size else float("nan")


def mean_and_ci95(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and half-width of its 95% confidence interval (normal approximation, 1.96 s/sqrt(n)).

    Returns (nan, nan) for no values and a zero half-width for a single value.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    if v.size == 1:
        return float(v[0]), 0.0
    return float(v.mean()), float(1.96 * v.std(ddof=1) / math.sqrt(v.size))
