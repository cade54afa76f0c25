"""Per-entity statistics (`ragctl stats`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ragctl.errors import StorageError
from ragctl.storage.entity import EntityStore
from ragctl.storage.json_storage import open_store
from ragctl.storage.layout import MAPPING_COLLECTION, StoreLayout, require_store


def _bytes_under(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def store_stats(store: Path) -> dict[str, Any]:
    require_store(store)
    storage = open_store(store, create=False)
    layout = StoreLayout(store)
    entities: dict[str, Any] = {}
    for entity_id in layout.entity_ids():
        entity = EntityStore(storage, entity_id)
        error = None
        try:
            records = entity.records()
            meta = entity.meta() or {}
        except (StorageError, OSError) as exc:  # one unreadable entity does not hide the others
            records, meta, error = {}, {}, str(exc)
        entities[entity_id] = {
            "documents": len(records),
            "chunks": sum(int(r.get("chunk_count", 0)) for r in records.values()),
            "bytes": _bytes_under(layout.entity_dir(entity_id)) + _bytes_under(layout.shard_path(MAPPING_COLLECTION, entity_id)),
            "last_ingest": meta.get("last_ingest"),
            "model": meta.get("model", {}).get("name"),
            "error": error,  # why its records cannot be read (`ragctl verify` says more); else null
        }
    totals = {
        "entities": len(entities),
        "documents": sum(e["documents"] for e in entities.values()),
        "chunks": sum(e["chunks"] for e in entities.values()),
        "bytes": _bytes_under(store),
    }
    return {"entities": entities, "totals": totals}
