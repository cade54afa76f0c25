"""Schemathesis (the real package, its CLI) against a real `ragctl serve` on 127.0.0.1.

With a valid token every check is enabled (`--checks all`: no 5xx, status codes, content
types, headers and bodies as documented, negative data rejected, positive data accepted,
ignored auth, use-after-free, resource availability, allowed methods) over every phase
(examples, coverage, fuzzing, stateful links upload -> job -> search / files / delete);
without a token every protected operation answers 401 and nothing else. Afterwards the
server logged no internal error and `ragctl verify` is clean. Bounded by `--max-examples` so
both runs take about a minute (slow: it starts a server and loads the model).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("schemathesis")
httpx = pytest.importorskip("httpx")

from test_serve import Server, verify  # noqa: E402

TOKEN = "fuzz-token-0123456789"
SCHEMATHESIS = [str(Path(sys.executable).with_name("schemathesis"))]
HOOKS_DIR = Path(__file__).parent


def schemathesis(location: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(HOOKS_DIR), "SCHEMATHESIS_HOOKS": "schemathesis_hooks", "NO_COLOR": "1"}
    return subprocess.run([*SCHEMATHESIS, "run", location, "--checks", "all", "--seed", "1", "--no-color",
                           "--request-timeout", "60", "--generation-database", "none", *args],
                          capture_output=True, text=True, timeout=300, env=env, cwd=cwd)


def generated(output: str) -> tuple[int, int]:
    """(cases generated, failures found) from the run's summary."""
    cases = re.search(r"(\d+) generated", output)
    failures = re.search(r"(\d+) found (\d+) unique failure", output)
    return int(cases.group(1)) if cases else 0, int(failures.group(2)) if failures else 0


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_schemathesis_every_check_passes_with_a_token_and_only_401_without(tmp_path: Path) -> None:
    srv = Server(tmp_path / "store", "--token", TOKEN).start()
    try:
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
    finally:
        srv.stop()
    verify(srv.store)
