"""Hostile trees (generated at test time): memory bounded per file, limits with reasons,
parse time-outs, files that change under the run, and no process outliving a killed ingest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from pathlib import Path

import psutil
import pytest
from helpers import make_tree

from tests.test_engine import FAULTS, cli, paragraphs, verify_ok

GB = 1 << 30


def zip_bomb_docx(path: Path, inflated_mb: int) -> None:
    """A valid .docx whose word/document.xml inflates to `inflated_mb` MB (compresses ~1000:1)."""
    para = "<w:p><w:r><w:t>" + "lorem ipsum dolor sit amet " * 40 + "</w:t></w:r></w:p>"
    body = para * (inflated_mb * (1 << 20) // len(para))
    xml = ('<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="http://schemas.openxmlformats.org/'
           f'wordprocessingml/2006/main"><w:body>{body}</w:body></w:document>')
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>')
        z.writestr("word/document.xml", xml)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_hostile_tree_ends_on_its_own_with_every_reason(tmp_path):
    root = tmp_path / "docs"
    make_tree(root, {"e/normal.md": paragraphs("normal"), "e/notes/other.txt": paragraphs("other")})
    with open(root / "e" / "sparse.txt", "wb") as fh:  # 4 GB, no blocks on disk
        fh.truncate(4 * GB)
    zip_bomb_docx(root / "e" / "bomb.docx", inflated_mb=80)
    with open(root / "e" / "oneline.txt", "w") as fh:  # 50 MB on one line
        fh.write("word " * (10 << 20))
    deep = root / "e"
    for _i in range(300):
        deep = deep / "d"
    deep.mkdir(parents=True)
    (deep / "deep.md").write_text(paragraphs("deep"))
    os.mkfifo(root / "e" / "pipe.txt")
    os.symlink(root / "e", root / "e" / "loop")
    (root / "e" / "stuck.hang").write_text("x")
    store = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(FAULTS), "RAGCTL_FAULTS": "1"}
    cmd = [sys.executable, "-m", "ragctl", "ingest", str(root), "--store", str(store), "--json", "--quiet",
           "--workers", "2", "--parse-timeout", "10"]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = 0
    ps = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            procs = [ps, *ps.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in procs))
        except psutil.Error:
            pass
        time.sleep(0.2)
    out, err = proc.communicate()
    took = time.monotonic() - started
    assert proc.returncode == 1, err
    assert "Traceback" not in err, err
    report = json.loads(out)
    skipped = {s["path"]: s["reason"] for s in report["skipped_files"]}
    failed = {f["path"]: f["error"] for f in report["failures"]}
    assert "over the 200.0 MB limit per file (raise it with --max-file-mb)" in skipped["sparse.txt"]
    assert "limit for zip-based documents" in skipped["bomb.docx"] and "--max-text-mb" in skipped["bomb.docx"]
    assert "limit of text per file (raise it with --max-text-mb)" in skipped["oneline.txt"]
    assert failed == {"stuck.hang": "parse timed out after 10 s"}
    ent = report["entities"]["e"]
    assert ent["indexed"] == 3  # normal.md, notes/other.txt, the 300-level deep.md
    assert took < 300
    # all processes of the run together: the model, two parse workers (target < 2 GB)
    assert peak < 2 * GB, f"peak RSS {peak / 2**20:.0f} MB"
    print(f"hostile tree: {took:.1f} s, peak RSS of the run {peak / 2**20:.0f} MB")
    verify_ok(store)


def test_a_file_that_grows_while_it_is_read_is_indexed_as_read(tmp_path):
    """A live log: the record's hash is the hash of exactly the bytes that were read, and its
    mtime is left unknown so the next run hashes the file again."""
    import hashlib

    from ragctl.ingest.options import Limits
    from ragctl.ingest.parse import read_snapshot

    log = tmp_path / "live.log"
    log.write_text("start\n" * 2_000_000)  # 12 MB: the read takes long enough to see it grow
    stop = threading.Event()

    def writer() -> None:
        with open(log, "a") as fh:
            while not stop.is_set():  # a busy log: ~30 MB/s at most
                fh.write("more log line\n" * 2000)
                fh.flush()
                time.sleep(0.001)

    t = threading.Thread(target=writer)
    t.start()
    try:
        data, size, mtime_ns = read_snapshot(str(log), Limits().max_file_bytes)
    finally:
        stop.set()
        t.join()
    assert size == len(data) and data.startswith(b"start\n")
    # 0 (still changing after two reads), or the stat of a read that saw the file hold still:
    # the writer may have appended more afterwards, so never later than the file's final mtime
    assert mtime_ns == 0 or mtime_ns <= os.stat(log).st_mtime_ns
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(log.read_bytes()[: len(data)]).hexdigest()


def test_a_file_deleted_after_planning_is_skipped_with_the_reason(tmp_path):
    from ragctl.ingest.options import Limits
    from ragctl.ingest.parse import SKIPPED, parse_file
    from ragctl.ingest.plan import ParseTask

    task = ParseTask("e", "gone.md", str(tmp_path / "gone.md"), 10)
    out = parse_file(task, None, Limits())
    assert (out.status, out.error) == (SKIPPED, "file disappeared before it could be read")


def test_limits_are_options_with_reasons(tmp_path, embedder):
    root, store = tmp_path / "docs", tmp_path / "store"
    make_tree(root, {"e/small.md": paragraphs("small"), "e/big.txt": "x " * 600_000})
    result = cli("ingest", root, "--store", store, "--json", "--quiet", "--max-file-mb", "1")
    report = json.loads(result.stdout)
    assert result.exit_code == 0, result.output  # skipped, not failed
    assert report["skipped_files"] == [
        {"entity": "e", "path": "big.txt", "reason": "file is 1.1 MB, over the 1.0 MB limit per file (raise it with --max-file-mb)"}
    ]
    result = cli("ingest", root, "--store", store, "--json", "--quiet", "--max-text-mb", "0.5")
    assert "limit of text per file (raise it with --max-text-mb)" in json.loads(result.stdout)["skipped_files"][0]["reason"]


# ----------------------------------------------------------------------------- orphans
def run_processes(marker: str) -> list[psutil.Process]:
    """Every live process whose environment carries this run's marker."""
    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.environ().get("RAGCTL_TEST_RUN") == marker and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.Error:
            continue
    return found


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("delay", [0.3, 1.5, 3.0, 6.0, 12.0])
def test_kill_9_leaves_no_process_of_the_run_behind(tmp_path, delay):
    """kill -9 of the ingest at instants of start-up (imports, spawning workers, loading the
    model) and mid-run: 10 s later no process it started is alive."""
    root = tmp_path / "docs"
    make_tree(root, {f"e{e}/doc{i}.md": paragraphs(f"t{e}{i}", 8) for e in range(3) for i in range(30)})
    (root / "e0" / "stuck.hang").write_text("x")  # a worker busy in a "native" call when killed
    marker = uuid.uuid4().hex
    env = {**os.environ, "PYTHONPATH": str(FAULTS), "RAGCTL_FAULTS": "1", "RAGCTL_TEST_RUN": marker}
    cmd = [sys.executable, "-m", "ragctl", "ingest", str(root), "--store", str(tmp_path / "store"), "--quiet", "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    time.sleep(delay)
    seen = len(run_processes(marker))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    left = run_processes(marker)
    while left and time.monotonic() < deadline:
        time.sleep(0.25)
        left = run_processes(marker)
    for p in left:  # clean up before failing
        p.kill()
    assert not left, f"{len(left)} process(es) of the run survived it (of {seen} seen): {[p.cmdline()[:3] for p in left]}"
