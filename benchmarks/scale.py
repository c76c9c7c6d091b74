"""How cost grows: identify against gallery size, memory per reference, enroll throughput
of each store, and requests/s with one and two replicas on one PostgreSQL gallery.

One run on this machine measures:

* search: identify latency (one query at a time, p50 / p99) and throughput (batches of
  256 queries) against gallery size (10k, 100k, 1M references of 128-d, classes of 10),
  for each backend (exact, FAISS flat / IVF / HNSW), with recall@10 against exact;
* memory per reference: what the gallery holds per reference (vector, label code, content
  hash) plus what each index adds (FAISS: its serialised size; exact: the norms it keeps
  beside the gallery's own vectors), and the process's resident memory growth;
* enroll throughput: one reference per enroll (a service's enroll: one committed, fsynced
  transaction each) and batches of 1,000, SQLite folder vs PostgreSQL (a throwaway cluster,
  fsync on);
* replicas: ``/identify`` requests/s with 1 and 2 ``siamkit serve`` replicas on one
  PostgreSQL gallery (a separate load process, round robin), and the delay between an
  enroll acknowledged by one replica and the other identifying it.

Prints a table and writes JSON (with the CPU model and core count).

    python benchmarks/scale.py                 # the full run (several minutes)
    python benchmarks/scale.py --smoke --out /tmp/scale.json   # tiny sizes, seconds
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-key"
DIM = 128


# ---------------------------------------------------------------- data, machine


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Embeddings as a trained model gives them: classes of 10 around their centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(1, n // 10), dim)).astype(np.float32)
    x = centres[np.arange(n) // 10 % len(centres)]
    return (x + 0.35 * rng.normal(size=(n, dim))).astype(np.float32)


def labels_of(n: int) -> list[str]:
    return [f"class{i // 10}" for i in range(n)]


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {"cpu_model": cpu, "cores": os.cpu_count(),
                            "python": platform.python_version(), "torch": torch.__version__,
                            "torch_threads": torch.get_num_threads()}
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages / 2**30, 1)
    except (ValueError, OSError):
        pass
    for name in ("faiss", "psycopg"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            info[name] = None
    return info


def rss() -> int:
    """Resident memory of this process, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _postgres_helper() -> Any:
    """tests/postgres.py (the throwaway cluster), loaded by path."""
    spec = importlib.util.spec_from_file_location("siamkit_bench_pg", ROOT / "tests" /
                                                  "postgres.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- search


BACKENDS = {
    "exact": ("exact", {}),
    "faiss flat": ("faiss", {"kind": "flat"}),
    "faiss ivf": ("faiss", {"kind": "ivf", "nprobe": 16}),  # nlist = sqrt(N)
    "faiss hnsw": ("faiss", {"kind": "hnsw", "m": 32, "ef_search": 64}),
}


def index_bytes(gallery: Any) -> int:
    """What the built index holds beyond the gallery's arrays."""
    index = gallery._refs.search_state()[0]
    if hasattr(index, "_index") and index._index is not None:  # FAISS
        import faiss

        return int(faiss.serialize_index(index._index).nbytes)
    return int(index._sq.numel() * index._sq.element_size())  # exact: shares the vectors


def bench_search(sizes: list[int], backends: list[str], n_single: int, n_batch: int,
                 hnsw_max: int) -> list[dict]:
    import gc

    from siamkit.gallery import Gallery

    rows = []
    for n in sizes:
        refs, labels = clustered(n, DIM), labels_of(n)
        rng = np.random.default_rng(1)
        picks = rng.choice(n, max(n_single, n_batch), replace=False)
        queries = (refs[picks] + 0.35 * rng.normal(size=(len(picks), DIM))).astype(np.float32)
        truth = None
        for name in backends:
            backend, args = BACKENDS[name]
            if name == "faiss hnsw" and n > hnsw_max:
                rows.append({"backend": name, "references": n, "skipped":
                             f"HNSW builds above {hnsw_max} references take minutes on "
                             f"{os.cpu_count()} cores (--hnsw-max to include)"})
                continue
            if name == "faiss ivf":
                args = {**args, "nlist": int(n ** 0.5)}
            gc.collect()
            before = rss()
            try:
                g = Gallery(DIM, metric="euclidean", backend=backend, backend_args=args)
            except Exception as exc:  # faiss missing: say so and go on
                rows.append({"backend": name, "references": n, "error": str(exc)})
                continue
            t0 = time.perf_counter()
            g.enroll_many(labels, refs)
            enroll = time.perf_counter() - t0
            t0 = time.perf_counter()
            g.identify(queries[:1], k=10)  # builds the index
            build = time.perf_counter() - t0
            gc.collect()
            grown = rss() - before
            for q in queries[:10]:  # warm-up: first calls pay for allocations
                g.identify(q[None], k=10)
            lat = []
            for q in queries[:n_single]:
                t0 = time.perf_counter()
                g.identify(q[None], k=10)
                lat.append(time.perf_counter() - t0)
            batch = queries[:n_batch]
            t0 = time.perf_counter()
            found = []
            for s in range(0, len(batch), 256):
                found += g.identify(batch[s : s + 256], k=10)
            seconds = time.perf_counter() - t0
            top = [[m.label for m in r] for r in found]
            if truth is None:
                truth = top
            recall = float(np.mean([len(set(a) & set(b)) / 10
                                    for a, b in zip(top, truth, strict=True)]))
            top1 = float(np.mean([a[:1] == b[:1] for a, b in zip(top, truth, strict=True)]))
            held = g._refs.vectors.nbytes + g._refs.codes.nbytes + g._refs.hashes.nbytes
            extra = index_bytes(g)
            lat_ms = np.array(lat) * 1000
            rows.append({
                "backend": name, "references": n, "dim": DIM,
                "enroll_many_seconds": round(enroll, 2), "index_build_seconds": round(build, 2),
                "latency_p50_ms": round(float(np.percentile(lat_ms, 50)), 3),
                "latency_p99_ms": round(float(np.percentile(lat_ms, 99)), 3),
                "queries_per_second_batched": round(len(batch) / seconds, 1),
                "recall_at_10_classes_vs_exact": round(recall, 4),
                "top1_class_agrees_with_exact": round(top1, 4),
                "gallery_bytes_per_reference": round(held / n, 1),
                "index_bytes_per_reference": round(extra / n, 1),
                "bytes_per_reference": round((held + extra) / n, 1),
                "rss_growth_bytes_per_reference": round(grown / n, 1)})
            print(f"  search {name:<11} {n:>9,} refs: p50 {rows[-1]['latency_p50_ms']:.2f} ms, "
                  f"{rows[-1]['queries_per_second_batched']:.0f} q/s batched, "
                  f"{rows[-1]['bytes_per_reference']:.0f} B/ref", flush=True)
            del g
    return rows


# ---------------------------------------------------------------- enroll throughput


def bench_enroll(url: str | None, seconds: float, batch: int, tmp: Path) -> list[dict]:
    from siamkit.gallery import Gallery

    rows = []
    stores = [("sqlite", str(tmp / "enroll-sqlite"))]
    if url:
        stores.append(("postgresql", url))
    x = clustered(max(batch * 4, 4000), DIM, seed=2)
    for name, where in stores:
        g = Gallery.create(where, DIM, metric="euclidean", model_id="bench")
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            g.enroll(f"one{n}", x[n % len(x)])
            n += 1
        single = time.perf_counter() - t0
        rounds, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds or rounds == 0:
            s = rounds * batch % (len(x) - batch)
            g.enroll_many(labels_of(batch), x[s : s + batch])
            rounds += 1
        many = time.perf_counter() - t0
        rows.append({"store": name, "single_enrolls_per_second": round(n / single, 1),
                     "batch": batch, "batched_references_per_second":
                     round(rounds * batch / many, 1)})
        print(f"  enroll {name:<10}: {rows[-1]['single_enrolls_per_second']:.0f} enrolls/s "
              f"one at a time, {rows[-1]['batched_references_per_second']:.0f} refs/s in "
              f"batches of {batch}", flush=True)
        g.close()
    return rows


# ---------------------------------------------------------------- replicas


def make_model(out: Path, dim: int) -> None:
    from siamkit.builders import build_model
    from siamkit.checkpoint import save_model
    from siamkit.config import Config

    config = Config()
    config.data.size = 28
    config.model.encoder_args = {"width": 64, "embedding_dim": dim}
    torch.manual_seed(0)
    save_model(out, build_model(config.model, 1, 28), config,
               {"input": {"channels": 1, "size": 28, "invert": True, "keep_aspect": False}})


def _png(seed: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (105, 105), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_replica(model: Path, url: str) -> tuple[subprocess.Popen, str]:
    import httpx

    port = _free_port()
    code = ("import sys; from siamkit.serve import run; "
            "run(sys.argv[1], sys.argv[2], port=int(sys.argv[3]))")
    proc = subprocess.Popen([sys.executable, "-c", code, str(model), url, str(port)],
                            env={**os.environ, "SIAMKIT_API_KEY": KEY})
    base = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 300:
        if proc.poll() is not None:
            raise RuntimeError("replica exited")
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("replica did not start")


def _load(urls: list[str], seconds: float, concurrency: int) -> dict:
    """Run in a separate process: ``concurrency`` clients posting /identify round robin."""
    import httpx

    imgs = [_png(i) for i in range(8)]
    lat: list[float] = []
    errors = [0]
    stop = time.perf_counter() + seconds

    def client(t: int) -> None:
        clients = [httpx.Client(base_url=u, timeout=30, headers={"X-API-Key": KEY})
                   for u in urls]
        i = t
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            r = clients[i % len(clients)].post("/identify", files=[
                ("files", ("q.png", imgs[i % 8]))])
            lat.append(time.perf_counter() - t0)
            errors[0] += r.status_code != 200
            i += 1
        for c in clients:
            c.close()

    threads = [threading.Thread(target=client, args=(t,)) for t in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"latencies": lat, "errors": errors[0], "wall": time.perf_counter() - t0}


def _drive(urls: list[str], seconds: float, concurrency: int) -> dict:
    worker = subprocess.run([sys.executable, __file__, "--worker", json.dumps(urls),
                             str(seconds), str(concurrency)], check=True,
                            capture_output=True, text=True, env={**os.environ})
    res = json.loads(worker.stdout)
    lat = np.array(res["latencies"]) * 1000
    return {"replicas": len(urls), "concurrency": concurrency, "requests": len(lat),
            "errors": res["errors"],
            "requests_per_second": round(len(lat) / res["wall"], 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 2),
            "p99_ms": round(float(np.percentile(lat, 99)), 2)}


def _visibility(a: str, b: str, samples: int) -> dict:
    """Seconds from an enroll acknowledged by replica ``a`` to ``b`` identifying it."""
    import httpx

    delays = []
    with httpx.Client(timeout=30, headers={"X-API-Key": KEY}) as c:
        for i in range(samples):
            img = _png(10_000 + i)
            label = f"visible{i}"
            r = c.post(a + "/enroll", data={"label": label}, files=[("files", ("e.png", img))])
            r.raise_for_status()
            t0 = time.perf_counter()
            while True:
                r = c.get(b + "/classes")
                if label in r.json()["classes"]:
                    break
                if time.perf_counter() - t0 > 10:
                    raise RuntimeError("not visible in 10 s")
            delays.append(time.perf_counter() - t0)
            time.sleep(0.05)
    ms = np.array(delays) * 1000
    return {"samples": samples, "median_ms": round(float(np.median(ms)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "max_ms": round(float(ms.max()), 2)}


def bench_replicas(url: str, refs: int, seconds: float, concurrency: int,
                   tmp: Path, samples: int) -> dict:
    from siamkit.checkpoint import model_identity
    from siamkit.gallery import Gallery

    model = tmp / "model"
    make_model(model, DIM)
    g = Gallery.create(url, DIM, metric="euclidean", model_id=model_identity(model),
                       follow=False)
    x = clustered(refs, DIM, seed=3)
    t0 = time.perf_counter()
    for s in range(0, refs, 50_000):
        g.enroll_many(labels_of(min(50_000, refs - s)), x[s : s + 50_000])
    fill = time.perf_counter() - t0
    g.close()
    procs = []
    try:
        t0 = time.perf_counter()
        proc, a = start_replica(model, url)
        startup = time.perf_counter() - t0
        procs.append(proc)
        one = _drive([a], seconds, concurrency)
        print(f"  1 replica : {one['requests_per_second']:.1f} req/s", flush=True)
        proc, b = start_replica(model, url)
        procs.append(proc)
        two = _drive([a, b], seconds, concurrency)
        print(f"  2 replicas: {two['requests_per_second']:.1f} req/s", flush=True)
        seen = _visibility(a, b, samples)
        print(f"  enroll on A -> seen on B: median {seen['median_ms']} ms, "
              f"max {seen['max_ms']} ms", flush=True)
    finally:
        for p in procs:
            p.terminate()
            p.wait(30)
    return {"references": refs, "fill_seconds": round(fill, 2),
            "replica_startup_seconds": round(startup, 2), "http": [one, two],
            "enroll_to_visible_on_other_replica": seen}


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        print(json.dumps(_load(json.loads(argv[1]), float(argv[2]), int(argv[3]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (a smoke test)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--hnsw-max", type=int, default=100_000,
                        help="largest gallery to build an HNSW index for")
    parser.add_argument("--postgres", help="a PostgreSQL URL (default: a throwaway cluster "
                                           "started with initdb / pg_ctl)")
    parser.add_argument("--seconds", type=float, default=10, help="per HTTP measurement")
    parser.add_argument("--enroll-seconds", type=float, default=5)
    parser.add_argument("--replica-refs", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" /
                        "scale.json")
    args = parser.parse_args(argv)
    n_single, n_batch, samples = 200, 2048, 30
    if args.smoke:
        args.sizes, args.replica_refs, args.seconds = [2000], 500, 1.0
        args.enroll_seconds, n_single, n_batch, samples = 0.3, 20, 256, 3
    report: dict[str, Any] = {"benchmark": "siamkit scale: search, memory, enroll, replicas",
                              "command": "python benchmarks/scale.py " + " ".join(argv),
                              "machine": machine(), "dim": DIM}
    # other work on the machine shares its cores: the load average says how much
    report["machine"]["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    print(f"machine: {report['machine']['cpu_model']}, {report['machine']['cores']} cores",
          flush=True)
    report["search"] = bench_search(args.sizes, args.backends, n_single, n_batch,
                                    args.hnsw_max)
    cluster = None
    with tempfile.TemporaryDirectory() as tmp:
        url = args.postgres
        if url is None:
            helper = _postgres_helper()
            why = helper.missing()
            if why:
                report["postgres_skipped"] = why
            else:
                cluster = helper.TempCluster(durable=True).start()
        try:
            if cluster is not None:
                url = cluster.create_database("enroll")
                report["postgres"] = "throwaway cluster, fsync on, same machine"
            report["enroll"] = bench_enroll(url, args.enroll_seconds, 1000, Path(tmp))
            if cluster is not None:
                url = cluster.create_database("replicas")
            if url:
                report["replicas"] = bench_replicas(url, args.replica_refs, args.seconds,
                                                    args.concurrency, Path(tmp), samples)
        finally:
            if cluster is not None:
                cluster.cleanup()
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"JSON written to {args.out}")
    return 0


def print_table(report: dict) -> None:
    print(f"\n{'backend':<11} {'refs':>9} {'p50 ms':>8} {'p99 ms':>8} {'q/s batch':>10} "
          f"{'top-1':>6} {'rec@10':>7} {'B/ref':>7} {'build s':>8}")
    for r in report["search"]:
        if "latency_p50_ms" not in r:
            print(f"{r['backend']:<11} {r['references']:>9,} {r.get('skipped') or r['error']}")
            continue
        print(f"{r['backend']:<11} {r['references']:>9,} {r['latency_p50_ms']:>8.2f} "
              f"{r['latency_p99_ms']:>8.2f} {r['queries_per_second_batched']:>10.0f} "
              f"{r['top1_class_agrees_with_exact']:>6.3f} "
              f"{r['recall_at_10_classes_vs_exact']:>7.3f} {r['bytes_per_reference']:>7.0f} "
              f"{r['index_build_seconds']:>8.2f}")
    print(f"\n{'store':<11} {'enrolls/s':>10} {'refs/s (batches)':>17}")
    for r in report.get("enroll", []):
        print(f"{r['store']:<11} {r['single_enrolls_per_second']:>10.1f} "
              f"{r['batched_references_per_second']:>17.0f}")
    rep = report.get("replicas")
    if rep:
        print(f"\n{'replicas':<9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
        for r in rep["http"]:
            print(f"{r['replicas']:<9} {r['requests_per_second']:>8.1f} {r['p50_ms']:>8.2f} "
                  f"{r['p99_ms']:>8.2f} {r['errors']:>7}")
        v = rep["enroll_to_visible_on_other_replica"]
        print(f"enroll on one replica -> listed by the other: median {v['median_ms']} ms, "
              f"p99 {v['p99_ms']} ms, max {v['max_ms']} ms")
    elif "postgres_skipped" in report:
        print(f"\nPostgreSQL parts skipped: {report['postgres_skipped']}")


if __name__ == "__main__":
    sys.exit(main())
