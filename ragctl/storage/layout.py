"""Where everything lives inside a store directory, and the store manifest.

    <store>/
      store.json                         manifest: format version, mapping mode
      doc_id_name_mapping/<entity>.json  sharded mapping {doc_id: record} (+ <entity>.json.lock)
      doc_id_name_mapping.json           legacy monolithic mapping (+ .lock)
      doc_id_name_mapping/<entity>.json.log  its mapping log (commits append; folded into the shard)
      entities/<entity>/segments/*.seg   vector segments (ids + vectors or an IVF/HNSW index of them)
      entities/<entity>/index.faiss      format <= 2: FAISS IndexIDMap2(IndexFlatIP(dim)), migrated forward
      entities/<entity>/chunks.sqlite    chunk texts by vector id + their full-text index (FTS5)
      entities/<entity>/entity.json      model identity, dimension, precision, last ingest, id
                                         high-water mark, the vectors manifest (live segments, index kind)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragctl.errors import ConfigError, UsageError
from ragctl.fsutil import atomic_write_json, file_lock, now_iso, read_json, remove_stale_temps
from ragctl.ids import validate_entity_id

# 2: chunks.sqlite also holds the full-text index `chunks_fts` (FTS5), written in the same
#    transaction as the chunk texts. Version-1 stores are read and upgraded in place: the
#    manifest on the next ingest (or `verify --repair`), each entity's index on its first use.
# 3: an entity's vectors are append-only segment files named by a manifest in entity.json
#    (entities/<entity>/segments/*.seg) instead of one index.faiss, and commits append mapping
#    changes to doc_id_name_mapping/<entity>.json.log (the shard = shard file + log). An older
#    ragctl would rewrite index.faiss and shards without the segments and the log and silently
#    lose committed documents, so it must refuse the store: hence the bump. Version-1/2 stores
#    are read and upgraded in place: each entity's index.faiss becomes its first segment on the
#    entity's first commit, gc or `verify --repair` (segment, then entity.json naming it, then
#    index.faiss deleted: a kill at any point leaves either layout readable).
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
MAPPING_COLLECTION = "doc_id_name_mapping"
MODE_SHARDED = "sharded"
MODE_MONOLITHIC = "monolithic"
DEFAULT_STORE = "ragstore"


def default_store_dir() -> Path:
    return Path(os.environ.get("RAGCTL_STORE") or DEFAULT_STORE)


@dataclass(frozen=True)
class StoreLayout:
    root: Path

    @property
    def manifest_path(self) -> Path:
        return self.root / "store.json"

    def shard_dir(self, collection: str = MAPPING_COLLECTION) -> Path:
        return self.root / collection

    def shard_path(self, collection: str, entity_id: str) -> Path:
        return self.shard_dir(collection) / f"{validate_entity_id(entity_id)}.json"

    def legacy_path(self, collection: str = MAPPING_COLLECTION) -> Path:
        return self.root / f"{collection}.json"

    @property
    def entities_dir(self) -> Path:
        return self.root / "entities"

    def entity_dir(self, entity_id: str) -> Path:
        return self.entities_dir / validate_entity_id(entity_id)

    def index_path(self, entity_id: str) -> Path:
        return self.entity_dir(entity_id) / "index.faiss"

    def chunks_path(self, entity_id: str) -> Path:
        return self.entity_dir(entity_id) / "chunks.sqlite"

    def entity_meta_path(self, entity_id: str) -> Path:
        return self.entity_dir(entity_id) / "entity.json"

    def entity_ids(self) -> list[str]:
        """Every entity that has vector data or a mapping shard, sorted."""
        from ragctl.ids import is_valid_entity_id

        found: set[str] = set()
        if self.entities_dir.is_dir():
            found.update(p.name for p in self.entities_dir.iterdir() if p.is_dir())
        if self.shard_dir().is_dir():
            found.update(p.name[:-5] for p in self.shard_dir().glob("*.json"))
        return sorted(e for e in found if is_valid_entity_id(e))


def read_manifest(root: Path) -> dict[str, Any] | None:
    manifest = read_json(StoreLayout(root).manifest_path)
    if manifest is None:
        return None
    version = manifest.get("format_version")
    if version not in READABLE_VERSIONS:
        raise ConfigError(
            f"{StoreLayout(root).manifest_path}: store format version {version!r} is not "
            f"supported by this ragctl (reads {', '.join(map(str, READABLE_VERSIONS))})"
        )
    return manifest


def open_store_manifest(root: Path, sharding: bool | None = None) -> dict[str, Any]:
    """Return the store manifest, creating the store on first use.

    `sharding` None means "whatever the store says" (sharded for a new store). Asking for
    monolithic mode on an existing sharded store is refused: shards cannot be un-migrated.
    A monolithic store opened with sharding=True stays monolithic until migrate-to-sharded.
    """
    root = Path(root)
    manifest = read_manifest(root)
    if manifest is None:
        with manifest_lock(root):
            return _create_manifest(root, sharding)
    if sharding is False and manifest.get("mapping_mode") == MODE_SHARDED:
        raise ConfigError(
            f"{root}: this store uses sharded mappings; monolithic mode only applies to new stores"
        )
    if manifest.get("format_version") != FORMAT_VERSION:
        manifest = upgrade_manifest(root)
    return manifest


def upgrade_manifest(root: Path) -> dict[str, Any]:
    """Record the current format version (entities' full-text indexes are built on first use)."""
    with manifest_lock(root):
        manifest = read_manifest(root) or {}
        if manifest and manifest.get("format_version") != FORMAT_VERSION:
            manifest["format_version"] = FORMAT_VERSION
            manifest["upgraded_at"] = now_iso()
            _write_manifest(root, manifest)
        return manifest


def require_store(root: Path) -> None:
    if read_manifest(Path(root)) is None:
        raise UsageError(f"{root}: no ragctl store here (nothing has been ingested into it)")


def _create_manifest(root: Path, sharding: bool | None) -> dict[str, Any]:
    manifest = read_manifest(root)  # another process may have created it meanwhile
    if manifest is None:
        mode = MODE_MONOLITHIC if sharding is False else MODE_SHARDED
        # A store made by an older tool has a legacy mapping file but no manifest.
        if StoreLayout(root).legacy_path().exists() and sharding is None:
            mode = MODE_MONOLITHIC
        manifest = {
            "format_version": FORMAT_VERSION,
            "mapping_mode": mode,
            "created_at": now_iso(),
        }
        root.mkdir(parents=True, exist_ok=True)
        _write_manifest(root, manifest)
    return manifest


def _write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    """Replace store.json (caller holds the manifest lock), first removing the temp files of
    writes a kill interrupted: under the lock none of them can be a live writer's."""
    path = StoreLayout(root).manifest_path
    remove_stale_temps(path)
    atomic_write_json(path, manifest)


def manifest_lock(root: Path):
    """Serialises read-modify-writes of store.json (ingest runs, migration)."""
    return file_lock(StoreLayout(Path(root)).manifest_path, timeout=600)


def set_mapping_mode(root: Path, mode: str) -> None:
    with manifest_lock(root):
        manifest = read_manifest(root) or {"format_version": FORMAT_VERSION}
        manifest["mapping_mode"] = mode
        _write_manifest(root, manifest)


def record_last_run(root: Path, model: dict[str, Any]) -> None:
    """Remember the model, precision and device of the latest ingest in the manifest."""
    with manifest_lock(root):
        manifest = read_manifest(root)
        if manifest is None:
            return
        manifest["last_ingest"] = {
            "at": now_iso(),
            **{k: model.get(k) for k in ("name", "dim", "precision", "device")},
        }
        _write_manifest(root, manifest)
