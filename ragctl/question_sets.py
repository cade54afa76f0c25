"""Question sets for `ragctl eval --questions`: user questions with the documents that answer them.

Two formats are read:

* **Question JSONL** (any file not named ``queries.jsonl``): one JSON object per line,
  ``{"question": str, "answers": [path, ...], "evidence": str (optional), "id": str (optional)}``.
  ``answers`` are paths relative to the entity's root, as in the records' ``path``; ``evidence``
  is a snippet copied verbatim from the answering passage. Blank lines and lines starting with
  ``#`` are skipped. A question without ``id`` is named ``line<N>``.
* **BEIR** (``queries.jsonl`` + ``qrels.tsv``): give the directory holding both (``qrels.tsv``
  or BEIR's own ``qrels/test.tsv``), or the ``queries.jsonl`` file with the qrels beside it.
  Queries are ``{"_id", "text"}`` (an optional ``evidence``, top-level or in ``metadata``);
  qrels rows are ``query-id <TAB> corpus-id <TAB> score`` (a header row is allowed), where
  corpus-id is a document path relative to the entity root; rows with score <= 0 are not
  relevant. Queries without a relevant qrels row are skipped (BEIR query files often hold
  every split's queries).

Every error names the file and line: ``path:LINE: reason`` (a `UsageError`, exit 2).
This module is pure Python (no model, no store), so the CLI can validate a file instantly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragctl.errors import UsageError

BEIR_QUERIES = "queries.jsonl"
BEIR_QRELS = ("qrels.tsv", "qrels/test.tsv")


@dataclass(frozen=True)
class Question:
    """One question; `relevance` maps each answering path to its grade (>= 1)."""

    qid: str
    text: str
    relevance: dict[str, int]
    evidence: str | None = None
    source: str = ""  # "file:line", for messages about this question

    @property
    def answers(self) -> list[str]:
        return list(self.relevance)


def normalize_path(path: str) -> str:
    """An answer path as records store it: forward slashes, no leading ``./`` or ``/``."""
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    return "/".join(parts)


def load_questions(path: Path) -> list[Question]:
    """Read a question set (JSONL file, BEIR directory or BEIR ``queries.jsonl``)."""
    path = Path(path)
    if path.is_dir():
        queries = path / BEIR_QUERIES
        if not queries.is_file():
            raise UsageError(f"{path}: a question directory must hold {BEIR_QUERIES} and qrels.tsv (BEIR layout)")
        return _load_beir(queries, _find_qrels(path))
    if not path.is_file():
        raise UsageError(f"{path}: no such question file")
    if path.name == BEIR_QUERIES:
        return _load_beir(path, _find_qrels(path.parent))
    return _load_jsonl(path)


def _find_qrels(folder: Path) -> Path:
    for name in BEIR_QRELS:
        if (folder / name).is_file():
            return folder / name
    raise UsageError(f"{folder / BEIR_QUERIES}: no qrels.tsv (or qrels/test.tsv) beside it")


def _lines(path: Path) -> list[tuple[int, str]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip() and not line.lstrip().startswith("#")]


def _json_object(path: Path, n: int, line: str) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}:{n}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise UsageError(f"{path}:{n}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _text_field(path: Path, n: int, obj: dict[str, Any], key: str, *, required: bool) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise UsageError(f"{path}:{n}: missing field {key!r}")
        return None
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{path}:{n}: field {key!r} must be a non-empty string")
    return value


def _load_jsonl(path: Path) -> list[Question]:
    questions: list[Question] = []
    seen: dict[str, int] = {}
    for n, line in _lines(path):
        obj = _json_object(path, n, line)
        text = _text_field(path, n, obj, "question", required=True)
        answers = obj.get("answers")
        if answers is None:
            raise UsageError(f"{path}:{n}: missing field 'answers'")
        if isinstance(answers, str):
            answers = [answers]
        if not isinstance(answers, list) or not answers or not all(isinstance(a, str) and a.strip() for a in answers):
            raise UsageError(f"{path}:{n}: field 'answers' must be a non-empty list of document paths")
        evidence = _text_field(path, n, obj, "evidence", required=False)
        qid = obj.get("id", f"line{n}")
        if not isinstance(qid, (str, int)) or isinstance(qid, bool):
            raise UsageError(f"{path}:{n}: field 'id' must be a string")
        qid = str(qid)
        if qid in seen:
            raise UsageError(f"{path}:{n}: duplicate id {qid!r} (first on line {seen[qid]})")
        seen[qid] = n
        relevance = {normalize_path(a): 1 for a in answers}
        questions.append(Question(qid, str(text), relevance, evidence, f"{path}:{n}"))
    if not questions:
        raise UsageError(f"{path}: no questions in the file")
    return questions


def _load_beir(queries_path: Path, qrels_path: Path) -> list[Question]:
    queries: dict[str, tuple[int, str, str | None]] = {}
    for n, line in _lines(queries_path):
        obj = _json_object(queries_path, n, line)
        qid = obj.get("_id")
        if qid is None:
            raise UsageError(f"{queries_path}:{n}: missing field '_id'")
        qid = str(qid)
        if qid in queries:
            raise UsageError(f"{queries_path}:{n}: duplicate _id {qid!r} (first on line {queries[qid][0]})")
        text = _text_field(queries_path, n, obj, "text", required=True)
        metadata = obj.get("metadata")
        holder = metadata if isinstance(metadata, dict) and "evidence" in metadata else obj
        evidence = _text_field(queries_path, n, holder, "evidence", required=False)
        queries[qid] = (n, str(text), evidence)
    relevance: dict[str, dict[str, int]] = {}
    for n, line in _lines(qrels_path):
        cols = line.strip().split("\t")
        if len(cols) == 1:
            cols = line.split()  # space-separated qrels (TREC style)
        if n == 1 and cols[0].strip().lower() in ("query-id", "query_id", "qid"):
            continue  # header
        if len(cols) not in (3, 4):
            raise UsageError(f"{qrels_path}:{n}: expected 'query-id<TAB>corpus-id<TAB>score', got {len(cols)} column(s)")
        qid, doc, score_text = cols[0].strip(), cols[-2].strip(), cols[-1].strip()  # 4 columns: TREC "qid 0 doc score"
        try:
            score = int(score_text)
        except ValueError:
            raise UsageError(f"{qrels_path}:{n}: score {score_text!r} is not an integer") from None
        if qid not in queries:
            raise UsageError(f"{qrels_path}:{n}: query-id {qid!r} is not in {queries_path.name}")
        if score > 0 and doc:
            relevance.setdefault(qid, {})[normalize_path(doc)] = score
    questions = [
        Question(qid, text, relevance[qid], evidence, f"{queries_path}:{n}")
        for qid, (n, text, evidence) in queries.items()
        if qid in relevance
    ]
    if not questions:
        raise UsageError(f"{qrels_path}: no query has a relevant document (score > 0)")
    return questions
