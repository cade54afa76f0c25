"""Which mapping record owns a vector id: a record owns `first_vector_id .. + chunk_count - 1`.

`Owners` is built once per version of an entity's records (sorted numpy arrays + bisection),
so a query resolves only the ids it returns instead of mapping every id of the entity.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

Record = dict[str, Any]


def vector_ids(record: Record) -> range:
    first = int(record.get("first_vector_id", 0))
    return range(first, first + int(record.get("chunk_count", 0)))


def referenced_ids(records: Iterable[Record]) -> np.ndarray:
    """Every vector id the records reference, sorted (int64)."""
    import numpy as np

    spans = [np.arange(r.start, r.stop, dtype=np.int64) for r in map(vector_ids, records) if len(r)]
    return np.unique(np.concatenate(spans)) if spans else np.empty(0, dtype=np.int64)


class Owners:
    def __init__(self, records: Iterable[Record]) -> None:
        import numpy as np

        ordered = sorted((r for r in records if int(r.get("chunk_count", 0)) > 0), key=lambda r: int(r.get("first_vector_id", 0)))
        self.records = ordered
        self.firsts = np.array([int(r.get("first_vector_id", 0)) for r in ordered], dtype=np.int64)
        self.ends = self.firsts + np.array([int(r["chunk_count"]) for r in ordered], dtype=np.int64)
        self.referenced = int((self.ends - self.firsts).sum()) if ordered else 0

    def __bool__(self) -> bool:
        return bool(self.records)

    def owner(self, vector_id: int) -> Record | None:
        import numpy as np

        pos = int(np.searchsorted(self.firsts, vector_id, side="right")) - 1
        if pos < 0 or vector_id >= self.ends[pos]:
            return None
        return self.records[pos]
