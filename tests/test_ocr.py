"""OCR: scanned PDF pages and images reach the index, in reading order, bounded.

Real OCR (rapidocr on OpenVINO, the weights in its wheel) on small pages rendered here; the
reading-order rules are also checked on hand-made boxes, without an engine.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from helpers import cli, make_tree

from ragctl.bench.samples import make_pdf
from ragctl.bench.scans import _font, cer, order_errors, render_page
from ragctl.errors import ParseError, UnsupportedFormat, UsageError
from ragctl.parsing import OcrOptions, parse_bytes, parse_file
from ragctl.parsing.reading_order import Line, reading_order

LINE = "Invoice 4711 was paid in full on 3 March"


def text_image(lines: list[str] = [LINE], mode: str = "RGB", size: int = 30) -> Any:  # noqa: B006
    """A small white image with black text lines, in the given PIL mode."""
    from PIL import Image, ImageDraw

    font = _font(size)
    width = int(max(ImageDraw.Draw(Image.new("L", (1, 1))).textlength(ln, font=font) for ln in lines)) + 60
    image = Image.new("L", (width, 40 + int(size * 1.6) * len(lines)), 255)
    draw = ImageDraw.Draw(image)
    for i, ln in enumerate(lines):
        draw.text((30, 20 + i * int(size * 1.6)), ln, fill=0, font=font)
    if mode == "I;16":
        import numpy as np

        return Image.fromarray(np.asarray(image, dtype=np.uint16) * 257)
    return image.convert(mode)


def encode(image: Any, fmt: str, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def scanned_pdf(images: list[Any]) -> bytes:
    """An image-only PDF: one page per image (what a scanner writes), no text layer."""
    return encode(images[0], "PDF", resolution=150, save_all=True, append_images=images[1:])


def mixed_pdf(text: str, scan: Any) -> bytes:
    """Page 1 has a text layer, page 2 is a scanned image."""
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(make_pdf([[("text", text)]]))
    doc.import_pages(pdfium.PdfDocument(scanned_pdf([scan])))
    buf = io.BytesIO()
    doc.save(buf)
    return buf.getvalue()


# ----------------------------------------------------------------------------- reading order (no engine)


def test_two_columns_are_read_column_by_column_under_a_full_width_title() -> None:
    lines = [Line("Quarterly report", 100, 50, 1100, 100)]
    for i in range(6):
        y = 150 + i * 40
        lines.append(Line(f"left column line {i} with several words", 100, y, 560, y + 30))
        lines.append(Line(f"right column line {i} with several words", 640, y, 1100, y + 30))
    texts = [b.text for b in reading_order(lines)]
    joined = " ".join(texts)
    assert texts[0] == "Quarterly report"
    assert joined.index("left column line 5") < joined.index("right column line 0")
    assert joined.index("right column line 0") < joined.index("right column line 5")


def test_a_ruled_table_comes_out_row_by_row() -> None:
    cells = [["Item", "Qty", "Price"], ["Bolt", "40", "0.10"], ["Nut", "35", "0.05"]]
    lines = [Line(cell, 100 + c * 300, 100 + r * 50, 100 + c * 300 + 20 * len(cell), 130 + r * 50)
             for r, row in enumerate(cells) for c, cell in enumerate(row)]
    assert [b.text for b in reading_order(lines)] == ["Item | Qty | Price", "Bolt | 40 | 0.10", "Nut | 35 | 0.05"]


def test_a_tall_short_line_is_a_heading_and_paragraphs_split_at_gaps() -> None:
    lines = [Line("Terms of Service", 100, 40, 700, 100)]  # twice the body's height
    for i, y in enumerate([140, 172, 204, 290, 322]):  # a wider gap before the second paragraph
        lines.append(Line(f"body line {i} of the agreement text here", 100, y, 900, y + 28))
    blocks = reading_order(lines)
    assert (blocks[0].kind, blocks[0].text) == ("heading", "Terms of Service")
    assert [b.text for b in blocks[1:]] == [
        "body line 0 of the agreement text here body line 1 of the agreement text here "
        "body line 2 of the agreement text here",
        "body line 3 of the agreement text here body line 4 of the agreement text here",
    ]


# ----------------------------------------------------------------------------- images, real OCR


@pytest.mark.parametrize("fmt,suffix,mode", [
    ("PNG", ".png", "RGB"), ("JPEG", ".jpg", "RGB"), ("BMP", ".bmp", "RGB"), ("WEBP", ".webp", "RGB"),
    ("GIF", ".gif", "P"), ("TIFF", ".tif", "CMYK"), ("TIFF", ".tiff", "I;16"), ("PNG", ".png", "LA"),
])
def test_each_image_type_is_read_by_ocr(fmt: str, suffix: str, mode: str) -> None:
    doc = parse_bytes(encode(text_image(mode=mode), fmt), suffix, name=f"scan{suffix}")
    assert doc.parser == "image:rapidocr" and doc.ocr_pages == 1
    assert cer([LINE], [b.text for b in doc.blocks]) < 0.05, doc.text
    assert all(b.ocr and b.page == 1 for b in doc.blocks)


def test_a_multi_page_tiff_is_a_page_per_frame_and_an_animation_is_its_first_frame() -> None:
    first, second = text_image(["First page: delivery note 77"]), text_image(["Second page: signed by the driver"])
    tiff = encode(first, "TIFF", save_all=True, append_images=[second])
    doc = parse_bytes(tiff, ".tiff")
    assert doc.ocr_pages == 2
    pages = {b.page: b.text for b in doc.blocks}
    assert "delivery note 77" in pages[1] and "signed by the driver" in pages[2]
    gif = parse_bytes(encode(first.convert("P"), "GIF", save_all=True, append_images=[second.convert("P")] * 5), ".gif")
    assert gif.ocr_pages == 1 and "delivery note 77" in gif.text and "driver" not in gif.text
    with pytest.raises(ParseError, match=r"^2 pages need OCR, over the limit of 1 per file"):
        parse_bytes(tiff, ".tiff", ocr=OcrOptions(max_pages=1))  # refused before any page is read


def test_a_two_column_scan_is_read_in_order_with_few_errors() -> None:
    image, truth = render_page("two_columns", seed=11)
    doc = parse_bytes(encode(image, "PNG"), ".png")
    found = [b.text for b in doc.blocks]
    assert order_errors(truth, found) == 0
    assert cer(truth, found) < 0.02


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels (its data is one empty row: a bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def test_hostile_images_fail_or_skip_with_one_line() -> None:
    with pytest.raises(ParseError, match=r"image not decoded: .*900000000 pixels.*decompression bomb") as bomb:
        parse_bytes(png_header_only(30_000, 30_000), ".png")  # PIL's own guard, on its header
    with pytest.raises(ParseError, match=r"12,000 x 6,000 pixels, over the 64 megapixel limit") as big:
        parse_bytes(png_header_only(12_000, 6_000), ".png")  # under PIL's limit, over ours
    with pytest.raises(ParseError, match="not a readable image") as junk:
        parse_bytes(bytes(range(256)) * 20, ".png")
    with pytest.raises(ParseError, match="not a readable image") as cut:
        parse_bytes(encode(text_image(), "PNG")[:400], ".png")
    with pytest.raises(UnsupportedFormat, match=r"1 x 1 pixels is too small"):
        parse_bytes(encode(text_image().resize((1, 1)), "PNG"), ".png")
    with pytest.raises(UnsupportedFormat, match=r"32 x 32 pixels is too small to hold text \(an icon\?\)"):
        parse_bytes(encode(text_image().resize((32, 32)), "PNG"), ".png")  # a favicon: the engine is not loaded
    for info in (bomb, big, junk, cut):
        assert "\n" not in str(info.value) and len(str(info.value)) < 200


def test_a_blank_image_is_skipped_as_no_text() -> None:
    from PIL import Image

    with pytest.raises(UnsupportedFormat, match="no text found by OCR"):
        parse_bytes(encode(Image.new("RGB", (400, 300), "white"), "PNG"), ".png")


# ----------------------------------------------------------------------------- PDF pages


def test_which_pdf_pages_auto_ocrs() -> None:
    from ragctl.parsing.pdf import needs_ocr

    def covered(share: float) -> Any:
        return lambda: share

    assert needs_ocr("", covered(0.0))  # no text layer at all: a scan, or text drawn as outlines
    assert needs_ocr("Page 3", covered(0.9))  # a scan with a stamped page number
    assert not needs_ocr("Chapter 2", covered(0.0))  # a short text page keeps its text
    assert not needs_ocr("word " * 60, covered(1.0))  # an OCR'd PDF's own text layer is kept


def test_a_mixed_pdf_is_read_page_by_page(tmp_path: Path) -> None:
    scan = text_image(["Appendix B: the warranty lasts 24 months", "Signed by the regional manager"])
    path = tmp_path / "contract.pdf"
    path.write_bytes(mixed_pdf("The contract starts on the first of May.", scan))

    auto = parse_file(path)
    assert auto.ocr_pages == 1 and auto.parser == "pdf:pypdfium2+ocr:rapidocr"
    by_page = {(b.page, b.ocr): b.text for b in auto.blocks}
    assert by_page[(1, False)] == "The contract starts on the first of May."
    assert "warranty lasts 24 months" in " ".join(t for (page, ocr), t in by_page.items() if page == 2 and ocr)

    off = parse_file(path, OcrOptions(mode="off"))
    assert off.ocr_pages == 0 and [b.page for b in off.blocks] == [1]

    force = parse_file(path, OcrOptions(mode="force"))
    assert force.ocr_pages == 2 and all(b.ocr for b in force.blocks)
    assert "first of May" in force.text


def test_scanned_pdf_limits_and_ocr_off(tmp_path: Path) -> None:
    pages = [text_image([f"Page {i} of the scanned ledger"]) for i in range(1, 4)]
    path = tmp_path / "ledger.pdf"
    path.write_bytes(scanned_pdf(pages))
    with pytest.raises(UnsupportedFormat, match=r"OCR is off: --ocr off"):
        parse_file(path, OcrOptions(mode="off"))
    with pytest.raises(ParseError, match=r"3 pages need OCR, over the limit of 2 per file \(raise it with --ocr-max-pages\)"):
        parse_file(path, OcrOptions(max_pages=2))
    doc = parse_file(path)
    assert [b.page for b in doc.blocks] == [1, 2, 3] and "Page 3 of the scanned ledger" in doc.text


# ----------------------------------------------------------------------------- end to end


def test_ingest_reports_ocr_pages_and_hits_carry_page_and_ocr(tmp_path: Path) -> None:
    scan = text_image(["Refunds for damaged pallets are paid within 14 days"])
    root = make_tree(tmp_path / "root", {
        "acme/contract.pdf": mixed_pdf("The contract starts on the first of May.", scan),
        "acme/whiteboard.png": encode(text_image(["Launch retro: ship the billing export first"]), "PNG"),
        "acme/notes.md": "# Notes\n\nNothing scanned here.\n",
    })
    store = tmp_path / "store"
    result = cli("ingest", root, "--store", store, "--json", "--quiet")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["entities"]["acme"]["indexed"] == 3 and report["entities"]["acme"]["ocr_pages"] == 2

    # the short contract is one chunk: it starts on page 1 and holds page 2's OCR'd text
    result = cli("query", "acme", "how fast are refunds for damaged pallets paid", "--store", store, "--json")
    hit = json.loads(result.stdout)["results"][0]
    assert (hit["path"], hit["page"], hit["ocr"]) == ("contract.pdf", 1, True)
    assert "damaged pallets" in hit["text"] and "first of May" in hit["text"]
    result = cli("query", "acme", "billing export", "--store", store, "--json")
    hit = json.loads(result.stdout)["results"][0]
    assert (hit["path"], hit["page"], hit["ocr"]) == ("whiteboard.png", 1, True)
    result = cli("query", "acme", "nothing scanned", "--store", store, "--json", "--mode", "text")
    hit = json.loads(result.stdout)["results"][0]
    assert (hit["path"], hit["page"], hit["ocr"]) == ("notes.md", None, False)


def test_ingest_with_ocr_off_skips_images_with_the_reason(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "root", {"acme/photo.jpg": encode(text_image(), "JPEG"), "acme/a.md": "# A\n\ntext\n"})
    result = cli("ingest", root, "--store", tmp_path / "store", "--json", "--quiet", "--ocr", "off")
    report = json.loads(result.stdout)
    assert report["entities"]["acme"]["skipped"] == 1 and report["entities"]["acme"]["ocr_pages"] == 0
    assert report["skipped_files"] == [{"entity": "acme", "path": "photo.jpg",
                                        "reason": "an image: its text is read only by OCR, which is off (--ocr off)"}]
    bad = cli("ingest", root, "--store", tmp_path / "store", "--ocr", "sometimes")
    assert bad.exit_code == 2 and "sometimes" in bad.output


def test_the_library_reads_images_and_takes_ocr_off(tmp_path: Path) -> None:
    from ragctl import get_entity_rag_manager

    image = tmp_path / "receipt.png"
    image.write_bytes(encode(text_image(["Receipt 88: two pallets of copier paper"]), "PNG"))
    manager = get_entity_rag_manager(tmp_path / "store")
    with pytest.raises(UsageError, match="OCR mode must be one of auto, off, force, not 'sometimes'"):
        manager.add_documents_parallel({"acme": [image]}, ocr="sometimes")
    off = manager.add_documents_parallel({"acme": [image]}, ocr="off")
    assert off.entities["acme"].skipped == 1 and off.entities["acme"].indexed == 0
    auto = manager.add_documents_parallel({"acme": [image]})
    assert auto.entities["acme"].indexed == 1 and auto.entities["acme"].ocr_pages == 1
    hit = manager.query("acme", "copier paper", k=1)[0]
    assert (hit.path, hit.page, hit.ocr) == ("receipt.png", 1, True)


def test_a_photo_stored_sideways_is_read_upright() -> None:
    from PIL import Image

    sideways = text_image(["Whiteboard: retro actions for sprint 12"]).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # EXIF orientation 6: turn 90 degrees clockwise to view
    doc = parse_bytes(encode(sideways, "PNG", exif=exif.tobytes()), ".png")
    assert cer(["Whiteboard: retro actions for sprint 12"], [b.text for b in doc.blocks]) < 0.05, doc.text


def test_reindex_reads_again_the_pdfs_read_without_ocr(tmp_path: Path) -> None:
    scan = text_image(["Appendix: spare parts ship from the Leeds depot"])
    root = make_tree(tmp_path / "root", {"acme/contract.pdf": mixed_pdf("The contract starts on the first of May.", scan),
                                         "acme/notes.md": "# Notes\n\nplain text\n"})
    store = tmp_path / "store"
    first = json.loads(cli("ingest", root, "--store", store, "--json", "--quiet", "--ocr", "off").stdout)
    assert first["entities"]["acme"]["ocr_pages"] == 0  # as a store made before OCR: the scan dropped
    again = json.loads(cli("ingest", root, "--store", store, "--json", "--quiet").stdout)
    assert again["entities"]["acme"]["unchanged"] == 2  # same bytes: not read again by a plain run
    redo = json.loads(cli("ingest", root, "--store", store, "--json", "--quiet", "--reindex").stdout)
    assert redo["entities"]["acme"]["updated"] == 1 and redo["entities"]["acme"]["ocr_pages"] == 1
    hits = json.loads(cli("query", "acme", "Leeds depot spare parts", "--store", store, "--json", "--mode", "text").stdout)
    assert hits["results"][0]["path"] == "contract.pdf" and hits["results"][0]["ocr"] is True
    assert json.loads(cli("ingest", root, "--store", store, "--json", "--quiet", "--reindex").stdout)[
        "entities"]["acme"]["unchanged"] == 2  # read with this mode now: nothing more to do
