"""Rendered test pages with known text, for OCR quality (CER, reading order) and the suite.

`render_page(kind, seed)` draws a letter-size page of generated prose (a fixed vocabulary, so no
page is a repeat of another) and returns ``(image, truth)``: ``truth`` is the list of the page's
blocks in reading order (a table row as its cells joined by `` | ``). Kinds:

* ``clean``: one column at 150 dpi; ``rotated``: the same turned +/-3 degrees;
* ``noisy``: rotated 3 degrees, Gaussian noise, saved as a JPEG at quality 35 and decoded again;
* ``dpi100`` / ``dpi67``: the clean page down-sampled to 100 and ~67 dpi (a fax);
* ``two_columns``: a full-width title, then two columns of paragraphs;
* ``table``: a heading, a ruled table (4 columns), a paragraph under it;
* ``photo``: uneven lighting on a grey gradient, slight blur (a phone photo of a page).

`cer(truth, found)` is the character error rate (Levenshtein / truth length) over
whitespace-normalised text with table separators removed; `order_errors` counts the truth
blocks that come out before the block that precedes them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

KINDS = ("clean", "rotated", "noisy", "dpi100", "dpi67", "two_columns", "table", "photo")

_WORDS = (
    "the customer may return any product within thirty days of delivery for a full refund provided "
    "that it is unused and in its original packaging warranty claims must include the serial number "
    "invoice date and a short description of the fault our service team answers every request within "
    "two business days shipping costs are covered for defective items only replacement parts are "
    "available for seven years after the last production date the agreement renews automatically each "
    "year unless either party gives written notice ninety days before the renewal date payments are "
    "due within forty five days fees for late payment accrue monthly at one percent confidential "
    "information disclosed under this contract remains the property of the disclosing party liability "
    "is limited to the amount paid in the twelve months before the claim force majeure events include "
    "floods fires strikes and government orders the supplier shall maintain insurance coverage of at "
    "least two million dollars inspection reports are filed quarterly with the regional office"
).split()
_NAMES = ("Invoice", "Warranty", "Schedule", "Contract", "Appendix", "Summary", "Policy", "Notice")

PAGE_W, PAGE_H = 1275, 1650  # letter at 150 dpi
MARGIN = 110


# (regular, bold) font files tried in turn by seed: seed 0 is always DejaVu Sans
_FAMILIES = (
    ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf"),
    ("DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf"),
    ("LiberationSerif-Regular.ttf", "LiberationSerif-Bold.ttf"),
    ("LiberationSans-Regular.ttf", "LiberationSans-Bold.ttf"),
    ("DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf"),
    ("DejaVuSerifCondensed.ttf", "DejaVuSerifCondensed-Bold.ttf"),
)
_FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu", "/usr/share/fonts/truetype/liberation")
_family = _FAMILIES[0]


def _font(size: int, bold: bool = False) -> Any:
    """The current family's font at that pixel size (PIL's own scalable font if none is here)."""
    from PIL import ImageFont

    for name in (_family[1] if bold else _family[0], _FAMILIES[0][1] if bold else _FAMILIES[0][0]):
        for folder in _FONT_DIRS:
            path = Path(folder) / name
            if path.exists():
                return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size=size)


def _sentence(rng: random.Random, words: int) -> str:
    start = rng.randrange(len(_WORDS))
    picked = [_WORDS[(start + i * rng.choice((1, 1, 1, 2, 3))) % len(_WORDS)] for i in range(words)]
    text = " ".join(picked)
    if rng.random() < 0.3:
        text += f" {rng.randint(2, 9999)}"
    return text[0].upper() + text[1:] + "."


def _wrap(draw: Any, text: str, font: Any, width: int) -> list[str]:
    lines, cur = [], ""
    for word in text.split():
        trial = f"{cur} {word}".strip()
        if draw.textlength(trial, font=font) <= width or not cur:
            cur = trial
        else:
            lines.append(cur)
            cur = word
    if cur:
        lines.append(cur)
    return lines


def _paragraph(rng: random.Random) -> str:
    return " ".join(_sentence(rng, rng.randint(7, 14)) for _ in range(rng.randint(2, 3)))


def _column(draw: Any, paras: list[str], font: Any, x: int, y: int, width: int, line_h: int, bottom: int) -> tuple[list[str], int]:
    """Draw paragraphs into a column; the paragraphs that fit (whole) come back."""
    kept = []
    for para in paras:
        lines = _wrap(draw, para, font, width)
        if y + len(lines) * line_h > bottom:
            break
        for line in lines:
            draw.text((x, y), line, fill=(20, 20, 20), font=font)
            y += line_h
        y += line_h // 2 + 6
        kept.append(para)
    return kept, y


def _base_page(rng: random.Random, size: int) -> tuple[Any, list[str]]:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (PAGE_W, PAGE_H), "white")
    draw = ImageDraw.Draw(image)
    title = f"{rng.choice(_NAMES)} {rng.randint(100, 999)}: {_sentence(rng, 4)[:-1]}"
    draw.text((MARGIN, MARGIN), title, fill="black", font=_font(int(size * 1.65), bold=True))
    paras = [_paragraph(rng) for _ in range(8)]
    kept, _ = _column(draw, paras, _font(size), MARGIN, MARGIN + 90, PAGE_W - 2 * MARGIN, int(size * 1.4),
                      PAGE_H - MARGIN)
    return image, [title, *kept]


def _two_columns(rng: random.Random, size: int, gutter: int) -> tuple[Any, list[str]]:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (PAGE_W, PAGE_H), "white")
    draw = ImageDraw.Draw(image)
    title = f"{rng.choice(_NAMES)} {rng.randint(100, 999)}: {_sentence(rng, 5)[:-1]}"
    draw.text((MARGIN, MARGIN), title, fill="black", font=_font(int(size * 1.8), bold=True))
    width = (PAGE_W - 2 * MARGIN - gutter) // 2
    font, line_h = _font(size), int(size * 1.4)
    left, _ = _column(draw, [_paragraph(rng) for _ in range(6)], font, MARGIN, MARGIN + 90, width, line_h,
                      PAGE_H - MARGIN)
    right, _ = _column(draw, [_paragraph(rng) for _ in range(6)], font, MARGIN + width + gutter, MARGIN + 90, width,
                       line_h, PAGE_H - MARGIN)
    return image, [title, *left, *right]


def _table(rng: random.Random, size: int) -> tuple[Any, list[str]]:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (PAGE_W, PAGE_H), "white")
    draw = ImageDraw.Draw(image)
    title = f"{rng.choice(_NAMES)} {rng.randint(100, 999)} price schedule"
    draw.text((MARGIN, MARGIN), title, fill="black", font=_font(int(size * 1.65), bold=True))
    font = _font(size)
    header = ["Item", "Quantity", "Unit price", "Delivery"]
    rows = [header] + [[rng.choice(_WORDS).capitalize() + f" {rng.randint(10, 99)}", str(rng.randint(1, 500)),
                        f"{rng.randint(1, 999)}.{rng.randint(0, 99):02d}", f"{rng.randint(1, 28)} days"]
                       for _ in range(10)]
    col_w = (PAGE_W - 2 * MARGIN) // 4
    y0, row_h = MARGIN + 100, 56
    for r, row in enumerate(rows):
        y = y0 + r * row_h
        for c, cell in enumerate(row):
            draw.text((MARGIN + c * col_w + 14, y + 14), cell, fill="black", font=font)
    for r in range(len(rows) + 1):  # the rules
        draw.line([(MARGIN, y0 + r * row_h), (PAGE_W - MARGIN, y0 + r * row_h)], fill="black", width=2)
    for c in range(5):
        draw.line([(MARGIN + c * col_w, y0), (MARGIN + c * col_w, y0 + len(rows) * row_h)], fill="black", width=2)
    para = _paragraph(rng)
    kept, _ = _column(draw, [para], font, MARGIN, y0 + len(rows) * row_h + 50, PAGE_W - 2 * MARGIN, 34, PAGE_H - MARGIN)
    return image, [title, *[" | ".join(row) for row in rows], *kept]


def _degrade(image: Any, kind: str, rng: random.Random) -> Any:
    import numpy as np
    from PIL import Image, ImageFilter

    if kind == "rotated":
        return image.rotate(rng.choice((-3, 3)), resample=Image.Resampling.BICUBIC, expand=True, fillcolor="white")
    if kind == "noisy":
        image = image.rotate(3, resample=Image.Resampling.BICUBIC, expand=True, fillcolor="white")
        arr = np.asarray(image.convert("L"), dtype=np.float32)
        arr = np.clip(arr + np.random.default_rng(rng.randint(0, 1 << 30)).normal(0, 28, arr.shape), 0, 255)
        buf = BytesIO()
        Image.fromarray(arr.astype(np.uint8), "L").save(buf, "JPEG", quality=35)
        return Image.open(BytesIO(buf.getvalue())).convert("RGB")
    if kind in ("dpi100", "dpi67"):
        factor = 100 / 150 if kind == "dpi100" else 67 / 150
        size = (int(image.width * factor), int(image.height * factor))
        small = image.convert("L").resize(size, Image.Resampling.BILINEAR)
        if kind == "dpi67":  # a fax: bi-level
            small = small.point(lambda v: 255 if v > 150 else 0)
        return small.convert("RGB")
    if kind == "photo":
        arr = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
        h, w = arr.shape
        yy, xx = np.mgrid[0:h, 0:w]
        light = 0.55 + 0.4 * (xx / w) * (1 - 0.5 * yy / h)  # a lamp at the top right
        paper = arr * light + (1 - arr) * 0.08
        out = Image.fromarray((np.clip(paper, 0, 1) * 255).astype(np.uint8), "L")
        return out.filter(ImageFilter.GaussianBlur(1.1)).convert("RGB")
    return image


def render_page(kind: str, seed: int = 0) -> tuple[Any, list[str]]:
    """(PIL RGB image, truth blocks in reading order) of one generated page of that kind.
    Seed 0 is DejaVu Sans at 24 px (22 in two columns, 60 px gutter); other seeds vary the font
    family (serif, mono, condensed), the body size (18-28 px at 150 dpi: 9-13 pt) and the gutter
    (36-90 px, at least 1.5 em); the 67-dpi fax keeps its body at 25 px or more (12 pt: a letter)."""
    global _family
    if kind not in KINDS:
        raise ValueError(f"unknown page kind {kind!r} (one of {', '.join(KINDS)})")
    style = random.Random(f"style:{seed}")
    _family = _FAMILIES[style.randrange(len(_FAMILIES))] if seed else _FAMILIES[0]
    try:
        return _render(kind, seed, style)
    finally:
        _family = _FAMILIES[0]  # _font() outside render_page: always the default family


def _render(kind: str, seed: int, style: random.Random) -> tuple[Any, list[str]]:
    rng = random.Random(f"{kind}:{seed}")
    size = style.randint(18, 28) if seed else 24
    if kind == "two_columns":
        # gutters under ~1.4 em are merged into one line by the text detector (measured: a 37 px
        # gutter between 28 px letters); real two-column layouts leave 2 em or more
        return _two_columns(rng, size - 2 if not seed else size, style.randint(max(36, int(1.5 * size)), 90) if seed else 60)
    if kind == "table":
        return _table(rng, size)
    if kind == "dpi67":  # a fax of a letter: 12-13 pt (9 pt serif at 67 dpi is 4-pixel letters nobody reads)
        size = max(size, 25)
    image, truth = _base_page(rng, size)
    return _degrade(image, kind, rng), truth


def _norm(text: str) -> str:
    return " ".join(text.replace(" | ", " ").split())


def cer(truth: Sequence[str], found: Sequence[str]) -> float:
    """Character error rate of `found` (blocks in the order read) against `truth`."""
    from rapidfuzz.distance import Levenshtein

    want, got = _norm(" ".join(truth)), _norm(" ".join(found))
    return Levenshtein.distance(want, got) / max(1, len(want))


def order_errors(truth: Sequence[str], found: Sequence[str]) -> int:
    """Truth blocks (of 20+ characters) found earlier in the output than the block before them."""
    from rapidfuzz import fuzz

    text = _norm(" ".join(found))
    positions = []
    for block in truth:
        block = _norm(block)
        if len(block) < 20:
            continue
        probe = block[: min(len(block), 60)]
        alignment = fuzz.partial_ratio_alignment(probe, text)
        positions.append(alignment.dest_start if alignment is not None and alignment.score >= 70 else -1)
    return sum(1 for a, b in zip(positions, positions[1:]) if a >= 0 and b >= 0 and b < a)
