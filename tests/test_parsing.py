"""Tests for ragctl.parsing: real files on disk, every native format, the error contract,
the offline unstructured fallback and the sample corpus."""

from __future__ import annotations

import email.message
import io
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from ragctl.bench.samples import make_docx, make_msg, make_pdf, make_pptx
from ragctl.errors import ParseError, UnsupportedFormat
from ragctl.parsing import (
    SUPPORTED_SUFFIXES,
    Block,
    ParsedDocument,
    fallback,
    is_supported,
    parse_bytes,
    parse_file,
)
from ragctl.parsing.native import READERS, Reader

REPO = Path(__file__).resolve().parent.parent
SAMPLE_DOCS = REPO / "sample_docs"


def write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def headings(doc: ParsedDocument) -> list[tuple[int, str]]:
    return [(b.level, b.text) for b in doc.blocks if b.kind == "heading"]


def texts(doc: ParsedDocument) -> list[str]:
    return [b.text for b in doc.blocks if b.kind == "text"]


def run_python(code: str, env: dict[str, str] | None = None, timeout: float = 60) -> str:
    """Run code in a fresh interpreter (clean sys.modules), return stdout; fail on error."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


# --------------------------------------------------------------------------- import / API


def test_import_is_light_and_binary_junk_never_reaches_unstructured(tmp_path: Path) -> None:
    for name, data in {
        "logo.ico": b"\x00\x00\x01\x00" + bytes(range(256)) * 4,  # (images are read by OCR: tests/test_ocr.py)
        "bundle.zip": b"PK\x03\x04" + bytes(range(256)),
        "tool.exe": b"MZ\x90\x00" + bytes(256),
        "blob.bin": bytes(range(256)) * 8,
        "noext": b"\x00\x01\x02\xff" * 100,
    }.items():
        write(tmp_path, name, data)
    out = run_python(
        f"""
        import sys, json
        from pathlib import Path
        import ragctl.parsing as p
        heavy = ("torch", "faiss", "unstructured", "lxml", "docx", "pptx", "pypdfium2", "spacy")
        loaded_at_import = [m for m in heavy if m in sys.modules]
        reasons = {{}}
        for f in sorted(Path({str(tmp_path)!r}).iterdir()):
            try:
                p.parse_file(f)
                reasons[f.name] = "parsed?!"
            except p.UnsupportedFormat as exc:
                reasons[f.name] = str(exc)
        print(json.dumps({{"loaded": loaded_at_import, "reasons": reasons,
                          "unstructured": "unstructured" in sys.modules}}))
        """
    )
    result = json.loads(out)
    assert result["loaded"] == []
    assert result["unstructured"] is False
    assert result["reasons"]["logo.ico"] == "unsupported file type '.ico'"
    assert result["reasons"]["bundle.zip"] == "unsupported file type '.zip'"
    assert result["reasons"]["tool.exe"] == "unsupported file type '.exe'"
    assert result["reasons"]["blob.bin"] == "unsupported file type '.bin'"
    assert "binary" in result["reasons"]["noext"]


def test_supported_suffixes_and_is_supported(tmp_path: Path) -> None:
    expected = {".txt", ".text", ".log", ".md", ".markdown", ".rst", ".html", ".htm", ".xhtml",
                ".pdf", ".docx", ".pptx", ".csv", ".tsv", ".json", ".jsonl", ".eml", ".xml",
                ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif"}  # images: OCR
    assert expected <= SUPPORTED_SUFFIXES
    assert set(READERS) == SUPPORTED_SUFFIXES
    assert is_supported(Path("a/b/Report.PDF"))
    assert is_supported(Path("notes.md"))
    assert is_supported(Path("mail.msg"))  # fallback format
    assert is_supported(Path("scan.TIF"))
    assert not is_supported(Path("drawing.svg"))
    assert not is_supported(Path("archive.tar.gz"))
    assert is_supported(write(tmp_path, "README", "plain words\n"))
    assert not is_supported(write(tmp_path, "core", b"\x7fELF\x00\x00\x01" * 50))


def test_blocks_are_frozen_dataclasses() -> None:
    doc = parse_bytes(b"# Title\n\nBody", ".md")
    assert doc.blocks == [Block("heading", "Title", 1), Block("text", "Body", 0)]
    assert doc.parser == "markdown"
    with pytest.raises(AttributeError):
        doc.blocks[0].text = "x"  # type: ignore[misc]


def test_suffix_is_normalised() -> None:
    assert parse_bytes(b"# Hi\n\nthere", "MD").parser == "markdown"
    assert parse_bytes(b"# Hi\n\nthere", ".Markdown").parser == "markdown"


# --------------------------------------------------------------------------- text formats


def test_plain_text_paragraphs(tmp_path: Path) -> None:
    path = write(tmp_path, "notes.txt", "First line\nsecond line\n\n\n  \nSecond paragraph.  \n")
    doc = parse_file(path)
    assert doc.parser == "text"
    assert texts(doc) == ["First line\nsecond line", "Second paragraph."]


def test_markdown_structure(tmp_path: Path) -> None:
    md = textwrap.dedent(
        """\
        ---
        title: Release notes
        ---
        # Widget Service Guide

        Intro paragraph with a [link](https://example.com/docs) and ![diagram](d.png)
        that continues on a second line.

        Setext Section
        ==============

        Text under setext.

        Sub Setext
        ----------

        ```python
        def main():

            return 42
        ```

        * item one
        * item two

        ---

        ### Closed heading ###
        <!-- hidden comment -->
        Last words.
        """
    )
    doc = parse_file(write(tmp_path, "guide.md", md))
    assert doc.parser == "markdown"
    assert headings(doc) == [
        (1, "Widget Service Guide"),
        (1, "Setext Section"),
        (2, "Sub Setext"),
        (3, "Closed heading"),
    ]
    body = texts(doc)
    assert body[0] == "title: Release notes"
    assert "Intro paragraph with a link and diagram\nthat continues on a second line." in body
    assert "def main():\n\n    return 42" in body  # a fenced block stays one block, blank line included
    assert "* item one\n* item two" in body
    assert "Last words." in body
    assert not any("hidden comment" in t or "https://" in t for t in body)


def test_rst_structure(tmp_path: Path) -> None:
    rst = textwrap.dedent(
        """\
        ===========
        Ops Manual
        ===========

        Welcome to the manual.

        Installation
        ------------

        Run the installer. See `the guide <https://example.com>`_ and ``make install``.

        .. note:: Back up first.

        .. code-block:: bash

           make install

        Upgrades
        --------

        Upgrade text.
        """
    )
    doc = parse_file(write(tmp_path, "manual.rst", rst))
    assert doc.parser == "rst"
    assert headings(doc) == [(1, "Ops Manual"), (2, "Installation"), (2, "Upgrades")]
    body = texts(doc)
    assert "Run the installer. See the guide and make install." in body
    assert "Back up first." in body
    assert "make install" in body
    assert "bash" not in body


def test_html_structure(tmp_path: Path) -> None:
    html = """<!DOCTYPE html><html><head><title>Ignored title</title>
    <style>.x { color: red }</style><script>var secret = 1;</script></head>
    <body><nav><a href="/">Home</a> <a href="/about">About us</a></nav>
    <h1>Quarterly <em>Report</em></h1>
    <p>Revenue   grew
       <b>twelve</b> percent.<br>Costs fell.</p>
    <div>Loose div text<p>Nested paragraph</p>tail text</div>
    <h3>Details</h3>
    <ul><li>First point</li><li>Second point</li></ul>
    <table><tr><th>Region</th><th>Sales</th></tr><tr><td>North</td><td><p>1200</p></td></tr></table>
    <pre>line one
        indented line</pre>
    <blockquote>A quoted remark.</blockquote>
    <dl><dt>Term</dt><dd>Definition text</dd></dl>
    <p hidden>invisible</p>
    <script>document.write("no")</script>
    </body></html>"""
    doc = parse_file(write(tmp_path, "report.html", html))
    assert doc.parser == "html"
    assert headings(doc) == [(1, "Quarterly Report"), (3, "Details")]
    assert texts(doc) == [
        "Revenue grew twelve percent. Costs fell.",
        "Loose div text",
        "Nested paragraph",
        "tail text",
        "First point",
        "Second point",
        "Region | Sales",
        "North | 1200",
        "line one\n        indented line",
        "A quoted remark.",
        "Term",
        "Definition text",
    ]
    joined = doc.text
    for absent in ("Ignored title", "color: red", "secret", "About us", "invisible", "document.write"):
        assert absent not in joined


def test_html_charsets_and_xhtml(tmp_path: Path) -> None:
    legacy = '<html><head><meta charset="windows-1252"></head><body><p>Caf\u00e9 \u20ac5</p></body></html>'
    assert texts(parse_file(write(tmp_path, "a.htm", legacy.encode("cp1252")))) == ["Caf\u00e9 \u20ac5"]
    no_meta = "<html><body><p>Na\u00efve r\u00e9sum\u00e9</p></body></html>"
    assert texts(parse_file(write(tmp_path, "b.html", no_meta.encode("utf-8")))) == ["Na\u00efve r\u00e9sum\u00e9"]
    xhtml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE html>\n'
        '<html xmlns="http://www.w3.org/1999/xhtml"><head><title>x</title></head>'
        "<body><h2>Chapter</h2><p>Body \u00e9</p></body></html>"
    )
    doc = parse_file(write(tmp_path, "c.xhtml", xhtml.encode("utf-8")))
    assert headings(doc) == [(2, "Chapter")] and texts(doc) == ["Body \u00e9"]


def test_csv_tsv(tmp_path: Path) -> None:
    csv_doc = parse_file(write(tmp_path, "people.csv", 'name;city;note\nAda;London;"likes; semicolons"\nLin;;x\n'))
    assert csv_doc.parser == "csv"
    assert texts(csv_doc) == ["name: Ada; city: London; note: likes; semicolons", "name: Lin; note: x"]
    tsv_doc = parse_file(write(tmp_path, "t.tsv", "sku\tprice\nA-1\t10\nB-2\t20\textra\n"))
    assert texts(tsv_doc) == ["sku: A-1; price: 10", "sku: B-2; price: 20; column 3: extra"]
    comma = parse_file(write(tmp_path, "c.csv", "a,b\n1,2\n"))
    assert texts(comma) == ["a: 1; b: 2"]


def test_json_and_jsonl(tmp_path: Path) -> None:
    data = {
        "name": "Widget",
        "version": 3,
        "owners": [{"team": "core", "lead": "Ana"}, {"team": "infra", "lead": "Bo"}],
        "config": {"enabled": True, "tags": ["a", "b"], "limit": None},
    }
    doc = parse_file(write(tmp_path, "w.json", json.dumps(data)))
    assert doc.parser == "json"
    assert texts(doc) == [
        "name: Widget\nversion: 3",
        "owners[0].team: core\nowners[0].lead: Ana",
        "owners[1].team: infra\nowners[1].lead: Bo",
        "config.enabled: true\nconfig.tags: a, b\nconfig.limit: null",
    ]
    lines = '{"id": 1, "msg": "hello"}\n\n{"id": 2, "meta": {"ok": false}}\n'
    assert texts(parse_file(write(tmp_path, "l.jsonl", lines))) == ["id: 1\nmsg: hello", "id: 2\nmeta.ok: false"]
    with pytest.raises(ParseError, match="invalid JSON"):
        parse_file(write(tmp_path, "bad.json", '{"a": '))
    with pytest.raises(ParseError, match="line 2"):
        parse_file(write(tmp_path, "bad.jsonl", '{"a": 1}\n{oops}\n'))


def test_eml_plain_and_html_bodies_attachments_ignored(tmp_path: Path) -> None:
    msg = email.message.EmailMessage()
    msg["Subject"] = "Server migration on Friday"
    msg["From"] = "Ops <ops@example.com>"
    msg["To"] = "team@example.com"
    msg["Date"] = "Mon, 04 Mar 2024 10:00:00 +0000"
    msg.set_content("Hello team,\n\nThe migration starts at 18:00 \u2013 expect downtime.\n")
    msg.add_alternative("<html><body><p>HTML twin</p></body></html>", subtype="html")
    msg.add_attachment(b"ATTACHMENT-SECRET", maintype="application", subtype="octet-stream", filename="x.bin")
    doc = parse_file(write(tmp_path, "m.eml", msg.as_bytes()))
    assert doc.parser == "email"
    assert headings(doc) == [(1, "Server migration on Friday")]
    body = texts(doc)
    assert body[0].splitlines() == [
        "From: Ops <ops@example.com>",
        "To: team@example.com",
        "Date: Mon, 04 Mar 2024 10:00:00 +0000",
    ]
    assert "The migration starts at 18:00 \u2013 expect downtime." in body
    assert "ATTACHMENT-SECRET" not in doc.text and "HTML twin" not in doc.text

    html_only = email.message.EmailMessage()
    html_only["Subject"] = "Newsletter"
    html_only.set_content("<html><body><h2>News</h2><p>Big news</p><script>x()</script></body></html>", subtype="html")
    doc = parse_file(write(tmp_path, "h.eml", html_only.as_bytes()))
    assert headings(doc) == [(1, "Newsletter"), (2, "News")]
    assert "Big news" in texts(doc) and "x()" not in doc.text


def test_xml(tmp_path: Path) -> None:
    xml = (
        '<?xml version="1.0" encoding="ISO-8859-1"?>\n<catalog><!-- c -->'
        "<book id='1'><title>Caf\xe9 Society</title>"
        "<summary>A long summary of the book that certainly has more than eight words in it.</summary>"
        "</book><empty/></catalog>"
    ).encode("latin-1")
    doc = parse_file(write(tmp_path, "c.xml", xml))
    assert doc.parser == "xml"
    assert texts(doc) == [
        "title: Caf\u00e9 Society",
        "A long summary of the book that certainly has more than eight words in it.",
    ]
    with pytest.raises(ParseError, match="invalid XML"):
        parse_file(write(tmp_path, "bad.xml", "<a><b>unclosed"))


def test_xml_entities_are_not_expanded(tmp_path: Path) -> None:
    evil = (
        '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        "<r><t>safe text</t><u>&e;</u></r>"
    )
    doc = parse_file(write(tmp_path, "e.xml", evil))
    assert "root:" not in doc.text and "t: safe text" in texts(doc)


# --------------------------------------------------------------------------- binary formats


def test_pdf_pages_and_text(tmp_path: Path) -> None:
    pdf = make_pdf(
        [
            [("title", "Annual Safety Review"), ("text", "Forklift incidents fell by half. Caf\u00e9 budget: 500 \u20ac.")],
            [("text", "Second page (appendix) mentions the loading dock.")],
        ]
    )
    doc = parse_file(write(tmp_path, "review.pdf", pdf))
    assert doc.parser == "pdf:pypdfium2"
    assert len(doc.blocks) == 2 and all(b.kind == "text" for b in doc.blocks)
    assert doc.blocks[0].text.startswith("Annual Safety Review\nForklift incidents fell by half.")
    assert "Caf\u00e9 budget: 500 \u20ac." in doc.blocks[0].text
    assert doc.blocks[1].text == "Second page (appendix) mentions the loading dock."


def test_pdf_without_any_text_is_skipped(tmp_path: Path) -> None:
    from ragctl.parsing import OcrOptions

    blank = write(tmp_path, "blank.pdf", make_pdf([[], []]))
    with pytest.raises(UnsupportedFormat, match=r"no extractable text \(no text layer, and OCR found no text\)"):
        parse_file(blank)  # --ocr auto: both pages OCR'd, nothing found
    with pytest.raises(UnsupportedFormat, match=r"no extractable text \(a scanned PDF\? OCR is off: --ocr off\)"):
        parse_file(blank, OcrOptions(mode="off"))


def test_corrupt_pdf_is_a_one_line_parse_error(tmp_path: Path) -> None:
    junk = bytes((i * 7919 + 13) % 256 for i in range(5000))
    for name, data in {"junk.pdf": junk, "truncated.pdf": make_pdf([[("text", "x")]])[:60]}.items():
        with pytest.raises(ParseError) as info:
            parse_file(write(tmp_path, name, data))
        message = str(info.value)
        assert "\n" not in message and 0 < len(message) <= 200
        assert "PDF" in message


def test_encrypted_pdf_is_a_parse_error(tmp_path: Path) -> None:
    pypdf = pytest.importorskip("pypdf")
    reader = pypdf.PdfReader(io.BytesIO(make_pdf([[("text", "top secret")]])))
    writer = pypdf.PdfWriter()
    writer.append_pages_from_reader(reader)
    writer.encrypt("hunter2", algorithm="RC4-128")
    buf = io.BytesIO()
    writer.write(buf)
    with pytest.raises(ParseError, match="encrypted PDF"):
        parse_file(write(tmp_path, "locked.pdf", buf.getvalue()))


def test_pdf_parsing_from_threads(tmp_path: Path) -> None:
    paths = [write(tmp_path, f"p{i}.pdf", make_pdf([[("text", f"document number {i}")]] * 3)) for i in range(8)]
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(5):
                results[i] = parse_file(paths[i]).blocks[2].text
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == {i: f"document number {i}" for i in range(8)}


def test_docx_headings_paragraphs_and_tables_in_order(tmp_path: Path) -> None:
    data = make_docx(
        [
            ("title", "Vendor Onboarding"),
            ("text", "All vendors sign the code of conduct."),
            ("heading", "Documents", 1),
            ("table", [("Document", "Owner"), ("W-9 form", "Finance"), ("NDA", "Legal")]),
            ("heading", "Timeline", 2),
            ("text", "Approval takes ten business days."),
        ]
    )
    doc = parse_file(write(tmp_path, "vendors.docx", data))
    assert doc.parser == "docx"
    assert [(b.kind, b.level, b.text) for b in doc.blocks] == [
        ("heading", 1, "Vendor Onboarding"),
        ("text", 0, "All vendors sign the code of conduct."),
        ("heading", 1, "Documents"),
        ("text", 0, "Document | Owner"),
        ("text", 0, "W-9 form | Finance"),
        ("text", 0, "NDA | Legal"),
        ("heading", 2, "Timeline"),
        ("text", 0, "Approval takes ten business days."),
    ]


def test_docx_custom_and_outline_headings(tmp_path: Path) -> None:
    import docx
    from docx.enum.style import WD_STYLE_TYPE
    from docx.oxml import OxmlElement
    from docx.oxml.ns import qn

    document = docx.Document()
    chapter = document.styles.add_style("Kapitel", WD_STYLE_TYPE.PARAGRAPH)
    chapter.base_style = document.styles["Heading 2"]  # a custom style based on a heading
    document.add_paragraph("Custom chapter", style="Kapitel")
    para = document.add_paragraph("Outline level paragraph")
    outline = OxmlElement("w:outlineLvl")
    outline.set(qn("w:val"), "2")
    para._p.get_or_add_pPr().append(outline)
    document.add_paragraph("Plain body", style="Normal")
    buf = io.BytesIO()
    document.save(buf)
    doc = parse_file(write(tmp_path, "custom.docx", buf.getvalue()))
    assert [(b.kind, b.level, b.text) for b in doc.blocks] == [
        ("heading", 2, "Custom chapter"),
        ("heading", 3, "Outline level paragraph"),
        ("text", 0, "Plain body"),
    ]


def test_pptx_titles_text_tables_notes(tmp_path: Path) -> None:
    data = make_pptx(
        [
            {"title": "Roadmap 2025", "subtitle": "Platform team", "notes": "Speak slowly."},
            {"title": "Goals", "bullets": ["Cut latency by 30%", "Ship the mobile app"]},
            {"title": "Budget", "table": [("Item", "Cost"), ("Servers", "40k")]},
        ]
    )
    doc = parse_file(write(tmp_path, "deck.pptx", data))
    assert doc.parser == "pptx"
    assert [(b.kind, b.text) for b in doc.blocks] == [
        ("heading", "Roadmap 2025"),
        ("text", "Platform team"),
        ("text", "Notes: Speak slowly."),
        ("heading", "Goals"),
        ("text", "Cut latency by 30%\nShip the mobile app"),
        ("heading", "Budget"),
        ("text", "Item | Cost"),
        ("text", "Servers | 40k"),
    ]


def test_corrupt_office_files_are_parse_errors(tmp_path: Path) -> None:
    for name in ("broken.docx", "broken.pptx"):
        with pytest.raises(ParseError) as info:
            parse_file(write(tmp_path, name, b"PK\x03\x04 this is not really a zip archive"))
        assert "\n" not in str(info.value) and len(str(info.value)) <= 200
        assert str(info.value).startswith(f"not a valid {name.split('.')[1]} file (corrupt, truncated")
    with pytest.raises(ParseError, match=r"not a valid docx file \(corrupt, truncated, or another format renamed\): "):
        parse_file(write(tmp_path, "renamed.docx", bytes(range(256)) * 4))  # a binary file renamed


# --------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("suffix", [".txt", ".md", ".csv", ".log", ".rst"])
def test_cp1252_text_is_decoded(tmp_path: Path, suffix: str) -> None:
    text = "head\nCaf\u00e9 cr\u00e8me costs 4 \u20ac \u2013 na\u00efve\n"
    doc = parse_file(write(tmp_path, f"legacy{suffix}", text.encode("cp1252")))
    assert "Caf\u00e9 cr\u00e8me costs 4 \u20ac \u2013 na\u00efve" in doc.text


def test_latin1_only_bytes_and_utf16_bom(tmp_path: Path) -> None:
    # 0x81 is undefined in cp1252: the last resort latin-1 still decodes it
    doc = parse_file(write(tmp_path, "odd.txt", b"Stra\xdfe \x81 ok"))
    assert doc.text.startswith("Stra\u00dfe")
    doc = parse_file(write(tmp_path, "wide.txt", "\u00dcber UTF-16 \u20ac".encode("utf-16")))
    assert doc.text == "\u00dcber UTF-16 \u20ac"
    doc = parse_file(write(tmp_path, "bom.md", "\ufeff# Titel \u00e4".encode("utf-8")))
    assert headings(doc) == [(1, "Titel \u00e4")]
    doc = parse_file(write(tmp_path, "crlf.txt", b"one\r\ntwo\r\n\r\nthree"))
    assert texts(doc) == ["one\ntwo", "three"]


def test_text_file_without_suffix_is_read_as_text(tmp_path: Path) -> None:
    doc = parse_file(write(tmp_path, "CHANGELOG", "Version 2\n\nFixed the flux capacitor.\n"))
    assert doc.parser == "text" and texts(doc) == ["Version 2", "Fixed the flux capacitor."]
    hidden = write(tmp_path, ".env", "API_TOKEN=do-not-index\n")
    assert not is_supported(hidden)
    with pytest.raises(UnsupportedFormat, match="hidden file"):
        parse_file(hidden)


# --------------------------------------------------------------------------- error contract


@pytest.mark.parametrize("suffix", [".txt", ".md", ".html", ".pdf", ".docx", ".json", ".csv", ".eml", ""])
@pytest.mark.parametrize("content", [b"", b"  \n\t\r\n  "])
def test_empty_files_are_skipped(tmp_path: Path, suffix: str, content: bytes) -> None:
    with pytest.raises(UnsupportedFormat, match="^empty file$"):
        parse_file(write(tmp_path, f"empty{suffix}", content))


def test_documents_without_text_are_skipped(tmp_path: Path) -> None:
    for name, data in {
        "only-script.html": "<html><head><title>t</title></head><body><script>x()</script></body></html>",
        "empty-array.json": "[]",
        "empty-root.xml": "<root><a/><b></b></root>",
        "blank-doc.docx": make_docx([]),
    }.items():
        with pytest.raises(UnsupportedFormat, match="^no extractable text$"):
            parse_file(write(tmp_path, name, data))


@pytest.mark.parametrize("suffix", [".txt", ".md", ".csv", ".html", ".xml", ".eml", ".json"])
def test_nul_bytes_behind_a_text_suffix_are_a_parse_error(tmp_path: Path, suffix: str) -> None:
    data = b"looks like text at first\x00\x00\x00\x01\x02 then binary" * 20
    with pytest.raises(ParseError, match=r"^binary content, not text$"):
        parse_file(write(tmp_path, f"fake{suffix}", data))


def test_control_character_soup_is_a_parse_error(tmp_path: Path) -> None:
    data = bytes(b for b in range(1, 32) if b not in (9, 10, 13)) * 100  # no NUL, still binary
    with pytest.raises(ParseError, match="binary content"):
        parse_file(write(tmp_path, "soup.txt", data))


def test_unreadable_file_chmod(tmp_path: Path) -> None:
    path = write(tmp_path, "secret.txt", "classified")
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as root: chmod 000 does not prevent reading")
        with pytest.raises(ParseError, match="^cannot read: Permission denied$"):
            parse_file(path)
    finally:
        path.chmod(0o644)


def test_unreadable_file_simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "secret.md", "# classified")

    def deny(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", deny)
    with pytest.raises(ParseError, match="^cannot read: Permission denied$"):
        parse_file(path)


def test_missing_file_and_directory_are_parse_errors(tmp_path: Path) -> None:
    with pytest.raises(ParseError, match="^cannot read: No such file or directory$"):
        parse_file(tmp_path / "gone.txt")
    (tmp_path / "folder.md").mkdir()
    with pytest.raises(ParseError, match="^cannot read: Is a directory$"):
        parse_file(tmp_path / "folder.md")


def test_reader_exceptions_become_one_line_parse_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(text: str) -> list[Block]:
        raise ValueError("first line\nsecond line\n" + "x" * 500)

    monkeypatch.setitem(READERS, ".txt", Reader("text", boom, "text"))
    with pytest.raises(ParseError) as info:
        parse_bytes(b"hello", ".txt")
    message = str(info.value)
    assert message.startswith("ValueError: first line second line x")
    assert "\n" not in message and len(message) <= 200


def test_unknown_suffix_is_unsupported(tmp_path: Path) -> None:
    for name in ("diagram.svg", "data.parquet", "script.sh"):
        with pytest.raises(UnsupportedFormat, match=r"^unsupported file type '\.\w+'$"):
            parse_file(write(tmp_path, name, "some text"))


# --------------------------------------------------------------------------- unstructured fallback


def test_fallback_missing_dependency_is_unsupported(tmp_path: Path) -> None:
    if not fallback.missing_dependencies(".odt"):
        pytest.skip("pypandoc is installed here")
    with pytest.raises(UnsupportedFormat, match=r"^\.odt: needs .*pypandoc"):
        parse_file(write(tmp_path, "letter.odt", b"PK\x03\x04 odt bytes"))


def test_fallback_msg_works_offline(tmp_path: Path) -> None:
    """A .msg goes through unstructured with the network blocked and no telemetry opt-out
    set by the caller: the import-time ping, runtime telemetry and the spaCy download must
    all be disabled by ragctl itself."""
    msg = make_msg(
        subject="Quarterly widget audit",
        body="Hello team,\n\nThe quarterly widget audit starts on Monday at nine. Please bring "
        "the inventory sheets for every warehouse.\n\nRegards,\nThe audit office",
        sender="Audit Office <audit@example.com>",
        to="team@example.com",
    )
    path = write(tmp_path, "audit.msg", msg)
    env = {k: v for k, v in os.environ.items()
           if k not in ("DO_NOT_TRACK", "SCARF_NO_ANALYTICS", "UNSTRUCTURED_DISABLE_NOTICE")}
    out = run_python(
        f"""
        import json, socket, threading
        attempts = []
        def refuse(*args, **kwargs):
            attempts.append(repr(args[:2]))
            raise OSError("network disabled in test")
        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse

        from pathlib import Path
        from ragctl.parsing import parse_file, fallback
        doc = parse_file(Path({str(path)!r}))
        import unstructured.nlp.tokenize as tok
        print(json.dumps({{
            "parser": doc.parser,
            "blocks": [[b.kind, b.text] for b in doc.blocks],
            "attempts": attempts,
            "nlp_bundled": fallback._nlp is not None and tok._get_nlp() is fallback._nlp,
            "threads": [t.name for t in threading.enumerate()],
        }}))
        """,
        env=env,
    )
    result = json.loads(out.strip().splitlines()[-1])
    assert result["parser"] == "unstructured"
    assert result["blocks"][0] == ["heading", "Quarterly widget audit"]
    body = " ".join(text for _, text in result["blocks"])
    assert "The quarterly widget audit starts on Monday at nine." in body
    assert result["attempts"] == []
    assert result["nlp_bundled"] is True
    assert "unstructured-telemetry" not in result["threads"]


# --------------------------------------------------------------------------- sample corpus


def sample_files() -> list[Path]:
    return sorted(p for p in SAMPLE_DOCS.rglob("*") if p.is_file())


def test_sample_docs_layout() -> None:
    files = sample_files()
    entities = {p.relative_to(SAMPLE_DOCS).parts[0] for p in files}
    assert entities == {"acme-corp", "globex", "initech"}
    assert 12 <= len(files) <= 20
    suffixes = {p.suffix for p in files}
    assert len(suffixes) >= 6 and {".md", ".pdf", ".docx", ".pptx", ".html"} <= suffixes
    assert any(len(p.relative_to(SAMPLE_DOCS).parts) > 2 for p in files)  # nested folders
    assert all(p.suffix in SUPPORTED_SUFFIXES for p in files)


@pytest.mark.parametrize("path", sample_files(), ids=lambda p: str(p.relative_to(SAMPLE_DOCS)))
def test_every_sample_doc_parses(path: Path) -> None:
    doc = parse_file(path)
    assert doc.blocks and all(b.text.strip() for b in doc.blocks)
    assert doc.parser != "unstructured"


def test_sample_docs_have_unique_findable_facts() -> None:
    corpus = {str(p.relative_to(SAMPLE_DOCS)): " ".join(parse_file(p).text.split()) for p in sample_files()}

    def holders(needle: str) -> list[str]:
        return [name for name, text in corpus.items() if needle.lower() in text.lower()]

    assert holders("45 days") == ["acme-corp/policies/refund-policy.html"]
    assert holders("Kubernetes cluster outage") == ["globex/postmortems/2024-02-17-kubernetes-cluster-outage.md"]
    assert holders("TPS Report Cover Sheet Procedure") == ["initech/procedures/tps-report-cover-sheet.docx"]
    assert holders("160 \u20ac per night") == ["acme-corp/policies/travel-expense-policy.pdf"]
    assert holders("banker's rounding") == ["initech/projects/mainframe-migration-status.pdf"]
    assert holders("buddy system") == ["globex/onboarding-deck.pptx"]
    handbook = parse_file(SAMPLE_DOCS / "acme-corp" / "product-handbook.md")
    assert len(handbook.text.split()) > 1300 and len(headings(handbook)) >= 8


def test_sample_generator_is_reproducible(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import make_sample_docs
    finally:
        sys.path.remove(str(REPO / "scripts"))
    for rel, build in make_sample_docs.GENERATED.items():
        first, second = build(), build()
        assert first == second, rel  # fixed timestamps: stable content hashes
        regenerated = parse_bytes(first, Path(rel).suffix, Path(rel).name)
        assert regenerated == parse_file(SAMPLE_DOCS / rel), f"{rel} is stale: rerun scripts/make_sample_docs.py"


def test_html_keeps_the_main_content_and_the_page_title() -> None:
    """Site chrome outside <main> (menus, search, keyboard-shortcut help: every mdBook page) is
    left out when <main> holds a fair share of the text; the <title> becomes the title, and a
    top heading that starts it is not repeated in the heading path."""
    chrome = "<div id='help'><h2>Keyboard shortcuts</h2><p>Press left or right to navigate.</p></div>"
    body = "".join(f"<p>Paragraph {i} about build profiles and their settings.</p>" for i in range(8))
    page = (f"<html><head><title>Profiles - The Book</title></head><body>{chrome}<nav>toc</nav>"
            f"<main><h1>Profiles</h1>{body}<h2>opt-level</h2><p>Optimisation level.</p></main></body></html>")
    doc = parse_bytes(page.encode(), ".html", "profiles.html")
    assert doc.title == "Profiles - The Book"
    assert "Keyboard" not in doc.text and doc.blocks[0] == Block("heading", "Profiles", 1)
    # a <main> with a small share of the page's text is not trusted: everything is kept
    small = f"<html><body>{body}<main><p>Tiny.</p></main></body></html>"
    assert parse_bytes(small.encode(), ".html", "s.html").text.count("Paragraph") == 8
    from ragctl.chunking import Chunker, load_tokenizer
    from ragctl.model_spec import resolve_model

    chunker = Chunker(load_tokenizer(resolve_model(None).path), max_tokens=256)
    sections = {c.section for c in chunker.contextual(doc.blocks, doc.title)}
    assert sections == {"", "opt-level"}


# --------------------------------------------------------------------------- no text lost by the readers
# In lxml the text after a node is that node's ``.tail``: a walk that skips a comment, a
# processing instruction or a <script> must still keep what follows it (issue 29).


def test_html_text_after_a_comment_in_a_paragraph_is_kept(tmp_path: Path) -> None:
    # what every mdBook page does after a cross-reference
    page = (
        "<html><body><p>alpha beta <!-- ignore --> TAILWORD gamma delta</p>"
        '<p>See <a href="ch02.html">Chapter 2</a><!-- ignore -->. Adding mut conveys intent.</p>'
        "</body></html>"
    )
    doc = parse_file(write(tmp_path, "p.html", page))
    assert texts(doc) == ["alpha beta TAILWORD gamma delta", "See Chapter 2. Adding mut conveys intent."]
    assert "ignore" not in doc.text


def test_html_comment_inside_pre_code_keeps_the_lines_after_it(tmp_path: Path) -> None:
    page = "<html><body><pre><code>let x = 1;<!-- hidden note -->\nlet y = 2; // after\n</code></pre></body></html>"
    doc = parse_file(write(tmp_path, "c.html", page))
    assert texts(doc) == ["let x = 1;\nlet y = 2; // after"]
    assert "hidden note" not in doc.text


def test_html_processing_instruction_keeps_its_tail(tmp_path: Path) -> None:
    doc = parse_file(write(tmp_path, "pi.html", "<html><body><p>before <?php echo 1 ?> AFTERPI words</p></body></html>"))
    assert texts(doc) == ["before AFTERPI words"]
    assert "echo" not in doc.text


def test_html_text_after_script_style_and_hidden_elements_is_kept(tmp_path: Path) -> None:
    page = (
        "<html><body><p>one <script>var secret = 1;</script>SCRIPTTAIL two "
        "<style>.x{color:red}</style>STYLETAIL three <span hidden>invisible</span> HIDDENTAIL</p>"
        "</body></html>"
    )
    doc = parse_file(write(tmp_path, "s.html", page))
    assert texts(doc) == ["one SCRIPTTAIL two STYLETAIL three HIDDENTAIL"]
    for absent in ("secret", "color", "invisible"):
        assert absent not in doc.text


def test_html_comments_inside_nested_inline_markup(tmp_path: Path) -> None:
    page = (
        "<html><head><title>Guide v2</title></head><body>"
        "<h2>Getting <em>started<!-- anchor --> fast</em> today</h2>"
        "<p>An <b>important <i>nested<!-- c1 --> word</i><!-- c2 --> here</b><!-- c3 --> and more.</p>"
        "<table><tr><td>cell<!-- c4 --> one</td><td>cell two</td></tr></table>"
        "<ul><li>item<!-- c5 --> kept</li></ul></body></html>"
    )
    doc = parse_file(write(tmp_path, "n.html", page))
    assert doc.title == "Guide v2"
    assert headings(doc) == [(2, "Getting started fast today")]
    assert texts(doc) == ["An important nested word here and more.", "cell one | cell two", "item kept"]
    for absent in ("anchor", "c1", "c2", "c3", "c4", "c5"):
        assert absent not in doc.text.split()


def test_html_text_after_main_is_not_counted_as_main_content() -> None:
    body = "".join(f"<p>Paragraph {i} with enough words to be the main part.</p>" for i in range(6))
    page = f"<html><body><nav>menu</nav><main>{body}</main>FOOTERTAIL<footer>c</footer></body></html>"
    doc = parse_bytes(page.encode(), ".html", "m.html")
    assert doc.text.count("Paragraph") == 6 and "FOOTERTAIL" not in doc.text


def test_eml_html_body_keeps_text_after_comments(tmp_path: Path) -> None:
    msg = email.message.EmailMessage()
    msg["Subject"] = "Weekly"
    msg.set_content(
        "<html><body><p>Hello <!--[if mso]>outlook only<![endif]--> MSOTAIL team</p></body></html>", subtype="html"
    )
    doc = parse_file(write(tmp_path, "w.eml", msg.as_bytes()))
    assert "Hello MSOTAIL team" in texts(doc)
    assert "outlook" not in doc.text


def test_xml_text_after_comments_and_pis_is_kept(tmp_path: Path) -> None:
    xml = (
        "<doc><para>first part <!-- note --> COMMENTTAIL of a long paragraph with many words in it</para>"
        "<para>before <?render x?> PITAIL of another long paragraph with many words</para></doc>"
    )
    doc = parse_file(write(tmp_path, "d.xml", xml))
    assert texts(doc) == [
        "first part COMMENTTAIL of a long paragraph with many words in it",
        "before PITAIL of another long paragraph with many words",
    ]
    assert "note" not in doc.text and "render" not in doc.text


def test_docx_text_after_a_comment_inside_a_run_is_kept(tmp_path: Path) -> None:
    import zipfile

    data = make_docx([("text", "first half MARKER")])
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            content = src.read(item.filename)
            if item.filename == "word/document.xml":
                content = content.replace(b"MARKER", b"<!-- generator note -->SECONDHALF words")
                assert b"SECONDHALF" in content
            dst.writestr(item, content)
    doc = parse_file(write(tmp_path, "c.docx", out.getvalue()))
    assert texts(doc) == ["first half SECONDHALF words"]
    assert "generator" not in doc.text


def test_markdown_brackets_inside_code_spans_do_not_eat_words(tmp_path: Path) -> None:
    # Node.js API docs: "[`socket.connect(port[, host][, connectListener])`][...]" lost
    # "connectListener"; a tag written as code ("`<div>`") was deleted as if it were markup
    md = (
        "* [`socket.connect(port[, host][, connectListener])`][`socket.connect(port)`]\n"
        "  for TCP connections.\n\n"
        "Wrap it in a `<div>` element, not <b>bold</b>; see [the `<span>` docs](https://x.test/s).\n"
    )
    doc = parse_file(write(tmp_path, "net.md", md))
    assert texts(doc) == [
        "* `socket.connect(port[, host][, connectListener])`\n  for TCP connections.",
        "Wrap it in a `<div>` element, not bold; see the `<span>` docs.",
    ]


def test_markdown_footnote_definitions_are_text(tmp_path: Path) -> None:
    md = (
        "Ed448 is supported.[^1]\n\n"
        "[^1]: An experimental implementation of Ed448 and X448 algorithms.\n\n"
        "[JSON Web Key]: https://tools.ietf.org/html/rfc7517\n"
    )
    doc = parse_file(write(tmp_path, "f.md", md))
    assert texts(doc) == ["Ed448 is supported.[^1]", "[^1]: An experimental implementation of Ed448 and X448 algorithms."]
    assert "rfc7517" not in doc.text  # a link definition is not text


def _docx_bytes(build: object) -> bytes:
    import docx

    document = docx.Document()
    build(document)  # type: ignore[operator]
    buf = io.BytesIO()
    document.save(buf)
    return buf.getvalue()


def test_docx_no_word_lost_to_hyphens_equal_cells_and_wrappers(tmp_path: Path) -> None:
    from docx.oxml import OxmlElement

    def build(document: object) -> None:
        para = document.add_paragraph("an e")  # type: ignore[attr-defined]
        run = para.add_run()
        run._r.append(OxmlElement("w:noBreakHyphen"))  # Word's Ctrl+Shift+- between "e" and "mail"
        para.add_run("mail address")
        table = document.add_table(rows=2, cols=3)  # type: ignore[attr-defined]
        for c, value in enumerate(("Feature", "Basic", "Pro")):
            table.cell(0, c).text = value
        for c, value in enumerate(("Backups", "Yes", "Yes")):
            table.cell(1, c).text = value
        for tag in ("w:customXml", "w:ins"):  # paragraphs wrapped at block level
            inner = document.add_paragraph(f"wrapped in {tag[2:]}")._p  # type: ignore[attr-defined]
            wrapper = OxmlElement(tag)
            inner.addprevious(wrapper)
            wrapper.append(inner)
        deleted = document.add_paragraph("kept")._p  # type: ignore[attr-defined]
        gone = OxmlElement("w:del")
        deleted.addnext(gone)
        gone.append(OxmlElement("w:p"))
        gone[0].append(OxmlElement("w:r"))
        gone[0][0].append(OxmlElement("w:delText"))
        gone[0][0][0].text = "REMOVEDREVISION"

    doc = parse_file(write(tmp_path, "w.docx", _docx_bytes(build)))
    assert texts(doc) == [
        "an e-mail address",
        "Feature | Basic | Pro",
        "Backups | Yes | Yes",
        "wrapped in customXml",
        "wrapped in ins",
        "kept",
    ]
    assert "REMOVEDREVISION" not in doc.text


def test_docx_nested_table_is_read_once(tmp_path: Path) -> None:
    def build(document: object) -> None:
        outer = document.add_table(rows=1, cols=2)  # type: ignore[attr-defined]
        outer.cell(0, 0).text = "Outer"
        inner = outer.cell(0, 1).add_table(rows=1, cols=2)
        inner.cell(0, 0).text = "inner left"
        inner.cell(0, 1).text = "inner right"

    doc = parse_file(write(tmp_path, "n.docx", _docx_bytes(build)))
    assert texts(doc) == ["Outer | inner left inner right"]


def test_html_layout_tables_keep_headings_and_code_apart(tmp_path: Path) -> None:
    # libxslt's API pages (and most HTML e-mails) lay the page out in nested tables: the whole
    # page was one "row" and "<h2>Table of Contents</h2><pre>xsltDocumentComp" read as
    # "Table of ContentsxsltDocumentComp"
    page = (
        "<html><body><table><tr><td><b>API Menu</b><ul><li>Home</li></ul></td><td>"
        "<table><tr><td><h2>Table of Contents</h2><pre>void\txsltDocumentComp(style)</pre>"
        "<p>Pre process an element.</p>"
        "<table><tr><td>style:</td><td>the stylesheet</td></tr></table>"
        "</td></tr></table></td></tr></table></body></html>"
    )
    doc = parse_file(write(tmp_path, "api.html", page))
    assert [(b.kind, b.text) for b in doc.blocks] == [
        ("text", "API Menu"),
        ("text", "Home"),
        ("heading", "Table of Contents"),
        ("text", "void\txsltDocumentComp(style)"),
        ("text", "Pre process an element."),
        ("text", "style: | the stylesheet"),
    ]


def test_html_code_and_headings_inside_a_data_row_are_separate_words(tmp_path: Path) -> None:
    page = (
        "<html><body><table><tr><th>Option</th><th>Example</th></tr>"
        "<tr><td>jobs<small>since 1.2</small></td><td>Use<pre>-j 4</pre>to build</td></tr></table></body></html>"
    )
    doc = parse_file(write(tmp_path, "opts.html", page))
    assert texts(doc) == ["Option | Example", "jobssince 1.2 | Use -j 4 to build"]


def test_xml_internal_entities_are_text_exponential_ones_are_refused(tmp_path: Path) -> None:
    # the W3C XML 1.0 spec writes its date through <!ENTITY iso6.doc.date "19980210">
    spec = (
        '<?xml version="1.0"?><!DOCTYPE spec [<!ENTITY iso6.doc.date "19980210">'
        '<!ENTITY XML "Extensible Markup Language">]>'
        "<spec><designation>REC-xml-&iso6.doc.date;</designation>"
        "<p>The &XML; is a subset of SGML that is completely described in this document.</p></spec>"
    )
    doc = parse_file(write(tmp_path, "spec.xml", spec))
    assert texts(doc) == [
        "designation: REC-xml-19980210",
        "The Extensible Markup Language is a subset of SGML that is completely described in this document.",
    ]
    lol = '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol0 "lol">'
    lol += "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
    lol += "]><lolz><t>safe words</t><u>&lol9;</u></lolz>"
    with pytest.raises(ParseError, match="amplification"):  # 10^9 "lol"s: libxml2 refuses them
        parse_file(write(tmp_path, "lol.xml", lol))


def test_markdown_comments_inside_code_are_code(tmp_path: Path) -> None:
    # Node.js's release guide shows the YAML comment to write inside a ```diff block: it was
    # deleted with the comments of the page itself
    md = (
        "# Step 4\n\n"
        "<!-- YAML\nadded: v1.0.0\n-->\n\n"
        "Mark the version with `<!-- YAML -->` metadata:\n\n"
        "```diff\n  <!-- YAML\n+ napiVersion: 10\n  -->\n```\n\n"
        "<!--\n```js\ncommentedOut()\n```\n-->\n"
        "A <!-- never closed comment stays text\n"
    )
    doc = parse_file(write(tmp_path, "release.md", md))
    assert texts(doc) == [
        "Mark the version with `<!-- YAML -->` metadata:",
        "  <!-- YAML\n+ napiVersion: 10\n  -->",
        "A <!-- never closed comment stays text",
    ]
    assert "added" not in doc.text and "commentedOut" not in doc.text


def test_rst_substitutions_and_footnotes_are_text(tmp_path: Path) -> None:
    rst = (
        "Install\n=======\n\n"
        "Install |product| today; a table cell | like this | is left alone, |unknown| too.\n\n"
        ".. |product| replace:: Foo Pro 2\n"
        ".. _product: https://example.test/foo\n"
        ".. [1] The footnote text.\n"
        "   Its second line.\n"
        ".. [#cite] A cited book.\n"
    )
    doc = parse_file(write(tmp_path, "install.rst", rst))
    assert texts(doc) == [
        "Install Foo Pro 2 today; a table cell | like this | is left alone, |unknown| too.",
        "The footnote text.\nIts second line.",
        "A cited book.",
    ]
    assert "example.test" not in doc.text
