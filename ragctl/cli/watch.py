"""`ragctl watch ROOT`: the initial ingest, then the store follows the tree's changes until Ctrl-C.

It takes every option of `ragctl ingest`, because it is the same command (cli/ingest.py) run with
the watch engine (ragctl/ingest/watch.py) in place of one ingest, plus `--debounce-ms`.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import typer

from ragctl.cli import ingest as ingest_cli

DEFAULT_DEBOUNCE_MS = 500  # = ragctl.ingest.watch.DEFAULT_DEBOUNCE_MS (imported lazily: `--help` stays instant)


def register(app: typer.Typer) -> None:
    app.command("watch")(watch_command)


def watch_command(**params: Any) -> None:
    debounce_ms: int = params.pop("debounce_ms")
    discover_root: Path | None = params["root"] if not params.get("entities") else None

    def engine(sources: list[Any], options: Any, renderer: Any) -> Any:
        from ragctl.ingest.watch import BatchStarted, watch

        def sink(event: Any) -> None:
            if isinstance(event, BatchStarted):
                renderer.restart_entity(event.entity_id)  # each batch: the entity's bar from zero
            else:
                renderer(event)

        return watch(sources, options, sink, discover_root=discover_root, debounce_ms=debounce_ms)

    token = ingest_cli.ENGINE.set(engine)
    try:
        ingest_cli.ingest_command(**params)
    finally:
        ingest_cli.ENGINE.reset(token)


_DEBOUNCE = inspect.Parameter(
    "debounce_ms", inspect.Parameter.KEYWORD_ONLY, annotation=int,
    default=typer.Option(
        DEFAULT_DEBOUNCE_MS, "--debounce-ms", min=1,
        help="Quiet period: a change is indexed once its entity has had no event for this long "
             "(at most 10 quiet periods or 5 s later) and the file's size and mtime have settled.",
    ),
)
_INGEST = inspect.signature(ingest_cli.ingest_command)
_PARAMS = [*_INGEST.parameters.values(), _DEBOUNCE]
watch_command.__signature__ = _INGEST.replace(parameters=_PARAMS)  # type: ignore[attr-defined]
watch_command.__annotations__ = {p.name: p.annotation for p in _PARAMS} | {"return": None}
watch_command.__doc__ = (
    "Ingest, then keep the store in sync while files change (the options of ingest, but --ray); "
    "Ctrl-C commits what is embedded and stops (exit 130)."
)
