"""File → structured text: a registry of fast native readers, unstructured as a fallback.

Public API::

    parse_file(path) -> ParsedDocument
    parse_bytes(data, suffix, name="") -> ParsedDocument
    SUPPORTED_SUFFIXES   # suffixes with a native reader
    is_supported(path)   # would parse_file try this file (native or fallback)?

Errors (from ``ragctl.errors``):

* ``UnsupportedFormat`` – nothing to index here, count the file as *skipped*: unknown or
  binary file type, empty file, no extractable text (e.g. a scanned PDF), a fallback format
  whose optional dependency is missing.
* ``ParseError`` – a supported file that could not be read, count it as *failed*: unreadable
  (permissions), corrupt, binary content behind a text suffix. Messages are one line.

Readers (``native.READERS``; ``ParsedDocument.parser`` in brackets):

* .txt .text .log [text], .md .markdown [markdown], .rst [rst], .csv [csv], .tsv [tsv],
  .json [json], .jsonl .ndjson [jsonl] – stdlib, on text decoded UTF-8 (BOM aware) →
  UTF-16/32 by BOM → cp1252 → latin-1;
* .html .htm .xhtml [html] – lxml (``<meta charset>`` honoured); .xml [xml] – lxml, entities
  declared in the document expanded (external ones never), no network; .eml [email] – stdlib ``email`` (HTML bodies via the html reader);
* .pdf [pdf:pypdfium2; "+ocr:rapidocr" when pages were OCR'd] (pdf.py: page by page), images .png .jpg .jpeg .tif
  .tiff .bmp .webp .gif [image:rapidocr] (ocr.py), .docx [docx] – python-docx package + its XML, .pptx [pptx];
* fallback [unstructured]: .msg .odt .rtf .epub .org .xlsx .xls .doc .ppt (see ``fallback``);
  anything else is ``UnsupportedFormat`` without touching unstructured. A file without
  suffix is read as text when it looks like text (hidden ones excepted).

Importing this package is cheap: lxml, pypdfium2, python-docx, python-pptx and unstructured
are imported by the reader that needs them, on first use.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from ragctl.errors import ParseError, UnsupportedFormat
from ragctl.parsing import fallback as _fallback
from ragctl.parsing.model import Block, ParsedDocument
from ragctl.parsing.native import READERS, Reader
from ragctl.parsing.ocr import OcrOptions
from ragctl.parsing.textutil import SNIFF_BYTES, decode_text, is_probably_text, one_line

__all__ = [
    "Block",
    "OcrOptions",
    "ParsedDocument",
    "parse_file",
    "parse_bytes",
    "SUPPORTED_SUFFIXES",
    "FALLBACK_SUFFIXES",
    "is_supported",
    "ParseError",
    "UnsupportedFormat",
]

# Before anything in this process imports unstructured: no telemetry, no notice.
_fallback.disable_telemetry()

SUPPORTED_SUFFIXES: frozenset[str] = frozenset(READERS)
FALLBACK_SUFFIXES: frozenset[str] = _fallback.FALLBACK_SUFFIXES


def _norm_suffix(suffix: str) -> str:
    suffix = (suffix or "").strip().lower()
    if suffix and not suffix.startswith("."):
        suffix = "." + suffix
    return suffix


def is_supported(path: Path) -> bool:
    """True if ``parse_file`` would try to read this file (by suffix; content for no suffix).

    A file without suffix is read as text when its first 8 KB look like text, except hidden
    ones (``.env``, ``.bashrc``: configuration and secrets, not documents).

    A fallback format can still be skipped at parse time when its optional dependency is
    missing (``UnsupportedFormat`` with the reason).
    """
    path = Path(path)
    suffix = _norm_suffix(path.suffix)
    if suffix:
        return suffix in SUPPORTED_SUFFIXES or suffix in FALLBACK_SUFFIXES
    if path.name.startswith("."):
        return False
    try:
        with path.open("rb") as fh:
            head = fh.read(SNIFF_BYTES)
    except OSError:
        return True  # let parse_file report why it cannot be read
    return bool(head.strip()) and is_probably_text(head)


def parse_file(path: Path, ocr: OcrOptions | None = None) -> ParsedDocument:
    """Parse one file. Raises UnsupportedFormat (skip) or ParseError (failed). `ocr`: how PDF
    pages without a text layer and images are read (default: ``OcrOptions()``, mode auto)."""
    path = Path(path)
    suffix = _norm_suffix(path.suffix)
    if suffix and suffix not in SUPPORTED_SUFFIXES and suffix not in FALLBACK_SUFFIXES:
        raise UnsupportedFormat(f"unsupported file type '{suffix}'")
    if not suffix and path.name.startswith("."):  # .env, .bashrc, .gitignore: config, not documents
        raise UnsupportedFormat("unsupported file type (hidden file without suffix)")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ParseError(f"cannot read: {exc.strerror or one_line(exc)}") from exc
    return parse_bytes(data, suffix, path.name, ocr=ocr)


def parse_bytes(data: bytes, suffix: str, name: str = "", ocr: OcrOptions | None = None) -> ParsedDocument:
    """Parse in-memory file content; ``suffix`` (".md" or "md") picks the reader."""
    ocr = ocr or OcrOptions()
    suffix = _norm_suffix(suffix)
    if not suffix:
        if not data.strip():
            raise UnsupportedFormat("empty file")
        if not is_probably_text(data):
            raise UnsupportedFormat("unsupported file type (no suffix, binary content)")
        suffix = ".txt"
    reader = READERS.get(suffix)
    if reader is None and suffix not in FALLBACK_SUFFIXES:
        raise UnsupportedFormat(f"unsupported file type '{suffix}'")
    if not data.strip():
        raise UnsupportedFormat("empty file")
    try:
        if reader is not None:
            blocks = _run_native(reader, data, ocr)
            parser = reader.parser
        else:
            blocks = _fallback.parse_with_unstructured(data, suffix, name)
            parser = "unstructured"
    except (UnsupportedFormat, ParseError):
        raise
    except RecursionError as exc:
        raise ParseError("document nested too deeply") from exc
    except zipfile.BadZipFile as exc:  # .docx, .pptx, .xlsx, .odt, .epub... are zip archives
        raise ParseError(
            f"not a valid {suffix[1:]} file (corrupt, truncated, or another format renamed): {one_line(exc)}"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - third-party readers raise anything
        raise ParseError(one_line(exc)) from exc
    own_title = next((b.text for b in blocks if b.kind == "title"), "")
    blocks = [b for b in blocks if b.kind != "title"]
    if not blocks:
        raise UnsupportedFormat("no extractable text")
    ocr_pages = len({b.page for b in blocks if b.ocr})
    if ocr_pages and "ocr" not in parser:
        parser += "+ocr:rapidocr"
    return ParsedDocument(blocks=blocks, parser=parser, title=document_title(own_title, blocks, name),
                          ocr_pages=ocr_pages, ocr_mode=ocr.mode if reader is not None and reader.ocr else "")


def document_title(own: str, blocks: list[Block], name: str) -> str:
    """The document's own title, else a level-1 heading among its first blocks (the usual
    `# Title` / `<h1>`), else its file name (without the folder)."""
    if own.strip():
        return " ".join(own.split())
    for block in blocks[:3]:
        if block.kind == "heading" and block.level == 1:
            return " ".join(block.text.split())
    return name.replace("\\", "/").rsplit("/", 1)[-1]


def _run_native(reader: Reader, data: bytes, ocr: OcrOptions) -> list[Block]:
    if reader.ocr:
        return reader.func(data, ocr)
    if reader.input == "text":
        text = decode_text(data)
        if not text.strip():
            raise UnsupportedFormat("empty file")
        return reader.func(text)
    return reader.func(data)
