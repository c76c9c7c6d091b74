"""Metrics as pure functions of scores and labels (numpy or torch in, floats out)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .topk import blocked_topk, score_block, self_topk

if TYPE_CHECKING:
    from .distances import Distance

ArrayLike = np.ndarray | torch.Tensor | Sequence[float]

__all__ = [
    "nearest_reference_predictions",
    "accuracy",
    "mean_and_ci95",
    "roc",
    "auc",
    "eer",
    "tar_at_far",
    "confusion_at",
    "rates_at",
    "best_accuracy_threshold",
    "best_f1_threshold",
    "bootstrap_ci",
    "retrieval_metrics",
    "open_set_identification",
]


def nearest_reference_predictions(scores: torch.Tensor, higher_is_closer: bool) -> torch.Tensor:
    """Index of the closest reference for each query: (Q, R) scores -> (Q,)."""
    return scores.argmax(1) if higher_is_closer else scores.argmin(1)


def accuracy(predictions: torch.Tensor | np.ndarray, targets: torch.Tensor | np.ndarray) -> float:
    """Fraction of predictions equal to their target."""
    p, t = np.asarray(predictions), np.asarray(targets)
    if p.shape != t.shape:
        raise ValueError(f"predictions {p.shape} and targets {t.shape} differ in shape")
    return float((p == t).mean()) if p.size else float("nan")


def mean_and_ci95(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and half-width of its 95% confidence interval (normal approximation, 1.96 s/sqrt(n)).

    Returns (nan, nan) for no values and a zero half-width for a single value.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    if v.size == 1:
        return float(v[0]), 0.0
    return float(v.mean()), float(1.96 * v.std(ddof=1) / math.sqrt(v.size))


# ---------------------------------------------------------------- verification
# Scores point the "similarity" way: higher means more likely the same; a pair is
# declared "same" when its score >= threshold. Use Distance.to_similarity for distances.


def _check_pairs(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores but {y.size} labels")
    if not y.any() or y.all():
        raise ValueError("verification metrics need both positive and negative pairs "
                         f"(got {int(y.sum())} positive, {int((~y).sum())} negative)")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values")
    return s, y


def roc(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve: false accept rates, true accept rates and their thresholds (descending).

    One point per distinct score, after a first point (0, 0) at threshold ``inf``: the same
    curve as scikit-learn's ``roc_curve(..., drop_intermediate=False)``, without its
    two-second import.
    """
    s, y = _check_pairs(scores, labels)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # the last index of each score
    tps = np.cumsum(y)[last].astype(np.float64)
    fps = (last + 1) - tps
    far = np.r_[0.0, fps / fps[-1]]
    tar = np.r_[0.0, tps / tps[-1]]
    return far, tar, np.r_[np.inf, s[last]]


def auc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve (probability a positive outscores a negative; ties 1/2)."""
    far, tar, _ = roc(scores, labels)
    return float(np.sum(np.diff(far) * (tar[1:] + tar[:-1])) / 2)


def eer(scores: ArrayLike, labels: ArrayLike) -> tuple[float, float]:
    """Equal error rate and the threshold where false accepts equal false rejects.

    Linear interpolation between the two ROC points that bracket FAR = FRR.
    """
    far, tar, thr = roc(scores, labels)
    frr = 1.0 - tar
    diff = far - frr  # increasing along the curve
    i = int(np.searchsorted(diff, 0.0))
    if i == 0:
        return float(far[0]), float(thr[1] if len(thr) > 1 else thr[0])
    if i >= len(diff):
        return float(frr[-1]), float(thr[-1])
    d0, d1 = diff[i - 1], diff[i]
    w = 0.0 if d1 == d0 else -d0 / (d1 - d0)
    rate = far[i - 1] + w * (far[i] - far[i - 1])
    # No score lies between two ROC points, so an interpolated threshold would act like
    # one of them: return the threshold of the point nearer to FAR = FRR.
    j = i if abs(d1) <= abs(d0) or not np.isfinite(thr[i - 1]) else i - 1
    return float(rate), float(thr[j])


def tar_at_far(
    scores: ArrayLike, labels: ArrayLike, targets: Sequence[float] = (1e-1, 1e-2, 1e-3)
) -> dict[float, float]:
    """True accept rate at each target false accept rate (best TAR with FAR <= target)."""
    far, tar, _ = roc(scores, labels)
    return {t: float(tar[far <= t].max()) if (far <= t).any() else 0.0 for t in targets}


def confusion_at(scores: ArrayLike, labels: ArrayLike, threshold: float) -> dict[str, int]:
    """Counts of true/false accepts and rejects when "same" means score >= threshold."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    same = s >= threshold
    return {"tp": int((same & y).sum()), "fp": int((same & ~y).sum()),
            "tn": int((~same & ~y).sum()), "fn": int((~same & y).sum())}


def rates_at(scores: ArrayLike, labels: ArrayLike, threshold: float) -> dict[str, float]:
    """Accuracy, precision, recall (TAR), F1, FAR and FRR at a fixed threshold."""
    c = confusion_at(scores, labels, threshold)
    tp, fp, tn, fn = c["tp"], c["fp"], c["tn"], c["fn"]
    n = tp + fp + tn + fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": (tp + tn) / n if n else float("nan"), "precision": precision,
            "recall": recall, "f1": f1, "far": fp / (fp + tn) if fp + tn else 0.0,
            "frr": fn / (fn + tp) if fn + tp else 0.0}


def _best_cut(s: np.ndarray, value: np.ndarray) -> tuple[int, float]:
    """Index (number of pairs accepted, scores sorted high to low) maximising ``value``
    among cuts between distinct scores, and a threshold halfway between them."""
    valid = np.ones(len(s) + 1, dtype=bool)
    valid[1:-1] = s[:-1] != s[1:]
    best = int(np.argmax(np.where(valid, value, -np.inf)))
    if best == 0:
        thr = s[0] + 1.0
    elif best == len(s):
        thr = s[-1]
    else:
        thr = (s[best - 1] + s[best]) / 2
    return best, float(thr)


def best_accuracy_threshold(scores: ArrayLike, labels: ArrayLike) -> tuple[float, float]:
    """Highest accuracy over all thresholds, and a threshold reaching it.

    Sorts the scores once; the threshold is placed halfway between two distinct scores.
    """
    s, y = _check_pairs(scores, labels)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    # accepting the first i pairs: correct = positives among them + negatives after them
    tp = np.concatenate([[0], np.cumsum(y)])
    neg_after = (~y).sum() - np.concatenate([[0], np.cumsum(~y)])
    correct = tp + neg_after  # (N + 1,)
    best, thr = _best_cut(s, correct.astype(np.float64))
    return float(correct[best] / len(s)), thr


def best_f1_threshold(scores: ArrayLike, labels: ArrayLike) -> tuple[float, float]:
    """Highest F1 of the "same" class over all thresholds, and a threshold reaching it
    (entity matching's protocol: the threshold chosen on validation pairs)."""
    s, y = _check_pairs(scores, labels)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    tp = np.concatenate([[0], np.cumsum(y)]).astype(np.float64)
    accepted = np.arange(len(s) + 1, dtype=np.float64)
    f1 = 2 * tp / np.maximum(accepted + y.sum(), 1)  # 2TP / (2TP + FP + FN)
    best, thr = _best_cut(s, f1)
    return float(f1[best]), thr


def bootstrap_ci(
    metric: Callable[[np.ndarray, np.ndarray], float], scores: ArrayLike, labels: ArrayLike,
    n: int = 1000, seed: int = 0, level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``metric(scores, labels)`` over pairs.

    Resamples positives and negatives separately, so every resample has both.
    """
    s, y = _check_pairs(scores, labels)
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    values = []
    for _ in range(n):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        values.append(metric(s[idx], y[idx]))
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


# ---------------------------------------------------------------- retrieval


def retrieval_metrics(
    queries: torch.Tensor,
    query_labels: torch.Tensor,
    references: torch.Tensor | None = None,
    reference_labels: torch.Tensor | None = None,
    distance: Distance | None = None,
    ks: Sequence[int] = (1, 5, 10),
    chunk: int = 512,
    similarity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    block: int = 4096,
    symmetric: bool = True,
) -> dict[str, float]:
    """Recall@K, MAP@R (Musgrave et al. 2020) and MRR of queries against references.

    Without ``references`` the queries are searched against themselves, each query
    excluding itself. Similarities are computed for ``chunk`` queries against ``block``
    references at a time (:func:`~siamkit.topk.blocked_topk`), so memory grows with
    chunk x block, never queries x references (a query whose first relevant reference
    lies beyond the top window is scored again, block by block, for its MRR rank). A set
    searched against itself under cosine similarity (the default) scores each pair once
    instead (:func:`~siamkit.topk.self_topk`, half the matrix products), screened against
    a bound found from each item's own and nearest labels; it keeps every item's top
    max(R, K) (N x that many values and indices) besides a tile of at most 2048 x 2048
    scores, so ``symmetric=False`` turns it off where memory must stay within chunk x
    block.
    ``similarity(q, refs)`` (higher = closer), when given, replaces ``distance`` (e.g. a
    learned head's scores).

    Equal scores are ordered arbitrarily (as by FAISS): with exact duplicates of different
    labels, recall@k and MAP@R depend on that order (MRR counts only strictly higher
    scores, so it does not).

    Returns:
        ``recall@k`` for each k (the fraction of queries with a same-label reference among
        the k closest; recall@1 is precision@1), ``map@r`` and ``mrr``.
    """
    from .distances import CosineSimilarity

    distance = distance or CosineSimilarity()
    self_search = references is None
    refs = queries if self_search else references
    ref_labels = query_labels if self_search else reference_labels
    for name, t in (("queries", queries), ("references", refs)):
        bad = torch.nonzero(~torch.isfinite(t.detach()).all(1)).flatten()
        if len(bad):
            raise ValueError(f"{name} hold NaN or infinite values in {len(bad)} rows "
                             f"(first: {bad[:5].tolist()})")
    cosine = similarity is None and isinstance(distance, CosineSimilarity)
    if cosine:
        # normalise once, not once per chunk: then cosine is a plain matrix product
        queries = torch.nn.functional.normalize(queries.float(), dim=1)
        refs = queries if self_search else torch.nn.functional.normalize(refs.float(), dim=1)
        similarity = lambda q, r: q @ r.T  # noqa: E731
    if ref_labels is None or len(ref_labels) != len(refs):
        raise ValueError("reference_labels must give one label per reference")
    if len(query_labels) and (int(query_labels.min()) < 0 or int(ref_labels.min()) < 0):
        raise ValueError("labels must be non-negative integers")
    # labels as 0 .. distinct - 1: counting them then costs their number, not the largest id
    ids, codes = torch.unique(torch.cat([query_labels.long(), ref_labels.long()]),
                              return_inverse=True)
    query_labels, ref_labels = codes[: len(query_labels)], codes[len(query_labels) :]
    if self_search:
        ref_labels = query_labels
    counts = torch.bincount(ref_labels, minlength=len(ids))
    r_all = counts[query_labels] - (1 if self_search else 0)  # relevant per query
    kmax = min(max(max(ks), int(r_all.max()) if len(r_all) else 1), len(refs))
    hits = {k: 0.0 for k in ks}
    ap_sum, rr_sum, n_valid = 0.0, 0.0, 0
    pos = torch.arange(1, kmax + 1, dtype=torch.float32)

    def scores(q: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        r = refs[start:stop]
        with torch.no_grad():
            return (similarity(q, r) if similarity is not None
                    else distance.to_similarity(distance.pairwise(q, r))).float()

    symmetric = (symmetric and self_search and cosine
                 and kmax <= min(_SYMMETRIC_MAX_K, len(refs) - 1))
    if symmetric:  # each pair scored once; every row's top kmax kept (N x kmax)
        with torch.no_grad():
            floor = _label_floor(queries, query_labels.long(), kmax)
            # square tiles of 2,048: products ran 10% faster than 1,024 x 4,096 here
            all_sim, all_top = self_topk(queries, kmax, block=min(block, 2048), rows=2048,
                                         floor=floor)
            # the bound allows for rounding; should a row's k-th best still not clear it,
            # that row is searched again the plain way (never seen; a guard, not a path)
            redo = torch.nonzero(all_sim[:, -1] <= floor).flatten()
            if len(redo):
                v, i = blocked_topk(queries[redo], len(refs), kmax, scores, block=block,
                                    exclude=redo)
                all_sim[redo], all_top[redo] = v, i.to(all_top.dtype)
    for s in range(0, len(queries), chunk):
        q = queries[s : s + chunk]
        q_labels = query_labels[s : s + chunk]
        rows = torch.arange(len(q))
        selves = rows + s if self_search else None
        r = r_all[s : s + chunk]
        valid = r > 0
        if symmetric:
            top_sim, top = all_sim[s : s + chunk], all_top[s : s + chunk].long()
        else:  # (C, kmax) best first, a block of references at a time: no (C, N) matrix
            top_sim, top = blocked_topk(q, len(refs), kmax, scores, block=block, exclude=selves)
        top_rel = ref_labels[top] == q_labels[:, None]  # (C, kmax): no (C, N) label mask
        if self_search:
            top_rel &= top != (rows + s)[:, None]
        top_rel_f = top_rel.float()
        for k in ks:
            hits[k] += float((top_rel_f[:, :k].sum(1) > 0)[valid].sum())
        # MAP@R: precision at each relevant position within the first R, divided by R
        within_r = pos[None, :] <= r[:, None]
        prec = torch.cumsum(top_rel_f, 1) / pos
        ap = (prec * top_rel_f * within_r).sum(1) / r.clamp_min(1)
        ap_sum += float(ap[valid].sum())
        # MRR: rank of the first relevant reference = 1 + references scoring above it.
        # Found in the top kmax for almost every query; the rest are scored again.
        first = torch.where(top_rel.any(1), top_rel.float().argmax(1), -1)
        best_rel = torch.where(first >= 0, top_sim.gather(1, first.clamp_min(0)[:, None])[:, 0],
                               torch.full_like(first, -torch.inf, dtype=torch.float32))
        rank = 1 + (top_sim > best_rel[:, None]).sum(1)
        far = torch.nonzero((first < 0) & valid).flatten()
        if len(far):
            rank[far] = _ranks_of_first_relevant(q[far], q_labels[far], ref_labels, scores,
                                                 block, far + s if self_search else None)
        rr_sum += float((1.0 / rank.float())[valid].sum())
        n_valid += int(valid.sum())
    if n_valid == 0:
        raise ValueError("no query has a reference of its own label")
    out = {f"recall@{k}": hits[k] / n_valid for k in ks}
    out.update({"map@r": ap_sum / n_valid, "mrr": rr_sum / n_valid})
    return out


_SYMMETRIC_MAX_K = 2048  # above it, N x k running top-k state outweighs halving products
_FLOOR_MAX_LABELS = 8192  # label means compared all against all up to this many labels


def _label_floor(x: torch.Tensor, labels: torch.Tensor, k: int, neighbours: int = 3,
                 margin: float = 1e-4, chunk: int = 256) -> torch.Tensor:
    """Per row of ``x``, a value strictly below its k-th best similarity ``x @ x.T`` to the
    other rows, for :func:`~siamkit.topk.self_topk` to screen against.

    Any k distinct other rows bound the k-th best from below; the closer they are to the
    true top k, the tighter the bound. Here they are up to k + 1 rows of the row's own label
    and of the ``neighbours`` labels whose mean vectors are closest to its label's (where a
    search is likely to find its best), and, for rows that still have fewer than k, the
    first rows of the set. ``margin`` (relative, plus D float32 ulps for D dimensions)
    covers rounding differences between these products and the search's.
    """
    n = len(x)
    labels = torch.unique(labels, return_inverse=True)[1]  # 0 .. labels present - 1
    counts = torch.bincount(labels)
    n_labels = len(counts)
    order = torch.argsort(labels, stable=True)
    sorted_labels = labels[order]
    slot = torch.arange(n) - (torch.cumsum(counts, 0) - counts)[sorted_labels]
    m = min(int(counts.max()), k + 1)
    keep = slot < m
    table = torch.full((n_labels, m), -1, dtype=torch.long)  # each label's first m rows
    table[sorted_labels[keep], slot[keep]] = order[keep]
    allowed = torch.arange(n_labels)[:, None]
    if neighbours and 1 < n_labels <= _FLOOR_MAX_LABELS:
        means = torch.zeros(n_labels, x.shape[1]).index_add_(0, labels, x.float())
        sim = torch.nn.functional.normalize(means, dim=1) @ torch.nn.functional.normalize(
            means, dim=1).T
        sim.fill_diagonal_(-torch.inf)
        near = sim.topk(min(neighbours, n_labels - 1), dim=1).indices
        allowed = torch.cat([allowed, near], 1)  # (labels, 1 + neighbours)
    spare = min(n, max(2 * k, 1024))  # the first rows, for rows still short of k
    floor = torch.full((n,), -torch.inf)
    # a dot product's rounding grows with the dimension (worst case about D float32 ulps)
    slack = margin + x.shape[1] * 2.0**-23
    for s in range(0, n, chunk):  # rows in label order: a chunk shares few labels
        idx = order[s : s + chunk]
        own, row_of = torch.unique(labels[idx], return_inverse=True)  # a few labels
        near = torch.zeros(len(own), n_labels, dtype=torch.bool)  # own label -> allowed
        near[torch.arange(len(own))[:, None], allowed[own]] = True
        pool = table[torch.unique(allowed[own])].flatten()
        pool = pool[pool >= 0]
        sims = x[idx] @ x[pool].T
        ok = near[row_of][:, labels[pool]] & (pool[None, :] != idx[:, None])
        sims.masked_fill_(~ok, -torch.inf)
        if bool((ok.sum(1) < k).any()):
            other = x[idx] @ x[:spare].T
            same = near[row_of][:, labels[:spare]]
            other[same | (torch.arange(spare)[None, :] == idx[:, None])] = -torch.inf
            sims = torch.cat([sims, other], 1)
        if sims.shape[1] < k:
            continue
        kth = sims.topk(k, dim=1, sorted=False).values.amin(1)
        floor[idx] = torch.where(torch.isfinite(kth), kth - slack * (1 + kth.abs()), -torch.inf)
    return floor


def _ranks_of_first_relevant(q: torch.Tensor, q_labels: torch.Tensor, ref_labels: torch.Tensor,
                             scores: Callable[[torch.Tensor, int, int], torch.Tensor],
                             block: int, selves: torch.Tensor | None) -> torch.Tensor:
    """1 + the number of references scoring above each query's best relevant one, over
    ``block`` references at a time (two passes: the best relevant score, then the count)."""
    n = len(ref_labels)
    best = torch.full((len(q),), -torch.inf)
    blocks = [(a, min(n, a + block)) for a in range(0, n, block)]
    for a, b in blocks:
        rel = ref_labels[None, a:b] == q_labels[:, None]
        sim = score_block(q, scores, a, b, selves)
        best = torch.maximum(best, sim.masked_fill(~rel, -torch.inf).max(1).values)
    rank = torch.ones(len(q), dtype=torch.long)
    for a, b in blocks:
        rank += (score_block(q, scores, a, b, selves) > best[:, None]).sum(1)
    return rank


# ---------------------------------------------------------------- open-set identification


def open_set_identification(
    known_scores: ArrayLike, known_correct: ArrayLike, unknown_scores: ArrayLike | None = None,
    fars: Sequence[float] = (0.01, 0.1),
) -> dict[str, Any]:
    """Rank-1 identification rate and detection-and-identification rate at false-alarm rates.

    Args:
        known_scores: best-match similarity (higher = closer) of each query whose class is
            enrolled.
        known_correct: whether that best match is the query's own class.
        unknown_scores: best-match similarity of each query whose class is not enrolled.
        fars: false-alarm rates (fraction of unknown queries accepted) to report DIR at.

    DIR@FAR: a threshold lets at most ``far`` of the unknown queries through (score strictly
    above it); DIR is the fraction of known queries both ranked right and above it.
    """
    ks = np.asarray(known_scores, dtype=np.float64)
    kc = np.asarray(known_correct, dtype=bool)
    if ks.shape != kc.shape or ks.ndim != 1 or len(ks) == 0:
        raise ValueError("known_scores and known_correct must be 1-D, equal length, non-empty")
    out: dict[str, Any] = {"rank1": float(kc.mean()), "known_queries": len(ks)}
    if unknown_scores is None or len(unknown_scores) == 0:
        return out
    us = np.sort(np.asarray(unknown_scores, dtype=np.float64))[::-1]
    out["unknown_queries"] = len(us)
    out["dir_at_far"], out["threshold_at_far"] = {}, {}
    for far in fars:
        allowed = int(np.floor(far * len(us) + 1e-9))
        t = us[allowed] if allowed < len(us) else -np.inf
        out["dir_at_far"][f"{far:g}"] = float((kc & (ks > t)).mean())
        out["threshold_at_far"][f"{far:g}"] = float(t)
    return out
