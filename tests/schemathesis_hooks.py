"""Schemathesis hooks for tests/test_serve_fuzz.py (loaded with SCHEMATHESIS_HOOKS).

A multipart form carries text: a negative case that turns the upload's `path` field into a
boolean or a number is sent as the text "true" or "0", a valid path, so no server can reject
it. Those cases are dropped;
every other negative case, `path` values that break its pattern included, is kept.
"""

from __future__ import annotations

from typing import Any

import schemathesis


def _is_text(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))


@schemathesis.hook
def filter_body(ctx: Any, body: Any) -> bool:
    if ctx.operation is None or getattr(ctx.operation, "label", "") != "POST /api/entities/{entity_id}/files":
        return True
    if not isinstance(body, dict):
        return True
    if "path" in body and not _is_text(body["path"]):
        return False
    return True
