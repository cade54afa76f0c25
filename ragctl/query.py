"""Reading an entity back: top-k chunks for one or many queries, with one model load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ragctl.embedding import ModelSpec, resolve_model
from ragctl.errors import ConfigError, UsageError
from ragctl.ids import validate_entity_id
from ragctl.storage.json_storage import JSONStorage
from ragctl.storage.layout import MODE_SHARDED, StoreLayout, read_manifest
from ragctl.storage.vector_store import EntityVectorStore, Hit


def open_storage(store: Path) -> JSONStorage:
    """A JSONStorage in the store's recorded mapping mode (the store must exist)."""
    manifest = read_manifest(store)
    if manifest is None:
        raise UsageError(f"{store}: no ragctl store here (run `ragctl ingest` first or pass --store)")
    return JSONStorage(store, enable_sharding=manifest.get("mapping_mode") == MODE_SHARDED)


def open_entity(store: Path, entity_id: str) -> EntityVectorStore:
    validate_entity_id(entity_id)
    entity = EntityVectorStore(open_storage(store), entity_id)
    if not entity.exists():
        known = ", ".join(StoreLayout(store).entity_ids()[:20]) or "none"
        raise UsageError(f"unknown entity {entity_id!r} in store {store} (entities: {known})")
    return entity


def model_for_entity(entity: EntityVectorStore, model: str | None) -> ModelSpec:
    """The model the entity was indexed with (or `model`, which must be the same one)."""
    meta = entity.meta() or {}
    recorded = meta.get("model", {})
    spec = resolve_model(model if model is not None else recorded.get("name"))
    if recorded and (recorded.get("digest") != spec.digest or recorded.get("dim") != spec.dim):
        raise ConfigError(
            f"entity {entity.entity_id!r} was indexed with model {recorded.get('name')!r}; "
            f"{spec.name!r} is a different model (digest or dimension differs)"
        )
    return spec


class Searcher:
    """Loads the model once and answers many queries against one entity."""

    def __init__(self, store: Path, entity_id: str, model: str | None = None) -> None:
        self.entity = open_entity(store, entity_id)
        self.spec = model_for_entity(self.entity, model)
        self._embedder = None

    def search(self, queries: list[str], k: int = 5) -> list[list[Hit]]:
        if k < 1:
            raise UsageError("-k must be at least 1")
        if not queries:
            return []
        if self._embedder is None:
            from ragctl.embedding import Embedder

            # Queries are few and short: fp32 skips the bf16 self-check at start-up.
            self._embedder = Embedder.shared(self.spec, precision="fp32")
        vectors = self._embedder.encode(queries)
        return self.entity.search(vectors, k)


def hit_json(hit: Hit) -> dict[str, Any]:
    return {"doc_id": hit.doc_id, "path": hit.path, "score": round(hit.score, 6), "text": hit.text}
