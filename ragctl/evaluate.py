"""`ragctl eval`: retrieval quality of an entity, per search mode.

Two evaluations:

* `evaluate_questions` (`ragctl eval ENTITY --questions FILE`): a question set written in a
  user's words, each question with the documents that answer it and optionally an evidence
  snippet (see `ragctl.question_sets`). Metrics are defined in `score_question`.
* `evaluate` (`ragctl eval ENTITY`): known-item queries sampled from the entity's own texts.

Known-item sampling: sentences are sampled from the entity's chunk texts (seeded, reproducible) and used as
queries. For every query and mode:

* document recall@k - a top-k hit comes from a document that contains the sentence;
* MRR - 1 / rank of the first hit from such a document (0 when none is in the top k);
* chunk hit@k - a top-k chunk contains the sentence itself (the chunk handed to a model
  would hold the answer).

"Contains" compares whitespace-collapsed text, so a sentence that several documents share
counts for each of them.
"""

from __future__ import annotations

import math
import random
import re
import time
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ragctl.errors import UsageError
from ragctl.model_config import ModelConfig
from ragctl.query import MODES, Searcher
from ragctl.question_sets import Question, load_questions
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


def check_modes(modes: list[str] | None) -> list[str]:
    """The modes to evaluate: every mode `ragctl.query` offers by default (new ones included)."""
    chosen = list(modes or MODES)
    for mode in chosen:
        if mode not in MODES:
            raise UsageError(f"unknown search mode {mode!r} (one of {', '.join(MODES)})")
    return chosen


def warm_up(searcher: Searcher, query: str, modes: list[str], k: int, rerank: bool = False) -> None:
    """One untimed query per mode first, so that `ms_per_query` measures searching, not loading
    the model, the index or the full-text table into whichever mode happens to run first."""
    for mode in modes:
        searcher.search([query], k, mode, rerank=rerank)


def evaluate(
    store: Path, entity_id: str, *, sample: int = 50, k: int = 5, modes: list[str] | None = None,
    seed: int = 0, model: str | None = None, config: ModelConfig | None = None, per_document: bool = True,
) -> EvalReport:
    modes = check_modes(modes)
    if sample < 1 or k < 1:
        raise UsageError("sample and k must be at least 1")
    searcher = Searcher(store, entity_id, config if config is not None else ModelConfig(model=model))
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
    warm_up(searcher, sentences[0], modes, k)
    for mode in modes:
        score = report.modes[mode] = ModeScore()
        started = time.perf_counter()
        results = searcher.search(sentences, k, mode, per_document=per_document)
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


# --------------------------------------------------------------------------- question sets

NDCG_AT = 10


def normalize_text(text: str) -> str:
    """How evidence and chunk texts are compared: NFKC, case-folded, white space collapsed."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


EVIDENCE_WORDS = 750  # issue 26: the evidence counts within the first 750 words of the top k


def evidence_within(evidence: str, texts: Sequence[str], budget: int = EVIDENCE_WORDS) -> bool:
    """Whether `evidence` lies inside one of `texts` (hits' texts in rank order, as returned,
    context included) within the first `budget` words of all of them: a reader given that many
    words has it."""
    needle = normalize_text(evidence)
    left = budget
    for text in texts:
        if left <= 0:
            return False
        words = text.split()
        if needle in normalize_text(" ".join(words[:left])):
            return True
        left -= len(words)
    return False


def ranked_documents(paths: Sequence[str]) -> list[str]:
    """Documents in the order their first chunk appears in a ranked chunk list."""
    return list(dict.fromkeys(paths))


def ndcg(ranked_docs: Sequence[str], relevance: Mapping[str, int], cutoff: int = NDCG_AT) -> float:
    """nDCG@cutoff over a ranked document list, linear gain (trec_eval / BEIR): the sum of
    grade / log2(rank + 1) over the first `cutoff` documents, divided by the same sum for the
    ideal order of the graded documents."""
    dcg = sum(relevance.get(doc, 0) / math.log2(rank + 1) for rank, doc in enumerate(ranked_docs[:cutoff], 1))
    ideal = sorted((g for g in relevance.values() if g > 0), reverse=True)[:cutoff]
    idcg = sum(g / math.log2(rank + 1) for rank, g in enumerate(ideal, 1))
    return dcg / idcg if idcg else 0.0


@dataclass(frozen=True)
class QuestionOutcome:
    """One question in one mode; ranks are 1-based positions in the ranked chunk list."""

    first_answer_rank: int | None  # first chunk from an answering document (None: not in the list)
    evidence_rank: int | None  # first chunk containing the evidence (None: none, or no evidence)
    ndcg: float  # nDCG@10 of the documents the top chunks come from
    # the evidence lies within the first EVIDENCE_WORDS words of the top k texts (None: no
    # evidence, or not scored at a k)
    evidence_in_budget: bool | None = None

    def to_json(self) -> dict[str, Any]:
        return {"first_answer_rank": self.first_answer_rank, "evidence_rank": self.evidence_rank,
                "evidence_in_budget": self.evidence_in_budget, "ndcg": round(self.ndcg, 4)}


def score_question(question: Question, hits: Sequence[Hit], k: int | None = None,
                   budget: int = EVIDENCE_WORDS, top: Sequence[Hit] | None = None) -> QuestionOutcome:
    """Score one ranked hit list (best first, at least max(k, 10) deep when there are enough
    chunks) against a question's answering documents and evidence; with `k`, also whether the
    evidence lies within the first `budget` words of the top k texts (`evidence_within`).
    `top`: the top k as a search for k returns them (per-document hits share a budget of words
    that depends on k, so a deeper search's first k differ): ranks within k and the evidence
    come from it, ranks beyond k and nDCG from `hits`."""
    relevant = question.relevance
    shown = list(hits[:k] if top is None or k is None else top[:k])
    ranked = shown + list(hits[len(shown):])
    first = next((rank for rank, hit in enumerate(ranked, 1) if hit.path in relevant), None)
    evidence_rank = None
    in_budget = None
    if question.evidence is not None:
        needle = normalize_text(question.evidence)
        evidence_rank = next((rank for rank, hit in enumerate(ranked, 1) if needle in normalize_text(hit.text)), None)
        if k is not None:
            in_budget = evidence_within(question.evidence, [h.text for h in shown], budget)
    return QuestionOutcome(first, evidence_rank, ndcg(ranked_documents([h.path for h in hits]), relevant), in_budget)


@dataclass
class QuestionModeScore:
    """Per mode, over the questions of a set:

    * doc recall@k: share of questions with a chunk from an answering document in the top k
      (any one of several answering documents counts: success@k);
    * MRR: mean of 1 / rank of the first such chunk (0 when it is not in the top k), i.e. MRR@k;
    * nDCG@10: documents ranked by their first chunk among the top max(k, 10) chunks;
    * evidence hit@k: share of the questions *with evidence* whose evidence snippet is inside
      one of the top-k chunks (normalised comparison, see `normalize_text`) *within the first
      EVIDENCE_WORDS (750) words of the top k*, counted in rank order over the texts as
      returned (issue 26's measure; a top 5 of plain chunks rarely passes 750 words, a top 5
      grown with context may). An outcome scored without a k falls back to the rank alone.
    """

    k: int
    outcomes: dict[str, QuestionOutcome] = field(default_factory=dict)
    evidence_questions: int = 0
    seconds: float = 0.0

    def add(self, question: Question, outcome: QuestionOutcome) -> None:
        self.outcomes[question.qid] = outcome
        if question.evidence is not None:
            self.evidence_questions += 1

    def to_json(self) -> dict[str, Any]:
        k, rows = self.k, list(self.outcomes.values())
        n = max(len(rows), 1)
        in_k = [r.first_answer_rank for r in rows if r.first_answer_rank is not None and r.first_answer_rank <= k]
        evidence = sum(1 for r in rows if (r.evidence_in_budget if r.evidence_in_budget is not None
                                           else r.evidence_rank is not None and r.evidence_rank <= k))
        return {
            "questions": len(rows),
            "doc_recall": round(len(in_k) / n, 4),
            "mrr": round(sum(1.0 / rank for rank in in_k) / n, 4),
            "ndcg10": round(sum(r.ndcg for r in rows) / n, 4),
            "evidence_questions": self.evidence_questions,
            "evidence_hit": round(evidence / self.evidence_questions, 4) if self.evidence_questions else None,
            "ms_per_query": round(1000 * self.seconds / n, 2),
        }


@dataclass
class QuestionReport:
    entity: str
    questions_file: str
    k: int
    questions: list[Question]
    modes: dict[str, QuestionModeScore] = field(default_factory=dict)
    # evidence that no chunk of the entity (or none of an answering document) contains: no mode
    # can hit it (a snippet straddling a chunk boundary, or not the parsed text)
    evidence_unreachable: list[str] = field(default_factory=list)

    def to_json(self, *, details: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "entity": self.entity,
            "questions_file": self.questions_file,
            "k": self.k,
            "ndcg_at": NDCG_AT,
            "questions": len(self.questions),
            "evidence_unreachable": self.evidence_unreachable,
            "modes": {m: s.to_json() for m, s in self.modes.items()},
        }
        if details:
            out["per_question"] = [
                {"id": q.qid, "question": q.text, "answers": q.answers,
                 "modes": {m: s.outcomes[q.qid].to_json() for m, s in self.modes.items()}}
                for q in self.questions
            ]
        return out


def check_answers(questions: Sequence[Question], records: Mapping[str, Mapping[str, Any]], entity_id: str) -> list[Question]:
    """Every answering path must be a document of the entity (an answer given as a doc_id is
    turned into its path); else a UsageError naming the question's file and line."""
    paths = {str(r["path"]) for r in records.values()}
    checked = []
    for q in questions:
        relevance = {}
        for answer, grade in q.relevance.items():
            if answer not in paths and answer in records:
                answer = str(records[answer]["path"])
            if answer not in paths:
                raise UsageError(f"{q.source}: answer {answer!r} is not a document of entity {entity_id!r}")
            relevance[answer] = grade
        checked.append(replace(q, relevance=relevance))
    return checked


def unreachable_evidence(questions: Sequence[Question], entity: Any) -> list[str]:
    """Ids of questions whose evidence no chunk of an answering document contains."""
    with_evidence = [q for q in questions if q.evidence is not None]
    if not with_evidence:
        return []
    records = entity.records()
    by_path: dict[str, list[int]] = {}
    for r in records.values():
        first = int(r["first_vector_id"])
        by_path.setdefault(str(r["path"]), []).extend(range(first, first + int(r["chunk_count"])))
    wanted = sorted({vid for q in with_evidence for a in q.answers for vid in by_path.get(a, [])})
    texts = {vid: normalize_text(t) for vid, t in entity.texts.fetch(wanted).items()}
    missing = []
    for q in with_evidence:
        needle = normalize_text(q.evidence or "")
        if not any(needle in texts.get(vid, "") for a in q.answers for vid in by_path.get(a, [])):
            missing.append(q.qid)
    return missing


def evaluate_questions(
    store: Path, entity_id: str, questions_file: Path, *, k: int = 5, modes: list[str] | None = None,
    config: ModelConfig | None = None, searcher: Searcher | None = None, rerank: bool = False,
    per_document: bool = True,
) -> QuestionReport:
    """Run a question set against an entity in each mode (one batch of queries per mode);
    `rerank`: with the rerank stage (ragctl.rerank) after each mode; `per_document`: hits as
    `ragctl query` returns them by default (False: k chunks, `--per-chunk`)."""
    modes = check_modes(modes)
    if k < 1:
        raise UsageError("k must be at least 1")
    questions = load_questions(questions_file)
    if searcher is None:
        searcher = Searcher(store, entity_id, config)
    entity = searcher.entity
    questions = check_answers(questions, entity.records(), entity_id)
    report = QuestionReport(entity_id, str(questions_file), k, questions)
    report.evidence_unreachable = unreachable_evidence(questions, entity)
    depth = max(k, NDCG_AT)
    texts = [q.text for q in questions]
    warm_up(searcher, texts[0], modes, depth, rerank)
    for mode in modes:
        score = report.modes[mode] = QuestionModeScore(k)
        started = time.perf_counter()
        if per_document and depth > k:
            # per-document hits share a budget that depends on k: what a search for k returns
            # (timed), and a deeper search for nDCG@10
            tops: list[list[Hit]] | None = searcher.search(texts, k, mode, rerank=rerank)
            score.seconds = time.perf_counter() - started
            results = searcher.search(texts, depth, mode, rerank=rerank)
        else:  # chunk hits: the top k of the deeper search are those of a search for k
            results = searcher.search(texts, depth, mode, rerank=rerank, per_document=per_document)
            score.seconds = time.perf_counter() - started
            tops = None
        for n, (question, hits) in enumerate(zip(questions, results)):
            score.add(question, score_question(question, hits, k, top=tops[n] if tops is not None else None))
    return report


def format_question_table(reports: Sequence[QuestionReport], label: str = "entity") -> str:
    k = reports[0].k if reports else 5
    lines = [
        f"| {label} | mode | questions | doc recall@{k} | MRR | nDCG@{NDCG_AT} | evidence hit@{k} | ms/query |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for report in reports:
        for mode, score in report.modes.items():
            j = score.to_json()
            evidence = "—" if j["evidence_hit"] is None else f"{j['evidence_hit']:.2f}"
            lines.append(
                f"| {report.entity} | {mode} | {j['questions']} | {j['doc_recall']:.2f} | {j['mrr']:.2f} "
                f"| {j['ndcg10']:.2f} | {evidence} | {j['ms_per_query']:.1f} |"
            )
    return "\n".join(lines)
