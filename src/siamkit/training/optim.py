"""The optimiser and the learning-rate schedule of a training run."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["make_optimiser", "set_lr", "lr_factor", "SCHEDULES"]

SCHEDULES = ("cosine", "constant")


def make_optimiser(model: nn.Module, lr: float, weight_decay: float = 0.0,
                   head_lr: float | None = None, extra: list[nn.Parameter] | None = None
                   ) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters of ``model`` (and ``extra``, e.g. a loss's proxies);
    with ``head_lr`` set, the parameters that start untrained beside a pretrained encoder
    (the learned head, a field-wise text encoder's field weights) at that rate: they learn
    at another pace. :func:`set_lr` scales each group's peak rate.

    Frozen parameters (``requires_grad=False``) are left out."""
    params = list({id(p): p for p in [*model.parameters(), *(extra or [])]
                   if p.requires_grad}.values())
    head = getattr(model, "head", None)
    fresh = [*(head.parameters() if head is not None else []),
             *(p for name, p in model.named_parameters() if name.endswith("field_logits"))]
    head_ids = {id(p) for p in fresh if p.requires_grad} if head_lr else set()
    groups = [{"params": [p for p in params if id(p) not in head_ids], "lr": lr}]
    if head_ids:
        groups.append({"params": [p for p in params if id(p) in head_ids], "lr": head_lr})
    optimiser = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    # the peaks live beside the optimiser's state, which a resumed run replaces
    optimiser.peak_lrs = [g["lr"] for g in groups]  # type: ignore[attr-defined]
    return optimiser


def set_lr(optimiser: torch.optim.Optimizer, factor: float) -> None:
    """Every parameter group of an optimiser from :func:`make_optimiser` at ``factor`` times
    its peak rate."""
    peaks = getattr(optimiser, "peak_lrs", None)
    if peaks is None:
        raise TypeError("set_lr takes an optimiser built by make_optimiser (it keeps the "
                        "peak learning rates)")
    for group, peak in zip(optimiser.param_groups, peaks, strict=True):
        group["lr"] = peak * factor


def lr_factor(frac_done: float, warmup: float, schedule: str) -> float:
    """Learning-rate multiplier at a point of training (``frac_done``, ``warmup`` in [0, 1]):
    linear warm-up, then cosine decay to 0 (or constant)."""
    if frac_done < warmup:
        return max(frac_done / warmup, 1e-3)
    if schedule == "constant":
        return 1.0
    rest = (frac_done - warmup) / max(1e-9, 1.0 - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, rest)))
