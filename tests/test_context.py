"""Contextual chunks: titles and heading paths from the parsers, chunks whose context line +
text fit the model window (in the model's own tokens), title/section stored, full-text indexed
and returned, an old store (no title/section columns, records without a chunker version) still
answering, and `ingest --reindex` finishing after a kill -9.

Real files, the real tokenizer and model, real subprocesses and signals."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from helpers import RAGCTL, cli, make_tree

from ragctl.chunking import CHUNKER_VERSION, CONTEXT_SEPARATOR, Chunker, load_tokenizer
from ragctl.model_spec import resolve_model
from ragctl.parsing import parse_bytes

LONG_HEADING = "A heading that goes on " + "and on " * 30 + "forever"
GUIDE = (
    "# Garden guide\n\nIntro text about the garden.\n\n"
    "## Vegetables\n\n### Tomatoes\n\nTomatoes need six hours of direct sunlight every day.\n\n"
    "### Beans\n\nBeans fix nitrogen in the soil and climb anything near them.\n\n"
    "## Flowers\n\nRoses want pruning in late winter.\n\n"
    f"## {LONG_HEADING}\n\n### Deep one\n\n#### Deeper\n\n" + " ".join(["Filler sentence about compost heaps."] * 120)
)


@pytest.fixture(scope="module")
def chunker() -> Chunker:
    spec = resolve_model(None)
    return Chunker(load_tokenizer(spec.path), max_tokens=spec.max_tokens, overlap_tokens=32)


def test_parsers_give_titles():
    assert parse_bytes(GUIDE.encode(), ".md", "docs/guide.md").title == "Garden guide"
    front = b"---\ntitle: 'Front title'\n---\n\n# Heading\n\nBody.\n"
    assert parse_bytes(front, ".md", "x.md").title == "Front title"
    html = b"<html><head><title>Page title</title></head><body><h1>Top</h1><p>Body text.</p></body></html>"
    assert parse_bytes(html, ".html", "p.html").title == "Page title"
    assert parse_bytes(b"just some text\n\nmore text", ".txt", "notes/readme.txt").title == "readme.txt"
    # a heading that is the title is not repeated in the path
    doc = parse_bytes(b"<h1>Top</h1><p>one</p><h2>Sub</h2><p>two</p>", ".html", "t.html")
    assert doc.title == "Top"


def test_contextual_chunks_fit_the_window_and_know_their_section(chunker):
    doc = parse_bytes(GUIDE.encode(), ".md", "guide.md")
    chunks = chunker.contextual(doc.blocks, doc.title)
    assert len(chunks) > 5
    for c in chunks:
        # what the model embeds (context line + text) fits its window, counted by its tokenizer
        assert chunker.count_tokens(c.embed_text) == c.token_count <= chunker.max_tokens, c
        assert c.title == "Garden guide"
        assert chunker.count_tokens(c.context) - chunker.n_special <= chunker.max_context_tokens
    by_text = {c.text.split("\n\n")[-1][:20]: c for c in chunks}
    tomatoes = by_text["Tomatoes need six ho"]
    assert tomatoes.section == f"Vegetables{CONTEXT_SEPARATOR}Tomatoes"
    assert tomatoes.context == f"Garden guide{CONTEXT_SEPARATOR}Vegetables{CONTEXT_SEPARATOR}Tomatoes"
    assert by_text["Intro text about the"].section == ""
    deep = [c for c in chunks if "compost" in c.text]
    assert len(deep) > 1 and all(c.section.endswith("Deep one > Deeper") for c in deep)
    # the long path is capped: middle headings elided, the title and the nearest kept
    assert all(c.context.startswith("Garden guide > \u2026 > ") and c.context.endswith("Deeper") for c in deep)
    # no text is lost: the chunk texts are what `chunk` makes of the same blocks, section by section
    plain = " ".join(c.text for c in chunker.chunk(doc.blocks)).split()
    assert set(plain) == set(" ".join(c.text for c in chunks).split())


def test_context_never_pushes_text_out_of_a_small_window():
    spec = resolve_model(None)
    small = Chunker(load_tokenizer(spec.path), max_tokens=32, overlap_tokens=4)
    doc = parse_bytes(GUIDE.encode(), ".md", "guide.md")
    chunks = small.contextual(doc.blocks, doc.title)
    assert all(small.count_tokens(c.embed_text) <= 32 for c in chunks)
    assert all(small.count_tokens(c.context) - small.n_special <= small.max_context_tokens for c in chunks)
    assert set(" ".join(c.text for c in chunks).split()) == set(doc.text.split())  # no text cut away


@pytest.fixture(scope="module")
def store(tmp_path_factory, embedder) -> Path:
    root = make_tree(tmp_path_factory.mktemp("context") / "docs", {
        "garden/guide.md": GUIDE,
        "garden/pests.md": "# Pests\n\n## Aphids\n\nSpray soapy water on the undersides of leaves.\n",
    })
    store = root.parent / "store"
    result = cli("ingest", root, "--store", store, "--json", "--quiet")
    assert result.exit_code == 0, result.output
    return store


def query_json(store: Path, text: str, *extra: str) -> list[dict]:
    result = cli("query", "garden", text, "--store", store, "--json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["results"]


@pytest.mark.timeout(120)
def test_title_and_section_are_stored_searched_and_returned(store):
    for mode in ("hybrid", "vector", "text"):
        top = query_json(store, "how much sunlight do tomatoes need", "--mode", mode)[0]
        assert (top["path"], top["title"], top["section"]) == ("guide.md", "Garden guide", "Vegetables > Tomatoes")
    # a word only in the heading path is found by the full-text index
    top = query_json(store, "aphids", "--mode", "text")[0]
    assert (top["path"], top["section"]) == ("pests.md", "Aphids")
    from ragctl.manager import get_entity_rag_manager

    hit = get_entity_rag_manager(str(store)).query("garden", "beans nitrogen", k=1)[0]
    assert (hit.title, hit.section) == ("Garden guide", "Vegetables > Beans")
    from ragctl.storage.entity import open_entity

    assert {r.get("chunker") for r in open_entity(store, "garden").records().values()} == {CHUNKER_VERSION}


def downgrade(store: Path, entity: str) -> None:
    """Make an entity look as a ragctl before contextual chunks left it: chunks.sqlite without
    title/section (and its one-column full-text index), records without a chunker version."""
    from ragctl.storage.entity import open_entity
    from ragctl.storage.layout import MAPPING_COLLECTION

    es = open_entity(store, entity)
    with sqlite3.connect(es.texts.path) as conn:
        conn.executescript(
            "DROP TABLE chunks_vocab; DROP TABLE chunks_fts;"
            "CREATE TABLE old (id INTEGER PRIMARY KEY, doc_id TEXT NOT NULL, ord INTEGER NOT NULL, text TEXT NOT NULL);"
            "INSERT INTO old SELECT id, doc_id, ord, text FROM chunks; DROP TABLE chunks; ALTER TABLE old RENAME TO chunks;"
            "CREATE VIRTUAL TABLE chunks_fts USING fts5(text, content='chunks', content_rowid='id',"
            " tokenize='unicode61 remove_diacritics 2');"
            "INSERT INTO chunks_fts(chunks_fts) VALUES('rebuild');"
            "CREATE VIRTUAL TABLE chunks_vocab USING fts5vocab(chunks_fts, 'row');"
        )
    with es.locked() as shard:
        for key, record in list(shard.items()):
            shard[key] = {k: v for k, v in record.items() if k != "chunker"}
    assert all("chunker" not in r for r in es.storage.records_for_entity(MAPPING_COLLECTION, entity).values())


@pytest.mark.timeout(300)
def test_an_old_store_answers_and_reindex_upgrades_it(tmp_path, embedder):
    root = make_tree(tmp_path / "docs", {"garden/guide.md": GUIDE, "garden/other.md": "# Other\n\nSoil is brown.\n"})
    store = tmp_path / "store"
    assert cli("ingest", root, "--store", store, "--quiet").exit_code == 0
    downgrade(store, "garden")
    for mode in ("hybrid", "vector", "text"):
        top = query_json(store, "how much sunlight do tomatoes need", "--mode", mode)[0]
        assert (top["path"], top["title"], top["section"]) == ("guide.md", "", "")
    note = cli("query", "garden", "tomatoes", "--store", store)
    assert note.exit_code == 0 and "--reindex" in note.output  # says what brings titles and sections
    # a plain ingest changes nothing; --reindex re-chunks both documents
    plain = json.loads(cli("ingest", root, "--store", store, "--json", "--quiet").stdout)
    assert plain["entities"]["garden"]["unchanged"] == 2
    again = json.loads(cli("ingest", root, "--store", store, "--json", "--quiet", "--reindex").stdout)
    assert again["entities"]["garden"]["updated"] == 2, again
    top = query_json(store, "how much sunlight do tomatoes need")[0]
    assert (top["title"], top["section"]) == ("Garden guide", "Vegetables > Tomatoes")
    assert cli("verify", "--store", store).exit_code == 0
    done = json.loads(cli("ingest", root, "--store", store, "--json", "--quiet", "--reindex").stdout)
    assert done["entities"]["garden"]["unchanged"] == 2  # nothing left to re-chunk


def chunker_versions(store: Path, entity: str) -> list[int]:
    from ragctl.storage.entity import open_entity

    return [int(r.get("chunker") or 1) for r in open_entity(store, entity).records().values()]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_reindex_killed_with_sigkill_resumes_and_finishes(tmp_path, embedder):
    # ~35 chunks a document: the embed stage's windows (256 chunks) commit a few documents
    # at a time, so the kill lands between commits
    n = 16
    files = {
        f"lib/doc{i:02d}.md": f"# Document {i}\n\n## Part one\n\n" + " ".join([f"Alpha {i} sentence number {j}." for j in range(500)])
        + "\n\n## Part two\n\n" + " ".join([f"Beta {i} line {j}." for j in range(500)]) + "\n"
        for i in range(n)
    }
    root = make_tree(tmp_path / "docs", files)
    store = tmp_path / "store"
    assert cli("ingest", root, "--store", store, "--quiet").exit_code == 0
    downgrade(store, "lib")
    assert chunker_versions(store, "lib") == [1] * n
    cmd = [*RAGCTL, "ingest", str(root), "--store", str(store), "--reindex", "--quiet", "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            done = sum(v == CHUNKER_VERSION for v in chunker_versions(store, "lib"))
            if 1 <= done < n:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the reindex finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)  # the ingest and its parse workers, as kill -9 would
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    partial = chunker_versions(store, "lib")
    assert 1 <= partial.count(CHUNKER_VERSION) < n, partial
    top = query_json_entity(store, "lib", "Alpha 7 sentence number")  # still answering in between
    assert top
    rerun = subprocess.run([*cmd[:-2], "--json"], capture_output=True, text=True, timeout=400)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    report = json.loads(rerun.stdout)["entities"]["lib"]
    assert report["updated"] == n - partial.count(CHUNKER_VERSION), report  # only what was left
    assert chunker_versions(store, "lib") == [CHUNKER_VERSION] * n
    assert subprocess.run([*RAGCTL, "verify", "--store", str(store)], capture_output=True).returncode == 0
    hits = query_json_entity(store, "lib", "Beta 12 line")
    assert all(h["title"].startswith("Document") and h["section"] for h in hits)


def query_json_entity(store: Path, entity: str, text: str) -> list[dict]:
    result = cli("query", entity, text, "--store", store, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["results"]
