"""Text helpers shared by the readers: decoding, binary detection, whitespace, error text."""

from __future__ import annotations

import codecs
import re

from ragctl.errors import ParseError

SNIFF_BYTES = 8192

_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

# C0 controls except \t \n \v \f \r, DEL, and the C1 range (what latin-1 makes of binary junk)
_CONTROL_RE = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f]")
_WS_RE = re.compile(r"\s+")
_BLANK_LINES_RE = re.compile(r"\n[ \t\f\v]*\n\s*")
XML_DECL = re.compile(r"^\s*<\?xml[^>]*\?>")  # "<?xml version=... encoding=...?>" before a re-parse of str


def bom_encoding(data: bytes) -> tuple[str, int] | None:
    """(encoding, BOM length) when ``data`` starts with a Unicode byte-order mark."""
    for bom, enc in _BOMS:
        if data.startswith(bom):
            return enc, len(bom)
    return None


def looks_binary(data: bytes) -> bool:
    """True when the first 8 KB contain NUL bytes (and no UTF-16/32 BOM explains them)."""
    head = data[:SNIFF_BYTES]
    if b"\x00" not in head:
        return False
    bom = bom_encoding(head)
    return bom is None or bom[0] == "utf-8"


def _mostly_control(text: str) -> bool:
    sample = text[:SNIFF_BYTES]
    if not sample:
        return False
    return len(_CONTROL_RE.findall(sample)) > max(8, len(sample) // 10)


def decode_text(data: bytes) -> str:
    """Decode text bytes: BOM → UTF-8 → cp1252 → latin-1. Never fails on legacy encodings.

    Raises ParseError("binary content, not text") for NUL bytes or mostly control characters.
    Line endings are normalised to ``\\n``.
    """
    if looks_binary(data):
        raise ParseError("binary content, not text")
    bom = bom_encoding(data)
    if bom is not None:
        enc, skip = bom
        text = data[skip:].decode(enc, errors="replace")
    else:
        for enc in ("utf-8", "cp1252"):
            try:
                text = data.decode(enc)
                break
            except UnicodeDecodeError:
                continue
        else:
            text = data.decode("latin-1")
    if _mostly_control(text):
        raise ParseError("binary content, not text")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\x00" in text:
        text = text.replace("\x00", "")
    return text


def is_probably_text(data: bytes) -> bool:
    """Cheap check used for files without a suffix."""
    try:
        decode_text(data[:SNIFF_BYTES])
    except ParseError:
        return False
    return True


def collapse_ws(text: str) -> str:
    """Collapse every run of whitespace to one space and strip the ends."""
    return _WS_RE.sub(" ", text).strip()


def clean_controls(text: str) -> str:
    """Drop control characters (keeping \\t and \\n)."""
    return _CONTROL_RE.sub("", text)


def split_paragraphs(text: str) -> list[str]:
    """Split on blank lines; strip trailing spaces of each line; drop empty paragraphs."""
    out = []
    for para in _BLANK_LINES_RE.split(text):
        para = "\n".join(line.rstrip() for line in para.strip("\n").split("\n")).strip()
        if para:
            out.append(para)
    return out


def one_line(exc: BaseException, limit: int = 200) -> str:
    """``Type: message`` on one line, at most ``limit`` characters, no traceback."""
    msg = collapse_ws(str(exc))
    out = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
    if len(out) > limit:
        out = out[: limit - 1].rstrip() + "…"
    return out
