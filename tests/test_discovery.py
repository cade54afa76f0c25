"""Discovery: non-UTF-8 file names get a printable, JSON-safe identity; abs_path opens the file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ragctl.discovery import discover_entities, identity_path, source_from_paths, walk_files

LATIN1_NAME = b"caf\xe9-menu.txt"  # "café-menu.txt" written by a Latin-1 system


def _latin1_tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    entity = root / "bistro"
    (entity / "menus").mkdir(parents=True)
    try:
        with open(os.path.join(os.fsencode(entity / "menus"), LATIN1_NAME), "wb") as fh:
            fh.write(b"Soupe du jour: onion soup, served until 3 pm.\n")
    except (OSError, UnicodeError):  # pragma: no cover - a file system that refuses such names
        pytest.skip("this file system does not accept non-UTF-8 file names")
    (entity / "notes.md").write_text("# Notes\n\nOpen every day.\n", encoding="utf-8")
    (entity / "déjà vu.md").write_text("valid UTF-8 names stay as they are\n", encoding="utf-8")
    return root


def test_identity_path_escapes_only_undecodable_bytes():
    assert identity_path(os.fsdecode(b"menus/caf\xe9-menu.txt")) == "menus/caf\\xe9-menu.txt"
    assert identity_path("déjà vu.md") == "déjà vu.md"
    assert identity_path(Path("a") / "b.txt") == "a/b.txt"


def test_walk_files_gives_json_safe_identity_and_real_abs_path(tmp_path):
    root = _latin1_tree(tmp_path)
    files = {f.rel_path: f for f in walk_files(root / "bistro")}
    assert set(files) == {"menus/caf\\xe9-menu.txt", "notes.md", "déjà vu.md"}
    odd = files["menus/caf\\xe9-menu.txt"]
    # the identity is ordinary text: UTF-8 encodable, JSON round-trips, no surrogates
    odd.rel_path.encode("utf-8")
    assert json.loads(json.dumps({"path": odd.rel_path}, ensure_ascii=False))["path"] == odd.rel_path
    # abs_path is the real on-disk name: it opens the file
    assert os.fsencode(odd.abs_path).endswith(b"/menus/" + LATIN1_NAME)
    assert odd.abs_path.read_bytes().startswith(b"Soupe du jour")


def test_discover_entities_and_source_from_paths_agree(tmp_path):
    root = _latin1_tree(tmp_path)
    (source,) = discover_entities(root)
    walked = sorted(f.rel_path for f in source.list_files())
    explicit = source_from_paths("bistro", [root / "bistro"])
    assert sorted(f.rel_path for f in explicit.list_files()) == walked
    # a single explicit file is named relative to its parent directory, escaped the same way
    odd = Path(os.fsdecode(os.path.join(os.fsencode(root / "bistro" / "menus"), LATIN1_NAME)))
    single = source_from_paths("bistro", [odd, root / "bistro" / "notes.md"])
    assert sorted(f.rel_path for f in single.list_files()) == ["menus/caf\\xe9-menu.txt", "notes.md"]
    for f in single.list_files():
        assert f.abs_path.exists()


@pytest.mark.timeout(120)
def test_directories_whose_names_cannot_be_entity_ids_are_reported_not_silently_skipped(tmp_path, embedder):
    from helpers import cli, make_tree

    root = make_tree(tmp_path / "docs", {
        "acme/a.md": "# A\n\nRefunds take five days.\n",
        "bad name!/b.md": "# B\n\nnever indexed\n",
        "Über/c.md": "# C\n\nnever indexed\n",
    })
    store = tmp_path / "store"
    result = cli("ingest", root, "--store", store, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["entities"]["acme"]["indexed"] == 1 and set(report["entities"]) == {"acme"}
    skipped = {Path(s["path"]).name: s["reason"] for s in report["skipped_directories"]}
    assert set(skipped) == {"bad name!", "Über"}
    assert all("is not a valid entity id" in reason for reason in skipped.values())
    lines = [line for line in result.stderr.splitlines() if line.startswith("warning: skipped directory")]
    assert len(lines) == 2 and any("bad name!" in line for line in lines)

    # asking for one entity: the others are not walked, so nothing is reported
    only = json.loads(cli("ingest", root, "--store", store, "--json", "--entities", "acme").stdout)
    assert only["skipped_directories"] == []

    # a root with nothing usable: the error names what was skipped and why, in one line
    bad_only = make_tree(tmp_path / "bad", {"My Docs/x.md": "x", "Über/y.md": "y"})
    result = cli("ingest", bad_only, "--store", tmp_path / "store2")
    assert result.exit_code == 2
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message
    assert "no entity directories" in message and "'My Docs'" in message and "'Über'" in message
