"""`migrate-to-sharded`: move a store's monolithic mapping into per-entity shards.

    migrate_to_sharded(store, dry_run=False) -> MigrationReport

What it does, in this order (see docs/migration.md for the reasoning):

  1. take the legacy lock (`doc_id_name_mapping.json.lock`) and hold it to the end;
  2. record `mapping_mode: sharded` in store.json (from here on every writer uses the shards,
     so a shard record is always at least as new as the legacy one: "shard wins");
  3. stream the legacy file once (never `json.load` of the whole file), spilling each record as
     one line into a per-entity temporary file under `<store>/.migrate-to-sharded.tmp/`;
  4. for each entity (a few at a time, on threads): take its shard lock, merge the spilled
     records into the shard (the shard's record wins on the same doc_id; a different content
     is a reported conflict), write it atomically (temp + fsync + replace), re-read it and check
     the counts, release the lock; then fsync the shard directory once;
  5. only then retire the legacy file: hard-link backup `doc_id_name_mapping.json.bak-<UTC>`
     (copy + fsync where links fail), then atomically replace the legacy file with the records
     that have no valid entity id (or unlink it when there are none), fsync the directory.

Readers read the legacy file before the shards, and the legacy file keeps every record until
all shards are complete, so a concurrent reader never misses a record. A kill -9 anywhere
leaves a valid sharded store (legacy file + some shards) that a re-run completes. Nothing is
ever deleted: retired records survive in the backup link.

The module imports neither rich nor typer (the CLI in ragctl/cli/migrate.py renders results).
"""

from __future__ import annotations

import json
import json.decoder
import json.scanner
import os
import re
import shutil
import tempfile
import time
from array import array
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ragctl.errors import StorageError, UsageError
from ragctl.fsutil import (
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    file_lock,
    fsync_dir,
    json_bytes,
    now_iso,
    remove_stale_temps,
)
from ragctl.storage.json_storage import DEFAULT_LOCK_TIMEOUT, load_records, record_shards
from ragctl.storage.layout import (
    MAPPING_COLLECTION,
    MODE_SHARDED,
    StoreLayout,
    read_manifest,
    set_mapping_mode,
)
from ragctl.storage.mapping_log import load_shard_view

SPILL_DIR_NAME = ".migrate-to-sharded.tmp"
RESIDUAL = ".residual"  # never a valid entity id (those start with a letter or digit)
BACKUP_INFIX = ".bak-"
SAMPLE = 20  # how many conflicting / residual doc_ids the report lists

READ_CHUNK_CHARS = 1 << 20  # 1 Mi characters per read of the legacy file
SPILL_BUFFER_CHARS = 16 << 20  # spill buffered lines to disk once they reach ~16 Mi characters
MAX_RECORD_CHARS = 64 << 20  # a single record larger than this is treated as corrupt input
SHARD_WORKERS = 3  # shards built and written concurrently (bounded: one shard's records each)

Group = tuple[str, ...]  # the shards a record goes to; () = stays in the legacy file


# --------------------------------------------------------------------------- report


@dataclass
class EntityResult:
    records: int = 0  # legacy records of this entity
    new: int = 0  # not in the shard before
    same: int = 0  # already in the shard with identical content (e.g. a re-run after a kill)
    conflicts: int = 0  # in the shard with different content: the shard's record was kept
    conflict_sample: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, int]:
        return {"records": self.records, "new": self.new, "same": self.same, "conflicts": self.conflicts}


@dataclass
class MigrationReport:
    store: str
    dry_run: bool
    mode_before: str | None = None
    mode_after: str | None = None
    legacy_found: bool = False
    migrated: int = 0  # distinct legacy records that belong in shards
    residual: int = 0  # records kept in the legacy file (no valid entity id)
    conflicts: int = 0
    backup: str | None = None
    legacy_action: str = "none"  # none | replaced | removed (would-be action in a dry run)
    per_entity: dict[str, EntityResult] = field(default_factory=dict)
    conflict_ids: list[str] = field(default_factory=list)  # a sample
    residual_ids: list[str] = field(default_factory=list)  # a sample
    duplicates: int = 0  # legacy entries superseded by a later entry with the same doc_id
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase

    def lap(self, phase: str, since: float) -> float:
        now = time.monotonic()
        self.phases[phase] = round(now - since, 3)
        return now

    @property
    def entities(self) -> int:
        return sum(1 for r in self.per_entity.values() if r.records)

    @property
    def nothing_to_migrate(self) -> bool:
        return self.migrated == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "migrated": self.migrated,
            "entities": self.entities,
            "conflicts": self.conflicts,
            "residual": self.residual,
            "backup": self.backup,
            "dry_run": self.dry_run,
            "store": self.store,
            "nothing_to_migrate": self.nothing_to_migrate,
            "mode_before": self.mode_before,
            "mode_after": self.mode_after,
            "legacy_found": self.legacy_found,
            "legacy_action": self.legacy_action,
            "duplicates": self.duplicates,
            "conflict_ids": self.conflict_ids,
            "residual_ids": self.residual_ids,
            "per_entity": {e: r.to_json() for e, r in sorted(self.per_entity.items())},
            "seconds": round(self.seconds, 3),
            "phases": self.phases,
        }


# --------------------------------------------------------------------------- streaming reader

_WS = re.compile(r"[ \t\n\r]*")
_INCOMPLETE = (IndexError, StopIteration, json.JSONDecodeError)


class _JSONStream:
    """Incremental reader of one top-level JSON object or list, built on the json module's own
    C scanner (what `JSONDecoder.raw_decode` uses) over a buffered reader.

    Memory is one read window plus the record being decoded, whatever the file size. Each item
    comes with its exact source text, so records are spilled without re-serialising them. An
    item that runs past the end of the window is retried after the window grows (doubling, so
    the cost stays linear); at the end of the file the failure is a real JSON error.
    """

    def __init__(self, handle: TextIO, path: Path, chunk_chars: int = READ_CHUNK_CHARS) -> None:
        self.handle = handle
        self.path = path
        self.chunk = chunk_chars
        self.buf = ""
        self.pos = 0
        self.base = 0  # characters dropped from the front of buf so far
        self.eof = False
        decoder = json.JSONDecoder()
        self.scan = json.scanner.make_scanner(decoder)  # type: ignore[arg-type]  # value at index -> (value, end)
        self.scanstring = json.decoder.scanstring  # type: ignore[attr-defined]  # after an opening quote -> (str, end)

    def _error(self, message: str, at: int | None = None) -> StorageError:
        where = self.base + (self.pos if at is None else at)
        return StorageError(f"{self.path}: not valid JSON: {message} (at character {where})")

    def _more(self, at_least: int = 0) -> bool:
        if self.eof:
            return False
        if self.pos:
            self.base += self.pos
            self.buf = self.buf[self.pos :]
            self.pos = 0
        data = self.handle.read(max(self.chunk, at_least))
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _refill(self, exc: BaseException) -> None:
        """The item at self.pos did not parse: read more, or fail at the end of the file."""
        pending = len(self.buf) - self.pos
        message = getattr(exc, "msg", None) or "unexpected end of data"
        if pending > MAX_RECORD_CHARS:
            raise self._error(f"{message} (or an item longer than {MAX_RECORD_CHARS} characters)")
        if not self._more(at_least=pending):
            raise self._error(message)

    def _peek(self) -> str:
        """Skip whitespace; the next character, or '' at the end of the file."""
        while True:
            match = _WS.match(self.buf, self.pos)
            assert match is not None
            self.pos = match.end()
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._more():
                return ""

    def items(self) -> Iterator[tuple[str | None, str | None, Any, str]]:
        """(key, its raw text, value, raw value text) per top-level item; keys None in a list."""
        first = self._peek()
        if first == "{":
            self.pos += 1
            if self._peek() == "}":
                self.pos += 1
            else:
                yield from self._object_items()
        elif first == "[":
            self.pos += 1
            if self._peek() == "]":
                self.pos += 1
            else:
                for value, raw in self._list_items():
                    yield None, None, value, raw
        elif first == "":
            raise self._error("empty file")
        else:
            value = None
            while True:
                try:
                    value, end = self.scan(self.buf, self.pos)
                    if end == len(self.buf) and not self.eof:
                        raise IndexError  # a number may continue in the next chunk
                    self.pos = end
                    break
                except _INCOMPLETE as exc:
                    if self.eof:
                        raise self._error(getattr(exc, "msg", None) or "expected a value") from None
                    self._refill(exc)
            if value is not None:  # `null` reads as an empty mapping, like JSONStorage does
                raise StorageError(f"{self.path}: expected a JSON object of records, got {type(value).__name__}")
        if self._peek() != "":
            raise self._error("extra data after the top-level value")

    def _object_items(self) -> Iterator[tuple[str, str, Any, str]]:
        ws, scan, scanstring = _WS.match, self.scan, self.scanstring
        while True:
            buf = self.buf
            try:
                k = ws(buf, self.pos).end()  # type: ignore[union-attr]
                if buf[k] != '"':
                    raise self._error("expected a string key", k)
                key, kend = scanstring(buf, k + 1)
                c = ws(buf, kend).end()  # type: ignore[union-attr]
                if buf[c] != ":":
                    raise self._error("expected ':'", c)
                v = ws(buf, c + 1).end()  # type: ignore[union-attr]
                value, vend = scan(buf, v)
                s = ws(buf, vend).end()  # type: ignore[union-attr]
                sep = buf[s]  # also proves the value did not stop at the end of the window
            except _INCOMPLETE as exc:
                self._refill(exc)
                continue
            if sep != "," and sep != "}":
                raise self._error("expected ',' or '}'", s)
            self.pos = s + 1
            yield key, buf[k:kend], value, buf[v:vend]
            if sep == "}":
                return

    def _list_items(self) -> Iterator[tuple[Any, str]]:
        ws, scan = _WS.match, self.scan
        while True:
            buf = self.buf
            try:
                v = ws(buf, self.pos).end()  # type: ignore[union-attr]
                value, vend = scan(buf, v)
                s = ws(buf, vend).end()  # type: ignore[union-attr]
                sep = buf[s]
            except _INCOMPLETE as exc:
                self._refill(exc)
                continue
            if sep != "," and sep != "]":
                raise self._error("expected ',' or ']'", s)
            self.pos = s + 1
            yield value, buf[v:vend]
            if sep == "]":
                return


# --------------------------------------------------------------------------- spilling


class _Spill:
    """Per-group line files: `"doc_id":{record}` lines, appended in legacy-file order."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.buffers: dict[str, list[str]] = {}

    def flush(self) -> None:
        for name, lines in self.buffers.items():
            with open(self.directory / f"{name}.part", "a", encoding="utf-8", newline="") as handle:
                handle.write("".join(lines))
        self.buffers.clear()

    def load(self, name: str) -> tuple[dict[str, Any], str | None]:
        """The group's records as one dict (a later line with the same doc_id wins), and the
        JSON text they were parsed from when it holds each doc_id once (else None)."""
        try:
            with open(self.directory / f"{name}.part", encoding="utf-8", newline="") as handle:
                text = handle.read()
        except FileNotFoundError:
            return {}, None
        if not text:
            return {}, None
        lines = text.count("\n")
        body = "{" + text[:-1].replace("\n", ",") + "}"
        records = json.loads(body)
        return records, (body if len(records) == lines else None)


def _group_of(value: Any) -> Group:
    return tuple(record_shards(value)) if isinstance(value, dict) else ()


@dataclass
class _Scan:
    groups: dict[str, int] = field(default_factory=dict)  # entity -> legacy entries routed to it
    shard_entries: int = 0
    residual_entries: int = 0
    hashes: array = field(default_factory=lambda: array("q"))
    winners: dict[str, Group] = field(default_factory=dict)  # doc_id -> group of its last entry
    migrated: int = 0
    residual: int = 0
    duplicates: int = 0


def _scan(legacy: Path, spill: _Spill, id_field: str = "doc_id") -> _Scan:
    """Pass one: stream the legacy file into the spill files and count.

    The loop is the hot path of the migration (one iteration per record), hence the locals."""
    scan = _Scan()
    groups, hashes, buffers = scan.groups, scan.hashes, spill.buffers
    single: dict[str, Group] = {}  # entity_id value -> its group, for the common record shape
    shard_entries = residual_entries = buffered = 0
    with open(legacy, encoding="utf-8-sig", newline="") as handle:
        for key, key_raw, value, raw in _JSONStream(handle, legacy).items():
            if key is None or key_raw is None:  # list form: the record names its own id
                if not isinstance(value, dict) or id_field not in value:
                    raise StorageError(f"{legacy}: list entry without {id_field!r}: {raw[:80]}")
                key = str(value[id_field])
                key_raw = json.dumps(key, ensure_ascii=False)
            entity = value.get("entity_id") if type(value) is dict else None
            if type(entity) is str:  # same answer as record_shards(), memoised per entity id
                group = single.get(entity)
                if group is None:
                    group = single[entity] = _group_of(value)
            else:
                group = _group_of(value)
            if "\n" in raw or "\r" in raw:
                # Strict JSON has no raw CR/LF inside strings: they are whitespace, safe to flatten.
                raw = raw.replace("\r", " ").replace("\n", " ")
            line = f"{key_raw}:{raw}\n"
            hashes.append(hash(key))
            if group:
                shard_entries += 1
                for entity_id in group:
                    groups[entity_id] = groups.get(entity_id, 0) + 1
                    lines = buffers.get(entity_id)
                    if lines is None:
                        buffers[entity_id] = [line]
                    else:
                        lines.append(line)
                    buffered += len(line)
            else:
                residual_entries += 1
                buffers.setdefault(RESIDUAL, []).append(line)
                buffered += len(line)
            if buffered >= SPILL_BUFFER_CHARS:
                spill.flush()
                buffered = 0
    spill.flush()
    scan.shard_entries, scan.residual_entries = shard_entries, residual_entries
    scan.migrated, scan.residual = shard_entries, residual_entries
    _resolve_duplicates(legacy, scan)
    return scan


def _resolve_duplicates(legacy: Path, scan: _Scan) -> None:
    """A doc_id listed twice: the last entry wins (as when JSONStorage reads the file).

    Duplicates are found by hash (8 bytes per record); only when some hash repeats is the file
    streamed a second time to learn, for those doc_ids only, where their last entry went."""
    if len(scan.hashes) < 2:
        return
    import numpy as np

    hashes = np.frombuffer(scan.hashes, dtype=np.int64).copy()
    hashes.sort()
    repeated = set(hashes[1:][hashes[1:] == hashes[:-1]].tolist())
    del hashes
    scan.hashes = array("q")
    if not repeated:
        return
    seen: dict[str, list[int]] = {}  # doc_id -> [entries routed to shards, entries kept residual]
    with open(legacy, encoding="utf-8-sig", newline="") as handle:
        for key, _, value, _ in _JSONStream(handle, legacy).items():
            if key is None:
                key = str(value["doc_id"])
            if hash(key) not in repeated:
                continue
            group = _group_of(value)
            counts = seen.setdefault(key, [0, 0])
            counts[0 if group else 1] += 1
            scan.winners[key] = group
    for key, (to_shards, to_residual) in seen.items():
        if to_shards + to_residual < 2:
            scan.winners.pop(key, None)  # a hash collision, not a duplicate
            continue
        won_shards = 1 if scan.winners[key] else 0
        scan.migrated += won_shards - to_shards
        scan.residual += (1 - won_shards) - to_residual
        scan.duplicates += to_shards + to_residual - 1


def _drop_superseded(records: dict[str, Any], scan: _Scan, group_name: str) -> int:
    """Remove entries whose doc_id's last legacy entry went somewhere else; how many."""
    if not scan.winners:
        return 0
    dropped = 0
    for key in [k for k in records if k in scan.winners]:
        winner = scan.winners[key]
        keep = (not winner) if group_name == RESIDUAL else (group_name in winner)
        if not keep:
            del records[key]
            dropped += 1
    return dropped


# --------------------------------------------------------------------------- locks and files


def _write_shard(path: Path, records: dict[str, Any], mode: int, text: str | None = None) -> None:
    """fsutil's atomic write, except that the directory is fsynced once after all shards
    (before the legacy file is retired) instead of once per shard: a thousand directory fsyncs
    cost seconds and buy nothing here, since the legacy file keeps every record until that
    single fsync has happened."""
    data = json_bytes(records) if text is None else text.encode("utf-8")
    atomic_write_bytes(path, data, mode=mode, sync_dir=False)


def backup_paths(store: Path) -> list[Path]:
    legacy = StoreLayout(store).legacy_path()
    return sorted(store.glob(legacy.name + BACKUP_INFIX + "*"))


def _backup(legacy: Path) -> Path:
    """A second name for the legacy file's current contents (reused after a killed run)."""
    st = os.stat(legacy)
    for existing in backup_paths(legacy.parent):
        try:
            other = os.stat(existing)
        except OSError:
            continue
        if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
            return existing
    stamp = now_iso().replace("-", "").replace(":", "")
    target = legacy.with_name(f"{legacy.name}{BACKUP_INFIX}{stamp}")
    n = 1
    while target.exists():
        target = legacy.with_name(f"{legacy.name}{BACKUP_INFIX}{stamp}-{n}")
        n += 1
    try:
        os.link(legacy, target)
    except OSError:
        try:
            with open(legacy, "rb") as src:
                atomic_write(target, lambda dst: shutil.copyfileobj(src, dst, 1 << 20), sync_dir=False)
        except OSError as exc:
            raise StorageError(f"{target}: cannot create the backup of {legacy}: {exc.strerror or exc}") from exc
    fsync_dir(legacy.parent)
    return target


# --------------------------------------------------------------------------- the migration


def _check_store(store: Path) -> dict[str, Any] | None:
    layout = StoreLayout(store)
    if not store.is_dir():
        raise UsageError(f"{store}: no such store directory")
    manifest = read_manifest(store)
    if manifest is None and not layout.legacy_path().exists() and not layout.shard_dir().is_dir():
        raise UsageError(f"{store}: no ragctl store here (no store.json, no mapping files)")
    return manifest


def migrate_to_sharded(
    store: str | os.PathLike[str],
    dry_run: bool = False,
    *,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
) -> MigrationReport:
    """Move every record of the legacy mapping file into its entity's shard; see module doc."""
    started = time.monotonic()
    root = Path(store)
    manifest = _check_store(root)
    layout = StoreLayout(root)
    legacy = layout.legacy_path(MAPPING_COLLECTION)
    report = MigrationReport(store=str(root), dry_run=dry_run)
    report.mode_before = manifest.get("mapping_mode") if manifest else None

    with ExitStack() as stack:
        if dry_run:
            # Nothing in the store changes: no locks, no temp files there, no manifest update.
            spill_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ragctl-migrate-")))
        else:
            stack.enter_context(file_lock(legacy, lock_timeout))
            remove_stale_temps(legacy)
            if report.mode_before != MODE_SHARDED:
                # Before any shard is written: from now on writers use shards, so a record in a
                # shard is never older than its legacy copy, and a killed run leaves a valid
                # sharded store (legacy file + partial shards) that a re-run completes.
                set_mapping_mode(root, MODE_SHARDED)
            spill_dir = root / SPILL_DIR_NAME
            shutil.rmtree(spill_dir, ignore_errors=True)  # left by a killed run
            spill_dir.mkdir()
            stack.callback(shutil.rmtree, spill_dir, True)
        report.mode_after = MODE_SHARDED  # what it is now (or would be, in a dry run)

        if not legacy.exists():
            report.seconds = time.monotonic() - started
            return report
        report.legacy_found = True
        spill = _Spill(spill_dir)
        lap = time.monotonic()
        scan = _scan(legacy, spill)
        lap = report.lap("scan", lap)
        report.migrated, report.residual, report.duplicates = scan.migrated, scan.residual, scan.duplicates
        if not scan.groups:
            report.residual_ids = _residual_sample(spill, scan)
            report.seconds = time.monotonic() - started
            return report  # only records without a valid entity id: they stay where they are

        # A few shards at a time: JSON work holds the GIL, fsync does not, so writing one shard
        # overlaps with building the next. Each worker holds one shard lock at a time.
        entities = sorted(scan.groups)
        file_mode = os.stat(legacy).st_mode & 0o777
        with ThreadPoolExecutor(max_workers=SHARD_WORKERS, thread_name_prefix="ragctl-migrate") as pool:
            futures = [
                pool.submit(_merge_entity, layout, spill, scan, entity_id, dry_run, lock_timeout, file_mode)
                for entity_id in entities
            ]
            try:
                for entity_id, future in zip(entities, futures):
                    result = future.result()
                    report.per_entity[entity_id] = result
                    report.conflicts += result.conflicts
                    report.conflict_ids.extend(result.conflict_sample[: SAMPLE - len(report.conflict_ids)])
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        lap = report.lap("shards", lap)

        residual, _ = spill.load(RESIDUAL)
        _drop_superseded(residual, scan, RESIDUAL)
        report.residual_ids = sorted(residual)[:SAMPLE]
        report.legacy_action = "replaced" if residual else "removed"
        if dry_run:
            report.seconds = time.monotonic() - started
            return report

        # Every shard is written and was re-read with the right counts: retire the legacy file.
        for entity_id in scan.groups:
            if not layout.shard_path(MAPPING_COLLECTION, entity_id).exists():
                raise StorageError(f"{layout.shard_path(MAPPING_COLLECTION, entity_id)}: vanished after migration; legacy file kept")
        fsync_dir(layout.shard_dir())  # the shards' names are durable before the legacy one goes
        report.backup = str(_backup(legacy))
        if residual:
            atomic_write_json(legacy, residual)
        else:
            legacy.unlink()
            fsync_dir(root)
        report.lap("retire", lap)
    report.seconds = time.monotonic() - started
    return report


def _residual_sample(spill: _Spill, scan: _Scan) -> list[str]:
    residual, _ = spill.load(RESIDUAL)
    _drop_superseded(residual, scan, RESIDUAL)
    return sorted(residual)[:SAMPLE]


def _merge_entity(
    layout: StoreLayout,
    spill: _Spill,
    scan: _Scan,
    entity_id: str,
    dry_run: bool,
    lock_timeout: float,
    file_mode: int,
) -> EntityResult:
    incoming, body = spill.load(entity_id)
    if _drop_superseded(incoming, scan, entity_id):
        body = None
    (spill.directory / f"{entity_id}.part").unlink(missing_ok=True)
    shard = layout.shard_path(MAPPING_COLLECTION, entity_id)
    result = EntityResult(records=len(incoming))
    with ExitStack() as stack:
        if not dry_run:
            shard.parent.mkdir(parents=True, exist_ok=True)
            stack.enter_context(file_lock(shard, lock_timeout))
        current = load_shard_view(shard)  # with its mapping log: a rewrite below folds it in
        for key, record in incoming.items():
            have = current.get(key)
            if have is None and key not in current:
                result.new += 1
            elif have == record:
                result.same += 1
            else:
                result.conflicts += 1
                if len(result.conflict_sample) < SAMPLE:
                    result.conflict_sample.append(key)
        if dry_run or not result.new:
            return result
        remove_stale_temps(shard)
        merged = incoming
        if current:
            merged.update(current)  # the shard's record wins: it is the newer one
            body = None
        # A new shard is written as the very text its records were parsed from (the legacy
        # file's own bytes for them): no re-encoding, and the re-read below checks it.
        try:  # the shard keeps its permissions; a new one gets the legacy file's
            mode = os.stat(shard).st_mode & 0o777
        except FileNotFoundError:
            mode = file_mode
        _write_shard(shard, merged, mode, body)
        check = load_records(shard)
        if len(check) != len(merged) or any(key not in check for key in incoming):
            raise StorageError(
                f"{shard}: re-read after writing shows {len(check)} records, expected {len(merged)}; "
                "the legacy mapping file is kept, re-run the migration"
            )
    return result


__all__ = ["MigrationReport", "EntityResult", "migrate_to_sharded", "backup_paths"]
