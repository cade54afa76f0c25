"""`ragctl bench`: one document at a time (the original design) vs the engine vs the bare model.

The benchmark code lives in `ragctl.bench`, imported only when the command runs. --json on
stdout; the result table, phases and warnings on stderr."""

from __future__ import annotations

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
from ragctl.cli.common import EXIT_PROBLEMS, JsonOption, fail, handle_errors, plain, print_json, stderr


def register(app: typer.Typer) -> None:
    app.command("bench")(bench_command)


@handle_errors
def bench_command(
    entities: int = typer.Option(5, "--entities", "-n", min=1, help="Entity directories in the generated corpus."),
    docs: int = typer.Option(20, "--docs", "-m", min=1, help="Documents per entity in the generated corpus."),
    workers: int = typer.Option(0, "--workers", "-w", min=0, help="Workers for the parallel run [default: number of cores]."),
    corpus: Path = typer.Option(
        None, "--corpus", help="Benchmark this tree (laid out like ingest's ROOT) instead of a generated one.", show_default=False
    ),
    json_out: bool = JsonOption,
    precision: str = typer.Option("auto", "--precision", help="auto|fp32|bf16|int8 (as ingest)."),
    backend: str = typer.Option("auto", "--backend", help="auto|torch|openvino (as ingest); the model limit is measured with the same backend."),
    model: str = typer.Option(None, "--model", help="Model directory or cached name [default: packaged all-MiniLM-L6-v2]."),
    seed: int = typer.Option(0, "--seed", help="Seed of the generated corpus (same seed, same bytes)."),
    keep: Path = typer.Option(
        None, "--keep", help="Keep the corpus and both stores in this directory (default: a temp dir, removed).", show_default=False
    ),
    repeat: int = typer.Option(1, "--repeat", min=1, help="Run each measurement R times and keep the best (noisy machines)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Chunks per model batch (as ingest)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress on stderr."),
    embed_url: str = EmbedUrlOption,
    embed_model: str = EmbedModelOption,
    embed_key_env: str = EmbedKeyEnvOption,
    embed_concurrency: int = EmbedConcurrencyOption,
    embed_batch: int = EmbedBatchOption,
    embed_dim: int = EmbedDimOption,
) -> None:
    """Time one-document-at-a-time ingest against the parallel pipeline on the same corpus.

    Both runs share one loaded model and write fresh stores; the stores must agree (same
    documents and chunk counts per entity) or the command exits 1. Also measures the bare
    model on the same chunks: limit ratio = pipeline chunks/s / model chunks/s.
    """
    from ragctl import events as ev
    from ragctl.bench import BenchConfig, BenchMismatch, format_table, run_bench
    from ragctl.runtimes.remote import settings_from

    def progress(event: ev.Event) -> None:
        if not quiet and isinstance(event, ev.Phase):
            stderr.print(plain(event.message, "dim"), soft_wrap=True)

    config = BenchConfig(
        entities=entities, docs=docs, workers=workers, corpus=corpus, precision=precision, backend=backend, model=model,
        seed=seed, keep=keep, repeat=repeat, batch_size=batch_size,
        remote=settings_from(embed_url, embed_model, embed_key_env, embed_concurrency, embed_batch, embed_dim),
    )
    try:
        result = run_bench(config, progress)
    except BenchMismatch as exc:
        fail(str(exc), EXIT_PROBLEMS)
        return
    if json_out:
        print_json(result.to_json())
    else:
        stderr.print(plain(format_table(result)), soft_wrap=True)  # a table: stderr, like every table
    if not quiet:
        for warning in result.warnings:
            stderr.print(plain(f"warning: {warning}"), soft_wrap=True)
