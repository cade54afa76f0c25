"""Schemathesis hooks for tests/test_serve_fuzz.py (loaded with SCHEMATHESIS_HOOKS).

1. Entities that exist. An `entity_id` drawn from its pattern names an entity that does not
   exist, and the routes that read an entity answer 404 before they look at anything else
   (query, body). So, left alone, the fuzzer never reached a search body check (`"k": true`
   was answered 200 unnoticed) nor an entity whose first commit is under way (400 instead of
   404, unnoticed). The test seeds two entities and names them in RAGCTL_FUZZ_ENTITIES
   ("with-documents,first-commit-pending"); here, the cases of the operations that read an
   entity take, in turn, the entity with documents, the pending one, and the generated id.
   Only ids that are valid are replaced (a case whose point is a bad id keeps it), and
   never for upload or entity delete (they would change the seeded entities).
2. A check, `coercible_values_refused`: schemathesis' negative cases change a JSON field's
   type to `{}`, `[null, null]`, `"AAA"`, `null` or `false`, which a lax validator refuses too
   (false -> 0, below `k`'s minimum), so it never sent what a lax one takes: `true`, `"3"`,
   `2.0`. For every JSON body the server accepted (2xx), the check sends it again with each
   integer field as its string, as a float and as `true`, and each boolean as `"true"` and `1`,
   and expects 422 for each (docs/api.md: a body that does not match the schema).
3. A multipart form carries text: a negative case that turns the upload's `path` field into a
   boolean or a number is sent as the text "true" or "0", a valid path, so no server can
   reject it. Those cases are dropped; every other negative case, `path` values that break
   its pattern included, is kept.
4. JSON Schema counts `2035.0` as an integer, so schemathesis' positive cases sometimes carry
   one (seed 1 drew `"context_words": 2035.0`) and report the 422 as "schema-valid request
   rejected". The server refuses integral floats on purpose (docs/api.md), and the check of 2.
   sends a float twin of every accepted integer, so positive cases get the integer itself.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from typing import Any

import requests
import schemathesis

UPLOAD = "POST /api/entities/{entity_id}/files"
READERS = ("GET /api/entities/{entity_id}/files", "DELETE /api/entities/{entity_id}/files/{doc_id}",
           "POST /api/entities/{entity_id}/search")
ENTITY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
SEEDED = [e for e in os.environ.get("RAGCTL_FUZZ_ENTITIES", "").split(",") if e]
_turns = {label: itertools.cycle([*SEEDED, None]) for label in READERS}


def _is_text(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))


@schemathesis.hook
def filter_body(ctx: Any, body: Any) -> bool:
    if ctx.operation is None or getattr(ctx.operation, "label", "") != UPLOAD:
        return True
    if not isinstance(body, dict):
        return True
    if "path" in body and not _is_text(body["path"]):
        return False
    return True


@schemathesis.hook
def map_case(ctx: Any, case: Any) -> Any:
    label = getattr(ctx.operation, "label", "") if ctx.operation is not None else ""
    if isinstance(case.body, dict):  # 4. an integral float is an integer to JSON Schema, not to us
        for key, value in list(case.body.items()):
            if isinstance(value, float) and value.is_integer():
                case.body[key] = int(value)
    params = case.path_parameters
    if label not in _turns or not SEEDED or not isinstance(params, dict):
        return case
    current = params.get("entity_id")
    if isinstance(current, str) and ENTITY_ID.fullmatch(current):
        seeded = next(_turns[label])
        if seeded is not None:
            params["entity_id"] = seeded
    return case


def _coercible_twins(value: Any) -> list[Any]:
    """Values of another JSON type that a lax validator would turn into `value`."""
    if isinstance(value, bool):
        return ["true" if value else "false", int(value)]
    if isinstance(value, int):
        return [str(value), float(value), True]
    return []


@schemathesis.check
def coercible_values_refused(ctx: Any, response: Any, case: Any) -> None:
    if not 200 <= response.status_code < 300 or not isinstance(case.body, dict) or case.media_type != "application/json":
        return
    sent = response.request
    headers = {k: v for k, v in sent.headers.items() if k.lower() != "content-length"}
    for field, value in case.body.items():
        for twin in _coercible_twins(value):
            body = {**case.body, field: twin}
            again = requests.request(sent.method, sent.url, headers=headers, data=json.dumps(body),
                                     timeout=60, allow_redirects=False)
            if again.status_code != 422:
                raise AssertionError(f"{field}: {json.dumps(twin)} (not a {type(value).__name__}) was answered "
                                     f"{again.status_code}, not 422: {again.text[:200]}")
