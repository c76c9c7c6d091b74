"""What held-out data says about a model while it trains: validators (a score to keep the
best checkpoint by) and the threshold calibrated once training ends."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..calibrate import ThresholdCalibrator
from ..checkpoint import load_model, update_card
from ..config import ConfigError
from ..data.pairs import all_pairs, skilled_pairs
from ..evaluate import episode_accuracy, score_pairs
from ..metrics import auc, best_f1_threshold
from ..siamese import SiameseNetwork
from .items import ClassData, PairData

__all__ = ["EpisodeValidator", "PairValidator", "calibrate_classes", "calibrate_pairs"]

logger = logging.getLogger(__name__)


class EpisodeValidator:
    """N-way K-shot episodes over held-out classes: the accuracy of one-shot recognition on
    classes the model never trained on (within one group per episode when ``within_group``
    and the classes have groups; support and queries by different drawers when the items
    have drawers, as in Lake's protocol). Fixed episodes: every call draws the same ones.

    ``way`` shrinks to what the validation classes (or the largest group) hold; fewer than
    two classes there is refused, naming what to change.
    """

    def __init__(self, data: ClassData, way: int = 20, shot: int = 1, queries: int = 1,
                 episodes: int = 200, within_group: bool = True, seed: int = 0) -> None:
        self.data = data
        within = within_group and data.groups is not None
        way = min(way, len(data.class_names))
        if within:
            way = min(way, int(np.bincount(data.groups).max()))
        if way < 2:
            where = "in any one validation group" if within else "held out for validation"
            hint = ", or set eval.within_group=false" if within else ""
            raise ConfigError(f"one class {where}: validation episodes need two; hold out more "
                              f"(data.val_groups, data.val_fraction or the split file's val)"
                              f"{hint}")
        self.way, self.shot, self.queries, self.episodes = way, shot, queries, episodes
        self.groups = data.groups if within else None
        self.seed = seed

    def __call__(self, model: SiameseNetwork) -> dict[str, Any]:
        emb = self.data.items.embed_all(model)
        return episode_accuracy(model, emb, self.data.labels.numpy(), self.way, self.shot,
                                self.queries, self.episodes, groups=self.groups,
                                drawers=self.data.drawers, class_names=self.data.class_names,
                                seed=self.seed)


class PairValidator:
    """Held-out pairs: Spearman correlation (as a fraction) for graded pairs; for labelled
    ones the best F1 over thresholds when the run is calibrated for F1 (entity matching),
    else the AUC."""

    def __init__(self, data: PairData, target: str = "eer") -> None:
        self.data, self.target = data, target

    def __call__(self, model: SiameseNetwork) -> dict[str, Any]:
        d = self.data
        out: dict[str, Any] = {}
        weights = getattr(model.encoder, "field_weights", None)
        if weights:  # field-wise records: how much each attribute counts
            out["field_weights"] = {k: round(v, 4) for k, v in weights.items()}
        emb = d.items.embed_all(model)
        s = score_pairs(model, emb, d.left, d.right)
        s = s if model.higher_is_closer else -s
        if d.score is not None:
            from scipy.stats import spearmanr  # scipy.stats takes half a second to import

            out.update(spearman=float(spearmanr(s, d.score).statistic),
                       primary_metric="spearman")
        elif self.target == "f1":
            out.update(f1=best_f1_threshold(s, d.same)[0], primary_metric="f1")
        else:
            out.update(auc=auc(s, d.same), primary_metric="auc")
        return out


def _store(run_dir: Path, cal: ThresholdCalibrator, source: str) -> ThresholdCalibrator:
    update_card(run_dir, {"threshold": {**cal.to_dict(), "source": source}})
    logger.info("calibrated threshold %.4g on %d validation pairs (%s %.4f)", cal.threshold_,
                cal.validation_["pairs"], cal.target, cal.validation_.get(cal.target, np.nan))
    return cal


def calibrate_classes(run_dir: str | Path, val: ClassData, seed: int = 0,
                      max_pairs: int = 200_000, skilled: bool = False,
                      group_names: list[str] | None = None, target: str = "eer"
                      ) -> ThresholdCalibrator | None:
    """Fit the saved model's threshold for ``target`` (``eer``, ``accuracy``, ``f1``,
    ``far=0.01``, ...) on held-out classes and store it in its card: on all pairs
    (negatives sampled down to ``max_pairs``), or with ``skilled`` on genuine-genuine vs
    genuine-forgery pairs inside each group (``group_names``)."""
    model, _, _ = load_model(run_dir)
    labels = val.labels.numpy()
    if skilled:
        if val.groups is None or group_names is None:
            raise ConfigError("eval.calibrate_on=skilled_pairs needs groups "
                              "(data.group_pattern or data.group_depth)")
        classes = [val.class_names[c] for c in labels]
        groups = [group_names[val.groups[c]] for c in labels]
        i, j, same = skilled_pairs(classes, groups)
    else:
        i, j, same = all_pairs(labels, max_pairs=max_pairs, seed=seed)
    if same.all() or not same.any():
        logger.warning("validation pairs are all of one kind; no threshold calibrated")
        return None
    emb = val.items.embed_all(model) if model.input_spec.tta == 0 else _tta_embed(model, val)
    cal = ThresholdCalibrator(target, higher_is_closer=model.higher_is_closer)
    cal.fit(score_pairs(model, emb, i, j), same)
    kind = "skilled pairs" if skilled else "all pairs"
    return _store(Path(run_dir), cal, f"validation groups, {kind}")


def _tta_embed(model: SiameseNetwork, val: ClassData) -> Any:
    """Embeddings with the test-time augmentation the model is evaluated with."""
    from ..embedding import embed_images

    return embed_images(model, val.items.values, tta=model.input_spec.tta)


def calibrate_pairs(run_dir: str | Path, val: PairData, target: str = "eer"
                    ) -> ThresholdCalibrator | None:
    """Fit the saved model's threshold on labelled validation pairs for ``target`` and
    store it in its card."""
    if val.same is None:
        return None
    model, _, _ = load_model(run_dir)
    s = score_pairs(model, val.items.embed_all(model), val.left, val.right)
    cal = ThresholdCalibrator(target, higher_is_closer=model.higher_is_closer).fit(s, val.same)
    return _store(Path(run_dir), cal, "validation pairs")
