"""Token-budgeted chunking of parsed document blocks.

Every chunk fits the embedding model's window *as counted by the model's own tokenizer*
(special tokens included: all-MiniLM-L6-v2 sees at most 256 word pieces, [CLS] and [SEP]
among them), and no input text is dropped: every non-whitespace character of the input
appears in some chunk, in order.

Boundaries are chosen in this order of preference: headings, blocks (paragraphs),
sentences, words; a single "word" that is longer than the window by itself (a base64 blob,
a run of CJK text without punctuation) is cut at token boundaries from the tokenizer's
offsets. A heading always starts a new chunk (consecutive headings stay together and stay
with the text that follows them). Small blocks are packed together, joined by a blank line.
When a chunk boundary falls inside a section, the next chunk starts with the previous
chunk's trailing *whole* sentences, at most ``overlap_tokens`` tokens of them.

Speed: each block is tokenised once (``encode_batch``); sentence, word and token-piece
counts are derived from that single encoding through its offsets (for BERT-style
tokenisers, which split on whitespace and punctuation first, those counts are exact).
Each final chunk is then encoded once more, in one batch, to verify its real count; a chunk
over the budget (possible only when a long word was cut between word pieces, or with
tokenisers whose counts are not additive) is re-split until it fits.

Contextual chunks (:meth:`Chunker.contextual`): each chunk also carries the document's title
and its heading path (``section``, e.g. ``File system > fs.watch()``), and the text the model
embeds is ``title > section`` on a first line, then the chunk. That line counts against the
window: each section is packed with the budget left after its context line, which is capped
at ``max_context_tokens`` (middle headings are elided first: ``Title > … > fs.watch()``), so
context + chunk never exceed the window and the chunk text is never cut for it.

This module imports nothing heavy: ``tokenizers`` is imported inside :func:`load_tokenizer`,
``transformers`` only for the fallback when a model directory has no ``tokenizer.json``.
"""

from __future__ import annotations

import math
import re
import unicodedata
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    import tokenizers

__all__ = ["CHUNKER_VERSION", "Chunk", "Chunker", "load_tokenizer", "model_max_seq_length", "BlockLike"]

# Recorded per document ("chunker" in its mapping record). 1 (or absent): chunks without
# context; 2: contextual chunks (title and heading path embedded and full-text indexed).
# `ragctl ingest --reindex` re-chunks documents recorded with an older version.
CHUNKER_VERSION = 2
CONTEXT_SEPARATOR = " > "
MAX_CONTEXT_TOKENS = 40  # cap of the context line (and at most a quarter of the window)


@runtime_checkable
class BlockLike(Protocol):
    """Anything with ``kind`` ("heading" or "text") and ``text``: ``ragctl.parsing.Block``."""

    kind: str
    text: str


@dataclass(frozen=True)
class Chunk:
    text: str
    token_count: int  # tokens of `embed_text` INCLUDING the model's special tokens ([CLS], [SEP])
    title: str = ""  # the document's title (contextual chunks)
    section: str = ""  # heading path inside the document, CONTEXT_SEPARATOR-joined ("" at top level)
    context: str = ""  # the line embedded before the text ("" for none)
    page: int | None = None  # the page its text starts on (PDF pages, image frames), when known
    ocr: bool = False  # some of its text was recognised from a page image

    @property
    def embed_text(self) -> str:
        """What the model embeds: the context line, a blank line, the text."""
        return contextualize(self.context, self.text)


def contextualize(context: str, text: str) -> str:
    """The text a chunk is embedded as (also used for a query-side rerank)."""
    return f"{context}\n\n{text}" if context else text


# --------------------------------------------------------------------------- tokenizer


def load_tokenizer(model_dir: str | Path) -> tokenizers.Tokenizer:
    """The model's fast tokenizer with truncation and padding disabled.

    ``model_dir/tokenizer.json`` when present (all-MiniLM-L6-v2's configures truncation
    and padding to 128, which would make every count lie); otherwise
    ``transformers.AutoTokenizer.from_pretrained(model_dir, local_files_only=True)``'s
    backend tokenizer (a copy: the transformers object is left untouched).
    """
    from tokenizers import Tokenizer

    model_dir = Path(model_dir)
    tj = model_dir / "tokenizer.json"
    if tj.is_file():
        tok = Tokenizer.from_file(str(tj))
    else:
        try:
            from transformers import AutoTokenizer
        except ImportError as exc:  # pragma: no cover - transformers is a dependency
            raise _config_error(f"{model_dir}: no tokenizer.json and transformers is not installed") from exc
        try:
            hf = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True, use_fast=True)
        except Exception as exc:
            raise _config_error(f"{model_dir}: cannot load a tokenizer: {exc}") from exc
        backend = getattr(hf, "backend_tokenizer", None)
        if backend is None:
            raise _config_error(f"{model_dir}: the model has no fast (Rust) tokenizer")
        tok = Tokenizer.from_str(backend.to_str())
    tok.no_truncation()
    tok.no_padding()
    return tok


def model_max_seq_length(model_dir: str | Path, default: int = 256) -> int:
    """``max_seq_length`` from a sentence-transformers model's sentence_bert_config.json."""
    import json

    try:
        with open(Path(model_dir) / "sentence_bert_config.json", encoding="utf-8") as fh:
            value = json.load(fh).get("max_seq_length")
    except (OSError, ValueError):
        return default
    return int(value) if isinstance(value, int) and value > 0 else default


def _config_error(msg: str) -> Exception:
    from ragctl.errors import ConfigError

    return ConfigError(msg)


# --------------------------------------------------------------------------- text helpers

_HSPACE = re.compile(r"[^\S\n]+")  # any whitespace except newline (tabs, NBSP, CR, ...)
_SPACE_NL = re.compile(r" ?\n ?")
_MULTI_NL = re.compile(r"\n{3,}")
_NEEDS_NORMALISING = re.compile(r"[^\S\n ]|  | \n|\n |\n\n\n")


def normalise(text: str) -> str:
    """Collapse runs of spaces/tabs to one space, trim lines, at most one blank line, strip."""
    if not text:
        return ""
    if _NEEDS_NORMALISING.search(text) is None:  # fast path: most extracted text is clean
        return text.strip()
    text = text.replace("\r\n", "\n")
    text = _HSPACE.sub(" ", text)
    text = _SPACE_NL.sub("\n", text)
    text = _MULTI_NL.sub("\n\n", text)
    return text.strip()


# A sentence ends after . ! ? (possibly closed by quotes/brackets) followed by whitespace,
# or after CJK full stops even without whitespace. The lookahead captures the next
# non-space character so "e.g. foo" (lowercase continuation) does not split.
_SENT_END = re.compile(
    r"(?P<lat>[.!?\u2026\u203c\u2047-\u2049]+[\"'\u201d\u2019\u00bb)\]]*)(?=\s+(?P<next>\S)|\s*$)"
    r"|(?P<cjk>[\u3002\uff01\uff1f\uff61]+[\u300d\u300f\u201d\u2019\uff09)\]]*)"
)
_NEWLINES = re.compile(r"\n+")
# a line that starts a list item, a markdown heading, table row or quote
_LINE_START = re.compile(r"(?:[-*+\u2022\u00b7\u25aa\u25ba\u2013\u2014>|]|#{1,6}|\(?\d{1,3}[.)]|\(?[A-Za-z][.)])(?:\s|$)")
_LINE_END_CHARS = frozenset(".!?:;\u3002\uff01\uff1f|{}")
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st vs e.g i.e cf fig figs no nos vol vols approx inc ltd co corp dept est "
    "jan feb mar apr jun jul aug sep sept oct nov dec".split()
)
_WORD = re.compile(r"\S+")


def _sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of a normalised block; spans exclude whitespace."""
    cuts: list[int] = []
    for m in _SENT_END.finditer(text):
        if m.group("lat") is not None:
            nxt = m.group("next")
            if nxt is not None and nxt.islower():
                continue  # "e.g. the", "approx. three", "3 p.m. tomorrow"
            if m.group("lat") == ".":
                j = m.start()
                k = j
                while k > 0 and j - k < 12 and (text[k - 1].isalpha() or text[k - 1] == "."):
                    k -= 1
                word = text[k:j]
                if word.lower() in _ABBREVIATIONS or (len(word) == 1 and word.isupper()):
                    continue  # "Dr. Smith", "J. R. R. Tolkien"
        cuts.append(m.end())
    for m in _NEWLINES.finditer(text):
        s, e = m.span()
        if e - s >= 2 or (s > 0 and text[s - 1] in _LINE_END_CHARS) or _LINE_START.match(text, e):
            cuts.append(s)
    if not cuts:
        return [(0, len(text))] if text else []
    cuts.sort()
    spans: list[tuple[int, int]] = []
    prev = 0
    for c in cuts + [len(text)]:
        if c <= prev:
            continue
        s, e = prev, c
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s:
            spans.append((s, e))
        prev = c
    return spans


_SEGMENT_CHARS = 32_768


def _segments(text: str, size: int) -> list[tuple[int, int]]:
    """(start, end) pieces of ``text`` of about ``size`` chars, cut at a newline or space when
    one is in the second half of the piece (hard cut otherwise)."""
    n = len(text)
    if n <= size:
        return [(0, n)]
    out = []
    a = 0
    while n - a > size:
        b = text.rfind("\n", a + size // 2, a + size)
        if b < 0:
            b = text.rfind(" ", a + size // 2, a + size)
        if b < 0:
            b = a + size
        out.append((a, b))
        a = b
    out.append((a, n))
    return out


def _is_punct(ch: str) -> bool:
    return unicodedata.category(ch).startswith("P")


# --------------------------------------------------------------------------- chunker


class _Blk:
    __slots__ = ("text", "heading", "level", "starts", "_sents", "page", "ocr")

    def __init__(self, text: str, heading: bool, starts: list[int], level: int = 0,
                 page: int | None = None, ocr: bool = False):
        self.text = text
        self.heading = heading
        self.level = level
        self.page = page
        self.ocr = ocr
        self.starts = starts  # start offset of every token (no specials), ascending
        self._sents: list[tuple[int, int, int]] | None = None

    def sents(self) -> list[tuple[int, int, int]]:
        """(start, end, ntok) of each sentence; computed only for blocks that need it."""
        if self._sents is None:
            self._sents = [(s, e, self.ntok(s, e)) for s, e in _sentence_spans(self.text)]
        return self._sents

    def first_token(self, s: int) -> int:
        """Index of the first token of the span starting at ``s``. A token that starts on the
        whitespace before it (byte-level BPE "Ġword", SentencePiece "▁word") belongs to it;
        BERT tokens never start on whitespace."""
        text = self.text
        while s > 0 and text[s - 1].isspace():
            s -= 1
        return bisect_left(self.starts, s)

    def ntok(self, s: int, e: int) -> int:
        return bisect_left(self.starts, e) - self.first_token(s)


# a leaf placed in a chunk: (block index, start, end, ntok, whole, heading?) where whole is
# _PART (part of a sentence), _WHOLE_SENT or _WHOLE_BLOCK
_Leaf = tuple  # (int, int, int, int, int, bool)
_PART, _WHOLE_SENT, _WHOLE_BLOCK = 0, 1, 2

_BLOCK, _SENT, _WORDL = 0, 1, 2


class Chunker:
    """Split blocks into chunks that fit ``max_tokens`` (special tokens included)."""

    def __init__(self, tokenizer: Any, max_tokens: int = 256, overlap_tokens: int = 32,
                 max_context_tokens: int = MAX_CONTEXT_TOKENS):
        tok = getattr(tokenizer, "backend_tokenizer", tokenizer)  # accept a transformers fast tokenizer
        if getattr(tok, "truncation", None) is not None or getattr(tok, "padding", None) is not None:
            # never mutate the caller's object, never count with truncation on
            from tokenizers import Tokenizer

            tok = Tokenizer.from_str(tok.to_str())
            tok.no_truncation()
            tok.no_padding()
        self.tokenizer = tok
        self.n_special = len(tok.encode("", add_special_tokens=True).ids)
        if max_tokens - self.n_special < 1:
            raise ValueError(f"max_tokens={max_tokens} leaves no room next to {self.n_special} special tokens")
        self.max_tokens = int(max_tokens)
        self.budget = self.max_tokens - self.n_special  # content tokens per chunk
        if overlap_tokens < 0 or overlap_tokens >= self.budget:
            raise ValueError(f"overlap_tokens must be in [0, {self.budget}), got {overlap_tokens}")
        self.overlap_tokens = int(overlap_tokens)
        # content tokens the context line may take (the rest of the window stays the chunk's)
        self.max_context_tokens = max(0, min(int(max_context_tokens), self.budget // 4))

    @classmethod
    def from_model_dir(cls, model_dir: str | Path, max_tokens: int | None = None, overlap_tokens: int = 32) -> Chunker:
        """Tokenizer and window (``max_seq_length``) both read from a sentence-transformers model dir."""
        if max_tokens is None:
            max_tokens = model_max_seq_length(model_dir)
        return cls(load_tokenizer(model_dir), max_tokens=max_tokens, overlap_tokens=overlap_tokens)

    # ------------------------------------------------------------------ public

    def count_tokens(self, text: str) -> int:
        """Tokens the model sees for ``text``, special tokens included."""
        return len(self.tokenizer.encode(text, add_special_tokens=True).ids)

    def count_tokens_batch(self, texts: Sequence[str]) -> list[int]:
        """Real counts (special tokens included) of many texts in one batch."""
        if not texts:
            return []
        # encode_batch_fast (tokenizers >= 0.20) skips offset tracking: ~20% faster
        enc = getattr(self.tokenizer, "encode_batch_fast", None) or self.tokenizer.encode_batch
        return [len(e.ids) for e in enc(list(texts), add_special_tokens=True)]

    def chunk(self, blocks: Iterable[BlockLike] | str) -> list[Chunk]:
        """Chunks of the blocks' text alone (no context line)."""
        blks = self._prepare([blocks] if isinstance(blocks, str) else blocks)
        if not blks:
            return []
        packer = _Packer(self, blks)
        for bi, b in enumerate(blks):
            packer.add_block(bi, b)
        leaf_chunks = packer.finish()
        return self._verify(blks, leaf_chunks)

    def contextual(self, blocks: Iterable[BlockLike] | str, title: str = "") -> list[Chunk]:
        """Contextual chunks: each knows `title` and its heading path (`section`), and its
        `embed_text` (context line + text) fits the window. Packing is the same as `chunk`'s
        (a heading always starts a chunk), section by section, with the budget left after the
        section's context line."""
        blks = self._prepare([blocks] if isinstance(blocks, str) else blocks)
        title = " ".join(title.split())
        out: list[Chunk] = []
        for group, section in _sections(blks, title):
            context = self._context_line(title, section)
            used = self._context_cost(context)
            packer = _Packer(self, group, budget=self.budget - used)
            for bi, b in enumerate(group):
                packer.add_block(bi, b)
            for chunk in self._verify(group, packer.finish(), self.max_tokens - used):
                out.append(Chunk(chunk.text, chunk.token_count, title, CONTEXT_SEPARATOR.join(section), context,
                                 chunk.page, chunk.ocr))
        # The real count of what is embedded (exact for BERT-style tokenisers, whose counts are
        # additive); a tokeniser that merges across the line break loses the context line
        # rather than any text.
        counts = self.count_tokens_batch([c.embed_text for c in out])
        return [
            Chunk(c.text, n, c.title, c.section, c.context, c.page, c.ocr) if n <= self.max_tokens
            else Chunk(c.text, self.count_tokens(c.text), c.title, c.section, "", c.page, c.ocr)
            for c, n in zip(out, counts)
        ]

    def _context_line(self, title: str, section: list[str]) -> str:
        """`title > heading > heading`, within max_context_tokens: middle headings elided
        first, then the line cut at a token boundary."""
        parts = [p for p in [title, *section] if p]
        if not parts or self.max_context_tokens == 0:
            return ""
        line = CONTEXT_SEPARATOR.join(parts)
        if len(parts) > 2 and self._context_cost(line) > self.max_context_tokens:
            kept = [parts[-1]]  # the first and the last name, then as many of the nearest as fit
            for name in reversed(parts[1:-1]):
                longer = CONTEXT_SEPARATOR.join([parts[0], "\u2026", name, *kept])
                if self._context_cost(longer) > self.max_context_tokens:
                    break
                kept.insert(0, name)
            line = CONTEXT_SEPARATOR.join([parts[0], "\u2026", *kept])
        if self._context_cost(line) > self.max_context_tokens:
            starts = [o[0] for o in self.tokenizer.encode(line, add_special_tokens=False).offsets]
            line = line[: starts[self.max_context_tokens - 1]].rstrip() if self.max_context_tokens > 1 else ""
            while line and self._context_cost(line) > self.max_context_tokens:
                line = line[:-1].rstrip()
        return line

    def _context_cost(self, context: str) -> int:
        """Content tokens the context line adds to a chunk (0 for none)."""
        return self.count_tokens(context + "\n\n") - self.n_special if context else 0

    # ------------------------------------------------------------------ internals

    def _prepare(self, blocks: Iterable[Any]) -> list[_Blk]:
        texts: list[str] = []
        heads: list[bool] = []
        levels: list[int] = []
        origins: list[tuple[int | None, bool]] = []  # (page, ocr) of each block
        for b in blocks:
            text: Any
            if isinstance(b, str):
                text, kind, level = b, "text", 0
            else:
                text, kind, level = getattr(b, "text", None), getattr(b, "kind", "text"), getattr(b, "level", 0)
            if not text:
                continue
            text = normalise(str(text))
            if not text:
                continue
            texts.append(text)
            heads.append(kind == "heading")
            levels.append(int(level or 1) if kind == "heading" else 0)
            origins.append((getattr(b, "page", None), bool(getattr(b, "ocr", False))))
        if not texts:
            return []
        # Huge blocks are encoded as ~32 KB segments cut at whitespace: tokenising one very
        # long string is slower per byte and cannot use the batch's threads. For tokenisers
        # that pre-split on whitespace (BERT) the stitched offsets are exactly the same.
        segs: list[str] = []
        seg_of: list[tuple[int, int]] = []  # per text: (first segment, number of segments)
        seg_start: list[int] = []
        for text in texts:
            first = len(segs)
            for a, b in _segments(text, _SEGMENT_CHARS):
                segs.append(text[a:b])
                seg_start.append(a)
            seg_of.append((first, len(segs) - first))
        encs = self.tokenizer.encode_batch(segs, add_special_tokens=False)
        out: list[_Blk] = []
        for text, head, level, (first, count), (page, ocr) in zip(texts, heads, levels, seg_of, origins):
            if count == 1:
                starts = [o[0] for o in encs[first].offsets]
            else:
                starts = []
                for k in range(first, first + count):
                    base = seg_start[k]
                    starts.extend(o[0] + base for o in encs[k].offsets)
            out.append(_Blk(text, head, starts, level, page, ocr))
        return out

    @staticmethod
    def _origin(chunk: Chunk, blks: list[_Blk], leaves: Sequence[_Leaf], skip: int = 0) -> Chunk:
        """The chunk with the page its own text starts on (past the `skip` leaves it repeats from
        the previous chunk) and whether any of its blocks was OCR'd."""
        if not leaves:
            return chunk
        first = blks[leaves[min(skip, len(leaves) - 1)][0]]
        ocr = any(blks[leaf[0]].ocr for leaf in leaves)
        if first.page is None and not ocr:
            return chunk
        return Chunk(chunk.text, chunk.token_count, chunk.title, chunk.section, chunk.context, first.page, ocr)

    @staticmethod
    def _join(blks: list[_Blk], leaves: Sequence[_Leaf]) -> str:
        parts: list[str] = []
        cur_b, cur_s, cur_e = -1, 0, 0
        for bi, s, e, *_ in leaves:
            if bi == cur_b and s >= cur_e:
                cur_e = e
                continue
            if cur_b >= 0:
                parts.append(blks[cur_b].text[cur_s:cur_e])
            cur_b, cur_s, cur_e = bi, s, e
        if cur_b >= 0:
            parts.append(blks[cur_b].text[cur_s:cur_e])
        return "\n\n".join(parts)

    def _verify(self, blks: list[_Blk], leaf_chunks: list[tuple[list[_Leaf], int]],
                limit: int | None = None) -> list[Chunk]:
        """Chunks of the packed leaves, each re-split until its real count is within `limit`
        (default: the window)."""
        limit = self.max_tokens if limit is None else limit
        texts = [self._join(blks, lc) for lc, _ in leaf_chunks]
        counts = self.count_tokens_batch(texts)
        out: list[Chunk] = []
        for text, n, (leaves, n_overlap) in zip(texts, counts, leaf_chunks):
            if n <= limit:
                out.append(self._origin(Chunk(text, n), blks, leaves, n_overlap))
            else:
                out.extend(self._refit(blks, leaves, n_overlap, limit))
        return out

    def _refit(self, blks: list[_Blk], leaves: list[_Leaf], n_overlap: int, limit: int) -> list[Chunk]:
        """Re-split a chunk whose real count exceeds the window (rare): by leaves, then tokens.
        The first ``n_overlap`` leaves repeat the previous chunk: they are dropped rather than
        emitted as a chunk of their own."""
        out: list[Chunk] = []
        rest = list(leaves)
        while rest:
            text = self._join(blks, rest)
            n = self.count_tokens(text)
            if n <= limit:
                out.append(self._origin(Chunk(text, n), blks, rest, n_overlap))
                break
            lo, hi = 0, len(rest) - 1  # largest k in [lo, hi] whose prefix fits
            best: Chunk | None = None
            while lo < hi:
                mid = (lo + hi + 1) // 2
                t = self._join(blks, rest[:mid])
                c = self.count_tokens(t)
                if c <= limit:
                    lo, best = mid, Chunk(t, c)
                else:
                    hi = mid - 1
            skip = n_overlap  # the leaves the first piece repeats from the previous chunk
            if n_overlap:
                if lo <= n_overlap:  # only repeated text would fit: drop the overlap instead
                    rest = rest[n_overlap:]
                    n_overlap = 0
                    continue
                n_overlap = 0
            if lo == 0:
                out.extend(self._origin(c, blks, rest[:1]) for c in self._split_exact(self._join(blks, rest[:1]), limit))
                rest = rest[1:]
            else:
                assert best is not None
                out.append(self._origin(best, blks, rest[:lo], skip))
                rest = rest[lo:]
        return out

    def _split_exact(self, text: str, limit: int) -> list[Chunk]:
        """Cut ``text`` at token boundaries, verifying every piece with a real count."""
        out: list[Chunk] = []
        while text:
            n = self.count_tokens(text)
            if n <= limit:
                out.append(Chunk(text, n))
                break
            starts = [o[0] for o in self.tokenizer.encode(text, add_special_tokens=False).offsets]
            take = min(limit - self.n_special, len(starts) - 1)
            while True:
                cut = starts[take] if take < len(starts) else len(text)
                piece = text[:cut].rstrip()
                c = self.count_tokens(piece)
                if c <= limit or take <= 1:
                    break
                take = max(1, take - (c - limit))
            if not piece or c > limit:
                # one token whose text alone re-tokenises to more than the window
                raise ValueError(f"cannot fit {text[:40]!r}... into {limit} tokens")
            out.append(Chunk(piece, c))
            text = text[cut:].lstrip()
        return out


class _Packer:
    """Greedy, boundary-aware packing of leaves (sentences or smaller) into chunks."""

    def __init__(self, chunker: Chunker, blks: list[_Blk], budget: int | None = None):
        self.B = chunker.budget if budget is None else budget
        self.overlap = min(chunker.overlap_tokens, self.B - 1)
        self.blks = blks
        self.chunks: list[tuple[list[_Leaf], int]] = []  # (leaves, how many are overlap)
        self.leaves: list[_Leaf] = []
        self.tokens = 0
        self.n_overlap = 0  # leading leaves copied from the previous chunk
        self.has_new = False  # any leaf of our own
        self.has_text = False  # a non-heading leaf of our own: the chunk may be flushed

    # -- state

    def _add(self, leaf: _Leaf) -> None:
        self.leaves.append(leaf)
        self.tokens += leaf[3]
        self.has_new = True
        if not leaf[5]:
            self.has_text = True

    def flush(self, with_overlap: bool, next_n: int | None = None) -> None:
        if not self.has_new:
            self._reset([])
            return
        leaves = self.leaves
        self.chunks.append((leaves, self.n_overlap))
        keep: list[_Leaf] = []
        if with_overlap and self.overlap > 0:
            total = 0
            for lf, first in self._tail_sentences(leaves):
                if first or lf[4] == _PART or lf[5] or total + lf[3] > self.overlap:
                    break  # never the whole chunk; partial sentence, heading, or over budget
                total += lf[3]
                keep.append(lf)
            keep.reverse()
            if next_n is not None:
                while keep and total + next_n > self.B:
                    total -= keep[0][3]
                    keep = keep[1:]
        self._reset(keep)

    def _tail_sentences(self, leaves: list[_Leaf]) -> Iterator[tuple[_Leaf, bool]]:
        """Sentence-level leaves from the end of a chunk, with "is the chunk's first" flags."""
        for idx in range(len(leaves) - 1, -1, -1):
            lf = leaves[idx]
            if lf[4] == _WHOLE_BLOCK:
                bi, head = lf[0], lf[5]
                sents = self.blks[bi].sents()
                for j in range(len(sents) - 1, -1, -1):
                    ss, se, sn = sents[j]
                    yield (bi, ss, se, sn, _WHOLE_SENT, head), idx == 0 and j == 0
            else:
                yield lf, idx == 0

    def _reset(self, keep: list[_Leaf]) -> None:
        self.leaves = list(keep)
        self.tokens = sum(lf[3] for lf in keep)
        self.n_overlap = len(keep)
        self.has_new = False
        self.has_text = False

    def _drop_overlap_for(self, n: int) -> None:
        """With only overlap leaves in the chunk, drop the oldest until ``n`` tokens fit."""
        while self.n_overlap and self.tokens + n > self.B:
            self.tokens -= self.leaves.pop(0)[3]
            self.n_overlap -= 1

    def _fill_is_free(self, n: int, rem: int) -> bool:
        """Splitting an oversized item into the current chunk's rest costs no extra cut."""
        B = self.B
        return math.ceil(max(n - rem, 0) / B) <= math.ceil(n / B) - 1

    def finish(self) -> list[tuple[list[_Leaf], int]]:
        if self.has_new:
            self.chunks.append((self.leaves, self.n_overlap))
        self.leaves = []
        return self.chunks

    # -- placement

    def add_block(self, bi: int, b: _Blk) -> None:
        head = b.heading
        if head:
            if self.has_text:
                self.flush(with_overlap=False)  # a heading starts a new chunk
            elif not self.has_new:
                self._reset([])  # no overlap in front of a heading
        n = len(b.starts)
        self._place(bi, _BLOCK, 0, len(b.text), n, head, b)

    def _place(self, bi: int, level: int, s: int, e: int, n: int, head: bool, b: _Blk) -> None:
        B = self.B
        if self.tokens + n <= B:
            self._emit(bi, level, s, e, n, head, b)
            return
        if self.has_text or (head and self.has_new):  # (a heading too long for one chunk)
            if n <= B:  # fits in a fresh chunk: cut here, at the best boundary
                self.flush(with_overlap=True, next_n=n)
                self._emit(bi, level, s, e, n, head, b)
                return
            if not self._fill_is_free(n, B - self.tokens):
                self.flush(with_overlap=True)
        elif not self.has_new and n <= B:  # only overlap so far
            self._drop_overlap_for(n)
            self._emit(bi, level, s, e, n, head, b)
            return
        # oversized (or stuck behind a heading): go one level down
        if level == _BLOCK:
            for ss, se, sn in b.sents():
                self._place(bi, _SENT, ss, se, sn, head, b)
        elif level == _SENT:
            text = b.text
            for m in _WORD.finditer(text, s, e):
                ws, we = m.span()
                self._place(bi, _WORDL, ws, we, b.ntok(ws, we), head, b)
        else:
            self._split_tokens(bi, s, e, head, b)

    def _emit(self, bi: int, level: int, s: int, e: int, n: int, head: bool, b: _Blk) -> None:
        if level == _BLOCK:
            self._add((bi, s, e, n, _WHOLE_BLOCK, head))
        else:
            self._add((bi, s, e, n, _WHOLE_SENT if level == _SENT else _PART, head))

    def _split_tokens(self, bi: int, s: int, e: int, head: bool, b: _Blk) -> None:
        """A word longer than the room left: cut at token starts, preferring after punctuation."""
        starts = b.starts
        text = b.text
        i = b.first_token(s)
        end_i = bisect_left(starts, e)
        pos = s
        while i < end_i:
            rem = self.B - self.tokens
            if rem <= 0:
                if self.has_new:
                    self.flush(with_overlap=True)
                else:
                    self._drop_overlap_for(1)
                continue
            left = end_i - i
            if left <= rem:
                self._add((bi, pos, e, left, _PART, head))
                return
            j = i + rem
            lo = i + max(1, (rem * 3) // 4)
            for k in range(j, lo - 1, -1):  # prefer cutting right after a punctuation token
                if _is_punct(text[starts[k - 1]]) and not _is_punct(text[starts[k]]):
                    j = k
                    break
            while j < end_i and starts[j] <= pos:  # (tokens that start before the word)
                j += 1
            if j >= end_i:
                self._add((bi, pos, e, left, _PART, head))  # verified, re-split if needed
                return
            cut = starts[j]
            self._add((bi, pos, cut, j - i, _PART, head))
            pos, i = cut, j
            self.flush(with_overlap=True)  # the chunk is full (up to the preferred cut)
        if pos < e:  # trailing characters that produced no token
            self._add((bi, pos, e, 0, _PART, head))


def _sections(blks: list[_Blk], title: str) -> Iterator[tuple[list[_Blk], list[str]]]:
    """The blocks cut where a heading follows text (where `_Packer` always starts a chunk),
    each run with the heading path its text sits under. A top heading that is the title or
    starts it (an HTML page's <h1> "Profiles" under <title> "Profiles - The Cargo Book", a
    Markdown `# Title`) is the title, not a level of the path."""
    stack: list[tuple[int, str]] = []
    run: list[_Blk] = []
    path: list[str] = []
    has_text = False
    folded_title = title.casefold()
    for b in blks:
        if b.heading:
            if has_text:
                yield run, path
                run, has_text = [], False
            while stack and stack[-1][0] >= b.level:
                stack.pop()
            heading_line = " ".join(b.text.split())
            folded = heading_line.casefold()
            if not stack and (folded == folded_title or folded_title.startswith(folded + " ")):
                stack.append((b.level, ""))  # the title itself ("Profiles" of "Profiles - The Cargo Book")
            else:
                stack.append((b.level, heading_line))
            path = [h for _, h in stack if h]
        else:
            has_text = True
        run.append(b)
    if run:
        yield run, path
