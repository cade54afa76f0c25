"""The per-entity mapping log `doc_id_name_mapping/<entity>.json.log`, next to its shard.

A commit appends one line to the log instead of rewriting the whole shard, so its cost is what
it adds. The shard `<entity>.json` stays the contract (a JSON object `{doc_id: record}`); the
records of an entity are *the shard with the log applied*, and every reader goes through
`load_shard_view` / `ShardView` to get them.

    line 1      H <sha256 hex of the shard bytes the log applies to>\\n
    each entry  <crc32 hex, 8> <byte length of JSON> <JSON {"set": {doc_id: record}, "del": [doc_id]}>\\n

* **Commit point**: the fsync after appending an entry. A kill during the append leaves a torn
  last line (no newline, wrong length or checksum): readers ignore it and the next writer
  truncates it away before appending (writers hold the shard's lock).
* **The log names its shard** by the sha256 of the shard's bytes. A log whose header does not
  match the shard on disk is stale and ignored. That makes folding crash-safe without any
  ordering trick: fold = write the shard (shard + log) atomically, then delete the log. A kill
  in between leaves a stale log that is ignored; any other writer that rewrites the shard
  (`JSONStorage.edit`, migrate-to-sharded) folds the log into what it writes the same way.
* **Readers** read the log before the shard: if a fold happened in between, the new shard is
  complete and the old log is ignored because its header no longer matches.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import zlib
from pathlib import Path
from typing import Any

from ragctl.errors import StorageError
from ragctl.fsutil import atomic_write_bytes, json_bytes

Record = dict[str, Any]  # one mapping record: doc_id, entity_id, name, path, content_hash, chunk_count, ...


FOLD_FRACTION = 2.0  # fold when the log exceeds twice the shard's size (mapping bytes written ~1.5x final)...
FOLD_MIN_BYTES = 256 * 1024  # ...and this many bytes (small shards are cheap to rewrite anyway)


def log_path(shard: Path) -> Path:
    return Path(shard).with_name(Path(shard).name + ".log")


def _frame(entry: dict[str, Any]) -> bytes:
    body = json_bytes(entry)
    return b"%08x %d " % (zlib.crc32(body), len(body)) + body + b"\n"


def _parse_entries(data: bytes, start: int) -> tuple[list[dict[str, Any]], int]:
    """Complete, intact entries from `start`; returns them and the offset after the last one."""
    entries: list[dict[str, Any]] = []
    pos = start
    while True:
        end = data.find(b"\n", pos)
        if end < 0:
            break  # torn tail (or nothing)
        line = data[pos:end]
        try:
            crc_s, len_s, body = line.split(b" ", 2)
            if len(body) != int(len_s) or zlib.crc32(body) != int(crc_s, 16):
                break
            entry = json.loads(body)
        except ValueError:
            break
        entries.append(entry)
        pos = end + 1
    return entries, pos


def apply_entry(records: dict[str, Record], entry: dict[str, Any]) -> None:
    for key in entry.get("del", ()):
        records.pop(key, None)
    records.update(entry.get("set", {}))


def _header(sha: str) -> bytes:
    return b"H " + sha.encode("ascii") + b"\n"


def _read_log(path: Path) -> tuple[bytes, int] | None:
    """(log bytes, inode) or None when there is no log."""
    try:
        with open(path, "rb") as fh:
            return fh.read(), os.fstat(fh.fileno()).st_ino
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"{path}: cannot read: {exc.strerror}") from exc


def _header_sha(data: bytes) -> tuple[str | None, int]:
    end = data.find(b"\n")
    if end < 0 or not data.startswith(b"H "):
        return None, 0
    return data[2:end].decode("ascii", "replace"), end + 1


def as_record_dict(raw: Any, path: Path, id_field: str) -> dict[str, Record]:
    """A shard's JSON as {id: record}: an object as it is, or a list of records keyed by `id_field`."""
    if raw is None:
        return {}
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, list):
        out: dict[str, Record] = {}
        for item in raw:
            if not isinstance(item, dict) or id_field not in item:
                raise StorageError(f"{path}: list entry without {id_field!r}: {str(item)[:80]}")
            out[str(item[id_field])] = item
        return out
    raise StorageError(f"{path}: expected a JSON object of records, got {type(raw).__name__}")


def _parse_shard(raw: bytes | None, path: Path, id_field: str) -> dict[str, Record]:
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise StorageError(f"{path}: not valid JSON: {exc}") from exc
    return as_record_dict(value, path, id_field)


def _read_shard(path: Path) -> tuple[bytes | None, tuple[int, int, int] | None]:
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            return fh.read(), (st.st_ino, st.st_mtime_ns, st.st_size)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        raise StorageError(f"{path}: cannot read: {exc.strerror}") from exc


class ShardView:
    """Shard + log, kept current incrementally: a new log tail costs what it adds; a replaced
    shard or log is read again in full. `copy_on_write=True` (shared readers) gives a new dict
    per change so a returned dict never changes under its holder; False (the committer, under
    the lock) updates in place."""

    def __init__(self, shard: Path, id_field: str = "doc_id", copy_on_write: bool = True) -> None:
        self.shard = Path(shard)
        self.log = log_path(self.shard)
        self.id_field = id_field
        self.copy_on_write = copy_on_write
        self._lock = threading.Lock()
        self.records: dict[str, Record] = {}
        self.shard_sig: tuple[int, int, int] | None = ("unread",)  # type: ignore[assignment]
        self.shard_sha: str | None = None
        self.shard_bytes = 0
        self.log_ino: int | None = None
        self.log_valid = 0  # bytes of the log that are header + intact entries
        self.log_applies = False
        self.listeners: list[Any] = []  # callables(entry, records) before an entry is applied; (None, records) after a reload

    def refresh(self) -> dict[str, Record]:
        with self._lock:
            self._refresh()
            return self.records

    def _refresh(self) -> None:
        try:
            st = os.stat(self.shard)
            sig: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            sig = None
        if sig == self.shard_sig and self._log_tail():
            return
        self._full()

    def _log_tail(self) -> bool:
        """Apply entries appended since the last look; False when the log must be read again."""
        try:
            st = os.stat(self.log)
        except FileNotFoundError:
            return self.log_ino is None
        if st.st_ino != self.log_ino:
            return False
        if not self.log_applies or st.st_size == self.log_valid:
            return True
        if st.st_size < self.log_valid:
            return False
        try:
            with open(self.log, "rb") as fh:
                if os.fstat(fh.fileno()).st_ino != self.log_ino:
                    return False
                fh.seek(self.log_valid)
                data = fh.read()
        except FileNotFoundError:
            return False
        entries, used = _parse_entries(data, 0)
        if entries:
            records = dict(self.records) if self.copy_on_write else self.records
            for entry in entries:
                for listener in self.listeners:
                    listener(entry, records)
                apply_entry(records, entry)
            self.records = records
        self.log_valid += used
        return True

    def _full(self) -> None:
        log = _read_log(self.log)  # the log before the shard: see the module docstring
        raw, sig = _read_shard(self.shard)
        records = _parse_shard(raw, self.shard, self.id_field)
        sha = hashlib.sha256(raw).hexdigest() if raw is not None else None
        self.shard_sig, self.shard_sha, self.shard_bytes = sig, sha, len(raw or b"")
        self.log_ino, self.log_valid, self.log_applies = None, 0, False
        if log is not None:
            data, ino = log
            head, start = _header_sha(data)
            self.log_ino = ino
            if sha is not None and head == sha:
                entries, used = _parse_entries(data, start)
                for entry in entries:
                    apply_entry(records, entry)
                self.log_valid, self.log_applies = used, True
            else:
                self.log_valid = len(data)
        self.records = records
        for listener in self.listeners:
            listener(None, records)  # everything changed

    # ------------------------------------------------------------------ writing (lock held)
    def log_bytes(self) -> int:
        return self.log_valid if self.log_applies else 0

    def append(self, entry: dict[str, Any]) -> None:
        """Append one entry durably (the commit point) and apply it to the view. The caller
        holds the shard's lock and has just refreshed the view; the shard must exist."""
        with self._lock:
            if self.shard_sha is None:
                raise StorageError(f"{self.shard}: a mapping log needs its shard")
            line = _frame(entry)
            if not self.log_applies:
                # no log, or a stale one (its shard was rewritten): start a new one atomically
                atomic_write_bytes(self.log, _header(self.shard_sha) + line)
                self.log_ino = os.stat(self.log).st_ino
                self.log_valid, self.log_applies = len(_header(self.shard_sha)) + len(line), True
            else:
                fd = os.open(self.log, os.O_WRONLY)
                try:
                    if os.fstat(fd).st_size != self.log_valid:
                        os.ftruncate(fd, self.log_valid)  # a torn tail of a killed writer
                    os.lseek(fd, self.log_valid, os.SEEK_SET)
                    view = memoryview(line)
                    while view:
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                except OSError as exc:
                    raise StorageError(f"{self.log}: cannot write: {exc.strerror or exc}") from exc
                finally:
                    os.close(fd)
                self.log_valid += len(line)
            if self.copy_on_write:
                self.records = dict(self.records)
            for listener in self.listeners:
                listener(entry, self.records)
            apply_entry(self.records, entry)

    def should_fold(self) -> bool:
        n = self.log_bytes()
        return n > FOLD_MIN_BYTES and n > FOLD_FRACTION * self.shard_bytes

    def fold(self) -> None:
        """Write the shard as shard + log (atomically), then drop the log. Lock held."""
        from ragctl.fsutil import atomic_write_json

        with self._lock:
            if not self.log_applies and self.log_ino is None:
                return
            if self.log_applies:
                atomic_write_json(self.shard, self.records)
            self.log.unlink(missing_ok=True)
        self.refresh()

    def write_base(self, records: dict[str, Record]) -> None:
        """Write the shard itself (a new shard, or a rewrite), dropping the log. Lock held."""
        from ragctl.fsutil import atomic_write_json

        atomic_write_json(self.shard, records)
        self.log.unlink(missing_ok=True)
        self.refresh()


def load_shard_view(shard: Path, id_field: str = "doc_id") -> dict[str, Record]:
    """A shard's records with its log applied, as the files say now (no cache)."""
    return ShardView(shard, id_field).refresh()


def fold_shard(shard: Path) -> bool:
    """Fold the log into its shard (the caller holds the shard's lock). True if it wrote."""
    view = ShardView(shard, copy_on_write=False)
    view.refresh()
    if view.log_ino is None:
        return False
    had = view.log_applies and view.log_bytes() > 0
    view.fold()
    return had
