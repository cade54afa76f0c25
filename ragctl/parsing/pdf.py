"""PDF -> blocks, page by page: the text layer (pypdfium2) where a page has one, OCR where not.

The decision is made per page, never per file (OCRmyPDF's ``--skip-text`` idea), so a PDF whose
first pages have text and whose appendix is scanned is read whole:

* ``--ocr auto`` (default): a page is OCR'd when it has no text layer at all (a scan, or text
  drawn as outlines), or fewer than ``TEXT_LAYER_SPARSE_CHARS`` non-space characters on a page
  that images cover at least half of (a scan with a stamped page number). A short text page
  ("Chapter 2") keeps its text; a page with no objects at all (a blank separator) is not OCR'd. Other pages keep
  their text layer (an OCR'd PDF's invisible text layer included: it is not OCR'd again).
* ``--ocr force``: every page is rendered and OCR'd, the text layer ignored.
* ``--ocr off``: the text layer only (a scanned PDF is skipped, as before).

Every block carries its 1-based page number; OCR'd blocks are marked ``ocr``. Pages are rendered
one at a time (memory stays flat on a 300-page scan) and a file with more than
``--ocr-max-pages`` pages to OCR fails before any is rendered.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable
from typing import Any

from ragctl.errors import ParseError, UnsupportedFormat
from ragctl.parsing.model import Block, title_block
from ragctl.parsing.ocr import (
    IMAGE_COVER_FOR_SCAN,
    MIN_SIDE_PX,
    RENDER_LONG_SIDE_PX,
    RENDER_MAX_DPI,
    TEXT_LAYER_SPARSE_CHARS,
    OcrOptions,
    image_blocks,
)
from ragctl.parsing.textutil import clean_controls, one_line

# pdfium is not thread-safe: every call into it holds this lock (OCR itself runs outside it)
PDFIUM_LOCK = threading.Lock()
_PDF_PARAS = re.compile(r"\n[ \t]*\n\s*")


def _page_text(page: Any) -> str:
    textpage = page.get_textpage()
    try:
        raw = textpage.get_text_range()
    finally:
        textpage.close()
    raw = raw.replace("\r\n", "\n").replace("\r", "\n")
    return clean_controls(raw.replace("\ufffe", "").replace("\x02", "-"))


def _image_cover(page: Any, pdfium_c: Any) -> float:
    """The share of the page's area that image objects cover (their areas summed, capped at 1)."""
    width, height = page.get_size()
    if width <= 0 or height <= 0:
        return 0.0
    area = 0.0
    for obj in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=2):
        left, bottom, right, top = obj.get_bounds()
        w = max(0.0, min(right, width) - max(left, 0.0))
        h = max(0.0, min(top, height) - max(bottom, 0.0))
        area += w * h
    return min(1.0, area / (width * height))


def needs_ocr(text: str, image_cover: Callable[[], float]) -> bool:
    """--ocr auto's rule for one page (`image_cover` is only computed for a sparse text layer)."""
    chars = sum(1 for ch in text if not ch.isspace())
    return chars == 0 or (chars < TEXT_LAYER_SPARSE_CHARS and image_cover() >= IMAGE_COVER_FOR_SCAN)


def _text_blocks(text: str, page: int) -> list[Block]:
    out = []
    for para in _PDF_PARAS.split(text):
        para = "\n".join(x.strip() for x in para.split("\n") if x.strip())
        if para:
            out.append(Block("text", para, 0, page=page))
    return out


def _render(page: Any) -> Any:
    width, height = page.get_size()  # points (1/72 inch)
    scale = min(RENDER_MAX_DPI / 72.0, RENDER_LONG_SIDE_PX / max(width, height, 1.0))
    return page.render(scale=scale, grayscale=False).to_pil().convert("RGB")


def read_pdf(data: bytes, options: OcrOptions | None = None) -> list[Block]:
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    options = options or OcrOptions()
    blocks: list[Block] = []
    with PDFIUM_LOCK:
        try:
            pdf = pdfium.PdfDocument(data)
        except pdfium.PdfiumError as exc:
            msg = str(exc)
            if "password" in msg.lower():
                raise ParseError("encrypted PDF (password required)") from exc
            raise ParseError(f"not a readable PDF ({msg.rstrip('.')})") from exc
    try:
        with PDFIUM_LOCK:
            try:
                meta_title = str(pdf.get_metadata_dict().get("Title") or "").strip()
            except (pdfium.PdfiumError, ValueError):
                meta_title = ""
            # first pass: each page's text layer and whether it needs OCR (cheap: ~1 ms a page)
            pages: list[tuple[str, bool]] = []
            for page_no in range(len(pdf)):
                page = pdf[page_no]
                try:
                    text = "" if options.mode == "force" else _page_text(page)
                    ocr = options.mode == "force" or (
                        options.mode == "auto" and needs_ocr(text, functools.partial(_image_cover, page, pdfium_c)))
                    # a page with nothing on it (a blank separator page) has nothing to recognise
                    ocr = ocr and next(iter(page.get_objects(max_depth=1)), None) is not None
                finally:
                    page.close()
                pages.append((text, ocr))
        to_ocr = sum(1 for _, ocr in pages if ocr)
        if to_ocr > options.max_pages:
            raise ParseError(f"{to_ocr} pages need OCR, over the limit of {options.max_pages} per file "
                             "(raise it with --ocr-max-pages)")
        if meta_title:
            blocks.append(title_block(meta_title))
        for page_no, (text, ocr) in enumerate(pages, start=1):
            if not ocr:
                blocks.extend(_text_blocks(text, page_no))
                continue
            try:
                with PDFIUM_LOCK:
                    page = pdf[page_no - 1]
                    try:
                        image = _render(page)
                    finally:
                        page.close()
                found = image_blocks(image, page_no) if min(image.size) >= MIN_SIDE_PX else []
                del image
            except (ParseError, UnsupportedFormat):
                raise
            except Exception as exc:  # noqa: BLE001 - say which page, not just what the engine said
                raise ParseError(f"OCR of page {page_no} failed: {one_line(exc, 160)}") from exc
            # OCR found nothing (a blank or photo page): keep whatever the text layer had
            blocks.extend(found or _text_blocks(text, page_no))
    finally:
        with PDFIUM_LOCK:
            pdf.close()
    if all(b.kind == "title" for b in blocks):
        if options.mode == "off":
            raise UnsupportedFormat("no extractable text (a scanned PDF? OCR is off: --ocr off)")
        raise UnsupportedFormat("no extractable text (no text layer, and OCR found no text)")
    return blocks
