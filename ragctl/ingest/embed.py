"""The embed stage: route each parse outcome, batch chunks across documents and entities,
encode them with the one model, and hand finished documents to the committer.

Routing happens here because this is where a file's hash first meets the entity's records
(`EntityPlan.resolve`): same content (a re-stat), a move, a copy, or new content to embed.
The model is loaded on the first document that needs it, so a run with nothing new never
loads it. Chunks are encoded in windows of `embed_window` gathered across documents; a big
document spans several windows, and each window reports its progress. An embedder may
fail some rows of a window only (`EncodeFailure`: a remote service refused one request):
the documents owning those rows settle as failed with its reason; the rest go on.

A passage is embedded once per entity (`PassageVectors`): a chunk whose passage (its text,
white space collapsed: `chunk_texts.passage_key`) was embedded earlier in this run for the same
entity, or is held by a live row of the entity's store, takes that vector instead of a model
input. The document still gets rows of its own (text and vector), so the store format and the
commit protocol are unchanged (docs/storage.md, "Passages").
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from typing import Any, cast

from ragctl.errors import EncodeFailure
from ragctl.events import Status
from ragctl.ingest import messages as msg
from ragctl.ingest.channel import END, Channel
from ragctl.ingest.options import RunContext
from ragctl.ingest.parse import FAILED, HASHED, OK, ParseOutcome
from ragctl.ingest.plan import EntityPlan, Resolution, record_change
from ragctl.ingest.report import Reporter
from ragctl.model_config import OPENVINO_BATCH_SIZE, Embedder, embedded_by
from ragctl.storage.chunk_texts import passage_key
from ragctl.storage.entity import EntityStore, PreparedDoc
from ragctl.storage.json_storage import JSONStorage, Record

# Vectors of passages embedded in this run, kept for reuse (all entities together, oldest
# dropped first): 32 MB of float32 (~21,800 vectors of dimension 384).
REMEMBERED_BYTES = 32 << 20
OPEN_ENTITIES = 64  # entities whose store handles the reuse keeps open (a service sees many)


class PassageVectors:
    """Where a chunk's vector can come from without the model: the same passage embedded
    earlier in this run for the same entity (a bounded map), or a live row of the entity's
    store holding it (chunks.sqlite's passage key, then the vector of that row's id from the
    live segments; ids are never reused, so a row that is still there has its own vector).

    A stored row is used only while its document's record (as the plan read it) still owns
    that id and was made by the same chunker (a chunk embedded without its context line, or
    by LangChain, is not reused for one embedded with it). The shared vector is therefore the
    one embedded first, with its first holder's context line (title > section)."""

    def __init__(self, storage: JSONStorage) -> None:
        self.storage = storage
        self._recent: OrderedDict[tuple[str, bytes], Any] = OrderedDict()
        self._capacity: int | None = None
        self._stores: OrderedDict[str, EntityStore] = OrderedDict()
        self._keyed: set[str] = set()  # entities whose chunk rows are known to have passage keys

    def _store(self, entity_id: str) -> EntityStore:
        store = self._stores.pop(entity_id, None) or EntityStore(self.storage, entity_id)
        self._stores[entity_id] = store
        while len(self._stores) > OPEN_ENTITIES:
            self._stores.popitem(last=False)
        return store

    def recall(self, entity_id: str, key: bytes) -> Any:
        vector = self._recent.get((entity_id, key))
        if vector is not None:
            self._recent.move_to_end((entity_id, key))
        return vector

    def remember(self, entity_id: str, key: bytes, vector: Any) -> None:
        if self._capacity is None:
            self._capacity = max(1, REMEMBERED_BYTES // max(1, int(vector.nbytes)))
        self._recent[(entity_id, key)] = vector
        self._recent.move_to_end((entity_id, key))
        while len(self._recent) > self._capacity:
            self._recent.popitem(last=False)

    def stored(self, entity_id: str, keys: list[bytes], records: dict[str, Record], chunker: int) -> dict[bytes, Any]:
        """key -> vector of a live stored row holding that passage (keys not found: absent)."""
        if not keys:
            return {}
        store = self._store(entity_id)
        if not store.texts.exists():
            return {}
        if entity_id not in self._keyed:  # a store made before passage keys: key its rows now
            store.texts.ensure_passages()
            self._keyed.add(entity_id)
        chosen: dict[bytes, int] = {}
        for key, rows in store.holders(keys).items():
            for vid, doc_id, _ord in rows:
                record = records.get(doc_id)
                if record is None or int(record.get("chunker") or 1) != chunker:
                    continue
                first = int(record.get("first_vector_id", -1))
                if first <= vid < first + int(record.get("chunk_count", 0)):
                    chosen[key] = vid
                    break
        if not chosen:
            return {}
        vectors = store.index.vectors_of(chosen.values())
        return {key: vectors[vid] for key, vid in chosen.items() if vid in vectors}


class DocState:
    """A document whose chunks are being embedded, possibly over several windows (or, under
    --ray, waiting for an embed call: ray_reuse.py)."""

    def __init__(self, outcome: ParseOutcome, not_a_copy_of: frozenset[str]) -> None:
        self.outcome = outcome
        self.not_a_copy_of = not_a_copy_of
        self.vectors: Any = None
        self.missing = len(outcome.chunks)
        self.failure: str | None = None  # why one of its chunks could not be embedded

    def put(self, i: int, vector: Any, failure: str | None = None) -> bool:
        """Store chunk i's vector (or its failure); True once every chunk is accounted for."""
        import numpy as np

        if failure is not None:
            self.failure = self.failure or failure
        else:
            if self.vectors is None:
                self.vectors = np.zeros((len(self.outcome.chunks), vector.shape[0]), dtype=np.float32)
            self.vectors[i] = vector
        self.missing -= 1
        return self.missing == 0


def passage_key_of(out: ParseOutcome, i: int) -> bytes:
    """Chunk i's passage key: made by the parse worker (an outcome from an older worker, or
    built by hand, has none: computed here)."""
    return out.keys[i] if len(out.keys) == len(out.chunks) else passage_key(out.chunks[i])


def prepared_doc(out: ParseOutcome, vectors: Any, not_a_copy_of: frozenset[str]) -> PreparedDoc:
    """What the committer stores for a parsed and embedded file."""
    return PreparedDoc(out.rel_path, out.content_hash, out.size, out.mtime_ns, out.chunks, vectors, out.parser,
                       not_a_copy_of, out.title, out.sections, out.chunker, pages=out.pages, ocr=out.ocr,
                       ocr_pages=out.ocr_pages, ocr_mode=out.ocr_mode, keys=out.keys, near=out.near)


def route(outcome: ParseOutcome, plan: EntityPlan, dry_run: bool) -> msg.Settled | frozenset[str]:
    """What a parse outcome means for the entity, or (new content to embed) the doc_ids it
    must not be taken for a copy of (see `PreparedDoc.not_a_copy_of`)."""
    eid, path, size, tag = outcome.entity_id, outcome.rel_path, outcome.size, outcome.tag
    if outcome.status not in (OK, HASHED):
        status = Status.FAILED if outcome.status == FAILED else Status.SKIPPED
        return msg.Outcome(eid, path, status, outcome.error, size, tag)
    resolution, record, detail, stale_twins = plan.resolve(path, outcome.content_hash)
    if resolution is Resolution.COPY:
        return msg.Outcome(eid, path, Status.SKIPPED, detail, size, tag, record["doc_id"] if record else "")
    if resolution in (Resolution.SAME_CONTENT, Resolution.MOVE):
        assert record is not None
        status = Status.MOVED if resolution is Resolution.MOVE else Status.UNCHANGED
        if dry_run:
            return msg.Outcome(eid, path, status, "", size, tag)
        fields = record_change(record, resolution, path, size, outcome.mtime_ns)
        return msg.Change(eid, record["doc_id"], fields, path, status, size, tag)
    if dry_run:
        return msg.Outcome(eid, path, Status.UPDATED if record else Status.INDEXED, "", size, tag)
    if outcome.status == HASHED:  # its recorded content moved elsewhere during this run
        return msg.Outcome(eid, path, Status.FAILED, "content changed during the run; run again", size, tag)
    return stale_twins


def release_freed_memory() -> None:
    """Hand memory freed by the model back to the OS (glibc only; elsewhere a no-op).

    Each encode call allocates activation buffers whose sizes depend on the batch shape;
    glibc keeps the freed pages, so without this the ingest's RSS grew ~15 MB/s in bf16 and
    with the size of the corpus. malloc_trim(0) costs ~1% of an encode window; called at
    most once a second.
    """
    global _malloc_trim
    if _malloc_trim is None:
        try:
            import ctypes

            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim: Any = None


class EmbedStage:
    """Owns the model for the run: `embedder` if the caller passed one (serve, bench, the
    library), else the process's shared one for the run's ModelConfig, loaded on the first
    document that needs it (`load_embedder`); announces it with a model_info event."""

    def __init__(self, ctx: RunContext, plans: dict[tuple[str, str], EntityPlan], reporter: Reporter,
                 embedder: Embedder | None = None) -> None:
        self.ctx = ctx
        self.plans = plans
        self.reporter = reporter
        self._given = embedder
        self.embedder: Embedder | None = None
        self.passages = PassageVectors(ctx.storage)

    def run(self, inbox: Channel[ParseOutcome], outbox: Channel[msg.Settled], stop: Any) -> None:
        window = self.ctx.options.embed_window
        # Wait for at least one full model batch before encoding (a window of 3 chunks costs
        # almost what a full batch does); with a batch in hand, go as soon as the input pauses.
        # (the model in use decides: a given one's batch, else the config's, else OpenVINO's, the
        # smallest runtime default, until the model is loaded)
        model_batch = self._given.batch_size if self._given is not None else self.ctx.options.model.batch_size
        full_batch = min(window, model_batch or OPENVINO_BATCH_SIZE)
        pending: deque[tuple[DocState, int]] = deque()
        trimmed = time.monotonic()
        finished = False
        while (not finished or pending) and not stop.is_set():
            while not finished and len(pending) < window:  # gather; block only when idle
                item = inbox.get(timeout=None if not pending else 0.01 if len(pending) >= full_batch else 0.25)
                if item is None:
                    break
                if item is END:
                    finished = True
                    break
                settled = route(item, self.plans[item.key], self.ctx.dry_run)
                if not isinstance(settled, frozenset):
                    outbox.put(settled, even_when_stopping=True)
                    continue
                self.reporter.parsed(item)
                state = DocState(item, settled)
                pending.extend((state, i) for i in range(len(item.chunks)))
            if not pending or stop.is_set():
                continue
            batch = [pending.popleft() for _ in range(min(window, len(pending)))]
            self._encode(batch, outbox, stop)
            if self.embedder is not None:
                full_batch = min(window, self.embedder.batch_size)
            if time.monotonic() - trimmed >= 1.0:
                release_freed_memory()
                trimmed = time.monotonic()

    def _load(self, stop: Any) -> Embedder:
        embedder = self._given
        if embedder is None:
            from ragctl.embedding import load_embedder

            self.reporter.phase(f"loading model {self.ctx.spec.name}")
            embedder = load_embedder(self.ctx.options.model, spec=self.ctx.spec)
        embedder.stop_when(stop)  # a remote service: no new request after a stop
        self.reporter.model_info(embedder.describe())
        return embedder

    def _encode(self, batch: list[tuple[DocState, int]], outbox: Channel[msg.Settled], stop: Any) -> None:
        # Which rows need the model: one per passage not embedded before (in this run or in
        # the entity's store); the others take a vector that exists (or the first row's).
        keys = [passage_key_of(s.outcome, i) for s, i in batch]
        found: dict[tuple[str, bytes], Any] = {}
        asked: dict[str, list[bytes]] = {}
        for (state, _), key in zip(batch, keys):
            eid = state.outcome.entity_id
            if (eid, key) in found:
                continue
            vector = self.passages.recall(eid, key)
            if vector is not None:
                found[(eid, key)] = vector
            else:
                asked.setdefault(eid, []).append(key)
        for eid, wanted in asked.items():
            state = next(s for s, _ in batch if s.outcome.entity_id == eid)
            plan = self.plans.get(state.outcome.key)
            records = plan.records if plan is not None else {}
            try:
                stored = self.passages.stored(eid, list(dict.fromkeys(wanted)), records, state.outcome.chunker)
            except Exception:  # noqa: BLE001 - a store we cannot read for reuse: embed instead
                stored = {}
            found.update(((eid, k), v) for k, v in stored.items())
        source: list[int] = []  # per row: -1 reused, else its row in `texts`
        texts: list[str] = []
        first_row: dict[tuple[str, bytes], int] = {}
        reused: dict[str, int] = {}
        for (state, i), key in zip(batch, keys):
            eid = state.outcome.entity_id
            if (eid, key) in found:
                source.append(-1)
                reused[eid] = reused.get(eid, 0) + 1
            elif (eid, key) in first_row:
                source.append(first_row[(eid, key)])
                reused[eid] = reused.get(eid, 0) + 1
            else:
                first_row[(eid, key)] = len(texts)
                source.append(len(texts))
                texts.append(state.outcome.embed_text(i))
        failed: dict[int, str] = {}
        encoded: Any = ()
        if texts:
            if self.embedder is None:
                self.embedder = self._load(stop)
            t0 = time.perf_counter()
            try:
                encoded = self.embedder.encode(texts)
            except EncodeFailure as exc:  # some rows only (a remote service refused their request)
                encoded, failed = cast(Any, exc.vectors), exc.failed  # every row; the failed ones are zeros
            took = time.perf_counter() - t0
            per_entity: dict[str, int] = {}
            for (eid, _), _row in first_row.items():
                per_entity[eid] = per_entity.get(eid, 0) + 1
            self.reporter.embedded(len(texts), took, per_entity)
            for (eid, key), row in first_row.items():
                if row not in failed:
                    self.passages.remember(eid, key, encoded[row])
        if reused:
            self.reporter.reused(reused)
        runtime = embedded_by(self.embedder.describe()) if self.embedder is not None else {}
        for (state, i), key, row in zip(batch, keys, source):
            if row < 0:
                done = state.put(i, found[(state.outcome.entity_id, key)])
            else:
                done = state.put(i, encoded[row], failed.get(row))
            if not done:
                continue
            out = state.outcome
            if state.failure is not None:  # the document fails alone; the run goes on
                outbox.put(msg.Outcome(out.entity_id, out.rel_path, Status.FAILED, state.failure, out.size, out.tag),
                           even_when_stopping=True)
            else:
                doc = prepared_doc(out, state.vectors, state.not_a_copy_of)
                outbox.put(msg.Embedded(out.entity_id, doc, runtime, out.tag), even_when_stopping=True)
