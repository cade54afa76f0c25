"""The ingest orchestrator: discover -> plan -> parse+chunk -> embed -> commit.

Threads and processes (the "no oversubscription" policy, see docs/pipeline.md):
  * feeder thread   walks each entity, plans it against its mapping shard (stat, hash), and
                    submits files to parse; unchanged/moved/skipped files never leave it;
  * parse pool      min(--workers, cores) processes (1 thread each) that read, parse and
                    chunk a file in the model's own tokens; small jobs parse in-thread;
  * main thread     the one shared model: batches chunks *across documents and entities*;
  * committer       per-entity buffers flushed every `commit_docs` documents or
                    `commit_seconds`, each flush one locked commit (EntityVectorStore.commit).
Queues are bounded, so memory stays flat whatever the size of the tree.
"""

from __future__ import annotations

import functools
import hashlib
import os
import queue
import signal
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ragctl import events as ev
from ragctl.discovery import EntitySource, SourceFile
from ragctl.embedding import Embedder, ModelSpec, cpu_count, resolve_model
from ragctl.errors import ParseError, StorageError, UnsupportedFormat
from ragctl.storage.json_storage import JSONStorage, Record
from ragctl.storage.layout import MODE_SHARDED, open_store_manifest, read_manifest, record_last_run
from ragctl.storage.vector_store import EntityVectorStore, PreparedDoc

OVERLAP_TOKENS = 32
INLINE_PARSE_MAX_FILES = 8  # below this many files to parse, a process pool costs more than it saves


@dataclass
class IngestOptions:
    store: Path
    workers: int = 0  # 0 = number of cores
    model: str | None = None
    precision: str = "auto"
    device: str = "auto"
    batch_size: int = 32
    sharding: bool | None = None  # None: whatever the store says (sharded for new stores)
    prune: bool = False
    dry_run: bool = False
    rehash: bool = False  # hash every file even when size and mtime are unchanged
    sequential: bool = False  # one document at a time, commit each (the bench baseline)
    commit_docs: int = 64
    commit_seconds: float = 2.0
    embed_window: int = 256  # chunks per encode call (sorted by length inside it)


@dataclass
class EntityReport:
    files: int = 0
    indexed: int = 0
    updated: int = 0
    moved: int = 0
    unchanged: int = 0
    skipped: int = 0
    failed: int = 0
    pruned: int = 0
    stale: int = 0
    chunks: int = 0


@dataclass
class IngestReport:
    entities: dict[str, EntityReport] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)
    skipped_files: list[dict[str, str]] = field(default_factory=list)
    stale_files: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    encode_seconds: float = 0.0
    model: dict[str, Any] = field(default_factory=dict)
    dry_run: bool = False
    interrupted: bool = False
    parse_workers: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "entities": {e: asdict(r) for e, r in self.entities.items()},
            "failures": self.failures,
            "skipped_files": self.skipped_files,
            "stale_files": self.stale_files,
            "seconds": round(self.seconds, 3),
            "encode_seconds": round(self.encode_seconds, 3),
            "model": self.model,
            "parse_workers": self.parse_workers,
            "dry_run": self.dry_run,
            "interrupted": self.interrupted,
        }

    @property
    def total_chunks(self) -> int:
        return sum(r.chunks for r in self.entities.values())

    @property
    def any_failed(self) -> bool:
        return bool(self.failures)


# ----------------------------------------------------------------------------- planning
@dataclass
class PlannedFile:
    source: SourceFile
    action: str  # parse | unchanged | refresh | move | skip | fail
    content_hash: str = ""
    size: int = 0
    mtime_ns: int = 0
    record: Record | None = None
    detail: str = ""


def change_for(p: PlannedFile) -> tuple[str, dict[str, Any]]:
    """The record change for a moved file (new path) or a refreshed one (new mtime only)."""
    assert p.record is not None
    fields: dict[str, Any] = {"size": p.size, "mtime_ns": p.mtime_ns}
    if p.action == "move":
        fields.update(path=p.source.rel_path, name=p.source.rel_path.rsplit("/", 1)[-1])
    return p.record["doc_id"], fields


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def plan_entity(
    files: list[SourceFile], records: dict[str, Record], rehash: bool = False
) -> tuple[list[PlannedFile], list[Record]]:
    """Classify every file against the entity's mapping; also return records gone from the tree.

    unchanged: same path, same size+mtime (or same hash); parse: new path or changed content;
    move: new path whose content belongs to a record whose path left the tree; skip: unsupported
    type, or the same content as another file of this entity (never indexed twice).
    """
    from ragctl.parsing import is_supported

    by_path = {r["path"]: r for r in records.values()}
    tree = {f.rel_path for f in files}
    movable: dict[str, list[Record]] = defaultdict(list)
    present_hashes: dict[str, str] = {}
    for record in records.values():
        if record["path"] in tree:
            present_hashes[record["content_hash"]] = record["path"]
        else:
            movable[record["content_hash"]].append(record)
    planned: list[PlannedFile] = []
    seen: dict[str, str] = {}
    for f in files:
        if not is_supported(f.abs_path):
            suffix = f.abs_path.suffix.lower() or "(no extension)"
            planned.append(PlannedFile(f, "skip", detail=f"unsupported file type {suffix}"))
            continue
        try:
            st = os.stat(f.abs_path)
        except OSError as exc:
            planned.append(PlannedFile(f, "fail", detail=f"cannot read: {exc.strerror}"))
            continue
        record = by_path.get(f.rel_path)
        if (
            record is not None
            and not rehash
            and record.get("size") == st.st_size
            and record.get("mtime_ns") == st.st_mtime_ns
        ):
            planned.append(PlannedFile(f, "unchanged", record["content_hash"], st.st_size, st.st_mtime_ns, record))
            continue
        try:
            digest = sha256_file(f.abs_path)
        except OSError as exc:
            planned.append(PlannedFile(f, "fail", detail=f"cannot read: {exc.strerror}"))
            continue
        item = PlannedFile(f, "parse", digest, st.st_size, st.st_mtime_ns, record)
        if record is not None and record["content_hash"] == digest:
            item.action = "refresh"  # same content, new mtime: remember it, no re-embedding
        elif record is None and movable.get(digest):
            item.action, item.record = "move", movable[digest].pop(0)
        elif record is None and (digest in present_hashes or digest in seen):
            item.action = "skip"
            item.detail = f"same content as {present_hashes.get(digest) or seen[digest]}"
        seen.setdefault(digest, f.rel_path)
        planned.append(item)
    claimed = {p.record["doc_id"] for p in planned if p.action == "move" and p.record}
    gone = [r for r in records.values() if r["path"] not in tree and r["doc_id"] not in claimed]
    return planned, gone


# ----------------------------------------------------------------------------- parse workers
@dataclass
class ParseOutcome:
    entity_id: str
    rel_path: str
    status: str  # ok | skipped | failed
    chunks: list[str] = field(default_factory=list)
    parser: str = ""
    content_hash: str = ""
    size: int = 0
    mtime_ns: int = 0
    error: str = ""


_worker_chunker = None


def init_parse_worker(model_dir: str, max_tokens: int) -> None:
    """Process-pool initializer: one thread per worker, Ctrl-C handled by the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS"):
        os.environ[var] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _get_chunker(model_dir, max_tokens)


def _die_with_parent() -> None:
    """Exit when the ingest process dies (even by kill -9): a watchdog thread notices that this
    worker was re-parented. (prctl(PR_SET_PDEATHSIG) would fire when the *thread* that started
    the worker ends, which in ProcessPoolExecutor is whichever thread called submit.)"""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="ragctl-parent-watch").start()


def _get_chunker(model_dir: str, max_tokens: int):
    global _worker_chunker
    if _worker_chunker is None or _worker_chunker[0] != (model_dir, max_tokens):
        from ragctl.chunking import Chunker, load_tokenizer

        chunker = Chunker(load_tokenizer(model_dir), max_tokens=max_tokens, overlap_tokens=OVERLAP_TOKENS)
        _worker_chunker = ((model_dir, max_tokens), chunker)
    return _worker_chunker[1]


def parse_and_chunk(entity_id: str, rel_path: str, abs_path: str, model_dir: str, max_tokens: int) -> ParseOutcome:
    """Read a file once, hash those bytes, parse and chunk them. Never raises for bad input."""
    from ragctl.parsing import parse_bytes

    out = ParseOutcome(entity_id, rel_path, "failed")
    try:
        st = os.stat(abs_path)
        with open(abs_path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        out.error = f"cannot read: {exc.strerror or exc}"
        return out
    out.content_hash = hashlib.sha256(data).hexdigest()
    out.size, out.mtime_ns = st.st_size, st.st_mtime_ns
    try:
        parsed = parse_bytes(data, Path(abs_path).suffix.lower(), name=rel_path)
        chunks = [c.text for c in _get_chunker(model_dir, max_tokens).chunk(parsed.blocks)]
    except UnsupportedFormat as exc:
        out.status, out.error = "skipped", str(exc)
        return out
    except ParseError as exc:
        out.error = str(exc)
        return out
    except Exception as exc:  # noqa: BLE001 - one bad file must never stop a run
        out.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        return out
    if not chunks:
        out.status, out.error = "skipped", "no extractable text"
        return out
    out.status, out.chunks, out.parser = "ok", chunks, parsed.parser
    return out


# ----------------------------------------------------------------------------- the run
class Ingestor:
    """One ingest run. `run()` returns the report; progress goes to `on_event`."""

    def __init__(
        self,
        sources: list[EntitySource],
        options: IngestOptions,
        on_event: ev.EventSink = ev.ignore,
        embedder: Embedder | None = None,
    ) -> None:
        self.sources = sources
        self.options = options
        self.emit = on_event
        self.embedder = embedder
        self.report = IngestReport(dry_run=options.dry_run)
        self.spec: ModelSpec = embedder.spec if embedder else resolve_model(options.model)
        self._stop = threading.Event()
        self._report_lock = threading.Lock()
        self.storage: JSONStorage | None = None
        self.stores: dict[str, EntityVectorStore] = {}

    # -------------------------------------------------------------- bookkeeping
    def _entity(self, entity_id: str) -> EntityReport:
        return self.report.entities.setdefault(entity_id, EntityReport())

    def _done(self, entity_id: str, path: str, status: str, chunks: int = 0, detail: str = "") -> None:
        with self._report_lock:
            rep = self._entity(entity_id)
            setattr(rep, status, getattr(rep, status) + 1)
            rep.chunks += chunks
            if status == "failed":
                self.report.failures.append({"entity": entity_id, "path": path, "error": detail})
            elif status == "skipped":
                self.report.skipped_files.append({"entity": entity_id, "path": path, "reason": detail})
        self.emit(ev.FileDone(entity_id, path, status, chunks, detail))

    # -------------------------------------------------------------- set-up
    def _open_store(self) -> JSONStorage:
        root = self.options.store
        if self.options.dry_run:
            manifest = read_manifest(root) or {"mapping_mode": MODE_SHARDED}
            if self.options.sharding is False and read_manifest(root) is None:
                manifest = {"mapping_mode": "monolithic"}
        else:
            manifest = open_store_manifest(root, self.options.sharding)
        return JSONStorage(root, enable_sharding=manifest["mapping_mode"] == MODE_SHARDED)

    def run(self) -> IngestReport:
        started = time.perf_counter()
        self.storage = self._open_store()
        identity = self.spec.identity()
        for source in self.sources:
            store = EntityVectorStore(self.storage, source.entity_id)
            store.check_model(identity)  # fail fast (exit 2) before any work
            self.stores[source.entity_id] = store
        self.report.model = {"name": self.spec.name, "dim": self.spec.dim, "max_tokens": self.spec.max_tokens}
        try:
            if self.options.dry_run:
                self._run_dry()
            elif self.options.sequential:
                self._run_sequential(identity)
            else:
                self._run_parallel(identity)
        finally:
            self.report.seconds = time.perf_counter() - started
        if not self.options.dry_run and self.embedder is not None:
            record_last_run(self.options.store, self.report.model)
        return self.report

    def _ensure_embedder(self) -> Embedder:
        if self.embedder is None:
            self.emit(ev.Phase(f"loading model {self.spec.name}"))
            self.embedder = Embedder.shared(
                self.spec, self.options.precision, self.options.device, self.options.batch_size
            )
        self.report.model.update(self.embedder.describe())
        return self.embedder

    def _plans(self) -> Iterable[tuple[EntitySource, list[PlannedFile], list[Record]]]:
        listed = [(s, s.list_files()) for s in self.sources]
        for source, files in listed:
            self._entity(source.entity_id).files = len(files)
            self.emit(ev.EntityPlanned(source.entity_id, len(files)))
        for source, files in listed:
            if self._stop.is_set():
                return
            records = self.stores[source.entity_id].records()
            planned, gone = plan_entity(files, records, self.options.rehash)
            yield source, planned, (gone if source.files is None else [])

    def _stale_or_prune(self, entity_id: str, gone: list[Record]) -> list[str]:
        """Records whose file left the tree: pruned with --prune, else reported stale."""
        for record in gone:
            with self._report_lock:
                self.report.stale_files.append({"entity": entity_id, "path": record["path"]})
                if not self.options.prune:
                    self._entity(entity_id).stale += 1
        return [r["doc_id"] for r in gone] if self.options.prune else []

    # -------------------------------------------------------------- dry run
    def _run_dry(self) -> None:
        verbs = {"parse": None, "unchanged": "unchanged", "refresh": "unchanged", "move": "moved", "skip": "skipped", "fail": "failed"}
        for source, planned, gone in self._plans():
            eid = source.entity_id
            for p in planned:
                status = verbs[p.action] or ("updated" if p.record else "indexed")
                self._done(eid, p.source.rel_path, status, 0, p.detail)
            self._stale_or_prune(eid, gone)
            if self.options.prune:
                self._entity(eid).pruned += len(gone)
            self.emit(ev.EntityDone(eid))

    # -------------------------------------------------------------- sequential baseline
    def _run_sequential(self, identity: dict[str, Any]) -> None:
        """The original design: one document at a time, parse -> chunk -> embed -> commit."""
        embedder = self._ensure_embedder()
        precision = embedder.precision
        for source, planned, gone in self._plans():
            eid, store = source.entity_id, self.stores[source.entity_id]
            for p in planned:
                if self._handle_without_parsing(eid, p, identity, precision):
                    continue
                out = parse_and_chunk(eid, p.source.rel_path, str(p.source.abs_path), str(self.spec.path), self.spec.max_tokens)
                if out.status != "ok":
                    self._done(eid, out.rel_path, "failed" if out.status == "failed" else "skipped", 0, out.error)
                    continue
                t0 = time.perf_counter()
                vectors = embedder.encode(out.chunks)
                self.report.encode_seconds += time.perf_counter() - t0
                self._commit(eid, [self._prepared(out, vectors)], [], [], identity, precision)
            self._finish_entity(eid, store, gone, identity, precision)

    def _handle_without_parsing(self, eid: str, p: PlannedFile, identity: dict[str, Any], precision: str) -> bool:
        """Statuses decided by the plan; refresh/move need a (cheap) commit. True if handled."""
        if p.action == "parse":
            return False
        if p.action == "unchanged":
            self._done(eid, p.source.rel_path, "unchanged")
        elif p.action == "skip":
            self._done(eid, p.source.rel_path, "skipped", 0, p.detail)
        elif p.action == "fail":
            self._done(eid, p.source.rel_path, "failed", 0, p.detail)
        else:
            doc_id, fields = change_for(p)
            self._commit(eid, [], [(doc_id, fields)], [], identity, precision, {doc_id: p.source.rel_path})
        return True

    @staticmethod
    def _prepared(out: ParseOutcome, vectors: Any) -> PreparedDoc:
        return PreparedDoc(out.rel_path, out.content_hash, out.size, out.mtime_ns, out.chunks, vectors, out.parser)

    def _commit(
        self,
        eid: str,
        adds: list[PreparedDoc],
        changes: list[tuple[str, dict[str, Any]]],
        removes: list[str],
        identity: dict[str, Any],
        precision: str,
        change_paths: dict[str, str] | None = None,
    ) -> None:
        store = self.stores[eid]
        try:
            result = store.commit(identity, adds, changes, removes, precision)
        except StorageError as exc:
            for doc in adds:
                self._done(eid, doc.path, "failed", 0, str(exc))
            for doc_id, _ in changes:
                self._done(eid, (change_paths or {}).get(doc_id, doc_id), "failed", 0, str(exc))
            return
        for doc in adds:
            status = result.status.get(doc.path, "failed")
            if status == "duplicate":
                self._done(eid, doc.path, "skipped", 0, result.note.get(doc.path, "duplicate content"))
            elif status in ("indexed", "updated"):
                self._done(eid, doc.path, status, len(doc.chunks))
            else:
                self._done(eid, doc.path, "unchanged")
        for doc_id, fields in changes:
            path = (change_paths or {}).get(doc_id, fields.get("path", doc_id))
            self._done(eid, path, "moved" if result.status.get(path) == "moved" else "unchanged")
        pruned = sum(1 for s in result.status.values() if s == "pruned")
        if pruned:
            with self._report_lock:
                self._entity(eid).pruned += pruned

    def _finish_entity(
        self, eid: str, store: EntityVectorStore, gone: list[Record], identity: dict[str, Any], precision: str
    ) -> None:
        removes = self._stale_or_prune(eid, gone)
        if removes:
            self._commit(eid, [], [], removes, identity, precision)
        try:
            store.gc()
        except StorageError:
            pass  # orphans stay invisible; the next commit or `verify --repair` drops them
        self.emit(ev.EntityDone(eid))

    # -------------------------------------------------------------- parallel pipeline
    def _run_parallel(self, identity: dict[str, Any]) -> None:
        opts = self.options
        plans = list(self._plans())  # stat + hash only: cheap next to parsing and embedding
        to_parse = sum(1 for _, planned, _ in plans for p in planned if p.action == "parse")
        embedder = self._ensure_embedder() if to_parse else None
        precision = embedder.precision if embedder else ""
        # No faiss.omp_set_num_threads(1) here: torch and faiss share one OpenMP runtime and
        # the setting is per thread, so on this (the encoding) thread it cut torch to 1 thread
        # (half the throughput). The committer limits FAISS on its own thread instead.

        workers = opts.workers or cpu_count()
        procs = min(workers, cpu_count(), to_parse)
        use_pool = procs > 1 and to_parse >= INLINE_PARSE_MAX_FILES
        self.report.parse_workers = procs if use_pool else 1
        parsed: queue.Queue[ParseOutcome | None] = queue.Queue(maxsize=64)
        committer = _Committer(self, identity, precision)
        committer.start()
        pool: ProcessPoolExecutor | None = None
        if use_pool:
            import multiprocessing

            pool = ProcessPoolExecutor(
                max_workers=procs,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=init_parse_worker,
                initargs=(str(self.spec.path), self.spec.max_tokens),
            )
        feeder = threading.Thread(
            target=self._feed, args=(plans, parsed, pool, procs * 4, committer, identity, precision), daemon=True, name="ragctl-feeder"
        )
        feeder.start()
        try:
            self._embed_loop(parsed, committer)
        except KeyboardInterrupt:
            self.report.interrupted = True
            self._stop.set()
            self.emit(ev.Phase("interrupted: committing what is already embedded"))
        finally:
            if pool is not None:
                pool.shutdown(wait=not self.report.interrupted, cancel_futures=True)
            feeder.join(timeout=30)
            committer.close()
        if not self.report.interrupted:
            for source, _, gone in plans:
                self._finish_entity(source.entity_id, self.stores[source.entity_id], gone, identity, precision)

    def _feed(
        self,
        plans: list[tuple[EntitySource, list[PlannedFile], list[Record]]],
        parsed: queue.Queue[ParseOutcome | None],
        pool: ProcessPoolExecutor | None,
        max_in_flight: int,
        committer: _Committer,
        identity: dict[str, Any],
        precision: str,
    ) -> None:
        slots = threading.BoundedSemaphore(max_in_flight)
        model_dir, window = str(self.spec.path), self.spec.max_tokens
        used_pool = pool is not None

        def deliver(eid: str, rel_path: str, fut: Future[ParseOutcome]) -> None:
            try:
                if fut.cancelled():
                    return
                exc = fut.exception()
                if exc is None:
                    parsed.put(fut.result())
                else:  # the worker process died (a parser crashed hard on this file)
                    parsed.put(ParseOutcome(eid, rel_path, "failed", error=f"parser process died: {type(exc).__name__}"))
            finally:
                slots.release()  # after the put: the end marker must follow every outcome

        try:
            for source, planned, _ in plans:
                eid = source.entity_id
                for p in planned:
                    if self._stop.is_set():
                        return
                    if p.action in ("refresh", "move"):
                        committer.submit_change(eid, p)
                        continue
                    if self._handle_without_parsing(eid, p, identity, precision):
                        continue
                    args = (eid, p.source.rel_path, str(p.source.abs_path), model_dir, window)
                    if pool is None:
                        parsed.put(parse_and_chunk(*args))
                        continue
                    while not slots.acquire(timeout=0.2):
                        if self._stop.is_set():
                            return
                    try:
                        future = pool.submit(parse_and_chunk, *args)
                    except RuntimeError:  # shut down (interrupt) or broken: parse the rest here
                        slots.release()
                        if self._stop.is_set():
                            return
                        pool = None
                        parsed.put(parse_and_chunk(*args))
                        continue
                    future.add_done_callback(functools.partial(deliver, eid, p.source.rel_path))
            if used_pool:  # wait until every parse submitted has been delivered
                for _ in range(max_in_flight):
                    while not slots.acquire(timeout=0.2):
                        if self._stop.is_set():
                            return
        finally:
            parsed.put(None)

    def _embed_loop(self, parsed: queue.Queue[ParseOutcome | None], committer: _Committer) -> None:
        """Batch chunks across documents and entities into large encode calls."""
        window = self.options.embed_window
        pending: deque[tuple[_DocState, int]] = deque()
        trimmed = time.perf_counter()
        finished = False
        while not finished or pending:
            # Gather: block only when there is nothing to encode.
            while not finished and len(pending) < window:
                try:
                    item = parsed.get(timeout=None if not pending else 0.01)
                except queue.Empty:
                    break
                if item is None:
                    finished = True
                    break
                if item.status != "ok":
                    if item.rel_path:
                        self._done(item.entity_id, item.rel_path, "failed" if item.status == "failed" else "skipped", 0, item.error)
                    continue
                state = _DocState(item)
                pending.extend((state, i) for i in range(len(item.chunks)))
            if not pending:
                continue
            batch = [pending.popleft() for _ in range(min(window, len(pending)))]
            assert self.embedder is not None
            t0 = time.perf_counter()
            vectors = self.embedder.encode([s.outcome.chunks[i] for s, i in batch])
            took = time.perf_counter() - t0
            self.report.encode_seconds += took
            self.emit(ev.ChunksEmbedded(len(batch), took))
            if time.perf_counter() - trimmed >= 1.0:
                release_freed_memory()
                trimmed = time.perf_counter()
            for (state, i), vector in zip(batch, vectors):
                if state.put(i, vector):
                    committer.submit(state.outcome.entity_id, self._prepared(state.outcome, state.vectors))


_malloc_trim: Any = None


def release_freed_memory() -> None:
    """Hand memory freed by the model back to the OS (glibc only; elsewhere a no-op).

    Each encode call allocates activation buffers whose sizes depend on the batch shape;
    glibc keeps the freed pages (its mmap threshold grows), so without this the ingest's RSS
    grew ~15 MB/s in bf16 and with the size of the corpus (+60% on 4x the documents).
    malloc_trim(0) costs ~1% of an encode window; called at most once a second.
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


class _DocState:
    def __init__(self, outcome: ParseOutcome) -> None:
        import numpy as np

        self.outcome = outcome
        self.vectors = None
        self.missing = len(outcome.chunks)
        self._np = np

    def put(self, i: int, vector: Any) -> bool:
        if self.vectors is None:
            self.vectors = self._np.zeros((len(self.outcome.chunks), vector.shape[0]), dtype=self._np.float32)
        self.vectors[i] = vector
        self.missing -= 1
        return self.missing == 0


class _Committer(threading.Thread):
    """Buffers embedded documents per entity and commits them in batches, off the hot path."""

    def __init__(self, ingestor: Ingestor, identity: dict[str, Any], precision: str) -> None:
        super().__init__(daemon=True, name="ragctl-committer")
        self.ing = ingestor
        self.identity = identity
        self.precision = precision
        self.inbox: queue.Queue[tuple[str, Any] | None] = queue.Queue(maxsize=256)
        self.adds: dict[str, list[PreparedDoc]] = defaultdict(list)
        self.changes: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
        self.change_paths: dict[str, dict[str, str]] = defaultdict(dict)
        self.oldest: dict[str, float] = {}
        self.error: BaseException | None = None

    def submit(self, entity_id: str, doc: PreparedDoc) -> None:
        self.inbox.put((entity_id, doc))

    def submit_change(self, entity_id: str, p: PlannedFile) -> None:
        """A moved file (new path) or a refreshed one (same content, new mtime)."""
        doc_id, fields = change_for(p)
        self.inbox.put((entity_id, (doc_id, fields, p.source.rel_path)))

    def run(self) -> None:
        opts = self.ing.options
        try:
            import faiss

            faiss.omp_set_num_threads(1)  # this thread only: flat-index adds are tiny, the cores belong to torch
            while True:
                try:
                    item = self.inbox.get(timeout=0.25)
                except queue.Empty:
                    item = ()  # type: ignore[assignment]
                if item is None:
                    break
                if item:
                    eid, payload = item
                    if isinstance(payload, PreparedDoc):
                        self.adds[eid].append(payload)
                    else:
                        doc_id, fields, path = payload
                        self.changes[eid].append((doc_id, fields))
                        self.change_paths[eid][doc_id] = path
                    self.oldest.setdefault(eid, time.monotonic())
                now = time.monotonic()
                for eid in list(self.oldest):
                    size = len(self.adds[eid]) + len(self.changes[eid])
                    if size >= opts.commit_docs or now - self.oldest[eid] >= opts.commit_seconds:
                        self._flush(eid)
            for eid in list(self.oldest):
                self._flush(eid)
        except BaseException as exc:  # noqa: BLE001 - surfaced by close()
            self.error = exc

    def _flush(self, eid: str) -> None:
        adds, changes = self.adds.pop(eid, []), self.changes.pop(eid, [])
        paths = self.change_paths.pop(eid, {})
        self.oldest.pop(eid, None)
        if adds or changes:
            self.ing._commit(eid, adds, changes, [], self.identity, self.precision, paths)

    def close(self) -> None:
        self.inbox.put(None)
        self.join()
        if self.error is not None:
            raise self.error


def ingest(
    sources: list[EntitySource],
    options: IngestOptions,
    on_event: ev.EventSink = ev.ignore,
    embedder: Embedder | None = None,
) -> IngestReport:
    return Ingestor(sources, options, on_event, embedder).run()


__all__ = ["IngestOptions", "IngestReport", "EntityReport", "Ingestor", "ingest", "plan_entity"]
