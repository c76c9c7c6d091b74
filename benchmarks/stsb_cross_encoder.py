"""Would a cross-encoder teacher help the STS-B twin? (the precondition of AugSBERT)

AugSBERT (Thakur et al. 2021) labels extra sentence pairs with a cross-encoder and trains the
bi-encoder on them; it helps when the cross-encoder is clearly better than the bi-encoder.
This trains MiniLM-L6 (the twin's starting point) as a cross-encoder on STS-B train: both
sentences in one sequence, a fresh linear head on the pooled output, BCE on score / 5,
random order of the two sentences; dev Spearman (both orders averaged) every 250 steps.
Compare with the twin's dev Spearman, read from ``--twin``: the twin's result file
(``benchmarks/results/stsb_finetune.json``, its ``dev_spearman_best``) or its run folder
(``train_summary.json``); the report holds it only when one of those was read.

Prints a table and writes JSON.

    HF_HUB_OFFLINE=1 SIAMKIT_MIRROR=../shared/datasets python benchmarks/stsb_cross_encoder.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--twin", type=Path,
                        default=Path(__file__).parent / "results" / "stsb_finetune.json",
                        help="the twin's result JSON, or its run folder, to compare with")
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "stsb_cross_encoder.json")
    args = parser.parse_args(argv)
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        get_linear_schedule_with_warmup,
    )

    from siamkit.data.textpairs import load_stsb
    from siamkit.encoders import default_text_model

    torch.manual_seed(0)  # before the head is made
    rng = np.random.default_rng(0)
    root = os.environ.get("SIAMKIT_MIRROR")
    path = default_text_model()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)

    def pairs(split: str) -> tuple[list[tuple[str, str]], np.ndarray]:
        p = load_stsb(split, root)
        return ([(p.texts[i], p.texts[j]) for i, j in zip(p.left, p.right, strict=True)],
                np.asarray(p.score, float) / 5.0)

    x_train, y_train = pairs("train")
    x_dev, y_dev = pairs("dev")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(opt, 100, args.steps)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def encode(batch: list[tuple[str, str]]) -> dict:
        return tok([a for a, _ in batch], [b for _, b in batch], padding=True,
                   truncation=True, max_length=128, return_tensors="pt")

    @torch.no_grad()
    def predict(items: list[tuple[str, str]]) -> np.ndarray:
        model.eval()
        out = []
        for i in range(0, len(items), 64):
            b = items[i:i + 64]
            s1 = torch.sigmoid(model(**encode(b)).logits.squeeze(-1))
            s2 = torch.sigmoid(model(**encode([(y, x) for x, y in b])).logits.squeeze(-1))
            out.append(((s1 + s2) / 2).numpy())
        model.train()
        return np.concatenate(out)

    history, order, t0 = [], [], time.time()
    model.train()
    for step in range(1, args.steps + 1):
        if len(order) < args.batch:
            order = list(rng.permutation(len(x_train))) + order
        idx = [order.pop() for _ in range(args.batch)]
        batch = [x_train[i] if rng.random() < 0.5 else x_train[i][::-1] for i in idx]
        target = torch.tensor(y_train[idx], dtype=torch.float32)
        loss = loss_fn(model(**encode(batch)).logits.squeeze(-1), target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        schedule.step()
        opt.zero_grad()
        if step % args.every == 0 or step == args.steps:
            rho = 100 * float(spearmanr(predict(x_dev), y_dev).correlation)
            history.append({"step": step, "dev_spearman": round(rho, 2),
                            "minutes": round((time.time() - t0) / 60, 1)})
            print(f"step {step:>5}  dev Spearman {rho:6.2f}  {history[-1]['minutes']:5.1f} min",
                  flush=True)
    report = {"model": "MiniLM-L6 (all-MiniLM-L6-v2) as a cross-encoder", "steps": args.steps,
              "batch": args.batch, "lr": args.lr, "history": history, **twin(args.twin)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"JSON written to {args.out}")
    return 0


def twin(source: Path) -> dict:
    """The twin's dev Spearman (x100) as measured: from its result JSON or its run folder;
    nothing when neither is there."""
    if source.is_dir() and (source / "train_summary.json").is_file():
        best = json.loads((source / "train_summary.json").read_text())["best_val_metric"]
        return {"twin_dev_spearman": round(100 * best, 2), "twin_source": str(source)}
    if source.is_file():
        value = json.loads(source.read_text()).get("dev_spearman_best")
        if value is not None:
            return {"twin_dev_spearman": value, "twin_source": str(source)}
    return {}


if __name__ == "__main__":
    sys.exit(main())
