"""The model options, declared once for every command that embeds (ingest, watch, query, eval,
serve, bench, mcp): `--model --backend --precision --device --batch-size` and the `--embed-*`
options of a remote OpenAI-compatible embedding service.

A command takes them by decorating itself with `@model_options` and declaring a parameter
`model_config: ModelConfig`; the decorator adds the options to the command's signature (what
Typer reads), builds one validated `ModelConfig` from them and passes it in. Each `--embed-*`
option has a RAGCTL_EMBED_* environment variable; the API key itself is only ever read from the
environment.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from ragctl.model_config import DEFAULT_BATCH_SIZE, OPENVINO_BATCH_SIZE, ModelConfig

F = TypeVar("F", bound=Callable[..., Any])

PANEL = "Model"
REMOTE_PANEL = "Remote embedding service"
_OPTIONS: dict[str, tuple[Any, Any]] = {
    "model": (str, typer.Option(
        None, "--model", show_default=False, rich_help_panel=PANEL,
        help="Model directory or locally cached name [default: the entity's recorded model, else the packaged all-MiniLM-L6-v2].",
    )),
    "backend": (str, typer.Option(
        "auto", "--backend", rich_help_panel=PANEL,
        help="auto|torch|openvino (auto: the fastest runtime that passes its quality gate here; see docs/runtimes.md).",
    )),
    "precision": (str, typer.Option(
        "auto", "--precision", rich_help_panel=PANEL,
        help="auto|fp32|bf16|int8 (auto: OpenVINO int8 behind its quality gate where it holds, else bf16 where the CPU has it natively, else fp32).",
    )),
    "device": (str, typer.Option("auto", "--device", rich_help_panel=PANEL, help="auto|cpu|cuda.")),
    "batch_size": (int, typer.Option(None, "--batch-size", min=1, rich_help_panel=PANEL, show_default=False,
                   help=f"Chunks per model batch [default: the runtime's own: {OPENVINO_BATCH_SIZE} for OpenVINO, {DEFAULT_BATCH_SIZE} for torch].")),
    "embed_url": (str, typer.Option(
        None, "--embed-url", rich_help_panel=REMOTE_PANEL, envvar="RAGCTL_EMBED_URL", show_default=False,
        help="Base URL of an OpenAI-compatible embedding service (http://host:8080/v1); POSTs to {URL}/embeddings.",
    )),
    "embed_model": (str, typer.Option(
        None, "--embed-model", rich_help_panel=REMOTE_PANEL, envvar="RAGCTL_EMBED_MODEL", show_default=False,
        help="Model name sent to the service [default: the --model name]; it must use --model's tokenizer.",
    )),
    "embed_key_env": (str, typer.Option(
        None, "--embed-key-env", rich_help_panel=REMOTE_PANEL, envvar="RAGCTL_EMBED_KEY_ENV", show_default=False,
        help="Environment variable holding the API key [default: RAGCTL_EMBED_KEY, if set]. Never stored.",
    )),
    "embed_concurrency": (int, typer.Option(
        None, "--embed-concurrency", rich_help_panel=REMOTE_PANEL, envvar="RAGCTL_EMBED_CONCURRENCY", min=1, show_default=False,
        help="Requests in flight at once [default: 4].",
    )),
    "embed_batch": (int, typer.Option(
        None, "--embed-batch", rich_help_panel=REMOTE_PANEL, envvar="RAGCTL_EMBED_BATCH", min=1, show_default=False,
        help="Texts per request [default: 32].",
    )),
    "embed_dim": (int, typer.Option(
        None, "--embed-dim", rich_help_panel=REMOTE_PANEL, envvar="RAGCTL_EMBED_DIM", min=1, show_default=False,
        help="Dimension the service returns [default: --model's]; other dimensions are refused.",
    )),
}


def build_model_config(values: dict[str, Any]) -> ModelConfig:
    """One validated ModelConfig from the option values (ConfigError on a bad value: exit 2)."""
    from ragctl.runtimes.remote import settings_from

    remote = settings_from(values["embed_url"], values["embed_model"], values["embed_key_env"],
                           values["embed_concurrency"], values["embed_batch"], values["embed_dim"])
    return ModelConfig(model=values["model"], backend=values["backend"], precision=values["precision"],
                       device=values["device"], batch_size=values["batch_size"], remote=remote)


def model_options(command: F) -> F:
    """Give `command` the model options; it receives them as one `model_config: ModelConfig`."""
    signature = inspect.signature(command)
    if "model_config" not in signature.parameters:
        raise TypeError(f"{command.__name__} must take a model_config parameter")
    # Typer reads the wrapper's annotations with get_type_hints in *this* module's globals:
    # hand it resolved types, not the command module's strings
    hints = typing.get_type_hints(command, localns={"ModelConfig": ModelConfig})
    kept = [p.replace(annotation=hints.get(name, p.annotation))
            for name, p in signature.parameters.items() if name != "model_config"]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
        for name, (kind, option) in _OPTIONS.items()
    ]
    # keyword-only parameters must follow the positional-or-keyword ones
    params = [p for p in kept if p.kind is not inspect.Parameter.KEYWORD_ONLY] + added + \
        [p for p in kept if p.kind is inspect.Parameter.KEYWORD_ONLY]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name, _OPTIONS[name][1].default) for name in _OPTIONS}
        return command(*args, model_config=build_model_config(values), **kwargs)

    del wrapper.__wrapped__  # Typer must read the signature below, not the command's own
    wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params} | {"return": hints.get("return")}
    return wrapper  # type: ignore[return-value]
