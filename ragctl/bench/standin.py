"""A benchmark-only stand-in for the embedding model, to measure everything but the model.

`StandInEncoder` turns each chunk into a deterministic unit vector from its sha256 (no model,
~microseconds per chunk), under an identity no real model has (`benchmark-stand-in`), so a
store written with it can never be mixed with real vectors: a real ingest into it is refused
(model mismatch, exit 2). It is reachable only from benchmark code that passes it explicitly
as `embedder=` to the engine; `ragctl ingest` has no option that selects it.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STAND_IN_NAME = "benchmark-stand-in"


@dataclass(frozen=True)
class StandInSpec:
    """Looks like a ModelSpec to the engine: the real model's tokenizer and window (chunking
    stays exact), a dimension, and an identity of its own."""

    path: Path
    dim: int
    max_tokens: int
    name: str = STAND_IN_NAME

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "digest": "stand-in-not-a-model", "dim": self.dim}


class StandInEncoder:
    """Implements `ragctl.model_config.Embedder` (spec, precision, backend, device, batch_size,
    encode, describe, stop_when) without a model."""

    precision = "stand-in"
    backend = "stand-in"
    device = "cpu"
    batch_size = 32

    def __init__(self, model: str | None = None, dim: int = 384) -> None:
        from ragctl.model_spec import resolve_model

        real = resolve_model(model)
        self.spec = StandInSpec(real.path, dim, real.max_tokens)

    def encode(self, texts: list[str]) -> Any:
        import numpy as np

        out = np.empty((len(texts), self.spec.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            seed = int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:8], "little")
            out[i] = np.random.default_rng(seed).standard_normal(self.spec.dim, dtype=np.float32)
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out

    def describe(self) -> dict[str, Any]:
        return {"name": self.spec.name, "dim": self.spec.dim, "max_tokens": self.spec.max_tokens,
                "precision": self.precision, "device": self.device, "backend": self.backend, "runtime": "stand-in"}

    def stop_when(self, event: threading.Event) -> None:
        """Encoding is instant: nothing to stop."""
