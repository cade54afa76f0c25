"""`ragctl bench`: the sequential design against the parallel pipeline, and against the model.

    from ragctl.bench import BenchConfig, run_bench, format_table
    result = run_bench(BenchConfig(entities=10, docs=5, workers=16))
    print(format_table(result))

One run does, in this order, with ONE Embedder loaded (and warmed up) before any timing:

  1. corpus   a seeded synthetic tree (N entity dirs x M documents: .md/.txt/.html and some
              .docx/.pdf, ~1-30 KB of multi-paragraph English with headings), or `corpus=DIR`;
  2. sequential  `IngestOptions(sequential=True)` into a fresh store: one document at a time,
              parse -> chunk -> embed -> commit under the entity lock (the original design);
  3. parallel    the real pipeline with `workers` into another fresh store;
  4. check    both stores must hold the same documents (paths) and chunk counts per entity,
              else `BenchMismatch` (the CLI exits 1);
  5. model limit  bare `embedder.encode` over the parallel store's chunk texts, read back from
              chunks.sqlite, in windows of `embed_window` chunks (what the pipeline encodes).

Timings exclude fixed costs, which are reported separately: the model load (and a short
warm-up) happens once, before everything; the parse pool's start-up is *inside* the parallel
time (it is what a user waits for) and also reported on its own as `parallel_first_embed_s`,
the time from the start of the run to the first encode call.

limit_ratio = parallel chunks/s / bare-encode chunks/s: 1.0 means the pipeline adds nothing
to what the model costs anyway. Efficiency = speedup / min(workers, cores).

Importing this module is cheap: torch, faiss and friends are imported inside the functions.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragctl import events as ev
from ragctl.errors import RagctlError, UsageError

__all__ = [
    "BenchConfig",
    "BenchResult",
    "BenchMismatch",
    "CorpusInfo",
    "generate_corpus",
    "run_bench",
    "store_snapshot",
    "compare_snapshots",
    "chunk_texts_in_order",
    "model_limit",
    "format_table",
]


class BenchMismatch(RagctlError):
    """The sequential and parallel stores differ (documents or chunk counts)."""


# =============================================================================== corpus
# A small grammar of office English: enough variety that the tokenizer sees ordinary prose
# (~4.5 characters per word piece), never enough repetition that documents collide by hash.

_COMPANIES = [
    "Acme Corp", "Globex", "Initech", "Umbrella Logistics", "Stark Freight", "Wayne Analytics",
    "Hooli", "Vandelay Imports", "Soylent Foods", "Tyrell Systems", "Cyberdyne Labs",
    "Wonka Industries", "Massive Dynamic", "Oscorp Energy", "Aperture Health", "Gringotts Bank",
]
_TEAMS = [
    "the platform team", "the finance committee", "the people team", "customer support",
    "the security office", "the data engineering group", "the legal department", "facilities",
    "the quality assurance group", "the sales organisation", "the procurement desk",
    "the site reliability engineers", "the product council", "internal audit", "the board",
]
_PEOPLE = [
    "Maria Lopez", "James Okafor", "Wei Chen", "Priya Natarajan", "Lukas Novak", "Aisha Bello",
    "Tom Becker", "Sofia Rossi", "Kenji Watanabe", "Emma Larsen", "Omar Haddad", "Grace Kim",
    "Daniel Moreau", "Fatima Zahra", "Noah Fischer", "Elena Petrova",
]
_SUBJECTS = [
    "the quarterly revenue forecast", "the new expense policy", "the customer onboarding flow",
    "the cluster upgrade", "the data retention schedule", "the vendor contract", "the on-call rotation",
    "the refund process", "the hiring plan", "the security review", "the migration to the new ledger",
    "the travel budget", "the release checklist", "the incident response runbook", "the pricing model",
    "the warehouse inventory", "the support backlog", "the annual audit", "the training programme",
    "the disaster recovery test", "the office relocation", "the procurement workflow",
    "the service level agreement", "the parental leave policy", "the API deprecation plan",
]
_VERBS = [
    "reviewed", "approved", "postponed", "simplified", "rewrote", "documented", "audited",
    "measured", "extended", "replaced", "discussed", "challenged", "finalised", "automated",
    "rolled back", "escalated", "summarised", "benchmarked", "consolidated", "published",
]
_REASONS = [
    "because the previous version caused too many manual corrections",
    "after two customers reported inconsistent invoices",
    "so that new employees can find the answer without asking",
    "since the regulator asked for clearer records",
    "to reduce the time between a request and its approval",
    "because the old tooling is no longer supported by the vendor",
    "after the outage in the western data centre",
    "to keep costs within the budget agreed in January",
    "because response times doubled during the peak season",
    "so that every entity keeps its own records separate",
]
_DETAILS = [
    "Receipts must be uploaded within {n} days, otherwise the claim is rejected automatically.",
    "The change affects roughly {n} percent of all open cases and will be rolled out in {month}.",
    "{person} will own the follow-up and report progress at the next weekly meeting.",
    "A dry run on the staging environment took {n} minutes and finished without errors.",
    "Costs are expected to fall by {n} thousand dollars per year once the work is complete.",
    "The team agreed to revisit the decision in {month}, when more data is available.",
    "Questions should go to {person}, who keeps the decision log up to date.",
    "The document control desk keeps a signed copy of every version for {n} years.",
    "During the test, {n} requests per second were handled with no measurable increase in latency.",
    "Employees may carry over up to {small} days of unused leave into the next calendar year.",
    "The backlog shrank from {n} tickets to {small} tickets over the last sprint.",
    "Every exception must be approved in writing by {person} before the work starts.",
    "The rollout is split into {small} phases so that each one can be reverted independently.",
    "Invoices above {n} thousand dollars need a second signature from {team}.",
    "Monitoring dashboards now show the error rate per region, refreshed every {small} minutes.",
]
_OPENERS = [
    "In {month}, {team} {verb} {subject} {reason}.",
    "{person} {verb} {subject} together with {team}.",
    "{company} {verb} {subject} {reason}.",
    "This section explains how {subject} works at {company} and who is responsible for it.",
    "Last week {team} {verb} {subject}; the notes below capture what was decided.",
    "The goal of {subject} is simple: fewer surprises for {team} and for our customers.",
    "Before anything else, read how {subject} interacts with {subject2}.",
    "{team} {verb} {subject} and {verb2} {subject2} in the same review.",
]
_CONNECTORS = ["However,", "In practice,", "As a result,", "For example,", "In addition,", "Finally,", "Meanwhile,", "Note that"]
_MONTHS = [
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
]
_HEADINGS = [
    "Background", "Scope", "Responsibilities", "Process overview", "Exceptions", "Timeline",
    "Open questions", "Risks and mitigations", "Costs", "Decisions", "Next steps", "Contacts",
    "Frequently asked questions", "Metrics", "History of changes", "Glossary", "Approvals",
]
_KINDS = ["Policy", "Handbook", "Postmortem", "Meeting notes", "Status report", "Runbook", "Guide", "Proposal"]

# Format mix (weights) and sizes of the generated documents.
FORMAT_WEIGHTS = {".md": 34, ".html": 28, ".txt": 22, ".docx": 8, ".pdf": 8}
MIN_DOC_BYTES, MAX_DOC_BYTES = 1_000, 30_000
_SUBDIRS = ["", "", "policies", "notes", "reports/2024"]


class _Prose:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def _fill(self, template: str) -> str:
        r = self.rng
        subject, subject2 = r.sample(_SUBJECTS, 2)
        verb, verb2 = r.sample(_VERBS, 2)
        return template.format(
            month=r.choice(_MONTHS), team=r.choice(_TEAMS), verb=verb, verb2=verb2, subject=subject,
            subject2=subject2, reason=r.choice(_REASONS), person=r.choice(_PEOPLE),
            company=r.choice(_COMPANIES), n=r.randint(3, 480), small=r.randint(2, 9),
        )

    def sentence(self) -> str:
        r = self.rng
        text = self._fill(r.choice(_OPENERS) if r.random() < 0.45 else r.choice(_DETAILS))
        text = text[0].upper() + text[1:]
        if r.random() < 0.25:
            text = f"{r.choice(_CONNECTORS)} {text[0].lower()}{text[1:]}"
        return text

    def paragraph(self) -> str:
        return " ".join(self.sentence() for _ in range(self.rng.randint(2, 7)))

    def title(self, company: str) -> str:
        return f"{company} {self.rng.choice(_KINDS).lower()}: {self.rng.choice(_SUBJECTS)[4:]}"

    def document(self, target_bytes: int, company: str) -> tuple[str, list[tuple[str, str]]]:
        """(title, [("heading"|"text"|"item", text), ...]) of roughly `target_bytes` of text."""
        items: list[tuple[str, str]] = []
        size = 0
        headings = self.rng.sample(_HEADINGS, len(_HEADINGS))
        while size < target_bytes:
            if not items or self.rng.random() < 0.22:
                head = headings.pop() if headings else f"Part {len(items)}"
                items.append(("heading", head))
                size += len(head)
            if self.rng.random() < 0.12:
                for _ in range(self.rng.randint(2, 5)):
                    item = self.sentence()
                    items.append(("item", item))
                    size += len(item)
            else:
                para = self.paragraph()
                items.append(("text", para))
                size += len(para)
        return self.title(company), items


def _render_md(title: str, items: list[tuple[str, str]]) -> bytes:
    out = [f"# {title}", ""]
    for kind, text in items:
        out += [f"## {text}", ""] if kind == "heading" else [f"- {text}"] if kind == "item" else [text, ""]
    return "\n".join(out).encode()


def _render_txt(title: str, items: list[tuple[str, str]]) -> bytes:
    out = [title.upper(), ""]
    for kind, text in items:
        out += [text, "-" * len(text), ""] if kind == "heading" else [f"  * {text}"] if kind == "item" else [text, ""]
    return "\n".join(out).encode()


def _render_html(title: str, items: list[tuple[str, str]]) -> bytes:
    from html import escape

    out = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title></head><body>',
        '<nav><a href="/">Home</a> | <a href="/policies">Policies</a></nav>',
        f"<main><h1>{escape(title)}</h1>",
    ]
    in_list = False
    for kind, text in items:
        if kind != "item" and in_list:
            out.append("</ul>")
            in_list = False
        if kind == "heading":
            out.append(f"<h2>{escape(text)}</h2>")
        elif kind == "item":
            if not in_list:
                out.append("<ul>")
                in_list = True
            out.append(f"<li>{escape(text)}</li>")
        else:
            out.append(f"<p>{escape(text)}</p>")
    if in_list:
        out.append("</ul>")
    out.append("</main><footer>Internal use only.</footer></body></html>")
    return "\n".join(out).encode()


def _sample_writers() -> Any | None:
    """ragctl.parsing.samples (the writers behind sample_docs/): PDF and reproducible DOCX."""
    try:
        from ragctl.parsing import samples
    except ImportError:  # pragma: no cover - optional: fall back to text formats
        return None
    return samples


def _render_docx(title: str, items: list[tuple[str, str]], writers: Any) -> bytes:
    body: list[tuple[Any, ...]] = [("title", title)]
    for kind, text in items:
        body.append(("heading", text, 1) if kind == "heading" else ("text", text))
    return bytes(writers.make_docx(body, title=title))


def _render_pdf(title: str, items: list[tuple[str, str]], writers: Any) -> bytes:
    import textwrap

    # make_pdf's layout: lines from y=740 down to 50; titles 19pt per line (62 characters),
    # text 15pt per line (92 characters), 12pt after each paragraph.
    pages: list[list[tuple[str, str]]] = []
    page: list[tuple[str, str]] = []
    y = 740
    for kind, text in [("title", title)] + [("title" if k == "heading" else "text", t) for k, t in items]:
        width, step = (62, 19) if kind == "title" else (92, 15)
        lines = max(1, len(textwrap.wrap(text, width)))
        if page and y - step * (lines - 1) < 60:
            pages.append(page)
            page, y = [], 740
        page.append((kind, text))
        y -= step * lines + 12
    if page:
        pages.append(page)
    return bytes(writers.make_pdf(pages, title=title))


@dataclass
class CorpusInfo:
    root: Path
    entities: int
    documents: int
    bytes: int
    formats: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"root": str(self.root), "entities": self.entities, "documents": self.documents, "bytes": self.bytes, "formats": self.formats}


def generate_corpus(root: Path, entities: int, docs: int, seed: int = 0) -> CorpusInfo:
    """Write N entity directories x M documents under `root`; the same seed, the same bytes.

    Sizes are log-uniform between ~1 KB and ~30 KB of text; formats follow FORMAT_WEIGHTS
    (.docx/.pdf via ragctl.parsing.samples, the writers behind scripts/make_sample_docs.py).
    """
    if entities < 1 or docs < 1:
        raise UsageError("--entities and --docs must be at least 1")
    rng = random.Random(seed)
    writers = _sample_writers()
    suffixes = list(FORMAT_WEIGHTS)
    weights = [FORMAT_WEIGHTS[s] for s in suffixes]
    root.mkdir(parents=True, exist_ok=True)
    info = CorpusInfo(root=root, entities=entities, documents=0, bytes=0)
    width = max(2, len(str(entities)))
    for e in range(entities):
        company = _COMPANIES[e % len(_COMPANIES)]
        entity_dir = root / f"entity-{e:0{width}d}"
        prose = _Prose(random.Random(rng.getrandbits(64)))
        for d in range(docs):
            suffix = rng.choices(suffixes, weights)[0]
            if suffix in (".docx", ".pdf") and writers is None:
                suffix = ".md"
            target = int(math.exp(rng.uniform(math.log(MIN_DOC_BYTES), math.log(MAX_DOC_BYTES))))
            title, items = prose.document(target, company)
            if suffix == ".md":
                data = _render_md(title, items)
            elif suffix == ".txt":
                data = _render_txt(title, items)
            elif suffix == ".html":
                data = _render_html(title, items)
            elif suffix == ".docx":
                data = _render_docx(title, items, writers)
            else:
                data = _render_pdf(title, items, writers)
            sub = _SUBDIRS[rng.randrange(len(_SUBDIRS))]
            path = entity_dir / sub / f"doc-{d:03d}-{_slug(title)}{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            info.documents += 1
            info.bytes += len(data)
            info.formats[suffix] = info.formats.get(suffix, 0) + 1
    return info


def _slug(text: str) -> str:
    words = "".join(c if c.isalnum() else " " for c in text.lower()).split()
    return "-".join(words[:5])


def describe_corpus(root: Path) -> CorpusInfo:
    from ragctl.discovery import discover_entities

    sources = discover_entities(root)
    info = CorpusInfo(root=root, entities=len(sources), documents=0, bytes=0)
    for source in sources:
        for f in source.list_files():
            info.documents += 1
            info.bytes += f.abs_path.stat().st_size
            suffix = f.abs_path.suffix.lower() or "(none)"
            info.formats[suffix] = info.formats.get(suffix, 0) + 1
    return info


# =============================================================================== store reading
def _open_storage(store: Path):  # -> JSONStorage
    from ragctl.storage.layout import open_store

    return open_store(store, create=False)


def store_snapshot(store: Path, texts: bool = False) -> dict[str, dict[str, Any]]:
    """{entity: {path: chunk_count}} (or {path: [chunk texts]} with texts=True)."""
    from ragctl.storage.layout import StoreLayout
    from ragctl.storage.entity import EntityStore
    from ragctl.storage.owners import vector_ids

    storage = _open_storage(store)
    out: dict[str, dict[str, Any]] = {}
    for entity_id in StoreLayout(store).entity_ids():
        entity = EntityStore(storage, entity_id)
        records = entity.records()
        if not texts:
            out[entity_id] = {r["path"]: int(r["chunk_count"]) for r in records.values()}
            continue
        rows = entity.texts.fetch([i for r in records.values() for i in vector_ids(r)])
        out[entity_id] = {r["path"]: [rows.get(i) for i in vector_ids(r)] for r in records.values()}
    return out


def compare_snapshots(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]], names: tuple[str, str] = ("sequential", "parallel")) -> list[str]:
    """Human-readable differences (empty when the stores agree)."""
    problems: list[str] = []
    for entity in sorted(set(a) | set(b)):
        if entity not in a or entity not in b:
            problems.append(f"entity {entity}: only in {names[0] if entity in a else names[1]}")
            continue
        da, db = a[entity], b[entity]
        for path in sorted(set(da) - set(db)):
            problems.append(f"{entity}/{path}: only in {names[0]}")
        for path in sorted(set(db) - set(da)):
            problems.append(f"{entity}/{path}: only in {names[1]}")
        for path in sorted(set(da) & set(db)):
            if da[path] != db[path]:
                what = "chunk counts" if isinstance(da[path], int) else "chunks"
                problems.append(f"{entity}/{path}: {what} differ ({_short(da[path])} vs {_short(db[path])})")
    return problems


def _short(value: Any) -> str:
    if isinstance(value, list):
        return f"{len(value)} chunks"
    return str(value)


def chunk_texts_in_order(store: Path, entities: list[str] | None = None) -> list[str]:
    """Every chunk text of the store, entity by entity in commit order (ids ascending)."""
    from ragctl.storage.layout import StoreLayout
    from ragctl.storage.entity import EntityStore
    from ragctl.storage.owners import referenced_ids

    storage = _open_storage(store)
    texts: list[str] = []
    for entity_id in entities or StoreLayout(store).entity_ids():
        entity = EntityStore(storage, entity_id)
        if not entity.texts.exists():
            continue
        keep = set(referenced_ids(entity.records().values()).tolist())
        with closing(sqlite3.connect(f"file:{entity.texts.path}?mode=ro", uri=True)) as conn:
            texts.extend(t for i, t in conn.execute("SELECT id, text FROM chunks ORDER BY id") if i in keep)
    return texts


# =============================================================================== timing
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
    precision: str = "auto"
    model: str | None = None
    seed: int = 0
    keep: Path | None = None
    embed_window: int | None = None  # None: IngestOptions' default
    batch_size: int = 32
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
        if not isinstance(event, (ev.FileDone, ev.ChunksEmbedded, ev.EntityDone, ev.EntityPlanned)):
            self.forward(event)


def run_bench(config: BenchConfig, on_event: ev.EventSink = ev.ignore, embedder: Any = None) -> BenchResult:
    """Generate (or take) a corpus, ingest it sequentially and in parallel, compare, time.

    `embedder`: an already loaded Embedder to reuse; else the process's shared one
    (`Embedder.shared`, loaded here if this process has none yet).
    Raises BenchMismatch when the two stores disagree, UsageError for bad options.
    """
    from ragctl.discovery import discover_entities
    from ragctl.embedding import Embedder, cpu_count, resolve_model
    from ragctl.pipeline import IngestOptions, Ingestor

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
        for name, path in stores.items():
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
            embedder = Embedder.shared(resolve_model(config.model), config.precision, "auto", config.batch_size)
            load_s = time.perf_counter() - t0
        on_event(ev.Phase("warming up the model"))
        warmup_s = warm_up(embedder)
        threads_before = _torch_threads()

        def ingest(kind: str, store: Path) -> tuple[Any, float | None]:
            options = IngestOptions(
                store=store, workers=workers, precision=embedder.precision, batch_size=config.batch_size,
                sequential=(kind == "sequential"), embed_window=window,
            )
            sink = _FirstEmbed(on_event)
            started = time.perf_counter()
            report = Ingestor(sources, options, sink, embedder=embedder).run()
            first = None if sink.first is None else sink.first - started
            return report, first

        runs: dict[str, list[float]] = {"sequential": [], "parallel": [], "model_limit": []}
        seq_report = par_report = None
        first_embed: float | None = None
        for attempt in range(config.repeat):
            suffix = "" if attempt == 0 else f"-{attempt}"
            if not config.skip_sequential:
                on_event(ev.Phase(f"sequential run{_nth(attempt, config.repeat)}: one document at a time"))
                report, _ = ingest("sequential", Path(f"{stores['sequential']}{suffix}"))
                runs["sequential"].append(report.seconds)
                if seq_report is None or report.seconds < seq_report.seconds:
                    seq_report = report
            on_event(ev.Phase(f"parallel run{_nth(attempt, config.repeat)}: {workers} worker(s)"))
            report, first = ingest("parallel", Path(f"{stores['parallel']}{suffix}"))
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
