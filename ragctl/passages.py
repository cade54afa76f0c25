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
`isUint16Array` with `isUint32Array`.) Candidates are found first by the Jaccard similarity
of their word 5-shingles (at least PREFILTER), through an inverted index of each group's first
member, so a query's ~100 candidates cost a few milliseconds. Word-shingle Jaccard alone was
measured first and rejected: at 0.8 it merged `request.getHeaders()` with
`response.getHeaders()` and `context.after()` with `context.afterEach()` in the Node.js API
docs (120 pairs of 6,607 chunks; docs/retrieval.md, "Passages").

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
from collections.abc import Iterable
from typing import Any

from ragctl.storage.chunk_texts import passage_key

SHINGLE_WORDS = 5
PREFILTER = 0.5  # word 5-shingle Jaccard a pair needs before the near-duplicate rule is checked
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


class PassageGroups:
    """Candidates (id, text) -> group number; equal passages and near-duplicates share one."""

    def __init__(self, threshold: float | None = None) -> None:
        self.threshold = NEAR_DUPLICATE if threshold is None else threshold
        self.group: dict[int, int] = {}  # candidate id -> group
        self.members: list[list[int]] = []  # group -> candidate ids, in the order they came
        self.keys: dict[int, bytes] = {}  # candidate id -> passage key
        self._by_key: dict[bytes, int] = {}
        self._first: list[tuple[list[str], frozenset[int]]] = []  # group -> its first member's words, shingles
        self._postings: dict[int, list[int]] = {}  # shingle -> groups whose first member has it

    def add(self, vid: int, text: str) -> int:
        if vid in self.group:
            return self.group[vid]
        key = passage_key(text)
        self.keys[vid] = key
        g = self._by_key.get(key)
        if g is None and self.threshold <= 1.0:
            mine = words(text)
            own = _shingles(mine)
            g = self._nearest(mine, own)
            if g is None:
                g = len(self.members)
                self.members.append([])
                self._first.append((mine, own))
                for s in own:
                    self._postings.setdefault(s, []).append(g)
            self._by_key.setdefault(key, g)
        elif g is None:
            g = len(self.members)
            self.members.append([])
            self._by_key[key] = g
        self.group[vid] = g
        self.members[g].append(vid)
        return g

    def _nearest(self, mine: list[str], own: frozenset[int]) -> int | None:
        shared: dict[int, int] = {}
        for s in own:
            for g in self._postings.get(s, ()):
                shared[g] = shared.get(g, 0) + 1
        best, best_run = None, 0.0
        for g in sorted(shared):
            inter = shared[g]
            theirs, their_shingles = self._first[g]
            if inter / (len(own) + len(their_shingles) - inter) < PREFILTER:
                continue
            run = common_run(mine, theirs)
            if run > best_run:
                best, best_run = g, run
        return best if best is not None and best_run >= self.threshold else None


def most_specific(holders: Iterable[tuple[int, dict[str, Any]]]) -> tuple[int, dict[str, Any]]:
    """The (vector id, record) to attribute a passage to: the holder document with the fewest
    chunks, then the shortest path, then the path, then the lowest id."""
    return min(holders, key=lambda h: (int(h[1].get("chunk_count", 0)), len(str(h[1].get("path", ""))),
                                       str(h[1].get("path", "")), h[0]))
