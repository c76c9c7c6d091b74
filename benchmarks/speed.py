"""Speed side by side: siamkit vs pytorch-metric-learning (PML) and FAISS, in one run.

Sections (each figure a median of at least ``--repeats`` calls after three warm-ups, short calls
repeated for about half a second; peak memory is the peak resident set of a
fresh subprocess running that one case, minus its resident set before the case):

1. ``mining``: mining + loss, forward and backward, 128-d embeddings, P x K batches (K=4),
   batch sizes 128 / 512 / 2048: semi-hard + triplet, batch-hard + triplet, contrastive over
   all pairs; losses compared numerically with PML's.
2. ``retrieval``: precision@1 and MAP@R on 100,000 x 128 embeddings of 1,000 classes:
   siamkit's chunked ``retrieval_metrics`` vs PML's ``AccuracyCalculator`` (FAISS k-NN).
3. ``search``: exact top-10 over 1,000,000 x 128 references for 1,000 queries: siamkit's
   exact backend vs FAISS ``IndexFlatIP`` (cosine) and ``IndexFlatL2`` (euclidean); FAISS
   HNSW / IVF through siamkit with recall@10.
4. ``training``: images/s of the Omniglot demo config's model and batch (forward, backward,
   step), its FLOPs per image (torch's FLOP counter) and the fraction of this CPU's peak.
5. ``embedding``: inference images/s, eager fp32 vs channels_last vs bf16 autocast vs ONNX
   Runtime, with the largest embedding difference from eager.

    python benchmarks/speed.py                         # everything (about 15 minutes)
    python benchmarks/speed.py --only mining --sizes 128 512 --out /tmp/speed.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _median_time(fn: Any, repeats: int) -> float:
    """Median seconds of ``fn()`` over at least ``repeats`` calls after three warm-ups;
    calls under a few milliseconds repeat until about half a second has passed (a fresh
    process's first calls are slow and a median of 5 such calls is noise)."""
    t0 = time.perf_counter()
    for _ in range(3):
        fn()
    per_call = (time.perf_counter() - t0) / 3
    repeats = max(repeats, min(300, int(0.5 / max(per_call, 1e-6))))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


# ---------------------------------------------------------------- 1. mining + loss


def _batch(b: int, dim: int = 128, k: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(b // k).repeat_interleave(k)
    centres = torch.randn(b // k, dim, generator=g)
    emb = centres[labels] * 0.5 + torch.randn(b, dim, generator=g)
    return emb / emb.norm(dim=1, keepdim=True) * 2, labels  # norms of 2: margins matter


def mining_case(lib: str, algo: str, b: int, repeats: int) -> dict:
    emb0, labels = _batch(b)
    if lib == "siamkit":
        from siamkit.distances import EuclideanDistance
        from siamkit.losses import ContrastiveLoss, TripletLoss
        from siamkit.miners import BatchHardMiner, SemiHardMiner

        dist = EuclideanDistance()
        if algo == "contrastive":
            loss_fn = ContrastiveLoss(dist, pos_margin=0.0, neg_margin=1.0)

            def run(e: torch.Tensor) -> torch.Tensor:
                return loss_fn(e, labels)
        else:
            miner = SemiHardMiner(0.2, dist) if algo == "semihard" else BatchHardMiner(dist)
            tl = TripletLoss(dist, margin=0.2)

            def run(e: torch.Tensor) -> torch.Tensor:
                with torch.no_grad():
                    idx = miner(e, labels)
                return tl(e, labels, idx)
    else:
        from pytorch_metric_learning import losses, miners
        from pytorch_metric_learning.distances import LpDistance

        dist = LpDistance(normalize_embeddings=False)
        if algo == "contrastive":
            loss_fn = losses.ContrastiveLoss(pos_margin=0.0, neg_margin=1.0, distance=dist)

            def run(e: torch.Tensor) -> torch.Tensor:
                return loss_fn(e, labels)
        else:
            miner = (miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard",
                                               distance=dist) if algo == "semihard"
                     else miners.BatchHardMiner(distance=dist))
            tl = losses.TripletMarginLoss(margin=0.2, distance=dist)

            def run(e: torch.Tensor) -> torch.Tensor:
                return tl(e, labels, miner(e, labels))

    values = []

    def step() -> None:
        e = emb0.clone().requires_grad_(True)
        loss = run(e)
        loss.backward()
        values.append(float(loss))

    base = _rss_mb()
    t = _median_time(step, repeats)
    return {"lib": lib, "algo": algo, "batch": b, "seconds": t, "loss": values[-1],
            "peak_mb": round(_peak_mb() - base, 1)}


# ---------------------------------------------------------------- 2. retrieval metrics


def _clustered(n: int, classes: int, dim: int, seed: int = 0) -> tuple[torch.Tensor,
                                                                       torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    centres = torch.randn(classes, dim, generator=g)
    x = centres[labels] + 1.2 * torch.randn(n, dim, generator=g)
    return torch.nn.functional.normalize(x, dim=1), labels


def retrieval_case(lib: str, n: int, classes: int, chunk: int) -> dict:
    x, y = _clustered(n, classes, 128)
    base = _rss_mb()
    t0 = time.perf_counter()
    if lib == "siamkit":
        from siamkit.metrics import retrieval_metrics

        r = retrieval_metrics(x, y, ks=(1,), chunk=chunk)
        values = {"precision_at_1": r["recall@1"], "map_at_r": r["map@r"]}
    else:
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

        calc = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r"),
                                  k="max_bin_count")
        r = calc.get_accuracy(x, y, x, y, ref_includes_query=True)
        values = {"precision_at_1": r["precision_at_1"],
                  "map_at_r": r["mean_average_precision_at_r"]}
    return {"lib": lib, "n": n, "classes": classes, "seconds": time.perf_counter() - t0,
            "peak_mb": round(_peak_mb() - base, 1), **values}


def retrieval_pair_case(n: int, classes: int, chunk: int, calls: int) -> dict:
    """siamkit's and PML's retrieval metrics in one process on the same embeddings, their
    calls alternating ``calls`` times each: a process's own speed weighs on both alike."""
    times: dict[str, list[float]] = {"siamkit": [], "pml": []}
    for _ in range(calls):
        for lib in times:
            times[lib].append(retrieval_case(lib, n, classes, chunk if lib == "siamkit"
                                             else 0)["seconds"])
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {"seconds": times, "siamkit_seconds": med["siamkit"], "pml_seconds": med["pml"],
            "speedup": med["pml"] / med["siamkit"]}


# ---------------------------------------------------------------- 3. gallery search


def search_case(n: int, queries: int, repeats: int, which: int, truth_path: str) -> dict:
    """One backend per process: torch's and FAISS's OpenMP thread pools in one process
    contend on 2 cores and make either side's timing erratic. Backend 0 (exact) writes the
    true neighbours to ``truth_path`` for the others' recall."""
    from siamkit.gallery import ExactIndex, FaissIndex

    # references as trained embeddings are: classes of 10 around their centres; queries are
    # new items of enrolled classes (random Gaussian points would make every ANN index
    # look bad: their neighbours beyond the first are arbitrary)
    refs, qs = _search_data(n, queries)
    import faiss

    cases: list[tuple[str, Any]] = [
        ("siamkit exact", lambda: ExactIndex("cosine")),
        ("faiss IndexFlatIP (direct)", None),
        ("siamkit exact, torch kernel", lambda: ExactIndex("cosine", kernel="torch")),
        ("faiss hnsw via siamkit (M 16, ef 64)",
         lambda: FaissIndex("cosine", "hnsw", m=16, ef_search=64, ef_construction=40)),
        ("faiss ivf via siamkit (nprobe 32)",
         lambda: FaissIndex("cosine", "ivf", nlist=4096, nprobe=32)),
    ]
    name, make = cases[which]
    t0 = time.perf_counter()
    if make is None:
        index: Any = faiss.IndexFlatIP(128)
        index.add(refs)
    else:
        index = make()
        index.build(refs)
    build = time.perf_counter() - t0

    def run() -> tuple[np.ndarray, np.ndarray]:
        return index.search(qs, 10)

    t = _median_time(run, repeats)
    _, idx = run()
    if which == 0:
        np.save(truth_path, idx)
    truth = np.load(truth_path)
    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(idx, truth,
                                                                       strict=True)]))
    return {"backend": name, "references": n, "queries": queries, "seconds": t,
            "queries_per_second": queries / t, "build_seconds": build, "recall_at_10": recall}


SEARCH_CASES = 5


def _search_data(n: int, queries: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit references in classes of 10 around their centres, and queries that are new
    items of enrolled classes, as trained embeddings are."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(n // 10, 128)).astype(np.float32)
    refs = centres[np.arange(n) // 10] + 0.35 * rng.normal(size=(n, 128)).astype(np.float32)
    refs /= np.linalg.norm(refs, axis=1, keepdims=True)
    picks = rng.choice(n, queries, replace=False)
    qs = centres[picks // 10] + 0.35 * rng.normal(size=(queries, 128)).astype(np.float32)
    qs /= np.linalg.norm(qs, axis=1, keepdims=True)
    return refs, qs


def search_pair_case(n: int, queries: int, repeats: int, metric: str = "cosine") -> dict:
    """siamkit's exact backend (``auto``, and its own ``torch`` kernel) and FAISS
    ``IndexFlatIP`` (cosine) or ``IndexFlatL2`` (euclidean) in one process over the same
    references, their calls alternating: a process's own speed (its memory placement, the
    machine's drift) then weighs on all alike. Identical results are checked."""
    import faiss

    from siamkit.gallery import ExactIndex

    refs, qs = _search_data(n, queries)
    exact, own = ExactIndex(metric), ExactIndex(metric, kernel="torch")
    exact.build(refs)
    own.build(refs)
    flat = (faiss.IndexFlatIP if metric == "cosine" else faiss.IndexFlatL2)(128)
    flat.add(refs)
    calls = {"exact": lambda: exact.search(qs, 10), "flat": lambda: flat.search(qs, 10),
             "torch": lambda: own.search(qs, 10)}
    want = calls["flat"]()[1]
    same = bool(np.array_equal(calls["exact"]()[1], want))
    same_torch = bool(np.array_equal(np.sort(calls["torch"]()[1], 1), np.sort(want, 1)))
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(max(repeats, 5)):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    qps = {k: queries / float(np.median(v)) for k, v in times.items()}
    return {"metric": metric, "exact_qps": qps["exact"], "flat_qps": qps["flat"],
            "torch_qps": qps["torch"],
            "ratio": qps["exact"] / qps["flat"], "torch_ratio": qps["torch"] / qps["flat"],
            "indices_equal": same, "torch_indices_equal": same_torch,
            "exact_kernel": exact.kernel_in_use}


# ---------------------------------------------------------------- 4. training throughput


def training_case(steps: int, precision: str = "fp32") -> dict:
    """A training step of the demo config (channels-last, the loss of its config) in
    ``precision`` (``auto`` resolves as training does: bf16 only on native-bf16 CPUs)."""
    from importlib import resources

    from torch.utils.flop_counter import FlopCounterMode

    from siamkit.builders import build_loss, build_model
    from siamkit.config import load_config
    from siamkit.embedding import to_float
    from siamkit.machine import peak_gflops
    from siamkit.precision import in_precision, resolve_precision

    cfg = load_config(Path(str(resources.files("siamkit") / "presets" / "omniglot_demo.yaml")))
    torch.manual_seed(0)
    model = build_model(cfg.model, 1, cfg.data.size)
    model = model.to(memory_format=torch.channels_last)
    resolved = resolve_precision(precision)
    embed = in_precision(model.embed, resolved)
    loss_fn = build_loss(cfg, model, num_classes=100)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    b = cfg.optim.p * cfg.optim.k
    x = to_float(torch.randint(0, 255, (b, 1, cfg.data.size, cfg.data.size),
                               dtype=torch.uint8)).contiguous(memory_format=torch.channels_last)
    y = torch.arange(cfg.optim.p).repeat_interleave(cfg.optim.k)

    def step() -> None:
        loss = loss_fn(embed(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    t = _median_time(lambda: [step() for _ in range(steps)], 3) / steps
    peak = peak_gflops()
    achieved = flops / t / 1e9
    top = peak["bf16_peak_gflops"] if resolved == "bf16" else peak["fp32_peak_gflops"]
    return {"precision": precision, "resolved": resolved, "batch": b, "input": cfg.data.size,
            "images_per_second": b / t, "flops_per_image": flops / b,
            "achieved_gflops": achieved, **peak, "fraction_of_peak": achieved / top}


# ---------------------------------------------------------------- 5. embedding throughput


def embedding_case(n: int, repeats: int) -> list[dict]:
    import tempfile
    from importlib import resources

    from siamkit.builders import build_model
    from siamkit.checkpoint import save_model
    from siamkit.config import load_config

    cfg = load_config(Path(str(resources.files("siamkit") / "presets" / "omniglot_demo.yaml")))
    torch.manual_seed(0)
    model = build_model(cfg.model, 1, cfg.data.size).eval()
    x = torch.rand(n, 1, cfg.data.size, cfg.data.size)
    with torch.no_grad():
        ref = model.embed(x)
    rows = []

    def add(name: str, fn: Any) -> None:
        with torch.no_grad():
            t = _median_time(fn, repeats)
            out = torch.as_tensor(np.asarray(fn())).float()
        rows.append({"path": name, "images_per_second": n / t,
                     "max_abs_diff_vs_eager": float((out - ref).abs().max()),
                     "embedding_scale": float(ref.abs().max())})

    add("eager fp32", lambda: model.embed(x))
    cl = model.to(memory_format=torch.channels_last)
    xcl = x.contiguous(memory_format=torch.channels_last)
    add("channels_last fp32", lambda: cl.embed(xcl))

    def bf16() -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return cl.embed(xcl).float()

    add("channels_last bf16 autocast", bf16)
    try:
        import onnxruntime as ort

        from siamkit.export import export_onnx

        with tempfile.TemporaryDirectory() as tmp:
            model = model.to(memory_format=torch.contiguous_format)
            save_model(Path(tmp) / "run", model, cfg, {"input": {"channels": 1,
                                                                  "size": cfg.data.size}})
            export_onnx(Path(tmp) / "run", Path(tmp) / "onnx")
            sess = ort.InferenceSession(str(Path(tmp) / "onnx" / "encoder.onnx"),
                                        providers=["CPUExecutionProvider"])
            xn = x.numpy()
            add("onnx runtime fp32", lambda: sess.run(None, {"inputs": xn})[0])
    except ImportError as exc:
        rows.append({"path": "onnx runtime fp32", "error": str(exc)})
    return rows


# ---------------------------------------------------------------- driver


def _median_by(rounds: list[dict], key: str, field: str) -> dict:
    """The round's ``key`` entry whose ``field`` is the median of the rounds."""
    ok = sorted((r[key] for r in rounds if field in r[key]), key=lambda r: r[field])
    return ok[len(ok) // 2] if ok else rounds[0][key]


def _median_of(rounds: list[dict], field: str) -> float | None:
    """The median ``field`` of the rounds that have it (None when none does)."""
    values = sorted(r[field] for r in rounds if field in r)
    return values[len(values) // 2] if values else None


def _subprocess(args: list[str]) -> Any:
    r = subprocess.run([sys.executable, __file__, "--case", *args], capture_output=True,
                       text=True, timeout=900)
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": f"exit {r.returncode}: {tail[0][:200]}"}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--case"]:  # one measurement in this fresh process
        kind, rest = argv[1], argv[2:]
        if kind == "mining":
            out: Any = mining_case(rest[0], rest[1], int(rest[2]), int(rest[3]))
        elif kind == "retrieval":
            out = retrieval_case(rest[0], int(rest[1]), int(rest[2]), int(rest[3]))
        elif kind == "retrieval_pair":
            out = retrieval_pair_case(int(rest[0]), int(rest[1]), int(rest[2]), int(rest[3]))
        elif kind == "search_pair":
            out = search_pair_case(int(rest[0]), int(rest[1]), int(rest[2]), rest[3])
        elif kind == "search":
            out = search_case(int(rest[0]), int(rest[1]), int(rest[2]), int(rest[3]), rest[4])
        elif kind == "training":
            out = training_case(int(rest[0]), rest[1] if len(rest) > 1 else "fp32")
        else:
            out = embedding_case(int(rest[0]), int(rest[1]))
        print(json.dumps(out))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", default=["mining", "retrieval", "search",
                                                      "training", "embedding"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 512, 2048])
    parser.add_argument("--algos", nargs="+", default=["semihard", "batchhard", "contrastive"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--search-rounds", type=int, default=5,
                        help="rounds of exact and FAISS flat search side by side (a fresh "
                             "process each, their calls alternating; the median ratio is kept)")
    parser.add_argument("--search-cases", type=int, default=SEARCH_CASES,
                        choices=range(1, SEARCH_CASES + 1), metavar=f"1-{SEARCH_CASES}",
                        help="how many backends to time each alone in its own process, in "
                             "the order: siamkit exact, FAISS flat, siamkit's torch kernel, "
                             "FAISS HNSW, FAISS IVF (HNSW and IVF take minutes to build)")
    parser.add_argument("--retrieval-n", type=int, default=100_000)
    parser.add_argument("--retrieval-classes", type=int, default=1000)
    parser.add_argument("--retrieval-chunk", type=int, default=512)
    parser.add_argument("--retrieval-rounds", type=int, default=3,
                        help="rounds of siamkit and PML retrieval side by side (a fresh "
                             "process each, calls alternating; the median ratio is kept)")
    parser.add_argument("--search-refs", type=int, default=1_000_000)
    parser.add_argument("--search-queries", type=int, default=1000)
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--train-rounds", type=int, default=3,
                        help="alternating rounds of fp32 and auto-precision training steps")
    parser.add_argument("--embed-n", type=int, default=2048)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" /
                        "speed.json")
    parser.add_argument("--merge", action="store_true",
                        help="keep the sections of an existing --out file (same CPU) that "
                             "this run does not measure")
    args = parser.parse_args(argv)
    from siamkit.machine import describe

    report: dict[str, Any] = {"machine": describe()}
    if "mining" in args.only:
        rows = []
        for algo in args.algos:
            for b in args.sizes:
                a = _subprocess(["mining", "siamkit", algo, str(b), str(args.repeats)])
                p = _subprocess(["mining", "pml", algo, str(b), str(args.repeats)])
                row = {"algo": algo, "batch": b, "siamkit": a, "pml": p}
                if "error" not in a and "error" not in p:
                    row["speedup"] = p["seconds"] / a["seconds"]
                    row["loss_equal"] = bool(abs(a["loss"] - p["loss"])
                                             <= 1e-4 * max(1.0, abs(p["loss"])))
                rows.append(row)
                ms = a.get("seconds", float("nan")) * 1e3
                print(f"mining {algo:<12} B={b:<5} siamkit {ms:9.1f} ms "
                      f"{a.get('peak_mb', '?'):>8} MB"
                      f" | PML {p.get('seconds', float('nan')) * 1e3:9.1f} ms "
                      f"{p.get('peak_mb', '?'):>8} MB | x{row.get('speedup', float('nan')):.2f}"
                      f" equal={row.get('loss_equal')}", flush=True)
        report["mining"] = rows
    if "retrieval" in args.only:
        # peak memory and the values: each library alone in a fresh process, once
        a = _subprocess(["retrieval", "siamkit", str(args.retrieval_n),
                         str(args.retrieval_classes), str(args.retrieval_chunk)])
        p = _subprocess(["retrieval", "pml", str(args.retrieval_n),
                         str(args.retrieval_classes), "0"])
        row: dict[str, Any] = {"siamkit": a, "pml": p}
        if "error" not in a and "error" not in p:
            row["values_equal"] = all(abs(a[k] - p[k]) < 1e-6
                                      for k in ("precision_at_1", "map_at_r"))
        # the ratio: both side by side in fresh processes, calls alternating (a process's
        # speed moved by up to 2x from one process to the next on this shared machine)
        rounds = [_subprocess(["retrieval_pair", str(args.retrieval_n),
                               str(args.retrieval_classes), str(args.retrieval_chunk), "2"])
                  for _ in range(args.retrieval_rounds)]
        row["speedup"] = _median_of(rounds, "speedup")
        row["rounds"] = rounds
        ratios = sorted(r["speedup"] for r in rounds if "speedup" in r)
        report["retrieval"] = row
        print(f"retrieval n={args.retrieval_n}: siamkit {a.get('seconds', float('nan')):.1f} s "
              f"{a.get('peak_mb')} MB | PML {p.get('seconds', float('nan')):.1f} s "
              f"{p.get('peak_mb')} MB | side by side x{row['speedup'] or float('nan'):.2f} "
              f"(rounds: {', '.join(f'{x:.2f}' for x in ratios)}) "
              f"equal={row.get('values_equal')}", flush=True)
    if "search" in args.only:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            def case(w: int) -> dict:
                return _subprocess(["search", str(args.search_refs), str(args.search_queries),
                                    str(args.repeats), str(w), str(Path(tmp) / "truth.npy")])

            # exact and FAISS flat side by side: each round a fresh process holding both,
            # their calls alternating (a process's speed moves by tens of percent from one
            # process to the next on this shared machine, for either side alike)
            for metric, key in (("cosine", "search"), ("euclidean", "search_l2")):
                rounds = [_subprocess(["search_pair", str(args.search_refs),
                                       str(args.search_queries), str(args.repeats), metric])
                          for _ in range(args.search_rounds)]
                report[f"{key}_rounds"] = rounds
                report[f"{key}_ratio_median"] = _median_of(rounds, "ratio")
                report[f"{key}_torch_ratio_median"] = _median_of(rounds, "torch_ratio")
            rows = [case(w) for w in range(args.search_cases)]
        report["search"] = rows
        for r in report["search_rounds"] + report["search_l2_rounds"]:
            print(f"search round ({r.get('metric', '?')}): exact ({r.get('exact_kernel', '?')}) "
                  f"{r.get('exact_qps', 0):.1f} q/s, torch kernel {r.get('torch_qps', 0):.1f} "
                  f"q/s, flat {r.get('flat_qps', 0):.1f} q/s, ratios "
                  f"{r.get('ratio', float('nan')):.2f} / {r.get('torch_ratio', float('nan')):.2f}"
                  f", same results {r.get('indices_equal')} / {r.get('torch_indices_equal')} "
                  f"{r.get('error', '')}", flush=True)
        for r in rows if isinstance(rows, list) else [rows]:
            print(f"search {r.get('backend', '?'):<40} {r.get('queries_per_second', 0):10.1f} q/s"
                  f"  recall@10 {r.get('recall_at_10', float('nan')):.4f} {r.get('error', '')}",
                  flush=True)
    if "training" in args.only:
        # fp32 and auto take turns (the machine's speed drifts); the medians are kept
        rounds = [{p: _subprocess(["training", str(args.train_steps), p])
                   for p in ("fp32", "auto")} for _ in range(args.train_rounds)]
        report["training"] = {p: _median_by(rounds, p, "images_per_second")
                              for p in ("fp32", "auto")}
        fp32, auto = report["training"]["fp32"], report["training"]["auto"]
        report["training"]["auto_speedup"] = (auto.get("images_per_second", 0)
                                              / max(fp32.get("images_per_second", 0), 1e-9))
        report["training"]["rounds"] = rounds
        for p in ("fp32", "auto"):
            r = report["training"][p]
            print(f"training {p:<5} ({r.get('resolved', '?')}): "
                  f"{r.get('images_per_second', 0):.0f} img/s, "
                  f"{r.get('achieved_gflops', 0):.1f} GFLOP/s "
                  f"({100 * r.get('fraction_of_peak', 0):.1f}% of its peak) "
                  f"{r.get('error', '')}", flush=True)
        print(f"training auto / fp32: x{report['training']['auto_speedup']:.2f}", flush=True)
    if "embedding" in args.only:
        rows = _subprocess(["embedding", str(args.embed_n), str(args.repeats)])
        report["embedding"] = rows
        for r in rows if isinstance(rows, list) else [rows]:
            print(f"embedding {r.get('path', '?'):<30} {r.get('images_per_second', 0):10.0f} "
                  f"img/s  max diff {r.get('max_abs_diff_vs_eager', float('nan')):.2e} "
                  f"{r.get('error', '')}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.merge and args.out.is_file():  # sections not run this time are kept
        old = json.loads(args.out.read_text())
        if old.get("machine", {}).get("cpu") != report["machine"].get("cpu"):
            raise SystemExit(f"--merge: {args.out} was measured on another CPU")
        report = {**old, **report, "merged": sorted(set(old.get("merged", [])) | {
            f"{time.strftime('%Y-%m-%d')}: {' '.join(args.only)}"})}
    args.out.write_text(json.dumps(report, indent=2))
    print(f"JSON written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
