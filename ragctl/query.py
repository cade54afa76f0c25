"""Reading an entity back: top-k chunks for one or many queries, with one model load.

Modes: `vector` (cosine over the FAISS index), `text` (bm25 over the SQLite FTS5 index of the
chunk texts) and `hybrid` (the default: reciprocal rank fusion of the two lists). Every mode
only returns chunks of documents the entity's mapping references.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragctl.embedding import ModelSpec, resolve_model
from ragctl.errors import ConfigError, UsageError
from ragctl.storage.entity import EntityStore, Hit, open_entity

if TYPE_CHECKING:
    from ragctl.runtimes.remote import RemoteSettings

MODES = ("hybrid", "vector", "text")
RRF_K = 60  # reciprocal rank fusion constant (Cormack et al. 2009)
MIN_DEPTH = 40  # candidates taken from each list before fusing


def model_for_entity(entity: EntityStore, model: str | None, remote: RemoteSettings | None = None) -> ModelSpec:
    """The model the entity was indexed with (or `model`, which must be the same one); with
    `remote`, the embedding service's identity (host, model, dim) must be the recorded one."""
    meta = entity.meta() or {}
    recorded = meta.get("model", {})
    if remote is not None:
        from ragctl.runtimes.remote import remote_spec

        spec: ModelSpec = remote_spec(model, remote)
    elif str(recorded.get("name", "")).startswith("remote:"):
        raise ConfigError(
            f"entity {entity.entity_id!r} was indexed through an embedding service ({recorded['name']}); "
            "pass the same --embed-url/--embed-model to query it"
        )
    else:
        spec = resolve_model(model if model is not None else recorded.get("name"))
    if recorded and (recorded.get("digest") != spec.digest or recorded.get("dim") != spec.dim):
        raise ConfigError(
            f"entity {entity.entity_id!r} was indexed with model {recorded.get('name')!r}; "
            f"{spec.name!r} is a different model (digest or dimension differs)"
        )
    return spec


def fuse(
    vector: Sequence[tuple[int, float]], text: Sequence[tuple[int, float]], k: int, rrf_k: int = RRF_K
) -> list[tuple[int, float, int | None, int | None]]:
    """Reciprocal rank fusion: (id, score, vector_rank, text_rank), best first. Ties are broken
    by the better vector rank, then the better text rank, then the id: fully deterministic."""
    vranks = {vid: rank for rank, (vid, _) in enumerate(vector, 1)}
    tranks = {vid: rank for rank, (vid, _) in enumerate(text, 1)}
    rows = []
    for vid in vranks.keys() | tranks.keys():
        vr, tr = vranks.get(vid), tranks.get(vid)
        score = (1.0 / (rrf_k + vr) if vr else 0.0) + (1.0 / (rrf_k + tr) if tr else 0.0)
        rows.append((vid, score, vr, tr))
    big = 1 << 62
    rows.sort(key=lambda r: (-r[1], r[2] or big, r[3] or big, r[0]))
    return rows[:k]


class Searcher:
    """Loads the model once (only if a mode needs it) and answers many queries of one entity."""

    def __init__(self, store: Path, entity_id: str, model: str | None = None,
                 remote: RemoteSettings | None = None, backend: str = "auto") -> None:
        self.entity = open_entity(store, entity_id)
        self.spec = model_for_entity(self.entity, model, remote)
        self.remote = remote
        self.backend = backend  # any backend finds the same top results (vectors agree to 0.999)
        self._embedder: Any = None

    def _encode(self, queries: list[str]):
        if self._embedder is None and self.remote is not None:
            from ragctl.runtimes.remote import RemoteEmbedder

            self._embedder = RemoteEmbedder(self.spec, self.remote)  # type: ignore[arg-type]
        if self._embedder is None:
            from ragctl.embedding import Embedder

            # Queries are few and short: fp32 skips the bf16 self-check at start-up.
            self._embedder = Embedder.shared(self.spec, precision="fp32", backend=self.backend)
        return self._embedder.encode(queries)

    def search(self, queries: list[str], k: int = 5, mode: str = "hybrid") -> list[list[Hit]]:
        if k < 1:
            raise UsageError("k must be at least 1")
        if mode not in MODES:
            raise UsageError(f"unknown search mode {mode!r} (one of {', '.join(MODES)})")
        if not queries:
            return []
        entity = self.entity
        if mode == "vector":
            return entity.search(self._encode(queries), k)
        if mode == "text":
            return [
                entity.hits([(i, s, None, rank) for rank, (i, s) in enumerate(entity.text_search(q, k), 1)])
                for q in queries
            ]
        depth = max(MIN_DEPTH, 4 * k)
        vector_rows = entity.vector_search(self._encode(queries), depth)
        return [
            entity.hits(fuse(vrows, entity.text_search(q, depth), k))
            for q, vrows in zip(queries, vector_rows)
        ]


def hit_json(hit: Hit) -> dict[str, Any]:
    return {
        "doc_id": hit.doc_id,
        "path": hit.path,
        "score": round(hit.score, 6),
        "text": hit.text,
        "chunk": hit.chunk,
        "vector_rank": hit.vector_rank,
        "text_rank": hit.text_rank,
    }
