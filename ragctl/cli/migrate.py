"""`ragctl migrate-to-sharded`."""

from __future__ import annotations

from pathlib import Path

import typer

from ragctl.cli.common import JsonOption, StoreOption, handle_errors, print_json, stderr, store_path


def register(app: typer.Typer) -> None:
    app.command("migrate-to-sharded")(migrate_command)


@handle_errors
def migrate_command(
    store: Path = StoreOption,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would move (per entity, conflicts); change nothing."),
    json_out: bool = JsonOption,
) -> None:
    """Move the monolithic doc_id_name_mapping.json into per-entity shards (safe to re-run)."""
    from ragctl.migrate import migrate_to_sharded

    report = migrate_to_sharded(store_path(store), dry_run=dry_run)
    if json_out:
        print_json(report.to_json())
        return
    prefix = "would migrate" if dry_run else "migrated"
    if not report.legacy_found:
        typer.echo(f"{report.store}: no legacy mapping file; nothing to migrate (mapping mode: {report.mode_after})")
        return
    for entity_id, row in sorted(report.per_entity.items()):
        typer.echo(
            f"{entity_id}: {row.records} records ({row.new} new, {row.same} already in the shard"
            + (f", {row.conflicts} conflicts: shard kept" if row.conflicts else "")
            + ")"
        )
    if report.conflict_ids:
        more = "" if report.conflicts <= len(report.conflict_ids) else f" (first {len(report.conflict_ids)} of {report.conflicts})"
        typer.echo(f"conflicting doc_ids, shard record kept{more}: {', '.join(report.conflict_ids)}")
    if report.residual:
        typer.echo(
            f"{report.residual} records without a valid entity id stay in doc_id_name_mapping.json: "
            + ", ".join(report.residual_ids)
            + (" ..." if report.residual > len(report.residual_ids) else "")
        )
    if report.nothing_to_migrate:
        typer.echo("nothing to migrate")
    else:
        typer.echo(
            f"{prefix} {report.migrated} records into {report.entities} entity shards, "
            f"{report.conflicts} conflicts, {report.residual} residual"
            + (f"; backup: {report.backup}" if report.backup else "")
            + (" (dry run: nothing changed)" if dry_run else "")
        )
    stderr.print(f"{report.seconds:.2f}s", markup=False)
