"""Data types produced by the parsers (kept free of heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Block:
    """One structural unit of a document.

    ``kind`` is ``"heading"`` (with ``level`` 1..6) or ``"text"`` (paragraphs, list items,
    table rows, code; ``level`` 0). A reader may also yield ``"title"`` blocks (the document's
    own title: HTML ``<title>``, Markdown front matter, DOCX/PDF metadata); ``parse_bytes``
    takes them out of ``blocks`` into ``ParsedDocument.title``.
    """

    kind: str
    text: str
    level: int = 0
    page: int | None = None  # 1-based page (PDF pages, image frames); None where a format has none
    ocr: bool = False  # the text was recognised from a page image


@dataclass(frozen=True)
class ParsedDocument:
    """The blocks of one file, in document order, and the reader that produced them."""

    blocks: list[Block]
    parser: str
    # The document's title: its own (a "title" block), else a leading level-1 heading, else
    # the file name. Contextual chunks embed it with each chunk's heading path.
    title: str = ""
    ocr_pages: int = 0  # pages whose text was read by OCR
    ocr_mode: str = ""  # the --ocr mode it was read with, for readers that OCR (PDF, images); "" otherwise

    @property
    def text(self) -> str:
        """All block texts joined by blank lines (handy for tests and debugging)."""
        return "\n\n".join(b.text for b in self.blocks)


def heading(text: str, level: int = 1) -> Block:
    return Block("heading", text, min(max(int(level), 1), 6))


def text_block(text: str) -> Block:
    return Block("text", text, 0)


def title_block(text: str) -> Block:
    return Block("title", " ".join(text.split()), 0)
