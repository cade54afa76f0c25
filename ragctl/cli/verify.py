"""`ragctl verify`."""

from __future__ import annotations

from pathlib import Path

import typer

from ragctl.cli.common import EXIT_PROBLEMS, JsonOption, StoreOption, handle_errors, print_json, store_path


def register(app: typer.Typer) -> None:
    app.command("verify")(verify_command)


@handle_errors
def verify_command(
    store: Path = StoreOption,
    repair: bool = typer.Option(False, "--repair", help="Fix what can be fixed without losing indexed documents."),
    json_out: bool = JsonOption,
) -> None:
    """Check every entity: shard parses, mapping and index agree, chunk texts present."""
    from ragctl.verify import verify_store

    result = verify_store(store_path(store), repair=repair)
    if json_out:
        print_json(result)
    else:
        for entity_id, check in result["entities"].items():
            state = "ok" if check["ok"] else "PROBLEMS"
            typer.echo(
                f"{entity_id}: {state} - {check['documents']} documents, {check['vectors']} vectors"
                + (f", {check['orphans']} orphan vectors (invisible)" if check["orphans"] else "")
            )
            for problem in check["problems"]:
                typer.echo(f"  problem: {problem}")
            for action in check["repaired"]:
                typer.echo(f"  repaired: {action}")
        for problem in result.get("problems", []):
            typer.echo(f"store: problem: {problem}")
        for action in result.get("catalog", {}).get("repaired", []):
            typer.echo(f"store: repaired: {action}")
        typer.echo("store is consistent" if result["ok"] else "store has problems")
    if not result["ok"]:
        raise typer.Exit(EXIT_PROBLEMS)
