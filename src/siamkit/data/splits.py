"""Leakage-aware splits: whole groups (or whole classes) go to one side only."""

from __future__ import annotations

import numpy as np

from .images import ImageDataset

__all__ = ["split_by_group"]


def split_by_group(
    data: ImageDataset, n_holdout: int, fraction: float = 0.0, seed: int = 0
) -> tuple[ImageDataset, ImageDataset | None]:
    """Hold out whole groups (e.g. alphabets), or whole classes when there are no groups.

    Args:
        data: the dataset to split.
        n_holdout: number of groups (classes) to hold out; ignored when ``fraction`` > 0.
        fraction: hold out this fraction of the groups (classes) instead.
        seed: which groups are held out.

    Returns:
        (kept, held out); held out is None when nothing is held out.
    """
    units = data.groups if data.groups is not None else np.arange(data.num_classes)
    ids = np.unique(units)
    n = int(round(fraction * len(ids))) if fraction > 0 else n_holdout
    if n <= 0:
        return data, None
    if n >= len(ids):
        kind = "groups" if data.groups is not None else "classes"
        raise ValueError(f"cannot hold out {n} {kind} for validation: the data has only "
                         f"{len(ids)} (data.val_groups / data.val_fraction)")
    held = set(np.random.default_rng(seed).permutation(ids)[:n].tolist())
    out = [c for c in range(data.num_classes) if int(units[c]) in held]
    kept = [c for c in range(data.num_classes) if int(units[c]) not in held]
    return data.subset_classes(kept), data.subset_classes(out)
