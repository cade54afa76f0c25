"""`ragctl serve`: the upload/search HTTP service (needs the `serve` extra)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import typer

from ragctl.cli.remote_options import (
    EmbedBatchOption,
    EmbedConcurrencyOption,
    EmbedDimOption,
    EmbedKeyEnvOption,
    EmbedModelOption,
    EmbedUrlOption,
)
from ragctl.cli.common import EXIT_USAGE, StoreOption, fail, handle_errors, store_path
from ragctl.ingest.options import DEFAULT_MAX_FILE_MB, DEFAULT_MAX_TEXT_MB, DEFAULT_PARSE_TIMEOUT_S


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
def serve_command(
    store: Path = StoreOption,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (a non-loopback one needs a token or --insecure)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port."),
    token: str = typer.Option(None, "--token", envvar="RAGCTL_TOKEN", help="Bearer token with access to every entity.", show_default=False),
    tokens_file: Path = typer.Option(None, "--tokens", help='JSON file {"token": ["entity", ...] or "*"}: per-tenant tokens.', show_default=False),
    insecure: bool = typer.Option(False, "--insecure", help="Allow a non-loopback --host without any token."),
    max_upload_mb: float = typer.Option(100.0, "--max-upload-mb", min=0.001, help="Largest request body (413 beyond, counted while streaming)."),
    staging_mb: float = typer.Option(2048.0, "--staging-mb", min=0.001, help="Upload bytes held until indexed (503 + Retry-After beyond)."),
    staging_files: int = typer.Option(10_000, "--staging-files", min=1, help="Uploaded files held until indexed (503 beyond)."),
    workers: int = typer.Option(0, "--workers", "-w", min=0, help="Parse workers [default: number of cores]."),
    model: str = typer.Option(None, "--model", help="Model directory or cached name [default: packaged all-MiniLM-L6-v2]."),
    precision: str = typer.Option("auto", "--precision", help="auto|fp32|bf16."),
    device: str = typer.Option("auto", "--device", help="auto|cpu|cuda."),
    backend: str = typer.Option("auto", "--backend", help="auto|torch|openvino."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Chunks per model batch."),
    max_file_mb: float = typer.Option(DEFAULT_MAX_FILE_MB, "--max-file-mb", min=0.001, help="Skip files larger than this (as ingest)."),
    max_text_mb: float = typer.Option(DEFAULT_MAX_TEXT_MB, "--max-text-mb", min=0.001, help="Skip files with more extracted text than this (as ingest)."),
    parse_timeout: float = typer.Option(DEFAULT_PARSE_TIMEOUT_S, "--parse-timeout", min=1, help="Seconds one file may take to parse."),
    log_level: str = typer.Option("warning", "--log-level", help="uvicorn log level (critical|error|warning|info|debug)."),
    embed_url: str = EmbedUrlOption,
    embed_model: str = EmbedModelOption,
    embed_key_env: str = EmbedKeyEnvOption,
    embed_concurrency: int = EmbedConcurrencyOption,
    embed_batch: int = EmbedBatchOption,
    embed_dim: int = EmbedDimOption,
) -> None:
    """Serve the store over HTTP: upload files (jobs), follow jobs, list, delete, search."""
    try:
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401
        import uvicorn
    except ImportError as exc:
        fail(f"ragctl serve needs the serve extra: pip install -c constraints.txt -e '.[serve]' ({exc.name} is missing)", EXIT_USAGE)
    from ragctl.ingest.options import MB, Limits
    from ragctl.runtimes.remote import settings_from
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
        workers=workers, model=model, precision=precision, device=device, backend=backend, batch_size=batch_size,
        limits=Limits.from_mb(max_file_mb, max_text_mb, parse_timeout),
        remote=settings_from(embed_url, embed_model, embed_key_env, embed_concurrency, embed_batch, embed_dim),
    )
    from ragctl.serve.app import create_app

    app = create_app(config)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=log_level in ("info", "debug"),
                timeout_graceful_shutdown=30, server_header=False)
