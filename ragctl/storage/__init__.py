"""Storage engine: sharded JSON mapping, per-entity vector stores, store layout."""

from ragctl.storage.json_storage import JSONStorage, matches, record_shards
from ragctl.storage.layout import MAPPING_COLLECTION, StoreLayout, default_store_dir

__all__ = [
    "JSONStorage",
    "MAPPING_COLLECTION",
    "StoreLayout",
    "default_store_dir",
    "matches",
    "record_shards",
    "EntityVectorStore",
    "PreparedDoc",
]


def __getattr__(name: str):
    if name in ("EntityVectorStore", "PreparedDoc"):
        from ragctl.storage import vector_store

        return getattr(vector_store, name)
    raise AttributeError(name)
