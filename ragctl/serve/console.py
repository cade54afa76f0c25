"""The web console: the static files in `ragctl/serve/ui/` (index.html, app.js, app.css,
hand-written, no build step; package data), served at /ui/ by `ragctl serve`; the page uses the
JSON API only (docs/console.md).

The files are public (they hold no data; the page asks for the bearer token and sends it with
each API call). Every answer under /ui carries a strict Content-Security-Policy: scripts, styles
and connections from this origin only, no inline script or style, no frames, no plugins.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

UI_DIR = Path(__file__).resolve().parent / "ui"
PREFIX = "/ui"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-cache"),  # revalidate (ETag): a new version of the console shows at once
]


class _WithHeaders:
    """ASGI wrapper: adds SECURITY_HEADERS to every answer of the wrapped app."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in SECURITY_HEADERS}
                message = {**message, "headers": [
                    *[(k, v) for k, v in message.get("headers", []) if k.lower() not in names], *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def is_public(path: str) -> bool:
    """The console's files and the redirects to it need no token (they hold no data)."""
    return path in ("/", PREFIX) or path.startswith(f"{PREFIX}/")


def mount(app: Any) -> None:
    """Serve the console at /ui/ (and redirect / and /ui there)."""
    from fastapi.responses import RedirectResponse
    from starlette.staticfiles import StaticFiles

    def to_console() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/", status_code=307)

    app.add_api_route("/", to_console, methods=["GET"], include_in_schema=False)
    app.add_api_route(PREFIX, to_console, methods=["GET"], include_in_schema=False)
    app.mount(PREFIX, _WithHeaders(StaticFiles(directory=UI_DIR, html=True)), name="console")
