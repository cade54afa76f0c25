"""The store catalog (`<store>/catalog.sqlite`, ragctl/storage/catalog.py): `stats`, serve's
`GET /api/entities` (paged, filtered) and MCP list from it; every commit and delete keeps it
right, a kill -9 between an entity's commit and its catalog row is repaired by the next reader,
`verify` checks it and `verify --repair` rebuilds it. Real files, real FAISS, real processes."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import RAGCTL, REPO, SEGMENT_MODEL, cli, make_tree, segment_doc

from ragctl.storage.entity import EntityStore
from ragctl.storage.json_storage import JSONStorage, open_store
from ragctl.storage.layout import StoreLayout

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


def commit_docs(store: Path, entities: dict[str, int]) -> JSONStorage:
    """Commit `n` small documents (random vectors, 3 chunks each) into each entity."""
    storage = open_store(store, create=True)
    for entity_id, n in entities.items():
        result = EntityStore(storage, entity_id).commit(
            SEGMENT_MODEL, adds=[segment_doc(f"{entity_id}/doc{i}.md") for i in range(n)])
        assert result.maintenance_error == ""
    return storage


def on_disk(store: Path) -> dict[str, dict[str, Any]]:
    """What each entity's own files say (read entity by entity, not from the catalog)."""
    storage = open_store(store, create=False)
    out = {}
    for entity_id in StoreLayout(store).entity_ids():
        records = storage.records_for_entity("doc_id_name_mapping", entity_id)
        meta = EntityStore(storage, entity_id).meta() or {}
        out[entity_id] = {"documents": len(records), "chunks": sum(r["chunk_count"] for r in records.values()),
                          "model": (meta.get("model") or {}).get("name")}
    return out


def listed(stats: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e: {k: row[k] for k in ("documents", "chunks", "model")} for e, row in stats["entities"].items()}


def stats_json(store: Path) -> dict[str, Any]:
    result = cli("stats", "--store", store, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def verify_json(store: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    result = cli("verify", "--store", store, "--json", *extra)
    return result.exit_code, json.loads(result.stdout)


# ----------------------------------------------------------------------------- commits and deletes
@pytest.mark.timeout(300)
def test_catalog_follows_ingest_document_delete_and_entity_delete(tmp_path, embedder):
    root = make_tree(tmp_path / "docs", {
        **{f"alpha/a{i}.md": f"# Alpha {i}\n\nThe alpha harbour opens at {i}:00 for boats.\n" for i in range(3)},
        **{f"beta/b{i}.md": f"# Beta {i}\n\nBeta gardens water the roses at {i}:30.\n" for i in range(2)},
        "gamma/g.md": "# Gamma\n\nGamma keeps one note about lanterns.\n",
    })
    store = tmp_path / "store"
    assert cli("ingest", root, "--store", store, "--quiet").exit_code == 0
    assert (store / "catalog.sqlite").exists()
    stats = stats_json(store)
    assert listed(stats) == on_disk(store)
    assert [stats["entities"][e]["documents"] for e in ("alpha", "beta", "gamma")] == [3, 2, 1]
    assert stats["totals"]["entities"] == 3 and stats["totals"]["documents"] == 6
    assert all(row["bytes"] > 0 and row["last_ingest"] and row["error"] is None for row in stats["entities"].values())

    assert cli("delete", "alpha", "--doc", "a1.md", "--yes", "--store", store).exit_code == 0
    stats = stats_json(store)
    assert stats["entities"]["alpha"]["documents"] == 2
    assert listed(stats) == on_disk(store)

    assert cli("delete", "beta", "--yes", "--store", store).exit_code == 0
    from ragctl import get_entity_rag_manager

    assert list(get_entity_rag_manager(store).list_entities(q="AMM")) == ["gamma"]  # the library listing
    stats = stats_json(store)
    assert sorted(stats["entities"]) == ["alpha", "gamma"] and stats["totals"]["documents"] == 3
    code, report = verify_json(store)
    assert code == 0 and report["catalog"]["ok"] and report["catalog"]["present"], report


# ----------------------------------------------------------------------------- old stores, verify
def test_store_without_a_catalog_gets_one_on_first_stats_and_says_so(tmp_path):
    store = tmp_path / "store"
    commit_docs(store, {"acme": 2, "globex": 3})
    (store / "catalog.sqlite").unlink()  # as an older ragctl left it
    proc = subprocess.run([*RAGCTL, "stats", "--store", str(store), "--json"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "building the store catalog (2 entities" in proc.stderr
    assert listed(json.loads(proc.stdout)) == on_disk(store)
    again = subprocess.run([*RAGCTL, "stats", "--store", str(store), "--json"], capture_output=True, text=True,
                           timeout=120)
    assert "building" not in again.stderr and json.loads(again.stdout) == json.loads(proc.stdout)


def test_verify_repair_rebuilds_a_deleted_catalog_and_fixes_a_wrong_row(tmp_path):
    store = tmp_path / "store"
    commit_docs(store, {"acme": 2, "globex": 3, "initech": 1})
    for name in ("catalog.sqlite", "catalog.sqlite-wal", "catalog.sqlite-shm"):
        (store / name).unlink(missing_ok=True)
    code, report = verify_json(store)  # a missing catalog is not a problem: it is built on need
    assert code == 0 and report["catalog"]["present"] is False
    assert not (store / "catalog.sqlite").exists()  # verify without --repair writes nothing
    code, report = verify_json(store, "--repair")
    assert code == 0, report
    assert any("built the store catalog (3 entities)" in line for line in report["catalog"]["repaired"])
    code, report = verify_json(store)
    assert code == 0 and report["catalog"]["repaired"] == []
    assert listed(stats_json(store)) == on_disk(store)

    with sqlite3.connect(store / "catalog.sqlite") as con:  # a row gone wrong (a lost update)
        con.execute("UPDATE entities SET documents = 99 WHERE entity_id = 'globex'")
        con.execute("DELETE FROM entities WHERE entity_id = 'initech'")
    result = cli("verify", "--store", store)
    assert result.exit_code == 1
    assert "catalog row of 'globex': documents 99 (files say 3)" in result.output
    assert "catalog row of 'initech': missing" in result.output
    result = cli("verify", "--store", store, "--repair")
    assert result.exit_code == 0, result.output
    assert "store: repaired: catalog row of 'globex'" in result.output
    assert listed(stats_json(store)) == on_disk(store)


KILLED_AFTER_COMMIT = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, sys.argv[2])
    from helpers import SEGMENT_MODEL, segment_doc
    from ragctl.storage import catalog
    from ragctl.storage.entity import EntityStore
    from ragctl.storage.json_storage import open_store

    def killed(*args, **kwargs):  # the commit point has passed; the catalog row is not written
        os.kill(os.getpid(), signal.SIGKILL)

    catalog.put = killed
    storage = open_store(sys.argv[1], create=False)
    EntityStore(storage, "acme").commit(SEGMENT_MODEL, adds=[segment_doc("late.md")])
    """
)


def test_kill_between_a_commit_and_its_catalog_row_is_repaired_by_the_next_reader(tmp_path):
    store = tmp_path / "store"
    commit_docs(store, {"acme": 2, "globex": 1})
    assert stats_json(store)["entities"]["acme"]["documents"] == 2
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", KILLED_AFTER_COMMIT, str(store), str(Path(__file__).parent)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert on_disk(store)["acme"]["documents"] == 3  # committed
    with sqlite3.connect(store / "catalog.sqlite") as con:  # the row is stale, the mark says so
        assert con.execute("SELECT documents FROM entities WHERE entity_id='acme'").fetchone() == (2,)
        assert con.execute("SELECT entity_id FROM pending").fetchall() == [("acme",)]
    stats = stats_json(store)
    assert stats["entities"]["acme"]["documents"] == 3 and listed(stats) == on_disk(store)
    code, report = verify_json(store)
    assert code == 0 and report["catalog"]["problems"] == [], report


# ----------------------------------------------------------------------------- over HTTP
ADMIN = "catalog-admin-token-0123"
TENANT = "catalog-tenant-token-4567"
PAGED = [f"acme-{i:02d}" for i in range(12)] + [f"Globex-{i:02d}" for i in range(10)] + \
    [f"initech_{i}" for i in range(5)] + ["initechX1"]
DOOMED = [f"doomed-{i:02d}" for i in range(12)]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    from test_serve import Server

    base = tmp_path_factory.mktemp("catalog")
    store = base / "store"
    commit_docs(store, {**{e: 1 + i % 3 for i, e in enumerate(PAGED)}, **{e: 2 for e in DOOMED}})
    tokens = base / "tokens.json"
    tokens.write_text(json.dumps({ADMIN: "*", TENANT: ["acme-03", "Globex-02", "initech_1", "not-there"]}))
    server = Server(store, "--tokens", str(tokens)).start()
    yield server
    server.stop()


def get_page(client: Any, **params: Any) -> dict[str, Any]:
    r = client.get("/api/entities", params=params)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


@pytest.mark.timeout(300)
def test_entity_listing_pages_filters_and_tokens(served):
    truth = on_disk(served.store)
    with served.client(ADMIN) as admin:
        first = get_page(admin)
        assert first["limit"] == 100 and first["offset"] == 0 and first["total"] == len(truth)
        seen: list[str] = []
        offset = 0
        while True:
            page = get_page(admin, offset=offset, limit=7)
            assert len(page["entities"]) <= 7 and page["total"] == len(truth)
            assert page["totals"]["documents"] == sum(r["documents"] for r in truth.values())
            seen += list(page["entities"])
            offset += 7
            if offset >= page["total"]:
                break
        assert seen == sorted(truth)  # each entity once, sorted by id
        assert {e: {k: v[k] for k in ("documents", "chunks", "model")} for e, v in first["entities"].items()} == \
            {e: truth[e] for e in first["entities"]}

        globex = get_page(admin, q="GLOBEX", limit=4)  # case-insensitive; totals over all matches
        assert list(globex["entities"]) == [f"Globex-{i:02d}" for i in range(4)]
        assert globex["total"] == 10 and globex["totals"]["entities"] == 10
        assert globex["totals"]["documents"] == sum(truth[f"Globex-{i:02d}"]["documents"] for i in range(10))
        assert list(get_page(admin, q="_")["entities"]) == [f"initech_{i}" for i in range(5)]  # not a wildcard
        assert get_page(admin, q="%")["total"] == 0
        past = get_page(admin, offset=1000)
        assert past["entities"] == {} and past["total"] == len(truth)
        for params in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"q": "x" * 129}):
            assert admin.get("/api/entities", params=params).status_code == 422, params

    with served.client(TENANT) as tenant:  # only its entities, filtered before paging
        mine = get_page(tenant)
        assert list(mine["entities"]) == ["Globex-02", "acme-03", "initech_1"] and mine["total"] == 3
        assert mine["totals"]["documents"] == sum(truth[e]["documents"] for e in mine["entities"])
        one = get_page(tenant, q="ACME", limit=1)
        assert list(one["entities"]) == ["acme-03"] and one["total"] == 1
        assert get_page(tenant, offset=1, limit=1)["entities"].keys() == {"acme-03"}


@pytest.mark.timeout(300)
def test_tenants_deleted_while_the_listing_is_paged(served):
    errors: list[str] = []
    snapshots: list[dict[str, Any]] = []
    stop = threading.Event()

    def lister() -> None:
        with served.client(ADMIN) as client:
            while not stop.is_set():
                offset = 0
                while True:
                    r = client.get("/api/entities", params={"q": "doomed", "offset": offset, "limit": 5})
                    if r.status_code != 200:
                        errors.append(f"{r.status_code} {r.text}")
                        return
                    page = r.json()
                    snapshots.append(page)
                    offset += 5
                    if offset >= page["total"]:
                        break

    thread = threading.Thread(target=lister)
    thread.start()
    try:
        with served.client(ADMIN) as admin:
            for entity_id in DOOMED:
                r = admin.delete(f"/api/entities/{entity_id}")
                assert r.status_code == 200, r.text
                time.sleep(0.05)
    finally:
        stop.set()
        thread.join(60)
    assert errors == [] and len(snapshots) > 3
    for page in snapshots:  # never a half-deleted row: each listed tenant whole, in order
        assert list(page["entities"]) == sorted(page["entities"])
        assert all(row["documents"] == 2 and row["chunks"] == 6 and row["error"] is None
                   for row in page["entities"].values())
        assert page["totals"]["documents"] == 2 * page["total"]
    with served.client(ADMIN) as admin:
        assert get_page(admin, q="doomed")["total"] == 0
        assert get_page(admin, q="acme")["total"] == 12  # the others untouched
    code, report = verify_json(served.store)
    assert code == 0, report


# ----------------------------------------------------------------------------- kill -9, many tenants
MANY_WRITER = textwrap.dedent(
    """
    import random, sys
    sys.path.insert(0, sys.argv[2])
    from helpers import SEGMENT_MODEL, segment_doc
    from ragctl.manager import delete_entity
    from ragctl.storage.entity import EntityStore
    from ragctl.storage.json_storage import open_store

    storage = open_store(sys.argv[1], create=True)
    rng = random.Random(int(sys.argv[3]))
    version = 0
    while True:
        version += 1
        entity = f"t{rng.randrange(75) * 2 + int(sys.argv[4]):03d}"  # each writer its own tenants
        store = EntityStore(storage, entity)
        action = rng.random()
        if action < 0.05:
            delete_entity(sys.argv[1], entity)
        elif action < 0.2 and store.records():
            store.commit(SEGMENT_MODEL, removes=[sorted(store.records())[0]])
        else:
            docs = [segment_doc(f"d{rng.randrange(4)}.md", version, n=rng.randint(1, 3)) for _ in range(rng.randint(1, 2))]
            store.commit(SEGMENT_MODEL, adds=docs)
            if action > 0.9:
                store.gc()
    """
)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigkill_during_commits_of_many_tenants_keeps_the_catalog_right(tmp_path):
    """Two writer processes commit, remove, gc and delete across 150 tenants and are killed
    with SIGKILL at random moments, eight times over one store. After every kill, `verify`
    passes (the dead writers' marks are settled) and `stats` equals what each entity's files
    say; at the end the catalog is deleted and `verify --repair` rebuilds it exactly."""
    store = tmp_path / "store"
    seed = int(os.environ.get("RAGCTL_TEST_SEED", random.randrange(10**9)))
    print(f"RAGCTL_TEST_SEED={seed}")
    rng = random.Random(seed)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    tests_dir = str(Path(__file__).parent)
    for trial in range(8):
        writers = [subprocess.Popen([sys.executable, "-c", MANY_WRITER, str(store), tests_dir, str(rng.randrange(10**9)),
                                     str(k)], stderr=subprocess.PIPE, text=True, env=env) for k in range(2)]
        time.sleep(rng.uniform(1.5, 4.0))
        for writer in writers:
            assert writer.poll() is None, writer.communicate()[1]  # still writing: never failed
            writer.send_signal(signal.SIGKILL)
        for writer in writers:
            writer.communicate(timeout=30)
        code, report = verify_json(store)
        assert code == 0, (trial, report)
        assert listed(stats_json(store)) == on_disk(store), trial
    assert len(on_disk(store)) > 20
    for name in ("catalog.sqlite", "catalog.sqlite-wal", "catalog.sqlite-shm"):
        (store / name).unlink(missing_ok=True)
    code, report = verify_json(store, "--repair")
    assert code == 0 and report["catalog"]["repaired"], report
    assert listed(stats_json(store)) == on_disk(store)
    with sqlite3.connect(store / "catalog.sqlite") as con:
        assert con.execute("SELECT count(*) FROM pending").fetchone() == (0,)


def test_gc_after_a_clean_pass_still_drops_what_later_commits_leave_behind(tmp_path):
    """gc() returns at once while nothing changed since its last clean pass (its signature is
    kept in the catalog), but a replacement or a removal committed since is still collected."""
    store = tmp_path / "store"
    storage = commit_docs(store, {"acme": 3})
    assert EntityStore(storage, "acme").gc() == 0
    assert EntityStore(storage, "acme").gc() == 0  # the fast path: nothing to do
    EntityStore(storage, "acme").commit(SEGMENT_MODEL, adds=[segment_doc("acme/doc0.md", version=1)])
    assert EntityStore(storage, "acme").gc() == 3  # the replaced document's vectors
    doomed = sorted(EntityStore(storage, "acme").records())[0]
    EntityStore(storage, "acme").commit(SEGMENT_MODEL, removes=[doomed])  # a removal only: no new segment
    assert EntityStore(storage, "acme").gc() == 3
    code, report = verify_json(store)
    assert code == 0 and report["entities"]["acme"]["orphans"] == 0 and report["entities"]["acme"]["documents"] == 2


def test_stats_table_pages_filters_and_names_an_unreadable_entity_off_the_page(tmp_path):
    store = tmp_path / "store"
    commit_docs(store, {"acme": 1, "beta": 2, "gamma": 1, "globex": 1, "zeta": 1})
    (store / "doc_id_name_mapping" / "zeta.json").write_text("{broken", encoding="utf-8")
    assert cli("verify", "--store", store).exit_code == 1  # reading it marks the entity for the catalog
    result = cli("stats", "--store", store, "--limit", "2")
    assert result.exit_code == 1
    assert "acme" in result.output and "beta" in result.output and "gamma" not in result.output
    assert "entities 1-2 of 5 shown" in result.output
    assert "entity 'zeta' cannot be read" in result.output and "not valid JSON" in result.output
    result = cli("stats", "--store", store, "--json", "--filter", "G", "--offset", "1")
    assert result.exit_code == 0, result.output  # zeta is not among the matches
    page = json.loads(result.stdout)
    assert list(page["entities"]) == ["globex"] and page["total"] == 2 and page["totals"]["documents"] == 2


def test_mcp_list_entities_pages_filters_and_keeps_invisible_entities_out(tmp_path):
    from ragctl.errors import UsageError
    from ragctl.integrations.mcp_server import StoreTools

    store = tmp_path / "store"
    commit_docs(store, {"acme": 1, "beta": 2, "gamma": 1, "globex": 3, "initech": 1})
    tools = StoreTools(store, entities=["acme", "gamma", "globex", "initech", "unknown"])
    listed_all = tools.list_entities()
    assert [e.entity for e in listed_all.entities] == ["acme", "gamma", "globex", "initech"]  # beta is invisible
    assert listed_all.total == 4
    page = tools.list_entities(filter="G", offset=1, limit=1)
    assert [(e.entity, e.documents, e.chunks) for e in page.entities] == [("globex", 3, 9)] and page.total == 2
    with pytest.raises(UsageError, match="limit must be an integer from 1 to 1000"):
        tools.list_entities(limit=0)
