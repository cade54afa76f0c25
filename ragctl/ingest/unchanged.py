"""Trees known unchanged: a no-change re-run over many tenants without reading their records.

A run over a list of entity trees (`ragctl ingest`, the library) that leaves an entity clean -
every file of its tree indexed, updated or unchanged (or of an unsupported type), nothing
failed, stale, moved, pruned or skipped otherwise, and the entity's gc clean - records in the
store catalog (table `trees`) a signature of:

* its tree as the planner saw it: each file's path, size, mtime and whether it is supported,
  in walk order;
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
from typing import TYPE_CHECKING

from ragctl.discovery import EntitySource, identity_path, walk_entries
from ragctl.errors import StorageError

if TYPE_CHECKING:
    from ragctl.ingest.options import RunContext
    from ragctl.ingest.plan import EntityPlan
    from ragctl.ingest.report import EntityReport
    from ragctl.storage.entity import EntityStore

TREE_VERSION = "1"
MAX_FILES = 2000  # larger trees are not remembered: the check lists the tree before deciding


class TreeDigest:
    """The planner's running digest of a tree: (path, size, mtime, supported) per file."""

    def __init__(self) -> None:
        self._hash = hashlib.blake2b(digest_size=16)
        self.files = 0
        self.unsupported = 0
        self.complete = True  # False: a file could not be stat'ed (nothing is remembered)

    def add(self, rel_path: str, st: os.stat_result | None, supported: bool) -> None:
        self.files += 1
        if st is None:
            self.complete = False
            return
        self.unsupported += not supported
        self._hash.update(f"{rel_path}\0{st.st_size}\0{st.st_mtime_ns}\0{int(supported)}\n".encode("utf-8", "surrogateescape"))

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


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

    def remember(self, store: EntityStore, plan: EntityPlan, report: EntityReport) -> None:
        """After an entity's finish: record its signature if the run left it clean."""
        tree: TreeDigest | None = plan.tree
        if tree is None or not self.applies(plan.source) or not tree.complete or tree.files > MAX_FILES:
            return
        if report.failed or report.stale or report.pruned or report.moved or report.skipped != tree.unsupported:
            return
        if report.indexed + report.updated + report.unchanged + report.skipped != tree.files:
            return
        clean = store.clean_signature()  # the signature of its files, if its gc left nothing to do
        if clean is None:
            return
        from ragctl.storage import catalog

        signature = self._signature(plan.source, tree.hexdigest(), clean)
        if self._recorded().get(store.entity_id) == signature:
            return
        try:
            catalog.set_tree_signature(self.ctx.storage.root, store.entity_id, signature)
        except (StorageError, OSError, sqlite3.Error):
            pass  # only costs the next run the usual path
