"""Changed paths per entity until they settle, for `ragctl watch` (ragctl/ingest/watch.py).

A change is taken once its entity has had no event for the quiet period, or at the latest
max(MIN_MAX_HOLD_S, 10 quiet periods) after its oldest change (a file written without pause must
not hold back the others). Then a changed file is taken if its mtime is older than the quiet
period, or if its size and mtime did not move over one more quiet period; a file still being
written waits. A directory that appeared is walked, each file under it tested the same way. A
path that is gone joins the batch's scope: records at or under it are stale (or moved). After a
batch of RESCAN_AFTER paths, and when told that events were lost, the entity's whole tree is
planned again once it is quiet.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ragctl.discovery import EntitySource, SourceFile, identity_path, walk_files
from ragctl.ids import is_valid_entity_id

MIN_MAX_HOLD_S = 5.0  # a change waits at most max(this, 10 quiet periods) for its entity to go quiet
RESCAN_AFTER = 1000  # changed paths in one batch after which the entity's tree is planned again


@dataclass
class _Changed:
    seen: float  # monotonic time of its last event (or of the last look at it)
    stat: tuple[int, int] | None = None  # (size, mtime_ns) at the last look


@dataclass
class _Entity:
    source: EntitySource
    root: str  # absolute: event paths start with it
    real_root: str  # symlinks are followed only while they stay inside it (as in a tree walk)
    pending: dict[str, _Changed] = field(default_factory=dict)  # by path relative to root (as on disk)
    last_event: float = float("-inf")
    first_pending: float = 0.0
    rescan: bool = False


@dataclass(frozen=True)
class Batch:
    """One entity's settled changes, as the source of a work unit."""

    source: EntitySource  # a part of the tree (files + scope), or the whole tree (rescan)
    bytes: int = 0
    changes: int = 0

    @property
    def rescan(self) -> bool:
        return self.source.files is None


class ChangeTracker:
    """Changed paths per entity until they settle (thread-safe). `add` takes event paths from
    the watcher; `ready` hands out the batches of entities that are not busy."""

    def __init__(self, sources: Iterable[EntitySource], quiet_s: float, discover_root: Path | None = None,
                 ignore: Iterable[Path] = (), clock: Callable[[], float] = time.monotonic,
                 wall_ns: Callable[[], int] = time.time_ns) -> None:
        self.quiet_s = quiet_s
        self.max_hold_s = max(MIN_MAX_HOLD_S, 10 * quiet_s)
        self.clock = clock
        self.wall_ns = wall_ns
        self._lock = threading.Lock()
        self.entities: dict[str, _Entity] = {}
        self._roots: dict[str, str] = {}  # absolute root -> entity id
        for source in sources:
            self._register(source)
        # with a ROOT and no --entities, a new directory under ROOT is a new entity
        self._discover = discover_root
        self._discover_abs = os.path.abspath(discover_root) if discover_root is not None else None
        self._new: dict[str, float] = {}  # candidate entity name -> its last event
        self._ignore = [os.path.abspath(p) for p in ignore]

    def _register(self, source: EntitySource) -> _Entity:
        root = os.path.abspath(source.root)
        entity = _Entity(source, root, os.path.realpath(root))
        self.entities[source.entity_id] = entity
        self._roots[root] = source.entity_id
        return entity

    def watch_roots(self) -> list[str]:
        if self._discover_abs is not None:
            return [self._discover_abs]
        return sorted(self._roots)

    # ------------------------------------------------------------------ watcher thread
    def add(self, paths: Iterable[str], now: float | None = None) -> None:
        now = self.clock() if now is None else now
        with self._lock:
            for path in paths:
                self._add(path, now)

    def _add(self, path: str, now: float) -> None:
        if any(path == p or path.startswith(p + os.sep) for p in self._ignore):
            return  # the store itself, inside a watched tree
        probe = path
        while probe not in self._roots:
            parent = os.path.dirname(probe)
            if parent == probe or probe == self._discover_abs:
                self._maybe_new_entity(path, now)
                return
            probe = parent
        entity = self.entities[self._roots[probe]]
        rel = path[len(probe) + 1:]
        if not rel or any(part.startswith(".") for part in rel.split(os.sep)):
            return  # the entity's own directory; hidden names, as in a tree walk
        changed = entity.pending.get(rel)
        if changed is None:
            if not entity.pending:
                entity.first_pending = now
            entity.pending[rel] = _Changed(now)
        else:
            changed.seen = now
        entity.last_event = now

    def _maybe_new_entity(self, path: str, now: float) -> None:
        if self._discover_abs is None or not path.startswith(self._discover_abs + os.sep):
            return
        name = path[len(self._discover_abs) + 1:].split(os.sep, 1)[0]
        if not name.startswith(".") and is_valid_entity_id(name):
            self._new[name] = now

    def rescan_all(self) -> None:
        """Events may have been lost: plan every tree again once it is quiet."""
        with self._lock:
            for entity in self.entities.values():
                entity.rescan = True

    # ------------------------------------------------------------------ planner thread
    def ready(self, busy: set[str], now: float | None = None) -> list[Batch]:
        now = self.clock() if now is None else now
        with self._lock:
            self._admit_new_entities(now)
            batches = []
            for eid, entity in self.entities.items():
                if eid in busy:
                    continue
                quiet = now - entity.last_event >= self.quiet_s
                if entity.rescan and quiet:
                    entity.rescan = False
                    entity.pending.clear()  # the tree's plan covers them
                    batches.append(Batch(entity.source))
                elif entity.pending and (quiet or now - entity.first_pending >= self.max_hold_s):
                    batch = self._settle(entity, now)
                    if batch is not None:
                        batches.append(batch)
            return batches

    def _admit_new_entities(self, now: float) -> None:
        assert self._discover is not None or not self._new
        for name, last in list(self._new.items()):
            if now - last < self.quiet_s:
                continue
            del self._new[name]
            if name in self.entities or self._discover is None or not (self._discover / name).is_dir():
                continue
            entity = self._register(EntitySource(name, self._discover / name))
            entity.rescan = True  # its whole tree, now that it is quiet
            entity.last_event = last

    def _settle(self, entity: _Entity, now: float) -> Batch | None:
        """Take the entity's changes that are settled; files still moving wait."""
        old_enough = self.wall_ns() - int(self.quiet_s * 1e9)  # an mtime before this is settled
        files: dict[str, SourceFile] = {}
        scope: set[str] = set()
        size = changes = 0

        def take(rel: str, st: os.stat_result | None) -> None:
            nonlocal size
            ident = identity_path(rel)
            files[ident] = SourceFile(ident, Path(entity.root, rel))
            scope.add(ident)
            size += st.st_size if st is not None else 0

        for rel, changed in list(entity.pending.items()):
            if now - changed.seen < self.quiet_s:
                continue  # it moved lately (the entity is held too long): its turn comes later
            changes += 1
            path = os.path.join(entity.root, rel)
            try:
                st = os.stat(path)
            except (FileNotFoundError, NotADirectoryError):
                del entity.pending[rel]
                scope.add(identity_path(rel))  # gone: its record (or those under it) are stale, or moved
                continue
            except OSError:
                del entity.pending[rel]
                take(rel, None)  # the planner reports why it cannot be read
                continue
            if os.path.islink(path) and not self._inside(entity, path):
                del entity.pending[rel]
                continue
            if stat.S_ISDIR(st.st_mode):  # created or moved in: every file below it
                del entity.pending[rel]
                scope.add(identity_path(rel))
                for f in walk_files(Path(path)):
                    sub = str(f.abs_path)[len(entity.root) + 1:]
                    if sub in entity.pending:
                        continue  # its own event decides
                    try:
                        sub_st = os.stat(f.abs_path)
                    except OSError:
                        continue
                    if sub_st.st_mtime_ns <= old_enough:
                        take(sub, sub_st)
                    else:
                        entity.pending[sub] = _Changed(now, (sub_st.st_size, sub_st.st_mtime_ns))
            elif stat.S_ISREG(st.st_mode):
                key = (st.st_size, st.st_mtime_ns)
                if st.st_mtime_ns <= old_enough or changed.stat == key:
                    del entity.pending[rel]
                    take(rel, st)
                else:  # written lately: look again after a quiet period
                    changed.stat, changed.seen = key, now
            else:
                del entity.pending[rel]  # a FIFO, a socket: never a document
        if entity.pending:
            entity.first_pending = now
        if changes >= RESCAN_AFTER:
            entity.rescan = True
        if not files and not scope:
            return None
        source = EntitySource(entity.source.entity_id, entity.source.root, files=tuple(files[k] for k in sorted(files)),
                              scope=tuple(sorted(scope)))
        return Batch(source, size, changes)

    @staticmethod
    def _inside(entity: _Entity, path: str) -> bool:
        real = os.path.realpath(path)
        return real == entity.real_root or real.startswith(entity.real_root + os.sep)
