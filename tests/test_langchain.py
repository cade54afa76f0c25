"""`ragctl.integrations.langchain.RagctlVectorStore`: LangChain's standard vector-store suite
(unmodified) plus what it does not cover - metadata round trips, the hybrid retriever, entity
isolation, model identity, long texts in the model's window, and an `ingest` writing the same
entity at the same time (`ragctl verify` clean).

The standard suite and most tests use LangChain's small deterministic fake embedding (no model
load); the two `slow` tests load the packaged all-MiniLM-L6-v2 (torch fp32)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.vectorstores import VectorStore
from langchain_tests.integration_tests import VectorStoreIntegrationTests

from ragctl.errors import ConfigError, UsageError
from ragctl.integrations.langchain import (
    PATH_PREFIX,
    RagctlEmbeddings,
    RagctlVectorStore,
    document_hash,
    window_pieces,
)
from ragctl.model_config import ModelConfig

RAGCTL = [sys.executable, "-m", "ragctl"]
FP32_TORCH = ModelConfig(backend="torch", precision="fp32")  # no OpenVINO conversion in tests


def fake(size: int = 6) -> DeterministicFakeEmbedding:
    return DeterministicFakeEmbedding(size=size)


def ragctl_json(*args: str) -> tuple[int, Any]:
    done = subprocess.run([*RAGCTL, *args, "--json"], capture_output=True, text=True, timeout=300)
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else None


class TestRagctlVectorStoreStandard(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self, tmp_path: Path) -> VectorStore:
        return RagctlVectorStore(tmp_path / "store", "lc", self.get_embeddings())


# ---------------------------------------------------------------------- metadata
METADATA: dict[str, Any] = {
    "title": "Zürich — notes ✓",
    "page": 3,
    "score": 0.25,
    "draft": False,
    "missing": None,
    "tags": ["a", "b", 3],
    "nested": {"authors": [{"name": "Ada", "ids": [1, 2]}], "empty": {}},
}


def test_metadata_round_trips_exactly_through_the_store_and_a_new_process_view(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    store = RagctlVectorStore(store_dir, "lc", fake())
    ids = store.add_documents([
        Document(page_content="alpha text about glaciers", metadata=METADATA, id="doc-1"),
        Document(page_content="beta text", metadata={}),
    ])
    assert ids[0] == "doc-1"
    METADATA["page"] = 3  # the caller's dict is untouched and not shared with the store
    got = store.get_by_ids(["doc-1"])[0]
    assert got == Document(id="doc-1", page_content="alpha text about glaciers", metadata=METADATA)
    got.metadata["page"] = 99  # a returned copy: changing it changes nothing stored
    reopened = RagctlVectorStore(store_dir, "lc", fake())
    assert reopened.get_by_ids(["doc-1"])[0].metadata == METADATA
    assert reopened.similarity_search("alpha text about glaciers", k=1)[0].metadata == METADATA
    assert reopened.similarity_search("glaciers", k=1, mode="text")[0].metadata == METADATA
    # on disk: the record carries the metadata, its path and hash follow docs/langchain.md
    shard = json.loads((store_dir / "doc_id_name_mapping" / "lc.json").read_text())
    record = shard["doc-1"]
    assert record["metadata"] == METADATA
    assert record["path"] == PATH_PREFIX + "doc-1" and record["parser"] == "langchain"
    assert record["content_hash"] == document_hash("doc-1", "alpha text about glaciers", METADATA)
    rc, report = ragctl_json("verify", "--store", str(store_dir))
    assert rc == 0 and report["entities"]["lc"]["documents"] == 2, report


@pytest.mark.parametrize(
    "metadata, reason",
    [
        ({"when": (1, 2)}, "would not come back"),
        ({1: "int key"}, "would not come back"),
        ({"nan": float("nan")}, "cannot be stored as JSON"),
        ({"obj": object()}, "cannot be stored as JSON"),
    ],
)
def test_metadata_that_json_cannot_keep_is_refused_before_anything_is_written(
    tmp_path: Path, metadata: dict[Any, Any], reason: str
) -> None:
    store = RagctlVectorStore(tmp_path / "store", "lc", fake())
    store.add_texts(["kept"], ids=["k"])
    with pytest.raises(UsageError, match=reason):
        store.add_texts(["first", "second"], [{"ok": 1}, metadata], ids=["a", "b"])
    assert store.get_by_ids(["a", "b", "k"]) == [Document(id="k", page_content="kept")]


def test_same_text_under_two_ids_is_two_documents_and_replacing_metadata_rewrites_it(tmp_path: Path) -> None:
    store = RagctlVectorStore(tmp_path / "store", "lc", fake())
    store.add_texts(["same words", "same words"], [{"n": 1}, {"n": 2}], ids=["one", "two"])
    assert sorted((d.id, d.metadata["n"]) for d in store.similarity_search("same words", k=5)) == [
        ("one", 1), ("two", 2)]
    store.add_texts(["same words"], [{"n": 3}], ids=["one"])  # same text, new metadata
    assert store.get_by_ids(["one"])[0].metadata == {"n": 3}
    rc, report = ragctl_json("verify", "--store", str(tmp_path / "store"))
    assert rc == 0 and report["entities"]["lc"]["documents"] == 2, report


# ---------------------------------------------------------------------- retriever
def _zoo(tmp_path: Path) -> RagctlVectorStore:
    store = RagctlVectorStore(tmp_path / "store", "zoo", fake(16))
    texts = {f"n{i}": f"note {i} about nothing in particular" for i in range(30)}
    texts["target"] = "the okapi lives in the forests of the Congo"
    store.add_texts(list(texts.values()), [{"key": k} for k in texts], ids=list(texts))
    return store


def test_retriever_is_hybrid_by_default_and_finds_what_the_vectors_alone_miss(tmp_path: Path) -> None:
    store = _zoo(tmp_path)
    retriever = store.as_retriever(search_kwargs={"k": 1})
    assert retriever.search_kwargs == {"mode": "hybrid", "k": 1}
    # The fake embedding knows no meaning: by vectors alone the okapi note is not first...
    assert [d.id for d in store.as_retriever(search_kwargs={"k": 1, "mode": "vector"}).invoke("okapi")] != ["target"]
    # ...the full-text list ranks it first and rank fusion puts it on top.
    assert [d.id for d in retriever.invoke("okapi")] == ["target"]
    assert [d.id for d in store.similarity_search("okapi", k=1, mode="text")] == ["target"]
    scored = store.similarity_search_with_score("okapi", k=3, mode="hybrid")
    assert scored[0][0].id == "target" and scored[0][1] > scored[1][1] > 0
    assert store.similarity_search("zzzz-no-such-word", k=3, mode="text") == []


async def test_async_retriever_and_search_modes(tmp_path: Path) -> None:
    store = _zoo(tmp_path)
    assert [d.id for d in await store.as_retriever(search_kwargs={"k": 1}).ainvoke("okapi")] == ["target"]
    assert [d.id for d in await store.asimilarity_search("okapi", k=1, mode="text")] == ["target"]


LIGHT = ["lens", "lamp", "tower", "keeper", "fog horn", "gallery"]


def test_context_words_grow_an_ingested_hit_with_its_neighbours_and_repeat_no_words(tmp_path: Path) -> None:
    """`context_words` (per search, or the store's default): a hit on an ingested file's chunk
    grows to its neighbouring chunks within the budget, and no sentence comes back twice - not
    within a hit, not across two hits on neighbouring chunks, not from the print view holding the
    same passages (collapsed: `also_in`). A document the store wrote is returned whole."""
    import re

    from helpers import cli, make_tree

    sentences = [f"Fact number {i} says the {LIGHT[i % len(LIGHT)]} value is {i * 13} units in that case."
                 for i in range(120)]
    body = "## One section\n\n" + " ".join(sentences) + "\n"
    root = make_tree(tmp_path / "tree", {
        "ref/long.md": "# Long\n\n" + body,
        "ref/print.md": "# Everything\n\n## Preface\n\nThe print view of the whole book.\n\n" + body,
    })
    store_dir = tmp_path / "store"
    done = cli("ingest", root, "--store", store_dir, "--json", "--quiet")
    assert done.exit_code == 0, done.output
    store = RagctlVectorStore(store_dir, "ref")  # the entity's model (text mode needs no query vector)
    long_md = next(r for r in store.entity.records().values() if r["path"] == "long.md")
    first = int(long_md["first_vector_id"])
    chunks = store.entity.texts.fetch(list(range(first, first + int(long_md["chunk_count"]))))
    assert len(chunks) >= 6

    def held(text: str) -> list[int]:
        return [int(n) for n in re.findall(r"Fact number (\d+) says", text)]

    # a query for one sentence in the middle of each of two neighbouring chunks (two hits that
    # would share their context), and a note of the caller's that matches too
    a, b = (held(chunks[first + c])[len(held(chunks[first + c])) // 2] for c in (2, 3))
    query = f"{a} {b}"
    store.add_texts([f"A note on {a} that the caller added by hand"], ids=["note"])
    plain = store.similarity_search(query, k=3, mode="text", per_document=False)
    grown = store.similarity_search(query, k=3, mode="text", context_words=300, per_document=False)
    assert [(d.id, d.metadata.get("chunk")) for d in grown] == [(d.id, d.metadata.get("chunk")) for d in plain]
    files = [(before, after) for before, after in zip(plain, grown) if after.id != "note"]
    assert sorted(after.metadata["chunk"] for _, after in files) == [2, 3]
    assert all(after.metadata["source"] == "long.md" and after.metadata["also_in"] == ["print.md"]
               for _, after in files)
    for before, after in files:
        assert len(before.page_content.split()) < len(after.page_content.split()) <= 300
        numbers = held(after.page_content)
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))  # overlaps taken once
    # the better hit keeps its chunk whole; the other loses only the overlap the two chunks share
    assert files[0][0].page_content in files[0][1].page_content
    found = [n for d in grown if d.id != "note" for n in held(d.page_content)]
    assert len(found) == len(set(found))  # no sentence twice, within a hit or across hits
    assert {a, b} <= set(found) and set(found) >= {n for d, _ in files for n in held(d.page_content)}
    assert next(d for d in grown if d.id == "note").page_content == f"A note on {a} that the caller added by hand"

    # the store's default, and a retriever's search_kwargs: the same documents
    by_default = RagctlVectorStore(store_dir, "ref", context_words=300, per_document=False)
    assert by_default.similarity_search(query, k=3, mode="text") == grown
    assert store.as_retriever(search_kwargs={"k": 3, "mode": "text", "context_words": 300,
                                             "per_document": False}).invoke(query) == grown
    assert by_default.similarity_search(query, k=3, mode="text", context_words=0) == plain
    # per document (the store's default; context_words: the budget, words a result): each
    # document once, both sentences still found
    per_doc = store.similarity_search(query, k=3, mode="text", context_words=300)
    assert len({d.id for d in per_doc}) == len(per_doc)
    assert {a, b} <= {n for d in per_doc for n in held(d.page_content)}
    for bad in (-1, 5001, True, "300"):
        with pytest.raises(UsageError, match="context_words must be an integer between 0 and 5000"):
            store.similarity_search(query, mode="text", context_words=bad)
    with pytest.raises(UsageError, match="context_words must be"):
        RagctlVectorStore(store_dir, "ref", context_words=-5)


def test_bad_search_arguments_are_one_clear_error(tmp_path: Path) -> None:
    store = _zoo(tmp_path)
    with pytest.raises(UsageError, match="unknown search mode 'fuzzy'"):
        store.similarity_search("okapi", mode="fuzzy")
    with pytest.raises(UsageError, match="unsupported option.*filter"):
        store.similarity_search("okapi", filter={"key": "target"})
    with pytest.raises(UsageError, match="k must be a positive integer"):
        store.similarity_search("okapi", k=0)
    with pytest.raises(UsageError, match="relevance scores exist for mode 'vector' only"):
        store.similarity_search_with_relevance_scores("okapi", mode="hybrid")
    with pytest.raises(UsageError, match="query vector has 3 dimensions"):
        store.similarity_search_by_vector([0.1, 0.2, 0.3])


def test_search_by_vector_and_relevance_scores(tmp_path: Path) -> None:
    store = _zoo(tmp_path)
    target_vector = fake(16).embed_query("the okapi lives in the forests of the Congo")
    assert [d.id for d in store.similarity_search_by_vector(target_vector, k=1)] == ["target"]
    (doc, relevance), *_ = store.similarity_search_with_relevance_scores(
        "the okapi lives in the forests of the Congo", k=2)
    assert doc.id == "target" and relevance == pytest.approx(1.0, abs=1e-5)


# ---------------------------------------------------------------------- entities and models
def test_entities_are_isolated(tmp_path: Path) -> None:
    a = RagctlVectorStore(tmp_path / "store", "team-a", fake())
    b = RagctlVectorStore.from_texts(["b's secret plan"], fake(), ids=["1"], store_dir=tmp_path / "store",
                                     entity="team-b")
    a.add_texts(["a's public note"], ids=["1"])
    assert [d.page_content for d in a.similarity_search("b's secret plan", k=5)] == ["a's public note"]
    assert [d.page_content for d in b.similarity_search("plan", k=5, mode="hybrid")] == ["b's secret plan"]
    a.delete(["1"])
    assert a.get_by_ids(["1"]) == [] and [d.page_content for d in b.get_by_ids(["1"])] == ["b's secret plan"]
    a.delete()  # ids=None: every LangChain document of team-a only
    assert b.get_by_ids(["1"]) != []
    with pytest.raises(UsageError, match="invalid entity id"):
        RagctlVectorStore(tmp_path / "store", "../team-b", fake())
    with pytest.raises(UsageError, match="needs store_dir= and entity="):
        RagctlVectorStore.from_texts(["x"], fake())


def test_another_model_on_a_bound_entity_is_refused(tmp_path: Path) -> None:
    RagctlVectorStore(tmp_path / "store", "lc", fake(6)).add_texts(["x"], ids=["x"])
    with pytest.raises(ConfigError, match=r"indexed with model 'langchain:DeterministicFakeEmbedding'.*different model"):
        RagctlVectorStore(tmp_path / "store", "lc", fake(8))
    with pytest.raises(ConfigError, match="indexed through LangChain embeddings"):
        RagctlVectorStore(tmp_path / "store", "lc")  # ragctl's own model
    meta = json.loads((tmp_path / "store" / "entities" / "lc" / "entity.json").read_text())
    assert meta["model"]["name"] == "langchain:DeterministicFakeEmbedding" and meta["model"]["dim"] == 6
    # ragctl's CLI reads the entity and says why it cannot embed a query for it
    done = subprocess.run([*RAGCTL, "query", "lc", "x", "--store", str(tmp_path / "store")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "LangChain embeddings" in done.stderr, done.stderr


def test_window_pieces_concatenate_to_the_text_and_fit_the_window(tmp_path: Path) -> None:
    from ragctl.chunking import load_tokenizer
    from ragctl.model_spec import resolve_model

    spec = resolve_model(None)
    tokenizer = load_tokenizer(spec.path)
    text = " ".join(f"sentence {i} mentions photosynthesis, chlorophyll and unbelievably long words." for i in range(120))
    pieces = window_pieces(text, tokenizer.encode(text, add_special_tokens=False).offsets, spec.max_tokens - 10)
    assert len(pieces) > 3 and "".join(pieces) == text
    assert all(len(tokenizer.encode(p).ids) <= spec.max_tokens for p in pieces)
    assert all(p[0] != " " and (p is pieces[-1] or p.endswith(" ")) for p in pieces)  # cut between words
    assert window_pieces("short", [(0, 5)], 10) == ["short"]


# ---------------------------------------------------------------------- real model, with ingest
@pytest.mark.slow  # three ragctl processes each load the model: ~40-80 s on the shared 2-core machine
def test_real_model_store_and_a_concurrent_ingest_keep_one_entity_consistent(tmp_path: Path) -> None:
    """`ragctl ingest` (a process) and the store object (this process) write one entity at once;
    afterwards verify is clean, everything is there once, and query reads both kinds."""
    store_dir = tmp_path / "store"
    tree = tmp_path / "tree"
    for i in range(40):
        path = tree / "docs" / f"file{i:02}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# File {i}\n\nIngested file number {i} talks about lighthouse keeper {i}.\n")
    ingest = subprocess.Popen(
        [*RAGCTL, "ingest", str(tree), "--entities", "docs", "--store", str(store_dir), "--backend", "torch",
         "--precision", "fp32", "--workers", "1", "--json", "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    store = RagctlVectorStore(store_dir, "docs", config=FP32_TORCH)
    long_text = " ".join(f"Paragraph {i} explains how the harbour crane lifts containers." for i in range(80))
    added = store.add_texts([long_text], [{"kind": "long"}], ids=["long"])
    batches = 0
    while ingest.poll() is None or batches < 3:
        ids = [f"lc-{batches}-{j}" for j in range(3)]
        # (no digits in these texts: "17" below must find the file only, however many batches run)
        store.add_texts(["LangChain note on tidal charts"] * 3, [{"batch": batches}] * 3, ids=ids)
        added += ids
        batches += 1
    out, err = ingest.communicate(timeout=300)
    assert ingest.returncode == 0, err
    assert json.loads(out)["entities"]["docs"]["indexed"] == 40, out

    rc, report = ragctl_json("verify", "--store", str(store_dir))
    assert rc == 0 and report["entities"]["docs"]["problems"] == [], report
    assert report["entities"]["docs"]["documents"] == 40 + len(added), report
    got = store.get_by_ids(added)
    assert sorted(str(d.id) for d in got) == sorted(added)
    long_doc = next(d for d in got if d.id == "long")
    assert long_doc.page_content == long_text and long_doc.metadata == {"kind": "long"}
    assert store.entity.records()["long"]["chunk_count"] > 1  # longer than the model's window

    # ragctl's model answers for both kinds: a LangChain text whole, an ingested file per chunk
    hits = store.as_retriever(search_kwargs={"k": 3}).invoke("how does the harbour crane lift containers")
    assert hits[0].id == "long" and hits[0].page_content == long_text
    file_hit = store.similarity_search("lighthouse keeper 17", k=1, mode="hybrid")[0]
    assert file_hit.metadata["source"] == "file17.md" and "lighthouse keeper 17" in file_hit.page_content
    with pytest.raises(UsageError, match="that ragctl ingest indexed"):
        store.delete([str(file_hit.id)])
    rc, found = ragctl_json("query", "docs", "harbour crane containers", "--store", str(store_dir), "-k", "1",
                            "--backend", "torch", "--precision", "fp32")
    assert rc == 0 and found["results"][0]["doc_id"] == "long", found

    # a second ingest, even with --prune, leaves the LangChain documents alone: they are no file
    # of the tree, so neither stale nor pruned
    rc, again = ragctl_json("ingest", str(tree), "--entities", "docs", "--store", str(store_dir), "--prune",
                            "--backend", "torch", "--precision", "fp32", "--workers", "1", "-q")
    assert rc == 0, again
    counts = again["entities"]["docs"]
    assert counts["unchanged"] == 40 and counts["stale"] == 0 and counts["pruned"] == 0, counts
    assert sorted(str(d.id) for d in store.get_by_ids(added)) == sorted(added)
    rc, report = ragctl_json("verify", "--store", str(store_dir))
    assert rc == 0 and report["entities"]["docs"]["documents"] == 40 + len(added), report


@pytest.mark.slow  # loads the real model in this process (5-40 s on the shared machine)
def test_ragctl_embeddings_adapter_matches_the_store_identity(tmp_path: Path) -> None:
    embeddings = RagctlEmbeddings(FP32_TORCH)
    store = RagctlVectorStore(tmp_path / "store", "lc", embeddings)
    store.add_texts(["anchors hold ships in place"], ids=["a"])
    meta = json.loads((tmp_path / "store" / "entities" / "lc" / "entity.json").read_text())
    assert meta["model"]["name"] == "all-MiniLM-L6-v2" and meta["model"]["dim"] == 384
    vector = embeddings.embed_query("anchors hold ships in place")
    assert len(vector) == 384 and abs(sum(x * x for x in vector) - 1.0) < 1e-4
    assert [d.id for d in store.similarity_search_by_vector(vector, k=1)] == ["a"]
    assert isinstance(store.embeddings, RagctlEmbeddings)
