"""`ragctl eval ENTITY`: retrieval quality per search mode, on a question set or on sampled sentences."""

from __future__ import annotations

from pathlib import Path

import typer

from ragctl.cli.common import EXIT_USAGE, JsonOption, StoreOption, fail, handle_errors, print_json, store_path
from ragctl.cli.model_options import model_options
from ragctl.model_config import ModelConfig


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)


def _modes(mode: str) -> list[str]:
    from ragctl.query import MODES

    if mode == "all":
        return list(MODES)
    chosen = [m.strip() for m in mode.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in MODES]
    if not chosen or unknown:
        fail(f"--mode must be all or a comma-separated list of {', '.join(MODES)}", EXIT_USAGE)
    return chosen


@handle_errors
@model_options
def eval_command(
    entity: str = typer.Argument(..., help="Entity to evaluate."),
    questions: Path = typer.Option(
        None, "--questions", show_default=False,
        help="Question set: JSONL ({question, answers: [paths], evidence?}), a BEIR directory "
             "(queries.jsonl + qrels.tsv) or a queries.jsonl with qrels.tsv beside it. See docs/retrieval.md.",
    ),
    sample: int = typer.Option(50, "--sample", min=1, help="Without --questions: sentences sampled from the entity's chunks."),
    k: int = typer.Option(5, "-k", "--k", min=1, help="Top-k cut-off."),
    per_document: bool = typer.Option(
        True, "--per-document/--per-chunk",
        help="Hits as `ragctl query` returns them: documents (the default) or chunks (--per-chunk).",
    ),
    mode: str = typer.Option("all", "--mode", help="all, or a comma-separated list of modes (hybrid, vector, text, ...)."),
    seed: int = typer.Option(0, "--seed", help="Without --questions: sampling seed (same seed, same queries)."),
    store: Path = StoreOption,
    json_out: bool = JsonOption,
    model_config: ModelConfig = None,  # type: ignore[assignment]  # filled in by @model_options
) -> None:
    """Retrieval quality per search mode.

    With --questions FILE: doc recall@k (an answering document in the top k), MRR, nDCG@10 and
    evidence hit@k (a top-k chunk contains the question's evidence snippet).
    Without: sample sentences from the entity's own texts and report document recall@k, MRR and
    chunk hit@k (a top-k chunk contains the sentence)."""
    from ragctl.ids import validate_entity_id

    validate_entity_id(entity)
    modes = _modes(mode)
    if questions is not None:
        _questions(entity, questions, k, modes, store, json_out, model_config, per_document)
        return
    from ragctl.evaluate import evaluate, format_table

    report = evaluate(store_path(store), entity, sample=sample, k=k, modes=modes, seed=seed, config=model_config,
                      per_document=per_document)
    if json_out:
        print_json(report.to_json())
        return
    typer.echo(f"{entity}: {report.sampled} sampled sentences, k={k}, seed={seed}")
    typer.echo(format_table([report]))


def _questions(entity: str, questions: Path, k: int, modes: list[str], store: Path | None, json_out: bool,
               model_config: ModelConfig, per_document: bool = True) -> None:
    from ragctl.cli.common import stderr
    from ragctl.evaluate import evaluate_questions, format_question_table

    report = evaluate_questions(store_path(store), entity, questions, k=k, modes=modes, config=model_config,
                                per_document=per_document)
    if report.evidence_unreachable:
        stderr.print(
            f"warning: {len(report.evidence_unreachable)} evidence snippet(s) are in no chunk of their answering "
            f"document(s), so no mode can hit them: {', '.join(report.evidence_unreachable)}",
            markup=False, highlight=False, soft_wrap=True,
        )
    if json_out:
        print_json(report.to_json())
        return
    evidence = sum(1 for q in report.questions if q.evidence is not None)
    typer.echo(f"{entity}: {len(report.questions)} questions ({evidence} with evidence) from {questions}, k={k}")
    typer.echo(format_question_table([report]))
