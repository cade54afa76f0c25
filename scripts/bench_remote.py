"""Remote embedding service benchmark (docs/remote-embeddings.md).

A stand-in OpenAI-compatible server (tests/embed_server.py) runs on 127.0.0.1 in this process
and adds LATENCY seconds to every request. By default it returns CHEAP PSEUDO-VECTORS (a
hash-seeded random unit vector per text, no model) so that what is measured is the client:
how many requests it keeps in flight. `--real-model` makes it encode with the packaged model
instead, which on this 2-core machine makes the server's own CPU the limit.

Measured:
  1. sequential (ragctl.bench.sequential: one document at a time, its chunks in one request at
     a time) vs the engine (`ingest` with --embed-url: batches across documents and entities,
     --embed-concurrency requests in flight) for entities x documents = 3x2, 5x4, 10x10;
  2. the engine's throughput for --embed-concurrency 1, 2, 4, 8, 16 on the 10x10 corpus, and
     the client alone (`encode` over 1,024 texts in engine-sized windows, no parsing).
Both build the same stores (documents and chunk counts are compared).

    .venv/bin/python scripts/bench_remote.py [--latency 0.05] [--batch 32] [--sweep-batch 8] [--real-model] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ragctl.bench.corpus import generate_corpus  # noqa: E402
from ragctl.bench.sequential import ingest_sequential  # noqa: E402
from ragctl.discovery import discover_entities  # noqa: E402
from ragctl.ingest import IngestOptions, ingest  # noqa: E402
from ragctl.model_config import ModelConfig  # noqa: E402
from ragctl.runtimes.remote import RemoteEmbedder, RemoteSettings, remote_spec  # noqa: E402
from tests.embed_server import EmbedServer, pseudo_vectors  # noqa: E402

SHAPES = [(3, 2), (5, 4), (10, 10)]
CONCURRENCY = [1, 2, 4, 8, 16]


def embedder_for(url: str, concurrency: int, batch: int) -> RemoteEmbedder:
    settings = RemoteSettings(url=url, concurrency=concurrency, batch=batch)
    return RemoteEmbedder(remote_spec(None, settings), settings)


def run_engine(root: Path, store: Path, url: str, concurrency: int, batch: int, workers: int) -> dict:
    settings = RemoteSettings(url=url, concurrency=concurrency, batch=batch)
    embedder = RemoteEmbedder(remote_spec(None, settings), settings)
    options = IngestOptions(store=store, workers=workers, model=ModelConfig(remote=settings),
                            embed_window=max(256, concurrency * batch))
    started = time.perf_counter()
    report = ingest(discover_entities(root, None), options, embedder=embedder)
    seconds = time.perf_counter() - started
    embedder.close()
    return {"seconds": seconds, "chunks": report.total_chunks, "failed": len(report.failures), "requests": embedder.requests}


def run_sequential(root: Path, store: Path, url: str, batch: int) -> dict:
    embedder = embedder_for(url, 1, batch)
    started = time.perf_counter()
    report = ingest_sequential(discover_entities(root, None), store, embedder)
    seconds = time.perf_counter() - started
    embedder.close()
    return {"seconds": seconds, "chunks": report.total_chunks, "failed": len(report.failures), "requests": embedder.requests}


def encode_only(url: str, concurrency: int, batch: int, n: int = 1024) -> dict:
    """The client alone: `encode` over n ~200-token texts in engine-sized windows (no parsing)."""
    texts = [f"text {i}: " + " ".join(f"word{(i * 7 + j) % 501}" for j in range(150)) for i in range(n)]
    embedder = embedder_for(url, concurrency, batch)
    window = max(256, concurrency * batch)
    started = time.perf_counter()
    for start in range(0, n, window):
        embedder.encode(texts[start:start + window])
    seconds = time.perf_counter() - started
    embedder.close()
    return {"seconds": seconds, "requests": embedder.requests}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency", type=float, default=0.05, help="seconds the server adds to every request")
    ap.add_argument("--batch", type=int, default=32, help="--embed-batch for the comparison")
    ap.add_argument("--concurrency", type=int, default=8, help="--embed-concurrency for the comparison")
    ap.add_argument("--sweep-batch", type=int, default=8, help="--embed-batch for the concurrency sweep")
    ap.add_argument("--workers", type=int, default=2, help="parse workers of the engine")
    ap.add_argument("--real-model", action="store_true", help="the server encodes with the packaged model")
    ap.add_argument("--shapes", default=",".join(f"{e}x{d}" for e, d in SHAPES))
    ap.add_argument("--no-sweep", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    if args.real_model:
        from ragctl.embedding import load_embedder

        encode = load_embedder(ModelConfig()).encode
    else:
        encode = pseudo_vectors
    results: dict = {"latency_s": args.latency, "server": "packaged model" if args.real_model else "pseudo-vectors",
                     "batch": args.batch, "concurrency": args.concurrency, "compare": [], "sweep": [], "encode_only": []}
    tmp = Path(tempfile.mkdtemp(prefix="bench-remote-"))
    try:
        with EmbedServer(encode, latency_s=args.latency) as server:
            for shape in args.shapes.split(","):
                e, d = (int(x) for x in shape.split("x"))
                root = tmp / f"corpus-{e}x{d}"
                generate_corpus(root, e, d, seed=1)
                seq = run_sequential(root, tmp / f"seq-{e}x{d}", server.url, args.batch)
                eng = run_engine(root, tmp / f"eng-{e}x{d}", server.url, args.concurrency, args.batch, args.workers)
                assert seq["chunks"] == eng["chunks"], (seq, eng)
                row = {"entities": e, "docs": d, "chunks": eng["chunks"], "sequential_s": round(seq["seconds"], 2),
                       "sequential_requests": seq["requests"], "engine_s": round(eng["seconds"], 2),
                       "engine_requests": eng["requests"], "speedup": round(seq["seconds"] / eng["seconds"], 2)}
                results["compare"].append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
            if not args.no_sweep:
                e, d = SHAPES[-1]
                root = tmp / f"corpus-{e}x{d}"
                if not root.exists():
                    generate_corpus(root, e, d, seed=1)
                for c in CONCURRENCY:
                    server.max_in_flight = 0
                    eng = run_engine(root, tmp / f"sweep-c{c}", server.url, c, args.sweep_batch, args.workers)
                    row = {"concurrency": c, "batch": args.sweep_batch, "seconds": round(eng["seconds"], 2),
                           "chunks": eng["chunks"], "requests": eng["requests"],
                           "chunks_per_s": round(eng["chunks"] / eng["seconds"], 1), "max_in_flight": server.max_in_flight}
                    results["sweep"].append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
            if not args.no_sweep:
                for c in CONCURRENCY:
                    server.max_in_flight = 0
                    enc = encode_only(server.url, c, args.sweep_batch)
                    row = {"concurrency": c, "batch": args.sweep_batch, "texts": 1024, "seconds": round(enc["seconds"], 2),
                           "requests": enc["requests"], "texts_per_s": round(1024 / enc["seconds"], 1),
                           "max_in_flight": server.max_in_flight}
                    results["encode_only"].append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"server: {results['server']}, +{args.latency * 1000:.0f} ms per request")
        print("| entities x docs | chunks | sequential s (requests) | engine s (requests) | speedup |")
        print("|---|---|---|---|---|")
        for r in results["compare"]:
            print(f"| {r['entities']}x{r['docs']} | {r['chunks']} | {r['sequential_s']} ({r['sequential_requests']}) | "
                  f"{r['engine_s']} ({r['engine_requests']}) | {r['speedup']}x |")
        if results["sweep"]:
            print("\n| --embed-concurrency | requests | seconds | chunks/s | max in flight |")
            print("|---|---|---|---|---|")
            for r in results["sweep"]:
                print(f"| {r['concurrency']} | {r['requests']} | {r['seconds']} | {r['chunks_per_s']} | {r['max_in_flight']} |")
        if results["encode_only"]:
            print("\n| --embed-concurrency (encode only) | requests | seconds | texts/s | max in flight |")
            print("|---|---|---|---|---|")
            for r in results["encode_only"]:
                print(f"| {r['concurrency']} | {r['requests']} | {r['seconds']} | {r['texts_per_s']} | {r['max_in_flight']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
