"""Leakage-aware splits: whole groups go to one side only, and near-duplicates are found.

Groups are identities, writers, alphabets or products; when only pair labels exist they
are the connected components of the positive-pair graph. Near-duplicates across splits are
found with a perceptual hash for images and normalised text / MinHash for text.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .images import ImageDataset
from .textpairs import TextPairs

__all__ = [
    "split_by_group",
    "split_units",
    "classes_in",
    "split_groups",
    "overlap",
    "group_of",
    "connected_components",
    "positive_pair_groups",
    "image_hash",
    "hamming",
    "near_duplicates",
    "normalize_text",
    "minhash",
    "minhash_similarity",
    "text_near_duplicates",
    "split_text_pairs",
]


def split_units(data: ImageDataset) -> list[str]:
    """What a split file names for each class: its group's name, or its own name when the
    data has no groups."""
    if data.groups is not None:
        return [data.group_names[g] for g in data.groups]
    return list(data.class_names)


def classes_in(data: ImageDataset, wanted: Sequence[str]) -> list[int]:
    """Ids of the classes whose split unit (:func:`split_units`) is in ``wanted``."""
    keep = set(wanted)
    return [c for c, u in enumerate(split_units(data)) if u in keep]


def split_by_group(
    data: ImageDataset, n_holdout: int, fraction: float = 0.0, seed: int = 0
) -> tuple[ImageDataset, ImageDataset | None]:
    """Hold out whole groups (e.g. alphabets), or whole classes when there are no groups.

    Args:
        data: the dataset to split.
        n_holdout: number of groups (classes) to hold out; ignored when ``fraction`` > 0.
        fraction: hold out this fraction of the groups (classes) instead.
        seed: which groups are held out.

    Returns:
        (kept, held out); held out is None when nothing is held out.
    """
    units = data.groups if data.groups is not None else np.arange(data.num_classes)
    ids = np.unique(units)
    n = int(round(fraction * len(ids))) if fraction > 0 else n_holdout
    if n <= 0:
        return data, None
    if n >= len(ids):
        kind = "groups" if data.groups is not None else "classes"
        raise ValueError(f"cannot hold out {n} {kind} for validation: the data has only "
                         f"{len(ids)} (data.val_groups / data.val_fraction)")
    held = set(np.random.default_rng(seed).permutation(ids)[:n].tolist())
    out = [c for c in range(data.num_classes) if int(units[c]) in held]
    kept = [c for c in range(data.num_classes) if int(units[c]) not in held]
    return data.subset_classes(kept), data.subset_classes(out)


def split_groups(
    groups: list[str], val: float = 0.15, test: float = 0.15, seed: int = 0
) -> dict[str, list[str]]:
    """Assign whole groups to train / val / test at random, by fraction of groups.

    Every split that is asked for gets at least one group.
    """
    if not 0 <= val < 1 or not 0 <= test < 1 or val + test >= 1:
        raise ValueError(f"val ({val}) and test ({test}) fractions must be in [0, 1) and sum "
                         f"to less than 1")
    uniq = sorted(set(groups))
    need = 1 + (val > 0) + (test > 0)
    if len(uniq) < need:
        raise ValueError(f"{len(uniq)} groups cannot fill {need} splits")
    order = [uniq[i] for i in np.random.default_rng(seed).permutation(len(uniq))]
    n_val = max(int(val > 0), int(round(val * len(uniq))))
    n_val = min(n_val, len(uniq) - 1 - int(test > 0))  # leave train and test a group each
    n_test = max(int(test > 0), min(int(round(test * len(uniq))), len(uniq) - n_val - 1))
    return {"test": sorted(order[:n_test]), "val": sorted(order[n_test : n_test + n_val]),
            "train": sorted(order[n_test + n_val :])}


def group_of(name: str, pattern: str) -> str:
    """The group of a class name under a regular expression (its first group)."""
    import re

    try:
        m = re.search(pattern, name)
    except re.error as exc:
        raise ValueError(f"group pattern {pattern!r} is not a valid regular expression: "
                         f"{exc}") from None
    if m is None or m.lastindex is None:
        raise ValueError(f"group pattern {pattern!r} gives no group for {name!r}")
    return m.group(1)


def overlap(train: list[str], other: list[str]) -> list[str]:
    """Groups found on both sides (sorted)."""
    return sorted(set(train) & set(other))


def connected_components(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Component id of every node 0..n-1 of the graph with edges ``left[k] - right[k]``;
    ids are numbered in the order of each component's first node (scipy's csgraph)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as components

    left, right = np.asarray(left, dtype=np.int64), np.asarray(right, dtype=np.int64)
    graph = coo_matrix((np.ones(len(left), dtype=np.int8), (left, right)), shape=(n, n))
    return components(graph, directed=False)[1].astype(np.int64)


def positive_pair_groups(n_items: int, left: np.ndarray, right: np.ndarray,
                         same: np.ndarray) -> np.ndarray:
    """Group id of every item: connected components of the graph of positive pairs.

    When only pair labels exist (duplicate questions, matching records), items joined by a
    chain of "same" pairs are one group and must stay on one side of a split.
    """
    same = np.asarray(same, dtype=bool)
    return connected_components(n_items, np.asarray(left)[same], np.asarray(right)[same])


# ---------------------------------------------------------------- near-duplicates

_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def image_hash(image: np.ndarray) -> np.uint64:
    """64-bit difference hash (dHash) of a grayscale image array (H, W) or (C, H, W).

    Robust to resizing and small intensity changes; near-duplicates differ in few bits.
    """
    from PIL import Image

    a = np.asarray(image)
    if a.ndim == 3:
        a = a.mean(0) if a.shape[0] in (1, 3) else a.mean(2)
    small = np.asarray(Image.fromarray(a.astype(np.uint8)).resize((9, 8),
                                                                  Image.Resampling.BILINEAR),
                       dtype=np.int16)
    bits = (small[:, 1:] > small[:, :-1]).ravel()
    return np.uint64(int("".join("1" if b else "0" for b in bits), 2))


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bit differences between every hash of ``a`` (N,) and of ``b`` (M,) -> (N, M)."""
    x = np.bitwise_xor(np.asarray(a, dtype=np.uint64)[:, None],
                       np.asarray(b, dtype=np.uint64)[None, :])
    return _POPCOUNT[x.view(np.uint8)].reshape(*x.shape, 8).sum(-1)


def near_duplicates(
    test_hashes: np.ndarray, train_hashes: np.ndarray, max_distance: int = 4, chunk: int = 2048
) -> list[tuple[int, int, int]]:
    """(test index, closest train index, bit distance) for test items with a train item
    within ``max_distance`` bits."""
    found = []
    for s in range(0, len(test_hashes), chunk):
        d = hamming(test_hashes[s : s + chunk], train_hashes)
        if d.size == 0:
            break
        best = d.argmin(1)
        dist = d[np.arange(len(best)), best]
        for i in np.flatnonzero(dist <= max_distance):
            found.append((s + int(i), int(best[i]), int(dist[i])))
    return found


def normalize_text(text: str) -> str:
    """Lower case, punctuation dropped, whitespace collapsed: for exact-duplicate checks."""
    import re

    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def minhash(text: str, num_perm: int = 64, shingle: int = 3, seed: int = 0) -> np.ndarray:
    """MinHash signature of a text's word ``shingle``-grams; equal slots estimate Jaccard.

    Each slot is the minimum over the grams of a multiply-add-shift hash of their CRC-32
    (``(a x + b) mod 2^64``, its high 32 bits; ``a``, ``b`` random 64-bit), a family in
    which a gram's rank is independent of its CRC's size."""
    import zlib

    words = normalize_text(text).split()
    grams = {" ".join(words[i : i + shingle]) for i in range(max(1, len(words) - shingle + 1))}
    hashes = np.array([zlib.crc32(g.encode()) for g in grams], dtype=np.uint64)
    rng = np.random.default_rng(seed)
    a = rng.integers(0, np.iinfo(np.uint64).max, num_perm, dtype=np.uint64, endpoint=True) | 1
    b = rng.integers(0, np.iinfo(np.uint64).max, num_perm, dtype=np.uint64, endpoint=True)
    with np.errstate(over="ignore"):  # arithmetic modulo 2^64 is the point
        mixed = hashes[None, :] * a[:, None] + b[:, None]
    return (mixed >> np.uint64(32)).min(1)


def minhash_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Estimated Jaccard similarity of two MinHash signatures."""
    return float((a == b).mean())


def text_near_duplicates(
    test_texts: list[str], train_texts: list[str], min_similarity: float = 0.8,
    num_perm: int = 64, bands: int = 16,
) -> list[tuple[int, int, float]]:
    """(test index, train index, similarity) for test texts with a near-duplicate in train.

    Texts equal after :func:`normalize_text` score 1.0; others are compared by MinHash
    (estimated Jaccard of word 3-grams), with candidates found by locality-sensitive
    hashing over ``bands`` bands of the signature, so no test x train matrix is built.
    """
    if num_perm % bands:
        raise ValueError(f"num_perm ({num_perm}) must be a multiple of bands ({bands})")
    exact: dict[str, int] = {}
    for j, t in enumerate(train_texts):
        exact.setdefault(normalize_text(t), j)
    train_sig = np.stack([minhash(t, num_perm) for t in train_texts]) if train_texts else None
    rows = num_perm // bands
    buckets: list[dict[bytes, list[int]]] = [{} for _ in range(bands)]
    if train_sig is not None:
        for j, sig in enumerate(train_sig):
            for band in range(bands):
                buckets[band].setdefault(sig[band * rows:(band + 1) * rows].tobytes(),
                                         []).append(j)
    found = []
    for i, t in enumerate(test_texts):
        j = exact.get(normalize_text(t))
        if j is not None:
            found.append((i, j, 1.0))
            continue
        if train_sig is None:
            continue
        sig = minhash(t, num_perm)
        cands = {c for band in range(bands)
                 for c in buckets[band].get(sig[band * rows:(band + 1) * rows].tobytes(), ())}
        if not cands:
            continue
        cand = np.fromiter(cands, dtype=int)
        sims = (train_sig[cand] == sig).mean(1)
        best = int(sims.argmax())
        if sims[best] >= min_similarity:
            found.append((i, int(cand[best]), float(sims[best])))
    return found


def split_text_pairs(pairs: TextPairs, val: float = 0.15, test: float = 0.15, seed: int = 0,
                     link_negatives: str = "auto") -> tuple[dict[str, TextPairs], int]:
    """Split labelled text pairs so no duplicate group straddles train / val / test.

    Groups are the connected components of the positive pairs over the texts; whole groups
    go to one side (:func:`split_groups`). With ``link_negatives`` the negative pairs join
    components too, so no pair straddles and none is dropped: ``always``, ``never``, or
    ``auto`` (when the resulting largest component holds at most half of the pairs; with
    many cross-linked texts, as in duplicate-question data, it would swallow everything).
    Without it, a negative pair whose two texts land on different sides is dropped, which
    thins out negatives in the smaller splits.

    Returns:
        ({"train": TextPairs, "val": ..., "test": ...}, number of pairs dropped).
    """
    if pairs.same is None:
        raise ValueError("splitting by duplicate groups needs labelled pairs (a label column)")
    if link_negatives not in ("auto", "always", "never"):
        raise ValueError(f"link_negatives must be auto, always or never, not {link_negatives!r}")
    n = len(pairs.texts)
    comp = positive_pair_groups(n, pairs.left, pairs.right, pairs.same)
    if link_negatives != "never":
        linked = positive_pair_groups(n, pairs.left, pairs.right, np.ones(len(pairs), bool))
        biggest = np.bincount(linked[pairs.left]).max()
        if link_negatives == "always" or biggest <= 0.5 * len(pairs):
            comp = linked
    names = [str(c) for c in range(int(comp.max()) + 1)]
    assign = split_groups(names, val, test, seed)
    side = np.empty(len(names), dtype=object)
    for subset, members in assign.items():
        side[[int(m) for m in members]] = subset
    a, b = side[comp[pairs.left]], side[comp[pairs.right]]
    out = {}
    for subset, wanted in (("train", True), ("val", val > 0), ("test", test > 0)):
        inside = (a == subset) & (b == subset)
        if wanted and not inside.any():
            raise ValueError(f"the {subset} split got no pair with both texts inside it "
                             f"({len(names)} groups for {len(pairs)} pairs); use a larger "
                             f"fraction or another seed")
        if wanted:
            out[subset] = pairs.subset(inside)
    return out, int((a != b).sum())
