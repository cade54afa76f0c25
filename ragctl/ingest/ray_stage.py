"""The Ray stage (`ingest --ray ...`): parse, chunk and embed on a Ray cluster.

In a Ray run this one driver thread replaces the parse pool and the embed stage; the planner,
the commit stage, the per-entity locks and the store stay on the driver (see run.py):

    planner thread   -> tasks channel -> RAY STAGE -> settled channel -> commit thread
                                          |      ^
              batches of files (bytes, or |      | parse outcomes, as each call finishes
              paths with --shared-fs)     v      |
                                 IngestActor x N (Ray actors: a supervised parse pool, the model
              the texts of passages       ^      | loaded once; pool.py's crash/timeout handling)
              the entity does not hold    |      v vectors

Why plain actors and not Ray Data (docs/distributed.md): the input is a stream produced by the
driver's planner thread (lazy tree walks, change detection against the entity's records), not a
dataset that exists before the run; results must come back to the driver's commit thread as
they finish. So the stage keeps its own small actor pool: at most `DEPTH` calls in flight per
actor (the next batch is already transferred when an actor finishes one) and at most
`MAX_INFLIGHT_BYTES` of file bytes in flight, which bounds the driver's memory.

On the driver, per file: without --shared-fs the driver reads the file once (the same bounded,
consistent read as a parse worker) and hashes it; a dry run and a file whose content equals its
record's are settled right there, without Ray. Everything else goes to an actor, which parses
and chunks it and returns the outcome (`IngestActor.parse`). `embed.route` then runs on the
driver, exactly as in a local run: moves, copies and same content are decided there, before any
model work. The chunks of new content are looked up as a local run's embed stage looks them up
(ray_reuse.py: a passage the entity already holds, or that this run embedded, takes that
vector), and only the passages found nowhere go back to an actor, each once, in one embed call
per parse call (`IngestActor.embed`). The price is a second round trip per batch and the texts
sent back (small next to the file bytes); what it buys is that a print page, a copied README or
an edited file costs model time only for its new passages, as in a local run.

Faults: actors are created with `max_restarts` and `max_task_retries`, so a worker process
killed mid-call (kill -9, OOM) is restarted and its calls are run again; the driver settles a
file only when its calls returned, so each file is settled once. A call that still fails is
split into one call per file (an embed call: one per document that asked for its rows) (a file that kills its worker every time fails alone, with the
reason; a parser crash or time-out is caught earlier still, by the actor's parse pool, and
fails its file as in a local run). The same holds for every failure that belongs to a call
rather than to the run (`_call_failure`): a node that died, Ray's memory monitor killing the
worker, a full object store or disk, a lost result, a call that never answered, and a
MemoryError or a resource OSError (disk full, out of memory, I/O, too many open files) raised
on the actor. Only a cluster that is gone, a configuration error, or a bug in ragctl (any
other exception raised on the actor, a model that cannot load) stops the run, as the same
exception in a local embed stage would. A killed driver leaves what it committed; a re-run
resumes as in local mode.
Every Ray wait has a timeout and watches the run's stop event.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import logging
import os
import socket
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragctl.errors import ConfigError, UsageError
from ragctl.events import Status
from ragctl.ingest import messages as msg
from ragctl.ingest.channel import END, Channel
from ragctl.ingest.embed import prepared_doc, route
from ragctl.ingest.options import IngestOptions, Limits, RunContext
from ragctl.ingest.parse import FAILED, HASHED, SKIPPED, ParseOutcome, _Skip, read_snapshot
from ragctl.ingest.plan import EntityPlan, ParseTask
from ragctl.ingest.ray_reuse import Doc, DriverPassages, Rows
from ragctl.ingest.report import Reporter
from ragctl.model_config import ModelConfig, embedded_by

if TYPE_CHECKING:
    from ragctl.model_config import Embedder
    from ragctl.model_spec import ModelSpec

INSTALL_HINT = 'pip install -e ".[ray]"'
# files per actor call (their chunks are encoded together); a tuning knob, also used by tests
MAX_FILES_PER_CALL = max(1, int(os.environ.get("RAGCTL_RAY_FILES_PER_CALL", "32")))
MAX_BYTES_PER_CALL = 8 << 20  # file bytes per actor call
GATHER_S = 0.05  # how long a started batch waits for more files
DEPTH = 2  # calls in flight per actor
MAX_INFLIGHT_BYTES = 256 << 20  # file bytes in flight in all (a bigger single file still goes, alone)
MAX_RESTARTS = 4  # per actor: Ray restarts a dead actor's process this often
MAX_TASK_RETRIES = 3  # per call: Ray re-runs a call whose actor died this often
WAIT_S = 0.2  # every ray.wait slice; the stop event is checked between slices
GET_TIMEOUT_S = 60.0  # ray.get of a result that ray.wait reported ready
CLOSE_WAIT_S = 10.0  # close(): how long the loop gets to leave after its actors were killed
CONNECT_TIMEOUT_S = 5.0


# ----------------------------------------------------------------------------- connecting
def import_ray() -> Any:
    """`ray`, with usage stats off unless the user turned them on; UsageError if missing."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise UsageError(f"ray: Ray is not installed: {INSTALL_HINT}") from None
    return ray


def _reachable(address: str) -> None:
    """Fail fast (Ray itself retries an unreachable GCS for minutes)."""
    hostport = address.split("://", 1)[-1].rsplit("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"ray address {address!r}: expected auto, local or HOST:PORT (or ray://HOST:PORT)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise UsageError(f"ray address {address}: cannot reach a Ray cluster there ({exc.strerror or exc})") from None


def connect(address: str) -> bool:
    """Connect this process to Ray; True if it did (and must disconnect at the end), False
    if Ray was already initialised by the caller (a library user, a test), which is reused."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    common = {"logging_level": logging.WARNING, "log_to_driver": False, "include_dashboard": False}
    with _keep_sigterm_handler():
        return _init(ray, address, common)


@contextlib.contextmanager
def _keep_sigterm_handler() -> Iterator[None]:
    """`ray.init` installs a SIGTERM handler that calls sys.exit: a SIGTERM would then skip the
    clean stop (commit what is embedded, exit 143) that the CLI installed. Put it back."""
    import signal

    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    try:
        yield
    finally:
        if main and previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _init(ray: Any, address: str, common: dict[str, Any]) -> bool:
    try:
        if address == "local":
            from ragctl.model_spec import cpu_count

            ray.init(address="local", num_cpus=cpu_count(), **common)
            return True
        target = address
        if address == "auto":
            from ray._private.services import canonicalize_bootstrap_address

            target = canonicalize_bootstrap_address("auto") or ""
            if not target:
                raise UsageError("ray address auto: no running Ray cluster found (start one with `ray start --head`, "
                                 "set RAY_ADDRESS, or use --ray local)")
        _reachable(target)
        ray.init(address=address, **common)
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to connect is a configuration error
        from ragctl.parsing.textutil import one_line

        raise UsageError(f"ray address {address}: cannot connect: {one_line(exc, 200)}") from None
    return True


def check_options(options: IngestOptions) -> None:
    if not options.ray:
        if options.ray_actors or options.ray_gpus_per_actor or options.shared_fs:
            raise UsageError("ray_actors, ray_gpus_per_actor and shared_fs need a ray address")
        return
    if options.model.remote is not None:
        raise UsageError("ray embeds on the Ray actors; it cannot be combined with a remote embedding service")
    if options.ray_actors < 0 or options.ray_gpus_per_actor < 0:
        raise UsageError("ray_actors and ray_gpus_per_actor must not be negative")


# ----------------------------------------------------------------------------- actor side
class IngestActor:
    """One Ray actor: parses, chunks and embeds batches of files.

    Parsing runs in the engine's own supervised parse pool (pool.py), inside the actor: a
    parser that crashes (SIGSEGV, OOM kill) or outlives `--parse-timeout` fails its file with
    the same reason as in a local run, and the actor goes on. Nothing is loaded until a call
    needs it (a dry run with --shared-fs only hashes; a batch without new text loads no model).
    """

    def __init__(self, config: ModelConfig, limits: Limits, threads: int) -> None:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        self.config, self.limits, self.threads = config, limits, threads
        self._spec: ModelSpec | None = None
        self._embedder: Embedder | None = None
        self._stop = threading.Event()
        self._pool_in: Channel[Any] | None = None
        self._pool_out: Channel[Any] | None = None
        self._pool_thread: threading.Thread | None = None
        self._tmp = tempfile.mkdtemp(prefix="ragctl-ray-")

    def _spec_loaded(self) -> ModelSpec:
        if self._spec is None:
            from ragctl.model_spec import resolve_model

            self._spec = resolve_model(self.config.model)
        return self._spec

    def _load_embedder(self) -> Embedder:
        if self._embedder is None:
            # Ray sets OMP threads to the actor's num_cpus (1): torch's threads are set here, deliberately
            import torch

            from ragctl.embedding import load_embedder

            torch.set_num_threads(self.threads)
            self._embedder = load_embedder(self.config, threads=self.threads, spec=self._spec_loaded())
        return self._embedder

    def _parse_all(self, tasks: list[ParseTask]) -> list[ParseOutcome]:
        """Run `tasks` through the actor's parse pool; outcomes in task order."""
        from ragctl.ingest.pool import ParsePool

        if self._pool_thread is None or not self._pool_thread.is_alive():
            spec = self._spec_loaded()
            self._pool_in = Channel("actor-tasks", 4 * MAX_FILES_PER_CALL, self._stop)
            self._pool_out = Channel("actor-parsed", 4 * MAX_FILES_PER_CALL, self._stop)
            pool = ParsePool(self.threads, str(spec.path), spec.max_tokens, self.limits)
            self._pool_thread = threading.Thread(target=pool.run, args=(self._pool_in, self._pool_out, self._stop),
                                                 daemon=True, name="ragctl-actor-parse")
            self._pool_thread.start()
        assert self._pool_in is not None and self._pool_out is not None
        by_key: dict[tuple[str, str, str], ParseOutcome] = {}
        for task in tasks:
            self._pool_in.put(task)
        while len(by_key) < len(tasks):
            out = self._pool_out.get(timeout=1.0)
            if out is None:
                if not self._pool_thread.is_alive():
                    raise RuntimeError("the actor's parse pool stopped")
                continue
            by_key[(out.entity_id, out.rel_path, out.tag)] = out
        return [by_key[(t.entity_id, t.rel_path, t.tag)] for t in tasks]

    def pid(self) -> int:
        return os.getpid()

    def parse(self, items: list[tuple[ParseTask, bytes | None, int]]) -> dict[str, Any]:
        """Parse and chunk each file ((task, bytes or None to read task.abs_path, mtime_ns of
        the bytes)); outcomes in input order. Nothing is embedded here: the driver sends the
        texts that need the model to `embed`."""
        tasks: list[ParseTask] = []
        written: list[Path] = []
        for i, (task, data, _) in enumerate(items):
            if data is None:
                tasks.append(task)
                continue
            tmp = Path(self._tmp) / f"{i}{Path(task.abs_path).suffix.lower()}"
            tmp.write_bytes(data)
            written.append(tmp)
            tasks.append(dataclasses.replace(task, abs_path=str(tmp), size=len(data), known_hash="", hash_only=False))
        try:
            outcomes = self._parse_all(tasks)
        finally:
            for tmp in written:
                tmp.unlink(missing_ok=True)
        for out, (_, data, mtime_ns) in zip(outcomes, items):
            if data is not None:
                out.size, out.mtime_ns = len(data), mtime_ns  # the stat the driver read the bytes at
        return {"pid": os.getpid(), "results": outcomes}

    def embed(self, texts: list[str]) -> dict[str, Any]:
        """Vectors of `texts` (one encode call), with the model's identity and runtime."""
        embedder = self._load_embedder()
        t0 = time.perf_counter()
        encoded = embedder.encode(texts)
        return {"pid": os.getpid(), "encode_seconds": time.perf_counter() - t0, "vectors": encoded,
                "identity": self._spec_loaded().identity(), "info": embedder.describe()}


# ----------------------------------------------------------------------------- driver side
_RESOURCE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.ENOMEM, errno.EIO, errno.EMFILE, errno.ENFILE})


def _call_failure(exc: BaseException) -> BaseException | None:
    """The failure to settle a call's files with (after one retry per file), or None when the
    exception belongs to the run (it stops with that reason)."""
    from ray import exceptions as rex

    if isinstance(exc, rex.RayTaskError):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, MemoryError) or (isinstance(cause, OSError) and cause.errno in _RESOURCE_ERRNOS):
            return cause  # a resource of that actor ran out on these files
        return None  # e.g. a model that cannot load on that node (OSError without errno): the run stops
    per_call = (
        rex.RayActorError,  # ActorDiedError, ActorUnavailableError
        rex.WorkerCrashedError,
        rex.ObjectLostError,  # OwnerDiedError, ObjectFetchTimedOutError, reconstruction failed
        rex.OutOfMemoryError,  # Ray's memory monitor killed the worker
        rex.NodeDiedError,
        rex.ObjectStoreFullError,
        rex.OutOfDiskError,
        rex.GetTimeoutError,  # a result reported ready that never came
    )
    return exc if isinstance(exc, per_call) else None


@dataclasses.dataclass
class _Call:
    slot: int
    items: list[tuple[ParseTask, bytes | None, int]]
    nbytes: int
    alone: bool  # a retry of one file (or one document's rows) whose batch failed
    actor: Any = None  # the actor handle that ran it (a slot may have been re-filled since)
    rows: Rows | None = None  # an embed call's input (None: a parse call)


class RayStage:
    """Consumes ParseTasks, produces Embedded/Change/Outcome (see the module docstring)."""

    def __init__(self, ctx: RunContext, plans: dict[tuple[str, str], EntityPlan], reporter: Reporter) -> None:
        self.ctx = ctx
        self.plans = plans
        self.reporter = reporter
        self.options = ctx.options
        self.owned = False  # this run connected to Ray and disconnects at the end
        self.loaded = False  # some actor loaded the model (the run embedded something)
        self.actors: list[Any] = []
        self.replacements = 0
        self._inflight: dict[Any, _Call] = {}
        self._per_slot: list[int] = []
        self._bytes_inflight = 0
        self._retry: deque[tuple[ParseTask, bytes | None, int]] = deque()
        self._lock = threading.Lock()
        self._ray: Any = None
        self._threads = 1
        self.reuse = DriverPassages(ctx.storage, plans)
        self._runtime: dict[str, Any] = {}  # embedded_by of the last embed call
        # close() after a stop: the loop may still be in ray.get of a call; close kills the
        # actors (that get fails at once), waits for the loop to leave, and only then shuts Ray
        # down - a thread touching Ray after ray.shutdown() makes Ray end the process (exit 1)
        self._closing = False
        self._loop_done = threading.Event()
        self._loop_done.set()

    # --------------------------------------------------------------- lifecycle
    def connect(self) -> None:
        """Before any work: a missing Ray or an unreachable cluster is a one-line UsageError."""
        self.owned = connect(self.options.ray or "local")
        self._ray = import_ray()
        try:
            self._plan_pool()  # actors the cluster cannot place are refused now, not waited for
        except UsageError:
            self.close()
            raise

    def close(self) -> None:
        ray = self._ray
        if ray is None:
            return
        self._closing = True  # no new call, no new actor, a failed call is not retried
        with self._lock:
            actors, self.actors = self.actors, []
        for actor in actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self._loop_done.wait(CLOSE_WAIT_S)
        if self.owned and ray.is_initialized():
            ray.shutdown()

    def actor_pids(self, timeout: float = 30.0) -> list[int]:
        """The worker process ids of the actors (for tests and operators)."""
        with self._lock:
            actors = list(self.actors)
        return list(self._ray.get([a.pid.remote() for a in actors], timeout=timeout))

    def _plan_pool(self) -> tuple[int, int]:
        """(actors, torch threads per actor). CPU actors: one CPU each, one fewer than the
        cluster's CPUs (Ray must never hand every CPU to actors); threads share the rest."""
        resources = self._ray.cluster_resources()
        cpus = max(1, int(resources.get("CPU", 1)))
        gpus = self.options.ray_gpus_per_actor
        cluster_gpus = float(resources.get("GPU", 0))
        if gpus and cluster_gpus < gpus:  # the actor could never be scheduled: the run would wait forever
            raise UsageError(f"ray_gpus_per_actor {gpus:g}: the cluster has {cluster_gpus:g} GPU(s)")
        if self.options.ray_actors:
            actors = self.options.ray_actors
            if actors > cpus or (gpus and actors * gpus > cluster_gpus):
                raise UsageError(
                    f"ray_actors {actors}: the cluster can place at most {min(cpus, int(cluster_gpus / gpus) if gpus else cpus)} "
                    f"(each actor takes 1 CPU{f' and {gpus:g} GPU' if gpus else ''}; the cluster has {cpus} CPU(s), "
                    f"{cluster_gpus:g} GPU(s))"
                )
        elif gpus:
            actors = max(1, int(cluster_gpus / gpus))
        else:
            actors = max(1, cpus - 1)
        threads = 2 if gpus else max(1, cpus // actors)
        return actors, threads

    def _new_actor(self) -> Any:
        opts = self.options
        gpus = opts.ray_gpus_per_actor
        remote_opts: dict[str, Any] = {
            "num_cpus": 1, "max_restarts": MAX_RESTARTS, "max_task_retries": MAX_TASK_RETRIES,
        }
        if gpus:  # never num_gpus=0: Ray reads any num_gpus as a request
            remote_opts["num_gpus"] = gpus
        config = opts.model
        if config.device == "auto":  # the actor's device follows what it was given, not its node's torch
            config = dataclasses.replace(config, device="cuda" if gpus else "cpu")
        cls = self._ray.remote(IngestActor).options(**remote_opts)
        return cls.remote(config, opts.limits, self._threads)

    def _start_actors(self) -> None:
        actors, self._threads = self._plan_pool()
        self.reporter.phase(f"starting {actors} Ray actor(s), {self._threads} thread(s) each")
        with self._lock:
            self.actors = [self._new_actor() for _ in range(actors)]
        self._per_slot = [0] * actors

    # --------------------------------------------------------------- the loop
    def run(self, inbox: Channel[ParseTask], outbox: Channel[msg.Settled], stop: threading.Event) -> None:
        self._loop_done.clear()
        try:
            self._loop(inbox, outbox, stop)
        finally:
            self._loop_done.set()

    def _loop(self, inbox: Channel[ParseTask], outbox: Channel[msg.Settled], stop: threading.Event) -> None:
        finished = False
        while not stop.is_set() and not self._closing:
            if not finished or self._retry:
                finished = self._fill(inbox, outbox, stop, finished) or finished
            if finished and not self._inflight and not self._retry:
                return
            if not self._inflight:
                continue
            ready, _ = self._ray.wait(list(self._inflight), num_returns=1, timeout=WAIT_S)
            for ref in ready:
                self._settle(ref, outbox)

    def _has_room(self) -> bool:
        if not self.actors:
            return True
        if self._inflight and self._bytes_inflight >= MAX_INFLIGHT_BYTES:
            return False
        return min(self._per_slot) < DEPTH

    def _fill(self, inbox: Channel[ParseTask], outbox: Channel[msg.Settled], stop: threading.Event,
              finished: bool) -> bool:
        """Send batches while there is room; True once the planner's END was taken."""
        while self._has_room() and not stop.is_set():
            if self._retry:
                self._submit([self._retry.popleft()], alone=True)
                continue
            if finished:
                return True
            batch: list[tuple[ParseTask, bytes | None, int]] = []
            nbytes = 0
            started: float | None = None
            ended = False
            while len(batch) < MAX_FILES_PER_CALL and nbytes < MAX_BYTES_PER_CALL and not stop.is_set():
                wait = WAIT_S if started is None else max(0.0, GATHER_S - (time.monotonic() - started))
                item = inbox.get(timeout=wait) if wait > 0 else inbox.get_nowait()
                if item is None:
                    if started is not None or self._inflight:
                        break  # a batch to send, or results to collect
                    continue
                if item is END:
                    ended = True
                    break
                prepared = self._prepare(item, outbox)
                if prepared is None:
                    continue
                batch.append(prepared)
                nbytes += len(prepared[1] or b"")
                started = started if started is not None else time.monotonic()
            if batch:
                self._submit(batch, alone=False, nbytes=nbytes)
            if ended:
                return True
            if not batch:
                return False
        return False

    def _prepare(self, task: ParseTask, outbox: Channel[msg.Settled]) -> tuple[ParseTask, bytes | None, int] | None:
        """Without --shared-fs: read and hash the file here; settle it here if no parse is
        needed (dry run, content equal to its record's, unreadable)."""
        if self.options.shared_fs:
            return (task, None, 0)
        out = ParseOutcome(task.entity_id, task.rel_path, FAILED, size=task.size, tag=task.tag)
        try:
            data, out.size, out.mtime_ns = read_snapshot(task.abs_path, self.ctx.limits.max_file_bytes)
        except _Skip as exc:
            out.status, out.error = SKIPPED, str(exc)
        except FileNotFoundError:
            out.status, out.error = SKIPPED, "file disappeared before it could be read"
        except OSError as exc:
            out.error = f"cannot read: {exc.strerror or exc}"
        else:
            out.content_hash = hashlib.sha256(data).hexdigest()
            if not (task.hash_only or (task.known_hash and task.known_hash == out.content_hash)):
                return (task, data, out.mtime_ns)
            out.status = HASHED
        self._deliver(out, outbox)
        return None

    def _submit(self, items: list[tuple[ParseTask, bytes | None, int]], alone: bool, nbytes: int = -1) -> None:
        if self._closing:
            return
        if not self.actors:
            self._start_actors()
        slot = min(range(len(self._per_slot)), key=self._per_slot.__getitem__)
        if nbytes < 0:
            nbytes = sum(len(d or b"") for _, d, _ in items)
        ref = self.actors[slot].parse.remote(items)
        self._inflight[ref] = _Call(slot, items, nbytes, alone, self.actors[slot])
        self._per_slot[slot] += 1
        self._bytes_inflight += nbytes

    def _submit_embed(self, rows: Rows, alone: bool) -> None:
        """An embed call; sent at once, whatever the room (its files were parsed already)."""
        if self._closing:
            return
        if not self.actors:
            self._start_actors()
        slot = min(range(len(self._per_slot)), key=self._per_slot.__getitem__)
        ref = self.actors[slot].embed.remote(rows.texts)
        self._inflight[ref] = _Call(slot, [], 0, alone, self.actors[slot], rows)
        self._per_slot[slot] += 1

    def _settle(self, ref: Any, outbox: Channel[msg.Settled]) -> None:
        from ray import exceptions as rex

        call = self._inflight.pop(ref)
        self._per_slot[call.slot] -= 1
        self._bytes_inflight -= call.nbytes
        try:
            result = self._ray.get(ref, timeout=GET_TIMEOUT_S)
        except rex.RayError as exc:
            if self._closing:
                return  # the run stopped and close() killed the actors: nothing to settle or retry
            failure = _call_failure(exc)
            if failure is None:  # the cluster is gone, a configuration error, or a bug: the run stops
                cause = getattr(exc, "cause", None) if isinstance(exc, rex.RayTaskError) else None
                raise cause if isinstance(cause, Exception) else exc  # noqa: B904
            self._call_failed(call, failure, outbox, hung=isinstance(exc, rex.GetTimeoutError))
            return
        if call.rows is None:
            self._parsed(result["results"], outbox)
            return
        identity = result.get("identity")
        if identity is not None and identity.get("digest") != self.ctx.identity.get("digest"):
            raise ConfigError(
                f"the model on a Ray worker ({identity.get('name')}, digest {str(identity.get('digest'))[:12]}) "
                f"is not the driver's ({self.ctx.identity.get('name')}): install the same model on every node"
            )
        if "info" in result and not self.loaded:
            self.loaded = True
            info = dict(result["info"])
            info["ray"] = {"address": self.options.ray, "actors": len(self.actors), "threads_per_actor": self._threads,
                           "gpus_per_actor": self.options.ray_gpus_per_actor, "shared_fs": self.options.shared_fs}
            self.reporter.model_info(info)
        self._runtime = embedded_by(result.get("info") or {})
        self.reporter.embedded(len(call.rows.texts), result["encode_seconds"], call.rows.per_entity())
        for doc in self.reuse.embedded(call.rows, result["vectors"]):
            self._hand_on(doc, outbox)

    def _parsed(self, outcomes: list[ParseOutcome], outbox: Channel[msg.Settled]) -> None:
        """A parse call's outcomes: routed; new content looked up (ray_reuse.py); what no
        passage holds goes to one embed call."""
        routed: list[tuple[ParseOutcome, frozenset[str]]] = []
        for outcome in outcomes:
            settled = route(outcome, self.plans[outcome.key], self.ctx.dry_run)
            if not isinstance(settled, frozenset):
                outbox.put(settled, even_when_stopping=True)
                continue
            self.reporter.parsed(outcome)
            routed.append((outcome, settled))
        if not routed:
            return
        complete, rows, reused = self.reuse.admit(routed)
        if reused:
            self.reporter.reused(reused)
        for doc in complete:
            self._hand_on(doc, outbox)
        if rows.texts:
            self._submit_embed(rows, alone=False)

    def _hand_on(self, doc: Doc, outbox: Channel[msg.Settled]) -> None:
        """A document whose chunks all have vectors (or one failed) goes to the committer."""
        out = doc.outcome
        if doc.failure is not None:
            outbox.put(msg.Outcome(out.entity_id, out.rel_path, Status.FAILED, doc.failure, out.size, out.tag),
                       even_when_stopping=True)
            return
        prepared = prepared_doc(out, doc.vectors, doc.not_a_copy_of)
        outbox.put(msg.Embedded(out.entity_id, prepared, self._runtime, out.tag), even_when_stopping=True)

    def _call_failed(self, call: _Call, exc: BaseException, outbox: Channel[msg.Settled], hung: bool = False) -> None:
        from ray import exceptions as rex

        if hung or isinstance(exc, rex.ActorDiedError) or "actor died" in str(exc).lower():
            self._replace(call.slot, call.actor)
        if call.rows is not None and not call.alone and len(parts := call.rows.split()) > 1:
            for part in parts:  # one call per document: a text the model cannot take fails alone
                self._submit_embed(part, alone=True)
            return
        if not call.alone and len(call.items) > 1:
            self._retry.extend(call.items)  # one call per file: a file that kills workers fails alone
            return
        from ragctl.parsing.textutil import one_line

        if isinstance(exc, rex.RayError):
            what = f"Ray worker died while processing this file ({MAX_TASK_RETRIES + 1} attempts)"
        else:  # raised by our code on the actor
            what = "failed on a Ray worker"
        if call.rows is not None:
            for doc in self.reuse.failed(call.rows, f"{what}: {one_line(exc, 160)}"):
                self._hand_on(doc, outbox)
            return
        for task, data, _ in call.items:
            reason = f"{what}: {one_line(exc, 160)}"
            size = len(data) if data is not None else task.size
            outbox.put(msg.Outcome(task.entity_id, task.rel_path, Status.FAILED, reason, size, task.tag),
                       even_when_stopping=True)

    def _replace(self, slot: int, dead: Any) -> None:
        """An actor out of restarts is replaced (a bounded number of times in a run). Only if
        the slot still holds the actor that died: its other in-flight calls fail too, and
        must not kill the replacement started for the first of them."""
        if self.replacements >= 2 * max(1, len(self.actors)):
            return
        with self._lock:
            if self.actors[slot] is not dead:
                return
            self.replacements += 1
            old = self.actors[slot]
            self.actors[slot] = self._new_actor()
        try:
            self._ray.kill(old, no_restart=True)
        except Exception:  # noqa: BLE001
            pass

    def _deliver(self, outcome: ParseOutcome, outbox: Channel[msg.Settled]) -> None:
        """Route an outcome settled on the driver (read failed, unchanged content, dry run)."""
        settled = route(outcome, self.plans[outcome.key], self.ctx.dry_run)
        if not isinstance(settled, frozenset):
            outbox.put(settled, even_when_stopping=True)
            return
        # HASHED content that route() found new cannot happen: it is read for a parse, never settled here
        outbox.put(msg.Outcome(outcome.entity_id, outcome.rel_path, Status.FAILED, "no vectors came back",
                               outcome.size, outcome.tag), even_when_stopping=True)
