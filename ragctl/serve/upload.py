"""Streaming a multipart upload into a job's staging directory, with bounded memory.

The request body is read chunk by chunk from `request.stream()` (uvicorn stops reading the
socket while a chunk waits, so a slow consumer throttles the client) and fed to
python-multipart's push parser; each file part's bytes go straight to its staging file and into
its sha256. Nothing is spooled anywhere else, so memory per upload is one chunk plus the
parser's small buffers, whatever the file size. Bytes are counted as they arrive (Content-Length
is only used to refuse early, never trusted to accept): over `max_upload_bytes` -> 413; over
the staging bound -> 503 + Retry-After.

Form fields: `file` (one or more; its filename names the document unless `path` is given) and
`path` (optional; either none, or one per `file` part, paired in order). Other fields are
ignored.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from ragctl.fsutil import fsync_dir
from ragctl.fsutil import fsync_path
from ragctl.serve.jobs import Job, StagedFile, Staging

MAX_PATH_CHARS = 1024
MAX_FIELD_BYTES = 4096
DRAIN_BYTES = 8 << 20  # after a 413/503, read (and drop) this much more so the client sees the answer
RETRY_AFTER_S = 5
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class UploadError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def bad(message: str, code: str = "bad_request") -> UploadError:
    return UploadError(400, code, message)


def document_path(raw: str) -> str:
    """A document's path inside its entity: relative, POSIX, no '.', '..', empty parts or
    control characters (NUL included)."""
    if "\x00" in raw:
        raise bad("path contains a NUL byte", "invalid_path")
    if not raw:
        raise bad("path is empty", "invalid_path")
    if len(raw) > MAX_PATH_CHARS:
        raise bad(f"path is longer than {MAX_PATH_CHARS} characters", "invalid_path")
    if _CONTROL.search(raw):
        raise bad("path contains control characters", "invalid_path")
    if raw.startswith(("/", "\\")) or re.match(r"[A-Za-z]:[\\/]", raw):
        raise bad(f"path must be relative to the entity, not absolute: {raw!r}", "invalid_path")
    parts = raw.split("/")
    if any(p in ("..", ".") for p in re.split(r"[/\\]", raw)):
        raise bad(f"path must not contain '.' or '..' parts: {raw!r}", "invalid_path")
    if any(p == "" for p in parts):
        raise bad(f"path has an empty part: {raw!r}", "invalid_path")
    if any(len(p.encode("utf-8", "surrogateescape")) > 255 for p in parts):
        raise bad("a part of the path is longer than 255 bytes", "invalid_path")
    return raw


def default_path(filename: str | None) -> str:
    """The document path of a file part without a `path` field: the upload's file name."""
    name = re.split(r"[/\\]", filename or "")[-1]
    if not name:
        raise bad("a file part has no file name: send a filename or a 'path' field", "invalid_path")
    return document_path(name)


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    handle: BinaryIO | None = None
    staged: Path | None = None
    size: int = 0
    digest: Any = None
    value: bytearray = field(default_factory=bytearray)


class _Sink:
    """python-multipart callbacks writing file parts into the job's `files/` directory."""

    def __init__(self, job: Job, staging: Staging, max_files: int) -> None:
        self.job = job
        self.staging = staging
        self.max_files = max_files
        self.files: list[_Part] = []
        self.paths: list[str] = []
        self.part: _Part | None = None
        self.headers: dict[bytes, bytes] = {}
        self._field = b""
        self._value = b""
        self.error: UploadError | None = None
        self.ended = False

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self.part_begin,
            "on_header_field": self.header_field,
            "on_header_value": self.header_value,
            "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished,
            "on_part_data": self.part_data,
            "on_part_end": self.part_end,
            "on_end": self.end,
        }

    def part_begin(self) -> None:
        self.part = _Part()
        self.headers = {}
        self._field = self._value = b""

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def header_end(self) -> None:
        self.headers[self._field.strip().lower()] = self._value.strip()
        self._field = self._value = b""

    def headers_finished(self) -> None:
        part = self.part
        assert part is not None
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        part.name = options.get(b"name", b"").decode("utf-8", "replace")
        raw_filename = options.get(b"filename")
        part.filename = raw_filename.decode("utf-8", "replace") if raw_filename is not None else None
        if part.name == "file":
            if len(self.files) >= self.max_files:
                self.fail(UploadError(413, "too_many_files", f"more than {self.max_files} files in one upload"))
                return
            if not self.staging.reserve(0, 1):
                self.fail(full_error("files"))
                return
            index = len(self.files)
            part.staged = self.job.directory / "files" / f"{index}.part"
            part.handle = open(part.staged, "wb")  # noqa: SIM115 - closed in part_end / cleanup
            part.digest = hashlib.sha256()
            self.files.append(part)

    def part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.part
        if part is None or self.error is not None:
            return
        chunk = data[start:end]
        if part.handle is not None:
            part.handle.write(chunk)
            part.digest.update(chunk)
            part.size += len(chunk)
        elif part.name == "path":
            part.value += chunk
            if len(part.value) > MAX_FIELD_BYTES:
                self.fail(bad(f"the 'path' field is longer than {MAX_FIELD_BYTES} bytes", "invalid_path"))

    def part_end(self) -> None:
        part = self.part
        self.part = None
        if part is None:
            return
        if part.handle is not None:
            part.handle.flush()
            part.handle.close()
            part.handle = None
        elif part.name == "path" and self.error is None:
            try:
                self.paths.append(part.value.decode("utf-8"))
            except UnicodeDecodeError:
                self.fail(bad("the 'path' field is not valid UTF-8", "invalid_path"))

    def end(self) -> None:
        self.ended = True

    def fail(self, error: UploadError) -> None:
        if self.error is None:
            self.error = error

    def close_all(self) -> None:
        for part in self.files:
            if part.handle is not None:
                part.handle.close()
                part.handle = None


def full_error(what: str) -> UploadError:
    return UploadError(
        503, "staging_full",
        f"the upload staging area is full ({what}); retry after {RETRY_AFTER_S} s",
        {"Retry-After": str(RETRY_AFTER_S)},
    )


def too_large(limit: int) -> UploadError:
    return UploadError(413, "too_large", f"upload is larger than the {limit / (1 << 20):g} MB limit (--max-upload-mb)")


def boundary_of(content_type: str) -> bytes:
    ctype, options = parse_options_header(content_type)
    if ctype != b"multipart/form-data":
        raise UploadError(415, "unsupported_media_type", "send the files as multipart/form-data")
    boundary = options.get(b"boundary")
    if not boundary:
        raise bad("multipart/form-data without a boundary")
    return boundary


async def receive(stream: AsyncIterator[bytes], content_type: str, content_length: str | None, job: Job,
                  staging: Staging, max_bytes: int, max_files: int) -> list[StagedFile]:
    """Stream the body into `job`'s staging directory; returns its files, fsynced, in order.
    Raises UploadError (the caller discards the job directory and answers with it). The
    staging bytes reserved for the job stay reserved (released when the job is done)."""
    boundary = boundary_of(content_type)
    if content_length is not None and content_length.isdigit() and int(content_length) > max_bytes:
        raise too_large(max_bytes)
    sink = _Sink(job, staging, max_files)
    parser = MultipartParser(boundary, sink.callbacks())
    received = reserved = 0
    error: UploadError | None = None
    try:
        async for chunk in stream:
            if error is not None:  # drain a little so the client reads our answer
                received += len(chunk)
                if received > max_bytes + DRAIN_BYTES:
                    break
                continue
            received += len(chunk)
            if received > max_bytes:
                error = too_large(max_bytes)
                continue
            if not staging.reserve(len(chunk)):
                error = full_error("bytes")
                continue
            reserved += len(chunk)
            try:
                parser.write(chunk)
            except MultipartParseError as exc:
                error = bad(f"malformed multipart body: {exc}")
                continue
            if sink.error is not None:
                error = sink.error
        if error is None:
            try:
                parser.finalize()
            except MultipartParseError as exc:
                error = bad(f"malformed multipart body: {exc}")
        if error is None and not sink.ended:
            error = bad("truncated multipart body")
        if error is None and not sink.files:
            error = bad("no 'file' part in the upload", "no_files")
        if error is None and sink.paths and len(sink.paths) != len(sink.files):
            error = bad(f"{len(sink.paths)} 'path' fields for {len(sink.files)} files: give none or one per file",
                        "invalid_path")
        if error is not None:
            raise error
        staged = await asyncio.to_thread(_place, sink, job)
    except BaseException:
        sink.close_all()
        staging.release(reserved, len(sink.files))
        raise
    # Keep exactly the file bytes reserved (the body also had multipart framing).
    total = sum(f.bytes for f in staged)
    staging.release(max(0, reserved - total), 0)
    return staged


def _place(sink: _Sink, job: Job) -> list[StagedFile]:
    """Name each staged file after its document (parsers look at the suffix), fsync it."""
    paths = sink.paths or [default_path(p.filename) for p in sink.files]
    checked = [document_path(p) for p in paths]
    seen: set[str] = set()
    for p in checked:
        if p in seen:
            raise bad(f"the path {p!r} is given twice in one upload", "invalid_path")
        seen.add(p)
    staged = []
    for index, (part, doc_path) in enumerate(zip(sink.files, checked)):
        assert part.staged is not None
        directory = part.staged.parent / str(index)
        directory.mkdir()
        target = directory / doc_path.rsplit("/", 1)[-1]
        os.replace(part.staged, target)
        fsync_path(target)
        fsync_dir(directory)
        staged.append(StagedFile(doc_path, part.size, part.digest.hexdigest(),
                                 str(target.relative_to(job.directory))))
    return staged
