"""What `ragctl serve` runs with (`ServeConfig`) and the tokens file.

Tokens file: a JSON object mapping each bearer token to the entity ids it may touch, or to
"*" for every entity:

    {"9f2c...": ["acme-corp", "globex"], "admin-token...": "*"}

`--token T` (or $RAGCTL_TOKEN) adds one token with access to every entity.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass, field
from pathlib import Path

from ragctl.errors import UsageError
from ragctl.ids import is_valid_entity_id
from ragctl.ingest.options import MB, Limits
from ragctl.model_config import ModelConfig

ALL = "*"
# token -> the entity ids it may touch (None: every entity)
TokenMap = dict[str, frozenset[str] | None]


@dataclass
class ServeConfig:
    store: Path
    host: str = "127.0.0.1"
    port: int = 8000
    tokens: TokenMap = field(default_factory=dict)  # empty: no authentication
    max_upload_bytes: int = 100 * MB  # one request body, counted while it streams
    staging_bytes: int = 2048 * MB  # acknowledged + in-flight upload bytes not indexed yet
    staging_files: int = 10_000
    max_files_per_upload: int = 1_000
    workers: int = 0  # parse processes (0: number of cores)
    model: ModelConfig = field(default_factory=ModelConfig)  # embeds uploads and queries (one shared model)
    limits: Limits = field(default_factory=Limits)
    wait_timeout_s: float = 600.0  # ?wait=true gives up (202 + job status) after this
    job_retention_days: float = 7.0  # finished job records are deleted after this (at start-up)
    delete_timeout_s: float = 300.0  # DELETE of an entity waits this long for its running jobs to settle
    search_cache_bytes: int = 1024 * MB  # searchers kept warm, weighed by their entities' vectors (searchers.py)

    @property
    def auth_required(self) -> bool:
        return bool(self.tokens)

    def access_for(self, token: str) -> tuple[bool, frozenset[str] | None]:
        """(known token?, entities it may touch or None for all). Compares against every
        configured token in constant time per token, so timing does not reveal a prefix."""
        found = False
        allowed: frozenset[str] | None = frozenset()
        given = token.encode("utf-8", "surrogateescape")
        for candidate, entities in self.tokens.items():
            if hmac.compare_digest(given, candidate.encode("utf-8")):
                found, allowed = True, entities
        return found, allowed


def load_tokens_file(path: Path) -> TokenMap:
    """Read a tokens file (format in the module docstring); UsageError on anything wrong."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"{path}: cannot read tokens file: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise UsageError(f"{path}: tokens file is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not data:
        raise UsageError(f'{path}: tokens file must be a JSON object {{"token": ["entity", ...] or "*"}}')
    tokens: TokenMap = {}
    for number, (token, entities) in enumerate(data.items(), 1):
        where = f"{path}: token #{number}"  # never the token itself: it is a secret
        if len(token) < 8 or not token.isprintable() or " " in token:
            raise UsageError(f"{where}: a token must be printable text of at least 8 characters, no spaces")
        if entities == ALL:
            tokens[token] = None
        elif isinstance(entities, list) and entities and all(isinstance(e, str) for e in entities):
            bad = [e for e in entities if not is_valid_entity_id(e)]
            if bad:
                raise UsageError(f"{where}: invalid entity id {bad[0]!r} (letters, digits, '.', '_', '-'; "
                                 "at most 128; must start with a letter or digit)")
            tokens[token] = frozenset(entities)
        else:
            raise UsageError(f'{where}: the value must be a non-empty list of entity ids or "*"')
    return tokens
