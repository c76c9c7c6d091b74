"""Shared fixtures: the read-only mirror of real datasets."""

from __future__ import annotations

from pathlib import Path

import pytest

# /work/main/tests/conftest.py -> /work/shared/datasets
MIRROR = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def mirror_root() -> Path:
    """The real-data mirror folder; skips the test when it is absent."""
    if not MIRROR.is_dir():
        pytest.skip(f"dataset mirror {MIRROR} not available")
    return MIRROR


@pytest.fixture
def mirror(mirror_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point ``SIAMKIT_MIRROR`` at the real-data mirror for one test."""
    monkeypatch.setenv("SIAMKIT_MIRROR", str(mirror_root))
    return mirror_root
