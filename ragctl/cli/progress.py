"""Renders the core's event stream with rich: a bar per active entity plus an overall bar.

On a terminal: live bars (files done/total, chunks, rate, ETA); finished entities collapse into
the overall bar so 500 entities stay readable. Not a terminal (CI logs, pipes): one plain line
per finished entity, no control codes.
"""

from __future__ import annotations

import threading
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from ragctl import events as ev

MAX_VISIBLE_ENTITIES = 12


class ProgressRenderer:
    def __init__(self, console: Console, quiet: bool = False) -> None:
        self.console = console
        self.quiet = quiet
        self.live = console.is_terminal and not quiet
        self._lock = threading.Lock()
        self.totals: dict[str, int] = {}
        self.done: dict[str, int] = {}
        self.chunks: dict[str, int] = {}
        self.counts: dict[str, dict[str, int]] = {}
        self.tasks: dict[str, TaskID] = {}
        self.started = time.monotonic()
        self.embedded = 0
        self.progress = Progress(
            TextColumn("{task.description}", justify="left"),
            BarColumn(bar_width=28),
            MofNCompleteColumn(),
            TextColumn("files"),
            TextColumn("{task.fields[chunks]:>6} chunks"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
            refresh_per_second=8,
        )
        self.overall: TaskID | None = None

    def __enter__(self) -> ProgressRenderer:
        if self.live:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.progress.stop()

    def _rate(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        return f"{self.embedded / elapsed:6.1f} chunks/s"

    def __call__(self, event: ev.Event) -> None:
        if self.quiet:
            return
        with self._lock:
            self._handle(event)

    def _handle(self, event: ev.Event) -> None:
        if isinstance(event, ev.Phase):
            self.console.print(f"[dim]{event.message}[/]", markup=True)
        elif isinstance(event, ev.EntityPlanned):
            self.totals[event.entity_id] = event.files
            self.done[event.entity_id] = 0
            self.chunks[event.entity_id] = 0
            self.counts[event.entity_id] = {}
            if self.live:
                total = sum(self.totals.values())
                if self.overall is None:
                    self.overall = self.progress.add_task("[bold]all entities", total=total, chunks=0, rate="")
                else:
                    self.progress.update(self.overall, total=total)
        elif isinstance(event, ev.FileDone):
            eid = event.entity_id
            self.done[eid] = self.done.get(eid, 0) + 1
            self.chunks[eid] = self.chunks.get(eid, 0) + event.chunks
            counts = self.counts.setdefault(eid, {})
            counts[event.status] = counts.get(event.status, 0) + 1
            if event.status == "failed":
                self.console.print(f"[red]failed[/] {eid}/{event.path}: {event.detail}", markup=True, soft_wrap=True)
            if self.live:
                if eid not in self.tasks and len(self.tasks) < MAX_VISIBLE_ENTITIES:
                    self.tasks[eid] = self.progress.add_task(eid, total=self.totals.get(eid, 0), chunks=0, rate="")
                if eid in self.tasks:
                    self.progress.update(self.tasks[eid], completed=self.done[eid], chunks=self.chunks[eid])
                if self.overall is not None:
                    self.progress.update(
                        self.overall, advance=1, chunks=sum(self.chunks.values()), rate=self._rate()
                    )
        elif isinstance(event, ev.ChunksEmbedded):
            self.embedded += event.count
        elif isinstance(event, ev.EntityDone):
            eid = event.entity_id
            if self.live and eid in self.tasks:
                self.progress.remove_task(self.tasks.pop(eid))  # collapse into the overall bar
            counts = ", ".join(f"{n} {s}" for s, n in sorted(self.counts.get(eid, {}).items()))
            line = f"{eid}: {self.totals.get(eid, 0)} files ({counts or 'nothing to do'}), {self.chunks.get(eid, 0)} chunks"
            self.console.print(line, markup=False, highlight=False)


def summary_table(report_json: dict) -> Table:
    """Per-entity counts; columns that are zero everywhere are left out to fit 80 columns."""
    columns = [
        ("files", "files"), ("indexed", "new"), ("updated", "updated"), ("moved", "moved"),
        ("unchanged", "unchanged"), ("skipped", "skipped"), ("failed", "failed"),
        ("pruned", "pruned"), ("stale", "stale"), ("chunks", "chunks"),
    ]
    rows = report_json["entities"]
    always = {"files", "indexed", "chunks"}
    shown = [(k, h) for k, h in columns if k in always or any(r[k] for r in rows.values())]
    title = "Dry run: what ingest would do" if report_json.get("dry_run") else "Ingest summary"
    table = Table(title=title)
    table.add_column("entity", overflow="fold", min_width=8)
    for _, header in shown:
        table.add_column(header, justify="right", no_wrap=True)
    totals = {k: 0 for k, _ in shown}
    for eid, row in rows.items():
        table.add_row(eid, *(str(row[k]) for k, _ in shown))
        for k, _ in shown:
            totals[k] += row[k]
    if len(rows) > 1:
        table.add_row("total", *(str(totals[k]) for k, _ in shown), style="bold")
    return table
