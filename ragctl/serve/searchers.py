"""One `Searcher` per entity, kept between requests (bounded, least recently used first out),
all with the server's one `ModelConfig`, so queries are embedded by the same model instance
that embeds uploads (`load_embedder` caches per configuration per process)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragctl.model_config import ModelConfig

if TYPE_CHECKING:
    from ragctl.query import Searcher

MAX_CACHED = 64


class SearcherCache:
    def __init__(self, store: Path, model: ModelConfig, size: int = MAX_CACHED) -> None:
        self.store = store
        self.model = model
        self.size = size
        self._lock = threading.Lock()
        self._searchers: OrderedDict[str, Searcher] = OrderedDict()

    def get(self, entity_id: str) -> Searcher:
        """The entity's searcher (made on first use; UsageError/ConfigError as `Searcher`)."""
        from ragctl.query import Searcher

        with self._lock:
            found = self._searchers.get(entity_id)
            if found is not None:
                self._searchers.move_to_end(entity_id)
                return found
        made = Searcher(self.store, entity_id, self.model)  # outside the lock: reads the entity's meta
        with self._lock:
            found = self._searchers.setdefault(entity_id, made)
            self._searchers.move_to_end(entity_id)
            while len(self._searchers) > self.size:
                self._searchers.popitem(last=False)
            return found

    def forget(self, entity_id: str) -> None:
        """The entity was deleted: a new one under its id starts from scratch."""
        with self._lock:
            self._searchers.pop(entity_id, None)

    def status(self, engine_embedder: Any) -> dict[str, Any]:
        with self._lock:
            loaded = [s._embedder for s in self._searchers.values() if s._embedder is not None]
            count = len(self._searchers)
        first = loaded[0] if loaded else None
        return {
            "cached_entities": count,
            "model": first.describe() if first is not None else None,
            "shares_engine_model": None if first is None else all(e is engine_embedder for e in loaded),
        }
