"""The progress renderer: live bars on a terminal, plain lines in logs, 1 or 500 entities."""

from __future__ import annotations

import io
import re

from rich.console import Console

from ragctl import events as ev
from ragctl.cli.progress import MAX_VISIBLE_ENTITIES, ProgressRenderer, summary_table


def feed(renderer: ProgressRenderer, entities: int, files: int) -> None:
    for e in range(entities):
        renderer(ev.EntityPlanned(f"tenant-{e:03}", files))
    for e in range(entities):
        eid = f"tenant-{e:03}"
        for f in range(files):
            renderer(ev.FileDone(eid, f"doc{f}.md", "indexed", chunks=3))
            renderer(ev.ChunksEmbedded(3, 0.01))
        renderer(ev.EntityDone(eid))


def test_500_entities_on_a_terminal_show_only_active_bars():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    with ProgressRenderer(console) as renderer:
        peak = 0
        for e in range(500):
            eid = f"tenant-{e:03}"
            renderer(ev.EntityPlanned(eid, 2))
        for e in range(500):
            eid = f"tenant-{e:03}"
            renderer(ev.FileDone(eid, "a.md", "indexed", chunks=2))
            peak = max(peak, len(renderer.tasks))
            renderer(ev.FileDone(eid, "b.md", "failed", detail="corrupt PDF"))
            renderer(ev.EntityDone(eid))
        assert peak <= MAX_VISIBLE_ENTITIES
        assert renderer.tasks == {}  # finished entities collapsed into the overall bar
        overall = renderer.progress.tasks[0]
        assert overall.completed == 1000 and overall.total == 1000
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    assert "tenant-499: 2 files (1 failed, 1 indexed), 2 chunks" in text
    assert "failed tenant-000/b.md: corrupt PDF" in text


def test_not_a_terminal_prints_plain_lines_without_control_codes():
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=80)
    with ProgressRenderer(console) as renderer:
        feed(renderer, entities=1, files=3)
    text = out.getvalue()
    assert "\x1b[" not in text
    assert text.strip().splitlines() == ["tenant-000: 3 files (3 indexed), 9 chunks"]


def test_quiet_prints_nothing():
    out = io.StringIO()
    with ProgressRenderer(Console(file=out, force_terminal=True), quiet=True) as renderer:
        feed(renderer, entities=2, files=2)
    assert out.getvalue() == ""


def test_summary_table_hides_all_zero_columns_and_adds_totals():
    row = dict(files=2, indexed=2, updated=0, moved=0, unchanged=0, skipped=0, failed=0, pruned=0, stale=0, chunks=5)
    table = summary_table({"entities": {"a": row, "b": {**row, "failed": 1}}})
    headers = [c.header for c in table.columns]
    assert headers == ["entity", "files", "new", "failed", "chunks"]
    out = io.StringIO()
    Console(file=out, width=80).print(table)
    assert "total" in out.getvalue() and "10" in out.getvalue()
