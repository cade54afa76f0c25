"""The store catalog: one row per entity (documents, chunks, bytes, last change, model) in
`<store>/catalog.sqlite`, so that `stats`, serve's `GET /api/entities`, MCP `list_entities` and
the library listings answer without opening every entity (docs/storage.md, "The store catalog").

    entities(entity_id PRIMARY KEY, documents, chunks, bytes, last_ingest, model, error, updated_at)
    pending(entity_id PRIMARY KEY, since)     writes begun and not yet reflected in `entities`
    info(key PRIMARY KEY, value)              "complete": every entity on disk was enrolled

SQLite in WAL mode: each entity's writer updates its own row in a short transaction of its
own, so commits of different entities never rewrite one shared file (they queue only for
SQLite's write lock, held for one row).

**Crash story.** A writer of an entity (a commit, `gc`, a delete) holds the entity's lock, and
before it changes anything on disk it *marks* the entity in `pending` (a transaction with
`synchronous=FULL`: durable before the entity's own writes begin). After its commit point, still
under the lock, it writes the entity's row and removes the mark in one transaction. A kill -9
in between leaves the mark. A reader (`rows()`, `page()`) settles marks first: it tries the
entity's lock without waiting; if it gets it, nobody is writing, so the mark is a dead writer's
and the row is recomputed from the entity's files (under that lock) and the mark dropped; if the
lock is busy, a write is in progress and its writer will update the row (the reader shows the
previous commit's row). `verify` compares every row with the entity's files; `verify --repair`
recomputes them all. A store without a catalog (older ragctl) gets one on first need: every
entity on disk is enrolled as pending in the transaction that creates the tables, so any later
writer's mark and every earlier entity are covered; the first reader computes the rows (a line
on stderr says so). Errors writing the catalog never fail a commit (the mark stays, so the row
is recomputed by the next reader).
"""

from __future__ import annotations

import functools
import os
import sqlite3
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragctl.errors import StorageError
from ragctl.fsutil import file_lock, now_iso, read_json
from ragctl.ids import validate_entity_id
from ragctl.storage.layout import MAPPING_COLLECTION, StoreLayout

if TYPE_CHECKING:
    from ragctl.storage.json_storage import JSONStorage

CATALOG_NAME = "catalog.sqlite"
FIELDS = ("documents", "chunks", "bytes", "last_ingest", "model", "error")
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS entities (entity_id TEXT PRIMARY KEY, documents INTEGER NOT NULL,"
    " chunks INTEGER NOT NULL, bytes INTEGER NOT NULL, last_ingest TEXT, model TEXT, error TEXT,"
    " updated_at TEXT NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS pending (entity_id TEXT PRIMARY KEY, since TEXT NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    # the entity's file signature after a gc() that left nothing to do (EntityStore.gc)
    "CREATE TABLE IF NOT EXISTS gc_clean (entity_id TEXT PRIMARY KEY, signature TEXT NOT NULL) WITHOUT ROWID",
    # the signature of an entity's tree and files after an ingest that left it clean
    # (ragctl/ingest/unchanged.py): a re-run that finds the same skips the entity's records
    "CREATE TABLE IF NOT EXISTS trees (entity_id TEXT PRIMARY KEY, signature TEXT NOT NULL) WITHOUT ROWID",
)
_LATER_TABLES = {"gc_clean": _SCHEMA[3], "trees": _SCHEMA[4]}  # created in catalogs made before them
_BUSY_MS = 60_000
_PARAMS = 500  # ids per IN (...) query


@functools.lru_cache(maxsize=64)
def catalog_path(root: Path) -> Path:
    return Path(root) / CATALOG_NAME


def has_catalog(root: Path) -> bool:
    """Does the store have a catalog (one stat; called per entity in a run over many)."""
    return os.path.exists(str(catalog_path(root)))


def _notice(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class _Cached:
    """One thread's open connection to one catalog, and the file it was opened on."""

    def __init__(self, con: sqlite3.Connection, ident: tuple[int, int], pid: int) -> None:
        self.con, self.ident, self.pid = con, ident, pid


_local = threading.local()
_CACHED_STORES = 8  # open catalogs kept per thread (least recently used closed beyond)


@contextmanager
def _connect(root: Path) -> Iterator[sqlite3.Connection]:
    """This thread's connection to the store's catalog, created (and every entity on disk
    enrolled) on first use. Autocommit mode: callers open their own short transactions.

    Connections are kept open (per thread, per store): closing the last one checkpoints and
    deletes the write-ahead log, and the next open creates it again - ~10 fsyncs per commit
    when each write opened its own connection. A catalog replaced or deleted meanwhile (another
    inode) is reopened."""
    path = catalog_path(root)
    key = os.path.abspath(path)
    cache: OrderedDict[str, _Cached] = getattr(_local, "cache", None) or OrderedDict()
    _local.cache = cache
    try:
        st = os.stat(path)
        ident: tuple[int, int] | None = (st.st_dev, st.st_ino)
    except FileNotFoundError:
        ident = None
    cached = cache.get(key)
    if cached is not None and (cached.ident != ident or cached.pid != os.getpid()):
        del cache[key]
        if cached.pid == os.getpid():
            cached.con.close()
        cached = None
    if cached is None:
        if ident is None:
            _create(path)
        con = _open(path, Path(root))
        st = os.stat(path)
        cached = cache[key] = _Cached(con, (st.st_dev, st.st_ino), os.getpid())
        while len(cache) > _CACHED_STORES:
            _, old = cache.popitem(last=False)
            if old.pid == os.getpid():
                old.con.close()
    cache.move_to_end(key)
    yield cached.con


def _open(path: Path, root: Path) -> sqlite3.Connection:
    try:
        con = sqlite3.connect(path, timeout=_BUSY_MS / 1000, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StorageError(f"{path}: cannot open the store catalog: {exc}") from exc
    try:
        con.execute(f"PRAGMA busy_timeout={_BUSY_MS}")
        if con.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        con.execute("PRAGMA journal_size_limit=1048576")  # the WAL truncated to 1 MB after a checkpoint
        if con.execute("SELECT 1 FROM sqlite_master WHERE name='info'").fetchone() is None or \
                con.execute("SELECT 1 FROM info WHERE key='complete'").fetchone() is None:
            _enrol_all(con, root)
        else:
            have = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            for name, ddl in _LATER_TABLES.items():
                if name not in have:
                    con.execute(ddl)
    except sqlite3.Error as exc:
        con.close()
        raise StorageError(f"{path}: store catalog unusable: {exc} (`ragctl verify --repair` rebuilds it)") from exc
    return con


def close_connections() -> None:
    """Close this thread's cached catalog connections (tests, long-lived callers)."""
    cache = getattr(_local, "cache", None) or {}
    for cached in cache.values():
        if cached.pid == os.getpid():
            cached.con.close()
    cache.clear()


def _create(path: Path) -> None:
    """Create the database file in WAL mode, under `catalog.sqlite.lock` (creators only): a
    catalog deleted by hand may have left its write-ahead log, which must not be replayed into
    the new database, and only a creator that holds the lock may remove it."""
    if not path.parent.is_dir():
        raise StorageError(f"{path.parent}: no ragctl store here")
    with file_lock(path, _BUSY_MS / 1000):
        if path.exists():
            return
        for suffix in ("-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        try:
            with closing(sqlite3.connect(path, timeout=_BUSY_MS / 1000, isolation_level=None)) as con:
                con.execute("PRAGMA journal_mode=WAL")
        except sqlite3.Error as exc:
            raise StorageError(f"{path}: cannot create the store catalog: {exc}") from exc


def _enrol_all(con: sqlite3.Connection, root: Path) -> None:
    """Create the tables and mark every entity on disk pending, in one transaction (so no
    entity written before or during this is missed: a later writer marks its own)."""
    con.execute("BEGIN IMMEDIATE")
    try:
        for statement in _SCHEMA:
            con.execute(statement)
        if con.execute("SELECT 1 FROM info WHERE key='complete'").fetchone() is None:
            ids = StoreLayout(root).entity_ids()
            since = now_iso()
            con.executemany("INSERT OR IGNORE INTO pending VALUES (?, ?)", ((e, since) for e in ids))
            con.execute("INSERT OR REPLACE INTO info VALUES ('complete', ?)", (since,))
            if ids:
                _notice(f"{catalog_path(root)}: building the store catalog ({len(ids):,} entities, once)")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


# ---------------------------------------------------------------------- writers (entity lock held)
def mark(root: Path, entity_id: str) -> None:
    """Before a writer changes an entity on disk (its lock held): durable before its writes."""
    with _connect(root) as con:
        try:
            con.execute("PRAGMA synchronous=FULL")  # the WAL fsynced at this commit
            try:
                con.execute("INSERT OR REPLACE INTO pending VALUES (?, ?)", (entity_id, now_iso()))
            finally:
                con.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            raise StorageError(f"{catalog_path(root)}: cannot write: {exc}") from exc


def put(root: Path, entity_id: str, row: dict[str, Any] | None) -> None:
    """After the writer's commit point (its lock held): the entity's row (None: the entity is
    gone) and the mark removed, in one transaction."""
    with _connect(root) as con:
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                _write_row(con, entity_id, row)
                con.execute("DELETE FROM pending WHERE entity_id = ?", (entity_id,))
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StorageError(f"{catalog_path(root)}: cannot write: {exc}") from exc


def set_bytes(root: Path, entity_id: str, size: int) -> None:
    """A merge switched in (entity lock held): only the entity's bytes changed."""
    with _connect(root) as con:
        try:
            con.execute("UPDATE entities SET bytes = ? WHERE entity_id = ?", (size, entity_id))
        except sqlite3.Error as exc:
            raise StorageError(f"{catalog_path(root)}: cannot write: {exc}") from exc


def gc_signature(root: Path, entity_id: str) -> str | None:
    with _connect(root) as con:
        row = con.execute("SELECT signature FROM gc_clean WHERE entity_id = ?", (entity_id,)).fetchone()
    return None if row is None else str(row[0])


def set_gc_signature(root: Path, entity_id: str, signature: str) -> None:
    """(entity lock held) gc() left nothing to do; no fsync: losing it only costs a gc."""
    with _connect(root) as con:
        con.execute("INSERT OR REPLACE INTO gc_clean VALUES (?, ?)", (entity_id, signature))


def tree_signatures(root: Path) -> dict[str, str]:
    """Every entity's recorded tree signature (ragctl/ingest/unchanged.py), in one query."""
    with _connect(root) as con:
        return dict(con.execute("SELECT entity_id, signature FROM trees"))


def set_tree_signature(root: Path, entity_id: str, signature: str) -> None:
    """No fsync: losing it only costs a re-run the records read."""
    with _connect(root) as con:
        con.execute("INSERT OR REPLACE INTO trees VALUES (?, ?)", (entity_id, signature))


def _write_row(con: sqlite3.Connection, entity_id: str, row: dict[str, Any] | None) -> None:
    if row is None:
        con.execute("DELETE FROM entities WHERE entity_id = ?", (entity_id,))
        con.execute("DELETE FROM gc_clean WHERE entity_id = ?", (entity_id,))
        con.execute("DELETE FROM trees WHERE entity_id = ?", (entity_id,))
        return
    con.execute(
        "INSERT OR REPLACE INTO entities VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (entity_id, int(row["documents"]), int(row["chunks"]), int(row["bytes"]), row.get("last_ingest"),
         row.get("model"), row.get("error"), now_iso()),
    )


def row_from(documents: int, chunks: int, size: int, meta: dict[str, Any] | None) -> dict[str, Any]:
    meta = meta or {}
    return {"documents": documents, "chunks": chunks, "bytes": size, "last_ingest": meta.get("last_ingest"),
            "model": (meta.get("model") or {}).get("name"), "error": None}


# ---------------------------------------------------------------------- computing a row from disk
def entity_bytes(root: Path, entity_id: str) -> int:
    """Bytes of the entity's files: its directory, its mapping shard and the shard's log."""
    layout = StoreLayout(root)
    shard = layout.shard_path(MAPPING_COLLECTION, entity_id)
    total = _tree_bytes(layout.entity_dir(entity_id))
    for path in (shard, shard.with_name(shard.name + ".log")):
        try:
            total += os.stat(path).st_size
        except OSError:
            pass
    return total


def _tree_bytes(path: Path) -> int:
    total = 0
    try:
        entries = list(os.scandir(path))
    except OSError:
        return 0
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                total += _tree_bytes(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                total += entry.stat(follow_symlinks=False).st_size
        except OSError:
            pass
    return total


def compute_row(storage: JSONStorage, entity_id: str) -> dict[str, Any] | None:
    """The entity's row as its files say now (None: no such entity). An unreadable mapping
    gives a row with `error` set (and zero documents), as `stats` always reported it."""
    from ragctl.storage.json_storage import record_shards
    from ragctl.storage.mapping_log import load_shard_view

    root = storage.root
    layout = StoreLayout(root)
    shard = layout.shard_path(MAPPING_COLLECTION, entity_id)
    entity_dir = layout.entity_dir(entity_id)
    error = None
    records: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    try:
        legacy = storage.read_legacy(MAPPING_COLLECTION)
        records = {k: r for k, r in legacy.items() if entity_id in record_shards(r)}
        if storage.enable_sharding:
            records.update(load_shard_view(shard, storage.id_field))
        meta = read_json(layout.entity_meta_path(entity_id), None) or {}
    except (StorageError, OSError) as exc:  # one unreadable entity does not hide the others
        records, error = {}, str(exc)
    if not records and error is None and not entity_dir.exists() and not shard.exists():
        return None
    row = row_from(len(records), sum(_chunks(r) for r in records.values()), entity_bytes(root, entity_id), meta)
    row["error"] = error
    return row


def _chunks(record: dict[str, Any]) -> int:
    try:
        return max(0, int(record.get("chunk_count", 0) or 0))
    except (TypeError, ValueError):
        return 0


@contextmanager
def entity_lock(storage: JSONStorage, entity_id: str, timeout: float) -> Iterator[None]:
    """The lock every writer of the entity holds (its shard's; the legacy file's when the
    store is monolithic). timeout 0: StorageError at once when it is busy."""
    path = (storage.shard_path(MAPPING_COLLECTION, entity_id) if storage.enable_sharding
            else storage.legacy_path(MAPPING_COLLECTION))
    with file_lock(path, timeout):
        yield


def refresh(storage: JSONStorage, entity_id: str, *, wait: float = 0.0) -> bool:
    """Recompute one entity's row from disk under its lock (waiting at most `wait` seconds);
    False when the lock was busy (a writer is at work and will write the row itself)."""
    try:
        lock = entity_lock(storage, entity_id, wait)
        lock.__enter__()
    except StorageError:
        return False
    try:
        put(storage.root, entity_id, compute_row(storage, entity_id))
    finally:
        lock.__exit__(None, None, None)
    return True


# ---------------------------------------------------------------------- readers
def settle(storage: JSONStorage) -> int:
    """Recompute the rows of entities marked pending whose writer is gone (its lock is free).
    Returns how many are still pending (writers at work)."""
    with _connect(storage.root) as con:
        pending = [r[0] for r in con.execute("SELECT entity_id FROM pending ORDER BY entity_id")]
    if len(pending) > 1000:
        _notice(f"{catalog_path(storage.root)}: computing {len(pending):,} catalog rows")
    busy = 0
    for entity_id in pending:
        try:
            validate_entity_id(entity_id)
        except Exception:  # noqa: BLE001 - a hand-edited row: drop it
            put(storage.root, entity_id, None)
            continue
        if not refresh(storage, entity_id):
            busy += 1
    return busy


def _like(q: str) -> str:
    return "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def page(storage: JSONStorage, *, offset: int = 0, limit: int | None = None, q: str = "",
         allowed: Iterable[str] | None = None) -> dict[str, Any]:
    """Entities sorted by id, filtered (`q`: case-insensitive substring of the id; `allowed`:
    only these ids), then paged: {"entities": {id: row}, "totals": {...over all matching},
    "total": N}. Pending rows are settled first."""
    settle(storage)
    where, args = "", []
    if q:
        where, args = "WHERE entity_id LIKE ? ESCAPE '\\'", [_like(q)]
    with _connect(storage.root) as con:
        con.execute("BEGIN")  # one snapshot for the page and the totals
        try:
            if allowed is None:
                total, documents, chunks, size = con.execute(
                    f"SELECT count(*), coalesce(sum(documents), 0), coalesce(sum(chunks), 0),"
                    f" coalesce(sum(bytes), 0) FROM entities {where}", args).fetchone()
                sql = f"SELECT entity_id, {', '.join(FIELDS)} FROM entities {where} ORDER BY entity_id"
                if limit is not None:
                    sql += f" LIMIT {int(limit)} OFFSET {int(offset)}"
                elif offset:
                    sql += f" LIMIT -1 OFFSET {int(offset)}"
                rows = con.execute(sql, args).fetchall()
            else:
                wanted = sorted(set(allowed))
                needle = q.lower()
                found = []
                for start in range(0, len(wanted), _PARAMS):
                    chunk = wanted[start:start + _PARAMS]
                    found += con.execute(
                        f"SELECT entity_id, {', '.join(FIELDS)} FROM entities WHERE entity_id IN"
                        f" ({', '.join('?' * len(chunk))})", chunk).fetchall()
                found = sorted((r for r in found if needle in r[0].lower()), key=lambda r: r[0])
                total = len(found)
                documents, chunks, size = (sum(r[i] for r in found) for i in (1, 2, 3))
                rows = found[offset:] if limit is None else found[offset:offset + limit]
        finally:
            con.execute("COMMIT")
    entities = {r[0]: dict(zip(FIELDS, r[1:])) for r in rows}
    return {"entities": entities,
            "totals": {"entities": total, "documents": documents, "chunks": chunks, "bytes": size},
            "total": total}


def errors(storage: JSONStorage, q: str = "") -> dict[str, str]:
    """Entities (whose id contains `q`) whose records cannot be read: {id: error}, sorted."""
    settle(storage)
    where, args = "WHERE error IS NOT NULL", []
    if q:
        where, args = where + " AND entity_id LIKE ? ESCAPE '\\'", [_like(q)]
    with _connect(storage.root) as con:
        return {r[0]: r[1] for r in con.execute(f"SELECT entity_id, error FROM entities {where} ORDER BY entity_id", args)}


def rows(storage: JSONStorage) -> dict[str, dict[str, Any]]:
    """Every entity's row, sorted by id."""
    return page(storage)["entities"]  # type: ignore[no-any-return]


def entity_ids(storage: JSONStorage) -> list[str]:
    """Every entity the catalog lists, sorted."""
    settle(storage)
    with _connect(storage.root) as con:
        return [r[0] for r in con.execute("SELECT entity_id FROM entities ORDER BY entity_id")]


# ---------------------------------------------------------------------- verify
def check(storage: JSONStorage, entity_ids: Iterable[str], repair: bool = False) -> dict[str, Any]:
    """Compare every row with the entities' files (`entity_ids`: those on disk). Documents,
    chunks, model, last change and error must agree exactly (a problem otherwise); bytes are
    taken under the entity's lock after each commit, gc and merge, but a kill during a gc or a
    merge (which change only bytes and leave no mark) can leave them behind: listed in
    `bytes_drift`, not a problem. `repair` recomputes every row that differs and drops rows of
    entities that are gone, building the catalog when it is missing."""
    path = catalog_path(storage.root)
    problems: list[str] = []
    repaired: list[str] = []
    existed = path.exists()
    if not existed and not repair:
        return {"ok": True, "present": False, "problems": [], "bytes_drift": [],
                "repaired": [], "note": f"{path} does not exist yet (built on first need, or by verify --repair)"}
    try:
        settle(storage)  # dead writers' marks, as any reader does (a kill -9 is not a problem)
        current = _raw_rows(storage.root)
    except StorageError as exc:
        if not repair:
            return {"ok": False, "present": True, "problems": [str(exc)], "repaired": [], "bytes_drift": []}
        _remove_catalog(storage.root)
        repaired.append(f"{path}: unreadable ({exc}); rebuilt")
        current = _raw_rows(storage.root)
    on_disk = sorted(set(entity_ids))
    built = repair and not existed
    drift: list[str] = []
    for entity_id in on_disk:
        have = current.pop(entity_id, None)
        want = compute_row(storage, entity_id)
        if want is None:
            continue
        diff = _diff(have, want)
        if have is None and not want["documents"] and want["error"] is None:
            diff = ""  # an empty entity (a first commit killed before its records): need not be listed
        if not diff:
            if have is not None and have.get("bytes") != want["bytes"]:
                # a kill during gc or a merge (no mark: they change only bytes): a note, and
                # --repair refreshes it
                drift.append(f"{entity_id}: bytes {have.get('bytes')} (files: {want['bytes']})")
                if repair:
                    refresh(storage, entity_id, wait=storage.lock_timeout)
            continue
        if repair:
            if refresh(storage, entity_id, wait=storage.lock_timeout) and not built:
                repaired.append(f"catalog row of {entity_id!r}: {diff}; recomputed")
        else:
            problems.append(f"catalog row of {entity_id!r}: {diff}")
    for entity_id in sorted(current):  # rows of entities that no longer exist
        if compute_row(storage, entity_id) is not None:
            continue
        if repair:
            if refresh(storage, entity_id, wait=storage.lock_timeout):
                repaired.append(f"catalog row of {entity_id!r}: the entity no longer exists; removed")
        else:
            problems.append(f"catalog row of {entity_id!r}: the entity no longer exists")
    if built:
        repaired.append(f"{path}: built the store catalog ({len(current_ids(storage.root))} entities)")
    return {"ok": not problems, "present": True, "problems": problems, "repaired": repaired,
            "bytes_drift": [] if repair else drift}


def current_ids(root: Path) -> list[str]:
    with _connect(root) as con:
        return [r[0] for r in con.execute("SELECT entity_id FROM entities ORDER BY entity_id")]


def _diff(have: dict[str, Any] | None, want: dict[str, Any]) -> str:
    if have is None:
        return "missing"
    wrong = [f"{f} {have.get(f)!r} (files say {want.get(f)!r})" for f in FIELDS
             if f != "bytes" and have.get(f) != want.get(f)]
    return ", ".join(wrong)


def _raw_rows(root: Path) -> dict[str, dict[str, Any]]:
    """Rows as stored (pending marks not settled: verify judges what is there)."""
    with _connect(root) as con:
        try:
            return {r[0]: dict(zip(FIELDS, r[1:]))
                    for r in con.execute(f"SELECT entity_id, {', '.join(FIELDS)} FROM entities")}
        except sqlite3.Error as exc:
            raise StorageError(f"{catalog_path(root)}: cannot read: {exc}") from exc


def _remove_catalog(root: Path) -> None:
    """An unreadable catalog goes (under the creators' lock); the next connection builds it."""
    path = catalog_path(root)
    close_connections()
    with file_lock(path, _BUSY_MS / 1000):
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(str(path) + suffix).unlink(missing_ok=True)


__all__ = ["CATALOG_NAME", "catalog_path", "check", "compute_row", "entity_bytes", "entity_ids", "mark",
           "page", "put", "refresh", "row_from", "rows", "set_bytes", "settle"]
