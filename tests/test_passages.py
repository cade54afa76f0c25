"""Passages (issue 26): a passage is embedded once per entity and returned once per query.

Real files, the real model, the real store: the ingest's `chunks_reused` count says how many
chunks took an existing vector instead of a model input.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import cli, make_tree, strip_passage_sections

TOPICS = ["borrow checker", "lifetimes", "cargo workspaces", "feature flags", "build scripts", "linker arguments",
          "panic strategy", "allocator", "interrupt handlers", "memory-mapped registers", "semihosting", "probe-rs"]


def section(i: int, topic: str) -> str:
    """A section with its own words, a few sentences long (one chunk)."""
    return (f"## Section {i}: {topic}\n\n"
            + " ".join(f"Sentence {j} of section {i} explains how {topic} behaves in case {j} and why it matters "
                       f"for item {i * 7 + j}." for j in range(6))
            + "\n")


def page(title: str, topics: list[str], start: int = 0) -> str:
    return f"# {title}\n\n" + "\n".join(section(start + i, t) for i, t in enumerate(topics))


def ingest(root: Path, store: Path, *extra: object) -> dict[str, Any]:
    result = cli("ingest", root, "--store", store, "--json", "--quiet", *extra)
    assert result.exit_code == 0, result.output
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def query(store: Path, entity: str, text: str, *extra: object) -> list[dict[str, Any]]:
    result = cli("query", entity, text, "--store", store, "--json", *extra)
    assert result.exit_code == 0, result.output
    hits: list[dict[str, Any]] = json.loads(result.stdout)["results"]
    return hits


def verify_ok(store: Path) -> None:
    result = cli("verify", "--store", store, "--json")
    assert result.exit_code == 0, result.output


def test_a_shared_passage_is_embedded_once_and_survives_the_deletion_of_one_holder(tmp_path):
    chapter = page("Ownership", TOPICS[:4])
    # the print view: another page first, then the chapter's sections again
    everything = page("The whole book", TOPICS[4:6], start=10) + "\n" + "\n".join(
        section(i, t) for i, t in enumerate(TOPICS[:4]))
    root = make_tree(tmp_path / "docs", {"book/ownership.md": chapter, "book/print.md": everything})
    store = tmp_path / "store"
    row = ingest(root, store)["entities"]["book"]
    assert row["indexed"] == 2
    # the four chapter sections are in both documents: embedded for one, reused for the other
    # (the chapter's first chunk also holds its title line, so it is a passage of its own)
    assert row["chunks_reused"] >= 3, row
    assert row["chunks_reused"] <= 4
    verify_ok(store)

    (root / "book/ownership.md").unlink()
    pruned = ingest(root, store, "--prune")["entities"]["book"]
    assert pruned["pruned"] == 1 and pruned["chunks_reused"] == 0
    verify_ok(store)
    hits = query(store, "book", "Sentence 4 of section 2 explains how cargo workspaces behaves", "-k", "3")
    assert hits[0]["path"] == "print.md"
    assert "Sentence 4 of section 2 explains how cargo workspaces" in hits[0]["text"]


def test_an_edit_in_one_section_re_embeds_only_that_section(tmp_path):
    topics = [f"{t} {n}" for n in range(4) for t in TOPICS]  # 48 sections, one heading each
    text = page("Reference", topics)
    root = make_tree(tmp_path / "docs", {"ref/reference.md": text})
    store = tmp_path / "store"
    first = ingest(root, store)["entities"]["ref"]
    assert first["chunks"] >= 48 and first["chunks_reused"] == 0
    # one sentence changed in the middle of the page
    old = "Sentence 3 of section 24 explains how"
    assert old in text
    (root / "ref/reference.md").write_text(text.replace(old, "Sentence three of section 24 now says how"))
    second = ingest(root, store)["entities"]["ref"]
    assert second["updated"] == 1 and second["chunks"] == first["chunks"]
    embedded = second["chunks"] - second["chunks_reused"]
    assert embedded == 1, second  # only the changed section's chunk went to the model
    verify_ok(store)
    hits = query(store, "ref", "Sentence three of section 24 now says how", "-k", "1", "--mode", "text")
    assert "Sentence three of section 24 now says how" in hits[0]["text"]


def test_a_store_without_passage_keys_keeps_answering_and_is_upgraded_on_its_next_write(tmp_path):
    root = make_tree(tmp_path / "docs", {"e/a.md": page("A", TOPICS[:3])})
    store = tmp_path / "store"
    ingest(root, store)
    db = store / "entities" / "e" / "chunks.sqlite"
    strip_passage_sections(store, "e")
    with sqlite3.connect(db) as conn:  # what a store written before passage keys looks like
        conn.execute("ALTER TABLE chunks DROP COLUMN passage")
    hits = query(store, "e", "Sentence 2 of section 1 explains how lifetimes behaves")
    assert "Sentence 2 of section 1 explains how lifetimes" in hits[0]["text"]
    verify_ok(store)

    # the next ingest adds the column and keys every old row (one transaction), and reuses them
    # at once; its end gives the old segments their passage sections (docs/storage.md)
    make_tree(root, {"e/b.md": page("B", TOPICS[:3])})
    row = ingest(root, store)["entities"]["e"]
    assert row["indexed"] == 1 and row["chunks_reused"] >= 2, row
    with sqlite3.connect(db) as conn:
        missing = conn.execute("SELECT count(*) FROM chunks WHERE passage IS NULL").fetchone()[0]
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    meta = json.loads((store / "entities" / "e" / "entity.json").read_text())
    assert all(s.get("passages") for s in meta["vectors"]["segments"])
    assert missing == 0 and "chunks_passage" not in indexes  # (the segments find holders now)
    verify_ok(store)
    make_tree(root, {"e/c.md": page("C", TOPICS[:3])})
    assert ingest(root, store)["entities"]["e"]["chunks_reused"] >= 2


def test_a_passage_is_returned_once_by_its_most_specific_holder_with_the_others_in_also_in(tmp_path):
    chapter = page("Ownership", TOPICS[:4])
    everything = page("The whole book", TOPICS[4:10], start=10) + "\n" + "\n".join(
        section(i, t) for i, t in enumerate(TOPICS[:4]))
    root = make_tree(tmp_path / "docs", {"book/ownership.md": chapter, "book/print.md": everything,
                                         # a mirror of the print page (another file: a note at its end)
                                         "book/mirror/print-copy.md": everything + "\n## Mirror\n\nA mirror.\n"})
    store = tmp_path / "store"
    ingest(root, store)
    for mode in ("hybrid", "vector", "text"):
        hits = query(store, "book", "Sentence 4 of section 2 explains how cargo workspaces behaves", "-k", "5",
                     "--mode", mode, "--per-chunk")
        assert hits[0]["path"] == "ownership.md", (mode, hits[0])  # the chapter: fewest chunks
        assert hits[0]["also_in"] == ["mirror/print-copy.md", "print.md"], (mode, hits[0])
        passages = [" ".join(h["text"].split()) for h in hits]
        assert len(set(passages)) == len(passages), mode  # no passage twice in the top k
        # text mode: only the three copies hold the query's rarer words, so one passage is all
        assert len(hits) == (1 if mode == "text" else 5), mode
    # a section only the print page and its copy hold: the shorter path of the two
    hits = query(store, "book", "Sentence 1 of section 12 explains how panic strategy behaves", "-k", "3")
    assert (hits[0]["path"], hits[0]["also_in"]) == ("print.md", ["mirror/print-copy.md"])
    # collapse=False (the library's comparison switch) returns every stored copy
    from ragctl.query import Searcher

    raw = Searcher(store, "book").search(["Sentence 4 of section 2 explains how cargo workspaces behaves"], 3,
                                         "text", collapse=False)[0]
    assert {h.path for h in raw} == {"ownership.md", "print.md", "mirror/print-copy.md"}
    assert all(h.also_in == () for h in raw)


def test_a_searcher_that_met_no_copies_reads_shallow_and_returns_the_same_hits(tmp_path, monkeypatch):
    """After SHALLOW_AFTER queries without copies a searcher reads each list only `depth` deep;
    a query that then meets copies reads again, so its hits are those of a deep read."""
    from ragctl import query as query_module
    from ragctl.query import Searcher
    from ragctl.storage.search import EntitySearch

    chapter = page("Ownership", TOPICS[:4])
    everything = page("The whole book", TOPICS[4:10], start=10) + "\n" + "\n".join(
        section(i, t) for i, t in enumerate(TOPICS[:4]))
    root = make_tree(tmp_path / "docs", {"book/ownership.md": chapter, "book/print.md": everything,
                                         "book/other.md": page("Other", TOPICS[6:12], start=30)})
    store = tmp_path / "store"
    ingest(root, store)
    questions = [f"Sentence {j} of section {i} explains how {t} behaves" for i, t in enumerate(TOPICS[:10]) for j in (1, 4)]
    deep, shallow = Searcher(store, "book"), Searcher(store, "book")
    depths: list[int] = []  # the first read's depth of each vector search
    real = EntitySearch.vector_search
    monkeypatch.setattr(EntitySearch, "vector_search", lambda self, v, depth: depths.append(depth) or real(self, v, depth))
    for mode in ("hybrid", "vector", "text"):
        for question in questions:
            deep._clean_run = 0  # always the deep read
            shallow._clean_run = query_module.SHALLOW_AFTER  # always the shallow first read
            want = deep.search([question], 3, mode)[0]
            got = shallow.search([question], 3, mode)[0]
            assert [(h.path, h.chunk, h.also_in, round(h.score, 6)) for h in got] == \
                   [(h.path, h.chunk, h.also_in, round(h.score, 6)) for h in want], (mode, question)
    depth = query_module.MIN_DEPTH
    # every read happened: the deep one, the shallow one, and the shallow one's read again
    # after meeting copies (as deep as the deep one's would go)
    again = depth * query_module.COLLAPSE_READ * query_module.COLLAPSE_READ_MORE
    assert {depth * query_module.COLLAPSE_READ, depth, again} <= set(depths), sorted(set(depths))


NOTICE = ("Refunds are issued to the original payment method within ten business days after the returned item "
          "reaches our warehouse and passes inspection. Items must be unused, in their original packaging, and "
          "accompanied by the receipt or order number. Shipping costs are not refunded unless the item arrived "
          "damaged or we sent the wrong product, in which case we also pay for the return label. Gift cards, "
          "downloadable software and personalised items cannot be returned. Contact the support desk before "
          "sending anything back so that we can give you a return authorisation code.")
OTHER_HALF = ("Exchanges follow a different route: the replacement ships as soon as the courier scans the parcel "
              "you send back, and a size exchange is free once per order. Store credit never expires and can be "
              "combined with discount codes during seasonal sales, though not with staff discounts.")


def test_a_near_duplicate_merges_and_a_near_miss_does_not(tmp_path):
    half = NOTICE[: len(NOTICE) // 2].rsplit(" ", 1)[0]
    root = make_tree(tmp_path / "docs", {
        "shop/refunds.md": f"# Refunds\n\n{NOTICE}\n\nLast updated 2024-01-05.\n",
        # the same notice with another date and a footer line: the same passage
        "shop/archive/refunds-2023.md": f"# Refunds\n\n{NOTICE}\n\nLast updated 2023-11-30. Printed copy, "
                                        "check the website for the current version.\n",
        # shares its first half word for word, then says something else: another passage
        "shop/exchanges.md": f"# Refunds\n\n{half} {OTHER_HALF}\n",
    })
    store = tmp_path / "store"
    ingest(root, store)
    hits = query(store, "shop", "how many business days until the refund reaches my payment method", "-k", "3")
    by_path = {h["path"]: h for h in hits}
    assert "archive/refunds-2023.md" not in by_path  # merged into the current page...
    assert by_path["refunds.md"]["also_in"] == ["archive/refunds-2023.md"]  # ...and listed there
    assert by_path["exchanges.md"]["also_in"] == []  # the near-miss stays a hit of its own
    assert len(hits) == 2


def test_near_duplicates_merge_the_same_without_stored_signatures_and_after_the_upgrade(tmp_path):
    """Queries find near-duplicates through each chunk's stored signature (`near`, written at
    ingest); a store written before it computes them from the texts, and its next write gives
    every row its signature. The answer is the same all three ways."""
    root = make_tree(tmp_path / "docs", {
        "shop/refunds.md": f"# Refunds\n\n{NOTICE}\n\nLast updated 2024-01-05.\n",
        "shop/archive/refunds-2023.md": f"# Refunds\n\n{NOTICE}\n\nLast updated 2023-11-30. Printed copy.\n",
    })
    store = tmp_path / "store"
    ingest(root, store)
    db = store / "entities" / "shop" / "chunks.sqlite"
    question = "how many business days until the refund reaches my payment method"

    def answer() -> list[tuple[str, list[str]]]:
        hits = query(store, "shop", question, "-k", "3")
        return [(h["path"], h["also_in"]) for h in hits if h["path"] != "other.md"]  # other.md: added below

    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM chunks WHERE near IS NULL").fetchone()[0] == 0
    stored = answer()
    assert len(stored) == 1 and sorted([stored[0][0], *stored[0][1]]) == ["archive/refunds-2023.md", "refunds.md"]
    with sqlite3.connect(db) as conn:  # what a store written before signatures looks like
        conn.execute("ALTER TABLE chunks DROP COLUMN near")
    assert answer() == stored
    make_tree(root, {"shop/other.md": "# Other\n\nOpening hours are nine to five on weekdays.\n"})
    ingest(root, store)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM chunks WHERE near IS NULL").fetchone()[0] == 0
    assert answer() == stored
    verify_ok(store)


def test_every_stored_row_carries_the_key_and_signature_of_its_own_text(tmp_path):
    """The parse workers make them (ingest), the LangChain store makes them before its commit:
    either way what is stored is what the row's text gives."""
    from ragctl.integrations.langchain import RagctlVectorStore
    from ragctl.passages import chunk_signatures

    root = make_tree(tmp_path / "docs", {"e/a.md": page("A", TOPICS[:4]), "e/b.md": page("B", TOPICS[4:6])})
    store = tmp_path / "store"
    ingest(root, store)
    RagctlVectorStore(store, "lc").add_texts([NOTICE, OTHER_HALF])
    for entity in ("e", "lc"):
        with sqlite3.connect(store / "entities" / entity / "chunks.sqlite") as conn:
            rows = conn.execute("SELECT text, passage, near FROM chunks").fetchall()
        assert rows
        keys, near = chunk_signatures([r[0] for r in rows])
        assert [bytes(r[1]) for r in rows] == keys and [bytes(r[2]) for r in rows] == near


def test_stored_signatures_group_candidates_as_their_texts_do():
    from ragctl.passages import NEAR_DUPLICATE, PassageGroups, near_signature

    texts = [NOTICE, NOTICE + " Last updated 2023-11-30.", NOTICE.replace("ten", "twenty"), OTHER_HALF,
             "Printed copy. " + NOTICE, HEADERS.format(obj="request"), HEADERS.format(obj="response"), "Too short"]
    for threshold in (0.7, NEAR_DUPLICATE, 0.95):
        computed, stored = PassageGroups(threshold), PassageGroups(threshold)
        for i, text in enumerate(texts):
            computed.add(i, text)
            stored.add(i, text, near=near_signature(text))
        assert [computed.group[i] for i in range(len(texts))] == [stored.group[i] for i in range(len(texts))]
    groups = PassageGroups()
    assert [groups.add(i, t, near=near_signature(t)) for i, t in enumerate(texts)] == [0, 0, 1, 2, 0, 3, 4, 5]


HEADERS = ("`{obj}.getHeaders()` returns a shallow copy of the current outgoing headers. Since a shallow copy is "
           "used, array values may be mutated without additional calls to various header-related http module "
           "methods. The keys of the returned object are the header names and the values are the respective "
           "header values. All header names are lowercase, and the object does not inherit from Object.")


def test_the_same_wording_about_another_api_is_not_merged(tmp_path):
    """Reference pages say the same thing about different APIs: one identifier in the middle
    differs. Those are different passages (word-shingle Jaccard alone, 0.88 here, merged them)."""
    root = make_tree(tmp_path / "docs", {
        "api/request.md": "# Request\n\n" + HEADERS.format(obj="request") + "\n",
        "api/response.md": "# Response\n\n" + HEADERS.format(obj="response") + "\n",
    })
    store = tmp_path / "store"
    ingest(root, store)
    hits = query(store, "api", "shallow copy of the outgoing headers", "-k", "2")
    assert sorted(h["path"] for h in hits) == ["request.md", "response.md"]
    assert all(h["also_in"] == [] for h in hits)


def test_also_in_reaches_mcp_and_langchain_hits_and_the_http_schema(tmp_path):
    from ragctl.integrations.langchain import RagctlVectorStore
    from ragctl.integrations.mcp_server import SearchHit as McpHit
    from ragctl.integrations.mcp_server import StoreTools
    from ragctl.serve.schemas import SearchHit as HttpHit

    assert "also_in" in HttpHit.model_fields and "also_in" in McpHit.model_fields  # HTTP hits are hit_json's
    chapter = page("Ownership", TOPICS[:4])
    everything = page("The whole book", TOPICS[4:8], start=10) + "\n" + "\n".join(
        section(i, t) for i, t in enumerate(TOPICS[:4]))
    root = make_tree(tmp_path / "docs", {"book/ownership.md": chapter, "book/print.md": everything})
    store = tmp_path / "store"
    ingest(root, store)
    question = "Sentence 4 of section 2 explains how cargo workspaces behaves"
    hits = StoreTools(store).search("book", question, k=3, mode="text").hits
    assert (hits[0].path, hits[0].also_in) == ("ownership.md", ["print.md"])
    docs = RagctlVectorStore(store, "book").similarity_search(question, k=3)
    assert docs[0].metadata["source"] == "ownership.md" and docs[0].metadata["also_in"] == ["print.md"]
    assert len({d.page_content for d in docs}) == len(docs)

def _store_mtimes(store: Path) -> dict[str, int]:
    out = {}
    for path in list(store.glob("doc_id_name_mapping/*")) + list(store.glob("entities/*/*")):
        with contextlib.suppress(FileNotFoundError):
            out[str(path)] = path.stat().st_mtime_ns
    return out


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_kill_9_during_commits_that_reuse_passages_leaves_a_store_that_verifies(tmp_path, ragctl_cmd):
    """Chapters and a print page holding them all, in three entities, ingested with small commit
    batches and SIGKILLed at random moments after the run's first write to the store (inside or
    between commits that reuse passages); after each kill `verify` passes. A final run indexes
    every file exactly once, and a passage stays searchable after one of its holders is gone."""
    import random
    import subprocess

    seed = int(os.environ.get("RAGCTL_TEST_SEED", "0")) or random.randrange(1 << 30)
    print(f"RAGCTL_TEST_SEED={seed}")  # replays the choices
    rng = random.Random(seed)
    files: dict[str, str] = {}
    for e in ("alpha", "beta", "gamma"):
        for c in range(8):
            files[f"{e}/ch{c}.md"] = page(f"{e} chapter {c}", [f"{t} {e} {c}" for t in TOPICS[c % 3::3]], start=10 * c)
        files[f"{e}/print.md"] = "\n".join(files[f"{e}/ch{i}.md"] for i in range(8))
    root = make_tree(tmp_path / "docs", files)
    store = tmp_path / "store"
    cmd = [*ragctl_cmd, "ingest", str(root), "--store", str(store), "--batch-size", "2", "--quiet"]
    killed = 0
    for trial in range(12):  # at least 4 trials, and more until one was killed mid-run
        if trial >= 4 and killed:
            break
        if trial:  # every trial has work: a chapter of each entity changes, and so its print page
            for e in ("alpha", "beta", "gamma"):
                c = rng.randrange(8)
                files[f"{e}/ch{c}.md"] += f"\nTrial {trial} adds a sentence to chapter {c} of {e}.\n"
                files[f"{e}/print.md"] = "\n".join(files[f"{e}/ch{i}.md"] for i in range(8))
            make_tree(root, files)
        before = _store_mtimes(store)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while proc.poll() is None and _store_mtimes(store) == before and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.1))  # a small change is committed within ~0.2 s of the first write
        if proc.poll() is None:
            proc.kill()
            killed += 1
        proc.wait(timeout=60)
        verify_ok(store)
    ingest(root, store)
    verify_ok(store)
    report = json.loads(cli("verify", "--store", store, "--json").stdout)
    for e in ("alpha", "beta", "gamma"):
        assert report["entities"][e]["documents"] == 9, (e, report["entities"][e])
    assert ingest(root, store)["entities"]["alpha"]["unchanged"] == 9  # nothing left to do
    assert killed >= 1, f"every run finished before its kill (seed {seed})"  # the others may have finished first
    # the passage of chapter 3 outlives chapter 3: the print page still holds it
    (root / "beta/ch3.md").unlink()
    ingest(root, store, "--prune")
    verify_ok(store)
    needle = "Sentence 2 of section 30 explains how"
    hits = query(store, "beta", needle, "--mode", "text", "-k", "1")
    assert hits[0]["path"] == "print.md" and needle in hits[0]["text"]


def test_context_words_grow_a_hit_with_its_neighbours_and_repeat_no_words(tmp_path):
    sentences = [f"Fact number {i} says the {TOPICS[i % len(TOPICS)]} value is {i * 13} units in that case." for i in range(120)]
    root = make_tree(tmp_path / "docs", {"ref/long.md": "# Long\n\n## One section\n\n" + " ".join(sentences) + "\n"})
    store = tmp_path / "store"
    assert ingest(root, store)["entities"]["ref"]["chunks"] >= 4
    plain = query(store, "ref", "Fact number 60 says", "-k", "2", "--mode", "text", "--per-chunk")
    grown = query(store, "ref", "Fact number 60 says", "-k", "2", "--mode", "text", "--context-words", "400", "--per-chunk")
    assert [h["chunk"] for h in grown] == [h["chunk"] for h in plain]  # the same hits, more text
    for before, after in zip(plain, grown):
        assert before["text"] in after["text"] and len(after["text"].split()) <= 400
        assert len(after["text"].split()) > len(before["text"].split())
    found = [s for h in grown for s in sentences for _ in range(h["text"].count(s))]
    assert len(found) == len(set(found))  # no sentence twice, within a hit or across hits
    # a neighbour's overlap with the chunk is taken once: the sentences are consecutive
    first = [int(s.split()[2]) for s in sentences if s in grown[0]["text"]]
    assert first == list(range(first[0], first[0] + len(first)))


def _per_document_tree(tmp_path: Path) -> tuple[Path, str]:
    """One long page whose twelve sections all answer the query, three short pages that mention
    it once among other words (their chunks rank below every section of the long page)."""
    other = " ".join(f"Unrelated sentence {j} about gardening, soil and weather in spring." for j in range(2))
    files = {"ref/long.md": page("Long", ["borrow checker"] * 12)}
    files.update({f"ref/{name}.md": f"# {name}\n\n{other} Once, the borrow checker behaves. {other}\n"
                  for name in ("x", "y", "z")})
    # pages without the query's words (a word in more than half of the chunks is not searched)
    files.update({f"ref/notes/n{i}.md": f"# Note {i}\n\nCompost heap number {i} needs turning.\n" for i in range(16)})
    root = make_tree(tmp_path / "docs", files)
    store = tmp_path / "store"
    ingest(root, store)
    return store, "borrow checker behaves"


def test_per_document_hits_give_a_document_one_slot_and_carry_its_next_best_chunks(tmp_path):
    """The default: the documents of the top 2k chunks, at most k; a document's next-ranked chunks
    go inside its own hit (within the shared budget, 150 words a hit), never in the slot of
    another document; --per-chunk: k chunks."""
    store, question = _per_document_tree(tmp_path)
    chunks = query(store, "ref", question, "-k", "40", "--mode", "text", "--per-chunk")
    by_chunk = {h["chunk"]: h["text"] for h in chunks if h["path"] == "long.md"}
    assert [h["path"] for h in chunks[:12]] == ["long.md"] * 12  # the long page's sections rank first
    assert {h["path"] for h in chunks[12:15]} == {"x.md", "y.md", "z.md"}

    def holds(hit: dict[str, Any], n: int) -> bool:  # a chunk's end is in the hit (its start may be overlap)
        return " ".join(by_chunk[n].split()[-12:]) in " ".join(hit["text"].split())

    # k = 3: the top 6 chunks are all the long page's, so one hit, carrying the page's best chunks
    # in document order within 3 x 150 words
    (one,) = query(store, "ref", question, "-k", "3", "--mode", "text")
    assert one["path"] == "long.md" and one["chunk"] == chunks[0]["chunk"]
    assert one["chunks"] == sorted(one["chunks"]) and len(one["chunks"]) >= 3
    assert set(one["chunks"]) <= {h["chunk"] for h in chunks[:6]}
    assert all(holds(one, n) for n in one["chunks"]) and len(one["text"].split()) <= 3 * 150
    # k = 8: the top 16 chunks are the long page's twelve and the three short pages: four hits,
    # the long page's carrying its next-best chunks, each short page's its one chunk
    docs = query(store, "ref", question, "-k", "8", "--mode", "text")
    assert [h["path"] for h in docs][0] == "long.md" and {h["path"] for h in docs[1:]} == {"x.md", "y.md", "z.md"}
    assert len(docs[0]["chunks"]) >= 2 and all(holds(docs[0], n) for n in docs[0]["chunks"])
    assert all(h["chunks"] == [h["chunk"]] for h in docs[1:])
    assert sum(len(h["text"].split()) for h in docs) <= 8 * 150
    # a smaller budget (--context-words: words a hit) leaves room for no second chunk
    small = query(store, "ref", question, "-k", "8", "--mode", "text", "--context-words", "30")
    assert [h["path"] for h in small] == [h["path"] for h in docs]
    assert all(h["chunks"] == [h["chunk"]] for h in small)


def test_per_document_hits_reach_http_mcp_and_langchain_alike(tmp_path):
    from ragctl.integrations.langchain import RagctlVectorStore
    from ragctl.integrations.mcp_server import StoreTools
    from ragctl.serve.schemas import SearchRequest

    assert SearchRequest(query="q").per_document is True  # HTTP's default is the CLI's
    store, question = _per_document_tree(tmp_path)
    cli_hits = query(store, "ref", question, "-k", "8", "--mode", "text")
    assert len(cli_hits) == 4 and len(cli_hits[0]["chunks"]) >= 2
    mcp = StoreTools(store).search("ref", question, k=8, mode="text").hits
    assert [(h.path, h.chunks, h.text) for h in mcp] == [(h["path"], h["chunks"], h["text"]) for h in cli_hits]
    lc = RagctlVectorStore(store, "ref").similarity_search(question, k=8, mode="text")
    assert [(d.metadata["source"], d.metadata.get("chunks", [d.metadata["chunk"]]), d.page_content) for d in lc] == [
        (h["path"], h["chunks"], h["text"]) for h in cli_hits]
    per_chunk = RagctlVectorStore(store, "ref", per_document=False).similarity_search(question, k=3, mode="text")
    assert [d.metadata["source"] for d in per_chunk] == ["long.md"] * 3
    mcp_chunks = StoreTools(store).search("ref", question, k=3, mode="text", per_document=False).hits
    assert [h.path for h in mcp_chunks] == ["long.md"] * 3


def test_the_langchain_store_embeds_a_repeated_passage_once(tmp_path):
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from ragctl.integrations.langchain import RagctlVectorStore

    class Counting(DeterministicFakeEmbedding):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            calls.append(list(texts))
            return super().embed_documents(texts)

    calls: list[list[str]] = []
    store = RagctlVectorStore(tmp_path / "store", "lc", Counting(size=8))
    store.add_texts(["the policy text that every contract repeats", "a contract of its own"], ids=["c1", "c2"])
    assert sorted(t for call in calls for t in call) == ["a contract of its own",
                                                          "the policy text that every contract repeats"]
    calls.clear()
    store.add_texts(["the policy text that every contract repeats", "another contract"], ids=["c3", "c4"])
    assert [t for call in calls for t in call] == ["another contract"] and store.reused == 1
    store.delete(["c1"])  # the first holder goes; the copy keeps its own vector and text
    found = store.similarity_search_by_vector(store.embeddings.embed_query("the policy text that every contract repeats"), k=1)
    assert found[0].id == "c3"
    assert cli("verify", "--store", tmp_path / "store").exit_code == 0


def test_context_growth_trims_only_a_real_overlap_not_a_coincidental_word_or_two():
    from ragctl.query import _after_overlap, _before_overlap

    # consecutive chunks repeat ~20 words: those go
    shared = "the registry index is fetched over the sparse protocol".split()
    assert _after_overlap(["intro", *shared], [*shared, "then", "cached"]) == ["then", "cached"]
    assert _before_overlap(["intro", *shared], [*shared, "then"]) == ["intro"]
    # a context cut short that happens to end on "and the": the next text keeps its words
    assert _after_overlap("builds every member and the".split(), "the crate is built".split()) == \
        "the crate is built".split()
    assert _before_overlap("see the".split(), "the crate is built".split()) == "see the".split()
