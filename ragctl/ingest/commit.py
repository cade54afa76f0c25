"""The commit stage: buffer settled documents per entity, commit them in batches, report.

One thread, plus one for merges (`Maintenance`). Documents of an entity are committed every
`commit_docs` documents or `commit_seconds`, each batch one locked `EntityStore.commit` (the
protocol lives in storage); a tier that commit fills is merged on the merge thread, outside
any lock, while this one goes on committing.
A commit that fails on the store (disk full, permissions, corrupt file) fails the files of that
batch with the reason and the run goes on with every other entity. When an entity's last task
has settled, its gone files are reported stale (or pruned) and its orphans collected.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from ragctl.errors import StorageError
from ragctl.events import Status
from ragctl.ingest import messages as msg
from ragctl.ingest.channel import END, Channel
from ragctl.ingest.options import RunContext
from ragctl.ingest.report import Reporter, describe_exception
from ragctl.storage.entity import EntityStore, merge_failed

# Failures of one entity's store: its files fail, other entities go on.
ENTITY_FAILURES = (StorageError, OSError, sqlite3.Error)
# A file whose task never settled although the stages upstream ended normally.
LOST = "no result came back from parsing/embedding (lost in the pipeline); re-run to index it"


def faiss_on_one_thread() -> None:
    """FAISS on the calling thread with one OpenMP thread (OpenMP's setting is per thread): the
    threads that commit, merge or gc leave the cores to the model."""
    import faiss

    faiss.omp_set_num_threads(1)


class Maintenance:
    """Runs the merges that commits planned on a thread of its own, so the commit stage goes
    on committing (other entities' files too) while a full tier merges: one entity's big merge
    never holds up the others. Merges are safe to abandon at any instant (storage/compaction.py),
    so a run that stops early does not wait for them."""

    MAX_PENDING = 4  # queued merges (each holds its inputs' ids); beyond, submit waits

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self._jobs: queue.Queue[tuple[EntityStore, Any]] = queue.Queue()
        self._pending: dict[str, int] = defaultdict(int)
        self._idle = threading.Condition()
        self._thread: threading.Thread | None = None
        self._abandoned = False

    def submit(self, store: EntityStore, merge: Any) -> None:
        with self._idle:
            if not self._abandoned:
                self._idle.wait_for(lambda: sum(self._pending.values()) < self.MAX_PENDING or self._abandoned)
            if self._abandoned:  # the run is stopping: the next commit or gc plans it again
                merge.close()
                return
            self._pending[store.entity_id] += 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="ragctl-merge", daemon=True)
                self._thread.start()
        self._jobs.put((store, merge))

    def wait(self, entity_id: str | None = None) -> None:
        """Until the entity's merges (or every merge) are done, or `abandon()`."""
        with self._idle:
            if entity_id is None:
                self._idle.wait_for(lambda: self._abandoned or not any(self._pending.values()))
            else:
                self._idle.wait_for(lambda: self._abandoned or not self._pending.get(entity_id))

    def abandon(self) -> None:
        """The run stops: nobody waits for merges and new ones are not queued (a merge is safe
        to abandon at any instant; one in progress finishes or dies with the process)."""
        with self._idle:
            self._abandoned = True
            self._idle.notify_all()

    def _run(self) -> None:
        faiss_on_one_thread()
        while True:
            store, merge = self._jobs.get()
            try:
                error = store.compact(merge)
            except Exception as exc:  # noqa: BLE001 - a bug: say so, keep merging others
                error = merge_failed(describe_exception(exc))
                try:
                    merge.close()
                except OSError:
                    pass  # its files are a dead merge's: the next plan removes them
            finally:
                with self._idle:
                    self._pending[store.entity_id] -= 1
                    if not self._pending[store.entity_id]:
                        del self._pending[store.entity_id]
                    self._idle.notify_all()
            if error:
                try:
                    self.reporter.phase(f"{store.entity_id}: {error}")
                except Exception:  # noqa: BLE001 - reporting must not end the merge thread
                    pass


def commit_documents(
    store: EntityStore,
    ctx: RunContext,
    reporter: Reporter,
    adds: Sequence[msg.Embedded] = (),
    changes: Sequence[msg.Change] = (),
    removes: Sequence[str] = (),
    maintenance: Maintenance | None = None,
) -> None:
    """One locked commit of an entity's batch, every file's status reported. A merge the
    commit planned goes to `maintenance` if given, else runs before this returns."""
    eid = store.entity_id
    docs = [a.doc for a in adds]
    embedded_by = next((a.embedded_by for a in adds if a.embedded_by), {})
    try:
        result = store.commit(ctx.identity, docs, [(c.doc_id, c.fields) for c in changes], removes,
                              embedded_by.get("precision") or "", merge_later=maintenance is not None,
                              embedded_by=embedded_by)
    except ENTITY_FAILURES as exc:
        reason = f"not committed: {describe_exception(exc)}"
        for add in adds:
            reporter.file_done(eid, add.doc.path, Status.FAILED, 0, reason, add.doc.size, add.tag)
        for change in changes:
            reporter.file_done(eid, change.path, Status.FAILED, 0, reason, change.size, change.tag)
        return
    if result.pending_merge is not None and maintenance is not None:
        maintenance.submit(store, result.pending_merge)
    if result.maintenance_error:
        reporter.phase(f"{eid}: {result.maintenance_error}")
    for add in adds:
        doc = add.doc
        status = result.status.get(doc.path)
        if status is None:
            reporter.file_done(eid, doc.path, Status.FAILED, 0, "not committed: no result for this document", doc.size, add.tag)
        elif status == "duplicate":
            note = result.note.get(doc.path, "duplicate content")
            reporter.file_done(eid, doc.path, Status.SKIPPED, 0, note, doc.size, add.tag, result.doc_ids.get(doc.path, ""))
        elif status in ("indexed", "updated"):
            reporter.file_done(eid, doc.path, Status(status), len(doc.chunks), "", doc.size, add.tag,
                               result.doc_ids.get(doc.path, ""))
        else:
            reporter.file_done(eid, doc.path, Status.UNCHANGED, 0, "", doc.size, add.tag, result.doc_ids.get(doc.path, ""))
    for change in changes:
        reporter.file_done(eid, change.path, change.status, 0, "", change.size, change.tag, change.doc_id)


class CommitStage:
    def __init__(self, ctx: RunContext, store_for: Callable[[str], EntityStore], reporter: Reporter,
                 plans: dict[tuple[str, str], Any], release_store: Callable[[str], None] = lambda _eid: None,
                 finished: Callable[[EntityStore, Any], None] = lambda _store, _plan: None) -> None:
        self.ctx = ctx
        self.store_for = store_for
        self.release_store = release_store  # a finished entity's cached records can go
        self.finished = finished  # after an entity's finish (the run remembers a clean tree)
        self.plans = plans  # the run's live plans: a finished unit's is dropped (long-lived runs)
        self.reporter = reporter
        self.adds: dict[str, list[msg.Embedded]] = defaultdict(list)  # per entity, across work units
        self.changes: dict[str, list[msg.Change]] = defaultdict(list)
        self.oldest: dict[str, float] = {}
        self.settled: dict[tuple[str, str], int] = defaultdict(int)  # per work unit
        self.committed: set[str] = set()  # entities this run committed to
        self.ends: dict[tuple[str, str], msg.EntityEnd] = {}
        self.maintenance = Maintenance(reporter)

    def run(self, inbox: Channel[Any], stop: Any, interrupted: Any) -> None:
        faiss_on_one_thread()  # flat-index adds are tiny
        opts = self.ctx.options
        while True:
            item = inbox.get(timeout=0.25)
            if item is END:
                break
            if item is not None:
                self._take(item)
            if stop.is_set():  # take what is already here; don't wait for an encode in progress
                self.maintenance.abandon()
                while (item := inbox.get_nowait()) is not None and item is not END:
                    self._take(item)
                break
            now = time.monotonic()
            for eid in list(self.oldest):
                size = len(self.adds[eid]) + len(self.changes[eid])
                if size >= opts.commit_docs or now - self.oldest[eid] >= opts.commit_seconds:
                    self._flush(eid)
            for key in [k for k, end in self.ends.items() if self.settled[k] >= end.tasks]:
                self._finish(key)
        # What is embedded gets committed, also when the run stops early (Ctrl-C, another
        # stage failed): those documents are complete, and re-runs skip what is committed.
        for eid in list(self.oldest):
            self._flush(eid)
        if not stop.is_set() and not interrupted.is_set():
            for key in list(self.ends):
                self._finish(key)
            self.maintenance.wait()  # merges of entities that did not finish (a library run's)
        else:  # unfinished entities: at least their shard JSON holds every committed record
            self.maintenance.abandon()
            for eid in self.committed:
                try:
                    self.store_for(eid).fold_mapping()
                except ENTITY_FAILURES:
                    pass  # the log stays; every reader applies it

    def _take(self, item: Any) -> None:
        if isinstance(item, msg.EntityEnd):
            self.ends[item.key] = item
            return
        eid = item.entity_id
        self.settled[(eid, item.tag)] += 1
        plan = self.plans.get((eid, item.tag))
        if plan is not None:  # what is left in plan.sent at the unit's end was lost
            plan.settle(item.doc.path if isinstance(item, msg.Embedded) else item.path)
        if isinstance(item, msg.Outcome):
            self.reporter.file_done(eid, item.path, item.status, 0, item.detail, item.size, item.tag, item.doc_id)
            return
        if isinstance(item, msg.Embedded):
            if any(a.doc.path == item.doc.path for a in self.adds[eid]):
                self._flush(eid)  # two versions of one path (two uploads): commit them in order
            self.adds[eid].append(item)
        else:
            self.changes[eid].append(item)
        self.oldest.setdefault(eid, time.monotonic())

    def _flush(self, eid: str) -> None:
        adds, changes = self.adds.pop(eid, []), self.changes.pop(eid, [])
        self.oldest.pop(eid, None)
        if adds or changes:
            self.committed.add(eid)
            commit_documents(self.store_for(eid), self.ctx, self.reporter, adds, changes, maintenance=self.maintenance)

    def _finish(self, key: tuple[str, str]) -> None:
        end = self.ends.pop(key)
        settled = self.settled.pop(key, 0)
        # The upstream stages ended without settling some of this unit's files (a stage bug or
        # an engine failure that did not stop the run): say so per file instead of losing them.
        for path in sorted(end.plan.sent) if settled < end.tasks else ():
            self.reporter.file_done(end.entity_id, path, Status.FAILED, 0, LOST, 0, end.plan.tag)
        self.plans.pop(key, None)
        self._flush(end.entity_id)
        self.maintenance.wait(end.entity_id)  # gc plans from what its merges left
        store = self.store_for(end.entity_id)
        finish_entity(store, end.plan.gone(), self.ctx, self.reporter)
        self.finished(store, end.plan)
        self.committed.discard(end.entity_id)  # gc folded its log
        self.release_store(end.entity_id)


def finish_entity(store: EntityStore, gone: list[dict[str, Any]], ctx: RunContext, reporter: Reporter) -> None:
    """Report files that left the tree (stale, or pruned with --prune) and collect orphans."""
    eid = store.entity_id
    pruned = ctx.options.prune  # in a dry run: what would be pruned
    if pruned and gone and not ctx.dry_run:
        try:
            store.commit(ctx.identity, removes=[r["doc_id"] for r in gone])
        except ENTITY_FAILURES as exc:
            reporter.phase(f"{eid}: files that left the tree were not pruned: {describe_exception(exc)}")
            pruned = False  # they are still there: reported stale
    for record in gone:
        reporter.stale(eid, record["path"], pruned=pruned)
    if not ctx.dry_run:
        try:
            store.gc()
        except ENTITY_FAILURES:
            pass  # orphans stay invisible; the next commit or `verify --repair` drops them
    reporter.entity_done(eid)
