"""`ragctl eval ENTITY`: known-item retrieval quality per search mode."""

from __future__ import annotations

from pathlib import Path

import typer

from ragctl.cli.common import EXIT_USAGE, JsonOption, StoreOption, fail, handle_errors, print_json, store_path


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)


@handle_errors
def eval_command(
    entity: str = typer.Argument(..., help="Entity to evaluate."),
    sample: int = typer.Option(50, "--sample", min=1, help="Sentences sampled from the entity's chunks."),
    k: int = typer.Option(5, "-k", min=1, help="Top-k cut-off."),
    mode: str = typer.Option("all", "--mode", help="all, hybrid, vector or text."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed (same seed, same queries)."),
    store: Path = StoreOption,
    model: str = typer.Option(None, "--model", help="Model override (must be the entity's model)."),
    json_out: bool = JsonOption,
) -> None:
    """Sample sentences from the entity's own texts, query them, and report per mode:
    document recall@k, MRR and chunk hit@k (a top-k chunk contains the sentence)."""
    from ragctl.evaluate import evaluate, format_table
    from ragctl.ids import validate_entity_id
    from ragctl.query import MODES

    validate_entity_id(entity)
    if mode != "all" and mode not in MODES:
        fail(f"--mode must be all or one of {', '.join(MODES)}", EXIT_USAGE)
    modes = list(MODES) if mode == "all" else [mode]
    report = evaluate(store_path(store), entity, sample=sample, k=k, modes=modes, seed=seed, model=model)
    if json_out:
        print_json(report.to_json())
        return
    typer.echo(f"{entity}: {report.sampled} sampled sentences, k={k}, seed={seed}")
    typer.echo(format_table([report]))
