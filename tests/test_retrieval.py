"""Hybrid retrieval: query modes, the full-text index (identifiers, FTS syntax in user input,
entity isolation), rank fusion, `ragctl eval`, and the in-place upgrade of a version-1 store.

Real files, real FAISS, the real small model (shared `embedder` fixture)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from helpers import cli, make_tree

from ragctl.embedding import resolve_model
from ragctl.query import RRF_K, Searcher, fuse
from ragctl.storage.chunk_texts import query_terms

DOCS = {
    "rust/pointers.md": "# Pointers\n\nUse std::ptr::NonNull when a raw pointer must never be null; it is covariant.\n",
    "rust/boxes.md": "# Boxes\n\nA Box allocates its value on the heap and frees it when the box goes out of scope.\n",
    "node/files.md": "# Files\n\nCall fs.readFile with a path and a callback to read a whole file into memory.\n",
    "node/errors.md": "# Errors\n\nPassing a number where a string is expected throws ERR_INVALID_ARG_TYPE, "
    "a TypeError with code ERR_INVALID_ARG_TYPE.\n",
    "node/streams.md": "# Streams\n\nA readable stream emits data events until the end event; pipe() handles backpressure.\n",
    "garden/tomatoes.md": "# Tomatoes\n\nTomatoes need six hours of direct sunlight and deep watering twice a week.\n",
    "garden/roses.md": "# Roses\n\nPrune roses in late winter, just above an outward-facing bud, with clean shears.\n",
}
FTS_SYNTAX = [
    '"unbalanced quote', 'say "hello" world', "*", "read*", "-", "-files", "fs:readFile", "a:b:c",
    "(pointer", "pointer)", "()", "NEAR(a b)", "a NEAR b", "AND", "tomatoes AND", "OR OR", "NOT roses",
    "^start", "col:x + y", "'single'", "''", '""', "{a b}", "[x]", "@#$%", "\u00e9t\u00e9 caf\u00e9", "x" * 300,
]


@pytest.fixture(scope="module")
def store(tmp_path_factory, embedder) -> Path:
    root = make_tree(tmp_path_factory.mktemp("retrieval") / "docs", DOCS)
    store = root.parent / "store"
    result = cli("ingest", root, "--store", store, "--json", "--quiet")
    assert result.exit_code == 0, result.output
    return store


def query_json(store: Path, entity: str, text: str, *extra: str) -> dict:
    result = cli("query", entity, text, "--store", store, "--json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.timeout(120)
def test_modes_say_where_each_hit_came_from(store):
    for mode in ("hybrid", "vector", "text"):
        out = query_json(store, "garden", "how much sun do tomatoes need", "--mode", mode, "-k", "2")
        assert out["entity"] == "garden"
        top = out["results"][0]
        assert {"doc_id", "path", "score", "text", "vector_rank", "text_rank"} <= set(top)
        assert top["path"] == "tomatoes.md", (mode, out)
        if mode == "vector":
            assert top["vector_rank"] == 1 and top["text_rank"] is None
        elif mode == "text":
            assert top["text_rank"] == 1 and top["vector_rank"] is None
        else:
            assert top["vector_rank"] == 1 and top["text_rank"] == 1
    hybrid = query_json(store, "garden", "tomatoes sunlight")["results"]  # hybrid is the default
    assert hybrid[0]["score"] == pytest.approx(2 / (RRF_K + 1), abs=1e-6)  # rank 1 in both lists
    bad = cli("query", "garden", "x", "--store", store, "--mode", "fuzzy")
    assert bad.exit_code == 2 and "--mode" in bad.output


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "query, path",
    [
        ("std::ptr::NonNull", "pointers.md"),
        ("NonNull", "pointers.md"),
        ("fs.readFile", "files.md"),
        ("readFile", "files.md"),
        ("ERR_INVALID_ARG_TYPE", "errors.md"),
        ("INVALID_ARG", "errors.md"),
        ("pipe()", "streams.md"),
    ],
)
def test_identifiers_are_found_by_text_mode(store, query, path):
    entity = "rust" if "ptr" in query or "NonNull" in query else "node"
    results = query_json(store, entity, query, "--mode", "text", "-k", "1")["results"]
    assert results and results[0]["path"] == path, results


@pytest.mark.timeout(60)
def test_text_mode_never_crosses_entities(store):
    # "tomatoes" exists only in garden: text mode in node finds nothing at all
    assert query_json(store, "node", "tomatoes sunlight watering", "--mode", "text")["results"] == []
    for mode in ("hybrid", "vector"):
        paths = {r["path"] for r in query_json(store, "node", "tomatoes sunlight", "--mode", mode)["results"]}
        assert paths <= {"files.md", "errors.md", "streams.md"}


@pytest.mark.timeout(120)
def test_user_queries_with_fts_syntax_never_raise(store):
    searcher = Searcher(store, "node")
    for mode in ("text", "hybrid"):
        results = searcher.search(FTS_SYNTAX, k=3, mode=mode)
        assert len(results) == len(FTS_SYNTAX)
    assert searcher.search(["fs:readFile"], k=1, mode="text")[0][0].path == "files.md"
    assert searcher.search(['"fs.readFile'], k=1, mode="text")[0][0].path == "files.md"
    for text in FTS_SYNTAX:
        for term in query_terms(text):
            assert all(part.isalnum() for part in term), (text, term)


def test_fusion_is_deterministic_and_breaks_ties_by_rank_then_id():
    vector = [(10, 0.9), (11, 0.8), (12, 0.7)]
    text = [(12, 5.0), (13, 4.0), (10, 3.0)]
    fused = fuse(vector, text, k=10)
    assert [r[0] for r in fused] == [10, 12, 11, 13]
    assert fused[0][2:] == (1, 3) and fused[1][2:] == (3, 1)
    # 11 and 13 tie (rank 2 in one list each): the vector rank decides, then the id
    assert fused == fuse(list(vector), list(text), k=10)
    assert [r[0] for r in fuse([(5, 1.0)], [(4, 1.0)], k=2)] == [5, 4]
    assert [r[0] for r in fuse([], [(7, 1.0), (3, 1.0)], k=2)] == [7, 3]


@pytest.mark.timeout(120)
def test_same_query_same_results(store):
    a = query_json(store, "node", "how do I read a file", "-k", "3")
    b = query_json(store, "node", "how do I read a file", "-k", "3")
    assert a == b


@pytest.mark.timeout(180)
def test_eval_reports_every_mode(store):
    result = cli("eval", "node", "--store", store, "--sample", "5", "-k", "3", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(out["modes"]) == {"hybrid", "vector", "text"} and out["sampled"] >= 3
    for row in out["modes"].values():
        assert 0 <= row["chunk_hit"] <= row["doc_recall"] <= 1 and 0 <= row["mrr"] <= 1
    assert out["modes"]["text"]["chunk_hit"] == 1.0  # exact sentences of the entity's own text
    one = cli("eval", "node", "--store", store, "--sample", "3", "--mode", "text")
    assert one.exit_code == 0 and "| node | text |" in one.output
    assert cli("eval", "node", "--store", store, "--mode", "fuzzy").exit_code == 2


# ----------------------------------------------------------------------------- version 1 store
def write_v1_store(store: Path) -> None:
    """The layout an older ragctl wrote: no full-text index, manifest format_version 1."""
    import faiss

    spec = resolve_model(None)
    texts = ["Tomatoes need six hours of direct sunlight.", "Prune roses in late winter with clean shears."]
    (store / "doc_id_name_mapping").mkdir(parents=True)
    (store / "store.json").write_text(json.dumps({"format_version": 1, "mapping_mode": "sharded", "created_at": "2024-01-01T00:00:00Z"}))
    records = {
        f"d{i}": {"doc_id": f"d{i}", "entity_id": "old", "name": f"n{i}.md", "path": f"n{i}.md",
                  "content_hash": f"{i:064x}", "chunk_count": 1, "first_vector_id": i, "size": 1,
                  "mtime_ns": 0, "parser": "text", "indexed_at": "2024-01-01T00:00:00Z"}
        for i in range(2)
    }
    (store / "doc_id_name_mapping" / "old.json").write_text(json.dumps(records))
    entity = store / "entities" / "old"
    entity.mkdir(parents=True)
    (entity / "entity.json").write_text(json.dumps({"entity_id": "old", "model": {"name": spec.name, "digest": spec.digest, "dim": spec.dim}}))
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(spec.dim))
    vectors = np.random.default_rng(0).standard_normal((2, spec.dim)).astype(np.float32)
    index.add_with_ids(vectors / np.linalg.norm(vectors, axis=1, keepdims=True), np.arange(2, dtype=np.int64))
    faiss.write_index(index, str(entity / "index.faiss"))
    with sqlite3.connect(entity / "chunks.sqlite") as conn:
        conn.execute("CREATE TABLE chunks (id INTEGER PRIMARY KEY, doc_id TEXT NOT NULL, ord INTEGER NOT NULL, text TEXT NOT NULL)")
        conn.executemany("INSERT INTO chunks VALUES (?,?,?,?)", [(i, f"d{i}", 0, t) for i, t in enumerate(texts)])
    conn.close()


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    return names


@pytest.mark.timeout(120)
@pytest.mark.parametrize("upgrade_by", ["verify-repair", "first-query"])
def test_version_1_store_is_upgraded_in_place(tmp_path, upgrade_by):
    store = tmp_path / "store"
    write_v1_store(store)
    chunks = store / "entities" / "old" / "chunks.sqlite"
    result = cli("verify", "--store", store, "--json")
    assert result.exit_code == 0, result.output  # readable as it is: nothing is wrong
    assert json.loads(result.stdout)["entities"]["old"]["full_text"] == "missing"
    assert "chunks_fts" not in tables(chunks)
    if upgrade_by == "verify-repair":
        result = cli("verify", "--store", store, "--json", "--repair")
        assert result.exit_code == 0, result.output
        assert "built the full-text index" in json.loads(result.stdout)["entities"]["old"]["repaired"]
        assert json.loads((store / "store.json").read_text())["format_version"] == 3
    out = query_json(store, "old", "pruning roses in winter", "--mode", "text")
    assert out["results"][0]["path"] == "n1.md"
    assert {"chunks_fts", "chunks_vocab"} <= tables(chunks)
    result = cli("verify", "--store", store, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)["entities"]["old"]
    assert report["ok"] and report["full_text"] == "ok" and report["documents"] == 2


@pytest.mark.timeout(60)
def test_a_newer_format_is_refused(tmp_path):
    store = tmp_path / "store"
    write_v1_store(store)
    (store / "store.json").write_text(json.dumps({"format_version": 4, "mapping_mode": "sharded"}))
    result = cli("query", "old", "roses", "--store", store, "--mode", "text")
    assert result.exit_code == 2 and "format version 4" in result.output


def test_question_phrasing_is_not_searched_for_but_a_phrasing_only_query_still_is():
    # "how do I ... my ... don't want" says how the question is asked; only its topic is searched
    assert query_terms("how do I make my release binary smaller? I don't want debug symbols") == [
        ("make",), ("release",), ("binary",), ("smaller",), ("debug",), ("symbols",)]
    # identifiers and possessives stay; "use" stays (a keyword in Rust and Python)
    assert query_terms("what's the use of the crate's fs.readFile") == [("use",), ("crate", "s"), ("fs", "readfile")]
    # a word written as code is meant, and an identifier is no contraction
    assert query_terms("`with` statement") == [("with",), ("statement",)]
    assert query_terms("off_t size of a file") == [("off", "t"), ("size",), ("file",)]
    # a query of nothing but such words is searched as it is
    assert query_terms("how do I") == [("how",), ("do",), ("i",)]
