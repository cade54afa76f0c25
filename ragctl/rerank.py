"""`--rerank`: a second, finer look at the top fused candidates, with the entity's own model.

No cross-encoder can be installed offline from the package registry (docs/retrieval.md,
"Reranking"), so the rerank stage uses what is already loaded: each of the top `depth` fused
chunks is cut into passages of a few sentences (`PASSAGE_WORDS`), each passage is embedded with
the chunk's context line (title > section) in front, and a chunk scores by its best passage's
cosine to the query plus a small share of the cosine of its passages' mean (the chunk's topic). A long chunk whose answer is
one sentence among many other topics is then no longer outranked by a chunk that is vaguely
about everything in the question.

Passage vectors are cached per chunk id (ids are never reused, so a cached vector can never
belong to other text), so repeated and overlapping queries cost only their new passages.
The order is deterministic: ties fall back to the fused order.

Measured (docs/retrieval.md, "Reranking"): no better than the fused order on the question sets,
and 0.5-3 s per query on a loaded 2-core machine, so it is off by default; it is the place a
cross-encoder would plug in (same `rerank(query_vector, candidates, k)` contract).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ragctl.chunking import contextualize

if TYPE_CHECKING:
    import numpy as np

    from ragctl.storage.search import Hit

RERANK_DEPTH = 12  # fused candidates re-scored per query
PASSAGE_WORDS = 40  # sentences are grouped into passages of about this many words
CHUNK_WEIGHT = 0.3  # share of the whole chunk's cosine in the rerank score
CACHE_PASSAGES = 50_000

_SENTENCE = re.compile(r"(?<=[.!?:;])\s+|\n+")


def passages(text: str, words: int = PASSAGE_WORDS) -> list[str]:
    """Consecutive sentences (or lines) of `text` grouped up to about `words` words each; a
    sentence longer than that is a passage of its own (the model's window bounds it anyway)."""
    out: list[str] = []
    current: list[str] = []
    count = 0
    for piece in _SENTENCE.split(text):
        piece = " ".join(piece.split())
        if not piece:
            continue
        n = len(piece.split())
        if current and count + n > words:
            out.append(" ".join(current))
            current, count = [], 0
        current.append(piece)
        count += n
    if current:
        out.append(" ".join(current))
    return out


@dataclass(frozen=True)
class Candidate:
    vid: int  # vector id (the cache key)
    hit: Hit
    context: str  # the chunk's context line ("" for chunks made before contextual chunking)


class PassageReranker:
    """Re-scores candidates by their best passage; `encode` is the entity's model."""

    def __init__(self, encode: Callable[[list[str]], np.ndarray], chunk_weight: float = CHUNK_WEIGHT) -> None:
        self.encode = encode
        self.chunk_weight = chunk_weight
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()  # vid -> (passages + 1, dim)
        self._cached = 0
        self._lock = threading.Lock()

    def rerank(self, query_vector: np.ndarray, candidates: Sequence[Candidate], k: int) -> list[Hit]:
        """The top k candidates by rerank score (`Hit.score` becomes that score)."""
        import numpy as np

        vectors = self._vectors(candidates)
        scored = []
        for order, cand in enumerate(candidates):
            rows = vectors[cand.vid]
            mean = rows.mean(axis=0)
            best = float((rows @ query_vector).max())
            whole = float(mean @ query_vector / max(float(np.linalg.norm(mean)), 1e-12))
            score = (1 - self.chunk_weight) * best + self.chunk_weight * whole
            scored.append((-np.float32(score), order, cand))
        scored.sort(key=lambda row: (row[0], row[1]))
        return [replace(cand.hit, score=float(-neg)) for neg, _, cand in scored[:k]]

    def _vectors(self, candidates: Sequence[Candidate]) -> dict[int, np.ndarray]:
        """vid -> the chunk's passage vectors (with its context line), L2-normalised."""
        with self._lock:
            found = {c.vid: self._cache[c.vid] for c in candidates if c.vid in self._cache}
            for vid in found:
                self._cache.move_to_end(vid)
        missing = [c for c in candidates if c.vid not in found]
        if missing:
            texts: list[str] = []
            spans: list[tuple[Candidate, int, int]] = []
            for cand in missing:
                parts = [contextualize(cand.context, p) for p in passages(cand.hit.text) or [cand.hit.text]]
                spans.append((cand, len(texts), len(texts) + len(parts)))
                texts.extend(parts)
            encoded = self.encode(texts)
            with self._lock:
                for cand, start, end in spans:
                    rows = encoded[start:end]
                    found[cand.vid] = rows
                    self._cache[cand.vid] = rows
                    self._cached += len(rows)
                while self._cached > CACHE_PASSAGES and self._cache:
                    _, dropped = self._cache.popitem(last=False)
                    self._cached -= len(dropped)
        return found
