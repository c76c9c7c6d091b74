"""Duplicate detection at corpus scale: ``find_duplicates`` (what ``siamkit dedupe`` runs)
on a corpus of short real texts with planted near-duplicates, on this machine's CPU.

The corpus: every distinct sentence / record of the mirror's MRPC, STS-B and Ditto
entity-matching files; planted duplicates (a copy of a real text with one word dropped,
two neighbouring words swapped and the case changed); and, to reach ``--n`` texts, new
texts spliced from the first half of one real text and the second half of another.
Reports the time of each stage (embedding, the range self-join, clustering), peak memory,
the pairs found, and the share of planted duplicates found (recall).

    python benchmarks/dedupe.py                       # 100,000 texts, MiniLM-L6 zero-shot
    python benchmarks/dedupe.py --model runs/mrpc --n 20000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def real_texts() -> list[str]:
    """Distinct texts of the mirror's pair datasets (those present)."""
    from siamkit.data.download import mirror_dir
    from siamkit.data.textpairs import load_ditto, load_mrpc, load_stsb

    mirror = mirror_dir()
    if mirror is None:
        raise SystemExit("set SIAMKIT_MIRROR to the dataset mirror")
    seen: dict[str, None] = {}
    if (mirror / "mrpc").is_dir():
        for split in ("train", "test"):
            seen.update(dict.fromkeys(load_mrpc(split, mirror).texts))
    if (mirror / "stsbenchmark").is_dir():
        for split in ("train", "dev", "test"):
            seen.update(dict.fromkeys(load_stsb(split, mirror / "stsbenchmark").texts))
    for folder in sorted(p.parent for p in (mirror / "er_magellan").glob("*/*/train.txt")):
        for split in ("train", "valid", "test"):
            seen.update(dict.fromkeys(load_ditto(folder, split).texts))
    return list(seen)


def perturb(text: str, rng: np.random.Generator) -> str:
    words = text.split()
    if len(words) > 3:
        del words[int(rng.integers(len(words)))]
        k = int(rng.integers(len(words) - 1))
        words[k], words[k + 1] = words[k + 1], words[k]
    out = " ".join(words)
    return out.lower() if out != out.lower() else out.upper()


def build_corpus(n: int, planted: int, seed: int = 0) -> tuple[list[str], list[tuple[int, int]]]:
    rng = np.random.default_rng(seed)
    base = real_texts()
    rng.shuffle(base)
    base = base[: max(2, n - planted)]
    pairs, texts = [], list(base)
    for i in rng.choice(len(base), min(planted, n - len(base)), replace=False):
        pairs.append((int(i), len(texts)))
        texts.append(perturb(base[i], rng))
    seen = set(texts)
    while len(texts) < n:
        a, b = (base[int(k)].split() for k in rng.integers(len(base), size=2))
        t = " ".join(a[: len(a) // 2] + b[len(b) // 2 :])
        if t and t not in seen:
            seen.add(t)
            texts.append(t)
    order = rng.permutation(len(texts))
    where = np.empty(len(texts), dtype=int)
    where[order] = np.arange(len(texts))
    return [texts[i] for i in order], [(int(where[a]), int(where[b])) for a, b in pairs]


def _model(run: str | None, max_seq_length: int):
    if run:
        from siamkit.checkpoint import load_model

        return load_model(run)[0]
    from siamkit.distances import CosineSimilarity
    from siamkit.encoders import create_encoder
    from siamkit.siamese import SiameseNetwork

    enc = create_encoder("text", normalize=True, max_seq_length=max_seq_length)
    return SiameseNetwork(enc, CosineSimilarity()).eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="texts in the corpus")
    parser.add_argument("--planted", type=int, default=10_000, help="planted duplicates")
    parser.add_argument("--model", help="run folder of a text model (default: MiniLM-L6 "
                                        "without fine-tuning)")
    parser.add_argument("--threshold", type=float, default=0.9,
                        help="cosine threshold (default 0.9)")
    parser.add_argument("--max-seq-length", type=int, default=64)
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "dedupe.json")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from siamkit.cli.common import progress_bars
    from siamkit.dedupe import find_duplicates

    texts, planted = build_corpus(args.n, min(args.planted, args.n // 2))
    model = _model(args.model, args.max_seq_length)
    t = time.perf_counter()
    with progress_bars(args.progress) as progress:
        res = find_duplicates(model, texts, args.threshold, progress=progress)
    total = time.perf_counter() - t
    found = set(zip(res.left.tolist(), res.right.tolist(), strict=True))
    same_cluster = sum(res.clusters[a] == res.clusters[b] for a, b in planted)
    direct = sum((min(a, b), max(a, b)) in found for a, b in planted)
    sizes = res.cluster_sizes
    report = {
        "texts": len(texts), "planted_duplicates": len(planted),
        "threshold": args.threshold, "model": args.model or "all-MiniLM-L6-v2 zero-shot",
        "max_seq_length": args.max_seq_length, "threads": torch.get_num_threads(),
        "seconds": {**{k: round(v, 2) for k, v in res.timings.items()},
                    "total": round(total, 2)},
        "texts_per_second_embedding": round(len(texts) / res.timings["embed_s"], 1),
        "pairs_found": len(res.left), "clusters": len(sizes),
        "largest_cluster": int(sizes[0]) if len(sizes) else 0,
        "planted_recall_pair": direct / max(1, len(planted)),
        "planted_recall_cluster": same_cluster / max(1, len(planted)),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    s = report["seconds"]
    print(f"{'texts':>8} {'embed s':>8} {'search s':>9} {'cluster s':>9} {'total s':>8} "
          f"{'pairs':>8} {'recall':>7} {'peak MB':>8}")
    print(f"{len(texts):>8} {s['embed_s']:>8.1f} {s['search_s']:>9.1f} {s['cluster_s']:>9.2f} "
          f"{s['total']:>8.1f} {len(res.left):>8} {report['planted_recall_pair']:>7.3f} "
          f"{report['peak_rss_mb']:>8.0f}")
    print(f"JSON written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
