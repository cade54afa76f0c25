"""Parallel upload vs the original one-document-at-a-time design (issue 4, items 5-6).

Under pytest (small sizes; one model load for the whole session, conftest's `embedder`):
the parallel pipeline and the sequential design build identical stores (paths, chunk counts,
chunk texts per entity) and a query for a known sentence finds the same document in both;
`ragctl bench --json` works. (The comparison table itself: `ragctl bench`, see
docs/benchmarks.md.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ragctl.bench import (
    BenchConfig,
    BenchMismatch,
    compare_snapshots,
    format_table,
    generate_corpus,
    run_bench,
    store_snapshot,
)

NEEDLE = (
    "The lighthouse keepers' pension fund is audited every leap year by an external firm "
    "from Reykjavik, and the audit report is archived on microfilm."
)
NEEDLE_QUERY = "Who audits the lighthouse keepers pension fund, and how often?"


# ----------------------------------------------------------------------------- fixtures
# `embedder` (conftest.py): the default model, loaded once per test session and shared with
# every in-process ingest and `run_bench` (Embedder.shared).


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    info = generate_corpus(root, entities=3, docs=3, seed=7)
    assert info.documents == 9
    # A known sentence in a known document, for the query check.
    needle = root / "entity-01" / "archive" / "pension-fund.md"
    needle.parent.mkdir(parents=True)
    needle.write_text(f"# Pension fund\n\n## Audits\n\n{NEEDLE}\n", encoding="utf-8")
    return root


def _ingest(corpus: Path, store: Path, embedder: Any, sequential: bool, workers: int = 2) -> Any:
    from ragctl.bench.sequential import ingest_sequential
    from ragctl.discovery import discover_entities
    from ragctl.ingest import IngestOptions, ingest

    sources = discover_entities(corpus)
    if sequential:
        report = ingest_sequential(sources, store, embedder)
    else:
        from ragctl.model_config import ModelConfig

        options = IngestOptions(store=store, workers=workers, model=ModelConfig(precision=embedder.precision))
        report = ingest(sources, options, embedder=embedder)
    assert not report.failures, report.failures
    return report


@pytest.fixture(scope="module")
def stores(corpus: Path, embedder: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for kind in ("sequential", "parallel"):
        store = tmp_path_factory.mktemp(kind) / "store"
        _ingest(corpus, store, embedder, sequential=(kind == "sequential"))
        out[kind] = store
    return out


# ----------------------------------------------------------------------------- corpus
def test_generated_corpus_is_reproducible_and_mixed(tmp_path: Path) -> None:
    a = generate_corpus(tmp_path / "a", entities=2, docs=12, seed=3)
    b = generate_corpus(tmp_path / "b", entities=2, docs=12, seed=3)
    files_a = sorted(p.relative_to(a.root) for p in a.root.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b.root) for p in b.root.rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) == 24
    assert all((a.root / f).read_bytes() == (b.root / f).read_bytes() for f in files_a)
    assert sorted(p.name for p in (a.root).iterdir()) == ["entity-00", "entity-01"]
    assert {".md", ".html", ".txt"} <= set(a.formats)
    sizes = [(a.root / f).stat().st_size for f in files_a if f.suffix in (".md", ".txt", ".html")]
    assert min(sizes) >= 800 and max(sizes) <= 40_000
    c = generate_corpus(tmp_path / "c", entities=2, docs=12, seed=4)
    assert (c.root / files_a[0]).read_bytes() != (a.root / files_a[0]).read_bytes() if (c.root / files_a[0]).exists() else True


def test_generated_documents_parse_into_several_chunks(corpus: Path) -> None:
    from ragctl.parsing import parse_file

    for path in corpus.rglob("*"):
        if path.is_file():
            doc = parse_file(path)
            if path.suffix in (".md", ".html", ".docx"):  # formats whose readers keep headings
                assert any(b.kind == "heading" for b in doc.blocks), path
            assert sum(len(b.text) for b in doc.blocks) > 100, path


# ----------------------------------------------------------------------------- parallel == sequential
def test_parallel_and_sequential_build_identical_stores(stores: dict[str, Path]) -> None:
    seq = store_snapshot(stores["sequential"], texts=True)
    par = store_snapshot(stores["parallel"], texts=True)
    assert sorted(seq) == ["entity-00", "entity-01", "entity-02"]
    assert compare_snapshots(seq, par) == []
    assert seq == par
    assert sum(len(docs) for docs in par.values()) == 10
    assert all(text for docs in par.values() for chunks in docs.values() for text in chunks)
    # every chunk fits the model window, in both
    assert sum(len(chunks) for docs in par.values() for chunks in docs.values()) >= 10


def test_known_sentence_is_found_in_the_same_document(stores: dict[str, Path], embedder: Any) -> None:
    from ragctl.storage.entity import open_entity

    query = embedder.encode([NEEDLE_QUERY])
    found = {}
    for kind, store in stores.items():
        hits = open_entity(store, "entity-01").search(query, k=3)[0]
        assert hits, kind
        assert NEEDLE in hits[0].text
        found[kind] = hits[0].path
    assert found == {"sequential": "archive/pension-fund.md", "parallel": "archive/pension-fund.md"}


def test_parallel_ingest_leaves_torch_threads_alone(corpus: Path, embedder: Any, tmp_path: Path) -> None:
    """Regression: faiss.omp_set_num_threads(1) on the encoding thread also set torch's
    intra-op threads to 1 (one OpenMP runtime, per-thread setting): half the throughput."""
    import torch

    before = torch.get_num_threads()
    _ingest(corpus, tmp_path / "store", embedder, sequential=False)
    assert torch.get_num_threads() == before


def test_compare_snapshots_reports_differences() -> None:
    a = {"e1": {"x.md": 2, "y.md": 1}, "e2": {"z.md": 1}}
    b = {"e1": {"x.md": 3, "w.md": 1}}
    problems = compare_snapshots(a, b)
    assert "entity e2: only in sequential" in problems
    assert "e1/y.md: only in sequential" in problems
    assert "e1/w.md: only in parallel" in problems
    assert "e1/x.md: chunk counts differ (2 vs 3)" in problems
    assert compare_snapshots(a, a) == []


def test_run_bench_checks_and_measures(corpus: Path, embedder: Any, tmp_path: Path) -> None:
    result = run_bench(BenchConfig(corpus=corpus, workers=2, keep=tmp_path / "kept"), embedder=embedder)
    data = result.to_json()
    assert data["docs"] == 10 and data["chunks"] > 10 and data["failed"] == 0
    assert data["speedup"] == pytest.approx(data["sequential_s"] / data["parallel_s"], rel=2e-3)
    assert data["efficiency"] == pytest.approx(data["speedup"] / min(data["workers"], data["cores"]), rel=1e-3)
    assert data["limit_ratio"] == pytest.approx(data["chunks_per_s"] / data["model_limit_chunks_per_s"], rel=2e-3)
    assert data["precision"] == embedder.precision
    assert data["torch_threads"]["before"] == data["torch_threads"]["after"] and data["warnings"] == []
    # --keep: the stores stay, and they agree
    kept = {k: Path(v) for k, v in data["stores"].items()}
    assert compare_snapshots(store_snapshot(kept["sequential"]), store_snapshot(kept["parallel"])) == []
    # a second run into the same --keep directory refuses to mix with old stores
    from ragctl.errors import UsageError

    with pytest.raises(UsageError):
        run_bench(BenchConfig(corpus=corpus, keep=tmp_path / "kept"), embedder=embedder)
    assert "Speedup" in format_table(result) and "Limit ratio" in format_table(result)


def test_run_bench_fails_loudly_when_stores_differ(corpus: Path, embedder: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import ragctl.bench.run as bench

    real = bench.store_snapshot

    def tampered(store: Path, texts: bool = False) -> dict[str, dict[str, Any]]:
        snap = real(store, texts)
        if "parallel" in str(store):
            snap["entity-00"].popitem()
        return snap

    monkeypatch.setattr(bench, "store_snapshot", tampered)
    with pytest.raises(BenchMismatch, match="only in sequential"):
        run_bench(BenchConfig(corpus=corpus, workers=1), embedder=embedder)


# ----------------------------------------------------------------------------- CLI
BENCH_KEYS = {
    "sequential_s", "parallel_s", "speedup", "efficiency", "docs_per_s", "chunks_per_s",
    "model_limit_chunks_per_s", "limit_ratio", "workers", "cores", "precision",
}


def test_cli_bench_json(embedder: Any) -> None:
    from typer.testing import CliRunner

    from ragctl.cli.app import app

    # The command takes the process's shared model: the session's, already loaded.
    result = CliRunner().invoke(app, ["bench", "--entities", "2", "--docs", "2", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert BENCH_KEYS <= set(data)
    assert data["speedup"] == pytest.approx(data["sequential_s"] / data["parallel_s"], rel=2e-3)
    assert data["docs"] == 4 and data["workers"] == data["cores"]
    assert data["corpus"]["documents"] == 4


def test_cli_bench_mismatch_exits_1(embedder: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import ragctl.bench
    from ragctl.cli.app import app

    def boom(config: BenchConfig, on_event: Any = None, embedder: Any = None) -> None:
        raise BenchMismatch("sequential and parallel stores differ: e/x.md: only in sequential")

    monkeypatch.setattr(ragctl.bench, "run_bench", boom)
    result = CliRunner().invoke(app, ["bench", "--entities", "1", "--docs", "1", "--json"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "stores differ" in result.output


def test_cli_bench_usage_errors(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ragctl.cli.app import app

    result = CliRunner().invoke(app, ["bench", "--corpus", str(tmp_path / "missing"), "--json"])
    assert result.exit_code == 2
    result = CliRunner().invoke(app, ["bench", "--entities", "0"])
    assert result.exit_code == 2
