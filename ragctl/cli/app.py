"""`ragctl`: the Typer application. Commands live in one module each."""

from __future__ import annotations

import os

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
    from ragctl.cli import mcp as mcp_cli
    from ragctl.cli import serve as serve_cli
    from ragctl.cli import watch as watch_cli

    for module in (ingest, watch_cli, query, eval_cli, verify, stats, delete, migrate, bench, serve_cli, mcp_cli):
        module.register(app)


_register()


def main() -> None:
    try:
        app()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    else:
        code = 0
    _exit_now(code)


def _exit_now(code: int) -> None:
    """Leave without interpreter finalization. After a run that stopped early (Ctrl-C, a failed
    stage), an engine thread or a model-runtime thread (OpenVINO runs its callbacks on threads
    of its own, invisible to `threading`) may still be inside native code; finalizing under it
    aborts the process (SIGABRT, "exception not rethrown"). Everything the command committed is
    on disk and its output is flushed here, so exit with its code at once."""
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    main()
