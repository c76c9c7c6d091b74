"""The training loop: one loop for every objective, read top to bottom.

::

    for step in steps:
        learning rate from the schedule (warm-up, cosine; steps or time, whichever ends first)
        objective: draw a batch -> embed -> (mine) -> loss
        backward -> optimiser step
        every N steps: validate, keep the best model, save the resumable state

Under torchrun every rank runs this loop on its share of each batch. The run folder gets
``model.safetensors`` and ``config.json`` (the best model and its card), ``state.safetensors``
(to resume), ``history.jsonl`` and ``train_summary.json``; without a folder, the best
weights are kept in memory and loaded into the model at the end.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from ..allocator import keep_freed_memory
from ..checkpoint import RunError
from ..precision import in_precision, resolve_precision
from ..siamese import WEIGHTS, SiameseNetwork
from .distributed import (
    DistInfo,
    average_gradients,
    barrier,
    broadcast_floats,
    setup,
)
from .objectives import Objective
from .optim import SCHEDULES, lr_factor, make_optimiser, set_lr
from .state import (
    LEGACY_STATE,
    STATE,
    StateError,
    load_optimiser_state,
    load_state,
    optimiser_state,
    prefixed,
    save_state,
    unprefixed,
)

__all__ = ["Trainer", "TrainSettings", "TrainResult", "seed_everything", "Callback",
           "Validator", "RESUMABLE_CHANGES"]

logger = logging.getLogger(__name__)

# A callback gets (step, loss) after every step; returning True stops training there.
Callback = Callable[[int, float], bool | None]
# A validator scores a model: a dict of metrics naming its ``primary_metric`` (higher wins).
Validator = Callable[[SiameseNetwork], dict[str, Any]]

# What a resumed run may change (settings, or the keys of a training config); any other
# difference is refused.
RESUMABLE_CHANGES = {"steps", "time_limit_minutes", "threads", "eval_every", "optim.steps",
                     "optim.time_limit_minutes", "optim.threads", "eval.every"}


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class TrainSettings:
    """How long and how fast a run trains, how often it validates.

    Attributes:
        steps: optimiser steps.
        lr: peak learning rate (AdamW); ``head_lr`` for what starts untrained beside a
            pretrained encoder (a learned head, field weights).
        weight_decay: AdamW's decoupled weight decay.
        warmup_steps: linear warm-up, then the ``schedule`` (cosine decay to 0, or constant).
        time_limit_minutes: stop (validated and saved) when reached; the schedule then
            follows time, so it always anneals fully.
        eval_every: steps between validations (and at the end).
        validate_first: also validate before the first step (a pretrained encoder's
            starting point, which fine-tuning must beat).
        threads: torch's intra-op threads (None: torch's default).
        precision: ``auto`` (bf16 autocast of the encoder where the CPU computes bf16
            natively, AMX or AVX512-BF16; else fp32), ``fp32`` or ``bf16``. Embeddings,
            losses and miners stay float32.
        gather_embeddings: under torchrun, losses and miners see every rank's embeddings.
        keep_freed_memory: on glibc, keep freed memory in the process for the next step
            (:func:`siamkit.allocator.keep_freed_memory`, for the rest of the process).
    """

    steps: int = 2000
    lr: float = 1e-3
    head_lr: float | None = None
    weight_decay: float = 0.0
    warmup_steps: int = 100
    schedule: str = "cosine"
    time_limit_minutes: float | None = None
    eval_every: int = 500
    validate_first: bool = False
    threads: int | None = None
    precision: str = "auto"
    gather_embeddings: bool = True
    keep_freed_memory: bool = True

    def __post_init__(self) -> None:
        resolve_precision(self.precision)  # refuses an unknown name
        for name, low in (("steps", 1), ("eval_every", 1), ("warmup_steps", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}")
        if not self.lr > 0 or (self.head_lr is not None and not self.head_lr > 0):
            raise ValueError(f"learning rates must be positive, got lr={self.lr}, "
                             f"head_lr={self.head_lr}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got "
                             f"{self.schedule!r}")
        if self.time_limit_minutes is not None and self.time_limit_minutes < 0:
            raise ValueError("time_limit_minutes must not be negative")


@dataclass
class TrainResult:
    """What a finished run reports (the same for every objective)."""

    run_dir: Path | None
    steps: int
    best_metric: float
    best_step: int
    minutes: float
    items_per_second: float
    history: list[dict[str, Any]] = field(default_factory=list)
    metric_name: str | None = None

    @property
    def start_metric(self) -> float | None:
        """The validation score before the first step, when the run measured it."""
        first = self.history[0] if self.history else {}
        return first.get("val_metric") if first.get("step") == 0 else None

    def summary(self, world_size: int = 1) -> dict[str, Any]:
        """The ``train_summary.json`` record."""
        return {"steps": self.steps, "best_val_metric": self.best_metric,
                "best_step": self.best_step, "val_metric": self.metric_name,
                "start_val_metric": self.start_metric, "train_minutes": self.minutes,
                "items_per_second": self.items_per_second, "world_size": world_size}


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and not k.endswith("_args"):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


class Trainer:
    """Trains ``model`` on ``objective``: the one training loop of siamkit.

    Args:
        model: the twin to train (its ``input_spec`` goes into the saved card).
        objective: :class:`ClassBatches` or :class:`PairBatches` (or your own
            :class:`Objective`).
        settings: steps, learning rates, schedule, validation cadence.
        out_dir: run folder (must be new or empty unless ``resume`` or ``overwrite``); None
            trains in memory: nothing is written and nothing can be resumed.
        validator: scores a model (a dict naming its ``primary_metric``); without one the
            latest model counts as the best.
        callbacks: ``cb(step, loss)`` after every step; one returning True stops training
            there (after a validation and a checkpoint).
        card: facts for the saved model card (e.g. ``{"config": ...}``).
        resume_key: what a resumed run must match (anything outside
            ``RESUMABLE_CHANGES`` that differs is refused), e.g. the training config.
        calibrate: called with the run folder once training ends (a threshold).
        resume: continue from ``out_dir``'s saved state; ``overwrite``: replace the folder.
        progress: show a progress bar (the CLI turns it on).
    """

    def __init__(self, model: SiameseNetwork, objective: Objective, settings: TrainSettings,
                 out_dir: str | Path | None = None, validator: Validator | None = None,
                 callbacks: Sequence[Callback] = (), card: dict[str, Any] | None = None,
                 resume_key: dict[str, Any] | None = None,
                 calibrate: Callable[[Path], Any] | None = None, resume: bool = False,
                 overwrite: bool = False, progress: bool = False) -> None:
        if not isinstance(model, SiameseNetwork):
            raise TypeError(f"model must be a SiameseNetwork, got {type(model).__name__}")
        if resume and out_dir is None:
            raise ValueError("resume needs the run folder (out_dir) the state was saved in")
        self.model, self.objective, self.settings = model, objective, settings
        self.out = Path(out_dir) if out_dir is not None else None
        self.validator, self.callbacks, self.calibrate = validator, list(callbacks), calibrate
        self.card = dict(card or {})
        self.resume_key = resume_key if resume_key is not None else asdict(settings)
        self.resume, self.overwrite, self.progress = resume, overwrite, progress
        self.best, self.best_step = -math.inf, -1
        self.history: list[dict[str, Any]] = []
        self.metric_name: str | None = None
        self._best_state: dict[str, torch.Tensor] | None = None

    # ---- the loop

    def fit(self) -> TrainResult:
        """Train; returns what the run did. The model ends with the best weights."""
        s, model, objective = self.settings, self.model, self.objective
        info = setup()  # torchrun: join the process group; alone: rank 0 of 1
        objective.check_distributed(info)
        created = self._prepare_run_dir(info)
        threads = torch.get_num_threads()  # settings.threads holds for this run only
        try:
            if s.threads:
                torch.set_num_threads(s.threads)
            if s.keep_freed_memory:  # large activations stay in the process between steps
                keep_freed_memory()
            optimiser = make_optimiser(model, s.lr, s.weight_decay, s.head_lr,
                                       objective.parameters())
            encode, outside_ddp = self._encoder(info, optimiser)
            precision = resolve_precision(s.precision)
            encode = in_precision(encode, precision)
            logger.info("training in %s (precision %s)", precision, s.precision)
            gather = info.enabled and s.gather_embeddings
            start, elapsed = self._restore(optimiser) if self.resume else (0, 0.0)
            bar = self._bar(start, info)
            limit_s = 60 * s.time_limit_minutes if s.time_limit_minutes is not None else math.inf
            if start == 0 and s.validate_first and info.is_main:
                self._validate(0, math.nan)
            elapsed_before = elapsed  # time spent by earlier sessions of a resumed run
            t0, seen, recent, step = time.perf_counter() - elapsed, 0, [], start
            model.train()
            for step in range(start + 1, s.steps + 1):
                elapsed = time.perf_counter() - t0
                frac_done = max((step - 1) / s.steps, elapsed / max(limit_s, 1e-9))
                (frac_done,) = broadcast_floats([frac_done], info)  # one schedule for all ranks
                set_lr(optimiser, lr_factor(frac_done, s.warmup_steps / s.steps, s.schedule))

                try:
                    objective.before_step(step, model)
                    loss, items = objective.step(encode, info, gather)
                except ValueError as exc:  # bad data or a diverged model: say when
                    raise ValueError(f"step {step}: {exc}") from exc
                optimiser.zero_grad(set_to_none=True)
                # DDP averages gradients over ranks; each rank's gradient of the global loss
                # covers only its own embeddings: scaled by the world size it is the full one
                (loss * info.world_size if gather else loss).backward()
                average_gradients(outside_ddp, info)
                optimiser.step()

                seen += items
                recent = (recent + [loss.item()])[-50:]
                elapsed = time.perf_counter() - t0
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{np.mean(recent):.4f}",
                                    items_s=f"{seen / max(1e-9, elapsed - elapsed_before):.0f}")
                stop = any([bool(cb(step, recent[-1])) for cb in self.callbacks])
                flags = broadcast_floats([float(elapsed >= limit_s), float(stop)], info)
                out_of_time, stop = bool(flags[0]), bool(flags[1])  # rank 0 decides
                if info.is_main and (step % s.eval_every == 0 or step == s.steps
                                     or out_of_time or stop):
                    self._validate(step, float(np.mean(recent)))
                    self._save_state(step, time.perf_counter() - t0, optimiser)
                    model.train()
                if out_of_time:
                    logger.warning("time limit of %.1f minutes reached at step %d of %d",
                                   s.time_limit_minutes, step, s.steps)
                if out_of_time or stop:
                    break
            if bar is not None:
                bar.close()
            if info.is_main and self.best_step < 0:  # no step ran (a finished run resumed)
                self._validate(step, math.nan)
            result = self._finish(info, step, t0, elapsed_before, seen)
        except BaseException:
            if created and self.out is not None and info.is_main and not (
                    self.out / STATE).is_file():
                shutil.rmtree(self.out, ignore_errors=True)  # nothing worth keeping
            raise
        finally:
            torch.set_num_threads(threads)
        barrier(info)  # no rank leaves before the checkpoint and threshold are written
        return result

    # ---- the pieces

    def _encoder(self, info: DistInfo, optimiser: torch.optim.Optimizer
                 ) -> tuple[Callable[[Any], torch.Tensor], list[torch.nn.Parameter]]:
        """The embedding function (DDP-wrapped under torchrun) and the trained parameters
        outside the encoder (head, proxies), whose gradients are averaged by hand."""
        if not info.enabled:
            return self.model.embed, []
        from torch.nn.parallel import DistributedDataParallel

        encode = DistributedDataParallel(self.model.encoder)  # averages encoder gradients
        in_encoder = {id(p) for p in self.model.encoder.parameters()}
        params = [p for g in optimiser.param_groups for p in g["params"]]
        return encode, [p for p in params if id(p) not in in_encoder]

    def _bar(self, start: int, info: DistInfo) -> Any:
        if not (self.progress and info.is_main):
            return None
        from tqdm import tqdm

        return tqdm(total=self.settings.steps, initial=start, unit="step", dynamic_ncols=True)

    def _prepare_run_dir(self, info: DistInfo) -> bool:
        """Check (and make) the run folder; True when this run created it."""
        out, created = self.out, False
        if out is None:
            return False
        if self.resume:
            if not (out / STATE).is_file() and not (out / LEGACY_STATE).is_file():
                raise RunError(f"{out}: nothing to resume (no {STATE})")
        elif info.is_main:
            if out.exists() and any(out.iterdir()):
                if not self.overwrite:
                    raise RunError(f"{out} already holds files; use --resume to continue that "
                                   f"run, --overwrite to replace it, or a new folder")
                shutil.rmtree(out)
            created = not out.exists()
            out.mkdir(parents=True, exist_ok=True)
        barrier(info)
        return created

    def _validate(self, step: int, recent_loss: float) -> None:
        """Score the model, log it, keep it when it is the best so far."""
        record: dict[str, Any] = {"step": step, "loss": recent_loss}
        score = float(step)  # without validation data the latest model is the best
        if self.validator is not None:
            metrics = self.validator(self.model)
            self.metric_name = metrics["primary_metric"]
            score = float(metrics[self.metric_name])
            record["val_metric"] = score
            for k, v in metrics.items():
                if isinstance(v, bool) or k == "primary_metric":
                    continue
                if isinstance(v, int | float):
                    record[f"val_{k}"] = v
                elif isinstance(v, dict):  # diagnostics, e.g. a field-wise encoder's weights
                    record[k] = v
        self.history.append(record)
        if self.out is not None:
            with open(self.out / "history.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
        shown = {k: v for k, v in record.items()
                 if k not in ("step", "val_metric") and isinstance(v, int | float)}
        logger.info("step %d: %s", step, ", ".join(f"{k}={v:.4g}" for k, v in shown.items()))
        if score > self.best or self.best_step < 0:
            self.best, self.best_step = score, step
            if self.out is not None:
                self.model.save(self.out, {**self.card, "best_step": step, "validation": record})
            else:
                self._best_state = {k: v.detach().clone()
                                    for k, v in self.model.state_dict().items()}

    def _save_state(self, step: int, elapsed: float, optimiser: torch.optim.Optimizer
                    ) -> None:
        """Everything a resumed run must get back to follow the same path."""
        if self.out is None:
            return
        opt_tensors, opt_meta = optimiser_state(optimiser)
        obj_tensors, obj_meta = self.objective.state()
        tensors = {**prefixed("model", self.model.state_dict()),
                   **prefixed("loss", self.objective.loss_fn.state_dict()),
                   **opt_tensors, **prefixed("objective", obj_tensors),
                   "rng/torch": torch.get_rng_state()}
        meta = {"step": step, "best": self.best, "best_step": self.best_step,
                "history": self.history, "elapsed": elapsed, "metric": self.metric_name,
                "optimiser": opt_meta, "objective": obj_meta, "resume_key": self.resume_key}
        save_state(self.out / STATE, tensors, meta)

    def _restore(self, optimiser: torch.optim.Optimizer) -> tuple[int, float]:
        """Load the saved state; (step reached, seconds spent)."""
        assert self.out is not None
        try:
            tensors, meta = load_state(self.out / STATE)
        except StateError as exc:
            raise RunError(str(exc)) from None
        a, b = _flat(meta.get("resume_key", {})), _flat(self.resume_key)
        changed = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k)
                         and k not in RESUMABLE_CHANGES)
        if changed:
            raise RunError(f"cannot resume with a different config: {', '.join(changed)} "
                           f"changed (only {', '.join(sorted(RESUMABLE_CHANGES))} may)")
        self.model.load_state_dict(unprefixed("model", tensors))
        self.objective.loss_fn.load_state_dict(unprefixed("loss", tensors))
        load_optimiser_state(optimiser, tensors, meta["optimiser"])
        self.objective.load_state(unprefixed("objective", tensors), meta["objective"])
        torch.set_rng_state(tensors["rng/torch"])
        self.best, self.best_step = meta["best"], meta["best_step"]
        self.history, self.metric_name = meta["history"], meta["metric"]
        logger.info("resuming at step %d (best %.4f at step %d)", meta["step"], self.best,
                    self.best_step)
        return int(meta["step"]), float(meta["elapsed"])

    def _finish(self, info: DistInfo, step: int, t0: float, elapsed_before: float, seen: int
                ) -> TrainResult:
        """Best weights back into the model, the threshold, the summary."""
        minutes = (time.perf_counter() - t0) / 60
        run_seconds = max(1e-9, time.perf_counter() - t0 - elapsed_before)
        result = TrainResult(self.out, step, self.best, self.best_step, minutes,
                             seen / run_seconds, self.history, self.metric_name)
        self.model.eval()
        if self._best_state is not None:
            self.model.load_state_dict(self._best_state)
        if not info.is_main or self.out is None:
            return result
        if self.calibrate is not None:
            self.calibrate(self.out)
        self.model.load_state_dict(load_file(str(self.out / WEIGHTS)))
        (self.out / "train_summary.json").write_text(
            json.dumps(result.summary(info.world_size), indent=2))
        return result
