"""Big trees: planning streams, and a no-change re-run costs stat calls only (issue 12).

    python scripts/bench_tree.py --entities 50 --files 4000 [--work DIR]

Generates ENTITIES x FILES small Markdown files, ingests them with the benchmark-only stand-in
encoder (ragctl/bench/standin.py: no model, so parsing, planning and commits are what is
measured), then re-runs with nothing changed. Reports: time to the first committed file,
first-run wall time and files/s, peak RSS of the ingest process (planning runs beside the
work; parse workers are separate processes), and the no-change re-run's wall time and peak
RSS. Each run is a subprocess of its own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUN = r"""
import json, sys, time
from pathlib import Path
from ragctl import events as ev
from ragctl.bench.standin import StandInEncoder
from ragctl.discovery import discover_entities
from ragctl.ingest import IngestOptions, ingest

root, store = Path(sys.argv[1]), Path(sys.argv[2])
t0 = time.perf_counter()
first = []
def sink(e):
    if isinstance(e, ev.FileDone) and e.status in ("indexed", "unchanged") and not first:
        first.append(time.perf_counter() - t0)
report = ingest(discover_entities(root), IngestOptions(store=store, workers=2), sink, embedder=StandInEncoder())
totals = {k: sum(getattr(r, k) for r in report.entities.values()) for k in ("files", "indexed", "unchanged", "failed")}
import resource
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": report.seconds, "first_done_s": first[0] if first else None, "peak_rss_mb": round(rss, 1), **totals}))
"""


def make_tree(root: Path, entities: int, files: int) -> None:
    words = "river stone cloud engine garden ledger harbor signal copper meadow lantern orbit".split()
    for e in range(entities):
        d = root / f"entity{e:03}"
        for f in range(files):
            sub = d / f"dir{f % 20:02}"
            sub.mkdir(parents=True, exist_ok=True)
            body = " ".join(words[(e * 7 + f * 3 + i) % len(words)] for i in range(40))
            (sub / f"note{f:05}.md").write_text(f"# Note {e}-{f}\n\n{body} {e}-{f}.\n")


def run(root: Path, store: Path) -> dict:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", RUN, str(root), str(store)], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result.update(wall_s=round(wall, 2))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entities", type=int, default=50)
    ap.add_argument("--files", type=int, default=4000)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="ragctl-tree-"))
    root, store = work / "tree", work / "store"
    t0 = time.perf_counter()
    if not root.exists():
        make_tree(root, args.entities, args.files)
    print(f"tree: {args.entities} x {args.files} files in {time.perf_counter() - t0:.1f} s at {root}", file=sys.stderr)
    first = run(root, store)
    print(f"first run:     {json.dumps(first)}", file=sys.stderr)
    again = run(root, store)
    print(f"no-change run: {json.dumps(again)}", file=sys.stderr)
    print(json.dumps({"entities": args.entities, "files_per_entity": args.files, "first": first, "rerun": again}))


if __name__ == "__main__":
    main()
