"""Benchmark `ragctl watch`: a burst that rewrites every file of a tree (a `git checkout`), the
rename of its directory, and the latency from a saved edit to a searchable document.

The watch runs in this process (`ragctl.ingest.watch.Watch`, the engine `ragctl watch` runs), on
real file events, with the real model or the benchmark stand-in (`--embedder standin`: vectors
from sha256, no model; it measures everything but the model). A document counts as searchable
when its FileDone event arrives: the engine reports a file only after its commit, and a commit
is what a search sees. The end cross-checks the store's records against the tree.

    python scripts/bench_watch.py --files 10000 --embedder standin     # the 10,000-file burst
    python scripts/bench_watch.py --files 200 --edits 30               # latency with the real model
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from ragctl import events as ev
from ragctl.discovery import EntitySource
from ragctl.ingest import IngestOptions
from ragctl.ingest.watch import Watch


def text(i: int, version: int) -> str:
    return (f"# Note {i} (version {version})\n\nThis is note number {i}, version {version}, about "
            f"topic {i % 97} and item {i * 7919 % 10007}. It has a few sentences so that it makes one chunk.\n")


class Events:
    """When each path was last reported, per status (the watch's sink)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done: dict[str, tuple[float, str]] = {}
        self.counts: dict[str, int] = defaultdict(int)
        self.embedded = 0
        self.batches = 0
        self.cond = threading.Condition(self.lock)
        self.ready = threading.Event()

    def __call__(self, event: Any) -> None:
        with self.cond:
            if isinstance(event, ev.FileDone):
                self.done[event.path] = (time.monotonic(), str(event.status))
                self.counts[str(event.status)] += 1
                self.cond.notify_all()
            elif isinstance(event, ev.ChunksEmbedded):
                self.embedded += event.count
            elif type(event).__name__ == "BatchStarted":
                self.batches += 1
            elif isinstance(event, ev.Phase) and "for changes" in event.message:
                self.ready.set()

    def snapshot(self) -> tuple[dict[str, int], int, int]:
        with self.lock:
            return dict(self.counts), self.embedded, self.batches

    def wait(self, paths: list[str], status: str, since: float, timeout: float) -> float:
        """Until every path was reported with `status` after `since`; the time of the last one."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                times = [self.done.get(p) for p in paths]
                if all(t is not None and t[0] >= since and t[1] == status for t in times):
                    return max(t[0] for t in times if t is not None)
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = sum(1 for t in times if t is None or t[0] < since or t[1] != status)
                    raise TimeoutError(f"{missing} of {len(paths)} not {status} within {timeout} s")
                self.cond.wait(min(left, 0.5))


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10_000, help="files in the tree (the burst rewrites all)")
    parser.add_argument("--edits", type=int, default=20, help="single-file edits for the latency figures")
    parser.add_argument("--gap", type=float, default=1.5, help="seconds between two edits")
    parser.add_argument("--debounce-ms", type=int, default=500)
    parser.add_argument("--embedder", choices=("real", "standin"), default="real")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-watch-"))
    tree = work / "root" / "docs" / "notes"
    tree.mkdir(parents=True, exist_ok=True)
    for i in range(args.files):
        (tree / f"n{i:05}.md").write_text(text(i, 0))
    paths = [f"notes/n{i:05}.md" for i in range(args.files)]
    if args.embedder == "standin":
        from ragctl.bench.standin import StandInEncoder

        embedder: Any = StandInEncoder()
    else:
        from ragctl.embedding import load_embedder
        from ragctl.model_config import ModelConfig

        embedder = load_embedder(ModelConfig())
    events = Events()
    options = IngestOptions(store=work / "store", workers=args.workers)
    source = EntitySource("docs", work / "root" / "docs")
    watch = Watch([source], options, events, discover_root=work / "root", debounce_ms=args.debounce_ms,
                  embedder=embedder)
    results: dict[str, Any] = {"files": args.files, "embedder": args.embedder, "debounce_ms": args.debounce_ms}
    report: list[Any] = []
    started = time.monotonic()
    runner = threading.Thread(target=lambda: report.append(watch.execute()), name="watch", daemon=True)
    runner.start()
    timeout = max(600.0, args.files * 0.5)
    while not events.ready.wait(1.0):
        if not runner.is_alive() or time.monotonic() - started > timeout:
            sys.exit(f"the watch ended before the initial ingest finished: {report[0].error if report else 'timeout'}")
    results["initial_ingest_s"] = round(time.monotonic() - started, 2)
    print(f"initial ingest of {args.files} files: {results['initial_ingest_s']} s", file=sys.stderr)

    # 1. a checkout that rewrites every file
    before = events.snapshot()
    t0 = time.monotonic()
    for i in range(args.files):
        (tree / f"n{i:05}.md").write_text(text(i, 1))
    written = time.monotonic()
    last = events.wait(paths, "updated", t0, timeout)
    after = events.snapshot()
    results["burst"] = {
        "write_s": round(written - t0, 2), "searchable_after_last_write_s": round(last - written, 2),
        "total_s": round(last - t0, 2), "statuses": delta(before[0], after[0]),
        "chunks_embedded": after[1] - before[1], "batches": after[2] - before[2],
    }
    print(f"burst: {results['burst']}", file=sys.stderr)

    # 2. the directory renamed: every file moves, nothing is embedded again
    before = events.snapshot()
    t0 = time.monotonic()
    tree.rename(tree.with_name("renamed"))
    tree = tree.with_name("renamed")
    moved_paths = [p.replace("notes/", "renamed/", 1) for p in paths]
    last = events.wait(moved_paths, "moved", t0, timeout)
    after = events.snapshot()
    results["directory_rename"] = {"searchable_s": round(last - t0, 2), "statuses": delta(before[0], after[0]),
                                   "chunks_embedded": after[1] - before[1], "batches": after[2] - before[2]}
    print(f"directory rename: {results['directory_rename']}", file=sys.stderr)

    # 3. latency: one saved edit at a time
    latencies = []
    for k in range(args.edits):
        i = (k * 37) % args.files
        time.sleep(args.gap)
        t0 = time.monotonic()
        (tree / f"n{i:05}.md").write_text(text(i, 2 + k))
        last = events.wait([moved_paths[i]], "updated", t0, 120)
        latencies.append(last - t0)
    if latencies:
        ordered = sorted(latencies)
        results["latency_s"] = {
            "edits": len(latencies), "p50": round(statistics.median(ordered), 3),
            "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3),
            "max": round(ordered[-1], 3), "min": round(ordered[0], 3),
        }
        print(f"latency edit -> searchable: {results['latency_s']}", file=sys.stderr)

    watch.run.stop.set()
    runner.join(120)
    final = report[0].to_json() if report else {}
    results["report_entities"] = final.get("entities")
    # cross-check: every file of the tree has a record with its current content
    from ragctl.storage import open_store
    from ragctl.storage.entity import EntityStore

    records = {r["path"]: r for r in EntityStore(open_store(options.store, create=False), "docs").records().values()}
    wrong = [p for p in moved_paths if p not in records or records[p]["content_hash"]
             != hashlib.sha256((tree.parent / p).read_bytes()).hexdigest()]
    results["records_in_sync"] = not wrong and len(records) == args.files
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    sys.exit(0 if results["records_in_sync"] else 1)


if __name__ == "__main__":
    main()
