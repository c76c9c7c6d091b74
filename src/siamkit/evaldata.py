"""Labelled evaluation data as a model reads it: a folder per class, a class-labelled table
or ``sklearn:digits``, kept to one subset of a split file; identification's references,
queries and unknowns.

    >>> data = load_eval_data(model, "faces/", split="split.json", subset="test")
    >>> evaluate_retrieval(model, data)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from .data.download import DatasetError
from .data.images import ImageDataset
from .data.splitfiles import SplitFile, split_classes
from .inputs import adapter_for
from .siamese import SiameseNetwork

__all__ = ["load_eval_data", "IdentificationSets", "identification_sets"]

logger = logging.getLogger(__name__)


def load_eval_data(model: SiameseNetwork, source: str, split: str | None = None,
                   subset: str = "test", **options: Any) -> ImageDataset:
    """``source`` loaded as the model reads it (its input adapter's ``load_dataset``, with
    ``options``: ``group_depth``, ``drawer_pattern``, ``use_cache``), kept to the classes
    of ``subset`` of the split file ``split`` when one is given.

    A tabular model scored on its whole table gets a warning: the classes it trained on
    are in it too.
    """
    data = adapter_for(model.input_spec).load_dataset(source, **options)
    if split:
        return split_classes(data, SplitFile.read(split), subset)
    if model.input_spec.kind == "tabular":
        logger.warning("no --split: every class of %s is scored, the model's training "
                       "classes included (give the split file and --subset test)", source)
    return data


@dataclass
class IdentificationSets:
    """What an identification evaluation enrolls and queries.

    Attributes:
        references: the items enrolled.
        queries: items of enrolled (and maybe other) classes, none of them enrolled.
        unknown: items of classes not enrolled, or None.
    """

    references: ImageDataset
    queries: ImageDataset
    unknown: ImageDataset | None = None


def identification_sets(model: SiameseNetwork, gallery_from: str, queries: str,
                        unknown: str | None = None, shots: int | None = None
                        ) -> IdentificationSets:
    """References (the first ``shots`` items of each class of ``gallery_from``, all when
    None; see :meth:`ImageDataset.first_items`), the queries of ``queries`` that are not
    among them, and the items of ``unknown``, each loaded as the model reads it.

    Raises:
        DatasetError: no query is left once the enrolled items are taken out.
    """
    adapter = adapter_for(model.input_spec)
    refs = adapter.load_dataset(gallery_from, use_cache=False)
    refs = refs.subset_items(refs.first_items(shots))
    enrolled = set(refs.paths)
    asked = adapter.load_dataset(queries, use_cache=False)
    asked = asked.subset_items([i for i, p in enumerate(asked.paths) if p not in enrolled])
    if len(asked) == 0:
        raise DatasetError("no query images left after removing the enrolled ones")
    others = adapter.load_dataset(unknown, use_cache=False) if unknown else None
    return IdentificationSets(refs, asked, others)
