"""LlamaIndex's default retrieval loop on the question sets, at issue 26's word budget.

Runs in a venv of its own with llama-index-core and llama-index-embeddings-huggingface
(not the project's: they move transformers), e.g.

    /tmp/li/bin/python scripts/eval_llamaindex.py --tree /tmp/bp/tree --entities cargo embedded-book

Per entity (a directory of the tree; its question set is bench/questions/<book>.jsonl, where
<book> is the entity without a `-noprint` suffix): every file's text from ragctl's own parser
(the same text ragctl indexes), one LlamaIndex `Document` per file, `VectorStoreIndex` with
the default node parser (SentenceSplitter, 1024 tokens, overlap 200) and the packaged
all-MiniLM-L6-v2 through `HuggingFaceEmbedding` (which, like the model, truncates each node to
its 256-token window), then `as_retriever(similarity_top_k=5)` per question. Scored as
scripts/eval_context.py scores ragctl: evidence within the first 750 words of the top 5, MRR@5
and doc recall@5 on the answering files, per half of the set (same seed, same halves); and,
for reference, evidence anywhere in the top 5 whatever its length (`all_words_of_top_k`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))


def main() -> None:
    from eval_context import halves, score

    from ragctl.evaluate import evidence_within
    from ragctl.model_spec import force_offline, resolve_model
    from ragctl.parsing import parse_file
    from ragctl.question_sets import load_questions

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", type=Path, required=True)
    ap.add_argument("--entities", nargs="+", default=["cargo", "embedded-book"])
    ap.add_argument("-k", type=int, default=5)
    ap.add_argument("--budget", type=int, default=750)
    ap.add_argument("--seed", type=int, default=26)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    force_offline()
    from llama_index.core import Document, Settings, VectorStoreIndex
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    spec = resolve_model(None)
    Settings.embed_model = HuggingFaceEmbedding(model_name=str(spec.path), device="cpu")
    result: dict[str, Any] = {}
    for entity in args.entities:
        root = args.tree / entity
        book = entity.removesuffix("-noprint")
        questions = load_questions(REPO / "bench" / "questions" / f"{book}.jsonl")
        t0 = time.perf_counter()
        docs = []
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            try:
                text = "\n\n".join(b.text for b in parse_file(path).blocks)
            except Exception:  # noqa: BLE001 - a file the loop would skip too
                continue
            docs.append(Document(text=text, metadata={"path": str(path.relative_to(root))}))
        index = VectorStoreIndex.from_documents(docs)
        built = time.perf_counter() - t0
        retriever = index.as_retriever(similarity_top_k=args.k)
        rows = {}
        for q in questions:
            nodes = retriever.retrieve(q.text)
            texts = [n.node.get_content() for n in nodes]
            paths = [n.node.metadata["path"] for n in nodes]
            first = next((r for r, p in enumerate(paths, 1) if p in q.relevance), None)
            rows[q.qid] = {"answer": first, "words": sum(len(t.split()) for t in texts), "paths": paths,
                           "evidence": evidence_within(q.evidence, texts, args.budget) if q.evidence else None,
                           "evidence_unbounded": evidence_within(q.evidence, texts, 10**9) if q.evidence else None}
        a, b = halves(list(rows), args.seed)
        unbounded = {qid: {**r, "evidence": r["evidence_unbounded"]} for qid, r in rows.items()}
        result[entity] = {"build_s": round(built, 1), "nodes": len(index.docstore.docs),
                          "A": score(rows, a), "B": score(rows, b), "all": score(rows, a | b),
                          "all_words_of_top_k": score(unbounded, a | b), "per_question": rows}
        print(entity, {k: v for k, v in result[entity].items() if k != "per_question"}, flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
