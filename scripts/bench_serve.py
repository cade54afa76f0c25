#!/usr/bin/env python3
"""Benchmark `ragctl serve` against `ragctl ingest` on the same files (docs/benchmarks.md).

    .venv/bin/python scripts/bench_serve.py [--entities 3] [--docs 12] [--clients 8]
        [--big-clients 64] [--big-mb 20] [--precision auto] [--json]

1. A generated corpus (ragctl.bench.generate_corpus: E entities x D documents, mixed formats).
2. `ragctl ingest` of the corpus into a fresh store: files/s and chunks/s (the run's own
   seconds, model load included).
3. `ragctl serve` on another fresh store (started and model loaded before the clock starts):
   K client threads upload every file (one file per request, wait=false), then wait for
   every job: files/s and chunks/s through HTTP, and their ratio to (2). While the uploads
   run, one more thread searches the entities: search latency p50/p95.
4. Memory: 64 clients upload a 20 MB file each at once (streamed from a generator; `.bin`, an
   unsupported type, so the numbers measure the upload path, not parsing); the server's RSS
   is sampled every 50 ms: baseline and peak.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil

RAGCTL = [sys.executable, "-m", "ragctl"]
QUERIES = ["refund policy for customers", "how are invoices approved", "security incident response",
           "quarterly revenue targets", "onboarding checklist for new staff"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(store: Path, precision: str, workers: int) -> tuple[subprocess.Popen[bytes], str, float]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    proc = subprocess.Popen([*RAGCTL, "serve", "--store", str(store), "--port", str(port), "--precision", precision,
                             "--workers", str(workers)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        if proc.poll() is not None:
            raise SystemExit("server exited during start-up")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).json().get("engine") == "running":
                return proc, url, time.perf_counter() - t0
        except (httpx.TransportError, ValueError):
            pass
        time.sleep(0.2)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def bench_ingest(corpus: Path, store: Path, precision: str, workers: int) -> dict[str, Any]:
    r = subprocess.run([*RAGCTL, "ingest", str(corpus), "--store", str(store), "--precision", precision,
                        "--workers", str(workers), "--json", "-q"], capture_output=True, text=True)
    report = json.loads(r.stdout)
    files = sum(e["indexed"] for e in report["entities"].values())
    chunks = sum(e["chunks"] for e in report["entities"].values())
    return {"seconds": report["seconds"], "files": files, "chunks": chunks,
            "files_per_s": files / report["seconds"], "chunks_per_s": chunks / report["seconds"]}


def bench_http(corpus: Path, url: str, clients: int) -> dict[str, Any]:
    items = sorted((e.name, p) for e in corpus.iterdir() if e.is_dir() for p in e.rglob("*") if p.is_file())
    entities = sorted({e for e, _ in items})
    latencies: list[float] = []
    done = threading.Event()

    def searcher() -> None:
        with httpx.Client(base_url=url, timeout=120) as c:
            i = 0
            while not done.is_set():
                entity = entities[i % len(entities)]
                t0 = time.perf_counter()
                r = c.post(f"/api/entities/{entity}/search", json={"query": QUERIES[i % len(QUERIES)], "k": 5})
                if r.status_code == 200:
                    latencies.append(time.perf_counter() - t0)
                i += 1
                time.sleep(0.2)

    def post(item: tuple[str, Path]) -> str:
        entity, path = item
        rel = path.relative_to(corpus / entity).as_posix()
        with httpx.Client(base_url=url, timeout=300) as c:
            r = c.post(f"/api/entities/{entity}/files", files=[("file", (path.name, path.read_bytes()))],
                       data={"path": rel})
            r.raise_for_status()
            return str(r.json()["job_id"])

    search_thread = threading.Thread(target=searcher)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        job_ids = list(pool.map(post, items))
        search_thread.start()  # entities exist once the first jobs are done; 404s are not timed
        results = []
        with httpx.Client(base_url=url, timeout=60) as c:
            for job_id in job_ids:
                while True:
                    body = c.get(f"/api/jobs/{job_id}").json()
                    if body["status"] in ("done", "failed"):
                        results.append(body)
                        break
                    time.sleep(0.05)
    seconds = time.perf_counter() - t0
    done.set()
    search_thread.join()
    files = sum(1 for r in results for f in r["files"] if f["status"] == "indexed")
    chunks = sum(f["chunks"] for r in results for f in r["files"] if f["status"] == "indexed")
    return {"seconds": seconds, "files": files, "chunks": chunks, "files_per_s": files / seconds,
            "chunks_per_s": chunks / seconds, "searches": len(latencies),
            "search_p50_ms": 1000 * percentile(latencies, 0.5), "search_p95_ms": 1000 * percentile(latencies, 0.95)}


def bench_memory(url: str, pid: int, clients: int, mb: int) -> dict[str, Any]:
    proc = psutil.Process(pid)
    block = os.urandom(64 * 1024)
    boundary = "bench-boundary"

    def body(i: int) -> Any:
        yield (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big-{i}.bin"\r\n'
               "Content-Type: application/octet-stream\r\n\r\n").encode()
        for _ in range(mb * 16):
            yield block
        yield f"\r\n--{boundary}--\r\n".encode()

    baseline = proc.memory_info().rss
    peak = baseline
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    barrier = threading.Barrier(clients)

    def post(i: int) -> int:
        with httpx.Client(base_url=url, timeout=600) as c:
            barrier.wait()
            r = c.post("/api/entities/bigfiles/files", content=body(i),
                       headers={"content-type": f"multipart/form-data; boundary={boundary}"})
            return r.status_code

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        codes = list(pool.map(post, range(clients)))
    seconds = time.perf_counter() - t0
    stop.set()
    sampler.join()
    return {"clients": clients, "mb_each": mb, "status_codes": {c: codes.count(c) for c in set(codes)},
            "seconds": seconds, "rss_baseline_mb": baseline / 2**20, "rss_peak_mb": peak / 2**20,
            "rss_growth_mb": (peak - baseline) / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entities", type=int, default=3)
    ap.add_argument("--docs", type=int, default=12)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--big-clients", type=int, default=64)
    ap.add_argument("--big-mb", type=int, default=20)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from ragctl.bench import generate_corpus

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        root = Path(tmp)
        generate_corpus(root / "corpus", entities=args.entities, docs=args.docs, seed=args.seed)
        ingest = bench_ingest(root / "corpus", root / "cli-store", args.precision, args.workers)
        proc, url, start_s = start_server(root / "http-store", args.precision, args.workers)
        try:
            http = bench_http(root / "corpus", url, args.clients)
            memory = bench_memory(url, proc.pid, args.big_clients, args.big_mb)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    result = {
        "corpus": {"entities": args.entities, "docs_per_entity": args.docs},
        "clients": args.clients, "precision": args.precision, "server_start_s": start_s,
        "ingest": ingest, "http": http,
        "ratio_files_per_s": http["files_per_s"] / ingest["files_per_s"],
        "ratio_chunks_per_s": http["chunks_per_s"] / ingest["chunks_per_s"],
        "memory": memory,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"ingest: {ingest['files']} files, {ingest['chunks']} chunks in {ingest['seconds']:.1f}s "
          f"({ingest['files_per_s']:.2f} files/s, {ingest['chunks_per_s']:.1f} chunks/s; model load included)")
    print(f"http:   {http['files']} files, {http['chunks']} chunks in {http['seconds']:.1f}s "
          f"({http['files_per_s']:.2f} files/s, {http['chunks_per_s']:.1f} chunks/s; {args.clients} clients) "
          f"-> ratio {result['ratio_files_per_s']:.2f} (files/s), {result['ratio_chunks_per_s']:.2f} (chunks/s)")
    print(f"search while uploading: {http['searches']} queries, p50 {http['search_p50_ms']:.0f} ms, "
          f"p95 {http['search_p95_ms']:.0f} ms")
    print(f"memory: {memory['clients']} x {memory['mb_each']} MB concurrent uploads "
          f"({memory['status_codes']}) in {memory['seconds']:.1f}s: server RSS {memory['rss_baseline_mb']:.0f} MB "
          f"-> peak {memory['rss_peak_mb']:.0f} MB (+{memory['rss_growth_mb']:.0f} MB)")
    print(f"server start (model loaded): {start_s:.1f}s")


if __name__ == "__main__":
    main()
