"""Per-entity statistics (`ragctl stats`), read from the store catalog (storage/catalog.py):
one SQLite query, not one open per entity. A store without a catalog gets one on first use."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ragctl.storage import catalog
from ragctl.storage.json_storage import open_store
from ragctl.storage.layout import MAPPING_COLLECTION, StoreLayout, require_store


def _store_level_bytes(store: Path) -> int:
    """Bytes of the files that belong to no entity: store.json, the legacy mapping, the catalog."""
    layout = StoreLayout(store)
    cat = catalog.catalog_path(store)
    total = 0
    for path in (layout.manifest_path, layout.legacy_path(MAPPING_COLLECTION), cat,
                 cat.with_name(cat.name + "-wal")):
        try:
            total += os.stat(path).st_size
        except OSError:
            pass
    return total


def store_stats(store: Path, *, offset: int = 0, limit: int | None = None, q: str = "",
                allowed: frozenset[str] | None = None) -> dict[str, Any]:
    """{"entities": {id: {documents, chunks, bytes, last_ingest, model, error}}, "totals":
    {entities, documents, chunks, bytes}, "total", "offset", "limit"}: entities sorted by id,
    filtered by `q` (case-insensitive substring of the id) and `allowed`, then paged; totals
    over every matching entity. Unfiltered, totals.bytes also counts the store-level files."""
    require_store(store)
    storage = open_store(store, create=False)
    result = catalog.page(storage, offset=offset, limit=limit, q=q, allowed=allowed)
    if not q and allowed is None:
        result["totals"]["bytes"] += _store_level_bytes(store)
    result["offset"] = offset
    result["limit"] = limit
    return result


def unreadable_entities(store: Path, q: str = "") -> dict[str, str]:
    """Every entity (whose id contains `q`) whose records cannot be read, paged or not:
    {id: error} (`ragctl verify` says more)."""
    require_store(store)
    return catalog.errors(open_store(store, create=False), q)
