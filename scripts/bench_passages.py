"""Passages (issue 26): model inputs, edits, duplicates in the top k, question metrics, false merges.

    python scripts/bench_passages.py --work /tmp/bp                 # every part
    python scripts/bench_passages.py --work /tmp/bp --parts inputs edit
    python scripts/bench_passages.py --work /tmp/bp --reuse --parts questions pairs
    python scripts/bench_passages.py --work /tmp/bp --parts latency     # 100k synthetic chunks

Parts:
* inputs    - each Rust book (cargo, embedded-book, nomicon, edition-guide: the rust-docs of the
              installed toolchain) ingested twice in one run, as entity <book> with its
              print.html (the whole book on one page) and as <book>-noprint without it; model
              inputs = chunks - chunks_reused (before this change every chunk was an input, so
              "before" = chunks). toc.html and 404.html are left out of both.
* edit      - the Node.js API reference fs.md (/usr/share/doc/nodejs/api, ~260 KB, ~275 headings)
              ingested, one sentence in the middle changed, ingested again: chunks embedded.
* questions - the question sets (bench/questions) over the books *with* print.html: hybrid,
              vector and text, k = 5, without and with collapsing: evidence hit@5, MRR, doc
              recall@5, the words of the top 5, and the share of top-5 slots that repeat a
              passage already above (exact copy / near-duplicate). With --thresholds, the
              near-duplicate threshold is swept (choose on one set, report on the other).
* pairs     - the near-duplicate rule over every pair of chunks of an entity (books and the
              Node.js API docs): pairs it would merge whose texts differ, per threshold, with
              examples of the merged pairs' differing words (to judge false merges by eye).
* latency   - query p50/p95 with and without collapsing on scripts/bench_query.py's synthetic
              100,000-chunk entity (the query vectors given, not embedded).
"""

from __future__ import annotations

import argparse
import difflib
import glob
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RUST_DOCS = "~/.rustup/toolchains/stable-*/share/doc/rust/html"
BOOKS = ["cargo", "embedded-book", "nomicon", "edition-guide"]
NODE_API = Path("/usr/share/doc/nodejs/api")
LEFT_OUT = {"toc.html", "404.html"}
QUESTION_SETS = {"cargo": "bench/questions/cargo.jsonl", "embedded-book": "bench/questions/embedded-book.jsonl"}


def rust_root() -> Path | None:
    found = sorted(glob.glob(os.path.expanduser(RUST_DOCS)))
    return Path(found[-1]) if found else None


def copy_tree(src: Path, dst: Path, with_print: bool) -> int:
    n = 0
    for path in sorted(src.rglob("*.html")):
        if path.name in LEFT_OUT or (path.name == "print.html" and not with_print):
            continue
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        n += 1
    return n


def ingest(store: Path, entities: dict[str, Path], *extra: str) -> dict[str, Any]:
    argv = [sys.executable, "-m", "ragctl", "ingest", "--store", str(store), "--json", "--quiet", *extra]
    for name, root in entities.items():
        argv += ["--entities", f"{name}={root}"]
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise SystemExit(f"ingest failed ({done.returncode}): {done.stderr[-2000:]}")
    out: dict[str, Any] = json.loads(done.stdout)
    out["wall"] = time.perf_counter() - started
    return out


# --------------------------------------------------------------------------- inputs
def part_inputs(work: Path, reuse: bool) -> dict[str, Any]:
    root = rust_root()
    if root is None:
        print("inputs: no rust-docs on this machine", file=sys.stderr)
        return {}
    store, tree = work / "store", work / "tree"
    entities: dict[str, Path] = {}
    for book in BOOKS:
        if not (root / book).is_dir():
            continue
        for name, with_print in ((book, True), (f"{book}-noprint", False)):
            dst = tree / name
            if not reuse or not dst.exists():
                shutil.rmtree(dst, ignore_errors=True)
                copy_tree(root / book, dst, with_print)
            entities[name] = dst
    if reuse and store.exists() and (work / "inputs.json").exists():
        result: dict[str, Any] = json.loads((work / "inputs.json").read_text())
        return result
    shutil.rmtree(store, ignore_errors=True)
    report = ingest(store, entities)
    rows = {}
    for book in BOOKS:
        if book not in report["entities"]:
            continue
        w, wo = report["entities"][book], report["entities"][f"{book}-noprint"]
        rows[book] = {
            "chunks_with": w["chunks"], "chunks_without": wo["chunks"],
            "inputs_with": w["chunks"] - w["chunks_reused"], "inputs_without": wo["chunks"] - wo["chunks_reused"],
            "before_ratio": round(w["chunks"] / wo["chunks"], 3),
            "after_ratio": round((w["chunks"] - w["chunks_reused"]) / (wo["chunks"] - wo["chunks_reused"]), 3),
        }
    result = {"books": rows, "ingest_seconds": round(report["wall"], 1), "encode_seconds": report["encode_seconds"]}
    (work / "inputs.json").write_text(json.dumps(result, indent=1))
    return result


# --------------------------------------------------------------------------- edit
def part_edit(work: Path) -> dict[str, Any]:
    src = NODE_API / "fs.md"
    if not src.exists():
        print("edit: no /usr/share/doc/nodejs/api/fs.md", file=sys.stderr)
        return {}
    tree, store = work / "edit" / "tree", work / "edit" / "store"
    shutil.rmtree(work / "edit", ignore_errors=True)
    (tree / "api").mkdir(parents=True)
    text = src.read_text(encoding="utf-8")
    (tree / "api" / "fs.md").write_text(text, encoding="utf-8")
    first = ingest(store, {"api": tree / "api"})["entities"]["api"]
    # one sentence in the middle of the page: the first prose line past the half
    lines = text.splitlines(keepends=True)
    at = len(lines) // 2
    while not (lines[at].strip() and lines[at][0].isalpha() and ". " in lines[at]):
        at += 1
    sentence = lines[at].split(". ")[0]
    lines[at] = lines[at].replace(sentence, sentence + " (edited: one more clause here)", 1)
    (tree / "api" / "fs.md").write_text("".join(lines), encoding="utf-8")
    second = ingest(store, {"api": tree / "api"})["entities"]["api"]
    headings = sum(1 for line in text.splitlines() if line.startswith("#"))
    return {"bytes": len(text.encode()), "headings": headings, "chunks": first["chunks"],
            "edited_line": at + 1, "rerun_chunks": second["chunks"], "rerun_reused": second["chunks_reused"],
            "rerun_embedded": second["chunks"] - second["chunks_reused"], "before_embedded": second["chunks"]}


# --------------------------------------------------------------------------- questions
def dup_slots(hits: list[Any], threshold: float) -> tuple[int, int]:
    """Top slots holding a passage already above: (exact copies, near-duplicates)."""
    from ragctl.passages import PassageGroups
    from ragctl.storage.chunk_texts import passage_key

    keys: set[bytes] = set()
    groups = PassageGroups(threshold)
    seen: set[int] = set()
    exact = near = 0
    for i, hit in enumerate(hits):
        key = passage_key(hit.text)
        g = groups.add(i, hit.text)
        if key in keys:
            exact += 1
        elif g in seen:
            near += 1
        keys.add(key)
        seen.add(g)
    return exact, near


def evaluate(store: Path, entity: str, questions: list[Any], collapse: bool, mode: str, k: int = 5) -> dict[str, Any]:
    from ragctl.evaluate import normalize_text
    from ragctl.passages import NEAR_DUPLICATE
    from ragctl.query import Searcher

    searcher = Searcher(store, entity)
    results = searcher.search([q.text for q in questions], k, mode, collapse=collapse, per_document=False)
    n = len(questions)
    ev = [q for q in questions if q.evidence]
    doc = mrr = evid = 0.0
    words = slots = exact = near = 0
    per_q = {}
    for q, hits in zip(questions, results):
        top = hits[:k]
        first = next((r for r, h in enumerate(top, 1) if h.path in q.relevance), None)
        doc += first is not None
        mrr += 1 / first if first else 0.0
        erank = None
        if q.evidence:
            needle = normalize_text(q.evidence)
            erank = next((r for r, h in enumerate(top, 1) if needle in normalize_text(h.text)), None)
            evid += erank is not None
        words += sum(len(h.text.split()) for h in top)
        e, nd = dup_slots(top, NEAR_DUPLICATE)
        exact, near, slots = exact + e, near + nd, slots + len(top)
        per_q[q.qid] = {"answer": first, "evidence": erank}
    return {"questions": n, "doc_recall": round(doc / n, 3), "mrr": round(mrr / n, 3),
            "evidence": round(evid / max(1, len(ev)), 3), "words_top5": round(words / n),
            "dup_exact": round(exact / max(1, slots), 3), "dup_near": round(near / max(1, slots), 3),
            "per_question": per_q}


def part_questions(work: Path, thresholds: list[float]) -> dict[str, Any]:
    import ragctl.passages as passages
    from ragctl.question_sets import load_questions

    store = work / "store"
    out: dict[str, Any] = {}
    default = passages.NEAR_DUPLICATE
    for book, qfile in QUESTION_SETS.items():
        questions = load_questions(REPO / qfile)
        for entity in (book, f"{book}-noprint"):
            for mode in ("hybrid", "vector", "text"):
                out[f"{entity}/{mode}/before"] = evaluate(store, entity, questions, False, mode)
                for t in thresholds if mode == "hybrid" else [default]:
                    passages.NEAR_DUPLICATE = t
                    out[f"{entity}/{mode}/after@{t}"] = evaluate(store, entity, questions, True, mode)
                passages.NEAR_DUPLICATE = default
    return out


# --------------------------------------------------------------------------- pairs
PREFILTER = 0.5  # pairs enumerated: word 5-shingle Jaccard at least this (every pair the rule
# can merge has more: the shorter's shingles are a subset of the longer's, >= ~0.8 of them)


def part_pairs(work: Path, runs: list[float]) -> dict[str, Any]:
    """Every pair of chunks of an entity whose texts differ, with word 5-shingle Jaccard >= the
    prefilter: how many the rule merges at each common-run share (and Jaccard alone at 0.8,
    the rule tried first), with the differing words of the merged pairs."""
    from ragctl.passages import _shingles as shingles_of
    from ragctl.passages import common_run, words
    from ragctl.storage.chunk_texts import ChunkTexts, passage_key

    stores: dict[str, Path] = {}
    for book in BOOKS:
        if (work / "store" / "entities" / book).is_dir():
            stores[book] = work / "store"
    node_store = work / "node" / "store"
    if NODE_API.is_dir():
        if not node_store.exists():
            tree = work / "node" / "tree" / "nodejs"
            tree.mkdir(parents=True, exist_ok=True)
            for path in sorted(NODE_API.glob("*.md")):
                shutil.copyfile(path, tree / path.name)
            ingest(node_store, {"nodejs": tree})
        stores["nodejs"] = node_store
    out: dict[str, Any] = {}
    for entity, store in stores.items():
        texts = ChunkTexts(store / "entities" / entity / "chunks.sqlite")
        ids = [int(i) for i in texts.row_ids()]
        rows = texts.fetch(ids)
        w = {i: words(rows[i]) for i in ids}
        sh = {i: shingles_of(w[i]) for i in ids}
        keys = {i: passage_key(rows[i]) for i in ids}
        postings: dict[int, list[int]] = {}
        for i in ids:
            for s in sh[i]:
                postings.setdefault(s, []).append(i)
        pairs = []
        seen_pairs: set[tuple[bytes, bytes]] = set()
        for i in ids:
            shared: dict[int, int] = {}
            for s in sh[i]:
                for j in postings[s]:
                    if j > i:
                        shared[j] = shared.get(j, 0) + 1
            for j, inter in shared.items():
                pair = (min(keys[i], keys[j]), max(keys[i], keys[j]))
                if keys[i] == keys[j] or pair in seen_pairs:
                    continue  # exact copies, or a pair of passages already counted
                jac = inter / (len(sh[i]) + len(sh[j]) - inter)
                if jac >= PREFILTER:
                    seen_pairs.add(pair)
                    pairs.append((common_run(w[i], w[j]), jac, i, j))
        by_key: dict[bytes, int] = {}
        for i in ids:
            by_key[keys[i]] = by_key.get(keys[i], 0) + 1
        examples = []
        for run, jac, i, j in sorted(pairs, reverse=True):
            if run < min(runs):
                break
            a, b = rows[i].split(), rows[j].split()
            diff = [d for d in difflib.ndiff(a, b) if d[:1] in "+-"]
            examples.append({"run": round(run, 3), "jaccard": round(jac, 3), "words": (len(a), len(b)),
                             "diff": " ".join(diff)[:240]})
        out[entity] = {"chunks": len(ids), "distinct_passages": len(by_key),
                       "pairs_jaccard_0.8": sum(1 for p in pairs if p[1] >= 0.8),
                       "pairs_run": {str(t): sum(1 for p in pairs if p[0] >= t) for t in runs},
                       "examples": examples[:40]}
    return out


# --------------------------------------------------------------------------- context
def part_context(work: Path) -> dict[str, Any]:
    """Evidence hit within the top 5 at about the same number of words: chunks alone (k = 5 and
    k = 7), and k = 5 grown with neighbouring chunks (--context-words) to ~730 words in all."""
    from ragctl.evaluate import normalize_text
    from ragctl.query import Searcher
    from ragctl.question_sets import load_questions

    out: dict[str, Any] = {}
    for book, qfile in QUESTION_SETS.items():
        questions = load_questions(REPO / qfile)
        for entity in (book, f"{book}-noprint"):
            searcher = Searcher(work / "store", entity)
            for label, k, budget in (("k5", 5, 0), ("k7", 7, 0), ("k5+context146", 5, 146), ("k5+context200", 5, 200)):
                results = searcher.search([q.text for q in questions], k, "hybrid", context_words=budget, per_document=False)
                ev = [(q, hits) for q, hits in zip(questions, results) if q.evidence]
                hit = sum(any(normalize_text(q.evidence or "") in normalize_text(h.text) for h in hits) for q, hits in ev)
                words = sum(len(h.text.split()) for hits in results for h in hits) / len(results)
                doc = sum(any(h.path in q.relevance for h in hits) for q, hits in zip(questions, results)) / len(questions)
                out[f"{entity}/{label}"] = {"evidence": round(hit / max(1, len(ev)), 3), "doc_recall": round(doc, 3),
                                            "words": round(words)}
    return out


# --------------------------------------------------------------------------- latency
def part_latency(work: Path, chunks: int, queries: int = 200) -> dict[str, Any]:
    """Query p50/p95 on scripts/bench_query.py's synthetic entity, with and without collapsing
    (alternating per query, the same store, the same query vectors)."""
    import statistics

    import numpy as np

    sys.path.insert(0, str(REPO / "scripts"))
    import bench_query as bq

    from ragctl.query import Searcher
    from ragctl.storage import open_store
    from ragctl.storage.entity import EntityStore

    rng = np.random.default_rng(0)
    gen = bq.TextGen(rng)
    store = work / f"latency-{chunks}"
    if not (store / "store.json").exists():
        shutil.rmtree(store, ignore_errors=True)
        print(f"latency: building {chunks} chunks ...", file=sys.stderr)
        bq.build(store, chunks, 50, rng, gen, "auto")
    searcher = Searcher.__new__(Searcher)
    searcher.entity = EntityStore(open_store(store, create=False), "big")
    searcher._rerank = None
    searcher._clean_run = 0
    texts = [gen.text(int(rng.integers(8, 16)), query=True) for _ in range(queries)]
    vectors = bq.unit(rng, queries)
    for text in texts[:20]:
        searcher.search([text], 5, "text", per_document=False)
    out: dict[str, Any] = {"chunks": chunks}
    for mode in ("vector", "text", "hybrid"):
        times: dict[bool, list[float]] = {False: [], True: []}
        for i, text in enumerate(texts):
            searcher._encode = lambda qs, v=vectors[i : i + 1]: v  # type: ignore[method-assign]
            for collapse in ((False, True) if i % 2 else (True, False)):
                t0 = time.perf_counter()
                searcher.search([text], 5, mode, collapse=collapse, per_document=False)
                times[collapse].append(1000 * (time.perf_counter() - t0))
        for collapse, t in times.items():
            out[f"{mode}/{'collapse' if collapse else 'plain'}"] = {
                "p50_ms": round(statistics.median(t), 2), "p95_ms": round(bq.pct(t, 95), 2)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--parts", nargs="+", default=["inputs", "edit", "questions", "pairs"])
    ap.add_argument("--reuse", action="store_true", help="keep the work dir's store (inputs measured before)")
    ap.add_argument("--thresholds", type=float, nargs="*", default=[0.7, 0.8, 0.85, 0.9, 0.95, 1.01],
                    help="near-duplicate thresholds (common-run share) to sweep")
    ap.add_argument("--latency-chunks", type=int, default=100_000)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {}
    if "inputs" in args.parts:
        result["inputs"] = part_inputs(args.work, args.reuse)
        print(json.dumps(result["inputs"], indent=1), file=sys.stderr)
    if "edit" in args.parts:
        result["edit"] = part_edit(args.work)
        print(json.dumps(result["edit"], indent=1), file=sys.stderr)
    if "questions" in args.parts:
        result["questions"] = part_questions(args.work, args.thresholds)
        for name, row in result["questions"].items():
            print(name, {k: v for k, v in row.items() if k != "per_question"}, file=sys.stderr)
    if "context" in args.parts:
        result["context"] = part_context(args.work)
        print(json.dumps(result["context"], indent=1), file=sys.stderr)
    if "latency" in args.parts:
        result["latency"] = part_latency(args.work, args.latency_chunks)
        print(json.dumps(result["latency"], indent=1), file=sys.stderr)
    if "pairs" in args.parts:
        result["pairs"] = part_pairs(args.work, args.thresholds)
        print(json.dumps(result["pairs"], indent=1), file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
