"""The HTML reader: decoding (BOM, ``<meta charset>``), the page's main content, and one walk of
the lxml tree that turns headings, paragraphs, table rows and code blocks into blocks.

Also used by the e-mail reader (HTML bodies) and, for ``unwrap_markup_nodes``, by the DOCX
reader. lxml is imported inside the functions so that importing this module stays cheap.
"""

from __future__ import annotations

import re
from typing import Any

from ragctl.parsing.model import Block, heading, text_block, title_block
from ragctl.parsing.textutil import XML_DECL, bom_encoding, collapse_ws, decode_text, looks_binary

_HTML_DROP = frozenset(
    "script style nav head noscript template svg iframe object embed canvas select".split()
)
_HTML_HEADINGS = {f"h{n}": n for n in range(1, 7)}
_HTML_PRE = frozenset({"pre", "listing", "plaintext", "xmp"})
_HTML_BLOCK = frozenset(
    """p div li ul ol dl dt dd blockquote section article main aside header footer figure
    figcaption table thead tbody tfoot caption address details summary form fieldset legend
    hr center body html dialog menu hgroup search""".split()
)
_HTML_CELLS = frozenset({"td", "th"})
_CELL_SEP = "\x1f"
_META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.I)


def decode_html(data: bytes) -> str:
    """Decode HTML bytes: BOM, then a <meta charset>, then the generic text fallback chain."""
    if bom_encoding(data) is None and not looks_binary(data):
        m = _META_CHARSET.search(data[:4096])
        if m:
            import codecs

            name = m.group(1).decode("ascii", "replace").lower()
            if name in ("iso-8859-1", "latin-1", "latin1", "us-ascii", "ascii"):
                name = "cp1252"  # what browsers do
            try:
                codecs.lookup(name)
                text = data.decode(name)
                return text.replace("\r\n", "\n").replace("\r", "\n")
            except (LookupError, UnicodeDecodeError):
                pass
    return decode_text(data)


def unwrap_markup_nodes(root: Any) -> None:
    """Remove comments and processing instructions from an lxml tree, keeping their tails.

    In lxml the text after a node (``a<!-- x -->TAIL``) is that node's ``.tail``, and a walk that
    skips the node (``.text`` / ``iterwalk``'s start and end events, which never report
    comments) silently loses it: mdBook's ``<!-- ignore -->`` markers cost whole sentences.
    Unwrapping them first merges each tail into the text before it, so every later walk,
    ``itertext()`` and ``findtext()`` sees the document's text and never the comment's own."""
    from lxml import etree

    etree.strip_tags(root, etree.Comment, etree.ProcessingInstruction)


def html_blocks(text: str) -> list[Block]:
    """Blocks of an HTML document (given as str) in document order."""
    from lxml import etree
    from lxml import html as lxml_html

    text = XML_DECL.sub("", text, count=1)
    if not text.strip():
        return []
    try:
        # huge_tree: without it libxml2 silently drops everything after ~10 MB of input (an
        # HTML page with inline data: images loses its later text); size is bounded by --max-text-mb
        root = lxml_html.document_fromstring(text, parser=lxml_html.HTMLParser(huge_tree=True))
    except etree.ParserError:  # "Document is empty": only comments / doctype
        return []
    unwrap_markup_nodes(root)

    blocks: list[Block] = []
    page_title = root.findtext(".//title")
    if page_title and page_title.strip():
        blocks.append(title_block(page_title))
    buf: list[str] = []
    heading_level = 0
    heading_depth = 0
    row_depth = 0
    pre_depth = 0
    layout_rows: list[bool] = []  # per open <tr>: a layout row (its cells read as blocks)

    def flush(kind: str = "text", level: int = 0) -> None:
        if not buf:
            return
        raw = "".join(buf)
        buf.clear()
        if kind == "pre":
            body = "\n".join(line.rstrip() for line in raw.split("\n")).strip("\n")
            if body.strip():
                blocks.append(text_block(body))
            return
        if kind == "row":
            cells = [collapse_ws(c) for c in raw.split(_CELL_SEP)]
            body = " | ".join(c for c in cells if c)
        else:
            body = collapse_ws(raw.replace(_CELL_SEP, " "))
        if body:
            blocks.append(heading(body, level) if kind == "heading" else text_block(body))

    start = main_content(root)
    walker = etree.iterwalk(start, events=("start", "end"))
    for event, el in walker:
        tag = el.tag
        skip = (
            not isinstance(tag, str)
            or tag in _HTML_DROP
            or el.get("hidden") is not None
            or el.get("aria-hidden") == "true"
        )
        if event == "start":
            if skip:
                walker.skip_subtree()
                continue
            if tag in _HTML_HEADINGS:
                if heading_depth == 0 and row_depth == 0:
                    flush()
                    heading_level = _HTML_HEADINGS[tag]
                else:
                    buf.append(" ")
                heading_depth += 1
            elif tag == "tr":
                layout_rows.append(row_depth == 0 and heading_depth == 0 and _is_layout_row(el))
                if layout_rows[-1]:
                    flush()
                else:
                    if row_depth == 0 and heading_depth == 0:
                        flush()
                    row_depth += 1
            elif tag in _HTML_PRE:
                if pre_depth == 0 and not (heading_depth or row_depth):
                    flush()
                elif pre_depth == 0:
                    buf.append(" ")
                pre_depth += 1
            elif tag in _HTML_BLOCK or (tag in _HTML_CELLS and row_depth == 0):
                if heading_depth or row_depth or pre_depth:
                    buf.append(" " if not pre_depth else "\n")
                else:
                    flush()
            elif tag == "br":
                buf.append("\n")
            if el.text:
                buf.append(el.text)
        else:  # end
            if not skip:
                if tag in _HTML_HEADINGS:
                    heading_depth -= 1
                    if heading_depth == 0 and row_depth == 0:
                        flush("heading", heading_level)
                        heading_level = 0
                    else:
                        buf.append(" ")
                elif tag == "tr":
                    if layout_rows.pop():
                        flush()
                    else:
                        row_depth -= 1
                        if row_depth == 0 and heading_depth == 0:
                            flush("row")
                elif tag in _HTML_CELLS and row_depth:
                    buf.append(_CELL_SEP if row_depth == 1 else " ")
                elif tag in _HTML_PRE:
                    pre_depth -= 1
                    if pre_depth == 0 and not (heading_depth or row_depth):
                        flush("pre")
                    elif pre_depth == 0:
                        buf.append(" ")
                elif tag in _HTML_BLOCK or tag in _HTML_CELLS:
                    if heading_depth or row_depth or pre_depth:
                        buf.append(" " if not pre_depth else "\n")
                    else:
                        flush()
            # a skipped element's tail is document text (``<script>..</script>TAIL``); the
            # start element's tail lies outside <main>
            if el.tail and el is not start:
                buf.append(el.tail)
    flush()
    return blocks


_LAYOUT_ROW = "boolean(.//table | .//h1 | .//h2 | .//h3 | .//h4 | .//h5 | .//h6)"


def _is_layout_row(tr: Any) -> bool:
    """A table row that lays out a page rather than holding data: one of its cells holds a
    table or a heading (old documentation sites, nearly every HTML e-mail). Its cells are read
    as blocks; joined into one "a | b" row, its headings and code blocks ran together."""
    return bool(tr.xpath(_LAYOUT_ROW))


def main_content(root: Any) -> Any:
    """The page's `<main>` (or `role="main"`) element when it holds a fair share of the page's
    text (at least a fifth): site chrome outside it (menus, search boxes, keyboard-shortcut
    help, footers) would otherwise open every page's first chunk with the same words. Else the
    whole document."""
    found = root.xpath("//main | //*[@role='main']")
    if len(found) != 1:
        return root
    body = root.find("body")
    whole = len("".join((body if body is not None else root).itertext()).split())
    mine = len("".join(found[0].itertext()).split())
    return found[0] if whole and mine * 5 >= whole else root


def read_html(data: bytes) -> list[Block]:
    return html_blocks(decode_html(data))
