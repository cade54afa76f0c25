"""`ragctl bench`: the one-document-at-a-time design against the engine, and against the model.

    from ragctl.bench import BenchConfig, run_bench, format_table
    result = run_bench(BenchConfig(entities=10, docs=5, workers=16))
    print(format_table(result))

One run does, in this order, with ONE Embedder loaded (and warmed up) before any timing:

  1. corpus      a seeded synthetic tree (`ragctl.bench.corpus`), or `corpus=DIR`;
  2. sequential  `ragctl.bench.sequential`: one document at a time, parse -> chunk -> embed ->
                 commit, built from the engine's stage functions, into a fresh store;
  3. parallel    the engine (`ragctl.ingest.ingest`) with `workers` into another fresh store;
  4. check       both stores must hold the same documents (paths) and chunk counts per entity,
                 else `BenchMismatch` (the CLI exits 1);
  5. model limit bare `embedder.encode` over the parallel store's chunk texts, read back from
                 chunks.sqlite, in windows of `embed_window` chunks (what the engine encodes).

Timings exclude fixed costs, which are reported separately: the model load (and a short
warm-up) happens once, before everything; the parse pool's start-up is *inside* the parallel
time (it is what a user waits for) and also reported on its own as `parallel_first_embed_s`,
the time from the start of the run to the first encode call.

limit_ratio = parallel chunks/s / bare-encode chunks/s: 1.0 means the engine adds nothing
to what the model costs anyway. Efficiency = speedup / min(workers, cores).

Importing this module is cheap: torch, faiss and friends are imported inside the functions.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragctl import events as ev
from ragctl.bench.corpus import describe_corpus, generate_corpus
from ragctl.bench.stores import chunk_texts_in_order, compare_snapshots, store_snapshot
from ragctl.errors import RagctlError, UsageError
from ragctl.model_config import ModelConfig

if TYPE_CHECKING:
    from ragctl.model_config import Embedder


class BenchMismatch(RagctlError):
    """The sequential and parallel stores differ (documents or chunk counts)."""


def model_limit(embedder: Any, texts: list[str], window: int) -> float:
    """Seconds bare `embedder.encode` takes over `texts` in windows of `window` chunks."""
    started = time.perf_counter()
    for start in range(0, len(texts), window):
        embedder.encode(texts[start : start + window])
    return time.perf_counter() - started


_WARMUP_WORDS = (
    "the refund window is forty five days for unopened items and the cluster outage began when a "
    "certificate expired on the ingress controller while quarterly revenue grew in europe"
).split()


def warm_up(embedder: Any, rounds: int = 2) -> float:
    """Run the model over every padded length it will meet (oneDNN builds kernels per shape)."""
    started = time.perf_counter()
    texts = [" ".join(_WARMUP_WORDS[i % len(_WARMUP_WORDS)] for i in range(n)) for n in range(8, 230, 14)]
    for _ in range(rounds):
        embedder.encode(texts)
    return time.perf_counter() - started


@dataclass
class BenchConfig:
    entities: int = 5
    docs: int = 20
    workers: int = 0  # 0 = number of cores (as `ingest`)
    corpus: Path | None = None
    model: ModelConfig = field(default_factory=ModelConfig)  # the model limit is measured with the same one
    seed: int = 0
    keep: Path | None = None
    embed_window: int | None = None  # None: the engine's default (IngestOptions.embed_window)
    repeat: int = 1  # best of R for each measurement (noisy machines)
    skip_sequential: bool = False


@dataclass
class BenchResult:
    sequential_s: float | None
    parallel_s: float
    model_limit_s: float
    docs: int
    chunks: int
    workers: int
    cores: int
    parse_workers: int
    precision: str
    embed_window: int
    corpus: dict[str, Any]
    model_load_s: float
    warmup_s: float
    sequential_encode_s: float | None
    parallel_encode_s: float
    parallel_first_embed_s: float | None
    failed: int
    repeat: int
    runs: dict[str, list[float]] = field(default_factory=dict)
    stores: dict[str, str] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    # torch intra-op threads before and after the runs: a run that changes them (as the
    # pipeline once did through FAISS's OpenMP setting) skews every later measurement.
    torch_threads: dict[str, int | None] = field(default_factory=dict)
    batch_size: int = 0  # the model's batch size (the embedder's own when one is passed in)

    @property
    def warnings(self) -> list[str]:
        out = []
        if self.torch_threads and self.torch_threads.get("before") != self.torch_threads.get("after"):
            out.append(
                f"torch threads changed during the runs ({self.torch_threads.get('before')} -> "
                f"{self.torch_threads.get('after')}): measurements after the change are skewed"
            )
        if self.failed:
            out.append(f"{self.failed} file(s) failed in the parallel run (not counted as documents)")
        return out

    @property
    def speedup(self) -> float | None:
        if self.sequential_s is None or not self.parallel_s:
            return None
        return self.sequential_s / self.parallel_s

    @property
    def efficiency(self) -> float | None:
        s = self.speedup
        return None if s is None else s / max(1, min(self.workers, self.cores))

    @property
    def docs_per_s(self) -> float:
        return self.docs / self.parallel_s if self.parallel_s else 0.0

    @property
    def chunks_per_s(self) -> float:
        return self.chunks / self.parallel_s if self.parallel_s else 0.0

    @property
    def model_limit_chunks_per_s(self) -> float:
        return self.chunks / self.model_limit_s if self.model_limit_s else 0.0

    @property
    def limit_ratio(self) -> float:
        limit = self.model_limit_chunks_per_s
        return self.chunks_per_s / limit if limit else 0.0

    def to_json(self) -> dict[str, Any]:
        def r(x: float | None, n: int = 3) -> float | None:
            return None if x is None else round(x, n)

        seq_docs = self.docs / self.sequential_s if self.sequential_s else None
        return {
            "sequential_s": r(self.sequential_s),
            "parallel_s": r(self.parallel_s),
            "speedup": r(self.speedup, 4),
            "efficiency": r(self.efficiency, 4),
            "docs_per_s": r(self.docs_per_s),
            "chunks_per_s": r(self.chunks_per_s),
            "model_limit_chunks_per_s": r(self.model_limit_chunks_per_s),
            "limit_ratio": r(self.limit_ratio, 4),
            "workers": self.workers,
            "cores": self.cores,
            "precision": self.precision,
            "backend": self.model.get("backend", "torch"),
            "sequential_docs_per_s": r(seq_docs),
            "sequential_chunks_per_s": r(self.chunks / self.sequential_s if self.sequential_s else None),
            "docs": self.docs,
            "chunks": self.chunks,
            "failed": self.failed,
            "parse_workers": self.parse_workers,
            "embed_window": self.embed_window,
            "batch_size": self.batch_size,
            "model_limit_s": r(self.model_limit_s),
            "sequential_encode_s": r(self.sequential_encode_s),
            "parallel_encode_s": r(self.parallel_encode_s),
            "parallel_first_embed_s": r(self.parallel_first_embed_s),
            "model_load_s": r(self.model_load_s),
            "warmup_s": r(self.warmup_s),
            "repeat": self.repeat,
            "runs": {k: [round(v, 3) for v in vs] for k, vs in self.runs.items()},
            "model": self.model,
            "torch_threads": self.torch_threads,
            "warnings": self.warnings,
            "corpus": self.corpus,
            "stores": self.stores,
        }


@contextmanager
def _workdir(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    tmp = tempfile.mkdtemp(prefix="ragctl-bench-")
    try:
        yield Path(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _FirstEmbed:
    """Event sink that remembers when the first encode call started."""

    def __init__(self, forward: ev.EventSink) -> None:
        self.forward = forward
        self.first: float | None = None

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.ChunksEmbedded) and self.first is None:
            self.first = time.perf_counter() - event.seconds
        if isinstance(event, ev.Phase):  # progress of the timed runs is not shown
            self.forward(event)


def run_bench(config: BenchConfig, on_event: ev.EventSink = ev.ignore, embedder: Embedder | None = None) -> BenchResult:
    """Generate (or take) a corpus, ingest it sequentially and in parallel, compare, time.

    `embedder`: an already loaded Embedder to reuse; else the process's shared one for
    `config.model` (`load_embedder`, loaded here if this process has none yet).
    Raises BenchMismatch when the two stores disagree, UsageError for bad options.
    """
    from ragctl.bench.sequential import ingest_sequential
    from ragctl.discovery import discover_entities
    from ragctl.embedding import load_embedder
    from ragctl.ingest import IngestOptions, ingest
    from ragctl.model_spec import cpu_count

    if config.repeat < 1:
        raise UsageError("--repeat must be at least 1")
    if config.workers < 0:
        raise UsageError("--workers must be 0 (= cores) or more")
    defaults = IngestOptions(store=Path("."))
    window = config.embed_window or defaults.embed_window
    cores = cpu_count()
    workers = config.workers or cores

    with _workdir(config.keep) as work:
        stores = {"sequential": work / "store-sequential", "parallel": work / "store-parallel"}
        for _name, path in stores.items():
            if path.exists():
                raise UsageError(f"{path} exists: --keep needs a directory without earlier bench stores")
        if config.corpus is not None:
            corpus = config.corpus
            if not corpus.is_dir():
                raise UsageError(f"--corpus {corpus}: not a directory")
            corpus_info = describe_corpus(corpus)
        else:
            corpus = work / "corpus"
            if corpus.exists() and any(corpus.iterdir()):
                raise UsageError(f"{corpus} exists and is not empty: --keep needs a fresh directory")
            on_event(ev.Phase(f"generating corpus: {config.entities} entities x {config.docs} documents (seed {config.seed})"))
            corpus_info = generate_corpus(corpus, config.entities, config.docs, config.seed)
        sources = discover_entities(corpus)

        load_s = 0.0
        if embedder is None:
            on_event(ev.Phase("loading model"))
            t0 = time.perf_counter()
            embedder = load_embedder(config.model)
            load_s = time.perf_counter() - t0
        on_event(ev.Phase("warming up the model"))
        warmup_s = warm_up(embedder)
        threads_before = _torch_threads()

        def run(kind: str, store: Path) -> tuple[Any, float | None]:
            sink = _FirstEmbed(on_event)
            started = time.perf_counter()
            if kind == "sequential":
                report = ingest_sequential(sources, store, embedder, sink)
            else:
                options = IngestOptions(store=store, workers=workers, model=config.model, embed_window=window)
                report = ingest(sources, options, sink, embedder=embedder)
            first = None if sink.first is None else sink.first - started
            return report, first

        runs: dict[str, list[float]] = {"sequential": [], "parallel": [], "model_limit": []}
        seq_report = par_report = None
        first_embed: float | None = None
        for attempt in range(config.repeat):
            suffix = "" if attempt == 0 else f"-{attempt}"
            if not config.skip_sequential:
                on_event(ev.Phase(f"sequential run{_nth(attempt, config.repeat)}: one document at a time"))
                report, _ = run("sequential", Path(f"{stores['sequential']}{suffix}"))
                runs["sequential"].append(report.seconds)
                if seq_report is None or report.seconds < seq_report.seconds:
                    seq_report = report
            on_event(ev.Phase(f"parallel run{_nth(attempt, config.repeat)}: {workers} worker(s)"))
            report, first = run("parallel", Path(f"{stores['parallel']}{suffix}"))
            runs["parallel"].append(report.seconds)
            if par_report is None or report.seconds < par_report.seconds:
                par_report, first_embed = report, first
            if attempt == 0:
                texts = chunk_texts_in_order(stores["parallel"], [s.entity_id for s in sources])
            on_event(ev.Phase(f"model limit{_nth(attempt, config.repeat)}: bare encode of {len(texts)} chunks in windows of {window}"))
            runs["model_limit"].append(model_limit(embedder, texts, window))
        assert par_report is not None

        if not config.skip_sequential:
            problems = compare_snapshots(store_snapshot(stores["sequential"]), store_snapshot(stores["parallel"]))
            if problems:
                shown = "; ".join(problems[:10]) + (f"; ... ({len(problems)} in all)" if len(problems) > 10 else "")
                raise BenchMismatch(f"sequential and parallel stores differ: {shown}")

        docs = sum(r.indexed + r.updated for r in par_report.entities.values())
        chunks = par_report.total_chunks
        if chunks != len(texts):
            raise BenchMismatch(f"the parallel run reported {chunks} chunks but its store holds {len(texts)}")
        result = BenchResult(
            sequential_s=min(runs["sequential"]) if runs["sequential"] else None,
            parallel_s=min(runs["parallel"]),
            model_limit_s=min(runs["model_limit"]),
            docs=docs,
            chunks=chunks,
            workers=workers,
            cores=cores,
            parse_workers=par_report.parse_workers,
            precision=embedder.precision,
            embed_window=window,
            corpus=corpus_info.to_json() | ({"seed": config.seed} if config.corpus is None else {}),
            model_load_s=load_s,
            warmup_s=warmup_s,
            sequential_encode_s=seq_report.encode_seconds if seq_report else None,
            parallel_encode_s=par_report.encode_seconds,
            parallel_first_embed_s=first_embed,
            failed=len(par_report.failures),
            repeat=config.repeat,
            runs=runs,
            stores={k: str(v) for k, v in stores.items()} if config.keep is not None else {},
            model=embedder.describe(),
            torch_threads={"before": threads_before, "after": _torch_threads()},
            batch_size=int(getattr(embedder, "batch_size", 0)),
        )
    return result


def _torch_threads() -> int | None:
    try:
        import torch
    except ImportError:  # pragma: no cover - a hard dependency
        return None
    return int(torch.get_num_threads())


def _nth(attempt: int, total: int) -> str:
    return f" {attempt + 1}/{total}" if total > 1 else ""


# =============================================================================== rendering
def table_rows(result: BenchResult) -> list[tuple[str, str]]:
    def f(x: float | None, fmt: str) -> str:
        return "n/a" if x is None else format(x, fmt)

    seq_docs = result.docs / result.sequential_s if result.sequential_s else None
    seq_chunks = result.chunks / result.sequential_s if result.sequential_s else None
    return [
        ("Corpus", f"{result.corpus.get('entities')} entities, {result.docs} documents, {result.chunks} chunks"),
        ("Model", f"{result.model.get('name')} {result.precision} on {result.model.get('device', 'cpu')}"),
        ("Workers", f"{result.workers} requested, {result.parse_workers} parse process(es), {result.cores} cores"),
        ("Sequential time", f"{f(result.sequential_s, '.2f')} s  ({f(seq_docs, '.2f')} docs/s, {f(seq_chunks, '.1f')} chunks/s)"),
        ("Parallel time", f"{result.parallel_s:.2f} s  ({result.docs_per_s:.2f} docs/s, {result.chunks_per_s:.1f} chunks/s)"),
        ("Speedup", f"{f(result.speedup, '.2f')}x"),
        ("Efficiency", f"{f(result.efficiency, '.2f')}  (speedup / min(workers, cores) = / {min(result.workers, result.cores)})"),
        ("Model limit", f"{result.model_limit_chunks_per_s:.1f} chunks/s  (bare encode, windows of {result.embed_window}, batch {result.batch_size})"),
        ("Limit ratio", f"{result.limit_ratio:.2f}  (parallel chunks/s / model limit)"),
        ("Fixed costs", f"model load {result.model_load_s:.1f} s + warm-up {result.warmup_s:.1f} s (excluded); "
                        f"first encode after {f(result.parallel_first_embed_s, '.2f')} s (included)"),
    ]


def format_table(result: BenchResult) -> str:
    rows = table_rows(result)
    width = max(len(k) for k, _ in rows)
    line = "-" * (width + 2 + max(len(v) for _, v in rows))
    return "\n".join([line] + [f"{k:<{width}}  {v}" for k, v in rows] + [line])
