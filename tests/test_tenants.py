"""Many small tenants (issue 27): what a tenant costs on disk, and a run over many of them.

The catalog's own behaviour (paging, kill -9 during many tenants' commits, `verify --repair`) is
in test_catalog.py; here: a small entity's chunk database starts small and grows into big pages
without changing a search result, the live-plan bound that keeps the model fed across tenants,
and an ingest of many one-file tenants (progress totals once per tenant, a few KB each)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from helpers import make_tree

from ragctl import events as ev
from ragctl.discovery import discover_entities
from ragctl.ingest import IngestOptions, ingest
from ragctl.storage import chunk_texts
from ragctl.storage.chunk_texts import ChunkTexts

WORDS = "harbour lantern ledger copper meadow orbit invoice refund policy shipping window renewal".split()


def rows(start: int, n: int) -> list[tuple]:
    return [(i, f"doc{i % 7}", i, " ".join(WORDS[(i * 5 + j) % len(WORDS)] for j in range(20 + i % 9)) + f" item{i}",
             f"Title {i % 7}", f"Section {i % 3}", None, False) for i in range(start, start + n)]


QUERIES = ["harbour lantern", "refund policy window", "copper", "item17 ledger", "Section 2 orbit", "Title 3"]


def page_size(path: Path) -> int:
    with sqlite3.connect(path) as con:
        return con.execute("PRAGMA page_size").fetchone()[0]


def fts_sql(path: Path) -> str:
    with sqlite3.connect(path) as con:
        return con.execute("SELECT sql FROM sqlite_master WHERE name = 'chunks_fts'").fetchone()[0]


def test_a_small_chunk_database_starts_small_then_grows_into_big_pages_with_the_same_answers(tmp_path, monkeypatch):
    # the reference: a database made with 4 KB pages and the full-text sizes table from the start
    reference_path = tmp_path / "reference.sqlite"
    with sqlite3.connect(reference_path) as con:
        con.execute("PRAGMA page_size=4096")
        con.execute(chunk_texts._SCHEMA)  # noqa: SLF001 - a database as the previous release made them
    reference, small = ChunkTexts(reference_path), ChunkTexts(tmp_path / "small.sqlite")
    reference.insert(rows(0, 1))
    small.insert(rows(0, 1))
    assert page_size(small.path) == chunk_texts.NEW_PAGE_SIZE and "columnsize=0" in fts_sql(small.path)
    assert os.path.getsize(small.path) <= 6 * 1024 < os.path.getsize(reference_path)  # one chunk: ~5 KB, not ~28

    monkeypatch.setattr(chunk_texts, "GROW_AT_BYTES", 48 * 1024)
    for start in range(1, 400, 40):
        reference.insert(rows(start, 40))
        small.insert(rows(start, 40))
        for q in QUERIES:  # the same ids in the same order with the same bm25 scores, at every size
            got, want = small.search(q, 10), reference.search(q, 10)
            assert [i for i, _ in got] == [i for i, _ in want], q
            assert [s for _, s in got] == pytest.approx([s for _, s in want], rel=1e-9), q
    assert page_size(small.path) == chunk_texts.GROWN_PAGE_SIZE  # grown: rewritten with 4 KB pages ...
    assert "columnsize=0" not in fts_sql(small.path)  # ... and the sizes table rebuilt
    assert small.full_text_state() == "ok"
    small.delete(range(0, 50))
    reference.delete(range(0, 50))
    assert small.search("harbour lantern", 10) == pytest.approx(reference.search("harbour lantern", 10))


def test_live_plans_are_bounded_by_the_records_they_hold_and_a_big_unit_still_plans_alone(monkeypatch):
    from ragctl.ingest import run as run_module
    from ragctl.ingest.run import LivePlans

    class Plan:
        def __init__(self, n: int) -> None:
            self.records = dict.fromkeys(range(n))

    monkeypatch.setattr(run_module, "MAX_LIVE_RECORDS", 100)
    monkeypatch.setattr(run_module, "MAX_LIVE_PLANS", 5)
    plans = LivePlans()
    assert not plans.full()
    plans[("big", "")] = Plan(1000)  # alone, a unit of any size is planned
    assert plans.full()
    plans.pop(("big", ""))
    assert not plans.full() and plans.records == 0
    for i in range(4):
        plans[(f"t{i}", "")] = Plan(1)
    assert not plans.full()  # 4 small units, 4 records
    plans[("t4", "")] = Plan(1)
    assert plans.full()  # the count bound
    plans.pop(("t0", ""))
    plans[("mid", "")] = Plan(97)
    assert plans.full() and plans.records == 101  # the records bound
    plans.pop(("mid", ""))
    plans.pop(("nobody", ""), None)  # a unit that is not live changes nothing
    assert plans.records == 4 and not plans.full()


def test_an_ingest_of_many_one_file_tenants_counts_each_once_and_costs_a_few_kb_each(tmp_path, embedder):
    n = 60
    root = make_tree(tmp_path / "tenants", {
        f"t{i:03d}/note.md": f"# Customer {i}\n\nCustomer {i} keeps the {WORDS[i % len(WORDS)]} ledger. Ref {i:05d}.\n"
        for i in range(n)})
    store = tmp_path / "store"
    planned: list[ev.EntityPlanned] = []

    def on_event(event: object) -> None:
        if isinstance(event, ev.EntityPlanned):
            planned.append(event)

    report = ingest(discover_entities(root), IngestOptions(store=store, workers=2), on_event=on_event, embedder=embedder)
    assert sum(r.indexed for r in report.entities.values()) == n and not report.failures
    # each tenant's totals exactly once (from the counter thread or the planner, whichever came first)
    assert sorted(e.entity_id for e in planned) == [f"t{i:03d}" for i in range(n)]
    assert all(e.files == 1 for e in planned)
    assert {e.entity_id: e.bytes for e in planned} == {d.name: (d / "note.md").stat().st_size for d in root.iterdir()}

    # a one-chunk tenant's own files: its vector, its text (+ full-text index), entity.json and its
    # mapping shard (the store's catalog is shared; its WAL is checkpointed as it grows)
    own = sum(p.stat().st_size for d in ("entities", "doc_id_name_mapping") for p in (store / d).rglob("*") if p.is_file())
    assert own / n < 8 * 1024, own / n
    for entity_dir in (store / "entities").iterdir():
        assert page_size(entity_dir / "chunks.sqlite") == chunk_texts.NEW_PAGE_SIZE

    again = ingest(discover_entities(root), IngestOptions(store=store, workers=2), embedder=embedder)
    assert sum(r.unchanged for r in again.entities.values()) == n
    assert sum(r.indexed + r.updated for r in again.entities.values()) == 0


# ----------------------------------------------------------------------------- trees known unchanged
def run(root: Path, store: Path, embedder, **options) -> dict[str, dict[str, list[str]]]:
    """Ingest `root`; per entity, the paths by status (and `skipped` details), as the report says."""
    seen: dict[str, dict[str, list[str]]] = {}

    def on_event(event: object) -> None:
        if isinstance(event, ev.FileDone):
            seen.setdefault(event.entity_id, {}).setdefault(event.status.value, []).append(
                event.path + (f": {event.detail}" if event.detail else ""))

    report = ingest(discover_entities(root), IngestOptions(store=store, workers=2, **options), on_event=on_event,
                    embedder=embedder)
    assert not report.failures, report.failures
    for entity_id, rep in report.entities.items():
        for status in ("stale", "pruned"):
            if getattr(rep, status):
                seen.setdefault(entity_id, {})[status] = [str(getattr(rep, status))]
    return {e: {k: sorted(v) for k, v in statuses.items()} for e, statuses in seen.items()}


def test_a_rerun_over_unchanged_tenants_skips_their_records_and_any_change_takes_the_usual_path(
        tmp_path, embedder, monkeypatch):
    from ragctl.storage import catalog
    from ragctl.storage.entity import EntityStore

    root = make_tree(tmp_path / "tenants", {
        **{f"t{i}/note.md": f"# Note {i}\n\nTenant {i} keeps the {WORDS[i]} ledger.\n" for i in range(4)},
        "t0/extra.txt": "A second file of tenant zero about harbours.\n",
        "t1/blob.xyz": "not a document type",
    })
    store = tmp_path / "store"
    first = run(root, store, embedder)
    assert first["t1"]["skipped"] == ["blob.xyz: unsupported file type .xyz"]
    assert sorted(catalog.tree_signatures(store)) == ["t0", "t1", "t2", "t3"]  # all four left clean

    reads: list[str] = []
    real_records = EntityStore.records
    monkeypatch.setattr(EntityStore, "records", lambda self: reads.append(self.entity_id) or real_records(self))
    again = run(root, store, embedder)
    assert reads == []  # nothing changed: no tenant's records were read ...
    assert again == {  # ... and the report is what reading them would say
        "t0": {"unchanged": ["extra.txt", "note.md"]}, "t1": {"skipped": ["blob.xyz: unsupported file type .xyz"],
                                                            "unchanged": ["note.md"]},
        "t2": {"unchanged": ["note.md"]}, "t3": {"unchanged": ["note.md"]}}

    # a changed file, a new file, a removed file, a record deleted by another command: each of
    # those tenants is read and gets what it needs; the untouched tenant still is not read
    (root / "t0" / "note.md").write_text("# Note 0\n\nTenant zero now keeps the copper ledger.\n")
    (root / "t1" / "new.md").write_text("# New\n\nA new note about meadows.\n")
    (root / "t2" / "note.md").unlink()
    (root / "t2" / "other.md").write_text("# Other\n\nTenant two writes about orbits.\n")
    t3 = EntityStore(open_store_for(store), "t3")
    t3.commit(t3.meta()["model"], removes=list(t3.records()))
    reads.clear()
    changed = run(root, store, embedder)
    assert sorted(set(reads)) == ["t0", "t1", "t2", "t3"]
    assert changed["t0"] == {"unchanged": ["extra.txt"], "updated": ["note.md"]}
    assert changed["t1"]["indexed"] == ["new.md"] and changed["t1"]["unchanged"] == ["note.md"]
    assert changed["t2"]["indexed"] == ["other.md"] and changed["t2"]["stale"] == ["1"]
    assert changed["t3"] == {"indexed": ["note.md"]}

    # t1 (a file added) was left clean; t0 and t3 were too, but their commits left orphan vectors
    # that gc's merge dropped, so they are found clean (and remembered) by the next run's gc;
    # t2 keeps a stale record: not clean, never skipped
    reads.clear()
    run(root, store, embedder)
    assert sorted(set(reads)) == ["t0", "t2", "t3"]
    reads.clear()
    assert run(root, store, embedder)["t0"] == {"unchanged": ["extra.txt", "note.md"]}
    assert sorted(set(reads)) == ["t2"]
    # --rehash always reads the records
    reads.clear()
    run(root, store, embedder, rehash=True)
    assert sorted(set(reads)) == ["t0", "t1", "t2", "t3"]


def open_store_for(store: Path):
    from ragctl.storage.json_storage import open_store

    return open_store(store, create=False)


def test_a_record_deleted_by_another_process_during_the_run_is_not_vouched_for(tmp_path, embedder, monkeypatch):
    """The signature is checked against the records as they are at the finish: a delete that
    lands between the plan and the finish (another process) leaves nothing recorded, and the
    next run indexes the file again instead of calling it unchanged."""
    from ragctl.ingest import commit as commit_module
    from ragctl.storage import catalog
    from ragctl.storage.entity import EntityStore

    root = make_tree(tmp_path / "tenants", {"acme/a.md": "# A\n\nThe harbour opens at nine.\n",
                                            "acme/b.md": "# B\n\nThe ledger closes at five.\n"})
    store = tmp_path / "store"
    real_finish = commit_module.finish_entity

    def finish_after_a_delete(entity_store, gone, ctx, reporter):
        victim = next(r for r in entity_store.records().values() if r["path"] == "a.md")
        other = EntityStore(open_store_for(store), entity_store.entity_id)  # "another process"
        other.commit(other.meta()["model"], removes=[victim["doc_id"]])
        real_finish(entity_store, gone, ctx, reporter)

    monkeypatch.setattr(commit_module, "finish_entity", finish_after_a_delete)
    assert run(root, store, embedder)["acme"]["indexed"] == ["a.md", "b.md"]
    monkeypatch.setattr(commit_module, "finish_entity", real_finish)
    assert "acme" not in catalog.tree_signatures(store)
    assert run(root, store, embedder)["acme"] == {"indexed": ["a.md"], "unchanged": ["b.md"]}
    assert "acme" in catalog.tree_signatures(store)  # clean now: remembered


def test_a_big_first_write_starts_with_big_pages(tmp_path):
    texts = ChunkTexts(tmp_path / "big.sqlite")
    texts.insert([(i, "d", i, "word " * 400, "T", "S", None, False) for i in range(60)])  # ~120 KB of text
    assert page_size(texts.path) == chunk_texts.GROWN_PAGE_SIZE and "columnsize=0" not in fts_sql(texts.path)


def test_two_sources_of_one_entity_in_one_library_run_are_both_indexed_and_never_settled_from_a_walk(
        tmp_path, embedder):
    """The library may pass two sources for one entity (two folders, one tenant): neither is
    finished on the planner thread nor remembered as a clean tree, and both folders' files are
    indexed; a second run finds them unchanged through the records."""
    from ragctl.discovery import EntitySource
    from ragctl.storage import catalog

    one = make_tree(tmp_path / "one", {"a.md": "# A\n\nThe harbour opens at nine.\n"})
    two = make_tree(tmp_path / "two", {"b.md": "# B\n\nThe ledger closes at five.\n"})
    store = tmp_path / "store"
    sources = [EntitySource("acme", one), EntitySource("acme", two)]
    report = ingest(sources, IngestOptions(store=store, workers=2), embedder=embedder)
    assert report.entities["acme"].indexed == 2 and not report.failures
    assert "acme" not in catalog.tree_signatures(store)
    again = ingest(sources, IngestOptions(store=store, workers=2), embedder=embedder)
    assert again.entities["acme"].unchanged == 2 and again.entities["acme"].indexed == 0
