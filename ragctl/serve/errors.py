"""The service's one HTTP error type and the handlers that turn every failure into the one
error body: `{"error": {"code": "...", "message": "one line"}}` with its status code.

Library errors map at this boundary: UsageError -> 400 (ConfigError, a store or entity made
with another model -> 409), StorageError -> 503 + Retry-After, the staging area being full
(`jobs.StagingFull`) -> 503 + Retry-After, a request that does not match the declared schema ->
422, anything else -> 500 (logged with its traceback, one line to the client).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ragctl.errors import ConfigError, StorageError, UsageError
from ragctl.serve.guard import TOO_SLOW
from ragctl.serve.jobs import StagingFull

log = logging.getLogger("ragctl.serve")
RETRY_AFTER_S = 5

_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 408: "too_slow", 409: "conflict", 413: "too_large",
          415: "unsupported_media_type",
          422: "invalid_request", 503: "unavailable"}


class HttpError(Exception):
    """Answer the request with `status` and the error body; `close`: drop the connection after
    the answer (the client may still be sending a body we will not read)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None,
                 close: bool = False) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = dict(headers or {})
        if close:
            self.headers["Connection"] = "close"


def error_body(code: str, message: object) -> dict[str, Any]:
    return {"error": {"code": code, "message": " ".join(str(message).split())[:500]}}


def error_response(status: int, code: str, message: object, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


def retry_later(code: str, message: str, seconds: int = RETRY_AFTER_S, close: bool = False) -> HttpError:
    return HttpError(503, code, message, {"Retry-After": str(seconds)}, close=close)


def disconnected(request: Request) -> JSONResponse:
    """The body stopped: cut off by `guard.SlowBodyGuard` (408), or the client went away."""
    if getattr(request.state, TOO_SLOW, False):
        return error_response(408, "too_slow", "the request body arrived too slowly", {"Connection": "close"})
    return error_response(400, "client_disconnected", "the client went away during the request",
                          {"Connection": "close"})


def allowed_methods(request: Request) -> str:
    """Every method some route serves at this path (Starlette's 405 names only the first
    route's: GET and POST on one path are two routes). HEAD is left out: not in the schema."""
    from starlette.routing import Match

    methods: set[str] = set()
    for route in request.app.router.routes:
        if getattr(route, "methods", None) and route.matches(request.scope)[0] is not Match.NONE:
            methods |= set(route.methods)
    return ", ".join(sorted(methods - {"HEAD"}))


def _validation_message(exc: RequestValidationError) -> tuple[str, str]:
    errors = exc.errors()
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ())]
    code = "invalid_entity_id" if loc[:2] == ["path", "entity_id"] else "invalid_request"
    # the first item is where the value was (body, path, query); a body field may itself be named "query"
    where = ".".join(loc[1:] if loc[:1] and loc[0] in ("body", "path", "query", "header") else loc) or "request"
    return code, f"{where}: {first.get('msg', 'invalid request')}"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HttpError)
    async def _http_error(_request: Request, exc: HttpError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(StagingFull)
    async def _staging_full(_request: Request, exc: StagingFull) -> JSONResponse:
        headers = {"Retry-After": str(RETRY_AFTER_S), "Connection": "close"}
        return error_response(503, "staging_full", f"{exc}; retry after {RETRY_AFTER_S} s", headers)

    @app.exception_handler(ClientDisconnect)
    async def _disconnect(request: Request, _exc: ClientDisconnect) -> JSONResponse:
        return disconnected(request)

    @app.exception_handler(StarletteHTTPException)
    async def _starlette_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(request)
        return error_response(exc.status_code, _CODES.get(exc.status_code, "error"), exc.detail, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        code, message = _validation_message(exc)
        return error_response(422, code, message)

    @app.exception_handler(ConfigError)
    async def _config_error(_request: Request, exc: ConfigError) -> JSONResponse:
        return error_response(409, "conflict", exc)

    @app.exception_handler(UsageError)
    async def _usage_error(_request: Request, exc: UsageError) -> JSONResponse:
        return error_response(400, "bad_request", exc)

    @app.exception_handler(StorageError)
    async def _storage_error(_request: Request, exc: StorageError) -> JSONResponse:
        return error_response(503, "storage_error", exc, {"Retry-After": str(RETRY_AFTER_S)})

    @app.exception_handler(Exception)
    async def _internal(_request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error", exc_info=exc)
        return error_response(500, "internal", f"{type(exc).__name__}: {exc}")
