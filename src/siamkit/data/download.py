"""Fetch dataset archives: local mirror first, else download with a checksum; safe extraction."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import urllib.request
import zipfile
import zlib
from pathlib import Path

__all__ = ["DatasetError", "cache_dir", "mirror_dir", "fetch", "extract_zip", "file_digest"]

logger = logging.getLogger(__name__)


class DatasetError(RuntimeError):
    """A dataset file is missing, corrupt or cannot be fetched."""


def cache_dir() -> Path:
    """Where archives are downloaded and extracted: ``$SIAMKIT_DATA`` or ``~/.cache/siamkit``."""
    return Path(os.environ.get("SIAMKIT_DATA") or Path.home() / ".cache" / "siamkit")


def mirror_dir() -> Path | None:
    """The local mirror of dataset files, ``$SIAMKIT_MIRROR``, if set."""
    value = os.environ.get("SIAMKIT_MIRROR")
    return Path(value) if value else None


def file_digest(path: Path, algorithm: str = "md5") -> str:
    """Hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _declared_digests(folder: Path, filename: str) -> set[str]:
    """Checksums a mirror folder declares for ``filename``.

    Read from checksum files (``MD5SUMS``, ``SHA256SUMS``, ``<file>.md5``, ``<file>.sha256``)
    and from lines of the folder's README that name the file.
    """
    found: set[str] = set()
    hexes = re.compile(r"\b([0-9a-fA-F]{64}|[0-9a-fA-F]{32})\b")
    candidates = ["MD5SUMS", "SHA256SUMS", "md5sums.txt", "sha256sums.txt",
                  f"{filename}.md5", f"{filename}.sha256", "README.md", "README"]
    for name in candidates:
        path = folder / name
        if not path.is_file():
            continue
        lines = path.read_text(errors="replace").splitlines()
        for i, line in enumerate(lines):
            own_file = name.startswith(filename)
            if own_file or filename in line:
                # a README may state the digests on the lines after the file's name
                window = line if own_file else " ".join(lines[i : i + 3])
                found.update(h.lower() for h in hexes.findall(window))
    return found


def _matches(path: Path, digests: set[str]) -> bool:
    md5 = file_digest(path, "md5")
    if md5 in digests:
        return True
    return any(len(d) == 64 for d in digests) and file_digest(path, "sha256") in digests


def fetch(filename: str, url: str | None, md5: str | None, subdir: str) -> Path:
    """Return a local path to ``filename``: from the mirror, the cache, or a download.

    Looks in ``$SIAMKIT_MIRROR/<subdir>/``, then ``$SIAMKIT_MIRROR/``, then the cache; a
    mirror copy is accepted when its digest matches the upstream ``md5`` or one the mirror
    declares for it, and otherwise only after its archive structure checks out.
    Downloads go to a temporary file and are renamed into place only after the md5 matches.
    """
    mirror = mirror_dir()
    if mirror is not None:
        for folder in (mirror / subdir, mirror):
            path = folder / filename
            if path.is_file():
                declared = _declared_digests(folder, filename)
                expected = declared | ({md5} if md5 else set())
                if expected and _matches(path, expected):
                    logger.info("using mirror copy %s (checksum ok)", path)
                    return path
                if declared:
                    raise DatasetError(f"{path}: checksum does not match the one declared "
                                       f"for it; the mirror copy is corrupt")
                logger.warning("%s: no checksum declared by the mirror and not the upstream "
                               "file; checking the archive structure instead", path)
                return path
        logger.info("%s not in mirror %s", filename, mirror)
    target = cache_dir() / "downloads" / subdir / filename
    if target.is_file() and (md5 is None or file_digest(target) == md5):
        return target
    if url is None:
        raise DatasetError(f"{filename} is not in the mirror (SIAMKIT_MIRROR) and has no "
                           f"download address")
    target.parent.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s", url)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{filename}.")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            shutil.copyfileobj(resp, out)
        if md5 is not None and (got := file_digest(Path(tmp))) != md5:
            raise DatasetError(f"download of {url} has md5 {got}, expected {md5}")
        os.replace(tmp, target)
    except OSError as exc:
        raise DatasetError(f"could not download {url}: {exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def extract_zip(archive: Path, dest: Path) -> Path:
    """Extract ``archive`` into ``dest`` once; returns ``dest``.

    Extraction goes to a temporary sibling folder that is renamed into place only when
    complete, so an interrupted or failed extraction never leaves a half-filled ``dest``.
    A corrupt or truncated zip raises :class:`DatasetError`.
    """
    if (dest / ".complete").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        try:
            with zipfile.ZipFile(archive) as zf:
                bad = zf.testzip()
                if bad is not None:
                    raise DatasetError(f"{archive}: corrupt member {bad!r}")
                for member in zf.namelist():
                    target = (tmp / member).resolve()
                    if not target.is_relative_to(tmp.resolve()):
                        raise DatasetError(f"{archive}: unsafe path {member!r} in archive")
                zf.extractall(tmp)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
            raise DatasetError(f"{archive} is not a readable zip archive "
                               f"(corrupt or truncated?): {exc}") from None
        (tmp / ".complete").write_text(archive.name)
        if (dest / ".complete").is_file():
            return dest  # another process finished first: keep its copy, which may be in use
        if dest.exists():
            shutil.rmtree(dest, ignore_errors=True)  # left incomplete by something else
        try:
            os.replace(tmp, dest)
        except OSError as exc:
            if not (dest / ".complete").is_file():
                raise DatasetError(f"could not put the extracted {archive.name} in place at "
                                   f"{dest}: {exc}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest
