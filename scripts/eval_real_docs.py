"""Retrieval quality on real documentation trees found on this machine (not committed).

Builds <work>/tree/<entity>/... from installed documentation (Node.js API Markdown,
pip's reStructuredText docs), ingests it with `ragctl ingest`, then runs `ragctl eval` on each
entity with every mode side by side, and prints a Markdown table (the one in docs/retrieval.md).

    python scripts/eval_real_docs.py [--work /tmp/ragctl-eval] [--sample 40] [-k 5] [--seed 0]
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

SOURCES = {
    # entity: (directory, glob, byte budget: the smallest files first until it is spent)
    "nodejs": (Path("/usr/share/doc/nodejs/api"), "*.md", 700_000),
    "pip": (Path("/usr/share/doc/python3-pip/html"), "**/*.rst*", 400_000),
}


def build_tree(tree: Path) -> dict[str, int]:
    counts = {}
    for entity, (root, pattern, budget) in SOURCES.items():
        files = sorted((p for p in root.glob(pattern) if p.is_file()), key=lambda p: (p.stat().st_size, str(p)))
        if not files:
            raise SystemExit(f"{root}: no {pattern} files on this machine")
        spent = n = 0
        for src in files:
            data = gzip.decompress(src.read_bytes()) if src.suffix == ".gz" else src.read_bytes()
            if spent + len(data) > budget:
                break
            rel = src.relative_to(root)
            dst = tree / entity / (rel.with_suffix("") if src.suffix == ".gz" else rel)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(data)
            spent += len(data)
            n += 1
        counts[entity] = n
    return counts


def ragctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ragctl", *args], capture_output=True, text=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/ragctl-eval"))
    parser.add_argument("--sample", type=int, default=40)
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse", action="store_true", help="keep an existing tree and store")
    args = parser.parse_args()
    tree, store = args.work / "tree", args.work / "store"
    if not args.reuse:
        shutil.rmtree(args.work, ignore_errors=True)
        print("files per entity:", build_tree(tree), file=sys.stderr)
    started = time.perf_counter()
    done = ragctl("ingest", str(tree), "--store", str(store), "--json", "--quiet")
    if done.returncode not in (0, 1):
        raise SystemExit(f"ingest failed ({done.returncode}): {done.stderr[-2000:]}")
    summary = json.loads(done.stdout)
    print(f"ingest: {time.perf_counter() - started:.1f} s", {e: {k: v for k, v in r.items() if k in ("indexed", "unchanged", "chunks", "failed")} for e, r in summary["entities"].items()}, file=sys.stderr)
    from ragctl.evaluate import EvalReport, ModeScore, format_table

    reports = []
    for entity in SOURCES:
        out = ragctl("eval", entity, "--store", str(store), "--sample", str(args.sample), "-k", str(args.k),
                     "--seed", str(args.seed), "--json")
        if out.returncode != 0:
            raise SystemExit(f"eval {entity} failed: {out.stderr[-2000:]}")
        data = json.loads(out.stdout)
        report = EvalReport(entity, data["k"], data["seed"], data["sampled"])
        for mode, row in data["modes"].items():
            n = row["queries"]
            report.modes[mode] = ModeScore(n, round(row["doc_recall"] * n), round(row["chunk_hit"] * n),
                                           row["mrr"] * n, row["ms_per_query"] * n / 1000)
        reports.append(report)
    print(format_table(reports))


if __name__ == "__main__":
    main()
