"""Numeric precision chosen for the hardware: bf16 autocast only on CPUs that compute bf16
natively (AMX or AVX512-BF16), fp32 elsewhere, where bf16 is emulated and slower.

Only encoders run in bf16: embeddings come back as float32, so losses, miners, distances
and thresholds always work in full precision.
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Callable, Iterator
from typing import Any

import torch

from . import machine

__all__ = ["PRECISIONS", "native_bf16", "resolve_precision", "autocast", "in_precision"]

PRECISIONS = ("auto", "fp32", "bf16")
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def native_bf16(flags: frozenset[str] | set[str] | None = None) -> bool:
    """True when the CPU computes bf16 natively (AMX or AVX512-BF16)."""
    flags = machine.cpu_flags() if flags is None else flags
    return platform.machine().lower() in ("x86_64", "amd64") and any(f in flags
                                                                     for f in BF16_FLAGS)


def resolve_precision(precision: str, flags: frozenset[str] | set[str] | None = None) -> str:
    """``fp32`` or ``bf16``: ``auto`` is bf16 only where :func:`native_bf16` says so."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16(flags) else "fp32"
    return precision


@contextlib.contextmanager
def autocast(precision: str) -> Iterator[None]:
    """bf16 autocast on the CPU for ``bf16``; nothing for ``fp32``."""
    if precision == "bf16":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yield
    else:
        yield


def in_precision(embed: Callable[[Any], torch.Tensor], precision: str
                 ) -> Callable[[Any], torch.Tensor]:
    """``embed`` run in ``precision`` (resolved: fp32 or bf16), returning float32."""
    if precision == "fp32":
        return embed

    def run(x: Any) -> torch.Tensor:
        with autocast(precision):
            out = embed(x)
        return out.float()

    return run
