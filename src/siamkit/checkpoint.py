"""Run folders: a model's ``model.safetensors`` and its JSON card ``config.json``.

The card (written by :meth:`SiameseNetwork.save`) holds how to rebuild the network
(``model``), how it reads its inputs (``input``, an :class:`InputSpec`), and facts about the
run: the training ``config`` when it came from one, the calibrated ``threshold``, the best
step. Cards written before the ``model`` section existed are rebuilt from their config.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from .atomic import atomic_write_text
from .builders import build_model
from .calibrate import ThresholdCalibrator
from .config import Config, ConfigError, config_from_dict, config_to_dict
from .inputs import InputSpec
from .siamese import CARD, WEIGHTS, SiameseNetwork

__all__ = ["save_model", "load_model", "load", "read_card", "update_card", "RunError",
           "calibrator_of", "require_calibrator", "threshold_of", "input_spec_of",
           "model_identity", "read_init_from", "warm_start", "CARD", "WEIGHTS"]

logger = logging.getLogger(__name__)

CONFIG = CARD  # the card's file name, config.json (kept for older imports)


class RunError(RuntimeError):
    """A run folder is missing or does not hold a usable model."""


def save_model(
    run_dir: str | Path, model: SiameseNetwork, config: Config | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Save ``model`` into ``run_dir`` with its training ``config`` and ``extra`` facts in
    the card (see :meth:`SiameseNetwork.save`), keeping the facts a card already in the
    folder holds (a threshold, say) unless ``extra`` replaces them."""
    facts = {"config": config_to_dict(config)} if config is not None else {}
    kept: dict[str, Any] = {}
    if (Path(run_dir) / CARD).is_file():  # facts an earlier save or calibration stored
        try:
            kept = {k: v for k, v in read_card(run_dir).items()
                    if k not in ("format", "model", "input")}
        except RunError:
            kept = {}
    return model.save(run_dir, {**kept, **facts, **(extra or {})}) / WEIGHTS


def read_card(run_dir: str | Path) -> dict[str, Any]:
    """The JSON card of a run folder, checked to be a JSON object."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"model folder not found: {run_dir}")
    path = run_dir / CARD
    if not path.is_file():
        raise RunError(f"{run_dir}: not a siamkit run folder (needs {WEIGHTS} and {CARD})")
    try:
        card = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunError(f"{path}: unreadable model card ({exc})") from None
    if not isinstance(card, dict):
        raise RunError(f"{path}: a model card is a JSON object, not {type(card).__name__}")
    return card


def update_card(run_dir: str | Path, extra: dict[str, Any]) -> None:
    """Add or replace top-level facts in a run's card (atomically)."""
    card = read_card(run_dir)
    card.update(extra)
    atomic_write_text(Path(run_dir) / CARD, json.dumps(card, indent=2))


def input_spec_of(card: dict[str, Any], config: Config | None) -> InputSpec | None:
    """The card's :class:`InputSpec`; what an older card left out comes from its training
    config (``data.size``, ``data.channels``, ``data.invert``, ``eval.tta``). None for a
    model saved without one (it embeds tensors from Python, not files)."""
    if "input" not in card and config is None:
        return None
    defaults: dict[str, Any] = {}
    if config is not None:
        d, m = config.data, config.model
        defaults = {"size": d.size if d.width is None else [d.size, d.width],
                    "channels": d.channels, "invert": d.invert, "tta": config.eval.tta,
                    "mirror": config.eval.mirror}
        member = m.encoder_args.get("member") if m.encoder == "ensemble" else m.encoder
        if member == "mlp" and "input" not in card:  # an MLP twin reads feature vectors
            defaults = {"kind": "tabular", "features": m.encoder_args.get("in_features")}
    try:
        return InputSpec.from_dict(card.get("input", {}), defaults)
    except ValueError as exc:
        raise RunError(f"the model card's input: {exc}") from None


def calibrator_of(card: dict[str, Any]) -> ThresholdCalibrator | None:
    """The calibrated threshold stored in a card, or None."""
    values = card.get("threshold")
    if values is None:
        return None
    if not isinstance(values, dict):
        raise RunError(f"the model card's threshold must be a mapping, got {values!r}")
    try:
        cal = ThresholdCalibrator.from_dict({k: v for k, v in values.items() if k != "source"})
    except (TypeError, ValueError) as exc:
        raise RunError(f"the model card's threshold: {exc}") from None
    if cal.threshold_ is None or isinstance(cal.threshold_, bool) or not (
            float("-inf") < float(cal.threshold_) < float("inf")):
        raise RunError(f"the model card's threshold_ must be a finite number, got "
                       f"{cal.threshold_!r}")
    return cal


def require_calibrator(card: dict[str, Any], run_dir: str | Path,
                       remedy: str = "run siamkit calibrate first") -> ThresholdCalibrator:
    """The calibrated threshold stored in a card; a RunError naming the run folder and
    ``remedy`` when it has none."""
    cal = calibrator_of(card)
    if cal is None:
        raise RunError(f"{run_dir} has no calibrated threshold: {remedy}")
    return cal


def threshold_of(card: dict[str, Any]) -> float | None:
    """The calibrated decision threshold stored in a card (model convention), or None."""
    cal = calibrator_of(card)
    return cal.threshold_ if cal is not None else None


def load_model(run_dir: str | Path) -> tuple[SiameseNetwork, Config | None, dict]:
    """Load a trained model from a run folder.

    Returns:
        (model in eval mode, with ``input_spec`` set; its training config, or None for a
        model trained from Python without one; the whole JSON card).
    """
    run_dir = Path(run_dir)
    card = read_card(run_dir)
    weights = run_dir / WEIGHTS
    if not weights.is_file():
        raise RunError(f"{run_dir}: not a siamkit run folder (needs {WEIGHTS} and {CARD})")
    config = None
    if "config" in card:
        try:
            config = config_from_dict(card["config"])
        except (ConfigError, TypeError) as exc:
            raise RunError(f"{run_dir / CARD}: unreadable training config ({exc})") from None
    spec = input_spec_of(card, config)
    try:
        if isinstance(card.get("model"), dict):
            model = SiameseNetwork.from_description(card["model"], spec)
        elif config is not None:  # a card written before the model section existed
            model = build_model(config.model, spec.channels, spec.size or config.data.size)
            model.input_spec = spec
        else:
            raise RunError(f"{run_dir / CARD}: the card describes no model")
    except (ValueError, ConfigError, KeyError, TypeError) as exc:
        raise RunError(f"{run_dir}: cannot build the model its card describes ({exc})") from None
    try:
        model.load_state_dict(load_file(str(weights)))
    except Exception as exc:  # safetensors raises several types for damaged files
        raise RunError(f"{weights}: cannot load weights ({exc})") from None
    model.eval()
    return model, config, card


def load(run_dir: str | Path) -> SiameseNetwork:
    """A saved model, ready to embed: ``siamkit.load("runs/faces")``. Its ``input_spec``
    says how it reads inputs; :func:`calibrator_of` reads its threshold from the card."""
    return load_model(run_dir)[0]


def model_identity(run_dir: str | Path) -> str:
    """SHA-256 of a run's weights and of what its card says builds and feeds it: what
    embeddings are comparable with. Calibrating a threshold changes the card, not this."""
    run_dir = Path(run_dir)
    h = hashlib.sha256()
    try:
        with open(run_dir / WEIGHTS, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as exc:
        raise RunError(f"{run_dir}: cannot read the model ({exc})") from None
    card = read_card(run_dir)
    h.update(json.dumps(card.get("config", {}), sort_keys=True).encode())
    h.update(json.dumps(card.get("input", {}), sort_keys=True).encode())
    if "model" in card:
        h.update(json.dumps(card["model"], sort_keys=True).encode())
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


def warm_start(model: SiameseNetwork, source: tuple[Path, SiameseNetwork, dict]) -> None:
    """Start ``model``'s encoder from the encoder of a trained run (``source``, from
    :func:`read_init_from`): the same encoder and options, trained elsewhere, e.g. on
    Omniglot before a small set of characters. The loss, head and optimiser start fresh.
    Warns when the source read its inputs otherwise (size, inversion...)."""
    path, trained, _ = source
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
    if model.input_spec is not None and trained.input_spec != model.input_spec:
        logger.warning("model.init_from %s read its inputs otherwise (%s; here %s)", path,
                       trained.input_spec, model.input_spec)
    logger.info("encoder weights from %s", path)
