"""Upload jobs on disk: the staging area and the job manifests.

    <store>/.serve/jobs/<job_id>/job.json           the manifest (written atomically)
    <store>/.serve/jobs/<job_id>/files/<n>/<name>   the staged bytes of file n

Protocol (what makes "202" durable):
1. The request body streams into `files/` (no manifest yet); each file is fsynced, then the
   directories.
2. `job.json` is written atomically (temp file, fsync, rename, fsync dir): the commit point.
   Only then does the client get 202.
3. When every file of the job has a final status, `job.json` is rewritten with the results
   (status `done`), and only then is `files/` removed.

At start-up a job directory without `job.json` is an upload that was never acknowledged: it
is removed. A job whose manifest is not `done` is resumed (its files go through the engine
again; whatever was already committed is then `unchanged`, so nothing is indexed twice). A
`done` job whose `files/` survived a crash loses them. Finished manifests are kept for
`job_retention_days` so `GET /api/jobs/{id}` answers after a restart.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ragctl.fsutil import atomic_write_json, fsync_dir, now_iso, read_json

JOB_ID_PATTERN = re.compile(r"[0-9a-f]{32}")
QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"


@dataclass(frozen=True)
class StagedFile:
    path: str  # the document's path inside the entity (its identity)
    bytes: int
    sha256: str
    staged: str  # where the bytes are, relative to the job directory

    def ack(self) -> dict[str, Any]:
        return {"path": self.path, "bytes": self.bytes, "sha256": self.sha256}


@dataclass
class Job:
    job_id: str
    entity_id: str
    directory: Path
    files: list[StagedFile] = field(default_factory=list)
    status: str = QUEUED
    created_at: str = field(default_factory=now_iso)
    finished_at: str | None = None
    error: str | None = None
    results: list[dict[str, Any]] | None = None  # final, in upload order
    attempts: int = 0
    # per-file outcomes as the engine reports them (path -> (status, chunks, detail))
    outcomes: dict[str, tuple[str, int, str]] = field(default_factory=dict, repr=False)
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
            "finished_at": self.finished_at,
            "error": self.error,
            "files": [asdict(f) for f in self.files],
            "results": self.results,
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

    @classmethod
    def from_manifest(cls, directory: Path, data: dict[str, Any]) -> Job:
        return cls(
            job_id=data["job_id"],
            entity_id=data["entity_id"],
            directory=directory,
            files=[StagedFile(**f) for f in data.get("files", [])],
            status=data.get("status", QUEUED),
            created_at=data.get("created_at") or now_iso(),
            finished_at=data.get("finished_at"),
            error=data.get("error"),
            results=data.get("results"),
        )


class JobStore:
    def __init__(self, store: Path) -> None:
        self.root = Path(store) / ".serve" / "jobs"

    def new_job(self, entity_id: str) -> Job:
        self.root.mkdir(parents=True, exist_ok=True)
        job_id = uuid.uuid4().hex
        directory = self.root / job_id
        (directory / "files").mkdir(parents=True)
        return Job(job_id, entity_id, directory)

    def commit(self, job: Job) -> None:
        """Make the job durable: the staged files were fsynced by the caller."""
        fsync_dir(job.directory / "files")
        fsync_dir(job.directory)
        atomic_write_json(job.directory / "job.json", job.manifest())
        fsync_dir(self.root)

    def finish(self, job: Job) -> None:
        """Record the final results, then drop the staged bytes."""
        atomic_write_json(job.directory / "job.json", job.manifest())
        shutil.rmtree(job.directory / "files", ignore_errors=True)

    def discard(self, job: Job) -> None:
        """An upload that was never acknowledged."""
        shutil.rmtree(job.directory, ignore_errors=True)

    def load(self, job_id: str) -> Job | None:
        if not JOB_ID_PATTERN.fullmatch(job_id):
            return None
        directory = self.root / job_id
        try:
            data = read_json(directory / "job.json")
        except Exception:  # noqa: BLE001 - a corrupt manifest reads as unknown
            return None
        return Job.from_manifest(directory, data) if isinstance(data, dict) else None

    def recover(self, retention_days: float) -> list[Job]:
        """Start-up: remove unacknowledged uploads and expired manifests; return the jobs to
        resume, oldest first."""
        resume: list[Job] = []
        if not self.root.is_dir():
            return resume
        horizon = time.time() - retention_days * 86400
        for directory in self.root.iterdir():
            if not directory.is_dir() or not JOB_ID_PATTERN.fullmatch(directory.name):
                continue
            manifest = directory / "job.json"
            if not manifest.exists():
                shutil.rmtree(directory, ignore_errors=True)
                continue
            job = self.load(directory.name)
            if job is None:
                continue  # unreadable: left for a human (reported as unknown by the API)
            if job.status in (DONE, FAILED):
                shutil.rmtree(directory / "files", ignore_errors=True)
                try:
                    if manifest.stat().st_mtime < horizon:
                        shutil.rmtree(directory, ignore_errors=True)
                except OSError:
                    pass
                continue
            job.status = QUEUED
            resume.append(job)
        resume.sort(key=lambda j: j.created_at)
        return resume


class Staging:
    """Bytes and files held in staging (reserved while streaming, released when the job is
    done): the bound behind 503 + Retry-After."""

    def __init__(self, max_bytes: int, max_files: int) -> None:
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.bytes = 0
        self.files = 0
        self._lock = threading.Lock()

    def full(self) -> bool:
        with self._lock:
            return self.bytes >= self.max_bytes or self.files >= self.max_files

    def reserve(self, nbytes: int = 0, nfiles: int = 0) -> bool:
        with self._lock:
            if self.bytes + nbytes > self.max_bytes or self.files + nfiles > self.max_files:
                return False
            self.bytes += nbytes
            self.files += nfiles
            return True

    def release(self, nbytes: int, nfiles: int) -> None:
        with self._lock:
            self.bytes = max(0, self.bytes - nbytes)
            self.files = max(0, self.files - nfiles)

    def to_json(self) -> dict[str, int]:
        with self._lock:
            return {"bytes": self.bytes, "files": self.files, "max_bytes": self.max_bytes, "max_files": self.max_files}



