"""Progress events the core emits; the CLI renders them (the core never imports rich)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Phase:
    message: str


@dataclass(frozen=True)
class EntityPlanned:
    entity_id: str
    files: int


@dataclass(frozen=True)
class FileDone:
    entity_id: str
    path: str
    status: str  # indexed|updated|moved|unchanged|skipped|failed
    chunks: int = 0
    detail: str = ""


@dataclass(frozen=True)
class ChunksEmbedded:
    count: int
    seconds: float


@dataclass(frozen=True)
class EntityDone:
    entity_id: str


Event = Phase | EntityPlanned | FileDone | ChunksEmbedded | EntityDone
EventSink = Callable[[Event], None]


def ignore(_event: Event) -> None:
    return None
