"""Entities and their documents: GET /api/entities, GET /api/entities/{entity_id}/files,
DELETE /api/entities/{entity_id}/files/{doc_id}, DELETE /api/entities/{entity_id}."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from ragctl.serve.deps import AllowedDep, ConfigDep, EntityDep, KnownEntityDep, ServicesDep
from ragctl.serve.errors import HttpError, retry_later
from ragctl.serve.routes import errors
from ragctl.serve.schemas import DocumentDeleted, EntityDeleted, FileList, StoreStats

router = APIRouter(tags=["entities"])


@router.get("/api/entities", response_model=StoreStats, operation_id="listEntities",
            summary="Per-entity stats (as `ragctl stats --json`), paged and filtered", responses=errors(422))
def list_entities(config: ConfigDep, allowed: AllowedDep, offset: Annotated[int, Query(ge=0)] = 0,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                  q: Annotated[str, Query(max_length=128, description="case-insensitive substring of the entity id")] = "",
                  ) -> Any:
    """From the store catalog: the token's entities (all for the admin token) whose id contains
    `q`, sorted by id, `limit` from `offset`; totals over all of them."""
    from ragctl.stats import store_stats

    return store_stats(config.store, offset=offset, limit=limit, q=q, allowed=allowed)


@router.get("/api/entities/{entity_id}/files", response_model=FileList, operation_id="listFiles",
            summary="An entity's documents, by path", responses=errors(403, 404, 422))
def list_files(entity_id: KnownEntityDep, config: ConfigDep, offset: Annotated[int, Query(ge=0)] = 0,
               limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Any:
    from ragctl.storage.entity import open_entity

    records = sorted(open_entity(config.store, entity_id).records().values(), key=lambda r: r["path"])
    page = records[offset:offset + limit]
    return {
        "entity": entity_id, "total": len(records), "offset": offset, "limit": limit,
        "files": [{"doc_id": r["doc_id"], "path": r["path"], "bytes": r.get("size"),
                   "chunks": r.get("chunk_count"), "sha256": r.get("content_hash"),
                   "indexed_at": r.get("indexed_at")} for r in page],
    }


@router.delete("/api/entities/{entity_id}/files/{doc_id}", response_model=DocumentDeleted,
               operation_id="deleteDocument", summary="Delete one document", responses=errors(403, 404, 422))
def delete_file(entity_id: KnownEntityDep, doc_id: str, config: ConfigDep) -> Any:
    from ragctl.manager import delete_document
    from ragctl.storage.entity import open_entity

    if doc_id not in open_entity(config.store, entity_id).records():
        raise HttpError(404, "unknown_document", f"entity {entity_id!r} has no document {doc_id!r}")
    path = delete_document(config.store, entity_id, doc_id)
    return {"entity": entity_id, "doc_id": doc_id, "path": path, "deleted": True}


@router.delete("/api/entities/{entity_id}", response_model=EntityDeleted, operation_id="deleteEntity",
               summary="Delete an entity and cancel its unfinished jobs", responses=errors(403, 404, 422, 503))
def delete_entity_route(entity_id: EntityDep, svc: ServicesDep) -> Any:
    from ragctl.manager import delete_entity

    config = svc.config
    try:
        with svc.engine.deleting(entity_id, f"cancelled: entity {entity_id!r} was deleted",
                                 config.delete_timeout_s) as cancelled:
            existed = delete_entity(config.store, entity_id)
            svc.searchers.forget(entity_id)
    except TimeoutError as exc:
        raise retry_later("entity_busy", str(exc)) from None
    if not existed and not cancelled:
        raise HttpError(404, "unknown_entity", f"entity {entity_id!r} has no documents")
    return {"entity": entity_id, "deleted": True, "cancelled_jobs": cancelled}
