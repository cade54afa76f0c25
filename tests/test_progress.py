"""The progress renderer: live bars on a terminal, plain lines in logs, 1 or 500 entities."""

from __future__ import annotations

import io
import re

import pytest
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
    assert "┃ entity" in out.getvalue()  # it fits: a table


def test_summary_never_cuts_a_count_on_a_narrow_console():
    """A log file or a narrow terminal (80 columns) with many non-zero columns: Rich would crop
    the numbers ("1…", "1234…"); the summary falls back to one line per entity instead."""
    row = dict(files=1234, indexed=12, updated=3, moved=1, unchanged=1200, skipped=2, failed=1, pruned=1,
               stale=4, chunks=123456)
    report = {"entities": {"acme-corp": row, "globex-international-holdings": {**row, "chunks": 12}}}
    for width in (80, 50):
        out = io.StringIO()
        Console(file=out, width=width).print(summary_table(report))
        text = " ".join(out.getvalue().split())  # undo the line wrapping
        assert "…" not in text and "┃" not in text
        assert "acme-corp: files 1234, new 12, updated 3, moved 1, unchanged 1200" in text
        assert "globex-international-holdings: files 1234" in text and "stale 4, chunks 12" in text
        assert "total: files 2468" in text and "chunks 123468" in text


# --------------------------------------------------------------------------- helpers
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def render_bars(renderer: ProgressRenderer) -> str:
    """The bars as a terminal of 120 columns would show them now (no live refresh thread)."""
    out = io.StringIO()
    Console(file=out, force_terminal=True, width=120).print(renderer.progress.get_renderable())
    return ANSI.sub("", out.getvalue())


# --------------------------------------------------------------------------- markup
def test_paths_and_messages_are_shown_as_they_are_never_as_markup():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    with ProgressRenderer(console) as renderer:
        renderer(ev.Phase("scanning /data/notes[/bad].pdf and [bold]x[/bold]"))
        renderer(ev.EntityPlanned("acme", 3, 300))
        renderer(ev.FileDone("acme", "report [final].txt", ev.Status.INDEXED, chunks=1, bytes=100))
        renderer(ev.FileDone("acme", "notes[/bad].pdf", ev.Status.FAILED, detail="cannot parse [/x] [red]", bytes=100))
        renderer(ev.DocumentParsed("acme", "dir[/x]/a [b].md", 2, 100))
        bars = render_bars(renderer)
        renderer(ev.FileDone("acme", "dir[/x]/a [b].md", ev.Status.INDEXED, chunks=2, bytes=100))
        renderer(ev.EntityDone("acme"))
    text = ANSI.sub("", out.getvalue())
    assert "scanning /data/notes[/bad].pdf and [bold]x[/bold]" in text
    assert "failed acme/notes[/bad].pdf: cannot parse [/x] [red]" in text
    assert "acme: 3 files (1 failed, 2 indexed), 3 chunks" in text
    assert "acme" in bars and "2/3 files" in bars


def test_plain_lines_show_markup_characters_verbatim():
    out = io.StringIO()
    with ProgressRenderer(Console(file=out, force_terminal=False, width=120)) as renderer:
        renderer(ev.FileDone("e", "report [final].txt", ev.Status.FAILED, detail="[/x]"))
        renderer(ev.EntityDone("e"))
    assert out.getvalue().splitlines() == ["failed e/report [final].txt: [/x]", "e: 1 files (1 failed), 0 chunks"]


# --------------------------------------------------------------------------- moving with the work
def test_one_big_file_progresses_with_embedded_chunks_and_bytes_eta():
    clock = FakeClock()
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    big, chunks = 5_000_000, 4000
    with ProgressRenderer(console, clock=clock) as renderer:
        renderer(ev.EntityPlanned("big", files=2, bytes=big + 100_000))
        renderer(ev.FileDone("big", "small.txt", ev.Status.INDEXED, chunks=10, bytes=100_000))
        renderer(ev.DocumentParsed("big", "huge.txt", chunks, big))
        task = renderer.progress.tasks[renderer.tasks["big"]]
        seen = [task.completed]
        for _ in range(10):  # 10 encode calls of 256 chunks, 4 s each
            clock.now += 4.0
            renderer(ev.ChunksEmbedded(256, 4.0, per_entity=(("big", 256),)))
            seen.append(task.completed)
        assert all(b > a for a, b in zip(seen, seen[1:]))  # the bar moves on every encode call
        expected = 100_000 + big * 2560 / chunks
        assert task.completed == pytest.approx(expected)
        bars = render_bars(renderer)
        # 3.3 of 5.1 million bytes done, 3.2 MB of it in the last 40 s (bytes, not files): ~22 s left
        assert "1/2 files" in bars and "3.1 MB/4.9 MB" in bars and "2560 chunks" in bars
        (line,) = [ln for ln in bars.splitlines() if ln.startswith("big ")]
        eta = re.search(r"ETA (\d+):(\d\d):(\d\d)", line)
        assert eta, bars
        seconds = int(eta[1]) * 3600 + int(eta[2]) * 60 + int(eta[3])
        assert 21 <= seconds <= 23
        overall = renderer.progress.tasks[0]
        assert overall.description == "all entities" and overall.completed == pytest.approx(expected)
        renderer(ev.FileDone("big", "huge.txt", ev.Status.INDEXED, chunks=chunks, bytes=big))
        assert task.completed == task.total == big + 100_000
        renderer(ev.EntityDone("big"))
        assert renderer.tasks == {}


def test_totals_arriving_after_the_first_files_are_done():
    clock = FakeClock()
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    with ProgressRenderer(console, clock=clock) as renderer:
        for i in range(3):
            clock.now += 1
            renderer(ev.FileDone("late", f"f{i}.md", ev.Status.INDEXED, chunks=1, bytes=1000))
        bars = render_bars(renderer)
        assert "3/? files" in bars and "2.9 KB/?" in bars  # no total yet: shown as unknown
        task = renderer.progress.tasks[renderer.tasks["late"]]
        assert task.total is None and task.completed == 3000
        renderer(ev.EntityPlanned("late", files=10, bytes=10_000))  # the counting pass catches up
        assert task.total == 10_000 and renderer.progress.tasks[0].total == 10_000
        assert "3/10 files" in render_bars(renderer)
        # an entity finished before its totals arrived: the late totals do not bring its bar back
        renderer(ev.FileDone("quick", "a.md", ev.Status.UNCHANGED, bytes=10))
        renderer(ev.EntityDone("quick"))
        renderer(ev.EntityPlanned("quick", files=1, bytes=10))
        assert "quick" not in renderer.tasks
        assert renderer.progress.tasks[0].total == 10_010


def test_without_sizes_bars_count_files_and_embedded_share_of_a_file():
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    with ProgressRenderer(console, clock=FakeClock()) as renderer:
        renderer(ev.EntityPlanned("e", files=2))
        renderer(ev.DocumentParsed("e", "a.md", 100))
        renderer(ev.ChunksEmbedded(50, 1.0, per_entity=(("e", 50),)))
        task = renderer.progress.tasks[renderer.tasks["e"]]
        assert task.total == 2 and task.completed == pytest.approx(0.5)
        renderer(ev.FileDone("e", "a.md", ev.Status.INDEXED, chunks=100))
        assert task.completed == 1
