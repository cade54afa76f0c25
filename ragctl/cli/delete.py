"""`ragctl delete ENTITY [--doc PATH_OR_ID]`."""

from __future__ import annotations

from pathlib import Path

import typer

from ragctl.cli.common import EXIT_USAGE, StoreOption, fail, handle_errors, store_path


def register(app: typer.Typer) -> None:
    app.command("delete")(delete_command)


@handle_errors
def delete_command(
    entity: str = typer.Argument(..., help="Entity to delete (or to delete a document from)."),
    doc: str = typer.Option(None, "--doc", help="Delete only this document (its path or doc_id)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    store: Path = StoreOption,
) -> None:
    """Remove one document, or a whole entity with every file of it, from the store."""
    from ragctl.manager import delete_document, delete_entity
    from ragctl.storage.entity import open_entity

    root = store_path(store)
    open_entity(root, entity)  # validates the id; unknown entity -> exit 2
    what = f"document {doc!r} of entity {entity!r}" if doc else f"entity {entity!r} (index, mapping, chunk texts)"
    if not yes and not _confirmed(f"Delete {what} from {root}?"):
        fail("aborted: nothing deleted (--yes skips the question)", EXIT_USAGE)
    if doc:
        path = delete_document(root, entity, doc)
        typer.echo(f"deleted {entity}/{path}")
    else:
        delete_entity(root, entity)
        typer.echo(f"deleted entity {entity}")


def _confirmed(question: str) -> bool:
    """The answer, or False where there is none to give (stdin closed or not a terminal that
    answers: Click would print "Aborted!" and exit 1)."""
    import click

    try:
        return typer.confirm(question, default=False, err=True)
    except (click.exceptions.Abort, typer.Abort) as exc:  # typer's own Abort in recent releases
        if isinstance(exc.__context__, KeyboardInterrupt):  # Ctrl-C at the prompt: exit 130 as everywhere
            typer.echo("", err=True)
            raise typer.Exit(130) from None
        return False
