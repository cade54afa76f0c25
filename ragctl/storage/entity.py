"""`EntityStore`: one entity's vector index, chunk texts (+ full-text index) and mapping shard,
and the commit protocol that keeps them in agreement (see docs/storage.md).

All under the entity's mapping-shard lock:

  1. chunk texts for new vectors (and their full-text entries) are inserted into chunks.sqlite
     in one transaction;
  2. orphans from earlier commits are dropped, new vectors added, the index written atomically;
     then the dropped orphans' chunk rows are deleted;
  3. the mapping shard is written atomically - this is the commit point;
  4. vectors of replaced/removed documents are now orphans: invisible to queries (results are
     filtered to ids the mapping references) and dropped by the next commit or `gc()`.

Invariant at every instant: chunk rows ⊇ index ids ⊇ ids referenced by the mapping, and the
full-text index holds exactly the chunk rows. A kill -9 anywhere leaves every mapped document
fully searchable and never exposes a half document.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragctl.errors import StorageError
from ragctl.fsutil import now_iso
from ragctl.ids import validate_entity_id
from ragctl.storage.chunk_texts import ChunkTexts
from ragctl.storage.entity_meta import EntityMeta
from ragctl.storage.json_storage import JSONStorage, Record, record_shards
from ragctl.storage.layout import MAPPING_COLLECTION, StoreLayout
from ragctl.storage.owners import Owners, referenced_ids
from ragctl.storage.vector_index import VectorIndex, file_signature

if TYPE_CHECKING:
    import faiss
    import numpy as np


@dataclass
class PreparedDoc:
    """A parsed, chunked and embedded document, ready to commit."""

    path: str  # relative to the entity root, POSIX separators
    content_hash: str
    size: int
    mtime_ns: int
    chunks: list[str]
    vectors: Any  # np.ndarray (len(chunks), dim) float32, L2-normalised
    parser: str = ""
    # doc_ids of records with this content whose own file now holds something else (a file
    # renamed and its old name re-created): this document is not a copy of those.
    not_a_copy_of: frozenset[str] = frozenset()

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass
class CommitResult:
    status: dict[str, str] = field(default_factory=dict)  # path -> indexed|updated|unchanged|duplicate|moved|pruned|refreshed
    chunks_added: int = 0
    note: dict[str, str] = field(default_factory=dict)  # path -> detail (e.g. duplicate of X)


@dataclass(frozen=True)
class Hit:
    doc_id: str
    path: str
    score: float
    text: str
    chunk: int
    vector_rank: int | None = None  # 1-based rank in the vector results (None: not there)
    text_rank: int | None = None  # 1-based rank in the full-text (bm25) results


class EntityStore:
    """One entity's index, chunk texts and mapping shard, safe across threads and processes."""

    def __init__(self, storage: JSONStorage, entity_id: str) -> None:
        self.entity_id = validate_entity_id(entity_id)
        self.storage = storage
        layout = StoreLayout(storage.root)
        self.index = VectorIndex(layout.index_path(self.entity_id))
        self.texts = ChunkTexts(layout.chunks_path(self.entity_id))
        self._meta = EntityMeta(layout.entity_meta_path(self.entity_id), self.entity_id)
        self._mem_lock = threading.Lock()
        self._owners: tuple[tuple[Any, ...], Owners] | None = None

    # ------------------------------------------------------------------ reading
    def meta(self) -> dict[str, Any] | None:
        return self._meta.read()

    def exists(self) -> bool:
        return self._meta.exists() or bool(self.records())

    def records(self) -> dict[str, Record]:
        return self.storage.records_for_entity(MAPPING_COLLECTION, self.entity_id)

    def check_model(self, model: dict[str, Any]) -> None:
        self._meta.check_model(model)

    def load_index(self, dim: int | None = None) -> faiss.Index | None:
        return self.index.load(dim)

    def owners(self) -> Owners:
        """Vector id -> record, rebuilt only when a mapping file was replaced (keyed by the
        files' signatures, like JSONStorage's own cache)."""
        key = (
            file_signature(self.storage.legacy_path(MAPPING_COLLECTION)),
            file_signature(self.storage.shard_path(MAPPING_COLLECTION, self.entity_id))
            if self.storage.enable_sharding else None,
        )
        cached = self._owners
        if cached is not None and cached[0] == key:
            return cached[1]
        owners = Owners(self.records().values())
        self._owners = (key, owners)
        return owners

    # ------------------------------------------------------------------ commit
    @contextmanager
    def locked(self) -> Iterator[dict[str, Record]]:
        """Hold the entity's lock (= its mapping shard lock); yields the shard, written on exit."""
        with self._mem_lock, self.storage.edit(MAPPING_COLLECTION, self.entity_id) as shard:
            if not self.storage.enable_sharding:
                self._refuse_if_migrated()
            yield shard

    def _refuse_if_migrated(self) -> None:
        """A monolithic writer that waited on the legacy lock while migrate-to-sharded ran must
        not write the entity's records back into the legacy file (they would duplicate the
        migrated shard). Checked under the legacy lock, which the migration holds throughout."""
        from ragctl.storage.layout import MODE_SHARDED, read_manifest

        manifest = read_manifest(self.storage.root) or {}
        if manifest.get("mapping_mode") == MODE_SHARDED:
            raise StorageError(
                f"{self.storage.root}: the store was migrated to sharded mappings during this "
                "run; nothing was written for this batch - run the command again"
            )

    def commit(
        self,
        model: dict[str, Any],
        adds: Sequence[PreparedDoc] = (),
        changes: Sequence[tuple[str, dict[str, Any]]] = (),
        removes: Sequence[str] = (),
        precision: str = "",
    ) -> CommitResult:
        """Apply adds/replacements, record changes (moves, refreshes) and removals atomically.

        Hash checks are repeated here, under the lock, so concurrent writers never index the
        same content twice; parsing and embedding happened before, outside any lock.
        """
        import numpy as np

        result = CommitResult()
        with self.locked() as shard:
            self.check_model(model)
            mine, legacy = self._split_view(shard)
            view = {**legacy, **mine}
            accepted = _accept(adds, view, result)

            index = self.load_index(dim=int(model["dim"]))
            assert index is not None
            present = VectorIndex.ids(index)
            orphans = np.setdiff1d(present, referenced_ids(view.values()), assume_unique=True)
            # Ids are never reused, even after orphans are dropped: the high-water mark is kept
            # in entity.json, so a concurrent reader can never pair an old id with new text.
            next_id = max(
                int(present[-1]) + 1 if len(present) else 0,
                self.texts.max_id() + 1,
                self._meta.next_vector_id(),
            )
            new_rows: list[tuple[int, str, int, str]] = []
            new_vectors: list[np.ndarray] = []
            new_records: list[Record] = []
            for doc, doc_id, status in accepted:
                first = next_id
                next_id += len(doc.chunks)
                new_rows.extend((first + i, doc_id, i, text) for i, text in enumerate(doc.chunks))
                new_vectors.append(np.ascontiguousarray(doc.vectors, dtype=np.float32))
                new_records.append(self._record(doc, doc_id, first))
                result.status[doc.path] = status
                result.chunks_added += len(doc.chunks)

            # 1. chunk texts + full-text entries (superset of the index at every instant)
            self.texts.insert(new_rows)
            # 2. index: drop earlier orphans, add new vectors, write atomically
            if len(orphans) or new_rows:
                VectorIndex.remove(index, orphans)
                if new_rows:
                    VectorIndex.add(index, np.vstack(new_vectors), np.array([r[0] for r in new_rows], dtype=np.int64))
                self.index.persist(index)
                self.texts.delete(orphans.tolist())
            # 3. the mapping shard (written when the `locked` block exits): the commit point
            for record in new_records:
                for key in [k for k, r in mine.items() if r.get("path") == record["path"]]:
                    shard.pop(key, None)
                shard[record["doc_id"]] = record
            for doc_id, fields in changes:
                record = mine.get(doc_id) or legacy.get(doc_id)
                if record is None:
                    continue
                shard[doc_id] = {**record, **fields}
                moved = "path" in fields and fields["path"] != record["path"]
                result.status[fields.get("path", record["path"])] = "moved" if moved else "refreshed"
            legacy_removals = []
            for doc_id in removes:
                record = mine.get(doc_id) or legacy.get(doc_id)
                if record is None:
                    continue
                shard.pop(doc_id, None)
                result.status[record["path"]] = "pruned"
                if doc_id in legacy:
                    legacy_removals.append(doc_id)
            if new_rows or changes or removes or not self._meta.exists():
                self._meta.write(model, precision, next_id)
        # Records still in an unmigrated legacy file are removed after the shard lock is
        # released: lock order is always legacy -> shard (as migrate-to-sharded takes them).
        if legacy_removals:
            self.storage.delete(MAPPING_COLLECTION, {"doc_id": legacy_removals, "entity_id": self.entity_id})
        return result

    def _record(self, doc: PreparedDoc, doc_id: str, first: int) -> Record:
        return {
            "doc_id": doc_id,
            "entity_id": self.entity_id,
            "name": doc.name,
            "path": doc.path,
            "content_hash": doc.content_hash,
            "chunk_count": len(doc.chunks),
            "first_vector_id": first,
            "size": doc.size,
            "mtime_ns": doc.mtime_ns,
            "parser": doc.parser,
            "indexed_at": now_iso(),
        }

    def _split_view(self, shard: dict[str, Record]) -> tuple[dict[str, Record], dict[str, Record]]:
        """(this entity's records in the locked file, its records only in the legacy file)."""
        mine = {k: r for k, r in shard.items() if self.entity_id in record_shards(r)}
        if not self.storage.enable_sharding:
            return mine, {}
        legacy = {
            k: r
            for k, r in self.storage.read_legacy(MAPPING_COLLECTION).items()
            if k not in shard and self.entity_id in record_shards(r)
        }
        return mine, legacy

    def gc(self) -> int:
        """Drop vectors and chunk rows no mapping record references. Returns how many vectors."""
        import numpy as np

        if not self.index.exists() and not self.texts.exists():
            return 0
        with self.locked() as shard:
            mine, legacy = self._split_view(shard)
            keep = referenced_ids({**legacy, **mine}.values())
            index = self.load_index()
            present = VectorIndex.ids(index)
            orphans = np.setdiff1d(present, keep, assume_unique=True)
            if len(orphans):
                assert index is not None
                VectorIndex.remove(index, orphans)
                self.index.persist(index)
            # what the index still holds is referenced now, so every other row is stray
            stray_rows = np.setdiff1d(self.texts.row_ids(), keep, assume_unique=True)
            self.texts.delete(stray_rows.tolist())
            self.texts.ensure_full_text()
            return len(orphans)

    # ------------------------------------------------------------------ search
    def vector_search(self, query_vectors: np.ndarray, depth: int) -> list[list[tuple[int, float]]]:
        """Per query, up to `depth` (vector id, cosine) pairs of mapped documents, best first."""
        owners = self.owners()
        index = self.load_index()
        if index is None or index.ntotal == 0 or not owners:
            return [[] for _ in range(len(query_vectors))]
        # Orphans (from a crash or a pending clean-up) can fill the top; ask for enough extra.
        want = min(index.ntotal, depth + max(0, index.ntotal - owners.referenced))
        scores, ids = VectorIndex.search(index, query_vectors, want)
        out = []
        for row_scores, row_ids in zip(scores, ids):
            row = [(int(i), float(s)) for s, i in zip(row_scores, row_ids) if i >= 0 and owners.owner(int(i))]
            out.append(row[:depth])
        return out

    def text_search(self, text: str, depth: int) -> list[tuple[int, float]]:
        """Up to `depth` (vector id, bm25) pairs of mapped documents for free text."""
        owners = self.owners()
        if not owners or not text.strip():
            return []
        limit = depth
        while True:
            rows = self.texts.search(text, limit)
            kept = [(i, s) for i, s in rows if owners.owner(i)]
            if len(kept) >= depth or len(rows) < limit:
                return kept[:depth]
            limit *= 4  # rows of orphans or stray texts were in the way

    def hits(self, ranked: Sequence[tuple[int, float, int | None, int | None]]) -> list[Hit]:
        """Hits for (vector id, score, vector_rank, text_rank) rows, texts fetched in one go."""
        owners = self.owners()
        texts = self.texts.fetch(sorted({r[0] for r in ranked}))
        out = []
        for vid, score, vrank, trank in ranked:
            record = owners.owner(vid)
            if record is None:
                continue
            out.append(
                Hit(record["doc_id"], record["path"], score, texts.get(vid, ""),
                    vid - int(record["first_vector_id"]), vrank, trank)
            )
        return out

    def search(self, query_vectors: np.ndarray, k: int) -> list[list[Hit]]:
        """Top-k chunks per query vector (vector mode), restricted to mapped documents."""
        return [
            self.hits([(i, s, rank, None) for rank, (i, s) in enumerate(row, 1)])
            for row in self.vector_search(query_vectors, k)
        ]

    def stats(self) -> dict[str, Any]:
        index = self.load_index()
        return {"documents": len(self.records()), "vectors": 0 if index is None else int(index.ntotal)}


def _accept(adds: Sequence[PreparedDoc], view: dict[str, Record], result: CommitResult) -> list[tuple[PreparedDoc, str, str]]:
    """The adds to index (doc, doc_id, status); same content is `unchanged`/`duplicate`."""
    by_path = {r["path"]: r for r in view.values()}
    by_hash = {r["content_hash"]: r for r in view.values()}
    accepted: list[tuple[PreparedDoc, str, str]] = []
    for doc in adds:
        same_hash = by_hash.get(doc.content_hash)
        if same_hash is not None and same_hash.get("doc_id") in doc.not_a_copy_of:
            same_hash = None
        if same_hash is not None:
            if same_hash["path"] == doc.path:
                result.status[doc.path] = "unchanged"
            else:
                result.status[doc.path] = "duplicate"
                result.note[doc.path] = f"same content as {same_hash['path']}"
            continue
        old = by_path.get(doc.path)
        doc_id = old["doc_id"] if old else uuid.uuid4().hex
        accepted.append((doc, doc_id, "updated" if old else "indexed"))
        by_hash[doc.content_hash] = {"path": doc.path}
    return accepted


def open_entity(store: Path | JSONStorage, entity_id: str) -> EntityStore:
    """An existing entity of an existing store (a directory or an opened JSONStorage);
    UsageError naming the known entities when it has none. Creates nothing."""
    from ragctl.errors import UsageError
    from ragctl.storage.layout import open_store, require_store

    validate_entity_id(entity_id)
    if isinstance(store, JSONStorage):
        storage = store
    else:
        require_store(Path(store))
        storage = open_store(Path(store), create=False)
    entity = EntityStore(storage, entity_id)
    if not entity.exists():
        known = ", ".join(StoreLayout(storage.root).entity_ids()[:20]) or "none"
        raise UsageError(f"unknown entity {entity_id!r} in store {storage.root} (entities: {known})")
    return entity
