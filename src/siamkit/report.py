"""A self-contained HTML verification report: metrics, ROC/DET, score histograms, the hardest
errors as image pairs, and a 2-D map of the embeddings.

Figures are drawn with matplotlib (Agg backend) and embedded as base64 PNG, so the report is
one file that opens anywhere. The metrics are also embedded as JSON
(``<script id="metrics-json">``) so tools and tests can read the exact numbers shown.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .calibrate import ThresholdCalibrator
from .checkpoint import atomic_write_text
from .data.download import DatasetError
from .data.pairs import PairList
from .data.splits import positive_pair_groups
from .evaluate import verification_report
from .metrics import roc
from .pairsets import PairScores

__all__ = ["build_report", "pair_report", "write_report", "SECTIONS"]

SECTIONS = ("metrics", "roc", "det", "histogram", "errors", "embedding-map")


def _figure_to_data_uri(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _array_to_data_uri(image: np.ndarray) -> str:
    from PIL import Image

    a = np.asarray(image)
    if a.ndim == 3 and a.shape[0] in (1, 3):
        a = a[0] if a.shape[0] == 1 else np.transpose(a, (1, 2, 0))
    buf = io.BytesIO()
    Image.fromarray(a.astype(np.uint8)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _plots(sim: np.ndarray, same: np.ndarray, threshold_sim: float | None,
           embeddings: np.ndarray | None, labels: Sequence[str] | None,
           higher_is_closer: bool) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    far, tar, _ = roc(sim, same)
    out = {}
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot(far, tar, lw=2)
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.set(xlabel="false accept rate", ylabel="true accept rate", title="ROC")
    out["roc"] = _figure_to_data_uri(fig)

    from scipy.stats import norm

    fig, ax = plt.subplots(figsize=(4.5, 4))
    frr, eps = 1 - tar, 1e-4  # normal-deviate (probit) axes, as DET curves are drawn
    ax.plot(norm.ppf(np.clip(far, eps, 1 - eps)), norm.ppf(np.clip(frr, eps, 1 - eps)), lw=2)
    ticks = np.array([0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95])
    ax.set_xticks(norm.ppf(ticks), [f"{100 * t:g}%" for t in ticks], fontsize=7)
    ax.set_yticks(norm.ppf(ticks), [f"{100 * t:g}%" for t in ticks], fontsize=7)
    lim = norm.ppf([eps, 1 - eps])
    ax.set(xlim=lim, ylim=lim, xlabel="false accept rate", ylabel="false reject rate",
           title="DET (normal deviate scale)")
    ax.grid(alpha=0.3)
    out["det"] = _figure_to_data_uri(fig)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    sign = 1.0 if higher_is_closer else -1.0  # show the model's own scores
    native = sign * sim
    bins = np.linspace(native.min(), native.max(), 50)
    ax.hist(native[same], bins=bins, alpha=0.6, label=f"same ({same.sum()})", density=True)
    ax.hist(native[~same], bins=bins, alpha=0.6, label=f"different ({(~same).sum()})",
            density=True)
    if threshold_sim is not None:
        ax.axvline(sign * threshold_sim, c="k", ls="--", label="threshold")
    ax.set(xlabel="similarity (higher = more alike)" if higher_is_closer
           else "distance (lower = more alike)", ylabel="density",
           title="scores of same vs different pairs")
    ax.legend()
    out["histogram"] = _figure_to_data_uri(fig)

    if embeddings is not None and len(embeddings) >= 3:
        x = embeddings - embeddings.mean(0)
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        xy = x @ vt[:2].T  # principal components
        fig, ax = plt.subplots(figsize=(5.5, 5))
        names = sorted(set(labels)) if labels is not None else ["all"]
        codes = np.array([names.index(v) for v in labels]) if labels is not None else None
        ax.scatter(xy[:, 0], xy[:, 1], c=codes, cmap="tab20", s=12)
        ax.set(title=f"test embeddings, first two principal components "
                     f"({len(names)} classes)", xticks=[], yticks=[])
        out["embedding-map"] = _figure_to_data_uri(fig)
    return out


def build_report(
    metrics: dict[str, Any],
    scores: np.ndarray,
    same: np.ndarray,
    higher_is_closer: bool,
    pair_items: Sequence[tuple[Any, Any]],
    embeddings: np.ndarray | None = None,
    labels: Sequence[str] | None = None,
    title: str = "siamkit verification report",
    n_errors: int = 6,
) -> str:
    """Build the HTML text of a verification report.

    Args:
        metrics: the dict of :func:`siamkit.evaluate.verification_report` (shown and embedded).
        scores: the model's score of each pair; ``same`` its truth.
        higher_is_closer: direction of ``scores``.
        pair_items: for each pair, the two items shown for errors: image arrays or texts.
        embeddings: (N, D) test embeddings for the 2-D map, with ``labels`` their classes.
    """
    same = np.asarray(same).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    sim = scores if higher_is_closer else -scores
    thr = metrics.get("threshold")
    thr_sim = None if thr is None else (thr if higher_is_closer else -thr)
    plots = _plots(sim, same, thr_sim, embeddings, labels, higher_is_closer)

    rows = []
    for key in ("auc", "eer", "accuracy", "precision", "recall", "f1", "far", "frr"):
        if metrics.get(key) is not None:
            rows.append((key, f"{metrics[key]:.4f}"))
    for k, v in metrics.get("tar_at_far", {}).items():
        rows.append((f"TAR at FAR={k}", f"{v:.4f}"))
    rows.append(("pairs (same / different)", f"{metrics['positives']} / {metrics['negatives']}"))
    if thr is not None:
        rows.append(("threshold", f"{thr:.6g} — chosen on validation pairs for target "
                                  f"'{metrics.get('threshold_target', '?')}', frozen here"))
    else:
        rows.append(("threshold", "none calibrated: threshold-free figures only"))
    opt = metrics.get("test_optimal", {})
    if opt:
        what = opt.get("target", "accuracy")
        rows.append((f"test-optimal {what} (peeks; reference only)",
                     f"{opt[what]:.4f} at {opt['threshold']:.6g}"))
    table = "\n".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                      for k, v in rows)

    def item_html(item: Any) -> str:
        if isinstance(item, str):
            return f'<div class="text">{html.escape(item)}</div>'
        return f'<img src="{_array_to_data_uri(item)}" alt="item">'

    errors = []
    if thr_sim is not None:
        accept = sim >= thr_sim
        fa = np.flatnonzero(accept & ~same)
        fr = np.flatnonzero(~accept & same)
        for name, idx, order in (("false accepts (different, scored alike)", fa, -sim[fa]),
                                 ("false rejects (same, scored apart)", fr, sim[fr])):
            chosen = idx[np.argsort(order)[:n_errors]]
            cells = "".join(
                f'<figure class="pair">{item_html(pair_items[i][0])}{item_html(pair_items[i][1])}'
                f"<figcaption>score {scores[i]:.4g}</figcaption></figure>" for i in chosen)
            errors.append(f"<h3>{html.escape(name)}: {len(idx)}</h3>"
                          f"<div class='pairs'>{cells or '<p>none</p>'}</div>")
    else:
        errors.append("<p>No threshold, so no accepted or rejected pairs to show.</p>")

    def fig(key: str, caption: str) -> str:
        if key not in plots:
            return f'<section id="{key}"><h2>{caption}</h2><p>not enough data</p></section>'
        return (f'<section id="{key}"><h2>{caption}</h2>'
                f'<img class="plot" src="{plots[key]}" alt="{caption}"></section>')

    n_classes = len(set(labels)) if labels is not None else 0
    map_caption = (f"Embedding map: {len(embeddings)} test images of {n_classes} classes"
                   if embeddings is not None else "Embedding map")
    data_json = json.dumps(metrics, default=float).replace("</", "<\\/")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; }} th, td {{ padding: 4px 10px; border-bottom: 1px solid #ddd;
text-align: left; }} .pairs {{ display: flex; flex-wrap: wrap; gap: 12px; }}
figure.pair {{ margin: 0; padding: 6px; border: 1px solid #ccc; }}
figure.pair img {{ height: 96px; margin: 2px; image-rendering: pixelated; }}
.text {{ max-width: 260px; font-size: 0.85em; margin: 2px; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 24px; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<section id="metrics"><h2>Metrics</h2><table>{table}</table></section>
<div class="grid">{fig("roc", "ROC curve")}{fig("det", "DET curve")}</div>
{fig("histogram", "Score distributions")}
<section id="errors"><h2>Hardest errors at the threshold</h2>{"".join(errors)}</section>
{fig("embedding-map", map_caption)}
<script type="application/json" id="metrics-json">{data_json}</script>
</body></html>
"""


def pair_report(scored: PairScores, higher_is_closer: bool,
                calibrator: ThresholdCalibrator | None = None,
                title: str = "siamkit verification report") -> tuple[dict[str, Any], str]:
    """The verification metrics of scored pairs (:func:`verification_report` at the frozen
    threshold of ``calibrator``) and the HTML report showing them with the pairs' images,
    or texts, and an embedding map (classes: image folders; texts: duplicate groups).

    Returns:
        (metrics, HTML text).

    Raises:
        DatasetError: the pairs are a table's rows, which have nothing to show.
    """
    pairs = scored.pairs
    if scored.images is None and isinstance(pairs, PairList):
        raise DatasetError("the HTML report shows the images or texts of its pairs; for a "
                           "tabular model use siamkit eval verification --all-pairs")
    metrics = verification_report(scored.scores, scored.same, higher_is_closer, calibrator)
    if scored.images is None:  # text pairs: show the texts; map colours are duplicate groups
        items = [(pairs.texts[a], pairs.texts[b]) for a, b in zip(pairs.left, pairs.right,
                                                                  strict=True)]
        groups = positive_pair_groups(len(pairs.texts), pairs.left, pairs.right, pairs.same)
        labels = [str(g) for g in groups]
    else:
        arrays = scored.images.numpy()
        items = [(arrays[a], arrays[b]) for a, b in zip(pairs.left, pairs.right, strict=True)]
        labels = [Path(p).parent.name for p in pairs.paths]
    text = build_report(metrics, scored.scores, scored.same, higher_is_closer, items,
                        scored.embeddings.numpy(), labels, title=title)
    return metrics, text


def write_report(path: str | Path, text: str) -> Path:
    """Write the report file atomically; returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return path
