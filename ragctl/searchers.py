"""One `Searcher` per entity, kept between requests, all with one `ModelConfig`, so queries are
embedded by one model instance (`load_embedder` caches per configuration per process): serve's
(the same instance that embeds uploads) and `ragctl mcp`'s.

The cache is bounded by bytes, not by a count of entities: each searcher weighs its entity's
vector segment files (what its index holds in memory once searched) plus a fixed overhead, and the
least recently used are dropped while the total is over `max_bytes` (the most recent one always
stays). So 100,000 small tenants can stay warm in the budget of a few big ones, and one huge
entity does not push the whole cache out more than its own size requires."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragctl.model_config import ModelConfig

if TYPE_CHECKING:
    from ragctl.query import Searcher

DEFAULT_MAX_BYTES = 1 << 30  # vectors of cached entities (~700,000 chunks of 384-d float32)
SEARCHER_OVERHEAD = 64 << 10  # what a searcher costs besides its vectors (objects, records, caches)


def searcher_weight(store: Path, entity_id: str) -> int:
    """Bytes a searcher of this entity holds: its vector segments, plus the fixed overhead."""
    from ragctl.storage.layout import StoreLayout

    total = SEARCHER_OVERHEAD
    try:
        with os.scandir(StoreLayout(store).entity_dir(entity_id) / "segments") as entries:
            total += sum(e.stat().st_size for e in entries if e.is_file())
    except OSError:  # no segments yet (or gone): the overhead alone
        pass
    return total


class SearcherCache:
    def __init__(self, store: Path, model: ModelConfig, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.store = store
        self.model = model
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._searchers: OrderedDict[str, Searcher] = OrderedDict()
        self._weights: dict[str, int] = {}
        self._bytes = 0

    def get(self, entity_id: str) -> Searcher:
        """The entity's searcher (made on first use; UsageError/ConfigError as `Searcher`)."""
        from ragctl.query import Searcher

        with self._lock:
            found = self._searchers.get(entity_id)
        if found is None:
            found = Searcher(self.store, entity_id, self.model)  # outside the lock: reads the entity's meta
        weight = searcher_weight(self.store, entity_id)  # weighed on every use: the entity grows
        with self._lock:
            found = self._searchers.setdefault(entity_id, found)
            self._searchers.move_to_end(entity_id)
            self._bytes += weight - self._weights.get(entity_id, 0)
            self._weights[entity_id] = weight
            while self._bytes > self.max_bytes and len(self._searchers) > 1:
                gone, _ = self._searchers.popitem(last=False)
                self._bytes -= self._weights.pop(gone, 0)
            return found

    def forget(self, entity_id: str) -> None:
        """The entity was deleted: a new one under its id starts from scratch."""
        with self._lock:
            self._searchers.pop(entity_id, None)
            self._bytes -= self._weights.pop(entity_id, 0)

    def status(self, engine_embedder: Any) -> dict[str, Any]:
        with self._lock:
            loaded = [s._embedder for s in self._searchers.values() if s._embedder is not None]
            count, used = len(self._searchers), self._bytes
        first = loaded[0] if loaded else None
        return {
            "cached_entities": count,
            "cached_bytes": used,
            "max_bytes": self.max_bytes,
            "model": first.describe() if first is not None else None,
            "shares_engine_model": None if first is None else all(e is engine_embedder for e in loaded),
        }
