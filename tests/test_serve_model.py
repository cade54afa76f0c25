"""The model `ragctl serve` is given embeds both the uploads and the queries, with one shared
instance, and each entity's `Searcher` is kept between requests yet sees new documents."""

from __future__ import annotations

from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from test_serve import Server, doc, upload  # noqa: E402


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
