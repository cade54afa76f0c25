"""Renders the core's event stream with rich: a bar per active entity plus an overall bar.

On a terminal: live bars that move with the work, not only with finished files. A bar's unit
is the byte (files when no sizes are known): a finished file counts its bytes; a parsed file
whose chunks are being embedded counts the embedded share of its bytes (ChunksEmbedded's
per-entity counts), so one 5 MB file with thousands of chunks visibly progresses. The ETA is
computed here from bytes per second over the last minute (rich's own estimate restarts whenever
a total changes, and totals arrive late: the counting pass runs beside the work, so an entity's
EntityPlanned may come after its first files are done; until then its total shows as `?`).

Finished entities collapse into the overall bar, and at most MAX_VISIBLE_ENTITIES bars are
shown, so 500 entities stay readable. Not a terminal (CI logs, pipes): one plain line per
finished entity and per failed file, no control codes. Every piece of user data (paths, error
messages, entity ids) is shown as plain text, never interpreted as rich markup.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ragctl import events as ev
from ragctl.ingest.plan import human_bytes as _size

MAX_VISIBLE_ENTITIES = 12
ETA_WINDOW_S = 60.0  # the ETA uses the speed over this many seconds


@dataclass
class _EntityState:
    planned_files: int | None = None
    planned_bytes: int | None = None
    files: int = 0  # FileDone events
    bytes: int = 0  # bytes of done files
    chunks: int = 0  # chunks of done files (the entity's line at the end)
    embedded: int = 0  # chunks embedded for this entity (ChunksEmbedded.per_entity)
    pending: dict[str, tuple[int, int]] = field(default_factory=dict)  # parsed, not done: path -> (chunks, bytes)
    embedded_pending: int = 0  # embedded chunks of the pending documents
    counts: dict[str, int] = field(default_factory=dict)
    finished: bool = False

    def total(self, by_bytes: bool) -> float | None:
        return self.planned_bytes if by_bytes else self.planned_files  # None until planned

    def completed(self, by_bytes: bool) -> float:
        """Done files plus the embedded share of the files being embedded, in the bar's unit."""
        done = float(self.bytes if by_bytes else self.files)
        if not self.pending:
            return done
        pending_chunks = sum(c for c, _ in self.pending.values())
        pending_weight = sum(b for _, b in self.pending.values()) if by_bytes else len(self.pending)
        share = min(1.0, self.embedded_pending / pending_chunks) if pending_chunks else 0.0
        return done + pending_weight * share


class _Speed:
    """Units per second over the last ETA_WINDOW_S seconds (our own samples, see the module doc)."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, float]] = deque()

    def add(self, now: float, completed: float) -> None:
        if self.samples and self.samples[-1][1] == completed:
            return
        self.samples.append((now, completed))
        while len(self.samples) > 2 and self.samples[1][0] < now - ETA_WINDOW_S:
            self.samples.popleft()

    def eta(self, now: float, completed: float, total: float | None) -> str:
        if total is None or len(self.samples) < 2:
            return "-:--:--"
        (t0, c0), (t1, c1) = self.samples[0], self.samples[-1]
        if t1 <= t0 or c1 <= c0:
            return "-:--:--"
        seconds = int(max(0.0, total - completed) / ((c1 - c0) / (t1 - t0)))
        minutes, secs = divmod(seconds, 60)
        hours, minutes = divmod(minutes, 60)
        return f"{hours}:{minutes:02d}:{secs:02d}"


class ProgressRenderer:
    """An EventSink (thread-safe) that draws progress on `console` (normally stderr)."""

    def __init__(self, console: Console, quiet: bool = False, clock: Callable[[], float] = time.monotonic) -> None:
        self.console = console
        self.quiet = quiet
        self.live = console.is_terminal and not quiet
        self.clock = clock
        self._lock = threading.Lock()
        self.entities: dict[str, _EntityState] = {}
        self.tasks: dict[str, TaskID] = {}
        self.speeds: dict[str, _Speed] = {}
        self.by_bytes = False  # the bars' unit: bytes once any size is known, else files
        self.started = clock()
        self.embedded = 0
        # running sums over all entities (so an event costs O(entities it touches), not O(all))
        self._completed: dict[str, float] = {}
        self._total: dict[str, float] = {}
        self._sum_completed = 0.0
        self._sum_total = 0.0  # planned totals, or what is done where the total is not known yet
        self._any_planned = False
        self._files = self._planned_files = self._done_chunks = self._embedded_per_entity = 0
        self.progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(bar_width=24),
            TextColumn("{task.fields[files]}", markup=False),
            TextColumn("{task.fields[size]}", markup=False),
            TextColumn("{task.fields[chunks]:>7} chunks", markup=False),
            TextColumn("{task.fields[rate]}", markup=False),
            TimeElapsedColumn(),
            TextColumn("ETA {task.fields[eta]}", markup=False),
            console=console,
            transient=False,
            refresh_per_second=8,
            get_time=clock,
        )
        self.overall: TaskID | None = None
        self._overall_speed = _Speed()

    def __enter__(self) -> ProgressRenderer:
        if self.live:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.progress.stop()

    def __call__(self, event: ev.Event) -> None:
        if self.quiet:
            return
        with self._lock:
            self._handle(event)

    def restart_entity(self, entity_id: str) -> None:
        """A new round of work for an entity (`ragctl watch`: each batch of changes): its bar and
        its line at the end start from zero; the overall bar keeps counting."""
        with self._lock:
            if entity_id not in self.entities:
                return
            self.entities[entity_id] = _EntityState()
            self._completed.pop(entity_id, None)  # the sums keep what the earlier rounds did
            self._total.pop(entity_id, None)
            if self.live and entity_id in self.tasks:
                self.progress.remove_task(self.tasks.pop(entity_id))
                self.speeds.pop(entity_id, None)

    # ----------------------------------------------------------------------------- events
    def _entity(self, entity_id: str) -> _EntityState:
        state = self.entities.get(entity_id)
        if state is None:
            state = self.entities[entity_id] = _EntityState()
        return state

    def _handle(self, event: ev.Event) -> None:
        touched: list[str] = []
        if isinstance(event, ev.Phase):
            self.console.print(Text(event.message, style="dim"), soft_wrap=True)
            return
        if isinstance(event, ev.EntityPlanned):
            state = self._entity(event.entity_id)
            self._planned_files += event.files - (state.planned_files or 0)
            state.planned_files, state.planned_bytes = event.files, event.bytes
            self._use_bytes(event.bytes > 0)
            touched.append(event.entity_id)
        elif isinstance(event, ev.DocumentParsed):
            state = self._entity(event.entity_id)
            state.pending[event.path] = (event.chunks, event.bytes)
            self._use_bytes(event.bytes > 0)
            touched.append(event.entity_id)
        elif isinstance(event, ev.ChunksEmbedded):
            self.embedded += event.count
            for entity_id, n in event.per_entity:
                state = self._entity(entity_id)
                state.embedded += n
                state.embedded_pending += n
                self._embedded_per_entity += n
                touched.append(entity_id)
            if not event.per_entity and self.live and self.overall is not None and self.entities:
                self._refresh_overall()  # the rate moved
        elif isinstance(event, ev.FileDone):
            self._file_done(event)
            touched.append(event.entity_id)
        elif isinstance(event, ev.EntityDone):
            self._entity_done(event.entity_id)
            touched.append(event.entity_id)
        self._update(touched)

    def _use_bytes(self, sized: bool) -> None:
        if sized and not self.by_bytes:
            self.by_bytes = True  # switch the unit once; every cached sum is recomputed
            self._completed.clear()
            self._total.clear()
            self._sum_completed = self._sum_total = 0.0
            self._update(list(self.entities))

    def _file_done(self, event: ev.FileDone) -> None:
        eid = event.entity_id
        state = self._entity(eid)
        parsed = state.pending.pop(event.path, None)
        chunks = parsed[0] if parsed is not None else event.chunks
        state.embedded_pending = max(0, state.embedded_pending - chunks)
        state.files += 1
        state.bytes += max(event.bytes, parsed[1] if parsed is not None else 0)
        state.chunks += event.chunks
        self._files += 1
        self._done_chunks += event.chunks
        status = str(event.status)
        state.counts[status] = state.counts.get(status, 0) + 1
        if event.bytes > 0:
            self._use_bytes(True)
        if status == str(ev.Status.FAILED):
            line = Text()
            line.append("failed", style="red")
            line.append(f" {eid}/{event.path}: {event.detail}")
            self.console.print(line, soft_wrap=True)

    def _entity_done(self, eid: str) -> None:
        state = self._entity(eid)
        state.finished = True
        state.pending.clear()
        state.embedded_pending = 0
        if self.live and eid in self.tasks:
            self.progress.remove_task(self.tasks.pop(eid))  # collapse into the overall bar
            self.speeds.pop(eid, None)
        counts = ", ".join(f"{n} {s}" for s, n in sorted(state.counts.items()))
        files = max(state.files, state.planned_files or 0)
        line = f"{eid}: {files} files ({counts or 'nothing to do'}), {state.chunks} chunks"
        self.console.print(Text(line), soft_wrap=True)

    # ----------------------------------------------------------------------------- bars
    def _update(self, entity_ids: list[str]) -> None:
        if self.live and entity_ids and self.overall is None:  # the overall bar comes first
            self.overall = self.progress.add_task(
                "all entities", total=None, files="", size="", chunks="0", rate="", eta="-:--:--"
            )
        for eid in dict.fromkeys(entity_ids):
            state = self.entities[eid]
            completed = state.completed(self.by_bytes)
            total = state.total(self.by_bytes)
            old_completed = self._completed.get(eid, 0.0)
            old_total = self._total.get(eid, old_completed)
            self._sum_completed += completed - old_completed
            self._completed[eid] = completed
            new_total = total if total is not None else completed
            self._sum_total += new_total - old_total
            self._total[eid] = new_total
            self._any_planned = self._any_planned or total is not None
            if self.live and not state.finished:
                self._refresh_entity(eid, state, completed, total)
        if self.live and entity_ids:
            self._refresh_overall()

    def _fields(self, files: int, planned_files: int | None, done_bytes: float, total: float | None, chunks: int) -> dict[str, Any]:
        files_text = f"{files}/{planned_files if planned_files is not None else '?'} files"
        if self.by_bytes:
            size = f"{_size(done_bytes)}/{_size(total) if total is not None else '?'}"
        else:
            size = ""
        return {"files": files_text, "size": size, "chunks": str(chunks)}

    def _refresh_entity(self, eid: str, state: _EntityState, completed: float, total: float | None) -> None:
        if eid not in self.tasks:
            if len(self.tasks) >= MAX_VISIBLE_ENTITIES:
                return  # shown when a bar frees up
            self.tasks[eid] = self.progress.add_task(
                eid, total=None, files="", size="", chunks="0", rate="", eta="-:--:--"
            )
            self.speeds[eid] = _Speed()
        now = self.clock()
        speed = self.speeds[eid]
        speed.add(now, completed)
        shown_total = None if total is None else max(total, completed)
        task = self.tasks[eid]
        fields = self._fields(state.files, state.planned_files, completed, total, max(state.embedded, state.chunks))
        self.progress.update(task, completed=completed, eta=speed.eta(now, completed, shown_total), rate="", **fields)
        if shown_total is not None:
            self.progress.update(task, total=shown_total)

    def _refresh_overall(self) -> None:
        now = self.clock()
        completed = self._sum_completed
        total = max(self._sum_total, completed) if self._any_planned else None
        planned = self._planned_files if self._any_planned else None
        files, chunks = self._files, max(self._embedded_per_entity, self._done_chunks)
        elapsed = max(now - self.started, 1e-6)
        fields = self._fields(files, planned, completed, total, chunks)
        self._overall_speed.add(now, completed)
        eta = self._overall_speed.eta(now, completed, total)
        rate = f"{self.embedded / elapsed:6.1f} chunks/s"
        assert self.overall is not None
        self.progress.update(self.overall, completed=completed, rate=rate, eta=eta, **fields)
        if total is not None:
            self.progress.update(self.overall, total=total)


class IngestSummary:
    """The per-entity counts: a table where it fits the console; where it does not (a narrow
    terminal, a log file at 80 columns, many non-zero columns), one line per entity instead, so
    that no count is ever cut or folded."""

    def __init__(self, title: str, table: Table, lines: list[Text]) -> None:
        self.title, self.table, self.lines = title, table, lines

    @property
    def columns(self) -> list[Any]:
        return self.table.columns

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        natural = Measurement.get(console, options.update(max_width=1 << 16), self.table).maximum
        if natural <= options.max_width:
            yield self.table
            return
        yield Text(self.title, style="italic")
        yield from self.lines


def summary_table(report_json: dict) -> IngestSummary:
    """Per-entity counts; columns that are zero everywhere are left out."""
    columns = [
        ("files", "files"), ("indexed", "new"), ("updated", "updated"), ("moved", "moved"),
        ("unchanged", "unchanged"), ("skipped", "skipped"), ("failed", "failed"),
        ("pruned", "pruned"), ("stale", "stale"), ("chunks", "chunks"), ("ocr_pages", "OCR pages"),
    ]
    rows = report_json["entities"]
    always = {"files", "indexed", "chunks"}
    shown = [(k, h) for k, h in columns if k in always or any(r.get(k, 0) for r in rows.values())]
    title = "Dry run: what ingest would do" if report_json.get("dry_run") else "Ingest summary"
    table = Table(title=title)
    table.add_column("entity", overflow="fold", min_width=8)
    for _, header in shown:
        table.add_column(header, justify="right", no_wrap=True)
    totals = {k: sum(row.get(k, 0) for row in rows.values()) for k, _ in shown}
    named = [(eid, row) for eid, row in rows.items()] + ([("total", totals)] if len(rows) > 1 else [])
    lines = []
    for eid, row in named:
        counts = ", ".join(f"{header} {row.get(k, 0)}" for k, header in shown)
        table.add_row(Text(eid), *(str(row.get(k, 0)) for k, _ in shown), style="bold" if row is totals else None)
        lines.append(Text(f"{eid}: {counts}", style="bold" if row is totals else ""))
    return IngestSummary(title, table, lines)


__all__ = ["MAX_VISIBLE_ENTITIES", "ProgressRenderer", "summary_table"]
