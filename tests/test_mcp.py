"""`ragctl mcp`: a real stdio MCP server in a subprocess, driven by the official SDK's client.

One store is built with `ragctl ingest` for the module (three entities). Each test starts the
server as a subprocess (`python -m ragctl mcp`) and talks to it over stdin/stdout with
`mcp.client.stdio.stdio_client` + `ClientSession` (or, for the stdout-purity check, raw
JSON-RPC lines), with a deadline on every exchange.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("mcp")

from helpers import RAGCTL, make_tree  # noqa: E402
from mcp import ClientSession, StdioServerParameters, stdio_client  # noqa: E402

DEADLINE_S = 90  # a whole session: start, model load, every call (a few seconds when idle)

TREE = {
    "acme/policies/refunds.md": (
        "# Refund policy\n\nCustomers may ask for a refund within 45 days of purchase.\n\n"
        "## Exceptions\n\nGift cards and downloadable software are never refundable.\n"
    ),
    "acme/office.txt": "Our office is in Lisbon. Visitor parking is free on weekdays.\n",
    "globex/security.md": "# Security\n\nRotate every API key at least every 90 days.\n",
    "initech/secret.md": "# Layoffs\n\nThe reorganisation plan for the staplers team is confidential.\n",
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mcp")
    make_tree(root / "docs", TREE)
    result = subprocess.run(
        [*RAGCTL, "ingest", str(root / "docs"), "--store", str(root / "store"), "--workers", "1", "--json", "-q"],
        capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["failures"] == []
    return root / "store"


def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under root: (size, mtime_ns, sha256); not SQLite's shared-memory index of the
    store catalog (`catalog.sqlite-shm`), which every reader of a WAL database updates."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.name.endswith("-shm"):
            st = path.stat()
            out[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def run_session(store: Path, log: Path, extra: list[str], body: Callable[[ClientSession], Awaitable[Any]]) -> Any:
    """Start `ragctl mcp` over stdio, initialize, run `body(session)`, close: all within the deadline."""
    params = StdioServerParameters(
        command=RAGCTL[0], args=[*RAGCTL[1:], "mcp", "--store", str(store), *extra], env=dict(os.environ)
    )

    async def main() -> Any:
        with anyio.fail_after(DEADLINE_S), open(log, "w", encoding="utf-8") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                return await body(session)

    return anyio.run(main)


async def call(session: ClientSession, name: str, **arguments: Any) -> Any:
    """A successful call's structured result (the server's pydantic models, as JSON)."""
    result = await session.call_tool(name, arguments, read_timeout_seconds=60)
    text = result.content[0].text if result.content else ""  # type: ignore[union-attr]
    assert not result.is_error, f"{name}{arguments}: {text}"
    assert result.structured_content is not None
    assert json.loads(text) == result.structured_content  # the text block carries the same JSON
    return result.structured_content


async def call_error(session: ClientSession, name: str, **arguments: Any) -> str:
    """A failed call's one-line message (an isError result, not a protocol error)."""
    result = await session.call_tool(name, arguments, read_timeout_seconds=60)
    assert result.is_error, f"{name}{arguments} should have failed: {result.content}"
    assert len(result.content) == 1
    text = result.content[0].text  # type: ignore[union-attr]
    assert "\n" not in text.strip(), text
    return str(text)


@pytest.mark.timeout(180)
def test_tools_results_errors_and_visibility(store: Path, tmp_path: Path) -> None:
    before = snapshot(store)

    async def body(session: ClientSession) -> dict[str, Any]:
        out: dict[str, Any] = {}
        tools = {t.name: t for t in (await session.list_tools()).tools}
        out["tools"] = tools
        out["entities"] = await call(session, "list_entities")
        out["hybrid"] = await call(session, "search", entity="acme", query="How long do I have to get my money back?", k=2)
        out["vector"] = await call(session, "search", entity="acme", query="where can visitors park", k=1, mode="vector")
        out["text"] = await call(session, "search", entity="acme", query="gift cards", mode="text")
        out["globex"] = await call(session, "search", entity="globex", query="API key rotation", k=3)
        out["doc_by_path"] = await call(session, "get_document", entity="acme", path_or_doc_id="policies/refunds.md")
        doc_id = out["doc_by_path"]["doc_id"]
        out["doc_by_id"] = await call(session, "get_document", entity="acme", path_or_doc_id=doc_id)
        out["errors"] = {
            "hidden search": await call_error(session, "search", entity="initech", query="layoffs"),
            "hidden document": await call_error(session, "get_document", entity="initech", path_or_doc_id="secret.md"),
            "absent": await call_error(session, "search", entity="nobody", query="x"),
            "bad id": await call_error(session, "search", entity="../acme", query="x"),
            "k zero": await call_error(session, "search", entity="acme", query="x", k=0),
            "k big": await call_error(session, "search", entity="acme", query="x", k=51),
            "k text": await call_error(session, "search", entity="acme", query="x", k="many"),
            "mode": await call_error(session, "search", entity="acme", query="x", mode="fuzzy"),
            "empty query": await call_error(session, "search", entity="acme", query="   "),
            "missing query": await call_error(session, "search", entity="acme"),
            "document": await call_error(session, "get_document", entity="acme", path_or_doc_id="nope.md"),
            "other entity's document": await call_error(
                session, "get_document", entity="globex", path_or_doc_id="policies/refunds.md"
            ),
        }
        out["after errors"] = await call(session, "list_entities")  # the server is still serving
        return out

    out = run_session(store, tmp_path / "server.log", ["--entities", "acme,globex"], body)

    assert set(out["tools"]) == {"list_entities", "search", "get_document"}
    search_schema = out["tools"]["search"].input_schema
    assert search_schema["required"] == ["entity", "query"]
    assert search_schema["properties"]["mode"]["enum"] == ["hybrid", "vector", "text"]
    assert out["tools"]["search"].annotations.read_only_hint is True

    entities = {e["entity"]: e for e in out["entities"]["entities"]}
    assert set(entities) == {"acme", "globex"}  # initech is invisible
    assert (entities["acme"]["documents"], entities["globex"]["documents"]) == (2, 1)
    assert entities["acme"]["chunks"] >= 2 and entities["globex"]["chunks"] >= 1
    assert entities["acme"]["model"] == "all-MiniLM-L6-v2"
    assert out["after errors"] == out["entities"]

    hybrid = out["hybrid"]
    assert (hybrid["entity"], hybrid["mode"]) == ("acme", "hybrid")
    assert 1 <= len(hybrid["hits"]) <= 2
    top = hybrid["hits"][0]
    assert top["path"] == "policies/refunds.md" and "45 days" in top["text"]
    assert top["rank"] == 1 and top["score"] > 0 and isinstance(top["section"], str)
    assert [h["rank"] for h in hybrid["hits"]] == list(range(1, len(hybrid["hits"]) + 1))
    assert [h["path"] for h in out["vector"]["hits"]] == ["office.txt"]
    assert 0 < out["vector"]["hits"][0]["score"] <= 1.0001  # a cosine
    assert out["text"]["hits"][0]["path"] == "policies/refunds.md" and "Gift cards" in out["text"]["hits"][0]["text"]
    assert all(h["path"] == "security.md" for h in out["globex"]["hits"])  # only globex's own chunks

    doc = out["doc_by_path"]
    assert doc == out["doc_by_id"]
    assert (doc["entity"], doc["path"], doc["name"]) == ("acme", "policies/refunds.md", "refunds.md")
    assert doc["chunk_count"] == len(doc["chunks"]) >= 1
    assert [c["chunk"] for c in doc["chunks"]] == list(range(doc["chunk_count"]))
    joined = "\n".join(c["text"] for c in doc["chunks"])
    assert joined.index("45 days") < joined.index("Gift cards")  # chunks in document order

    errors = out["errors"]
    for key in ("hidden search", "hidden document", "absent"):
        assert "unknown entity" in errors[key], errors[key]
        assert "initech" not in errors[key].replace("'initech'", "", 1), errors[key]  # never listed
    assert "entities: acme, globex" in errors["absent"]
    assert "invalid entity id '../acme'" in errors["bad id"]
    assert "k must be an integer from 1 to 50, not 0" in errors["k zero"]
    assert "not 51" in errors["k big"]
    assert "invalid arguments: k:" in errors["k text"]
    assert "unknown mode 'fuzzy'" in errors["mode"]
    assert "query must be non-empty" in errors["empty query"]
    assert "invalid arguments: query: Field required" in errors["missing query"]
    assert "no document with path or doc_id 'nope.md'" in errors["document"]
    assert "no document" in errors["other entity's document"]

    assert snapshot(store) == before  # the server wrote nothing to the store


@pytest.mark.timeout(120)
def test_stdout_carries_only_protocol(store: Path, tmp_path: Path) -> None:
    """Raw JSON-RPC over the pipes: every stdout line is a JSON-RPC message, even while the
    model loads; without --entities every entity is listed; closing stdin ends the server.
    An entity stored before full-text search existed is refused in text mode, not upgraded."""
    store = Path(shutil.copytree(store, tmp_path / "store"))
    with closing(sqlite3.connect(store / "entities" / "initech" / "chunks.sqlite")) as db:
        db.executescript("DROP TABLE chunks_vocab; DROP TABLE chunks_fts;")  # as an older ragctl left it
    before = snapshot(store)
    messages: list[dict[str, Any]] = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "list_entities", "arguments": {}}},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
         "params": {"name": "search", "arguments": {"entity": "initech", "query": "staplers", "mode": "vector"}}},
        {"jsonrpc": "2.0", "id": 4, "method": "tools/call",
         "params": {"name": "search", "arguments": {"entity": "initech", "query": "staplers", "mode": "text"}}},
    ]
    proc = subprocess.Popen(
        [*RAGCTL, "mcp", "--store", str(store)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        responses: dict[int, dict[str, Any]] = {}
        lines: list[str] = []
        for message in messages:
            proc.stdin.write(json.dumps(message) + "\n")
            proc.stdin.flush()
            if "id" not in message:
                continue
            while message["id"] not in responses:  # the pytest timeout bounds a hung read
                line = proc.stdout.readline()
                assert line, f"server closed stdout (exit {proc.wait(timeout=30)}): {proc.stderr.read()}"
                lines.append(line)
                parsed = json.loads(line)  # anything but JSON on stdout fails here
                assert parsed["jsonrpc"] == "2.0"
                if "id" in parsed:
                    responses[parsed["id"]] = parsed
        proc.stdin.close()  # end of session: the server must exit on its own
        proc.wait(timeout=30)
        rest, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    assert proc.returncode == 0, err
    assert all(json.loads(line)["jsonrpc"] == "2.0" for line in rest.splitlines())
    listed = responses[2]["result"]["structuredContent"]["entities"]
    assert [e["entity"] for e in listed] == ["acme", "globex", "initech"]
    hit = responses[3]["result"]["structuredContent"]["hits"][0]
    assert responses[3]["result"].get("isError") in (None, False)
    assert hit["path"] == "secret.md" and "staplers" in hit["text"]
    assert responses[4]["result"]["isError"] is True
    assert "no full-text index" in responses[4]["result"]["content"][0]["text"]
    assert snapshot(store) == before


def test_cli_refuses_bad_setup_in_one_line(tmp_path: Path, store: Path) -> None:
    """Before any protocol: a missing store or a bad --entities is exit 2, one line on stderr,
    nothing on stdout; no store is created."""
    cases = [
        (["--store", str(tmp_path / "missing")], "no ragctl store here"),
        (["--store", str(store), "--entities", "acme,../etc"], "invalid entity id '../etc'"),
    ]
    for args, expected in cases:
        result = subprocess.run([*RAGCTL, "mcp", *args], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stdout == ""
        assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "missing").exists()
