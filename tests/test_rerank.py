"""`--rerank` (ragctl.rerank): the top fused candidates re-scored passage by passage with the
entity's own model. Deterministic, within the fused candidates, on and off through the CLI and
the library. Real files, the real model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import cli, make_tree

from ragctl.query import Searcher
from ragctl.rerank import RERANK_DEPTH, passages

FILLER = " ".join(f"Section filler sentence number {i} talks about garden tools and sheds." for i in range(12))
DOCS = {
    "garden/tomatoes.md": "# Tomatoes\n\n## Light\n\n" + FILLER + " Tomatoes need six hours of direct sunlight.\n\n"
    "## Water\n\nWater tomatoes deeply twice a week, at the base of the plant.\n",
    "garden/roses.md": "# Roses\n\n## Pruning\n\nPrune roses in late winter just above an outward-facing bud.\n",
    "garden/beans.md": "# Beans\n\nBeans fix nitrogen. " + FILLER + "\n",
    "garden/soil.md": "# Soil\n\nCompost improves soil structure and feeds the worms.\n",
}
QUERIES = ["how many hours of sun do tomatoes want", "when should roses be cut back", "what feeds worms", "sheds"]


@pytest.fixture(scope="module")
def store(tmp_path_factory, embedder) -> Path:
    root = make_tree(tmp_path_factory.mktemp("rerank") / "docs", DOCS)
    store = root.parent / "store"
    assert cli("ingest", root, "--store", store, "--quiet").exit_code == 0
    return store


def test_passages_group_sentences():
    text = "One two three. Four five six! Seven?\nEight nine."
    assert passages(text, words=4) == ["One two three.", "Four five six! Seven?", "Eight nine."]
    assert passages(text, words=100) == ["One two three. Four five six! Seven? Eight nine."]
    assert passages("   ") == []


@pytest.mark.timeout(180)
def test_rerank_is_deterministic_and_stays_within_the_fused_candidates(store):
    searcher = Searcher(store, "garden")
    fused = searcher.search(QUERIES, k=RERANK_DEPTH, per_document=False)
    plain = searcher.search(QUERIES, k=3, per_document=False)
    first = searcher.search(QUERIES, k=3, rerank=True, per_document=False)
    again = Searcher(store, "garden").search(QUERIES, k=3, rerank=True, per_document=False)  # a cold cache: same order
    key = [[(h.doc_id, h.chunk, round(h.score, 6)) for h in row] for row in first]
    assert key == [[(h.doc_id, h.chunk, round(h.score, 6)) for h in row] for row in again]
    assert key == [[(h.doc_id, h.chunk, round(h.score, 6)) for h in row]
                   for row in searcher.search(QUERIES, 3, rerank=True, per_document=False)]
    for row, candidates in zip(first, fused):
        assert len(row) == min(3, len(candidates))
        assert {(h.doc_id, h.chunk) for h in row} <= {(h.doc_id, h.chunk) for h in candidates}
        assert [h.score for h in row] == sorted((h.score for h in row), reverse=True)
        assert all(h.vector_rank or h.text_rank for h in row)  # where it came from is kept
    assert plain == searcher.search(QUERIES, k=3, per_document=False)  # rerank off: the fused order, untouched
    assert first[0][0].path == "tomatoes.md"
    assert first[1][0].path == "roses.md"


@pytest.mark.timeout(180)
def test_rerank_through_the_cli_and_the_library(store):
    for mode in ("hybrid", "vector", "text"):
        out = cli("query", "garden", QUERIES[0], "--store", store, "--json", "--rerank", "--mode", mode, "-k", "2")
        assert out.exit_code == 0, out.output
        results = json.loads(out.stdout)["results"]
        assert results[0]["path"] == "tomatoes.md" and {"title", "section"} <= set(results[0])
    from ragctl.manager import get_entity_rag_manager

    manager = get_entity_rag_manager(str(store))
    assert manager.query("garden", QUERIES[1], k=1, rerank=True)[0].path == "roses.md"
