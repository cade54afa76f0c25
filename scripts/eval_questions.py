"""Retrieval quality on paraphrased question sets over real documentation trees.

For each set in bench/questions/sets.json (question file, documentation tree, version): copies
the tree's files into <work>/tree/<set>/, ingests everything with `ragctl ingest` (today's
default settings, one run), then per set and per search mode reports doc recall@k, MRR,
nDCG@10 and evidence hit@k on the questions (`ragctl eval --questions`), plus the exact-sentence
chunk hit@k of the sampled known-item eval (`ragctl eval` without --questions), as a Markdown
table on stdout and, with --json FILE, one JSON document.

    python scripts/eval_questions.py                      # every set, fresh temp store
    python scripts/eval_questions.py --sets cargo -k 5    # one set
    python scripts/eval_questions.py --work /tmp/qs       # keep tree and store in /tmp/qs
    python scripts/eval_questions.py --work /tmp/qs --reuse   # query an existing store again
    python scripts/eval_questions.py --store S --sets cargo   # a given store (entity = set name)

A tree missing on this machine is skipped with a note. A fresh store is built each run unless
--reuse (ingest skips unchanged files by content hash, so a reused store keeps chunks made by
older code: never --reuse after changing chunking or the model).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SETS_FILE = REPO / "bench" / "questions" / "sets.json"


def load_sets(names: list[str] | None) -> dict[str, dict[str, Any]]:
    sets: dict[str, dict[str, Any]] = json.loads(SETS_FILE.read_text(encoding="utf-8"))
    if names:
        unknown = [n for n in names if n not in sets]
        if unknown:
            raise SystemExit(f"unknown set(s) {', '.join(unknown)}; known: {', '.join(sets)}")
        sets = {n: sets[n] for n in names}
    return sets


def resolve_root(pattern: str) -> Path | None:
    expanded = os.path.expanduser(pattern)
    if not os.path.isabs(expanded):
        expanded = str(REPO / expanded)
    matches = sorted(glob.glob(expanded))
    return Path(matches[-1]) if matches else None


def tree_files(root: Path, include: list[str], exclude: list[str]) -> list[Path]:
    files = {p for pattern in include for p in root.glob(pattern) if p.is_file()}
    return sorted(p for p in files if p.name not in exclude and str(p.relative_to(root)) not in exclude)


def build_tree(tree: Path, sets: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Copy each available set's files to tree/<set>/; returns {set: file count}."""
    counts = {}
    for name, spec in sets.items():
        root = resolve_root(spec["root"])
        if root is None:
            print(f"skip {name}: no {spec['root']} on this machine", file=sys.stderr)
            continue
        files = tree_files(root, spec["include"], spec["exclude"])
        for src in files:
            dst = tree / name / src.relative_to(root)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
        counts[name] = len(files)
    return counts


def ingest(tree: Path, store: Path) -> dict[str, Any]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "ragctl", "ingest", str(tree), "--store", str(store), "--json", "--quiet"],
                          capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise SystemExit(f"ingest failed ({done.returncode}): {done.stderr[-2000:]}")
    summary = json.loads(done.stdout)
    took = time.perf_counter() - started
    per_entity = {e: {k: v for k, v in r.items() if k in ("indexed", "unchanged", "chunks", "failed")}
                  for e, r in summary["entities"].items()}
    print(f"ingest: {took:.1f} s {per_entity}", file=sys.stderr)
    return {"seconds": round(took, 1), "entities": per_entity}


def table(rows: list[dict[str, Any]], k: int) -> str:
    lines = [
        f"| set | mode | questions | doc recall@{k} | MRR | nDCG@10 | evidence hit@{k} | sampled-sentence chunk hit@{k} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ev = "—" if row["evidence_hit"] is None else f"{row['evidence_hit']:.2f}"
        sampled = "—" if row["sampled_chunk_hit"] is None else f"{row['sampled_chunk_hit']:.2f}"
        lines.append(f"| {row['set']} | {row['mode']} | {row['questions']} | {row['doc_recall']:.2f} | {row['mrr']:.2f} "
                     f"| {row['ndcg10']:.2f} | {ev} | {sampled} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="*", help="set names from bench/questions/sets.json [default: all]")
    parser.add_argument("--work", type=Path, help="keep tree and store here [default: a temp dir, removed]")
    parser.add_argument("--store", type=Path, help="use this store as it is (entities named like the sets); no ingest")
    parser.add_argument("--reuse", action="store_true", help="with --work: keep the existing tree and store")
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument("--sample", type=int, default=40, help="sampled sentences for the known-item eval (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mode", help="comma-separated modes [default: every mode ragctl.query offers]")
    parser.add_argument("--json", dest="json_out", type=Path, help="also write the results as JSON to this file")
    args = parser.parse_args()
    sets = load_sets(args.sets)

    tmp = None
    info: dict[str, Any] = {}
    if args.store is not None:
        store = args.store
        available = list(sets)
    else:
        if args.work is None:
            tmp = tempfile.mkdtemp(prefix="ragctl-questions-")
            work = Path(tmp)
        else:
            work = args.work
        tree, store = work / "tree", work / "store"
        if not args.reuse:
            shutil.rmtree(tree, ignore_errors=True)
            shutil.rmtree(store, ignore_errors=True)
            info["files"] = build_tree(tree, sets)
            print("files per set:", info["files"], file=sys.stderr)
            info["ingest"] = ingest(tree, store)
        available = sorted(p.name for p in tree.iterdir() if p.is_dir()) if tree.is_dir() else []
    try:
        results = run_sets(store, {n: s for n, s in sets.items() if n in available}, args)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    rows = [row for r in results.values() for row in r["rows"]]
    print(table(rows, args.k))
    if args.json_out is not None:
        doc = {"k": args.k, "sample": args.sample, "seed": args.seed, **info,
               "sets": {n: {kk: v for kk, v in r.items() if kk != "rows"} for n, r in results.items()}, "rows": rows}
        args.json_out.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def run_sets(store: Path, sets: dict[str, dict[str, Any]], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    from ragctl.evaluate import evaluate, evaluate_questions
    from ragctl.query import Searcher

    modes = args.mode.split(",") if args.mode else None
    results: dict[str, dict[str, Any]] = {}
    for name, spec in sets.items():
        searcher = Searcher(store, name)
        report = evaluate_questions(store, name, REPO / spec["questions"], k=args.k, modes=modes, searcher=searcher)
        sampled = evaluate(store, name, sample=args.sample, k=args.k, modes=list(report.modes), seed=args.seed) \
            if args.sample > 0 else None
        entity_json = report.to_json()
        rows = []
        for mode, row in entity_json["modes"].items():
            chunk_hit = sampled.to_json()["modes"][mode]["chunk_hit"] if sampled is not None else None
            rows.append({"set": name, "mode": mode, **row, "sampled_chunk_hit": chunk_hit})
        if report.evidence_unreachable:
            print(f"{name}: evidence in no chunk of its answer: {', '.join(report.evidence_unreachable)}", file=sys.stderr)
        results[name] = {"version": spec["version"], "questions_file": spec["questions"], "rows": rows,
                         "evidence_unreachable": report.evidence_unreachable,
                         "per_question": entity_json["per_question"],
                         "sampled": sampled.to_json() if sampled is not None else None}
    return results


if __name__ == "__main__":
    main()
