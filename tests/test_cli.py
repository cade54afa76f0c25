"""End-to-end behaviour of `ragctl ingest` and `ragctl query` (issue 2), with the real model."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragctl.cli.app import app

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DOCS = REPO / "sample_docs"
ENTITIES = sorted(p.name for p in SAMPLE_DOCS.iterdir() if p.is_dir())


def run_cli(*args: str, input: str | None = None):
    result = CliRunner().invoke(app, [str(a) for a in args], input=input)
    return result


def one_doc_tree(tmp_path: Path) -> tuple[Path, Path]:
    """A tree of one entity (`acme`) holding one Markdown file, and where its store goes."""
    from helpers import make_tree

    return make_tree(tmp_path / "docs", {"acme/a.md": "# A\n\nRefunds take five days.\n"}), tmp_path / "store"


def json_out(result) -> dict:
    assert result.stdout.strip(), result.output
    return json.loads(result.stdout)


def tree_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    """sample_docs ingested once into a store shared by the read-only tests of this module."""
    store = tmp_path_factory.mktemp("store")
    result = run_cli("ingest", SAMPLE_DOCS, "--store", store, "--json", "--quiet")
    assert result.exit_code == 0, result.output
    return store, json_out(result)


def test_help_is_instant_and_imports_no_heavy_library():
    code = (
        "import sys, ragctl.cli.app as a;"
        "heavy = [m for m in ('torch', 'faiss', 'unstructured', 'sentence_transformers', 'transformers') if m in sys.modules];"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    result = run_cli("--help")
    assert result.exit_code == 0
    for command in ("ingest", "query", "verify", "stats", "delete"):
        assert command in result.stdout


def test_ingest_summary_counts_every_file(ingested):
    _, summary = ingested
    assert set(summary["entities"]) == set(ENTITIES)
    for entity in ENTITIES:
        row = summary["entities"][entity]
        assert row["files"] == len(tree_files(SAMPLE_DOCS / entity))
        assert row["indexed"] + row["skipped"] == row["files"]
        assert row["indexed"] >= 3 and row["failed"] == 0 and row["chunks"] >= row["indexed"]
    assert summary["failures"] == []
    assert isinstance(summary["seconds"], float)


def test_shards_follow_the_mapping_contract(ingested):
    from ragctl.storage.entity import EntityStore
    from ragctl.storage.json_storage import JSONStorage

    store, summary = ingested
    for entity in ENTITIES:
        shard = store / "doc_id_name_mapping" / f"{entity}.json"
        records = json.loads(shard.read_text())
        assert len(records) == summary["entities"][entity]["indexed"]
        for doc_id, record in records.items():
            assert record["doc_id"] == doc_id and record["entity_id"] == entity
            source = SAMPLE_DOCS / entity / record["path"]
            assert source.is_file() and record["name"] == source.name
            assert record["content_hash"] == hashlib.sha256(source.read_bytes()).hexdigest()
        vectors = EntityStore(JSONStorage(store), entity).load_index()
        assert vectors.ntotal == sum(r["chunk_count"] for r in records.values())
        assert sum(r["chunk_count"] for r in records.values()) == summary["entities"][entity]["chunks"]
    assert not (store / "doc_id_name_mapping.json").exists()


def test_no_chunk_exceeds_the_model_window(ingested):
    import sqlite3

    from ragctl.chunking import load_tokenizer
    from ragctl.embedding import resolve_model

    store, _ = ingested
    spec = resolve_model(None)
    tokenizer = load_tokenizer(spec.path)
    for entity in ENTITIES:
        with sqlite3.connect(store / "entities" / entity / "chunks.sqlite") as conn:
            texts = [row[0] for row in conn.execute("SELECT text FROM chunks")]
        assert texts
        assert max(len(tokenizer.encode(t).ids) for t in texts) <= spec.max_tokens


def test_rerun_on_unchanged_tree_does_nothing(ingested, tmp_path):
    store, first = ingested
    result = run_cli("ingest", SAMPLE_DOCS, "--store", store, "--json", "--quiet")
    assert result.exit_code == 0, result.output
    summary = json_out(result)
    for entity in ENTITIES:
        row = summary["entities"][entity]
        assert row["unchanged"] == first["entities"][entity]["indexed"]
        assert row["indexed"] == row["updated"] == row["chunks"] == 0


def test_query_finds_the_document_that_holds_the_answer(ingested):
    store, _ = ingested
    result = run_cli("query", "acme-corp", "How many days do customers have to return an item for a refund?", "--store", store, "--json", "-k", "3")
    assert result.exit_code == 0, result.output
    out = json_out(result)
    assert out["entity"] == "acme-corp"
    top = out["results"][0]
    assert {"doc_id", "path", "score", "text", "vector_rank", "text_rank"} <= set(top)
    assert "refund" in top["path"] and "45" in top["text"]
    scores = [r["score"] for r in out["results"]]
    assert scores == sorted(scores, reverse=True)


def test_entities_are_isolated(ingested):
    store, _ = ingested
    globex_paths = {p.relative_to(SAMPLE_DOCS / "globex").as_posix() for p in tree_files(SAMPLE_DOCS / "globex")}
    result = run_cli("query", "globex", "Acme refund policy 45 days", "--store", store, "--json", "-k", "10")
    out = json_out(result)
    assert out["results"]
    assert all(r["path"] in globex_paths for r in out["results"])


def test_batch_queries_from_file_and_stdin(ingested, tmp_path):
    store, _ = ingested
    questions = tmp_path / "q.txt"
    questions.write_text("Kubernetes cluster outage\n\nTPS report cover sheet\n")
    result = run_cli("query", "globex", "--queries", questions, "--store", store, "--json", "-k", "2")
    out = json_out(result)
    assert [q["query"] for q in out["queries"]] == ["Kubernetes cluster outage", "TPS report cover sheet"]
    # per document: the documents of the top 4 chunks, at most 2, each once
    assert all(1 <= len(q["results"]) <= 2 for q in out["queries"])
    assert all(len({h["path"] for h in q["results"]}) == len(q["results"]) for q in out["queries"])
    result = run_cli("query", "initech", "--queries", "-", "--store", store, "--json", input="TPS report cover sheet\n")
    out = json_out(result)
    assert "tps" in out["queries"][0]["results"][0]["path"].lower() or "TPS" in out["queries"][0]["results"][0]["text"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["query", "no-such-entity", "hello"], "unknown entity"),
        (["query", "../etc", "hello"], "invalid entity id"),
        (["ingest", str(SAMPLE_DOCS), "--entities", "acme-corp,ghost"], "ghost"),
        (["ingest", str(SAMPLE_DOCS), "--entities", "bad/id"], "invalid entity id"),
        (["ingest", "/no/such/root"], "not a directory"),
    ],
)
def test_usage_errors_exit_2_with_a_clear_message(ingested, args, message):
    store, _ = ingested
    before = sorted(p for p in store.rglob("*"))
    result = run_cli(*args, "--store", store)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert sorted(p for p in store.rglob("*")) == before


def test_entity_mapped_to_any_directory(tmp_path):
    docs = tmp_path / "elsewhere"
    docs.mkdir()
    (docs / "note.md").write_text("# Lighthouse\n\nThe lighthouse keeper logs the fog horn schedule every night.\n")
    store = tmp_path / "store"
    result = run_cli("ingest", "--entities", f"harbor={docs}", "--store", store, "--json", "--quiet")
    assert result.exit_code == 0, result.output
    assert json_out(result)["entities"]["harbor"]["indexed"] == 1
    hits = json_out(run_cli("query", "harbor", "fog horn", "--store", store, "--json"))["results"]
    assert hits[0]["path"] == "note.md"


def test_bad_files_are_reported_and_the_rest_is_indexed(tmp_path):
    root = tmp_path / "root"
    entity = root / "tenant"
    entity.mkdir(parents=True)
    (entity / "good.md").write_text("# Solar panels\n\nOur rooftop solar panels produce 4 kW at noon in June.\n")
    (entity / "empty.txt").write_bytes(b"")
    (entity / "binary.txt").write_bytes(bytes(range(256)) * 8)
    (entity / "corrupt.pdf").write_bytes(b"%PDF-1.4\n" + os.urandom(2000))
    (entity / "latin1.txt").write_bytes("Le café coûte 3 € à Montréal, près de la rivière.".encode("cp1252"))
    (entity / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(100))
    unreadable = entity / "secret.md"
    unreadable.write_text("# Secret\n\nNobody can read this file.\n")
    unreadable.chmod(0)
    unreadable_really = not os.access(unreadable, os.R_OK)
    (entity / ".hidden.md").write_text("hidden files are ignored")
    store = tmp_path / "store"
    result = run_cli("ingest", root, "--store", store, "--json", "--quiet")
    unreadable.chmod(0o644)
    summary = json_out(result)
    row = summary["entities"]["tenant"]
    assert row["files"] == 7  # the hidden file is not seen
    failures = {f["path"]: f["error"] for f in summary["failures"]}
    skipped = {s["path"]: s["reason"] for s in summary["skipped_files"]}
    assert "binary.txt" in failures and "corrupt.pdf" in failures
    assert failures["image.png"] == "not a readable image (corrupt, truncated, or another format renamed)"
    assert "empty.txt" in skipped
    assert all(msg and "\n" not in msg for msg in list(failures.values()) + list(skipped.values()))
    if unreadable_really:
        assert "secret.md" in failures and "denied" in failures["secret.md"].lower()
    assert result.exit_code == 1
    assert row["indexed"] == (2 if unreadable_really else 3)
    hits = json_out(run_cli("query", "tenant", "prix du café à Montréal", "--store", store, "--json", "-k", "1"))["results"]
    assert hits[0]["path"] == "latin1.txt" and "café" in hits[0]["text"]


def test_symlinks_leaving_the_tree_are_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "private.md").write_text("# Private\n\nPayroll numbers for the whole company.\n")
    entity = tmp_path / "root" / "tenant"
    entity.mkdir(parents=True)
    (entity / "public.md").write_text("# Public\n\nOpening hours are nine to five.\n")
    (entity / "leak.md").symlink_to(outside / "private.md")
    (entity / "leakdir").symlink_to(outside)
    (entity / "alias.md").symlink_to(entity / "public.md")  # inside the tree: followed, same content
    store = tmp_path / "store"
    summary = json_out(run_cli("ingest", tmp_path / "root", "--store", store, "--json", "--quiet"))
    row = summary["entities"]["tenant"]
    assert row["files"] == 2 and row["indexed"] == 1 and row["skipped"] == 1  # alias = duplicate content
    records = json.loads((store / "doc_id_name_mapping" / "tenant.json").read_text())
    assert {r["path"] for r in records.values()} == {"alias.md"} or {r["path"] for r in records.values()} == {"public.md"}


def test_real_subprocess_keeps_stdout_json_and_stderr_progress(tmp_path):
    root = tmp_path / "root"
    shutil.copytree(SAMPLE_DOCS / "initech", root / "initech")
    store = tmp_path / "store"
    proc = subprocess.run(
        [sys.executable, "-m", "ragctl", "ingest", str(root), "--store", str(store), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["entities"]["initech"]["indexed"] >= 3
    assert "initech:" in proc.stderr and "Ingest summary" in proc.stderr
    assert "\x1b[" not in proc.stderr  # not a terminal: no control codes in logs
    env = {**os.environ, "RAGCTL_STORE": str(store)}
    proc = subprocess.run(
        [sys.executable, "-m", "ragctl", "query", "initech", "TPS report cover sheet", "--json"],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["results"]


def test_query_backend_option_finds_the_same_top_chunk(ingested):
    """`--backend torch` and the default (OpenVINO where installed) embed the query with
    different runtimes; both find the same chunk first."""
    store, _ = ingested
    question = "How many days do customers have to return an item for a refund?"
    tops = []
    for extra in ((), ("--backend", "torch")):
        result = run_cli("query", "acme-corp", question, "--store", store, "--json", "--mode", "vector", *extra)
        assert result.exit_code == 0, result.output
        tops.append(json_out(result)["results"][0]["doc_id"])
    assert tops[0] == tops[1]
    bad = run_cli("query", "acme-corp", question, "--store", store, "--backend", "tensorflow")
    assert bad.exit_code == 2 and "backend must be auto, torch or openvino" in bad.output


@pytest.mark.timeout(120)
def test_a_rerun_with_nothing_to_embed_says_so_and_an_empty_query_is_a_usage_error(tmp_path, embedder):
    from helpers import cli as run_cli

    root, store = one_doc_tree(tmp_path)
    assert run_cli("ingest", root, "--store", store).exit_code == 0
    again = run_cli("ingest", root, "--store", store)
    assert again.exit_code == 0
    line = " ".join(again.stderr.split())
    assert "model all-MiniLM-L6-v2 (not loaded: nothing to embed);" in line and "on cpu ()" not in line

    empty = run_cli("query", "acme", "   ", "--store", store)
    assert empty.exit_code == 2 and "the query text is empty" in empty.stderr


@pytest.mark.timeout(120)
def test_delete_without_an_answer_deletes_nothing_and_exits_2(tmp_path, embedder):
    from helpers import cli as run_cli

    root, store = one_doc_tree(tmp_path)
    assert run_cli("ingest", root, "--store", store).exit_code == 0
    for answer in ("", "n\n"):  # stdin closed (a script, cron), or "no"
        result = CliRunner().invoke(app, ["delete", "acme", "--store", str(store)], input=answer)
        assert result.exit_code == 2, result.output
        assert "aborted: nothing deleted" in result.output and "Aborted!" not in result.output
    assert (store / "entities" / "acme").is_dir()
    assert run_cli("delete", "acme", "--store", store, "--yes").exit_code == 0
    assert not (store / "entities" / "acme").exists()


def test_a_store_that_is_a_file_is_a_usage_error(tmp_path):
    from helpers import cli as run_cli

    root, not_a_dir = one_doc_tree(tmp_path)
    not_a_dir.write_text("I am a file")
    for args in (("stats",), ("verify",), ("query", "acme", "refunds"), ("ingest", str(root))):
        result = run_cli(*args, "--store", not_a_dir)
        assert result.exit_code == 2, (args, result.output)
        assert "--store is not a directory" in result.stderr
