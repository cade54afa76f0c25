"""Searching one entity: vector (FAISS cosine), full-text (SQLite FTS5 bm25), their rank fusion,
and the `Hit`s handed back - read-only, over what `EntityStore` committed.

Every list is restricted to chunks of documents the entity's mapping references (orphans left by
a crash or a pending clean-up are skipped, never returned). `ragctl.query.Searcher` wires these to
a model; the commit protocol stays in `ragctl.storage.entity`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ragctl.storage.vector_index import VectorIndex

if TYPE_CHECKING:
    import numpy as np

    from ragctl.storage.chunk_texts import ChunkTexts, RowData
    from ragctl.storage.owners import Owners


class Searchable(Protocol):
    """What searching needs of an entity (`EntityStore` provides it): who owns each vector id,
    the vector index, and the chunk texts with their full-text index."""

    texts: ChunkTexts

    def owners(self) -> Owners: ...

    def load_index(self, dim: int | None = None) -> Any: ...

# Reciprocal rank fusion constant. Cormack et al. (2009) use 60; on the question sets (three
# trees, contextual chunks) 10 over 20 candidates per list beat 60 over 40 in every set
# (docs/retrieval.md, "Fusion"): the top of each list should count, deep agreement less.
RRF_K = 10

# (vector id, score, vector_rank, text_rank): one row of a ranked list, ranks 1-based or None
Ranked = tuple[int, float, int | None, int | None]


@dataclass(frozen=True)
class Hit:
    doc_id: str
    path: str
    score: float
    text: str
    chunk: int
    vector_rank: int | None = None  # 1-based rank in the vector results (None: not there)
    text_rank: int | None = None  # 1-based rank in the full-text (bm25) results
    title: str = ""  # the document's title ("" for chunks stored before contextual chunking)
    section: str = ""  # the heading path of the chunk inside the document ("" at top level)
    page: int | None = None  # the page its text starts on (PDF pages, image frames); None: no pages
    ocr: bool = False  # its text was recognised from a page image
    # paths of the other documents holding the same passage (or a near-duplicate of it), when
    # the query collapsed them into this hit (ragctl.passages); this hit is the most specific holder
    also_in: tuple[str, ...] = ()
    # a per-document hit (the default of Searcher.search): the positions of the document's
    # chunks whose texts `text` holds, in document order (`chunk` is the best-ranked of them);
    # () for a hit of one chunk
    chunks: tuple[int, ...] = ()


def fuse(
    vector: Sequence[tuple[int, float]], text: Sequence[tuple[int, float]], k: int, rrf_k: int = RRF_K,
    vector_weight: float = 1.0, text_weight: float = 1.0,
) -> list[tuple[int, float, int | None, int | None]]:
    """Weighted reciprocal rank fusion: (id, score, vector_rank, text_rank), best first. Ties are
    broken by the better vector rank, then the better text rank, then the id: fully deterministic."""
    vranks = {vid: rank for rank, (vid, _) in enumerate(vector, 1)}
    tranks = {vid: rank for rank, (vid, _) in enumerate(text, 1)}
    rows = []
    for vid in vranks.keys() | tranks.keys():
        vr, tr = vranks.get(vid), tranks.get(vid)
        score = (vector_weight / (rrf_k + vr) if vr else 0.0) + (text_weight / (rrf_k + tr) if tr else 0.0)
        rows.append((vid, score, vr, tr))
    big = 1 << 62
    rows.sort(key=lambda r: (-r[1], r[2] or big, r[3] or big, r[0]))
    return rows[:k]


class EntitySearch:
    """The read side of one entity (an `EntityStore`): ranked ids from either index, and hits."""

    def __init__(self, entity: Searchable) -> None:
        self.entity = entity

    def vector_search(self, query_vectors: np.ndarray, depth: int) -> list[list[tuple[int, float]]]:
        """Per query, up to `depth` (vector id, cosine) pairs of mapped documents, best first."""
        owners = self.entity.owners()
        index = self.entity.load_index()
        if index is None or index.ntotal == 0 or not owners:
            return [[] for _ in range(len(query_vectors))]
        # Orphans (from a crash or a pending clean-up) can fill the top; ask for enough extra.
        want = min(index.ntotal, depth + max(0, index.ntotal - owners.referenced))
        scores, ids = VectorIndex.search(index, query_vectors, want)
        out = []
        for row_scores, row_ids in zip(scores, ids):
            row = [(int(i), float(s)) for s, i in zip(row_scores, row_ids) if i >= 0 and owners.owner(int(i))]
            out.append(row[:depth])
        return out

    def text_search(self, text: str, depth: int) -> list[tuple[int, float]]:
        """Up to `depth` (vector id, bm25) pairs of mapped documents for free text."""
        owners = self.entity.owners()
        if not owners or not text.strip():
            return []
        limit = depth
        while True:
            rows = self.entity.texts.search(text, limit)
            kept = [(i, s) for i, s in rows if owners.owner(i)]
            if len(kept) >= depth or len(rows) < limit:
                return kept[:depth]
            limit *= 4  # rows of orphans or stray texts were in the way

    def hits(self, ranked: Sequence[tuple[int, float, int | None, int | None]]) -> list[Hit]:
        """Hits for (vector id, score, vector_rank, text_rank) rows, texts fetched in one go."""
        return [hit for _, hit in self.ranked_hits(ranked)]

    def ranked_hits(self, ranked: Sequence[tuple[int, float, int | None, int | None]],
                    fetched: Mapping[int, RowData] | None = None) -> list[tuple[int, Hit]]:
        """(vector id, hit) for each row whose document is still mapped, in order. `fetched`:
        chunk rows the caller already read (only the others are read here)."""
        owners = self.entity.owners()
        fetched = fetched or {}
        rows = {vid: fetched[vid] for vid in {r[0] for r in ranked} if vid in fetched}
        missing = sorted({r[0] for r in ranked} - rows.keys())
        if missing:
            rows.update(self.entity.texts.fetch_rows(missing))
        out = []
        for vid, score, vrank, trank in ranked:
            record = owners.owner(vid)
            if record is None:
                continue
            text, title, section, page, ocr = rows.get(vid, ("", "", "", None, False))
            out.append((vid, Hit(record["doc_id"], record["path"], score, text, vid - int(record["first_vector_id"]),
                                 vrank, trank, title, section, page, ocr)))
        return out

    def vector_hits(self, query_vectors: np.ndarray, k: int) -> list[list[Hit]]:
        """Top-k chunks per query vector (vector mode), restricted to mapped documents."""
        return [
            self.hits([(i, s, rank, None) for rank, (i, s) in enumerate(row, 1)])
            for row in self.vector_search(query_vectors, k)
        ]
