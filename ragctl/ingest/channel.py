"""Bounded hand-over between stages that can never block forever.

A stage that stops (finished, failed or asked to stop) closes its input: from then on puts
into it are dropped instead of blocking, so a producer never waits on a consumer that is gone.
Every wait is sliced into short timeouts that also watch the run's stop event.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Generic, TypeVar

T = TypeVar("T")

END: Any = object()  # the end-of-stream marker every stage sends downstream when it exits
_TICK = 0.1


class Channel(Generic[T]):
    def __init__(self, name: str, maxsize: int, stop: threading.Event) -> None:
        self.name = name
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=maxsize)
        self._stop = stop
        self._closed = threading.Event()

    def put(self, item: T, *, even_when_stopping: bool = False) -> bool:
        """Hand `item` over; False if the consumer is gone (or the run stops, unless
        `even_when_stopping`: completed work and END markers still travel while stopping)."""
        while not self._closed.is_set():
            if self._stop.is_set() and not even_when_stopping:
                return False
            try:
                self._queue.put(item, timeout=_TICK)
                return True
            except queue.Full:
                continue
        return False

    def end(self) -> None:
        self.put(END, even_when_stopping=True)

    def get(self, timeout: float | None = None) -> T | None:
        """The next item, END, or None when `timeout` passed (None: wait, in slices) or the run
        is stopping with nothing queued: a consumer never depends on END alone to wake up."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            tick = _TICK if deadline is None else min(_TICK, deadline - time.monotonic())
            try:
                return self._queue.get(timeout=max(tick, 0.0005))
            except queue.Empty:
                if self._stop.is_set() or (deadline is not None and time.monotonic() >= deadline):
                    return None

    def get_nowait(self) -> T | None:
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            return None

    def close(self) -> None:
        """The consumer is gone: drop whatever is queued, never block a producer again."""
        self._closed.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return
