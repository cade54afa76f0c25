"""Store consistency checks (`ragctl verify`) and safe repairs.

Orphan vectors (in the index, referenced by no record) are a normal, invisible leftover of an
interrupted commit (see the commit protocol in docs/storage.md): they are reported, not counted
as problems, and `--repair` drops them. Problems are things a query could get wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragctl.errors import StorageError
from ragctl.storage.json_storage import JSONStorage
from ragctl.storage.layout import MAPPING_COLLECTION, StoreLayout
from ragctl.storage.vector_store import EntityVectorStore, vector_ids

REQUIRED_FIELDS = ("doc_id", "entity_id", "name", "path", "content_hash", "chunk_count")


@dataclass
class EntityCheck:
    documents: int = 0
    vectors: int = 0
    orphans: int = 0
    problems: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "documents": self.documents,
            "vectors": self.vectors,
            "orphans": self.orphans,
            "problems": self.problems,
            "repaired": self.repaired,
        }


def check_entity(storage: JSONStorage, entity_id: str, repair: bool = False) -> EntityCheck:
    check = EntityCheck()
    store = EntityVectorStore(storage, entity_id)
    try:
        records = store.records()
    except StorageError as exc:
        check.problems.append(f"mapping shard unreadable: {exc}")
        return check
    check.documents = len(records)
    broken: list[str] = []
    for key, record in records.items():
        missing = [f for f in REQUIRED_FIELDS if f not in record]
        if missing:
            check.problems.append(f"record {key}: missing fields {', '.join(missing)}")
        elif record["doc_id"] != key:
            check.problems.append(f"record {key}: doc_id field says {record['doc_id']!r}")
        elif record["entity_id"] != entity_id:
            check.problems.append(f"record {key}: belongs to entity {record['entity_id']!r}")
    meta = store.meta()
    try:
        index = store.load_index()
    except StorageError as exc:
        check.problems.append(str(exc))
        return check
    if records and meta is None:
        check.problems.append("entity.json (model identity) is missing")
    if index is not None:
        check.vectors = int(index.ntotal)
        if meta and meta.get("model", {}).get("dim") not in (None, index.d):
            check.problems.append(f"index dimension {index.d} != model dimension {meta['model']['dim']}")
    present = store.index_ids(index)
    rows = store.chunk_row_ids()
    seen_ids: dict[int, str] = {}
    seen_hashes: dict[str, str] = {}
    for key, record in records.items():
        if any(f not in record for f in REQUIRED_FIELDS):
            continue
        ids = vector_ids(record)
        if len(ids) != int(record["chunk_count"]) or int(record["chunk_count"]) < 1:
            check.problems.append(f"{record['path']}: chunk_count {record['chunk_count']} is not valid")
        lost = [i for i in ids if i not in present]
        if lost:
            check.problems.append(f"{record['path']}: {len(lost)} of {len(ids)} vectors missing from the index")
            broken.append(key)
        no_text = [i for i in ids if i not in rows]
        if no_text:
            check.problems.append(f"{record['path']}: {len(no_text)} chunk texts missing")
            broken.append(key)
        for i in ids:
            if i in seen_ids:
                check.problems.append(f"{record['path']}: vector id {i} also used by {seen_ids[i]}")
                break
            seen_ids[i] = record["path"]
        other = seen_hashes.setdefault(record["content_hash"], record["path"])
        if other != record["path"]:
            check.problems.append(f"{record['path']}: same content as {other} (indexed twice)")
    check.orphans = len(present - set(seen_ids))
    if repair:
        if broken:
            # A record whose vectors are gone is not searchable: drop it so the next ingest
            # re-indexes the file. Nothing searchable is lost.
            storage.delete(MAPPING_COLLECTION, {"doc_id": sorted(set(broken)), "entity_id": entity_id})
            check.repaired.append(f"dropped {len(set(broken))} unsearchable records (re-run ingest to re-index them)")
        if check.orphans or broken:
            removed = store.gc()
            if removed:
                check.repaired.append(f"removed {removed} orphan vectors")
        if broken:
            check.problems = [p for p in check.problems if "missing" not in p]
    return check


def verify_store(store: Path, repair: bool = False) -> dict[str, Any]:
    from ragctl.query import open_storage

    storage = open_storage(store)
    entities = {e: check_entity(storage, e, repair) for e in StoreLayout(store).entity_ids()}
    store_problems: list[str] = []
    try:
        legacy = storage.read_legacy(MAPPING_COLLECTION)
    except StorageError as exc:
        legacy, store_problems = {}, [str(exc)]
    for record in legacy.values():
        eid = record.get("entity_id")
        if isinstance(eid, str) and eid not in entities:
            try:
                entities[eid] = check_entity(storage, eid, repair)
            except Exception as exc:  # noqa: BLE001 - invalid ids etc. are reported, not fatal
                store_problems.append(f"legacy record {record.get('doc_id')}: {exc}")
    ok = all(c.ok for c in entities.values()) and not store_problems
    out: dict[str, Any] = {"ok": ok, "entities": {e: c.to_json() for e, c in sorted(entities.items())}}
    if store_problems:
        out["problems"] = store_problems
    return out
