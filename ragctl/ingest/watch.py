"""`ragctl watch`: keep a store in sync with document trees that change.

One `IngestRun` lives as long as the watch (one model, one parse pool, the same commit protocol
and change semantics as `ragctl ingest`); its work units come from `Watch._units()`:

    watcher thread   file events (watchfiles, inotify) under every watched root -> ChangeTracker
    planner thread   (the run's) pulls units: first each entity's whole tree (the initial ingest),
                     then per entity a batch of settled changes: a part of the tree
                     (`EntitySource.scope`) holding the changed files that exist; a record under a
                     changed path whose file is gone is stale (or pruned); a file whose content
                     is a gone record's is a move (doc_id kept, nothing embedded again)
    commit thread    (the run's) EntityDone -> the entity may take its next batch
    main thread      waits in the run; Ctrl-C stops it: what is embedded is committed (exit 130)

When a change is taken, and what a batch holds, is ChangeTracker's (ingest/changes.py). An
entity has one unit in flight at a time, so a path is never in two units at once, and a burst (a
checkout, a directory rename) that ends within the hold time is one batch: a moved file's old
and new paths are decided together. If the watcher fails (watchfiles stops on a file name that
is not UTF-8), it is opened again and every tree is planned again.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragctl import events as ev
from ragctl.discovery import EntitySource
from ragctl.errors import UsageError
from ragctl.ingest.changes import ChangeTracker
from ragctl.ingest.options import IngestOptions
from ragctl.ingest.plan import WorkUnit, count_tree
from ragctl.ingest.report import IngestReport

if TYPE_CHECKING:
    from ragctl.model_config import Embedder

DEFAULT_DEBOUNCE_MS = 500
POLL_S = 0.05  # how often the planner looks for settled changes
WATCH_STEP_MS = 50  # watchfiles: a group of events ends after this long without one ...
WATCH_GROUP_MS = 200  # ... or after this long at most
RESTART_BACKOFF_S = (0.5, 30.0)  # a failed watcher is opened again after this long, doubling


@dataclass(frozen=True)
class BatchStarted:
    """A batch of changes of one entity goes to the engine: `files` to read (`bytes` in all) out
    of `changes` changed paths; `rescan`: the entity's whole tree is planned again."""

    entity_id: str
    files: int
    bytes: int
    changes: int
    rescan: bool = False


WatchEvent = ev.Event | BatchStarted
WatchSink = Callable[[WatchEvent], None]


def _ignore(_event: WatchEvent) -> None:
    return None


def require_watchfiles() -> Any:
    """watchfiles' Rust watcher (used directly: its watches are set up when it is made)."""
    try:
        from watchfiles._rust_notify import RustNotify
    except ImportError as exc:
        raise UsageError("ragctl watch needs the watchfiles package: pip install 'ragctl[watch]'") from exc
    return RustNotify


class FileWatcher:
    """watchfiles' watcher on a thread of its own: every changed path goes to `on_paths`. The
    watches are set up in `start()`, before it returns (so nothing that changes after is missed);
    a watcher that fails is opened again after a pause; `on_restart(message, reopened)` says so."""

    def __init__(self, roots: Callable[[], list[str]], on_paths: Callable[[list[str]], None],
                 on_restart: Callable[[str, bool], None], stop: threading.Event) -> None:
        self.roots = roots
        self.on_paths = on_paths
        self.on_restart = on_restart
        self.stop = stop
        self._notify: Any = None
        self._thread: threading.Thread | None = None

    def _open(self) -> Any:
        RustNotify = require_watchfiles()
        force_polling = bool(os.environ.get("WATCHFILES_FORCE_POLLING"))
        roots = [r for r in self.roots() if os.path.isdir(r)]
        if not roots:
            raise UsageError("nothing to watch: no entity directory exists")
        # (paths, debug, force_polling, poll_delay_ms, recursive, ignore_permission_denied)
        return RustNotify(roots, False, force_polling, 300, True, True)

    def start(self) -> None:
        try:
            self._notify = self._open()
        except (OSError, RuntimeError) as exc:
            raise UsageError(f"cannot watch {', '.join(self.roots())}: {exc}") from exc
        self._thread = threading.Thread(target=self._run, name="ragctl-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        backoff = RESTART_BACKOFF_S[0]
        notify = self._notify
        try:
            while not self.stop.is_set():
                try:
                    if notify is None:
                        notify = self._open()
                        self.on_restart("watching again; every tree is planned again", True)
                    changes = notify.watch(WATCH_GROUP_MS, WATCH_STEP_MS, 1000, self.stop)
                except Exception as exc:  # noqa: BLE001 - the watcher must come back, whatever stopped it
                    self.on_restart(f"the file watcher stopped ({exc}); it starts again in {backoff:.1f} s", False)
                    self._close(notify)
                    notify = None
                    self.stop.wait(backoff)
                    backoff = min(backoff * 2, RESTART_BACKOFF_S[1])
                    continue
                if isinstance(changes, set) and changes:
                    self.on_paths([path for _change, path in changes])
                    backoff = RESTART_BACKOFF_S[0]
        finally:
            self._close(notify)

    @staticmethod
    def _close(notify: Any) -> None:
        if notify is not None:
            try:
                notify.close()
            except Exception:  # noqa: BLE001 - closing a dead watcher
                pass

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)


class Watch:
    """The initial ingest of `sources`, then their changes, until the run is stopped (Ctrl-C).
    `discover_root`: also take directories created under it as new entities."""

    def __init__(self, sources: list[EntitySource], options: IngestOptions, on_event: WatchSink = _ignore, *,
                 discover_root: Path | None = None, debounce_ms: int = DEFAULT_DEBOUNCE_MS,
                 embedder: Embedder | None = None) -> None:
        from ragctl.ingest.run import IngestRun

        if options.ray or options.ray_actors or options.ray_gpus_per_actor or options.shared_fs:
            raise UsageError("ragctl watch runs on this machine: --ray, --ray-actors, --ray-gpus-per-actor and "
                             "--shared-fs are for ragctl ingest")
        if debounce_ms < 1:
            raise UsageError(f"--debounce-ms must be at least 1, not {debounce_ms}")
        require_watchfiles()
        self.sources = sources
        self.discover_root = discover_root
        self.tracker = ChangeTracker(sources, debounce_ms / 1000, discover_root, ignore=[options.store])
        self._sink = on_event
        self._lock = threading.Lock()
        self._busy = {s.entity_id for s in sources}  # entities with a unit in flight
        self._initial = set(self._busy)  # ... whose initial ingest is not finished
        self._counted = threading.Event()
        self._stop_watching = threading.Event()
        self.batches = 0
        self.run = IngestRun(self._units(), options, self._on_event, embedder=embedder)
        for source in sources:
            self.run.store_for(source.entity_id)  # a model mismatch is refused before any work
        self.watcher = FileWatcher(self.tracker.watch_roots, self.tracker.add, self._restarted, self._stop_watching)

    def execute(self) -> IngestReport:
        self.watcher.start()  # before the first walk: whatever changes after it is seen
        threading.Thread(target=self._count, name="ragctl-counter", daemon=True).start()
        try:
            return self.run.execute()
        finally:
            self._stop_watching.set()
            self.watcher.join(2.0)

    # ------------------------------------------------------------------ the run's threads
    def _units(self) -> Iterator[WorkUnit]:
        """The planner's work: each tree, then batches of settled changes (until the run stops)."""
        for source in self.sources:
            yield WorkUnit(source)
        stop = self.run.stop
        while not self._counted.wait(POLL_S):  # the initial totals belong to the initial round
            if stop.is_set():
                return
        while not stop.is_set():
            with self._lock:
                busy = set(self._busy)
            for batch in self.tracker.ready(busy):
                eid = batch.source.entity_id
                with self._lock:
                    self._busy.add(eid)
                self.batches += 1
                files = len(batch.source.files) if batch.source.files is not None else 0
                self._emit(BatchStarted(eid, files, batch.bytes, batch.changes, batch.rescan))
                if batch.rescan:
                    self._count_one(batch.source)
                else:
                    self._emit(ev.EntityPlanned(eid, files, batch.bytes))
                yield WorkUnit(batch.source, tag=f"watch-{self.batches}")
                if stop.is_set():
                    return
            stop.wait(POLL_S)

    def _count(self) -> None:
        try:
            for source in self.sources:
                if self.run.stop.is_set() or not self._count_one(source):
                    return
        finally:
            self._counted.set()

    def _count_one(self, source: EntitySource) -> bool:
        totals = count_tree(source, self.run.stop)
        if totals is not None:
            self._emit(ev.EntityPlanned(source.entity_id, *totals))
        return totals is not None

    def _on_event(self, event: ev.Event) -> None:
        self._emit(event)
        if isinstance(event, ev.EntityDone):
            with self._lock:
                self._busy.discard(event.entity_id)
                was_initial = event.entity_id in self._initial
                self._initial.discard(event.entity_id)
                announce = was_initial and not self._initial
            if announce:
                where = self.discover_root if self.discover_root is not None else ", ".join(
                    str(s.root) for s in self.sources)
                self._emit(ev.Phase(f"watching {where} for changes (Ctrl-C to stop)"))

    def _restarted(self, message: str, reopened: bool) -> None:
        if reopened:  # events may have been lost meanwhile
            self.tracker.rescan_all()
        self._emit(ev.Phase(f"watch: {message}"))

    def _emit(self, event: WatchEvent) -> None:
        try:
            self._sink(event)
        except Exception:  # noqa: BLE001 - a broken renderer must not stop the watch
            pass


def watch(sources: list[EntitySource], options: IngestOptions, on_event: WatchSink = _ignore, *,
          discover_root: Path | None = None, debounce_ms: int = DEFAULT_DEBOUNCE_MS,
          embedder: Embedder | None = None) -> IngestReport:
    """Ingest `sources`, then keep them in sync until Ctrl-C; the report counts the whole watch."""
    return Watch(sources, options, on_event, discover_root=discover_root, debounce_ms=debounce_ms,
                 embedder=embedder).execute()
