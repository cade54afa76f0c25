"""Query latency and recall of an entity's vector index: flat (exact) vs approximate.

For each size, one entity's vectors are written as one segment of each kind (what a
compaction leaves: segments.write_segment, the code path ingest uses), loaded through
SegmentedIndex (the UnionIndex that queries use) and searched one query at a time on one
thread (as `ragctl query` does). recall@10 = |approx top-10 ∩ exact top-10| / 10.

Data: --data clustered (default): unit vectors around 1,000 random centres (cosine to the
centre ~0.75), like sentence embeddings of a corpus; queries are noisy copies of stored
vectors. --data topics: 2,000 centres, wider spread (cosine to the centre ~0.5), queries are new draws from the same
mixture (not copies of stored vectors). --data uniform: uniform random unit vectors, the worst case for any ANN index
(no neighbourhood structure; every point is nearly equidistant).

    python scripts/bench_index.py --sizes 10000,100000,1000000 --kinds flat,ivf,hnsw
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


SPREAD = {"clustered": (1000, 0.045), "topics": (2000, 0.07)}  # (centres, noise per dimension)


def make_data(n: int, dim: int, kind: str, rng: np.random.Generator, centres: np.ndarray | None = None) -> np.ndarray:
    out = np.empty((n, dim), dtype=np.float32)
    if centres is None:
        centres = make_centres(dim, kind, rng)
    noise = SPREAD.get(kind, (0, 0.0))[1]
    step = 100_000
    for s in range(0, n, step):
        m = min(step, n - s)
        if kind == "uniform":
            v = rng.standard_normal((m, dim)).astype(np.float32)
        else:
            v = centres[rng.integers(0, len(centres), m)] + noise * rng.standard_normal((m, dim)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        out[s:s + m] = v
    return out


def make_centres(dim: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    c = rng.standard_normal((SPREAD.get(kind, (1, 0))[0], dim)).astype(np.float32)
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--kinds", default="flat,ivf,hnsw")
    ap.add_argument("--hnsw-max", type=int, default=100_000, help="skip HNSW above this size (build time)")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--data", default="clustered", choices=["clustered", "topics", "uniform"])
    ap.add_argument("--nprobe", default="", help="also measure IVF at these nprobe values (comma list)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import faiss

    from ragctl.storage.segments import SegmentedIndex, UnionIndex, write_segment

    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(0)
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-index-"))
    for n in (int(s) for s in args.sizes.split(",")):
        centres = make_centres(args.dim, args.data, rng)
        data = make_data(n, args.dim, args.data, rng, centres)
        ids = np.arange(n, dtype=np.int64)
        if args.data == "clustered":  # a noisy copy of a stored vector
            pick = rng.integers(0, n, args.queries)
            queries = data[pick] + 0.02 * rng.standard_normal((args.queries, args.dim)).astype(np.float32)
            queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        else:  # a new vector from the same distribution (a new text on the same topics)
            queries = make_data(args.queries, args.dim, args.data, rng, centres)
        exact = None
        for kind in args.kinds.split(","):
            if kind == "hnsw" and n > args.hnsw_max:
                continue
            faiss.omp_set_num_threads(2)  # building may use both cores
            path = tmp / f"{n}-{kind}.seg"
            t = time.perf_counter()
            write_segment(path, ids, data, kind)
            build_s = time.perf_counter() - t
            faiss.omp_set_num_threads(1)

            class _Meta:
                def read(self, _kind=kind, _n=n, _path=path):
                    return {"vectors": {"segments": [{"name": _path.name, "count": _n}], "dim": args.dim}}

            seg = SegmentedIndex(tmp, _Meta(), tmp / "none.faiss")
            seg.dir = tmp
            index: UnionIndex = seg.load()
            probes = [None] + ([int(p) for p in args.nprobe.split(",")] if kind == "ivf" and args.nprobe else [])
            for nprobe in probes:
                part = index.parts[0].index
                if nprobe is not None:
                    faiss.extract_index_ivf(part).nprobe = nprobe
                lat = []
                found = np.empty((args.queries, 10), dtype=np.int64)
                for q in range(args.queries):
                    t = time.perf_counter()
                    _, got = index.search(queries[q:q + 1], 10)
                    lat.append(time.perf_counter() - t)
                    found[q] = got[0]
                if kind == "flat":
                    exact = found
                recall = None
                if exact is not None:
                    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact)]))
                row = {
                    "vectors": n, "kind": kind, "data": args.data,
                    "p50_ms": round(float(np.percentile(lat, 50)) * 1000, 2),
                    "p95_ms": round(float(np.percentile(lat, 95)) * 1000, 2),
                    "recall@10": None if recall is None else round(recall, 3),
                    "build_s": round(build_s, 1),
                    "file_mb": round(path.stat().st_size / 2**20, 1),
                }
                if kind == "ivf":
                    ivf = faiss.extract_index_ivf(part)
                    row.update(nlist=int(ivf.nlist), nprobe=int(ivf.nprobe))
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
            del index, seg
            path.unlink()
        del data
    text = json.dumps(rows, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
