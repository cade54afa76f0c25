"""Library entry points: the entity RAG manager used by applications and the original design.

    from ragctl import get_entity_rag_manager
    manager = get_entity_rag_manager("ragstore")
    report = manager.add_documents_parallel({"acme": ["docs/acme"], "globex": ["a.pdf", "b.md"]})
    hits = manager.query("acme", "refund policy", k=3)
"""

from __future__ import annotations

import os
import shutil
import uuid
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragctl import events as ev
from ragctl.discovery import source_from_paths
from ragctl.errors import StorageError, UsageError
from ragctl.ids import validate_entity_id
from ragctl.ingest import IngestOptions, IngestReport, ingest
from ragctl.model_config import ModelConfig
from ragctl.storage.entity import Hit
from ragctl.storage.layout import MAPPING_COLLECTION, StoreLayout, default_store_dir

if TYPE_CHECKING:
    from ragctl.model_config import Embedder
    from ragctl.query import Searcher


class EntityRAGManager:
    def __init__(
        self,
        store_dir: str | os.PathLike[str] | None = None,
        *,
        model: str | ModelConfig | None = None,
        workers: int = 0,
        precision: str | None = None,
        enable_sharding: bool | None = None,
    ) -> None:
        """`model`: a ModelConfig (model, backend, precision, device, batch size, remote
        service), or just the model's directory/name; `precision` overrides the config's."""
        self.store = Path(store_dir) if store_dir is not None else default_store_dir()
        config = model if isinstance(model, ModelConfig) else ModelConfig(model=model)
        self.model_config = config if precision is None else replace(config, precision=precision)
        self.workers = workers
        self.enable_sharding = enable_sharding
        self._searchers: dict[str, Searcher] = {}

    def _shared_embedder(self) -> Embedder:
        from ragctl.embedding import load_embedder

        return load_embedder(self.model_config)

    def add_documents_parallel(
        self,
        documents: dict[str, list[str | os.PathLike[str]]],
        on_event: ev.EventSink = ev.ignore,
        ray: str | None = None,
        ocr: str | None = None,
        **options: Any,
    ) -> IngestReport:
        """Index files (or directories) for several entities in one pipeline run.

        `ocr`: "auto" (default: PDF pages without a text layer and images are OCR'd), "force"
        (every PDF page) or "off" (the CLI's --ocr; `limits=Limits(ocr=OcrOptions(...))` also sets
        the page limit).

        Only the given files are considered: documents of the entity that are not listed are
        left alone (use `ragctl ingest ROOT --prune` to mirror a whole tree). `ray` ("local",
        "auto" or a cluster address; also ray_actors=, ray_gpus_per_actor=, shared_fs=) parses
        and embeds on Ray actors (docs/distributed.md); a Ray already initialised is reused.
        """
        sources = [source_from_paths(entity_id, list(paths)) for entity_id, paths in documents.items()]
        if ocr is not None:
            from ragctl.ingest.options import Limits

            limits = options.pop("limits", None) or Limits()
            options["limits"] = replace(limits, ocr=replace(limits.ocr, mode=ocr))
        opts = IngestOptions(
            store=self.store,
            workers=self.workers,
            model=self.model_config,
            sharding=self.enable_sharding,
            ray=ray,
            **options,
        )
        report = ingest(sources, opts, on_event, embedder=None if ray else self._shared_embedder())
        for entity_id in documents:
            self.cleanup_entity(entity_id)
        return report

    def add_documents(self, entity_id: str, paths: list[str | os.PathLike[str]], **options: Any) -> IngestReport:
        return self.add_documents_parallel({entity_id: paths}, **options)

    def query(self, entity_id: str, text: str, k: int = 5, mode: str = "hybrid", rerank: bool = False,
              per_document: bool = True) -> list[Hit]:
        """Top-k hits, as `ragctl query`: per document (the default; `per_document=False`: k
        chunks); mode "hybrid" (default: rank fusion of both), "vector" or "text"; `rerank`:
        re-score the top candidates passage by passage (ragctl.rerank)."""
        return self.query_many(entity_id, [text], k, mode, rerank, per_document)[0]

    def query_many(self, entity_id: str, texts: list[str], k: int = 5, mode: str = "hybrid",
                   rerank: bool = False, per_document: bool = True) -> list[list[Hit]]:
        from ragctl.query import Searcher

        searcher = self._searchers.get(entity_id)
        if searcher is None:
            searcher = self._searchers[entity_id] = Searcher(self.store, entity_id, self.model_config)
        return searcher.search(texts, k, mode, rerank=rerank, per_document=per_document)

    def cleanup_entity(self, entity_id: str) -> None:
        """Drop this process's in-memory caches for the entity (nothing on disk changes)."""
        self._searchers.pop(validate_entity_id(entity_id), None)

    def list_entities(self, q: str = "", offset: int = 0, limit: int | None = None) -> dict[str, dict[str, Any]]:
        """The store's entities from its catalog, sorted by id: {id: {documents, chunks, bytes,
        last_ingest, model, error}}; `q` a case-insensitive substring of the id, then
        `offset`/`limit` (as `GET /api/entities`). Opens no entity."""
        from ragctl.stats import store_stats

        return store_stats(self.store, q=q, offset=offset, limit=limit)["entities"]  # type: ignore[no-any-return]

    def delete_entity(self, entity_id: str) -> bool:
        deleted = delete_entity(self.store, entity_id)
        self.cleanup_entity(entity_id)
        return deleted


def delete_entity(store: str | os.PathLike[str], entity_id: str) -> bool:
    """Remove every file of an entity: mapping shard (and its lock), index, chunk texts, meta,
    and its records in a legacy monolithic mapping. Returns False if there was nothing."""
    from ragctl.storage import catalog
    from ragctl.storage.json_storage import open_store
    from ragctl.storage.layout import require_store

    validate_entity_id(entity_id)
    layout = StoreLayout(Path(store))
    require_store(layout.root)
    storage = open_store(layout.root, create=False)
    existed = False
    if storage.enable_sharding and storage.legacy_path(MAPPING_COLLECTION).exists():
        existed = storage.delete(MAPPING_COLLECTION, {"entity_id": entity_id}) > 0
    entity_dir = layout.entity_dir(entity_id)

    def retire_entity_dir() -> None:
        if entity_dir.exists():
            # Renamed away first (atomic), then removed: a merge still writing outside the lock
            # (this or another process) finds its directory gone and discards its work instead
            # of re-creating the entity or racing the removal.
            tomb = entity_dir.with_name(f".deleted-{entity_id}-{uuid.uuid4().hex[:8]}")
            os.rename(entity_dir, tomb)

    # Records go first (same lock as every commit of this entity): once they are gone nothing
    # references the vectors, so a crash part-way leaves only files a re-run of delete removes.
    if storage.enable_sharding:
        # the shard holds this entity's records only: it goes whole, unread, so an entity whose
        # shard is corrupt can still be deleted
        with storage.shard_lock(MAPPING_COLLECTION, entity_id):
            with suppress(StorageError):  # (a broken catalog: verify reports it, --repair rebuilds it)
                catalog.mark(layout.root, entity_id)  # a kill from here on: readers drop the row
            had_shard = storage.remove_shard_files(MAPPING_COLLECTION, entity_id)  # always: records first
            existed = existed or had_shard or entity_dir.exists()
            retire_entity_dir()
            with suppress(StorageError):
                catalog.put(layout.root, entity_id, None)
        storage.drop_shard(MAPPING_COLLECTION, entity_id)
    else:
        with storage.edit(MAPPING_COLLECTION, None) as records:
            with suppress(StorageError):
                catalog.mark(layout.root, entity_id)  # its row is dropped by the next reader
            doomed = [k for k, r in records.items() if r.get("entity_id") == entity_id]
            existed = existed or bool(doomed) or entity_dir.exists()
            for key in doomed:
                del records[key]
            retire_entity_dir()
    for tomb in entity_dir.parent.glob(".deleted-*"):  # this one, and any a crash left
        shutil.rmtree(tomb, ignore_errors=True)
    return existed


def delete_document(store: str | os.PathLike[str], entity_id: str, path_or_id: str) -> str:
    """Remove one document (by its path or doc_id) from an entity; returns its path."""
    from ragctl.storage.entity import open_entity

    entity = open_entity(Path(store), entity_id)
    records = entity.records()
    record = records.get(path_or_id) or next((r for r in records.values() if r["path"] == path_or_id), None)
    if record is None:
        raise UsageError(f"entity {entity_id!r} has no document with path or doc_id {path_or_id!r}")
    model = (entity.meta() or {}).get("model", {})
    entity.commit(model, removes=[record["doc_id"]])
    entity.gc()
    return str(record["path"])


_managers: dict[tuple[str, Any], EntityRAGManager] = {}


def get_entity_rag_manager(store_dir: str | os.PathLike[str] | None = None, **kwargs: Any) -> EntityRAGManager:
    """A process-wide manager per store (one model instance shared by all its calls)."""
    store = Path(store_dir) if store_dir is not None else default_store_dir()
    key = (str(store.resolve()), kwargs.get("model"))
    if key not in _managers or kwargs:
        _managers[key] = EntityRAGManager(store, **kwargs)
    return _managers[key]


__all__ = ["EntityRAGManager", "get_entity_rag_manager", "delete_entity", "delete_document"]
