"""Tests for siamkit.metrics: hand-computed accuracies, nearest references and intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from siamkit.metrics import accuracy, mean_and_ci95, nearest_reference_predictions


def test_mean_and_ci95_hand_computed():
    # mean 2, sample std 1 -> half-width 1.96 / sqrt(3)
    mean, half = mean_and_ci95([1.0, 2.0, 3.0])
    assert mean == pytest.approx(2.0)
    assert half == pytest.approx(1.96 / math.sqrt(3))


def test_mean_and_ci95_uses_sample_std():
    # values 0, 0, 0, 4: mean 1, sample variance 12 / 3 = 4 -> std 2 -> 1.96 * 2 / 2
    mean, half = mean_and_ci95(np.array([0.0, 0.0, 0.0, 4.0]))
    assert mean == pytest.approx(1.0)
    assert half == pytest.approx(1.96)


def test_mean_and_ci95_edge_cases():
    assert mean_and_ci95([0.75]) == (0.75, 0.0)
    mean, half = mean_and_ci95([])
    assert math.isnan(mean) and math.isnan(half)
    assert mean_and_ci95([0.5, 0.5, 0.5]) == (0.5, 0.0)


def test_accuracy_hand_computed():
    assert accuracy(torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 0, 0])) == 0.5
    assert accuracy(np.array([2, 2, 2]), np.array([2, 2, 1])) == pytest.approx(2 / 3)
    assert isinstance(accuracy([1], [1]), float)


def test_accuracy_empty_and_shape_mismatch():
    assert math.isnan(accuracy(np.array([]), np.array([])))
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\) differ in shape"):
        accuracy(np.array([1, 2, 3]), np.array([1, 2]))


def test_nearest_reference_follows_direction():
    scores = torch.tensor([[0.9, 0.1, 0.5],
                           [0.2, 0.3, 0.8]])  # (Q=2, R=3)
    # similarities: the largest is the nearest
    assert nearest_reference_predictions(scores, higher_is_closer=True).tolist() == [0, 2]
    # distances: the smallest is the nearest
    assert nearest_reference_predictions(scores, higher_is_closer=False).tolist() == [1, 0]
