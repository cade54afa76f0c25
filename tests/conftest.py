"""Shared fixtures and helpers (keep this small and generic).

* `make_tree(root, {"entity/file.md": "text"})` writes a document tree (also a fixture that
  returns the function, for tests that prefer fixtures to imports);
* `embedder`: the real default model, loaded once per session and shared with every in-process
  ingest (`Embedder.shared` is what the pipeline uses too);
* `sample_docs`: the repository's sample tree; `ragctl_cmd`: argv prefix that runs the CLI in
  a subprocess with this interpreter.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

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


@pytest.fixture(name="make_tree")
def make_tree_fixture():
    return make_tree


@pytest.fixture(scope="session")
def embedder():
    from ragctl.embedding import Embedder, resolve_model

    return Embedder.shared(resolve_model(None))


@pytest.fixture(scope="session")
def sample_docs() -> Path:
    return SAMPLE_DOCS


@pytest.fixture(scope="session")
def ragctl_cmd() -> list[str]:
    return list(RAGCTL)
