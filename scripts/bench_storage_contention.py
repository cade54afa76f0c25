#!/usr/bin/env python
"""Storage contention: N threads writing N different entities vs N threads writing one entity.

Each thread makes K commits of one small document (C chunks, random unit vectors of DIM
dimensions) through EntityStore.commit, the same call the ingest's committer makes. Writers
of different entities take different locks and should scale; writers of one entity serialise on
its mapping-shard lock. The contention ratio is same-entity wall time / different-entities wall
time (1.0 = no contention; N = fully serial with no overlap at all). For reference it also
times one thread making all N*K commits into one entity: the best a lock can do for one entity
(same-entity wall / serial wall > 1 is lock overhead: wake-up latency, unfairness).

    python scripts/bench_storage_contention.py [--threads 8] [--docs 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from ragctl.storage.entity import EntityStore, PreparedDoc
from ragctl.storage.json_storage import JSONStorage
from ragctl.storage.layout import open_store_manifest
from ragctl.verify import verify_store


def make_doc(thread: int, k: int, chunks: int, dim: int, rng: np.random.Generator) -> PreparedDoc:
    vectors = rng.standard_normal((chunks, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    text = f"thread {thread} doc {k}"
    return PreparedDoc(f"t{thread}/d{k}.md", f"{thread:04d}{k:06d}".ljust(64, "0"), len(text), 0, [text] * chunks, vectors)


def run(root: Path, threads: int, docs: int, chunks: int, dim: int, same_entity: bool) -> dict:
    open_store_manifest(root)
    model = {"name": "bench", "digest": "b" * 64, "dim": dim}
    barrier = threading.Barrier(threads + 1)
    latencies: list[float] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        try:
            store = EntityStore(JSONStorage(root), "shared" if same_entity else f"ent-{t}")
            rng = np.random.default_rng(t)
            prepared = [make_doc(t, k, chunks, dim, rng) for k in range(docs)]
            mine = []
            barrier.wait()
            for doc in prepared:
                t0 = time.perf_counter()
                store.commit(model, [doc])
                mine.append(time.perf_counter() - t0)
            with lock:
                latencies.extend(mine)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    started = time.perf_counter()
    for w in workers:
        w.join()
    wall = time.perf_counter() - started
    if errors:
        raise errors[0]
    report = verify_store(root)
    documents = sum(e["documents"] for e in report["entities"].values())
    if not report["ok"] or documents != threads * docs:
        raise SystemExit(f"store inconsistent after the run: {json.dumps(report)[:500]}")
    latencies.sort()
    return {
        "wall_s": round(wall, 3),
        "commits": len(latencies),
        "commits_per_s": round(len(latencies) / wall, 1),
        "commit_ms_p50": round(1000 * statistics.median(latencies), 2),
        "commit_ms_p95": round(1000 * latencies[int(0.95 * (len(latencies) - 1))], 2),
        "commit_ms_max": round(1000 * latencies[-1], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=8, help="writer threads (N) [8]")
    parser.add_argument("--docs", type=int, default=20, help="commits per thread, one document each (K) [20]")
    parser.add_argument("--chunks", type=int, default=2, help="chunks (vectors) per document [2]")
    parser.add_argument("--dim", type=int, default=384, help="vector dimension [384]")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each scenario; the median is reported [3]")
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    args = parser.parse_args(argv)

    scenarios = (  # name, threads, commits per thread, one entity?
        ("different_entities", args.threads, args.docs, False),
        ("same_entity", args.threads, args.docs, True),
        ("serial_one_entity", 1, args.threads * args.docs, True),
    )
    results: dict[str, list[dict]] = {name: [] for name, *_ in scenarios}
    with tempfile.TemporaryDirectory(prefix="ragctl-bench-") as tmp:
        for i in range(args.repeat):  # interleaved, so a noisy neighbour hits every scenario
            for name, threads, docs, same in scenarios:
                root = Path(tmp) / f"{name}-{i}"
                results[name].append(run(root, threads, docs, args.chunks, args.dim, same))

    def median_run(runs: list[dict]) -> dict:
        return sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]

    diff, same = median_run(results["different_entities"]), median_run(results["same_entity"])
    serial = median_run(results["serial_one_entity"])
    out = {
        "threads": args.threads,
        "commits_per_thread": args.docs,
        "chunks_per_doc": args.chunks,
        "dim": args.dim,
        "repeat": args.repeat,
        "different_entities": diff,
        "same_entity": same,
        "serial_one_entity": serial,
        "contention_ratio": round(same["wall_s"] / diff["wall_s"], 2),
        "same_entity_vs_serial": round(same["wall_s"] / serial["wall_s"], 2),
        "all_wall_s": {k: [r["wall_s"] for r in v] for k, v in results.items()},
    }
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(f"{args.threads} threads x {args.docs} commits ({args.chunks} x {args.dim}-d vectors each), median of {args.repeat}:")
        for name, r in (("different entities", diff), ("same entity", same), ("1 thread, 1 entity", serial)):
            print(
                f"  {name:<18} {r['wall_s']:7.3f} s  {r['commits_per_s']:7.1f} commits/s  "
                f"commit p50 {r['commit_ms_p50']:.1f} ms, p95 {r['commit_ms_p95']:.1f} ms, max {r['commit_ms_max']:.1f} ms"
            )
        print(f"  contention ratio (same / different): {out['contention_ratio']:.2f}")
        print(f"  same entity / serial (lock overhead): {out['same_entity_vs_serial']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
