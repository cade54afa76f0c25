"""The baseline `ragctl bench` measures the engine against: the original design, one document
at a time (plan -> parse -> chunk -> embed -> commit, then the next file), in this thread.

It is built here from the engine's own stage functions (`EntityPlan`, `parse_file`, `route`,
`commit_documents`, `finish_entity`, `Reporter`), so both runs do the same work per document
and must build the same store; only the scheduling differs. It is not an engine option: the
engine has one way to run.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ragctl import events as ev
from ragctl.discovery import EntitySource


def ingest_sequential(
    sources: list[EntitySource], store: Path, embedder: Any, on_event: ev.EventSink = ev.ignore,
) -> Any:  # -> ragctl.ingest.report.IngestReport
    """Ingest `sources` into `store` one document at a time with `embedder`; the report."""
    from ragctl.ingest import messages as msg
    from ragctl.ingest.commit import commit_documents, finish_entity
    from ragctl.ingest.embed import prepared_doc, route
    from ragctl.ingest.options import IngestOptions, RunContext
    from ragctl.ingest.parse import make_chunker, parse_file
    from ragctl.ingest.plan import VERDICT_STATUS, EntityPlan, Verdict, source_files
    from ragctl.ingest.report import Reporter
    from ragctl.model_config import embedded_by
    from ragctl.storage import open_store
    from ragctl.storage.entity import EntityStore

    started = time.perf_counter()
    options = IngestOptions(store=store, workers=1)
    spec = embedder.spec
    ctx = RunContext(options, spec, spec.identity(), open_store(store, create=True, sharding=None), 1)
    reporter = Reporter(on_event)
    report = reporter.report
    report.model = {"name": spec.name, "dim": spec.dim, "max_tokens": spec.max_tokens}
    report.parse_workers = 1
    reporter.model_info(embedder.describe())
    runtime = embedded_by(embedder.describe())
    chunker = make_chunker(str(spec.path), spec.max_tokens)

    for source in sources:
        eid = source.entity_id
        entity = EntityStore(ctx.storage, eid)
        entity.check_model(ctx.identity)
        plan = EntityPlan(source, entity.records(), options.rehash, options.limits)
        reporter.entity_started(eid)
        files = 0
        for f in source_files(source):
            files += 1
            verdict, payload = plan.classify(f)
            if verdict is not Verdict.PARSE:
                detail, size = payload
                reporter.file_done(eid, f.rel_path, VERDICT_STATUS[verdict], 0, detail, size)
                continue
            outcome = parse_file(payload, chunker, options.limits)
            settled = route(outcome, plan, dry_run=False)
            if isinstance(settled, msg.Outcome):
                reporter.file_done(eid, settled.path, settled.status, 0, settled.detail, settled.size)
            elif isinstance(settled, msg.Change):
                commit_documents(entity, ctx, reporter, changes=[settled])
            else:  # new content (`settled`: the doc_ids it is not a copy of): embed it alone, commit it alone
                reporter.parsed(outcome)
                t0 = time.perf_counter()
                vectors = embedder.encode([outcome.embed_text(i) for i in range(len(outcome.chunks))])
                reporter.embedded(len(outcome.chunks), time.perf_counter() - t0, {eid: len(outcome.chunks)})
                doc = prepared_doc(outcome, vectors,
                                   frozenset(settled) if isinstance(settled, frozenset) else frozenset())
                commit_documents(entity, ctx, reporter, adds=[msg.Embedded(eid, doc, runtime)])
        reporter.entity_files(eid, files)
        finish_entity(entity, plan.gone(), ctx, reporter)
    report.seconds = time.perf_counter() - started
    return report
