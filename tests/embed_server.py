"""A stand-in OpenAI-compatible embedding server for tests and scripts/bench_remote.py.

`EmbedServer(encode)` serves `POST /v1/embeddings` on 127.0.0.1 (a free port) from a thread
of the calling process (stdlib ThreadingHTTPServer: one thread per request, so requests in
flight really overlap). `encode(list_of_texts) -> np.ndarray` makes the vectors: the
packaged model in the tests (`Embedder.encode`), or `pseudo_vectors` (cheap, deterministic
per text, NOT a model) for the latency benchmark.

Switches, all attributes one may change while it runs:
  latency_s    added to every request (sleep, so concurrent requests overlap)
  script       a deque of actions for the next requests, consumed one per request:
               ("429", retry_after_s) | ("500",) | ("hang", seconds) | ("ok",)
  fail_rate    probability (seeded) that a request not covered by the script answers 429 or 500
  require_key  when set, requests without `Authorization: Bearer <key>` get 401
  Texts containing POISON-DIM get vectors of the wrong dimension; POISON-400 gets HTTP 400.
Replies are shuffled and scaled (x3.5), so clients must sort by `index` and normalise.
It records every request (time, texts, headers) in `log`.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np


def pseudo_vectors(texts: list[str], dim: int = 384) -> np.ndarray:
    """Cheap deterministic unit vectors (seeded by each text's hash): not embeddings."""
    out = np.empty((len(texts), dim), dtype=np.float32)
    for row, text in enumerate(texts):
        seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
        out[row] = np.random.default_rng(seed).standard_normal(dim, dtype=np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


class EmbedServer:
    def __init__(self, encode: Callable[[list[str]], Any], latency_s: float = 0.0, seed: int = 7) -> None:
        self.encode = encode
        self.latency_s = latency_s
        self.script: deque[tuple[Any, ...]] = deque()
        self.fail_rate = 0.0
        self.require_key: str | None = None
        self.log: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with server._lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    status, payload, headers = server._answer(self.path, body, dict(self.headers))
                finally:
                    with server._lock:
                        server.in_flight -= 1
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for name, value in {**headers, "Content-Type": "application/json"}.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (time-out)
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="embed-server", daemon=True)

    def __enter__(self) -> EmbedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # ------------------------------------------------------------------ one request
    def _answer(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        if path.rstrip("/") != "/v1/embeddings":
            return 404, {"error": {"message": f"no route {path}"}}, {}
        try:
            request = json.loads(body)
            texts = request["input"]
            texts = [texts] if isinstance(texts, str) else list(texts)
        except (ValueError, KeyError, TypeError):
            return 400, {"error": {"message": "bad request body"}}, {}
        with self._lock:
            action = self.script.popleft() if self.script else None
            if action is None and self.fail_rate and self._rng.random() < self.fail_rate:
                action = ("429", 0) if self._rng.random() < 0.5 else ("500",)
            self.log.append({"t": time.monotonic(), "texts": texts, "model": request.get("model"),
                             "auth": headers.get("Authorization"), "action": action})
        if self.latency_s:
            time.sleep(self.latency_s)
        if self.require_key and headers.get("Authorization") != f"Bearer {self.require_key}":
            return 401, {"error": {"message": "missing or wrong API key"}}, {}
        if action is not None and action[0] == "429":
            return 429, {"error": {"message": "rate limited"}}, {"Retry-After": str(action[1])}
        if action is not None and action[0] == "500":
            return 500, {"error": {"message": "internal error"}}, {}
        if action is not None and action[0] == "hang":
            time.sleep(action[1])
        if any("POISON-400" in t for t in texts):
            return 400, {"error": {"message": "input rejected by the stand-in server"}}, {}
        vectors = np.asarray(self.encode(texts), dtype=np.float32) * 3.5
        if any("POISON-DIM" in t for t in texts):
            vectors = vectors[:, :17]
        rows = [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)]
        with self._lock:
            self._rng.shuffle(rows)
        return 200, {"object": "list", "data": rows, "model": request.get("model"),
                     "usage": {"prompt_tokens": 0, "total_tokens": 0}}, {}
