"""Which search candidates are the same passage (issue 26: a passage is returned once).

Two candidates are the same passage when their texts are equal once white space is collapsed
(the passage key of `ragctl.storage.chunk_texts.passage_key`), or near-duplicates: the Jaccard
similarity of their word 5-shingles (lower-cased words) is at least `NEAR_DUPLICATE`, which
lets the same passage with another date, a footer line or a changed heading word collapse while
a passage that merely shares wording with another does not (threshold chosen and its false-merge
rate measured on real trees: docs/retrieval.md, "Passages").

`PassageGroups` assigns candidates to groups greedily, in the order they are given (the ranked
lists, best first): a candidate joins the group whose first member has its key, else the group
whose first member it overlaps most if that overlap reaches the threshold, else starts a group.
Comparisons go through an inverted index of the first members' shingles, so a query's ~100
candidates cost a few milliseconds.

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
NEAR_DUPLICATE = 0.8  # Jaccard of word 5-shingles at or above which two candidates are one passage

_WORD = re.compile(r"\w+")


def shingles(text: str, n: int = SHINGLE_WORDS) -> frozenset[int]:
    """Hashes of the text's n-word windows (lower-cased words; a text shorter than n words is
    one shingle of all its words)."""
    words = _WORD.findall(text.lower())
    if len(words) <= n:
        return frozenset({hash(tuple(words))}) if words else frozenset()
    return frozenset(hash(tuple(words[i:i + n])) for i in range(len(words) - n + 1))


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
        self._first: list[frozenset[int]] = []  # group -> its first member's shingles
        self._postings: dict[int, list[int]] = {}  # shingle -> groups whose first member has it

    def add(self, vid: int, text: str) -> int:
        if vid in self.group:
            return self.group[vid]
        key = passage_key(text)
        self.keys[vid] = key
        g = self._by_key.get(key)
        if g is None and self.threshold <= 1.0:
            own = shingles(text)
            g = self._nearest(own)
            if g is None:
                g = len(self.members)
                self.members.append([])
                self._first.append(own)
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

    def _nearest(self, own: frozenset[int]) -> int | None:
        shared: dict[int, int] = {}
        for s in own:
            for g in self._postings.get(s, ()):
                shared[g] = shared.get(g, 0) + 1
        best, best_j = None, 0.0
        for g, inter in shared.items():
            j = inter / (len(own) + len(self._first[g]) - inter)
            if j > best_j or (j == best_j and best is not None and g < best):
                best, best_j = g, j
        return best if best is not None and best_j >= self.threshold else None


def most_specific(holders: Iterable[tuple[int, dict[str, Any]]]) -> tuple[int, dict[str, Any]]:
    """The (vector id, record) to attribute a passage to: the holder document with the fewest
    chunks, then the shortest path, then the path, then the lowest id."""
    return min(holders, key=lambda h: (int(h[1].get("chunk_count", 0)), len(str(h[1].get("path", ""))),
                                       str(h[1].get("path", "")), h[0]))
