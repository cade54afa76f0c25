"""The service's one ingest run: a background thread feeds upload jobs to `IngestRun`.

    request handlers --submit--> job queue --(generator `_units`)--> IngestRun planner
                                                                      parse / embed / commit
    IngestRun events (FileDone tag=job_id) --> Engine._on_event --> job.outcomes (with doc_ids)
    a job with every file settled --> finisher thread: job.json rewritten as `done` (nothing
                                      read back from the store), staged bytes removed

One IngestRun lives as long as the server: one model (`load_embedder(config.model)`, the same
object search uses), one parse pool, and chunks of concurrent uploads (to any entities) share
the engine's encode windows. Commits take the same per-entity
shard locks as `ragctl ingest`, so a CLI ingest or another server on the same store stays
exactly-once. If the run dies (a stage failed), the jobs it held go back to the queue and a new
run starts; a job that fails that way three times is marked `failed`.

Deleting an entity (`deleting`): its jobs not finished are cancelled — queued ones at once, and
a running one loses its staged files (what is not read yet settles at once) — the delete waits
until the running ones have settled (their in-flight commits are done), and uploads to the
entity acknowledged meanwhile are held back until the entity's data is gone.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ragctl import events as ev
from ragctl.discovery import EntitySource, SourceFile
from ragctl.fsutil import now_iso
from ragctl.ingest.options import IngestOptions
from ragctl.ingest.plan import WorkUnit
from ragctl.serve.config import ServeConfig
from ragctl.serve.jobs import CANCELLED, DONE, FAILED, QUEUED, RUNNING, Job, JobStore, Outcome, Staging

log = logging.getLogger("ragctl.serve")
MAX_ATTEMPTS = 3
_STATUS_OUT = {"moved": "updated"}  # the API's vocabulary: indexed|updated|unchanged|skipped|failed


class _Taken:
    """The jobs one IngestRun took from the queue. Closed when the run ends, under the same lock
    as `add`, so a job is either given back by the supervisor or put back by the generator —
    never lost between a dead run and the next one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: list[Job] = []
        self.closed = False
        self.run_stop: threading.Event | None = None

    def add(self, job: Job) -> bool:
        with self._lock:
            if self.closed or (self.run_stop is not None and self.run_stop.is_set()):
                return False
            self._jobs = [j for j in self._jobs if not j.done_event.is_set()] + [job]
            return True

    def close(self) -> list[Job]:
        with self._lock:
            self.closed = True
            return list(self._jobs)


class Engine:
    def __init__(self, config: ServeConfig, jobs: JobStore, staging: Staging) -> None:
        self.config = config
        self.jobs = jobs
        self.staging = staging
        self.state = "starting"  # starting -> loading -> running -> stopping -> stopped
        self.error: str | None = None
        self.shutdown = threading.Event()
        self._queue: queue.Queue[Job] = queue.Queue()
        self._active: dict[str, Job] = {}  # submitted and not finished
        self._active_lock = threading.Lock()  # also guards job.status changes and the two below
        self._deleting: dict[str, int] = {}  # entity -> DELETEs in progress
        self._held: list[Job] = []  # acknowledged during a DELETE of their entity: queued after it
        self._finished: queue.Queue[Job | None] = queue.Queue()
        self._run: Any = None
        self.embedder: Any = None  # the loaded model (search uses the same object)
        self.model_info: dict[str, Any] = {}  # the embedder's describe(): which backend/precision embeds
        self._thread: threading.Thread | None = None
        self._finisher: threading.Thread | None = None
        self.counters = {"encode_calls": 0, "chunks_embedded": 0, "files_done": 0, "jobs_done": 0,
                         "jobs_cancelled": 0}
        self._counter_lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle
    def start(self, resume: list[Job]) -> None:
        for job in resume:
            self.staging.force(job.total_bytes, len(job.files))  # held until they finish
            self.submit(job)
        self._thread = threading.Thread(target=self._supervise, name="ragctl-serve-engine", daemon=True)
        self._thread.start()
        self._finisher = threading.Thread(target=self._finish_loop, name="ragctl-serve-finisher", daemon=True)
        self._finisher.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish what the run already took (the queue stays on disk for the next start)."""
        self.state = "stopping"
        self.shutdown.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive() and self._run is not None:
                self._run.stop.set()
                self._thread.join(10)
        self._finished.put(None)
        if self._finisher is not None:
            self._finisher.join(10)
        self.state = "stopped"

    def submit(self, job: Job) -> None:
        with self._active_lock:
            self._active[job.job_id] = job
            if job.entity_id in self._deleting:
                self._held.append(job)
                return
        self._queue.put(job)

    def get(self, job_id: str) -> Job | None:
        with self._active_lock:
            return self._active.get(job_id)

    def queued(self) -> int:
        return self._queue.qsize()

    def active(self) -> int:
        with self._active_lock:
            return len(self._active)

    def stats(self) -> dict[str, Any]:
        with self._counter_lock:
            counters = dict(self.counters)
        return {"state": self.state, "error": self.error, "jobs_active": self.active(),
                "jobs_queued": self.queued(), "model": self.model_info, **counters}

    # ------------------------------------------------------------------ the run
    def _options(self) -> IngestOptions:
        c = self.config
        return IngestOptions(store=c.store, workers=c.workers, model=c.model, limits=c.limits)

    def _supervise(self) -> None:
        from ragctl.embedding import LocalEmbedder, load_embedder
        from ragctl.ingest.run import IngestRun

        options = self._options()
        try:
            self.state = "loading"
            loaded = load_embedder(options.model)  # the process's one copy: search shares it
            self.embedder, self.model_info = loaded, loaded.describe()
            if isinstance(loaded, LocalEmbedder):  # searches beside uploads: compile the lane now
                threading.Thread(target=loaded.prepare_query_lane, name="ragctl-query-lane", daemon=True).start()
            # a remote service: the run sizes its encode windows for it (same cached client)
            embedder = loaded if options.model.remote is None else None
        except Exception as exc:  # noqa: BLE001 - the service reports it on /healthz
            self.error = f"cannot load the model: {exc}"
            self.state = "failed"
            log.error("%s", self.error)
            return
        self.state = "running"
        while not self.shutdown.is_set():
            taken = _Taken()
            try:
                run = IngestRun(self._units(taken), options, self._on_event, embedder=embedder, keep_file_lists=False)
                self._run = run
                taken.run_stop = run.stop
                report = run.execute()
                error = report.error
            except Exception as exc:  # noqa: BLE001 - a run that cannot start is retried
                error = f"{type(exc).__name__}: {exc}"
            held = taken.close()  # from here on the old run's generator takes no job
            if self.shutdown.is_set():
                break  # unfinished jobs stay staged on disk and resume at the next start
            self.error = error or "ingest run ended unexpectedly"
            log.error("ingest run ended: %s; restarting it", self.error)
            for job in held:  # give back what the dead run held
                if job.done_event.is_set() or len(job.outcomes) >= len({f.path for f in job.files}):
                    continue  # finished, or every file settled (the finisher completes it)
                if job.status == CANCELLED:
                    self._finished.put(job)  # nothing of it is in flight any more
                    continue
                job.attempts += 1
                if job.attempts >= MAX_ATTEMPTS:
                    job.error = self.error
                    self._finished.put(job)
                else:
                    self._queue.put(job)
            time.sleep(1.0)

    def _units(self, taken: _Taken) -> Iterator[WorkUnit]:
        while not self.shutdown.is_set() and not taken.closed:
            try:
                job = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            with self._active_lock:  # a job is taken or cancelled, never both
                if job.status == CANCELLED and not job.done_event.is_set():
                    self._finished.put(job)  # cancelled while back in the queue after a dead run
                if job.done_event.is_set() or job.status == CANCELLED:
                    continue
                if not taken.add(job):  # the run ended meanwhile: the job goes back for the next one
                    self._queue.put(job)
                    return
                job.status = RUNNING
            files_dir = job.directory / "files"
            files = tuple(SourceFile(f.path, job.directory / f.staged) for f in job.files)
            yield WorkUnit(EntitySource(job.entity_id, files_dir, files=files), tag=job.job_id)

    def _on_event(self, event: ev.Event) -> None:
        if isinstance(event, ev.ChunksEmbedded):
            with self._counter_lock:
                self.counters["encode_calls"] += 1
                self.counters["chunks_embedded"] += event.count
            return
        if isinstance(event, ev.Phase):  # the engine's one-line notes (a merge that failed, ...)
            log.warning("%s", event.message)
            return
        if not isinstance(event, ev.FileDone) or not event.tag:
            return
        job = self.get(event.tag)
        if job is None:
            return
        with self._counter_lock:
            self.counters["files_done"] += 1
        status = _STATUS_OUT.get(str(event.status), str(event.status))
        job.outcomes.setdefault(event.path, Outcome(status, event.chunks, event.detail, event.doc_id))
        if len(job.outcomes) >= len({f.path for f in job.files}) and not job.done_event.is_set():
            self._finished.put(job)

    # ------------------------------------------------------------------ finishing jobs
    def _finish_loop(self) -> None:
        while True:
            job = self._finished.get()
            if job is None:
                return
            if job.done_event.is_set():
                continue
            try:
                self._finish(job)
            except Exception as exc:  # noqa: BLE001 - never lose the finisher thread
                log.error("job %s: cannot record its results: %s", job.job_id, exc)

    def _finish(self, job: Job) -> None:
        results = None if job.status == CANCELLED else self._results(job)
        with self._active_lock:
            cancelled = job.status == CANCELLED  # by a DELETE, which wrote its manifest
            if not cancelled:
                job.results = results
                job.model = {k: self.model_info.get(k) for k in ("name", "backend", "precision", "device")}
                job.status = FAILED if job.outcomes == {} and job.error else DONE
                job.finished_at = now_iso()
        if not cancelled:
            self.jobs.finish(job)
        self._retire(job, "jobs_cancelled" if cancelled else "jobs_done")

    def _retire(self, job: Job, counter: str) -> None:
        with self._active_lock:
            if self._active.pop(job.job_id, None) is None:
                return  # retired already (a cancelled job can reach here twice)
        self.staging.release(job.total_bytes, len(job.files))
        with self._counter_lock:
            self.counters[counter] += 1
        job.done_event.set()

    @staticmethod
    def _results(job: Job) -> list[dict[str, Any]]:
        """The job's final per-file results, in upload order, from the engine's own reports."""
        missing = Outcome("failed", 0, job.error or "not processed")
        results = []
        for f in job.files:
            out = job.outcomes.get(f.path, missing)
            results.append({
                "path": f.path,
                "status": out.status,
                "doc_id": out.doc_id or None,
                "chunks": out.chunks,
                "bytes": f.bytes,
                "sha256": f.sha256,
                "error": (out.detail or None) if out.status in ("failed", "skipped") else None,
            })
        return results

    # ------------------------------------------------------------------ deleting an entity
    @contextmanager
    def deleting(self, entity_id: str, reason: str, timeout: float) -> Iterator[list[str]]:
        """Around the removal of an entity's data: cancel its unfinished jobs (manifests written
        `cancelled`, staged files removed), wait until none of its jobs can commit any more,
        then yield the ids of the jobs it cancelled. Uploads to the entity acknowledged from
        the start until the end of the block are queued after it. TimeoutError if a running
        job has not settled within `timeout` (it stays cancelled; the data is not removed)."""
        with self._active_lock:
            self._deleting[entity_id] = self._deleting.get(entity_id, 0) + 1
            settling = [j for j in self._active.values() if j.entity_id == entity_id]
            unfinished = [(j, j.status == QUEUED) for j in settling if j.status in (QUEUED, RUNNING)]
            for job, _queued in unfinished:
                job.cancel(reason)
            self._held = [j for j in self._held if j.status != CANCELLED]
        try:
            for job, queued in unfinished:
                self.jobs.finish(job)  # durable before the data goes: never resumed at a restart
                if queued:
                    self._retire(job, "jobs_cancelled")  # never taken: nothing of it in flight
            deadline = time.monotonic() + timeout
            for job in settling:
                if not job.done_event.wait(max(0.0, deadline - time.monotonic())):
                    raise TimeoutError(f"job {job.job_id} of entity {entity_id!r} has not settled yet "
                                       "(its files were dropped); retry the delete")
            yield [job.job_id for job, _queued in unfinished]
        finally:
            with self._active_lock:
                self._deleting[entity_id] -= 1
                release: list[Job] = []
                if not self._deleting[entity_id]:
                    del self._deleting[entity_id]
                    release = [j for j in self._held if j.entity_id == entity_id]
                    self._held = [j for j in self._held if j.entity_id != entity_id]
            for job in release:
                self._queue.put(job)
