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
