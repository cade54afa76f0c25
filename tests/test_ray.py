"""`ingest --ray`: the Ray stage against a local Ray cluster started once for this module.

The cluster is `ray.init(num_cpus=2, include_dashboard=False)`; every in-process ingest reuses
it (the stage never shuts down a Ray it did not start). Subprocess tests cover the one-line
exit-2 errors (address unreachable, Ray not installed).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import RAGCTL, cli, make_tree

ray = pytest.importorskip("ray")

from ragctl import events as ev  # noqa: E402
from ragctl.ingest import (  # noqa: E402
    IngestOptions,
    ingest,
    ray_stage,  # noqa: E402
)
from ragctl.manager import EntityRAGManager  # noqa: E402
from ragctl.model_config import ModelConfig  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield
    ray.shutdown()


def para(topic: str, n: int = 3) -> str:
    return "\n\n".join(
        f"{topic} paragraph {i}: the {topic} policy covers refunds, shipping windows and support hours "
        f"for customers in region {i}; escalations go to the {topic} desk within {i + 2} days."
        for i in range(n)
    )


def small_tree(root: Path, per_entity: int = 3) -> Path:
    files: dict[str, str] = {}
    for entity in ("alpha", "beta"):
        for i in range(per_entity):
            files[f"{entity}/docs/note-{i}.md"] = f"# {entity} {i}\n\n" + para(f"{entity}{i}", 2 + i % 3)
        files[f"{entity}/readme.txt"] = para(f"{entity}-readme", 2)
    return make_tree(root, files)


def store_contents(store: Path, entity: str) -> dict[tuple[str, int], tuple[str, np.ndarray]]:
    """(path, chunk ordinal) -> (chunk text, vector), read from the store's files."""
    from ragctl.storage.entity import EntityStore
    from ragctl.storage.json_storage import open_store

    es = EntityStore(open_store(store, create=False), entity)
    records = es.records()
    index = es.load_index()
    with sqlite3.connect(es.texts.path) as conn:
        rows = conn.execute("SELECT id, doc_id, ord, text FROM chunks").fetchall()
    out = {}
    for row_id, doc_id, ord_, text in rows:
        out[(records[doc_id]["path"], ord_)] = (text, index.reconstruct(int(row_id)))
    assert len(out) == sum(r["chunk_count"] for r in records.values())
    return out


def records_by_path(store: Path, entity: str) -> dict[str, dict]:
    shard = json.loads((store / "doc_id_name_mapping" / f"{entity}.json").read_text())
    paths = [r["path"] for r in shard.values()]
    assert len(paths) == len(set(paths)), "a file indexed twice"
    return {r["path"]: r for r in shard.values()}


def test_ray_store_equals_the_local_store_and_a_rerun_does_nothing(tmp_path):
    from ragctl.discovery import discover_entities

    root = small_tree(tmp_path / "docs")

    # the actors honour the model configuration (they used to rebuild their own, backend ignored)
    model = ModelConfig(backend="torch", precision="fp32")
    local = ingest(discover_entities(root, None), IngestOptions(store=tmp_path / "local", model=model))
    assert not local.any_failed
    report = ingest(discover_entities(root, None), IngestOptions(store=tmp_path / "ray", ray="local", model=model))
    assert not report.any_failed and report.error is None
    assert report.model["ray"]["actors"] == 1  # 2 CPUs: actors stay below the CPU count
    assert (report.model["backend"], report.model["precision"]) == ("torch", "fp32")
    meta = json.loads((tmp_path / "ray" / "entities" / "alpha" / "entity.json").read_text())
    assert (meta["embedded_by"]["backend"], meta["embedded_by"]["precision"]) == ("torch", "fp32")
    assert report.total_chunks == local.total_chunks > 0
    for entity in ("alpha", "beta"):
        a, b = records_by_path(tmp_path / "local", entity), records_by_path(tmp_path / "ray", entity)
        assert {p: (r["content_hash"], r["chunk_count"]) for p, r in a.items()} == {
            p: (r["content_hash"], r["chunk_count"]) for p, r in b.items()}
        ca, cb = store_contents(tmp_path / "local", entity), store_contents(tmp_path / "ray", entity)
        assert set(ca) == set(cb)
        for key, (text, vec) in ca.items():
            assert cb[key][0] == text
            cosine = float(np.dot(vec, cb[key][1]) / (np.linalg.norm(vec) * np.linalg.norm(cb[key][1])))
            assert cosine >= 0.999, (key, cosine)

    # a re-run does nothing (no actor, no model); a touched file is re-hashed on the driver only
    os.utime(root / "alpha" / "readme.txt", ns=(time.time_ns(), time.time_ns()))
    again = ingest(discover_entities(root, None), IngestOptions(store=tmp_path / "ray", ray="local"))
    assert again.total_chunks == 0 and not again.any_failed
    assert sum(r.unchanged for r in again.entities.values()) == sum(r.files for r in again.entities.values())
    assert "ray" not in again.model  # no actor was started: nothing needed the model


def section(i: int, topic: str) -> str:
    """A section with words of its own, a few sentences long (one chunk)."""
    return (f"## Section {i}: {topic}\n\n"
            + " ".join(f"Sentence {j} of section {i} explains how the {topic} rule applies in case {j} and why "
                       f"it matters for item {i * 7 + j}." for j in range(6))
            + "\n")


def test_the_actors_embed_only_passages_the_entity_does_not_hold(tmp_path):
    """Passages (issue 26) under --ray: a chapter and the print page repeating its sections are
    parsed on the actors, but the repeated sections go to the model once; an edited file sends
    only its changed section. The model's inputs are counted from the encode calls (ChunksEmbedded)
    and equal chunks - chunks_reused; the store holds what a local run stores."""
    from ragctl.discovery import discover_entities

    topics = ["refunds", "shipping", "support hours", "escalations", "warranty", "returns"]
    chapter = "# Policies\n\n" + "\n".join(section(i, t) for i, t in enumerate(topics[:4]))
    everything = ("# The whole handbook\n\n" + "\n".join(section(10 + i, t) for i, t in enumerate(topics[4:]))
                  + "\n" + "\n".join(section(i, t) for i, t in enumerate(topics[:4])))
    root = make_tree(tmp_path / "docs", {"book/policies.md": chapter, "book/print.md": everything})
    model = ModelConfig(backend="torch", precision="fp32")

    def run(store: Path) -> tuple[Any, int]:
        seen: list[ev.ChunksEmbedded] = []
        report = ingest(discover_entities(root, None), IngestOptions(store=store, ray="local", model=model,
                                                                      commit_docs=1),
                        lambda e: seen.append(e) if isinstance(e, ev.ChunksEmbedded) else None)
        assert report.error is None and not report.failures, report.to_json()
        return report.entities["book"], sum(e.count for e in seen)

    book, inputs = run(tmp_path / "ray")
    assert book.indexed == 2 and book.chunks >= 10
    # the four shared sections are embedded for one document and reused for the other (the
    # chapter's first chunk also holds its title line, so it is a passage of its own)
    assert 3 <= book.chunks_reused <= 4, book
    assert inputs == book.chunks - book.chunks_reused
    local = ingest(discover_entities(root, None), IngestOptions(store=tmp_path / "local", model=model))
    assert local.entities["book"].chunks_reused == book.chunks_reused
    ca, cb = store_contents(tmp_path / "local", "book"), store_contents(tmp_path / "ray", "book")
    assert {k: t for k, (t, _) in ca.items()} == {k: t for k, (t, _) in cb.items()}
    holders: dict[str, list[tuple[str, int]]] = {}
    for key, (text, _) in cb.items():
        holders.setdefault(text, []).append(key)
    for keys in holders.values():
        if len(keys) == 1:  # a passage of one document: the vector a local run embeds
            assert float(np.dot(ca[keys[0]][1], cb[keys[0]][1])) >= 0.999, keys
        else:  # shared: every holder carries the one vector embedded first (its context line differs by run order)
            assert all(np.array_equal(cb[keys[0]][1], cb[k][1]) for k in keys), keys

    # one sentence edited in one section of the chapter: only that chunk goes to the model
    old = "Sentence 3 of section 2 explains how"
    (root / "book/policies.md").write_text(chapter.replace(old, "Sentence three of section 2 now says how"))
    again, inputs = run(tmp_path / "ray")
    assert again.updated == 1 and inputs == 1 == again.chunks - again.chunks_reused, again
    assert cli("verify", "--store", tmp_path / "ray").exit_code == 0


def test_dry_run_then_a_bad_file_fails_alone_with_one_line(tmp_path):
    root = small_tree(tmp_path / "docs", per_entity=1)
    (root / "alpha" / "broken.pdf").write_bytes(b"%PDF-1.7\nthis is not a pdf at all\n" * 20)
    store = tmp_path / "store"

    dry = cli("ingest", root, "--store", store, "--ray", "local", "--dry-run", "--json", "-q")
    assert dry.exit_code == 0, dry.output
    planned = json.loads(dry.stdout)
    assert planned["dry_run"] is True
    assert planned["entities"]["alpha"]["indexed"] == 3 and planned["entities"]["beta"]["indexed"] == 2
    assert not (store / "doc_id_name_mapping").exists()

    real = cli("ingest", root, "--store", store, "--ray", "local", "--json", "-q")
    assert real.exit_code == 1, real.output  # some files failed
    result = json.loads(real.stdout)
    assert [f["path"] for f in result["failures"]] == ["broken.pdf"]
    assert "\n" not in result["failures"][0]["error"] and result["failures"][0]["error"]
    assert result["entities"]["alpha"]["indexed"] == 2 and result["entities"]["beta"]["indexed"] == 2
    assert set(records_by_path(store, "alpha")) == {"docs/note-0.md", "readme.txt"}


def test_library_add_documents_parallel_with_ray(tmp_path):
    root = small_tree(tmp_path / "docs", per_entity=1)
    manager = EntityRAGManager(tmp_path / "store")
    report = manager.add_documents_parallel({"alpha": [root / "alpha"]}, ray="local", shared_fs=True)
    assert not report.any_failed and report.entities["alpha"].indexed == 2
    assert report.model["ray"]["shared_fs"] is True


def actor_pids() -> list[int]:
    import psutil

    pids = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info.get("cmdline") or [])
        if cmd.startswith("ray::IngestActor"):
            pids.append(proc.info["pid"])
    return pids


@pytest.mark.slow
def test_a_killed_ray_worker_is_retried_and_each_file_lands_once(tmp_path, monkeypatch):
    import threading

    monkeypatch.setattr(ray_stage, "MAX_FILES_PER_CALL", 1)  # many calls: the kill lands mid-run
    per_entity = 10  # enough calls that the run outlives the actor's restart (a second or two)
    root = small_tree(tmp_path / "docs", per_entity=per_entity)
    files = sum(1 for p in root.rglob("*") if p.is_file())
    killed: list[int] = []
    before_kill: set[int] = set()
    restarted: set[int] = set()
    running = threading.Event()

    def on_event(event):
        if isinstance(event, ev.FileDone) and not killed:
            pids = actor_pids()
            if pids:
                before_kill.update(pids)  # a restart may reuse an idle Ray worker: new as an actor
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])

    def watch_actors() -> None:  # an actor process that was none at the kill: the restart
        while running.is_set():
            if killed:
                restarted.update(p for p in actor_pids() if p not in before_kill)
            time.sleep(0.1)

    from ragctl.discovery import discover_entities

    running.set()
    watcher = threading.Thread(target=watch_actors, daemon=True)
    watcher.start()
    try:
        report = ingest(discover_entities(root, None), IngestOptions(store=tmp_path / "store", ray="local",
                                                                      commit_docs=1), on_event)
    finally:
        running.clear()
        watcher.join(5)
    assert killed, "no actor process was found to kill"
    assert restarted, "Ray did not restart the killed actor"
    assert report.error is None and not report.failures, report.to_json()
    assert sum(r.indexed for r in report.entities.values()) == files
    for entity in ("alpha", "beta"):
        assert len(records_by_path(tmp_path / "store", entity)) == per_entity + 1
        store_contents(tmp_path / "store", entity)  # every chunk has a vector, no duplicate rows
    again = ingest(discover_entities(root, None), IngestOptions(store=tmp_path / "store", ray="local"))
    assert again.total_chunks == 0 and sum(r.unchanged for r in again.entities.values()) == files


def run_cli(*args: str, prelude: str = "") -> subprocess.CompletedProcess:
    code = f"{prelude}import sys; from ragctl.cli.app import main; sys.argv = ['ragctl', *sys.argv[1:]]; main()"
    env = dict(os.environ, RAY_ADDRESS="")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, env=env)


def test_unreachable_address_and_missing_ray_are_one_line_exit_2(tmp_path):
    root = small_tree(tmp_path / "docs", per_entity=1)
    out = run_cli("ingest", str(root), "--store", str(tmp_path / "s"), "--ray", "127.0.0.1:9")
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert "127.0.0.1:9" in lines[0] and "cannot reach" in lines[0]

    out = run_cli("ingest", str(root), "--store", str(tmp_path / "s"), "--ray", "local",
                  prelude="import sys; sys.modules['ray'] = None; ")
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert ".[ray]" in lines[0]

    bad = cli("ingest", root, "--store", tmp_path / "s", "--ray-actors", "2")
    assert bad.exit_code == 2 and "need a ray address" in bad.output


# Ray's two per-node agents notice a dead raylet on their own and exit ~1-2 minutes later
# (they first try to flush logs to the dead GCS); everything else must go at once.
SLOW_TO_EXIT = ("DashboardAgent", "RuntimeEnvAgent", "dashboard/agent.py", "runtime_env/agent")


def ray_processes_of(session_pids: set[int]) -> list[str]:
    import psutil

    alive = []
    for pid in session_pids:
        try:
            proc = psutil.Process(pid)
            cmd = " ".join(proc.cmdline())
            if proc.status() != psutil.STATUS_ZOMBIE and not any(s in cmd for s in SLOW_TO_EXIT):
                alive.append(f"{pid} {cmd[:80]}")
        except psutil.NoSuchProcess:
            pass
    return alive


def fault_env() -> dict[str, str]:
    """tests/fault: extra formats whose parsers crash (.segv) or never return (.hang)."""
    faults = Path(__file__).parent / "fault"
    return dict(os.environ, RAY_ADDRESS="", RAGCTL_FAULTS="1",
                PYTHONPATH=os.pathsep.join([str(faults), os.environ.get("PYTHONPATH", "")]))


def ray_run_past_its_first_commit(tmp_path: Path, capture: bool) -> tuple[Path, Path, list[str], Any, set[int]]:
    """A real `ragctl ingest --ray local --json` of a small tree plus a file whose parser never
    returns (so the run goes on until the test stops it, whatever the speed), waited for until its
    first commit: (root, store, the command without --parse-timeout, the process, its child pids)."""
    import psutil

    root = small_tree(tmp_path / "docs", per_entity=5)
    make_tree(root, {"beta/zz-stuck.hang": "x"})
    store = tmp_path / "store"
    cmd = [*RAGCTL, "ingest", str(root), "--store", str(store), "--ray", "local", "--json", "-q"]
    env = dict(fault_env(), RAGCTL_RAY_FILES_PER_CALL="1")  # the stuck file holds only its own call
    out = subprocess.PIPE if capture else subprocess.DEVNULL
    proc = subprocess.Popen([*cmd, "--parse-timeout", "120"], stdout=out, stderr=out, text=True, env=env)
    shard = store / "doc_id_name_mapping" / "alpha.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not shard.exists():
        time.sleep(0.2)
    assert shard.exists() and proc.poll() is None, "the run committed nothing in time"
    return root, store, cmd, proc, {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}


@pytest.mark.slow
def test_a_killed_driver_leaves_no_ray_processes_and_a_rerun_resumes(tmp_path):
    root, store, cmd, proc, children = ray_run_past_its_first_commit(tmp_path, capture=False)
    files = sum(1 for p in root.rglob("*") if p.is_file())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while ray_processes_of(children) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not ray_processes_of(children), "Ray processes outlived the killed driver"

    rerun = subprocess.run([*cmd, "--parse-timeout", "6"], capture_output=True, text=True, timeout=180,
                           env=fault_env())
    assert rerun.returncode == 1, rerun.stderr
    result = json.loads(rerun.stdout)
    assert result["failures"] == [{"entity": "beta", "path": "zz-stuck.hang", "error": "parse timed out after 6 s"}]
    done = sum(e["indexed"] + e["unchanged"] for e in result["entities"].values())
    assert done == files - 1
    assert sum(e["unchanged"] for e in result["entities"].values()) > 0  # what was committed stays
    for entity in ("alpha", "beta"):
        assert len(records_by_path(store, entity)) == 6
        store_contents(store, entity)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigterm_stops_a_ray_run_cleanly_with_exit_143(tmp_path):
    """ray.init installs its own SIGTERM handler (sys.exit): the CLI's clean stop must survive it."""
    _root, store, _cmd, proc, children = ray_run_past_its_first_commit(tmp_path, capture=True)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    result = json.loads(out)
    assert result["interrupted"] is True
    committed = sum(e["indexed"] for e in result["entities"].values())
    assert committed >= 1 and sum(len(records_by_path(store, e)) for e in ("alpha", "beta")
                                  if (store / "doc_id_name_mapping" / f"{e}.json").exists()) == committed
    assert cli("verify", "--store", store).exit_code == 0
    deadline = time.monotonic() + 30
    while ray_processes_of(children) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not ray_processes_of(children), "Ray processes outlived the stopped driver"


@pytest.mark.slow
def test_a_parser_that_crashes_or_hangs_or_a_model_out_of_memory_on_an_actor_fails_only_its_file(tmp_path):
    """The actor parses in the engine's supervised pool: same reasons as a local run. A
    MemoryError raised by the model on an actor fails only the file that caused it: the batch
    is retried one file per call, and the others are indexed."""
    root = small_tree(tmp_path / "docs", per_entity=1)
    make_tree(root, {"alpha/crash.segv": "x", "beta/stuck.hang": "x",
                     "beta/huge.md": "# Huge\n\nRAGCTL-FAULT-ENCODE-OOM stands in for a batch the model cannot hold.\n"})
    env = fault_env()
    cmd = [*RAGCTL, "ingest", str(root), "--store", str(tmp_path / "store"), "--ray", "local",
           "--parse-timeout", "5", "--json", "-q"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert out.returncode == 1, out.stderr
    report = json.loads(out.stdout)
    assert {f["path"]: f["error"] for f in report["failures"]} == {
        "crash.segv": "parser process crashed (SIGSEGV) while parsing this file",
        "stuck.hang": "parse timed out after 5 s",
        "huge.md": "failed on a Ray worker: MemoryError: cannot allocate memory for the encode batch",
    }
    assert report["entities"]["alpha"]["indexed"] == 2 and report["entities"]["beta"]["indexed"] == 2


def test_more_actors_than_the_cluster_can_place_is_refused_at_once(tmp_path):
    """Actors that could never be scheduled would leave the run waiting forever: refused in one
    line, exit 2, before any work."""
    root = small_tree(tmp_path / "docs", per_entity=1)
    started = time.monotonic()
    out = run_cli("ingest", str(root), "--store", str(tmp_path / "s"), "--ray", "local", "--ray-actors", "64")
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert "ray_actors 64" in lines[0] and "at most" in lines[0]
    assert time.monotonic() - started < 120
    assert not (tmp_path / "s" / "doc_id_name_mapping").exists()
