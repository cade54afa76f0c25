"""What routes depend on: the service's parts (`Services`: config, job store, staging, engine,
searchers, made once by `create_app`), the request's token, and the entity in the URL checked
against both (`entity_access`: 403 for a token without access, `known_entity`: 404)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Request

from ragctl.serve.auth import allowed_entities
from ragctl.serve.config import ServeConfig
from ragctl.serve.engine import Engine
from ragctl.serve.errors import HttpError
from ragctl.serve.jobs import JobStore, Staging
from ragctl.serve.schemas import ENTITY_ID_REGEX
from ragctl.serve.searchers import SearcherCache


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


def known_entity(entity_id: EntityDep, config: ConfigDep) -> str:
    """An entity the token may touch that has data (else 404)."""
    from ragctl.storage.layout import StoreLayout

    if entity_id not in StoreLayout(config.store).entity_ids():
        raise HttpError(404, "unknown_entity", f"entity {entity_id!r} has no documents")
    return entity_id


KnownEntityDep = Annotated[str, Depends(known_entity)]
