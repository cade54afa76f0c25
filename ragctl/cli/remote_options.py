"""The `--embed-*` options shared by commands that embed (ingest, query): a remote
OpenAI-compatible embedding service instead of the local model. Each has a RAGCTL_EMBED_*
environment variable; the API key itself is only ever read from the environment."""

from __future__ import annotations

import typer

EmbedUrlOption = typer.Option(
    None, "--embed-url", envvar="RAGCTL_EMBED_URL", show_default=False,
    help="Base URL of an OpenAI-compatible embedding service (http://host:8080/v1); POSTs to {URL}/embeddings.",
)
EmbedModelOption = typer.Option(
    None, "--embed-model", envvar="RAGCTL_EMBED_MODEL", show_default=False,
    help="Model name sent to the service [default: the --model name]; it must use --model's tokenizer.",
)
EmbedKeyEnvOption = typer.Option(
    None, "--embed-key-env", envvar="RAGCTL_EMBED_KEY_ENV", show_default=False,
    help="Environment variable holding the API key [default: RAGCTL_EMBED_KEY, if set]. Never stored.",
)
EmbedConcurrencyOption = typer.Option(
    None, "--embed-concurrency", envvar="RAGCTL_EMBED_CONCURRENCY", min=1, show_default=False,
    help="Requests in flight at once [default: 4].",
)
EmbedBatchOption = typer.Option(
    None, "--embed-batch", envvar="RAGCTL_EMBED_BATCH", min=1, show_default=False,
    help="Texts per request [default: 32].",
)
EmbedDimOption = typer.Option(
    None, "--embed-dim", envvar="RAGCTL_EMBED_DIM", min=1, show_default=False,
    help="Dimension the service returns [default: --model's]; other dimensions are refused.",
)
