"""Upload jobs on disk: the staging area and the job manifests.

    <store>/.serve/jobs/<job_id>/job.json           the manifest (written atomically)
    <store>/.serve/jobs/<job_id>/files/<n>/<name>   the staged bytes of file n

Protocol (what makes "202" durable):
1. The request body streams into `files/` (no manifest yet); each file is fsynced, then the
   directories.
2. `job.json` is written atomically (temp file, fsync, rename, fsync dir): the commit point.
   Only then does the client get 202.
3. When every file of the job has a final status, `job.json` is rewritten with the results
   (status `done`), and only then is `files/` removed. A job cancelled (its entity deleted)
   is rewritten the same way with status `cancelled`, before the entity's data is removed.

    <store>/.serve/entities/<entity_id>/<created_ns>-<job_id>   an empty marker per job

The markers index the jobs by entity (newest first by name), so listing an entity's jobs reads
only that entity's manifests. A marker is made before the manifest; one without a job is
ignored by the listing and removed at start-up, which also remakes any marker a crash lost.

At start-up a job directory without `job.json` is an upload that was never acknowledged: it
is removed. A job whose manifest is not finished (`done`, `failed`, `cancelled`) is resumed
(its files go through the engine again; whatever was already committed is then `unchanged`,
so nothing is indexed twice). A finished job whose `files/` survived a crash loses them.
Finished manifests are kept for `job_retention_days` so `GET /api/jobs/{id}` answers after a
restart.
"""

from __future__ import annotations

import calendar
import os
import re
import shutil
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from ragctl.fsutil import atomic_write_json, fsync_dir, now_iso, read_json

JOB_ID_PATTERN = re.compile(r"[0-9a-f]{32}")
_MARKER = re.compile(r"[0-9]{20}-[0-9a-f]{32}")
QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
STATUSES = (QUEUED, RUNNING, DONE, FAILED, CANCELLED)
FINISHED = (DONE, FAILED, CANCELLED)


@dataclass(frozen=True)
class StagedFile:
    path: str  # the document's path inside the entity (its identity)
    bytes: int
    sha256: str
    staged: str  # where the bytes are, relative to the job directory

    def ack(self) -> dict[str, Any]:
        return {"path": self.path, "bytes": self.bytes, "sha256": self.sha256}


class Outcome(NamedTuple):
    """A file's final status as the engine reported it (FileDone)."""

    status: str  # indexed | updated | unchanged | skipped | failed
    chunks: int
    detail: str
    doc_id: str = ""  # its document (or, skipped as a copy, the document it copies)


@dataclass
class Job:
    job_id: str
    entity_id: str
    directory: Path
    files: list[StagedFile] = field(default_factory=list)
    status: str = QUEUED
    created_at: str = field(default_factory=now_iso)
    created_ns: int = field(default_factory=time.time_ns)  # orders an entity's jobs (markers)
    finished_at: str | None = None
    error: str | None = None
    results: list[dict[str, Any]] | None = None  # final, in upload order
    attempts: int = 0
    model: dict[str, Any] | None = None  # what embedded its files (name, backend, precision, device)
    # per-file outcomes as the engine reports them (path -> Outcome)
    outcomes: dict[str, Outcome] = field(default_factory=dict, repr=False)
    done_event: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def total_bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    def manifest(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "entity_id": self.entity_id,
            "status": self.status,
            "created_at": self.created_at,
            "created_ns": self.created_ns,
            "finished_at": self.finished_at,
            "error": self.error,
            "files": [asdict(f) for f in self.files],
            "results": self.results,
            "model": self.model,
        }

    def to_json(self) -> dict[str, Any]:
        """The API's view of the job."""
        body: dict[str, Any] = {
            "job_id": self.job_id,
            "entity_id": self.entity_id,
            "status": self.status,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "error": self.error,
            "model": self.model,
        }
        if self.results is not None:
            body["files"] = self.results
        else:
            body["files"] = [
                {"path": f.path, "bytes": f.bytes, "sha256": f.sha256,
                 "status": self.outcomes[f.path][0] if f.path in self.outcomes else None}
                for f in self.files
            ]
        return body

    def cancel(self, reason: str) -> None:
        """A terminal state: none of the job's files is (or stays) indexed."""
        self.status = CANCELLED
        self.error = reason
        self.finished_at = now_iso()
        self.results = [{"path": f.path, "status": CANCELLED, "doc_id": None, "chunks": 0, "bytes": f.bytes,
                         "sha256": f.sha256, "error": None} for f in self.files]

    @classmethod
    def from_manifest(cls, directory: Path, data: dict[str, Any]) -> Job:
        return cls(
            job_id=data["job_id"],
            entity_id=data["entity_id"],
            directory=directory,
            files=[StagedFile(**f) for f in data.get("files", [])],
            status=data.get("status", QUEUED),
            created_at=data.get("created_at") or now_iso(),
            created_ns=int(data.get("created_ns") or _iso_ns(data.get("created_at"))),
            finished_at=data.get("finished_at"),
            error=data.get("error"),
            results=data.get("results"),
            model=data.get("model"),
        )


def _iso_ns(created_at: str | None) -> int:
    """A manifest written before `created_ns` existed: its second-precision `created_at`."""
    try:
        return calendar.timegm(time.strptime(created_at or "", "%Y-%m-%dT%H:%M:%SZ")) * 1_000_000_000
    except ValueError:
        return 0


class JobStore:
    def __init__(self, store: Path) -> None:
        self.root = Path(store) / ".serve" / "jobs"
        self.by_entity = Path(store) / ".serve" / "entities"

    def new_job(self, entity_id: str) -> Job:
        self.root.mkdir(parents=True, exist_ok=True)
        job_id = uuid.uuid4().hex
        directory = self.root / job_id
        (directory / "files").mkdir(parents=True)
        return Job(job_id, entity_id, directory)

    def _marker(self, job: Job) -> Path:
        return self.by_entity / job.entity_id / f"{job.created_ns:020d}-{job.job_id}"

    def _mark(self, job: Job) -> None:
        marker = self._marker(job)
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        except OSError:
            pass  # only the listing misses the job until the next start-up remakes its marker

    def commit(self, job: Job) -> None:
        """Make the job durable: the staged files were fsynced by the caller."""
        self._mark(job)  # not fsynced: start-up remakes a marker a crash lost
        fsync_dir(job.directory / "files")
        fsync_dir(job.directory)
        atomic_write_json(job.directory / "job.json", job.manifest())
        fsync_dir(self.root)

    def finish(self, job: Job) -> None:
        """Record the final results (or the cancellation), then drop the staged bytes."""
        atomic_write_json(job.directory / "job.json", job.manifest())
        shutil.rmtree(job.directory / "files", ignore_errors=True)

    def discard(self, job: Job) -> None:
        """An upload that was never acknowledged."""
        shutil.rmtree(job.directory, ignore_errors=True)
        self._marker(job).unlink(missing_ok=True)

    def load(self, job_id: str) -> Job | None:
        if not JOB_ID_PATTERN.fullmatch(job_id):
            return None
        directory = self.root / job_id
        try:
            data = read_json(directory / "job.json")
        except Exception:  # noqa: BLE001 - a corrupt manifest reads as unknown
            return None
        return Job.from_manifest(directory, data) if isinstance(data, dict) else None

    def job_ids(self, entity_id: str) -> list[str]:
        """The ids of an entity's jobs, newest first (from its markers only; a marker whose
        job is gone is the caller's to skip)."""
        try:
            names = sorted((m.name for m in os.scandir(self.by_entity / entity_id)), reverse=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [n.partition("-")[2] for n in names if _MARKER.fullmatch(n)]

    def recover(self, retention_days: float) -> list[Job]:
        """Start-up: remove unacknowledged uploads and expired manifests, make the markers
        match the jobs; return the jobs to resume, oldest first."""
        resume: list[Job] = []
        if not self.root.is_dir():
            return resume
        horizon = time.time() - retention_days * 86400
        kept: set[str] = set()
        for directory in self.root.iterdir():
            if not directory.is_dir() or not JOB_ID_PATTERN.fullmatch(directory.name):
                continue
            manifest = directory / "job.json"
            if not manifest.exists():
                shutil.rmtree(directory, ignore_errors=True)
                continue
            kept.add(directory.name)
            job = self.load(directory.name)
            if job is None:
                continue  # unreadable: left for a human (reported as unknown by the API)
            if not self._marker(job).exists():
                self._mark(job)
            if job.status in FINISHED:
                shutil.rmtree(directory / "files", ignore_errors=True)
                try:
                    if manifest.stat().st_mtime < horizon:
                        shutil.rmtree(directory, ignore_errors=True)
                        kept.discard(directory.name)
                except OSError:
                    pass
                continue
            job.status = QUEUED
            resume.append(job)
        self._prune_markers(kept)
        resume.sort(key=lambda j: j.created_ns)
        return resume

    def _prune_markers(self, kept: set[str]) -> None:
        if not self.by_entity.is_dir():
            return
        for entity in self.by_entity.iterdir():
            for marker in entity.iterdir() if entity.is_dir() else ():
                if marker.name.partition("-")[2] not in kept:
                    marker.unlink(missing_ok=True)


class StagingFull(Exception):
    """The staging area holds its bound of bytes or files: the upload must be retried later."""


class Staging:
    """Bytes and files held in staging (reserved while streaming, released when the job is
    done): the bound behind 503 + Retry-After (`StagingFull`)."""

    def __init__(self, max_bytes: int, max_files: int) -> None:
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.bytes = 0
        self.files = 0
        self._lock = threading.Lock()

    def full(self) -> bool:
        with self._lock:
            return self.bytes >= self.max_bytes or self.files >= self.max_files

    def reserve(self, nbytes: int = 0, nfiles: int = 0) -> None:
        """Hold `nbytes` and `nfiles` more, or raise StagingFull (holding nothing more)."""
        with self._lock:
            if self.bytes + nbytes > self.max_bytes:
                raise StagingFull(f"the upload staging area is full ({self.max_bytes} bytes held until indexed)")
            if self.files + nfiles > self.max_files:
                raise StagingFull(f"the upload staging area is full ({self.max_files} files held until indexed)")
            self.bytes += nbytes
            self.files += nfiles

    def force(self, nbytes: int, nfiles: int) -> None:
        """Hold what jobs resumed at start-up already staged, whatever the bounds."""
        with self._lock:
            self.bytes += nbytes
            self.files += nfiles

    def release(self, nbytes: int, nfiles: int) -> None:
        with self._lock:
            self.bytes = max(0, self.bytes - nbytes)
            self.files = max(0, self.files - nfiles)

    def to_json(self) -> dict[str, int]:
        with self._lock:
            return {"bytes": self.bytes, "files": self.files, "max_bytes": self.max_bytes, "max_files": self.max_files}



