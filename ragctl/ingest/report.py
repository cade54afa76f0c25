"""The run's report and its one writer.

Every stage reports through the `Reporter` (thread-safe); it keeps the counts the summary and
`--json` show and forwards each change as an event to the caller's sink. Nobody else writes the
report, and no stage calls back into the orchestrator.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ragctl import events as ev
from ragctl.events import Status

if TYPE_CHECKING:
    from ragctl.ingest.parse import ParseOutcome


@dataclass
class EntityReport:
    files: int = 0
    indexed: int = 0
    updated: int = 0
    moved: int = 0
    unchanged: int = 0
    skipped: int = 0
    failed: int = 0
    pruned: int = 0
    stale: int = 0
    chunks: int = 0
    # chunks that took the vector of a passage already embedded in the entity (in its store or
    # earlier in this run) instead of a model input (docs/storage.md, "Passages")
    chunks_reused: int = 0
    ocr_pages: int = 0  # pages read by OCR in this run (scanned PDF pages, image frames)


@dataclass
class IngestReport:
    entities: dict[str, EntityReport] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)
    skipped_files: list[dict[str, str]] = field(default_factory=list)
    stale_files: list[dict[str, str]] = field(default_factory=list)  # gone from the tree, kept
    pruned_files: list[dict[str, str]] = field(default_factory=list)  # gone, removed by --prune
    # --dry-run only: each file the run would index, update or move ({"entity", "path", "action"})
    planned_changes: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    encode_seconds: float = 0.0
    model: dict[str, Any] = field(default_factory=dict)
    dry_run: bool = False
    interrupted: bool = False
    parse_workers: int = 0
    error: str | None = None  # a stage failed: "<stage> stage failed: <cause>" (the run stopped)

    def to_json(self) -> dict[str, Any]:
        return {
            "entities": {e: asdict(r) for e, r in self.entities.items()},
            "failures": self.failures,
            "skipped_files": self.skipped_files,
            "stale_files": self.stale_files,
            "pruned_files": self.pruned_files,
            "planned_changes": self.planned_changes,
            "seconds": round(self.seconds, 3),
            "encode_seconds": round(self.encode_seconds, 3),
            "model": self.model,
            "parse_workers": self.parse_workers,
            "dry_run": self.dry_run,
            "interrupted": self.interrupted,
            "error": self.error,
        }

    @property
    def total_chunks(self) -> int:
        return sum(r.chunks for r in self.entities.values())

    @property
    def any_failed(self) -> bool:
        return bool(self.failures) or self.error is not None


class Reporter:
    """The report's only writer; each call also emits the matching event."""

    def __init__(self, sink: ev.EventSink, dry_run: bool = False, keep_file_lists: bool = True) -> None:
        self.report = IngestReport(dry_run=dry_run)
        self._sink = sink
        self._keep_lists = keep_file_lists  # False for a long-running service: events only
        self._lock = threading.Lock()

    def _entity(self, entity_id: str) -> EntityReport:
        return self.report.entities.setdefault(entity_id, EntityReport())

    def emit(self, event: ev.Event) -> None:
        try:
            self._sink(event)
        except Exception:  # noqa: BLE001 - a broken renderer must not stop the run
            pass

    def phase(self, message: str) -> None:
        self.emit(ev.Phase(message))

    def entity_started(self, entity_id: str) -> None:
        with self._lock:
            self._entity(entity_id)

    def entity_counted(self, entity_id: str, files: int, size: int) -> None:
        self.emit(ev.EntityPlanned(entity_id, files, size))

    def entity_files(self, entity_id: str, files: int) -> None:
        with self._lock:
            self._entity(entity_id).files = files

    def file_done(self, entity_id: str, path: str, status: Status, chunks: int = 0, detail: str = "",
                  size: int = 0, tag: str = "", doc_id: str = "") -> None:
        status = Status(status)
        with self._lock:
            rep = self._entity(entity_id)
            setattr(rep, status.value, getattr(rep, status.value) + 1)
            rep.chunks += chunks
            if not self._keep_lists:
                pass
            elif status is Status.FAILED:
                self.report.failures.append({"entity": entity_id, "path": path, "error": detail})
            elif status is Status.SKIPPED:
                self.report.skipped_files.append({"entity": entity_id, "path": path, "reason": detail})
            elif self.report.dry_run and status in (Status.INDEXED, Status.UPDATED, Status.MOVED):
                self.report.planned_changes.append({"entity": entity_id, "path": path, "action": status.value})
        self.emit(ev.FileDone(entity_id, path, status, chunks, detail, size, tag, doc_id))

    def stale(self, entity_id: str, path: str, pruned: bool) -> None:
        with self._lock:
            if pruned:
                self.report.pruned_files.append({"entity": entity_id, "path": path})
                self._entity(entity_id).pruned += 1
            else:
                self.report.stale_files.append({"entity": entity_id, "path": path})
                self._entity(entity_id).stale += 1

    def parsed(self, outcome: ParseOutcome) -> None:
        """A file parsed into new content (about to be embedded)."""
        if outcome.ocr_pages:
            with self._lock:
                self._entity(outcome.entity_id).ocr_pages += outcome.ocr_pages
        self.emit(ev.DocumentParsed(outcome.entity_id, outcome.rel_path, len(outcome.chunks), outcome.size))

    def embedded(self, count: int, seconds: float, per_entity: dict[str, int]) -> None:
        with self._lock:
            self.report.encode_seconds += seconds
        self.emit(ev.ChunksEmbedded(count, seconds, tuple(sorted(per_entity.items()))))

    def reused(self, per_entity: dict[str, int]) -> None:
        """Chunks whose vectors were reused, not embedded."""
        with self._lock:
            for entity_id, n in per_entity.items():
                self._entity(entity_id).chunks_reused += n

    def entity_done(self, entity_id: str) -> None:
        if not self._keep_lists:  # a service's run (serve): its events are what count; the
            with self._lock:  # per-entity counts would grow with every tenant ever uploaded to
                self.report.entities.pop(entity_id, None)
        self.emit(ev.EntityDone(entity_id))

    def model_info(self, info: dict[str, Any]) -> None:
        with self._lock:
            self.report.model.update(info)

    def stage_failed(self, stage: str, exc: BaseException) -> None:
        with self._lock:
            if self.report.error is None:  # the first failure is the cause; others follow from it
                self.report.error = f"{stage} stage failed: {describe_exception(exc)}"


def describe_exception(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    from ragctl.errors import RagctlError

    if isinstance(exc, RagctlError):
        return text or name
    return f"{name}: {text}"[:300] if text else name
