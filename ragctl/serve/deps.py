"""What routes depend on: the service's parts (`Services`: config, job store, staging, engine,
searchers, made once by `create_app`), the request's token, and the entity in the URL checked
against both (`entity_access`: 403 for a token without access, `known_entity`: 404)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Request

from ragctl.searchers import SearcherCache
from ragctl.serve.auth import allowed_entities
from ragctl.serve.config import ServeConfig
from ragctl.serve.engine import Engine
from ragctl.serve.errors import HttpError
from ragctl.serve.jobs import JobStore, Staging
from ragctl.serve.schemas import ENTITY_ID_REGEX


@dataclass(frozen=True)
class Services:
    config: ServeConfig
    jobs: JobStore
    staging: Staging
    engine: Engine
    searchers: SearcherCache


def services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


def config_of(svc: Annotated[Services, Depends(services)]) -> ServeConfig:
    return svc.config


def engine_of(svc: Annotated[Services, Depends(services)]) -> Engine:
    return svc.engine


ServicesDep = Annotated[Services, Depends(services)]
ConfigDep = Annotated[ServeConfig, Depends(config_of)]
EngineDep = Annotated[Engine, Depends(engine_of)]
AllowedDep = Annotated["frozenset[str] | None", Depends(allowed_entities)]

EntityIdPath = Annotated[str, Path(pattern=ENTITY_ID_REGEX, max_length=128,
                                   description="letters, digits, '.', '_', '-'; starts with a letter or digit")]


def entity_access(entity_id: EntityIdPath, allowed: AllowedDep) -> str:
    """The entity in the URL, if the request's token may touch it (else 403)."""
    if allowed is not None and entity_id not in allowed:
        raise HttpError(403, "forbidden", f"this token may not access entity {entity_id!r}")
    return entity_id


EntityDep = Annotated[str, Depends(entity_access)]


def _no_documents(entity_id: str) -> HttpError:
    return HttpError(404, "unknown_entity", f"entity {entity_id!r} has no documents")


def _readable(config: ServeConfig, entity_id: str) -> bool:
    """The entity has committed data a reader can open (not: a directory whose first commit is
    still under way, or one being deleted)."""
    from ragctl.storage.entity import EntityStore
    from ragctl.storage.json_storage import open_store

    return EntityStore(open_store(config.store, create=False), entity_id).exists()


def known_entity(entity_id: EntityDep, config: ConfigDep) -> Iterator[str]:
    """An entity the token may touch that has data (else 404 `unknown_entity`).

    The one place that turns "entity not readable" into 404 for every route that reads an
    entity: checked before the route runs, and again when the route fails with a UsageError
    (`open_entity`'s "unknown entity", a `Searcher` on an entity whose first commit is under way
    or that a DELETE just removed): if the entity is not readable then, the answer is 404."""
    from ragctl.errors import UsageError

    if not _readable(config, entity_id):
        raise _no_documents(entity_id)
    try:
        yield entity_id
    except UsageError:
        if not _readable(config, entity_id):
            raise _no_documents(entity_id) from None
        raise


KnownEntityDep = Annotated[str, Depends(known_entity)]
