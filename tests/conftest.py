"""Shared fixtures (keep this small and generic; importable helpers live in helpers.py).

* `make_tree`: a fixture returning `helpers.make_tree`, for tests that prefer fixtures;
* `embedder`: the real default model, loaded once per session and shared with every in-process
  ingest (`load_embedder` is what the pipeline uses too);
* `sample_docs`: the repository's sample tree; `ragctl_cmd`: argv prefix that runs the CLI in
  a subprocess with this interpreter.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import RAGCTL, SAMPLE_DOCS, make_tree


@pytest.fixture(name="make_tree")
def make_tree_fixture():
    return make_tree


@pytest.fixture(scope="session", autouse=True)
def embedder():
    """The default model as `auto` resolves it here, loaded once per session. Autouse: on a
    machine whose model cache is cold, the first load converts (and quantises, int8) the model
    once, here, instead of inside whichever CLI subprocess a test happens to start first."""
    from ragctl.embedding import load_embedder
    from ragctl.model_config import ModelConfig

    return load_embedder(ModelConfig())


@pytest.fixture(scope="session")
def sample_docs() -> Path:
    return SAMPLE_DOCS


@pytest.fixture(scope="session")
def ragctl_cmd() -> list[str]:
    return list(RAGCTL)
