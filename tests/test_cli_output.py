"""What the commands show, and where: real files with awkward names, real processes.

* paths with rich markup characters (`report [final].txt`, `notes[/bad].pdf`) are shown as
  they are and never raise MarkupError;
* a file name that is not valid UTF-8 (b"caf\\xe9-menu.txt") is indexed, stored, queried,
  verified, re-run as unchanged, migrated and shown without crashing;
* stdout carries only --json (or a command's plain answer); tables go to stderr;
* `verify --repair` reports exactly what it repaired and exactly what it did not.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import RAGCTL, drop_vectors, make_tree
from typer.testing import CliRunner

from ragctl.cli.app import app

LATIN1 = b"caf\xe9-menu.txt"
LATIN1_ID = "caf\\xe9-menu.txt"  # its identity: the undecodable byte as a visible \xNN escape
FILES = {
    "bistro/report [final].txt": "Quarterly report: the terrace opens in April and closes in October.\n",
    "bistro/boats.md": "# Boats\n\nSailing boats heel in strong wind; reef the mainsail before the squall.\n",
    "bistro/notes[/bad].pdf": b"%PDF-1.4 this is not a readable PDF at all",
}


def cli(*args: object, input: str | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input)


def as_json(result) -> dict:
    assert result.stdout.strip(), result.output
    return json.loads(result.stdout)


def write_latin1(directory: Path) -> None:
    with open(os.path.join(os.fsencode(directory), LATIN1), "wb") as fh:
        fh.write(b"Soupe du jour: French onion soup, served with gruyere toast until three.\n")


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = make_tree(tmp_path_factory.mktemp("tree") / "docs", FILES)
    try:
        write_latin1(root / "bistro")
    except (OSError, UnicodeError):  # pragma: no cover
        pytest.skip("this file system does not accept non-UTF-8 file names")
    return root


@pytest.fixture(scope="module")
def ingested(tree, embedder, tmp_path_factory):
    """The tree ingested once through the CLI, with progress and summary on (not --quiet)."""
    store = tmp_path_factory.mktemp("s") / "store"
    result = cli("ingest", tree, "--store", store, "--json")
    assert result.exit_code == 1, result.output  # the broken PDF fails, the rest is indexed
    return store, result


def test_ingest_shows_markup_characters_verbatim(ingested):
    _, result = ingested
    summary = json.loads(result.stdout)
    assert summary["entities"]["bistro"]["indexed"] == 3 and summary["entities"]["bistro"]["failed"] == 1
    assert [f["path"] for f in summary["failures"]] == ["notes[/bad].pdf"]
    assert "failed bistro/notes[/bad].pdf: " in result.stderr
    assert "bistro: 4 files (1 failed, 3 indexed)" in result.stderr
    assert "Ingest summary" in result.stderr and "Ingest summary" not in result.stdout


def test_usage_error_with_markup_in_the_path_is_shown_verbatim(tmp_path):
    missing = tmp_path / "notes[" / "bad].pdf"
    result = cli("ingest", missing, "--store", tmp_path / "store")
    assert result.exit_code == 2, result.output
    assert f"error: {missing}: not a directory" in result.stderr


def test_non_utf8_name_is_stored_queried_and_shown(ingested):
    store, _ = ingested
    records = json.loads((store / "doc_id_name_mapping" / "bistro.json").read_text(encoding="utf-8"))
    by_path = {r["path"]: r for r in records.values()}
    assert set(by_path) == {"report [final].txt", "boats.md", LATIN1_ID}
    assert by_path[LATIN1_ID]["name"] == LATIN1_ID
    hits = as_json(cli("query", "bistro", "onion soup with toast", "--store", store, "--json", "-k", "1"))
    assert hits["results"][0]["path"] == LATIN1_ID
    plain = cli("query", "bistro", "onion soup with toast", "--store", store, "-k", "3")
    assert plain.exit_code == 0 and LATIN1_ID in plain.stdout and "report [final].txt" in plain.stdout
    assert as_json(cli("stats", "--store", store, "--json"))["entities"]["bistro"]["documents"] == 3
    assert cli("verify", "--store", store).exit_code == 0


def test_rerun_with_non_utf8_name_is_unchanged(ingested, tree, tmp_path):
    store, _ = ingested
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    again = cli("ingest", tree, "--store", copy, "--json", "--quiet")
    row = json.loads(again.stdout)["entities"]["bistro"]
    assert row["unchanged"] == 3 and row["indexed"] == row["updated"] == row["moved"] == 0, again.output


def test_non_utf8_name_survives_migration_of_a_monolithic_store(tree, embedder, tmp_path):
    store = tmp_path / "mono"
    first = cli("ingest", tree, "--store", store, "--no-sharding", "--json", "--quiet")
    assert json.loads(first.stdout)["entities"]["bistro"]["indexed"] == 3, first.output
    legacy = json.loads((store / "doc_id_name_mapping.json").read_text(encoding="utf-8"))
    assert LATIN1_ID in {r["path"] for r in legacy.values()}
    migrated = cli("migrate-to-sharded", "--store", store, "--json")
    assert migrated.exit_code == 0, migrated.output
    assert as_json(migrated)["migrated"] == 3
    human = cli("migrate-to-sharded", "--store", store)
    assert human.exit_code == 0, human.output
    shard = json.loads((store / "doc_id_name_mapping" / "bistro.json").read_text(encoding="utf-8"))
    assert LATIN1_ID in {r["path"] for r in shard.values()}
    hits = as_json(cli("query", "bistro", "onion soup with toast", "--store", store, "--json", "-k", "1"))
    assert hits["results"][0]["path"] == LATIN1_ID
    assert cli("verify", "--store", store).exit_code == 0


def test_stats_table_goes_to_stderr_in_a_real_process(ingested, tmp_path):
    store, _ = ingested
    odd = tmp_path / "st[" / "x]"  # a store path that is also rich markup
    shutil.copytree(store, odd)
    proc = subprocess.run([*RAGCTL, "stats", "--store", str(odd)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert "bistro" in proc.stderr and "documents" in proc.stderr
    assert str(odd) in proc.stderr.replace("\n", "") or "st[/x]" in proc.stderr
    proc = subprocess.run([*RAGCTL, "stats", "--store", str(odd), "--json"], capture_output=True, text=True, timeout=120)
    assert json.loads(proc.stdout)["entities"]["bistro"]["documents"] == 3


def test_verify_repair_reports_exactly_what_it_repaired_and_what_it_did_not(ingested, tmp_path):
    store, _ = ingested
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    shard_path = copy / "doc_id_name_mapping" / "bistro.json"
    records = json.loads(shard_path.read_text(encoding="utf-8"))
    by_path = {r["path"]: (k, r) for k, r in records.items()}
    # repairable: boats.md's vector is gone from the index (the record is dropped, re-indexed later)
    boats_key, boats = by_path["boats.md"]
    drop_vectors(copy, "bistro", [int(boats["first_vector_id"]) + i for i in range(int(boats["chunk_count"]))])
    # not repairable: a record without its "name" field (the word "missing" is in its problem)
    report_key, _ = by_path["report [final].txt"]
    del records[report_key]["name"]
    shard_path.write_text(json.dumps(records), encoding="utf-8")

    before = cli("verify", "--store", copy, "--json")
    assert before.exit_code == 1
    problems = json.loads(before.stdout)["entities"]["bistro"]["problems"]
    lost = "boats.md: 1 of 1 vectors missing from the index"
    unrepairable = f"record {report_key}: missing fields name"
    assert sorted(problems) == sorted([lost, unrepairable])

    repair = cli("verify", "--store", copy, "--repair", "--json")
    assert repair.exit_code == 1, repair.output  # something is still wrong: not ok
    check = json.loads(repair.stdout)["entities"]["bistro"]
    assert check["problems"] == [unrepairable]
    assert [r for r in check["repaired"] if "boats.md" in r] == [
        f"{lost}: dropped the record (re-run ingest to re-index the file)"
    ]
    assert not check["ok"] and check["documents"] == 2
    assert boats_key not in json.loads(shard_path.read_text(encoding="utf-8"))

    plain = cli("verify", "--store", copy, "--repair")
    assert plain.exit_code == 1
    assert f"problem: {unrepairable}" in plain.stdout and "store has problems" in plain.stdout
    assert "boats.md" not in plain.stdout  # repaired by the previous run: nothing left to say


def test_bench_table_goes_to_stderr_and_json_to_stdout(monkeypatch):
    import ragctl.bench
    from ragctl.bench import BenchResult

    result = BenchResult(
        sequential_s=2.0, parallel_s=1.0, model_limit_s=0.9, docs=4, chunks=40, workers=2, cores=2,
        parse_workers=2, precision="fp32", embed_window=256, corpus={"entities": 2, "documents": 4},
        model_load_s=1.0, warmup_s=0.5, sequential_encode_s=1.5, parallel_encode_s=0.9,
        parallel_first_embed_s=0.2, failed=0, repeat=1, model={"name": "m [x]"},
    )
    monkeypatch.setattr(ragctl.bench, "run_bench", lambda config, on_event=None, embedder=None: result)
    plain = cli("bench", "--entities", "1", "--docs", "1")
    assert plain.exit_code == 0, plain.output
    assert plain.stdout == "" and "Speedup" in plain.stderr and "m [x] fp32" in plain.stderr
    as_json_out = cli("bench", "--entities", "1", "--docs", "1", "--json", "--quiet")
    assert json.loads(as_json_out.stdout)["speedup"] == 2.0 and "Speedup" not in as_json_out.output


def test_unsupported_non_utf8_suffix_reason_is_valid_utf8(tmp_path, embedder):
    root = make_tree(tmp_path / "docs", {"e/ok.md": "# Ok\n\nA small document about harbour ledgers.\n"})
    with open(os.path.join(os.fsencode(root / "e"), b"odd.t\xe9xt"), "wb") as fh:
        fh.write(b"hello")
    result = cli("ingest", root, "--store", tmp_path / "store", "--json", "--quiet")
    reasons = [s["reason"] for s in json.loads(result.stdout)["skipped_files"]]
    for reason in reasons:
        reason.encode("utf-8")  # a surrogate escape cannot be encoded
