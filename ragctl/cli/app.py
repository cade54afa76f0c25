"""`ragctl`: the Typer application. Commands live in one module each."""

from __future__ import annotations

import typer

from ragctl import __version__

app = typer.Typer(
    name="ragctl",
    help="Bulk-index document trees into per-entity (per-tenant) FAISS indexes, and query them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ragctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """ragctl: per-entity vector indexes from directory trees."""


def _register() -> None:
    from ragctl.cli import bench, delete, ingest, migrate, query, stats, verify
    from ragctl.cli import eval as eval_cli
    from ragctl.cli import serve as serve_cli

    for module in (ingest, query, eval_cli, verify, stats, delete, migrate, bench, serve_cli):
        module.register(app)


_register()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
