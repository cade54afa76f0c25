"""Bearer tokens: checked by an ASGI middleware before routing and before any request body
is read (an unknown client cannot make the server read its upload), and exposed to the
routes through dependencies (`allowed_entities`, `deps.entity_access`).

With tokens configured, every route but /healthz needs `Authorization: Bearer <token>` (401
without a known one); a token limited to some entities gets 403 for any other entity.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.security import HTTPBearer

from ragctl.serve.config import ServeConfig
from ragctl.serve.console import is_public
from ragctl.serve.errors import error_response

PUBLIC_PATHS = frozenset({"/healthz"})  # and the console's static files (`console.is_public`)
# Declares the scheme in /openapi.json; the middleware below does the checking.
bearer_scheme = HTTPBearer(auto_error=False, description="a token from --token or the --tokens file")


class BearerAuth:
    """ASGI middleware: 401 for a request without a known token; the token's entities go to
    `request.state.allowed_entities` (None: every entity)."""

    def __init__(self, app: Any, config: ServeConfig) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.config.auth_required and scope.get("path") not in PUBLIC_PATHS \
                and not is_public(scope.get("path", "")):
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


def allowed_entities(request: Request) -> frozenset[str] | None:
    """The entities the request's token may touch; None: every entity (or no auth configured)."""
    return getattr(request.state, "allowed_entities", None)
