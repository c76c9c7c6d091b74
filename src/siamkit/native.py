"""Small C kernels compiled with the system's C compiler at first use.

The kernels (``_screen.c``) screen a tile of scores for :mod:`siamkit.topk`
(``blocked_topk`` and ``self_topk``) in a single pass, folding what they find straight into
every row's running top-k heap: ``heap_tile`` reads float32 scores, ``heap_tile_bf16``
bfloat16 ones, rescoring in float32 each entry its rounding could have hidden. Without a
compiler (or with ``SIAMKIT_NATIVE=0``) the numpy path in ``topk.py`` does the
same work, about ten times slower. The shared library is cached
under ``$SIAMKIT_CACHE_DIR`` (default ``~/.cache/siamkit``), keyed by the source, the
compiler flags and this CPU's features, since it is built for the CPU it runs on.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["screen_kernel", "screen_kernel_bf16"]

_SOURCE = Path(__file__).with_name("_screen.c")
_FLAGS = ["-O3", "-march=native", "-shared", "-fPIC"]
_lib: Any = None  # the loaded library
_tried = False


def screen_kernel() -> Any:
    """The compiled ``heap_tile`` (a ctypes function), or None when it cannot be had."""
    lib = _library()
    return None if lib is None else lib.heap_tile


def screen_kernel_bf16() -> Any:
    """The compiled ``heap_tile_bf16`` (a ctypes function), or None when it cannot be had."""
    lib = _library()
    return None if lib is None else lib.heap_tile_bf16


def _library() -> Any:
    global _lib, _tried
    if not _tried:
        _tried = True
        if os.environ.get("SIAMKIT_NATIVE", "1") != "0":
            try:
                _lib = _load()
            except (OSError, subprocess.SubprocessError) as exc:
                logger.info("no compiled screening kernel (%s); using numpy", exc)
    return _lib


def _cache_dir() -> Path:
    base = os.environ.get("SIAMKIT_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "siamkit")
    path = Path(base)
    try:
        path.mkdir(parents=True, exist_ok=True)
        if os.access(path, os.W_OK):
            return path
    except OSError:
        pass
    path = Path(tempfile.gettempdir()) / f"siamkit-{os.getuid() if hasattr(os, 'getuid') else 0}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _cpu_features() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor()


def _load() -> Any:
    compiler = os.environ.get("CC", "gcc")
    source = _SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([source, " ".join([compiler, *_FLAGS]).encode(),
                                     platform.machine().encode(),
                                     _cpu_features().encode()])).hexdigest()[:16]
    lib_path = _cache_dir() / f"screen-{key}.so"
    if not lib_path.exists():
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=lib_path.parent)
        os.close(fd)
        try:
            subprocess.run([compiler, *_FLAGS, "-o", tmp, str(_SOURCE)], check=True,
                           capture_output=True, timeout=120)
            os.replace(tmp, lib_path)  # atomic: a concurrent process sees all or nothing
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        logger.info("compiled the screening kernel into %s", lib_path)
    lib = ctypes.CDLL(str(lib_path))
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32
    lib.heap_tile.restype = lib.heap_tile_bf16.restype = None
    lib.heap_tile.argtypes = [p, i64, i64, i32, i32, i32, p, p, p, p, i64]
    lib.heap_tile_bf16.argtypes = [p, i64, i64, i32, i32, i32, p, p, p, p, i64, p, p, i64,
                                   ctypes.c_float]
    return lib
