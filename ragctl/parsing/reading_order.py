"""Recognised text lines (boxes) -> blocks in reading order, with paragraphs, tables and headings.

An OCR engine returns lines top to bottom across the whole page, so a two-column page comes
back interleaved (left line 1, right line 1, left line 2, ...). This module puts the lines back
in the order a person reads them, using only their boxes:

1. **Bands.** Lines are grouped into horizontal bands: a band ends where no line overlaps the
   next one vertically (a row of text, or several rows that overlap).
2. **Blocks.** Consecutive bands are merged while the merged lines still leave a *gutter*: a
   vertical strip at least ``GUTTER_FACTOR`` line heights wide that no line crosses. A line that
   crosses every gutter (a full-width title or paragraph) ends the block. A block with a
   gutter is a multi-column region; a block without one is single-column text.
3. **Columns.** A multi-column block is cut at its gutters (an XY-cut along x) and each column
   is read top to bottom, recursively (a column may itself hold columns).
4. **Structure.** Within a column, a vertical gap larger than the column's usual line gap by
   ``PARAGRAPH_GAP`` line heights starts a new paragraph. A block whose columns hold short,
   row-aligned cells (not lines of prose that fill their column) is a table and is emitted
   row by row (cells joined by `` | ``). A short paragraph whose line height is at
   least ``HEADING_RATIO`` times the page's median is a heading.

The thresholds are relative to the page's own median line height, so they do not depend on the
resolution. Pure Python over boxes: testable without an OCR engine.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from ragctl.parsing.model import Block

GUTTER_FACTOR = 0.8  # a column gutter is at least this many median line heights wide (boxes are padded:
# a 43 px gutter between 22 px letters is 33 px between their boxes, 1.18 box heights)
PARAGRAPH_GAP = 0.4  # a gap this many line heights over the column's usual one starts a paragraph
HEADING_RATIO = 1.35  # a line this much taller than the median is heading-sized
HEADING_MAX_WORDS = 14
TABLE_MAX_WORDS = 6  # median words per cell of a table (text columns hold longer lines)
PROSE_MIN_WORDS, PROSE_MIN_FILL = 4, 0.7  # wrapped prose: lines of 4+ words filling 70% of the column
CELL_SEPARATOR = " | "


@dataclass(frozen=True)
class Line:
    """One recognised line: its text and its axis-aligned box in pixels (y grows downwards)."""

    text: str
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def height(self) -> float:
        return max(1.0, self.y1 - self.y0)

    @property
    def cy(self) -> float:
        return (self.y0 + self.y1) / 2


def _bands(lines: list[Line]) -> list[list[Line]]:
    """Horizontal bands: runs of lines (sorted by top) that overlap vertically."""
    out: list[list[Line]] = []
    bottom = float("-inf")
    for line in sorted(lines, key=lambda ln: (ln.y0, ln.x0)):
        # overlap by more than a quarter of the smaller height joins the band
        if out and line.y0 < bottom - 0.25 * min(line.height, out[-1][-1].height):
            out[-1].append(line)
            bottom = max(bottom, line.y1)
        else:
            out.append([line])
            bottom = line.y1
    return out


def _gaps(lines: Sequence[Line], min_width: float) -> list[tuple[float, float]]:
    """Vertical strips (x0, x1) at least `min_width` wide that no line crosses, between lines."""
    spans = sorted((ln.x0, ln.x1) for ln in lines)
    out: list[tuple[float, float]] = []
    right = spans[0][1]
    for x0, x1 in spans[1:]:
        if x0 - right >= min_width:
            out.append((right, x0))
        right = max(right, x1)
    return out


def _blocks(bands: list[list[Line]], gutter: float) -> list[list[Line]]:
    """Merge consecutive bands while their lines keep a common gutter (see the module doc)."""
    out: list[list[Line]] = []
    has_gutter = False
    for band in bands:
        if out:
            merged = out[-1] + band
            merged_has = bool(_gaps(merged, gutter))
            if merged_has or not (has_gutter or _gaps(band, gutter)):
                out[-1] = merged
                has_gutter = merged_has
                continue
        out.append(list(band))
        has_gutter = bool(_gaps(band, gutter))
    return out


def _columns(lines: list[Line], gutter: float) -> list[list[Line]]:
    """Cut at the gutters, left to right; a single column comes back whole."""
    gaps = _gaps(lines, gutter)
    if not gaps:
        return [lines]
    cols: list[list[Line]] = [[] for _ in range(len(gaps) + 1)]
    for ln in lines:
        i = sum(1 for g0, _ in gaps if ln.x0 >= g0)
        cols[i].append(ln)
    return [c for c in cols if c]


def _is_table(cols: list[list[Line]]) -> bool:
    """Columns of short, row-aligned cells are a table; columns of wrapped prose (lines that
    fill their column, several words each) are not."""
    if len(cols) < 2:
        return False
    words, fill = [], []
    for col in cols:
        left, right = min(ln.x0 for ln in col), max(ln.x1 for ln in col)
        for ln in col:
            words.append(len(ln.text.split()))
            fill.append((ln.x1 - ln.x0) / max(1.0, right - left))
    if statistics.median(words) > TABLE_MAX_WORDS:
        return False
    if statistics.median(words) >= PROSE_MIN_WORDS and statistics.median(fill) >= PROSE_MIN_FILL:
        return False
    rows = _bands([ln for col in cols for ln in col])
    aligned = sum(1 for row in rows if len(row) >= 2)
    return len(rows) >= 2 and aligned >= 0.6 * len(rows)


def _join_lines(lines: list[Line]) -> str:
    text = ""
    for ln in lines:
        t = " ".join(ln.text.split())
        if not text:
            text = t
        elif text.endswith("-") and t[:1].islower() and len(text) > 1 and text[-2].isalpha():
            text = text[:-1] + t  # a word hyphenated at the line end
        else:
            text += " " + t
    return text


def _paragraphs(col: list[Line], median_h: float) -> list[list[Line]]:
    """A column's lines top to bottom, split into paragraphs where the vertical gap is larger
    than the column's usual line gap by PARAGRAPH_GAP line heights, or where the line height
    changes sharply (a heading above body text)."""
    bands = _bands(col)
    for band in bands:
        band.sort(key=lambda ln: ln.x0)
    gaps = [b[0].y0 - max(ln.y1 for ln in a) for a, b in zip(bands, bands[1:])]
    usual = statistics.median(gaps) if gaps else 0.0
    out: list[list[Line]] = []
    for i, band in enumerate(bands):
        if i == 0:
            out.append(list(band))
            continue
        prev, first = bands[i - 1][-1], band[0]
        ratio = max(first.height, prev.height) / min(first.height, prev.height)
        if gaps[i - 1] > max(usual, 0.0) + PARAGRAPH_GAP * median_h or ratio >= HEADING_RATIO:
            out.append(list(band))
        else:
            out[-1].extend(band)
    return out


def _emit(lines: list[Line], median_h: float, gutter: float, out: list[Block]) -> None:
    for block in _blocks(_bands(lines), gutter):
        cols = _columns(block, gutter)
        if len(cols) == 1:
            for para in _paragraphs(cols[0], median_h):
                text = _join_lines(para)
                height = statistics.median(ln.height for ln in para)
                if (height >= HEADING_RATIO * median_h and len(text.split()) <= HEADING_MAX_WORDS
                        and len(para) <= 2):
                    out.append(Block("heading", text, 1 if height >= 1.8 * median_h else 2))
                else:
                    out.append(Block("text", text))
        elif _is_table(cols):
            for row in _bands(block):
                row.sort(key=lambda ln: ln.x0)
                out.append(Block("text", CELL_SEPARATOR.join(" ".join(ln.text.split()) for ln in row)))
        else:
            for col in cols:
                _emit(col, median_h, gutter, out)


def reading_order(lines: Sequence[Line]) -> list[Block]:
    """The page's blocks (headings, paragraphs, table rows) in reading order."""
    lines = [ln for ln in lines if ln.text.strip()]
    if not lines:
        return []
    median_h = statistics.median(ln.height for ln in lines)
    out: list[Block] = []
    _emit(list(lines), median_h, GUTTER_FACTOR * median_h, out)
    return out
