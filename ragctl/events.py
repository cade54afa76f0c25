"""What the core tells the outside world: the status vocabulary and progress events.

Stages *emit* events (frozen dataclasses) into one sink; the CLI renders them, `serve` routes
them to jobs. The core never imports rich. `Status` is the one status vocabulary used from the
plan to the summary (and in `--json`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


class Status(str, Enum):
    """The final status of one file in one run."""

    INDEXED = "indexed"  # new document
    UPDATED = "updated"  # content changed: chunks replaced atomically, doc_id kept
    MOVED = "moved"  # same content under a new path: only the path changed
    UNCHANGED = "unchanged"
    SKIPPED = "skipped"  # not indexed on purpose (unsupported, empty, duplicate, over a limit)
    FAILED = "failed"  # could not be indexed (unreadable, corrupt, parser crash or time-out)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Phase:
    message: str


@dataclass(frozen=True)
class EntityPlanned:
    """Totals of an entity's tree, from a counting pass that runs beside the work (it may
    arrive after the entity's first files are done)."""

    entity_id: str
    files: int
    bytes: int = 0


@dataclass(frozen=True)
class DocumentParsed:
    """A file was parsed and chunked; its chunks are on their way to the model."""

    entity_id: str
    path: str
    chunks: int
    bytes: int = 0


@dataclass(frozen=True)
class ChunksEmbedded:
    """One encode call finished; `per_entity` says whose chunks they were."""

    count: int
    seconds: float
    per_entity: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class FileDone:
    entity_id: str
    path: str
    status: Status
    chunks: int = 0
    detail: str = ""
    bytes: int = 0
    tag: str = ""  # the caller's label for the work item (serve: the job id)
    doc_id: str = ""  # the document the file is (indexed, updated, unchanged, moved) or copies (skipped); "" if none


@dataclass(frozen=True)
class EntityDone:
    entity_id: str


Event = Phase | EntityPlanned | DocumentParsed | ChunksEmbedded | FileDone | EntityDone
EventSink = Callable[[Event], None]


def ignore(_event: Event) -> None:
    return None
