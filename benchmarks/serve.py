"""HTTP service and gallery search speed: requests/s and latency, exact vs FAISS search, and
the worst-case image decoding cost of a request.

Builds a model (random weights: speed does not depend on training) with 128-d
embeddings, a gallery of ``--references`` synthetic references (classes of 10 around
random centres, as trained embeddings cluster), starts ``siamkit serve`` in a
subprocess on loopback and drives ``/verify`` and ``/identify`` from a separate load
process with ``--concurrency`` clients for ``--seconds`` each. Then times gallery search
alone, exact vs FAISS flat / HNSW / IVF, with recall@10 against exact (FAISS rows say
"faiss not installed" without it; any other error fails the run). Then times the
service's decode path (``Embedder.load``, as a request's files are read, one after
another) on the largest images the service takes: square PNGs and JPEGs at the pixel
limit of ``ServeSettings`` (and at the library's 40 M, for comparison), and reports the
CPU of a request of as many of them as ``max_files`` and the body limit allow. Prints the
tables and writes JSON.

    python benchmarks/serve.py                       # 100,000 references, 128-d
    python benchmarks/serve.py --references 2000 --seconds 2 --out /tmp/serve.json  # smoke
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-key"


def make_model(out: Path, dim: int) -> None:
    from siamkit.builders import build_model
    from siamkit.checkpoint import save_model, update_card
    from siamkit.config import Config

    config = Config()
    config.data.size = 28
    config.model.encoder_args = {"width": 64, "embedding_dim": dim}
    torch.manual_seed(0)
    model = build_model(config.model, 1, 28)
    save_model(out, model, config, {"input": {"channels": 1, "size": 28, "invert": True,
                                              "keep_aspect": False}})
    update_card(out, {"threshold": {"target": "eer", "value": None, "higher_is_closer": False,
                                    "threshold_": 1.0, "validation_": {}}})


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Embeddings as a trained model gives them: classes of 10 around their centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(1, n // 10), dim)).astype(np.float32)
    x = centres[np.arange(n) // 10 % len(centres)]
    return (x + 0.35 * rng.normal(size=(n, dim))).astype(np.float32)


def make_gallery(model_dir: Path, out: Path, n: int, dim: int) -> None:
    from siamkit.checkpoint import model_identity
    from siamkit.gallery import Gallery

    g = Gallery.create(out, dim, metric="euclidean", model_id=model_identity(model_dir))
    x = clustered(n, dim)
    for s in range(0, n, 50_000):
        m = min(50_000, n - s)
        g.enroll_many([f"class{i // 10}" for i in range(s, s + m)], x[s : s + m])
    g.close()


def _png(seed: int) -> bytes:
    import io

    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (105, 105), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _load(url: str, path: str, seconds: float, concurrency: int) -> dict:
    """Run in a separate process: ``concurrency`` threads posting for ``seconds``."""
    import threading

    import httpx

    imgs = [_png(i) for i in range(8)]
    lat: list[float] = []
    errors = [0]
    stop = time.perf_counter() + seconds

    def client(t: int) -> None:
        with httpx.Client(base_url=url, timeout=30, headers={"X-API-Key": KEY}) as c:
            i = t
            while time.perf_counter() < stop:
                if path == "/verify":
                    files = [("a", ("a.png", imgs[i % 8])), ("b", ("b.png", imgs[(i + 1) % 8]))]
                else:
                    files = [("files", ("q.png", imgs[i % 8]))]
                t0 = time.perf_counter()
                r = c.post(path, files=files)
                lat.append(time.perf_counter() - t0)
                errors[0] += r.status_code != 200
                i += concurrency

    threads = [threading.Thread(target=client, args=(t,)) for t in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"latencies": lat, "errors": errors[0], "wall": time.perf_counter() - t0}


def bench_http(model_dir: Path, gallery: Path, seconds: float, concurrency: int,
               engine: str = "torch") -> list[dict]:
    """Requests/s and latency of /verify and /identify with the encoder on ``engine``."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "SIAMKIT_API_KEY": KEY}
    proc = subprocess.Popen([sys.executable, "-m", "siamkit.cli", "serve", "--model",
                             str(model_dir), "--gallery", str(gallery), "--port", str(port),
                             "--engine", engine, "--precision", "fp32"], env=env)
    try:
        import httpx

        t0 = time.perf_counter()
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.perf_counter() - t0 > 120:
                raise RuntimeError("server did not start")
            time.sleep(0.2)
        startup = time.perf_counter() - t0
        rows = []
        for path in ("/verify", "/identify"):  # the load comes from another process
            worker = subprocess.run([sys.executable, __file__, "--worker", url, path,
                                     str(seconds), str(concurrency)], env=env, check=True,
                                    capture_output=True, text=True)
            res = json.loads(worker.stdout)
            lat = np.array(res["latencies"]) * 1000
            rows.append({"engine": engine, "endpoint": path, "requests": len(lat),
                         "errors": res["errors"],
                         "requests_per_second": round(len(lat) / res["wall"], 1),
                         "p50_ms": round(float(np.percentile(lat, 50)), 2),
                         "p99_ms": round(float(np.percentile(lat, 99)), 2),
                         "concurrency": concurrency, "startup_seconds": round(startup, 2)})
        return rows
    finally:
        proc.terminate()
        proc.wait(30)


def bench_embed(model_dir: Path, n: int = 2048, repeats: int = 5) -> list[dict]:
    """Images/s of the service's embedding path (Embedder.embed_batch on decoded images)
    per engine, alternating engines for ``repeats`` rounds (medians): eager PyTorch fp32
    against ONNX Runtime, with the largest difference of their embeddings."""
    from siamkit.inference import Embedder

    x = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8)
    engines = {e: Embedder(model_dir, engine=e, precision="fp32") for e in ("torch", "onnx")}
    times: dict[str, list[float]] = {e: [] for e in engines}
    for _ in range(repeats):
        for e, emb in engines.items():
            emb.embed_batch(x[:64])  # warm
            t0 = time.perf_counter()
            emb.embed_batch(x)
            times[e].append(time.perf_counter() - t0)
    diff = float((engines["torch"].embed_batch(x) - engines["onnx"].embed_batch(x)).abs().max())
    rows = [{"engine": e, "images": n, "images_per_second": round(n / float(np.median(t)), 1),
             "rounds": repeats} for e, t in times.items()]
    rows[1]["speedup_vs_torch"] = round(rows[1]["images_per_second"]
                                        / rows[0]["images_per_second"], 2)
    rows[1]["max_abs_diff_vs_torch"] = diff
    return rows


def _large(side: int, fmt: str) -> bytes:
    """A ``side`` x ``side`` RGB image of 100-pixel blocks: few bytes for many pixels, so
    that a request holds as many as it may (the worst case for decoding CPU)."""
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    cells = rng.integers(0, 256, (side // 100 + 1, side // 100 + 1, 3), dtype=np.uint8)
    img = Image.fromarray(cells).resize((side, side), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, fmt, **({"quality": 75} if fmt == "JPEG" else {}))
    return buf.getvalue()


def bench_decode(model_dir: Path, repeats: int = 3) -> list[dict]:
    """CPU seconds of the service's decode path for the largest images it takes, and for a
    request of as many as fit (``max_files`` and ``max_body_bytes``)."""
    import math

    from siamkit.data.images import MAX_PIXELS
    from siamkit.inference import Embedder
    from siamkit.serve import ServeSettings

    settings = ServeSettings()
    rows = []
    for limit_of, limit in (("service", settings.max_pixels), ("library", MAX_PIXELS)):
        embedder = Embedder(model_dir, max_pixels=limit)
        embedder.load(_large(100, "PNG"), "warm-up")
        side = math.isqrt(limit)
        for fmt in ("PNG", "JPEG"):
            data = _large(side, fmt)
            times = []
            for _ in range(repeats):
                t0 = time.process_time()
                embedder.load(data, "large")
                times.append(time.process_time() - t0)
            per_image = float(np.median(times))
            files = min(settings.max_files, settings.max_body_bytes // len(data))
            rows.append({"image": f"{side} x {side} {fmt}", "limit": limit_of,
                         "max_pixels": limit, "bytes": len(data),
                         "cpu_seconds_per_image": round(per_image, 4),
                         "files_per_request": files,
                         "cpu_seconds_per_request": round(per_image * files, 2)})
    return rows


def bench_search(n: int, dim: int, n_queries: int, k: int = 10) -> list[dict]:
    from siamkit.gallery import ExactIndex, FaissIndex

    rng = np.random.default_rng(1)
    refs = clustered(n, dim)
    # new items of enrolled classes: a reference's class centre plus fresh noise
    picks = rng.choice(n, n_queries, replace=False)
    queries = (refs[picks] + 0.35 * rng.normal(size=(n_queries, dim))).astype(np.float32)
    rows, truth = [], None
    backends = [("exact", lambda: ExactIndex("euclidean")),
                ("faiss flat", lambda: FaissIndex("euclidean", "flat")),
                ("faiss hnsw (M 32, ef 64)", lambda: FaissIndex("euclidean", "hnsw", m=32,
                                                                ef_search=64)),
                ("faiss ivf (nprobe 16)", lambda: FaissIndex("euclidean", "ivf",
                                                             nlist=int(4 * n**0.5),
                                                             nprobe=16))]
    have_faiss = importlib.util.find_spec("faiss") is not None
    for name, make in backends:
        if name.startswith("faiss") and not have_faiss:  # reported; any other error fails
            rows.append({"backend": name, "error": "faiss not installed"})
            continue
        index = make()
        t0 = time.perf_counter()
        index.build(refs)
        build = time.perf_counter() - t0
        index.search(queries[:10], k)  # warm-up
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            _, idx = index.search(queries, k)
            times.append(time.perf_counter() - t0)
        if truth is None:
            truth = idx
        recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(idx, truth,
                                                                          strict=True)]))
        rows.append({"backend": name, "references": n, "queries": n_queries,
                     "build_seconds": round(build, 2),
                     "queries_per_second": round(n_queries / float(np.median(times)), 1),
                     "recall_at_10_vs_exact": round(recall, 4)})
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        url, path, seconds, concurrency = argv[1:5]
        print(json.dumps(_load(url, path, float(seconds), int(concurrency))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--references", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--search-queries", type=int, default=1000)
    parser.add_argument("--engines", nargs="+", default=["torch", "onnx"],
                        choices=("torch", "onnx"), help="encoder engines the service runs on")
    parser.add_argument("--embed-n", type=int, default=2048,
                        help="images per call of the embedding-path measurement")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" /
                        "serve.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, gallery = Path(tmp) / "model", Path(tmp) / "gallery"
        make_model(model_dir, args.dim)
        t0 = time.perf_counter()
        make_gallery(model_dir, gallery, args.references, args.dim)
        fill = time.perf_counter() - t0
        http = [row for e in args.engines
                for row in bench_http(model_dir, gallery, args.seconds, args.concurrency, e)]
        embed = bench_embed(model_dir, args.embed_n)
        decode = bench_decode(model_dir)
    search = bench_search(args.references, args.dim, args.search_queries)
    from siamkit.machine import describe

    report = {"benchmark": "siamkit serve: HTTP per engine, embedding path, gallery search, "
                           "image decoding",
              "machine": describe(), "references": args.references, "dim": args.dim,
              "gallery_fill_seconds": round(fill, 2), "http": http, "embed": embed,
              "search": search, "decode": decode}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"{'engine':<7} {'endpoint':<12} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'errors':>7}")
    for r in http:
        print(f"{r['engine']:<7} {r['endpoint']:<12} {r['requests_per_second']:>8.1f} "
              f"{r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['errors']:>7}")
    print(f"\n{'embedding path':<16} {'images/s':>10}")
    for r in embed:
        extra = (f"  x{r['speedup_vs_torch']:.2f} torch, max diff "
                 f"{r['max_abs_diff_vs_torch']:.1e}" if "speedup_vs_torch" in r else "")
        print(f"{r['engine']:<16} {r['images_per_second']:>10.1f}{extra}")
    print(f"\n{'search backend':<28} {'queries/s':>10} {'recall@10':>10} {'build s':>8}")
    for r in search:
        if "error" in r:
            print(f"{r['backend']:<28} {r['error']}")
            continue
        print(f"{r['backend']:<28} {r['queries_per_second']:>10.1f} "
              f"{r['recall_at_10_vs_exact']:>10.4f} {r['build_seconds']:>8.2f}")
    print(f"\n{'largest image (pixel limit)':<34} {'kB':>7} {'CPU s/image':>12} "
          f"{'files':>6} {'CPU s/request':>14}")
    for r in decode:
        print(f"{r['image'] + ' (' + r['limit'] + ')':<34} {r['bytes'] // 1024:>7} "
              f"{r['cpu_seconds_per_image']:>12.4f} {r['files_per_request']:>6} "
              f"{r['cpu_seconds_per_request']:>14.2f}")
    print(f"JSON written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
