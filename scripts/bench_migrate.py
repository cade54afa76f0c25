#!/usr/bin/env python
"""Benchmark `migrate_to_sharded` on a generated monolithic store.

    python scripts/bench_migrate.py [--records 1000000] [--entities 1000] [--dir DIR] [--keep]

Writes a legacy `doc_id_name_mapping.json` of realistic records (doc_id, entity_id, name, path,
content_hash, chunk_count, first_vector_id, size, mtime_ns, parser, indexed_at) the way a
monolithic store does (one compact JSON object), plus a few records without an entity id, then
runs the migration in a fresh child process and prints its wall time and peak RSS (the child's
`ru_maxrss`, so the generator's memory is not counted). Generation streams too.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WORDS = "alpha beta gamma delta policy report notes handbook invoice summary roadmap minutes".split()
EXTS = [".md", ".pdf", ".txt", ".html", ".docx", ".csv"]
RESIDUAL = 10

CHILD = """
import json, resource, sys, time
sys.path.insert(0, {repo!r})
t0 = time.perf_counter()
from ragctl.migrate import migrate_to_sharded
report = migrate_to_sharded({store!r})
elapsed = time.perf_counter() - t0
out = report.to_json()
out.pop("per_entity")
out["elapsed"] = elapsed
out["maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(out))
"""


def generate(store: Path, records: int, entities: int, seed: int = 1) -> int:
    """Stream a legacy mapping file; returns its size in bytes."""
    rng = random.Random(seed)
    store.mkdir(parents=True, exist_ok=True)
    (store / "store.json").write_text(
        json.dumps({"format_version": 1, "mapping_mode": "monolithic", "created_at": "2024-01-01T00:00:00Z"})
    )
    next_vector = [0] * entities
    path = store / "doc_id_name_mapping.json"
    with open(path, "w", encoding="utf-8") as out:
        out.write("{")
        for i in range(records + RESIDUAL):
            doc_id = f"{rng.getrandbits(128):032x}"
            name = f"{rng.choice(WORDS)}-{i}{rng.choice(EXTS)}"
            record = {
                "doc_id": doc_id,
                "name": name,
                "path": f"{rng.choice(WORDS)}/{rng.choice(WORDS)}/{name}",
                "content_hash": hashlib.sha256(doc_id.encode()).hexdigest(),
                "chunk_count": rng.randint(1, 40),
                "size": rng.randint(200, 5_000_000),
                "mtime_ns": 1_700_000_000_000_000_000 + rng.getrandbits(40),
                "parser": "native",
                "indexed_at": "2024-05-01T12:00:00Z",
            }
            if i < records:
                e = i % entities
                record["entity_id"] = f"tenant-{e:05d}"
                record["first_vector_id"] = next_vector[e]
                next_vector[e] += record["chunk_count"]
            else:  # a few records a real legacy file may hold without a usable entity id
                record["entity_id"] = None if i % 2 else "../bad"
                record["first_vector_id"] = 0
            if i:
                out.write(",")
            out.write(json.dumps(doc_id))
            out.write(":")
            out.write(json.dumps(record, separators=(",", ":"), sort_keys=True))
        out.write("}")
    return path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--entities", type=int, default=1_000)
    parser.add_argument("--dir", type=Path, default=None, help="Work directory [default: a temp dir].")
    parser.add_argument("--keep", action="store_true", help="Keep the migrated store.")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-migrate-", dir=args.dir))
    store = work / "store"
    try:
        t0 = time.perf_counter()
        size = generate(store, args.records, args.entities)
        print(f"generated {args.records:,} records over {args.entities:,} entities "
              f"(+{RESIDUAL} without entity): {size / 1e6:.0f} MB in {time.perf_counter() - t0:.1f}s", flush=True)
        os.sync()  # a real legacy file is on disk already: don't bill its write-back to the migration
        child = subprocess.run(
            [sys.executable, "-c", CHILD.format(repo=str(REPO), store=str(store))],
            check=True, capture_output=True, text=True,
        )
        result = json.loads(child.stdout)
        shards = list((store / "doc_id_name_mapping").glob("*.json"))
        print(
            f"migrated {result['migrated']:,} records into {result['entities']:,} shards "
            f"({len(shards):,} files), residual {result['residual']}, conflicts {result['conflicts']}"
        )
        print(f"time: {result['elapsed']:.1f}s  peak RSS: {result['maxrss_kib'] / 1024:.0f} MiB  "
              f"phases: {result['phases']}")
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        print(f"child CPU: user {children.ru_utime:.1f}s sys {children.ru_stime:.1f}s; cores: {os.cpu_count()}")
        print(json.dumps({"records": args.records, "entities": args.entities, "legacy_bytes": size, **result}))
    finally:
        if args.keep:
            print(f"store kept at {store}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
