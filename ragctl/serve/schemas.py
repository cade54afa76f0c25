"""The API's request and response bodies (pydantic): what `/openapi.json` publishes and what
every route answers (FastAPI validates each answer against its model)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ragctl.ids import ENTITY_ID_PATTERN
from ragctl.serve.upload import DOCUMENT_PATH_PATTERN, MAX_PATH_CHARS

ENTITY_ID_REGEX = f"^{ENTITY_ID_PATTERN.pattern}$"
JOB_ID_REGEX = "^[0-9a-f]{32}$"
JobStatus = Literal["queued", "running", "done", "failed", "cancelled"]
FileStatus = Literal["indexed", "updated", "unchanged", "skipped", "failed", "cancelled"]


class _Body(BaseModel):
    """An answer: the fields below always; a later version may add fields (clients ignore them)."""

    model_config = ConfigDict(extra="allow")


class _Request(BaseModel):
    """A request body: unknown fields and values of another JSON type are refused (422), never
    coerced: `"k": true`, `"k": "3"` and `"k": 2.0` are not the integer 3 or 2."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ErrorDetail(_Body):
    code: str = Field(description="machine-readable: invalid_path, too_large, staging_full, ...")
    message: str = Field(description="one line for a person")


class ErrorBody(_Body):
    error: ErrorDetail


class Health(_Body):
    status: str = Field(description="ok, or the engine's state when it is not loading or running")
    engine: str = Field(description="starting | loading | running | stopping | stopped | failed")
    version: str


class AckFile(_Body):
    path: str
    bytes: int
    sha256: str


class UploadAck(_Body):
    job_id: str
    entity_id: str
    status: JobStatus
    files: list[AckFile]


class ModelUsed(BaseModel):
    """The embedder that embedded a job's files (`describe()` of the runtime)."""

    model_config = ConfigDict(extra="allow")
    name: str | None = None
    backend: str | None = None
    precision: str | None = None
    device: str | None = None


class JobFile(_Body):
    path: str
    bytes: int
    sha256: str
    status: FileStatus | None = Field(description="null until the file is settled")
    doc_id: str | None = Field(None, description="its document; for a copy `skipped`, the document it copies")
    chunks: int | None = Field(None, description="chunks this upload added (0 when unchanged or skipped)")
    error: str | None = Field(None, description="why it failed or was skipped")


class Job(_Body):
    job_id: str
    entity_id: str
    status: JobStatus
    created_at: str
    finished_at: str | None
    error: str | None
    model: ModelUsed | None = Field(None, description="what embedded the files (null before the job ran)")
    files: list[JobFile]


class JobList(_Body):
    entity: str
    status: JobStatus | None
    limit: int
    count: int
    jobs: list[Job]


class EntityStats(_Body):
    documents: int
    chunks: int
    bytes: int
    last_ingest: str | None
    model: str | None
    error: str | None = Field(None, description="why the entity's records cannot be read (`ragctl verify` says more)")


class Totals(_Body):
    entities: int
    documents: int
    chunks: int
    bytes: int


class StoreStats(_Body):
    entities: dict[str, EntityStats] = Field(description="this page of the matching entities, sorted by id")
    totals: Totals = Field(description="over every matching entity the token may see, not just this page")
    total: int = Field(description="how many entities match (the token's, filtered by q)")
    offset: int
    limit: int | None = Field(description="the page size (null: every entity, as `ragctl stats --json`)")


class FileRecord(_Body):
    doc_id: str
    path: str
    bytes: int | None
    chunks: int | None
    sha256: str | None
    indexed_at: str | None


class FileList(_Body):
    entity: str
    total: int
    offset: int
    limit: int
    files: list[FileRecord]


class DocumentDeleted(_Body):
    entity: str
    doc_id: str
    path: str | None
    deleted: bool


class EntityDeleted(_Body):
    entity: str
    deleted: bool
    cancelled_jobs: list[str]


class SearchRequest(_Request):
    query: str = Field(min_length=1, max_length=10_000)
    k: int = Field(default=5, ge=1, le=100)
    mode: Literal["hybrid", "vector", "text"] = "hybrid"
    rerank: bool = Field(False, description="experimental: re-score the top candidates passage by passage "
                                            "(docs/retrieval.md; slower, no measured gain yet)")
    per_document: bool = Field(True, description="each hit a document: its best chunk plus its next-best matching "
                                                 "chunks, within a budget of 150 words a hit (context_words sets it); "
                                                 "false: each hit one chunk, a document's chunks each a hit of their own")
    context_words: int = Field(0, ge=0, le=5000, description="per-document hits: their word budget, this many words "
                                                            "a hit (0: 150); per-chunk hits: grow each to its chunk plus "
                                                            "the neighbouring chunks of its document, up to this many "
                                                            "words (no words repeated across hits); 0: the chunk alone")


class SearchHit(_Body):
    doc_id: str
    path: str
    score: float
    text: str
    chunk: int
    vector_rank: int | None
    text_rank: int | None
    title: str | None = Field(None, description="the document's title, when its format has one")
    section: str | None = Field(None, description="the heading the chunk is under")
    page: int | None = Field(None, description="the page the chunk starts on (PDF pages, image frames); "
                                               "null where the format has no pages")
    ocr: bool = Field(False, description="the chunk's text was recognised from a page image (OCR)")
    also_in: list[str] = Field(default_factory=list, description="paths of the other documents holding the same "
                               "passage (or a near-duplicate): collapsed into this hit, which is its most specific holder")
    chunks: list[int] = Field(default_factory=list, description="the positions of the document's chunks whose texts "
                              "`text` holds, in document order (`chunk` is the best-ranked of them)")


class SearchResults(_Body):
    entity: str
    results: list[SearchHit]


class EngineStatus(_Body):
    state: str
    error: str | None
    jobs_active: int
    jobs_queued: int
    model: dict[str, Any]
    encode_calls: int
    chunks_embedded: int
    files_done: int
    jobs_done: int
    jobs_cancelled: int


class StagingStatus(_Body):
    bytes: int
    files: int
    max_bytes: int
    max_files: int


class SearchStatus(_Body):
    cached_entities: int
    cached_bytes: int = Field(0, description="what the cached searchers hold: their entities' vectors + a fixed overhead each")
    max_bytes: int = Field(0, description="the bound of cached_bytes (least recently used entities are dropped past it)")
    model: dict[str, Any] | None = Field(description="the embedder queries use (null before the first vector query)")
    shares_engine_model: bool | None = Field(description="true: queries and uploads use one model instance")


class ServiceStatus(_Body):
    engine: EngineStatus
    staging: StagingStatus
    search: SearchStatus


UPLOAD_BODY: dict[str, Any] = {
    "required": True,
    "content": {"multipart/form-data": {"schema": {
        "type": "object",
        "properties": {
            "file": {"type": "string", "format": "binary",
                     "description": "a document; repeat the field to send several (at most --max-files-per-upload)"},
            "path": {"type": "string", "maxLength": MAX_PATH_CHARS, "pattern": DOCUMENT_PATH_PATTERN,
                     "description": "the document's path inside the entity (default: the file name); "
                                    "none, or one per `file` part, paired in order, all different"},
        },
        "required": ["file"],
    }, "example": {"file": "# Harbour rules\n\nVisitors may moor at the east pier from 8:00 to 20:00.\n",
                   "path": "notes/harbour.md"}}},
}
