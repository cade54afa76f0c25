"""Remote embedding services (`--embed-url`): a real HTTP server on 127.0.0.1 (tests/embed_server.py)
serving the packaged model, with injected latency, 429 + Retry-After, 500s, time-outs, a wrong
dimension and refused requests. Checked: vectors equal local encoding, order kept, retries
recover, a permanent error fails only the documents of its request, each file indexed exactly
once (`verify` clean), the key never reaches the store, identity mismatches exit 2.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
from helpers import RAGCTL, REPO, make_tree
from typer.testing import CliRunner

from ragctl.cli.app import app
from ragctl.errors import ConfigError, EncodeFailure
from tests.embed_server import EmbedServer

KEY = "sk-test-7f3a9c1e5b2d4f60"


def cli(*args, env=None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def paragraphs(topic: str, n: int = 3, extra: str = "") -> str:
    return "\n\n".join(f"{topic} paragraph {i}: {extra} " + " ".join(f"{topic}{i}w{j}" for j in range(40)) for i in range(n))


@pytest.fixture(scope="module")
def server(embedder):
    with EmbedServer(embedder.encode) as srv:
        yield srv


@pytest.fixture(autouse=True)
def reset(server, monkeypatch):
    server.script.clear()
    server.fail_rate = 0.0
    server.latency_s = 0.0
    server.require_key = None
    server.log.clear()
    server.max_in_flight = 0
    for var in ("RAGCTL_EMBED_KEY", "RAGCTL_EMBED_URL", "RAGCTL_EMBED_MODEL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RAGCTL_EMBED_TIMEOUT", "5")


def remote_embedder(url: str, **kw):
    from ragctl.runtimes.remote import RemoteEmbedder, RemoteSettings, remote_spec

    settings = RemoteSettings(url=url, **kw)
    return RemoteEmbedder(remote_spec(None, settings), settings)


TEXTS = [f"Text number {i}: " + " ".join(f"word{i * j % 97}" for j in range(i % 23 + 1)) for i in range(70)]


def test_vectors_equal_local_encoding_in_input_order(server, embedder):
    remote = remote_embedder(server.url, batch=8, concurrency=4)
    server.latency_s = 0.05
    got = remote.encode(TEXTS)
    want = embedder.encode(TEXTS)
    assert got.shape == (70, 384) and got.dtype == np.float32
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # normalised on receipt (server scales x3.5)
    assert float((got * want).sum(axis=1).min()) >= 0.999  # order kept although replies are shuffled
    assert len(server.log) == 9 and server.max_in_flight >= 3  # requests overlap
    assert remote.describe()["backend"] == "remote" and KEY not in json.dumps(remote.describe())


def test_retries_honour_retry_after_and_recover_from_500_and_timeouts(server, embedder):
    texts = TEXTS[:12]
    remote = remote_embedder(server.url, batch=12, concurrency=1, timeout_s=1.5)
    server.script.extend([("429", 1), ("500",), ("hang", 3), ("ok",)])
    started = time.monotonic()
    got = remote.encode(texts)
    assert time.monotonic() - started >= 1.0  # waited as Retry-After asked
    assert [e["action"] for e in server.log][:3] == [("429", 1), ("500",), ("hang", 3)]
    assert server.log[1]["t"] - server.log[0]["t"] >= 0.95
    assert remote.retries == 3 and remote.requests == 4
    assert float((got * embedder.encode(texts)).sum(axis=1).min()) >= 0.999


def test_permanent_errors_fail_only_the_rows_of_their_request(server, embedder, monkeypatch):
    monkeypatch.setattr("ragctl.runtimes.remote.BACKOFF_BASE_S", 0.01)
    texts = list(TEXTS[:40])
    texts[3] = "POISON-DIM " + texts[3]  # request 0 (rows 0-9): wrong dimension
    texts[25] = "POISON-400 " + texts[25]  # request 2 (rows 20-29): refused
    remote = remote_embedder(server.url, batch=10, concurrency=2, retries=2)
    server.script.extend([("ok",), ("ok",), ("ok",), ("500",), ("500",), ("500",)])  # request 3: retries exhausted
    with pytest.raises(EncodeFailure) as info:
        remote.encode(texts)
    failed = info.value.failed
    assert set(failed) == set(range(0, 10)) | set(range(20, 30)) | set(range(30, 40))
    assert "expected 384" in failed[0] and "HTTP 400" in failed[20] and "gave up after 3 attempts" in failed[30]
    good = info.value.vectors[10:20]
    assert float((good * embedder.encode(texts[10:20])).sum(axis=1).min()) >= 0.999


def test_settings_are_checked_and_a_remote_model_without_tokenizer_is_refused(server, monkeypatch):
    from ragctl.runtimes.remote import RemoteSettings, remote_spec

    for url in ("ftp://x/v1", "http://user:pw@host/v1", "not a url"):
        with pytest.raises(ConfigError):
            RemoteSettings(url=url)
    with pytest.raises(ConfigError, match="no local tokenizer"):
        remote_spec(None, RemoteSettings(url=server.url, model="text-embedding-3-small"))
    spec = remote_spec(None, RemoteSettings(url=server.url, model="sentence-transformers/all-MiniLM-L6-v2"))
    assert spec.max_tokens == 256 and spec.name == "remote:127.0.0.1/sentence-transformers/all-MiniLM-L6-v2"
    monkeypatch.delenv("NOPE_KEY", raising=False)
    with pytest.raises(ConfigError, match="NOPE_KEY"):
        remote_embedder(server.url, key_env="NOPE_KEY")


def test_cli_ingest_through_a_flaky_service_indexes_each_file_exactly_once(server, tmp_path, monkeypatch):
    """The whole run through the CLI: random 429/500s, two documents whose requests fail for good.
    Only those two fail (with a reason); a re-run after the service is fixed indexes just them."""
    monkeypatch.setattr("ragctl.runtimes.remote.BACKOFF_BASE_S", 0.02)
    root, store = tmp_path / "docs", tmp_path / "store"
    files = {f"{e}/doc{i}.md": paragraphs(f"{e}{i}") for e in ("alpha", "beta") for i in range(5)}
    files["alpha/bad-dim.md"] = paragraphs("baddim", 2, "POISON-DIM")
    files["beta/refused.md"] = paragraphs("refused", 2, "POISON-400")
    make_tree(root, files)
    server.fail_rate = 0.3
    server.require_key = KEY
    env = {"MY_EMBED_KEY": KEY}
    # batch 1: a permanent error fails only the poisoned document itself
    args = ["ingest", root, "--store", store, "--json", "--quiet", "--workers", "1", "--embed-url", server.url,
            "--embed-key-env", "MY_EMBED_KEY", "--embed-batch", "1", "--embed-concurrency", "4"]
    result = cli(*args, env=env)
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    failures = {f["path"]: f["error"] for f in report["failures"]}
    assert set(failures) == {"bad-dim.md", "refused.md"}, failures
    assert "expected 384" in failures["bad-dim.md"] and "HTTP 400" in failures["refused.md"]
    assert all(len(reason.splitlines()) == 1 for reason in failures.values())
    assert any(e["action"] for e in server.log)  # faults were injected, and retried
    assert all(e["auth"] == f"Bearer {KEY}" for e in server.log)
    assert server.max_in_flight >= 2
    # exactly once: verify is clean and every file has one record
    assert cli("verify", "--store", store, "--json").exit_code == 0
    records = json.loads((store / "doc_id_name_mapping" / "alpha.json").read_text())
    paths = sorted(r["path"] for r in records.values())
    assert paths == [f"doc{i}.md" for i in range(5)]
    metas = [json.loads(p.read_text()) for p in store.rglob("*.json") if "entity_id" in p.read_text()[:2000]]
    models = [m["model"] for m in metas if isinstance(m, dict) and isinstance(m.get("model"), dict)]
    assert models and all(m["name"] == "remote:127.0.0.1/all-MiniLM-L6-v2" and m["dim"] == 384 for m in models)
    # the key is in no file of the store
    for path in store.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    # the service is fixed: a re-run indexes just the two documents; nothing is duplicated
    server.fail_rate = 0.0
    server.log.clear()
    (root / "alpha/bad-dim.md").write_text(paragraphs("baddim", 2, "fixed"), encoding="utf-8")
    (root / "beta/refused.md").write_text(paragraphs("refused", 2, "fixed"), encoding="utf-8")
    result = cli(*args, env=env)
    assert result.exit_code == 0, result.output
    assert cli("verify", "--store", store, "--json").exit_code == 0
    for entity, n in (("alpha", 6), ("beta", 6)):
        records = json.loads((store / "doc_id_name_mapping" / f"{entity}.json").read_text())
        assert len(records) == n and len({r["path"] for r in records.values()}) == n
    sent = [t for e in server.log for t in e["texts"]]
    assert all("baddim" in t or "refused" in t for t in sent)  # only the two changed files were embedded
    # query through the service finds the document; the identity is recorded, not the key
    result = cli("query", "alpha", "alpha3 paragraph 1", "--store", store, "--json", "--mode", "vector",
                 "--embed-url", server.url, "--embed-key-env", "MY_EMBED_KEY", env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["results"][0]["path"] == "doc3.md"


def test_identity_mismatches_are_refused_with_exit_2(server, tmp_path):
    root, store = tmp_path / "docs", tmp_path / "store"
    make_tree(root, {"alpha/a.md": paragraphs("a", 1)})
    base = ["--store", store, "--quiet", "--workers", "1"]
    assert cli("ingest", root, *base, "--embed-url", server.url).exit_code == 0
    other_host = server.url.replace("127.0.0.1", "localhost")
    make_tree(root, {"alpha/b.md": paragraphs("b", 1)})
    for extra in ([], ["--embed-url", other_host], ["--embed-url", server.url, "--embed-dim", "768"],
                  ["--embed-url", server.url, "--embed-model", "text-embedding-3-small"]):
        result = cli("ingest", root, *base, *extra)
        assert result.exit_code == 2, (extra, result.output)
        assert len(result.output.strip().splitlines()) == 1, result.output
    result = cli("query", "alpha", "a", "--store", store)
    assert result.exit_code == 2 and "--embed-url" in result.output
    assert not server.log or all(len(e["texts"]) for e in server.log)
    assert "b.md" not in (store / "doc_id_name_mapping" / "alpha.json").read_text()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_ctrl_c_stops_cleanly_with_what_is_committed(server, tmp_path, monkeypatch):
    """SIGINT to a real `ragctl ingest` while requests are in flight: exit 130 within seconds,
    the store verifies, and a re-run finishes the rest with nothing indexed twice."""
    root, store = tmp_path / "docs", tmp_path / "store"
    make_tree(root, {f"alpha/doc{i:02d}.md": paragraphs(f"d{i}", 2) for i in range(24)})
    server.latency_s = 0.4
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAGCTL_EMBED_URL": server.url, "RAGCTL_EMBED_BATCH": "2",
           "RAGCTL_EMBED_CONCURRENCY": "1"}
    proc = subprocess.Popen([*RAGCTL, "ingest", str(root), "--store", str(store), "--quiet", "--workers", "1"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    deadline = time.monotonic() + 60
    while len(server.log) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    sent_at = time.monotonic()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert time.monotonic() - sent_at < 15
    assert "Traceback" not in err.decode()
    assert cli("verify", "--store", store, "--json").exit_code == 0
    server.latency_s = 0.0
    monkeypatch.setenv("RAGCTL_EMBED_TIMEOUT", "60")  # the stand-in server shares 2 busy cores
    result = cli("ingest", root, "--store", store, "--json", "--quiet", "--workers", "1", "--embed-url", server.url)
    assert result.exit_code == 0, result.output
    records = json.loads((store / "doc_id_name_mapping" / "alpha.json").read_text())
    assert sorted(r["path"] for r in records.values()) == [f"doc{i:02d}.md" for i in range(24)]
    assert cli("verify", "--store", store, "--json").exit_code == 0
    del out


def test_bench_embeds_through_the_service_too(server):
    """`ragctl bench --embed-url`: both runs and the model limit go through the service."""
    server.latency_s = 0.02
    result = cli("bench", "--entities", "2", "--docs", "2", "--embed-url", server.url, "--json", "--quiet",
                 "--embed-concurrency", "4", "--embed-batch", "8")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["docs"] == 4 and out["failed"] == 0 and out["backend"] == "remote"
    assert len(server.log) >= 3  # sequential, parallel and the model limit all asked the service


@pytest.mark.timeout(240)
def test_serve_embeds_uploads_and_searches_through_the_service(server, tmp_path):
    """`ragctl serve --embed-url`: uploads are embedded by the service, the key comes from the
    environment and never reaches the store, and search embeds the query there too."""
    from tests.test_serve import Server, upload

    server.require_key = KEY
    srv = Server(tmp_path / "store", "--embed-url", server.url, env={"RAGCTL_EMBED_KEY": KEY}).start()
    try:
        with srv.client() as client:
            r = upload(client, "acme", [("refunds.md", paragraphs("refund", extra="customers get refunds").encode())], wait=True)
            assert r.status_code == 200, r.text
            assert [f["status"] for f in r.json()["files"]] == ["indexed"]
            before = len(server.log)
            hits = client.post("/api/entities/acme/search", json={"query": "refund paragraph", "k": 3, "mode": "vector"})
            assert hits.status_code == 200, hits.text
            assert hits.json()["results"][0]["path"] == "refunds.md" and len(server.log) == before + 1
    finally:
        srv.stop()
    meta = json.loads((tmp_path / "store" / "entities" / "acme" / "entity.json").read_text())
    assert meta["model"]["name"].startswith("remote:127.0.0.1/")
    assert not any(KEY.encode() in p.read_bytes() for p in (tmp_path / "store").rglob("*") if p.is_file())
