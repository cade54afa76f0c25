"""The parse stage: supervised worker processes, one file at a time each.

Every worker owns one pipe; the supervisor (a thread of the ingest process) sends a worker one
task, waits for its result, its death or its deadline, and only then sends the next. So:

* a worker that crashes (SIGSEGV in a native library, OOM-kill) fails exactly the file it was
  parsing, with the signal in the reason; a fresh worker takes its place and the run goes on
  in parallel;
* a file that takes longer than `--parse-timeout` gets its worker killed and is `failed` with
  "parse timed out after N s"; a file being OCR'd announces each finished page (a
  ``("ocr_page", n)`` message before its result), and each one restarts its clock, so the limit
  applies to every page of a scan, not to the whole scan ("OCR of a page timed out after N s");
* workers never outlive the ingest process: each asks the kernel for SIGKILL when its parent
  dies (PR_SET_PDEATHSIG), checks that the parent it was started for is still its parent (a
  kill during start-up), and watches its parent pid from a thread (other platforms).

Workers start lazily, one more each time a task finds every worker busy, up to `workers`.

A worker is a fresh interpreter (`python -c`, the same executable) that imports only this
module, talking over a socket pair with multiprocessing's `Connection`. Not a
`multiprocessing` spawn: that re-runs the caller's main script in every worker, so a script
that calls the library without an `if __name__ == "__main__":` guard would start nested
ingests in its workers and fail every file.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

from ragctl.ingest.channel import END, Channel
from ragctl.ingest.options import Limits
from ragctl.ingest.parse import ParseOutcome, parse_file
from ragctl.ingest.plan import ParseTask

_WORKER_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "RAYON_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


# ----------------------------------------------------------------------------- worker side
def die_with_parent(parent_pid: int) -> None:
    """Exit as soon as `parent_pid` is gone, even if it was killed with SIGKILL."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:  # the parent died before the request above
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="ragctl-parent-watch").start()


# Signals first (a Ctrl-C or a group SIGTERM during start-up is the parent's to handle); then
# the parent's sys.path (what multiprocessing's spawn passes too: paths a caller added at run
# time), followed by any other entry of this interpreter, never the current directory that `-c`
# puts first (a file there must not shadow a module); then the import. argv: the socket's fd,
# the parent's pid, the parent's sys.path as JSON.
_BOOT = (
    "import sys, json, signal; "
    "signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "parent = json.loads(sys.argv[3]); "
    "sys.path[:] = parent + [p for p in sys.path if p and p not in parent]; "
    "from ragctl.ingest.pool import worker_entry; worker_entry()"
)


def worker_entry() -> None:
    """A worker's start (see `_BOOT`): settings arrive as the first message, then tasks."""
    fd, parent_pid = int(sys.argv[1]), int(sys.argv[2])
    die_with_parent(parent_pid)
    conn = Connection(fd)
    try:
        model_dir, max_tokens, limits = conn.recv()
    except (EOFError, OSError):
        return
    worker_main(conn, model_dir, max_tokens, limits)


def worker_main(conn: Connection, model_dir: str, max_tokens: int, limits: Limits) -> None:
    from ragctl.ingest.parse import make_chunker
    from ragctl.parsing.ocr import set_progress_sink

    set_progress_sink(conn.send)  # ("ocr_page", n) after each OCR'd page: the supervisor's per-page clock
    chunker = None
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        if chunker is None and not task.hash_only:
            chunker = make_chunker(model_dir, max_tokens)
        conn.send(parse_file(task, chunker, limits))


# ----------------------------------------------------------------------------- supervisor side
class _Process:
    """A worker process: what the supervisor needs of it (kill, join, exit code)."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen

    @property
    def exitcode(self) -> int | None:
        return self.popen.poll()  # negative: killed by that signal

    def is_alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()

    def join(self, timeout: float | None = None) -> None:
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass


def _worker_command(fd: int) -> list[str]:
    """The same interpreter with the same flags (-I, -E, -X ..., as multiprocessing passes them),
    running `_BOOT`."""
    flags = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]  # multiprocessing's own helper
    paths = json.dumps([p for p in sys.path if p])
    return [sys.executable, *flags, "-c", _BOOT, str(fd), str(os.getpid()), paths]


@dataclass
class _Worker:
    process: _Process
    conn: Connection
    task: ParseTask | None = None
    started: float = 0.0  # when the task, or its last OCR'd page, started
    pages_done: int = 0  # OCR'd pages the worker announced for this task


def _death_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"parser process crashed ({signal.Signals(-exitcode).name}) while parsing this file"
        except ValueError:
            pass
    return f"parser process died (exit code {exitcode}) while parsing this file"


class ParsePool:
    """Runs the parse stage: tasks from `inbox`, outcomes to `outbox` (see module doc)."""

    def __init__(self, workers: int, model_dir: str, max_tokens: int, limits: Limits) -> None:
        self.max_workers = max(1, workers)
        self.model_dir = model_dir
        self.max_tokens = max_tokens
        self.limits = limits
        # one thread per native library, set before the worker's interpreter starts so it holds
        self._env = {**os.environ, **_WORKER_ENV}
        self._idle: list[_Worker] = []
        self._busy: list[_Worker] = []
        self.started_workers = 0

    def _spawn(self) -> _Worker:
        parent_sock, child_sock = socket.socketpair()
        try:
            fd = child_sock.fileno()
            popen = subprocess.Popen(_worker_command(fd), pass_fds=(fd,), stdin=subprocess.DEVNULL, env=self._env)
        except BaseException:
            parent_sock.close()
            raise
        finally:
            child_sock.close()
        conn = Connection(parent_sock.detach())
        self.started_workers += 1
        worker = _Worker(_Process(popen), conn)
        try:
            conn.send((self.model_dir, self.max_tokens, self.limits))
        except (OSError, EOFError):
            pass  # gone already: the task sent next fails with its exit code (run loop)
        return worker

    def _assign(self, task: ParseTask) -> None:
        fresh = not self._idle
        worker = self._spawn() if fresh else self._idle.pop()
        worker.task, worker.started, worker.pages_done = task, time.monotonic(), 0
        try:
            worker.conn.send(task)
        except (OSError, EOFError):
            if not fresh:  # died while idle: it is replaced, the task is retried
                self._discard(worker)
                self._assign(task)
                return
            # a worker that could not even start: the run loop reports its exit for this file
        self._busy.append(worker)

    def _discard(self, worker: _Worker) -> None:
        try:
            worker.process.kill()
        except Exception:  # noqa: BLE001 - already gone
            pass
        worker.process.join(timeout=5)
        worker.conn.close()

    def run(self, inbox: Channel[ParseTask], outbox: Channel[ParseOutcome], stop: threading.Event) -> None:
        timeout = self.limits.parse_timeout_s
        input_done = False
        try:
            while not stop.is_set():
                while not input_done and (self._idle or len(self._busy) < self.max_workers):
                    task = inbox.get_nowait() if self._busy else inbox.get(timeout=0.1)
                    if task is None:
                        break
                    if task is END:
                        input_done = True
                        break
                    self._assign(task)
                if input_done and not self._busy:
                    return
                if not self._busy:
                    continue
                ready = wait([w.conn for w in self._busy], timeout=0.05)
                now = time.monotonic()
                for worker in list(self._busy):
                    outcome = None
                    if worker.conn in ready:
                        try:
                            outcome = worker.conn.recv()
                        except (EOFError, OSError):
                            worker.process.join(timeout=5)
                            assert worker.task is not None  # a busy worker has a task
                            outcome = ParseOutcome.failed(worker.task, _death_reason(worker.process.exitcode))
                            self._busy.remove(worker)
                            self._discard(worker)
                        else:
                            if isinstance(outcome, tuple):  # ("ocr_page", n): a page done, its clock restarts
                                worker.started, worker.pages_done, outcome = now, int(outcome[1]), None
                                continue
                            self._busy.remove(worker)
                            self._idle.append(worker)
                    elif timeout and now - worker.started > timeout:
                        self._busy.remove(worker)
                        self._discard(worker)
                        assert worker.task is not None  # a busy worker has a task
                        reason = (f"OCR of a page timed out after {timeout:g} s (the last page done was "
                                  f"page {worker.pages_done})" if worker.pages_done
                                  else f"parse timed out after {timeout:g} s")
                        outcome = ParseOutcome.failed(worker.task, reason)
                    if outcome is not None:
                        outbox.put(outcome, even_when_stopping=True)
        finally:
            self.close()

    def close(self) -> None:
        for worker in self._idle:
            try:
                worker.conn.send(None)
            except (OSError, EOFError):
                pass
        deadline = time.monotonic() + 2
        for worker in self._idle:
            worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
        for worker in self._idle + self._busy:
            if worker.process.is_alive():
                worker.process.kill()
            worker.process.join(timeout=5)
            worker.conn.close()
        self._idle, self._busy = [], []
