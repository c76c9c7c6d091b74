"""Evaluators: embed data once with a model, then compute metrics with :mod:`siamkit.metrics`.

Each evaluator is called with a model and returns a dict of metrics that includes
``primary_metric`` (the name of the metric to select checkpoints by).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .augment import RandomAffine
from .calibrate import ThresholdCalibrator
from .data.images import ImageDataset
from .data.omniglot import OneShotRun
from .metrics import (
    accuracy,
    auc,
    best_accuracy_threshold,
    best_f1_threshold,
    bootstrap_ci,
    eer,
    mean_and_ci95,
    nearest_reference_predictions,
    open_set_identification,
    rates_at,
    retrieval_metrics,
    tar_at_far,
)
from .samplers import EpisodeSampler
from .siamese import SiameseNetwork

__all__ = [
    "to_float",
    "embed_images",
    "class_scores",
    "evaluate_runs",
    "evaluate_episodes",
    "OneShotRunsEvaluator",
    "EpisodeEvaluator",
    "evaluate_retrieval",
    "RetrievalEvaluator",
    "evaluate_identification",
    "embed_texts",
    "embed_pair_items",
    "embed_records",
    "evaluate_similarity",
    "score_pairs",
    "verification_report",
]

logger = logging.getLogger(__name__)


def too_large(emb: torch.Tensor) -> torch.Tensor:
    """Rows of ``emb`` (N, D) whose squared distances could overflow: |a - b|^2 <= 4
    max(|a|^2, |b|^2), so where 4 |a|^2 is finite every squared distance is. -> (N,) bool."""
    return ~torch.isfinite(4 * emb.detach().float().pow(2).sum(1))


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (B, C, H, W) in 0..255 -> float32 in [0, 1]; float inputs (tabular
    feature vectors) are returned as float32 unchanged."""
    if images.is_floating_point():
        return images.float()
    return images.float().div_(255.0)


@torch.no_grad()
def embed_images(
    model: SiameseNetwork,
    images: torch.Tensor,
    batch_size: int = 512,
    tta: int = 0,
    seed: int = 0,
    channels_last: bool = False,
) -> torch.Tensor:
    """Embed uint8 images (N, C, H, W) -> (N, D), in eval mode and in batches.

    With ``tta`` > 0 each embedding is the mean over the image and ``tta`` mildly
    distorted copies (fixed seed, so results are repeatable).
    """
    was_training = model.training
    model.eval()
    if images.dim() == 2:  # tabular feature vectors: no image distortions
        tta, channels_last = 0, False
    views = [None] + [RandomAffine(rotation=5, shear=0.1, scale=(0.9, 1.1), translate=1.0,
                                   p=1.0, generator=torch.Generator().manual_seed(seed + v))
                      for v in range(tta)]
    out = []
    for s in range(0, len(images), batch_size):
        x = to_float(images[s : s + batch_size])
        acc = None
        for view in views:
            xv = x if view is None else view(x)
            if channels_last:
                xv = xv.contiguous(memory_format=torch.channels_last)
            e = model.embed(xv).float()
            acc = e if acc is None else acc + e
        out.append(acc / len(views))
    model.train(was_training)
    if not out:
        return torch.zeros(0, 0)
    emb = torch.cat(out)
    if images.dim() == 2:  # feature vectors can be large enough to overflow the encoder
        bad = too_large(emb).nonzero().flatten()
        if len(bad):
            raise ValueError(f"{len(bad)} of {len(emb)} items embed to values too large "
                             f"(item {int(bad[0])} first): their features are too large for "
                             f"the model (data.numeric_scaling: none keeps values as they are)")
    return emb


def class_scores(
    model: SiameseNetwork, queries: torch.Tensor, support: torch.Tensor,
    support_labels: torch.Tensor, n_classes: int,
) -> torch.Tensor:
    """Score each query embedding against each class of a support set: -> (Q, n_classes).

    With a fixed distance a class is its prototype (mean support embedding); with a
    learned head, a class's score is the mean head score over its support examples.
    """
    if model.head is None:
        protos = torch.zeros(n_classes, support.shape[1])
        protos.index_add_(0, support_labels, support)
        protos /= torch.bincount(support_labels, minlength=n_classes).clamp_min(1)[:, None]
        return model.pairwise_scores(queries, protos)
    scores = model.pairwise_scores(queries, support)  # (Q, S)
    sums = torch.zeros(len(queries), n_classes).index_add_(1, support_labels, scores)
    return sums / torch.bincount(support_labels, minlength=n_classes).clamp_min(1)


def evaluate_runs(model: SiameseNetwork, runs: list[OneShotRun], tta: int = 0) -> dict[str, Any]:
    """Lake's one-shot protocol: each query takes the class of its closest reference.

    Returns ``error`` and ``accuracy`` over all queries, and ``per_run`` breakdown.
    """
    per_run, correct, total = [], 0, 0
    for run in runs:
        refs = embed_images(model, run.references, tta=tta)
        qs = embed_images(model, run.queries, tta=tta)
        with torch.no_grad():
            pred = nearest_reference_predictions(model.pairwise_scores(qs, refs),
                                                 model.higher_is_closer)
        hits = int((pred == run.answers).sum())
        per_run.append({"run": run.name, "correct": hits, "total": len(run.answers),
                        "error": 1.0 - hits / len(run.answers)})
        correct, total = correct + hits, total + len(run.answers)
    acc = correct / total if total else float("nan")
    return {"error": 1.0 - acc, "accuracy": acc, "correct": correct, "total": total,
            "per_run": per_run, "primary_metric": "accuracy"}


def evaluate_episodes(
    model: SiameseNetwork,
    dataset: ImageDataset,
    way: int = 5,
    shot: int = 1,
    queries: int = 1,
    episodes: int = 600,
    within_group: bool = False,
    use_drawers: bool = True,
    seed: int = 0,
    tta: int = 0,
) -> dict[str, Any]:
    """N-way K-shot accuracy over random episodes, with a 95% confidence interval.

    The dataset is embedded once; episodes then index the embeddings.
    ``within_group`` draws every episode's classes from one group (e.g. one alphabet);
    ``use_drawers`` (when the dataset knows its drawers) takes support and queries from
    different drawers.
    """
    sampler = EpisodeSampler(
        dataset.labels.numpy(), way, shot, queries, episodes,
        groups=dataset.groups if within_group else None,
        drawers=dataset.drawers if use_drawers else None,
        class_names=dataset.class_names, seed=seed,
    )
    emb = embed_images(model, dataset.images, tta=tta)
    accs = []
    with torch.no_grad():
        for ep in sampler:
            scores = class_scores(model, emb[ep.query], emb[ep.support],
                                  torch.from_numpy(ep.support_labels), way)
            pred = nearest_reference_predictions(scores, model.higher_is_closer)
            accs.append(accuracy(pred.numpy(), ep.query_labels))
    mean, ci = mean_and_ci95(accs)
    return {"accuracy": mean, "ci95": ci, "episodes": len(accs), "way": way, "shot": shot,
            "queries": queries, "primary_metric": "accuracy"}


def evaluate_retrieval(
    model: SiameseNetwork, dataset: ImageDataset, ks: Sequence[int] = (1, 5, 10), tta: int = 0
) -> dict[str, Any]:
    """Leave-one-out retrieval on a labelled set: every item queries all the others.

    Returns Recall@K, MAP@R and MRR (:func:`metrics.retrieval_metrics`) and the counts.
    """
    emb = embed_images(model, dataset.images, tta=tta)
    sign = 1.0 if model.higher_is_closer else -1.0
    out: dict[str, Any] = retrieval_metrics(
        emb, dataset.labels, ks=ks,
        similarity=lambda q, r: sign * model.pairwise_scores(q, r))
    out.update({"queries": len(emb), "classes": dataset.num_classes,
                "primary_metric": "map@r"})
    return out


def evaluate_identification(
    model: SiameseNetwork, references: ImageDataset, queries: ImageDataset,
    unknown: ImageDataset | None = None, threshold: float | None = None,
    fars: Sequence[float] = (0.01, 0.1), class_score: str = "nearest", tta: int = 0,
) -> dict[str, Any]:
    """Closed- and open-set identification against a gallery enrolled from ``references``.

    Queries of enrolled classes give the rank-1 rate; queries of ``unknown`` (classes not
    enrolled) give the false alarms for DIR@FAR. With a calibrated ``threshold`` (model
    convention) also the decisions at it: known queries accepted as their own class, and
    unknown queries wrongly accepted.
    """
    from .gallery import Gallery, metric_of

    emb_r = embed_images(model, references.images, tta=tta)
    gallery = Gallery(emb_r.shape[1], metric=metric_of(model), class_score=class_score)
    gallery.enroll_many([references.class_names[c] for c in references.labels.tolist()], emb_r)
    sign = 1.0 if model.higher_is_closer else -1.0

    def best(data: ImageDataset) -> tuple[list[str], np.ndarray]:
        found = gallery.identify(embed_images(model, data.images, tta=tta), k=1)
        return [m[0].label for m in found], np.array([m[0].score for m in found])

    enrolled = set(gallery.labels())
    names = [queries.class_names[c] for c in queries.labels.tolist()]
    if not any(n in enrolled for n in names):
        raise ValueError("no query belongs to an enrolled class")
    pred, scores = best(queries)
    known = np.array([n in enrolled for n in names])
    correct = np.array([p == n for p, n in zip(pred, names, strict=True)])
    unknown_scores = list(scores[~known])  # query classes missing from the gallery
    if unknown is not None:
        unknown_scores += list(best(unknown)[1])
    out = open_set_identification(sign * scores[known], correct[known],
                                  sign * np.array(unknown_scores), fars)
    for key in ("threshold_at_far",):
        if key in out:
            out[key] = {f: sign * t for f, t in out[key].items()}
    out["classes"] = len(enrolled)
    out["references"] = len(gallery)
    if threshold is not None:
        ok = scores >= threshold if model.higher_is_closer else scores <= threshold
        out["threshold"] = threshold
        out["accepted_correct_at_threshold"] = float((correct[known] & ok[known]).mean())
        if unknown_scores:
            u = np.array(unknown_scores)
            acc = u >= threshold if model.higher_is_closer else u <= threshold
            out["false_alarm_rate_at_threshold"] = float(acc.mean())
    out["primary_metric"] = "rank1"
    return out


@torch.no_grad()
def embed_texts(model: SiameseNetwork, texts: Sequence[str], batch_size: int = 64,
                on_batch: Callable[[int], None] | None = None) -> torch.Tensor:
    """Embed texts with a text twin -> (N, D), in eval mode and in
    batches (longest first, so padding stays short); ``on_batch(n)`` after each batch."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out = torch.empty(0)
    parts = []
    for s in range(0, len(order), batch_size):
        parts.append(model.embed([texts[i] for i in order[s : s + batch_size]]).float())
        if on_batch is not None:
            on_batch(len(parts[-1]))
    if parts:
        emb = torch.cat(parts)
        out = torch.empty_like(emb)
        out[torch.tensor(order)] = emb
    model.train(was_training)
    return out


def embed_pair_items(model: SiameseNetwork, pairs: Any, featurizer: Any = None
                     ) -> torch.Tensor:
    """Embeddings of a pair set's items (N, D): its texts through a text twin, or, with a
    fitted :class:`~siamkit.data.records.RecordFeaturizer`, its records' feature vectors
    through an MLP twin."""
    if featurizer is None:
        return embed_texts(model, pairs.texts)
    if pairs.records is None:
        raise ValueError("this model matches records by their attributes: give record pairs "
                         "(a Ditto-format file, --format ditto)")
    return embed_records(model, pairs.records, featurizer)


def embed_records(model: SiameseNetwork, records: list[dict[str, str]], featurizer: Any
                  ) -> torch.Tensor:
    """Embed records (attribute -> value) through an MLP twin: their feature vectors from
    a fitted :class:`~siamkit.data.records.RecordFeaturizer` -> (N, D)."""
    return embed_images(model, torch.from_numpy(featurizer.transform(records)))


def evaluate_similarity(model: SiameseNetwork, pairs: Any, batch_size: int = 64
                        ) -> dict[str, Any]:
    """Spearman and Pearson correlation (x100) of the model's similarity with graded
    scores (``pairs.score``), as reported for STS-B."""
    from scipy.stats import pearsonr, spearmanr

    if pairs.score is None:
        raise ValueError("similarity evaluation needs graded scores (a score column)")
    emb = embed_texts(model, pairs.texts, batch_size)
    sims = score_pairs(model, emb, pairs.left, pairs.right)
    sims = sims if model.higher_is_closer else -sims
    return {"spearman": 100 * float(spearmanr(sims, pairs.score).statistic),
            "pearson": 100 * float(pearsonr(sims, pairs.score).statistic),
            "pairs": len(pairs), "primary_metric": "spearman"}


class RetrievalEvaluator:
    """Thin wrapper: leave-one-out retrieval on one dataset."""

    def __init__(self, dataset: ImageDataset, **kwargs: Any) -> None:
        self.dataset, self.kwargs = dataset, kwargs

    def __call__(self, model: SiameseNetwork) -> dict[str, Any]:
        return evaluate_retrieval(model, self.dataset, **self.kwargs)


class OneShotRunsEvaluator:
    """Thin wrapper: Lake's runs, loaded once, evaluated for any model."""

    def __init__(self, runs: list[OneShotRun], tta: int = 0) -> None:
        self.runs, self.tta = runs, tta

    def __call__(self, model: SiameseNetwork) -> dict[str, Any]:
        return evaluate_runs(model, self.runs, self.tta)


class EpisodeEvaluator:
    """Thin wrapper: fixed episodes (same seed every call) on one dataset."""

    def __init__(self, dataset: ImageDataset, **kwargs: Any) -> None:
        self.dataset, self.kwargs = dataset, kwargs

    def __call__(self, model: SiameseNetwork) -> dict[str, Any]:
        return evaluate_episodes(model, self.dataset, **self.kwargs)


@torch.no_grad()
def score_pairs(
    model: SiameseNetwork, embeddings: torch.Tensor, left: Any, right: Any, chunk: int = 65536
) -> np.ndarray:
    """Model scores of pairs of already-embedded items (indices into ``embeddings``)."""
    left, right = torch.as_tensor(left), torch.as_tensor(right)
    out = [model.score_embeddings(embeddings[left[s : s + chunk]], embeddings[right[s : s + chunk]])
           for s in range(0, len(left), chunk)]
    return torch.cat(out).numpy() if out else np.zeros(0)


def verification_report(
    scores: np.ndarray, same: np.ndarray, higher_is_closer: bool,
    calibrator: ThresholdCalibrator | None = None, ci: int = 0, seed: int = 0,
) -> dict[str, Any]:
    """Verification metrics of scored pairs.

    Threshold-free figures (``auc``, ``eer``, ``tar_at_far``), the figures at the frozen
    calibrated threshold when a calibrator is given (``accuracy``, ``f1``, ``precision``,
    ``recall``, ``far``, ``frr``, ``threshold``), and the best this data itself would
    allow, labelled ``test_optimal`` (for reference only: its threshold peeks): the best F1
    when the calibrator targets F1, else the best accuracy (``test_optimal.target``).
    With ``ci`` > 0, ``ci95`` holds percentile-bootstrap 95% intervals (``ci`` resamples
    of the pairs) for the AUC, the EER and, at the frozen threshold, accuracy and F1.
    """
    same = np.asarray(same).astype(bool)
    sim = scores if higher_is_closer else -scores

    def native(t: float) -> float:
        return t if higher_is_closer else -t

    rate, t_eer = eer(sim, same)
    opt_target = "f1" if calibrator is not None and calibrator.target == "f1" else "accuracy"
    _, t_opt = (best_f1_threshold if opt_target == "f1" else best_accuracy_threshold)(sim, same)
    out: dict[str, Any] = {
        "auc": auc(sim, same), "eer": rate, "eer_threshold": native(t_eer),
        "tar_at_far": {f"{t:g}": v for t, v in tar_at_far(sim, same).items()},
        "positives": int(same.sum()), "negatives": int((~same).sum()),
        "higher_is_closer": higher_is_closer,
        "test_optimal": {**rates_at(sim, same, t_opt), "threshold": native(t_opt),
                         "target": opt_target},
        # figures at a calibrated threshold; None until `siamkit calibrate` stores one
        "accuracy": None, "precision": None, "recall": None, "f1": None, "far": None,
        "frr": None, "threshold": None, "threshold_target": None,
    }
    if calibrator is not None:
        out.update(calibrator.evaluate(scores, same))
        out["threshold"] = calibrator.threshold_
        out["threshold_target"] = (calibrator.target if calibrator.value is None
                                   else f"{calibrator.target}={calibrator.value:g}")
    if ci > 0:
        metrics = {"auc": auc, "eer": lambda x, y: eer(x, y)[0]}
        if calibrator is not None:
            t = calibrator.threshold_ if higher_is_closer else -calibrator.threshold_
            metrics["accuracy"] = lambda x, y: rates_at(x, y, t)["accuracy"]
            metrics["f1"] = lambda x, y: rates_at(x, y, t)["f1"]
        out["ci95"] = {name: list(bootstrap_ci(fn, sim, same, n=ci, seed=seed))
                       for name, fn in metrics.items()}
        out["ci_resamples"] = ci
    return out
