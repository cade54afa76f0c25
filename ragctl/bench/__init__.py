"""Benchmarks and the corpus/document generators they (and the tests) use. Not needed at run
time: the CLI imports this package only inside `ragctl bench`.

    run.py         `ragctl bench`: one document at a time vs the engine vs the bare model
    sequential.py  the one-document-at-a-time baseline, built from the engine's stage functions
    corpus.py      the seeded synthetic corpus (`generate_corpus`) and its prose generator
    stores.py      reading benchmark stores back (snapshots, comparison, chunk texts)
    parsing.py     `python -m ragctl.bench.parsing`: parse throughput of each reader
    samples.py     dependency-light .pdf/.docx/.pptx/.msg writers (tests, sample_docs, corpus)

Which entry point answers which question: docs/benchmarks.md. Names below are loaded on first
use (PEP 562), so `import ragctl.bench` stays cheap.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "BenchConfig": "run",
    "BenchResult": "run",
    "BenchMismatch": "run",
    "run_bench": "run",
    "model_limit": "run",
    "warm_up": "run",
    "format_table": "run",
    "CorpusInfo": "corpus",
    "generate_corpus": "corpus",
    "describe_corpus": "corpus",
    "store_snapshot": "stores",
    "compare_snapshots": "stores",
    "chunk_texts_in_order": "stores",
    "ingest_sequential": "sequential",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ragctl.bench' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"ragctl.bench.{module}"), name)
