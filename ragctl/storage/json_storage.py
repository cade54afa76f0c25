"""JSONStorage: named collections of JSON records, sharded by entity, one file lock per shard.

A collection is a JSON object `{id: record}`. With sharding on, a record's shard is its
`entity_id` (or each id of its `entity_ids` list) and lives in `<dir>/<collection>/<entity>.json`;
records without a valid entity id stay in the legacy file `<dir>/<collection>.json`. With
sharding off, the legacy file holds everything (the original single-file layout).

Every write is a locked read-modify-write of one file followed by an atomic replace, so
readers never lock and never see a half-written file. Writers to different entities take
different locks and never wait on each other.

Readers consult the legacy file *before* the shards. Migration writes shards first and retires
the legacy file last, so a reader that saw the legacy file missing is guaranteed to find the
shards complete: no record is ever invisible during a migration.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ragctl.errors import StorageError, UsageError
from ragctl.fsutil import atomic_write_json, file_lock, lock_path_for, read_json
from ragctl.ids import is_valid_entity_id, validate_entity_id
from ragctl.storage.layout import (
    MAPPING_COLLECTION,
    MODE_MONOLITHIC,
    MODE_SHARDED,
    StoreLayout,
    open_store_manifest,
    read_manifest,
)
from ragctl.storage.mapping_log import Record, as_record_dict

Query = dict[str, Any]

DEFAULT_LOCK_TIMEOUT = 600.0
# the shard views a JSONStorage keeps (read_shard): at most this many, holding at most this many
# shard + log bytes (their records in memory weigh a few times that)
MAX_VIEWS = 4096
MAX_VIEW_BYTES = 64 * 1024 * 1024


def record_shards(record: Record) -> list[str]:
    """The shards a record belongs to; [] when it has no valid entity id (legacy file)."""
    if "entity_id" in record:
        value = record["entity_id"]
        return [value] if is_valid_entity_id(value) else []
    values = record.get("entity_ids")
    if isinstance(values, list) and values and all(is_valid_entity_id(v) for v in values):
        return list(dict.fromkeys(values))
    return []


def query_shards(query: Query | None) -> list[str] | None:
    """Shards a query is confined to, or None when it must scan them all."""
    if not query:
        return None
    if "entity_id" in query:
        value = query["entity_id"]
        values = value if isinstance(value, (list, tuple, set, frozenset)) else [value]
    elif "entity_ids" in query:
        values = query["entity_ids"]
        if not isinstance(values, (list, tuple, set, frozenset)):
            values = [values]
    else:
        return None
    return [validate_entity_id(v) for v in values]


def matches(record: Record, query: Query | None) -> bool:
    """Field equality; a list/set value in the query means "one of"."""
    if not query:
        return True
    for field, wanted in query.items():
        if field == "entity_ids":
            wanted_set = set(wanted) if isinstance(wanted, (list, tuple, set, frozenset)) else {wanted}
            if not wanted_set.intersection(record_shards(record)):
                return False
            continue
        value = record.get(field, _MISSING)
        if isinstance(wanted, (list, tuple, set, frozenset)) and not isinstance(value, list):
            if value not in wanted:
                return False
        elif value != wanted:
            return False
    return True


_MISSING = object()


def load_records(path: Path, id_field: str = "doc_id") -> dict[str, Record]:
    """The records of one mapping file as the bytes on disk say now (no cache); missing -> {}.
    Accepts `{id: record}` or a list of records (legacy); anything else is a StorageError."""
    return as_record_dict(read_json(path, None), Path(path), id_field)


class JSONStorage:
    def __init__(
        self,
        storage_dir: str | os.PathLike[str],
        enable_sharding: bool = True,
        *,
        id_field: str = "doc_id",
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    ) -> None:
        self.root = Path(storage_dir)
        self._root_str = os.path.join(str(self.root), "")  # ends with one separator
        self._legacy_paths: dict[str, Path] = {}
        self.enable_sharding = enable_sharding
        self.id_field = id_field
        self.lock_timeout = lock_timeout
        self._cache: dict[Path, tuple[tuple[int, int, int], dict[str, Record]]] = {}
        # shard path -> ShardView (shard + its mapping log), least recently read first: a cache,
        # bounded by the shard bytes it holds (a process that reads 100,000 tenants' shards -
        # a CLI run, a long-lived server - keeps the recent ones, not all of them)
        self._views: OrderedDict[Path, Any] = OrderedDict()
        self._view_bytes: dict[Path, int] = {}
        self._views_held = 0
        self._cache_lock = threading.Lock()

    # ----------------------------------------------------------------- paths and locks
    def shard_path(self, collection: str, entity_id: str) -> Path:
        # = StoreLayout(root).shard_path(...), from one string (pathlib's joins cost more than
        # the reads behind them when a run goes through 100,000 tenants)
        return Path(f"{self._root_str}{collection}/{validate_entity_id(entity_id)}.json")

    def legacy_path(self, collection: str) -> Path:
        path = self._legacy_paths.get(collection)
        if path is None:
            path = self._legacy_paths[collection] = StoreLayout(self.root).legacy_path(collection)
        return path

    def _locked(self, path: Path):
        return file_lock(path, self.lock_timeout)

    # ----------------------------------------------------------------- reading
    def _read(self, path: Path) -> dict[str, Record]:
        """Parse a collection file, cached by (inode, mtime, size): files are only ever replaced."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise StorageError(f"{path}: cannot stat: {exc.strerror}") from exc
        signature = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._cache_lock:
            cached = self._cache.get(path)
        if cached and cached[0] == signature:
            return cached[1]
        data = load_records(path, self.id_field)
        with self._cache_lock:
            self._cache[path] = (signature, data)
        return data

    def read_shard(self, collection: str, entity_id: str) -> dict[str, Record]:
        """The records of one shard only (not the legacy file): the shard file with its
        mapping log applied (mapping_log.py), kept current incrementally. Do not mutate."""
        from ragctl.storage.mapping_log import ShardView

        path = self.shard_path(collection, entity_id)
        with self._cache_lock:
            found = self._views.get(path)
            if found is None:
                view = self._views[path] = ShardView(path, self.id_field)
            else:
                view = found
                self._views.move_to_end(path)
        records = view.refresh()
        with self._cache_lock:
            if self._views.get(path) is view:  # (not dropped meanwhile by another thread)
                size = view.shard_bytes + view.log_valid
                self._views_held += size - self._view_bytes.get(path, 0)
                self._view_bytes[path] = size
            # the least recently read go beyond MAX_VIEWS or MAX_VIEW_BYTES (the most recent one
            # stays, whatever its size); the next read of a dropped one reads its files again
            while len(self._views) > 1 and (len(self._views) > MAX_VIEWS or self._views_held > MAX_VIEW_BYTES):
                dropped, _view = self._views.popitem(last=False)
                self._views_held -= self._view_bytes.pop(dropped, 0)
        return records

    def read_legacy(self, collection: str) -> dict[str, Record]:
        return self._read(self.legacy_path(collection))

    def shard_ids(self, collection: str) -> list[str]:
        directory = self.root / collection
        if not directory.is_dir():
            return []
        return sorted(
            p.name[:-5] for p in directory.glob("*.json") if is_valid_entity_id(p.name[:-5])
        )

    def records_for_entity(self, collection: str, entity_id: str) -> dict[str, Record]:
        """All records of an entity: legacy file first, then its shard (shard wins)."""
        legacy = self.read_legacy(collection)
        merged = {k: r for k, r in legacy.items() if entity_id in record_shards(r)}
        if self.enable_sharding:
            merged.update(self.read_shard(collection, entity_id))
        return merged

    def find(self, collection: str, query: Query | None = None) -> list[Record]:
        shards = query_shards(query)
        legacy = self.read_legacy(collection)  # before the shards: see module docstring
        found: dict[str, Record] = {}
        for key, record in legacy.items():
            if matches(record, query):
                found[key] = record
        if self.enable_sharding:
            for entity_id in shards if shards is not None else self.shard_ids(collection):
                for key, record in self.read_shard(collection, entity_id).items():
                    if matches(record, query):
                        found[key] = record
        return [dict(r) for r in found.values()]

    def count(self, collection: str, query: Query | None = None) -> int:
        return len(self.find(collection, query))

    # ----------------------------------------------------------------- writing
    @contextmanager
    def edit(self, collection: str, entity_id: str | None) -> Iterator[dict[str, Record]]:
        """Locked read-modify-write of one file: the entity's shard, or the legacy file when
        `entity_id` is None or sharding is off. The yielded dict is written back atomically
        when the block exits without an exception (and only if it changed)."""
        if entity_id is not None and self.enable_sharding:
            path = self.shard_path(collection, entity_id)
        else:
            if entity_id is not None:
                validate_entity_id(entity_id)  # the same rule with sharding off
            path = self.legacy_path(collection)
        sharded = entity_id is not None and self.enable_sharding
        with self._locked(path):
            if sharded:  # the shard with its mapping log applied; a write folds the log in
                from ragctl.storage.mapping_log import load_shard_view, log_path

                current = load_shard_view(path, self.id_field)
            else:
                current = load_records(path, self.id_field)
            working = {k: dict(v) for k, v in current.items()}
            yield working
            if working != current or not path.exists():
                if working or path.exists():
                    atomic_write_json(path, working)
                    if sharded:
                        log_path(path).unlink(missing_ok=True)  # stale now (mapping_log.py)
                    with self._cache_lock:
                        self._cache.pop(path, None)

    def _target(self, record: Record) -> list[str | None]:
        # A record that names its entity must name a valid one: rejected before any file is
        # touched, never silently filed in the legacy file (only id-less records go there).
        if record.get("entity_id") is not None:
            validate_entity_id(record["entity_id"])
        elif isinstance(record.get("entity_ids"), list):
            for value in record["entity_ids"]:
                validate_entity_id(value)
        if not self.enable_sharding:
            return [None]
        return list(record_shards(record)) or [None]

    def _key(self, record: Record) -> str:
        if self.id_field not in record:
            raise UsageError(f"record has no {self.id_field!r} field: {str(record)[:80]}")
        return str(record[self.id_field])

    def _group(self, records: Iterable[Record]) -> dict[str | None, list[Record]]:
        groups: dict[str | None, list[Record]] = {}
        for record in records:
            for target in self._target(record):
                groups.setdefault(target, []).append(record)
        return groups

    def insert(self, collection: str, record: Record) -> None:
        """Add one record; an id that already exists in its shard is an error."""
        key = self._key(record)
        for target, group in self._group([record]).items():
            with self.edit(collection, target) as data:
                if key in data:
                    raise UsageError(f"{collection}: record {key!r} already exists")
                data[key] = dict(group[0])

    def upsert(self, collection: str, records: Iterable[Record]) -> int:
        """Insert or replace records by id; one locked write per shard touched."""
        count = 0
        for target, group in self._group(records).items():
            with self.edit(collection, target) as data:
                for record in group:
                    data[self._key(record)] = dict(record)
                    count += 1
        return count

    def _targets_for_query(self, collection: str, query: Query | None) -> list[str | None]:
        shards = query_shards(query)  # validates entity ids in the query, sharded or not
        targets: list[str | None] = []
        if self.legacy_path(collection).exists() or not self.enable_sharding:
            targets.append(None)
        if self.enable_sharding:
            targets.extend(shards if shards is not None else self.shard_ids(collection))
        return targets

    def update(self, collection: str, query: Query | None, changes: Record) -> int:
        """Apply `changes` to every matching record, in whichever file holds it."""
        if self.id_field in changes:
            raise UsageError(f"update cannot change {self.id_field!r}")
        count = 0
        for target in self._targets_for_query(collection, query):
            with self.edit(collection, target) as data:
                for record in data.values():
                    if matches(record, query):
                        record.update(changes)
                        count += 1
        return count

    def delete(self, collection: str, query: Query | None) -> int:
        count = 0
        for target in self._targets_for_query(collection, query):
            with self.edit(collection, target) as data:
                doomed = [k for k, r in data.items() if matches(r, query)]
                for key in doomed:
                    del data[key]
                count += len(doomed)
        return count

    def shard_lock(self, collection: str, entity_id: str):
        """The lock of an entity's shard: the one every commit of that entity holds."""
        return self._locked(self.shard_path(collection, entity_id))

    def remove_shard_files(self, collection: str, entity_id: str) -> bool:
        """Unlink an entity's shard and its mapping log, unread (caller holds `shard_lock`);
        whether there was a shard."""
        from ragctl.storage.mapping_log import log_path

        path = self.shard_path(collection, entity_id)
        existed = path.exists()
        path.unlink(missing_ok=True)
        log_path(path).unlink(missing_ok=True)
        return existed

    def drop_shard(self, collection: str, entity_id: str) -> None:
        """Remove an entity's shard file and lock file (used by `delete` of a whole entity)."""
        path = self.shard_path(collection, entity_id)
        with self._locked(path):
            self.remove_shard_files(collection, entity_id)
        with self._cache_lock:
            self._cache.pop(path, None)
            self._views.pop(path, None)
            self._views_held -= self._view_bytes.pop(path, 0)
        lock_path_for(path).unlink(missing_ok=True)


__all__ = ["JSONStorage", "MAPPING_COLLECTION", "load_records", "record_shards", "matches"]


def open_store(root: Path, *, create: bool, sharding: bool | None = None) -> JSONStorage:
    """The store's JSONStorage in its recorded mapping mode.

    create=True: create the store on first use (and upgrade an older format's manifest).
    create=False: write nothing; a store that does not exist yet is seen as the empty store
    `create=True` would make (what a dry run plans against). Whether a missing store is an
    error is the caller's decision (`require_store`)."""
    root = Path(root)
    if create:
        manifest = open_store_manifest(root, sharding)
    else:
        manifest = read_manifest(root) or {
            "mapping_mode": MODE_MONOLITHIC if sharding is False else MODE_SHARDED
        }
    return JSONStorage(root, enable_sharding=manifest["mapping_mode"] == MODE_SHARDED)
