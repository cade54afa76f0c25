"""`ragctl bench`: one document at a time (the original design) vs the engine vs the bare model.

The benchmark code lives in `ragctl.bench`, imported only when the command runs. --json on
stdout; the result table, phases and warnings on stderr."""

from __future__ import annotations

from pathlib import Path

import typer

from ragctl.cli.common import EXIT_PROBLEMS, JsonOption, fail, handle_errors, plain, print_json, stderr
from ragctl.cli.model_options import model_options
from ragctl.model_config import ModelConfig


def register(app: typer.Typer) -> None:
    app.command("bench")(bench_command)


@handle_errors
@model_options
def bench_command(
    entities: int = typer.Option(5, "--entities", "-n", min=1, help="Entity directories in the generated corpus."),
    docs: int = typer.Option(20, "--docs", "-m", min=1, help="Documents per entity in the generated corpus."),
    workers: int = typer.Option(0, "--workers", "-w", min=0, help="Workers for the parallel run [default: number of cores]."),
    corpus: Path = typer.Option(
        None, "--corpus", help="Benchmark this tree (laid out like ingest's ROOT) instead of a generated one.", show_default=False
    ),
    json_out: bool = JsonOption,
    seed: int = typer.Option(0, "--seed", help="Seed of the generated corpus (same seed, same bytes)."),
    keep: Path = typer.Option(
        None, "--keep", help="Keep the corpus and both stores in this directory (default: a temp dir, removed).", show_default=False
    ),
    repeat: int = typer.Option(1, "--repeat", min=1, help="Run each measurement R times and keep the best (noisy machines)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress on stderr."),
    model_config: ModelConfig = None,  # type: ignore[assignment]  # filled in by @model_options
) -> None:
    """Time one-document-at-a-time ingest against the parallel pipeline on the same corpus.

    Both runs share one loaded model and write fresh stores; the stores must agree (same
    documents and chunk counts per entity) or the command exits 1. Also measures the bare
    model on the same chunks: limit ratio = pipeline chunks/s / model chunks/s.
    """
    from ragctl import events as ev
    from ragctl.bench import BenchConfig, BenchMismatch, format_table, run_bench

    def progress(event: ev.Event) -> None:
        if not quiet and isinstance(event, ev.Phase):
            stderr.print(plain(event.message, "dim"), soft_wrap=True)

    config = BenchConfig(
        entities=entities, docs=docs, workers=workers, corpus=corpus, model=model_config, seed=seed, keep=keep, repeat=repeat,
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
