"""Slow clients (slowloris): uvicorn has no deadline for a request's head and none for its
body, so a client sending one byte a second would hold a connection (and an upload's staging
reservation) forever. Two guards:

* `GuardedH11Protocol` (uvicorn's h11 protocol): a request head (request line + headers) must
  be complete within `HEAD_TIMEOUT_S` of the connection opening or of the previous response;
  else the connection is closed. Header size is bounded by uvicorn (`h11_max_incomplete_event_size`).
* `SlowBodyGuard` (ASGI middleware): the body must keep coming: no gap over `BODY_IDLE_S`
  between chunks, and after `BODY_GRACE_S` at least `BODY_MIN_RATE` bytes/s on average. A body
  too slow reads to the app as a client disconnect, answered 408 with `Connection: close`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

HEAD_TIMEOUT_S = 10.0
BODY_IDLE_S = 30.0
BODY_GRACE_S = 20.0
BODY_MIN_RATE = 1024  # bytes/s, averaged over the whole body once past the grace period
TOO_SLOW = "body_too_slow"  # scope["state"] key set when the guard cut a body off


class GuardedH11Protocol(H11Protocol):
    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        # one deadline per wait for a head: an older one firing while this connection waits,
        # only briefly, for its next head would close a busy keep-alive connection
        previous = getattr(self, "_head_timer", None)
        if previous is not None:
            previous.cancel()
        self._head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self._head_deadline)

    def _head_deadline(self) -> None:
        waiting_for_head = self.cycle is None or self.cycle.response_complete
        if waiting_for_head and self.conn.their_state == h11.IDLE and not self.transport.is_closing():
            self.transport.close()  # the head did not arrive in time (keep-alive idling ends sooner)


class SlowBodyGuard:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        received = 0
        cut = False

        async def guarded_receive() -> Any:
            nonlocal received, cut
            if cut:
                return {"type": "http.disconnect"}
            elapsed = time.monotonic() - started
            try:
                message = await asyncio.wait_for(receive(), BODY_IDLE_S)
            except TimeoutError:
                message = None
            if message is not None and message["type"] == "http.request":
                received += len(message.get("body", b""))
                elapsed = time.monotonic() - started
                slow = elapsed > BODY_GRACE_S and received < BODY_MIN_RATE * elapsed and message.get("more_body")
                if not slow:
                    return message
            elif message is not None:
                return message
            cut = True
            scope.setdefault("state", {})[TOO_SLOW] = True
            return {"type": "http.disconnect"}

        await self.app(scope, guarded_receive, send)
