"""Reader word recall: how many of a file's words each ragctl reader keeps.

For every supported file under the given directories (or the files given), compares the words
``ragctl.parsing.parse_file(path)`` extracts (its text plus its own title) with two extractions
of the same file by other tools:

plain: the whole file's text, as a simple extraction sees it:
  * HTML: BeautifulSoup's text with <script>, <style> and comments removed (a space around
    block elements, none inside words);
  * PDF: ``pdftotext`` (poppler-utils);
  * Markdown, reStructuredText, plain text: the raw file text (markup, URLs and comments too);
  * DOCX: python-docx, every paragraph and every table cell (nested tables too).
seen: the text a reader of the rendered document sees, less what ragctl leaves out by design:
  * HTML: the page's <title> and the part ragctl reads (its one <main> when that holds a fifth
    of the words), without the elements ragctl drops (nav, svg, noscript, hidden, aria-hidden...);
  * Markdown: rendered by markdown-it (CommonMark), then as HTML (no URLs, no comments);
  * the other formats: the same as plain.
A loss against "seen" is a reader bug to fix; the gap between the two is by design.

Words are ``\\w+`` runs after NFKC normalisation and case folding; a file's recall is
``|ragctl words ∩ reference words| / |reference words|`` over multisets. Per format it prints
the files, the mean recall per file, the recall of all words together, the lowest file, the
files under 0.99 and the files ragctl failed or skipped, then the worst files (by "seen") with
the words they lose.

    python scripts/bench_reader_recall.py DIR_OR_FILE... [--max-per-format 300] [--worst 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any

FORMATS = {
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".md": "markdown",
    ".markdown": "markdown",
    ".rst": "rst",
    ".txt": "text",
    ".pdf": "pdf",
    ".docx": "docx",
}
_WORD = re.compile(r"[^\W_]+")  # letters and digits: "_does_ not_" is "does not", as FTS5 reads it


def words(text: str) -> Counter[str]:
    return Counter(_WORD.findall(unicodedata.normalize("NFKC", text).casefold()))


# elements that separate words on screen; inline ones (<b>g</b>lobally, 2<sup>n</sup>) do not
_HTML_BREAKS = """address article aside blockquote body br caption dd details dialog div dl dt fieldset
figcaption figure footer form h1 h2 h3 h4 h5 h6 header hr li main nav ol p pre section summary
table tbody td tfoot th thead title tr ul""".split()


def html_text(soup: Any) -> str:
    """Plain page text: script, style and comments removed; a space around every block element
    and none inside words, as a browser shows it."""
    from bs4 import Comment

    for el in soup(["script", "style"]):
        el.decompose()
    for comment in soup.find_all(string=lambda s: isinstance(s, Comment)):
        comment.extract()
    for el in soup.find_all(_HTML_BREAKS):
        el.insert_before(" ")
        el.append(" ")
    return str(soup.get_text(""))


def plain_html(path: Path) -> str:
    from bs4 import BeautifulSoup

    return html_text(BeautifulSoup(path.read_bytes(), "lxml"))


def seen_html(path: Path) -> str:
    from bs4 import BeautifulSoup

    from ragctl.parsing.html import _HTML_DROP  # the design: what ragctl leaves out on purpose

    soup = BeautifulSoup(path.read_bytes(), "lxml")
    title = soup.title.get_text() if soup.title else ""
    found = soup.select("main, [role=main]")
    whole = soup.body or soup
    if len(found) == 1:  # as html.main_content decides
        n_all = len(whole.get_text(" ").split())
        n_main = len(found[0].get_text(" ").split())
        if n_all and n_main * 5 >= n_all:
            whole = found[0]
    for el in whole.find_all(lambda t: t.name in _HTML_DROP or t.has_attr("hidden") or t.get("aria-hidden") == "true"):
        if not el.decomposed:
            el.decompose()
    return title + "\n" + html_text(whole)


def seen_markdown(path: Path) -> str:
    from bs4 import BeautifulSoup
    from markdown_it import MarkdownIt

    rendered = MarkdownIt("commonmark").render(path.read_bytes().decode("utf-8", "replace"))
    return html_text(BeautifulSoup(rendered, "lxml"))


def plain_pdf(path: Path) -> str:
    proc = subprocess.run(["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.decode("utf-8", "replace").strip()[:200])
    return proc.stdout.decode("utf-8", "replace")


def plain_docx(path: Path) -> str:
    import docx

    document = docx.Document(str(path))
    out: list[str] = []

    def tables(tbls: Any) -> None:
        for table in tbls:
            for row in table.rows:
                seen: set[int] = set()
                for cell in row.cells:  # a merged cell comes once per grid column it spans
                    if id(cell._tc) not in seen:
                        seen.add(id(cell._tc))
                        out.extend(p.text for p in cell.paragraphs)
                        tables(cell.tables)

    out.extend(p.text for p in document.paragraphs)
    tables(document.tables)
    return "\n".join(out)


def plain_raw(path: Path) -> str:
    return path.read_bytes().decode("utf-8", "replace")


PLAIN = {
    "html": plain_html,
    "pdf": plain_pdf,
    "docx": plain_docx,
    "markdown": plain_raw,
    "rst": plain_raw,
    "text": plain_raw,
}
SEEN = {"html": seen_html, "markdown": seen_markdown}


def markdown_to_docx(src: Path, dst: Path) -> None:
    """A Word document from a Markdown file, built the way Word writes them: headings in
    Heading styles, runs split at bold / italic / code, links as w:hyperlink, lists in List
    styles, code blocks as one paragraph with line breaks, tables as w:tbl."""
    import docx
    from docx.opc.constants import RELATIONSHIP_TYPE
    from docx.oxml import OxmlElement
    from docx.oxml.ns import qn
    from markdown_it import MarkdownIt

    document = docx.Document()
    tokens = MarkdownIt("commonmark").enable("table").parse(src.read_text("utf-8", "replace"))
    para: Any = None
    style = "Normal"
    lists: list[str] = []
    rows: list[list[Any]] = []
    row: list[Any] = []

    def inline(target: Any, children: list[Any]) -> None:
        bold = italic = False
        link: Any = None
        for tok in children:
            if tok.type in ("strong_open", "strong_close"):
                bold = tok.type == "strong_open"
            elif tok.type in ("em_open", "em_close"):
                italic = tok.type == "em_open"
            elif tok.type == "link_open":
                rid = document.part.relate_to(str(tok.attrs.get("href", "")) or "#", RELATIONSHIP_TYPE.HYPERLINK, True)
                link = OxmlElement("w:hyperlink")
                link.set(qn("r:id"), rid)
                target._p.append(link)
            elif tok.type == "link_close":
                link = None
            elif tok.type in ("softbreak", "hardbreak"):
                target.add_run().add_break()
            elif tok.type in ("text", "code_inline", "html_inline") and tok.content:
                run = target.add_run(tok.content)
                run.bold, run.italic = bold or None, italic or None
                if tok.type == "code_inline":
                    run.font.name = "Courier New"
                if link is not None:
                    link.append(run._r)  # moves the run into the hyperlink

    for i, tok in enumerate(tokens):
        if tok.type == "heading_open":
            style = f"Heading {min(int(tok.tag[1]), 9)}"
        elif tok.type in ("bullet_list_open", "ordered_list_open"):
            lists.append("List Bullet" if tok.type == "bullet_list_open" else "List Number")
        elif tok.type in ("bullet_list_close", "ordered_list_close"):
            lists.pop()
        elif tok.type == "tr_open":
            row = []
        elif tok.type == "tr_close":
            rows.append(row)
        elif tok.type == "table_close" and rows:
            table = document.add_table(rows=len(rows), cols=max(len(r) for r in rows))
            for r, cells in enumerate(rows):
                for c, children in enumerate(cells):
                    cell = table.cell(r, c)
                    inline(cell.paragraphs[0], children)
            rows = []
        elif tok.type == "inline":
            if i and tokens[i - 1].type in ("td_open", "th_open"):
                row.append(tok.children or [])
                continue
            para = document.add_paragraph(style=style if style != "Normal" else (lists[-1] if lists else None))
            inline(para, tok.children or [])
            style = "Normal"
        elif tok.type in ("fence", "code_block"):
            para = document.add_paragraph()
            for n, line in enumerate(tok.content.rstrip("\n").split("\n")):
                if n:
                    para.add_run().add_break()
                para.add_run(line).font.name = "Courier New"
        elif tok.type == "html_block":
            document.add_paragraph(tok.content.strip())
    document.save(str(dst))


def find_files(paths: list[Path]) -> list[Path]:
    found: list[Path] = []
    for root in paths:
        if root.is_file():
            found.append(root)
        elif root.is_dir():
            found.extend(p for p in sorted(root.rglob("*")) if p.is_file() and p.suffix.lower() in FORMATS)
        else:
            raise SystemExit(f"{root}: no such file or directory")
    return found


def spread(files: list[Path], limit: int) -> list[Path]:
    """At most ``limit`` files, evenly spaced over the sorted list (deterministic)."""
    if limit <= 0 or len(files) <= limit:
        return files
    step = len(files) / limit
    return [files[int(i * step)] for i in range(limit)]


def _missing(ref: Counter[str], mine: Counter[str]) -> list[str]:
    return [f"{w}×{n}" if n > 1 else w for w, n in (ref - mine).most_common(12)]


def measure(path: Path, fmt: str) -> dict[str, Any]:
    from ragctl.parsing import ParseError, UnsupportedFormat, parse_file

    row: dict[str, Any] = {"path": str(path), "format": fmt}
    try:
        plain = words(PLAIN[fmt](path))
        seen = words(SEEN[fmt](path)) if fmt in SEEN else plain
    except Exception as exc:  # noqa: BLE001 - the reference tool failed: leave the file out
        row["reference_error"] = " ".join(str(exc).split())[:200]
        return row
    row["plain_words"] = sum(plain.values())
    row["seen_words"] = sum(seen.values())
    if not row["plain_words"] or not row["seen_words"]:
        return row
    try:
        doc = parse_file(path)
        title = doc.title if doc.title != path.name else ""
        mine = words(title + "\n" + doc.text)
    except (ParseError, UnsupportedFormat) as exc:
        row["ragctl_error"] = f"{type(exc).__name__}: {exc}"
        mine = Counter()
    for name, ref in (("plain", plain), ("seen", seen)):
        row[f"{name}_kept"] = kept = sum((ref & mine).values())
        row[f"{name}_recall"] = kept / row[f"{name}_words"]
    row["missing_seen"] = _missing(seen, mine)
    row["missing_plain"] = _missing(plain, mine)
    return row


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for fmt in sorted({r["format"] for r in rows}):
        mine = [r for r in rows if r["format"] == fmt and "seen_recall" in r]
        if not mine:
            continue
        out[fmt] = {"files": len(mine), "ragctl_errors": sum("ragctl_error" in r for r in mine)}
        for name in ("plain", "seen"):
            recalls = [r[f"{name}_recall"] for r in mine]
            out[fmt][name] = {
                "words": sum(r[f"{name}_words"] for r in mine),
                "mean_recall": sum(recalls) / len(recalls),
                "all_words_recall": sum(r[f"{name}_kept"] for r in mine) / sum(r[f"{name}_words"] for r in mine),
                "min_recall": min(recalls),
                "files_below_0_99": sum(x < 0.99 for x in recalls),
            }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="directories (searched recursively) or files")
    parser.add_argument("--max-per-format", type=int, default=300, help="evenly spaced sample per format (0: all)")
    parser.add_argument("--worst", type=int, default=5, help="worst files to list per format")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout: formats and files")
    parser.add_argument(
        "--make-docx",
        nargs=2,
        metavar=("MARKDOWN_DIR", "OUT_DIR"),
        help="first write a .docx for every Markdown file of MARKDOWN_DIR into OUT_DIR (no DOCX on this machine)",
    )
    args = parser.parse_args()
    if args.make_docx:
        src, out = Path(args.make_docx[0]), Path(args.make_docx[1])
        out.mkdir(parents=True, exist_ok=True)
        for md in sorted(src.rglob("*.md")):
            markdown_to_docx(md, out / (md.stem + ".docx"))

    import warnings

    from bs4 import XMLParsedAsHTMLWarning

    import ragctl

    warnings.filterwarnings("ignore", category=XMLParsedAsHTMLWarning)  # XHTML pages: read as HTML, as ragctl does
    print(f"ragctl from {Path(ragctl.__file__).parent}", file=sys.stderr)
    by_format: dict[str, list[Path]] = {}
    for path in find_files(args.paths):
        fmt = FORMATS.get(path.suffix.lower())
        if fmt:
            by_format.setdefault(fmt, []).append(path)
    if "pdf" in by_format and shutil.which("pdftotext") is None:
        print("pdftotext not found (apt-get install poppler-utils): PDFs left out", file=sys.stderr)
        del by_format["pdf"]
    if not by_format:
        print("no supported files found", file=sys.stderr)
        return 2
    rows: list[dict[str, Any]] = []
    for fmt, files in sorted(by_format.items()):
        chosen = spread(files, args.max_per_format)
        print(f"{fmt}: {len(chosen)} of {len(files)} files", file=sys.stderr)
        rows.extend(measure(p, fmt) for p in chosen)
    summary = summarise(rows)
    if args.json:
        json.dump({"formats": summary, "files": rows}, sys.stdout, indent=1, ensure_ascii=False)
        print()
        return 0
    print(
        f"{'format':<9} {'files':>5} {'errors':>6} | {'reference':<9} {'words':>9} {'mean':>7} {'all words':>9} {'min':>6} {'<0.99':>6}"
    )
    for fmt, s in summary.items():
        for name in ("plain", "seen"):
            r = s[name]
            head = f"{fmt:<9} {s['files']:>5} {s['ragctl_errors']:>6}" if name == "plain" else " " * 22
            print(
                f"{head} | {name:<9} {r['words']:>9,} {r['mean_recall']:>7.4f} {r['all_words_recall']:>9.4f} "
                f"{r['min_recall']:>6.3f} {r['files_below_0_99']:>6}"
            )
    for fmt in summary:
        scored = sorted((r for r in rows if r["format"] == fmt and "seen_recall" in r), key=lambda r: r["seen_recall"])
        worst = [r for r in scored[: args.worst] if r["seen_recall"] < 1]
        if worst:
            print(f"\nworst {fmt} files (against seen):")
        for r in worst:
            why = f" [{r['ragctl_error']}]" if "ragctl_error" in r else ""
            print(f"  {r['seen_recall']:.3f} {r['path']}{why}\n        missing: {' '.join(r['missing_seen'])}")
    skipped = [r for r in rows if "reference_error" in r]
    if skipped:
        print(f"\n{len(skipped)} files left out (the reference extraction failed)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
