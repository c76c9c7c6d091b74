"""Folder-per-class image datasets, held in memory as uint8 tensors, and the image decoder
every image path goes through (:func:`load_image`).

Guarantees, for single files, folders and uploaded bytes alike:

* only the accepted formats are opened (``formats``, default :data:`DEFAULT_FORMATS`: PNG,
  JPEG, BMP, TIFF, GIF, WebP, PGM/PPM/PBM); Pillow's other decoders never run, and a file of
  another format is refused as "format X is not accepted (accepted: ...)";
* an image over ``max_pixels`` pixels (default :data:`MAX_PIXELS`, 40 M) or ``max_side`` a
  side (16384) is refused from its header, before it is decoded;
* a large image is decoded at a reduced size where the format allows (JPEG) and shrunk by
  box averages to no less than twice the output size before the final antialiased resize;
* any image that cannot be read (missing, empty, damaged, truncated, another format, too
  large) raises one :class:`DatasetError` naming the file, whatever the decoder raised;
  KeyboardInterrupt and SystemExit pass through, and nothing logs a traceback.
"""

from __future__ import annotations

import hashlib
import json
import logging
import numbers
import os
import re
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import ConfigError
from .download import DatasetError, cache_dir

__all__ = ["ImageDataset", "scan_folder", "load_image", "load_images", "load_image_folder",
           "with_groups_from_names", "check_formats", "IMAGE_EXTENSIONS", "DEFAULT_FORMATS",
           "MAX_PIXELS", "MAX_SIDE"]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".pgm", ".ppm", ".pbm", ".bmp", ".tif", ".tiff",
                    ".gif", ".webp"}

#: The image formats read by default (Pillow's names; ``PPM`` covers PGM and PBM too).
DEFAULT_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP", "PPM")
#: The default pixel limit and longest side (decompression bombs are refused from their header).
MAX_PIXELS = 40_000_000
MAX_SIDE = 16384
_MARGIN = 2  # reduced decoding keeps at least twice the output size
_FORMAT_ALIASES = {"JPG": "JPEG", "MPO": "JPEG", "TIF": "TIFF", "PGM": "PPM", "PBM": "PPM",
                   "PNM": "PPM"}


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


def check_formats(formats: str | Sequence[str]) -> tuple[str, ...]:
    """Image format names as Pillow spells them, checked: ``("png", "jpg")`` -> ``("PNG", "JPEG")``.

    Takes a sequence or a comma-separated string. PGM and PBM are Pillow's ``PPM``; JPG and TIF
    are JPEG and TIFF. Raises ValueError naming a format Pillow cannot open, or for none.
    """
    Image.init()
    names = formats.split(",") if isinstance(formats, str) else list(formats)
    checked: list[str] = []
    for name in names:
        fmt = _FORMAT_ALIASES.get(str(name).strip().upper(), str(name).strip().upper())
        if fmt not in Image.OPEN:
            raise ConfigError(f"image format {name!r} is not one Pillow opens (known: "
                              f"{', '.join(sorted(Image.OPEN))})")
        if fmt not in checked:
            checked.append(fmt)
    if not checked:
        raise ConfigError(f"no image format given (e.g. {', '.join(DEFAULT_FORMATS)})")
    return tuple(checked)


def _one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception as a short line for a message or a log: Pillow's texts run long or
    say nothing (a bare ``struct.error``, an empty ``MemoryError``)."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _sniff(path: str | Path | BinaryIO) -> str | None:
    """The format whose signature a file starts with, by Pillow's own signature checks (they
    read the first 16 bytes, as :func:`PIL.Image.open` does; no decoder runs), or None."""
    try:
        if isinstance(path, str | Path):
            with open(path, "rb") as f:
                prefix = f.read(16)
        else:
            path.seek(0)
            prefix = path.read(16)
        for fmt in Image.ID:
            accept = Image.OPEN[fmt][1]
            if accept is not None and accept(prefix):
                return fmt
    except Exception:  # naming the format is a courtesy: never the reason a load fails
        return None
    return None


def _accepted(fmt: str | None, formats: tuple[str, ...]) -> bool:
    # Pillow names a JPEG holding several pictures (phones' depth maps, Ultra HDR) MPO;
    # the JPEG decoder reads its first picture
    return fmt in formats or (fmt == "MPO" and "JPEG" in formats)


def _target(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    """``size`` as (height, width), checked."""
    if size is None:
        return None
    hw = (size, size) if isinstance(size, numbers.Integral) else tuple(size)
    if len(hw) != 2 or not all(isinstance(v, numbers.Integral) and v > 0 for v in hw):
        raise ValueError(f"size must be a positive side or (height, width), got {size!r}")
    return int(hw[0]), int(hw[1])


def _shrink(img: Image.Image, fit: tuple[int, int]) -> Image.Image:
    """Box-average by whole factors while ``_MARGIN`` x the output size remains: one cheap
    pass that leaves the antialiased resize a small image instead of a huge one."""
    factor = (max(1, img.size[0] // (fit[0] * _MARGIN)), max(1, img.size[1] // (fit[1] * _MARGIN)))
    return img.reduce(factor) if factor != (1, 1) else img


def _decode(img: Image.Image, target: tuple[int, int] | None, channels: int, invert: bool,
            keep_aspect: bool) -> np.ndarray:
    """Decode an opened image at the size it is wanted: (H, W) or (H, W, 3) uint8."""
    mode = "L" if channels == 1 else "RGB"
    if target is None:
        return np.asarray(img.convert(mode), dtype=np.uint8)
    h, w = target
    fit = (w, h)
    if keep_aspect:
        scale = min(w / img.size[0], h / img.size[1])
        fit = (max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale)))
    # JPEG decodes at 1/2, 1/4 or 1/8 of its size when asked to (other formats ignore it);
    # never below _MARGIN x the output, so that the final resize still averages
    img.draft(None, (fit[0] * _MARGIN, fit[1] * _MARGIN))
    if img.mode in ("L", "RGB"):  # shrunk before the conversion, which then has less to do
        img = _shrink(img, fit)
    img = _shrink(img.convert(mode), fit)  # palette, 1-bit, alpha, 16-bit: converted first
    if img.size != fit:
        img = img.resize(fit, Image.Resampling.BILINEAR)
    if fit != (w, h):
        fill = 255 if invert else 0
        canvas = Image.new(mode, (w, h), fill if channels == 1 else (fill,) * 3)
        canvas.paste(img, ((w - fit[0]) // 2, (h - fit[1]) // 2))
        img = canvas
    return np.asarray(img, dtype=np.uint8)


def load_image(
    path: str | Path | BinaryIO, size: int | tuple[int, int] | None, channels: int = 1,
    invert: bool = False, keep_aspect: bool = False, *,
    formats: str | Sequence[str] = DEFAULT_FORMATS, max_pixels: int = MAX_PIXELS,
    max_side: int = MAX_SIDE, name: str | None = None,
) -> torch.Tensor:
    """Read one image file as a (C, H, W) uint8 tensor, resized to ``size`` (antialiased).

    ``size`` is a side (square) or (height, width); None keeps the file's size. With
    ``keep_aspect`` the image is scaled to fit and centred on background (white when
    ``invert``, as for ink on paper, else black), never distorted.

    Only the ``formats`` (Pillow's names, see :func:`check_formats`) are opened: other
    decoders never run, and a file of another format is refused as such. An image with more
    than ``max_pixels`` pixels, or a side longer than ``max_side``, is refused from its
    header, before it is decoded. A large image is decoded at a reduced size where the
    format allows (JPEG at 1/2, 1/4 or 1/8) and box-averaged down to twice ``size`` before
    the final resize (other formats, PNG among them, must still be decoded whole: their
    cost is bounded by ``max_pixels``).
    Any failure to read the file (missing, not an image, damaged, truncated, another
    format, too large) raises :class:`DatasetError` naming it (``name``, default the path),
    whatever Pillow raised.

    Example:
        >>> load_image("a.png", 28).shape
        torch.Size([1, 28, 28])
        >>> load_image(io.BytesIO(upload), 28, formats=("PNG",), name="upload.png")
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    target = _target(size)
    formats = check_formats(formats)
    name = name or str(path)
    limits = f"{max_pixels} pixels, {max_side} a side"
    try:
        with Image.open(path, formats=formats) as img:
            if not _accepted(img.format, formats):
                raise DatasetError(f"{name}: format {img.format} is not accepted (accepted: "
                                   f"{', '.join(formats)})")
            w, h = img.size
            if w * h > max_pixels or max(w, h) > max_side:
                raise DatasetError(f"{name}: {w} x {h} pixels is over the limits ({limits}); "
                                   f"send a smaller image, or raise the limit")
            arr = _decode(img, target, channels, invert, keep_aspect)
    except DatasetError:
        raise
    except UnidentifiedImageError:
        fmt = _sniff(path)
        if fmt is not None and not _accepted(fmt, formats):
            raise DatasetError(f"{name}: format {fmt} is not accepted (accepted: "
                               f"{', '.join(formats)})") from None
        raise DatasetError(f"{name}: not a readable image (damaged, or not one of the "
                           f"accepted formats: {', '.join(formats)})") from None
    except Image.DecompressionBombError as exc:  # Pillow's own limit, checked on opening
        raise DatasetError(f"{name}: over the limits ({limits}): {_one_line(exc)}") from None
    except Exception as exc:
        # The decode boundary: Pillow's decoders raise ValueError, struct.error, EOFError,
        # zlib.error, IndexError, MemoryError... on damaged files, each meaning "this file
        # cannot be read". KeyboardInterrupt and SystemExit are not Exceptions: they pass.
        logger.debug("%s: %s while decoding", name, type(exc).__name__)
        raise DatasetError(f"{name}: not a readable image ({_one_line(exc)})") from None
    if invert:
        arr = 255 - arr
    t = torch.from_numpy(arr.copy())
    return t[None] if channels == 1 else t.permute(2, 0, 1)


def load_images(
    paths: Sequence[str | Path], size: int | tuple[int, int] | None, channels: int = 1,
    invert: bool = False, keep_aspect: bool = False, *,
    formats: str | Sequence[str] = DEFAULT_FORMATS, max_pixels: int = MAX_PIXELS,
    max_side: int = MAX_SIDE,
) -> list[torch.Tensor]:
    """:func:`load_image` for many files, decoded on a few threads (PIL releases the GIL)."""
    formats = check_formats(formats)
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda p: load_image(p, size, channels, invert, keep_aspect,
                                                  formats=formats, max_pixels=max_pixels,
                                                  max_side=max_side), paths))


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


def _cache_key(items: list, size: object, channels: int, invert: bool, limits: list) -> str:
    h = hashlib.sha1()
    # a file no longer accepted (format, pixels) must be refused, not served from the cache;
    # version 3: large images are decoded at a reduced size
    h.update(json.dumps([size, channels, invert, limits, 3]).encode())
    for path, name, group in items:
        st = Path(path).stat()
        h.update(f"{path}|{name}|{group}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _load_cache(cache_file: Path, n: int) -> torch.Tensor | None:
    """The cached (n, C, H, W) uint8 images, or None (with one warning line saying why) when
    the file cannot be read or holds something else: the cache is then rebuilt. The file is
    safetensors: reading it never unpickles anything."""
    try:
        stored = load_file(cache_file)
    except (SafetensorError, OSError, ValueError) as exc:  # damaged: rebuilt, never trusted
        logger.warning("cannot read the cached images %s (%s: %s); rebuilding them",
                       cache_file, type(exc).__name__, _one_line(exc))
        return None
    images = stored.get("images")
    if not (isinstance(images, torch.Tensor) and images.dtype == torch.uint8
            and images.ndim == 4 and len(images) == n):
        what = (f"a {tuple(images.shape)} {images.dtype} tensor"
                if isinstance(images, torch.Tensor) else f"the tensors {sorted(stored)}")
        logger.warning("the cached images %s hold %s, not %d images; rebuilding them",
                       cache_file, what, n)
        return None
    logger.info("loaded cached images from %s", cache_file)
    return images


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
    formats: str | Sequence[str] = DEFAULT_FORMATS,
    max_pixels: int = MAX_PIXELS,
    max_side: int = MAX_SIDE,
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
        formats: the image formats read (Pillow's names, see :func:`check_formats`); a file
            of another format, or one that cannot be decoded, raises :class:`DatasetError`
            naming it.
        max_pixels, max_side: refuse an image with more pixels, or a longer side, from its
            header (a :class:`DatasetError` naming it).
    """
    formats = check_formats(formats)
    items = scan_folder(root, group_depth)
    counts: dict[str, int] = {}
    for _, name, _ in items:
        counts[name] = counts.get(name, 0) + 1
    small = sorted(n for n, c in counts.items() if c < min_per_class)
    if small:
        logger.warning("dropping %d classes with fewer than %d images (e.g. %s)",
                       len(small), min_per_class, small[0])
        items = [it for it in items if counts[it[1]] >= min_per_class]
    key = _cache_key(items, [size, True] if keep_aspect else size, channels, invert,
                     [formats, max_pixels, max_side])
    cache_file = cache_dir() / "tensors" / f"{key}.safetensors"
    images = None
    if use_cache and cache_file.is_file():
        images = _load_cache(cache_file, len(items))
    if images is None:
        tensors = load_images([it[0] for it in items], size, channels, invert, keep_aspect,
                              formats=formats, max_pixels=max_pixels, max_side=max_side)
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) > 1:
            raise DatasetError(f"{root}: images have different sizes {sorted(shapes)[:3]}...; "
                               f"set a size to resize them")
        images = torch.stack(tensors)
        if use_cache:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            # a file of its own: processes that load the same folder at once (test
            # workers, jobs sharing a cache) each write whole files, and the last wins
            fd, tmp = tempfile.mkstemp(dir=cache_file.parent, suffix=".tmp")
            os.close(fd)
            try:
                save_file({"images": images.contiguous()}, tmp)
                os.replace(tmp, cache_file)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
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
