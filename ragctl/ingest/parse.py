"""The parse stage's work on one file: read (bounded), hash, check limits, parse, chunk.

`parse_file` runs inside a parse worker process (see `pool.py`) and never raises for bad input:
every outcome is a `ParseOutcome` whose status says what happened. Memory per file is bounded
by the limits, not by the file: the file is read in blocks up to `--max-file-mb`, text formats
over `--max-text-mb` are refused before reading, zip-based documents are refused from their
central directory before inflating anything, and extracted text is measured before chunking.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

from ragctl.errors import ParseError, UnsupportedFormat
from ragctl.ingest.options import Limits
from ragctl.ingest.plan import ParseTask, human_bytes

OVERLAP_TOKENS = 32
ZIP_SUFFIXES = frozenset({".docx", ".pptx", ".xlsx", ".epub", ".odt", ".odp", ".ods"})
ZIP_EXPANSION_FACTOR = 2  # a zip document may inflate to 2 x --max-text-mb (markup included)
READ_BLOCK = 1 << 20

OK, HASHED, SKIPPED, FAILED = "ok", "hashed", "skipped", "failed"


@dataclass
class ParseOutcome:
    entity_id: str
    rel_path: str
    status: str  # ok (chunks) | hashed (hash only) | skipped | failed
    chunks: list[str] = field(default_factory=list)
    parser: str = ""
    content_hash: str = ""
    size: int = 0
    mtime_ns: int = 0
    error: str = ""
    tag: str = ""
    # contextual chunks (ragctl.chunking): the document's title, each chunk's heading path and
    # the context line embedded before it, and the chunker version that made them
    title: str = ""
    sections: list[str] = field(default_factory=list)
    contexts: list[str] = field(default_factory=list)
    chunker: int = 0
    # where each chunk's text starts (1-based page; None where the format has no pages), which
    # chunks hold OCR'd text, and how many pages of the file were OCR'd
    pages: list[int | None] = field(default_factory=list)
    ocr: list[bool] = field(default_factory=list)
    ocr_pages: int = 0
    ocr_mode: str = ""  # the --ocr mode of a PDF or image (recorded, so --reindex can find PDFs read without OCR)
    # each chunk's passage key and near-duplicate signature (ragctl.storage.chunk_texts), made
    # here in the parse worker so that neither the embed stage nor the commit spends time on them
    keys: list[bytes] = field(default_factory=list)
    near: list[bytes] = field(default_factory=list)

    def embed_text(self, i: int) -> str:
        """What the model embeds for chunk i: its context line, then its text."""
        from ragctl.chunking import contextualize

        return contextualize(self.contexts[i], self.chunks[i]) if self.contexts else self.chunks[i]

    @property
    def key(self) -> tuple[str, str]:
        return (self.entity_id, self.tag)

    @classmethod
    def failed(cls, task: ParseTask, error: str) -> ParseOutcome:
        return cls(task.entity_id, task.rel_path, FAILED, size=task.size, error=error, tag=task.tag)


class _Skip(Exception):
    pass


def read_snapshot(path: str, limit: int) -> tuple[bytes, int, int]:
    """(bytes, size, mtime_ns) of one consistent read of `path`, at most `limit` bytes.

    A file that changes while it is read is read once more; if it is still changing (a live
    log), what was read is returned with mtime 0, so the record never claims a stat it was not
    read at and the next run hashes the file again.
    """
    for attempt in range(2):
        with open(path, "rb") as fh:
            before = os.fstat(fh.fileno())
            parts, total = [], 0
            while True:
                block = fh.read(READ_BLOCK)
                if not block:
                    break
                total += len(block)
                if total > limit:
                    raise _Skip(
                        f"file grew past the {human_bytes(limit)} limit per file while being read "
                        "(raise it with --max-file-mb)"
                    )
                parts.append(block)
            after = os.fstat(fh.fileno())
        data = b"".join(parts)
        unchanged = (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns)
        if unchanged and after.st_size == len(data):
            return data, len(data), after.st_mtime_ns
        if attempt == 1:
            return data, len(data), 0
    raise AssertionError("unreachable")  # pragma: no cover


def check_zip_expansion(data: bytes, limits: Limits) -> None:
    """Refuse a zip-based document whose members inflate past the limit, before parsing."""
    allowed = limits.max_text_bytes * ZIP_EXPANSION_FACTOR
    try:
        with zipfile.ZipFile(BytesIO(data)) as archive:
            total = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # not a zip: the reader reports the corrupt file itself
    if total > allowed:
        raise _Skip(
            f"expands to {human_bytes(total)} uncompressed, over the {human_bytes(allowed)} limit for "
            f"zip-based documents ({ZIP_EXPANSION_FACTOR} x --max-text-mb; raise it with --max-text-mb)"
        )


def is_text_format(suffix: str) -> bool:
    from ragctl.parsing.native import READERS

    reader = READERS.get(suffix)
    return reader is not None and reader.input == "text"


def parse_file(task: ParseTask, chunker: Any, limits: Limits) -> ParseOutcome:
    """Read, hash, parse and chunk one file (see the module docstring). Never raises for bad
    input; `chunker` is a `ragctl.chunking.Chunker` (None only for `hash_only` tasks)."""
    from ragctl.parsing import parse_bytes

    out = ParseOutcome(task.entity_id, task.rel_path, FAILED, size=task.size, tag=task.tag)
    suffix = Path(task.abs_path).suffix.lower()
    try:
        if is_text_format(suffix) and task.size > limits.max_text_bytes:
            raise _Skip(
                f"text file of {human_bytes(task.size)}, over the {human_bytes(limits.max_text_bytes)} "
                "limit of text per file (raise it with --max-text-mb)"
            )
        data, out.size, out.mtime_ns = read_snapshot(task.abs_path, limits.max_file_bytes)
        out.content_hash = hashlib.sha256(data).hexdigest()
        if task.hash_only or (task.known_hash and task.known_hash == out.content_hash):
            out.status = HASHED
            return out
        if suffix in ZIP_SUFFIXES:
            check_zip_expansion(data, limits)
        parsed = parse_bytes(data, suffix, name=task.rel_path, ocr=limits.ocr)
        del data
        text_bytes = sum(len(b.text) for b in parsed.blocks)
        if text_bytes > limits.max_text_bytes:
            raise _Skip(
                f"{human_bytes(text_bytes)} of extracted text, over the {human_bytes(limits.max_text_bytes)} "
                "limit per file (raise it with --max-text-mb)"
            )
        made = chunker.contextual(parsed.blocks, parsed.title)
        chunks = [c.text for c in made]
    except _Skip as exc:
        out.status, out.error = SKIPPED, str(exc)
        return out
    except FileNotFoundError:
        out.status, out.error = SKIPPED, "file disappeared before it could be read"
        return out
    except OSError as exc:
        out.error = f"cannot read: {exc.strerror or exc}"
        return out
    except UnsupportedFormat as exc:
        out.status, out.error = SKIPPED, str(exc)
        return out
    except ParseError as exc:
        out.error = str(exc)
        return out
    except MemoryError:
        out.error = "out of memory while parsing"
        return out
    except Exception as exc:  # noqa: BLE001 - one bad file must never stop a run
        from ragctl.parsing.textutil import one_line

        out.error = one_line(exc, 300)
        return out
    if not chunks:
        out.status, out.error = SKIPPED, "no extractable text"
        return out
    out.status, out.chunks, out.parser = OK, chunks, parsed.parser
    from ragctl.chunking import CHUNKER_VERSION

    out.title, out.sections, out.contexts = parsed.title, [c.section for c in made], [c.context for c in made]
    if any(c.page is not None for c in made):
        out.pages, out.ocr = [c.page for c in made], [c.ocr for c in made]
    out.ocr_pages, out.ocr_mode = parsed.ocr_pages, parsed.ocr_mode
    out.chunker = CHUNKER_VERSION
    from ragctl.passages import chunk_signatures

    out.keys, out.near = chunk_signatures(chunks)
    return out


def make_chunker(model_dir: str, max_tokens: int) -> Any:
    from ragctl.chunking import Chunker, load_tokenizer

    return Chunker(load_tokenizer(model_dir), max_tokens=max_tokens, overlap_tokens=OVERLAP_TOKENS)
