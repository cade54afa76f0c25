"""The API's routes, one router per resource; `create_app` includes them. Each route only
checks the request (dependencies in `deps`), calls the library or the engine, and answers
with a body from `schemas`."""

from __future__ import annotations

from typing import Any

from ragctl.serve.schemas import ErrorBody

_TEXT = {
    400: "the request is not acceptable (invalid path, malformed multipart or JSON, ...)",
    401: "missing or unknown bearer token",
    403: "the token may not access this entity",
    404: "no such entity, document or job",
    408: "the request body arrived too slowly (cut off; the connection is closed)",
    409: "the entity was indexed with another model",
    413: "the upload is larger than --max-upload-mb, or has too many files",
    415: "the upload is not multipart/form-data",
    422: "a parameter or the body does not match the schema",
    503: "the service cannot take it now: retry after the given seconds",
}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers a route gives (each with the one error body)."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"model": ErrorBody, "description": _TEXT[status]}
        if status == 503:
            entry["headers"] = _RETRY_AFTER
        if status == 401:
            entry["headers"] = {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}}
        out[status] = entry
    return out
