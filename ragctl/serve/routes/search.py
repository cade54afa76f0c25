"""POST /api/entities/{entity_id}/search: the answer of `ragctl query --json`, embedded by the
server's one model (a cached `Searcher` per entity)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ragctl.serve.deps import KnownEntityDep, ServicesDep
from ragctl.serve.routes import errors
from ragctl.serve.schemas import SearchRequest, SearchResults

router = APIRouter(tags=["search"])


@router.post("/api/entities/{entity_id}/search", response_model=SearchResults, operation_id="search",
             summary="Top-k documents (or chunks) of one entity", responses=errors(400, 403, 404, 408, 409, 422))
def search(entity_id: KnownEntityDep, body: SearchRequest, svc: ServicesDep) -> Any:
    from ragctl.query import hit_json

    searcher = svc.searchers.get(entity_id)  # an entity not readable (yet): 404 by `known_entity`
    hits = searcher.search([body.query], body.k, body.mode, rerank=body.rerank, context_words=body.context_words,
                           per_document=body.per_document)[0]
    return {"entity": entity_id, "results": [hit_json(h) for h in hits]}
