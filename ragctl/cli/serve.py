"""`ragctl serve`: the upload/search HTTP service (needs the `serve` extra)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import typer

from ragctl.cli.common import (
    EXIT_USAGE,
    OcrMaxPagesOption,
    OcrOption,
    StoreOption,
    fail,
    handle_errors,
    ocr_options,
    plain,
    stderr,
    store_path,
)
from ragctl.cli.model_options import model_options
from ragctl.ingest.options import DEFAULT_MAX_FILE_MB, DEFAULT_MAX_TEXT_MB, DEFAULT_PARSE_TIMEOUT_S
from ragctl.model_config import ModelConfig


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@handle_errors
@model_options
def serve_command(
    store: Path = StoreOption,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (a non-loopback one needs a token or --insecure)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port."),
    token: str = typer.Option(None, "--token", envvar="RAGCTL_TOKEN", help="Bearer token with access to every entity.", show_default=False),
    tokens_file: Path = typer.Option(None, "--tokens", help='JSON file {"token": ["entity", ...] or "*"}: per-tenant tokens.', show_default=False),
    insecure: bool = typer.Option(False, "--insecure", help="Allow a non-loopback --host without any token."),
    max_upload_mb: float = typer.Option(100.0, "--max-upload-mb", min=0.001, help="Largest request body (413 beyond, counted while streaming)."),
    staging_mb: float = typer.Option(2048.0, "--staging-mb", min=0.001, help="Upload bytes held until indexed (503 + Retry-After beyond)."),
    search_cache_mb: float = typer.Option(1024.0, "--search-cache-mb", min=1, help="Memory for entities kept warm for search, weighed by their vectors (least recently searched dropped first)."),
    staging_files: int = typer.Option(10_000, "--staging-files", min=1, help="Uploaded files held until indexed (503 beyond)."),
    workers: int = typer.Option(0, "--workers", "-w", min=0, help="Parse workers [default: number of cores]."),
    max_file_mb: float = typer.Option(DEFAULT_MAX_FILE_MB, "--max-file-mb", min=0.001, help="Skip files larger than this (as ingest)."),
    max_text_mb: float = typer.Option(DEFAULT_MAX_TEXT_MB, "--max-text-mb", min=0.001, help="Skip files with more extracted text than this (as ingest)."),
    parse_timeout: float = typer.Option(DEFAULT_PARSE_TIMEOUT_S, "--parse-timeout", min=1, help="Seconds one file may take to parse (with OCR: each page)."),
    ocr: str = OcrOption,
    ocr_max_pages: int = OcrMaxPagesOption,
    log_level: str = typer.Option("warning", "--log-level", help="uvicorn log level (critical|error|warning|info|debug)."),
    model_config: ModelConfig = None,  # type: ignore[assignment]  # filled in by @model_options
) -> None:
    """Serve the store over HTTP: upload files (jobs), follow jobs, list, delete, search."""
    try:
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401
        import uvicorn
    except ImportError as exc:
        fail(f"ragctl serve needs the serve extra: pip install -c constraints.txt -e '.[serve]' ({exc.name} is missing)", EXIT_USAGE)
    from ragctl.ingest.options import MB, Limits
    from ragctl.serve.config import ServeConfig, load_tokens_file

    tokens = load_tokens_file(tokens_file) if tokens_file is not None else {}
    if token:
        if len(token) < 8:
            fail("--token must be at least 8 characters", EXIT_USAGE)
        tokens[token] = None
    if not tokens and not is_loopback(host) and not insecure:
        fail(f"refusing to serve on {host} without a token: give --token/--tokens, or --insecure", EXIT_USAGE)
    config = ServeConfig(
        store=store_path(store).resolve(), host=host, port=port, tokens=tokens,
        max_upload_bytes=int(max_upload_mb * MB), staging_bytes=int(staging_mb * MB), staging_files=staging_files,
        search_cache_bytes=int(search_cache_mb * MB),
        workers=workers, limits=Limits.from_mb(max_file_mb, max_text_mb, parse_timeout, ocr_options(ocr, ocr_max_pages)),
        model=model_config,
    )
    from ragctl.serve.app import create_app
    from ragctl.serve.guard import GuardedH11Protocol

    app = create_app(config)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    shown_host = f"[{host}]" if ":" in host else host
    stderr.print(plain(f"ragctl serve: {config.store} on http://{shown_host}:{port}; Ctrl-C or SIGTERM stops it "
                       "(uploads not yet indexed stay staged and resume at the next start)"), soft_wrap=True)
    browse_host = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, shown_host)  # a wildcard bind: this machine
    sign_in = "sign in with your token" if tokens else "no token needed"
    stderr.print(plain(f"web console: http://{browse_host}:{port}/ui/ ({sign_in})"), soft_wrap=True)
    # Slow or hostile clients (docs/api.md "Hostile clients"): heads within 10 s (GuardedH11Protocol),
    # at most 16 KB of head, 1,000 connections at once, idle keep-alive closed after 5 s.
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=log_level in ("info", "debug"),
                timeout_graceful_shutdown=30, server_header=False, http=GuardedH11Protocol,
                h11_max_incomplete_event_size=16 * 1024, limit_concurrency=1000, timeout_keep_alive=5)
