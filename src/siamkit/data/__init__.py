"""Dataset loaders: image folders, Omniglot and its one-shot runs, downloads and the mirror."""

from __future__ import annotations

from .download import DatasetError, cache_dir, extract_zip, fetch, mirror_dir
from .images import ImageDataset, load_image, load_image_folder, scan_folder
from .omniglot import OneShotRun, load_lake_runs, load_omniglot, omniglot_folder

__all__ = [
    "DatasetError",
    "ImageDataset",
    "OneShotRun",
    "cache_dir",
    "extract_zip",
    "fetch",
    "load_image",
    "load_image_folder",
    "load_lake_runs",
    "load_omniglot",
    "mirror_dir",
    "omniglot_folder",
    "scan_folder",
]
