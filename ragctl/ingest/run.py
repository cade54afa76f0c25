"""One ingest run: wiring only. The stages and who owns what:

    planner thread   takes work units (an entity's tree; an upload job) one by one, walks each
                     lazily, settles unchanged/unsupported/oversized files,
                     sends the rest as ParseTasks                        -> tasks channel
    parse thread     supervises the worker processes (pool.py)           -> parsed channel
    embed thread     routes outcomes, embeds new content with the model  -> settled channel
    commit thread    commits per entity in batches, finishes entities
    counter thread   counts each tree's files and bytes for progress totals (events only), ahead
                     of the planner; a tree the planner reaches first is counted by its walk
    main thread      waits; turns Ctrl-C into a stop; never blocks without a timeout

Every stage runs inside `_stage`: when it ends, for whatever reason, it closes its input (so
its producer can never block on it) and sends END downstream (so its consumer finishes). An
exception in a stage is recorded as "<stage> stage failed: <cause>", sets the stop event, and
the others wind down within seconds: what is already embedded is committed, nothing else is.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragctl import events as ev
from ragctl.discovery import EntitySource
from ragctl.errors import ConfigError, UsageError
from ragctl.events import Status
from ragctl.ingest import messages as msg
from ragctl.ingest.channel import Channel
from ragctl.ingest.commit import ENTITY_FAILURES, CommitStage, faiss_on_one_thread, finish_entity
from ragctl.ingest.embed import EmbedStage
from ragctl.ingest.options import IngestOptions, RunContext
from ragctl.ingest.plan import (
    VERDICT_STATUS,
    EntityPlan,
    ParseTask,
    Verdict,
    WorkUnit,
    count_tree,
    source_files,
    unsupported_reason,
)
from ragctl.ingest.pool import ParsePool
from ragctl.ingest.report import IngestReport, Reporter
from ragctl.ingest.unchanged import KnownTrees, TreeDigest
from ragctl.storage.entity import EntityStore

if TYPE_CHECKING:
    from ragctl.model_config import Embedder

SHUTDOWN_GRACE_S = 60.0  # after a stop, how long the main thread waits for the committer
STRAGGLER_GRACE_S = 3.0  # ... and then for the other stages (an encode call cannot be cut short)
MAX_CACHED_STORES = 64  # a service's open entity stores (each caches that entity's records)
# Work units planned but not yet finished by the committer. Each holds its entity's records,
# so what bounds them is the records they hold (memory), plus a count (threads' bookkeeping):
# a run of many small tenants keeps enough of them in flight for the model to get full
# batches (8 units of one chunk each held the embed stage to 8-chunk windows, each after a
# 0.25 s wait for more input: ~40 ms a tenant), while a big entity still plans alone.
MAX_LIVE_PLANS = 512
MAX_LIVE_RECORDS = 50_000  # records held by live plans (a unit is planned alone if larger)
# A service's units are upload jobs: they stay `queued` (cancellable as such, their files
# staged) until the engine takes a few, as before; uploads arrive one by one anyway.
MAX_LIVE_SERVICE_PLANS = 8


class LivePlans(dict[tuple[str, str], EntityPlan]):
    """The run's live plans (keyed by work unit). The committer's `pop` of a finished unit's
    plan wakes the planner waiting for room: it polled every 50 ms, which bounded a run of many
    small entities to MAX_LIVE_PLANS units per 50 ms (~6 ms per tenant of a no-change re-run)."""

    def __init__(self, max_plans: int = MAX_LIVE_PLANS) -> None:
        super().__init__()
        self.max_plans = max_plans
        self.room = threading.Condition()
        self._weight: dict[tuple[str, str], int] = {}  # records each live plan held when planned
        self.records = 0  # ... and in all

    def full(self) -> bool:
        """No room for another unit: too many, or their records weigh enough (never with none)."""
        return bool(self) and (len(self) >= min(self.max_plans, MAX_LIVE_PLANS) or self.records >= MAX_LIVE_RECORDS)

    def __setitem__(self, key: tuple[str, str], plan: EntityPlan) -> None:
        with self.room:
            self.records += len(plan.records) - self._weight.get(key, 0)
            self._weight[key] = len(plan.records)
            super().__setitem__(key, plan)

    def pop(self, key: tuple[str, str], *default: Any) -> Any:
        with self.room:
            self.records -= self._weight.pop(key, 0)
            out = super().pop(key, *default)
            self.room.notify_all()
        return out


class IngestRun:
    """One run over `units`: a list (a CLI ingest: totals are counted beside the work and every
    model mismatch is refused before any work) or any iterable, consumed as it yields (the
    upload service: the run lasts as long as the iterable)."""

    def __init__(self, units: Iterable[WorkUnit], options: IngestOptions, on_event: ev.EventSink = ev.ignore,
                 embedder: Embedder | None = None, keep_file_lists: bool = True) -> None:
        from ragctl.embedding import load_embedder
        from ragctl.model_spec import cpu_count, resolve_model
        from ragctl.storage import open_store

        self.units = units
        self.embedder = embedder
        self.reporter = Reporter(on_event, dry_run=options.dry_run, keep_file_lists=keep_file_lists)
        remote = options.model.remote
        if embedder is None and remote is not None:  # no network until the first encode
            embedder = load_embedder(options.model)
            # every request of a window in flight at once: the window holds concurrency x batch
            options = dataclasses.replace(options, embed_window=max(options.embed_window, remote.concurrency * remote.batch))
            self.embedder = embedder
        spec = embedder.spec if embedder is not None else resolve_model(options.model.model)
        storage = open_store(options.store, create=not options.dry_run, sharding=options.sharding)
        workers = min(options.workers or cpu_count(), cpu_count())
        self.ctx = RunContext(options, spec, spec.identity(), storage, workers)
        self._stores: dict[str, EntityStore] = {}
        self._stores_lock = threading.Lock()
        if isinstance(units, list):  # a model mismatch is refused before any work
            check_models(self.ctx.storage.root, (u.source.entity_id for u in units), self.ctx.identity)
        self.plans = LivePlans(MAX_LIVE_PLANS if isinstance(units, list) else MAX_LIVE_SERVICE_PLANS)
        # trees known unchanged since a clean run (unchanged.py): runs over a list of trees only
        self.known_trees = KnownTrees(self.ctx) if isinstance(units, list) else None
        # entities with one work unit in a list run (the CLI's; the library may give two sources
        # of one entity): only those are finished on the planner thread or settled from a walk
        self._alone: frozenset[str] = frozenset()
        if isinstance(units, list):
            per_entity = Counter(u.source.entity_id for u in units)
            self._alone = frozenset(e for e, n in per_entity.items() if n == 1)
        # entities whose tree totals are (being) counted: by the counter thread, or by the
        # planner when it reaches an entity first (then its own walk gives the totals and the
        # tree is not walked twice: a no-change re-run of many small tenants is mostly walks)
        self._counted: set[str] = set()
        self._counted_lock = threading.Lock()
        self.stop = threading.Event()
        self.interrupted = threading.Event()
        self._errors: list[BaseException] = []

    def store_for(self, entity_id: str) -> EntityStore:
        """The entity's store, opened once per run (ConfigError if it has another model)."""
        with self._stores_lock:
            store = self._stores.pop(entity_id, None)
            if store is None:
                store = EntityStore(self.ctx.storage, entity_id, index_kind=self.ctx.options.index)
                if not isinstance(self.units, list):  # a list's were checked up front (and every
                    store.check_model(self.ctx.identity)  # commit checks again, under the lock)
                if len(self._stores) >= MAX_CACHED_STORES and not isinstance(self.units, list):
                    self._evict_idle_store()
            self._stores[entity_id] = store  # most recently used last
            return store

    def _evict_idle_store(self) -> None:
        """A long-running service touches any number of entities: keep the most recent ones'
        cached records, drop the least recently used entity without a unit in flight."""
        busy = {eid for eid, _tag in list(self.plans)}
        for eid in list(self._stores):
            if eid not in busy:
                del self._stores[eid]
                return

    def _release_store(self, entity_id: str) -> None:
        """A CLI run visits each entity once: once finished, its store (and the records it
        caches) can go, so memory holds the entities in flight, not the tree. A service keeps
        them: the next job for the entity reuses the cache."""
        if isinstance(self.units, list):
            with self._stores_lock:
                self._stores.pop(entity_id, None)

    # ------------------------------------------------------------------ stages
    def _stage(self, name: str, body: Callable[[], None], inbox: Channel[Any] | None,
               downstream: Channel[Any] | None) -> threading.Thread:
        def target() -> None:
            try:
                body()
            except BaseException as exc:  # noqa: BLE001 - every failure ends the run, visibly
                if isinstance(exc, SystemExit) and self.stop.is_set():
                    return  # after a stop: Ray shutting down under a thread still waiting on it
                self._errors.append(exc)
                self.reporter.stage_failed(name, exc)
                self.stop.set()
            finally:
                if inbox is not None:
                    inbox.close()
                if downstream is not None:
                    downstream.end()

        thread = threading.Thread(target=target, name=f"ragctl-{name}", daemon=True)
        thread.start()
        return thread

    def _plan(self, tasks: Channel[ParseTask], settled: Channel[Any]) -> None:
        for unit in self.units:
            if self.stop.is_set():
                return
            if not self._plan_unit(unit, tasks, settled):
                return

    def _plan_unit(self, unit: WorkUnit, tasks: Channel[ParseTask], settled: Channel[Any]) -> bool:
        opts, source, tag = self.ctx.options, unit.source, unit.tag
        eid = source.entity_id
        self.reporter.entity_started(eid)
        known = self.known_trees if eid in self._alone else None
        if known is not None and known.applies(source):
            listing = known.unchanged(source)
            if listing is not None:  # every file unchanged, the entity's gc clean: no records read
                self._settle_unchanged(eid, tag, listing)
                return True
        try:
            store = self.store_for(eid)
        except ConfigError as exc:  # another model (a unit that arrived during the run, serve)
            self._fail_unit(unit, str(exc))
            return True
        with self.plans.room:
            while self.plans.full():  # each holds an entity's records: bound them
                if self.stop.is_set():
                    return False
                self.plans.room.wait(0.05)  # woken by the committer's pop; the timeout sees a stop
        try:
            records = store.records()  # read after the wait: a snapshot as fresh as can be
        except ENTITY_FAILURES as exc:  # its mapping shard cannot be read (`verify` says more)
            self._fail_unit(unit, f"entity {eid!r} cannot be read: {exc}")
            return True
        plan = EntityPlan(source, records, opts.rehash, opts.limits, tag, opts.reindex)
        if known is not None and known.applies(source):
            plan.tree = TreeDigest()
        self.plans[unit.key] = plan
        counting = isinstance(self.units, list) and self._claim_count(eid)
        files = sent = total = 0
        try:
            for f in source_files(source):
                if self.stop.is_set():
                    return False
                files += 1
                verdict, payload = plan.classify(f, hash_only=opts.dry_run)
                if verdict is Verdict.PARSE:
                    total += payload.size
                    if not tasks.put(payload):
                        return False
                    sent += 1
                else:
                    detail, size = payload
                    total += size
                    self.reporter.file_done(eid, f.rel_path, VERDICT_STATUS[verdict], 0, detail, size, tag)
            if counting:
                self.reporter.entity_counted(eid, files, total)
        finally:
            self.reporter.entity_files(eid, files)
        if not sent and eid in self._alone:
            # Nothing to parse, so nothing for the commit thread to commit: the unit (its stale
            # files, its gc check) is finished here. A no-change re-run over many tenants no
            # longer hands each one to the commit thread, whose CPU work made every syscall of
            # this thread wait for the GIL (the stat per file was ~75 us instead of ~2).
            # The entity's only unit: no commit of it can be pending.
            self.plans.pop(unit.key, None)
            faiss_on_one_thread()  # a gc's merge here must not take the model's cores
            finish_entity(store, plan.gone(), self.ctx, self.reporter)
            self._remember_tree(store, plan)
            self._release_store(eid)
            return True
        settled.put(msg.EntityEnd(eid, sent, plan), even_when_stopping=True)
        return True

    def _settle_unchanged(self, eid: str, tag: str, listing: list[tuple[str, int, bool]]) -> None:
        """Report a tree known unchanged as the records would have: each supported file
        unchanged, the others skipped; the totals if the counter has not counted it."""
        total = 0
        for rel, size, supported in listing:
            if supported:
                total += size
                self.reporter.file_done(eid, rel, Status.UNCHANGED, 0, "", size, tag)
            else:
                self.reporter.file_done(eid, rel, Status.SKIPPED, 0, unsupported_reason(rel), 0, tag)
        if self._claim_count(eid):
            self.reporter.entity_counted(eid, len(listing), total)
        self.reporter.entity_files(eid, len(listing))
        self.reporter.entity_done(eid)

    def _remember_tree(self, store: EntityStore, plan: EntityPlan) -> None:
        """After an entity's finish (planner or commit thread): its tree signature, if clean."""
        if self.known_trees is not None and store.entity_id in self._alone:
            self.known_trees.remember(store, plan.source, plan.tree)

    def _fail_unit(self, unit: WorkUnit, reason: str) -> None:
        """Every file of a unit fails with `reason`; the other units are planned as usual."""
        eid, files = unit.source.entity_id, 0
        for f in source_files(unit.source):
            files += 1
            self.reporter.file_done(eid, f.rel_path, Status.FAILED, 0, reason, 0, unit.tag)
        if isinstance(self.units, list) and self._claim_count(eid):  # (the counter may skip it)
            self.reporter.entity_counted(eid, files, 0)
        self.reporter.entity_files(eid, files)
        self.reporter.entity_done(eid)

    def _claim_count(self, entity_id: str) -> bool:
        """Whether the caller counts the entity's totals (True once per entity)."""
        with self._counted_lock:
            if entity_id in self._counted:
                return False
            self._counted.add(entity_id)
            return True

    def _count(self) -> None:
        if not isinstance(self.units, list):
            return
        known = self.known_trees
        for source in (u.source for u in self.units):
            if known is not None and known.recorded(source):
                continue  # likely unchanged: the planner's quick walk counts it
            if not self._claim_count(source.entity_id):
                continue  # the planner got there first
            totals = count_tree(source, self.stop)
            if totals is None:
                return
            self.reporter.entity_counted(source.entity_id, *totals)

    def _ray_stage(self) -> Any:
        opts = self.ctx.options
        if not (opts.ray or opts.ray_actors or opts.ray_gpus_per_actor or opts.shared_fs):
            return None
        from ragctl.ingest.ray_stage import RayStage, check_options

        check_options(opts)
        stage = RayStage(self.ctx, self.plans, self.reporter)
        stage.connect()
        return stage

    # ------------------------------------------------------------------ the run
    def execute(self) -> IngestReport:
        started = time.perf_counter()
        report = self.reporter.report
        report.model = {"name": self.ctx.spec.name, "dim": self.ctx.spec.dim, "max_tokens": self.ctx.spec.max_tokens}
        report.parse_workers = self.ctx.parse_workers
        opts = self.ctx.options
        tasks: Channel[ParseTask] = Channel("tasks", self.ctx.parse_workers * 4, self.stop)
        parsed: Channel[Any] = Channel("parsed", 64, self.stop)
        settled: Channel[Any] = Channel("settled", 256, self.stop)
        pool = ParsePool(self.ctx.parse_workers, str(self.ctx.spec.path), self.ctx.spec.max_tokens, opts.limits)
        embed = EmbedStage(self.ctx, self.plans, self.reporter, self.embedder)
        commit = CommitStage(self.ctx, self.store_for, self.reporter, self.plans, self._release_store,
                             self._remember_tree)
        ray_stage = self._ray_stage()  # --ray: connects now (exit 2 before any work if it cannot)
        threading.Thread(target=self._count, name="ragctl-counter", daemon=True).start()
        if ray_stage is None:
            middle = [
                self._stage("parse", lambda: pool.run(tasks, parsed, self.stop), tasks, parsed),
                self._stage("embed", lambda: embed.run(parsed, settled, self.stop), parsed, settled),
            ]
        else:  # Ray actors parse, chunk and embed (ray_stage.py)
            middle = [self._stage("ray", lambda: ray_stage.run(tasks, settled, self.stop), tasks, settled)]
        threads = [
            self._stage("plan", lambda: self._plan(tasks, settled), None, tasks),
            *middle,
            self._stage("commit", lambda: commit.run(settled, self.stop, self.interrupted), settled, None),
        ]
        try:
            self._wait(threads)
        finally:
            if ray_stage is not None:
                ray_stage.close()
        report.seconds = time.perf_counter() - started
        report.interrupted = self.interrupted.is_set()
        if (embed.embedder is not None or (ray_stage is not None and ray_stage.loaded)) and not opts.dry_run:
            from ragctl.storage.layout import record_last_run

            record_last_run(opts.store, report.model)
        for exc in self._errors:
            if isinstance(exc, UsageError):  # configuration (model, device, precision): exit 2
                raise exc
        return report

    def _wait(self, threads: list[threading.Thread]) -> None:
        """Until every stage is done; after a stop, until the committer is done (it commits what
        was handed to it) plus a short grace for the others, which are daemons."""
        committer = threads[-1]
        deadline: float | None = None
        while any(t.is_alive() for t in threads):
            try:
                for t in threads:
                    t.join(timeout=0.1)
                if self.stop.is_set() and deadline is None:
                    deadline = time.monotonic() + SHUTDOWN_GRACE_S
                if deadline is not None and not committer.is_alive():
                    deadline = min(deadline, time.monotonic() + STRAGGLER_GRACE_S)
                if deadline is not None and time.monotonic() > deadline:
                    return
            except KeyboardInterrupt:
                if not self.interrupted.is_set():
                    self.interrupted.set()
                    self.stop.set()
                    self.reporter.phase("interrupted: committing what is already embedded")


def check_models(store: Any, entity_ids: Iterable[str], identity: dict[str, Any]) -> None:
    """ConfigError if any of the entities is bound to another model. Reads each entity.json
    and keeps nothing: an entity's store is opened when the planner reaches it, so a run over
    100,000 tenants holds the ones in flight, not all of them. The file's own bytes are looked
    at first: the identity as EntityMeta writes it means the same model; anything else (no file,
    another model, another spelling) gets the full check."""
    import json

    from ragctl.ids import validate_entity_id
    from ragctl.storage.entity_meta import EntityMeta
    from ragctl.storage.layout import StoreLayout

    entities = str(StoreLayout(store).entities_dir)
    bound = json.dumps({"model": {k: identity[k] for k in sorted(identity) if k in ("digest", "dim", "name")}},
                       separators=(",", ":"), sort_keys=True)[1:-1].encode()
    for entity_id in map(validate_entity_id, entity_ids):
        path = os.path.join(entities, entity_id, "entity.json")
        try:
            with open(path, "rb") as fh:
                if bound in fh.read():
                    continue
        except OSError:
            pass
        EntityMeta(Path(path), entity_id).check_model(identity)


def ingest(sources: list[EntitySource], options: IngestOptions, on_event: ev.EventSink = ev.ignore,
           embedder: Embedder | None = None) -> IngestReport:
    """Run one ingest; progress goes to `on_event`, the result is the returned report."""
    return IngestRun([WorkUnit(s) for s in sources], options, on_event, embedder).execute()
