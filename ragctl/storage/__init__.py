"""Storage engine: one module per on-disk thing, and the commit protocol.

    layout.py        where files live, store.json, require_store()
    json_storage.py  sharded JSON mapping files (JSONStorage), open_store()
    segments.py      an entity's vectors as append-only segment files, tiered compaction
    vector_index.py  FAISS helpers (search, ids) and the format-2 single index.faiss (upgraded in place)
    mapping_log.py   the append-only log of mapping changes beside a shard, and its folding
    chunk_texts.py   chunk texts + full-text index in SQLite (ChunkTexts)
    entity_meta.py   entity.json (model identity, id high-water mark)
    owners.py        vector id -> mapping record
    entity.py        EntityStore: the commit protocol, gc, search; open_entity()

Heavy modules (faiss, numpy) are imported lazily: importing this package is cheap.
"""

from ragctl.storage.json_storage import JSONStorage, load_records, matches, open_store, record_shards
from ragctl.storage.layout import MAPPING_COLLECTION, StoreLayout, default_store_dir, require_store

__all__ = [
    "JSONStorage",
    "MAPPING_COLLECTION",
    "StoreLayout",
    "default_store_dir",
    "load_records",
    "matches",
    "open_store",
    "require_store",
    "record_shards",
    "EntityStore",
    "PreparedDoc",
    "CommitResult",
    "Hit",
    "open_entity",
]

_LAZY = ("EntityStore", "PreparedDoc", "CommitResult", "Hit", "open_entity")


def __getattr__(name: str):
    if name in _LAZY:
        from ragctl.storage import entity

        return getattr(entity, name)
    raise AttributeError(name)
