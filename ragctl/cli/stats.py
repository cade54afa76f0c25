"""`ragctl stats`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ragctl.cli.common import JsonOption, StoreOption, handle_errors, plain, print_json, stderr, store_path


def register(app: typer.Typer) -> None:
    app.command("stats")(stats_command)


TABLE_ROWS = 100  # the table's default page: a store of 100,000 tenants is not a table to print


@handle_errors
def stats_command(
    store: Path = StoreOption,
    json_out: bool = JsonOption,
    filter_: str = typer.Option("", "--filter", "-q", help="Only entities whose id contains this (case-insensitive)."),
    offset: int = typer.Option(0, "--offset", min=0, help="Skip this many entities (sorted by id)."),
    limit: int = typer.Option(None, "--limit", min=1,
                              help=f"At most this many entities (default: all with --json, {TABLE_ROWS} in the table)."),
) -> None:
    """Documents, chunks, bytes on disk, last ingest and model, per entity (table on stderr),
    from the store catalog. Totals cover every matching entity, not just the rows shown."""
    from ragctl.stats import store_stats, unreadable_entities

    if limit is None and not json_out:
        limit = TABLE_ROWS
    result = store_stats(store_path(store), offset=offset, limit=limit, q=filter_)
    unreadable = unreadable_entities(store_path(store), filter_)  # on this page or not
    if json_out:
        print_json(result)
        if unreadable:
            raise typer.Exit(1)
        return
    table = Table(title=plain(f"Store {store_path(store)}"))
    for column in ("entity", "documents", "chunks", "bytes", "last ingest", "model"):
        text = column in ("entity", "model", "last ingest")
        # a narrow console folds text onto a second line rather than cutting it with "…"
        table.add_column(column, justify="left" if text else "right", overflow="fold" if text else "ellipsis",
                         no_wrap=not text)
    for entity_id, row in result["entities"].items():
        table.add_row(
            plain(entity_id), str(row["documents"]), str(row["chunks"]), f"{row['bytes']:,}",
            plain(row["last_ingest"]), plain(row["model"]),
        )
    t = result["totals"]
    table.add_row(plain(f"{t['entities']} entities", "bold"), str(t["documents"]), str(t["chunks"]), f"{t['bytes']:,}", "", "")
    stderr.print(table)  # tables go to stderr, terminal or not (stdout is for --json)
    shown = len(result["entities"])
    if shown < t["entities"]:
        first = offset + 1 if shown else offset
        stderr.print(plain(f"entities {first:,}-{offset + shown:,} of {t['entities']:,} shown "
                           "(--offset/--limit/--filter page them; --json lists all)"), soft_wrap=True)
    for entity_id, error in unreadable.items():
        stderr.print(plain(f"error: entity {entity_id!r} cannot be read: {error} (see `ragctl verify`)"), soft_wrap=True)
    if unreadable:
        raise typer.Exit(1)
