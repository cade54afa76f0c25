"""A remote embedding service speaking OpenAI-compatible `POST {base}/embeddings`
(TEI, vLLM, Ollama, Infinity, hosted APIs) behind the same interface as `Embedder`.

`RemoteEmbedder.encode(texts)` splits the engine's window into `batch`-sized requests and
keeps `concurrency` of them in flight on one pooled httpx client (a thread pool: the engine's
embed stage is one thread and `encode` is synchronous). Rows come back in input order
(`data[i].index`), L2-normalised, dimension-checked.

Transient errors (429, 5xx, time-outs, connection errors) are retried with exponential
backoff and full jitter; a `Retry-After` header (seconds or an HTTP date) is honoured, capped
at `MAX_RETRY_AFTER_S`. A permanent error (another 4xx, a wrong dimension, a malformed reply,
retries exhausted) fails only that request's rows: `encode` then raises `EncodeFailure`
carrying every vector that did arrive and a one-line reason per failed row, and the engine
fails only the documents those rows belong to.

Chunking still needs the model's own tokenizer and window: they come from the local model
(`--model`, default the packaged all-MiniLM-L6-v2), and a remote model with no matching local
tokenizer is refused rather than guessed. The API key is read from an environment variable
when a request is built and is never stored, logged or shown by `describe()`.
"""

from __future__ import annotations

import email.utils
import hashlib
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ragctl.errors import ConfigError, EncodeFailure
from ragctl.model_spec import DEFAULT_MODEL_NAME, ModelSpec, resolve_model

DEFAULT_KEY_ENV = "RAGCTL_EMBED_KEY"
DEFAULT_CONCURRENCY = 4
DEFAULT_BATCH = 32
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_RETRIES = 5  # retries after the first attempt
BACKOFF_BASE_S = 0.25
BACKOFF_MAX_S = 8.0
MAX_RETRY_AFTER_S = 60.0
REMOTE_PREFIX = "remote:"  # the entity's recorded model name starts with this


@dataclass(frozen=True)
class RemoteSettings:
    """What the user asked for (CLI options or RAGCTL_EMBED_* variables)."""

    url: str  # the base URL as OpenAI clients take it: http://host:8080/v1
    model: str | None = None  # the name sent to the server [default: the local model's name]
    key_env: str | None = None  # environment variable holding the key [default RAGCTL_EMBED_KEY, optional]
    concurrency: int = DEFAULT_CONCURRENCY
    batch: int = DEFAULT_BATCH
    dim: int | None = None  # expected dimension [default: the local model's]
    timeout_s: float = DEFAULT_TIMEOUT_S
    retries: int = DEFAULT_RETRIES

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"embedding service URL must be an http(s) base URL such as http://host:8080/v1, not {self.url!r}")
        if parts.username or parts.password:
            raise ConfigError("embedding service URL must not carry credentials: put the key in an environment variable")
        if parts.query or parts.fragment:
            raise ConfigError("embedding service URL is a base URL (http://host:8080/v1): no query or fragment")
        if self.concurrency < 1 or self.batch < 1:
            raise ConfigError("embedding concurrency and batch must be at least 1")
        if self.dim is not None and self.dim < 1:
            raise ConfigError("embedding dimension must be at least 1")

    @property
    def host(self) -> str:
        return (urlsplit(self.url).hostname or "").lower()

    @property
    def endpoint(self) -> str:
        return self.url.rstrip("/") + "/embeddings"

    def key(self) -> str | None:
        """The API key from the environment (None: send no Authorization header)."""
        var = self.key_env or DEFAULT_KEY_ENV
        value = os.environ.get(var)
        if self.key_env and not value:
            raise ConfigError(f"embedding key variable {self.key_env}: that environment variable is not set")
        return value or None


def settings_from(url: str | None, model: str | None = None, key_env: str | None = None,
                  concurrency: int | None = None, batch: int | None = None,
                  dim: int | None = None) -> RemoteSettings | None:
    """RemoteSettings from CLI values (None where not given); None when there is no URL.
    The per-request time-out and the retry count come from RAGCTL_EMBED_TIMEOUT and
    RAGCTL_EMBED_RETRIES (defaults 30 s and 5)."""
    if not url:
        return None
    try:
        timeout_s = float(os.environ.get("RAGCTL_EMBED_TIMEOUT") or DEFAULT_TIMEOUT_S)
        retries = int(os.environ.get("RAGCTL_EMBED_RETRIES") or DEFAULT_RETRIES)
    except ValueError as exc:
        raise ConfigError(f"RAGCTL_EMBED_TIMEOUT / RAGCTL_EMBED_RETRIES must be numbers ({exc})") from exc
    if timeout_s <= 0 or retries < 0:
        raise ConfigError("RAGCTL_EMBED_TIMEOUT must be > 0 and RAGCTL_EMBED_RETRIES >= 0")
    return RemoteSettings(
        url=url, model=model or None, key_env=key_env or None,
        concurrency=concurrency or DEFAULT_CONCURRENCY, batch=batch or DEFAULT_BATCH, dim=dim or None,
        timeout_s=timeout_s, retries=retries,
    )


def _same_model(remote: str, local: ModelSpec) -> bool:
    def norm(name: str) -> str:
        return name.strip().rstrip("/").rsplit("/", 1)[-1].lower()

    return norm(remote) in {norm(local.name), norm(local.path.name)}


@dataclass(frozen=True)
class RemoteModelSpec(ModelSpec):
    """The local model's tokenizer and window, the remote model's name, host and dimension.

    `digest` is derived from host + model + dimension, so an entity indexed through a service
    refuses vectors from a local model or another service (EntityStore.check_model)."""

    host: str = ""
    remote_model: str = ""

    @property
    def digest(self) -> str:
        return remote_digest(self.host, self.remote_model, self.dim)


def remote_digest(host: str, model: str, dim: int) -> str:
    return hashlib.sha256(f"remote\0{host}\0{model}\0{dim}".encode()).hexdigest()


def remote_spec(local_model: str | None, settings: RemoteSettings) -> RemoteModelSpec:
    """The spec a run uses with a remote service; ConfigError when the remote model has no
    local tokenizer (a remote model other than the local one, with no local model given)."""
    local = resolve_model(local_model)
    name = settings.model or local.name
    if local_model is None and not _same_model(name, local):
        raise ConfigError(
            f"remote model {name!r} has no local tokenizer: chunks must be cut in that model's own tokens; "
            f"give the local model directory that holds its tokenizer and window, or serve {DEFAULT_MODEL_NAME}"
        )
    dim = settings.dim or local.dim
    return RemoteModelSpec(name=f"{REMOTE_PREFIX}{settings.host}/{name}", path=local.path, dim=dim,
                           max_tokens=local.max_tokens, host=settings.host, remote_model=name)


class _Permanent(Exception):
    """A failure not worth retrying; its message is the row's one-line reason."""


class _Transient(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def _brief(text: str, limit: int = 160) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


class RemoteEmbedder:
    """Same interface as `Embedder` (`spec`, `precision`, `encode`, `describe`); thread-safe."""

    precision = "remote"
    backend = "remote"
    device = "remote"

    def __init__(self, spec: RemoteModelSpec, settings: RemoteSettings) -> None:
        import httpx

        self.spec = spec
        self.settings = settings
        self.batch_size = settings.batch
        settings.key()  # a named variable that is not set: refused before any work
        self.requests = 0
        self.retries = 0
        self._counts_lock = threading.Lock()
        self._stop: threading.Event | None = None
        self._client = httpx.Client(
            timeout=httpx.Timeout(settings.timeout_s, connect=min(10.0, settings.timeout_s)),
            limits=httpx.Limits(max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency),
        )
        self._pool = ThreadPoolExecutor(settings.concurrency, thread_name_prefix="ragctl-remote")

    def stop_when(self, event: threading.Event) -> None:
        """After `event` is set, no new request or retry starts (Ctrl-C, a stage failure)."""
        self._stop = event

    def _stopping(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    # ------------------------------------------------------------------ encode
    def encode(self, texts: list[str]):  # -> np.ndarray (n, dim) float32, L2-normalised
        import numpy as np

        texts = list(texts)
        out = np.zeros((len(texts), self.spec.dim), dtype=np.float32)
        if not texts:
            return out
        size = self.settings.batch
        starts = range(0, len(texts), size)
        futures = [(s, self._pool.submit(self._request_batch, texts[s:s + size])) for s in starts]
        failed: dict[int, str] = {}
        for start, future in futures:
            try:
                rows = future.result()
            except _Permanent as exc:
                failed.update((i, str(exc)) for i in range(start, min(start + size, len(texts))))
                continue
            out[start:start + len(rows)] = rows
        if failed:
            raise EncodeFailure(out, failed)
        return out

    def _request_batch(self, texts: list[str]):
        attempt = 0
        while True:
            if self._stopping():
                raise _Permanent("interrupted before it was embedded")
            try:
                return self._post(texts)
            except _Transient as exc:
                if attempt >= self.settings.retries:
                    raise _Permanent(f"embedding service: {exc} (gave up after {attempt + 1} attempts)") from exc
                delay = random.uniform(0, min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt))
                if exc.retry_after is not None:
                    delay = max(delay, exc.retry_after)
                attempt += 1
                with self._counts_lock:
                    self.retries += 1
                if self._stop is not None:
                    if self._stop.wait(delay):
                        raise _Permanent("interrupted before it was embedded") from exc
                else:
                    time.sleep(delay)

    def _post(self, texts: list[str]):
        import httpx
        import numpy as np

        headers = {"Content-Type": "application/json"}
        key = self.settings.key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        with self._counts_lock:
            self.requests += 1
        try:
            resp = self._client.post(self.settings.endpoint, json={"model": self.spec.remote_model, "input": texts},
                                     headers=headers)
        except httpx.TimeoutException as exc:
            raise _Transient(f"timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise _Transient(f"cannot reach {self.settings.host} ({type(exc).__name__})") from exc
        status = resp.status_code
        if status == 429 or status >= 500:
            raise _Transient(f"HTTP {status}", _retry_after(resp.headers.get("Retry-After")))
        if status >= 400:
            raise _Permanent(f"embedding service refused the request: HTTP {status} {_brief(resp.text)}")
        try:
            data = resp.json()["data"]
            rows = sorted(data, key=lambda d: int(d["index"]))
            vectors = np.asarray([d["embedding"] for d in rows], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as exc:
            raise _Permanent(f"embedding service sent a malformed reply ({type(exc).__name__}: {_brief(str(exc), 80)})") from exc
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise _Permanent(f"embedding service returned {vectors.shape[0] if vectors.ndim else 0} vectors for {len(texts)} inputs")
        if vectors.shape[1] != self.spec.dim:
            raise _Permanent(
                f"embedding service returned {vectors.shape[1]}-dimensional vectors, expected {self.spec.dim} "
                "(the entity's / --embed-dim)"
            )
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return vectors / norms

    def describe(self) -> dict[str, Any]:
        """The keys `Embedder.describe` has, plus the service's endpoint (never the key)."""
        parts = urlsplit(self.settings.url)
        return {
            "name": self.spec.name,
            "dim": self.spec.dim,
            "max_tokens": self.spec.max_tokens,
            "precision": self.precision,
            "device": self.device,
            "backend": self.backend,
            "backend_note": None,
            "runtime": f"remote {parts.scheme}://{parts.netloc}{parts.path}",
            "self_check_min_cosine": None,
            "bf16_min_cosine_vs_fp32": None,
            "model_cache": None,
            "remote_model": self.spec.remote_model,
            "tokenizer": str(self.spec.path),
            "concurrency": self.settings.concurrency,
            "batch": self.settings.batch,
        }
