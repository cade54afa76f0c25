"""`ragctl stats`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ragctl.cli.common import JsonOption, StoreOption, handle_errors, plain, print_json, stderr, store_path


def register(app: typer.Typer) -> None:
    app.command("stats")(stats_command)


@handle_errors
def stats_command(store: Path = StoreOption, json_out: bool = JsonOption) -> None:
    """Documents, chunks, bytes on disk, last ingest and model, per entity (table on stderr)."""
    from ragctl.stats import store_stats

    result = store_stats(store_path(store))
    unreadable = {e: row["error"] for e, row in result["entities"].items() if row["error"]}
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
    for entity_id, error in unreadable.items():
        stderr.print(plain(f"error: entity {entity_id!r} cannot be read: {error} (see `ragctl verify`)"), soft_wrap=True)
    if unreadable:
        raise typer.Exit(1)
