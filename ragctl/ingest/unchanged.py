"""Trees known unchanged: a no-change re-run over many tenants without reading their records.

A run over a list of entity trees (`ragctl ingest`, the library) that leaves an entity clean -
its gc has nothing left to do, and its records, read again at the finish, are exactly the
files the planner saw as they were (so nothing failed, was skipped as a copy, went stale,
moved, or was changed by another process meanwhile) - records in the store catalog (table
`trees`) a signature of:

* its tree as the planner saw it: each file's path, size, mtime and whether it is supported,
  in walk order - recorded only if the records, read again at the finish, say exactly that
  (each supported file has a record with that size and mtime, and there is no other record);
* the entity's own files: gc's clean signature (inode, size and mtime of the mapping shard and
  its log, entity.json, chunks.sqlite and its journal, the entity and segments directories, the
  legacy files; EntityStore._gc_signature);
* what else decides a verdict: the tree's root, --max-file-mb, this module's TREE_VERSION.

The next run walks the tree and stats each file, as always. If the signature is the same, every
file is unchanged - what reading the records would conclude: each file has the size and mtime
its record was last made current with, and the records have not changed since - and the
entity's gc has nothing to do; neither is read. Anything else takes the usual path: a file
touched, added or removed, a commit, upload or delete by another process (the shard changes), a
merge, a kill mid-write, `--rehash`, `--reindex`, `--dry-run`, an explicit file list or scope,
a tree over MAX_FILES. Losing the catalog row (or the catalog) only costs the usual path.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragctl.discovery import EntitySource, identity_path, walk_entries
from ragctl.errors import StorageError

if TYPE_CHECKING:
    from ragctl.ingest.options import RunContext
    from ragctl.storage.entity import EntityStore

TREE_VERSION = "1"
MAX_FILES = 2000  # larger trees are not remembered: the check lists the tree before deciding


class TreeDigest:
    """The planner's running digest of a tree: (path, size, mtime, supported) per file, and
    the entries themselves (up to MAX_FILES) to check against the records at the finish."""

    def __init__(self) -> None:
        self._hash = hashlib.blake2b(digest_size=16)
        self.entries: list[tuple[str, int, int, bool]] = []
        self.files = 0
        self.complete = True  # False: a file could not be stat'ed (nothing is remembered)

    def add(self, rel_path: str, st: os.stat_result | None, supported: bool) -> None:
        self.files += 1
        if st is None:
            self.complete = False
            return
        if self.files <= MAX_FILES:
            self.entries.append((rel_path, st.st_size, st.st_mtime_ns, supported))
        self._hash.update(f"{rel_path}\0{st.st_size}\0{st.st_mtime_ns}\0{int(supported)}\n".encode("utf-8", "surrogateescape"))

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def records_current(entries: list[tuple[str, int, int, bool]], records: dict[str, Any]) -> bool:
    """Would the usual path call every supported file unchanged, and find nothing gone? Each has
    a record at its path with the size and mtime the planner saw, and every record (but the
    LangChain store's, which are no files) is one of them."""
    by_path = {r["path"]: r for r in records.values() if r.get("parser") != "langchain"}
    supported = [(path, size, mtime) for path, size, mtime, ok in entries if ok]
    if len(by_path) != len(supported):
        return False
    for path, size, mtime in supported:
        record = by_path.get(path)
        if record is None or record.get("size") != size or record.get("mtime_ns") != mtime:
            return False
    return True


class KnownTrees:
    """The run's view of the catalog's `trees` table (loaded once, on first need)."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        opts = ctx.options
        self.enabled = not (opts.rehash or opts.reindex or opts.dry_run) and ctx.storage.enable_sharding
        self._rows: dict[str, str] | None = None

    def applies(self, source: EntitySource) -> bool:
        return self.enabled and source.files is None and source.scope is None

    def _signature(self, source: EntitySource, tree: str, files_signature: str) -> str:
        key = "\0".join((TREE_VERSION, str(source.root), str(self.ctx.options.limits.max_file_bytes), tree,
                         files_signature))
        return hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=16).hexdigest()

    def _recorded(self) -> dict[str, str]:
        if self._rows is None:
            from ragctl.storage import catalog

            try:
                self._rows = catalog.tree_signatures(self.ctx.storage.root) if catalog.has_catalog(
                    self.ctx.storage.root) else {}
            except (StorageError, OSError, sqlite3.Error):
                self._rows = {}
        return self._rows

    def recorded(self, source: EntitySource) -> bool:
        """Has the entity a recorded signature (it was left clean; likely unchanged now)?"""
        return self.applies(source) and source.entity_id in self._recorded()

    def unchanged(self, source: EntitySource) -> list[tuple[str, int, bool]] | None:
        """The tree's files as (path, size, supported) if the entity is known unchanged, else None."""
        from ragctl.parsing import is_supported
        from ragctl.storage.entity import files_signature, gc_signature_paths

        recorded = self._recorded().get(source.entity_id)
        if recorded is None:
            return None
        digest, listing = TreeDigest(), []
        prefix = len(os.path.join(str(source.root), ""))
        for entry in walk_entries(source.root):
            if digest.files >= MAX_FILES:
                return None
            rel = identity_path(entry.path[prefix:])
            try:
                st = entry.stat()
            except OSError:
                return None
            supported = is_supported(Path(entry.path))
            digest.add(rel, st, supported)
            listing.append((rel, st.st_size, supported))
        storage = self.ctx.storage
        files = files_signature(gc_signature_paths(storage, source.entity_id), self.ctx.options.index or "")
        if self._signature(source, digest.hexdigest(), files) != recorded:
            return None
        return listing

    def remember(self, store: EntityStore, source: EntitySource, tree: TreeDigest | None) -> None:
        """After an entity's finish: record its signature if the run left it clean - checked
        against the records as they are now, not as planned (another process may have written
        meanwhile: a delete, an overlapping run), between two equal readings of its files."""
        if tree is None or not self.applies(source) or not tree.complete or tree.files > MAX_FILES:
            return
        before = store.clean_signature()  # the signature of its files, if its gc left nothing to do
        if before is None:
            return
        try:
            current = records_current(tree.entries, store.records())
        except (StorageError, OSError, ValueError):
            return
        if not current or store.clean_signature() != before:
            return
        from ragctl.storage import catalog

        signature = self._signature(source, tree.hexdigest(), before)
        if self._recorded().get(store.entity_id) == signature:
            return
        try:
            catalog.set_tree_signature(self.ctx.storage.root, store.entity_id, signature)
        except (StorageError, OSError, sqlite3.Error):
            pass  # only costs the next run the usual path
