"""Folder-per-class image datasets, held in memory as uint8 tensors."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .download import DatasetError, cache_dir

__all__ = ["ImageDataset", "scan_folder", "load_image", "load_images", "load_image_folder",
           "with_groups_from_names", "IMAGE_EXTENSIONS"]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".pgm", ".ppm", ".pbm", ".bmp", ".tif", ".tiff",
                    ".gif", ".webp"}


@dataclass
class ImageDataset:
    """Images of several classes, in memory.

    Attributes:
        images: (N, C, H, W) uint8.
        labels: (N,) int64 class ids in ``0..len(class_names)-1``.
        class_names: name of each class id.
        paths: source file of each image.
        groups: group id of each class (e.g. alphabet), or None.
        group_names: name of each group id.
        drawers: drawer / writer / session id of each image, or None.
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    paths: list[str] = field(default_factory=list)
    groups: np.ndarray | None = None
    group_names: list[str] | None = None
    drawers: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        """Number of classes (some may have no images after subsetting)."""
        return len(self.class_names)

    def subset_classes(self, class_ids: Sequence[int]) -> ImageDataset:
        """The images of the given classes, relabelled 0..len(class_ids)-1 in that order."""
        class_ids = [int(c) for c in class_ids]
        remap = torch.full((self.num_classes,), -1, dtype=torch.long)
        remap[torch.tensor(class_ids, dtype=torch.long)] = torch.arange(len(class_ids))
        keep = remap[self.labels] >= 0
        idx = torch.nonzero(keep).squeeze(1)
        groups = group_names = None
        if self.groups is not None:
            old = self.groups[class_ids]
            uniq = sorted(set(old.tolist()))
            groups = np.array([uniq.index(g) for g in old])
            group_names = [self.group_names[g] for g in uniq] if self.group_names else None
        return ImageDataset(
            images=self.images[idx],
            labels=remap[self.labels[idx]],
            class_names=[self.class_names[c] for c in class_ids],
            paths=[self.paths[i] for i in idx.tolist()] if self.paths else [],
            groups=groups,
            group_names=group_names,
            drawers=self.drawers[idx.numpy()] if self.drawers is not None else None,
        )

    def subset_items(self, indices: Sequence[int]) -> ImageDataset:
        """The given images, keeping every class id and name (classes may become empty)."""
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        return ImageDataset(
            images=self.images[idx], labels=self.labels[idx], class_names=self.class_names,
            paths=[self.paths[i] for i in idx.tolist()] if self.paths else [],
            groups=self.groups, group_names=self.group_names,
            drawers=self.drawers[idx.numpy()] if self.drawers is not None else None,
        )

    def first_items(self, shots: int | None) -> list[int]:
        """Indices of the first ``shots`` items of every class, by path (a table's
        ``FILE#row`` paths by row number, so ``t.csv#2`` comes before ``t.csv#10``); every
        index, in that order, when ``shots`` is None.

            >>> data.subset_items(data.first_items(1))  # one reference per class
        """

        def key(i: int) -> tuple[str, int]:
            head, sep, row = str(self.paths[i]).rpartition("#")
            return (head, int(row)) if sep and row.isdigit() else (str(self.paths[i]), -1)

        taken: dict[int, int] = {}
        keep = []
        for i in sorted(range(len(self)), key=key):
            c = int(self.labels[i])
            if shots is None or taken.get(c, 0) < shots:
                taken[c] = taken.get(c, 0) + 1
                keep.append(i)
        return keep

    def subset_groups(self, group_ids: Sequence[int]) -> ImageDataset:
        """The classes whose group is in ``group_ids``."""
        if self.groups is None:
            raise ValueError("this dataset has no groups")
        wanted = set(int(g) for g in group_ids)
        return self.subset_classes([c for c in range(self.num_classes)
                                    if int(self.groups[c]) in wanted])


def load_image(
    path: str | Path, size: int | tuple[int, int] | None, channels: int = 1,
    invert: bool = False, keep_aspect: bool = False,
) -> torch.Tensor:
    """Read one image file as a (C, H, W) uint8 tensor, resized to ``size`` (antialiased).

    ``size`` is a side (square) or (height, width); None keeps the file's size. With
    ``keep_aspect`` the image is scaled to fit and centred on background (white when
    ``invert``, as for ink on paper, else black), never distorted.
    Raises :class:`DatasetError` naming the file when it is not a readable image.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            if size is not None:
                h, w = (size, size) if isinstance(size, int) else size
                if keep_aspect and img.size != (w, h):
                    scale = min(w / img.size[0], h / img.size[1])
                    fit = (max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale)))
                    fill = 255 if invert else 0
                    canvas = Image.new(img.mode, (w, h), fill if channels == 1 else (fill,) * 3)
                    canvas.paste(img.resize(fit, Image.Resampling.BILINEAR),
                                 ((w - fit[0]) // 2, (h - fit[1]) // 2))
                    img = canvas
                elif img.size != (w, h):
                    img = img.resize((w, h), Image.Resampling.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError) as exc:
        raise DatasetError(f"{path}: not a readable image ({exc})") from None
    if invert:
        arr = 255 - arr
    t = torch.from_numpy(arr.copy())
    return t[None] if channels == 1 else t.permute(2, 0, 1)


def load_images(
    paths: Sequence[str | Path], size: int | tuple[int, int] | None, channels: int = 1,
    invert: bool = False, keep_aspect: bool = False,
) -> list[torch.Tensor]:
    """:func:`load_image` for many files, decoded on a few threads (PIL releases the GIL)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda p: load_image(p, size, channels, invert, keep_aspect),
                             paths))


def scan_folder(root: str | Path, group_depth: int = 0) -> list[tuple[str, str, str | None]]:
    """List ``(path, class_name, group_name)`` for images under a folder-per-class tree.

    With ``group_depth=0`` classes are the sub-folders of ``root``; with ``group_depth=1``
    they are ``root/<group>/<class>/`` (the class name is then ``group/class``).
    Images directly in a class folder and in its sub-folders count for that class.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    items: list[tuple[str, str, str | None]] = []
    level = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    pairs = [(None, p) for p in level]
    if group_depth == 1:
        pairs = [(g.name, c) for g in level for c in sorted(g.iterdir())
                 if c.is_dir() and not c.name.startswith(".")]
    elif group_depth != 0:
        raise ValueError(f"group_depth must be 0 or 1, got {group_depth}")
    for group, cdir in pairs:
        name = f"{group}/{cdir.name}" if group is not None else cdir.name
        for f in sorted(cdir.rglob("*")):
            if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
                items.append((str(f), name, group))
    if not items:
        raise DatasetError(f"{root}: no images found in class folders "
                           f"(expected {root}/<class>/<image>, group_depth={group_depth})")
    return items


def _cache_key(items: list, size: object, channels: int, invert: bool) -> str:
    h = hashlib.sha1()
    h.update(json.dumps([size, channels, invert, 2]).encode())
    for path, name, group in items:
        st = Path(path).stat()
        h.update(f"{path}|{name}|{group}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def load_image_folder(
    root: str | Path,
    size: int | tuple[int, int] | None = None,
    channels: int = 1,
    invert: bool = False,
    group_depth: int = 0,
    drawer_pattern: str | None = None,
    min_per_class: int = 1,
    use_cache: bool = True,
    keep_aspect: bool = False,
) -> ImageDataset:
    """Load a folder-per-class image tree into memory.

    Args:
        root: the tree's root folder.
        size: resize every image to this side or (height, width); None requires all
            images to share one size.
        channels: 1 (grayscale) or 3 (RGB).
        invert: store ``255 - pixel`` (for dark ink on white paper).
        group_depth: 1 when classes sit one level deeper, under group folders.
        drawer_pattern: regular expression whose first group, matched against the file
            name, is the drawer (writer) id, e.g. ``r"_(\\d+)\\.png$"`` for Omniglot.
        min_per_class: classes with fewer images are dropped with a warning.
        use_cache: keep the decoded tensor in ``$SIAMKIT_DATA/tensors`` for the next load.
        keep_aspect: fit and pad instead of stretching (see :func:`load_image`).
    """
    items = scan_folder(root, group_depth)
    counts: dict[str, int] = {}
    for _, name, _ in items:
        counts[name] = counts.get(name, 0) + 1
    small = sorted(n for n, c in counts.items() if c < min_per_class)
    if small:
        logger.warning("dropping %d classes with fewer than %d images (e.g. %s)",
                       len(small), min_per_class, small[0])
        items = [it for it in items if counts[it[1]] >= min_per_class]
    key = _cache_key(items, [size, True] if keep_aspect else size, channels, invert)
    cache_file = cache_dir() / "tensors" / f"{key}.pt"
    images = None
    if use_cache and cache_file.is_file():
        try:
            images = torch.load(cache_file, weights_only=True)
            logger.info("loaded cached images from %s", cache_file)
        except Exception:  # a damaged cache is rebuilt, never trusted
            images = None
    if images is None:
        tensors = load_images([it[0] for it in items], size, channels, invert, keep_aspect)
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) > 1:
            raise DatasetError(f"{root}: images have different sizes {sorted(shapes)[:3]}...; "
                               f"set a size to resize them")
        images = torch.stack(tensors)
        if use_cache:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(".tmp")
            torch.save(images, tmp)
            tmp.replace(cache_file)
    class_names = sorted({name for _, name, _ in items})
    index = {n: i for i, n in enumerate(class_names)}
    labels = torch.tensor([index[name] for _, name, _ in items], dtype=torch.long)
    groups = group_names = None
    if group_depth:
        group_of = {name: g for _, name, g in items}
        group_names = sorted(set(group_of.values()))
        gindex = {g: i for i, g in enumerate(group_names)}
        groups = np.array([gindex[group_of[n]] for n in class_names])
    drawers = None
    if drawer_pattern:
        try:
            rx = re.compile(drawer_pattern)
        except re.error as exc:
            raise ValueError(f"drawer pattern {drawer_pattern!r} is not a valid regular "
                             f"expression: {exc}") from None
        if rx.groups < 1:
            raise ValueError(f"drawer pattern {drawer_pattern!r} needs a group, e.g. "
                             r"'_(\d+)\.png$'")
        names = []
        for path, _, _ in items:
            m = rx.search(Path(path).name)
            if m is None:
                raise DatasetError(f"drawer pattern {drawer_pattern!r} does not match the file "
                                   f"name {Path(path).name!r}")
            names.append(m.group(1))
        uniq = sorted(set(names))
        drawers = np.array([uniq.index(n) for n in names])
    return ImageDataset(images, labels, class_names, [p for p, _, _ in items], groups,
                        group_names, drawers)


def with_groups_from_names(data: ImageDataset, pattern: str) -> ImageDataset:
    """Group classes by a regular expression on their names (group 1 is the group).

    E.g. ``r"^(\\d+)"`` puts SigComp's ``001`` (genuine) and ``001_forg`` (forgeries) in
    writer ``001``, so splits keep a writer's genuine and forged signatures together.
    """
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"group pattern {pattern!r} is not a valid regular expression: "
                         f"{exc}") from None
    names = []
    for c in data.class_names:
        m = rx.search(c)
        if m is None or rx.groups < 1:
            raise ValueError(f"group pattern {pattern!r} gives no group for class {c!r}")
        names.append(m.group(1))
    group_names = sorted(set(names))
    groups = np.array([group_names.index(n) for n in names])
    return ImageDataset(data.images, data.labels, data.class_names, data.paths, groups,
                        group_names, data.drawers)
