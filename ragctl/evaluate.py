"""`ragctl eval`: known-item retrieval quality of an entity, measured on its own texts.

Sentences are sampled from the entity's chunk texts (seeded, reproducible) and used as
queries. For every query and mode:

* document recall@k - a top-k hit comes from a document that contains the sentence;
* MRR - 1 / rank of the first hit from such a document (0 when none is in the top k);
* chunk hit@k - a top-k chunk contains the sentence itself (the chunk handed to a model
  would hold the answer).

"Contains" compares whitespace-collapsed text, so a sentence that several documents share
counts for each of them.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragctl.errors import UsageError
from ragctl.query import MODES, Searcher
from ragctl.storage.entity import Hit

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`\"'(\[])")
_SPACE = re.compile(r"\s+")
MIN_WORDS = 6
MAX_WORDS = 40


def _norm(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


@dataclass
class ModeScore:
    queries: int = 0
    doc_hits: int = 0
    chunk_hits: int = 0
    reciprocal_ranks: float = 0.0
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        n = max(self.queries, 1)
        return {
            "queries": self.queries,
            "doc_recall": round(self.doc_hits / n, 4),
            "mrr": round(self.reciprocal_ranks / n, 4),
            "chunk_hit": round(self.chunk_hits / n, 4),
            "ms_per_query": round(1000 * self.seconds / n, 2),
        }


@dataclass
class EvalReport:
    entity: str
    k: int
    seed: int
    sampled: int
    modes: dict[str, ModeScore] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "entity": self.entity,
            "k": self.k,
            "seed": self.seed,
            "sampled": self.sampled,
            "modes": {m: s.to_json() for m, s in self.modes.items()},
        }


def candidate_sentences(text: str) -> list[str]:
    """Prose sentences of a chunk: MIN_WORDS..MAX_WORDS words, mostly letters."""
    out = []
    for part in _SENTENCE_END.split(text):
        sentence = _norm(part)
        words = sentence.split()
        if not MIN_WORDS <= len(words) <= MAX_WORDS:
            continue
        if sum(ch.isalpha() for ch in sentence) < 0.6 * len(sentence):
            continue  # code, tables, lists of numbers
        out.append(sentence)
    return out


def sample_sentences(chunks: dict[int, str], n: int, seed: int) -> list[str]:
    """`n` distinct sentences from distinct chunks (seeded), skipping near-empty chunks."""
    rng = random.Random(seed)
    ids = sorted(chunks)
    rng.shuffle(ids)
    seen: set[str] = set()
    picked: list[str] = []
    for vid in ids:
        choices = [s for s in candidate_sentences(chunks[vid]) if s not in seen]
        if not choices:
            continue
        sentence = rng.choice(choices)
        seen.add(sentence)
        picked.append(sentence)
        if len(picked) == n:
            break
    return picked


def evaluate(
    store: Path, entity_id: str, *, sample: int = 50, k: int = 5, modes: list[str] | None = None,
    seed: int = 0, model: str | None = None,
) -> EvalReport:
    modes = list(modes or MODES)
    for mode in modes:
        if mode not in MODES:
            raise UsageError(f"unknown search mode {mode!r} (one of {', '.join(MODES)})")
    if sample < 1 or k < 1:
        raise UsageError("sample and k must be at least 1")
    searcher = Searcher(store, entity_id, model)
    entity = searcher.entity
    records = entity.records()
    owners = entity.owners()
    ids = [i for r in records.values() for i in range(int(r["first_vector_id"]), int(r["first_vector_id"]) + int(r["chunk_count"]))]
    chunks = {vid: _norm(t) for vid, t in entity.texts.fetch(ids).items()}
    sentences = sample_sentences(chunks, sample, seed)
    if not sentences:
        raise UsageError(f"entity {entity_id!r} has no prose sentences to sample")
    # which documents contain each sentence (the relevant set for document recall)
    docs_with: list[set[str]] = [set() for _ in sentences]
    for vid, text in chunks.items():
        for n, sentence in enumerate(sentences):
            if sentence in text:
                record = owners.owner(vid)
                if record is not None:
                    docs_with[n].add(record["doc_id"])
    report = EvalReport(entity=entity_id, k=k, seed=seed, sampled=len(sentences))
    for mode in modes:
        score = report.modes[mode] = ModeScore()
        started = time.perf_counter()
        results = searcher.search(sentences, k, mode)
        score.seconds = time.perf_counter() - started
        for sentence, relevant, hits in zip(sentences, docs_with, results):
            _score(score, sentence, relevant, hits)
    return report


def _score(score: ModeScore, sentence: str, relevant: set[str], hits: list[Hit]) -> None:
    score.queries += 1
    first = next((rank for rank, hit in enumerate(hits, 1) if hit.doc_id in relevant), None)
    if first is not None:
        score.doc_hits += 1
        score.reciprocal_ranks += 1.0 / first
    if any(sentence in _norm(hit.text) for hit in hits):
        score.chunk_hits += 1


def format_table(reports: list[EvalReport]) -> str:
    lines = ["| entity | mode | queries | doc recall@k | MRR | chunk hit@k | ms/query |", "|---|---|---|---|---|---|---|"]
    for report in reports:
        for mode, score in report.modes.items():
            j = score.to_json()
            lines.append(
                f"| {report.entity} | {mode} | {j['queries']} | {j['doc_recall']:.2f} | {j['mrr']:.2f} "
                f"| {j['chunk_hit']:.2f} | {j['ms_per_query']:.1f} |"
            )
    return "\n".join(lines)
