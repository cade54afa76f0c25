"""Cross-validated retrieval quality at a word budget (issue 26): evidence within the first N
words of the top k, MRR@k and doc recall@k, per half of each question set.

    python scripts/eval_context.py --store /tmp/bp/store                # bench_passages' store
    python scripts/eval_context.py --store S --entities cargo embedded-book --context 0 100 146 200
    python scripts/eval_context.py --store S --details cargo            # per-question ranks

The store is one built by `scripts/bench_passages.py --parts inputs` (entities `<book>` with
the book's print.html and `<book>-noprint` without it) or `scripts/eval_questions.py` (entities
named like the sets). Each question set (bench/questions) is split in two halves with a fixed
seed (`--seed`); for every `--context` value (the `context_words` each hit grows to) the script
reports both halves, then picks the value with the best evidence hit on one half (ties: the
better MRR, then the smaller value) and reports the other half with it, both ways round.
`--documents` adds "per-document": the hits as ragctl returns them by default (`Searcher.search`'s
per-document hits, `ragctl.query.per_document_hits`: the documents of the top 2k chunks, each
carrying its next-ranked chunks up to the budget); every other column is measured with
`per_document=False` (k chunks). Before it was adopted the same rule was measured here as the
variant "documents", with identical hits.

"Evidence within the budget" is the metric of issue 26: the top k hits' texts, in rank order,
as returned (context included), cut after `--budget` words; a question counts when its
evidence snippet (normalised as `ragctl eval` does) lies inside one hit's text within the cut.
Context growth does not reorder hits, so MRR and doc recall depend only on the ranking.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SETS = {"cargo": "bench/questions/cargo.jsonl", "embedded-book": "bench/questions/embedded-book.jsonl",
        "rustdoc": "bench/questions/rustdoc.jsonl"}


def halves(qids: list[str], seed: int) -> tuple[set[str], set[str]]:
    order = sorted(qids)
    random.Random(seed).shuffle(order)
    mid = len(order) // 2
    return set(order[:mid]), set(order[mid:])


def outcome(question: Any, hits: list[Any], k: int, budget: int) -> dict[str, Any]:
    from ragctl.evaluate import evidence_within

    top = hits[:k]
    first = next((r for r, h in enumerate(top, 1) if h.path in question.relevance), None)
    within = evidence_within(question.evidence, [h.text for h in top], budget) if question.evidence else None
    return {"answer": first, "evidence": within, "words": sum(len(h.text.split()) for h in top),
            "paths": [h.path for h in top]}


def score(rows: dict[str, dict[str, Any]], ids: set[str]) -> dict[str, float]:
    picked = [rows[q] for q in sorted(ids)]
    ev = [r for r in picked if r["evidence"] is not None]
    n = max(1, len(picked))
    return {"n": len(picked),
            "evidence": round(sum(1 for r in ev if r["evidence"]) / max(1, len(ev)), 3),
            "mrr": round(sum(1 / r["answer"] for r in picked if r["answer"]) / n, 3),
            "doc_recall": round(sum(1 for r in picked if r["answer"]) / n, 3),
            "words": round(sum(r["words"] for r in picked) / n)}


def run(store: Path, entity: str, qfile: str, contexts: list[int], k: int, budget: int, mode: str,
        documents: bool = False) -> dict[Any, Any]:
    from ragctl.query import Searcher
    from ragctl.question_sets import load_questions

    questions = load_questions(REPO / qfile)
    searcher = Searcher(store, entity)
    ranked = searcher.search([q.text for q in questions], k, mode, context_words=0, per_document=False)
    out: dict[Any, Any] = {}
    for c in contexts:
        grown = [searcher.with_context(hits, c) if c else hits for hits in ranked]
        out[c] = {q.qid: outcome(q, hits, k, budget) for q, hits in zip(questions, grown)}
    if documents:
        shipped = searcher.search([q.text for q in questions], k, mode)
        out["per-document"] = {q.qid: outcome(q, hits, k, budget) for q, hits in zip(questions, shipped)}
    return out


def choose(per_context: dict[Any, dict[str, dict[str, Any]]], ids: set[str]) -> int:
    def key(c: int) -> tuple[float, float, int]:
        s = score(per_context[c], ids)
        return (-s["evidence"], -s["mrr"], c)
    return min((c for c in per_context if isinstance(c, int)), key=key)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--entities", nargs="+", default=["cargo", "cargo-noprint", "embedded-book", "embedded-book-noprint"])
    ap.add_argument("--context", type=int, nargs="+", default=[0, 100, 146, 200, 300])
    ap.add_argument("-k", type=int, default=5)
    ap.add_argument("--budget", type=int, default=750, help="words of the top k that count (issue 26: 750)")
    ap.add_argument("--mode", default="hybrid")
    ap.add_argument("--seed", type=int, default=26)
    ap.add_argument("--details", nargs="*", default=[], help="entities whose per-question rows are printed")
    ap.add_argument("--documents", action="store_true",
                    help="also 'per-document': the hits as ragctl returns them by default")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    result: dict[str, Any] = {}
    for entity in args.entities:
        book = entity.removesuffix("-noprint")
        if book not in SETS:
            raise SystemExit(f"no question set for {entity}")
        per_context = run(args.store, entity, SETS[book], args.context, args.k, args.budget, args.mode, args.documents)
        a, b = halves(list(next(iter(per_context.values()))), args.seed)
        every = a | b
        rows = {c: {"A": score(r, a), "B": score(r, b), "all": score(r, every)} for c, r in per_context.items()}
        on_a, on_b = choose(per_context, a), choose(per_context, b)
        cv = {"chosen_on_A": on_a, "report_B": score(per_context[on_a], b),
              "chosen_on_B": on_b, "report_A": score(per_context[on_b], a)}
        result[entity] = {"rows": rows, "cv": cv, "per_question": {str(c): r for c, r in per_context.items()}}
        print(f"## {entity} ({len(every)} questions; halves A {len(a)} / B {len(b)}, seed {args.seed})")
        print("| context_words | A: evidence / MRR / doc recall / words | B: ... | all |")
        print("|---|---|---|---|")
        for c, r in rows.items():
            cells = [f"{s['evidence']:.3f} / {s['mrr']:.3f} / {s['doc_recall']:.3f} / {s['words']}" for s in r.values()]
            print(f"| {c} | " + " | ".join(cells) + " |")
        print(f"chosen on A: {on_a} -> B {cv['report_B']}; chosen on B: {on_b} -> A {cv['report_A']}")
        if entity in args.details:
            for qid in sorted(every):
                print(qid, "A" if qid in a else "B", {c: (per_context[c][qid]["answer"], per_context[c][qid]["evidence"])
                                                      for c in per_context})
        print()
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
