"""The local embedding runtimes (torch, OpenVINO) and the one factory, `load_embedder`.

`load_embedder(ModelConfig)` is how every entry point gets its model: one instance per
resolved configuration per process (ingest, query, serve, bench, the library, a Ray actor and
the integrations share it). It returns a `LocalEmbedder` (sentence-transformers on torch, or
the same model converted for OpenVINO) or a `RemoteEmbedder` (an embedding service); both
implement `ragctl.model_config.Embedder`. Which model and where it lives is
`ragctl.model_spec` (no torch there).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from ragctl.errors import ConfigError
from ragctl.model_config import BACKENDS, DEFAULT_BATCH_SIZE, OPENVINO_BATCH_SIZE, PRECISIONS, Embedder, ModelConfig
from ragctl.model_spec import (
    DEFAULT_MODEL_NAME,
    ModelSpec,
    cpu_count,
    cpu_has_native_bf16,
    force_offline,
    resolve_model,
)

__all__ = [
    "BACKENDS", "DEFAULT_MODEL_NAME", "PRECISIONS", "Embedder", "LocalEmbedder", "ModelConfig",
    "ModelSpec", "cpu_count", "cpu_has_native_bf16", "force_offline", "load_embedder", "resolve_model",
]

BF16_MIN_COSINE = 0.999

_PROBE_TEXTS = [
    "Quarterly revenue grew by twelve percent, driven by subscriptions in Europe.",
    "The cluster outage began when a certificate expired on the ingress controller.",
    "Employees may carry over up to five days of unused vacation into the next year.",
    "Refunds are issued within forty-five days of purchase for unopened items.",
    "def parse(path): return open(path).read().split()",
    "Le rapport annuel présente les résultats financiers du groupe.",
    "Short.",
    "A longer passage that talks about onboarding new engineers, their first week, the tools "
    "they install, the mentors they meet, and the small tasks that teach them the codebase.",
]




PAD_TO_MULTIPLE_OF = 16


def _pad_to_multiple(model: Any, multiple: int, max_tokens: int) -> None:
    """Pad each batch to a multiple of `multiple` tokens instead of to its longest text.

    Batches are length-sorted, so otherwise nearly every batch has a new shape; on CPU each
    new shape costs oneDNN kernels and heap blocks that are never reused, and an ingest's RSS
    grew with the size of the corpus (bf16: 0.5 -> 1.4 GB over 4,000 chunks, see
    docs/benchmarks.md). Bucketed shapes keep it flat (~0.75 GB) for a few % more compute.
    Results do not change: padding is masked. Needs sentence-transformers' per-module
    `processing_kwargs`; where it is missing, batches are padded as before. Skipped when the
    window is not a multiple (padding past it could exceed the model's position table).
    """
    if max_tokens % multiple:
        return
    first = model[0] if len(model) else None
    kwargs = getattr(first, "processing_kwargs", None)
    if first is not None and isinstance(kwargs, dict):
        text = {**kwargs.get("text", {}), "pad_to_multiple_of": multiple}
        first.processing_kwargs = {**kwargs, "text": text}


def _cuda_possible() -> bool:
    """Whether torch could see a GPU, without importing torch for CPU-only builds."""
    import importlib.util

    found = importlib.util.find_spec("torch")
    if found is None or not found.submodule_search_locations:
        return False
    lib = Path(next(iter(found.submodule_search_locations))) / "lib"
    if not any(lib.glob("libtorch_cuda*")):
        return False
    import torch

    return bool(torch.cuda.is_available())


# Calls of at most this many texts (search queries) do not wait for a busy OpenVINO model: they
# run on its query lane (ragctl.runtimes.openvino_runtime). torch has no lane: its tokenizer
# cannot be shared between threads, so a query there waits for the call in progress.
QUERY_LANE_MAX = 8


class LocalEmbedder:
    """One local embedding model (torch or OpenVINO); thread-safe `encode`.

    backend "torch" runs sentence-transformers; "openvino" runs the same model converted
    once and cached (ragctl.runtimes.openvino_runtime); "auto" takes OpenVINO on x86 CPUs
    where it is installed and passes its start-up self-check, torch otherwise (and on CUDA).
    Why auto fell back is in `describe()["backend_note"]`.
    """

    def __init__(self, spec: ModelSpec, config: ModelConfig | None = None, threads: int | None = None) -> None:
        config = config if config is not None else ModelConfig()
        precision, device, backend = config.precision, config.device, config.backend
        force_offline()
        self.spec = spec
        # the runtime's own batch size unless the config sets one (model_config.OPENVINO_BATCH_SIZE)
        self.batch_size: int = config.batch_size or OPENVINO_BATCH_SIZE
        self.threads = threads or cpu_count()
        self._lock = threading.Lock()
        self.bf16_check: float | None = None
        self.self_check: float | None = None
        self.backend_note: str | None = None
        self.precision_note: str | None = None
        self._runtime: Any = None
        self.model: Any = None
        self.backend: str = backend
        self.device: str = device
        self.precision: str = precision
        if backend != "torch":
            if device == "cuda" or (device == "auto" and _cuda_possible()):
                if backend == "openvino":
                    raise ConfigError("the openvino backend runs on CPU only (use device cpu)")
                self.backend_note = "CUDA device: torch backend"
            else:
                self._try_openvino(precision, required=backend == "openvino")
        if self._runtime is not None:
            self.backend, self.device = "openvino", "cpu"
            return
        if precision == "int8":
            raise ConfigError(f"precision int8 needs the OpenVINO backend: {self.backend_note or 'backend is torch'}")
        self.backend = "torch"
        self.batch_size = config.batch_size or DEFAULT_BATCH_SIZE
        self._init_torch(precision, device)

    # -- OpenVINO -------------------------------------------------------------------------
    def _try_openvino(self, precision: str, required: bool) -> None:
        from ragctl.runtimes import openvino_runtime as ovr

        reason = ovr.unavailable_reason()
        if reason is None:
            try:
                reason = self._start_openvino(ovr, precision)
            except ConfigError:
                raise
            except Exception as exc:  # noqa: BLE001 - conversion/compile failure: fall back
                reason = f"OpenVINO failed to start ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})"
        if reason is not None:
            self._runtime = None
            if required:
                raise ConfigError(f"backend openvino: {reason}")
            self.backend_note = f"{reason} -> torch backend"

    def _start_openvino(self, ovr: Any, precision: str) -> str | None:
        """Start the runtime at the requested precision; a reason string if auto must not use it.

        auto takes the fastest variant that passes its quality gate (docs/runtimes.md): int8
        (its gate: min cosine to fp32 >= 0.99 and unchanged known-item retrieval; verdict
        cached), else bf16 where the CPU has it natively (self-check), else f32. Why int8 was
        not taken is kept as a one-line `precision_note`."""
        if precision in ("int8", "auto"):
            try:
                self._runtime = ovr.OpenVINORuntime(self.spec, "int8", self.threads, self.batch_size, _PROBE_TEXTS)
            except Exception as exc:  # nncf missing, the gate refused int8, or quantisation failed
                if precision == "int8":
                    raise
                reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
                self.precision_note = f"int8 not used: {reason}"
            else:
                self.precision = "int8"
                self.self_check = self._runtime.self_check
                return None
        candidates = {"fp32": ["f32"], "bf16": ["bf16"], "auto": ["bf16", "f32"] if cpu_has_native_bf16() else ["f32"]}[precision]
        checks = []
        f32_dir = None
        for ov_precision in candidates:
            runtime = ovr.OpenVINORuntime(self.spec, ov_precision, self.threads, self.batch_size, _PROBE_TEXTS, f32_dir)
            f32_dir = runtime.f32_dir
            checks.append(f"{ov_precision} {runtime.self_check:.5f}")
            if runtime.self_check >= BF16_MIN_COSINE or precision != "auto":
                self._runtime = runtime
                self.precision = "bf16" if ov_precision == "bf16" else "fp32"
                self.self_check = runtime.self_check
                if ov_precision == "bf16":
                    self.bf16_check = runtime.self_check
                return None
        return f"OpenVINO self-check failed (min cosine to torch fp32: {', '.join(checks)} < {BF16_MIN_COSINE})"

    # -- torch ----------------------------------------------------------------------------
    def _init_torch(self, precision: str, device: str) -> None:
        import torch

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device cuda: no CUDA device is available")
        if device == "cpu":
            torch.set_num_threads(self.threads)
        self.device = device
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        try:
            self.model = SentenceTransformer(str(self.spec.path), device=device, local_files_only=True)
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(f"cannot load model {self.spec.name!r} from {self.spec.path}: {exc}") from exc
        self.model.max_seq_length = self.spec.max_tokens
        _pad_to_multiple(self.model, PAD_TO_MULTIPLE_OF, self.spec.max_tokens)
        self.tokenizer = self.model.tokenizer
        self.precision = self._choose_precision(precision)
        self.self_check = self.bf16_check if self.precision == "bf16" else None

    def _choose_precision(self, requested: str) -> str:
        import torch

        if requested == "fp32":
            return "fp32"
        native = self.device == "cuda" and torch.cuda.is_bf16_supported() or (
            self.device == "cpu" and cpu_has_native_bf16()
        )
        if requested == "auto" and not native:
            return "fp32"
        reference = self._encode(_PROBE_TEXTS)
        self.model.to(torch.bfloat16)
        candidate = self._encode(_PROBE_TEXTS)
        self.bf16_check = float((reference * candidate).sum(axis=1).min())
        if requested == "auto" and self.bf16_check < BF16_MIN_COSINE:
            self.model.to(torch.float32)
            return "fp32"
        return "bf16"

    def _encode(self, texts: list[str]):  # -> np.ndarray
        import numpy as np

        if self._runtime is not None:
            return self._runtime.encode(texts)
        out = self.model.encode(
            texts,
            batch_size=self.batch_size,
            convert_to_tensor=True,
            normalize_embeddings=False,
            show_progress_bar=False,
        )
        vectors = out.float().cpu().numpy().astype(np.float32, copy=False)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return vectors / norms

    def encode(self, texts: list[str]):  # -> np.ndarray (n, dim) float32, L2-normalised
        """Encode in length-sorted batches; rows come back in input order."""
        import numpy as np

        if not texts:
            return np.zeros((0, self.spec.dim), dtype=np.float32)
        lane = len(texts) <= QUERY_LANE_MAX and self._runtime is not None
        if lane and not self._lock.acquire(blocking=False):
            # the model is busy with a big call (an ingest window in `ragctl serve`): a search's
            # query takes OpenVINO's query lane instead of waiting seconds for the window
            vectors = self._runtime.encode_small(list(texts))
            if vectors is not None:
                return vectors
            self._lock.acquire()  # no lane here: wait for the model
        elif not lane:
            self._lock.acquire()
        try:
            return self._encode(list(texts))
        finally:
            self._lock.release()

    def prepare_query_lane(self) -> bool:
        """Compile OpenVINO's query lane ahead of the first search that needs it (`ragctl serve`
        calls this in the background once the model is loaded); whether there is one."""
        return self._runtime is not None and self._runtime.prepare_query_lane()

    def stop_when(self, event: threading.Event) -> None:
        """Local encode calls are short and cannot be interrupted: nothing to do."""

    def describe(self) -> dict[str, Any]:
        """Stable keys: name, dim, max_tokens, precision, device, backend, backend_note,
        runtime, self_check_min_cosine, bf16_min_cosine_vs_fp32, model_cache."""
        if self._runtime is not None:
            extra = self._runtime.describe()
        else:
            import torch

            extra = {"runtime": f"torch {torch.__version__}", "model_cache": None}
        return {
            "name": self.spec.name,
            "dim": self.spec.dim,
            "max_tokens": self.spec.max_tokens,
            "precision": self.precision,
            "device": self.device,
            "backend": self.backend,
            "backend_note": self.backend_note,
            "precision_note": self.precision_note,
            "self_check_min_cosine": self.self_check,
            "bf16_min_cosine_vs_fp32": self.bf16_check,
            **extra,
        }


_loaded: dict[tuple[Any, ...], Embedder] = {}
_loaded_lock = threading.Lock()  # guards the two dicts only
_loading: dict[tuple[Any, ...], threading.Lock] = {}  # one per key: a slow load (int8) blocks only its own


def _load_once(key: tuple[Any, ...], build: Any) -> Embedder:
    with _loaded_lock:
        if key in _loaded:
            return _loaded[key]
        lock = _loading.setdefault(key, threading.Lock())
    with lock:
        with _loaded_lock:
            if key in _loaded:
                return _loaded[key]
        embedder = build()
        with _loaded_lock:
            _loaded[key] = embedder
        return embedder


def load_embedder(config: ModelConfig, *, threads: int | None = None, spec: ModelSpec | None = None) -> Embedder:
    """The embedder for `config`, loaded once per process and shared by every caller.

    The cache key is the *resolved* model (its directory, or the remote service's identity)
    plus the runtime settings, so `model=None` and the default model's path share one copy.
    `spec`: an already resolved model (a query resolves the entity's recorded one).
    `threads`: the torch/OpenVINO thread count (a Ray actor's CPUs); default every core.
    """
    if config.remote is not None:
        from ragctl.runtimes.remote import RemoteEmbedder, RemoteModelSpec, remote_spec

        remote = spec if isinstance(spec, RemoteModelSpec) else remote_spec(config.model, config.remote)
        settings = config.remote
        return _load_once(("remote", remote.name, remote.dim, settings), lambda: RemoteEmbedder(remote, settings))
    local = spec if spec is not None else resolve_model(config.model)
    key = (str(local.path), config.backend, config.precision, config.device, config.batch_size, threads)
    return _load_once(key, lambda: LocalEmbedder(local, config, threads=threads))

