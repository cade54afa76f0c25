"""`EntityStore`: one entity's vector segments, chunk texts (+ full-text index) and mapping,
and the commit protocol that keeps them in agreement (docs/storage.md, "Store format 3").

All under the entity's mapping-shard lock:

  1. chunk texts for new vectors (and their full-text entries) are inserted into chunks.sqlite
     in one transaction;
  2. the new vectors are written as one new segment file (atomically), then entity.json naming
     the live segments and the id high-water mark;
  3. the mapping change is appended to the shard's log (one checksummed line, fsynced) - this
     is the commit point (a monolithic store rewrites its legacy file instead);
  4. maintenance after the commit point: a long log is folded into the shard JSON, the merge
     of a full segment tier is planned; vectors of replaced/removed documents are orphans,
     invisible to queries (results are filtered to ids the mapping references), dropped by
     compaction/`gc()`.

Merges are written after the lock is released and switched in under it again (compaction.py):
the lock covers the commit's own writes, a merge's plan and its manifest switch.

Invariant at every instant: chunk rows ⊇ index ids ⊇ ids referenced by the mapping, and the
full-text index holds exactly the chunk rows. A kill -9 anywhere leaves every mapped document
fully searchable and never exposes a half document. A commit costs what it adds.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragctl.errors import StorageError
from ragctl.fsutil import file_lock, fsync_dir, now_iso
from ragctl.ids import validate_entity_id
from ragctl.parsing.textutil import one_line
from ragctl.storage import catalog, compaction
from ragctl.storage import segments as seg
from ragctl.storage.chunk_texts import ChunkTexts, passage_key
from ragctl.storage.entity_meta import EntityMeta
from ragctl.storage.json_storage import JSONStorage, Record, record_shards
from ragctl.storage.layout import MAPPING_COLLECTION, StoreLayout
from ragctl.storage.mapping_log import ShardView, apply_entry
from ragctl.storage.owners import Owners, referenced_ids
from ragctl.storage.search import EntitySearch, Hit
from ragctl.storage.segments import SegmentedIndex, effective_kind, passage_prefixes
from ragctl.storage.vector_index import file_signature

if TYPE_CHECKING:
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
    # contextual chunks: the document's title and each chunk's heading path (stored with the
    # chunk texts), and the chunker version that made the chunks (recorded as "chunker")
    title: str = ""
    sections: Sequence[str] = ()
    chunker: int = 0
    # each chunk's page (1-based; None: no pages) and whether its text was OCR'd ((): unknown)
    pages: Sequence[int | None] = ()
    ocr: Sequence[bool] = ()
    ocr_pages: int = 0  # pages of the file read by OCR (recorded as "ocr_pages" when > 0)
    ocr_mode: str = ""  # the --ocr mode a PDF or image was read with (recorded as "ocr")
    # each chunk's passage key and near-duplicate signature, where the caller made them already
    # (the parse workers); (): the commit computes them
    keys: Sequence[bytes] = ()
    near: Sequence[bytes] = ()
    # the doc_id a new document gets ("" : a fresh one); a replaced one keeps its record's
    doc_id: str = ""
    # more fields for its record (integrations: e.g. a LangChain document's metadata)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass
class CommitResult:
    status: dict[str, str] = field(default_factory=dict)  # path -> indexed|updated|unchanged|duplicate|moved|pruned|refreshed
    chunks_added: int = 0
    note: dict[str, str] = field(default_factory=dict)  # path -> detail (e.g. duplicate of X)
    doc_ids: dict[str, str] = field(default_factory=dict)  # path -> its document's (or the copied one's) doc_id
    # The compaction after the commit point failed (disk full, ...): the commit itself stands;
    # the next commit or gc (or `verify --repair`) plans the merge again.
    maintenance_error: str = ""
    # commit(merge_later=True): the merge this commit planned, for the caller to run with
    # `compact()` (on any thread; no lock is held meanwhile) - None when nothing is to merge.
    pending_merge: Any = None


def gc_signature_paths(storage: JSONStorage, entity_id: str) -> list[str]:
    """The files and directories an entity's clean-gc signature covers (EntityStore._gc_signature),
    as strings (= StoreLayout's paths; pathlib costs more than the stats when a run goes through
    100,000 tenants)."""
    root = os.path.join(str(storage.root), "")
    entity_id = validate_entity_id(entity_id)
    shard = f"{root}{MAPPING_COLLECTION}/{entity_id}.json"
    entity_dir = f"{root}entities/{entity_id}"
    texts = f"{entity_dir}/chunks.sqlite"
    return [shard, shard + ".log", f"{entity_dir}/entity.json", texts, texts + "-journal", entity_dir,
            f"{entity_dir}/segments", f"{entity_dir}/index.faiss", f"{root}{MAPPING_COLLECTION}.json"]


def files_signature(paths: Sequence[str], extra: str = "") -> str:
    """A 32-hex blake2b digest of (inode, size, mtime) of each path ("-" if missing) and `extra`."""
    parts = []
    for path in paths:
        try:
            st = os.stat(path)
            parts.append(f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            parts.append("-")
    parts.append(extra)
    return hashlib.blake2b("|".join(parts).encode(), digest_size=16).hexdigest()


def catalog_failed(reason: str) -> str:
    """The one line for a store catalog that could not be updated after a commit."""
    return f"store catalog not updated (the commit stands; readers recompute the row): {reason}"


def merge_failed(reason: str) -> str:
    """The one line for a merge that failed after its commit point."""
    return f"compaction after the commit failed (the commit stands): {reason}"


def _inputs(merge: compaction.Merge) -> list[list[str]]:
    return sorted(sorted(job.inputs) for job in merge.jobs)


class EntityStore:
    """One entity's index, chunk texts and mapping shard, safe across threads and processes."""

    def __init__(self, storage: JSONStorage, entity_id: str, index_kind: str | None = None) -> None:
        self.entity_id = validate_entity_id(entity_id)
        self.storage = storage
        entity_dir = StoreLayout(storage.root).entity_dir(self.entity_id)  # (joined once: a run opens 100,000)
        self.texts = ChunkTexts(entity_dir / "chunks.sqlite")
        self._meta = EntityMeta(entity_dir / "entity.json", self.entity_id)
        self.index = SegmentedIndex(entity_dir, self._meta, entity_dir / "index.faiss")
        # auto|flat|ivf|hnsw (ingest --index); None: whatever entity.json records (auto for new)
        self.index_kind = index_kind
        self._mem_lock = threading.Lock()
        self._owners: tuple[tuple[Any, ...], Owners] | None = None
        self._reader = threading.local()  # .owners, .index: what a search of this thread reads (`reading`)
        # the committer's private view of the shard + log, and its lookups (used under the lock)
        self._view: ShardView | None = None
        self._lookup = _Lookup()
        self._gc_paths: list[str] | None = None  # the files _gc_signature stats
        # timing hook (benchmarks, tests): called with the seconds each hold of the lock lasted
        self.on_lock_held: Callable[[float], None] | None = None

    # ------------------------------------------------------------------ reading
    def meta(self) -> dict[str, Any] | None:
        return self._meta.read()

    def exists(self) -> bool:
        return self._meta.exists() or bool(self.records())

    def records(self) -> dict[str, Record]:
        try:
            return self.storage.records_for_entity(MAPPING_COLLECTION, self.entity_id)
        except StorageError:
            # unreadable (a corrupt shard): the store catalog's next reader recomputes the
            # entity's row, which then names the error
            if catalog.has_catalog(self.storage.root):
                with suppress(StorageError, OSError, sqlite3.Error):
                    catalog.mark(self.storage.root, self.entity_id)
            raise

    def check_model(self, model: dict[str, Any]) -> None:
        self._meta.check_model(model)

    def load_index(self, dim: int | None = None) -> Any:
        """The searchable union of the entity's segments (segments.UnionIndex: ntotal, d,
        search), a format-2 entity's single FAISS index, an empty one of `dim`, or None.
        Inside `reading()`, the one loaded first in it."""
        pinned = getattr(self._reader, "index", None)
        if pinned is not None:
            return pinned
        index = self.index.load(dim)
        if getattr(self._reader, "owners", None) is not None:
            self._reader.index = index
        return index

    @contextmanager
    def reading(self) -> Iterator[None]:
        """One search's reads: inside it, this thread sees one version of the records (`owners()`
        is read once: a search asks for it three or four times, ~0.1 ms each), the vectors'
        union it loads first (`load_index`; passage lookups use its parts), and one SQLite
        connection (`ChunkTexts.reading`). Nests."""
        if getattr(self._reader, "owners", None) is not None:
            yield
            return
        with self.texts.reading():
            self._reader.owners = self.owners()
            try:
                yield
            finally:
                self._reader.owners = self._reader.index = None

    def owners(self) -> Owners:
        """Vector id -> record, rebuilt only when the records changed (the shard view gives a
        new dict per change; the legacy file is keyed by its signature)."""
        pinned: Owners | None = getattr(self._reader, "owners", None)
        if pinned is not None:
            return pinned
        legacy_sig = file_signature(self.storage.legacy_path(MAPPING_COLLECTION))
        shard = self.storage.read_shard(MAPPING_COLLECTION, self.entity_id) if self.storage.enable_sharding else None
        cached = self._owners
        if cached is not None and cached[0][0] == legacy_sig and cached[0][1] is shard:
            return cached[1]
        owners = Owners(self.records().values())
        self._owners = ((legacy_sig, shard), owners)
        return owners

    # ------------------------------------------------------------------ commit
    @contextmanager
    def locked(self) -> Iterator[dict[str, Record]]:
        """Hold the entity's lock (= its mapping shard lock); yields the shard, written on exit
        (a rewrite folds the mapping log in). Commits use `_locked_view` instead."""
        with self._mem_lock, self.storage.edit(MAPPING_COLLECTION, self.entity_id) as shard, self._timed():
            if not self.storage.enable_sharding:
                self._refuse_if_migrated()
            yield shard

    @contextmanager
    def _timed(self) -> Iterator[None]:
        """Report how long the lock was held to `on_lock_held` (entered right after acquiring)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.on_lock_held is not None:
                self.on_lock_held(time.perf_counter() - start)

    @contextmanager
    def _locked_view(self) -> Iterator[tuple[dict[str, Record] | None, dict[str, Record]]]:
        """Hold the entity's lock; yields (the shard + log view kept current incrementally, or
        None in monolithic mode; this entity's records only in the legacy file)."""
        if not self.storage.enable_sharding:
            with self.locked() as legacy:  # the whole legacy file, written when this exits
                self._lookup.reset({k: r for k, r in legacy.items() if self.entity_id in record_shards(r)})
                yield None, legacy
            return
        path = self.storage.shard_path(MAPPING_COLLECTION, self.entity_id)
        with self._held():
            if self._view is None:
                self._view = ShardView(path, self.storage.id_field, copy_on_write=False)
                self._view.listeners.append(self._lookup.on_entry)
            records = self._view.refresh()
            legacy = {
                k: r
                for k, r in self.storage.read_legacy(MAPPING_COLLECTION).items()
                if k not in records and self.entity_id in record_shards(r)
            }
            yield records, legacy

    @contextmanager
    def _held(self) -> Iterator[None]:
        """The entity's lock alone (no mapping read or written): a compaction's switch, and
        the sharded commit. A monolithic store's lock is the legacy file's; when the store was
        migrated to sharded meanwhile the shard lock is taken too (order: legacy -> shard)."""
        shard = self.storage.shard_path(MAPPING_COLLECTION, self.entity_id)
        timeout = self.storage.lock_timeout
        if self.storage.enable_sharding:
            with self._mem_lock, file_lock(shard, timeout), self._timed():
                yield
            return
        from ragctl.storage.layout import MODE_SHARDED, read_manifest

        with self._mem_lock, file_lock(self.storage.legacy_path(MAPPING_COLLECTION), timeout), self._timed():
            if (read_manifest(self.storage.root) or {}).get("mapping_mode") != MODE_SHARDED:
                yield
                return
            with file_lock(shard, timeout):
                yield

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
        merge_later: bool = False,
        embedded_by: dict[str, Any] | None = None,
    ) -> CommitResult:
        """Apply adds/replacements, record changes (moves, refreshes) and removals atomically.

        Hash checks are repeated here, under the lock, so concurrent writers never index the
        same content twice; parsing and embedding happened before, outside any lock. The cost
        is what the commit adds: one segment file, entity.json, one mapping-log line. A tier
        this commit fills is merged before it returns (without the lock), or, with
        `merge_later`, handed back in `result.pending_merge` for `compact()`.
        """
        import numpy as np

        result = CommitResult()
        with self._locked_view() as (shard, legacy):
            self.check_model(model)
            mine = shard if shard is not None else legacy  # monolithic: the legacy file is "mine"
            if shard is None:
                legacy = {}
            lookup = self._lookup
            legacy_lookup = _Lookup()
            legacy_lookup.reset(legacy)
            accepted = _accept(adds, [lookup, legacy_lookup], result)

            meta = self._meta.read() or {"entity_id": self.entity_id, "created_at": now_iso()}
            manifest = self._vectors_manifest(meta)
            # Ids are never reused, even after orphans are dropped: the high-water mark is kept
            # in entity.json, so a concurrent reader can never pair an old id with new text.
            next_id = max(
                max((int(s["max_id"]) + 1 for s in manifest["segments"]), default=0),
                self.texts.max_id() + 1,
                int(meta.get("next_vector_id", 0)),
            )
            new_rows: list[tuple[int, str, int, str, str, str, int | None, bool]] = []
            signatures: list[tuple[bytes, bytes] | None] = []
            keys: list[bytes] = []
            new_vectors: list[np.ndarray] = []
            new_records: list[Record] = []
            for doc, doc_id, status in accepted:
                first = next_id
                next_id += len(doc.chunks)
                sections = list(doc.sections) or [""] * len(doc.chunks)
                pages = list(doc.pages) or [None] * len(doc.chunks)
                ocr = list(doc.ocr) or [False] * len(doc.chunks)
                new_rows.extend((first + i, doc_id, i, text, doc.title, sections[i], pages[i], ocr[i])
                                for i, text in enumerate(doc.chunks))
                n = len(doc.chunks)
                signatures.extend(zip(doc.keys, doc.near) if len(doc.keys) == len(doc.near) == n else [None] * n)
                keys.extend(doc.keys if len(doc.keys) == n else [passage_key(text) for text in doc.chunks])
                new_vectors.append(np.ascontiguousarray(doc.vectors, dtype=np.float32))
                new_records.append(self._record(doc, doc_id, first))
                result.status[doc.path] = status
                result.chunks_added += len(doc.chunks)

            # 0. the store catalog marks the entity pending before anything changes (catalog.py)
            writes = bool(new_rows or changes or removes or not self._meta.exists())
            catalog_error = self._catalog_mark() if writes else ""
            # 1. chunk texts + full-text entries (superset of the index at every instant); the
            # SQL index over passage keys only while a segment has no passage section
            self.texts.insert(new_rows, signatures, passage_index=not compaction.keyed(manifest))
            # 2. one new segment with its passage section, then entity.json naming it (model
            # identity, id high-water mark)
            if new_rows:
                self.index.add(manifest, np.array([r[0] for r in new_rows], dtype=np.int64), np.vstack(new_vectors),
                               passage_prefixes(keys))
                fsync_dir(self.index.dir)
            if new_rows or changes or removes or not self._meta.exists():
                meta["vectors"] = manifest
                self._meta.write(model, precision, next_id, base=meta, embedded_by=embedded_by)
            # 3. the mapping: one log line (sharded) or the legacy file - the commit point
            sets: dict[str, Record] = {}
            dels: list[str] = []
            for record in new_records:
                for key in lookup.doc_ids_with_path(record["path"], mine):
                    if key != record["doc_id"]:
                        dels.append(key)
                sets[record["doc_id"]] = record
            for doc_id, fields in changes:
                changed = sets.get(doc_id) or mine.get(doc_id) or legacy.get(doc_id)
                if changed is None:
                    continue
                sets[doc_id] = {**changed, **fields}
                moved = "path" in fields and fields["path"] != changed["path"]
                result.status[str(fields.get("path", changed["path"]))] = "moved" if moved else "refreshed"
            legacy_removals = []
            for doc_id in removes:
                removed = mine.get(doc_id) or legacy.get(doc_id)
                if removed is None:
                    continue
                sets.pop(doc_id, None)
                dels.append(doc_id)
                result.status[removed["path"]] = "pruned"
                if doc_id in legacy:
                    legacy_removals.append(doc_id)
            if sets or dels:
                self._write_mapping(shard, mine, sets, dels)
            # 4. maintenance after the commit point: fold a long log, plan the compaction of
            # a full tier (or of segments holding many orphans)
            if shard is not None and self._view is not None and self._view.should_fold():
                self._view.fold()
            merge = None
            if new_rows or dels:
                try:
                    # Monolithic: this commit's records are not on disk until the lock is
                    # released, so no orphan pass here (it would miss them); gc does it.
                    merge = self._plan(meta, full=False, legacy_refs=legacy_lookup.referenced,
                                       orphans=shard is not None)
                except (StorageError, OSError, sqlite3.Error) as exc:  # after the commit point
                    result.maintenance_error = merge_failed(one_line(exc, 200))
            if writes and shard is not None:
                # the entity's catalog row, still under the lock (a monolithic store's legacy
                # file is written when the lock is released: its mark stays, readers settle it)
                kept = {k: r for k, r in legacy.items() if k not in legacy_removals}
                catalog_error = self._catalog_put(meta, extra=kept) or catalog_error
            if catalog_error and not result.maintenance_error:
                result.maintenance_error = catalog_error
        try:
            # Records still in an unmigrated legacy file are removed after the shard lock is
            # released: lock order is always legacy -> shard (as migrate-to-sharded takes them).
            if legacy_removals:
                self.storage.delete(MAPPING_COLLECTION, {"doc_id": legacy_removals, "entity_id": self.entity_id})
        except BaseException:
            if merge is not None:
                merge.close()
            raise
        # The merge runs here (or where the caller runs it), without the lock: other writers
        # and readers of the entity go on meanwhile; only its switch takes the lock again.
        if merge_later:
            result.pending_merge = merge
        elif merge is not None:
            result.maintenance_error = self.compact(merge)
        return result

    # ------------------------------------------------------------------ store catalog (catalog.py)
    def _catalog_mark(self) -> str:
        """Mark the entity pending in the store catalog (lock held, before any write); '' or
        why the catalog could not be written (the commit goes on: never fails for it)."""
        try:
            catalog.mark(self.storage.root, self.entity_id)
        except (StorageError, OSError, sqlite3.Error) as exc:
            return catalog_failed(one_line(exc, 200))
        return ""

    def _catalog_put(self, meta: dict[str, Any] | None, extra: dict[str, Record] | None = None) -> str:
        """Write the entity's catalog row from the committer's view (lock held, sharded store:
        documents and chunks are running totals, bytes a stat of its few files) and clear the
        mark; '' or why not (the mark then stays and the next reader recomputes the row)."""
        if self._view is None:
            return ""
        extra = {k: r for k, r in (extra or {}).items() if k not in self._view.records}
        try:
            row = catalog.row_from(
                len(self._view.records) + len(extra),
                self._lookup.referenced + sum(int(r.get("chunk_count", 0) or 0) for r in extra.values()),
                catalog.entity_bytes(self.storage.root, self.entity_id), meta)
            catalog.put(self.storage.root, self.entity_id, row)
        except (StorageError, OSError, sqlite3.Error, ValueError, TypeError) as exc:
            return catalog_failed(one_line(exc, 200))
        return ""

    def _catalog_bytes(self) -> None:
        """A gc or merge changed only the entity's files: its row's bytes (lock held; best
        effort - a row whose bytes lag is reported by verify and fixed by --repair)."""
        if not self.storage.enable_sharding or not catalog.has_catalog(self.storage.root):
            return
        try:
            catalog.set_bytes(self.storage.root, self.entity_id, catalog.entity_bytes(self.storage.root, self.entity_id))
        except (StorageError, OSError, sqlite3.Error):
            pass

    def _gc_signature(self) -> str:
        """(inode, size, mtime) of every file and directory gc() looks after: the mapping shard
        and its log, entity.json, chunks.sqlite (and a journal), the entity and segments
        directories (a file added, removed or renamed there: a segment, a merge, a temp file), a
        format-2 index, the legacy mapping file (records not migrated); and the index kind asked for.
        Kept as its blake2b digest (32 hex digits: the catalog stores one per entity)."""
        if self._gc_paths is None:
            self._gc_paths = gc_signature_paths(self.storage, self.entity_id)
        return files_signature(self._gc_paths, self.index_kind or "")

    def _gc_clean(self) -> bool:
        """True when the catalog holds a clean-gc signature equal to the files' now (sharded
        stores; no catalog, or any doubt: False, and gc runs)."""
        return self.clean_signature() is not None

    def clean_signature(self) -> str | None:
        """The entity's file signature if its last gc() left nothing to do and none of its
        files changed since (the catalog's record equals the files now), else None."""
        if not self.storage.enable_sharding or not catalog.has_catalog(self.storage.root):
            return None
        try:
            signature = self._gc_signature()
            return signature if catalog.gc_signature(self.storage.root, self.entity_id) == signature else None
        except (StorageError, OSError, sqlite3.Error):
            return None

    def _gc_done(self) -> None:
        """Record that gc left nothing to do (lock held, no merge pending)."""
        if not catalog.has_catalog(self.storage.root):
            return
        with suppress(StorageError, OSError, sqlite3.Error):
            catalog.set_gc_signature(self.storage.root, self.entity_id, self._gc_signature())

    def compact(self, merge: compaction.Merge | None) -> str:
        """Run a merge a commit planned; '' or a one-line reason it failed (the commit stands:
        the next commit or gc plans the merge again)."""
        try:
            self._compact(merge)
        except (StorageError, OSError, sqlite3.Error) as exc:
            return merge_failed(one_line(exc, 200))
        return ""

    def _write_mapping(self, shard: dict[str, Record] | None, mine: dict[str, Record],
                       sets: dict[str, Record], dels: list[str]) -> None:
        if shard is None:  # monolithic: `mine` is the legacy file, written when `locked` exits
            for key in dels:
                mine.pop(key, None)
            mine.update(sets)
            return
        assert self._view is not None
        entry: dict[str, Any] = {}
        if dels:
            entry["del"] = list(dict.fromkeys(dels))
        if sets:
            entry["set"] = sets
        if self._view.shard_sha is None:  # no shard yet: write it (small), no log
            records = dict(shard)
            apply_entry(records, entry)
            self._view.write_base(records)
        else:
            self._view.append(entry)

    def _vectors_manifest(self, meta: dict[str, Any]) -> dict[str, Any]:
        """meta["vectors"], migrating a format-2 entity (one index.faiss) forward first: its
        vectors become one segment; entity.json naming it is the switch; then the old file goes."""
        manifest = meta.get("vectors")
        if manifest is None:
            requested = self.index_kind or "auto"
            # the effective kind recorded from the start: gc() does not rewrite entity.json
            # just to add it (2 fsyncs of a new tenant's ~12)
            manifest = {"segments": [], "requested": requested, "kind": effective_kind(requested, 0)}
            legacy = self.index.legacy_path
            if legacy.exists():
                from ragctl.storage.vector_index import VectorIndex

                old: Any = VectorIndex(legacy).load()  # a faiss IndexIDMap2 (its stubs lack id_map)
                ids = VectorIndex.ids(old)
                if len(ids):
                    import faiss
                    import numpy as np

                    raw_ids = faiss.vector_to_array(old.id_map).astype(np.int64)
                    flat: Any = faiss.downcast_index(old.index)
                    vectors = faiss.vector_to_array(flat.codes).view(np.float32)
                    self.index.add(manifest, raw_ids, vectors.reshape(len(raw_ids), old.d),
                                   self._prefixes_of(raw_ids))
                    fsync_dir(self.index.dir)
                meta["vectors"] = manifest
                self._meta.replace(meta)  # the switch
                legacy.unlink(missing_ok=True)
        elif self.index_kind and manifest.get("requested") != self.index_kind:
            manifest["requested"] = self.index_kind  # applied at the next full compaction
        return manifest

    def _plan(self, meta: dict[str, Any], full: bool, legacy_refs: int = 0,
              after: compaction.Merge | None = None, orphans: bool = True) -> compaction.Merge | None:
        """Compaction plan (lock held; compaction.py): orphans are dropped when their share is
        high (always when `full`), full tiers merged, approximate indexes (re)built where the
        kind asks (`full`). A pass with nothing to merge finishes here; otherwise the merge is
        returned for `_compact` to write without the lock. `after`: the merge just switched in
        (only full tiers are looked for, with its ids to keep)."""
        import numpy as np

        manifest = meta.get("vectors")
        if not manifest:
            return None
        segments = manifest["segments"]
        total = sum(int(s["count"]) for s in segments)
        kind = effective_kind(manifest.get("requested", "auto"), total)
        keep = stray = None
        keep_below = 0
        if after is not None:
            keep, keep_below = after.keep, after.keep_below
        elif full or (orphans and total - self._lookup.referenced - legacy_refs > max(seg.ORPHAN_MIN, seg.ORPHAN_SHARE * total)
                      and not compaction.live_merges(self.index.dir)):
            # (orphans counted in O(1): segment vectors - referenced chunks, running totals;
            # while a merge is in progress - likely the rewrite this would plan again - the
            # O(entity) pass waits for a later commit)
            keep = self._referenced_ids()
            # Ids below the watermark are never handed out again (not even those of rows or
            # segments this pass drops), so what is unreferenced now stays unreferenced.
            keep_below = max(int(meta.get("next_vector_id", 0)), self.texts.max_id() + 1,
                             max((int(s["max_id"]) + 1 for s in segments), default=0))
            if keep_below > int(meta.get("next_vector_id", 0)):
                meta["next_vector_id"] = keep_below
                self._meta.replace(meta)
            # rows nothing references (orphans' texts, interrupted commits): deleted once the
            # orphans' segments are rewritten
            stray = np.setdiff1d(self.texts.row_ids(), keep, assume_unique=True)
        # a full pass gives segments written before passage sections one (rows keyed first)
        rekey = full and not compaction.keyed(manifest) and self.texts.exists()
        if rekey:
            self.texts.ensure_passages()
        jobs = compaction.plan_jobs(self.index.dir, segments, kind, keep if after is None else None, full, rekey)
        if not jobs:
            jobs = [job for job in [compaction.tier_job(self.index.dir, segments)] if job is not None]
        if jobs:
            keyed = frozenset(s["name"] for s in segments if s.get("passages"))
            return compaction.Merge(self.index.dir, jobs, kind, keep, keep_below, stray, self._prefixes_of, keyed)
        if full:
            if manifest.get("kind") != kind:
                meta["vectors"] = {**manifest, "kind": kind}
                self._meta.replace(meta)
            self._remove_garbage(meta)
        if stray is not None:
            self.texts.delete(stray.tolist())
        return None

    def _compact(self, merge: compaction.Merge | None) -> int:
        """Write planned merges without the lock and switch each in under it, planning the
        next round there (a merge can fill the next tier). Returns how many orphan vectors
        were dropped."""
        dropped = 0
        while merge is not None:
            try:
                merge.write()
                with self._held():
                    meta = self._meta.read() or {}
                    applied = merge.switch(meta, self._meta.replace, self.index.new_name)
                    if applied:
                        self._remove_garbage(meta)
                        if compaction.keyed(meta.get("vectors")):
                            self.texts.drop_passage_index()  # (a no-op read once it is gone)
                    if merge.stray_rows is not None and len(applied) == len(merge.jobs):
                        self.texts.delete(merge.stray_rows.tolist())  # every orphan's segment rewritten
                    dropped += sum(job.dropped for job in applied)
                    merge.close()  # its inputs are no longer "in progress" for the next plan
                    if applied:
                        self._catalog_bytes()
                    if applied:  # a merge can fill the next tier
                        following = self._plan(meta, full=False, after=merge)
                    else:  # its inputs went meanwhile: what is listed now, without its keep set
                        following = self._plan(meta, full=False, orphans=False)
                        if following is not None and _inputs(following) == _inputs(merge):
                            following.close()  # listed but unreadable: not again (verify reports it)
                            following = None
            finally:
                merge.close()
            merge = following
        return dropped

    def _prefixes_of(self, ids: Any) -> Any:
        """The passage prefixes of these ids' rows (aligned), or None if a row has no key."""
        stored = self.texts.passages(ids)
        if len(stored) < len(ids):
            return None
        return passage_prefixes([stored[int(i)] for i in ids])

    def _passage_ids(self, keys: list[bytes]) -> Any:
        """Candidate holder ids of these keys from the passage sections (those of the union a
        search in `reading()` loaded, else the live segments'); None: a segment has none."""
        pinned = getattr(self._reader, "index", None)
        if isinstance(pinned, seg.UnionIndex):
            return pinned.passage_ids(passage_prefixes(keys))
        return self.index.passage_ids(passage_prefixes(keys))

    def holders(self, keys: Sequence[bytes]) -> dict[bytes, list[tuple[int, str, int]]]:
        """passage key -> the rows holding it: (id, doc_id, ord), oldest id first, found through
        the live segments' passage sections (the SQL index where a segment has none). Rows of
        replaced or removed documents can be included: the caller checks they are mapped."""
        unique = list(dict.fromkeys(bytes(k) for k in keys))
        if not unique:
            return {}
        ids = self._passage_ids(unique)
        if ids is None:
            return self.texts.holders(unique)
        wanted = set(unique)
        out: dict[bytes, list[tuple[int, str, int]]] = {}
        for vid, key, doc_id, ord_ in sorted(self.texts.keyed_rows(ids.tolist())):
            if key in wanted:  # a prefix matched: the full key decides
                out.setdefault(key, []).append((vid, doc_id, ord_))
        return out

    def holder_ids(self, keys: Sequence[bytes], known: Mapping[int, bytes]) -> dict[bytes, list[int]]:
        """passage key -> the ids holding it, ascending, as `holders` finds them; `known`: ids
        whose key the caller has read already (a query's candidates), not read again."""
        unique = list(dict.fromkeys(bytes(k) for k in keys))
        if not unique:
            return {}
        ids = self._passage_ids(unique)
        if ids is None:
            return {key: [row[0] for row in rows] for key, rows in self.texts.holders(unique).items()}
        wanted = set(unique)
        found: list[tuple[int, bytes]] = []
        unread = []
        for vid in ids.tolist():
            key = known.get(vid)
            if key is None:
                unread.append(vid)
            else:
                found.append((vid, key))
        found.extend((vid, key) for vid, key, _doc, _ord in self.texts.keyed_rows(unread))
        out: dict[bytes, list[int]] = {}
        for vid, key in sorted(found):
            if key in wanted:  # a prefix matched: the full key decides
                out.setdefault(key, []).append(vid)
        return out

    def distrust_passage_sections(self, names: Sequence[str]) -> None:
        """`verify --repair`: take the manifest's mark off these segments' passage sections
        (they disagree with the rows). Lookups then use the SQL index for the entity (the next
        commit recreates it), merges read those segments' keys from the rows, and the next
        full gc writes them a section again."""
        with self._held():
            meta = self._meta.read()
            manifest = self.index.manifest(meta)
            if meta is None or not manifest:
                return
            for entry in manifest.get("segments", []):
                if entry["name"] in names:
                    entry.pop("passages", None)
            self._meta.replace(meta)

    def _remove_garbage(self, meta: dict[str, Any]) -> None:
        """Segment files the manifest does not name (inputs of this or an interrupted
        compaction, a killed merge's files; not those of merges in progress), index.faiss."""
        self.index.remove_unlisted(meta["vectors"])
        self.index.legacy_path.unlink(missing_ok=True)

    def _referenced_ids(self) -> Any:
        """Sorted ids the mapping references (shard + log + legacy); read under the lock."""
        records = dict(self.storage.read_legacy(MAPPING_COLLECTION))
        records = {k: r for k, r in records.items() if self.entity_id in record_shards(r)}
        if self._view is not None and self.storage.enable_sharding:
            records.update(self._view.records)
        return referenced_ids(records.values())

    def _record(self, doc: PreparedDoc, doc_id: str, first: int) -> Record:
        return {
            **doc.extra,  # first: the protocol's own fields always win
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
            "chunker": doc.chunker,
            **({"ocr_pages": doc.ocr_pages} if doc.ocr_pages else {}),
            **({"ocr": doc.ocr_mode} if doc.ocr_mode else {}),
            "indexed_at": now_iso(),
        }

    def fold_mapping(self) -> None:
        """Fold the mapping log into the shard JSON now (a run that stops early does this, so
        the shard file alone is complete once the command has exited)."""
        with self._locked_view() as (shard, _legacy):
            if shard is not None and self._view is not None:
                self._view.fold()

    def gc(self, force: bool = False) -> int:
        """End of an entity's ingest (and `verify --repair`, with `force`): fold the mapping log
        into the shard, drop orphan vectors and stray chunk rows, merge full tiers and (re)build
        the approximate index where the entity's kind asks. Returns how many vectors it dropped.

        A gc that left nothing to do records the entity's file signature in the store catalog;
        while the files still match it (nothing committed, merged or interrupted since), gc
        returns at once: a no-change re-run over many tenants costs a few stats per tenant."""
        if not force and self._gc_clean():
            return 0
        if not self.index.exists() and not self.texts.exists():
            return 0
        with self._locked_view() as (shard, _legacy):
            if shard is not None and self._view is not None:
                self._view.fold()
                self._view.refresh()
            meta = self._meta.read()
            if meta is None:
                meta = {"entity_id": self.entity_id, "created_at": now_iso()}
                if not self.index.legacy_path.exists():
                    # no vectors yet: only stray chunk rows of an interrupted first commit
                    self._drop_stray_rows()
                    return 0
            self._vectors_manifest(meta)
            self.texts.ensure_full_text()
            merge = self._plan(meta, full=True)
            if shard is not None and merge is None:
                self._catalog_bytes()  # folded, garbage removed (a merge updates them at its switch)
                self._gc_done()
        return self._compact(merge)  # merges written without the lock, switched in under it

    def forget_missing_segments(self) -> list[dict[str, Any]]:
        """`verify --repair`: drop from entity.json the segments whose files are gone (a disk
        error, a hand deletion). Under the lock the manifest and the files agree (a compaction
        switches and removes under it), so a listed file that is missing is lost for good; the
        records that referenced its vectors are then found incomplete and dropped, and the next
        ingest re-indexes those files. Returns the entries removed."""
        with self._held():
            meta = self._meta.read()
            manifest = self.index.manifest(meta)
            if meta is None or not manifest:
                return []
            segments = manifest.get("segments", [])
            gone = [s for s in segments if not (self.index.dir / s["name"]).exists()]
            if gone:
                manifest["segments"] = [s for s in segments if s not in gone]
                self._meta.replace(meta)
        return gone

    def _drop_stray_rows(self) -> None:
        import numpy as np

        if self.texts.exists():
            stray = np.setdiff1d(self.texts.row_ids(), self._referenced_ids(), assume_unique=True)
            self.texts.delete(stray.tolist())

    # ------------------------------------------------------------------ search (storage/search.py)
    @property
    def searching(self) -> EntitySearch:
        """The read side (vector, full-text, hits): `ragctl.storage.search.EntitySearch`."""
        return EntitySearch(self)

    def vector_search(self, query_vectors: np.ndarray, depth: int) -> list[list[tuple[int, float]]]:
        return self.searching.vector_search(query_vectors, depth)

    def text_search(self, text: str, depth: int) -> list[tuple[int, float]]:
        return self.searching.text_search(text, depth)

    def search(self, query_vectors: np.ndarray, k: int) -> list[list[Hit]]:
        """Top-k chunks per query vector (vector mode): `EntitySearch.vector_hits`."""
        return self.searching.vector_hits(query_vectors, k)

    def stats(self) -> dict[str, Any]:
        index = self.load_index()
        return {"documents": len(self.records()), "vectors": 0 if index is None else int(index.ntotal)}


class _Lookup:
    """path -> doc_ids and content hash -> doc_ids over a records dict, updated entry by entry
    (a ShardView listener), so a commit's hash checks cost what it adds; `referenced` counts
    the vector ids the records reference (orphans = segment vectors - referenced)."""

    def __init__(self) -> None:
        self.records: dict[str, Record] = {}
        self.by_path: dict[str, set[str]] = {}
        self.by_hash: dict[str, set[str]] = {}
        self.referenced = 0

    def reset(self, records: dict[str, Record]) -> None:
        self.records, self.by_path, self.by_hash, self.referenced = records, {}, {}, 0
        for key, record in records.items():
            self._add(key, record)

    def _add(self, key: str, record: Record) -> None:
        self.by_path.setdefault(str(record.get("path")), set()).add(key)
        self.by_hash.setdefault(str(record.get("content_hash")), set()).add(key)
        self.referenced += max(0, int(record.get("chunk_count", 0) or 0))

    def _drop(self, key: str, record: Record) -> None:
        for table, value in ((self.by_path, record.get("path")), (self.by_hash, record.get("content_hash"))):
            keys = table.get(str(value))
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del table[str(value)]
        self.referenced -= max(0, int(record.get("chunk_count", 0) or 0))

    def on_entry(self, entry: dict[str, Any] | None, records: dict[str, Record]) -> None:
        """Called with each entry before it is applied to `records` (None: all changed)."""
        if entry is None:
            self.reset(records)
            return
        self.records = records
        for key in entry.get("del", ()):
            if key in records:
                self._drop(key, records[key])
        for key, record in entry.get("set", {}).items():
            if key in records:
                self._drop(key, records[key])
            self._add(key, record)

    def with_hash(self, content_hash: str, exclude: frozenset[str]) -> Record | None:
        for key in sorted(self.by_hash.get(content_hash, ())):
            if key not in exclude and key in self.records:
                return self.records[key]
        return None

    def with_path(self, path: str) -> Record | None:
        keys = self.by_path.get(path)
        return self.records.get(min(keys)) if keys else None

    def doc_ids_with_path(self, path: str, records: dict[str, Record]) -> list[str]:
        return [k for k in self.by_path.get(path, ()) if k in records]


def _accept(adds: Sequence[PreparedDoc], lookups: list[_Lookup], result: CommitResult) -> list[tuple[PreparedDoc, str, str]]:
    """The adds to index (doc, doc_id, status); same content is `unchanged`/`duplicate`.
    `lookups`: the entity's records first (they win), then its records only in the legacy file."""
    batch_hash: dict[str, tuple[str, str]] = {}  # content hash -> (path, doc_id), within this batch
    accepted: list[tuple[PreparedDoc, str, str]] = []
    for doc in adds:
        same_hash: Record | None = None
        if doc.content_hash in batch_hash:
            same_hash = dict(zip(("path", "doc_id"), batch_hash[doc.content_hash]))
        else:
            for lookup in lookups:
                same_hash = lookup.with_hash(doc.content_hash, doc.not_a_copy_of)
                if same_hash is not None:
                    break
        if same_hash is not None and not _older_chunks(same_hash, doc):
            result.doc_ids[doc.path] = str(same_hash.get("doc_id", ""))
            if same_hash["path"] == doc.path:
                result.status[doc.path] = "unchanged"
            else:
                result.status[doc.path] = "duplicate"
                result.note[doc.path] = f"same content as {same_hash['path']}"
            continue
        old = next((r for r in (lookup.with_path(doc.path) for lookup in lookups) if r is not None), None)
        doc_id = old["doc_id"] if old else doc.doc_id or uuid.uuid4().hex
        accepted.append((doc, doc_id, "updated" if old else "indexed"))
        result.doc_ids[doc.path] = doc_id
        batch_hash[doc.content_hash] = (doc.path, doc_id)
    return accepted


def _older_chunks(record: Record, doc: PreparedDoc) -> bool:
    """The same content at the same path, chunked by an older chunker than `doc` (a record
    without "chunker" predates contextual chunks: version 1), or a PDF or image read with another
    --ocr mode (a record without "ocr" predates OCR): `ingest --reindex` replaces it."""
    if record.get("path") != doc.path:
        return False
    older = doc.chunker > 0 and int(record.get("chunker") or 1) < doc.chunker
    return older or (bool(doc.ocr_mode) and record.get("ocr") != doc.ocr_mode)


def open_entity(store: Path | JSONStorage, entity_id: str) -> EntityStore:
    """An existing entity of an existing store (a directory or an opened JSONStorage);
    UsageError naming the known entities when it has none. Creates nothing."""
    from ragctl.errors import UsageError
    from ragctl.storage.json_storage import open_store
    from ragctl.storage.layout import require_store

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
