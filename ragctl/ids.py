"""Entity id validation: the one rule every entry point applies before touching disk."""

from __future__ import annotations

import re

from ragctl.errors import UsageError

ENTITY_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
ENTITY_ID_RULE = "letters, digits, '.', '_', '-'; at most 128 characters; no '/', '..' or NUL"


def is_valid_entity_id(entity_id: object) -> bool:
    return (
        isinstance(entity_id, str)
        and ENTITY_ID_PATTERN.fullmatch(entity_id) is not None
        and entity_id not in (".", "..")
    )


def validate_entity_id(entity_id: object) -> str:
    """Return `entity_id` unchanged, or raise UsageError naming what is wrong with it."""
    if not is_valid_entity_id(entity_id):
        raise UsageError(
            f"invalid entity id {entity_id!r}: must match {ENTITY_ID_PATTERN.pattern} ({ENTITY_ID_RULE})"
        )
    assert isinstance(entity_id, str)
    return entity_id
