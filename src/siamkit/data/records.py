"""Records as feature vectors for the MLP twin (entity matching's tabular path).

:class:`RecordFeaturizer` is fitted on training records (attribute -> value strings, as
the Ditto loader gives them) and turns each record into a fixed-length float vector:

- a numeric attribute (at least ``numeric_share`` of its non-empty values parse as numbers,
  after dropping currency signs and thousands separators): its value plus a missing flag,
  the value scaled by ``numeric_scaling``: ``log`` (the default: ``sign(x) log1p(|x|)``,
  then standardised; prices and counts spanning orders of magnitude), ``standard``
  (standardised) or ``none`` (as is: features already on one scale, such as pixels);
- a categorical attribute (few distinct values: at most ``max_distinct_share`` of its
  non-empty values are distinct): one-hot over its ``max_categories`` most frequent values
  (case-folded), an "other" slot and a missing flag;
- free-text attributes (names, titles, descriptions: almost every value distinct) are left
  to the text twin and skipped here.

The fitted state is plain JSON (:meth:`to_dict`), stored in the model card, so evaluation and
export featurise exactly as training did.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["RecordFeaturizer", "NUMERIC_SCALINGS"]

NUMERIC_SCALINGS = ("log", "standard", "none")

_NUMBER = re.compile(r"^[-+]?\d+(\.\d+)?([eE][-+]?\d+)?$")


_FLOAT32_MAX = 3.4e38
# values that mean "missing" in a numeric column (pandas' defaults for read_csv)
NA_MARKERS = frozenset({"#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan",
                        "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a",
                        "nan", "null"})


def _clean(value: str) -> str:
    return value.strip().replace(",", "").lstrip("$€£").strip()


def _number(value: str) -> float | None:
    """The number a value holds, or None; a number too large for float32 (``1e400``) is
    not one (it would become infinity and every feature NaN)."""
    v = _clean(value)
    if not _NUMBER.match(v):
        return None
    x = float(v)
    return x if abs(x) <= _FLOAT32_MAX else None


def _scale(x: float) -> float:
    return math.copysign(math.log1p(abs(x)), x)


@dataclass
class RecordFeaturizer:
    """Numeric and categorical attributes of records -> float32 vectors (see the module)."""

    max_categories: int = 32
    numeric_share: float = 0.9
    max_distinct_share: float = 0.5
    numeric: dict[str, list[float]] = field(default_factory=dict)  # attr -> [mean, std]
    categorical: dict[str, list[str]] = field(default_factory=dict)  # attr -> vocabulary
    skipped: list[str] = field(default_factory=list)
    numeric_scaling: str = "log"  # log, standard or none (see the module docstring)

    def __post_init__(self) -> None:
        if self.numeric_scaling not in NUMERIC_SCALINGS:
            raise ValueError(f"numeric_scaling must be one of {NUMERIC_SCALINGS}, got "
                             f"{self.numeric_scaling!r}")

    def _scaled(self, x: float) -> float:
        return _scale(x) if self.numeric_scaling == "log" else x

    def fit(self, records: list[dict[str, str]]) -> RecordFeaturizer:
        """Decide each attribute's kind and its statistics from training records."""
        if not records:
            raise ValueError("no records to fit the featuriser on")
        names = list(dict.fromkeys(k for r in records for k in r))
        self.numeric, self.categorical, self.skipped = {}, {}, []
        for name in names:
            values = [(r.get(name) or "").strip() for r in records]
            present = [v for v in values if v]
            if not present:
                self.skipped.append(name)
                continue
            given = [v for v in present if v not in NA_MARKERS]  # "NA", "nan": missing
            numbers = [n for n in (_number(v) for v in given) if n is not None]
            if given and len(numbers) >= self.numeric_share * len(given):
                if self.numeric_scaling == "none":
                    self.numeric[name] = [0.0, 1.0]
                    continue
                scaled = np.array([self._scaled(n) for n in numbers])
                std = float(scaled.std()) or 1.0
                self.numeric[name] = [float(scaled.mean()), std]
                continue
            folded = [v.lower() for v in present]
            if len(set(folded)) <= self.max_distinct_share * len(folded):
                common = [v for v, _ in Counter(folded).most_common(self.max_categories)]
                self.categorical[name] = common
            else:
                self.skipped.append(name)
                if given and len(numbers) >= 0.5 * len(given):
                    odd = next(v for v in given if _number(v) is None)
                    logger.warning(
                        "column %r is skipped as free text although %d%% of its values are "
                        "numbers (numeric needs %d%%); values such as %r are not numbers",
                        name, round(100 * len(numbers) / len(given)),
                        round(100 * self.numeric_share), odd[:40])
        if not self.numeric and not self.categorical:
            raise ValueError(f"no numeric or categorical attribute among {names}: every one "
                             f"is free text (use the text twin for these records)")
        return self

    @property
    def columns(self) -> list[str]:
        """Every attribute seen in fitting: numeric, categorical and skipped."""
        return list(self.numeric) + list(self.categorical) + list(self.skipped)

    def check_row(self, row: Any, label_column: str | None = None) -> dict[str, str]:
        """A row given by a user (a JSON object's dict) as the strings :meth:`transform`
        takes: ``None`` is a missing value, ``label_column`` (a table's class) is dropped,
        and a column the featuriser never saw is refused, as is a row with no column (a
        typo must not become a missing value). Raises ValueError."""
        if not isinstance(row, dict):
            raise ValueError(f"expected an object of column: value, got {type(row).__name__}")
        nested = [k for k, v in row.items() if isinstance(v, dict | list | tuple)]
        if nested:
            raise ValueError(f"column {nested[0]!r} holds a {type(row[nested[0]]).__name__}; "
                             f"a value is a string, a number, a boolean or null")
        out = {str(k): "" if v is None else str(v) for k, v in row.items()
               if label_column is None or str(k) != label_column}
        columns = self.columns
        more = f" and {len(columns) - 12} more" if len(columns) > 12 else ""
        known = set(columns)
        unknown = [k for k in out if k not in known]
        if unknown:
            raise ValueError(f"column {unknown[0]!r} is not one of the model's "
                             f"{columns[:12]}{more}")
        if not out:
            raise ValueError(f"no column of the model's {columns[:12]}{more}")
        for k, v in out.items():
            if k in self.numeric and v.strip() and v.strip() not in NA_MARKERS \
                    and not _NUMBER.match(_clean(v)):
                raise ValueError(f"column {k!r} holds numbers; {v[:40]!r} is not one (null "
                                 f"for a missing value)")
        used = list(self.numeric) + list(self.categorical)
        if not any(out.get(k, "").strip() for k in used):
            raise ValueError(f"no value in a column the model uses ({used[:12]}); "
                             f"{', '.join(repr(k) for k in out)} are skipped or empty")
        return out

    @property
    def dim(self) -> int:
        """Length of a feature vector."""
        return 2 * len(self.numeric) + sum(len(v) + 2 for v in self.categorical.values())

    def transform(self, records: list[dict[str, str]]) -> np.ndarray:
        """Feature vectors (N, dim), float32."""
        out = np.zeros((len(records), self.dim), dtype=np.float32)
        for i, r in enumerate(records):
            k = 0
            for name, (mean, std) in self.numeric.items():
                n = _number(r.get(name) or "")
                if n is None:
                    out[i, k + 1] = 1.0
                else:
                    out[i, k] = (self._scaled(n) - mean) / std
                k += 2
            for name, vocab in self.categorical.items():
                v = (r.get(name) or "").strip().lower()
                if not v:
                    out[i, k + len(vocab) + 1] = 1.0
                elif v in vocab:
                    out[i, k + vocab.index(v)] = 1.0
                else:
                    out[i, k + len(vocab)] = 1.0
                k += len(vocab) + 2
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"max_categories": self.max_categories, "numeric_share": self.numeric_share,
                "max_distinct_share": self.max_distinct_share, "numeric": self.numeric,
                "categorical": self.categorical, "skipped": self.skipped,
                "numeric_scaling": self.numeric_scaling}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RecordFeaturizer:
        return cls(**d)
