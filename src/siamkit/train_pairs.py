"""Training a twin from pair labels alone (text and records): no class ids needed.

The loop mirrors :func:`siamkit.train.train`, read top to bottom: load the pairs (a pair
file, MRPC, STS-B or a Ditto entity-matching folder), carve validation out of train by
duplicate groups when there is no validation file, then each step embeds a batch of
pairs with the shared encoder and applies the loss (contrastive, online contrastive,
multiple negatives with the duplicate-group guard, the learned head's binary
cross-entropy, or cosine regression on graded scores; optionally balanced positives
per batch and an in-batch negatives term beside the contrastive ones); validation every
``eval.every`` steps (AUC for labelled pairs, Spearman for graded ones) keeps the best
checkpoint, and a threshold is calibrated on validation at the end
(``eval.calibrate_target``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .builders import build_in_batch_loss, build_loss, build_model
from .calibrate import ThresholdCalibrator
from .checkpoint import load_model, read_init_from, save_model, update_card, warm_start
from .config import GRADED_LOSSES, Config, ConfigError, check_config, data_root
from .data.records import RecordFeaturizer, featurizer_from_card
from .data.splits import positive_pair_groups, split_text_pairs
from .data.textpairs import TextPairs, load_ditto, load_mrpc, load_stsb, read_text_pairs
from .evaluate import embed_pair_items, evaluate_similarity, score_pairs
from .metrics import auc, best_f1_threshold
from .miners import Pairs, corpus_hard_negatives, row_pairs
from .train import (
    TrainResult,
    _prepare_run_dir,
    lr_factor,
    make_optimiser,
    seed_everything,
    set_lr,
)

__all__ = ["calibrate_on_pairs", "load_pair_data", "train_pairs", "val_is_seeded"]

logger = logging.getLogger(__name__)


def load_pair_data(config: Config) -> tuple[TextPairs, TextPairs]:
    """(train, validation) pairs as the config names them."""
    d, pc = config.data, config.pairs
    root = data_root(config) if d.root else None

    def load(split: str) -> TextPairs:  # "train", or the dataset's validation split
        if d.dataset == "mrpc":
            return load_mrpc(split, root)
        if d.dataset == "stsb":
            return load_stsb(split, root)
        if d.dataset == "ditto":
            return load_ditto(root, split)
        return read_text_pairs(pc.train if split == "train" else pc.val, pc.format, pc.a,
                               pc.b, pc.label, pc.score, pc.positive_label)

    train = load("train")
    if val_is_seeded(config):  # carved out of train by duplicate groups
        if train.same is None:
            raise ConfigError("graded pairs without pairs.val: give a validation file")
        parts, _ = split_text_pairs(train, val=pc.val_fraction, test=0.0, seed=config.seed)
        train, val = parts["train"], parts["val"]
    else:
        val = load({"stsb": "dev", "ditto": "valid"}.get(d.dataset, "val"))
    return train, val


def val_is_seeded(config: Config) -> bool:
    """True when :func:`load_pair_data` carves the validation pairs out of train with
    ``config.seed`` (MRPC, or a pair file without ``pairs.val``): runs with other seeds
    then validated on other pairs."""
    return config.data.dataset == "mrpc" or (config.data.dataset == "pairs"
                                             and not config.pairs.val)


def calibrate_on_pairs(run_dir: str | Path, val: TextPairs, target: str) -> None:
    """Fit the saved model's threshold on the labelled validation pairs ``val`` for
    ``target`` and store it in its card."""
    model, _, card = load_model(run_dir)
    emb = embed_pair_items(model, val, featurizer_from_card(card))
    s = score_pairs(model, emb, val.left, val.right)
    cal = ThresholdCalibrator(target, higher_is_closer=model.higher_is_closer).fit(s, val.same)
    update_card(run_dir, {"threshold": {**cal.to_dict(), "source": "validation pairs"}})


def _pair_drawer(train: TextPairs, pool: np.ndarray, size: int, pos_fraction: float | None,
                 rng: np.random.Generator) -> Callable[[], np.ndarray]:
    """A function drawing one batch of pair indices from ``pool``: uniformly, or with
    ``pos_fraction`` of them positive (each side drawn without replacement while it
    lasts)."""
    size = min(size, len(pool))
    if pos_fraction is None:
        return lambda: rng.choice(pool, size, replace=False)
    pos, neg = pool[train.same[pool]], pool[~train.same[pool]]
    if len(pos) == 0 or len(neg) == 0:
        raise ConfigError("pairs.pos_fraction needs both positive and negative training pairs")
    n_pos = min(size - 1, max(1, round(size * pos_fraction)))

    def draw() -> np.ndarray:
        return np.concatenate([rng.choice(pos, n_pos, replace=n_pos > len(pos)),
                               rng.choice(neg, size - n_pos, replace=size - n_pos > len(neg))])
    return draw


class _HardNegatives:
    """Negatives mined from the training texts for the positive pairs of each batch.

    :meth:`mine` embeds every training text and keeps, for each text of a positive pair,
    its ``k`` closest texts outside its duplicate group (:func:`corpus_hard_negatives`);
    :meth:`extend` adds to a batch, for each positive pair, a negative pair of one of its
    two texts and one of that text's mined negatives.
    """

    def __init__(self, train: TextPairs, groups: np.ndarray, k: int,
                 rng: np.random.Generator) -> None:
        self.train, self.groups, self.k, self.rng = train, groups, k, rng
        pos = train.same
        self.anchors = np.unique(np.concatenate([train.left[pos], train.right[pos]]))
        self.row = np.full(len(train.texts), -1)
        self.row[self.anchors] = np.arange(len(self.anchors))
        self.negatives: np.ndarray | None = None

    def mine(self, model: Any, featurizer: Any) -> None:
        t0 = time.perf_counter()
        emb = embed_pair_items(model, self.train, featurizer)
        self.negatives = corpus_hard_negatives(emb, model.distance, self.anchors, self.groups,
                                               self.k)
        logger.info("mined %d hard negatives for each of %d texts in %.0f s", self.k,
                    len(self.anchors), time.perf_counter() - t0)

    def extend(self, left: np.ndarray, right: np.ndarray, same: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        assert self.negatives is not None, "mine() first"
        pos = np.flatnonzero(same)
        flip = self.rng.random(len(pos)) < 0.5
        anchor = np.where(flip, right[pos], left[pos])
        cand = self.negatives[self.row[anchor]]
        neg = cand[np.arange(len(cand)), self.rng.integers(0, self.k, len(cand))]
        ok = neg >= 0  # an anchor with fewer than k texts outside its group
        return (np.concatenate([left, anchor[ok]]), np.concatenate([right, neg[ok]]),
                np.concatenate([same, np.zeros(int(ok.sum()), dtype=bool)]))


def _validate(model: Any, val: TextPairs, target: str = "eer", featurizer: Any = None
              ) -> float:
    """Spearman / 100 on graded validation pairs; on labelled ones the best F1 over
    thresholds when the model is calibrated for F1 (entity matching), else AUC."""
    if val.score is not None:
        return evaluate_similarity(model, val)["spearman"] / 100
    emb = embed_pair_items(model, val, featurizer)
    s = score_pairs(model, emb, val.left, val.right)
    s = s if model.higher_is_closer else -s
    return best_f1_threshold(s, val.same)[0] if target == "f1" else auc(s, val.same)


def train_pairs(config: Config, out_dir: str | Path, progress: bool = False,
                overwrite: bool = False) -> TrainResult:
    """Train a twin on a pair dataset as ``config`` says; writes a run folder."""
    check_config(config)
    out = Path(out_dir)
    init = read_init_from(config.model.init_from, out) if config.model.init_from else None
    _prepare_run_dir(out, False, overwrite)
    o, lc, pc = config.optim, config.loss, config.pairs
    seed_everything(config.seed)
    train, val = load_pair_data(config)
    graded = train.score is not None
    if graded != (lc.name in GRADED_LOSSES):
        raise ConfigError("graded pairs (a score column) train with loss.name=cosine or "
                          "cosent, and those losses need graded pairs")
    logger.info("training on %d pairs of %d texts; validating on %d pairs", len(train),
                len(train.texts), len(val))
    fields = config.model.encoder_args.get("fields") if config.model.encoder == "text" else None
    if fields and train.records is not None:
        unnamed = sorted({k for r in train.records for k in r if r[k]} - set(fields))
        if unnamed:
            raise ConfigError(f"model.encoder_args.fields must name every attribute of the "
                              f"records (an unnamed one runs into the field before it); "
                              f"missing: {unnamed}")
    featurizer, card = None, {"input": {"kind": "text"}}
    if config.model.encoder == "mlp":  # records by their numeric / categorical attributes
        if train.records is None or val.records is None:
            raise ConfigError("model.encoder=mlp matches records by their attributes: it "
                              "needs record pairs (data.dataset=ditto)")
        featurizer = RecordFeaturizer(numeric_scaling=config.data.numeric_scaling).fit(
            train.records)
        config.model.encoder_args.setdefault("in_features", featurizer.dim)
        card = {"input": {"kind": "records", "featurizer": featurizer.to_dict()}}
        logger.info("record features: numeric %s, categorical %s, left to text: %s",
                    list(featurizer.numeric), list(featurizer.categorical), featurizer.skipped)
        features = torch.from_numpy(featurizer.transform(train.records))
    model = build_model(config.model, 1, config.data.size)
    if init is not None:
        warm_start(model, init, card["input"])
    loss_fn = build_loss(config, model)
    optimiser = make_optimiser(model, o)
    rng = np.random.default_rng(config.seed)
    # duplicate groups guard in-batch negatives; MNRL draws positive pairs only
    groups = (positive_pair_groups(len(train.texts), train.left, train.right, train.same)
              if train.same is not None else None)
    pool = np.flatnonzero(train.same) if lc.name == "mnrl" else np.arange(len(train))
    if len(pool) < 2:
        raise ConfigError("not enough training pairs for a batch")
    draw = _pair_drawer(train, pool, o.pair_batch, pc.pos_fraction, rng)
    in_batch = build_in_batch_loss(config, model)
    hard = _HardNegatives(train, groups, pc.hard_negatives, rng) if pc.hard_negatives else None
    best, best_step, history = -math.inf, -1, []

    def validate(step: int, recent: float) -> None:
        nonlocal best, best_step
        metric = _validate(model, val, config.eval.calibrate_target, featurizer)
        record = {"step": step, "loss": recent, "val_metric": metric}
        weights = getattr(model.encoder, "field_weights", None)
        if weights:  # field-wise records: how much each attribute counts
            record["field_weights"] = {k: round(v, 4) for k, v in weights.items()}
        history.append(record)
        with open(out / "history.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        logger.info("step %d: loss %.4g, validation %.4f", step, recent, metric)
        if metric > best:
            best, best_step = metric, step
            save_model(out, model, config, {**card, "best_step": step, "validation": record})

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=o.steps, unit="step", dynamic_ncols=True)
    limit_s = 60 * o.time_limit_minutes if o.time_limit_minutes is not None else math.inf
    validate(0, math.nan)  # the starting point: fine-tuning must beat it
    t0, recent, seen, step = time.perf_counter(), [], 0, 0
    model.train()
    for step in range(1, o.steps + 1):
        # the schedule follows whichever runs out first, steps or time: it always anneals
        frac_done = max((step - 1) / o.steps, (time.perf_counter() - t0) / limit_s)
        set_lr(optimiser, lr_factor(frac_done, o.warmup_steps / o.steps, o.schedule))
        if hard is not None and (step - 1) % pc.mine_every == 0:
            hard.mine(model, featurizer)
            model.train()
        batch = draw()
        left, right = train.left[batch], train.right[batch]
        same = train.same[batch] if train.same is not None else None
        if hard is not None:  # a mined negative pair for each positive one
            left, right, same = hard.extend(left, right, same)
        items = np.concatenate([left, right])
        emb = (model.embed(features[items]) if featurizer is not None
               else model.embed([train.texts[i] for i in items]))
        n = len(left)
        item_groups = (torch.from_numpy(groups[np.concatenate([left, right])])
                       if groups is not None else None)
        if graded:
            indices: Any = row_pairs(n, score=train.score[batch])
        else:
            indices = row_pairs(n, same=None if lc.name == "mnrl" else same)
        loss = loss_fn(emb, item_groups, indices)
        if in_batch is not None and same.any():  # positives rank against every right side
            pairs = row_pairs(n, same=same)
            loss = loss + lc.in_batch * in_batch(
                emb, item_groups, Pairs(pairs.a1, pairs.p, pairs.a2[:0], pairs.n))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        seen += 2 * len(left)
        recent = (recent + [loss.item()])[-50:]
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(recent):.4f}")
        out_of_time = time.perf_counter() - t0 >= limit_s
        if step % config.eval.every == 0 or step == o.steps or out_of_time:
            validate(step, float(np.mean(recent)))
            model.train()
        if out_of_time:
            logger.warning("time limit of %.1f minutes reached at step %d of %d",
                           o.time_limit_minutes, step, o.steps)
            break
    if bar is not None:
        bar.close()
    if not graded and config.eval.calibrate_on != "none":
        calibrate_on_pairs(out, val, config.eval.calibrate_target)
    minutes = (time.perf_counter() - t0) / 60
    (out / "train_summary.json").write_text(json.dumps(
        {"steps": step, "best_val_metric": best, "best_step": best_step,
         "start_val_metric": history[0]["val_metric"], "train_minutes": minutes}, indent=2))
    return TrainResult(out, step, best, best_step, minutes, seen / max(1e-9, minutes * 60),
                       history)
