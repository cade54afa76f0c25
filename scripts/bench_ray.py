"""`ingest --ray local` vs plain `ingest`, and the driver's capacity without the model.

One run measures, on a generated corpus (ragctl.bench.corpus, same seed = same bytes):

1. plain `ragctl ingest` and `ragctl ingest --ray local` of the same tree, each in a fresh
   process into a fresh store: chunks/s from the run's own report (model loading included
   in both), and their ratio;
2. the driver's capacity with embedding taken out of the picture, i.e. what one driver can
   absorb from any number of Ray actors:
   a. commit: the real CommitStage (locks, FAISS, chunk texts, mapping shards) fed finished
      documents, made of the corpus's real chunks (replicated under new paths to reach
      volume) and vectors from the benchmark-only stand-in encoder
      (`ragctl.bench.standin.StandInEncoder`; never reachable from `ragctl ingest`);
   b. what the driver does per file before an actor sees it (read the bytes, sha256), in
      chunks/s at the corpus's chunks per byte;
   c. the passage lookups of reuse (ray_reuse.DriverPassages) for new content, chunks/s;
   d. all together, as one driver runs them (threads, one GIL): 1 / (1/a + 1/b + 1/c).

    .venv/bin/python scripts/bench_ray.py [--entities 2 --docs 24] [--commit-docs 1600] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def ingest_cli(corpus: Path, store: Path, *extra: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "ragctl", "ingest", str(corpus), "--store", str(store), "--json", "-q", *extra]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
    wall = time.perf_counter() - t0
    if out.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr[-2000:]}")
    report = json.loads(out.stdout)
    chunks = sum(e["chunks"] for e in report["entities"].values())
    return {"chunks": chunks, "seconds": report["seconds"], "wall_s": round(wall, 2),
            "chunks_per_s": round(chunks / report["seconds"], 2), "model": report["model"],
            "failed": len(report["failures"])}


def parsed_docs(corpus: Path) -> list[tuple[str, str, list[str], int]]:
    """(entity, rel_path, chunks, size) of every corpus file, parsed and chunked here."""
    from ragctl.discovery import discover_entities
    from ragctl.ingest.options import Limits
    from ragctl.ingest.parse import OK, make_chunker, parse_file
    from ragctl.ingest.plan import ParseTask, source_files
    from ragctl.model_spec import resolve_model

    spec = resolve_model(None)
    chunker = make_chunker(str(spec.path), spec.max_tokens)
    docs = []
    for source in discover_entities(corpus, None):
        for f in source_files(source):
            size = f.abs_path.stat().st_size
            out = parse_file(ParseTask(source.entity_id, f.rel_path, str(f.abs_path), size), chunker, Limits())
            if out.status == OK:
                docs.append((source.entity_id, f.rel_path, out.chunks, size))
    return docs


def commit_capacity(docs: list[tuple[str, str, list[str], int]], total_docs: int, entities: int,
                    store: Path) -> dict[str, Any]:
    """The real commit stage, fed `total_docs` finished documents over `entities` entities."""
    from ragctl.bench.standin import StandInEncoder  # benchmark-only: no model
    from ragctl.ingest import messages as msg
    from ragctl.ingest.channel import Channel
    from ragctl.ingest.commit import CommitStage
    from ragctl.ingest.options import IngestOptions, RunContext
    from ragctl.ingest.report import Reporter
    from ragctl.storage import open_store
    from ragctl.storage.entity import EntityStore, PreparedDoc

    encoder = StandInEncoder()
    options = IngestOptions(store=store)
    storage = open_store(store, create=True)
    ctx = RunContext(options, encoder.spec, encoder.spec.identity(), storage, 1)
    stores: dict[str, EntityStore] = {}

    def store_for(eid: str) -> EntityStore:
        if eid not in stores:
            stores[eid] = EntityStore(storage, eid)
            stores[eid].check_model(ctx.identity)
        return stores[eid]

    items, chunks = [], 0
    for i in range(total_docs):  # real chunks, new paths and hashes: every document is new content
        _, rel, texts, size = docs[i % len(docs)]
        path = f"copy-{i // len(docs)}/{rel}"
        doc = PreparedDoc(path, hashlib.sha256(path.encode()).hexdigest(), size, 1, texts, encoder.encode(texts))
        items.append(msg.Embedded(f"e{i % entities}", doc, {"backend": "stand-in"}))
        chunks += len(texts)
    stop, interrupted = threading.Event(), threading.Event()
    inbox: Channel[Any] = Channel("settled", 256, stop)
    reporter = Reporter(lambda e: None)
    stage = CommitStage(ctx, store_for, reporter, {})
    t0 = time.perf_counter()
    thread = threading.Thread(target=stage.run, args=(inbox, stop, interrupted))
    thread.start()
    for item in items:
        inbox.put(item)
    inbox.end()
    thread.join()
    took = time.perf_counter() - t0
    indexed = sum(r.indexed for r in reporter.report.entities.values())
    assert indexed == total_docs, (indexed, total_docs, reporter.report.failures[:3])
    return {"docs": total_docs, "entities": entities, "chunks": chunks, "seconds": round(took, 2),
            "chunks_per_s": round(chunks / took, 1), "docs_per_s": round(total_docs / took, 1)}


def reuse_capacity(docs: list[tuple[str, str, list[str], int]], total_docs: int, entities: int,
                   store: Path) -> dict[str, Any]:
    """The driver's passage lookups under --ray (`ray_reuse.DriverPassages`: `admit` a batch of
    parsed documents, then `embedded` with the vectors coming back), in batches of 32 documents
    as the actors return them, on the store `commit_capacity` filled: every chunk made new
    (its passage is looked up in the run's memory and in the entity's chunks.sqlite, found in
    neither, sent to the model once, remembered)."""
    from ragctl.bench.standin import StandInEncoder  # benchmark-only: no model
    from ragctl.chunking import CHUNKER_VERSION
    from ragctl.ingest.parse import OK, ParseOutcome
    from ragctl.ingest.ray_reuse import DriverPassages
    from ragctl.passages import chunk_signatures
    from ragctl.storage import open_store

    encoder = StandInEncoder()
    driver = DriverPassages(open_store(store, create=False), {})
    batches: list[list[tuple[ParseOutcome, frozenset[str]]]] = [[]]
    chunks = 0
    for i in range(total_docs):
        _, rel, texts, size = docs[i % len(docs)]
        texts = [f"{t} (new {i})" for t in texts]  # a passage no run or store has seen
        out = ParseOutcome(f"e{i % entities}", f"new-{i}/{rel}", OK, chunks=texts, size=size, chunker=CHUNKER_VERSION)
        out.keys, out.near = chunk_signatures(texts)  # made by the actors' parse calls in a run
        if len(batches[-1]) == 32:
            batches.append([])
        batches[-1].append((out, frozenset()))
        chunks += len(texts)
    # every chunk is new, so an embed call's rows are the batch's chunks in order: their
    # stand-in vectors are made before the timing
    vectors = [encoder.encode([out.embed_text(i) for out, _ in batch for i in range(len(out.chunks))])
               for batch in batches]
    t0 = time.perf_counter()
    sent = 0
    for batch, stand_in in zip(batches, vectors):
        _, rows, _ = driver.admit(batch)
        assert len(rows.texts) == len(stand_in), (len(rows.texts), len(stand_in))
        sent += len(rows.texts)
        driver.embedded(rows, stand_in)
    took = time.perf_counter() - t0
    return {"docs": total_docs, "chunks": chunks, "sent_to_model": sent, "seconds": round(took, 2),
            "chunks_per_s": round(chunks / took, 1)}


def prepare_capacity(corpus: Path, chunks_per_byte: float, rounds: int = 5) -> dict[str, Any]:
    """What the Ray stage does per file on the driver: one bounded read and a sha256."""
    from ragctl.ingest.parse import read_snapshot

    files = [p for p in corpus.rglob("*") if p.is_file()]
    total = 0
    t0 = time.perf_counter()
    for _ in range(rounds):
        for p in files:
            data, size, _ = read_snapshot(str(p), 1 << 30)
            hashlib.sha256(data).hexdigest()
            total += size
    took = time.perf_counter() - t0
    return {"files": len(files) * rounds, "mb_per_s": round(total / took / 1e6, 1),
            "files_per_s": round(len(files) * rounds / took, 1),
            "chunks_per_s": round(total * chunks_per_byte / took, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entities", type=int, default=2)
    ap.add_argument("--docs", type=int, default=24, help="documents per entity")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--commit-docs", type=int, default=1600, help="documents fed to the commit stage")
    ap.add_argument("--commit-entities", type=int, default=4)
    ap.add_argument("--skip-ingest", action="store_true", help="only the driver capacity")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from ragctl.bench.corpus import generate_corpus

    result: dict[str, Any] = {"cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        base = Path(tmp)
        info = generate_corpus(base / "corpus", args.entities, args.docs, seed=args.seed)
        result["corpus"] = {"entities": info.entities, "documents": info.documents, "bytes": info.bytes,
                            "formats": info.formats}
        if not args.skip_ingest:
            plain = ingest_cli(base / "corpus", base / "plain")
            print(f"plain ingest:        {plain['chunks']} chunks in {plain['seconds']:.1f}s = "
                  f"{plain['chunks_per_s']} chunks/s ({plain['model'].get('backend')} {plain['model'].get('precision')})",
                  flush=True)
            on_ray = ingest_cli(base / "corpus", base / "ray", "--ray", "local")
            print(f"ingest --ray local:  {on_ray['chunks']} chunks in {on_ray['seconds']:.1f}s = "
                  f"{on_ray['chunks_per_s']} chunks/s ({on_ray['model'].get('backend')} "
                  f"{on_ray['model'].get('precision')}; {on_ray['model'].get('ray')})", flush=True)
            result["plain"], result["ray_local"] = plain, on_ray
            result["ratio"] = round(on_ray["chunks_per_s"] / plain["chunks_per_s"], 3)
            print(f"ratio ray/plain: {result['ratio']}", flush=True)
        docs = parsed_docs(base / "corpus")
        chunks_per_byte = sum(len(d[2]) for d in docs) / max(1, sum(d[3] for d in docs))
        result["chunks_per_doc"] = round(sum(len(d[2]) for d in docs) / max(1, len(docs)), 2)
        commit = commit_capacity(docs, args.commit_docs, args.commit_entities, base / "commit")
        print(f"driver commit (stand-in vectors): {commit['chunks']} chunks, {commit['docs']} docs in "
              f"{commit['seconds']}s = {commit['chunks_per_s']} chunks/s", flush=True)
        prepare = prepare_capacity(base / "corpus", chunks_per_byte)
        print(f"driver read+hash: {prepare['mb_per_s']} MB/s = {prepare['chunks_per_s']} chunks/s", flush=True)
        reuse = reuse_capacity(docs, args.commit_docs, args.commit_entities, base / "commit")
        print(f"driver passage lookups (new passages): {reuse['chunks']} chunks in {reuse['seconds']}s = "
              f"{reuse['chunks_per_s']} chunks/s", flush=True)
        combined = 1 / (1 / commit["chunks_per_s"] + 1 / prepare["chunks_per_s"] + 1 / reuse["chunks_per_s"])
        result.update(commit=commit, prepare=prepare, reuse=reuse, driver_chunks_per_s=round(combined, 1))
        print(f"driver capacity (commit + read/hash + passage lookups, one process): {combined:.0f} chunks/s",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
