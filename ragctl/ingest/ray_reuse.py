"""Passage reuse for `ingest --ray` (issue 26): the driver decides which chunks need the model.

In a Ray run an actor's *parse* call returns a batch's outcomes (chunks, no vectors). The driver
routes each one (`embed.route`, as a local run's embed stage does: moves, copies and unchanged
content are settled without the model), then looks every chunk of the new content up exactly as
the local embed stage does (`embed.PassageVectors`: the same passage embedded earlier in this
run for the same entity, else a live row of the entity's store). Only the passages found nowhere
go to an actor's *embed* call, each once; a passage that an embed call in flight is already
embedding waits for that call instead of being sent again. A document is handed on when every
chunk of it has a vector (or one of them failed: then it fails alone).

`Rows` is one embed call's input: the texts (context line + chunk), their (entity, passage key),
and for each row the document that asked for it first (a failed call is retried one such
document at a time, so that a text the model cannot take fails only its own document).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ragctl.ingest.embed import DocState as Doc
from ragctl.ingest.embed import PassageVectors, passage_key_of
from ragctl.ingest.parse import ParseOutcome
from ragctl.ingest.plan import EntityPlan
from ragctl.storage.json_storage import JSONStorage

Key = tuple[str, bytes]  # (entity id, passage key)


@dataclass
class Rows:
    """One embed call's input (see the module docstring)."""

    texts: list[str] = field(default_factory=list)
    keys: list[Key] = field(default_factory=list)
    owners: list[Doc] = field(default_factory=list)

    def per_entity(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for eid, _ in self.keys:
            counts[eid] = counts.get(eid, 0) + 1
        return counts

    def split(self) -> list[Rows]:
        """One Rows per document that asked for rows first (a retry, one document at a time)."""
        parts: dict[int, Rows] = {}
        for text, key, owner in zip(self.texts, self.keys, self.owners):
            part = parts.setdefault(id(owner), Rows())
            part.texts.append(text)
            part.keys.append(key)
            part.owners.append(owner)
        return list(parts.values())


class DriverPassages:
    """The driver's side of reuse in a Ray run: which rows need the model, and which documents
    are complete once vectors come back."""

    def __init__(self, storage: JSONStorage, plans: dict[tuple[str, str], EntityPlan]) -> None:
        self.passages = PassageVectors(storage)
        self.plans = plans
        self._waiting: dict[Key, list[tuple[Doc, int]]] = {}  # passages an embed call in flight embeds

    def admit(self, routed: list[tuple[ParseOutcome, frozenset[str]]]) -> tuple[list[Doc], Rows, dict[str, int]]:
        """New content, routed: (documents complete already, the rows to embed, chunks reused
        per entity). Every other document completes through `embedded` or `failed`."""
        docs = [Doc(outcome, settled) for outcome, settled in routed]
        keys = [[(d.outcome.entity_id, passage_key_of(d.outcome, i)) for i in range(len(d.outcome.chunks))] for d in docs]
        found: dict[Key, Any] = {}
        asked: dict[tuple[str, int], list[bytes]] = {}  # (entity, chunker) -> keys to look up in the store
        plan_of: dict[tuple[str, int], EntityPlan | None] = {}
        for doc, doc_keys in zip(docs, keys):
            for key in doc_keys:
                if key in found or key in self._waiting:
                    continue
                vector = self.passages.recall(*key)
                if vector is not None:
                    found[key] = vector
                else:
                    where = (doc.outcome.entity_id, doc.outcome.chunker)
                    asked.setdefault(where, []).append(key[1])
                    plan_of.setdefault(where, self.plans.get(doc.outcome.key))
        for (eid, chunker), wanted in asked.items():
            plan = plan_of[(eid, chunker)]
            try:
                stored = self.passages.stored(eid, list(dict.fromkeys(wanted)), plan.records if plan else {}, chunker)
            except Exception:  # noqa: BLE001 - a store we cannot read for reuse: embed instead
                stored = {}
            found.update(((eid, k), v) for k, v in stored.items())
        complete: list[Doc] = []
        rows = Rows()
        reused: dict[str, int] = {}
        for doc, doc_keys in zip(docs, keys):
            done = not doc_keys  # (a document without chunks has nothing to wait for)
            for i, key in enumerate(doc_keys):
                if key in found:
                    reused[key[0]] = reused.get(key[0], 0) + 1
                    done = doc.put(i, found[key])
                elif key in self._waiting:
                    reused[key[0]] = reused.get(key[0], 0) + 1
                    self._waiting[key].append((doc, i))
                else:
                    self._waiting[key] = [(doc, i)]
                    rows.texts.append(doc.outcome.embed_text(i))
                    rows.keys.append(key)
                    rows.owners.append(doc)
            if done:
                complete.append(doc)
        return complete, rows, reused

    def embedded(self, rows: Rows, vectors: Any) -> list[Doc]:
        """An embed call's vectors (row order): remembered for the rest of the run and given to
        every chunk waiting for them; the documents now complete."""
        complete = []
        for key, vector in zip(rows.keys, vectors):
            self.passages.remember(key[0], key[1], vector)
            for doc, i in self._waiting.pop(key, ()):
                if doc.put(i, vector):
                    complete.append(doc)
        return complete

    def failed(self, rows: Rows, reason: str) -> list[Doc]:
        """An embed call that failed for good: its waiting chunks fail their documents."""
        complete = []
        for key in rows.keys:
            for doc, i in self._waiting.pop(key, ()):
                if doc.put(i, None, reason):
                    complete.append(doc)
        return complete
