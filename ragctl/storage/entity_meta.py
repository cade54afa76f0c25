"""`entities/<entity>/entity.json`: the model identity an entity is bound to, its precision,
dates, the vector-id high-water mark (`next_vector_id`, ids are never reused) and, since
store format 3, the vectors manifest (`vectors`: live segments, index kind; segments.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ragctl.errors import ConfigError
from ragctl.fsutil import atomic_write_json, now_iso, read_json


class EntityMeta:
    def __init__(self, path: Path, entity_id: str) -> None:
        self.path = Path(path)
        self.entity_id = entity_id

    def read(self) -> dict[str, Any] | None:
        return read_json(self.path, None)

    def exists(self) -> bool:
        return self.path.exists()

    def next_vector_id(self) -> int:
        return int((self.read() or {}).get("next_vector_id", 0))

    def check_model(self, model: dict[str, Any]) -> None:
        """Refuse to mix models: the entity is bound to the model that first indexed it."""
        meta = self.read()
        have = (meta or {}).get("model")
        if not have:  # no model bound yet (a new entity, or one migrated before its first commit)
            return
        if have.get("dim") != model.get("dim") or have.get("digest") != model.get("digest"):
            raise ConfigError(
                f"entity {self.entity_id!r} was indexed with model {have.get('name')!r} "
                f"(dim {have.get('dim')}, digest {str(have.get('digest'))[:12]}); refusing to add "
                f"vectors from {model.get('name')!r} (dim {model.get('dim')}, digest "
                f"{str(model.get('digest'))[:12]}). Use the same model, or another store."
            )

    def write(self, model: dict[str, Any], precision: str, next_id: int = 0, base: dict[str, Any] | None = None,
              embedded_by: dict[str, Any] | None = None) -> None:
        """Write entity.json: `base` (the caller's current copy, e.g. with a new vectors
        manifest) or what is on disk, with the model identity and high-water mark set;
        `embedded_by`: the runtime that embedded this commit's vectors (backend, precision,
        device, runtime), kept as the entity's last."""
        meta = base if base is not None else (self.read() or {"entity_id": self.entity_id, "created_at": now_iso()})
        meta["next_vector_id"] = max(int(meta.get("next_vector_id", 0)), next_id)
        meta["model"] = {k: model[k] for k in ("name", "digest", "dim") if k in model}
        if precision:
            meta["precision"] = precision
        if embedded_by:
            meta["embedded_by"] = embedded_by
        meta["last_ingest"] = now_iso()
        self.replace(meta)

    def replace(self, meta: dict[str, Any]) -> None:
        """Write `meta` as the whole entity.json (atomically): a compaction's switch, a kind
        change. The only writer of the file; callers hold the entity's lock."""
        atomic_write_json(self.path, meta)
