"""One model configuration for every entry point, and the one interface every embedder has.

`ModelConfig` is what a caller asks for (ingest, query, serve, bench, the library manager, a
Ray actor, the integrations); `ragctl.embedding.load_embedder(config)` is the one factory that
turns it into an `Embedder`, cached per configuration per process. The torch, OpenVINO and
remote runtimes all implement `Embedder`.

This module imports nothing heavy (no torch, numpy or runtime), so the CLI can build and
validate a config before any model is touched.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ragctl.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

    from ragctl.model_spec import ModelSpec
    from ragctl.runtimes.remote import RemoteSettings

BACKENDS = ("auto", "torch", "openvino")
PRECISIONS = ("auto", "fp32", "bf16", "int8")
DEVICES = ("auto", "cpu", "cuda")
# Chunks per model batch when the config leaves it to the runtime (`batch_size=None`, the
# default). Measured with `ragctl ingest` of 2,637 real chunks (docs/runtimes.md, "Batch size"):
# OpenVINO int8 on 2 cores took 39.8 / 40.8 / 43.4 / 46.4 s at batches of 4 / 8 / 16 / 32, and
# an encode call of 20-70 chunks (what `ragctl serve` makes) ran at 73 chunks/s in batches of 8
# against 30-35 in batches of 32; torch keeps 32.
DEFAULT_BATCH_SIZE = 32  # torch (CPU or CUDA), and remote services
OPENVINO_BATCH_SIZE = 8


@dataclass(frozen=True)
class ModelConfig:
    """Which model, on which runtime, at which precision, on which device, in which batches.

    `model`: a local sentence-transformers directory or a name in the local HF cache; None is
    the packaged default for a new entity (or, for a query, the model the entity records).
    `remote`: embed through an OpenAI-compatible service instead of a local runtime.
    """

    model: str | None = None
    backend: str = "auto"
    precision: str = "auto"
    device: str = "auto"
    batch_size: int | None = None  # None: the runtime's own (OPENVINO_BATCH_SIZE, else DEFAULT_BATCH_SIZE)
    remote: RemoteSettings | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be auto, torch or openvino, not {self.backend!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be auto, fp32, bf16 or int8, not {self.precision!r}")
        if self.device not in DEVICES:
            raise ConfigError(f"device must be auto, cpu or cuda, not {self.device!r}")
        if self.batch_size is not None and (not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise ConfigError(f"batch size must be a positive integer, not {self.batch_size!r}")
        if self.model is not None and not isinstance(self.model, str):
            object.__setattr__(self, "model", str(self.model))

    def with_model(self, model: str | None) -> ModelConfig:
        return replace(self, model=model)


def embedded_by(info: dict[str, Any]) -> dict[str, Any]:
    """What entity.json, the ingest summary and `--json` record about the runtime that embedded
    the vectors, from an embedder's `describe()`."""
    return {key: info.get(key) for key in ("backend", "precision", "device", "runtime")}


@runtime_checkable
class Embedder(Protocol):
    """What every runtime offers: a thread-safe `encode` of L2-normalised float32 rows.

    `describe()` has stable keys: name, dim, max_tokens, precision, device, backend,
    backend_note, runtime, self_check_min_cosine, model_cache (and runtime-specific extras).
    `stop_when(event)`: after the event is set no new work starts (a remote service's retries;
    a no-op for local runtimes, whose encode calls are short).
    """

    @property
    def spec(self) -> ModelSpec: ...

    @property
    def precision(self) -> str: ...

    @property
    def backend(self) -> str: ...

    @property
    def device(self) -> str: ...

    @property
    def batch_size(self) -> int: ...

    def encode(self, texts: list[str]) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...

    def stop_when(self, event: threading.Event) -> None: ...
