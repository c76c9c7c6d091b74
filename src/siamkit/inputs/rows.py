"""Rows and feature vectors for the MLP twin: a table's rows or entity-matching records
through the featuriser fitted at training time, or raw feature vectors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..data.download import DatasetError
from ..data.images import ImageDataset
from ..data.records import RecordFeaturizer
from ..data.tabular import load_digits, read_table, table_dataset
from ..data.textpairs import TextPairs, loads_row, parse_ditto_record
from ..embedding import embed_images
from ..siamese import SiameseNetwork
from .base import InputAdapter, Progress
from .spec import InputSpec

__all__ = ["RowInput", "VectorInput"]


def _refuse_folder_options(options: dict[str, Any]) -> None:
    """Rows have no folders to group by and no file names to take drawers from."""
    if options.get("group_depth") or options.get("drawer_pattern"):
        raise DatasetError("--group-depth and --drawer-pattern read image folders and file "
                           "names; a table's rows have neither (its split file's "
                           "group_pattern groups classes)")


class RowInput(InputAdapter):
    """Rows ``{column: value}`` -> feature vectors (N, F) through the fitted featuriser.

    A table model (``tabular`` with a featuriser) drops its class column from a row and
    refuses unknown columns; a record model (``records``) also takes Ditto's
    ``COL attr VAL value ...`` on the command line.
    """

    takes = "rows"

    def __init__(self, spec: InputSpec) -> None:
        super().__init__(spec)
        assert spec.featurizer is not None
        self.featurizer = RecordFeaturizer.from_dict(spec.featurizer)

    def parse(self, text: str) -> Any:
        if text.lstrip().startswith("{"):
            try:
                return loads_row(text)
            except ValueError as exc:  # malformed, or a column given twice
                raise DatasetError(f"{text[:80]!r}: not a JSON object ({exc})") from None
        if self.spec.kind == "records":
            return parse_ditto_record(text)
        raise DatasetError(f"{text[:80]!r}: a table model takes rows as JSON objects, e.g. "
                           f"'{{\"{self.featurizer.columns[0]}\": ...}}'")

    def check(self, rows: Sequence[Any]) -> list[dict[str, str]]:
        """Rows as the featuriser takes them (class column dropped, unknown columns and
        non-objects refused with the row's number)."""
        out = []
        for i, row in enumerate(rows):
            try:
                out.append(self.featurizer.check_row(row, self.spec.label_column))
            except ValueError as exc:
                raise DatasetError(f"row {i}: {exc}") from None
        return out

    def prepare(self, items: Sequence[Any], names: Sequence[str] | None = None
                ) -> torch.Tensor:
        if not items:
            raise DatasetError("no rows given")
        return torch.from_numpy(self.featurizer.transform(self.check(items)))

    def embed(self, model: SiameseNetwork, batch: Any, progress: Progress = None
              ) -> torch.Tensor:
        return embed_images(model, batch, on_batch=progress)

    def load_dataset(self, path: str, **options: Any) -> ImageDataset:
        _refuse_folder_options(options)
        if self.spec.kind == "records":
            raise DatasetError(f"this model matches records: give it pair files (--pairs), "
                               f"not {path}")
        if path == "sklearn:digits":
            raise DatasetError("sklearn:digits holds the digits' 64 features, for a tabular "
                               "(MLP) model trained on them: not this model")
        f = self.featurizer
        used = list(f.numeric) + list(f.categorical)  # skipped (free text) columns: optional
        records, labels = read_table(path, self.spec.label_column or "label", used,
                                     min_classes=1)
        return table_dataset(records, labels, f, path)

    def embed_pairs(self, model: SiameseNetwork, pairs: TextPairs, progress: Progress = None
                    ) -> torch.Tensor:
        if pairs.records is None:
            raise DatasetError("this model matches records by their attributes: give record "
                               "pairs (a Ditto-format file, --format ditto)")
        return self.embed(model, torch.from_numpy(self.featurizer.transform(pairs.records)),
                          progress)


class VectorInput(InputAdapter):
    """Raw feature vectors (a model trained on ``sklearn:digits``): no rows to featurise."""

    takes = "feature vectors"

    def prepare(self, items: Sequence[Any], names: Sequence[str] | None = None) -> Any:
        raise DatasetError("this tabular model was trained on sklearn:digits' feature vectors: "
                           "enroll with --from-folder sklearn:digits, evaluate with eval "
                           "episodes; to identify rows given as JSON, train on a table "
                           "(data.dataset=table)")

    def embed(self, model: SiameseNetwork, batch: Any, progress: Progress = None
              ) -> torch.Tensor:
        return embed_images(model, batch, on_batch=progress)

    def load_dataset(self, path: str, **options: Any) -> ImageDataset:
        _refuse_folder_options(options)
        if path != "sklearn:digits":
            raise DatasetError(f"{path}: this tabular (MLP) model takes sklearn:digits")
        return load_digits()
