"""Store format 3: vector segments + compaction (merges outside the entity lock: a commit
during a merge, a merge discarded, kill -9 mid-merge), the mapping log, migration from format
2, kill -9 of a committing process (including inside compaction and log folding), concurrent
writer processes. Vectors are random; no model is needed."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import SEGMENT_DIM, SEGMENT_MODEL, segment_doc, strip_passage_sections, unit_vectors
from typer.testing import CliRunner

from ragctl.cli.app import app
from ragctl.fsutil import atomic_write_json, read_json
from ragctl.storage import compaction, mapping_log, segments
from ragctl.storage.entity import EntityStore, PreparedDoc
from ragctl.storage.json_storage import JSONStorage
from ragctl.storage.layout import open_store_manifest
from ragctl.storage.mapping_log import ShardView, load_shard_view, log_path
from ragctl.storage.owners import vector_ids

C = "doc_id_name_mapping"
DIM = SEGMENT_DIM
MODEL = SEGMENT_MODEL
REPO = Path(__file__).resolve().parents[1]


def unit(n: int, seed: int) -> np.ndarray:
    return unit_vectors(n, seed)


def make_doc(path: str, version: int = 0, n: int = 3) -> PreparedDoc:
    return segment_doc(path, version, n)


def new_store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    open_store_manifest(root)
    return root


def verify(root: Path, *extra: str) -> dict:
    result = CliRunner().invoke(app, ["verify", "--store", str(root), "--json", *extra])
    report = json.loads(result.stdout)
    assert result.exit_code == (0 if report["ok"] else 1)
    return report


def assert_exact(es: EntityStore, docs: dict[str, PreparedDoc]) -> None:
    """Every document once, its vectors and texts intact, top-1 for its own first vector."""
    records = {r["path"]: r for r in es.records().values()}
    assert set(records) == set(docs)
    index = es.load_index()
    texts = es.texts.fetch(sorted(i for r in records.values() for i in vector_ids(r)))
    for path, want in docs.items():
        record = records[path]
        assert record["content_hash"] == want.content_hash
        for i, vid in enumerate(vector_ids(record)):
            assert texts[vid] == want.chunks[i]
            assert np.allclose(index.reconstruct(vid), want.vectors[i], atol=1e-6)
        hit = es.search(want.vectors[:1], 1)[0][0]
        assert hit.path == path and hit.chunk == 0


# ----------------------------------------------------------------------------- mapping log
@pytest.mark.timeout(30)
def test_log_torn_tail_is_ignored_and_truncated_by_the_next_writer(tmp_path):
    shard = tmp_path / "e.json"
    atomic_write_json(shard, {"a": {"doc_id": "a", "path": "a.md"}})
    view = ShardView(shard, copy_on_write=False)
    view.refresh()
    view.append({"set": {"b": {"doc_id": "b", "path": "b.md"}}})
    with open(log_path(shard), "ab") as fh:  # a writer killed mid-append
        fh.write(b"0badc0de 40 {\"set\": {\"c\"")
    assert set(load_shard_view(shard)) == {"a", "b"}
    view2 = ShardView(shard, copy_on_write=False)
    view2.refresh()
    view2.append({"del": ["a"], "set": {"d": {"doc_id": "d", "path": "d.md"}}})
    assert set(load_shard_view(shard)) == {"b", "d"}
    # a checksum mismatch inside a line stops the log there too
    data = log_path(shard).read_bytes()
    assert b"0badc0de" not in data


@pytest.mark.timeout(30)
def test_fold_writes_exactly_the_view_and_a_stale_log_is_ignored(tmp_path):
    shard = tmp_path / "e.json"
    atomic_write_json(shard, {})
    view = ShardView(shard, copy_on_write=False)
    view.refresh()
    for i in range(50):
        view.append({"set": {f"k{i}": {"doc_id": f"k{i}", "n": i}}, "del": [f"k{i - 3}"] if i % 7 == 0 else []})
    before = dict(load_shard_view(shard))
    old_log = log_path(shard).read_bytes()
    view.fold()
    assert json.loads(shard.read_text()) == before == load_shard_view(shard)
    assert not log_path(shard).exists()
    # a kill between the shard write and the log's removal leaves a log naming the old shard
    log_path(shard).write_bytes(old_log)
    assert load_shard_view(shard) == before


@pytest.mark.timeout(60)
def test_commits_append_to_the_log_and_readers_see_shard_plus_log(tmp_path, monkeypatch):
    monkeypatch.setattr(mapping_log, "FOLD_MIN_BYTES", 4000)
    root = new_store(tmp_path)
    es = EntityStore(JSONStorage(root), "e")
    docs = {}
    shard_writes = 0
    for i in range(30):
        d = make_doc(f"d{i}.md")
        docs[d.path] = d
        before = (root / C / "e.json").stat().st_mtime_ns if (root / C / "e.json").exists() else None
        es.commit(MODEL, [d])
        after = (root / C / "e.json").stat().st_mtime_ns
        shard_writes += before != after
        reader = JSONStorage(root)  # a fresh reader: shard + log from disk
        assert {r["path"] for r in reader.find(C, {"entity_id": "e"})} == set(docs)
    assert 1 < shard_writes < 15  # the first commit and the folds, not every commit
    assert_exact(es, docs)
    es.gc()  # end of an ingest: the log is folded into the shard
    assert not log_path(root / C / "e.json").exists()
    assert {r["path"] for r in json.loads((root / C / "e.json").read_text()).values()} == set(docs)


@pytest.mark.timeout(60)
def test_jsonstorage_writers_fold_the_log(tmp_path):
    root = new_store(tmp_path)
    es = EntityStore(JSONStorage(root), "e")
    es.commit(MODEL, [make_doc("a.md")])
    es.commit(MODEL, [make_doc("b.md")])
    assert log_path(root / C / "e.json").exists()
    s = JSONStorage(root)
    assert s.update(C, {"entity_id": "e", "path": "a.md"}, {"note": "x"}) == 1
    assert not log_path(root / C / "e.json").exists()
    on_disk = json.loads((root / C / "e.json").read_text())
    assert {r["path"] for r in on_disk.values()} == {"a.md", "b.md"}
    assert verify(root)["ok"]


# ----------------------------------------------------------------------------- segments
@pytest.mark.timeout(120)
def test_tiered_compaction_bounds_segments_and_drops_orphans(tmp_path, monkeypatch):
    monkeypatch.setattr(segments, "FANOUT", 4)
    root = new_store(tmp_path)
    es = EntityStore(JSONStorage(root), "e")
    docs: dict[str, PreparedDoc] = {}
    rng = random.Random(1)
    for step in range(80):
        batch = []
        for j in range(3):
            path = f"d{rng.randrange(60)}.md"
            d = make_doc(path, version=step * 10 + j)
            if path not in {b.path for b in batch}:
                batch.append(d)
        es.commit(MODEL, batch)
        docs.update({d.path: d for d in batch})
        manifest = es.meta()["vectors"]
        tiers: dict[int, int] = {}
        for s in manifest["segments"]:
            tiers[s["tier"]] = tiers.get(s["tier"], 0) + 1
        assert max(tiers.values()) < 4
    queries = unit(5, 99)
    before = [[(h.path, h.chunk) for h in row] for row in es.search(queries, 5)]
    assert verify(root)["entities"]["e"]["orphans"] > 0
    dropped = es.gc()
    assert dropped > 0
    report = verify(root)["entities"]["e"]
    assert report["ok"] and report["orphans"] == 0
    assert [[(h.path, h.chunk) for h in row] for row in es.search(queries, 5)] == before
    assert_exact(es, docs)
    listed = {s["name"] for s in es.meta()["vectors"]["segments"]}
    assert {p.name for p in (root / "entities" / "e" / "segments").iterdir()} == listed


@pytest.mark.timeout(60)
def test_flat_results_are_exact(tmp_path):
    root = new_store(tmp_path)
    es = EntityStore(JSONStorage(root), "e")
    docs = [make_doc(f"d{i}.md", n=5) for i in range(40)]
    for i in range(0, 40, 4):
        es.commit(MODEL, docs[i:i + 4])
    records = {r["path"]: r for r in es.records().values()}
    all_ids = np.array([i for d in docs for i in vector_ids(records[d.path])])
    all_vecs = np.vstack([d.vectors for d in docs])
    queries = unit(10, 7)
    want = np.argsort(-(queries @ all_vecs.T), axis=1)[:, :10]
    for q, row in enumerate(es.vector_search(queries, 10)):
        assert [i for i, _ in row] == all_ids[want[q]].tolist()


@pytest.mark.timeout(120)
def test_approximate_index_is_built_at_compaction_and_finds_neighbours(tmp_path, monkeypatch):
    monkeypatch.setattr(segments, "APPROX_SEGMENT_MIN", 500)
    root = new_store(tmp_path)
    centers = unit(20, 5)
    rng = np.random.default_rng(3)
    for kind in ("ivf", "hnsw"):
        es = EntityStore(JSONStorage(root), f"e-{kind}", index_kind=kind)
        flat = EntityStore(JSONStorage(root), f"f-{kind}", index_kind="flat")
        for b in range(4):
            batch = []
            for i in range(50):
                v = centers[rng.integers(20)] + 0.35 * rng.standard_normal((8, DIM)).astype(np.float32)
                v /= np.linalg.norm(v, axis=1, keepdims=True)
                d = make_doc(f"b{b}-{i}.md", n=8)
                d.vectors = v.astype(np.float32)
                batch.append(d)
            es.commit(MODEL, batch)
            flat.commit(MODEL, batch)
        es.gc()
        flat.gc()
        manifest = es.meta()["vectors"]
        assert manifest["requested"] == kind and manifest["kind"] == kind
        assert [s["kind"] for s in manifest["segments"]] == [kind]
        assert verify(root)["entities"][f"e-{kind}"]["ok"]
        queries = unit(30, 11)
        got = es.vector_search(queries, 10)
        exact = flat.vector_search(queries, 10)
        exact_paths = [{es_path(flat, i) for i, _ in row} for row in exact]
        got_paths = [{es_path(es, i) for i, _ in row} for row in got]
        recall = np.mean([len(a & b) / max(1, len(b)) for a, b in zip(got_paths, exact_paths)])
        assert recall >= 0.8, (kind, recall)
        # a later commit adds a flat segment next to the approximate one; gc keeps both right
        es.commit(MODEL, [make_doc("late.md")])
        assert es.search(make_doc("late.md").vectors[:1], 1)[0][0].path == "late.md"
        es.commit(MODEL, [], removes=[next(r["doc_id"] for r in es.records().values() if r["path"] == "b0-0.md")])
        assert es.gc() == 8  # the approximate segment is rebuilt without the removed vectors
        assert verify(root)["entities"][f"e-{kind}"]["orphans"] == 0


def es_path(es: EntityStore, vid: int) -> tuple[str, int]:
    record = es.owners().owner(vid)
    return (record["path"], vid - record["first_vector_id"])


# ----------------------------------------------------------------------------- merges outside the lock
def pause_merges(monkeypatch) -> tuple[threading.Event, threading.Event]:
    """The next merge output written (outside the entity lock) pauses until `release` is set."""
    started, release = threading.Event(), threading.Event()
    real = segments.write_segment

    def write_segment(path, ids, vectors, kind="flat", **kwargs):
        entry = real(path, ids, vectors, kind, **kwargs)
        if Path(path).name.startswith(compaction.MERGE_PREFIX) and not started.is_set():
            started.set()
            assert release.wait(60)
        return entry

    monkeypatch.setattr(segments, "write_segment", write_segment)
    return started, release


def in_thread(fn, *args) -> tuple[threading.Thread, list]:
    errors: list = []

    def run():
        try:
            fn(*args)
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, errors


def segment_files(root: Path, entity: str = "e") -> tuple[set[str], set[str]]:
    """(names entity.json lists, names in the segments directory)."""
    meta = read_json(root / "entities" / entity / "entity.json")
    listed = {s["name"] for s in meta["vectors"]["segments"]}
    return listed, {p.name for p in (root / "entities" / entity / "segments").iterdir()}


def assert_ids_unique(es: EntityStore) -> None:
    ids = np.concatenate([p.ids for p in es.load_index().parts])
    assert len(ids) == len(np.unique(ids))


@pytest.mark.timeout(120)
def test_a_commit_does_not_wait_for_a_merge_in_progress(tmp_path, monkeypatch):
    """A commit that fills a tier merges after releasing the entity lock: while that merge is
    paused, another writer commits (and gc's garbage removal leaves the merge's files alone);
    then the merge switches in, keeping the segment added meanwhile."""
    monkeypatch.setattr(segments, "FANOUT", 4)
    started, release = pause_merges(monkeypatch)
    root = new_store(tmp_path)
    es = EntityStore(JSONStorage(root), "e")
    docs = {d.path: d for d in (make_doc(f"a{i}.md") for i in range(4))}
    for d in list(docs.values())[:3]:
        es.commit(MODEL, [d])
    merging, errors = in_thread(es.commit, MODEL, [docs["a3.md"]])  # fills tier 0
    assert started.wait(30)
    other = EntityStore(JSONStorage(root, lock_timeout=10), "e")  # times out if the lock is held
    late = make_doc("late.md")
    other.commit(MODEL, [late])
    docs[late.path] = late
    assert other.search(late.vectors[:1], 1)[0][0].path == "late.md"
    other.gc()  # full pass under the lock: must not delete the merge in progress
    listed, on_disk = segment_files(root)
    assert len(listed) == 5 and any(n.startswith(compaction.MERGE_PREFIX) for n in on_disk - listed)
    assert_exact(EntityStore(JSONStorage(root), "e"), docs)  # readers meanwhile
    assert merging.is_alive()
    release.set()
    merging.join(30)
    assert not merging.is_alive() and not errors
    assert [s["tier"] for s in es.meta()["vectors"]["segments"]] == [1, 0]  # merged + late.md's
    listed, on_disk = segment_files(root)
    assert listed == on_disk
    fresh = EntityStore(JSONStorage(root), "e")
    assert_exact(fresh, docs)
    assert_ids_unique(fresh)
    assert verify(root)["ok"]


@pytest.mark.timeout(120)
def test_a_merge_whose_inputs_were_compacted_meanwhile_is_discarded(tmp_path, monkeypatch):
    """gc rewrites an input of a paused merge (it held an orphan): the merge's switch finds
    that input gone and discards its output, then merges what is listed now."""
    monkeypatch.setattr(segments, "FANOUT", 4)
    started, release = pause_merges(monkeypatch)
    outcomes: list[tuple[int, int]] = []  # (jobs, jobs applied) per switch
    real_switch = compaction.Merge.switch

    def switch(self, *args):
        applied = real_switch(self, *args)
        outcomes.append((len(self.jobs), len(applied)))
        return applied

    monkeypatch.setattr(compaction.Merge, "switch", switch)
    root = new_store(tmp_path)
    es = EntityStore(JSONStorage(root), "e")
    docs = {d.path: d for d in (make_doc("a0.md"), make_doc("a1.md"), make_doc("a2.md"))}
    es.commit(MODEL, [docs["a0.md"], docs["a1.md"]])
    es.commit(MODEL, [docs["a2.md"]])
    docs["a0.md"] = make_doc("a0.md", version=1)  # the first segment now holds orphans
    es.commit(MODEL, [docs["a0.md"]])
    docs["a3.md"] = make_doc("a3.md")
    merging, errors = in_thread(es.commit, MODEL, [docs["a3.md"]])  # fills tier 0
    assert started.wait(30)
    other = EntityStore(JSONStorage(root, lock_timeout=10), "e")
    assert other.gc() == 3  # rewrites the first segment without a0 v0's 3 vectors
    assert outcomes == [(1, 1)]
    listed, on_disk = segment_files(root)
    paused_output = [n for n in on_disk - listed if n.startswith(compaction.MERGE_PREFIX) and n.endswith(".seg")]
    assert len(paused_output) == 1  # still there: its merge is in progress
    release.set()
    merging.join(30)
    assert not merging.is_alive() and not errors
    assert outcomes[1] == (1, 0)  # discarded: an input was gone
    assert outcomes[2:] == [(1, 1)]  # then the four segments listed now were merged
    assert not (root / "entities" / "e" / "segments" / paused_output[0]).exists()
    fresh = EntityStore(JSONStorage(root), "e")
    assert_exact(fresh, docs)
    assert_ids_unique(fresh)
    fresh.gc()
    listed, on_disk = segment_files(root)
    assert listed == on_disk and len(listed) == 1
    report = verify(root)
    assert report["ok"] and report["entities"]["e"]["orphans"] == 0


MERGE_KILLED = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from ragctl.storage import segments
    segments.FANOUT = 4
    real = segments.write_segment

    def write_segment(path, ids, vectors, kind="flat", **kwargs):
        entry = real(path, ids, vectors, kind, **kwargs)
        if Path(path).name.startswith(".merge-"):
            print("merging", flush=True)
            time.sleep(120)  # killed here: outside the lock, the output written
        return entry

    segments.write_segment = write_segment
    from ragctl.storage.entity import EntityStore
    from ragctl.storage.json_storage import JSONStorage
    from helpers import SEGMENT_MODEL as MODEL, segment_doc as make_doc

    es = EntityStore(JSONStorage(sys.argv[1]), "e")
    for i in range(4):
        es.commit(MODEL, [make_doc(f"k{i}.md")])
        print("committed", flush=True)
    """
)


@pytest.mark.timeout(120)
def test_kill9_mid_merge_outside_the_lock_leaves_a_store_that_verifies(tmp_path, monkeypatch):
    monkeypatch.setattr(segments, "FANOUT", 4)  # as in the killed process
    root = new_store(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", MERGE_KILLED, str(root), str(Path(__file__).parent)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().strip() for _ in range(4)]
        assert lines == ["committed"] * 3 + ["merging"], proc.stderr.read() if proc.poll() is not None else lines
        late = make_doc("late.md")  # the merging process does not hold the lock; its inputs
        EntityStore(JSONStorage(root, lock_timeout=10), "e").commit(MODEL, [late])  # are not merged again
        assert len(segment_files(root)[0]) == 5
    finally:
        proc.kill()
        proc.wait(30)
    docs = {d.path: d for d in [*(make_doc(f"k{i}.md") for i in range(4)), late]}
    listed, on_disk = segment_files(root)
    stale = {n for n in on_disk - listed if n.startswith(compaction.MERGE_PREFIX)}
    assert {n.rsplit(".", 1)[1] for n in stale} == {"lock", "seg"}  # the killed merge's files
    report = verify(root)
    assert report["ok"] and report["entities"]["e"]["documents"] == 5
    es = EntityStore(JSONStorage(root), "e")
    assert_exact(es, docs)
    es.gc()  # merges the full tier and removes the dead merge's files
    listed, on_disk = segment_files(root)
    assert listed == on_disk and len(listed) == 1
    assert_exact(EntityStore(JSONStorage(root), "e"), docs)
    assert verify(root)["ok"]


# ----------------------------------------------------------------------------- format 2
def write_format2(root: Path, es: EntityStore) -> None:
    """Turn a format-3 entity into what the previous ragctl wrote: one index.faiss, no
    segments, no vectors manifest, no mapping log, store.json format_version 2."""
    import faiss

    es.storage.read_shard(C, es.entity_id)
    records = load_shard_view(root / C / f"{es.entity_id}.json")
    atomic_write_json(root / C / f"{es.entity_id}.json", records)
    log_path(root / C / f"{es.entity_id}.json").unlink(missing_ok=True)
    meta = read_json(es._meta.path)
    union = es.load_index()
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))
    for part in union.parts:
        ids, vecs = segments.segment_vectors(es.index.dir / part.name)
        index.add_with_ids(vecs, ids)
    faiss.write_index(index, str(root / "entities" / es.entity_id / "index.faiss"))
    del meta["vectors"]
    atomic_write_json(es._meta.path, meta)
    for p in es.index.dir.iterdir():
        p.unlink()
    es.index.dir.rmdir()
    manifest = read_json(root / "store.json")
    manifest["format_version"] = 2
    atomic_write_json(root / "store.json", manifest)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("upgrade_by", ["verify-repair", "commit"])
def test_format2_store_opens_migrates_forward_and_verifies(tmp_path, upgrade_by):
    root = new_store(tmp_path)
    es = EntityStore(JSONStorage(root), "old")
    docs = {d.path: d for d in (make_doc(f"d{i}.md") for i in range(12))}
    es.commit(MODEL, list(docs.values())[:6])
    es.commit(MODEL, list(docs.values())[6:])
    queries = unit(4, 5)
    before = [[(h.path, h.chunk, round(h.score, 5)) for h in row] for row in es.search(queries, 5)]
    write_format2(root, es)
    assert (root / "entities" / "old" / "index.faiss").exists()

    old = EntityStore(JSONStorage(root), "old")  # read as it is: same results, verify passes
    assert [[(h.path, h.chunk, round(h.score, 5)) for h in row] for row in old.search(queries, 5)] == before
    assert verify(root)["ok"]
    if upgrade_by == "verify-repair":
        report = verify(root, "--repair")
        assert any("segments" in r for r in report["entities"]["old"]["repaired"])
    else:
        extra = make_doc("new.md")
        old.commit(MODEL, [extra])
        docs[extra.path] = extra
    assert not (root / "entities" / "old" / "index.faiss").exists()
    assert "vectors" in read_json(root / "entities" / "old" / "entity.json")
    report = verify(root)
    assert report["ok"] and report["entities"]["old"]["orphans"] == 0
    assert_exact(EntityStore(JSONStorage(root), "old"), docs)


# ----------------------------------------------------------------------------- processes
WRITER = textwrap.dedent(
    """
    import hashlib, json, sys, time
    import numpy as np
    sys.path.insert(0, sys.argv[4])
    from ragctl.storage import mapping_log, segments
    segments.FANOUT = 3              # compactions every few commits
    mapping_log.FOLD_MIN_BYTES = 3000  # folds every few commits
    segments.ORPHAN_MIN = 20
    from ragctl.storage.entity import EntityStore
    from ragctl.storage.json_storage import JSONStorage
    from helpers import SEGMENT_MODEL as MODEL, segment_doc as make_doc

    root, name, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    es = EntityStore(JSONStorage(root), "e")
    for r in range(rounds):
        batch = [make_doc(f"{name}-{r}-{j}.md") for j in range(3)]
        if r % 4 == 3:  # replace an earlier document: orphans for compaction to drop
            batch.append(make_doc(f"{name}-{r - 3}-0.md", version=r))
        es.commit(MODEL, batch)
        print(json.dumps([[d.path, d.content_hash] for d in batch]), flush=True)
        if r % 10 == 9:
            es.gc()
            print("gc", flush=True)
    """
)


def writer(root: Path, name: str, rounds: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), name, str(rounds), str(Path(__file__).parent)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def committed(lines: list[str]) -> dict[str, str]:
    """path -> content hash of every batch the writer reported committed (last version wins)."""
    out: dict[str, str] = {}
    for line in lines:
        if line.startswith("["):
            out.update({p: h for p, h in json.loads(line)})
    return out


def version_of(path: str, content_hash: str) -> int:
    return next(v for v in range(0, 500) if hashlib.sha256(f"{path} v{v}".encode()).hexdigest() == content_hash)


def check_after(root: Path, reported: dict[str, str]) -> None:
    report = verify(root)
    assert report["ok"], report
    if "e" not in report["entities"]:
        assert not reported
        return
    es = EntityStore(JSONStorage(root), "e")
    records = {r["path"]: r for r in es.records().values()}
    for path, h in reported.items():
        assert path in records, path
        if records[path]["content_hash"] != h:  # a later, uncommitted-when-killed version may win
            continue
    # every mapped document intact and findable
    index = es.load_index()
    texts = es.texts.fetch(sorted(i for r in records.values() for i in vector_ids(r)))
    for path, record in records.items():
        want = make_doc(path, version_of(path, record["content_hash"]))
        for i, vid in enumerate(vector_ids(record)):
            assert texts[vid] == want.chunks[i]
            assert np.allclose(index.reconstruct(vid), want.vectors[i], atol=1e-6)
    sample = random.Random(0).sample(sorted(records), min(10, len(records)))
    for path in sample:
        record = records[path]
        want = make_doc(path, version_of(path, record["content_hash"]))
        assert es.search(want.vectors[:1], 1)[0][0].path == path


@pytest.mark.timeout(300)
def test_two_writer_processes_stay_exactly_once(tmp_path):
    root = new_store(tmp_path)
    procs = [writer(root, name, 24) for name in ("p", "q")]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    reported = {}
    for out, _ in outs:
        reported.update(committed(out.splitlines()))
    check_after(root, reported)
    es = EntityStore(JSONStorage(root), "e")
    assert len(es.records()) == len(reported)
    es.gc()
    report = verify(root)["entities"]["e"]
    assert report["orphans"] == 0 and report["documents"] == len(reported)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_kill9_of_a_committing_process_at_random_instants(tmp_path):
    """A writer committing in a loop (small fanout and fold threshold: compactions and folds
    every few commits) is killed with SIGKILL at random instants; after each kill verify
    passes and every batch it reported committed is intact and searchable."""
    seed = int(os.environ.get("RAGCTL_TEST_SEED") or random.randrange(1 << 30))
    print(f"RAGCTL_TEST_SEED={seed}")
    rng = random.Random(seed)
    root = new_store(tmp_path)
    reported: dict[str, str] = {}
    kinds = Counter()
    for trial in range(int(os.environ.get("RAGCTL_KILL_TRIALS") or 16)):
        proc = writer(root, f"t{trial}", 400)
        assert proc.stdout is not None
        first = proc.stdout.readline()  # the first batch is committed: kill at a random instant after
        time.sleep(rng.uniform(0.0, 2.5))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=60)
        lines = [first.strip(), *out.splitlines()]
        reported.update(committed(lines))
        kinds["after gc" if lines and lines[-1] == "gc" else "mid-commits"] += 1
        leftovers = sorted(p.name for p in (root / "entities" / "e").rglob(".*.tmp"))
        if leftovers:
            kinds["temp files left"] += 1
        meta = read_json(root / "entities" / "e" / "entity.json") or {}
        listed = {x["name"] for x in meta.get("vectors", {}).get("segments", [])}
        on_disk = {p.name for p in (root / "entities" / "e" / "segments").glob("*.seg")}
        if on_disk - listed:
            kinds["unlisted segments (killed in step 2 or a compaction)"] += 1
        if listed - on_disk:
            raise AssertionError(f"live segments missing: {listed - on_disk}")
        log = log_path(root / C / "e.json")
        if log.exists():
            view = ShardView(root / C / "e.json")
            view.refresh()
            if not view.log_applies:
                kinds["stale log (killed inside a fold)"] += 1
            elif log.stat().st_size != view.log_valid:
                kinds["torn log tail"] += 1
        check_after(root, reported)
    print(dict(kinds))
    es = EntityStore(JSONStorage(root), "e")
    es.gc()
    assert verify(root)["entities"]["e"]["orphans"] == 0



@pytest.mark.timeout(60)
def test_a_merge_that_fails_after_the_commit_point_leaves_the_commit_standing(tmp_path, monkeypatch):
    """Disk full while writing a merge (after the commit's own log line is durable): the commit
    reports its documents indexed with a maintenance error instead of failing them; the store
    verifies; with room again, the next commit does the merge."""
    import errno

    from ragctl.errors import StorageError

    monkeypatch.setattr(segments, "FANOUT", 4)
    root = new_store(tmp_path)
    es = EntityStore(JSONStorage(root), "e")
    docs = {}
    for i in range(3):
        d = make_doc(f"d{i}.md", version=i)
        assert es.commit(MODEL, [d]).maintenance_error == ""
        docs[d.path] = d

    real_write = compaction.Merge.write

    def disk_full(self):
        raise StorageError(f"{self.dir}/x.seg: cannot write: {os.strerror(errno.ENOSPC)}")

    monkeypatch.setattr(compaction.Merge, "write", disk_full)
    fourth = make_doc("d3.md", version=3)
    result = es.commit(MODEL, [fourth])  # the fourth tier-0 segment fills the tier: a merge
    assert result.status == {"d3.md": "indexed"}
    assert "compaction after the commit failed (the commit stands)" in result.maintenance_error
    assert "No space left on device" in result.maintenance_error
    docs[fourth.path] = fourth
    assert_exact(es, docs)
    assert verify(root)["ok"]
    assert len(es.meta()["vectors"]["segments"]) == 4  # not merged

    monkeypatch.setattr(compaction.Merge, "write", real_write)
    fifth = make_doc("d4.md", version=4)
    assert es.commit(MODEL, [fifth]).maintenance_error == ""
    docs[fifth.path] = fifth
    assert len(es.meta()["vectors"]["segments"]) < 4  # merged now
    assert_exact(es, docs)
    assert verify(root)["ok"]


@pytest.mark.timeout(60)
def test_a_listed_segment_gone_from_disk_does_not_make_compaction_loop(tmp_path, monkeypatch):
    """A merge whose input vanished applies nothing and plans nothing more: the commit that
    filled the tier returns (it used to re-plan the same merge forever)."""
    monkeypatch.setattr(segments, "FANOUT", 2)
    root = new_store(tmp_path)
    es = EntityStore(JSONStorage(root), "e")
    es.commit(MODEL, [make_doc("a.md")])
    first = es.meta()["vectors"]["segments"][0]["name"]
    (root / "entities" / "e" / "segments" / first).unlink()  # damage from outside ragctl
    switches = []
    real_switch = compaction.Merge.switch
    monkeypatch.setattr(compaction.Merge, "switch", lambda self, *a: switches.append(1) or real_switch(self, *a))
    result = es.commit(MODEL, [make_doc("b.md")])  # fills tier 0: a merge that cannot read its input
    assert result.status == {"b.md": "indexed"}
    assert len(switches) == 1
    assert not verify(root)["ok"]  # the damage is reported, not hidden


@pytest.mark.timeout(60)
def test_a_failure_planning_the_merge_after_the_commit_point_leaves_the_commit_standing(tmp_path, monkeypatch):
    import errno

    monkeypatch.setattr(segments, "FANOUT", 2)
    root = new_store(tmp_path)
    es = EntityStore(JSONStorage(root), "e")
    es.commit(MODEL, [make_doc("a.md")])

    def disk_full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(compaction.Merge, "__init__", disk_full)
    result = es.commit(MODEL, [make_doc("b.md")])
    assert result.status == {"b.md": "indexed"}
    assert "compaction after the commit failed (the commit stands): " in result.maintenance_error
    monkeypatch.undo()
    assert sorted(r["path"] for r in es.records().values()) == ["a.md", "b.md"]
    assert verify(root)["ok"]


@pytest.mark.timeout(60)
def test_monolithic_commit_keeps_its_own_vectors_when_orphans_pile_up(tmp_path, monkeypatch):
    """In a monolithic store a commit's records reach the mapping file only when its lock is
    released: an orphan pass inside the commit would take the commit's own vectors for orphans.
    Orphans are dropped by gc there instead."""
    monkeypatch.setattr(segments, "ORPHAN_MIN", 2)
    monkeypatch.setattr(segments, "ORPHAN_SHARE", 0.0)
    root = tmp_path / "store"
    open_store_manifest(root, sharding=False)
    es = EntityStore(JSONStorage(root, enable_sharding=False), "e")
    docs = {}
    for version in range(4):  # each commit replaces a.md: orphans pile up
        d = make_doc("a.md", version=version, n=4)
        es.commit(MODEL, [d, make_doc(f"n{version}.md", n=4)])
        docs["a.md"] = d
        docs[f"n{version}.md"] = make_doc(f"n{version}.md", n=4)
    assert_exact(es, docs)
    es.gc()
    assert_exact(es, docs)
    report = verify(root)
    assert report["ok"] and report["entities"]["e"]["orphans"] == 0


@pytest.mark.timeout(60)
def test_commits_during_an_orphan_rewrite_do_not_plan_it_again(tmp_path, monkeypatch):
    """While a merge dropping orphans runs (outside the lock), later commits see the orphans
    still there but do not redo the O(entity) orphan pass under the lock for every commit."""
    monkeypatch.setattr(segments, "ORPHAN_MIN", 2)
    monkeypatch.setattr(segments, "ORPHAN_SHARE", 0.0)
    started, release = pause_merges(monkeypatch)
    root = new_store(tmp_path)
    es = EntityStore(JSONStorage(root), "e")
    es.commit(MODEL, [make_doc("a.md"), make_doc("b.md")])
    passes = []
    real_referenced = EntityStore._referenced_ids
    monkeypatch.setattr(EntityStore, "_referenced_ids", lambda self: passes.append(1) or real_referenced(self))
    docs = {"a.md": make_doc("a.md", version=1), "b.md": make_doc("b.md")}
    merging, errors = in_thread(es.commit, MODEL, [docs["a.md"]])  # 3 orphans: a rewrite is planned
    assert started.wait(30)
    assert passes == [1]
    other = EntityStore(JSONStorage(root, lock_timeout=10), "e")
    for i in range(3):
        d = make_doc(f"n{i}.md")
        other.commit(MODEL, [d])
        docs[d.path] = d
    assert passes == [1]  # none of the three commits redid the pass
    release.set()
    merging.join(30)
    assert not merging.is_alive() and not errors
    fresh = EntityStore(JSONStorage(root), "e")
    assert_exact(fresh, docs)
    assert verify(root)["ok"]


# ----------------------------------------------------------------------------- passage sections
def shared_doc(path: str, shared: list[str], seed: int) -> PreparedDoc:
    """A document whose chunks are `shared` passages plus one of its own."""
    chunks = [*shared, f"{path}: a passage of its own"]
    return PreparedDoc(path, hashlib.sha256("\n".join(chunks).encode()).hexdigest(), 10, 0, chunks, unit(len(chunks), seed))


def entity_sharing(tmp_path: Path, passage: str, paths: list[str]) -> tuple[Path, EntityStore]:
    """A store whose entity "e" holds documents `paths`, each holding `passage`, one commit each."""
    root = new_store(tmp_path)
    es = EntityStore(JSONStorage(root), "e")
    for n, path in enumerate(paths):
        es.commit(MODEL, [shared_doc(path, [passage], n)])
    return root, es


def holder_paths(es: EntityStore, text: str) -> set[str]:
    from ragctl.storage.chunk_texts import passage_key

    rows = es.holders([passage_key(text)]).get(passage_key(text), [])
    owners = es.owners()
    return {owners.owner(vid)["path"] for vid, _doc, _ord in rows if owners.owner(vid) is not None}


@pytest.mark.timeout(120)
def test_passage_holders_are_found_through_segment_sections_across_merges_without_an_sql_index(tmp_path, monkeypatch):
    monkeypatch.setattr(segments, "FANOUT", 3)  # tier merges after a few commits
    root = new_store(tmp_path)
    es = EntityStore(JSONStorage(root), "e")
    boiler = "This policy applies to every contract signed by the customer."
    es.commit(MODEL, [shared_doc("first.md", [boiler], 1)])
    for i in range(12):  # commits enough to merge the first segment twice
        es.commit(MODEL, [make_doc(f"filler{i}.md")])
    es.commit(MODEL, [shared_doc("late.md", [boiler], 2)])
    manifest = es.index.manifest()
    assert len(manifest["segments"]) < 14 and all(s.get("passages") for s in manifest["segments"])
    assert max(s.get("tier", 0) for s in manifest["segments"]) >= 1  # merged segments carry sections
    # a passage stored by another document in an earlier commit is found, with every holder
    assert holder_paths(es, boiler) == {"first.md", "late.md"}
    assert holder_paths(es, "late.md: a passage of its own") == {"late.md"}
    assert holder_paths(es, "a passage nobody stored") == set()
    # a commit adds its keys to no shared b-tree: a store made now has no SQL index over them
    assert not es.texts.has_passage_index()
    # an orphan rewrite (the first holder replaced) drops its keys with its vectors
    es.commit(MODEL, [shared_doc("first.md", ["first.md has new words now"], 3)])
    es.gc(force=True)
    assert holder_paths(es, boiler) == {"late.md"}
    assert verify(root)["ok"]


@pytest.mark.timeout(120)
def test_a_store_from_before_passage_sections_is_upgraded_by_its_gc_without_rewriting_its_vectors(tmp_path):
    boiler = "Shared terms and conditions, pasted into many files."
    root, es = entity_sharing(tmp_path, boiler, [f"d{i}.md" for i in range(4)])
    strip_passage_sections(root, "e", sql_index=True)
    old = {e["name"]: segments.segment_vectors(es.index.dir / e["name"]) for e in es.index.manifest()["segments"]}
    es = EntityStore(JSONStorage(root), "e")  # a fresh process
    assert es.index.passage_ids(segments.passage_prefixes([b"x" * 16])) is None  # no sections: SQL
    assert holder_paths(es, boiler) == {f"d{i}.md" for i in range(4)}
    assert verify(root)["ok"]
    # a commit on the old store keeps the SQL index (a segment still has no section)...
    es.commit(MODEL, [shared_doc("d4.md", [boiler], 4)])
    assert es.texts.has_passage_index() and holder_paths(es, boiler) == {f"d{i}.md" for i in range(5)}
    # ...the end of the ingest (gc) gives every old segment its section, copying its vectors
    # byte for byte, and then drops the SQL index
    es.gc()
    manifest = es.index.manifest()
    assert all(s.get("passages") for s in manifest["segments"])
    assert not es.texts.has_passage_index()
    # (a file with a section has its own magic: a release from before sections refuses it)
    assert {(es.index.dir / e["name"]).read_bytes()[:8] for e in manifest["segments"]} == {segments.MAGIC_PASSAGES}
    after = [segments.segment_vectors(es.index.dir / e["name"]) for e in manifest["segments"]]
    for ids, vecs in old.values():
        match = [(a, v) for a, v in after if np.array_equal(a, ids)]
        assert match and np.array_equal(match[0][1], vecs)
    assert holder_paths(es, boiler) == {f"d{i}.md" for i in range(5)}
    assert verify(root)["ok"]


@pytest.mark.timeout(120)
def test_a_segment_marked_with_a_section_that_its_file_lacks_is_reported_and_repaired(tmp_path):
    boiler = "The same footer again."
    root, es = entity_sharing(tmp_path, boiler, ["a.md", "b.md"])
    entry = es.index.manifest()["segments"][0]
    path = es.index.dir / entry["name"]
    ids, vecs = segments.segment_vectors(path)
    segments.write_segment(path, ids, vecs)  # the file loses its section; entity.json still marks it
    report = verify(root)
    assert not report["ok"] and any(entry["name"] in p for p in report["entities"]["e"]["problems"])
    assert holder_paths(EntityStore(JSONStorage(root), "e"), boiler) == {"a.md", "b.md"}  # (SQL: correct)
    repaired = verify(root, "--repair")
    assert repaired["ok"], repaired
    es = EntityStore(JSONStorage(root), "e")
    assert es.index.passage_ids(segments.passage_prefixes([b"x" * 16])) is not None  # sections again
    assert holder_paths(es, boiler) == {"a.md", "b.md"}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("with_orphans", [False, True])
def test_verify_finds_a_passage_section_that_disagrees_with_the_rows_and_repair_rebuilds_it(tmp_path, with_orphans):
    boiler = "A disclaimer every page repeats."
    root = new_store(tmp_path)
    es = EntityStore(JSONStorage(root), "e")
    es.commit(MODEL, [shared_doc("a.md", [boiler], 1), shared_doc("c.md", ["c.md says its own thing"], 3)])
    es.commit(MODEL, [shared_doc("b.md", [boiler], 2)])
    entry = es.index.manifest()["segments"][0]
    path = es.index.dir / entry["name"]
    ids, vecs = segments.segment_vectors(path)
    segments.write_segment(path, ids, vecs, prefixes=np.arange(len(ids), dtype=np.uint64))  # wrong keys
    if with_orphans:  # the damaged segment is also one the repair's gc rewrites to drop orphans
        es.commit(MODEL, [shared_doc("c.md", ["c.md was edited"], 4)])
    es = EntityStore(JSONStorage(root), "e")
    assert holder_paths(es, boiler) == {"b.md"}  # what the damage does: a holder is not found
    report = verify(root)
    assert not report["ok"]
    assert any(entry["name"] in p and "passage section" in p for p in report["entities"]["e"]["problems"])
    repaired = verify(root, "--repair")
    assert repaired["ok"], repaired
    assert any("1 passage sections missing or disagreeing" in line for line in repaired["entities"]["e"]["repaired"])
    assert repaired["entities"]["e"]["segments_without_passage_sections"] == 0
    assert holder_paths(EntityStore(JSONStorage(root), "e"), boiler) == {"a.md", "b.md"}


UPGRADE_KILLED = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from ragctl.storage import segments
    real = segments.copy_with_passages

    def copy_with_passages(source, path, prefixes):
        entry = real(source, path, prefixes)
        print("copied", flush=True)
        time.sleep(120)  # killed here: the copy written, not switched in
        return entry

    segments.copy_with_passages = copy_with_passages
    from ragctl.storage.entity import EntityStore
    from ragctl.storage.json_storage import JSONStorage

    EntityStore(JSONStorage(sys.argv[1]), "e").gc()
    """
)


@pytest.mark.timeout(120)
def test_kill9_while_an_old_store_gets_its_passage_sections_leaves_it_answering_and_repair_finishes(tmp_path):
    boiler = "The same footer, on every page."
    paths = [f"p{i}.md" for i in range(3)]
    root, es = entity_sharing(tmp_path, boiler, paths)
    strip_passage_sections(root, "e", sql_index=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", UPGRADE_KILLED, str(root), str(Path(__file__).parent)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line == "copied", proc.stderr.read() if proc.poll() is not None else line
    finally:
        proc.kill()
        proc.wait(30)
    es = EntityStore(JSONStorage(root), "e")
    assert not any(s.get("passages") for s in es.index.manifest()["segments"])  # nothing switched in
    assert es.texts.has_passage_index() and holder_paths(es, boiler) == set(paths)
    report = verify(root)
    assert report["ok"] and report["entities"]["e"]["segments_without_passage_sections"] == 3
    repaired = verify(root, "--repair")  # (as the next ingest's gc would)
    assert repaired["ok"] and repaired["entities"]["e"]["segments_without_passage_sections"] == 0
    assert "segments without a passage section (written before them): 3 before, 0 now" in repaired["entities"]["e"]["repaired"]
    assert all(s.get("passages") for s in es.index.manifest()["segments"])
    assert not es.texts.has_passage_index()
    listed, on_disk = segment_files(root)
    assert listed == on_disk  # the killed upgrade's copy and lock file are gone
    assert holder_paths(EntityStore(JSONStorage(root), "e"), boiler) == set(paths)
    assert verify(root)["ok"]
