"""Hostile HTTP against a real `ragctl serve`: bad `path` fields, non-UTF-8 file names,
thousands of form fields, a token used on another tenant's entity, slow clients (slowloris
heads and bodies), a broken tokens file. Each gets a clear 4xx (or is cut off) and the server
keeps answering everyone else at once."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from conftest import RAGCTL  # noqa: E402
from test_serve import Server, doc, error_of, upload  # noqa: E402

A_TOKEN = "tenant-a-token-0123"
ADMIN = "admin-token-456789"
BOUNDARY = "hostile-boundary"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("hostile")
    tokens = root / "tokens.json"
    tokens.write_text(json.dumps({A_TOKEN: ["ea"], ADMIN: "*"}))
    srv = Server(root / "store", "--tokens", str(tokens)).start()
    yield srv
    srv.stop()


def raw_upload(srv: Server, body: bytes, token: str = ADMIN, entity: str = "ea") -> httpx.Response:
    with srv.client(token) as c:
        return c.post(f"/api/entities/{entity}/files", content=body,
                      headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"})


def part(name: str, value: bytes, filename: bytes | None = None) -> bytes:
    disposition = f'form-data; name="{name}"'.encode()
    if filename is not None:
        disposition += b'; filename="' + filename + b'"'
    return b"--" + BOUNDARY.encode() + b"\r\nContent-Disposition: " + disposition + b"\r\n\r\n" + value + b"\r\n"


def end() -> bytes:
    return f"--{BOUNDARY}--\r\n".encode()


def quick_health(srv: Server) -> float:
    t0 = time.perf_counter()
    assert httpx.get(f"{srv.url}/healthz", timeout=5).status_code == 200
    return time.perf_counter() - t0


def test_path_fields_that_escape_or_smuggle_are_400(server: Server) -> None:
    bad = ["..", "../x.md", "a/../../b.md", "/etc/passwd", "\\\\server\\share\\x.md", "C:\\x.md", "a\\b.md",
           "a\x00b.md", "a//b.md", "a/./b.md", "x.md/", "a\nb.md", "é" * 1025]
    with server.client(ADMIN) as c:
        for path in bad:
            r = upload(c, "ea", [("x.md", b"# x\n\ntext\n")], paths=[path])
            assert r.status_code == 400, (path, r.text)
            assert error_of(r)["code"] == "invalid_path"
        ok = upload(c, "ea", [("x.md", doc(1).encode())], paths=["dir/.hidden/..../x.md"], wait=True)
        assert ok.status_code == 200 and ok.json()["files"][0]["status"] == "indexed", ok.text
        long_name = "n" * 300 + ".md"  # longer than a file name may be: only ever an identifier
        r = upload(c, "ea", [("y.md", doc(2).encode())], paths=[f"deep/{long_name}"], wait=True)
        assert r.status_code == 200 and r.json()["files"][0]["status"] == "indexed", r.text
    jobs = server.store / ".serve" / "jobs"
    assert all((d / "job.json").exists() for d in jobs.iterdir())  # refused uploads left nothing


def test_non_utf8_file_names_need_a_path_field(server: Server) -> None:
    body = part("file", doc(3).encode(), filename=b"caf\xe9.md") + end()
    r = raw_upload(server, body)
    assert r.status_code == 400 and "UTF-8" in error_of(r)["message"]
    body = part("file", doc(3).encode(), filename=b"caf\xe9.md") + part("path", "café.md".encode()) + end()
    r = raw_upload(server, body)
    assert r.status_code == 202 and r.json()["files"][0]["path"] == "café.md"


def test_thousands_of_form_fields_are_refused(server: Server) -> None:
    body = b"".join(part(f"f{i}", b"x") for i in range(5000)) + part("file", b"# x\n", filename=b"x.md") + end()
    t0 = time.perf_counter()
    r = raw_upload(server, body)
    assert r.status_code == 400 and error_of(r)["code"] == "too_many_parts", r.text
    assert time.perf_counter() - t0 < 10
    huge_header = (b"--" + BOUNDARY.encode() + b'\r\nContent-Disposition: form-data; name="file"; filename="x.md"\r\n'
                   + b"X-Pad: " + b"a" * 40_000 + b"\r\n\r\nx\r\n" + end())
    r = raw_upload(server, huge_header)
    assert r.status_code == 400, r.text
    assert quick_health(server) < 1


def test_a_tenant_token_on_another_entity_is_403(server: Server) -> None:
    with server.client(A_TOKEN) as c:
        assert upload(c, "ea", [("mine.md", doc(4).encode())]).status_code == 202
        for method, url, body in (("POST", "/api/entities/eb/files", None), ("GET", "/api/entities/eb/files", None),
                                  ("GET", "/api/entities/eb/jobs", None), ("DELETE", "/api/entities/eb", None),
                                  ("POST", "/api/entities/eb/search", {"query": "x"})):
            r = c.request(method, url, json=body)
            assert r.status_code == 403 and error_of(r)["code"] == "forbidden", (url, r.text)
    assert not (server.store / "doc_id_name_mapping" / "eb.json").exists()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_slow_heads_and_bodies_are_cut_off_and_others_are_served(server: Server) -> None:
    """Slowloris: one client sends its request head a byte a second (closed after 10 s),
    another an upload body a byte a second (408 after the 20 s grace); meanwhile /healthz
    answers at once."""
    host, port = server.url.removeprefix("http://").split(":")
    head_closed_after: list[float] = []
    body_answer: list[bytes] = []

    def slow_head() -> None:
        with socket.create_connection((host, int(port))) as s:
            t0 = time.monotonic()
            try:
                for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
                    s.sendall(bytes([byte]))
                    time.sleep(1)
                    if time.monotonic() - t0 > 30:
                        break
                s.settimeout(5)
                s.recv(1)
            except OSError:
                pass
            head_closed_after.append(time.monotonic() - t0)

    def slow_body() -> None:
        with socket.create_connection((host, int(port))) as s:
            s.sendall((f"POST /api/entities/ea/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\n"
                       f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: 100000\r\n\r\n"
                       ).encode())
            s.settimeout(1.5)
            for _ in range(40):
                try:
                    s.sendall(b"-")
                    chunk = s.recv(4096)
                    if chunk:
                        body_answer.append(chunk)
                        return
                except TimeoutError:
                    continue
                except OSError:
                    return

    threads = [threading.Thread(target=slow_head), threading.Thread(target=slow_body)]
    for t in threads:
        t.start()
    latencies = []
    while any(t.is_alive() for t in threads):
        latencies.append(quick_health(server))
        time.sleep(0.5)
    for t in threads:
        t.join()
    assert head_closed_after and 9 <= head_closed_after[0] < 16, head_closed_after
    assert body_answer and body_answer[0].startswith(b"HTTP/1.1 408"), body_answer
    assert max(latencies) < 1.0, max(latencies)
    with server.client(ADMIN) as c:
        assert c.get("/api/status").json()["staging"]["bytes"] == 0  # the cut-off upload holds nothing


@pytest.mark.parametrize("content, reason", [
    ('{"short": "*"}', "at least 8 characters"),
    ('{"long-enough-token": ["../etc"]}', "invalid entity id"),
    ('{"long-enough-token": ["a"],\n "other-token-123": ["b"]\n "third": "*"}', "not valid JSON"),
    ('{"long-enough-token": 5}', "list of entity ids"),
    ("[]", "must be a JSON object"),
])
def test_a_broken_tokens_file_is_one_clear_line_at_start_up(tmp_path: Path, content: str, reason: str) -> None:
    tokens = tmp_path / "tokens.json"
    tokens.write_text(content)
    r = subprocess.run([*RAGCTL, "serve", "--store", str(tmp_path / "s"), "--tokens", str(tokens)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().count("\n") == 0 and str(tokens) in r.stderr and reason in r.stderr, r.stderr
    assert "long-enough-token" not in r.stderr  # a token is a secret
