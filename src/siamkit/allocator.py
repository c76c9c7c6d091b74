"""Keep freed memory in the process while training, where the C library would give it back.

glibc's ``malloc`` serves blocks of 32 MB and more (a 40-way Omniglot episode's first
activations: 200 x 64 x 28 x 28 floats, 40 MB) straight from the operating system and
returns them at every ``free``. Each training step then faults those pages in again, and
the kernel zeroes them first: on a 2-core CPU that was a third of a step
(``benchmarks/train_memory.py``). :func:`keep_freed_memory` tells glibc to serve every
block from its heap and to keep what is freed for the next step. The arithmetic is the
same; only where the memory comes from changes. The process keeps its peak memory until
it ends. Other C libraries are left alone.

The trainer asks for it (``optim.keep_freed_memory``), and so does every ``siamkit``
command, whose embedding batches are as large (an evaluation of 2,000 Omniglot episodes
spent a third of its time in the kernel). ``SIAMKIT_KEEP_FREED_MEMORY=0`` turns it off
everywhere.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import platform

__all__ = ["keep_freed_memory"]

logger = logging.getLogger(__name__)

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


@functools.lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Ask glibc to serve large blocks from its heap (``M_MMAP_MAX`` = 0) and not to
    return freed memory to the system (``M_TRIM_THRESHOLD`` at its maximum), for the rest
    of the process. Returns whether it took effect (False off glibc, or with
    ``SIAMKIT_KEEP_FREED_MEMORY=0``). Idempotent."""
    if os.environ.get("SIAMKIT_KEEP_FREED_MEMORY", "1").strip() in ("0", "false", "no"):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1
    logger.debug("glibc keeps freed memory for the next step: %s", ok)
    return ok
