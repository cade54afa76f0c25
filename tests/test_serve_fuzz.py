"""Schemathesis (the real package, its CLI) against a real `ragctl serve` on 127.0.0.1, and
plain regression tests for the contract bugs it is set up to catch.

With a valid token every check is enabled (`--checks all`: no 5xx, status codes, content
types, headers and bodies as documented, negative data rejected, positive data accepted,
ignored auth, use-after-free, resource availability, allowed methods) over every phase
(examples, coverage, fuzzing, stateful links upload -> job -> search / files / delete);
without a token every protected operation answers 401 and nothing else. Afterwards the
server logged no internal error and `ragctl verify` is clean. Bounded by `--max-examples` so
both runs take about a minute (slow: it starts a server and loads the model).

The store holds two seeded entities that tests/schemathesis_hooks.py points the reading
operations at (a generated id never exists, and those routes answer 404 before reading a
body): `fuzz-docs` with a document, and `fuzz-pending`, a directory without committed data,
what a reader sees while an entity's first commit is under way.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("schemathesis")
httpx = pytest.importorskip("httpx")

from test_serve import Server, error_of, upload, verify  # noqa: E402

TOKEN = "fuzz-token-0123456789"
SCHEMATHESIS = [str(Path(sys.executable).with_name("schemathesis"))]
HOOKS_DIR = Path(__file__).parent
DOCS, PENDING = "fuzz-docs", "fuzz-pending"
HARBOUR = b"# Harbour rules\n\nVisitors may moor at the east pier from 8:00 to 20:00.\n"


def schemathesis(location: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(HOOKS_DIR), "SCHEMATHESIS_HOOKS": "schemathesis_hooks", "NO_COLOR": "1",
           "RAGCTL_FUZZ_ENTITIES": f"{DOCS},{PENDING}"}
    return subprocess.run([*SCHEMATHESIS, "run", location, "--checks", "all", "--seed", "1", "--no-color",
                           "--request-timeout", "60", "--generation-database", "none", *args],
                          capture_output=True, text=True, timeout=300, env=env, cwd=cwd)


def generated(output: str) -> tuple[int, int]:
    """(cases generated, failures found) from the run's summary."""
    cases = re.search(r"(\d+) generated", output)
    failures = re.search(r"(\d+) found (\d+) unique failure", output)
    return int(cases.group(1)) if cases else 0, int(failures.group(2)) if failures else 0


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with a token, `fuzz-docs` (one document) and `fuzz-pending` (an entity directory
    whose first commit has not finished: no entity.json, no mapping shard)."""
    srv = Server(tmp_path_factory.mktemp("fuzz") / "store", "--token", TOKEN).start()
    try:
        with srv.client(TOKEN) as c:
            job = upload(c, DOCS, [("harbour.md", HARBOUR)], wait=True).json()
            assert job["files"][0]["status"] == "indexed", job
        (srv.store / "entities" / PENDING).mkdir()
        yield srv
    finally:
        srv.stop()
    (srv.store / "entities" / PENDING).rmdir()  # the pending commit "fails": nothing was written
    verify(srv.store)


@pytest.mark.parametrize("method, path", [
    ("GET", f"/api/entities/{PENDING}/files"),
    ("DELETE", f"/api/entities/{PENDING}/files/0123456789abcdef"),
    ("POST", f"/api/entities/{PENDING}/search"),
])
def test_an_entity_whose_first_commit_is_under_way_is_404_unknown_entity(seeded: Server, method: str,
                                                                          path: str) -> None:
    with seeded.client(TOKEN) as c:
        r = c.request(method, path, json={"query": "pier"} if method == "POST" else None)
    assert r.status_code == 404, r.text  # was 400 bad_request "unknown entity ..." for files and delete
    assert error_of(r)["code"] == "unknown_entity"


@pytest.mark.parametrize("field, value", [
    ("k", True), ("k", "3"), ("k", 2.0), ("k", None), ("query", 5), ("mode", 1), ("rerank", "true"), ("rerank", 1),
])
def test_search_body_fields_of_another_json_type_are_422_not_coerced(seeded: Server, field: str, value: object) -> None:
    with seeded.client(TOKEN) as c:
        ok = c.post(f"/api/entities/{DOCS}/search", json={"query": "east pier", "k": 3, "mode": "text"})
        r = c.post(f"/api/entities/{DOCS}/search", json={"query": "east pier", "mode": "text", field: value})
    assert ok.status_code == 200 and ok.json()["results"][0]["path"] == "harbour.md", ok.text
    assert r.status_code == 422, r.text  # "k": true / "3" / 2.0 were searched with k=1 / 3 / 2 (200)
    error = error_of(r)
    assert error["code"] == "invalid_request" and field in error["message"]


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_schemathesis_every_check_passes_with_a_token_and_only_401_without(seeded: Server, tmp_path: Path) -> None:
    srv = seeded
    spec = httpx.get(f"{srv.url}/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    operations = sum(len(ops) for ops in spec["paths"].values())
    assert operations == 10
    with_token = schemathesis(f"{srv.url}/openapi.json", "-H", f"Authorization: Bearer {TOKEN}",
                              "--max-examples", "12", cwd=tmp_path)
    cases, failures = generated(with_token.stdout)
    print(f"with a token: {operations} operations, {cases} cases, {failures} failures")
    assert with_token.returncode == 0 and failures == 0, with_token.stdout[-6000:]
    assert cases >= 200

    schema = tmp_path / "openapi.json"
    schema.write_text(json.dumps(spec))
    har = tmp_path / "anonymous.har"
    anonymous = schemathesis(str(schema), "--url", srv.url, "--max-examples", "4", "--report", "har",
                             "--report-har-path", str(har), cwd=tmp_path)
    assert anonymous.returncode == 0, anonymous.stdout[-6000:]
    statuses = Counter(
        (entry["request"]["url"].split(srv.url, 1)[1].startswith("/healthz"), entry["response"]["status"])
        for entry in json.loads(har.read_text())["log"]["entries"])
    print(f"without a token: {dict(statuses)}")
    assert {status for public, status in statuses if not public} == {401}
    assert {status for public, status in statuses if public} <= {200, 405}
    assert "internal error" not in srv.output() and "Traceback" not in srv.output()
