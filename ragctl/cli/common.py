"""Shared CLI plumbing: consoles, JSON output, error -> exit code mapping."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console

from ragctl.errors import ConfigError, RagctlError, StorageError, UsageError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

stderr = Console(stderr=True, highlight=False)

StoreOption = typer.Option(
    None, "--store", envvar="RAGCTL_STORE", help="Store directory [default: ./ragstore].", show_default=False
)
JsonOption = typer.Option(False, "--json", help="Print one JSON document on stdout.")


def store_path(store: Path | None) -> Path:
    return store if store is not None else Path("ragstore")


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, indent=2) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int) -> None:
    stderr.print(f"[bold red]error:[/] {message}", markup=True, soft_wrap=True)
    raise typer.Exit(code)


def handle_errors(func: F) -> F:
    """Library errors become one-line messages and the documented exit codes."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (UsageError, ConfigError) as exc:
            fail(str(exc), EXIT_USAGE)
        except StorageError as exc:
            fail(str(exc), EXIT_PROBLEMS)
        except RagctlError as exc:
            fail(str(exc), EXIT_PROBLEMS)

    return wrapper  # type: ignore[return-value]
