"""JSONStorage: the sharded record store under the mapping (issue 3). No model, no FAISS."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from ragctl.errors import StorageError, UsageError
from ragctl.fsutil import atomic_write_json
from ragctl.storage.json_storage import JSONStorage

C = "doc_id_name_mapping"


def rec(doc_id: str, entity: str | None = "acme", **extra) -> dict:
    r = {"doc_id": doc_id, "name": f"{doc_id}.md", "path": f"{doc_id}.md", "content_hash": doc_id * 4, "chunk_count": 1}
    if entity is not None:
        r["entity_id"] = entity
    r.update(extra)
    return r


def load(path: Path):
    return json.loads(path.read_text())


def tree_state(root: Path) -> dict[str, str]:
    """Every path under root (directories too) with a digest of file contents."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# ----------------------------------------------------------------------------- sharded API
@pytest.mark.timeout(30)
def test_insert_upsert_find_update_delete_by_shard(tmp_path):
    s = JSONStorage(tmp_path)
    s.insert(C, rec("a1", "acme"))
    s.insert(C, rec("g1", "globex"))
    assert s.upsert(C, [rec("a2", "acme"), rec("g2", "globex"), rec("i1", "initech")]) == 3

    # one file per entity, each a JSON object {doc_id: record}; no legacy file
    assert sorted(p.name for p in (tmp_path / C).glob("*.json")) == ["acme.json", "globex.json", "initech.json"]
    assert set(load(tmp_path / C / "acme.json")) == {"a1", "a2"}
    assert load(tmp_path / C / "globex.json")["g1"]["entity_id"] == "globex"
    assert not (tmp_path / f"{C}.json").exists()

    # with a shard key the query reads one shard; without one it scans them all
    assert {r["doc_id"] for r in s.find(C, {"entity_id": "acme"})} == {"a1", "a2"}
    assert {r["doc_id"] for r in s.find(C, {"entity_id": ["acme", "initech"]})} == {"a1", "a2", "i1"}
    assert {r["doc_id"] for r in s.find(C)} == {"a1", "a2", "g1", "g2", "i1"}
    assert [r["doc_id"] for r in s.find(C, {"path": "g2.md"})] == ["g2"]
    assert s.find(C, {"entity_id": "nobody"}) == []
    assert s.count(C, {"doc_id": ["a1", "g1", "zz"]}) == 2

    # duplicates are refused; upsert replaces
    with pytest.raises(UsageError, match="already exists"):
        s.insert(C, rec("a1", "acme"))
    s.upsert(C, [rec("a1", "acme", chunk_count=7)])
    assert s.find(C, {"doc_id": "a1"})[0]["chunk_count"] == 7

    # update without a shard key reaches every shard; with one, only that shard
    assert s.update(C, {"name": "g2.md"}, {"tag": "x"}) == 1
    assert load(tmp_path / C / "globex.json")["g2"]["tag"] == "x"
    assert s.update(C, {"entity_id": "acme"}, {"tag": "y"}) == 2
    assert {r["tag"] for r in s.find(C, {"entity_id": "acme"})} == {"y"}
    with pytest.raises(UsageError):
        s.update(C, {"entity_id": "acme"}, {"doc_id": "other"})

    # results are copies: mutating them changes nothing
    s.find(C, {"doc_id": "a1"})[0]["chunk_count"] = 99
    assert s.find(C, {"doc_id": "a1"})[0]["chunk_count"] == 7

    assert s.delete(C, {"path": "i1.md"}) == 1
    assert s.delete(C, {"entity_id": "globex"}) == 2
    assert s.find(C, {"entity_id": "globex"}) == []
    assert {r["doc_id"] for r in s.find(C)} == {"a1", "a2"}
    assert load(tmp_path / C / "globex.json") == {}


@pytest.mark.timeout(30)
def test_entity_ids_list_puts_a_record_in_each_shard(tmp_path):
    s = JSONStorage(tmp_path)
    shared = {"doc_id": "s1", "entity_ids": ["acme", "globex"], "path": "shared.md"}
    s.upsert(C, [shared, rec("a1", "acme")])
    assert "s1" in load(tmp_path / C / "acme.json") and "s1" in load(tmp_path / C / "globex.json")
    assert {r["doc_id"] for r in s.find(C, {"entity_ids": ["globex"]})} == {"s1"}
    assert {r["doc_id"] for r in s.find(C, {"entity_ids": "acme"})} == {"s1", "a1"}
    assert len(s.find(C)) == 2  # one record, found once
    assert s.delete(C, {"doc_id": "s1"}) == 2  # gone from both shards
    assert s.find(C, {"entity_ids": ["globex"]}) == []


@pytest.mark.timeout(30)
def test_record_without_entity_goes_to_the_legacy_file(tmp_path):
    s = JSONStorage(tmp_path)
    s.insert(C, rec("n1", None))
    assert set(load(tmp_path / f"{C}.json")) == {"n1"}
    assert [r["doc_id"] for r in s.find(C)] == ["n1"]


@pytest.mark.timeout(30)
def test_sharding_disabled_keeps_one_legacy_file(tmp_path):
    s = JSONStorage(tmp_path, enable_sharding=False)
    s.insert(C, rec("a1", "acme"))
    s.upsert(C, [rec("g1", "globex"), rec("a2", "acme")])
    assert not (tmp_path / C).exists()
    assert set(load(tmp_path / f"{C}.json")) == {"a1", "a2", "g1"}
    assert {r["doc_id"] for r in s.find(C, {"entity_id": "acme"})} == {"a1", "a2"}
    assert s.update(C, {"entity_id": "globex"}, {"tag": 1}) == 1
    assert s.delete(C, {"entity_id": "acme"}) == 2
    assert set(load(tmp_path / f"{C}.json")) == {"g1"}
    assert not (tmp_path / C).exists()


@pytest.mark.timeout(30)
def test_sharded_store_reads_records_only_in_the_legacy_file(tmp_path):
    atomic_write_json(tmp_path / f"{C}.json", {"old1": rec("old1", "acme"), "old2": rec("old2", "globex")})
    s = JSONStorage(tmp_path)
    s.insert(C, rec("new1", "acme"))
    assert {r["doc_id"] for r in s.find(C, {"entity_id": "acme"})} == {"old1", "new1"}
    assert {r["doc_id"] for r in s.find(C)} == {"old1", "old2", "new1"}
    assert set(s.records_for_entity(C, "acme")) == {"old1", "new1"}
    # the shard wins over the legacy file for the same id
    s.upsert(C, [rec("old1", "acme", chunk_count=5)])
    assert [r["chunk_count"] for r in s.find(C, {"doc_id": "old1"})] == [5]
    # update and delete reach records wherever they live
    assert s.update(C, {"doc_id": "old2"}, {"tag": "t"}) == 1
    assert load(tmp_path / f"{C}.json")["old2"]["tag"] == "t"
    assert s.delete(C, {"entity_id": "acme"}) == 3  # old1 in legacy + old1 and new1 in the shard
    assert {r["doc_id"] for r in s.find(C)} == {"old2"}


@pytest.mark.timeout(30)
def test_list_format_legacy_file_is_readable(tmp_path):
    (tmp_path / f"{C}.json").write_text(json.dumps([rec("l1", "acme"), rec("l2", "globex")]))
    for sharding in (True, False):
        s = JSONStorage(tmp_path, enable_sharding=sharding)
        assert {r["doc_id"] for r in s.find(C)} == {"l1", "l2"}
        assert [r["doc_id"] for r in s.find(C, {"entity_id": "globex"})] == ["l2"]
    # a write through the legacy file turns it into the object form, records preserved
    JSONStorage(tmp_path, enable_sharding=False).insert(C, rec("l3", "acme"))
    assert set(load(tmp_path / f"{C}.json")) == {"l1", "l2", "l3"}
    (tmp_path / f"{C}.json").write_text(json.dumps([{"name": "no id"}]))
    with pytest.raises(StorageError, match="doc_id"):
        JSONStorage(tmp_path).find(C)


@pytest.mark.timeout(30)
def test_corrupt_shard_is_a_storage_error_naming_the_file(tmp_path):
    s = JSONStorage(tmp_path)
    s.insert(C, rec("a1", "acme"))
    (tmp_path / C / "acme.json").write_text('{"a1": {"doc_id": ')
    with pytest.raises(StorageError, match=r"acme\.json.*not valid JSON"):
        s.find(C, {"entity_id": "acme"})
    with pytest.raises(StorageError, match=r"acme\.json"):
        s.upsert(C, [rec("a2", "acme")])
    assert (tmp_path / C / "acme.json").read_text() == '{"a1": {"doc_id": '  # not overwritten
    (tmp_path / C / "globex.json").write_text("[1, 2]")
    with pytest.raises(StorageError, match=r"globex\.json"):
        s.find(C, {"entity_id": "globex"})


@pytest.mark.timeout(30)
def test_other_instances_see_writes_and_failed_edits_write_nothing(tmp_path):
    a, b = JSONStorage(tmp_path), JSONStorage(tmp_path)
    a.insert(C, rec("a1"))
    assert b.count(C, {"entity_id": "acme"}) == 1  # b caches the shard...
    a.upsert(C, [rec("a1", chunk_count=3), rec("a2")])
    assert {r["doc_id"]: r["chunk_count"] for r in b.find(C, {"entity_id": "acme"})} == {"a1": 3, "a2": 1}
    before = (tmp_path / C / "acme.json").read_bytes()
    with pytest.raises(RuntimeError):
        with a.edit(C, "acme") as data:
            data.clear()
            raise RuntimeError("abort")
    assert (tmp_path / C / "acme.json").read_bytes() == before


# ----------------------------------------------------------------------------- entity ids
BAD_IDS = ["..", ".", "a/b", "/abs", "", "a\x00b", "x" * 129, "-lead", "a b", "é"]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
@pytest.mark.parametrize("sharding", [True, False], ids=["sharded", "monolithic"])
def test_invalid_entity_ids_are_rejected_before_touching_disk(tmp_path, bad, sharding):
    from ragctl.storage.entity import EntityStore

    s = JSONStorage(tmp_path / "store", enable_sharding=sharding)
    s.insert(C, rec("ok1", "acme"))
    s.insert(C, rec("nil", None))
    before = tree_state(tmp_path)
    attempts = {
        "insert": lambda: s.insert(C, rec("x1", bad)),
        "upsert": lambda: s.upsert(C, [rec("x2", "acme"), rec("x3", bad)]),
        "upsert-list": lambda: s.upsert(C, [{"doc_id": "x4", "entity_ids": ["acme", bad]}]),
        "find": lambda: s.find(C, {"entity_id": bad}),
        "find-list": lambda: s.find(C, {"entity_ids": ["acme", bad]}),
        "count": lambda: s.count(C, {"entity_id": [bad]}),
        "update": lambda: s.update(C, {"entity_id": bad}, {"tag": 1}),
        "delete": lambda: s.delete(C, {"entity_id": bad}),
        "edit": lambda: s.edit(C, bad).__enter__(),
        "shard_path": lambda: s.shard_path(C, bad),
        "drop_shard": lambda: s.drop_shard(C, bad),
        "vector_store": lambda: EntityStore(s, bad),
    }
    if sharding:
        attempts["records_for_entity"] = lambda: s.records_for_entity(C, bad)
    for name, attempt in attempts.items():
        with pytest.raises(UsageError, match="invalid entity id"):
            attempt()
        assert tree_state(tmp_path) == before, f"{name} touched the disk"
    # the same ids as record ids (not entity ids) are just data
    s.upsert(C, [{"doc_id": bad or "empty", "entity_id": "acme"}])


@pytest.mark.timeout(30)
def test_longest_valid_entity_id_is_accepted(tmp_path):
    s = JSONStorage(tmp_path)
    eid = "a" + "b" * 127
    s.insert(C, rec("d", eid))
    assert (tmp_path / C / f"{eid}.json").exists()
    assert s.find(C, {"entity_id": eid})[0]["doc_id"] == "d"


# ----------------------------------------------------------------------------- file modes
@pytest.mark.timeout(30)
def test_atomic_writes_keep_normal_file_modes(tmp_path):
    """mkstemp's 0600 must not leak into the store (other readers of a shared store)."""
    s = JSONStorage(tmp_path)
    s.insert(C, rec("a1"))
    shard = tmp_path / C / "acme.json"
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(shard.stat().st_mode) == 0o666 & ~umask
    shard.chmod(0o640)
    s.upsert(C, [rec("a2")])
    assert stat.S_IMODE(shard.stat().st_mode) == 0o640  # a replaced file keeps its mode
