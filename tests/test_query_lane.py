"""A search query never waits for an ingest's encode window on the shared model (OpenVINO's
query lane): `ragctl serve` embeds uploads and answers searches with one model."""

from __future__ import annotations

import threading

import numpy as np
import pytest


@pytest.mark.timeout(60)
def test_a_query_is_embedded_while_the_model_is_busy_and_gets_the_same_vector(embedder):
    if embedder.backend != "openvino":
        pytest.skip("the query lane is OpenVINO's; torch queries wait for the call in progress")
    queries = ["how do I pin a git dependency to one commit", "which features are on by default"]
    idle = embedder.encode(queries)  # the model is free: the ordinary path

    held, release = threading.Event(), threading.Event()

    def big_call_in_progress() -> None:
        with embedder._lock:  # what an ingest window holds for seconds
            held.set()
            release.wait(30)

    busy = threading.Thread(target=big_call_in_progress, daemon=True)
    busy.start()
    assert held.wait(10)
    try:
        answered: list[np.ndarray] = []
        query = threading.Thread(target=lambda: answered.append(embedder.encode(queries)), daemon=True)
        query.start()
        query.join(20)  # without the lane it would wait for the lock, i.e. forever here
        assert answered, "the query waited for the busy model"
    finally:
        release.set()
        busy.join(10)
    lane = answered[0]
    assert lane.shape == idle.shape and lane.dtype == np.float32
    assert np.allclose(np.linalg.norm(lane, axis=1), 1.0, atol=1e-5)
    assert float((lane * idle).sum(axis=1).min()) > 0.999  # same model, same precision

    # a big call (an ingest window) still waits its turn: it never takes the lane
    with embedder._lock:
        waiting = threading.Thread(target=lambda: embedder.encode(queries * 5), daemon=True)
        waiting.start()
        waiting.join(1.0)
        assert waiting.is_alive()
    waiting.join(20)
    assert not waiting.is_alive()


@pytest.mark.timeout(120)
def test_serve_prepares_the_lane_as_soon_as_its_model_is_loaded(tmp_path, monkeypatch, embedder):
    """The service's engine asks for the lane right after loading the model (in a thread of its
    own), with the very model its searches share, before any upload or search arrives."""
    import time

    from ragctl.embedding import LocalEmbedder
    from ragctl.serve.app import build_services
    from ragctl.serve.config import ServeConfig

    calls: list[object] = []
    real = LocalEmbedder.prepare_query_lane

    def spy(self: LocalEmbedder) -> bool:
        calls.append(self)
        return real(self)

    monkeypatch.setattr(LocalEmbedder, "prepare_query_lane", spy)
    services = build_services(ServeConfig(store=tmp_path / "store"))
    services.engine.start([])
    try:
        deadline = time.monotonic() + 60
        while not calls and time.monotonic() < deadline:
            time.sleep(0.05)
        assert calls, "the engine never prepared the query lane"
        assert calls[0] is services.engine.embedder and len(calls) == 1
    finally:
        services.engine.stop()


@pytest.mark.timeout(60)
def test_the_lane_can_be_compiled_ahead_of_the_first_busy_query(embedder):
    """`ragctl serve` compiles the lane right after loading the model, so the first search that
    arrives during an upload does not pay the compilation (1-3 s measured) itself."""
    if embedder.backend != "openvino":
        assert embedder.prepare_query_lane() is False  # torch: no lane, nothing compiled
        return
    assert embedder.prepare_query_lane() is True
    lane = embedder._runtime._lane
    assert lane is not None
    assert embedder.prepare_query_lane() is True and embedder._runtime._lane is lane  # compiled once
