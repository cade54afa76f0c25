"""An entity's vectors as append-only segment files (store format 3).

    entities/<entity>/segments/<name>.seg   one file per commit (and per compaction output)
    entities/<entity>/entity.json           "vectors": the manifest naming the live segments

A commit writes one small segment atomically and then entity.json naming it (with the id
high-water mark): its cost is what it adds, not what is stored. The searchable index is the
union of the live segments: `SegmentedIndex.load()` returns a `UnionIndex` whose parts (one
FAISS index per segment) are cached in memory and reused across manifest versions, so a new
segment costs one small load and a compaction costs loading only its output. Parts are never
mutated after they are built, so searches need no lock while another thread refreshes.

Segment file: `RSEG0001` (`RSEG0002` where it has a passage section, so that a release from
before sections refuses the file rather than read the section as vectors), u32 header length,
header JSON {dim, count, kind, ...}, the ids
(int64, ascending), the passage section where the header says `"passages": true`, then the
payload: raw float32 vectors (kind "flat") or a serialized FAISS index over the same vectors and
ids (kind "ivf": IndexIVFFlat, inner product; "hnsw": IndexIDMap2(IndexHNSWFlat)). Ids are
readable without the payload (orphan checks at compaction).

Passage section (docs/storage.md, "Passages"): each vector's passage prefix - the first 8 bytes
of its chunk's passage key as a big-endian u64 - sorted ascending, then the ids in that same
order (int64): 16 bytes a vector. It is what finds the stored holders of a passage: a sorted
run per segment, written with the segment and merged by the compactions that already rewrite
segments outside the lock, so a commit adds its keys to no shared b-tree (an SQL index over
random 16-byte keys dirtied ~600 pages per 640-chunk commit at 1M chunks). A prefix is a
candidate only: the caller compares the row's full key. A section is used only where the
segment's manifest entry says `"passages": true` (`verify --repair` takes the mark off one that
disagrees with the rows). Segments written before the section existed have none (`passage_ids`
then answers None and callers use the SQL index); a full gc gives them one by copying the file
with the section added (`copy_with_passages`).

Compaction: tiered with fanout FANOUT - when a tier holds FANOUT segments they are merged into
one segment of the next tier, dropping orphans - so each vector is rewritten once per tier it
climbs (tiers of ~640, 10k, 164k, 2.6M vectors: <= 3x bytes written up to ~2.6M vectors per
entity). gc() (end of an entity's ingest, `verify --repair`) also rewrites every segment
holding orphans and (re)builds approximate indexes where the entity's index kind asks. Merges
are planned and switched in under the entity's lock and written without it (compaction.py).
Crash safety: write the merged segment(s), then entity.json naming the live set (the switch),
then delete the inputs. Files not named by the manifest are garbage removed under the lock,
except those of a merge in progress.
"""

from __future__ import annotations

import json
import math
import os
import struct
import threading
import uuid
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragctl.errors import StorageError
from ragctl.fsutil import atomic_write

if TYPE_CHECKING:
    import faiss
    import numpy as np

MAGIC = b"RSEG0001"
# a file with a passage section: a release that predates sections refuses it ("not a vector
# segment") instead of reading the section as vectors
MAGIC_PASSAGES = b"RSEG0002"
FANOUT = 16
TIER_BASE = 1000  # a new segment's tier: floor(log_FANOUT(count / TIER_BASE)), at least 0
ORPHAN_SHARE = 0.2  # orphans above this share of the vectors trigger a compaction...
ORPHAN_MIN = 10_000  # ...once there are this many
INDEX_KINDS = ("auto", "flat", "ivf", "hnsw")
AUTO_APPROX_MIN = 100_000  # auto: an approximate index once the entity holds this many vectors
APPROX_SEGMENT_MIN = 20_000  # segments smaller than this stay flat (exact) whatever the kind
# vectors_of (passage reuse) loads an approximate segment it needs only up to this size (~150 MB
# at dim 384); the vectors of bigger ones are embedded again instead
REUSE_LOAD_MAX = 100_000


def tier_for(count: int) -> int:
    return max(0, int(math.floor(math.log(max(count, 1) / TIER_BASE, FANOUT)))) if count >= TIER_BASE else 0


def effective_kind(requested: str, total: int) -> str:
    if requested == "auto":
        return "ivf" if total >= AUTO_APPROX_MIN else "flat"
    return requested


# --------------------------------------------------------------------------- segment files
def passage_prefixes(keys: Sequence[bytes]) -> np.ndarray:
    """The u64 prefixes (first 8 bytes, big-endian) of 16-byte passage keys."""
    import numpy as np

    if not len(keys):
        return np.empty(0, np.uint64)
    return np.frombuffer(b"".join(bytes(k[:8]) for k in keys), dtype=">u8").astype(np.uint64)


def write_segment(path: Path, ids: np.ndarray, vectors: np.ndarray, kind: str = "flat",
                  make_dirs: bool = True, prefixes: np.ndarray | None = None) -> dict[str, Any]:
    """Write a segment atomically; returns its manifest entry (without the tier). `prefixes`:
    each vector's passage prefix (aligned with `ids`): the segment gets its passage section."""
    import numpy as np

    order = np.argsort(ids, kind="stable")
    if prefixes is not None:
        prefixes = np.asarray(prefixes, dtype=np.uint64)[order]
    ids = np.ascontiguousarray(ids[order], dtype=np.int64)
    vectors = np.ascontiguousarray(vectors[order], dtype=np.float32)
    count, dim = vectors.shape
    header: dict[str, Any] = {"dim": int(dim), "count": int(count), "kind": kind}
    payload: Any = vectors
    if kind != "flat" and count:
        index, params = build_approx(kind, vectors, ids)
        header.update(params)
        import faiss

        payload = faiss.serialize_index(index)
    data = memoryview(payload).cast("B")
    return _write_file(path, header, ids, prefixes, lambda handle: handle.write(data), make_dirs)


def _write_file(path: Path, header: dict[str, Any], ids: np.ndarray, prefixes: np.ndarray | None,
                write_payload: Callable[[Any], Any], make_dirs: bool) -> dict[str, Any]:
    import numpy as np

    header = {k: v for k, v in header.items() if k != "passages"}
    if prefixes is not None:
        header["passages"] = True
    head = json.dumps(header, sort_keys=True).encode()

    def fill(handle: Any) -> None:
        handle.write((MAGIC if prefixes is None else MAGIC_PASSAGES) + struct.pack("<I", len(head)) + head)
        handle.write(ids.tobytes())
        if prefixes is not None:
            by_prefix = np.argsort(prefixes, kind="stable")
            handle.write(np.ascontiguousarray(prefixes[by_prefix], dtype="<u8").tobytes())
            handle.write(np.ascontiguousarray(ids[by_prefix], dtype="<i8").tobytes())
        write_payload(handle)

    atomic_write(path, fill, sync_dir=False, make_dirs=make_dirs)
    count = len(ids)
    entry = {"name": path.name, "count": int(count), "kind": header["kind"],
             "min_id": int(ids[0]) if count else 0, "max_id": int(ids[-1]) if count else -1}
    if prefixes is not None:
        entry["passages"] = True
    return entry


def copy_with_passages(source: Path, path: Path, prefixes: np.ndarray) -> dict[str, Any]:
    """Write `path`: the segment `source` (vectors, ids, index payload byte for byte) with the
    passage section `prefixes` (aligned with its ids) - the upgrade of a segment written
    before the section existed, without rebuilding its index. Returns its manifest entry."""
    import shutil

    with open(source, "rb") as fh:
        header, offset = _read_header(fh, source)
        ids = read_segment_ids(source)
        fh.seek(_payload_at(header, offset))  # (a section it had is replaced by this one)
        return _write_file(path, header, ids, prefixes, lambda handle: shutil.copyfileobj(fh, handle, 1 << 20),
                           make_dirs=False)


def _read_header(fh: Any, path: Path) -> tuple[dict[str, Any], int]:
    start = fh.read(12)
    if len(start) != 12 or start[:8] not in (MAGIC, MAGIC_PASSAGES):
        raise StorageError(f"{path}: not a vector segment")
    (n,) = struct.unpack("<I", start[8:])
    header = json.loads(fh.read(n))
    return header, 12 + n


def _payload_at(header: dict[str, Any], offset: int) -> int:
    """Where the payload starts in a file whose header ends at `offset`."""
    count = int(header["count"])
    return offset + 8 * count + (16 * count if header.get("passages") else 0)


def read_segment_passages(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(sorted passage prefixes, their ids) of a segment, or None where it has no section."""
    import numpy as np

    with open(path, "rb") as fh:
        header, offset = _read_header(fh, path)
        if not header.get("passages"):
            return None
        count = int(header["count"])
        fh.seek(offset + 8 * count)
        prefixes = np.fromfile(fh, dtype="<u8", count=count).astype(np.uint64)
        ids = np.fromfile(fh, dtype="<i8", count=count).astype(np.int64)
    if len(prefixes) != count or len(ids) != count:
        raise StorageError(f"{path}: truncated segment")
    return prefixes, ids


def find_passages(sections: Sequence[tuple[np.ndarray, np.ndarray] | None], prefixes: np.ndarray) -> np.ndarray | None:
    """The ids, in these passage sections, whose prefix is one of `prefixes`; None if one of
    the segments has no section (the caller then asks the SQL index)."""
    import numpy as np

    if any(section is None for section in sections):
        return None
    wanted = np.unique(np.asarray(prefixes, dtype=np.uint64))
    found: list[np.ndarray] = []
    for section in sections:
        assert section is not None
        sorted_prefixes, ids = section
        lo = np.searchsorted(sorted_prefixes, wanted, side="left")
        hi = np.searchsorted(sorted_prefixes, wanted, side="right")
        found.extend(ids[a:b] for a, b in zip(lo[hi > lo], hi[hi > lo]))
    return np.concatenate(found) if found else np.empty(0, np.int64)


def read_segment_ids(path: Path) -> np.ndarray:
    import numpy as np

    with open(path, "rb") as fh:
        header, offset = _read_header(fh, path)
        return np.fromfile(fh, dtype=np.int64, count=header["count"])


def read_segment(path: Path) -> tuple[dict[str, Any], np.ndarray, Any]:
    """(header, ids, payload): payload is the (count, dim) float32 array or a FAISS index."""
    import numpy as np

    with open(path, "rb") as fh:
        header, offset = _read_header(fh, path)
        count, dim = header["count"], header["dim"]
        ids = np.fromfile(fh, dtype=np.int64, count=count)
        if len(ids) != count:
            raise StorageError(f"{path}: truncated segment")
        fh.seek(_payload_at(header, offset))
        if header["kind"] == "flat" or count == 0:
            vectors = np.fromfile(fh, dtype=np.float32, count=count * dim)
            if len(vectors) != count * dim:
                raise StorageError(f"{path}: truncated segment")
            return header, ids, vectors.reshape(count, dim)
        import faiss

        raw = np.frombuffer(fh.read(), dtype=np.uint8)
        index = faiss.deserialize_index(raw)
        _set_search_params(index, header)
        return header, ids, index


def segment_vectors(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of any segment kind, in id order."""
    import numpy as np

    header, ids, payload = read_segment(path)
    if isinstance(payload, np.ndarray):
        return ids, payload
    got_ids, vectors = _extract(payload, header)
    order = np.argsort(got_ids)
    return got_ids[order], vectors[order]


# --------------------------------------------------------------------------- approximate indexes
IVF_TRAIN_PER_LIST = 30  # k-means sample: this many vectors per list (8 iterations)


def ivf_params(count: int) -> tuple[int, int]:
    """(nlist, nprobe) for a segment of `count` vectors: ~2*sqrt(n) lists (at least 30 points
    each), 1/8 of them probed (bench_index.py: recall@10 vs exact on clustered data)."""
    nlist = max(8, min(65536, int(2 * math.sqrt(count)), count // IVF_TRAIN_PER_LIST))
    return nlist, min(nlist, max(16, nlist // 8))


def build_approx(kind: str, vectors: np.ndarray, ids: np.ndarray) -> tuple[faiss.Index, dict[str, Any]]:
    import faiss
    import numpy as np

    count, dim = vectors.shape
    if kind == "ivf":
        nlist, nprobe = ivf_params(count)
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        want = IVF_TRAIN_PER_LIST * nlist
        sample = vectors if count <= want else vectors[np.sort(rng.choice(count, want, replace=False))]
        index.cp.niter = 8
        index.cp.min_points_per_centroid = IVF_TRAIN_PER_LIST  # no "too few points" warning
        index.train(sample)
        index.add_with_ids(vectors, ids)
        index.own_fields = True
        quantizer.this.disown()
        nprobe, recall = calibrate_nprobe(index, vectors, ids, nlist)
        params = {"nlist": nlist, "nprobe": nprobe, "calibrated_recall": recall}
    elif kind == "hnsw":
        inner = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = 64
        index = faiss.IndexIDMap2(inner)  # type: ignore[assignment]  # every kind is used as a faiss.Index
        index.add_with_ids(vectors, ids)
        inner.this.disown()
        index.own_fields = True
        params = {"M": 32, "efSearch": 128}
    else:
        raise StorageError(f"unknown index kind {kind!r}")
    _set_search_params(index, params)
    return index, params


RECALL_TARGET = 0.95
CALIBRATION_QUERIES = 200


def calibrate_nprobe(index: Any, vectors: np.ndarray, ids: np.ndarray, nlist: int) -> tuple[int, float]:
    """The smallest nprobe (1/64 .. all of the lists, doubling) whose recall@10 against exact
    search reaches RECALL_TARGET, measured leave-one-out on a sample of the segment's own
    vectors (each one's 10 nearest others). Data without neighbourhood structure (uniform
    random vectors) ends up probing most lists: slower, but as exact as promised."""
    import faiss
    import numpy as np

    count = len(vectors)
    rng = np.random.default_rng(1)
    pick = np.sort(rng.choice(count, min(CALIBRATION_QUERIES, count), replace=False))
    queries = np.ascontiguousarray(vectors[pick])
    k = min(11, count)
    _, exact_pos = faiss.knn(queries, vectors, k, metric=faiss.METRIC_INNER_PRODUCT)
    def top10(row_ids: Any, self_id: int) -> set[int]:
        return set([i for i in row_ids.tolist() if i != self_id and i >= 0][:10])

    exact = [top10(ids[row], int(ids[p])) for row, p in zip(exact_pos, pick)]
    candidates = sorted({max(1, nlist // d) for d in (64, 32, 16, 8, 4, 2)} | {nlist})
    recall = 1.0
    for nprobe in candidates:
        index.nprobe = nprobe
        _, got = index.search(queries, k)
        hits = [len(top10(row, int(ids[p])) & e) / max(1, len(e)) for row, p, e in zip(got, pick, exact)]
        recall = float(np.mean(hits))
        if recall >= RECALL_TARGET:
            return nprobe, round(recall, 3)
    return nlist, round(recall, 3)


def _set_search_params(index: Any, header: dict[str, Any]) -> None:
    import faiss

    if "nprobe" in header:
        faiss.extract_index_ivf(index).nprobe = int(os.environ.get("RAGCTL_IVF_NPROBE") or header["nprobe"])
    if "efSearch" in header:
        faiss.downcast_index(index.index).hnsw.efSearch = int(os.environ.get("RAGCTL_HNSW_EF") or header["efSearch"])


def _extract(index: Any, header: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) held by an approximate segment index."""
    import faiss
    import numpy as np

    dim = header["dim"]
    if header["kind"] == "ivf":
        ivf = faiss.extract_index_ivf(index)
        lists = ivf.invlists
        all_ids, all_vecs = [], []
        for i in range(ivf.nlist):
            n = lists.list_size(i)
            if not n:
                continue
            all_ids.append(faiss.rev_swig_ptr(lists.get_ids(i), n).copy())
            codes = faiss.rev_swig_ptr(lists.get_codes(i), n * lists.code_size).copy()
            all_vecs.append(codes.view(np.float32).reshape(n, dim))
        if not all_ids:
            return np.empty(0, np.int64), np.empty((0, dim), np.float32)
        return np.concatenate(all_ids).astype(np.int64), np.vstack(all_vecs)
    inner = faiss.downcast_index(index.index)
    storage = faiss.downcast_index(inner.storage)
    vecs = faiss.vector_to_array(storage.codes).view(np.float32).reshape(-1, dim)
    return faiss.vector_to_array(index.id_map).astype(np.int64), vecs


# --------------------------------------------------------------------------- the union
@dataclass(frozen=True)
class Part:
    name: str
    index: Any  # faiss index with ids
    ids: Any  # np.ndarray int64, sorted
    kind: str
    passages: tuple[Any, Any] | None = None  # its passage section (sorted prefixes, ids), if it has one


class UnionIndex:
    """The searchable union of an entity's live segments; immutable once built.

    Quacks like the FAISS index it replaces where callers need it: `ntotal`, `d`, `search()`."""

    def __init__(self, parts: list[Part], dim: int, keyed: frozenset[str] = frozenset()) -> None:
        self.parts = parts
        self.d = dim
        self.ntotal = sum(len(p.ids) for p in parts)
        self.keyed = keyed  # the parts whose passage section the manifest vouches for

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import numpy as np

        queries = np.ascontiguousarray(queries, dtype=np.float32)
        nq = len(queries)
        if not self.parts or k <= 0:
            return np.full((nq, max(k, 0)), -np.inf, np.float32), np.full((nq, max(k, 0)), -1, np.int64)
        scores, ids = [], []
        for part in self.parts:
            kk = min(k, len(part.ids))
            if kk == 0:
                continue
            s, i = part.index.search(queries, kk)
            scores.append(s)
            ids.append(i)
        if len(scores) == 1 and scores[0].shape[1] == k:
            return scores[0], ids[0]
        s = np.hstack(scores)
        i = np.hstack(ids)
        s = np.where(i < 0, -np.inf, s)
        take = min(k, s.shape[1])
        top = np.argsort(-s, axis=1, kind="stable")[:, :take]
        out_s = np.take_along_axis(s, top, axis=1)
        out_i = np.take_along_axis(i, top, axis=1)
        if take < k:
            out_s = np.hstack([out_s, np.full((nq, k - take), -np.inf, np.float32)])
            out_i = np.hstack([out_i, np.full((nq, k - take), -1, np.int64)])
        return out_s.astype(np.float32), out_i

    def reconstruct(self, vector_id: int) -> np.ndarray:
        """The stored vector of one id (KeyError when no live segment holds it)."""
        import faiss
        import numpy as np

        for part in self.parts:
            pos = int(np.searchsorted(part.ids, vector_id))
            if pos < len(part.ids) and part.ids[pos] == vector_id:
                if part.kind == "ivf":
                    ivf = faiss.extract_index_ivf(part.index)
                    if ivf.direct_map.type != faiss.DirectMap.Hashtable:
                        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
                return part.index.reconstruct(int(vector_id))
        raise KeyError(vector_id)

    def passage_ids(self, prefixes: np.ndarray) -> np.ndarray | None:
        """`SegmentedIndex.passage_ids` over these parts (None if one has no passage section
        that the manifest vouches for)."""
        return find_passages([part.passages if part.name in self.keyed else None for part in self.parts], prefixes)

    def all_ids(self) -> np.ndarray:
        import numpy as np

        if not self.parts:
            return np.empty(0, np.int64)
        return np.sort(np.concatenate([p.ids for p in self.parts]))


def _part(path: Path) -> Part:
    import faiss
    import numpy as np

    header, ids, payload = read_segment(path)
    if isinstance(payload, np.ndarray):
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(header["dim"]))
        if len(ids):
            index.add_with_ids(payload, ids)
    else:
        index = payload
    return Part(path.name, index, ids, header["kind"], read_segment_passages(path))


class SegmentedIndex:
    """Segment files + the manifest in entity.json; a per-process cache of loaded parts."""

    def __init__(self, entity_dir: Path, meta: Any, legacy_path: Path) -> None:
        self.dir = Path(entity_dir) / "segments"
        self.meta = meta  # EntityMeta (entity.json)
        self.legacy_path = Path(legacy_path)  # format <= 2: one index.faiss
        self.path = self.legacy_path  # kept for callers that name the index file in messages
        self._parts: dict[str, Part] = {}
        self._union: tuple[tuple[tuple[str, ...], frozenset[str]], UnionIndex] | None = None
        self._lock = threading.Lock()
        self._legacy: Any = None
        self._sections: dict[str, tuple[Any, Any] | None] = {}  # passage sections read by passage_ids

    # ------------------------------------------------------------------ reading
    def manifest(self, meta: dict[str, Any] | None = None) -> dict[str, Any] | None:
        meta = self.meta.read() if meta is None else meta
        return (meta or {}).get("vectors")

    def exists(self) -> bool:
        return self.manifest() is not None or self.legacy_path.exists()

    def load(self, dim: int | None = None) -> Any:
        """The union of the live segments (UnionIndex), the legacy index of a format-2 entity
        not migrated yet (a FAISS index), an empty union of `dim`, or None."""
        missing = None
        for _attempt in range(20):
            meta = self.meta.read()
            manifest = self.manifest(meta)
            if manifest is None:
                if self.legacy_path.exists():
                    from ragctl.storage.vector_index import VectorIndex

                    if self._legacy is None:
                        self._legacy = VectorIndex(self.legacy_path)  # cached by file signature
                    try:
                        return self._legacy.load(dim)
                    except StorageError:
                        if self.manifest() is None and self.legacy_path.exists():
                            raise
                        continue  # migrated meanwhile
                if dim is None:
                    return None
                return UnionIndex([], dim)
            try:
                return self._union_of(manifest, dim)
            except FileNotFoundError as exc:  # a compaction replaced segments meanwhile: retry
                missing = exc.filename
        raise StorageError(f"{missing}: vector segment named by entity.json is missing")

    def _union_of(self, manifest: dict[str, Any], dim: int | None) -> UnionIndex:
        names = tuple(s["name"] for s in manifest.get("segments", []))
        keyed = frozenset(s["name"] for s in manifest.get("segments", []) if s.get("passages"))
        with self._lock:
            if self._union is not None and self._union[0] == (names, keyed):
                return self._union[1]
            parts = []
            for name in names:
                part = self._parts.get(name)
                if part is None:
                    part = _part(self.dir / name)
                parts.append(part)
            self._parts = {p.name: p for p in parts}
            d = int(manifest.get("dim") or dim or (parts[0].index.d if parts else 0))
            union = UnionIndex(parts, d, keyed)
            self._union = ((names, keyed), union)
            return union

    def vectors_of(self, wanted: Any) -> dict[int, np.ndarray]:
        """The stored vectors of these ids, read from the live segments that hold them (flat
        segments: only those rows, memory-mapped; an approximate one: its index if a search of
        this process has it loaded, else loaded for this call when it holds at most
        REUSE_LOAD_MAX vectors). Ids no live segment holds (orphans gone, an entity of format
        <= 2), or only a bigger approximate one, are left out; so is everything when a
        compaction replaced the segments meanwhile."""
        import numpy as np

        manifest = self.manifest()
        want = np.unique(np.asarray(list(wanted), dtype=np.int64))
        out: dict[int, np.ndarray] = {}
        if manifest is None or not len(want):
            return out
        try:
            for entry in manifest.get("segments", []):
                lo, hi = int(entry.get("min_id", 0)), int(entry.get("max_id", -1))
                inside = want[(want >= lo) & (want <= hi)]
                if not len(inside):
                    continue
                path = self.dir / entry["name"]
                if entry.get("kind", "flat") == "flat":
                    with open(path, "rb") as fh:
                        header, offset = _read_header(fh, path)
                    count, dim = int(header["count"]), int(header["dim"])
                    ids = np.memmap(path, dtype=np.int64, mode="r", offset=offset, shape=(count,))
                    pos = np.searchsorted(ids, inside)
                    ok = pos < count
                    ok[ok] = ids[pos[ok]] == inside[ok]
                    vecs = np.memmap(path, dtype=np.float32, mode="r", offset=_payload_at(header, offset),
                                     shape=(count, dim))
                    for vid, p in zip(inside[ok], pos[ok]):
                        out[int(vid)] = np.array(vecs[p], dtype=np.float32)
                    del ids, vecs
                else:
                    with self._lock:
                        part = self._parts.get(entry["name"])  # loaded by a search of this process
                    if part is None:
                        if int(entry.get("count", 0)) > REUSE_LOAD_MAX:
                            continue  # too big to load for a few vectors: they are embedded again
                        part = _part(path)  # used for this call only (not kept)
                    union = UnionIndex([part], int(manifest.get("dim") or 0))
                    for vid in inside:
                        with suppress(KeyError):
                            out[int(vid)] = union.reconstruct(int(vid))
        except (FileNotFoundError, StorageError, ValueError):
            return {}
        return out

    def passage_ids(self, prefixes: np.ndarray) -> np.ndarray | None:
        """The ids of the live vectors whose passage prefix is one of `prefixes` (candidates:
        the caller compares full keys), from the segments' passage sections - those of the
        parts a search loaded, else read once per segment and kept (16 bytes a vector). None
        where a live segment has no section (written before it) or the entity has no
        manifest yet (format <= 2): the caller asks the SQL index instead."""
        import numpy as np

        for _attempt in range(20):
            manifest = self.manifest()
            if manifest is None:
                return None if self.legacy_path.exists() else np.empty(0, np.int64)
            names = [s["name"] for s in manifest.get("segments", [])]
            try:
                # a section counts only where the manifest vouches for it: `verify --repair`
                # takes the mark off a section that disagrees with the rows before rewriting it
                sections = [self._section(s["name"]) if s.get("passages") else None
                            for s in manifest.get("segments", [])]
            except FileNotFoundError:
                continue  # a compaction replaced segments meanwhile
            with self._lock:
                self._sections = {n: self._sections[n] for n in names if n in self._sections}
            return find_passages(sections, prefixes)
        return None

    def _section(self, name: str) -> tuple[Any, Any] | None:
        with self._lock:
            part = self._parts.get(name)
            if part is not None:
                return part.passages
            if name in self._sections:
                return self._sections[name]
        section = read_segment_passages(self.dir / name)
        with self._lock:
            self._sections[name] = section
        return section

    @staticmethod
    def ids(index: Any) -> np.ndarray:
        """Every id in a loaded index, sorted (int64)."""
        if isinstance(index, UnionIndex):
            return index.all_ids()
        from ragctl.storage.vector_index import VectorIndex

        return VectorIndex.ids(index)

    def present_ids(self, manifest: dict[str, Any]) -> np.ndarray:
        """Every id of the live segments, sorted, read from the segment files' id sections."""
        import numpy as np

        arrays = [read_segment_ids(self.dir / s["name"]) for s in manifest.get("segments", [])]
        return np.sort(np.concatenate(arrays)) if arrays else np.empty(0, np.int64)

    # ------------------------------------------------------------------ writing (lock held)
    def new_name(self, first_id: int) -> str:
        return f"{first_id:012d}-{uuid.uuid4().hex[:8]}.seg"

    def add(self, manifest: dict[str, Any], ids: np.ndarray, vectors: np.ndarray,
            prefixes: np.ndarray | None = None) -> None:
        """Write one segment for a commit (with its passage section where `prefixes` are given)
        and name it in `manifest` (the caller writes entity.json)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        entry = write_segment(self.dir / self.new_name(int(ids[0])), ids, vectors, prefixes=prefixes)
        entry["tier"] = tier_for(entry["count"])
        manifest.setdefault("segments", []).append(entry)
        manifest["dim"] = int(vectors.shape[1])

    def remove_unlisted(self, manifest: dict[str, Any]) -> int:
        """Delete segment files the manifest does not name (inputs of a finished compaction,
        outputs and lock files of a killed merge, temp files) except the files of merges in
        progress (merge_marks.live_merges). Lock held; returns how many."""
        from ragctl.storage.merge_marks import live_merges, merge_token

        if not self.dir.is_dir():
            return 0
        listed = {s["name"] for s in manifest.get("segments", [])}
        running = live_merges(self.dir)
        removed = 0
        for path in self.dir.iterdir():
            if path.name not in listed and merge_token(path.name) not in running:
                path.unlink(missing_ok=True)
                removed += 1
        return removed
