"""Parse-throughput benchmark of the readers: ``python -m ragctl.bench.parsing [--scale 1.0]``.

Generates one synthetic document per format in memory (fixed seed; the text is the corpus
generator's prose, `ragctl.bench.corpus.Prose`), parses it with
``parse_bytes`` a few times and prints input KB/s, extracted-text KB/s and blocks/s. For scale:
embedding runs at roughly 70 chunks/s of ~250 tokens, i.e. ~70 KB/s of text, so every native
reader should be far above that. "first s" includes one-off costs (imports; for the
unstructured fallback, loading spaCy); "best s" is the best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable

from ragctl.bench.corpus import Prose
from ragctl.parsing import parse_bytes


def _sentence(rng: random.Random, n: int = 14) -> str:
    """About `n` words of the corpus prose (a short label for small n)."""
    words = Prose(rng).sentence().split()
    return " ".join(words[:n]) if n < len(words) else " ".join(words)


def _para(rng: random.Random, sentences: int = 5) -> str:
    prose = Prose(rng)
    return " ".join(prose.sentence() for _ in range(sentences))


def _word(rng: random.Random) -> str:
    return rng.choice(Prose(rng).sentence().rstrip(".").split())


def gen_txt(rng: random.Random, scale: float) -> bytes:
    return "\n\n".join(_para(rng) for _ in range(int(4000 * scale))).encode()


def gen_md(rng: random.Random, scale: float) -> bytes:
    out = []
    for i in range(int(800 * scale)):
        out.append(f"## Section {i} {_sentence(rng, 4)}\n")
        out.append(_para(rng) + " See [the docs](https://example.com/x) for **details**.\n")
        out.append("- " + _sentence(rng) + "\n- " + _sentence(rng) + "\n")
        out.append("```python\nprint('hello')\nx = 1\n```\n")
        out.append(_para(rng) + "\n")
    return "\n".join(out).encode()


def gen_rst(rng: random.Random, scale: float) -> bytes:
    out = []
    for i in range(int(800 * scale)):
        title = f"Section {i}"
        out.append(f"{title}\n{'=' * len(title)}\n\n{_para(rng)}\n\n.. note:: {_sentence(rng)}\n\n{_para(rng)}\n")
    return "\n".join(out).encode()


def gen_html(rng: random.Random, scale: float) -> bytes:
    out = ["<html><head><title>t</title><style>p{}</style><script>var x=1;</script></head><body>"]
    out.append("<nav><a href='/'>Home</a><a href='/a'>A</a></nav>")
    for i in range(int(800 * scale)):
        out.append(f"<h2 id='s{i}'>Section {i}</h2>")
        out.append(f"<div class='c'><p>{_para(rng)} <a href='#'>link</a> <b>bold</b></p>")
        out.append(f"<ul><li>{_sentence(rng)}</li><li>{_sentence(rng)}</li></ul>")
        out.append(f"<table><tr><th>k</th><th>v</th></tr><tr><td>{i}</td><td>{_sentence(rng, 5)}</td></tr></table>")
        out.append(f"<p>{_para(rng)}</p></div>")
    out.append("</body></html>")
    return "\n".join(out).encode()


def gen_pdf(rng: random.Random, scale: float) -> bytes:
    from ragctl.bench.samples import make_pdf

    pages = []
    for i in range(int(120 * scale)):
        pages.append([("title", f"Page {i}")] + [("text", _para(rng, 4)) for _ in range(5)])
    return make_pdf(pages)


def gen_docx(rng: random.Random, scale: float) -> bytes:
    from ragctl.bench.samples import make_docx

    items: list[tuple] = []
    for i in range(int(300 * scale)):
        items.append(("heading", f"Section {i}", 1 + i % 3))
        items.append(("text", _para(rng)))
        items.append(("text", _para(rng)))
        if i % 10 == 0:
            items.append(("table", [("k", "v"), (str(i), _sentence(rng, 5))]))
    return make_docx(items)


def gen_pptx(rng: random.Random, scale: float) -> bytes:
    from ragctl.bench.samples import make_pptx

    slides = [
        {"title": f"Slide {i}", "bullets": [_sentence(rng) for _ in range(5)], "notes": _para(rng, 2)}
        for i in range(int(100 * scale))
    ]
    return make_pptx(slides)


def gen_csv(rng: random.Random, scale: float) -> bytes:
    rows = ["id,name,description,price"]
    rows += [f'{i},{_word(rng)},"{_sentence(rng, 10)}",{i * 3}' for i in range(int(20000 * scale))]
    return "\n".join(rows).encode()


def gen_tsv(rng: random.Random, scale: float) -> bytes:
    return gen_csv(rng, scale).replace(b",", b"\t")


def gen_json(rng: random.Random, scale: float) -> bytes:
    records = [
        {"id": i, "name": _sentence(rng, 3), "meta": {"tags": [_word(rng) for _ in range(3)],
                                                     "text": _para(rng, 2)}}
        for i in range(int(6000 * scale))
    ]
    return json.dumps({"records": records}, indent=1).encode()


def gen_jsonl(rng: random.Random, scale: float) -> bytes:
    return "\n".join(
        json.dumps({"id": i, "text": _para(rng, 2), "tags": [_word(rng)]})
        for i in range(int(6000 * scale))
    ).encode()


def gen_eml(rng: random.Random, scale: float) -> bytes:
    body = "\n\n".join(_para(rng) for _ in range(int(2000 * scale)))
    return (
        "From: a@example.com\nTo: b@example.com\nSubject: Bench\nDate: Mon, 1 Jan 2024 10:00:00 +0000\n"
        "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
        + body
    ).encode()


def gen_xml(rng: random.Random, scale: float) -> bytes:
    items = "".join(
        f"<item id='{i}'><name>{_word(rng)}</name><text>{_para(rng, 2)}</text></item>"
        for i in range(int(6000 * scale))
    )
    return f"<?xml version='1.0' encoding='utf-8'?><items>{items}</items>".encode()


def gen_msg(rng: random.Random, scale: float) -> bytes:
    from ragctl.bench.samples import make_msg

    return make_msg("Bench message", "\n\n".join(_para(rng, 2) for _ in range(3)), "a@example.com", "b@example.com")


GENERATORS: dict[str, Callable[[random.Random, float], bytes]] = {
    ".txt": gen_txt,
    ".md": gen_md,
    ".rst": gen_rst,
    ".html": gen_html,
    ".pdf": gen_pdf,
    ".docx": gen_docx,
    ".pptx": gen_pptx,
    ".csv": gen_csv,
    ".tsv": gen_tsv,
    ".json": gen_json,
    ".jsonl": gen_jsonl,
    ".eml": gen_eml,
    ".xml": gen_xml,
    ".msg": gen_msg,  # unstructured fallback, for contrast (includes a one-off spaCy load)
}


def run(scale: float = 1.0, repeat: int = 3, formats: list[str] | None = None) -> list[dict]:
    results = []
    for suffix, gen in GENERATORS.items():
        if formats and suffix not in formats:
            continue
        data = gen(random.Random(42), scale)
        times = []
        doc = None
        for _ in range(max(1, repeat)):
            t0 = time.perf_counter()
            doc = parse_bytes(data, suffix)
            times.append(time.perf_counter() - t0)
        best = min(times)
        assert doc is not None
        text_bytes = sum(len(b.text.encode()) for b in doc.blocks)
        results.append(
            {
                "format": suffix,
                "parser": doc.parser,
                "input_kb": round(len(data) / 1024, 1),
                "first_s": round(times[0], 4),
                "seconds": round(best, 4),
                "input_kb_s": round(len(data) / 1024 / best),
                "text_kb_s": round(text_bytes / 1024 / best),
                "blocks": len(doc.blocks),
            }
        )
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="parse throughput per format")
    ap.add_argument("--scale", type=float, default=1.0, help="document size multiplier")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--format", action="append", dest="formats", help="e.g. --format .pdf")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    results = run(args.scale, args.repeat, args.formats)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(
        f"{'format':8} {'parser':14} {'input KB':>9} {'first s':>8} {'best s':>8} "
        f"{'input KB/s':>11} {'text KB/s':>10} {'blocks':>7}"
    )
    for r in results:
        print(
            f"{r['format']:8} {r['parser']:14} {r['input_kb']:>9} {r['first_s']:>8} {r['seconds']:>8} "
            f"{r['input_kb_s']:>11} {r['text_kb_s']:>10} {r['blocks']:>7}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
