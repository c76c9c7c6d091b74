"""The bf16 screen of exact top-k search against fp32 and FAISS on this CPU, side by side.

``screen: auto`` (:func:`siamkit.topk.screen_precision`) takes the bf16 screen only where
the CPU reports AMX. This measures what the screen does on any other CPU: one run times
``inner_topk`` with ``screen="fp32"`` and ``screen="bf16"`` and FAISS ``IndexFlatIP`` on the
same references and queries (unit vectors, inner product), in rounds, and checks that the
three return the same neighbours. It then times ``self_topk`` (every row's top k among the
others: what the retrieval metrics run) in fp32 and bf16 on ``--self-n`` vectors, with the
rows whose neighbours differ and the largest score gap between the two. Prints a table and
writes JSON with the machine.

    python benchmarks/screen.py --out benchmarks/results/screen_<date>_<cpu>.json
    python benchmarks/screen.py --refs 100000 --queries 100 --out /tmp/screen.json  # seconds
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from siamkit.machine import describe
from siamkit.topk import inner_topk, screen_precision, self_topk


def _timed(fn, rounds: int) -> tuple[list[float], object]:
    times, out = [], None
    for _ in range(rounds):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return times, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refs", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--self-n", type=int, default=100_000,
                        help="vectors for self_topk (0: leave it out)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    gen = torch.Generator().manual_seed(0)
    refs = torch.nn.functional.normalize(torch.randn(args.refs, args.dim, generator=gen), dim=1)
    queries = torch.nn.functional.normalize(torch.randn(args.queries, args.dim, generator=gen),
                                            dim=1)
    refs_bf16 = refs.to(torch.bfloat16)  # as an index keeps them: rounded once, not per search
    rows, found = {}, {}
    for screen in ("fp32", "bf16"):
        extra = {"refs_bf16": refs_bf16, "refs_norm": 1.0} if screen == "bf16" else {}
        times, (_, idx) = _timed(lambda s=screen, e=extra: inner_topk(
            queries, refs, args.k, screen=s, **e), args.rounds)
        rows[f"siamkit_{screen}"], found[screen] = times, idx.numpy()
    try:
        import faiss

        index = faiss.IndexFlatIP(args.dim)
        index.add(refs.numpy())
        times, (_, idx) = _timed(lambda: index.search(queries.numpy(), args.k), args.rounds)
        rows["faiss_flat_ip"], found["faiss"] = times, idx
    except ImportError:
        print("faiss not installed: its row is left out", file=sys.stderr)
    if args.self_n:
        x = torch.nn.functional.normalize(torch.randn(args.self_n, args.dim, generator=gen),
                                          dim=1)
        own = {}
        for screen in ("fp32", "bf16"):
            times, own[screen] = _timed(lambda s=screen: self_topk(x, args.k, screen=s),
                                        args.rounds)
            rows[f"self_topk_{screen}"] = times
        (v32, i32), (v16, i16) = own["fp32"], own["bf16"]
        differing = (i32 != i16).any(dim=1)
        self_report = {"n": args.self_n, "rows_with_other_neighbours": int(differing.sum()),
                       "largest_score_gap": float((v32 - v16).abs().max())}
    best = {name: min(t) for name, t in rows.items()}
    report = {
        "benchmark": "exact top-k inner-product search: siamkit's fp32 and bf16 screens and "
                     "FAISS IndexFlatIP, best of the rounds",
        "command": shlex.join(["python", "benchmarks/screen.py",
                               *(sys.argv[1:] if argv is None else argv)]),
        "measured": date.today().isoformat(),
        "machine": describe(),
        "auto_takes": screen_precision("auto"),
        "refs": args.refs, "queries": args.queries, "dim": args.dim, "k": args.k,
        "rounds_seconds": {n: [round(x, 4) for x in t] for n, t in rows.items()},
        "best_seconds": {n: round(x, 4) for n, x in best.items()},
        "bf16_speedup_over_fp32": round(best["siamkit_fp32"] / best["siamkit_bf16"], 2),
        "same_neighbours": {f"bf16_vs_{n}": bool(np.array_equal(found["bf16"], v))
                            for n, v in found.items() if n != "bf16"},
    }
    if args.self_n:
        report["self_topk"] = {**self_report, "bf16_speedup_over_fp32": round(
            best["self_topk_fp32"] / best["self_topk_bf16"], 2)}
    if "faiss_flat_ip" in best:
        report["bf16_speedup_over_faiss"] = round(best["faiss_flat_ip"] / best["siamkit_bf16"], 2)
    print(f"{'search':16s} {'best s':>8s}  rounds")
    for name, t in rows.items():
        print(f"{name:16s} {min(t):8.3f}  {' '.join(f'{x:.3f}' for x in t)}")
    print(f"auto takes {report['auto_takes']} here; same neighbours: {report['same_neighbours']}")
    if args.self_n:
        print(f"self_topk: {self_report['rows_with_other_neighbours']} of {args.self_n} rows "
              f"with other neighbours, score gap at most {self_report['largest_score_gap']:.2g}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
