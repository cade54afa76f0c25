"""Query latency on a large entity (default 100,000 chunks) in every search mode.

The entity is synthetic: random unit vectors (dim 384) and Zipf-distributed text over a
20,000-word vocabulary plus English function words, committed through EntityStore.commit
(so the index, chunk texts and full-text index are the real on-disk formats). Queries are
8-15 words (content words from a flatter 1/sqrt(rank) distribution), with a random unit
vector; the embedding of the query text is not part of the measured time.

    python scripts/bench_query.py [--chunks 100000] [--queries 200] [--index auto|flat|ivf|hnsw] [--store /tmp/ragctl-bench-query] [--rerank]

`--rerank` adds a `hybrid+rerank` row: the default model (loaded once, not timed) embeds the
candidates' passages (ragctl.rerank), which is the rerank's real cost; the query vector is
still the random one.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from ragctl.query import Searcher
from ragctl.storage import open_store
from ragctl.storage.entity import EntityStore, PreparedDoc

DIM = 384
FUNCTION_WORDS = "the of and to in is for that with as on by this are be or from an it at which can not".split()
MODEL = {"name": "synthetic", "digest": "synthetic", "dim": DIM}


def vocabulary(n: int, rng: np.random.Generator) -> list[str]:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = {"".join(rng.choice(letters, size=int(rng.integers(3, 11)))) for _ in range(n * 2)}
    return sorted(words)[:n]


class TextGen:
    """Like English prose: ~45% function words, content words Zipf-distributed (rank r has
    weight 1/r, so a few content words are in most chunks and most are rare)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.content = np.array(vocabulary(20_000, rng))
        weights = 1.0 / np.arange(1, len(self.content) + 1, dtype=np.float64)
        self.p = weights / weights.sum()
        self.function = np.array(FUNCTION_WORDS)

        flat = 1.0 / np.sqrt(np.arange(1, len(self.content) + 1, dtype=np.float64))
        self.query_p = flat / flat.sum()

    def text(self, n_words: int, query: bool = False) -> str:
        """Chunk text, or with query=True a query: content words drawn from a flatter
        distribution (weight 1/sqrt(rank)), a mix of common and specific words."""
        content = self.rng.choice(self.content, size=n_words, p=self.query_p if query else self.p)
        function = self.rng.choice(self.function, size=n_words)
        pick = self.rng.random(n_words) < 0.45
        return " ".join(np.where(pick, function, content))


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def build(store: Path, chunks: int, per_doc: int, rng: np.random.Generator, gen: TextGen, index: str) -> float:
    storage = open_store(store, create=True)
    entity = EntityStore(storage, "big", index_kind=index)
    started = time.perf_counter()
    docs = []
    for d in range(chunks // per_doc):
        texts = [gen.text(int(rng.integers(120, 200))) for _ in range(per_doc)]
        docs.append(PreparedDoc(f"doc-{d:06d}.md", f"{d:064x}", 1, 0, texts, unit(rng, per_doc)))
    entity.commit(MODEL, docs)
    entity.gc()  # what the end of an entity's ingest does (it may build an approximate index)
    return time.perf_counter() - started


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--per-doc", type=int, default=50)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument("--store", type=Path, default=Path("/tmp/ragctl-bench-query"))
    parser.add_argument("--reuse", action="store_true", help="query an existing store")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--index", default="auto", help="the entity's index kind (ingest --index): auto|flat|ivf|hnsw")
    parser.add_argument("--rerank", action="store_true", help="also time hybrid + --rerank (loads the default model)")
    parser.add_argument("--per-chunk", action="store_true", help="k chunks (query --per-chunk) instead of per-document hits")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    gen = TextGen(rng)
    if not args.reuse:
        shutil.rmtree(args.store, ignore_errors=True)
        print(f"building {args.chunks} chunks ...", file=sys.stderr)
        print(f"build: {build(args.store, args.chunks, args.per_doc, rng, gen, args.index):.1f} s", file=sys.stderr)
    searcher = Searcher.__new__(Searcher)  # no model: the query vectors are given
    searcher.entity = EntityStore(open_store(args.store, create=False), "big")
    searcher._rerank = None
    searcher._clean_run = 0
    if args.rerank:
        from ragctl.embedding import load_embedder
        from ragctl.model_config import ModelConfig
        from ragctl.rerank import PassageReranker

        model = load_embedder(ModelConfig())
        model.encode(["warm up"])
        searcher._rerank = PassageReranker(model.encode)
    queries = [gen.text(int(rng.integers(8, 16)), query=True) for _ in range(args.queries)]
    vectors = unit(rng, args.queries)
    kind = (searcher.entity.meta() or {}).get("vectors", {}).get("kind")
    out = {"chunks": int(searcher.entity.load_index().ntotal), "index": kind, "k": args.k, "queries": args.queries, "modes": {}}
    per_chunk = {"per_document": False} if args.per_chunk else {}  # the default: per-document hits (issue 26)
    cold = []
    for query in queries[:20]:  # the first queries also fill the document-frequency cache
        t0 = time.perf_counter()
        searcher.search([query], args.k, "text")
        cold.append(1000 * (time.perf_counter() - t0))
    out["cold_text_first_20_ms"] = {"p50": round(statistics.median(cold), 2), "max": round(max(cold), 2)}
    for mode in ("vector", "text", "hybrid") + (("hybrid+rerank",) if args.rerank else ()):
        times = []
        for i, query in enumerate(queries):
            searcher._encode = lambda qs, v=vectors[i : i + 1]: v
            t0 = time.perf_counter()
            hits = searcher.search([query], args.k, mode.split("+")[0], rerank=mode.endswith("+rerank"), **per_chunk)[0]
            times.append(1000 * (time.perf_counter() - t0))
            assert len(hits) <= args.k
        out["modes"][mode] = {
            "p50_ms": round(statistics.median(times), 2),
            "p95_ms": round(pct(times, 95), 2),
            "max_ms": round(max(times), 2),
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
