"""`ragctl watch`: real file events on real trees, the real model, a real subprocess stopped with
SIGINT; and the change tracker's settling rules on real files with a controlled clock."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import RAGCTL, make_tree
from rich.console import Console

from ragctl import events as ev
from ragctl.cli.progress import ProgressRenderer
from ragctl.discovery import EntitySource
from ragctl.ingest import changes as changes_mod
from ragctl.ingest import watch as watch_mod
from ragctl.ingest.changes import ChangeTracker

QUIET_MS = 400  # the slow writer below pauses 20 ms: far below it, even on a loaded machine


# ---------------------------------------------------------------------------- a watch process
class WatchProcess:
    """`ragctl watch` in a subprocess; its stderr lines are collected as they come."""

    def __init__(self, root: Path, store: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*RAGCTL, "watch", str(root), "--store", str(store), "--json", "--debounce-ms", str(QUIET_MS), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for_line(self, text: str, timeout: float = 90.0, start: int = 0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, line in enumerate(self.lines[start:], start):
                if text in line:
                    return i
            assert self.proc.poll() is None, f"watch exited ({self.proc.returncode}):\n" + "\n".join(self.lines)
            time.sleep(0.05)
        raise AssertionError(f"no line with {text!r} within {timeout} s:\n" + "\n".join(self.lines))

    def interrupt(self, timeout: float = 60.0, signum: int = signal.SIGINT) -> tuple[int, dict[str, Any]]:
        self.proc.send_signal(signum)
        out, _ = self.proc.communicate(timeout=timeout)
        self._reader.join(5)
        return self.proc.returncode, json.loads(out)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture
def watch_process():
    started: list[WatchProcess] = []

    def start(root: Path, store: Path, *args: str) -> WatchProcess:
        started.append(WatchProcess(root, store, *args))
        return started[-1]

    yield start
    for process in started:
        process.kill()


def records(store: Path, entity_id: str) -> dict[str, dict[str, Any]]:
    """The entity's records by path, read as another process sees them."""
    from ragctl.storage import open_store
    from ragctl.storage.entity import EntityStore

    return {r["path"]: r for r in EntityStore(open_store(store, create=False), entity_id).records().values()}


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def doc(title: str) -> str:
    return f"# {title}\n\nA short note about {title}, written for the watch test.\n"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RAGCTL, *args], capture_output=True, text=True, timeout=120)


# ---------------------------------------------------------------------------- end to end
def test_watch_follows_edits_moves_deletes_and_stops_in_sync(tmp_path: Path, watch_process) -> None:
    root = make_tree(tmp_path / "root", {
        "docs/a.md": doc("apples"), "docs/b.md": doc("bananas"), "docs/c.md": doc("cherries"),
        "docs/dir/d1.md": doc("dates"), "docs/dir/d2.md": doc("durians"), "notes/n.md": doc("nectarines"),
    })
    store = tmp_path / "store"
    docs = root / "docs"
    w = watch_process(root, store, "--prune", "--workers", "1")
    w.wait_for_line("for changes")
    before = records(store, "docs")
    assert sorted(before) == ["a.md", "b.md", "c.md", "dir/d1.md", "dir/d2.md"]

    (docs / "new.md").write_text(doc("nuts"))  # create
    wait_until(lambda: "new.md" in records(store, "docs"), "new.md indexed")

    (docs / "a.md").write_text(doc("apples") + "Green ones too.\n")  # modify
    wait_until(lambda: records(store, "docs")["a.md"]["content_hash"] == sha256(doc("apples") + "Green ones too.\n"),
               "a.md updated")

    (docs / "b.md").rename(docs / "b2.md")  # rename: the same document under its new path
    wait_until(lambda: "b.md" not in records(store, "docs"), "b.md moved")
    assert records(store, "docs")["b2.md"]["doc_id"] == before["b.md"]["doc_id"]

    (docs / "c.md").unlink()  # delete: pruned
    wait_until(lambda: "c.md" not in records(store, "docs"), "c.md pruned")

    (docs / "dir").rename(docs / "moved")  # a directory rename: moves, even with --prune
    wait_until(lambda: "moved/d2.md" in records(store, "docs") and "dir/d1.md" not in records(store, "docs"),
               "dir/ moved")
    now = records(store, "docs")
    assert [now[f"moved/{n}"]["doc_id"] for n in ("d1.md", "d2.md")] == \
        [before[f"dir/{n}"]["doc_id"] for n in ("d1.md", "d2.md")]

    saved = doc("apples") + "Saved by rename.\n"  # an editor's save: write a temporary file, rename it over
    (docs / "a.md.tmp").write_text(saved)
    os.replace(docs / "a.md.tmp", docs / "a.md")
    wait_until(lambda: records(store, "docs")["a.md"]["content_hash"] == sha256(saved), "a.md saved by rename")
    assert records(store, "docs")["a.md"]["doc_id"] == before["a.md"]["doc_id"]
    assert "a.md.tmp" not in records(store, "docs")

    mark = len(w.lines)
    (docs / "copy.md").write_text(doc("nuts"))  # a copy of new.md: skipped
    w.wait_for_line("1 skipped", start=mark)

    pieces = [f"Line {i} of a file written slowly, a piece at a time.\n" for i in range(25)]
    slow = "".join(pieces)
    with open(docs / "slow.md", "w") as fh:  # written over ~0.5 s, never quiet for a whole quiet period
        for piece in pieces:
            fh.write(piece)
            fh.flush()
            time.sleep(0.02)
    wait_until(lambda: "slow.md" in records(store, "docs"), "slow.md indexed")
    assert records(store, "docs")["slow.md"]["content_hash"] == sha256(slow)  # whole, never a part

    make_tree(root, {"fresh/f.md": doc("figs")})  # a new entity directory under ROOT
    wait_until(lambda: "f.md" in records(store, "fresh"), "new entity indexed")

    time.sleep(QUIET_MS / 1000 * 2)  # nothing more changes; let a late event settle
    code, report = w.interrupt()
    assert code == 130 and report["interrupted"] is True
    counts = report["entities"]
    # every file indexed exactly once (slow.md too), each edit one update, three moves, one prune
    assert (counts["docs"]["indexed"], counts["docs"]["updated"], counts["docs"]["moved"]) == (7, 2, 3)
    assert (counts["docs"]["pruned"], counts["docs"]["skipped"], counts["docs"]["failed"]) == (1, 1, 0)
    assert counts["fresh"]["indexed"] == 1 and counts["notes"]["indexed"] == 1

    after = run_cli("ingest", str(root), "--store", str(store), "--json")
    assert after.returncode == 0, after.stderr
    for eid, row in json.loads(after.stdout)["entities"].items():
        assert (row["indexed"], row["updated"], row["moved"], row["stale"]) == (0, 0, 0, 0), (eid, row)
    verify = run_cli("verify", "--store", str(store))
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_burst_of_files_then_their_directory_renamed_is_indexed_once_and_moved(tmp_path: Path,
                                                                                   watch_process) -> None:
    root = make_tree(tmp_path / "root", {"docs/keep.md": doc("keep")})
    store = tmp_path / "store"
    w = watch_process(root, store, "--workers", "1")
    w.wait_for_line("for changes")
    burst = root / "docs" / "burst"
    burst.mkdir()
    for i in range(300):  # a checkout writing a few hundred files
        (burst / f"f{i:03}.md").write_text(f"# Item {i}\n\nThe burst file number {i}.\n")
    wait_until(lambda: len(records(store, "docs")) == 301, "the burst indexed", timeout=120)
    ids = {path: r["doc_id"] for path, r in records(store, "docs").items()}
    burst.rename(root / "docs" / "renamed")
    wait_until(lambda: "renamed/f299.md" in records(store, "docs") and "burst/f000.md" not in records(store, "docs"),
               "the directory moved", timeout=60)
    moved = records(store, "docs")
    assert len(moved) == 301
    assert all(moved[f"renamed/f{i:03}.md"]["doc_id"] == ids[f"burst/f{i:03}.md"] for i in range(300))
    time.sleep(QUIET_MS / 1000 * 2)
    code, report = w.interrupt(signum=signal.SIGTERM)  # systemd / docker stop: the same clean stop
    assert code == 143 and report["interrupted"] is True
    row = report["entities"]["docs"]
    assert (row["indexed"], row["updated"], row["moved"], row["failed"]) == (301, 0, 300, 0)


def test_watch_takes_the_options_of_ingest_and_refuses_ray(tmp_path: Path) -> None:
    ingest_help, watch_help = run_cli("ingest", "--help"), run_cli("watch", "--help")
    options = {word.rstrip(",") for word in ingest_help.stdout.split() if word.startswith("--")}
    assert options and options <= {word.rstrip(",") for word in watch_help.stdout.split()}
    assert "--debounce-ms" in watch_help.stdout
    make_tree(tmp_path / "root", {"docs/a.md": doc("a")})
    refused = run_cli("watch", str(tmp_path / "root"), "--store", str(tmp_path / "store"), "--ray", "local")
    assert refused.returncode == 2 and "--ray" in refused.stderr
    assert not (tmp_path / "store").exists()


# ---------------------------------------------------------------------------- the change tracker
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def tracker_for(root: Path, clock: Clock, quiet_s: float = 0.5, **kwargs: Any) -> ChangeTracker:
    sources = [EntitySource(p.name, p) for p in sorted(root.iterdir()) if p.is_dir()]
    return ChangeTracker(sources, quiet_s, clock=clock, wall_ns=lambda: int((clock.now + 1e6) * 1e9), **kwargs)


def set_mtime(path: Path, seconds: float) -> None:
    os.utime(path, ns=(int(seconds * 1e9), int(seconds * 1e9)))


def test_a_file_written_lately_waits_until_its_size_and_mtime_hold_still(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "root", {"docs/old.md": "old", "docs/busy.md": "part"})
    clock = Clock()
    wall = clock.now + 1e6  # the tracker's wall clock, in seconds
    set_mtime(root / "docs/old.md", wall - 60)
    set_mtime(root / "docs/busy.md", wall + 0.5)  # written just before the first look
    tracker = tracker_for(root, clock)
    tracker.add([str(root / "docs/old.md"), str(root / "docs/busy.md")])
    assert tracker.ready(set()) == []  # not quiet yet
    clock.now += 0.6
    [batch] = tracker.ready(set())
    assert [f.rel_path for f in batch.source.files or ()] == ["old.md"]
    (root / "docs/busy.md").write_text("part and the rest")  # it grew meanwhile (no event seen yet)
    set_mtime(root / "docs/busy.md", wall + 1.0)
    clock.now += 0.6
    assert tracker.ready(set()) == []  # its stat moved since the last look: another quiet period
    clock.now += 0.6
    [batch] = tracker.ready(set())
    assert [f.rel_path for f in batch.source.files or ()] == ["busy.md"]
    assert tracker.ready(set()) == []


def test_deletions_and_directories_become_the_scope_of_a_partial_plan(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "root", {"docs/new/x.md": "x", "docs/new/y/z.md": "z", "docs/.hidden.md": "h"})
    for path in (root / "docs/new/x.md", root / "docs/new/y/z.md"):
        set_mtime(path, 0)
    clock = Clock()
    store = root / "docs" / "store"
    tracker = tracker_for(root, clock, ignore=[store])
    tracker.add([str(root / "docs/new"), str(root / "docs/gone.md"), str(root / "docs/.hidden.md"),
                 str(store / "x.json")])
    clock.now += 1
    assert tracker.ready({"docs"}) == []  # busy: its unit is still in flight
    [batch] = tracker.ready(set())
    assert [f.rel_path for f in batch.source.files or ()] == ["new/x.md", "new/y/z.md"]
    assert set(batch.source.scope or ()) == {"gone.md", "new", "new/x.md", "new/y/z.md"}
    assert batch.changes == 2 and not batch.rescan


def test_a_file_that_never_stops_changing_does_not_hold_back_the_others(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "root", {"docs/log.md": "l", "docs/a.md": "a"})
    set_mtime(root / "docs/a.md", 0)
    clock = Clock()
    tracker = tracker_for(root, clock, quiet_s=0.5)
    tracker.add([str(root / "docs/a.md")])
    taken: list[str] = []
    while clock.now < 1000.0 + tracker.max_hold_s + 1:
        tracker.add([str(root / "docs/log.md")])  # an event every 0.1 s: the entity is never quiet
        set_mtime(root / "docs/log.md", clock.now + 1e6)
        for batch in tracker.ready(set()):
            taken += [f.rel_path for f in batch.source.files or ()]
        clock.now += 0.1
    assert taken == ["a.md"]


def test_new_entity_directories_and_lost_events_plan_whole_trees(tmp_path: Path, monkeypatch) -> None:
    root = make_tree(tmp_path / "root", {"docs/a.md": "a"})
    clock = Clock()
    tracker = tracker_for(root, clock, discover_root=root)
    make_tree(root, {"fresh/f.md": "f", ".private/p.md": "p", "bad name/b.md": "b"})
    tracker.add([str(root / "fresh/f.md"), str(root / ".private/p.md"), str(root / "bad name/b.md")])
    clock.now += 1
    [batch] = tracker.ready(set())
    assert batch.rescan and batch.source.entity_id == "fresh" and batch.source.files is None
    monkeypatch.setattr(changes_mod, "RESCAN_AFTER", 2)
    for name in ("x.md", "y.md"):
        (root / "docs" / name).write_text(name)
        set_mtime(root / "docs" / name, 0)
        tracker.add([str(root / "docs" / name)])
    clock.now += 1
    [batch] = tracker.ready(set())
    assert not batch.rescan and batch.changes == 2
    clock.now += 1
    [batch] = tracker.ready(set())  # a big batch: the whole tree once more, for any event lost
    assert batch.rescan and batch.source.entity_id == "docs"


def test_each_batch_starts_the_entity_line_from_zero() -> None:
    out = io.StringIO()
    renderer = ProgressRenderer(Console(file=out, force_terminal=False, width=100))
    renderer(ev.EntityPlanned("docs", 2))
    renderer(ev.FileDone("docs", "a.md", ev.Status.INDEXED, chunks=2))
    renderer(ev.FileDone("docs", "b.md", ev.Status.INDEXED, chunks=1))
    renderer(ev.EntityDone("docs"))
    renderer.restart_entity("docs")
    renderer(ev.EntityPlanned("docs", 1))
    renderer(ev.FileDone("docs", "a.md", ev.Status.UPDATED, chunks=2))
    renderer(ev.EntityDone("docs"))
    assert out.getvalue().splitlines() == [
        "docs: 2 files (2 indexed), 3 chunks",
        "docs: 1 files (1 updated), 2 chunks",
    ]


def test_the_cli_default_quiet_period_is_the_engines() -> None:
    from ragctl.cli import watch as watch_cli

    assert watch_cli.DEFAULT_DEBOUNCE_MS == watch_mod.DEFAULT_DEBOUNCE_MS
