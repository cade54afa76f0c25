"""Commit cost as an entity grows (store format 3: segments + mapping log).

One entity grows to --chunks chunks in commits of --docs documents x --per-doc chunks
(random unit vectors of --dim, synthetic text), straight through EntityStore.commit; gc() at
the end (the end of an ingest). Each chunk's passage key and near-duplicate signature are made
before the timed commit, as an ingest's parse workers make them. Reports commit time at the start and at the end (p50, mean
with compactions and folds, max), how long each commit held the entity's lock (the
`on_lock_held` hook: the longest single hold, and the most one commit held it in total, vs the
commit's own time: merges run outside the lock), bytes written in total (wchar of /proc/self/io: every
write() this process made, sqlite included) and per kind of file vs the final store size, and
peak RSS. No model is needed.

    python scripts/bench_commits.py --chunks 1000000 --json out.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORDS = ("storage index vector segment commit shard mapping tenant entity chunk query latency "
         "compaction orphan manifest checksum durable atomic replace fsync journal recall").split()


def wchar() -> int:
    with open("/proc/self/io") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("wchar:"))


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chunks", type=int, default=200_000)
    ap.add_argument("--docs", type=int, default=64)
    ap.add_argument("--per-doc", type=int, default=10)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--window", type=int, default=20, help="commits averaged at the start and at the end")
    ap.add_argument("--index", default="auto", help="the entity's index kind (ingest --index)")
    ap.add_argument("--store", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from ragctl.storage import segments
    from ragctl.storage.entity import EntityStore, PreparedDoc
    from ragctl.storage.json_storage import open_store
    from ragctl.storage.layout import open_store_manifest

    written = {"segments": 0, "mapping": 0}
    real_write_segment = segments.write_segment

    def counting_write_segment(path, ids, vectors, kind="flat", **options):
        entry = real_write_segment(path, ids, vectors, kind, **options)
        written["segments"] += Path(path).stat().st_size
        return entry

    segments.write_segment = counting_write_segment

    root = args.store or Path(tempfile.mkdtemp(prefix="bench-commits-")) / "store"
    if root.exists():
        shutil.rmtree(root)
    open_store_manifest(root)
    es = EntityStore(open_store(root, create=True), "big", index_kind=args.index)
    model = {"name": "bench", "digest": "b" * 64, "dim": args.dim}
    rng = np.random.default_rng(0)
    n_commits = args.chunks // (args.docs * args.per_doc)
    try:  # a release with passage keys and near-duplicate signatures (issue 26)
        from ragctl.passages import chunk_signatures as signatures
    except ImportError:  # an older release, for comparisons
        signatures = None
    times: list[float] = []
    held: list[float] = []  # per commit: seconds the entity's lock was held, all holds together
    holds: list[float] = []  # every single hold of the lock
    longest_hold = 0.0
    es.on_lock_held = holds.append
    checkpoints = []
    w0 = wchar()
    shard = root / "doc_id_name_mapping" / "big.json"
    t_start = time.perf_counter()
    for c in range(n_commits):
        docs = []
        vecs = rng.standard_normal((args.docs * args.per_doc, args.dim)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        for d in range(args.docs):
            n = c * args.docs + d
            chunks = [" ".join(WORDS[(n * 7 + i * 3 + k) % len(WORDS)] for k in range(24)) + f" doc{n} part{i}"
                      for i in range(args.per_doc)]
            path = f"dir{n % 97}/doc{n}.md"
            doc = PreparedDoc(path, hashlib.sha256(path.encode()).hexdigest(), 1000, n, chunks,
                              vecs[d * args.per_doc:(d + 1) * args.per_doc], "bench")
            if signatures is not None:  # made before the commit, as an ingest's parse workers do
                doc.keys, doc.near = signatures(chunks)
            docs.append(doc)
        log_before = (shard.with_name(shard.name + ".log").stat().st_size
                      if shard.with_name(shard.name + ".log").exists() else 0)
        shard_before = shard.stat().st_mtime_ns if shard.exists() else None
        t = time.perf_counter()
        first_hold = len(holds)
        es.commit(model, docs)
        times.append(time.perf_counter() - t)
        held.append(sum(holds[first_hold:]))
        longest_hold = max([longest_hold, *holds[first_hold:]])
        log = shard.with_name(shard.name + ".log")
        log_after = log.stat().st_size if log.exists() else 0
        if shard.exists() and shard.stat().st_mtime_ns != shard_before:
            written["mapping"] += shard.stat().st_size + log_after
        else:
            written["mapping"] += max(0, log_after - log_before)
        if (c + 1) % max(1, n_commits // 20) == 0 or c == n_commits - 1:
            vectors = (c + 1) * args.docs * args.per_doc
            recent = times[-args.window:]
            checkpoints.append({"vectors": vectors, "p50_ms": round(statistics.median(recent) * 1000, 1),
                                "mean_ms": round(statistics.fmean(recent) * 1000, 1),
                                "segments": len(es.meta()["vectors"]["segments"]),
                                "elapsed_s": round(time.perf_counter() - t_start, 1)})
            print(json.dumps(checkpoints[-1]), file=sys.stderr, flush=True)
    t = time.perf_counter()
    first_hold = len(holds)
    es.gc()
    gc_s = time.perf_counter() - t
    gc_held = sum(holds[first_hold:])
    total_written = wchar() - w0
    final = dir_bytes(root)
    seg_final = dir_bytes(root / "entities" / "big" / "segments")
    w = args.window
    start, end = times[:w], times[-w:]
    out = {
        "chunks": n_commits * args.docs * args.per_doc,
        "commits": n_commits,
        "commit_size": f"{args.docs} docs x {args.per_doc} chunks, dim {args.dim}",
        "index": args.index,
        "start_p50_ms": round(statistics.median(start) * 1000, 1),
        "end_p50_ms": round(statistics.median(end) * 1000, 1),
        "end_over_start_p50": round(statistics.median(end) / statistics.median(start), 2),
        "start_mean_ms": round(statistics.fmean(start) * 1000, 1),
        "end_mean_ms": round(statistics.fmean(end) * 1000, 1),
        "mean_all_ms": round(statistics.fmean(times) * 1000, 1),
        "max_ms": round(max(times) * 1000, 1),
        "slowest_commits_ms": sorted((round(x * 1000) for x in times), reverse=True)[:8],
        "max_lock_held_per_commit_ms": round(max(held) * 1000, 1),
        "max_single_lock_hold_ms": round(longest_hold * 1000, 1),
        "lock_held_share_of_commit_time": round(sum(held) / sum(times), 3),
        "slowest_commits_lock_held_ms": [round(held[i] * 1000) for i in
                                         sorted(range(len(times)), key=times.__getitem__, reverse=True)[:8]],
        "final_gc_s": round(gc_s, 2),
        "final_gc_lock_held_s": round(gc_held, 2),
        "bytes_written_total": total_written,
        "final_store_bytes": final,
        "write_amplification_total": round(total_written / final, 2),
        "segment_bytes_written": written["segments"],
        "segment_bytes_final": seg_final,
        "write_amplification_segments": round(written["segments"] / max(1, seg_final), 2),
        "mapping_bytes_written": written["mapping"],
        "mapping_bytes_final": shard.stat().st_size,
        "write_amplification_mapping": round(written["mapping"] / max(1, shard.stat().st_size), 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "wall_s": round(time.perf_counter() - t_start, 1),
        "checkpoints": checkpoints,
        "store": str(root),
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
