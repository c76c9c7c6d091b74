"""A starting config chosen from the data itself: your own image folder or pair file, no
YAML. Each function returns the config and the lines that say what was chosen and why;
``siamkit train --data`` / ``--pairs`` print them, and ``siamkit config init`` writes them.

    >>> config, notes = folder_config("photos/")      # photos/<class>/<image>
    >>> config, notes = pairs_config("pairs.csv", a="q1", b="q2", label="dup")
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from .config import Config, apply_overrides, check_config
from .data.download import DatasetError
from .data.images import scan_folder
from .data.textpairs import read_text_pairs

__all__ = ["folder_config", "pairs_config"]

GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F", "P;L"}


def _image_facts(paths: list[str], sample: int = 400, seed: int = 0
                 ) -> tuple[int, int, bool, float, list[str]]:
    """(median short side, median long side, any colour, mean brightness 0..255, notes on
    mixed sizes and modes) of up to ``sample`` images, from their headers and a
    thumbnail."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    picked = [paths[i] for i in sorted(rng.permutation(len(paths))[:sample])]
    shorts, longs, colour, brightness, sizes, modes = [], [], False, [], set(), set()
    for p in picked:
        try:
            with Image.open(p) as img:
                w, h = img.size
                sizes.add((w, h))
                modes.add(img.mode)
                colour |= img.mode not in GRAY_MODES and not _gray_palette(img)
                small = img.convert("L")
                small.thumbnail((32, 32))
                brightness.append(float(np.asarray(small).mean()))
        except (OSError, ValueError, SyntaxError) as exc:
            raise DatasetError(f"{p}: not a readable image ({exc})") from None
        shorts.append(min(w, h))
        longs.append(max(w, h))
    notes = []
    if len(sizes) > 1:
        lo, hi = min(sizes, key=lambda s: s[0] * s[1]), max(sizes, key=lambda s: s[0] * s[1])
        notes.append(f"the images have {len(sizes)} sizes ({lo[0]} x {lo[1]} to {hi[0]} x "
                     f"{hi[1]}): all are resized to one")
    if len(modes) > 1:
        notes.append(f"the images mix modes {sorted(modes)}: all are read as "
                     f"{'colour' if colour else 'grayscale'}")
    return (int(np.median(shorts)), int(np.median(longs)), colour,
            float(np.mean(brightness)), notes)


def _gray_palette(img: object) -> bool:
    """A palette image whose colours are all grays."""
    if getattr(img, "mode", None) != "P":
        return False
    palette = img.getpalette() or []  # type: ignore[attr-defined]
    rgb = np.array(palette[: 3 * 256]).reshape(-1, 3)
    return bool((rgb.max(1) == rgb.min(1)).all())


def folder_config(root: str | Path, overrides: list[str] | None = None
                  ) -> tuple[Config, list[str]]:
    """A config for a folder of images, one sub-folder per class (``root/<class>/...``).

    Chooses the image size from the images (their median short side, kept within 28..64
    pixels for speed on a CPU), grayscale or colour, inversion for dark ink on light paper,
    P x K batches that fit the classes, and a validation split of whole classes for
    checkpoints and the threshold. Refuses, saying what to change, a folder without images,
    with one class, or whose classes hold one image each.
    """
    root = Path(root)
    items = scan_folder(root)  # DatasetError: not a folder, or no images in class folders
    per_class = Counter(name for _, name, _ in items)
    classes = sorted(per_class)
    if len(classes) < 2:
        raise DatasetError(f"{root}: one class ({classes[0]!r}); a metric is learned by "
                           f"comparing classes: put each class's images in a folder of its "
                           f"own, {root}/<class>/<image>, with at least two classes")
    pairs_possible = [c for c in classes if per_class[c] >= 2]
    if len(pairs_possible) < 2:
        raise DatasetError(f"{root}: {len(classes)} classes but at most one has two images; "
                           f"every class needs two images or more (one to compare with the "
                           f"other) in at least two classes")
    short, long, colour, brightness, mixed = _image_facts([p for p, _, _ in items])
    size = int(np.clip(4 * round(short / 4), 28, 64))
    channels = 3 if colour else 1
    invert = not colour and brightness > 160  # dark strokes on light paper
    keep_aspect = long > 1.3 * short
    n_val = 0 if len(classes) < 6 else max(2, round(0.2 * len(classes)))
    train_counts = sorted(per_class.values())
    k = int(min(5, max(2, np.percentile(train_counts, 10))))
    p = int(min(20, max(2, len(classes) - n_val)))
    # about 30 passes over the training images, within 100..3000 steps (and 10 minutes)
    steps = int(np.clip(30 * len(items) // (p * k), 100, 3000))
    values = ["data.dataset=folder", f"data.root={_q(root)}", f"data.size={size}",
              f"data.channels={channels}", f"data.invert={str(invert).lower()}",
              f"data.keep_aspect={str(keep_aspect).lower()}", f"data.val_groups={n_val}",
              "data.val_fraction=0", f"optim.p={p}", f"optim.k={k}", f"optim.steps={steps}",
              f"optim.warmup_steps={steps // 20}", "optim.time_limit_minutes=10",
              "optim.lr=0.001", f"eval.every={max(50, steps // 6)}",
              f"eval.way={max(2, min(20, n_val))}", "eval.within_group=false",
              "eval.episodes=300", "loss.name=prototypical", "model.encoder=conv4",
              "model.encoder_args={width: 64, embedding_dim: 128}",
              "eval.calibrate_on=" + ("all_pairs" if n_val else "none")]
    config = apply_overrides(Config(), values + list(overrides or []))
    check_config(config)
    notes = _chosen([
        ((), f"{len(items)} images of {len(classes)} classes in {root}"),
        (("data.size", "data.keep_aspect"),
         f"data.size={size}: the median image is {short} x {long} pixels (kept within 28..64 "
         f"for speed on a CPU){'; keep_aspect: they are not square' if keep_aspect else ''}"),
        (("data.channels",),
         f"data.channels={channels}: the images are {'in colour' if colour else 'grayscale'}"),
        (("data.invert",), f"data.invert={str(invert).lower()}: mean brightness "
         f"{brightness:.0f} of 255" + (" (dark strokes on light paper)" if invert else "")),
        (("data.val_groups", "data.split_file", "data.val_fraction"),
         f"validation: {n_val} whole classes held out (one-shot episodes over them pick "
         f"checkpoints; their pairs calibrate the threshold)" if n_val else
         "validation: none (fewer than 6 classes); the last model is kept, no threshold"),
        (("optim.p", "optim.k", "optim.steps", "loss.name", "model.encoder",
          "optim.time_limit_minutes"),
         f"batches: {p} classes x {k} images (optim.p, optim.k); {steps} steps (about 30 "
         f"passes over the images); prototypical loss, Conv-4 encoder, 10-minute time limit"),
        *(((), note) for note in mixed),
    ], overrides)
    return config, notes


def pairs_config(path: str | Path, a: str = "a", b: str = "b", label: str | None = "label",
                 score: str | None = None, fmt: str | None = None,
                 val: str | Path | None = None, positive_label: str = "1",
                 overrides: list[str] | None = None) -> tuple[Config, list[str]]:
    """A config for a file of text pairs (CSV, TSV, JSONL or Ditto records) with a label
    (same / different) or a graded score per pair.

    A MiniLM text twin (offline) with cosine similarity: online contrastive loss on
    labelled pairs (validation carved out of the file by duplicate group), CoSENT on
    graded ones (which need a validation file, ``val``); the sequence length from the
    texts. A missing column names the columns found.
    """
    pairs = read_text_pairs(path, fmt, a, b, None if score else label, score, positive_label)
    graded = pairs.score is not None
    if graded and val is None:
        raise DatasetError(f"{path}: graded pairs (a score column) need a validation file "
                           f"to pick checkpoints by: give one (--val FILE)")
    words = np.array([len(t.split()) for t in pairs.texts])
    seq = int(np.clip(16 * np.ceil(1.5 * np.percentile(words, 95) / 16), 32, 256))
    steps = int(np.clip(3 * len(pairs) // 32, 20, 2000))  # about 3 passes over the pairs
    loss = "cosent" if graded else "online_contrastive"
    values = ["data.dataset=pairs", f"pairs.train={_q(path)}", f"pairs.a={_q(a)}",
              f"pairs.b={_q(b)}", f"pairs.label={_q(label) if not graded else 'null'}",
              f"pairs.score={_q(score) if graded else 'null'}",
              f"pairs.positive_label={_q(positive_label)}",
              "model.encoder=text", f"model.encoder_args={{max_seq_length: {seq}}}",
              "model.distance=cosine", f"loss.name={loss}", "loss.margin=0.5",
              "loss.scale=20", f"optim.steps={steps}", "optim.time_limit_minutes=10",
              "optim.pair_batch=32", "optim.lr=0.00002", f"optim.warmup_steps={steps // 10}",
              f"eval.every={max(10, steps // 5)}", "eval.calibrate_target=eer"]
    if fmt:
        values.append(f"pairs.format={fmt}")
    if val is not None:
        values.append(f"pairs.val={_q(val)}")
    config = apply_overrides(Config(), values + list(overrides or []))
    check_config(config)
    kind = "graded (scores)" if graded else f"labelled ({int(pairs.same.sum())} same)"
    notes = _chosen([
        ((), f"{len(pairs)} {kind} pairs of {len(pairs.texts)} texts in {path}"),
        (("model.encoder", "model.distance", "model.encoder_args"),
         f"model: MiniLM-L6 text twin, cosine; max_seq_length={seq} (95% of texts have at "
         f"most {int(np.percentile(words, 95))} words)"),
        (("loss.name", "loss.margin"), f"loss: {loss}" + ("" if graded else " (margin 0.5)")),
        (("pairs.val", "pairs.val_fraction"),
         "validation: " + (f"{val}" if val is not None else
                           "10% of the pairs, whole duplicate groups, held out")),
        (("optim.steps", "optim.pair_batch", "optim.lr", "optim.time_limit_minutes"),
         f"{steps} steps of 32 pairs (about 3 passes), learning rate 2e-5, 10-minute time "
         f"limit"),
    ], overrides)
    return config, notes


def _chosen(notes: list[tuple[tuple[str, ...], str]], overrides: list[str] | None
            ) -> list[str]:
    """The notes on what was chosen, without those about a key the user set (``overrides``,
    ``KEY=VALUE``), and one line naming what the user set."""
    keys = [o.split("=", 1)[0].strip() for o in overrides or []]
    kept = [text for about, text in notes
            if not any(k == a or k.startswith(a + ".") for k in keys for a in about)]
    if overrides:
        kept.append("set by you: " + ", ".join(overrides))
    return kept


def _q(value: object) -> str:
    """A string as a YAML value that stays that string (a column named ``#1 String``,
    ``yes``, ``null`` or ``1``; a path with ``: ``): JSON's quoted form."""
    return json.dumps(str(value))
