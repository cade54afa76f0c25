"""What travels to the committer. Each parse task settles as exactly one of `Embedded`,
`Change` or `Outcome`; `EntityEnd` says how many to expect for a work unit (an entity's tree,
or one upload job). `tag` is the work unit's label, carried into every report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ragctl.events import Status
from ragctl.ingest.plan import EntityPlan
from ragctl.storage.entity import PreparedDoc


@dataclass(frozen=True)
class Embedded:
    entity_id: str
    doc: PreparedDoc
    embedded_by: dict[str, Any] = field(default_factory=dict)  # model_config.embedded_by(): backend, precision, runtime
    tag: str = ""


@dataclass(frozen=True)
class Change:
    """A record whose file moved (new path) or was only touched (new size/mtime)."""

    entity_id: str
    doc_id: str
    fields: dict[str, Any]
    path: str
    status: Status  # moved | unchanged
    size: int = 0
    tag: str = ""


@dataclass(frozen=True)
class Outcome:
    """A file settled without a commit (failed, skipped; in a dry run, every file)."""

    entity_id: str
    path: str
    status: Status
    detail: str = ""
    size: int = 0
    tag: str = ""
    doc_id: str = ""  # a copy skipped: the document it copies (when known)


@dataclass(frozen=True)
class EntityEnd:
    """The planner is done with a work unit: `tasks` parse tasks were sent for it."""

    entity_id: str
    tasks: int
    plan: EntityPlan

    @property
    def key(self) -> tuple[str, str]:
        return (self.entity_id, self.plan.tag)


Settled = Embedded | Change | Outcome
