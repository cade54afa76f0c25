"""Per-entity vector store: a FAISS index, chunk texts in SQLite, and the commit protocol.

Commit protocol (all under the entity's mapping-shard lock; see docs/storage.md):

  1. chunk texts for new vectors are inserted into chunks.sqlite (one transaction);
  2. new vectors are added to the index, orphans from earlier commits are dropped, and the
     index is written atomically (temp + fsync + replace + fsync dir);
  3. the mapping shard is written atomically — this is the commit point;
  4. vectors of replaced/removed documents are now orphans: invisible to queries (results are
     filtered to ids the mapping references) and dropped by the next commit or `gc()`.

Invariant at every instant: chunk rows ⊇ index ids ⊇ ids referenced by the mapping. A kill -9
anywhere leaves every mapped document fully searchable and never exposes a half document.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragctl.errors import ConfigError, StorageError
from ragctl.fsutil import atomic_write_bytes, atomic_write_json, read_json
from ragctl.ids import validate_entity_id
from ragctl.storage.json_storage import JSONStorage, Record, record_shards
from ragctl.storage.layout import MAPPING_COLLECTION, StoreLayout

if TYPE_CHECKING:
    import faiss
    import numpy as np


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def vector_ids(record: Record) -> range:
    first = int(record.get("first_vector_id", 0))
    return range(first, first + int(record.get("chunk_count", 0)))


def referenced_ids(records: Iterable[Record]) -> set[int]:
    ids: set[int] = set()
    for record in records:
        ids.update(vector_ids(record))
    return ids


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


class EntityVectorStore:
    """One entity's index, chunk texts and mapping shard, safe across threads and processes."""

    def __init__(self, storage: JSONStorage, entity_id: str) -> None:
        self.entity_id = validate_entity_id(entity_id)
        self.storage = storage
        self.layout = StoreLayout(storage.root)
        self._index: faiss.Index | None = None
        self._index_sig: tuple[int, int, int] | None = None
        self._mem_lock = threading.Lock()

    # ------------------------------------------------------------------ paths / meta
    @property
    def index_path(self) -> Path:
        return self.layout.index_path(self.entity_id)

    @property
    def chunks_path(self) -> Path:
        return self.layout.chunks_path(self.entity_id)

    @property
    def meta_path(self) -> Path:
        return self.layout.entity_meta_path(self.entity_id)

    def meta(self) -> dict[str, Any] | None:
        return read_json(self.meta_path, None)

    def exists(self) -> bool:
        return self.meta_path.exists() or bool(self.records())

    def records(self) -> dict[str, Record]:
        return self.storage.records_for_entity(MAPPING_COLLECTION, self.entity_id)

    def check_model(self, model: dict[str, Any]) -> None:
        """Refuse to mix models: the entity is bound to the model that first indexed it."""
        meta = self.meta()
        if not meta:
            return
        have = meta.get("model", {})
        if have.get("dim") != model.get("dim") or have.get("digest") != model.get("digest"):
            raise ConfigError(
                f"entity {self.entity_id!r} was indexed with model {have.get('name')!r} "
                f"(dim {have.get('dim')}, digest {str(have.get('digest'))[:12]}); refusing to add "
                f"vectors from {model.get('name')!r} (dim {model.get('dim')}, digest "
                f"{str(model.get('digest'))[:12]}). Use the same --model or another store."
            )

    # ------------------------------------------------------------------ index file
    def _index_signature(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.index_path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def load_index(self, dim: int | None = None) -> faiss.Index | None:
        """The on-disk index (reloaded when another writer replaced it), or a new empty one."""
        import faiss
        import numpy as np

        sig = self._index_signature()
        if sig is not None and sig == self._index_sig and self._index is not None:
            return self._index
        if sig is None:
            if dim is None:
                self._index, self._index_sig = None, None
                return None
            self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
            self._index_sig = None
            return self._index
        try:
            raw = self.index_path.read_bytes()
            index = faiss.deserialize_index(np.frombuffer(raw, dtype=np.uint8))
        except Exception as exc:  # noqa: BLE001 - faiss raises RuntimeError for corrupt files
            raise StorageError(f"{self.index_path}: cannot load index: {str(exc).splitlines()[0]}") from exc
        self._index, self._index_sig = index, sig
        return index

    def _persist_index(self, index: faiss.Index) -> None:
        import faiss

        atomic_write_bytes(self.index_path, faiss.serialize_index(index).tobytes())
        self._index, self._index_sig = index, self._index_signature()

    @staticmethod
    def index_ids(index: faiss.Index | None) -> set[int]:
        if index is None or index.ntotal == 0:
            return set()
        import faiss

        return set(faiss.vector_to_array(index.id_map).tolist())

    # ------------------------------------------------------------------ chunk texts
    def _connect(self) -> sqlite3.Connection:
        self.chunks_path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.chunks_path, timeout=60, isolation_level=None)
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS chunks (id INTEGER PRIMARY KEY, doc_id TEXT NOT NULL,"
            " ord INTEGER NOT NULL, text TEXT NOT NULL)"
        )
        return conn

    @contextmanager
    def _db(self, reader: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection to chunks.sqlite; sqlite errors (disk full, I/O) become StorageError.

        Readers open read-write but never create: a kill -9 inside a write transaction leaves
        a hot journal that only a writable connection can roll back (mode=ro fails on it with
        "attempt to write a readonly database")."""
        try:
            if reader:
                conn = sqlite3.connect(f"file:{self.chunks_path}?mode=rw", uri=True, timeout=60)
            else:
                conn = self._connect()
            with closing(conn):
                yield conn
        except sqlite3.Error as exc:
            raise StorageError(f"{self.chunks_path}: {exc}") from exc

    def chunk_texts(self, ids: Sequence[int]) -> dict[int, str]:
        if not ids or not self.chunks_path.exists():
            return {}
        with self._db(reader=True) as conn:
            if not _has_chunks_table(conn):
                return {}
            out: dict[int, str] = {}
            for start in range(0, len(ids), 500):
                part = list(ids[start : start + 500])
                marks = ",".join("?" * len(part))
                out.update(conn.execute(f"SELECT id, text FROM chunks WHERE id IN ({marks})", part).fetchall())
            return out

    def chunk_row_ids(self) -> set[int]:
        if not self.chunks_path.exists():
            return set()
        with self._db(reader=True) as conn:
            if not _has_chunks_table(conn):
                return set()
            return {row[0] for row in conn.execute("SELECT id FROM chunks")}

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
            by_path = {r["path"]: r for r in view.values()}
            by_hash = {r["content_hash"]: r for r in view.values()}

            accepted: list[tuple[PreparedDoc, str, str]] = []  # doc, doc_id, status
            for doc in adds:
                same_hash = by_hash.get(doc.content_hash)
                if same_hash is not None:
                    if same_hash["path"] == doc.path:
                        result.status[doc.path] = "unchanged"
                    else:
                        result.status[doc.path] = "duplicate"
                        result.note[doc.path] = f"same content as {same_hash['path']}"
                    continue
                old = by_path.get(doc.path)
                doc_id = old["doc_id"] if old else _new_doc_id()
                accepted.append((doc, doc_id, "updated" if old else "indexed"))
                by_hash[doc.content_hash] = {"path": doc.path}

            index = self.load_index(dim=int(model["dim"]))
            assert index is not None
            present = self.index_ids(index)
            orphans = present - referenced_ids(view.values())
            # Ids are never reused, even after orphans are dropped: the high-water mark is kept
            # in entity.json, so a concurrent reader can never pair an old id with new text.
            next_id = max(
                max(present, default=-1) + 1,
                self._max_chunk_row_id() + 1,
                int((self.meta() or {}).get("next_vector_id", 0)),
            )
            new_rows: list[tuple[int, str, int, str]] = []
            new_vectors: list[np.ndarray] = []
            new_ids: list[np.ndarray] = []
            new_records: list[Record] = []
            for doc, doc_id, status in accepted:
                first = next_id
                next_id += len(doc.chunks)
                new_rows.extend((first + i, doc_id, i, text) for i, text in enumerate(doc.chunks))
                new_vectors.append(np.ascontiguousarray(doc.vectors, dtype=np.float32))
                new_ids.append(np.arange(first, first + len(doc.chunks), dtype=np.int64))
                new_records.append(
                    {
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
                )
                result.status[doc.path] = status
                result.chunks_added += len(doc.chunks)

            # 1. chunk texts (superset of the index at every instant)
            if new_rows:
                with self._db() as conn:
                    conn.execute("BEGIN IMMEDIATE")
                    conn.executemany("INSERT OR REPLACE INTO chunks VALUES (?,?,?,?)", new_rows)
                    conn.execute("COMMIT")
            # 2. index: drop earlier orphans, add new vectors, write atomically
            if orphans or new_rows:
                if orphans:
                    index.remove_ids(np.fromiter(orphans, dtype=np.int64))
                if new_rows:
                    index.add_with_ids(np.vstack(new_vectors), np.concatenate(new_ids))
                self._persist_index(index)
                if orphans:
                    self._delete_chunk_rows(orphans)
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
                result.status[fields.get("path", record["path"])] = "moved" if "path" in fields and fields["path"] != record["path"] else "refreshed"
            legacy_removals = []
            for doc_id in removes:
                record = mine.get(doc_id) or legacy.get(doc_id)
                if record is None:
                    continue
                shard.pop(doc_id, None)
                result.status[record["path"]] = "pruned"
                if doc_id in legacy:
                    legacy_removals.append(doc_id)
            if new_rows or changes or removes or not self.meta_path.exists():
                self._write_meta(model, precision, next_id)
        # Records still in an unmigrated legacy file are removed after the shard lock is
        # released: lock order is always legacy -> shard (as migrate-to-sharded takes them).
        if legacy_removals:
            self.storage.delete(
                MAPPING_COLLECTION, {"doc_id": legacy_removals, "entity_id": self.entity_id}
            )
        return result

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

    def _write_meta(self, model: dict[str, Any], precision: str, next_id: int = 0) -> None:
        meta = self.meta() or {"entity_id": self.entity_id, "created_at": now_iso()}
        meta["next_vector_id"] = max(int(meta.get("next_vector_id", 0)), next_id)
        meta["model"] = {k: model[k] for k in ("name", "digest", "dim") if k in model}
        if precision:
            meta["precision"] = precision
        meta["last_ingest"] = now_iso()
        atomic_write_json(self.meta_path, meta)

    def _max_chunk_row_id(self) -> int:
        if not self.chunks_path.exists():
            return -1
        with self._db() as conn:
            row = conn.execute("SELECT MAX(id) FROM chunks").fetchone()
        return -1 if row[0] is None else int(row[0])

    def _delete_chunk_rows(self, ids: Iterable[int]) -> None:
        with self._db() as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("DELETE FROM chunks WHERE id = ?", [(i,) for i in ids])
            conn.execute("COMMIT")

    def gc(self) -> int:
        """Drop vectors and chunk rows no mapping record references. Returns how many."""
        import numpy as np

        if not self.index_path.exists() and not self.chunks_path.exists():
            return 0
        with self.locked() as shard:
            mine, legacy = self._split_view(shard)
            keep = referenced_ids({**legacy, **mine}.values())
            index = self.load_index()
            removed = 0
            if index is not None:
                orphans = self.index_ids(index) - keep
                if orphans:
                    index.remove_ids(np.fromiter(orphans, dtype=np.int64))
                    self._persist_index(index)
                    removed = len(orphans)
            stray_rows = self.chunk_row_ids() - keep - (self.index_ids(index) if index is not None else set())
            if stray_rows:
                self._delete_chunk_rows(stray_rows)
            return removed

    # ------------------------------------------------------------------ search
    def search(self, query_vectors: np.ndarray, k: int) -> list[list[Hit]]:
        """Top-k chunks per query, restricted to documents present in the mapping."""
        import numpy as np

        records = self.records()
        owner: dict[int, Record] = {}
        for record in records.values():
            for vid in vector_ids(record):
                owner[vid] = record
        index = self.load_index()
        if index is None or index.ntotal == 0 or not owner:
            return [[] for _ in range(len(query_vectors))]
        # Orphans (from a crash or a pending clean-up) can fill the top; ask for enough extra.
        depth = min(index.ntotal, k + max(0, index.ntotal - len(owner)))
        scores, ids = index.search(np.ascontiguousarray(query_vectors, dtype=np.float32), depth)
        wanted: list[list[tuple[int, float]]] = []
        for row_scores, row_ids in zip(scores, ids):
            row = [(int(i), float(s)) for s, i in zip(row_scores, row_ids) if i >= 0 and int(i) in owner]
            wanted.append(row[:k])
        texts = self.chunk_texts(sorted({i for row in wanted for i, _ in row}))
        return [
            [
                Hit(
                    doc_id=owner[i]["doc_id"],
                    path=owner[i]["path"],
                    score=s,
                    text=texts.get(i, ""),
                    chunk=i - int(owner[i]["first_vector_id"]),
                )
                for i, s in row
            ]
            for row in wanted
        ]

    def stats(self) -> dict[str, Any]:
        index = self.load_index()
        return {"documents": len(self.records()), "vectors": 0 if index is None else int(index.ntotal)}


def _has_chunks_table(conn: sqlite3.Connection) -> bool:
    """False for a database a kill -9 left between creating the file and creating its table."""
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='chunks'").fetchone() is not None


def _new_doc_id() -> str:
    import uuid

    return uuid.uuid4().hex
