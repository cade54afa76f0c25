"""What a run is asked to do (`IngestOptions`, from the caller) and what it runs with
(`RunContext`, fixed once at start: the store, the model's identity, the limits)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragctl.model_config import ModelConfig

if TYPE_CHECKING:
    from ragctl.model_spec import ModelSpec
    from ragctl.parsing.ocr import OcrOptions
    from ragctl.storage.json_storage import JSONStorage

MB = 1 << 20

# Defaults chosen for real corpora (README "Limits"): a 200 MB file is a very large PDF or
# export; 32 MB of extracted text is ~30,000 chunks, about 7 minutes of this CPU's model time.
DEFAULT_MAX_FILE_MB = 200.0
DEFAULT_MAX_TEXT_MB = 32.0
DEFAULT_PARSE_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Limits:
    """Per-file limits, and how pages without text are read (they travel with every parse task
    to the workers); a file over a limit is `skipped` with a reason naming the option. With OCR,
    `parse_timeout_s` is also the limit for each OCR'd page: the clock restarts after every page."""

    max_file_bytes: int = int(DEFAULT_MAX_FILE_MB * MB)
    max_text_bytes: int = int(DEFAULT_MAX_TEXT_MB * MB)
    parse_timeout_s: float = DEFAULT_PARSE_TIMEOUT_S
    ocr: OcrOptions = field(default_factory=lambda: _default_ocr())

    @classmethod
    def from_mb(cls, max_file_mb: float | None = None, max_text_mb: float | None = None,
                parse_timeout_s: float | None = None, ocr: OcrOptions | None = None) -> Limits:
        return cls(
            max_file_bytes=int((max_file_mb if max_file_mb is not None else DEFAULT_MAX_FILE_MB) * MB),
            max_text_bytes=int((max_text_mb if max_text_mb is not None else DEFAULT_MAX_TEXT_MB) * MB),
            parse_timeout_s=float(parse_timeout_s if parse_timeout_s is not None else DEFAULT_PARSE_TIMEOUT_S),
            ocr=ocr or _default_ocr(),
        )


def _default_ocr() -> OcrOptions:
    from ragctl.parsing.ocr import OcrOptions  # imported when used: `ragctl --help` stays light

    return OcrOptions()


@dataclass
class IngestOptions:
    store: Path
    workers: int = 0  # parse processes; 0 = number of cores
    model: ModelConfig = field(default_factory=ModelConfig)  # which model, runtime, precision (or a remote service)
    sharding: bool | None = None  # None: whatever the store says (sharded for new stores)
    prune: bool = False
    dry_run: bool = False
    rehash: bool = False  # hash every file even when size and mtime are unchanged
    reindex: bool = False  # re-chunk/re-embed documents of an older chunker (CHUNKER_VERSION) or another --ocr mode
    limits: Limits = field(default_factory=Limits)
    commit_docs: int = 64
    commit_seconds: float = 2.0
    embed_window: int = 256  # chunks per encode call (sorted by length inside it)
    # Ray (docs/distributed.md): parse, chunk and embed on Ray actors; plan and commit stay here
    ray: str | None = None  # None: local processes; "local", "auto" or a cluster address
    ray_actors: int = 0  # 0: one per cluster CPU but one (or one per ray_gpus_per_actor GPUs)
    ray_gpus_per_actor: float = 0.0
    shared_fs: bool = False  # Ray workers read the files' paths instead of bytes sent by the driver
    index: str | None = None  # auto|flat|ivf|hnsw per entity (storage/segments.py); None: as recorded


@dataclass(frozen=True)
class RunContext:
    """Everything every stage may read; nothing in it changes during the run."""

    options: IngestOptions
    spec: ModelSpec
    identity: dict[str, Any]
    storage: JSONStorage
    parse_workers: int

    @property
    def limits(self) -> Limits:
        return self.options.limits

    @property
    def dry_run(self) -> bool:
        return self.options.dry_run
