"""Store consistency checks (`ragctl verify`) and safe repairs.

Orphan vectors (in the index, referenced by no record) are a normal, invisible leftover of an
interrupted commit (see the commit protocol in docs/storage.md): they are reported, not counted
as problems, and `--repair` drops them. Problems are things a query could get wrong.

`--repair` fixes only what loses nothing searchable (orphan vectors; records whose vectors or
chunk texts are gone, dropped so the next ingest re-indexes the file; the full-text index). It
reports one line per thing it fixed (`repaired`) and then checks the entity again, so
`problems` lists exactly what is still wrong (e.g. a record with missing fields, content
indexed twice), and the store stays "not ok" until those are fixed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragctl.errors import StorageError
from ragctl.storage import catalog
from ragctl.storage.entity import EntityStore
from ragctl.storage.json_storage import JSONStorage, Record, open_store
from ragctl.storage.layout import MAPPING_COLLECTION, StoreLayout, require_store, upgrade_manifest
from ragctl.storage.owners import vector_ids

REQUIRED_FIELDS = ("doc_id", "entity_id", "name", "path", "content_hash", "chunk_count")


@dataclass
class EntityCheck:
    documents: int = 0
    vectors: int = 0
    orphans: int = 0
    full_text: str = "ok"  # ok | missing (store older than the full-text index) | inconsistent
    problems: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    legacy_layout: bool = False  # vectors still in a format-2 index.faiss (--repair migrates them)
    bad_passage_sections: list[str] = field(default_factory=list)  # segments whose section disagrees with the rows
    # segments written before passage sections (not a problem: holders are found through the SQL
    # index meanwhile; the next ingest that writes, or --repair, gives them one)
    without_passage_sections: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "documents": self.documents,
            "vectors": self.vectors,
            "orphans": self.orphans,
            "full_text": self.full_text,
            "segments_without_passage_sections": self.without_passage_sections,
            "problems": self.problems,
            "repaired": self.repaired,
        }


def check_entity(storage: JSONStorage, entity_id: str, repair: bool = False) -> EntityCheck:
    check = EntityCheck()
    store = EntityStore(storage, entity_id)
    try:
        records = store.records()
    except StorageError as exc:
        check.problems.append(f"mapping shard unreadable: {exc}")
        return check
    check.documents = len(records)
    broken: dict[str, list[str]] = {}  # record key -> its repairable problems
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
        forgotten = store.forget_missing_segments() if repair else []
        if forgotten:  # then check again: the records whose vectors were there are now repairable
            after = check_entity(storage, entity_id, repair=True)
            after.repaired[:0] = [
                f"{s['name']}: vector segment missing: removed from entity.json ({s.get('count', '?')} vectors lost)"
                for s in forgotten
            ]
            return after
        check.problems.append(str(exc))
        return check
    if records and meta is None:
        check.problems.append("entity.json (model identity) is missing")
    if index is not None:
        check.vectors = int(index.ntotal)
        if meta and meta.get("model", {}).get("dim") not in (None, index.d):
            check.problems.append(f"index dimension {index.d} != model dimension {meta['model']['dim']}")
    import numpy as np

    present = store.index.ids(index)  # sorted int64
    rows = store.texts.row_ids()
    try:
        check.full_text = store.texts.full_text_state()
    except StorageError as exc:
        check.problems.append(str(exc))
    if check.full_text == "inconsistent":
        check.problems.append("full-text index disagrees with the chunk texts")
    # Exact, with numpy set operations over every referenced id (no per-id Python sets).
    valid: list[tuple[str, Record]] = []
    seen_hashes: dict[str, str] = {}
    for key, record in records.items():
        if any(f not in record for f in REQUIRED_FIELDS):
            continue
        ids = vector_ids(record)
        if len(ids) != int(record["chunk_count"]) or int(record["chunk_count"]) < 1:
            check.problems.append(f"{record['path']}: chunk_count {record['chunk_count']} is not valid")
        valid.append((key, record))
        other = seen_hashes.setdefault(record["content_hash"], record["path"])
        if other != record["path"]:
            check.problems.append(f"{record['path']}: same content as {other} (indexed twice)")
    spans = [vector_ids(r) for _, r in valid]
    lengths = np.array([len(sp) for sp in spans], dtype=np.int64)
    owner = np.repeat(np.arange(len(valid), dtype=np.int64), lengths)
    refs = (
        np.concatenate([np.arange(sp.start, sp.stop, dtype=np.int64) for sp in spans])
        if len(owner) else np.empty(0, np.int64)
    )
    lost = np.bincount(owner[~np.isin(refs, present)], minlength=len(valid))
    no_text = np.bincount(owner[~np.isin(refs, rows)], minlength=len(valid))
    order = np.argsort(refs, kind="stable")
    dup = np.flatnonzero(refs[order][1:] == refs[order][:-1])  # positions whose id repeats
    twice: dict[int, int] = {}  # record position -> the first id it shares
    for pos in dup.tolist():
        later, earlier = int(owner[order][pos + 1]), int(owner[order][pos])
        first, second = sorted((earlier, later))
        twice.setdefault(second, first)
    for n, (key, record) in enumerate(valid):
        total = len(spans[n])
        if lost[n]:
            problem = f"{record['path']}: {int(lost[n])} of {total} vectors missing from the index"
            check.problems.append(problem)
            broken.setdefault(key, []).append(problem)
        if no_text[n]:
            problem = f"{record['path']}: {int(no_text[n])} chunk texts missing"
            check.problems.append(problem)
            broken.setdefault(key, []).append(problem)
        if n in twice:
            check.problems.append(f"{record['path']}: a vector id is also used by {valid[twice[n]][1]['path']}")
    check.orphans = int(len(np.setdiff1d(present, refs)))
    # the passage sections that find a passage's holders agree with the rows' keys
    check.bad_passage_sections = passage_section_problems(store)
    check.without_passage_sections = sum(1 for s in (store.index.manifest() or {}).get("segments", [])
                                         if not s.get("passages"))
    check.problems.extend(f"segment {name}: its passage section is missing or disagrees with the chunk rows'"
                          " passage keys" for name in check.bad_passage_sections)
    check.legacy_layout = store.index.manifest() is None and store.index.legacy_path.exists()
    if repair:
        repaired = _repair(storage, store, entity_id, check, broken)
        if repaired:
            # Report exactly what is still wrong: check again, after the repairs.
            after = check_entity(storage, entity_id)
            after.repaired = repaired
            return after
    return check


def passage_section_problems(store: EntityStore) -> list[str]:
    """The live segments whose passage section entity.json vouches for but which is missing or
    disagrees with their ids or with their rows' passage keys (rows gone are not compared)."""
    import numpy as np

    from ragctl.storage import segments as seg

    manifest = store.index.manifest()
    bad: list[str] = []
    for entry in (manifest or {}).get("segments", []):
        if not entry.get("passages"):
            continue  # none, or one the manifest does not vouch for (not used; rewritten by the next gc)
        path = store.index.dir / entry["name"]
        try:
            section = seg.read_segment_passages(path)
            ids = seg.read_segment_ids(path)
        except (OSError, StorageError):
            continue  # a missing or unreadable segment is reported by the index check
        if section is None:  # lookups fall back to SQL, which no commit indexes while the mark is there
            bad.append(entry["name"])
            continue
        prefixes, section_ids = section
        if not np.array_equal(np.sort(section_ids), ids):
            bad.append(entry["name"])
            continue
        stored = store.texts.passages(section_ids.tolist())
        have = np.array([int(i) in stored for i in section_ids], dtype=bool)
        expected = seg.passage_prefixes([stored[int(i)] for i in section_ids[have]])
        if not np.array_equal(prefixes[have], expected):
            bad.append(entry["name"])
    return bad


def _repair(storage: JSONStorage, store: EntityStore, entity_id: str, check: EntityCheck, broken: dict[str, list[str]]) -> list[str]:
    """Fix what can be fixed without losing anything searchable; one line per thing fixed."""
    repaired: list[str] = []
    if broken:
        # A record whose vectors or texts are gone is not searchable: drop it so the next
        # ingest re-indexes the file. Nothing searchable is lost.
        storage.delete(MAPPING_COLLECTION, {"doc_id": sorted(broken), "entity_id": entity_id})
        for key in sorted(broken):
            for problem in broken[key]:
                repaired.append(f"{problem}: dropped the record (re-run ingest to re-index the file)")
    if check.bad_passage_sections:
        store.distrust_passage_sections(check.bad_passage_sections)  # rewritten by the gc below
    if check.orphans or broken or check.legacy_layout or check.without_passage_sections or check.bad_passage_sections:
        # also moves a format-2 index.faiss into segments and gives segments without a passage
        # section one
        removed = store.gc(force=True)
        if removed:
            repaired.append(f"removed {removed} orphan vectors")
        if check.legacy_layout:
            repaired.append("moved the vectors from index.faiss into segments (store format 3)")
        left = sum(1 for s in (store.index.manifest() or {}).get("segments", []) if not s.get("passages"))
        if check.bad_passage_sections:
            repaired.append(f"{len(check.bad_passage_sections)} passage sections missing or disagreeing with the"
                            f" chunk rows: rewritten from the rows ({left} segments without a section now)")
        elif check.without_passage_sections > left:
            repaired.append(f"segments without a passage section (written before them): "
                            f"{check.without_passage_sections} before, {left} now")
    if check.full_text == "missing":
        store.texts.ensure_full_text()
        repaired.append("built the full-text index")
    elif check.full_text == "inconsistent":
        store.texts.rebuild_full_text()
        repaired.append("rebuilt the full-text index")
    return repaired


def verify_store(store: Path, repair: bool = False) -> dict[str, Any]:
    require_store(store)
    if repair:
        upgrade_manifest(store)
    storage = open_store(store, create=False)
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
    # The store catalog (storage/catalog.py) against the entities' files, after the entity
    # repairs; pending marks of dead writers are settled first, as any reader does.
    try:
        cat = catalog.check(storage, entities, repair)
    except StorageError as exc:
        cat = {"ok": False, "present": True, "problems": [str(exc)], "repaired": [], "bytes_drift": []}
    store_problems += cat["problems"]
    ok = all(c.ok for c in entities.values()) and not store_problems
    out: dict[str, Any] = {"ok": ok, "entities": {e: c.to_json() for e, c in sorted(entities.items())},
                           "catalog": cat}
    if store_problems:
        out["problems"] = store_problems
    return out
