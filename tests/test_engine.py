"""The ingest engine never hangs: every failure of a stage ends the run within seconds with a
one-line reason, the documented exit code, what was committed, and a store `verify` passes.

Failures are real: an exception raised in the committer's and the embedder's own threads, a
parser process that dies by SIGSEGV or SIGKILL in the middle of a file, a parser that never
returns, a full disk (tests/test_crash.py).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from helpers import cli, make_tree

FAULTS = Path(__file__).parent / "fault"
FP32 = {"backend": "torch", "precision": "fp32", "device": "cpu", "runtime": "test"}  # what embedded a hand-made doc



def paragraphs(topic: str, n: int = 3) -> str:
    return "\n\n".join(f"{topic} paragraph {i}: " + " ".join(f"{topic}{i}w{j}" for j in range(40)) for i in range(n))


def verify_ok(store: Path) -> dict:
    result = cli("verify", "--store", store, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def tree(tmp_path: Path, entities=("alpha", "beta"), per_entity: int = 3) -> Path:
    root = tmp_path / "docs"
    make_tree(root, {f"{e}/doc{i}.md": paragraphs(f"{e}{i}") for e in entities for i in range(per_entity)})
    return root


@pytest.mark.timeout(120)
def test_an_exception_in_the_committer_stops_the_run_with_a_reason(tmp_path, monkeypatch, embedder):
    from ragctl.storage.entity import EntityStore

    root, store = tree(tmp_path), tmp_path / "store"

    def broken_commit(self, *args, **kwargs):
        raise RuntimeError("boom in commit")

    monkeypatch.setattr(EntityStore, "commit", broken_commit)
    started = time.monotonic()
    result = cli("ingest", root, "--store", store, "--json", "--quiet", "--workers", "2")
    assert time.monotonic() - started < 60
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["error"] == "commit stage failed: RuntimeError: boom in commit"
    assert "commit stage failed: RuntimeError: boom in commit" in result.stderr
    assert "Traceback" not in result.output
    monkeypatch.undo()
    verify_ok(store)
    rerun = json.loads(cli("ingest", root, "--store", store, "--json", "--quiet").stdout)
    assert sum(e["indexed"] for e in rerun["entities"].values()) == 6


@pytest.mark.timeout(120)
def test_an_exception_in_the_embedder_stops_the_run_and_keeps_what_was_committed(tmp_path, monkeypatch, embedder):
    root, store = tree(tmp_path), tmp_path / "store"
    assert cli("ingest", root, "--store", store, "--quiet").exit_code == 0
    (root / "alpha" / "new.md").write_text(paragraphs("fresh"))
    before = (store / "doc_id_name_mapping" / "alpha.json").read_bytes()

    def out_of_memory(texts):
        raise MemoryError("cannot allocate 3 GB")

    monkeypatch.setattr(embedder, "encode", out_of_memory)
    started = time.monotonic()
    result = cli("ingest", root, "--store", store, "--json", "--quiet")
    assert time.monotonic() - started < 60
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["error"] == "embed stage failed: MemoryError: cannot allocate 3 GB"
    assert (store / "doc_id_name_mapping" / "alpha.json").read_bytes() == before
    monkeypatch.undo()
    verify_ok(store)


@pytest.mark.timeout(120)
def test_a_store_failure_in_one_entity_never_stops_the_others(tmp_path, monkeypatch, embedder):
    from ragctl.errors import StorageError
    from ragctl.storage.entity import EntityStore

    root, store = tree(tmp_path), tmp_path / "store"
    real_commit = EntityStore.commit

    def flaky(self, *args, **kwargs):
        if self.entity_id == "alpha":
            raise StorageError(f"{store}/entities/alpha/index.faiss: cannot write: No space left on device")
        return real_commit(self, *args, **kwargs)

    monkeypatch.setattr(EntityStore, "commit", flaky)
    result = cli("ingest", root, "--store", store, "--json", "--quiet")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["error"] is None
    assert report["entities"]["beta"]["indexed"] == 3
    assert report["entities"]["alpha"]["failed"] == 3
    assert all("No space left on device" in f["error"] and f["entity"] == "alpha" for f in report["failures"])
    monkeypatch.undo()
    verify_ok(store)


def faults_in_this_process(monkeypatch) -> None:
    """The ingest runs in this process (the session model, no interpreter start); its parse
    workers are spawned processes that load tests/fault from PYTHONPATH and really crash or
    hang there. This process only needs to know the three fault suffixes as supported."""
    import ragctl.parsing as parsing
    from ragctl.parsing import native

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(FAULTS), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("RAGCTL_FAULTS", "1")
    for suffix in (".segv", ".killme", ".hang"):
        monkeypatch.setitem(native.READERS, suffix, native.Reader("fault", lambda _data: None, "bytes"))
    monkeypatch.setattr(parsing, "SUPPORTED_SUFFIXES", frozenset(native.READERS))


@pytest.mark.timeout(240)
def test_a_parser_that_crashes_or_hangs_fails_only_its_file(tmp_path, monkeypatch, embedder):
    """SIGSEGV and SIGKILL in the middle of a file, and a parser that never returns: each fails
    its own file with the reason; every other file is indexed, in parallel, in one run."""
    root = tree(tmp_path, per_entity=6)
    make_tree(root, {"alpha/crash.segv": "x", "alpha/oom.killme": "x", "beta/stuck.hang": "x", "beta/crash2.segv": "x"})
    store = tmp_path / "store"
    faults_in_this_process(monkeypatch)
    args = ("ingest", root, "--store", store, "--json", "--quiet", "--workers", "2", "--parse-timeout", "5")
    started = time.monotonic()
    result = cli(*args)
    took = time.monotonic() - started
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.stderr, result.stderr
    report = json.loads(result.stdout)
    assert report["parse_workers"] == 2
    errors = {f["path"]: f["error"] for f in report["failures"]}
    assert errors == {
        "crash.segv": "parser process crashed (SIGSEGV) while parsing this file",
        "oom.killme": "parser process crashed (SIGKILL) while parsing this file",
        "stuck.hang": "parse timed out after 5 s",
        "crash2.segv": "parser process crashed (SIGSEGV) while parsing this file",
    }
    assert report["entities"]["alpha"]["indexed"] == 6 and report["entities"]["beta"]["indexed"] == 6
    assert took < 120
    verify_ok(store)
    # the next run does not trip over the same files again: they fail the same way, alone
    again = json.loads(cli(*args).stdout)
    assert sorted(f["path"] for f in again["failures"]) == sorted(errors)
    assert again["entities"]["alpha"]["unchanged"] == 6


@pytest.mark.timeout(120)
def test_rename_and_recreate_indexes_both_files_in_one_run(tmp_path, embedder):
    root, store = tmp_path / "docs", tmp_path / "store"
    make_tree(root, {"e/a.md": paragraphs("original"), "e/other.md": paragraphs("other")})
    first = json.loads(cli("ingest", root, "--store", store, "--json", "--quiet").stdout)
    assert first["entities"]["e"]["indexed"] == 2
    os.rename(root / "e" / "a.md", root / "e" / "b.md")
    (root / "e" / "a.md").write_text(paragraphs("replacement"))
    report = json.loads(cli("ingest", root, "--store", store, "--json", "--quiet").stdout)
    ent = report["entities"]["e"]
    assert (ent["updated"], ent["indexed"], ent["skipped"], ent["unchanged"]) == (1, 1, 0, 1), report
    hits = {h["path"] for q in ("original paragraph", "replacement paragraph")
            for h in json.loads(cli("query", "e", q, "--store", store, "--json", "-k", "10").stdout)["results"]}
    assert {"a.md", "b.md"} <= hits
    check = verify_ok(store)
    assert check["entities"]["e"]["documents"] == 3


@pytest.mark.timeout(120)
def test_a_moved_file_keeps_its_doc_id_and_a_copy_is_skipped(tmp_path, embedder):
    root, store = tmp_path / "docs", tmp_path / "store"
    make_tree(root, {"e/a.md": paragraphs("moving")})
    cli("ingest", root, "--store", store, "--quiet")
    doc_id = next(iter(json.loads((store / "doc_id_name_mapping" / "e.json").read_text())))
    (root / "e" / "sub").mkdir()
    os.rename(root / "e" / "a.md", root / "e" / "sub" / "a.md")
    (root / "e" / "copy.md").write_bytes((root / "e" / "sub" / "a.md").read_bytes())
    report = json.loads(cli("ingest", root, "--store", store, "--json", "--quiet").stdout)
    ent = report["entities"]["e"]
    assert (ent["moved"], ent["skipped"], ent["indexed"]) == (1, 1, 0), report
    records = json.loads((store / "doc_id_name_mapping" / "e.json").read_text())
    assert list(records) == [doc_id] and records[doc_id]["path"] in ("sub/a.md", "copy.md")


@pytest.mark.timeout(120)
def test_files_whose_result_never_came_back_are_reported_failed_by_name(tmp_path, embedder):
    """If the stages upstream end without settling every file of an entity (a task lost by a
    stage), the committer names each lost file as failed instead of finishing the entity as if
    they never existed; the files that did settle are committed as usual."""
    import threading

    import numpy as np

    from ragctl.discovery import EntitySource
    from ragctl.events import Status
    from ragctl.ingest import messages as msg
    from ragctl.ingest.channel import END, Channel
    from ragctl.ingest.commit import LOST, CommitStage
    from ragctl.ingest.options import IngestOptions, Limits, RunContext
    from ragctl.ingest.plan import EntityPlan, Verdict
    from ragctl.ingest.report import Reporter
    from ragctl.storage import open_store
    from ragctl.storage.entity import EntityStore, PreparedDoc

    root = tree(tmp_path, entities=("e",), per_entity=3) / "e"
    spec = embedder.spec
    storage = open_store(tmp_path / "store", create=True)
    ctx = RunContext(IngestOptions(store=tmp_path / "store"), spec, spec.identity(), storage, 1)
    store = EntityStore(storage, "e")
    source = EntitySource("e", root)
    plan = EntityPlan(source, {}, False, Limits())
    tasks = [plan.classify(f) for f in sorted(source.list_files(), key=lambda f: f.rel_path)]
    assert [verdict for verdict, _ in tasks] == [Verdict.PARSE] * 3
    events = []
    reporter = Reporter(events.append)
    stop, interrupted = threading.Event(), threading.Event()
    stage = CommitStage(ctx, lambda _eid: store, reporter, {("e", ""): plan})  # the run's live plans
    inbox = Channel("settled", 16, stop)
    vectors = np.ones((1, spec.dim), dtype=np.float32) / np.sqrt(spec.dim)
    inbox.put(msg.Embedded("e", PreparedDoc("doc0.md", "h0", 10, 1, ["zero"], vectors), FP32))
    inbox.put(msg.Outcome("e", "doc1.md", Status.SKIPPED, "empty", 10))
    inbox.put(msg.EntityEnd("e", 3, plan))  # doc2.md was sent but nothing settled it
    inbox.put(END)
    stage.run(inbox, stop, interrupted)
    done = {e.path: (e.status, e.detail) for e in events if type(e).__name__ == "FileDone"}
    assert done == {"doc0.md": (Status.INDEXED, ""), "doc1.md": (Status.SKIPPED, "empty"), "doc2.md": (Status.FAILED, LOST)}
    assert [r["path"] for r in store.records().values()] == ["doc0.md"]
    assert reporter.report.entities["e"].failed == 1


def test_two_versions_of_one_path_in_one_commit_window_leave_one_document(tmp_path, embedder):
    """Two uploads of one path with different content reach the committer inside one batch
    window: they are committed in order (the later replaces the earlier), never as two live
    records for one path."""
    import threading

    import numpy as np

    from ragctl.ingest import messages as msg
    from ragctl.ingest.channel import END, Channel
    from ragctl.ingest.commit import CommitStage
    from ragctl.ingest.options import IngestOptions, RunContext
    from ragctl.ingest.report import Reporter
    from ragctl.storage import open_store
    from ragctl.storage.entity import EntityStore, PreparedDoc

    spec = embedder.spec
    storage = open_store(tmp_path / "store", create=True)
    ctx = RunContext(IngestOptions(store=tmp_path / "store"), spec, spec.identity(), storage, 1)
    store = EntityStore(storage, "e")
    events = []
    stop, interrupted = threading.Event(), threading.Event()
    stage = CommitStage(ctx, lambda _eid: store, Reporter(events.append), {})
    inbox = Channel("settled", 16, stop)
    for version in ("first", "second"):
        vectors = np.ones((2, spec.dim), dtype=np.float32) / np.sqrt(spec.dim)
        doc = PreparedDoc("same.md", f"hash-{version}", 10, 1, [f"{version} a", f"{version} b"], vectors)
        inbox.put(msg.Embedded("e", doc, FP32, tag=version))
    inbox.put(END)
    stage.run(inbox, stop, interrupted)
    records = list(store.records().values())
    assert [(r["path"], r["content_hash"]) for r in records] == [("same.md", "hash-second")]
    assert [e.status for e in events if hasattr(e, "status")] == ["indexed", "updated"]


@pytest.mark.timeout(10)
def test_a_consumer_waiting_without_a_timeout_wakes_up_when_the_run_stops():
    """A stage blocked on its input with no time-out does not depend on END to wake up: once
    the run stops it gets None within a tick; what was queued before still comes out first."""
    import threading

    from ragctl.ingest.channel import Channel

    stop = threading.Event()
    channel: Channel[int] = Channel("test", 4, stop)
    assert channel.put(1)
    got: list = []
    waiter = threading.Thread(target=lambda: got.extend([channel.get(None), channel.get(None)]))
    waiter.start()
    time.sleep(0.3)
    assert waiter.is_alive()  # the second get is still waiting: nothing queued, no stop
    started = time.monotonic()
    stop.set()
    waiter.join(timeout=2)
    assert not waiter.is_alive() and got == [1, None]
    assert time.monotonic() - started < 1.0


@pytest.mark.timeout(60)
def test_a_merge_of_one_entity_does_not_hold_up_commits_of_others(tmp_path, embedder, monkeypatch):
    """A commit that fills a tier hands the merge to the merge thread: while entity a's merge
    is stuck, entity b's commits (and a's next one) go through; the merge then switches in and
    both entities verify."""
    import threading

    import numpy as np

    from ragctl.ingest import messages as msg
    from ragctl.ingest.commit import Maintenance, commit_documents
    from ragctl.ingest.options import IngestOptions, RunContext
    from ragctl.ingest.report import Reporter
    from ragctl.storage import compaction, open_store, segments
    from ragctl.storage.entity import EntityStore, PreparedDoc

    monkeypatch.setattr(segments, "FANOUT", 2)
    merging, release, resumed = threading.Event(), threading.Event(), threading.Event()
    real_write = compaction.Merge.write

    def held_write(self):
        if self.dir.parent.name == "a":
            merging.set()
            release.wait(20)
            resumed.set()
        real_write(self)

    monkeypatch.setattr(compaction.Merge, "write", held_write)
    spec = embedder.spec
    storage = open_store(tmp_path / "store", create=True)
    ctx = RunContext(IngestOptions(store=tmp_path / "store"), spec, spec.identity(), storage, 1)
    stores = {e: EntityStore(storage, e) for e in ("a", "b")}
    events = []
    maintenance = Maintenance(Reporter(events.append))

    def commit(entity, name):
        vectors = np.ones((1, spec.dim), dtype=np.float32) / np.sqrt(spec.dim)
        doc = PreparedDoc(name, f"hash-{entity}-{name}", 10, 1, [f"{entity} {name}"], vectors)
        commit_documents(stores[entity], ctx, Reporter(events.append), [msg.Embedded(entity, doc, FP32)],
                         maintenance=maintenance)

    commit("a", "1.md")
    commit("a", "2.md")  # two tier-0 segments: a full tier, merged on the merge thread
    assert merging.wait(10)
    for i in range(3):
        commit("b", f"{i}.md")
    commit("a", "3.md")
    assert not resumed.is_set()  # all of the above happened while a's merge was stuck
    assert sorted(r["path"] for r in stores["b"].records().values()) == ["0.md", "1.md", "2.md"]
    assert sorted(r["path"] for r in stores["a"].records().values()) == ["1.md", "2.md", "3.md"]
    release.set()
    maintenance.wait()
    assert len(stores["a"].meta()["vectors"]["segments"]) < 3  # the merge switched in
    report = verify_ok(tmp_path / "store")
    assert report["ok"] and {e: r["documents"] for e, r in report["entities"].items()} == {"a": 3, "b": 3}
    assert not [e for e in events if type(e).__name__ == "Phase"]  # no merge failed


@pytest.mark.timeout(60)
def test_deleting_an_entity_while_its_merge_runs_does_not_bring_it_back(tmp_path, embedder, monkeypatch):
    """The upload service can delete an entity while the merge thread still merges its
    segments (outside the lock): the merge finds its directory gone and discards its work; the
    entity does not come back and nothing is left behind."""
    import threading

    import numpy as np

    from ragctl.ingest import messages as msg
    from ragctl.ingest.commit import Maintenance, commit_documents
    from ragctl.ingest.options import IngestOptions, RunContext
    from ragctl.ingest.report import Reporter
    from ragctl.manager import delete_entity
    from ragctl.storage import compaction, open_store, segments
    from ragctl.storage.entity import EntityStore, PreparedDoc
    from ragctl.storage.layout import StoreLayout

    monkeypatch.setattr(segments, "FANOUT", 2)
    merging, release = threading.Event(), threading.Event()
    real_write = segments.write_segment

    def held_write(path, *args, **kwargs):  # the merge has read its inputs; about to write
        if path.name.startswith(compaction.MERGE_PREFIX):
            merging.set()
            release.wait(20)
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(segments, "write_segment", held_write)
    spec = embedder.spec
    root = tmp_path / "store"
    storage = open_store(root, create=True)
    ctx = RunContext(IngestOptions(store=root), spec, spec.identity(), storage, 1)
    store = EntityStore(storage, "doomed")
    events = []
    maintenance = Maintenance(Reporter(events.append))
    for name in ("1.md", "2.md"):
        vectors = np.ones((1, spec.dim), dtype=np.float32) / np.sqrt(spec.dim)
        doc = PreparedDoc(name, f"hash-{name}", 10, 1, [name], vectors)
        commit_documents(store, ctx, Reporter(events.append), [msg.Embedded("doomed", doc, FP32)],
                         maintenance=maintenance)
    assert merging.wait(10)
    assert delete_entity(root, "doomed")
    release.set()
    maintenance.wait()
    layout = StoreLayout(root)
    assert layout.entity_ids() == []
    assert not layout.entity_dir("doomed").exists()
    assert list(layout.entities_dir.iterdir()) == []  # no tombstone, no merge leftovers
    assert verify_ok(root)["entities"] == {}


@pytest.mark.timeout(180)
def test_a_script_without_a_main_guard_can_call_the_library(tmp_path):
    """The README's library example saved as a plain script, no `if __name__ == "__main__":`
    guard: parse workers are fresh interpreters that import only ragctl, not the caller's
    script (multiprocessing's spawn re-ran it in every worker, which failed every file)."""
    import subprocess
    import sys

    from helpers import SAMPLE_DOCS

    entity = sorted(p for p in SAMPLE_DOCS.iterdir() if p.is_dir())[0]
    files = sorted(str(p) for p in entity.rglob("*") if p.is_file())
    script = tmp_path / "index_docs.py"
    script.write_text(
        "from ragctl import get_entity_rag_manager\n"
        f"manager = get_entity_rag_manager({str(tmp_path / 'ragstore')!r})\n"
        f"report = manager.add_documents_parallel({{'acme': {files!r}}})\n"
        "print('RESULT', report.entities['acme'].indexed, len(report.failures), report.error)\n"
        "print('HITS', len(manager.query('acme', 'what is this about', k=3, per_document=False)))\n",
        encoding="utf-8",
    )
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("RESULT") == 1, proc.stdout  # the script ran once, not once per worker
    assert f"RESULT {len(files)} 0 None" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    assert "HITS 3" in proc.stdout
    assert "bootstrapping" not in proc.stderr


@pytest.mark.timeout(180)
def test_an_entity_with_a_corrupt_shard_fails_alone_and_can_be_deleted(tmp_path, embedder):
    """One entity's mapping shard is garbage (a disk error, a hand edit): ingest still indexes
    the other entities, `stats` lists them and names the broken one, and `delete` removes the
    broken entity without reading it, after which a re-run rebuilds it."""
    root, store = tree(tmp_path), tmp_path / "store"
    assert cli("ingest", root, "--store", store, "--quiet").exit_code == 0
    shard = store / "doc_id_name_mapping" / "alpha.json"
    shard.write_text("{broken", encoding="utf-8")
    make_tree(root, {"beta/new.md": paragraphs("fresh"), "alpha/new.md": paragraphs("lost")})

    result = cli("ingest", root, "--store", store, "--json", "--quiet")
    assert result.exit_code == 1 and "Traceback" not in result.output
    report = json.loads(result.stdout)
    assert report["error"] is None  # the run itself went on
    assert report["entities"]["beta"]["indexed"] == 1 and report["entities"]["beta"]["unchanged"] == 3
    assert report["entities"]["alpha"]["failed"] == 4
    assert all(f["entity"] == "alpha" and "alpha.json" in f["error"] and "not valid JSON" in f["error"]
               for f in report["failures"])

    stats = cli("stats", "--store", store, "--json")
    assert stats.exit_code == 1
    by_entity = json.loads(stats.stdout)["entities"]
    assert by_entity["beta"]["documents"] == 4 and by_entity["beta"]["error"] is None
    assert "not valid JSON" in by_entity["alpha"]["error"]

    deleted = cli("delete", "alpha", "--yes", "--store", store)
    assert deleted.exit_code == 0, deleted.output
    assert not shard.exists() and not (store / "entities" / "alpha").exists()
    again = json.loads(cli("ingest", root, "--store", store, "--json", "--quiet").stdout)
    assert again["entities"]["alpha"]["indexed"] == 4 and again["failures"] == []
    verify_ok(store)


@pytest.mark.timeout(180)
def test_verify_repair_recovers_an_entity_whose_vector_segment_file_is_gone(tmp_path, embedder):
    """A segment file lost (disk error, hand deletion) made the entity unsearchable and stuck:
    verify --repair could not load the index, and ingest saw the files as unchanged. Now the
    repair forgets the lost segment and drops the records that used it; ingest re-indexes them."""
    root, store = tree(tmp_path), tmp_path / "store"
    assert cli("ingest", root, "--store", store, "--quiet").exit_code == 0
    segments = sorted((store / "entities" / "alpha" / "segments").glob("*.seg"))
    assert segments
    for seg in segments:
        seg.unlink()
    assert cli("verify", "--store", store).exit_code == 1

    result = cli("verify", "--store", store, "--repair", "--json")
    assert result.exit_code == 0, result.output
    alpha = json.loads(result.stdout)["entities"]["alpha"]
    assert alpha["ok"] and alpha["documents"] == 0
    assert sum("vector segment missing" in line for line in alpha["repaired"]) == len(segments)
    assert sum("dropped the record" in line for line in alpha["repaired"]) == 3

    again = json.loads(cli("ingest", root, "--store", store, "--json", "--quiet").stdout)
    assert again["entities"]["alpha"]["indexed"] == 3 and again["entities"]["beta"]["unchanged"] == 3
    verify_ok(store)
    hits = json.loads(cli("query", "alpha", "alpha1 paragraph", "--store", store, "--json").stdout)["results"]
    assert hits and hits[0]["path"] == "doc1.md"
