"""Keeping an index in sync with a changing tree (issue 6): updates, moves, pruning, dry run,
stats, delete, interrupt and resume. Real files, real FAISS, the real model."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from helpers import copy_built
from typer.testing import CliRunner

from ragctl.cli.app import app

DOCS = {
    "alpha/garden.md": "# Garden\n\nTomatoes need six hours of direct sunlight and deep watering twice a week.\n",
    "alpha/boats.txt": "Sailing boats heel in strong wind; reef the mainsail before the squall arrives.\n",
    "alpha/notes/bread.md": "# Bread\n\nSourdough starter is fed with equal weights of flour and water every morning.\n",
    "beta/chess.md": "# Chess\n\nThe Sicilian defence answers 1.e4 with c5 and fights for the d4 square.\n",
}


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def ingest(root, store, *extra):
    result = run("ingest", root, "--store", store, "--json", "--quiet", *extra)
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


def write_tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def records(store: Path, entity: str) -> dict[str, dict]:
    shard = store / "doc_id_name_mapping" / f"{entity}.json"
    return {r["path"]: r for r in json.loads(shard.read_text()).values()}


def top_hit(store, entity, text, k=1):
    result = run("query", entity, text, "--store", store, "--json", "-k", k)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["results"]


def snapshot(store: Path) -> dict[str, str]:
    return {
        p.relative_to(store).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(store.rglob("*"))
        if p.is_file()
    }


def all_chunk_texts(store: Path, entity: str) -> list[str]:
    import sqlite3

    with sqlite3.connect(store / "entities" / entity / "chunks.sqlite") as conn:
        return [row[0] for row in conn.execute("SELECT text FROM chunks")]


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    write_tree(root, DOCS)
    return root, tmp_path / "store"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """DOCS ingested once (in-process); `indexed` hands each test its own copy."""
    root = tmp_path_factory.mktemp("base") / "root"
    write_tree(root, DOCS)
    store = root.parent / "store"
    first = ingest(root, store)
    assert first["entities"]["alpha"]["indexed"] == 3 and first["entities"]["beta"]["indexed"] == 1
    return root, store


@pytest.fixture
def indexed(base, tmp_path):
    """A tree and the store of its first ingest, copied (mtimes kept: the next run sees them unchanged)."""
    return copy_built(*base, tmp_path, "root")


def test_modify_add_delete_rename_between_runs(tree):
    root, store = tree
    first = ingest(root, store)
    assert first["entities"]["alpha"]["indexed"] == 3
    before = records(store, "alpha")

    # modify one file, add one, delete one, rename one
    (root / "alpha/garden.md").write_text("# Garden\n\nPumpkins sprawl across the compost heap and ripen in October.\n")
    (root / "alpha/kites.md").write_text("# Kites\n\nA box kite flies steadily in gusty coastal wind.\n")
    (root / "alpha/boats.txt").unlink()
    (root / "alpha/notes/bread.md").rename(root / "alpha/baking.md")
    summary = ingest(root, store)
    row = summary["entities"]["alpha"]
    assert (row["files"], row["indexed"], row["updated"], row["moved"], row["stale"], row["pruned"]) == (3, 1, 1, 1, 1, 0)
    assert summary["stale_files"] == [{"entity": "alpha", "path": "boats.txt"}]
    after = records(store, "alpha")
    assert set(after) == {"garden.md", "kites.md", "baking.md", "boats.txt"}  # stale is kept without --prune
    assert after["garden.md"]["doc_id"] == before["garden.md"]["doc_id"]  # updated in place
    assert after["baking.md"]["doc_id"] == before["notes/bread.md"]["doc_id"]  # moved, not re-embedded
    assert after["baking.md"]["first_vector_id"] == before["notes/bread.md"]["first_vector_id"]

    # the old version of the modified file is gone from results and from the chunk store
    hits = top_hit(store, "alpha", "tomatoes sunlight watering", k=10)
    assert all("Tomatoes" not in h["text"] for h in hits)
    assert top_hit(store, "alpha", "pumpkins ripen in autumn")[0]["path"] == "garden.md"
    assert top_hit(store, "alpha", "sourdough starter flour")[0]["path"] == "baking.md"

    pruned = ingest(root, store, "--prune")
    assert pruned["entities"]["alpha"]["pruned"] == 1 and pruned["entities"]["alpha"]["unchanged"] == 3
    # the lists agree with the counts: a pruned file is pruned, not stale
    assert pruned["pruned_files"] == [{"entity": "alpha", "path": "boats.txt"}] and pruned["stale_files"] == []
    final = records(store, "alpha")
    assert set(final) == {"garden.md", "kites.md", "baking.md"}
    texts = all_chunk_texts(store, "alpha")
    assert not any("Tomatoes" in t or "Sailing" in t for t in texts)  # no stale chunk text left
    assert len(texts) == sum(r["chunk_count"] for r in final.values())
    assert all(h["path"] != "boats.txt" for h in top_hit(store, "alpha", "sailing boats wind", k=10))
    assert run("verify", "--store", store).exit_code == 0


def test_same_size_same_mtime_edit_needs_rehash(indexed):
    root, store = indexed
    path = root / "beta/chess.md"
    st = path.stat()
    path.write_text(path.read_text().replace("Sicilian", "Sicilion"))  # same length
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert ingest(root, store)["entities"]["beta"]["unchanged"] == 1  # fast path trusts size+mtime
    assert ingest(root, store, "--rehash")["entities"]["beta"]["updated"] == 1


def test_dry_run_touches_nothing_and_predicts_the_run(indexed):
    root, store = indexed
    (root / "alpha/garden.md").write_text("# Garden\n\nCarrots prefer loose sandy soil.\n")
    (root / "alpha/new.md").write_text("# New\n\nA brand new document about lanterns.\n")
    (root / "alpha/boats.txt").rename(root / "alpha/sailing.txt")
    (root / "beta/chess.md").unlink()
    before = snapshot(store)
    result = run("ingest", root, "--store", store, "--json", "--quiet", "--dry-run", "--prune")
    assert result.exit_code == 0, result.output
    predicted = json.loads(result.stdout)
    assert predicted["dry_run"] is True
    assert snapshot(store) == before
    real = ingest(root, store, "--prune")
    for entity in ("alpha", "beta"):
        for key in ("files", "indexed", "updated", "moved", "unchanged", "skipped", "pruned", "stale"):
            assert predicted["entities"][entity][key] == real["entities"][entity][key], (entity, key)
    assert predicted["entities"]["alpha"]["moved"] == 1 and predicted["entities"]["beta"]["pruned"] == 1
    assert predicted["pruned_files"] == real["pruned_files"] and real["stale_files"] == []
    # the dry run names each file it would change, the real run lists none (its counts say it)
    planned = Counter((c["entity"], c["action"]) for c in predicted["planned_changes"])
    for entity in ("alpha", "beta"):
        for action in ("indexed", "updated", "moved"):
            assert planned[(entity, action)] == real["entities"][entity][action], (entity, action)
    assert ("alpha", "moved") in planned and real["planned_changes"] == []


def test_dry_run_on_a_new_store_creates_nothing(tree):
    root, store = tree
    result = run("ingest", root, "--store", store, "--json", "--quiet", "--dry-run")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["entities"]["alpha"]["indexed"] == 3
    assert not store.exists()


def test_stats_reports_each_entity(indexed):
    root, store = indexed
    result = run("stats", "--store", store, "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    alpha = stats["entities"]["alpha"]
    assert alpha["documents"] == 3
    assert alpha["chunks"] == sum(r["chunk_count"] for r in records(store, "alpha").values())
    assert alpha["bytes"] > 0 and alpha["model"] == "all-MiniLM-L6-v2" and alpha["last_ingest"]
    assert stats["totals"]["documents"] == 4 and stats["totals"]["entities"] == 2


def test_delete_entity_leaves_no_file_of_it(indexed):
    root, store = indexed
    result = run("delete", "alpha", "--store", store)  # no --yes: asks, and the answer is no
    assert result.exit_code != 0 and records(store, "alpha")
    assert run("delete", "alpha", "--yes", "--store", store).exit_code == 0
    leftovers = [p for p in store.rglob("*") if "alpha" in p.relative_to(store).as_posix()]
    assert leftovers == []
    assert run("query", "alpha", "garden", "--store", store).exit_code == 2
    assert top_hit(store, "beta", "Sicilian defence")[0]["path"] == "chess.md"
    assert run("verify", "--store", store).exit_code == 0


def test_delete_one_document(indexed):
    root, store = indexed
    assert run("delete", "alpha", "--doc", "boats.txt", "--yes", "--store", store).exit_code == 0
    assert set(records(store, "alpha")) == {"garden.md", "notes/bread.md"}
    assert not any("Sailing" in t for t in all_chunk_texts(store, "alpha"))
    assert run("delete", "alpha", "--doc", "nope.md", "--yes", "--store", store).exit_code == 2


def test_library_manager_adds_documents_in_parallel(tmp_path):
    from ragctl import get_entity_rag_manager

    write_tree(tmp_path / "src", DOCS)
    manager = get_entity_rag_manager(tmp_path / "store")
    report = manager.add_documents_parallel(
        {"alpha": [tmp_path / "src/alpha/garden.md", tmp_path / "src/alpha/boats.txt"], "beta": [tmp_path / "src/beta"]}
    )
    assert report.entities["alpha"].indexed == 2 and report.entities["beta"].indexed == 1
    assert manager.query("alpha", "reef the mainsail")[0].path == "boats.txt"
    # A later call with other files of the same entity leaves the earlier ones alone.
    report = manager.add_documents("alpha", [tmp_path / "src/alpha/notes/bread.md"])
    assert report.entities["alpha"].indexed == 1 and report.entities["alpha"].stale == 0
    manager.cleanup_entity("alpha")
    assert len(records(tmp_path / "store", "alpha")) == 3
    assert manager.delete_entity("alpha") and not (tmp_path / "store/entities/alpha").exists()


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize(("signum", "exit_code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_sigint_stops_cleanly_and_rerun_finishes_exactly_once(tmp_path, signum, exit_code):
    """A parser that never returns (tests/fault: `.hang`) keeps the run going until the
    interrupt whatever the machine's speed, so the tree can stay small; on a busy machine the
    interrupt lands among the commits of the other files, on a fast one while they are done."""
    import random

    rng = random.Random(7)
    words = "river stone cloud engine garden ledger harbor signal copper meadow lantern orbit".split()
    root = tmp_path / "root"
    per_entity = 60
    for e in range(2):
        for d in range(per_entity):
            body = "\n\n".join(" ".join(rng.choice(words) for _ in range(120)) + "." for _ in range(4))
            write_tree(root, {f"e{e}/doc{d:03}.md": f"# Document {e}-{d}\n\n{body}\n"})
    write_tree(root, {"e1/zz-stuck.hang": "x"})
    store = tmp_path / "store"
    faults = Path(__file__).parent / "fault"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(faults), os.environ.get("PYTHONPATH", "")]), "RAGCTL_FAULTS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ragctl", "ingest", str(root), "--store", str(store), "--json", "--batch-size", "8",
         "--parse-timeout", "600"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    # Wait until something is committed, then interrupt like Ctrl-C would.
    deadline = time.time() + 120
    while time.time() < deadline and not list((store / "doc_id_name_mapping").glob("*.json")):
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signum)  # Ctrl-C, or `kill` / systemd / docker stop
    sent = time.time()
    out, err = proc.communicate(timeout=60)
    assert time.time() - sent < 15, "Ctrl-C must stop within seconds"
    if proc.returncode == 0:
        pytest.skip("the run finished before the interrupt arrived")
    assert proc.returncode == exit_code, err
    assert "interrupted" in err
    partial = json.loads(out)
    committed = sum(r["indexed"] for r in partial["entities"].values())
    assert sum(len(records(store, e)) for e in ("e0", "e1") if (store / "doc_id_name_mapping" / f"{e}.json").exists()) == committed
    assert run("verify", "--store", store).exit_code == 0

    (root / "e1" / "zz-stuck.hang").unlink()  # never parsed, so never recorded: nothing goes stale
    final = ingest(root, store)
    for entity in ("e0", "e1"):
        row = final["entities"][entity]
        assert row["indexed"] + row["unchanged"] == per_entity
        assert len(records(store, entity)) == per_entity
    assert sum(final["entities"][e]["unchanged"] for e in ("e0", "e1")) == committed
    assert run("verify", "--store", store).exit_code == 0
