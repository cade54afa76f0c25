"""Which search candidates are the same passage (issue 26: a passage is returned once).

Two candidates are the same passage when their texts are equal once white space is collapsed
(the passage key of `ragctl.storage.chunk_texts.passage_key`), or near-duplicates: the same
passage with another date or number, a footer or header line added, or white space changed.
The rule, on lower-cased words with every date read as one word `date`:

    the shorter text appears whole, as one run, inside the longer one, and covers at least
    NEAR_DUPLICATE (0.85) of its words

so what may differ is dates anywhere (`2024-01-05`, `5/1/2024`, `January 5, 2024`, `12:30`) and
words *added* before or after (a footer, a title line), never a word replaced by another: the
same sentence about `request.getHeaders()` and about `response.getHeaders()`, or about
`buf.swap16()` and `buf.swap32()`, are two passages. (Masking every number was tried: it merged
`isUint16Array` with `isUint32Array`.) Word-shingle Jaccard alone was measured first and
rejected: at 0.8 it merged `request.getHeaders()` with `response.getHeaders()` and
`context.after()` with `context.afterEach()` in the Node.js API docs (119 pairs of 6,607 chunks;
docs/retrieval.md, "Passages"). Candidate pairs are found through an index of first words and
early word windows (`PassageGroups`), so a query's ~120 candidates cost a few milliseconds.

`PassageGroups` assigns candidates to groups greedily, in the order given (the ranked lists,
best first): a candidate joins the group whose first member has its key, else the group whose
first member it near-duplicates best, else starts a group.

`most_specific`: of the documents holding one passage, the one a reader should be sent to -
the document with the fewest chunks (the chapter rather than the all-on-one print page, the
section's own page rather than the index that quotes it), then the shortest path, then the
path itself (deterministic).
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ragctl.storage.chunk_texts import passage_key

SHINGLE_WORDS = 5
NEAR_DUPLICATE = 0.85  # share of the longer text's words one common run must cover

_WORD = re.compile(r"\w+")
_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
_DATE = re.compile(
    r"\b(?:\d{4}-\d{1,2}-\d{1,2}(?:[t ]\d{1,2}:\d{2}(?::\d{2})?)?|\d{1,2}[./]\d{1,2}[./]\d{2,4}"
    rf"|{_MONTH} \d{{1,2}}(?:st|nd|rd|th)?,? \d{{4}}|\d{{1,2}}(?:st|nd|rd|th)? {_MONTH},? \d{{4}}|{_MONTH} \d{{4}}"
    r"|\d{1,2}:\d{2}(?::\d{2})?)\b")


def words(text: str) -> list[str]:
    """Lower-cased words, every date or time of day read as the one word `date`."""
    return _WORD.findall(_DATE.sub(" date ", text.lower()))


def plain_words(text: str) -> list[str]:
    """Lower-cased words without the ones made of digits only: what candidates are looked up
    by (cheap; a date changes none of them), before `words` compares the few found."""
    return [w for w in _WORD.findall(text.lower()) if not w.isdigit()]


def shingles(text: str, n: int = SHINGLE_WORDS) -> frozenset[int]:
    """Hashes of the text's n-word windows (`words`; a text shorter than n words is one
    shingle of all its words)."""
    return _shingles(words(text), n)


def _shingles(words: list[str], n: int = SHINGLE_WORDS) -> frozenset[int]:
    if len(words) <= n:
        return frozenset({hash(tuple(words))}) if words else frozenset()
    return frozenset(hash(tuple(words[i:i + n])) for i in range(len(words) - n + 1))


def common_run(a: list[str], b: list[str]) -> float:
    """The share of the longer word list that the shorter covers when it occurs whole, as one
    run, inside the longer; 0 when it does not."""
    from difflib import SequenceMatcher

    if not a or not b:
        return 1.0 if a == b else 0.0
    match = SequenceMatcher(None, a, b, autojunk=False).find_longest_match(0, len(a), 0, len(b))
    if match.size < min(len(a), len(b)):
        return 0.0
    return match.size / max(len(a), len(b))


def jaccard(a: frozenset[int], b: frozenset[int]) -> float:
    if not a or not b:
        return 1.0 if a == b else 0.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


def near_signature(text: str, threshold: float = NEAR_DUPLICATE) -> bytes:
    """What near-duplicate lookups need of a text, computed once when its chunk is stored (the
    `near` column of chunks.sqlite) so that a query does not tokenize its candidates: the
    count n of its plain words, then a 4-byte hash (crc32) of each SHINGLE_WORDS-word window
    starting in its first (1 - threshold) share (offset 0, the head, first). A text of fewer
    than SHINGLE_WORDS words is just its count: grouped by exact key only. Little-endian
    uint32s. A hash collision only costs one word-by-word comparison more."""
    mine = plain_words(text)
    n = len(mine)
    if n < SHINGLE_WORDS:
        return struct.pack("<I", n)
    last = min(n - SHINGLE_WORDS, int(n * (1.0 - threshold)))
    hashes = [zlib.crc32(" ".join(mine[i:i + SHINGLE_WORDS]).encode("utf-8")) for i in range(last + 1)]
    return struct.pack(f"<{1 + len(hashes)}I", n, *hashes)


def chunk_signatures(chunks: Sequence[str]) -> tuple[list[bytes], list[bytes]]:
    """Each chunk's passage key and near-duplicate signature, as chunks.sqlite stores them."""
    return [passage_key(c) for c in chunks], [near_signature(c) for c in chunks]


class PassageGroups:
    """Candidates (id, text) -> group number; equal passages and near-duplicates share one.

    Finding near-duplicates cheaply: if the shorter text S (m words) lies whole inside the longer
    L (n words, m >= t*n), S starts at a word offset <= n - m <= (1-t)*n of L. So each group's
    first member is indexed by its first SHINGLE_WORDS words (its head) and by the word windows
    starting in its first (1-t) share (its early windows), both as the hashes of its
    `near_signature`; a new candidate looks its head up among the early windows (it may lie
    inside a member) and its early windows among the heads (a member may lie inside it), and
    only those few are compared word by word. Texts shorter than SHINGLE_WORDS words are grouped
    by exact key only.

    `add` takes the candidate's stored passage key and signature where the store has them (a
    signature is only used when this threshold is at least the one it was made for: it then
    holds every window needed, and maybe a few more); otherwise it computes them from the text.
    Given both, `add` needs no text: `text_of(id)` is asked for a text only when two candidates
    are compared word by word."""

    def __init__(self, threshold: float | None = None, text_of: Callable[[int], str] | None = None) -> None:
        self.threshold = NEAR_DUPLICATE if threshold is None else threshold
        self.group: dict[int, int] = {}  # candidate id -> group
        self.members: list[list[int]] = []  # group -> candidate ids, in the order they came
        self.keys: dict[int, bytes] = {}  # candidate id -> passage key
        self._by_key: dict[bytes, int] = {}
        self._sizes: list[int] = []  # group -> its first member's plain-word count
        self._firsts: list[int] = []  # group -> its first member's id
        self._given: dict[int, str] = {}  # texts given to `add`
        self._text_of = text_of
        # each group's first member's early word windows (its head first), and every group's
        # heads and early windows together: a candidate sharing none of them with the groups
        # (most) is told apart with two set operations, not a dict lookup per window
        self._windows: list[frozenset[int]] = []
        self._heads: list[int | None] = []
        self._all_heads: set[int] = set()
        self._all_early: set[int] = set()

    def add(self, vid: int, text: str | None, key: bytes | None = None, near: bytes | None = None) -> int:
        """The candidate's group. `text` may be None only with both `key` and `near` given."""
        if vid in self.group:
            return self.group[vid]
        if text is not None:
            self._given[vid] = text
        key = key if key is not None else passage_key(self._text(vid))
        self.keys[vid] = key
        g = self._by_key.get(key)
        if g is None:
            n = 0
            windows: tuple[int, ...] = ()
            if self.threshold <= 1.0:
                if near is None or self.threshold < NEAR_DUPLICATE:
                    near = near_signature(self._text(vid), min(self.threshold, NEAR_DUPLICATE))
                n, *rest = struct.unpack(f"<{len(near) // 4}I", near)
                windows = tuple(rest)
            maybe_near = bool(windows) and (windows[0] in self._all_early or not self._all_heads.isdisjoint(windows))
            g = self._nearest(n, windows, vid) if maybe_near else None
            if g is None:
                g = len(self.members)
                self.members.append([])
                self._sizes.append(n)
                self._firsts.append(vid)
                early: frozenset[int] = frozenset(windows)
                self._windows.append(early)
                self._heads.append(windows[0] if windows else None)
                if windows:
                    self._all_heads.add(windows[0])
                    self._all_early.update(early)
            self._by_key[key] = g
        self.group[vid] = g
        self.members[g].append(vid)
        return g

    def _text(self, vid: int) -> str:
        if vid in self._given:
            return self._given[vid]
        if self._text_of is None:
            raise ValueError(f"no text for candidate {vid}")
        return self._text_of(vid)

    def _nearest(self, n: int, windows: tuple[int, ...], vid: int) -> int | None:
        mine = set(windows)
        # groups it may lie inside (its head among their early windows), or that may lie inside
        # it (their head among its windows)
        found = [g for g, (early, head) in enumerate(zip(self._windows, self._heads))
                 if windows[0] in early or (head is not None and head in mine)]
        best, best_run = None, 0.0
        compared: list[str] | None = None
        for g in found:
            theirs = self._sizes[g]
            if min(n, theirs) < self.threshold * max(n, theirs) - 2:
                continue
            if compared is None:
                compared = words(self._text(vid))
            run = common_run(compared, words(self._text(self._firsts[g])))
            if run > best_run:
                best, best_run = g, run
        return best if best is not None and best_run >= self.threshold else None


def most_specific(holders: Iterable[tuple[int, dict[str, Any]]]) -> tuple[int, dict[str, Any]]:
    """The (vector id, record) to attribute a passage to: the holder document with the fewest
    chunks, then the shortest path, then the path, then the lowest id."""
    return min(holders, key=lambda h: (int(h[1].get("chunk_count", 0)), len(str(h[1].get("path", ""))),
                                       str(h[1].get("path", "")), h[0]))
