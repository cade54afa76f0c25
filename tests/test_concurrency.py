"""Concurrent writers (issue 3): real threads, real processes, real FAISS, real locks.

The vector-store tests build `PreparedDoc`s by hand (dim 8, random unit vectors, a fake model
identity), so they need no model; the last test runs two real `ragctl ingest` processes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ragctl.storage.entity import EntityStore, PreparedDoc
from ragctl.storage.json_storage import JSONStorage
from ragctl.storage.layout import open_store_manifest
from ragctl.storage.owners import vector_ids
from ragctl.verify import verify_store

DIM = 8
FAKE_MODEL = {"name": "fake-8d", "digest": "f" * 64, "dim": DIM}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def make_doc(path: str, text: str, n_chunks: int = 2) -> PreparedDoc:
    """A document whose chunk texts and vectors are derived from its content (checkable later)."""
    rng = np.random.default_rng(int(sha(text)[:12], 16))
    vectors = rng.standard_normal((n_chunks, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    chunks = [f"{text} [chunk {i}]" for i in range(n_chunks)]
    return PreparedDoc(path, sha(text), len(text), 0, chunks, vectors, "test")


def run_threads(n: int, target) -> list:
    """Start n threads on target(i) at the same instant; re-raise the first error."""
    barrier = threading.Barrier(n)
    results: list = [None] * n
    errors: list[BaseException] = []

    def body(i: int) -> None:
        try:
            barrier.wait()
            results[i] = target(i)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a writer thread hung"
    if errors:
        raise errors[0]
    return results


def assert_consistent(root: Path, expected: dict[str, dict[str, str]]) -> None:
    """Mapping, index and chunk texts agree exactly; `expected` is {entity: {path: text}}."""
    report = verify_store(root)
    assert report["ok"], json.dumps(report, indent=1)
    storage = JSONStorage(root)
    for entity, docs in expected.items():
        store = EntityStore(storage, entity)
        store.gc()  # pending orphans (replaced versions) go; what remains must match exactly
        records = store.records()
        assert report["entities"][entity]["documents"] == len(docs)
        by_path = {r["path"]: r for r in records.values()}
        assert len(by_path) == len(records) == len(docs), "a document is missing or doubled"
        assert set(by_path) == set(docs)
        hashes = Counter(r["content_hash"] for r in records.values())
        assert max(hashes.values()) == 1, "the same content is indexed twice"
        refs = Counter(i for r in records.values() for i in vector_ids(r))
        assert max(refs.values()) == 1, "a vector id is referenced twice"
        index = store.load_index()
        assert index is not None and index.d == DIM
        assert set(store.index.ids(index).tolist()) == set(refs) == set(store.texts.row_ids().tolist())
        texts = store.texts.fetch(sorted(refs))
        for path, text in docs.items():
            record = by_path[path]
            want = make_doc(path, text, int(record["chunk_count"]))
            assert record["content_hash"] == want.content_hash, f"{path}: the mapping holds another version"
            for i, vid in enumerate(vector_ids(record)):
                assert texts[vid] == want.chunks[i], f"{path}: chunk text {vid} belongs to another document"
                assert np.allclose(index.reconstruct(vid), want.vectors[i], atol=1e-6), f"{path}: vector {vid} mismatched"


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    open_store_manifest(root)  # what `ragctl ingest` does first; verify needs it
    return root


# ----------------------------------------------------------------------------- threads
ROUNDS, PER_COMMIT = 10, 2


@pytest.mark.timeout(120)
def test_threads_writing_different_entities(store_root):
    storage = JSONStorage(store_root)

    def writer(t: int) -> dict[str, str]:
        entity = f"ent-{t}"
        store = EntityStore(storage, entity)
        written = {}
        for r in range(ROUNDS):
            docs = {f"r{r}/d{j}.md": f"entity {entity} round {r} doc {j}" for j in range(PER_COMMIT)}
            result = store.commit(FAKE_MODEL, [make_doc(p, x, 1 + (r + j) % 3) for j, (p, x) in enumerate(docs.items())])
            assert set(result.status.values()) == {"indexed"}
            written.update(docs)
        return written

    results = run_threads(8, writer)
    assert_consistent(store_root, {f"ent-{t}": docs for t, docs in enumerate(results)})


@pytest.mark.timeout(120)
@pytest.mark.parametrize("shared_instance", [False, True], ids=["instance-per-thread", "one-instance"])
def test_threads_writing_the_same_entity(store_root, shared_instance):
    """Own documents, identical documents from every thread, and one path every thread rewrites."""
    storage = JSONStorage(store_root)
    shared_store = EntityStore(storage, "acme")
    statuses: list[tuple[str, str]] = []
    lock = threading.Lock()

    def writer(t: int) -> dict[str, str]:
        store = shared_store if shared_instance else EntityStore(JSONStorage(store_root), "acme")
        own = {}
        for r in range(ROUNDS):
            docs = {f"t{t}/r{r}-{j}.md": f"thread {t} round {r} doc {j}" for j in range(PER_COMMIT)}
            adds = [make_doc(p, x, 1 + (t + r + j) % 3) for j, (p, x) in enumerate(docs.items())]
            adds.append(make_doc(f"common/shared-{r}.md", f"the same text every thread sends, round {r}"))
            adds.append(make_doc(f"copies/t{t}-r{r}.md", f"the same text every thread sends, round {r}"))
            adds.append(make_doc("common/contended.md", f"version by thread {t} in round {r}", 3))
            result = store.commit(FAKE_MODEL, adds)
            with lock:
                statuses.extend((p, s) for p, s in result.status.items() if not p.startswith("t"))
            assert all(result.status[p] == "indexed" for p in docs)
            own.update(docs)
        return own

    results = run_threads(8, writer)
    per_path: dict[str, Counter] = {}
    for path, status in statuses:
        per_path.setdefault(path, Counter())[status] += 1
    for r in range(ROUNDS):
        shared = per_path[f"common/shared-{r}.md"]
        copies = sum((per_path.get(f"copies/t{t}-r{r}.md", Counter()) for t in range(8)), Counter())
        # exactly one thread indexed the shared text; everyone else saw it as unchanged/duplicate
        assert shared["indexed"] + copies["indexed"] == 1, (shared, copies)
        assert sum(shared.values()) + sum(copies.values()) == 16
    assert per_path["common/contended.md"] == Counter(indexed=1, updated=8 * ROUNDS - 1)

    expected = {p: x for docs in results for p, x in docs.items()}
    records = EntityStore(storage, "acme").records()
    by_path = {r["path"]: r for r in records.values()}
    for r in range(ROUNDS):
        text = f"the same text every thread sends, round {r}"
        holders = [p for p, rec in by_path.items() if rec["content_hash"] == sha(text)]
        assert len(holders) == 1
        expected[holders[0]] = text
    # the last commit of all is some thread's last round
    last = [f"version by thread {t} in round {ROUNDS - 1}" for t in range(8)]
    contended = next(x for x in last if sha(x) == by_path["common/contended.md"]["content_hash"])
    expected["common/contended.md"] = contended
    assert_consistent(store_root, {"acme": expected})
    assert len(records) == 8 * ROUNDS * PER_COMMIT + ROUNDS + 1


# ----------------------------------------------------------------------------- processes
COUNTER_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from ragctl.storage.json_storage import JSONStorage

    root, n, me, go = sys.argv[1], int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    storage = JSONStorage(root)
    inside = Path(root) / "inside.marker"
    while not go.exists():
        time.sleep(0.002)
    for _ in range(n):
        with storage.edit("counters", "shared") as data:
            if inside.exists():
                sys.exit("two writers inside the lock at once")
            inside.touch()
            record = data.setdefault("c", {"doc_id": "c", "entity_id": "shared", "value": 0, "by": {}})
            record["value"] += 1
            record["by"][me] = record["by"].get(me, 0) + 1
            inside.unlink()
    """
)


@pytest.mark.timeout(180)
def test_processes_read_modify_write_one_shard(tmp_path):
    procs_n, increments = 6, 200
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", COUNTER_SCRIPT, str(tmp_path / "s"), str(increments), f"p{i}", str(go)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(procs_n)
    ]
    go.touch()  # all start incrementing together (after their imports)
    errors = []
    for p in procs:
        _, err = p.communicate(timeout=170)
        if p.returncode:
            errors.append(err)
    assert not errors, errors
    record = JSONStorage(tmp_path / "s").find("counters", {"entity_id": "shared"})[0]
    assert record["value"] == procs_n * increments
    assert record["by"] == {f"p{i}": increments for i in range(procs_n)}
    leftovers = [p.name for p in (tmp_path / "s" / "counters").iterdir()]
    assert sorted(leftovers) == ["shared.json", "shared.json.lock"]  # no temp files left behind


# ----------------------------------------------------------------------------- two ingests
def supported_files(root: Path) -> dict[str, set[str]]:
    from ragctl.discovery import walk_files
    from ragctl.parsing import is_supported

    return {
        e.name: {f.rel_path for f in walk_files(e) if is_supported(f.abs_path)}
        for e in sorted(root.iterdir())
        if e.is_dir()
    }


@pytest.mark.timeout(240)
def test_two_ingest_processes_on_one_store(tmp_path, sample_docs, ragctl_cmd):
    root, store = tmp_path / "docs", tmp_path / "store"
    shutil.copytree(sample_docs, root)
    files = supported_files(root)
    cmd = [*ragctl_cmd, "ingest", str(root), "--store", str(store), "--json", "--quiet"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=220) for p in procs]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    reports = [json.loads(out) for out, _ in outs]

    storage = JSONStorage(store)
    for entity, paths in files.items():
        rows = [r["entities"][entity] for r in reports]
        assert all(row["failed"] == 0 and row["skipped"] == 0 for row in rows), rows
        # every file indexed by exactly one of the two runs; the other saw it as unchanged
        assert sum(row["indexed"] for row in rows) == len(paths), rows
        assert sum(row["unchanged"] for row in rows) == len(paths), rows
        records = EntityStore(storage, entity).records()
        assert sorted(r["path"] for r in records.values()) == sorted(paths)
        assert len({r["content_hash"] for r in records.values()}) == len(paths)
        for r in records.values():
            assert r["content_hash"] == hashlib.sha256((root / entity / r["path"]).read_bytes()).hexdigest()
    report = verify_store(store)  # what `ragctl verify --json` prints (in-process: no interpreter start)
    assert report["ok"], json.dumps(report, indent=1)
    for entity, paths in files.items():
        assert report["entities"][entity]["documents"] == len(paths)
        assert report["entities"][entity]["orphans"] == 0


@pytest.mark.timeout(60)
def test_vector_ids_are_never_reused_after_orphans_are_dropped(store_root):
    """A reader holding an old id must never find another document's text under it."""
    storage = JSONStorage(store_root)
    entity = EntityStore(storage, "acme")
    entity.commit(FAKE_MODEL, adds=[make_doc("a.md", "first file", n_chunks=3)])
    entity.commit(FAKE_MODEL, adds=[make_doc("b.md", "second file", n_chunks=3)])
    b = next(r for r in entity.records().values() if r["path"] == "b.md")
    old_ids = set(vector_ids(b))  # the highest ids in the entity
    entity.commit(FAKE_MODEL, removes=[b["doc_id"]])
    assert entity.gc() == 3  # b's vectors were orphans: dropped
    entity.commit(FAKE_MODEL, adds=[make_doc("c.md", "third file", n_chunks=3)])
    used = {i for r in entity.records().values() for i in vector_ids(r)}
    assert not used & old_ids
    assert verify_store(store_root)["ok"]
