"""Page images -> text blocks in reading order: the OCR engine behind a small interface.

* `OcrOptions`: the mode (``auto``: OCR what has no text layer, ``force``: every page, ``off``)
  and the limits that travel with a parse task to the worker processes.
* `OcrEngine`: ``read_lines(image) -> list[Line]``. The one implementation, `RapidOcrEngine`,
  is rapidocr 3.x on OpenVINO with the PP-OCRv6 detection and recognition models that ship
  inside its wheel (nothing is downloaded), its 180-degree line classifier off (measured: it
  flips correct lines and garbles them). It is loaded lazily, once per process, on the first
  page that needs it: a parse worker that never meets a scan never pays its ~1 GB.
* `image_blocks(image, page)`: OCR one page image, then `reading_order` (columns, tables,
  headings), each block marked ``ocr=True`` with its 1-based page number.
* `read_image(data, options)`: an image file as a document (multi-page TIFF/GIF/WebP: a page
  per frame), bounded: pixels checked from the header before anything is decoded, PIL's
  decompression-bomb guard on, frames decoded one at a time.

Progress: a caller that supervises a long OCR (the parse pool's per-page deadline) registers a
sink with `set_progress_sink`; each finished page sends ``("ocr_page", page)`` to it.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from io import BytesIO
from typing import Any, Protocol

from ragctl.errors import ParseError, UnsupportedFormat, UsageError
from ragctl.parsing.model import Block
from ragctl.parsing.reading_order import Line, reading_order
from ragctl.parsing.textutil import one_line

OCR_MODES = ("auto", "off", "force")
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif"})

DEFAULT_MAX_PAGES = 1000
# A page image is decoded only under this many pixels (a 30,000 x 30,000 PNG is 900 M pixels and
# ~2.7 GB decoded): 64 M is an A0 poster at 200 dpi, or 10 x an A4 page at 300 dpi.
MAX_IMAGE_PIXELS = 64_000_000
# An image smaller than this holds no readable line (favicons, icons, bullets, spacer GIFs in a
# documentation tree): skipped without loading the OCR engine.
MIN_SIDE_PX, MIN_PIXELS = 24, 10_000
MULTI_PAGE_FORMATS = frozenset({"TIFF", "MPO"})  # a frame is a page (GIF/WebP/APNG frames are animation)
# The long side a PDF page is rendered at (the recogniser works at <= 2000 px; more is slower,
# not better), and the resolution it never exceeds (a small page is not blown up past 300 dpi).
RENDER_LONG_SIDE_PX = 2000
RENDER_MAX_DPI = 300
# Small images are not enlarged before detection. Measured on 67-dpi fax pages (18 seeds in three
# sets): enlarging the short side towards 736 px (at most 1.5x) gave CER 4.5 / 8.3 / 4.3% where
# leaving them as they are gave 5.2 / 7.5 / 5.1%: no clear gain; 2-3x enlargements were worse.
# A PDF page is OCR'd (--ocr auto) when it has no text layer at all (a scan, or text drawn as
# outlines), or fewer than TEXT_LAYER_SPARSE_CHARS non-space characters on a page that images
# cover at least half of (a scan with a stamped page number or header).
TEXT_LAYER_SPARSE_CHARS = 200
IMAGE_COVER_FOR_SCAN = 0.5
MIN_LINE_SCORE = 0.5  # recognised lines below this confidence are dropped (rapidocr's default)


@dataclass(frozen=True)
class OcrOptions:
    mode: str = "auto"  # auto | off | force
    max_pages: int = DEFAULT_MAX_PAGES  # pages OCR'd per file at most; a file with more fails

    def __post_init__(self) -> None:
        if self.mode not in OCR_MODES:
            raise UsageError(f"OCR mode must be one of {', '.join(OCR_MODES)}, not {self.mode!r}")
        if self.max_pages < 1:
            raise UsageError(f"OCR page limit must be at least 1, not {self.max_pages}")


class OcrEngine(Protocol):
    name: str

    def read_lines(self, image: Any) -> list[Line]:
        """The text lines found in a PIL image (RGB), with their boxes in pixels."""
        ...


class RapidOcrEngine:
    name = "rapidocr"

    def __init__(self, threads: int = 0) -> None:
        try:
            from rapidocr import EngineType, RapidOCR
        except ImportError as exc:  # pragma: no cover - rapidocr is a main dependency
            raise UnsupportedFormat(f"OCR is not installed ({exc}); reinstall ragctl") from exc
        params = {
            "Global.use_cls": False,
            "Global.log_level": "error",
            "Global.text_score": MIN_LINE_SCORE,
            # the detector scales a page so its LONG side is at most 2000 px, never up: its
            # default (short side at least 736 px) blew a one-line 640 x 90 image up 8x and split
            # the line into overlapping boxes ("Whiteboard: r : retro")
            "Det.limit_type": "max",
            "Det.limit_side_len": RENDER_LONG_SIDE_PX,
            "Det.engine_type": EngineType.OPENVINO,
            "Cls.engine_type": EngineType.OPENVINO,
            "Rec.engine_type": EngineType.OPENVINO,
            "EngineConfig.openvino.inference_num_threads": threads or -1,
        }
        self._engine = RapidOCR(params=params)
        self._lock = threading.Lock()  # one inference at a time: the engine is not thread-safe

    def read_lines(self, image: Any) -> list[Line]:
        import numpy as np

        with self._lock:
            result = self._engine(np.asarray(image))
        boxes, texts = getattr(result, "boxes", None), getattr(result, "txts", None)
        if boxes is None or texts is None:
            return []
        return deskewed_lines([[(float(p[0]), float(p[1])) for p in box] for box in boxes], [str(t) for t in texts])


def deskewed_lines(quads: list[list[tuple[float, float]]], texts: list[str]) -> list[Line]:
    """Axis-aligned lines from the engine's quadrilaterals (top-left, top-right, bottom-right,
    bottom-left), turned by the page's skew first: on a page scanned 3 degrees off, the upright
    boxes of long lines overlap their neighbours and would merge into one band."""
    import math
    import statistics

    angles = [math.atan2(q[1][1] - q[0][1], q[1][0] - q[0][0]) for q in quads
              if q[1][0] - q[0][0] > 2 * abs(q[3][1] - q[0][1])]  # lines clearly wider than tall
    skew = statistics.median(angles) if angles else 0.0
    cos, sin = math.cos(-skew), math.sin(-skew)
    lines = []
    for quad, text in zip(quads, texts):
        if not text.strip():
            continue
        pts = [(x * cos - y * sin, x * sin + y * cos) for x, y in quad] if abs(skew) > 0.002 else quad
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        lines.append(Line(text, min(xs), min(ys), max(xs), max(ys)))
    return lines


_ENGINE: OcrEngine | None = None
_ENGINE_LOCK = threading.Lock()


def engine() -> OcrEngine:
    """The process's OCR engine, loaded on first use (one OpenVINO thread per parse worker,
    as the worker's OMP_NUM_THREADS says; every core in a process that set no limit)."""
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
            _ENGINE = RapidOcrEngine(threads=threads)
        return _ENGINE


_progress_sink: Callable[[tuple[str, int]], None] | None = None


def set_progress_sink(sink: Callable[[tuple[str, int]], None] | None) -> None:
    """Where each finished OCR page is announced (``("ocr_page", page)``); None: nowhere."""
    global _progress_sink
    _progress_sink = sink


def page_done(page: int) -> None:
    if _progress_sink is not None:
        _progress_sink(("ocr_page", page))


def image_blocks(image: Any, page: int, ocr_engine: OcrEngine | None = None) -> list[Block]:
    """OCR one page image: its blocks in reading order, marked ``ocr`` with their page."""
    lines = (ocr_engine or engine()).read_lines(image)
    blocks = [Block(b.kind, b.text, b.level, page=page, ocr=True) for b in reading_order(lines)]
    page_done(page)
    return blocks


# ----------------------------------------------------------------------------- images


def to_rgb(image: Any) -> Any:
    """Any PIL mode -> 8-bit RGB: 16-bit and float greyscale scaled to their range, CMYK
    converted, transparency flattened onto white."""
    from PIL import Image

    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        import numpy as np

        arr = np.asarray(image, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        arr -= lo
        arr *= 255.0 / (hi - lo) if hi > lo else 0.0
        return Image.fromarray(arr.astype(np.uint8)).convert("RGB")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if mode == "RGB" else image.convert("RGB")


def _upright(frame: Any) -> Any:
    """The frame turned as its EXIF orientation says (a phone photo stored sideways)."""
    from PIL import ImageOps

    try:
        return ImageOps.exif_transpose(frame)
    except (OSError, ValueError, SyntaxError):  # an unreadable EXIF block: use the pixels as stored
        return frame


def _open(data: bytes) -> Any:
    """The image, opened (header only), PIL's decompression-bomb warning taken as an error."""
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return Image.open(BytesIO(data))
        except UnidentifiedImageError as exc:
            raise ParseError("not a readable image (corrupt, truncated, or another format renamed)") from exc
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ParseError(f"image not decoded: {str(exc).rstrip('.')}") from exc


def _frames(image: Any, pages: int) -> Iterator[Any]:
    """The first `pages` frames, decoded one at a time, each checked before decoding."""
    from PIL import ImageSequence

    for number, frame in enumerate(ImageSequence.Iterator(image), start=1):
        if number > pages:
            return
        where = f"frame {number}: " if pages > 1 else ""
        w, h = frame.size
        if w * h > MAX_IMAGE_PIXELS:
            raise ParseError(
                f"{where}image of {w:,} x {h:,} pixels, over the {MAX_IMAGE_PIXELS // 1_000_000} megapixel "
                "limit (a decompression bomb, or a scan at a needlessly high resolution)")
        if min(w, h) < MIN_SIDE_PX or w * h < MIN_PIXELS:
            raise UnsupportedFormat(f"{where}image of {w} x {h} pixels is too small to hold text (an icon?)")
        try:
            frame.load()
        except (OSError, ValueError, SyntaxError) as exc:
            raise ParseError(f"{where}not a readable image ({one_line(exc, 160)})") from exc
        yield to_rgb(_upright(frame))


def read_image(data: bytes, options: OcrOptions) -> list[Block]:
    """An image file read by OCR: every frame of a TIFF is a page; a GIF, WebP or PNG animation is
    read from its first frame (its other frames are animation, not pages)."""
    if options.mode == "off":
        raise UnsupportedFormat("an image: its text is read only by OCR, which is off (--ocr off)")
    with _open(data) as image:
        frames = int(getattr(image, "n_frames", 1) or 1) if image.format in MULTI_PAGE_FORMATS else 1
        if frames > options.max_pages:
            raise ParseError(f"{frames} pages need OCR, over the limit of {options.max_pages} per file "
                             "(raise it with --ocr-max-pages)")
        blocks: list[Block] = []
        for page, frame in enumerate(_frames(image, frames), start=1):
            blocks.extend(image_blocks(frame, page))
            del frame
    if not blocks:
        raise UnsupportedFormat("no text found by OCR")
    return blocks
