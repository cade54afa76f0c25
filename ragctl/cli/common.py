"""Shared CLI plumbing: consoles, JSON output, error -> exit code mapping.

Streams: `--json` prints one JSON document on stdout; progress, logs and tables go to stderr
(`stderr` below). Without `--json`, a command's plain answer (query hits, verify / migrate /
delete report lines) is printed on stdout with `typer.echo`, never through rich.

User data (paths, error messages, entity ids) never reaches rich as markup: print it as a
`rich.text.Text` (see `plain`), or with `markup=False`.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from ragctl.errors import ConfigError, RagctlError, StorageError, UsageError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_TERMINATED = 143  # 128 + SIGTERM: stopped by `kill`, systemd or docker stop, after the same clean stop


class TermSignal:
    """SIGTERM handled like Ctrl-C while it is installed (a `with` block in the main thread):
    the run stops, commits what is already embedded, and the command exits 143 instead of 130.
    Outside the main thread (a library caller's worker thread) it does nothing. systemd counts
    143 as a failure unless the unit says `SuccessExitStatus=143` (README)."""

    def __init__(self) -> None:
        self.received = False
        self._installed = False
        self._previous: Any = None

    def __enter__(self) -> TermSignal:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_term)
            self._installed = True
        return self

    def _on_term(self, signum: int, frame: Any) -> None:
        self.received = True
        raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            import signal

            signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)

    @property
    def exit_code(self) -> int:
        return EXIT_TERMINATED if self.received else EXIT_INTERRUPTED

stderr = Console(stderr=True, highlight=False)

StoreOption = typer.Option(
    None, "--store", envvar="RAGCTL_STORE", help="Store directory [default: ./ragstore].", show_default=False
)
JsonOption = typer.Option(False, "--json", help="Print one JSON document on stdout.")
OcrOption = typer.Option(
    "auto", "--ocr", metavar="auto|off|force",
    help="Read text from page images: auto = PDF pages without a usable text layer and image files "
         "(.png .jpg .tif ...); force = every PDF page too; off = never (scans and images are skipped).",
)
OcrMaxPagesOption = typer.Option(1000, "--ocr-max-pages", min=1, help="A file with more pages to OCR fails (a scanned book: raise it).")


def ocr_options(mode: str, max_pages: int) -> Any:
    """The OcrOptions of --ocr / --ocr-max-pages; a wrong mode is a usage error (exit 2)."""
    from ragctl.parsing.ocr import OCR_MODES, OcrOptions

    if mode not in OCR_MODES:
        raise typer.BadParameter(f"{mode!r} is not one of {', '.join(OCR_MODES)}", param_hint="--ocr")
    return OcrOptions(mode=mode, max_pages=max_pages)


def store_path(store: Path | None) -> Path:
    """--store (default ./ragstore); a path that exists but is not a directory is a usage error."""
    path = store if store is not None else Path("ragstore")
    if path.exists() and not path.is_dir():
        fail(f"{path}: --store is not a directory", EXIT_USAGE)
    return path


def plain(text: object, style: str = "") -> Text:
    """User data as rich text that is shown exactly as it is (no markup, no emoji codes)."""
    return Text(str(text), style=style)


def print_json(obj: Any) -> None:
    text = json.dumps(obj, ensure_ascii=False, indent=2) + "\n"
    # A str from the OS that held undecodable bytes (surrogate escapes) cannot be written as
    # UTF-8; written as a \udcXX escape it is still valid JSON and the output never crashes.
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    sys.stdout.write(text)
    sys.stdout.flush()


def fail(message: str, code: int) -> None:
    line = Text()
    line.append("error:", style="bold red")
    line.append(f" {message}")
    stderr.print(line, soft_wrap=True)
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
