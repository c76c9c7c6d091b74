"""``fit``: train a twin from Python on your own encoder and data, no YAML, no folder.

    >>> net = siamkit.fit(MyEncoder(), train_set, val_set, loss="triplet", miner="semihard",
    ...                   steps=2000)
    >>> net.save("runs/mine")            # loads anywhere: siamkit.load("runs/mine")

``train_set`` is any map-style torch ``Dataset`` or sequence yielding ``(input, label)``
(class data: images, feature vectors or texts with a class each) or ``(a, b, label)`` /
``(a, b, score)`` (pair data). It builds the same objects the YAML path builds and runs the
same :class:`~siamkit.training.trainer.Trainer`; for anything it does not expose, build an
objective and a ``Trainer`` yourself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..builders import LOSSES, create_loss, create_miner
from ..distances import Distance, create_distance
from ..inputs import InputSpec
from ..miners import Miner
from ..samplers import PKSampler
from ..siamese import SiameseNetwork
from .items import ClassData, Items, PairData, class_data, infer_input_spec, pair_data
from .objectives import ClassBatches, Objective, PairBatches
from .trainer import Callback, Trainer, TrainSettings, seed_everything
from .validation import EpisodeValidator, PairValidator, calibrate_classes, calibrate_pairs

__all__ = ["fit"]

logger = logging.getLogger(__name__)

GRADED = ("cosent", "cosine")  # losses on graded pairs


def _is_pair_data(data: Any) -> bool:
    """Pairs yield (a, b, target); class data (input, label)."""
    if isinstance(data, PairData):
        return True
    if isinstance(data, ClassData):
        return False
    from ..data.images import ImageDataset
    from ..data.textpairs import TextPairs

    if isinstance(data, TextPairs):
        return True
    if isinstance(data, ImageDataset):
        return False
    try:
        first = data[0]
    except (TypeError, IndexError, KeyError) as exc:
        raise TypeError(f"train_data must be a map-style Dataset or a non-empty sequence of "
                        f"(input, label) or (a, b, label | score) items ({exc})") from None
    if not isinstance(first, tuple | list) or len(first) not in (2, 3):
        what = (f"a tuple of {len(first)} values" if isinstance(first, tuple | list)
                else f"a {type(first).__name__}")
        raise TypeError(f"train_data[0] is {what}: each item must be (input, label) for class "
                        f"data or (a, b, label | score) for pairs")
    return len(first) == 3


def _network(model: nn.Module, distance: str | Distance | None, text: bool) -> SiameseNetwork:
    if isinstance(model, SiameseNetwork):
        if distance is not None:
            raise ValueError("distance is given twice: in the SiameseNetwork and as distance=")
        return model
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module (an encoder) or a SiameseNetwork, "
                        f"got {type(model).__name__}")
    if isinstance(distance, str) or distance is None:
        distance = create_distance(distance or ("cosine" if text else "euclidean"))
    if not isinstance(distance, Distance):
        raise TypeError(f"distance must be a name or a siamkit Distance, got "
                        f"{type(distance).__name__}")
    return SiameseNetwork(model, distance)


def _probe(net: SiameseNetwork, items: Items) -> None:
    """Check the encoder's output on two training items, and learn its size."""
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            out = net.embed(items.take([0, min(1, len(items) - 1)]))
    except Exception as exc:  # the user's encoder: say what it was fed
        sample = items.take([0])
        shape = tuple(sample.shape) if isinstance(sample, torch.Tensor) else "texts"
        raise ValueError(f"the encoder failed on a batch of training inputs {shape}: "
                         f"{type(exc).__name__}: {exc}") from exc
    finally:
        net.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the encoder must return embeddings of shape (batch, dim), got "
                         f"{shape}: flatten or pool its output")
    net.set_embedding_dim(int(out.shape[1]))


def _loss(loss: str | nn.Module | None, net: SiameseNetwork, pairs: PairData | None,
          num_classes: int) -> tuple[nn.Module, str]:
    if isinstance(loss, nn.Module):
        return loss, type(loss).__name__
    graded = pairs is not None and pairs.graded
    name = loss or ("cosent" if graded else "contrastive")
    if not isinstance(name, str) or name not in LOSSES:
        raise ValueError(f"loss must be a loss module or one of {', '.join(sorted(LOSSES))}, "
                         f"got {loss!r}")
    if pairs is not None and graded != (name in GRADED):
        raise ValueError(f"loss {name!r} does not fit these pairs: graded pairs (scores) train "
                         f"with cosent or cosine, labelled ones with the others")
    if pairs is None and name in GRADED + ("mnrl", "online_contrastive"):
        raise ValueError(f"loss {name!r} trains on pairs; class data trains with contrastive, "
                         f"triplet, prototypical, proxy or bce")
    return create_loss(name, net.distance, head=net.head, num_classes=num_classes,
                       dim=net.embedding_dim), name


def _miner(miner: str | Miner | None, net: SiameseNetwork, steps: int, seed: int
           ) -> Miner | None:
    if miner is None or isinstance(miner, Miner):
        return miner
    if isinstance(miner, str):
        return create_miner(miner, net.distance, start_step=0, end_step=steps // 2, seed=seed)
    raise TypeError(f"miner must be a name or a siamkit Miner, got {type(miner).__name__}")


def _settings(settings: TrainSettings | dict[str, Any] | None, steps: int | None,
              lr: float | None, pairs: bool) -> TrainSettings:
    if isinstance(settings, TrainSettings):
        values = asdict(settings)
    elif isinstance(settings, dict) or settings is None:
        values = {"steps": 1000, "eval_every": 100, "validate_first": pairs,
                  **(settings or {})}
    else:
        raise TypeError(f"settings must be a TrainSettings or a dict, got "
                        f"{type(settings).__name__}")
    values.update({k: v for k, v in (("steps", steps), ("lr", lr)) if v is not None})
    try:
        return TrainSettings(**values)
    except TypeError as exc:
        raise ValueError(f"settings: {exc}") from None


def fit(
    model: nn.Module,
    train_data: Any,
    val_data: Any = None,
    *,
    loss: str | nn.Module | None = None,
    miner: str | Miner | None = None,
    distance: str | Distance | None = None,
    steps: int | None = None,
    lr: float | None = None,
    batch: int | tuple[int, int] | None = None,
    settings: TrainSettings | dict[str, Any] | None = None,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    input_spec: InputSpec | None = None,
    out_dir: str | Path | None = None,
    calibrate: str | None = "eer",
    callbacks: Sequence[Callback] = (),
    progress: bool = False,
    seed: int = 0,
    resume: bool = False,
    overwrite: bool = False,
) -> SiameseNetwork:
    """Train a Siamese network on your own encoder and data; returns it with its best
    weights (by ``val_data``), ready to ``save``.

    Args:
        model: any ``torch.nn.Module`` mapping a batch to (B, D) embeddings (the shared
            encoder), or a :class:`SiameseNetwork`.
        train_data: a map-style ``Dataset`` or sequence of ``(input, label)`` (class data)
            or ``(a, b, label | score)`` (pairs); inputs are image tensors (C, H, W), feature
            vectors (F,) or texts. Also siamkit's ``ImageDataset`` / ``TextPairs``.
        val_data: held-out data of the same form (other classes, other pairs): selects the
            best checkpoint (one-shot episodes over its classes, or its pairs' AUC /
            Spearman) and calibrates the threshold.
        loss: a name (``contrastive``, ``triplet``, ``prototypical``, ``proxy``, ``bce``;
            pairs also ``online_contrastive``, ``mnrl``; graded ``cosent``, ``cosine``) or
            a loss module of the contract ``loss(embeddings, labels, indices)``.
        miner: ``semihard``, ``batch_hard``, ``schedule`` or a :class:`Miner` (class data).
        distance: ``euclidean`` (default), ``cosine`` (default for texts), ``dot`` or a
            :class:`Distance`, when ``model`` is a bare encoder.
        steps, lr: shortcuts for the same fields of ``settings``.
        batch: pairs per batch (pair data, default 32), or (P classes, K each) for class data
            (default (16, 4), shrunk to what the data holds).
        settings: a :class:`TrainSettings` (or a dict of its fields): schedule, warm-up,
            weight decay, time limit, validation cadence.
        augment: applied to each float batch of class data (e.g. random affine distortions).
        input_spec: how saved copies read files (size, channels, invert, mean / std);
            inferred from the data when None.
        out_dir: write a run folder (checkpoints, history, resumable state, threshold);
            None trains in memory.
        calibrate: threshold target fitted on ``val_data`` when ``out_dir`` is given
            (``eer``, ``accuracy``, ``f1``, ``far=0.01``, ``precision=0.95``); None skips it.
        callbacks: ``cb(step, loss)`` after every step; True stops training.
        progress: show a progress bar.
        seed: seeds weights, batches and augmentation.
        resume, overwrite: continue or replace the run in ``out_dir``.
    """
    is_pairs = _is_pair_data(train_data)
    seed_everything(seed)
    train = pair_data(train_data, "train_data") if is_pairs else class_data(train_data,
                                                                             "train_data")
    val = None
    if val_data is not None:
        val = pair_data(val_data, "val_data") if is_pairs else class_data(val_data, "val_data")
    net = _network(model, distance, train.items.is_text)
    net.input_spec = input_spec if input_spec is not None else infer_input_spec(train.items)
    _probe(net, train.items)
    s = _settings(settings, steps, lr, is_pairs)
    if is_pairs:
        objective, loss_name = _pairs_objective(net, train, loss, batch, seed)
    else:
        objective, loss_name = _class_objective(net, train, loss, miner, batch, augment, s,
                                                seed)
    validator, calibrate_fn = _validation(val, calibrate, seed)
    card = {"fit": {"loss": loss_name, "miner": type(getattr(objective, "miner", None)).__name__
                    if getattr(objective, "miner", None) is not None else None,
                    "settings": asdict(s), "seed": seed}}
    Trainer(net, objective, s, out_dir, validator=validator, callbacks=callbacks, card=card,
            resume_key={"settings": asdict(s), "fit": card["fit"]},
            calibrate=calibrate_fn if out_dir is not None else None, resume=resume,
            overwrite=overwrite, progress=progress).fit()
    return net


def _class_objective(net: SiameseNetwork, data: ClassData, loss: Any, miner: Any,
                     batch: Any, augment: Any, s: TrainSettings, seed: int
                     ) -> tuple[Objective, str]:
    counts = np.bincount(data.labels.numpy(), minlength=len(data.class_names))
    if len(data.class_names) < 2 or counts.max() < 2:
        raise ValueError(f"class data needs at least two classes and a class with two items "
                         f"(positives); got {len(data.class_names)} classes of at most "
                         f"{int(counts.max())} items")
    p, k = batch if isinstance(batch, tuple) else (16, 4)
    p = min(p, len(data.class_names))
    k = max(2, min(k, int(counts[counts >= 2].min())))
    loss_fn, name = _loss(loss, net, None, len(data.class_names))
    sampler = PKSampler(data.labels.numpy(), p, k, s.steps, groups=data.groups,
                        class_names=data.class_names, drop_small=True, seed=seed)
    return ClassBatches(data, loss_fn, sampler, _miner(miner, net, s.steps, seed), augment,
                        seed=seed), name


def _pairs_objective(net: SiameseNetwork, data: PairData, loss: Any, batch: Any, seed: int
                     ) -> tuple[Objective, str]:
    if isinstance(batch, tuple):
        raise ValueError("batch for pair data is the number of pairs per batch, an int")
    loss_fn, name = _loss(loss, net, data, 0)
    return PairBatches(data, loss_fn, batch or 32, positives_only=name == "mnrl",
                       seed=seed), name


def _validation(val: ClassData | PairData | None, calibrate: str | None, seed: int
                ) -> tuple[Any, Any]:
    if val is None:
        return None, None
    if isinstance(val, PairData):
        validator: Any = PairValidator(val, calibrate or "eer")
        calibrate_fn = ((lambda run: calibrate_pairs(run, val, calibrate))
                        if calibrate and not val.graded else None)
        return validator, calibrate_fn
    validator = EpisodeValidator(val, way=20, within_group=False, seed=seed)
    calibrate_fn = ((lambda run: calibrate_classes(run, val, seed, target=calibrate))
                    if calibrate else None)
    return validator, calibrate_fn
