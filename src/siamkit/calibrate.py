"""Decision thresholds fitted on validation pairs and applied, frozen, to anything else."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .config import ConfigError
from .data.download import DatasetError
from .metrics import auc, best_accuracy_threshold, best_f1_threshold, eer, rates_at, roc

__all__ = ["TARGETS", "ThresholdCalibrator", "check_direction", "parse_target"]

TARGETS = ("eer", "far", "precision", "accuracy", "f1")


def parse_target(text: str) -> tuple[str, float | None]:
    """Parse ``eer``, ``accuracy``, ``f1``, ``far=0.01`` or ``precision=0.95``; anything
    else is a :class:`~siamkit.config.ConfigError` (a ValueError)."""
    name, _, raw = text.partition("=")
    name = name.strip().lower()
    if name not in TARGETS:
        raise ConfigError(f"unknown calibration target {text!r}; expected eer, accuracy, f1, "
                         f"far=<max FAR> or precision=<min precision>")
    if name in ("far", "precision"):
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"target {name} needs a value, e.g. {name}=0.01") from None
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"target {name}={value} must be in [0, 1]")
        return name, value
    if raw:
        raise ConfigError(f"target {name} takes no value (got {raw!r})")
    return name, None


def check_direction(scores: np.ndarray, same: np.ndarray, higher_is_closer: bool,
                    source: str) -> None:
    """Refuse (DatasetError) validation scores computed elsewhere (``source``) that rank
    same pairs below different ones in the model's direction: similarities given for a
    distance model, or the reverse, would calibrate a meaningless threshold."""
    s = np.asarray(scores, dtype=np.float64)
    if auc(s if higher_is_closer else -s, np.asarray(same).astype(bool)) < 0.5:
        closer = "higher" if higher_is_closer else "lower"
        raise DatasetError(f"{source}: the scores rank same pairs below different ones in "
                           f"this model's direction ({closer} is closer): similarities for a "
                           f"distance model, or the reverse? Negate them")


def _most_accepting_with_precision(s: np.ndarray, y: np.ndarray, minimum: float) -> float:
    """Lowest threshold (on distinct scores) whose precision is at least ``minimum``."""
    order = np.argsort(-s, kind="stable")
    ss, yy = s[order], y[order]
    tp = np.cumsum(yy)
    precision = tp / np.arange(1, len(ss) + 1)
    last_of_value = np.append(ss[1:] != ss[:-1], True)  # cut only after a run of equal scores
    ok = np.flatnonzero((precision >= minimum) & last_of_value)
    if len(ok) == 0:
        return float(ss[0]) + 1.0  # nothing reaches that precision: accept nothing
    return float(ss[ok[-1]])


@dataclass
class ThresholdCalibrator:
    """Fit a threshold on validation scores for a target, then apply it unchanged.

    Scores are the model's own (distances or similarities); ``higher_is_closer`` says which
    way they point, and a pair is "same" when its score is on the close side of
    ``threshold_`` (inclusive). Fitted attributes end in ``_``.

    Args:
        target: ``eer`` (false accepts = false rejects), ``far`` (most accepting threshold
            whose false accept rate stays <= ``value``), ``precision`` (most accepting
            threshold whose precision is >= ``value``), ``accuracy`` (best accuracy) or
            ``f1`` (best F1 of the "same" class, entity matching's protocol).
        value: the FAR or precision for those targets.
        higher_is_closer: direction of the scores.

    Example:
        >>> cal = ThresholdCalibrator("far", 0.01).fit(val_scores, val_labels)
        >>> same = cal.predict(test_scores)
    """

    target: str = "eer"
    value: float | None = None
    higher_is_closer: bool = True
    threshold_: float | None = None
    validation_: dict[str, float] = field(default_factory=dict)

    def _similar(self, scores: Any) -> np.ndarray:
        s = np.asarray(scores, dtype=np.float64)
        return s if self.higher_is_closer else -s

    def fit(self, scores: Any, labels: Any) -> ThresholdCalibrator:
        """Choose the threshold on validation ``scores`` with ``labels`` (1 = same)."""
        if self.target not in TARGETS:
            raise ValueError(f"unknown target {self.target!r}; expected one of {TARGETS}")
        if self.target in ("far", "precision") and self.value is None:
            raise ValueError(f"target {self.target!r} needs a value")
        s, y = self._similar(scores), np.asarray(labels).astype(bool)
        if self.target == "eer":
            _, t = eer(s, y)
        elif self.target == "accuracy":
            _, t = best_accuracy_threshold(s, y)
        elif self.target == "f1":
            _, t = best_f1_threshold(s, y)
        elif self.target == "far":
            far, tar, thr = roc(s, y)
            ok = np.flatnonzero(far <= self.value)  # never empty: the first point has FAR 0
            t = thr[ok[np.argmax(tar[ok])]]
            if not np.isfinite(t):  # nothing can be accepted at this FAR
                t = float(s.max()) + 1.0
        else:  # precision: among thresholds reaching it, the one accepting the most
            t = _most_accepting_with_precision(s, y, self.value)
        t = float(t)
        self.threshold_ = t if self.higher_is_closer else -t
        rates = rates_at(s, y, t)
        self.validation_ = {**rates, "auc": auc(s, y), "eer": eer(s, y)[0],
                            "pairs": int(len(y)), "positives": int(y.sum())}
        return self

    def predict(self, scores: Any) -> np.ndarray:
        """Boolean "same" decisions at the frozen threshold."""
        if self.threshold_ is None:
            raise RuntimeError("calibrator is not fitted: call fit() on validation pairs first")
        s = np.asarray(scores, dtype=np.float64)
        return s >= self.threshold_ if self.higher_is_closer else s <= self.threshold_

    def evaluate(self, scores: Any, labels: Any) -> dict[str, float]:
        """Rates on other (test) pairs at the frozen threshold; the threshold never moves."""
        if self.threshold_ is None:
            raise RuntimeError("calibrator is not fitted: call fit() on validation pairs first")
        t = self.threshold_ if self.higher_is_closer else -self.threshold_
        return rates_at(self._similar(scores), labels, t)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record for a model card."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ThresholdCalibrator:
        """Rebuild a fitted calibrator from :meth:`to_dict` output (other keys are ignored)."""
        from dataclasses import fields

        known = {f.name for f in fields(cls)}
        cal = cls(**{k: v for k, v in values.items() if k in known})
        if cal.threshold_ is not None and not isinstance(cal.threshold_, int | float):
            raise ValueError(f"stored threshold {cal.threshold_!r} is not a number")
        return cal
