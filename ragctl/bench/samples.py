"""Small, dependency-light document writers for tests, benchmarks and ``sample_docs`` (not
used at run time: this lives in ``ragctl.bench`` so the runtime package does not carry it).

* ``make_pdf`` – a valid PDF 1.4 with a real text layer (standard Helvetica, WinAnsiEncoding,
  no font embedding, no reportlab).
* ``make_docx`` / ``make_pptx`` – via python-docx / python-pptx, with fixed timestamps so
  the bytes are reproducible.
* ``make_msg`` – a minimal Outlook ``.msg`` (Compound File Binary v3 with a mini stream),
  enough for unstructured's ``partition_msg`` (python-oxmsg).

Nothing here is needed at parse time; it is imported only by its users.
"""

from __future__ import annotations

import datetime as dt
import io
import struct
import textwrap
import zipfile
from collections.abc import Iterable, Sequence

FIXED_TIME = dt.datetime(2024, 6, 1, 12, 0, 0)
_ZIP_TIME = (2024, 6, 1, 12, 0, 0)

# --------------------------------------------------------------------------- PDF


def _pdf_string(text: str) -> bytes:
    raw = text.encode("cp1252")
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def make_pdf(pages: Sequence[Sequence[tuple[str, str]]], title: str = "") -> bytes:
    """A PDF whose pages hold ("title" | "text", paragraph) items, wrapped at a fixed width.

    A page given as an empty list has no text at all (like a scanned page). Text must be
    encodable in cp1252 (é and € work). Raises ValueError if a page overflows.
    """
    objects: list[bytes] = []

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    catalog_id = add(b"")
    pages_id = add(b"")
    regular = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    bold = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>")
    kids = []
    for page in pages:
        ops = [b"BT"]
        y = 740
        for kind, text in page:
            size, font, width = (15, b"/F2", 62) if kind == "title" else (11, b"/F1", 92)
            for line in textwrap.wrap(text, width) or [""]:
                if y < 50:
                    raise ValueError("page overflow: split the content over more pages")
                ops.append(b"%s %d Tf 1 0 0 1 72 %d Tm (%s) Tj" % (font, size, y, _pdf_string(line)))
                y -= size + 4
            y -= 12
        ops.append(b"ET")
        stream = b"\n".join(ops)
        content = add(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
        kids.append(
            add(
                b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] "
                b"/Resources << /Font << /F1 %d 0 R /F2 %d 0 R >> >> /Contents %d 0 R >>"
                % (pages_id, regular, bold, content)
            )
        )
    objects[catalog_id - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % pages_id
    objects[pages_id - 1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
        b" ".join(b"%d 0 R" % k for k in kids),
        len(kids),
    )
    info_id = add(b"<< /Title (%s) /Producer (ragctl) >>" % _pdf_string(title))

    return serialize_pdf(objects, b"/Root %d 0 R /Info %d 0 R" % (catalog_id, info_id))


def serialize_pdf(objects: Sequence[bytes], trailer: bytes) -> bytes:
    """A PDF file of numbered `objects` (object n is objects[n-1]) with its cross-reference
    table; `trailer`: the trailer dictionary's entries besides /Size (e.g. b"/Root 1 0 R")."""
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref_at = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d %s >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, trailer, xref_at)
    return bytes(out)


# --------------------------------------------------------------------------- DOCX / PPTX


def normalise_zip(data: bytes) -> bytes:
    """Rewrite an OOXML zip with fixed member timestamps, so equal content gives equal bytes."""
    src = zipfile.ZipFile(io.BytesIO(data))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            member = zipfile.ZipInfo(info.filename, date_time=_ZIP_TIME)
            member.compress_type = zipfile.ZIP_DEFLATED
            member.external_attr = 0o644 << 16
            dst.writestr(member, src.read(info.filename))
    return buf.getvalue()


def _fix_core(props: object, title: str) -> None:
    props.title = title  # type: ignore[attr-defined]
    props.author = "ragctl"  # type: ignore[attr-defined]
    props.last_modified_by = "ragctl"  # type: ignore[attr-defined]
    props.created = FIXED_TIME  # type: ignore[attr-defined]
    props.modified = FIXED_TIME  # type: ignore[attr-defined]
    props.revision = 1  # type: ignore[attr-defined]


def make_docx(items: Iterable[tuple], title: str = "") -> bytes:
    """items: ("title", text) | ("heading", text, level) | ("text", text) | ("table", rows)."""
    import docx

    doc = docx.Document()
    _fix_core(doc.core_properties, title)
    for item in items:
        kind = item[0]
        if kind == "title":
            doc.add_heading(item[1], level=0)
        elif kind == "heading":
            doc.add_heading(item[1], level=item[2] if len(item) > 2 else 1)
        elif kind == "text":
            doc.add_paragraph(item[1])
        elif kind == "table":
            rows = item[1]
            table = doc.add_table(rows=len(rows), cols=len(rows[0]))
            for r, row in enumerate(rows):
                for c, value in enumerate(row):
                    table.cell(r, c).text = value
        else:
            raise ValueError(f"unknown docx item {kind!r}")
    buf = io.BytesIO()
    doc.save(buf)
    return normalise_zip(buf.getvalue())


def make_pptx(slides: Iterable[dict], title: str = "") -> bytes:
    """slides: dicts with optional keys title, subtitle, bullets (list), table (rows), notes."""
    from pptx import Presentation
    from pptx.util import Inches

    prs = Presentation()
    _fix_core(prs.core_properties, title)
    title_layout, content_layout, title_only = prs.slide_layouts[0], prs.slide_layouts[1], prs.slide_layouts[5]
    for spec in slides:
        if "subtitle" in spec:
            slide = prs.slides.add_slide(title_layout)
            slide.placeholders[1].text = spec["subtitle"]
        elif "bullets" in spec:
            slide = prs.slides.add_slide(content_layout)
            frame = slide.placeholders[1].text_frame
            bullets = list(spec["bullets"])
            frame.text = bullets[0] if bullets else ""
            for line in bullets[1:]:
                frame.add_paragraph().text = line
        else:
            slide = prs.slides.add_slide(title_only)
        slide.shapes.title.text = spec.get("title", "")
        if spec.get("table"):
            rows = spec["table"]
            shape = slide.shapes.add_table(len(rows), len(rows[0]), Inches(0.5), Inches(1.5), Inches(9), Inches(2))
            for r, row in enumerate(rows):
                for c, value in enumerate(row):
                    shape.table.cell(r, c).text = value
        if spec.get("notes"):
            slide.notes_slide.notes_text_frame.text = spec["notes"]
    buf = io.BytesIO()
    prs.save(buf)
    return normalise_zip(buf.getvalue())


# --------------------------------------------------------------------------- Outlook .msg

_END, _FREE, _FATSECT, _NOSTREAM = 0xFFFFFFFE, 0xFFFFFFFF, 0xFFFFFFFD, 0xFFFFFFFF


def make_cfb(streams: dict[str, bytes]) -> bytes:
    """A Compound File Binary (v3) file holding root-level streams of < 4096 bytes each."""
    names = sorted(streams, key=lambda n: (len(n), n.upper()))  # CFB sibling order
    mini = bytearray()
    minifat: list[int] = []
    starts: dict[str, int] = {}
    for name in names:
        data = streams[name]
        if len(data) >= 4096:
            raise ValueError("make_cfb only writes streams smaller than 4096 bytes")
        count = -(-len(data) // 64)
        starts[name] = len(minifat) if count else _END
        for k in range(count):
            minifat.append(len(minifat) + 1 if k < count - 1 else _END)
        mini += data + b"\0" * (count * 64 - len(data))

    dir_secs = -(-(1 + len(names)) // 4)
    mfat_secs = max(1, -(-len(minifat) * 4 // 512))
    mini_secs = -(-len(mini) // 512)
    if 1 + dir_secs + mfat_secs + mini_secs > 128:
        raise ValueError("too much data for a single FAT sector")
    fat = [_FATSECT]

    def chain(first: int, count: int) -> None:
        for k in range(count):
            fat.append(first + k + 1 if k < count - 1 else _END)

    dir_start = 1
    chain(dir_start, dir_secs)
    mfat_start = dir_start + dir_secs
    chain(mfat_start, mfat_secs)
    mini_start = mfat_start + mfat_secs
    chain(mini_start, mini_secs)
    fat += [_FREE] * (128 - len(fat))

    left: dict[int, int] = {}
    right: dict[int, int] = {}

    def build(lo: int, hi: int) -> int:  # balanced binary tree of the root's children
        if lo >= hi:
            return _NOSTREAM
        mid = (lo + hi) // 2
        left[mid] = build(lo, mid)
        right[mid] = build(mid + 1, hi)
        return mid + 1  # directory entry id; 0 is the root

    child = build(0, len(names))

    def entry(name: str, typ: int, lft: int, rgt: int, kid: int, start: int, size: int) -> bytes:
        raw = name.encode("utf-16-le") + b"\0\0"
        return (
            raw.ljust(64, b"\0")
            + struct.pack("<HBB3I", len(raw), typ, 1, lft, rgt, kid)
            + b"\0" * 36
            + struct.pack("<IQ", start, size)
        )

    dirs = [entry("Root Entry", 5, _NOSTREAM, _NOSTREAM, child, mini_start if mini else _END, len(mini))]
    for i, name in enumerate(names):
        dirs.append(entry(name, 2, left[i], right[i], _NOSTREAM, starts[name], len(streams[name])))
    while len(dirs) % 4:
        dirs.append(b"\0" * 64 + struct.pack("<HBB3I", 0, 0, 0, _NOSTREAM, _NOSTREAM, _NOSTREAM) + b"\0" * 48)

    header = (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
        + b"\0" * 16
        + struct.pack(
            "<HHHHH6xIIIIIIIII", 0x3E, 3, 0xFFFE, 9, 6, 0, 1, dir_start, 0, 4096,
            mfat_start, mfat_secs, _END, 0,
        )
        + struct.pack("<109I", 0, *([_FREE] * 108))
    )
    minifat_bytes = struct.pack(f"<{len(minifat)}I", *minifat)
    return (
        header
        + struct.pack("<128I", *fat)
        + b"".join(dirs)
        + minifat_bytes
        + b"\xff" * (mfat_secs * 512 - len(minifat_bytes))
        + bytes(mini)
        + b"\0" * (mini_secs * 512 - len(mini))
    )


def make_msg(subject: str, body: str, sender: str, to: str) -> bytes:
    """A minimal Outlook message (IPM.Note) with a plain-text body and no attachments."""
    props = {
        0x0037: subject,  # PidTagSubject
        0x1000: body,  # PidTagBody
        0x001A: "IPM.Note",  # PidTagMessageClass
        0x007D: f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n\r\n",  # transport headers
    }
    streams: dict[str, bytes] = {}
    segments = b""
    for pid, value in props.items():
        data = value.encode("utf-16-le")
        streams[f"__substg1.0_{pid:04X}001F"] = data
        segments += struct.pack("<HHIII", 0x001F, pid, 0x6, len(data) + 2, 0)
    streams["__properties_version1.0"] = b"\0" * 32 + segments
    return make_cfb(streams)
