"""Fast native readers, one function per format, and the suffix registry.

Every reader returns a list of :class:`Block`. "text" readers receive the decoded ``str``
(decoding, binary detection and empty checks happen once, in ``ragctl.parsing``); "bytes"
readers receive the raw file bytes. Third-party libraries (lxml, pypdfium2, python-docx,
python-pptx) are imported inside the readers so that importing this module stays cheap.
Adding a format = writing a reader and adding one entry to ``READERS``.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ragctl.errors import ParseError
from ragctl.parsing.html import html_blocks, read_html, unwrap_markup_nodes
from ragctl.parsing.model import Block, heading, text_block, title_block
from ragctl.parsing.ocr import IMAGE_SUFFIXES, read_image
from ragctl.parsing.pdf import read_pdf
from ragctl.parsing.textutil import (
    XML_DECL,
    clean_controls,
    collapse_ws,
    decode_text,
    looks_binary,
    split_paragraphs,
)


@dataclass(frozen=True)
class Reader:
    parser: str  # the name reported in ParsedDocument.parser
    func: Callable[..., list[Block]]
    input: str  # "text": gets the decoded str; "bytes": gets the raw bytes
    ocr: bool = False  # the reader also gets the OcrOptions (PDF pages, images)


# --------------------------------------------------------------------------- plain text


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # colour codes in logs


def read_text(text: str) -> list[Block]:
    if "\x1b" in text:
        text = _ANSI.sub("", text)
    return [text_block(p) for p in split_paragraphs(clean_controls(text))]


# --------------------------------------------------------------------------- markdown

_MD_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_MD_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_MD_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_MD_HR = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_MD_LINKDEF = re.compile(r"^ {0,3}\[(?!\^)[^\]]+\]:\s+\S+")  # not "[^1]: text": a footnote is prose
# An HTML comment is dropped, but not inside a fenced code block or a code span (there it is
# code: "```diff ... <!-- YAML -->"); whichever of the three starts first takes its text.
_MD_COMMENT = re.compile(
    r"(?P<keep>^ {0,3}(?P<fence>`{3,}|~{3,})[^\n]*\n.*?(?:^ {0,3}(?P=fence)[`~]*[ \t]*$|\Z)"
    r"|(?<!`)(?P<tick>`+)[^`\n]+(?P=tick)(?!`))"  # a code span on one line (linear time)
    r"|<!--.*?-->",
    re.M | re.S,
)
_MD_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_MD_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_MD_REFLINK = re.compile(r"\[([^\]]+)\]\[[^\]]*\]")
_MD_AUTOLINK = re.compile(r"<((?:https?|mailto|ftp):[^>\s]+)>")
# only real HTML tags are stripped: "List<T>" or "<name>" placeholders in prose stay
_MD_TAG = re.compile(
    r"</?(?:a|abbr|b|br|center|code|del|details|div|em|font|h[1-6]|hr|i|img|ins|kbd|mark|p|"
    r"picture|small|source|span|strong|sub|summary|sup|table|tbody|td|th|thead|tr|u|video)"
    r"(?:\s[^<>]*)?/?>",
    re.I,
)


_MD_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)
_MD_HIDDEN = re.compile("\x00([0-9]+)\x00")  # clean_controls removed every real NUL


def _md_inline(text: str) -> str:
    # Code spans are literal: brackets in "[`f(a[, b])`][ref]" or a "`<div>`" inside them must
    # not be read as link or tag syntax (that cut words out), so they are set aside first.
    spans: list[str] = []
    if "`" in text and ("[" in text or "<" in text):

        def hide(m: re.Match[str]) -> str:
            spans.append(m.group(0))
            return f"\x00{len(spans) - 1}\x00"

        text = _MD_CODE_SPAN.sub(hide, text)
    if "[" in text:
        text = _MD_IMAGE.sub(r"\1", text)
        text = _MD_LINK.sub(r"\1", text)
        text = _MD_REFLINK.sub(r"\1", text)
    if "<" in text:
        text = _MD_AUTOLINK.sub(r"\1", text)
        text = _MD_TAG.sub("", text)
    if spans:
        text = _MD_HIDDEN.sub(lambda m: spans[int(m.group(1))], text)
    return text.strip()


_MD_FRONT_TITLE = re.compile(r"^title:[ \t]*(.+?)[ \t]*$", re.M)


def read_markdown(text: str) -> list[Block]:
    text = clean_controls(text)
    end = text.rfind("-->") + 3  # no comment closes after it: an unclosed "<!--" stays text
    if end > 3 and "<!--" in text[:end]:
        text = _MD_COMMENT.sub(lambda m: m.group("keep") or "", text[:end]) + text[end:]
    lines = text.split("\n")
    blocks: list[Block] = []
    para: list[str] = []

    def flush() -> None:
        if para:
            body = _md_inline("\n".join(line.rstrip() for line in para))
            if body:
                blocks.append(text_block(body))
            para.clear()

    n = len(lines)
    i = 0
    # YAML front matter: keep it (title:, tags: ...) as one text block
    if n > 2 and lines[0].strip() == "---":
        for j in range(1, min(n, 200)):
            if lines[j].strip() in ("---", "..."):
                front = "\n".join(x.rstrip() for x in lines[1:j]).strip()
                if front:
                    named = _MD_FRONT_TITLE.search(front)
                    if named and named.group(1).strip("'\" "):
                        blocks.append(title_block(named.group(1).strip("'\" ")))
                    blocks.append(text_block(front))
                i = j + 1
                break
    while i < n:
        line = lines[i]
        i += 1
        fence = _MD_FENCE.match(line)
        if fence:
            flush()
            marker = fence.group(1)
            close = re.compile(r"^ {0,3}" + re.escape(marker[0]) + "{" + str(len(marker)) + r",}[ \t]*$")
            code: list[str] = []
            while i < n and not close.match(lines[i]):
                code.append(lines[i].rstrip())
                i += 1
            i += 1  # the closing fence (or past the end)
            body = "\n".join(code).strip("\n")
            if body.strip():
                blocks.append(text_block(body))
            continue
        if not line.strip():
            flush()
            continue
        atx = _MD_ATX.match(line)
        if atx:
            flush()
            title = _md_inline(atx.group(2) or "")
            if title:
                blocks.append(heading(title, len(atx.group(1))))
            continue
        if para and _MD_SETEXT.match(line):
            if len(para) <= 3:
                title = _md_inline(collapse_ws(" ".join(para)))
                para.clear()
                if title:
                    blocks.append(heading(title, 1 if line.strip()[0] == "=" else 2))
            else:  # a long "paragraph" over a rule is not a heading
                flush()
            continue
        if not para and _MD_HR.match(line):
            continue
        if _MD_LINKDEF.match(line):
            continue
        para.append(line)
    flush()
    return blocks


# --------------------------------------------------------------------------- reStructuredText

_RST_ADORN = re.compile(r"^([=\-`:'\"~^_*+#<>.])\1{2,}[ \t]*$")
_RST_DIRECTIVE = re.compile(r"^\s*\.\.\s+([\w:.+-]+)::\s*(.*)$")
# directives whose argument is prose (kept); others' arguments are languages, paths, options
_RST_TEXT_DIRECTIVES = frozenset(
    "note warning tip hint important attention caution danger error admonition topic sidebar "
    "rubric seealso versionadded versionchanged deprecated".split()
)
_RST_TARGET = re.compile(r"^\s*\.\.\s+(?:_[^:]*:|\|[^|]*\|)")  # link targets, substitution definitions
_RST_NOTE = re.compile(r"^\s*\.\.\s+\[[^\]]*\]\s*")  # ".. [1] text": a footnote / citation is prose
_RST_REPLACE = re.compile(r"^\s*\.\.\s+\|([^|]+)\|\s+replace::\s*(.*?)\s*$", re.M)
_RST_SUBST = re.compile(r"\|([^|\s](?:[^|]*[^|\s])?)\|(?:__?)?")
_RST_LINK = re.compile(r"`([^`<]+?)\s*<[^>]+>`_{1,2}")
_RST_ROLE = re.compile(r":[\w.+-]+:`([^`]+)`")
_RST_LITERAL = re.compile(r"``(.+?)``")


def _rst_inline(text: str, subs: dict[str, str] | None = None) -> str:
    if subs and "|" in text:  # |name| -> the text of ".. |name| replace:: text"
        text = _RST_SUBST.sub(lambda m: subs.get(m.group(1), m.group(0)), text)
    if "`" in text:
        text = _RST_LINK.sub(r"\1", text)
        text = _RST_ROLE.sub(r"\1", text)
        text = _RST_LITERAL.sub(r"\1", text)
    return text.strip()


def read_rst(text: str) -> list[Block]:
    text = clean_controls(text)
    subs = {m.group(1): m.group(2) for m in _RST_REPLACE.finditer(text)} if "replace::" in text else {}

    def inline(part: str) -> str:
        return _rst_inline(part, subs)

    lines = text.split("\n")
    blocks: list[Block] = []
    para: list[str] = []
    styles: list[tuple[str, bool]] = []  # adornment styles in order of first use = levels

    def level_of(style: tuple[str, bool]) -> int:
        if style not in styles:
            styles.append(style)
        return styles.index(style) + 1

    def flush() -> None:
        if para:
            body = inline("\n".join(para))
            if body:
                blocks.append(text_block(body))
            para.clear()

    n = len(lines)
    i = 0
    while i < n:
        line = lines[i].rstrip()
        stripped = line.strip()
        if not stripped:
            flush()
            i += 1
            continue
        adorn = _RST_ADORN.match(line)
        # over- and underlined title
        if (
            adorn
            and not para
            and i + 2 < n
            and lines[i + 1].strip()
            and not _RST_ADORN.match(lines[i + 1].rstrip())
            and lines[i + 2].rstrip() == line
        ):
            title = inline(lines[i + 1])
            if title:
                blocks.append(heading(title, level_of((adorn.group(1), True))))
            i += 3
            continue
        # underlined title: previous line blank (para empty), next line an adornment
        if not para and not adorn and i + 1 < n and not line[0].isspace():
            under = _RST_ADORN.match(lines[i + 1].rstrip())
            if under and len(lines[i + 1].rstrip()) >= min(len(line), 3):
                title = inline(line)
                if title:
                    blocks.append(heading(title, level_of((under.group(1), False))))
                i += 2
                continue
        if adorn and not para:  # a transition
            i += 1
            continue
        directive = _RST_DIRECTIVE.match(line)
        if directive:
            flush()
            arg = directive.group(2).strip()
            if arg and directive.group(1).lower() in _RST_TEXT_DIRECTIVES:
                para.append(arg)
            i += 1
            continue
        if _RST_TARGET.match(line) or stripped == "..":
            i += 1
            continue
        note = _RST_NOTE.match(line)
        if note:
            flush()
            line = stripped = line[note.end() :]
            if not stripped:
                i += 1
                continue
        para.append(stripped if line.startswith("   ") else line)
        i += 1
    flush()
    return blocks


# --------------------------------------------------------------------------- DOCX

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_MC_FALLBACK = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"
_HEADING_STYLE = re.compile(r"^heading\s*([1-9])$", re.I)


_DOCX_CHARS = {_W + "tab": "\t", _W + "ptab": "\t", _W + "br": "\n", _W + "cr": "\n", _W + "noBreakHyphen": "-"}


def _docx_para_text(p: Any) -> str:
    # w:delText (deleted revisions) and w:instrText (field codes) are not text on the page
    parts: list[str] = []
    for el in p.iter(_W + "t", *_DOCX_CHARS):
        if el.tag == _W + "t":
            if el.text:
                parts.append(el.text)
        else:
            parts.append(_DOCX_CHARS[el.tag])
    return "".join(parts)


def _outline_to_level(val: str | None) -> int:
    """w:outlineLvl 0..8 → heading level 1..6; 9 means body text."""
    try:
        n = int(val or "9")
    except ValueError:
        return 0
    return min(n + 1, 6) if 0 <= n < 9 else 0


def _docx_style_levels(document: Any) -> dict[str, int]:
    """styleId → heading level, from names ("Heading 2", "Title") or outline levels, following
    basedOn so that custom and localised heading styles count too."""
    info: dict[str, tuple[str, int | None, str | None]] = {}
    try:
        styles_el = document.styles.element
    except Exception:  # noqa: BLE001 - no styles part: no headings by style
        return {}
    for st in styles_el.iterchildren(_W + "style"):
        if st.get(_W + "type") not in (None, "paragraph"):
            continue
        sid = st.get(_W + "styleId") or ""
        name_el = st.find(_W + "name")
        name = (name_el.get(_W + "val") if name_el is not None else "") or ""
        outline_el = st.find(f"{_W}pPr/{_W}outlineLvl")
        outline = _outline_to_level(outline_el.get(_W + "val")) if outline_el is not None else None
        based_el = st.find(_W + "basedOn")
        based = based_el.get(_W + "val") if based_el is not None else None
        info[sid] = (name, outline, based)

    def own_level(sid: str) -> int | None:
        name, outline, _ = info[sid]
        if name.lower() == "title" or sid.lower() == "title":
            return 1
        m = _HEADING_STYLE.match(name) or _HEADING_STYLE.match(sid)
        if m:
            return min(int(m.group(1)), 6)
        return outline

    levels: dict[str, int] = {}
    for sid in info:
        current: str | None = sid
        level = None
        for _ in range(10):  # basedOn chains are short; guard against cycles
            if current is None or current not in info:
                break
            level = own_level(current)
            if level is not None:
                break
            current = info[current][2]
        levels[sid] = level or 0
    return levels


# block-level containers whose paragraphs are document text (w:del / w:moveFrom are not)
_DOCX_WRAPPERS = frozenset({_W + "customXml", _W + "ins", _W + "moveTo", _W + "smartTag"})


def read_docx(data: bytes) -> list[Block]:
    import docx  # python-docx

    document = docx.Document(io.BytesIO(data))
    levels = _docx_style_levels(document)
    body = document.element.body
    unwrap_markup_nodes(body)  # the walk reads w:t .text: a comment inside would cut it
    for fallback in list(body.iter(_MC_FALLBACK)):  # duplicated text-box content
        parent = fallback.getparent()
        if parent is not None:
            parent.remove(fallback)

    blocks: list[Block] = []
    doc_title = str(document.core_properties.title or "").strip()
    if doc_title:
        blocks.append(title_block(doc_title))

    def style_level(p: Any) -> int:
        ppr = p.find(_W + "pPr")
        if ppr is None:
            return 0
        outline = ppr.find(_W + "outlineLvl")
        if outline is not None:
            return _outline_to_level(outline.get(_W + "val"))
        style_el = ppr.find(_W + "pStyle")
        if style_el is None:
            return 0
        return levels.get(style_el.get(_W + "val") or "", 0)

    def walk(container: Any) -> None:
        for child in container.iterchildren():
            tag = child.tag
            if tag == _W + "p":
                txt = _docx_para_text(child)
                level = style_level(child)
                if level:
                    txt = collapse_ws(txt)
                    if txt:
                        blocks.append(heading(txt, level))
                else:
                    txt = "\n".join(x.strip() for x in txt.split("\n")).strip()
                    if txt:
                        blocks.append(text_block(txt))
            elif tag == _W + "tbl":
                for tr in child.iterchildren(_W + "tr"):  # a nested table is in its cell's text
                    cells: list[str] = []
                    # one w:tc per cell, merged ones too (their continuations are empty):
                    # two neighbours with the same value are two values ("Yes | Yes")
                    for tc in tr.iterchildren(_W + "tc"):
                        cell = collapse_ws(" ".join(_docx_para_text(p) for p in tc.iter(_W + "p")))
                        if cell:
                            cells.append(cell)
                    if cells:
                        blocks.append(text_block(" | ".join(cells)))
            elif tag == _W + "sdt":
                content = child.find(_W + "sdtContent")
                if content is not None:
                    walk(content)
            elif tag in _DOCX_WRAPPERS:  # paragraphs inside custom XML or a tracked insertion
                walk(child)

    walk(body)
    return blocks


# --------------------------------------------------------------------------- PPTX


def read_pptx(data: bytes) -> list[Block]:
    from pptx import Presentation
    from pptx.shapes.group import GroupShape

    prs = Presentation(io.BytesIO(data))
    blocks: list[Block] = []

    def frame_text(tf: Any) -> str:
        lines = [collapse_ws(p.text) for p in tf.paragraphs]
        return "\n".join(x for x in lines if x)

    def shape_blocks(shapes: Iterable[Any], title_id: int | None) -> None:
        for shape in shapes:
            if title_id is not None and shape.shape_id == title_id:
                continue
            if isinstance(shape, GroupShape):
                shape_blocks(shape.shapes, None)
                continue
            if getattr(shape, "has_table", False):
                for row in shape.table.rows:
                    cells = [collapse_ws(c.text) for c in row.cells]
                    line = " | ".join(c for c in cells if c)
                    if line:
                        blocks.append(text_block(line))
            elif getattr(shape, "has_text_frame", False):
                txt = frame_text(shape.text_frame)
                if txt:
                    blocks.append(text_block(txt))

    for slide in prs.slides:
        title_shape = slide.shapes.title
        title_id = None
        if title_shape is not None:
            title_id = title_shape.shape_id
            title = collapse_ws(title_shape.text_frame.text) if title_shape.has_text_frame else ""
            if title:
                blocks.append(heading(title, 1))
        shape_blocks(slide.shapes, title_id)
        if slide.has_notes_slide:
            notes_tf = slide.notes_slide.notes_text_frame
            if notes_tf is not None:
                notes = frame_text(notes_tf)
                if notes:
                    blocks.append(text_block("Notes: " + notes))
    return blocks


# --------------------------------------------------------------------------- CSV / TSV


def _read_delimited(text: str, default: type[csv.Dialect], sniff: bool) -> list[Block]:
    limit = 64 * 1024 * 1024
    if csv.field_size_limit() < limit:
        csv.field_size_limit(min(limit, sys.maxsize))
    dialect: Any = default
    if sniff:
        try:
            dialect = csv.Sniffer().sniff(text[:16384], delimiters=",;\t|")
        except csv.Error:
            dialect = default
    rows = csv.reader(io.StringIO(text), dialect)
    header: list[str] | None = None
    blocks: list[Block] = []
    for row in rows:
        cells = [collapse_ws(c) for c in row]
        if not any(cells):
            continue
        if header is None:
            header = [c or f"column {i + 1}" for i, c in enumerate(cells)]
            continue
        parts = []
        for i, value in enumerate(cells):
            if value:
                name = header[i] if i < len(header) else f"column {i + 1}"
                parts.append(f"{name}: {value}")
        if parts:
            blocks.append(text_block("; ".join(parts)))
    if header is not None and not blocks:  # a header-only file still says something
        blocks.append(text_block("; ".join(header)))
    return blocks


def read_csv(text: str) -> list[Block]:
    return _read_delimited(text, csv.excel, sniff=True)


def read_tsv(text: str) -> list[Block]:
    return _read_delimited(text, csv.excel_tab, sniff=False)


# --------------------------------------------------------------------------- JSON / JSONL

_JSON_LINES_PER_BLOCK = 40


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return collapse_ws(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _flatten(value: Any, path: str, out: list[str]) -> None:
    if isinstance(value, dict):
        for key, sub in value.items():
            _flatten(sub, f"{path}.{key}" if path else str(key), out)
    elif isinstance(value, list):
        if value and all(not isinstance(v, (dict, list)) for v in value):
            joined = ", ".join(s for s in (_scalar(v) for v in value) if s)
            if joined:
                out.append(f"{path}: {joined}" if path else joined)
        else:
            for i, sub in enumerate(value):
                _flatten(sub, f"{path}[{i}]", out)
    else:
        s = _scalar(value)
        if s:
            out.append(f"{path}: {s}" if path else s)


def _line_blocks(lines: list[str]) -> Iterator[Block]:
    for i in range(0, len(lines), _JSON_LINES_PER_BLOCK):
        yield text_block("\n".join(lines[i : i + _JSON_LINES_PER_BLOCK]))


def read_json(text: str) -> list[Block]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except RecursionError as exc:
        raise ParseError("invalid JSON: nested too deeply") from exc
    # One block per top-level record: a root list's items, a root object's container values
    # (a list of objects gives one block per item); neighbouring scalars share a block.
    blocks: list[Block] = []
    pending: list[str] = []

    def emit(lines: list[str]) -> None:
        if pending:
            blocks.extend(_line_blocks(pending))
            pending.clear()
        blocks.extend(_line_blocks(lines))

    if isinstance(value, dict):
        items: list[tuple[str, Any]] = []
        for key, sub in value.items():
            if isinstance(sub, list) and any(isinstance(v, (dict, list)) for v in sub):
                items.extend((f"{key}[{i}]", v) for i, v in enumerate(sub))
            else:
                items.append((str(key), sub))
    elif isinstance(value, list):
        items = [("", v) for v in value]
    else:
        items = [("", value)]
    for path, sub in items:
        lines: list[str] = []
        _flatten(sub, path, lines)
        if isinstance(sub, (dict, list)):
            emit(lines)
        else:
            pending.extend(lines)
    if pending:
        blocks.extend(_line_blocks(pending))
    return blocks


def read_jsonl(text: str) -> list[Block]:
    blocks: list[Block] = []
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ParseError(f"invalid JSON on line {lineno}: {exc.msg}") from exc
        lines: list[str] = []
        _flatten(value, "", lines)
        blocks.extend(_line_blocks(lines))
    return blocks


# --------------------------------------------------------------------------- e-mail


def read_eml(data: bytes) -> list[Block]:
    import email
    from email import policy

    if looks_binary(data):
        raise ParseError("binary content, not text")
    msg = email.message_from_bytes(data, policy=policy.default)
    blocks: list[Block] = []
    subject = collapse_ws(str(msg.get("subject", "") or ""))
    if subject:
        blocks.append(heading(subject, 1))
    head = []
    for name in ("From", "To", "Cc", "Date"):
        value = msg.get(name)
        if value:
            head.append(f"{name}: {collapse_ws(str(value))}")
    if head:
        blocks.append(text_block("\n".join(head)))
    part = msg.get_body(preferencelist=("plain", "html"))
    if part is None and not msg.is_multipart() and msg.get_content_maintype() == "text":
        part = msg
    if part is not None:
        try:
            body = part.get_content()
        except (LookupError, UnicodeError, AssertionError):
            payload = part.get_payload(decode=True)
            body = decode_text(payload if isinstance(payload, bytes) else b"")
        if isinstance(body, bytes):
            body = decode_text(body)
        if part.get_content_subtype() == "html":
            blocks.extend(html_blocks(body))
        else:
            blocks.extend(read_text(body))
    return blocks


# --------------------------------------------------------------------------- XML

_XML_SHORT = 80


def read_xml(data: bytes) -> list[Block]:
    from lxml import etree

    if looks_binary(data):
        raise ParseError("binary content, not text")

    def parser(resolve: bool | str) -> Any:
        return etree.XMLParser(
            resolve_entities=resolve,
            no_network=True,
            load_dtd=False,
            remove_comments=True,
            remove_pis=True,
            huge_tree=False,
        )

    root: Any = None
    parsed = False
    # Entities declared in the document itself (<!ENTITY date "10 February 1998">, as in the
    # W3C XML spec: 509 uses) are text: expand them when lxml can do so without ever loading
    # an external one (lxml >= 5). libxml2 stops an exponential expansion ("billion laughs");
    # then, or when an external entity is referenced, entities stay unexpanded as before.
    if etree.LXML_VERSION >= (5,):
        try:
            root = etree.fromstring(data, parser("internal"))
            parsed = True
        except etree.XMLSyntaxError:
            pass
    if not parsed:
        try:
            root = etree.fromstring(data, parser(False))
        except etree.XMLSyntaxError as first:
            # maybe undeclared legacy encoding: decode ourselves and retry once
            text = XML_DECL.sub("", decode_text(data), count=1)
            try:
                root = etree.fromstring(text, parser(False))
            except etree.XMLSyntaxError:
                raise ParseError(f"invalid XML: {collapse_ws(str(first))[:160]}") from first
    if root is None:
        return []
    blocks: list[Block] = []
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue
        parts = [el.text or ""]
        parts.extend(child.tail or "" for child in el)
        own = collapse_ws(" ".join(parts))
        if not own:
            continue
        if len(own) <= _XML_SHORT and own.count(" ") < 8:
            own = f"{etree.QName(el).localname}: {own}"
        blocks.append(text_block(own))
    return blocks


# --------------------------------------------------------------------------- registry

READERS: dict[str, Reader] = {
    ".txt": Reader("text", read_text, "text"),
    ".text": Reader("text", read_text, "text"),
    ".log": Reader("text", read_text, "text"),
    ".md": Reader("markdown", read_markdown, "text"),
    ".markdown": Reader("markdown", read_markdown, "text"),
    ".rst": Reader("rst", read_rst, "text"),
    ".html": Reader("html", read_html, "bytes"),
    ".htm": Reader("html", read_html, "bytes"),
    ".xhtml": Reader("html", read_html, "bytes"),
    ".pdf": Reader("pdf:pypdfium2", read_pdf, "bytes", ocr=True),
    ".docx": Reader("docx", read_docx, "bytes"),
    ".pptx": Reader("pptx", read_pptx, "bytes"),
    ".csv": Reader("csv", read_csv, "text"),
    ".tsv": Reader("tsv", read_tsv, "text"),
    ".json": Reader("json", read_json, "text"),
    ".jsonl": Reader("jsonl", read_jsonl, "text"),
    ".ndjson": Reader("jsonl", read_jsonl, "text"),
    ".eml": Reader("email", read_eml, "bytes"),
    ".xml": Reader("xml", read_xml, "bytes"),
    # images are documents read by OCR (parsing/ocr.py); multi-page TIFF/GIF/WebP: a page a frame
    **{suffix: Reader("image:rapidocr", read_image, "bytes", ocr=True) for suffix in sorted(IMAGE_SUFFIXES)},
}
