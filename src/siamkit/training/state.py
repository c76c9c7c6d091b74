"""A run's resumable state without pickle: tensors in safetensors, the rest as JSON.

``state.safetensors`` holds every tensor a resumed run needs (the model, the loss's own
parameters, the optimiser's moments, random generator states) and, in its metadata, a JSON
record of everything else (step, best score, history, elapsed time, the optimiser's
hyper-parameters, numpy generator states). Reading it runs no code from the file: a
tampered state is refused, never executed. State files of older versions (``state.pt``, a
pickle) are refused without being opened.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from ..atomic import atomic_write

__all__ = ["STATE", "LEGACY_STATE", "StateError", "save_state", "load_state",
           "optimiser_state", "load_optimiser_state"]

STATE = "state.safetensors"
LEGACY_STATE = "state.pt"
_META = "siamkit_state"


class StateError(RuntimeError):
    """A run's state is missing, damaged or of a format this version does not read."""


def save_state(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
               ) -> None:
    """Write ``tensors`` and the JSON-able ``meta`` to ``path`` atomically."""
    flat = {k: v.detach().contiguous().cpu().clone() for k, v in tensors.items()}
    text = json.dumps(meta)
    atomic_write(path, lambda tmp: save_file(flat, str(tmp), metadata={_META: text}))


def load_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, meta) from :func:`save_state`; refuses anything else."""
    path = Path(path)
    if not path.is_file():
        legacy = path.with_name(LEGACY_STATE)
        if legacy.is_file():
            raise StateError(f"{legacy} was written by an older siamkit as a pickle, which is "
                             f"not loaded (a tampered file would run code): this run cannot "
                             f"be resumed; start it again")
        raise StateError(f"{path.parent}: nothing to resume (no {STATE})")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})[_META])
        tensors = load_file(str(path))
    except (SafetensorError, OSError, KeyError, ValueError) as exc:
        raise StateError(f"{path}: not a readable siamkit state ({exc})") from None
    if not isinstance(meta, dict):
        raise StateError(f"{path}: not a readable siamkit state (metadata is not an object)")
    return tensors, meta


def optimiser_state(optimiser: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor],
                                                                 dict[str, Any]]:
    """An optimiser's state dict split into tensors (``optim/<param>/<name>``) and JSON."""
    sd = optimiser.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entry in sd["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{pid}/{name}"] = value
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimiser_state(optimiser: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                         meta: dict[str, Any]) -> None:
    """Restore what :func:`optimiser_state` split."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            _, pid, name = key.split("/", 2)
            state.setdefault(int(pid), {})[name] = value
    for pid, entry in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(entry)
    optimiser.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def prefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``tensors`` with keys under ``prefix/``."""
    return {f"{prefix}/{k}": v for k, v in tensors.items()}


def unprefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors saved under ``prefix/``, with the prefix removed."""
    head = prefix + "/"
    return {k[len(head):]: v for k, v in tensors.items() if k.startswith(head)}
