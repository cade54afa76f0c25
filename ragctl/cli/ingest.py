"""`ragctl ingest ROOT`."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import typer

from ragctl.cli.common import (
    EXIT_PROBLEMS,
    JsonOption,
    OcrMaxPagesOption,
    OcrOption,
    StoreOption,
    TermSignal,
    handle_errors,
    ocr_options,
    print_json,
    stderr,
    store_path,
)
from ragctl.cli.model_options import model_options
from ragctl.ingest.options import DEFAULT_MAX_FILE_MB, DEFAULT_MAX_TEXT_MB, DEFAULT_PARSE_TIMEOUT_S
from ragctl.model_config import ModelConfig


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest_command)


# What the command runs: (sources, options, renderer) -> IngestReport; None: `ingest`.
# `ragctl watch` (cli/watch.py) runs this same command, with every option of ingest, and its engine.
ENGINE: ContextVar[Callable[..., Any] | None] = ContextVar("ragctl_ingest_engine", default=None)


@handle_errors
@model_options
def ingest_command(
    root: Path = typer.Argument(None, help="Directory whose immediate subdirectories are entities.", show_default=False),
    entities: list[str] = typer.Option(
        None, "--entities", "-e", help="Entities to ingest: 'a,b' (subdirectories of ROOT) or 'ID=PATH'. Repeatable."
    ),
    store: Path = StoreOption,
    workers: int = typer.Option(0, "--workers", "-w", min=0, help="Parse workers [default: number of cores]."),
    max_file_mb: float = typer.Option(DEFAULT_MAX_FILE_MB, "--max-file-mb", min=0.001, help="Skip files larger than this."),
    max_text_mb: float = typer.Option(DEFAULT_MAX_TEXT_MB, "--max-text-mb", min=0.001, help="Skip files with more extracted text than this (zip-based documents: 2x this uncompressed)."),
    parse_timeout: float = typer.Option(DEFAULT_PARSE_TIMEOUT_S, "--parse-timeout", min=1, help="Seconds one file may take to parse before its worker is killed and the file failed (with OCR: each page)."),
    ocr: str = OcrOption,
    ocr_max_pages: int = OcrMaxPagesOption,
    prune: bool = typer.Option(False, "--prune", help="Remove documents whose file left the tree (default: report them as stale)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would change; touch nothing."),
    rehash: bool = typer.Option(False, "--rehash", help="Hash every file even when size and mtime are unchanged."),
    reindex: bool = typer.Option(False, "--reindex", help="Re-chunk and re-embed documents indexed by an older chunker (adds titles and sections to their chunks), and PDFs and images read with another --ocr mode or before OCR existed; resumable."),
    no_sharding: bool = typer.Option(False, "--no-sharding", help="Create a new store with one monolithic mapping file (legacy layout)."),
    ray: str = typer.Option(None, "--ray", help="Parse, chunk and embed on Ray: local (a cluster on this machine), auto (the running cluster) or HOST:PORT. Needs pip install -e '.[ray]'."),
    ray_actors: int = typer.Option(0, "--ray-actors", min=0, help="Ray actors [default: cluster CPUs minus one, or cluster GPUs / --ray-gpus-per-actor]."),
    ray_gpus_per_actor: float = typer.Option(0.0, "--ray-gpus-per-actor", min=0, help="GPUs each Ray actor reserves (0: CPU actors)."),
    shared_fs: bool = typer.Option(False, "--shared-fs", help="With --ray: workers read files by path (same paths on every node) instead of bytes sent by this process."),
    index: str = typer.Option(None, "--index", help="Vector index per entity: auto|flat|hnsw|ivf (auto: exact flat search, approximate IVF from 100,000 vectors) [default: what the entity recorded, else auto]."),
    json_out: bool = JsonOption,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or summary on stderr."),
    model_config: ModelConfig = None,  # type: ignore[assignment]  # filled in by @model_options
) -> None:
    """Parse, chunk, embed and index every file of each entity; re-runs only do what changed."""
    from ragctl.storage.segments import INDEX_KINDS

    if index is not None and index not in INDEX_KINDS:
        raise typer.BadParameter(f"{index!r} is not one of {', '.join(INDEX_KINDS)}", param_hint="--index")
    from ragctl.cli.progress import ProgressRenderer, summary_table
    from ragctl.discovery import discover_entities, skipped_entity_dirs
    from ragctl.ingest import IngestOptions, Limits, ingest

    sources = discover_entities(root, entities)  # validates ids before anything touches disk
    # a walk of ROOT skips subdirectories whose names cannot be entity ids: say so, once each
    skipped_dirs = skipped_entity_dirs(root) if root is not None and not entities else []
    if not quiet:
        for skipped in skipped_dirs:
            stderr.print(f"warning: skipped directory {skipped['path']}: {skipped['reason']}", markup=False, soft_wrap=True)
    options = IngestOptions(
        store=store_path(store),
        workers=workers,
        model=model_config,
        limits=Limits.from_mb(max_file_mb, max_text_mb, parse_timeout, ocr_options(ocr, ocr_max_pages)),
        sharding=False if no_sharding else None,
        prune=prune,
        dry_run=dry_run,
        rehash=rehash,
        reindex=reindex,
        ray=ray,
        ray_actors=ray_actors,
        ray_gpus_per_actor=ray_gpus_per_actor,
        shared_fs=shared_fs,
        index=index,
    )
    with TermSignal() as term:
        try:
            # stdout is --json's alone: what a runtime prints meanwhile (Ray's "(raylet) ..." lines
            # when actors stop) goes to stderr
            with ProgressRenderer(stderr, quiet=quiet) as renderer, \
                    contextlib.redirect_stdout(sys.stderr) if json_out else contextlib.nullcontext():
                report = (ENGINE.get() or ingest)(sources, options, renderer)
        except KeyboardInterrupt:  # outside the run's own clean stop (loading, connecting, tearing down)
            stderr.print("interrupted: whatever was committed stays; re-run to finish", markup=False)
            raise typer.Exit(term.exit_code) from None
    result = report.to_json()
    result["skipped_directories"] = skipped_dirs
    if not quiet:
        stderr.print(summary_table(result))
        if report.dry_run:  # what the run would do, file by file (failures and skips are listed as they happen)
            verbs = {"indexed": "would index", "updated": "would update", "moved": "would move"}
            for change in result["planned_changes"]:
                stderr.print(f"{verbs[change['action']]} {change['entity']}/{change['path']}", markup=False, soft_wrap=True)
            for gone in result["pruned_files"]:
                stderr.print(f"would prune {gone['entity']}/{gone['path']}", markup=False, soft_wrap=True)
        rate = report.total_chunks / report.seconds if report.seconds else 0.0
        model_info = report.model
        stderr.print(
            f"{report.total_chunks} chunks in {report.seconds:.1f}s ({rate:.1f} chunks/s); model "
            f"{describe_model(model_info)}; {report.parse_workers} parse worker(s); {len(report.failures)} failed",
            markup=False,
        )
        for note in (model_info.get("backend_note"), model_info.get("precision_note")):
            if note:  # why auto did not take the fastest runtime (one line each)
                stderr.print(f"note: {note}", markup=False, soft_wrap=True)
        if report.interrupted:
            stderr.print("interrupted: everything counted above is committed; re-run to finish", markup=False)
    if report.error:  # shown even with --quiet: the run stopped early
        stderr.print(f"error: {report.error}; what is counted above is committed", markup=False, soft_wrap=True)
    if json_out:
        print_json(result)
    if report.interrupted:
        raise typer.Exit(term.exit_code)
    if report.any_failed:
        raise typer.Exit(EXIT_PROBLEMS)


def describe_model(model: dict) -> str:
    """`all-MiniLM-L6-v2 openvino int8 on cpu (openvino 2026.4.1)`; a run that loaded no model
    (nothing to embed, a dry run) knows only the name: `all-MiniLM-L6-v2 (not loaded: nothing
    to embed)`."""
    name = str(model.get("name"))
    if not model.get("backend"):
        return f"{name} (not loaded: nothing to embed)"
    runtime = f" ({model['runtime']})" if model.get("runtime") else ""
    return f"{name} {model['backend']} {model.get('precision', '')} on {model.get('device', 'cpu')}{runtime}"
