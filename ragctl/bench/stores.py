"""Reading benchmark stores back: what each store holds, and whether two stores agree."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any


def _open_storage(store: Path):  # -> JSONStorage
    from ragctl.storage.json_storage import open_store

    return open_store(store, create=False)


def store_snapshot(store: Path, texts: bool = False) -> dict[str, dict[str, Any]]:
    """{entity: {path: chunk_count}} (or {path: [chunk texts]} with texts=True)."""
    from ragctl.storage.entity import EntityStore
    from ragctl.storage.layout import StoreLayout
    from ragctl.storage.owners import vector_ids

    storage = _open_storage(store)
    out: dict[str, dict[str, Any]] = {}
    for entity_id in StoreLayout(store).entity_ids():
        entity = EntityStore(storage, entity_id)
        records = entity.records()
        if not texts:
            out[entity_id] = {r["path"]: int(r["chunk_count"]) for r in records.values()}
            continue
        rows = entity.texts.fetch([i for r in records.values() for i in vector_ids(r)])
        out[entity_id] = {r["path"]: [rows.get(i) for i in vector_ids(r)] for r in records.values()}
    return out


def compare_snapshots(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]], names: tuple[str, str] = ("sequential", "parallel")) -> list[str]:
    """Human-readable differences (empty when the stores agree)."""
    problems: list[str] = []
    for entity in sorted(set(a) | set(b)):
        if entity not in a or entity not in b:
            problems.append(f"entity {entity}: only in {names[0] if entity in a else names[1]}")
            continue
        da, db = a[entity], b[entity]
        for path in sorted(set(da) - set(db)):
            problems.append(f"{entity}/{path}: only in {names[0]}")
        for path in sorted(set(db) - set(da)):
            problems.append(f"{entity}/{path}: only in {names[1]}")
        for path in sorted(set(da) & set(db)):
            if da[path] != db[path]:
                what = "chunk counts" if isinstance(da[path], int) else "chunks"
                problems.append(f"{entity}/{path}: {what} differ ({_short(da[path])} vs {_short(db[path])})")
    return problems


def _short(value: Any) -> str:
    if isinstance(value, list):
        return f"{len(value)} chunks"
    return str(value)


def chunk_texts_in_order(store: Path, entities: list[str] | None = None) -> list[str]:
    """Every chunk text of the store, entity by entity in commit order (ids ascending)."""
    from ragctl.storage.entity import EntityStore
    from ragctl.storage.layout import StoreLayout
    from ragctl.storage.owners import referenced_ids

    storage = _open_storage(store)
    texts: list[str] = []
    for entity_id in entities or StoreLayout(store).entity_ids():
        entity = EntityStore(storage, entity_id)
        if not entity.texts.exists():
            continue
        keep = set(referenced_ids(entity.records().values()).tolist())
        with closing(sqlite3.connect(f"file:{entity.texts.path}?mode=ro", uri=True)) as conn:
            texts.extend(t for i, t in conn.execute("SELECT id, text FROM chunks ORDER BY id") if i in keep)
    return texts
