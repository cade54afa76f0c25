"""Planning: what each file of an entity needs, decided from its stat and the entity's records.

The planner streams: it walks an entity lazily and hands each file that needs reading to the
parse stage at once; unchanged, unsupported and oversized files are settled here without being
opened. Hashing happens in the parse workers (it reads the file anyway). Once a file's hash is
known, `EntityPlan.resolve` decides between a plain re-stat (same content), a move (the content
of a record whose file left its path), a copy (same content as another file: skipped) and new
content. `EntityPlan` is the one place that knows the entity's records during a run; it is
shared by the planner thread (which marks what it has seen), the router (resolve) and the
committer (what is gone at the end) and guards itself with a lock.

Memory: the entity's records (loaded anyway: they are its mapping shard) and the set of paths
seen in this run; never the file list of the whole tree.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from ragctl.discovery import EntitySource, SourceFile, walk_entries, walk_files
from ragctl.events import Status
from ragctl.ingest.options import MB, Limits
from ragctl.storage.json_storage import Record

if TYPE_CHECKING:
    from ragctl.ingest.unchanged import TreeDigest


@dataclass(frozen=True)
class ParseTask:
    """One file to read, hash and (unless `hash_only`) parse and chunk, in a worker process."""

    entity_id: str
    rel_path: str
    abs_path: str
    size: int
    known_hash: str = ""  # the hash recorded for this path: equal content needs no parsing
    hash_only: bool = False  # dry run: hash, do not parse
    tag: str = ""  # the work unit's label (serve: the job id), carried to every report


@dataclass(frozen=True)
class WorkUnit:
    """What the planner is given: an entity's tree or file list, labelled with `tag`. A CLI
    run has one unit per entity; the upload service one per job."""

    source: EntitySource
    tag: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.source.entity_id, self.tag)


class Verdict(str, Enum):
    PARSE = "parse"
    UNCHANGED = "unchanged"
    SKIP = "skip"
    FAIL = "fail"


# the status a file settled by the planner gets in the report
VERDICT_STATUS = {Verdict.UNCHANGED: Status.UNCHANGED, Verdict.SKIP: Status.SKIPPED, Verdict.FAIL: Status.FAILED}


class Resolution(str, Enum):
    """What a hashed file is, relative to the entity's records."""

    NEW_CONTENT = "new"  # index it (indexed, or updated if its path had a record)
    SAME_CONTENT = "same"  # the record at its path has this hash: only size/mtime changed
    MOVE = "move"  # the content of a record whose file left its path: only the path changes
    COPY = "copy"  # same content as another file of the entity: skipped


def source_files(source: EntitySource) -> Iterator[SourceFile]:
    return iter(source.files) if source.files is not None else walk_files(source.root)


def count_tree(source: EntitySource, stop: threading.Event | None = None) -> tuple[int, int] | None:
    """(files, bytes) of an entity's tree, for progress totals; None if `stop` was set first."""
    files = size = 0
    paths = (f.abs_path for f in source.files) if source.files is not None else walk_entries(source.root)
    for path in paths:
        if stop is not None and stop.is_set():
            return None
        files += 1
        try:
            size += path.stat().st_size if isinstance(path, os.DirEntry) else os.stat(path).st_size
        except OSError:
            pass
    return files, size


def unsupported_reason(rel_path: str) -> str:
    return f"unsupported file type {PurePosixPath(rel_path).suffix.lower() or '(no extension)'}"  # valid UTF-8


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover


_ESCAPED_BYTE = re.compile(r"\\x([89a-f][0-9a-f])")


def on_disk(root: Path, rel_path: str) -> bool:
    """Does the file a record names still exist? (Non-UTF-8 names are stored with \\xNN
    escapes, see discovery: those are mapped back to the bytes on disk.)"""
    if os.path.lexists(root / rel_path):
        return True
    if "\\x" in rel_path:
        raw = _ESCAPED_BYTE.sub(lambda m: chr(0xDC00 + int(m.group(1), 16)), rel_path)
        return os.path.lexists(root / raw)
    return False


def in_scope(rel_path: str, scope: frozenset[str]) -> bool:
    """Is `rel_path` one of the scope's paths or under one of them ("" is the whole tree)?"""
    if "" in scope or rel_path in scope:
        return True
    parts = rel_path.split("/")
    return any("/".join(parts[:i]) in scope for i in range(1, len(parts)))


class EntityPlan:
    """One entity's records and what this run has seen and claimed (thread-safe)."""

    def __init__(self, source: EntitySource, records: dict[str, Record], rehash: bool, limits: Limits,
                 tag: str = "", reindex: bool = False) -> None:
        from ragctl.parsing import is_supported

        self.entity_id = source.entity_id
        self.source = source
        self.tag = tag
        self.root = source.root
        self.explicit = source.files is not None and source.scope is None
        self.scope = frozenset(source.scope) if source.scope is not None else None
        self.rehash = rehash
        self.reindex = reindex  # re-chunk and re-embed documents chunked by an older chunker
        self.limits = limits
        self._is_supported = is_supported
        self._lock = threading.Lock()
        self.records = records
        self.by_path: dict[str, Record] = {r["path"]: r for r in records.values()}
        self.by_hash: dict[str, list[Record]] = {}
        for r in records.values():
            self.by_hash.setdefault(r["content_hash"], []).append(r)
        self.seen: set[str] = set()
        self.sent: set[str] = set()  # paths sent to be parsed and not settled yet (in flight)
        self.claimed: dict[str, str] = {}  # content hash -> path that owns it in this run
        self.moved: set[str] = set()  # doc_ids whose record moved to another path
        # the planner's digest of the tree (ragctl/ingest/unchanged.py); None: not kept
        self.tree: TreeDigest | None = None

    # --------------------------------------------------------------- planner thread
    def classify(self, f: SourceFile, hash_only: bool = False) -> tuple[Verdict, Any]:
        """(PARSE, ParseTask) or (UNCHANGED|SKIP|FAIL, (detail, size)); each file goes into
        `tree` too when the planner keeps one."""
        with self._lock:
            self.seen.add(f.rel_path)
        if not self._is_supported(f.abs_path):
            if self.tree is not None:
                try:
                    self.tree.add(f.rel_path, os.stat(f.abs_path), False)
                except OSError:
                    self.tree.add(f.rel_path, None, False)
            return Verdict.SKIP, (unsupported_reason(f.rel_path), 0)
        try:
            st = os.stat(f.abs_path)
        except OSError as exc:
            if self.tree is not None:
                self.tree.add(f.rel_path, None, True)
            return Verdict.FAIL, (f"cannot read: {exc.strerror or exc}", 0)
        if self.tree is not None:
            self.tree.add(f.rel_path, st, True)
        record = self.by_path.get(f.rel_path)
        if (
            record is not None
            and not self.rehash
            and not self.stale(record)
            and record.get("size") == st.st_size
            and record.get("mtime_ns") == st.st_mtime_ns
        ):
            return Verdict.UNCHANGED, ("", st.st_size)
        if st.st_size > self.limits.max_file_bytes:
            return Verdict.SKIP, (
                f"file is {human_bytes(st.st_size)}, over the {human_bytes(self.limits.max_file_bytes)} "
                f"limit per file (raise it with --max-file-mb)",
                st.st_size,
            )
        known = record["content_hash"] if record is not None and not self.stale(record) else ""
        with self._lock:
            self.sent.add(f.rel_path)
        return Verdict.PARSE, ParseTask(self.entity_id, f.rel_path, str(f.abs_path), st.st_size, known, hash_only, self.tag)

    # --------------------------------------------------------------- router (after hashing)
    def resolve(self, rel_path: str, content_hash: str) -> tuple[Resolution, Record | None, str, frozenset[str]]:
        """(resolution, the record concerned, detail, doc_ids of records with this content whose
        file now holds other content) for a file whose hash is now known."""
        stale_twins: set[str] = set()
        with self._lock:
            own = self.by_path.get(rel_path)
            if (own is not None and own["content_hash"] == content_hash and own["doc_id"] not in self.moved
                    and not self.stale(own)):
                self.claimed.setdefault(content_hash, rel_path)
                return Resolution.SAME_CONTENT, own, "", frozenset()
            owner = self.claimed.get(content_hash)
            if owner is not None and owner != rel_path:
                return Resolution.COPY, None, f"same content as {owner}", frozenset()
            for record in self.by_hash.get(content_hash, []):
                if record["path"] == rel_path or record["doc_id"] in self.moved:
                    continue
                if self.explicit or on_disk(self.root, record["path"]):
                    if self._unchanged_on_disk(record):
                        self.claimed[content_hash] = record["path"]
                        return Resolution.COPY, record, f"same content as {record['path']}", frozenset()
                    stale_twins.add(record["doc_id"])
                    continue  # its file has new content now: this one is new content too
                self.moved.add(record["doc_id"])
                self.claimed[content_hash] = rel_path
                return Resolution.MOVE, record, "", frozenset()
            self.claimed[content_hash] = rel_path
            return Resolution.NEW_CONTENT, own, "", frozenset(stale_twins)

    def stale(self, record: Record) -> bool:
        """With `reindex`: the record's chunks were made by an older chunker (ragctl.chunking
        CHUNKER_VERSION; a record without "chunker" predates contextual chunks), or it is a PDF
        or image read with another --ocr mode than this run's (a record without "ocr" predates
        OCR: its scanned pages were dropped)."""
        if not self.reindex:
            return False
        from ragctl.chunking import CHUNKER_VERSION

        if int(record.get("chunker") or 1) < CHUNKER_VERSION:
            return True
        parser = str(record.get("parser") or "")
        return parser.startswith(("pdf", "image")) and record.get("ocr") != self.limits.ocr.mode

    def _unchanged_on_disk(self, record: Record) -> bool:
        try:
            st = os.stat(self.root / record["path"])
        except OSError:
            return True  # explicit file lists, odd names: trust the record
        return record.get("size") == st.st_size and record.get("mtime_ns") == st.st_mtime_ns

    # --------------------------------------------------------------- committer
    def settle(self, rel_path: str) -> None:
        with self._lock:
            self.sent.discard(rel_path)

    def gone(self) -> list[Record]:
        """Records whose file left the tree (never for explicit file lists; for a part of the
        tree, only those in its scope). Documents written through the LangChain store are no
        file of the tree: never gone, never pruned."""
        if self.explicit:
            return []
        with self._lock:
            gone = [
                r for r in self.records.values()
                if r["path"] not in self.seen and r["doc_id"] not in self.moved and r.get("parser") != "langchain"
            ]
        if self.scope is None:
            return gone
        return [r for r in gone if in_scope(r["path"], self.scope) and not on_disk(self.root, r["path"])]


def record_change(record: Record, resolution: Resolution, rel_path: str, size: int, mtime_ns: int) -> dict[str, Any]:
    """The fields a move (new path) or a re-stat (new size/mtime) changes in a record."""
    fields: dict[str, Any] = {"size": size, "mtime_ns": mtime_ns}
    if resolution is Resolution.MOVE:
        fields.update(path=rel_path, name=rel_path.rsplit("/", 1)[-1])
    return fields


__all__ = ["ParseTask", "WorkUnit", "Verdict", "VERDICT_STATUS", "Resolution", "EntityPlan", "count_tree", "source_files", "MB"]
