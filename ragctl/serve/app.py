"""The HTTP API (FastAPI): routes, authentication, errors. Logic lives in the library
(`ragctl.query`, `ragctl.stats`, `ragctl.manager`) and in `engine`/`jobs`/`upload`.

Every error is `{"error": {"code": "...", "message": "one line"}}` with its status code.
With tokens configured, every route but /healthz needs `Authorization: Bearer <token>` (401
without a known one) and a token limited to some entities gets 403 for any other entity.
Entity ids are validated before anything touches the disk. The endpoints: docs/api.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ragctl import __version__
from ragctl.errors import ConfigError, StorageError, UsageError
from ragctl.ids import is_valid_entity_id
from ragctl.serve.config import ServeConfig
from ragctl.serve.engine import Engine
from ragctl.serve.jobs import FINISHED, QUEUED, STATUSES, JobStore, Staging
from ragctl.serve.upload import UploadError, receive

log = logging.getLogger("ragctl.serve")

_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 409: "conflict", 413: "too_large", 415: "unsupported_media_type",
                 503: "unavailable"}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    line = " ".join(str(message).split())[:500]
    return JSONResponse({"error": {"code": code, "message": line}}, status_code=status, headers=headers)


class BearerAuth:
    """Every route but /healthz needs a known bearer token (when tokens are configured);
    checked before routing and before any request body is read. The token's entities go to
    `request.state.allowed_entities` (None: every entity)."""

    def __init__(self, app: Any, config: ServeConfig) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.config.auth_required and scope.get("path") != "/healthz":
            header = ""
            for name, value in scope.get("headers", []):
                if name == b"authorization":
                    header = value.decode("latin-1")
            scheme, _, token = header.partition(" ")
            known, entities = self.config.access_for(token.strip()) if scheme.lower() == "bearer" else (False, None)
            if not known:
                message = "unknown token" if header else "missing bearer token (Authorization: Bearer <token>)"
                response = error_response(401, "unauthorized", message, {"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
            scope.setdefault("state", {})["allowed_entities"] = entities
        await self.app(scope, receive, send)


class SearchRequest(BaseModel):
    query: str = Field(min_length=1, max_length=10_000)
    k: int = Field(default=5, ge=1, le=100)
    mode: str = Field(default="hybrid", description="hybrid | vector | text")


_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object",
            "properties": {
                "file": {"type": "array", "items": {"type": "string", "format": "binary"}},
                "path": {"type": "array", "items": {"type": "string"},
                         "description": "document path inside the entity, one per file (default: the file name)"},
            },
            "required": ["file"],
        }}},
    }
}


def create_app(config: ServeConfig) -> FastAPI:
    from ragctl.storage.layout import open_store

    open_store(config.store, create=True)  # the store exists from the first request on
    jobs = JobStore(config.store)
    staging = Staging(config.staging_bytes, config.staging_files)
    engine = Engine(config, jobs, staging)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        resume = jobs.recover(config.job_retention_days)
        if resume:
            log.warning("resuming %d unfinished upload job(s)", len(resume))
        engine.start(resume)
        try:
            yield
        finally:
            await asyncio.to_thread(engine.stop)

    app = FastAPI(title="ragctl", version=__version__, docs_url=None, redoc_url=None, lifespan=lifespan,
                  swagger_ui_oauth2_redirect_url=None,
                  description="Upload documents into per-entity indexes, follow the jobs, search.")
    app.state.engine = engine
    app.state.config = config

    # ------------------------------------------------------------------ errors
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(UploadError)
    async def _upload_error(_request: Request, exc: UploadError) -> JSONResponse:
        headers = dict(exc.headers)
        if exc.status in (413, 503):
            headers["Connection"] = "close"
        return error_response(exc.status, exc.code, exc.message, headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, _STATUS_CODES.get(exc.status_code, "error"), str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error_response(400, "invalid_request", f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(UsageError)
    async def _usage_error(_request: Request, exc: UsageError) -> JSONResponse:
        return error_response(409 if isinstance(exc, ConfigError) else 400, "invalid_request", str(exc))

    @app.exception_handler(StorageError)
    async def _storage_error(_request: Request, exc: StorageError) -> JSONResponse:
        return error_response(503, "storage_error", str(exc), {"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _internal(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error")
        return error_response(500, "internal", f"{type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ auth
    def allowed_entities(request: Request) -> frozenset[str] | None:
        """None: every entity (or no auth configured)."""
        if not config.auth_required:
            return None
        return request.state.allowed_entities  # type: ignore[no-any-return]

    def entity_access(request: Request, entity_id: str) -> str:
        allowed = allowed_entities(request)
        if not is_valid_entity_id(entity_id):
            raise ApiError(400, "invalid_entity_id",
                           f"invalid entity id {entity_id!r}: letters, digits, '.', '_', '-'; at most 128; "
                           "must start with a letter or digit")
        if allowed is not None and entity_id not in allowed:
            raise ApiError(403, "forbidden", f"this token may not access entity {entity_id!r}")
        return entity_id

    def known_entity(entity_id: str) -> None:
        from ragctl.storage.layout import StoreLayout

        if entity_id not in StoreLayout(config.store).entity_ids():
            raise ApiError(404, "unknown_entity", f"entity {entity_id!r} has no documents")

    # ------------------------------------------------------------------ routes
    @app.get("/healthz")
    def healthz() -> JSONResponse:
        body = {"status": "ok" if engine.state in ("running", "loading") else engine.state,
                "engine": engine.state, "version": __version__}
        return JSONResponse(body, status_code=503 if engine.state == "failed" else 200)

    @app.get("/api/status")
    def status(request: Request) -> dict[str, Any]:
        allowed_entities(request)
        return {"engine": engine.stats(), "staging": staging.to_json()}

    @app.post("/api/entities/{entity_id}/files", status_code=202, openapi_extra=_UPLOAD_BODY)
    async def upload(request: Request, entity_id: str,
                     wait: bool = Query(False, description="answer when the job is done (200), not at once (202)")
                     ) -> JSONResponse:
        entity_access(request, entity_id)
        if engine.state == "failed":
            raise ApiError(503, "unavailable", engine.error or "the ingest engine failed", {"Retry-After": "30"})
        if staging.full():
            raise UploadError(503, "staging_full", "the upload staging area is full; retry later",
                              {"Retry-After": "5"})
        job = jobs.new_job(entity_id)
        try:
            job.files = await receive(request.stream(), request.headers.get("content-type", ""),
                                      request.headers.get("content-length"), job, staging,
                                      config.max_upload_bytes, config.max_files_per_upload)
            await asyncio.to_thread(jobs.commit, job)
        except BaseException as exc:
            jobs.discard(job)
            if isinstance(exc, ClientDisconnect):
                return error_response(400, "client_disconnected", "the client went away during the upload")
            raise
        engine.submit(job)
        ack = {"job_id": job.job_id, "entity_id": entity_id, "status": job.status,
               "files": [f.ack() for f in job.files]}
        headers = {"Location": f"/api/jobs/{job.job_id}"}
        if wait:
            deadline = time.monotonic() + config.wait_timeout_s
            while not job.done_event.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if job.done_event.is_set():
                return JSONResponse(job.to_json(), status_code=200, headers=headers)
            ack["status"] = job.status
        return JSONResponse(ack, status_code=202, headers=headers)

    def job_view(job_id: str) -> dict[str, Any] | None:
        """A job as the API shows it: this process's live state, else its manifest."""
        live = engine.get(job_id)
        job = live or jobs.load(job_id)
        if job is None:
            return None
        body = job.to_json()
        if live is None and job.status not in FINISHED:
            body["status"] = QUEUED  # on disk, not picked up by this process (yet)
        return body

    @app.get("/api/jobs/{job_id}")
    def get_job(request: Request, job_id: str) -> dict[str, Any]:
        allowed = allowed_entities(request)
        body = job_view(job_id)
        if body is None or (allowed is not None and body["entity_id"] not in allowed):
            raise ApiError(404, "unknown_job", f"no job {job_id!r}")
        return body

    @app.get("/api/entities/{entity_id}/jobs")
    def list_jobs(request: Request, entity_id: str,
                  status: str | None = Query(None, description=" | ".join(STATUSES)),
                  limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
        entity_access(request, entity_id)
        if status is not None and status not in STATUSES:
            raise ApiError(400, "invalid_request", f"status must be one of {', '.join(STATUSES)}")
        found: list[dict[str, Any]] = []
        for job_id in jobs.job_ids(entity_id):  # this entity's jobs only, newest first
            body = job_view(job_id)
            if body is None or body["entity_id"] != entity_id or (status and body["status"] != status):
                continue
            found.append(body)
            if len(found) == limit:
                break
        return {"entity": entity_id, "status": status, "limit": limit, "count": len(found), "jobs": found}

    @app.get("/api/entities")
    def list_entities(request: Request) -> dict[str, Any]:
        from ragctl.stats import store_stats

        allowed = allowed_entities(request)
        result = store_stats(config.store)
        if allowed is not None:
            entities = {e: v for e, v in result["entities"].items() if e in allowed}
            result = {"entities": entities, "totals": {
                "entities": len(entities),
                "documents": sum(v["documents"] for v in entities.values()),
                "chunks": sum(v["chunks"] for v in entities.values()),
                "bytes": sum(v["bytes"] for v in entities.values()),
            }}
        return result

    @app.get("/api/entities/{entity_id}/files")
    def list_files(request: Request, entity_id: str, offset: int = Query(0, ge=0),
                   limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
        from ragctl.storage.entity import open_entity

        entity_access(request, entity_id)
        known_entity(entity_id)
        records = sorted(open_entity(config.store, entity_id).records().values(), key=lambda r: r["path"])
        page = records[offset:offset + limit]
        return {
            "entity": entity_id, "total": len(records), "offset": offset, "limit": limit,
            "files": [{"doc_id": r["doc_id"], "path": r["path"], "bytes": r.get("size"),
                       "chunks": r.get("chunk_count"), "sha256": r.get("content_hash"),
                       "indexed_at": r.get("indexed_at")} for r in page],
        }

    @app.delete("/api/entities/{entity_id}/files/{doc_id}")
    def delete_file(request: Request, entity_id: str, doc_id: str) -> dict[str, Any]:
        from ragctl.manager import delete_document
        from ragctl.storage.entity import open_entity

        entity_access(request, entity_id)
        known_entity(entity_id)
        if doc_id not in open_entity(config.store, entity_id).records():
            raise ApiError(404, "unknown_document", f"entity {entity_id!r} has no document {doc_id!r}")
        path = delete_document(config.store, entity_id, doc_id)
        return {"entity": entity_id, "doc_id": doc_id, "path": path, "deleted": True}

    @app.delete("/api/entities/{entity_id}")
    def delete_entity_route(request: Request, entity_id: str) -> dict[str, Any]:
        from ragctl.manager import delete_entity

        entity_access(request, entity_id)
        try:
            with engine.deleting(entity_id, f"cancelled: entity {entity_id!r} was deleted",
                                 config.delete_timeout_s) as cancelled:
                existed = delete_entity(config.store, entity_id)
        except TimeoutError as exc:
            raise ApiError(503, "entity_busy", str(exc), {"Retry-After": "5"}) from None
        if not existed and not cancelled:
            raise ApiError(404, "unknown_entity", f"entity {entity_id!r} has no documents")
        return {"entity": entity_id, "deleted": True, "cancelled_jobs": cancelled}

    @app.post("/api/entities/{entity_id}/search")
    def search(request: Request, entity_id: str, body: SearchRequest) -> dict[str, Any]:
        from ragctl.query import MODES, Searcher, hit_json

        entity_access(request, entity_id)
        if body.mode not in MODES:
            raise ApiError(400, "invalid_request", f"mode must be one of {', '.join(MODES)}")
        known_entity(entity_id)
        searcher = Searcher(config.store, entity_id, config.model, config.remote)
        hits = searcher.search([body.query], body.k, body.mode)[0]
        return {"entity": entity_id, "results": [hit_json(h) for h in hits]}

    app.add_middleware(BearerAuth, config=config)
    return app
