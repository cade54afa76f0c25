"""Helpers the tests import (`from helpers import make_tree, RAGCTL`); fixtures are in conftest.py.

* `make_tree(root, {"entity/file.md": "text"})` writes a document tree;
* `REPO`, `SAMPLE_DOCS`: the repository and its sample tree;
* `RAGCTL`: argv prefix that runs the CLI in a subprocess with this interpreter;
* `cli(*args)`: the CLI in this process (CliRunner; typer imported only when called);
* `copy_built(root, store, dest)`: a copy of a module fixture's tree and store, to change;
* `segment_doc`, `SEGMENT_MODEL`: the random-vector documents of tests/test_segments.py, here so
  that its writer subprocesses import them without pytest, typer and the CLI.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DOCS = REPO / "sample_docs"
RAGCTL = [sys.executable, "-m", "ragctl"]


def make_tree(root: Path, files: Mapping[str, str | bytes]) -> Path:
    """Write `{relative/path: text or bytes}` under `root`; returns `root`."""
    root = Path(root)
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


SEGMENT_DIM = 16
SEGMENT_MODEL = {"name": "fake-16d", "digest": "a" * 64, "dim": SEGMENT_DIM}


def unit_vectors(n: int, seed: int, dim: int = SEGMENT_DIM) -> Any:
    """n random unit vectors (float32), the same for the same seed."""
    import numpy as np

    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def segment_doc(path: str, version: int = 0, n: int = 3) -> Any:
    """A `PreparedDoc` whose texts and vectors follow from (path, version): checkable later."""
    import hashlib

    from ragctl.storage.entity import PreparedDoc

    text = f"{path} v{version}"
    seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
    return PreparedDoc(path, hashlib.sha256(text.encode()).hexdigest(), len(text), 0,
                       [f"{text} chunk {i}" for i in range(n)], unit_vectors(n, seed))


def cli(*args: object, **kwargs: Any) -> Any:
    """Run `ragctl ARGS...` in this process (Typer's CliRunner); returns its Result."""
    from typer.testing import CliRunner

    from ragctl.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args], **kwargs)


def copy_built(root: Path, store: Path, dest: Path, tree_name: str = "docs") -> tuple[Path, Path]:
    """Copy a built tree and its store under `dest` (mtimes kept: a re-run sees them unchanged),
    for a test that changes what a shared module fixture built."""
    import shutil

    shutil.copytree(root, dest / tree_name)
    shutil.copytree(store, dest / "store")
    return dest / tree_name, dest / "store"


def strip_passage_sections(store: Path, entity: str, sql_index: bool = False) -> None:
    """An entity as a release before passage sections wrote it: segment files without the
    section (the bytes the old writer wrote), entity.json without the flags and, with
    `sql_index`, the SQL index over passage keys that release kept."""
    import sqlite3

    from ragctl.fsutil import atomic_write_json, read_json
    from ragctl.storage.segments import segment_vectors, write_segment

    meta_path = store / "entities" / entity / "entity.json"
    meta = read_json(meta_path)
    for entry in meta["vectors"]["segments"]:
        path = store / "entities" / entity / "segments" / entry["name"]
        ids, vectors = segment_vectors(path)
        write_segment(path, ids, vectors, entry.get("kind", "flat"))
        entry.pop("passages", None)
    atomic_write_json(meta_path, meta)
    if sql_index:
        with sqlite3.connect(store / "entities" / entity / "chunks.sqlite") as conn:
            conn.execute("CREATE INDEX IF NOT EXISTS chunks_passage ON chunks(passage)")


def drop_vectors(store: Path, entity: str, ids: Any) -> None:
    """Delete vectors behind the store's back, as a lost write would: the segments holding them
    are rewritten without them (their passage sections too)."""
    import numpy as np

    from ragctl.fsutil import atomic_write_json, read_json
    from ragctl.storage.segments import read_segment_passages, segment_vectors, write_segment

    meta_path = store / "entities" / entity / "entity.json"
    meta = read_json(meta_path)
    for entry in meta["vectors"]["segments"]:
        path = store / "entities" / entity / "segments" / entry["name"]
        sid, vecs = segment_vectors(path)
        section = read_segment_passages(path)
        prefixes = None if section is None else section[0][np.argsort(section[1], kind="stable")]
        keep = ~np.isin(sid, np.asarray(list(ids), dtype=np.int64))
        written = write_segment(path, sid[keep], vecs[keep], prefixes=None if prefixes is None else prefixes[keep])
        entry["count"] = int(written["count"])
    atomic_write_json(meta_path, meta)

