"""Evaluators: embed data once with a model, then compute metrics with :mod:`siamkit.metrics`.

Each evaluator is called with a model and returns a dict of metrics that includes
``primary_metric`` (the name of the metric to select checkpoints by).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .calibrate import ThresholdCalibrator
from .data.download import DatasetError
from .data.images import ImageDataset
from .data.omniglot import OneShotRun
from .embedding import embed_images, embed_texts
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
from .progress import Progress, start
from .samplers import EpisodeSampler
from .siamese import SiameseNetwork

__all__ = [
    "class_scores",
    "evaluate_runs",
    "evaluate_episodes",
    "episode_accuracy",
    "compare_episodes",
    "seen_in_training",
    "OneShotRunsEvaluator",
    "EpisodeEvaluator",
    "evaluate_retrieval",
    "RetrievalEvaluator",
    "evaluate_identification",
    "evaluate_similarity",
    "score_pairs",
    "verification_report",
]

logger = logging.getLogger(__name__)


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


def evaluate_runs(model: SiameseNetwork, runs: list[OneShotRun], tta: int = 0,
                  progress: Progress | None = None) -> dict[str, Any]:
    """Lake's one-shot protocol: each query takes the class of its closest reference.

    Returns ``error`` and ``accuracy`` over all queries, and ``per_run`` breakdown.
    ``progress`` (:mod:`siamkit.progress`) counts the runs.
    """
    per_run, correct, total = [], 0, 0
    tick = start(progress, "runs", len(runs))
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
        tick(1)
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
    progress: Progress | None = None,
) -> dict[str, Any]:
    """N-way K-shot accuracy over random episodes, with a 95% confidence interval.

    The dataset is embedded once; episodes then index the embeddings.
    ``within_group`` draws every episode's classes from one group (e.g. one alphabet);
    ``use_drawers`` (when the dataset knows its drawers) takes support and queries from
    different drawers. ``progress`` (:mod:`siamkit.progress`) counts the items embedded.

    Raises:
        DatasetError: the data cannot give these episodes (too few classes, groups or
            drawers for ``way``, ``shot`` and ``queries``).
    """
    emb = _embed_set(model, dataset, tta, progress, "embedding")
    return episode_accuracy(model, emb, dataset.labels.numpy(), way, shot, queries, episodes,
                            groups=dataset.groups if within_group else None,
                            drawers=dataset.drawers if use_drawers else None,
                            class_names=dataset.class_names, seed=seed)


def episode_accuracy(
    model: SiameseNetwork, emb: torch.Tensor, labels: np.ndarray, way: int, shot: int = 1,
    queries: int = 1, episodes: int = 600, groups: np.ndarray | None = None,
    drawers: np.ndarray | None = None, class_names: Sequence[str] | None = None, seed: int = 0,
) -> dict[str, Any]:
    """N-way K-shot accuracy (with a 95% interval) of random episodes over items already
    embedded (``emb`` (N, D), class ``labels`` (N,)); ``groups`` (per class) keeps each
    episode inside one group, ``drawers`` (per item) splits support and queries.
    Episodes the data cannot give (too few classes...) are a :class:`DatasetError`."""
    accs = _episode_accuracies(model, emb, labels, way, shot, queries, episodes, groups,
                               drawers, class_names, seed)
    mean, ci = mean_and_ci95(accs)
    return {"accuracy": mean, "ci95": ci, "episodes": len(accs), "way": way, "shot": shot,
            "queries": queries, "primary_metric": "accuracy"}


def _episode_accuracies(
    model: SiameseNetwork, emb: torch.Tensor, labels: np.ndarray, way: int, shot: int,
    queries: int, episodes: int, groups: np.ndarray | None, drawers: np.ndarray | None,
    class_names: Sequence[str] | None, seed: int,
) -> list[float]:
    """Each episode's accuracy, in the order ``seed`` draws them."""
    try:
        sampler = EpisodeSampler(labels, way, shot, queries, episodes, groups=groups,
                                 drawers=drawers, class_names=class_names, seed=seed)
    except ValueError as exc:  # the sampler's checks of the data against the episodes
        raise DatasetError(str(exc)) from None
    accs = []
    with torch.no_grad():
        for ep in sampler:
            scores = class_scores(model, emb[ep.query], emb[ep.support],
                                  torch.from_numpy(ep.support_labels), way)
            pred = nearest_reference_predictions(scores, model.higher_is_closer)
            accs.append(accuracy(pred.numpy(), ep.query_labels))
    return accs


def compare_episodes(
    model: SiameseNetwork,
    baseline: SiameseNetwork,
    dataset: ImageDataset,
    baseline_dataset: ImageDataset | None = None,
    way: int = 5,
    shot: int = 1,
    queries: int = 1,
    episodes: int = 600,
    within_group: bool = False,
    use_drawers: bool = True,
    seed: int = 0,
    tta: int = 0,
    baseline_tta: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Two models on the same random episodes: each one's accuracy, and the paired
    difference (``model`` minus ``baseline``) with its 95% interval.

    Pairing takes out how hard each episode is, which both models share, so the
    difference's interval is far narrower than the two accuracies' intervals added: the
    test to decide whether one model is better. ``baseline_dataset`` is the same items as
    the baseline reads them (another input size, say); the episodes must see the same
    classes, groups and drawers in both. ``baseline_tta`` defaults to ``tta``.

    Raises:
        DatasetError: the episodes the data cannot give, or two datasets that differ in
            their items' classes, groups or drawers.
    """
    other = dataset if baseline_dataset is None else baseline_dataset
    same = (torch.equal(dataset.labels, other.labels)
            and list(dataset.class_names) == list(other.class_names)
            and _same(dataset.groups, other.groups) and _same(dataset.drawers, other.drawers))
    if not same:
        raise DatasetError("the two datasets differ in their items' classes, groups or "
                           "drawers: the models cannot be scored on the same episodes")
    groups = dataset.groups if within_group else None
    drawers = dataset.drawers if use_drawers else None
    labels = dataset.labels.numpy()
    accs = []
    for m, data, t, stage in ((model, dataset, tta, "embedding"),
                              (baseline, other, tta if baseline_tta is None else baseline_tta,
                               "embedding (baseline)")):
        emb = _embed_set(m, data, t, progress, stage)
        accs.append(np.asarray(_episode_accuracies(m, emb, labels, way, shot, queries,
                                                   episodes, groups, drawers,
                                                   dataset.class_names, seed)))
    (acc, ci), (base, base_ci) = mean_and_ci95(accs[0]), mean_and_ci95(accs[1])
    diff, diff_ci = mean_and_ci95(accs[0] - accs[1])
    return {"accuracy": acc, "ci95": ci, "baseline_accuracy": base, "baseline_ci95": base_ci,
            "difference": diff, "difference_ci95": diff_ci, "episodes": len(accs[0]),
            "way": way, "shot": shot, "queries": queries, "primary_metric": "difference"}


def seen_in_training(card: dict[str, Any], class_names: Sequence[str]) -> list[str] | None:
    """The classes of ``class_names`` that the run of ``card`` trained on (sorted), or None
    when the card does not record its training classes (a run before 2026-12-07, or one
    trained outside ``siamkit train``). Episodes over such classes do not measure what a
    model does on unseen ones."""
    trained = (card.get("data") or {}).get("train_classes")
    if trained is None:
        return None
    return sorted(set(trained) & set(class_names))


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return bool(np.array_equal(np.asarray(a), np.asarray(b)))


def evaluate_retrieval(
    model: SiameseNetwork, dataset: ImageDataset, ks: Sequence[int] = (1, 5, 10), tta: int = 0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Leave-one-out retrieval on a labelled set: every item queries all the others.

    Returns Recall@K, MAP@R and MRR (:func:`metrics.retrieval_metrics`) and the counts.
    ``progress`` (:mod:`siamkit.progress`) counts the items embedded.
    """
    emb = _embed_set(model, dataset, tta, progress, "embedding")
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
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Closed- and open-set identification against a gallery enrolled from ``references``.

    Queries of enrolled classes give the rank-1 rate; queries of ``unknown`` (classes not
    enrolled) give the false alarms for DIR@FAR. With a calibrated ``threshold`` (model
    convention) also the decisions at it: known queries accepted as their own class, and
    unknown queries wrongly accepted. ``progress`` (:mod:`siamkit.progress`) counts the
    items embedded: references, queries, unknowns.
    """
    from .gallery import Gallery, metric_of

    emb_r = _embed_set(model, references, tta, progress, "references")
    gallery = Gallery(emb_r.shape[1], metric=metric_of(model), class_score=class_score)
    gallery.enroll_many([references.class_names[c] for c in references.labels.tolist()], emb_r)
    sign = 1.0 if model.higher_is_closer else -1.0

    def best(data: ImageDataset, stage: str) -> tuple[list[str], np.ndarray]:
        found = gallery.identify(_embed_set(model, data, tta, progress, stage), k=1)
        return [m[0].label for m in found], np.array([m[0].score for m in found])

    enrolled = set(gallery.labels())
    names = [queries.class_names[c] for c in queries.labels.tolist()]
    if not any(n in enrolled for n in names):
        raise DatasetError("no query belongs to an enrolled class")
    pred, scores = best(queries, "queries")
    known = np.array([n in enrolled for n in names])
    correct = np.array([p == n for p, n in zip(pred, names, strict=True)])
    unknown_scores = list(scores[~known])  # query classes missing from the gallery
    if unknown is not None:
        unknown_scores += list(best(unknown, "unknown")[1])
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


def evaluate_similarity(model: SiameseNetwork, pairs: Any, batch_size: int = 64,
                        progress: Progress | None = None) -> dict[str, Any]:
    """Spearman and Pearson correlation (x100) of the model's similarity with graded
    scores (``pairs.score``), as reported for STS-B. ``progress`` (:mod:`siamkit.progress`)
    counts the texts embedded.

    Raises:
        DatasetError: the model is not a text model.
        ValueError: the pairs have no graded scores.
    """
    from scipy.stats import pearsonr, spearmanr

    if model.input_spec is not None and model.input_spec.kind != "text":
        raise DatasetError("eval similarity scores text pairs: this model is not a text model")
    if pairs.score is None:
        raise ValueError("similarity evaluation needs graded scores (a score column)")
    emb = embed_texts(model, pairs.texts, batch_size,
                      on_batch=start(progress, "embedding", len(pairs.texts)))
    sims = score_pairs(model, emb, pairs.left, pairs.right)
    sims = sims if model.higher_is_closer else -sims
    return {"spearman": 100 * float(spearmanr(sims, pairs.score).statistic),
            "pearson": 100 * float(pearsonr(sims, pairs.score).statistic),
            "pairs": len(pairs), "primary_metric": "spearman"}


def _embed_set(model: SiameseNetwork, data: ImageDataset, tta: int,
               progress: Progress | None, stage: str) -> torch.Tensor:
    """Embeddings (N, D) of a labelled set, counted on ``progress`` as ``stage``."""
    return embed_images(model, data.images, tta=tta,
                        on_batch=start(progress, stage, len(data)))


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
