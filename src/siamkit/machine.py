"""The machine a figure was measured on: CPU model, instruction sets, cores, threads,
library versions and peak FLOP rates. Every benchmark writes it into its result JSON, so a
reader sees which CPU a figure came from."""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

__all__ = ["cpu_flags", "cpu_model", "describe", "faiss_blas", "peak_gflops", "ISA_FLAGS"]

# the instruction sets that decide siamkit's speed: SIMD width, bf16 units
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16",
             "asimd", "sve")
LIBRARIES = ("siamkit", "torch", "numpy", "scipy", "onnxruntime", "faiss-cpu",
             "sentence-transformers", "pytorch-metric-learning")


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's instruction-set flags (Linux: /proc/cpuinfo); empty where unknown."""
    for line in _cpuinfo().splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_model() -> str:
    """The CPU's model name (e.g. ``AMD EPYC 7B13``), or what the platform says."""
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _mhz() -> float:
    for line in _cpuinfo().splitlines():
        if line.startswith("cpu MHz"):
            return float(line.split(":", 1)[1])
    return 0.0


def peak_gflops(flags: frozenset[str] | None = None) -> dict[str, Any]:
    """Peak fp32 GFLOP/s of the cores this process may use: cores x clock x two FMA units x
    the widest fp32 SIMD lanes x 2; with native bf16, the bf16 peak too (AMX: 1,024 bf16
    multiply-adds per cycle and core; AVX512-BF16: two units of 32)."""
    flags = cpu_flags() if flags is None else flags
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mhz = _mhz()
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    out: dict[str, Any] = {
        "cores": cores, "mhz": mhz, "fp32_lanes": lanes,
        "fp32_peak_gflops": cores * mhz * 1e-3 * 2 * lanes * 2,
        "how": "cores x clock (MHz from /proc/cpuinfo) x 2 FMA units x fp32 lanes x 2"}
    if "amx_bf16" in flags:
        out["bf16_peak_gflops"] = cores * mhz * 1e-3 * 1024 * 2
        out["bf16_how"] = "cores x clock x AMX 1,024 bf16 multiply-adds per cycle x 2"
    elif "avx512_bf16" in flags:
        out["bf16_peak_gflops"] = cores * mhz * 1e-3 * 2 * 32 * 2
        out["bf16_how"] = "cores x clock x 2 AVX512-BF16 units x 32 bf16 lanes x 2"
    return out


def faiss_blas() -> dict[str, str] | None:
    """The OpenBLAS that faiss-cpu's wheel bundles, and the kernels it chose for this CPU
    (FAISS's flat search is its matrix products). An OpenBLAS older than the CPU falls back
    to generic kernels (``Prescott``); ``OPENBLAS_CORETYPE`` overrides its choice. None
    where faiss-cpu or its bundled OpenBLAS is absent."""
    spec = importlib.util.find_spec("faiss")
    if spec is None or not spec.origin:
        return None
    libs = sorted(Path(spec.origin).parent.parent.glob("faiss_cpu.libs/libopenblas*.so*"))
    if not libs:
        return None
    try:
        import faiss  # noqa: F401  (loads the libraries the bundled OpenBLAS depends on)

        lib = ctypes.CDLL(str(libs[0]))
        lib.openblas_get_corename.restype = ctypes.c_char_p
        lib.openblas_get_config.restype = ctypes.c_char_p
        return {"core": lib.openblas_get_corename().decode(),
                "config": lib.openblas_get_config().decode()}
    except (ImportError, OSError, AttributeError):
        return None


def describe() -> dict[str, Any]:
    """The record every result JSON carries under ``machine``."""
    import torch

    flags = cpu_flags()
    versions = {}
    for lib in LIBRARIES:
        try:
            versions[lib] = version(lib)
        except PackageNotFoundError:
            versions[lib] = None
    return {"cpu": cpu_model(), "arch": platform.machine(),
            "isa": [f for f in ISA_FLAGS if f in flags], "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "python": platform.python_version(), "versions": versions,
            "faiss_blas": faiss_blas(), "peak": peak_gflops(flags)}
