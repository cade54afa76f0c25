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
    from ragctl.cli import serve as serve_cli

    for module in (ingest, query, eval_cli, verify, stats, delete, migrate, bench, serve_cli):
        module.register(app)


_register()


def main() -> None:
    try:
        app()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        _exit_past_stragglers(code)
        raise
    _exit_past_stragglers(0)


def _exit_past_stragglers(code: int) -> None:
    """After a run that stopped early (Ctrl-C, a failed stage), an engine thread, or a thread
    of the model runtime, may still be inside a native call (an encode, a model compile) that
    cannot be interrupted; letting the interpreter finalize under it aborts the process
    (SIGABRT, "exception not rethrown"). Everything the run committed is on disk and the output
    is written and flushed, so leave at once with the command's exit code."""
    import sys
    import threading

    main_thread = threading.main_thread()
    if any(t is not main_thread and t.is_alive() for t in threading.enumerate()):  # engine or runtime threads
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    main()
