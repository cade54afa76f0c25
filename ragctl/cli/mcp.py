"""`ragctl mcp`: a stdio Model Context Protocol server over a store (needs the `mcp` extra)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from ragctl.cli.common import EXIT_INTERRUPTED, EXIT_USAGE, StoreOption, fail, handle_errors, plain, stderr, store_path
from ragctl.cli.model_options import model_options
from ragctl.model_config import ModelConfig

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def register(app: typer.Typer) -> None:
    app.command("mcp")(mcp_command)


def parse_entities(value: str | None) -> list[str] | None:
    """`a,b` -> ["a", "b"] (each id validated); None or blank -> None (every entity)."""
    from ragctl.ids import validate_entity_id

    if value is None or not value.strip():
        return None
    return [validate_entity_id(part.strip()) for part in value.split(",") if part.strip()]


@handle_errors
@model_options
def mcp_command(
    store: Path = StoreOption,
    entities: str = typer.Option(
        None, "--entities", "-e", show_default=False,
        help="Comma-separated entity ids the server may show [default: every entity in the store]; others are invisible.",
    ),
    log_level: str = typer.Option("warning", "--log-level", help="Server log level on stderr (debug|info|warning|error)."),
    search_cache_mb: float = typer.Option(1024.0, "--search-cache-mb", min=1, help="Memory for entities kept warm for search, weighed by their vectors (least recently searched dropped first)."),
    model_config: ModelConfig = None,  # type: ignore[assignment]  # filled in by @model_options
) -> None:
    """Serve the store to agents over stdio (Model Context Protocol): list_entities, search, get_document.

    Read-only: the store is never written. Stdout carries only the protocol; logs go to stderr.
    """
    import importlib.util

    if importlib.util.find_spec("mcp") is None:
        fail("ragctl mcp needs the mcp extra: pip install -c constraints.txt -e '.[mcp]' (mcp is missing)", EXIT_USAGE)
    if log_level.lower() not in LOG_LEVELS:
        fail(f"--log-level must be one of {', '.join(LOG_LEVELS)}, not {log_level!r}", EXIT_USAGE)
    visible = parse_entities(entities)
    from ragctl.integrations.mcp_server import StoreTools, serve_stdio

    tools = StoreTools(store_path(store), model_config, visible, search_cache_bytes=int(search_cache_mb * 2**20))
    if visible is not None:
        present = set(tools.entity_ids())
        for entity_id in visible:
            if entity_id not in present:
                stderr.print(plain(f"warning: entity {entity_id!r} is not in {tools.store} (yet)"), soft_wrap=True)
    try:
        serve_stdio(tools, log_level)
    except KeyboardInterrupt:
        sys.stderr.flush()
        raise typer.Exit(EXIT_INTERRUPTED) from None
