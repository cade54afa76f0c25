"""`ragctl query ENTITY TEXT`."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from ragctl.cli.common import EXIT_USAGE, JsonOption, StoreOption, fail, handle_errors, print_json, store_path
from ragctl.cli.model_options import model_options
from ragctl.model_config import ModelConfig


def register(app: typer.Typer) -> None:
    app.command("query")(query_command)


@handle_errors
@model_options
def query_command(
    entity: str = typer.Argument(..., help="Entity to search (only its documents are searched)."),
    text: str = typer.Argument(None, help="Query text (or use --queries).", show_default=False),
    k: int = typer.Option(5, "-k", min=1, help="Number of hits: at most k documents, those of the top 2k chunks (the default), or k chunks with --per-chunk."),
    queries: str = typer.Option(None, "--queries", help="File with one query per line ('-' for stdin)."),
    store: Path = StoreOption,
    mode: str = typer.Option(
        "hybrid", "--mode", help="hybrid (rank fusion of both), vector (embeddings) or text (bm25 full-text)."
    ),
    rerank: bool = typer.Option(
        False, "--rerank",
        help="Experimental: re-score the top 12 candidates passage by passage with the entity's model "
             "(slower; not better on our question sets yet, docs/retrieval.md).",
    ),
    per_document: bool = typer.Option(
        True, "--per-document/--per-chunk",
        help="Each hit a document: its best chunk plus its next-best matching chunks among the top "
             "2k, within a budget of 150 words a hit (--context-words sets it); --per-chunk: each hit "
             "one chunk, a document's chunks each a hit of their own.",
    ),
    context_words: int = typer.Option(
        0, "--context-words", min=0,
        help="Per-document hits: their word budget, N a hit (0: 150). Per-chunk hits: grow each to "
             "its chunk plus neighbouring chunks of its document, up to N words (no words repeated "
             "across hits); 0: the chunk alone.",
    ),
    json_out: bool = JsonOption,
    model_config: ModelConfig = None,  # type: ignore[assignment]  # filled in by @model_options
) -> None:
    """Top-k documents (or chunks) of one entity for a query (or a batch of queries, one model load)."""
    from ragctl.ids import validate_entity_id
    from ragctl.query import MODES, Searcher, hit_json

    validate_entity_id(entity)
    if mode not in MODES:
        fail(f"--mode must be one of {', '.join(MODES)}", EXIT_USAGE)
    if (text is None) == (queries is None):
        fail("give either TEXT or --queries FILE", EXIT_USAGE)
    if queries is not None:
        try:
            raw = sys.stdin.read() if queries == "-" else Path(queries).read_text(encoding="utf-8")
        except OSError as exc:
            fail(f"{queries}: cannot read: {exc.strerror}", EXIT_USAGE)
        batch = [line.strip() for line in raw.splitlines() if line.strip()]
    else:
        if not text.strip():
            fail("the query text is empty", EXIT_USAGE)
        batch = [text]
    searcher = Searcher(store_path(store), entity, model_config)
    results = searcher.search(batch, k, mode, rerank=rerank, context_words=context_words, per_document=per_document)
    stale = searcher.stale_documents()
    if stale:
        typer.echo(f"note: {stale} document(s) of {entity!r} were indexed before contextual chunks (no title or "
                   "section); `ragctl ingest --reindex` re-chunks and re-embeds them", err=True)
    if json_out:
        if queries is None:
            print_json({"entity": entity, "model": searcher.model_info(), "results": [hit_json(h) for h in results[0]]})
        else:
            print_json(
                {"entity": entity, "model": searcher.model_info(), "queries": [{"query": q, "results": [hit_json(h) for h in r]} for q, r in zip(batch, results)]}
            )
        return
    for query_text, hits in zip(batch, results):
        if len(batch) > 1:
            typer.echo(f"## {query_text}")
        if not hits:
            typer.echo("(no results)")
        for rank, hit in enumerate(hits, 1):
            snippet = " ".join(hit.text.split())
            if len(snippet) > 300:
                snippet = snippet[:297] + "..."
            origin = "/".join(f"{name}#{r}" for name, r in (("vec", hit.vector_rank), ("text", hit.text_rank)) if r)
            where = f"{hit.path} > {hit.section}" if hit.section else hit.path
            typer.echo(f"{rank}. {hit.score:.3f}  {where}  [{hit.doc_id[:8]}] {origin}\n   {snippet}")
            if hit.also_in:  # the same passage in other documents (collapsed into this hit)
                typer.echo(f"   also in: {', '.join(hit.also_in)}")
