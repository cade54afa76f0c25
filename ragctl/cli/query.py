"""`ragctl query ENTITY TEXT`."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from ragctl.cli.remote_options import EmbedDimOption, EmbedKeyEnvOption, EmbedModelOption, EmbedUrlOption
from ragctl.cli.common import JsonOption, StoreOption, fail, handle_errors, print_json, store_path, EXIT_USAGE


def register(app: typer.Typer) -> None:
    app.command("query")(query_command)


@handle_errors
def query_command(
    entity: str = typer.Argument(..., help="Entity to search (only its documents are searched)."),
    text: str = typer.Argument(None, help="Query text (or use --queries).", show_default=False),
    k: int = typer.Option(5, "-k", min=1, help="Number of chunks to return."),
    queries: str = typer.Option(None, "--queries", help="File with one query per line ('-' for stdin)."),
    store: Path = StoreOption,
    model: str = typer.Option(None, "--model", help="Model override (must be the entity's model)."),
    mode: str = typer.Option(
        "hybrid", "--mode", help="hybrid (rank fusion of both), vector (embeddings) or text (bm25 full-text)."
    ),
    backend: str = typer.Option("auto", "--backend", help="auto|torch|openvino for the query's embedding (as ingest)."),
    embed_url: str = EmbedUrlOption,
    embed_model: str = EmbedModelOption,
    embed_key_env: str = EmbedKeyEnvOption,
    embed_dim: int = EmbedDimOption,
    json_out: bool = JsonOption,
) -> None:
    """Top-k chunks of one entity for a query (or a batch of queries, one model load)."""
    from ragctl.ids import validate_entity_id
    from ragctl.query import MODES, Searcher, hit_json
    from ragctl.runtimes.remote import settings_from

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
        batch = [text]
    remote = settings_from(embed_url, embed_model, embed_key_env, dim=embed_dim)
    searcher = Searcher(store_path(store), entity, model, remote, backend)
    results = searcher.search(batch, k, mode)
    if json_out:
        if queries is None:
            print_json({"entity": entity, "results": [hit_json(h) for h in results[0]]})
        else:
            print_json(
                {"entity": entity, "queries": [{"query": q, "results": [hit_json(h) for h in r]} for q, r in zip(batch, results)]}
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
            typer.echo(f"{rank}. {hit.score:.3f}  {hit.path}  [{hit.doc_id[:8]}] {origin}\n   {snippet}")
