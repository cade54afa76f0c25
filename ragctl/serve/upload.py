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
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from ragctl.fsutil import publish
from ragctl.serve.errors import HttpError
from ragctl.serve.jobs import Job, StagedFile, Staging

MAX_PATH_CHARS = 1024
MAX_FIELD_BYTES = 4096  # a `path` value
MAX_PART_HEADER_BYTES = 16 * 1024  # all headers of one part together
EXTRA_PARTS = 64  # form parts beyond one `file` and one `path` per file: then 400
DRAIN_BYTES = 8 << 20  # after a 413/503, read (and drop) this much more so the client sees the answer

# A document path: '/'-separated parts, none empty, '.' or '..'; no '\\', no control character.
# The same pattern is the upload's OpenAPI schema (`path` items), so the schema and the server
# accept exactly the same paths.
_PART_CHAR = r"[^/\\\x00-\x1f\x7f]"
_PART = rf"(?:{_PART_CHAR}*[^/\\\x00-\x1f\x7f.]{_PART_CHAR}*|\.\.\.+)"
DOCUMENT_PATH_PATTERN = rf"^{_PART}(?:/{_PART})*$"
_DOCUMENT_PATH = re.compile(DOCUMENT_PATH_PATTERN)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SUFFIX = re.compile(r"\.[a-z0-9]{1,16}")


def bad(message: str, code: str = "bad_request") -> HttpError:
    return HttpError(400, code, message)


def document_path(raw: str) -> str:
    """A document's path inside its entity (its identity): relative, '/'-separated, no '.',
    '..' or empty parts, no backslash or control character (NUL included), at most 1,024
    characters. Only ever an identifier: the staged file's name on disk is not derived from it."""
    if "\x00" in raw:
        raise bad("path contains a NUL byte", "invalid_path")
    if not raw:
        raise bad("path is empty", "invalid_path")
    if len(raw) > MAX_PATH_CHARS:
        raise bad(f"path is longer than {MAX_PATH_CHARS} characters", "invalid_path")
    if _CONTROL.search(raw):
        raise bad(f"path contains control characters: {raw!r}", "invalid_path")
    if "\\" in raw:
        raise bad(f"path must use '/' separators, not '\\': {raw!r}", "invalid_path")
    if raw.startswith("/"):
        raise bad(f"path must be relative to the entity, not absolute: {raw!r}", "invalid_path")
    parts = raw.split("/")
    if any(p in ("..", ".") for p in parts):
        raise bad(f"path must not contain '.' or '..' parts: {raw!r}", "invalid_path")
    if any(p == "" for p in parts):
        raise bad(f"path has an empty part: {raw!r}", "invalid_path")
    if not _DOCUMENT_PATH.fullmatch(raw):  # the schema's pattern; the checks above explain its failures
        raise bad(f"invalid path {raw!r}", "invalid_path")
    return raw


def default_path(filename: bytes | None, index: int) -> str:
    """The document path of a file part without `path` fields: the last part of its file name."""
    if not filename:
        raise bad(f"file part {index + 1} has no file name: send a filename or a 'path' field per file",
                  "invalid_path")
    try:
        name = filename.decode("utf-8")
    except UnicodeDecodeError:
        raise bad(f"the file name of file part {index + 1} is not valid UTF-8: send a 'path' field per file",
                  "invalid_path") from None
    return document_path(re.split(r"[/\\]", name)[-1])


def staged_name(doc_path: str) -> str:
    """The staged file's name: `document` plus the document's suffix (parsers go by it)."""
    suffix = PurePosixPath(doc_path).suffix.lower()
    return "document" + (suffix if _SUFFIX.fullmatch(suffix) else "")


@dataclass
class _Part:
    name: str = ""
    filename: bytes | None = None
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
        self.max_parts = 2 * max_files + EXTRA_PARTS
        self.parts = 0
        self.files: list[_Part] = []
        self.paths: list[str] = []
        self.part: _Part | None = None
        self.headers: dict[bytes, bytes] = {}
        self._header_bytes = 0
        self._field = b""
        self._value = b""
        self.error: Exception | None = None  # HttpError or StagingFull
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
        self.parts += 1
        if self.parts > self.max_parts:
            self.fail(bad(f"more than {self.max_parts} form parts in one upload", "too_many_parts"))
        self.part = _Part()
        self.headers = {}
        self._header_bytes = 0
        self._field = self._value = b""

    def _count_header(self, size: int) -> bool:
        self._header_bytes += size
        if self._header_bytes > MAX_PART_HEADER_BYTES:
            self.fail(bad(f"the headers of a form part are longer than {MAX_PART_HEADER_BYTES} bytes"))
            return False
        return True

    def header_field(self, data: bytes, start: int, end: int) -> None:
        if self._count_header(end - start):
            self._field += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        if self._count_header(end - start):
            self._value += data[start:end]

    def header_end(self) -> None:
        self.headers[self._field.strip().lower()] = self._value.strip()
        self._field = self._value = b""

    def headers_finished(self) -> None:
        part = self.part
        if part is None or self.error is not None:
            return
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        part.name = options.get(b"name", b"").decode("utf-8", "replace")
        part.filename = options.get(b"filename")
        if part.name == "file":
            if len(self.files) >= self.max_files:
                self.fail(HttpError(413, "too_many_files", f"more than {self.max_files} files in one upload",
                                    close=True))
                return
            try:
                self.staging.reserve(0, 1)
            except Exception as exc:  # noqa: BLE001 - StagingFull: answered by the caller
                self.fail(exc)
                return
            part.staged = self.job.directory / "files" / f"{len(self.files)}.part"
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

    def fail(self, error: Exception) -> None:
        if self.error is None:
            self.error = error

    def close_all(self) -> None:
        for part in self.files:
            if part.handle is not None:
                part.handle.close()
                part.handle = None


def too_large(limit: int) -> HttpError:
    return HttpError(413, "too_large", f"upload is larger than the {limit / (1 << 20):g} MB limit (--max-upload-mb)",
                     close=True)


def boundary_of(content_type: str) -> bytes:
    ctype, options = parse_options_header(content_type)
    if ctype != b"multipart/form-data":
        raise HttpError(415, "unsupported_media_type", "send the files as multipart/form-data")
    boundary = options.get(b"boundary")
    if not boundary:
        raise bad("multipart/form-data without a boundary")
    if len(boundary) > 200:
        raise bad("the multipart boundary is longer than 200 bytes")
    return boundary


async def receive(stream: AsyncIterator[bytes], content_type: str, content_length: str | None, job: Job,
                  staging: Staging, max_bytes: int, max_files: int) -> list[StagedFile]:
    """Stream the body into `job`'s staging directory; returns its files, fsynced, in order.
    Raises HttpError or StagingFull (the caller discards the job directory and answers with
    it). The staging bytes reserved for the job stay reserved (released when the job is done)."""
    boundary = boundary_of(content_type)
    if content_length is not None and content_length.isdigit() and int(content_length) > max_bytes:
        raise too_large(max_bytes)
    sink = _Sink(job, staging, max_files)
    parser = MultipartParser(boundary, sink.callbacks())  # type: ignore[arg-type]
    received = reserved = 0
    error: Exception | None = None
    try:
        async for chunk in stream:
            received += len(chunk)
            if error is not None:  # drain a little so the client reads our answer
                if received > max_bytes + DRAIN_BYTES:
                    break
                continue
            if received > max_bytes:
                error = too_large(max_bytes)
                continue
            try:
                staging.reserve(len(chunk))
            except Exception as exc:  # noqa: BLE001 - StagingFull
                error = exc
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
    """Move each staged file to `files/<n>/document<suffix>` (parsers go by the suffix; the
    document's path is only recorded, never used as a file name), fsync it."""
    checked = [document_path(p) for p in sink.paths] if sink.paths else \
        [default_path(p.filename, i) for i, p in enumerate(sink.files)]
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
        target = directory / staged_name(doc_path)
        publish(part.staged, target, replace=True)
        staged.append(StagedFile(doc_path, part.size, part.digest.hexdigest(),
                                 str(target.relative_to(job.directory))))
    return staged
