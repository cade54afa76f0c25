"""One entity's FAISS index file: `IndexIDMap2(IndexFlatIP(dim))` over L2-normalised vectors.

The file is only ever replaced atomically, so a loaded index is cached by the file's signature
(inode, mtime, size) and reloaded when another writer replaced it. Ids travel as int64 numpy
arrays. FAISS CPU indexes allow concurrent searches; mutations happen only under the entity's
lock (held by `EntityStore`), on the instance cached here.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from ragctl.errors import StorageError
from ragctl.fsutil import atomic_write_bytes

if TYPE_CHECKING:
    import faiss
    import numpy as np

Signature = tuple[int, int, int]


def file_signature(path: Path) -> Signature | None:
    """(inode, mtime_ns, size), or None when the file does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class VectorIndex:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._index: faiss.Index | None = None
        self._sig: Signature | None = None
        self._lock = threading.Lock()

    def exists(self) -> bool:
        return self.path.exists()

    def load(self, dim: int | None = None) -> faiss.Index | None:
        """The on-disk index (reloaded when replaced), a new empty one of `dim`, or None."""
        import faiss
        import numpy as np

        with self._lock:
            sig = file_signature(self.path)
            if sig is not None and sig == self._sig and self._index is not None:
                return self._index
            if sig is None:
                self._index = None if dim is None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
                self._sig = None
                return self._index
            try:
                raw = self.path.read_bytes()
                index = faiss.deserialize_index(np.frombuffer(raw, dtype=np.uint8))
            except Exception as exc:  # noqa: BLE001 - faiss raises RuntimeError for corrupt files
                raise StorageError(f"{self.path}: cannot load index: {str(exc).splitlines()[0]}") from exc
            self._index, self._sig = index, sig
            return index

    def persist(self, index: faiss.Index) -> None:
        import faiss

        atomic_write_bytes(self.path, faiss.serialize_index(index).tobytes())
        with self._lock:
            self._index, self._sig = index, file_signature(self.path)

    @staticmethod
    def ids(index: faiss.Index | None) -> np.ndarray:
        """Every id in the index, sorted (int64)."""
        import numpy as np

        if index is None or index.ntotal == 0:
            return np.empty(0, dtype=np.int64)
        import faiss

        return np.sort(faiss.vector_to_array(index.id_map).astype(np.int64, copy=False))

    @staticmethod
    def add(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray) -> None:
        import numpy as np

        index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64))

    @staticmethod
    def search(index: faiss.Index, queries: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of the `depth` nearest vectors per query. A few queries run on the
        calling thread: a flat scan is memory-bound, and waking an OpenMP team per query cost
        3x the scan itself here (2 busy cores)."""
        import faiss
        import numpy as np

        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if len(queries) >= 8:
            return index.search(queries, depth)
        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)  # OpenMP: affects the calling thread only
        try:
            return index.search(queries, depth)
        finally:
            faiss.omp_set_num_threads(before)

    @staticmethod
    def remove(index: faiss.Index, ids: np.ndarray) -> int:
        import numpy as np

        if len(ids) == 0:
            return 0
        return int(index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64)))  # type: ignore[arg-type]  # SWIG takes arrays
