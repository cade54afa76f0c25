"""The model `ragctl serve` is given embeds both the uploads and the queries, with one shared
instance, and each entity's `Searcher` is kept between requests yet sees new documents."""

from __future__ import annotations

from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from test_serve import Server, doc, upload  # noqa: E402

from ragctl.model_config import ModelConfig  # noqa: E402


@pytest.mark.timeout(300)
def test_a_non_default_backend_embeds_uploads_and_queries_with_one_model(tmp_path: Path) -> None:
    srv = Server(tmp_path / "store", "--backend", "torch", "--precision", "fp32").start()
    try:
        with srv.client() as c:
            engine_model = c.get("/api/status").json()["engine"]["model"]
            assert engine_model["backend"] == "torch" and engine_model["precision"] == "fp32"
            job = upload(c, "m", [("a.md", doc(1, "granary").encode())], wait=True).json()
            assert job["files"][0]["status"] == "indexed" and job["files"][0]["doc_id"]
            assert job["model"]["backend"] == "torch" and job["model"]["precision"] == "fp32", job["model"]
            assert c.get(f"/api/jobs/{job['job_id']}").json()["model"] == job["model"]  # kept in the manifest

            assert c.get("/api/status").json()["search"]["model"] is None  # nothing queried yet
            first = c.post("/api/entities/m/search", json={"query": "granary opening hours", "mode": "vector"})
            assert [h["path"] for h in first.json()["results"]] == ["a.md"]
            search = c.get("/api/status").json()["search"]
            assert search["cached_entities"] == 1 and search["shares_engine_model"] is True
            assert search["model"]["backend"] == "torch" and search["model"]["precision"] == "fp32"

            second = upload(c, "m", [("b.md", doc(2, "lighthouse").encode())], wait=True).json()
            hits = c.post("/api/entities/m/search", json={"query": "lighthouse visitors", "k": 2}).json()["results"]
            assert hits[0]["path"] == "b.md" and hits[0]["doc_id"] == second["files"][0]["doc_id"]  # cached, fresh
            assert c.get("/api/status").json()["search"]["cached_entities"] == 1
    finally:
        srv.stop()


def test_search_cache_is_bounded_by_bytes_and_drops_the_least_recently_used(tmp_path: Path) -> None:
    from helpers import cli, make_tree

    from ragctl.searchers import SearcherCache, searcher_weight

    root = make_tree(tmp_path / "root", {
        "small-a/a.md": doc(1, "granary"), "small-b/b.md": doc(2, "lighthouse"),
        "big/c.md": "\n\n".join(doc(i, "harbour") for i in range(3, 40)),
    })
    store = tmp_path / "store"
    assert cli("ingest", root, "--store", store, "--quiet").exit_code == 0
    small, big = searcher_weight(store, "small-a"), searcher_weight(store, "big")
    assert big > small > 0
    cache = SearcherCache(store, ModelConfig(), max_bytes=big + small)
    for entity in ("small-a", "small-b"):
        assert [h.path for h in cache.get(entity).search(["opening hours"], 1, "text")[0]]
    assert cache.status(None)["cached_entities"] == 2
    cache.get("big")  # needs room for its vectors: the least recently used small one goes
    status = cache.status(None)
    assert status["cached_entities"] == 2 and status["cached_bytes"] <= big + small
    cache.get("small-b")  # still cached (used after small-a), now the most recent
    cache.get("small-a")  # comes back; "big" is the least recent and goes
    assert cache.status(None)["cached_bytes"] == small + searcher_weight(store, "small-b")
