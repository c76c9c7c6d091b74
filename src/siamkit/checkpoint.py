"""Run folders: save and load a model as safetensors weights plus a JSON card."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from .builders import build_model
from .config import Config, ConfigError, config_from_dict, config_to_dict
from .siamese import SiameseNetwork

__all__ = ["save_model", "load_model", "update_card", "RunError", "atomic_write_text",
           "model_identity", "read_init_from", "warm_start"]

logger = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


class RunError(RuntimeError):
    """A run folder is missing or does not hold a usable model."""


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file so a crash leaves either the old or the new content."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_model(
    run_dir: str | Path, model: SiameseNetwork, config: Config,
    extra: dict[str, Any] | None = None, name: str = WEIGHTS,
) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (the config plus ``extra`` facts)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = run_dir / f".{name}.tmp"
    save_file(state, str(tmp), metadata={"format": "siamkit"})
    os.replace(tmp, run_dir / name)
    card_path = run_dir / CONFIG
    card: dict[str, Any] = {}
    if card_path.is_file():
        card = json.loads(card_path.read_text())
    card["config"] = config_to_dict(config)
    card.update(extra or {})
    atomic_write_text(card_path, json.dumps(card, indent=2))
    return run_dir / name


def update_card(run_dir: str | Path, extra: dict[str, Any]) -> None:
    """Add or replace top-level facts in a run's ``config.json`` (atomically)."""
    card_path = Path(run_dir) / CONFIG
    if not card_path.is_file():
        raise RunError(f"{run_dir}: not a siamkit run folder (no {CONFIG})")
    card = json.loads(card_path.read_text())
    card.update(extra)
    atomic_write_text(card_path, json.dumps(card, indent=2))


def load_model(run_dir: str | Path, name: str = WEIGHTS) -> tuple[SiameseNetwork, Config, dict]:
    """Load a trained model from a run folder.

    Returns:
        (model in eval mode, its training config, the whole JSON card).
    """
    run_dir = Path(run_dir)
    weights, card_path = run_dir / name, run_dir / CONFIG
    if not run_dir.is_dir():
        raise RunError(f"model folder not found: {run_dir}")
    if not weights.is_file() or not card_path.is_file():
        raise RunError(f"{run_dir}: not a siamkit run folder (needs {name} and {CONFIG})")
    try:
        card = json.loads(card_path.read_text())
        config = config_from_dict(card["config"])
    except (json.JSONDecodeError, KeyError, ConfigError) as exc:
        raise RunError(f"{card_path}: unreadable model card ({exc})") from None
    inp = card.get("input", {})
    model = build_model(config.model, inp.get("channels", config.data.channels),
                        inp.get("size", config.data.size))
    try:
        state = load_file(str(weights))
        model.load_state_dict(state)
    except Exception as exc:  # safetensors raises several types for damaged files
        raise RunError(f"{weights}: cannot load weights ({exc})") from None
    model.eval()
    return model, config, card


def model_identity(run_dir: str | Path, name: str = WEIGHTS) -> str:
    """SHA-256 of a run's weights and training config: what embeddings are comparable with.

    Calibrating a threshold changes the card, not this identity.
    """
    import hashlib

    run_dir = Path(run_dir)
    h = hashlib.sha256()
    try:
        with open(run_dir / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        card = json.loads((run_dir / CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RunError(f"{run_dir}: cannot read the model ({exc})") from None
    h.update(json.dumps(card.get("config", {}), sort_keys=True).encode())
    h.update(json.dumps(card.get("input", {}), sort_keys=True).encode())
    return h.hexdigest()


def read_init_from(init_from: str, out_dir: str | Path) -> tuple[Path, SiameseNetwork, dict]:
    """The trained run ``model.init_from`` names, loaded (path, model, card) before the new
    run's folder is touched: a wrong path fails before ``--overwrite`` deletes anything."""
    path = Path(os.path.expanduser(os.path.expandvars(init_from)))
    if path.resolve() == Path(out_dir).resolve():
        raise ConfigError(f"model.init_from {path} is the run folder being written")
    try:
        model, _, card = load_model(path)
    except RunError as exc:
        raise ConfigError(f"model.init_from: {exc}") from None
    return path, model, card


def warm_start(model: SiameseNetwork, source: tuple[Path, SiameseNetwork, dict],
               input_card: dict[str, Any] | None = None) -> None:
    """Start ``model``'s encoder from the encoder of a trained run (``source``, from
    :func:`read_init_from`): the same encoder and options, trained elsewhere, e.g. on
    Omniglot before a small set of characters. The loss, head and optimiser start fresh.
    Warns when the source read its inputs otherwise (``input_card``: size, inversion...)."""
    path, trained, card = source
    theirs, ours = (getattr(e, "fields", None) for e in (trained.encoder, model.encoder))
    if theirs and theirs != ours:
        raise ConfigError(f"model.init_from {path}: its fields {theirs} are not this "
                          f"encoder's ({ours or 'whole texts'})")
    try:  # a field-wise text encoder may start from a whole-text one: its field weights fresh
        missing, unexpected = model.encoder.load_state_dict(trained.encoder.state_dict(),
                                                            strict=False)
    except RuntimeError as exc:
        lines = str(exc).strip().splitlines()
        detail = lines[1].strip() if len(lines) > 1 else lines[0]
        raise ConfigError(f"model.init_from {path}: its encoder does not fit this one: "
                          f"{detail}") from None
    missing = [k for k in missing if not k.endswith("field_logits")]
    if missing or unexpected:
        raise ConfigError(f"model.init_from {path}: its encoder does not fit this one: "
                          f"missing {missing[:3]}, unexpected {list(unexpected)[:3]}")
    if input_card is not None and card.get("input") != input_card:
        logger.warning("model.init_from %s read its inputs otherwise (%s; here %s)", path,
                       card.get("input"), input_card)
    logger.info("encoder weights from %s", path)
