"""The commit stage: buffer settled documents per entity, commit them in batches, report.

One thread. Documents of an entity are committed every `commit_docs` documents or
`commit_seconds`, each batch one locked `EntityStore.commit` (the protocol lives in storage).
A commit that fails on the store (disk full, permissions, corrupt file) fails the files of that
batch with the reason and the run goes on with every other entity. When an entity's last task
has settled, its gone files are reported stale (or pruned) and its orphans collected.
"""

from __future__ import annotations

import sqlite3
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from ragctl.errors import StorageError
from ragctl.events import Status
from ragctl.ingest import messages as msg
from ragctl.ingest.channel import END, Channel
from ragctl.ingest.options import RunContext
from ragctl.ingest.report import Reporter, describe_exception
from ragctl.storage.entity import EntityStore, PreparedDoc

# Failures of one entity's store: its files fail, other entities go on.
ENTITY_FAILURES = (StorageError, OSError, sqlite3.Error)


def commit_documents(
    store: EntityStore,
    ctx: RunContext,
    reporter: Reporter,
    adds: Sequence[PreparedDoc] = (),
    changes: Sequence[msg.Change] = (),
    removes: Sequence[str] = (),
    precision: str = "",
) -> None:
    """One locked commit of an entity's batch, every file's status reported."""
    eid = store.entity_id
    try:
        result = store.commit(ctx.identity, adds, [(c.doc_id, c.fields) for c in changes], removes, precision)
    except ENTITY_FAILURES as exc:
        reason = f"not committed: {describe_exception(exc)}"
        for doc in adds:
            reporter.file_done(eid, doc.path, Status.FAILED, 0, reason, doc.size)
        for change in changes:
            reporter.file_done(eid, change.path, Status.FAILED, 0, reason, change.size)
        return
    for doc in adds:
        status = result.status.get(doc.path, "failed")
        if status == "duplicate":
            reporter.file_done(eid, doc.path, Status.SKIPPED, 0, result.note.get(doc.path, "duplicate content"), doc.size)
        elif status in ("indexed", "updated"):
            reporter.file_done(eid, doc.path, Status(status), len(doc.chunks), "", doc.size)
        else:
            reporter.file_done(eid, doc.path, Status.UNCHANGED, 0, "", doc.size)
    for change in changes:
        reporter.file_done(eid, change.path, change.status, 0, "", change.size)


class CommitStage:
    def __init__(self, ctx: RunContext, stores: dict[str, EntityStore], reporter: Reporter) -> None:
        self.ctx = ctx
        self.stores = stores
        self.reporter = reporter
        self.adds: dict[str, list[PreparedDoc]] = defaultdict(list)
        self.changes: dict[str, list[msg.Change]] = defaultdict(list)
        self.precision: dict[str, str] = {}
        self.oldest: dict[str, float] = {}
        self.settled: dict[str, int] = defaultdict(int)
        self.ends: dict[str, msg.EntityEnd] = {}

    def run(self, inbox: Channel[Any], stop: Any, interrupted: Any) -> None:
        import faiss

        faiss.omp_set_num_threads(1)  # this thread only: flat-index adds are tiny; the cores are the model's
        opts = self.ctx.options
        while True:
            item = inbox.get(timeout=0.25)
            if item is END:
                break
            if item is not None:
                self._take(item)
            now = time.monotonic()
            for eid in list(self.oldest):
                size = len(self.adds[eid]) + len(self.changes[eid])
                if size >= opts.commit_docs or now - self.oldest[eid] >= opts.commit_seconds:
                    self._flush(eid)
            for eid in [e for e, end in self.ends.items() if self.settled[e] >= end.tasks]:
                self._finish(eid)
        # What is embedded gets committed, also when the run stops early (Ctrl-C, another
        # stage failed): those documents are complete, and re-runs skip what is committed.
        for eid in list(self.oldest):
            self._flush(eid)
        if not stop.is_set() and not interrupted.is_set():
            for eid in list(self.ends):
                self._finish(eid)

    def _take(self, item: Any) -> None:
        if isinstance(item, msg.EntityEnd):
            self.ends[item.entity_id] = item
            return
        eid = item.entity_id
        self.settled[eid] += 1
        if isinstance(item, msg.Outcome):
            self.reporter.file_done(eid, item.path, item.status, 0, item.detail, item.size)
            return
        if isinstance(item, msg.Embedded):
            self.adds[eid].append(item.doc)
            self.precision[eid] = item.precision
        else:
            self.changes[eid].append(item)
        self.oldest.setdefault(eid, time.monotonic())

    def _flush(self, eid: str) -> None:
        adds, changes = self.adds.pop(eid, []), self.changes.pop(eid, [])
        self.oldest.pop(eid, None)
        if adds or changes:
            commit_documents(self.stores[eid], self.ctx, self.reporter, adds, changes, (), self.precision.get(eid, ""))

    def _finish(self, eid: str) -> None:
        end = self.ends.pop(eid)
        self._flush(eid)
        finish_entity(self.stores[eid], end.plan.gone(), self.ctx, self.reporter)


def finish_entity(store: EntityStore, gone: list[dict[str, Any]], ctx: RunContext, reporter: Reporter) -> None:
    """Report files that left the tree (stale, or pruned with --prune) and collect orphans."""
    eid = store.entity_id
    prune = ctx.options.prune
    for record in gone:
        reporter.stale(eid, record["path"], pruned=prune)
    if not ctx.dry_run:
        if prune and gone:
            try:
                store.commit(ctx.identity, removes=[r["doc_id"] for r in gone])
            except ENTITY_FAILURES as exc:
                reporter.phase(f"{eid}: files that left the tree were not pruned: {describe_exception(exc)}")
        try:
            store.gc()
        except ENTITY_FAILURES:
            pass  # orphans stay invisible; the next commit or `verify --repair` drops them
    reporter.entity_done(eid)
