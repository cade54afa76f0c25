"""One model configuration, honoured by every entry point (issue: ingest --backend was ignored,
query hard-coded fp32, bench and the library built their own model).

Each entry point is asked for a non-default runtime (torch fp32, where auto picks OpenVINO
here) and must say - in its report, `--json` and entity.json - that it used it. The Ray
entry point is tested in test_ray.py, the service in test_serve.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from helpers import make_tree
from typer.testing import CliRunner

from ragctl.cli.app import app
from ragctl.errors import ConfigError
from ragctl.model_config import ModelConfig

TORCH = ModelConfig(backend="torch", precision="fp32")
MODEL_OPTIONS = {"--model", "--backend", "--precision", "--device", "--batch-size", "--embed-url", "--embed-model",
                 "--embed-key-env", "--embed-concurrency", "--embed-batch", "--embed-dim"}


def tree(root: Path) -> Path:
    return make_tree(root, {
        "acme/refunds.md": "# Refunds\n\nCustomers may ask for a refund within forty-five days of purchase.\n",
        "acme/vacation.md": "# Leave\n\nUp to five unused vacation days carry over into the next year.\n",
    })


def cli(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("settings, words", [
    ({"backend": "onnx"}, "backend"), ({"precision": "fp16"}, "precision"),
    ({"device": "tpu"}, "device"), ({"batch_size": 0}, "batch size"),
])
def test_bad_settings_are_one_config_error(settings, words):
    with pytest.raises(ConfigError, match=words):
        ModelConfig(**settings)


def test_every_embedding_command_declares_the_same_model_options():
    group = typer.main.get_command(app)
    seen = {}
    for name in ("ingest", "query", "eval", "bench", "serve", "mcp", "watch"):
        command = group.commands.get(name)  # type: ignore[attr-defined]
        if command is None:
            continue
        options = {opt: param for param in command.params for opt in param.opts}
        assert MODEL_OPTIONS <= options.keys(), (name, MODEL_OPTIONS - options.keys())
        seen[name] = {opt: options[opt].help for opt in MODEL_OPTIONS}
    assert {"ingest", "query", "bench"} <= seen.keys()
    assert len({json.dumps(helps, sort_keys=True) for helps in seen.values()}) == 1, "option help drifted"


def test_a_bad_model_option_is_exit_2_with_one_line(tmp_path):
    code, out, err = cli("ingest", tree(tmp_path / "docs"), "--store", tmp_path / "store", "--backend", "onnx")
    assert code == 2 and err.strip().startswith("error: backend must be auto, torch or openvino")
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "store").exists()


def test_ingest_and_query_honour_backend_and_precision(tmp_path):
    store = tmp_path / "store"
    code, out, err = cli("ingest", tree(tmp_path / "docs"), "--store", store, "--backend", "torch",
                         "--precision", "fp32", "--json", "--quiet")
    assert code == 0, err
    model = json.loads(out)["model"]
    assert (model["backend"], model["precision"]) == ("torch", "fp32") and model["runtime"].startswith("torch ")
    meta = json.loads((store / "entities" / "acme" / "entity.json").read_text())
    assert meta["embedded_by"] == {"backend": "torch", "precision": "fp32", "device": "cpu", "runtime": model["runtime"]}

    for backend in ("torch", "openvino"):  # the query's own setting is used, not a hard-coded one
        code, out, err = cli("query", "acme", "how long do I have to return something", "--store", store,
                             "--backend", backend, "--precision", "fp32", "--mode", "vector", "--json")
        assert code == 0, err
        answer = json.loads(out)
        assert (answer["model"]["backend"], answer["model"]["precision"]) == (backend, "fp32")
        assert answer["results"][0]["path"] == "refunds.md"


def test_the_ingest_summary_names_backend_and_runtime(tmp_path):
    code, _, err = cli("ingest", tree(tmp_path / "docs"), "--store", tmp_path / "store", "--backend", "torch",
                       "--precision", "fp32")
    assert code == 0
    assert "all-MiniLM-L6-v2 torch fp32 on cpu (torch " in " ".join(err.split())


def test_library_manager_uses_its_model_config_for_ingest_and_query(tmp_path):
    from ragctl.embedding import load_embedder
    from ragctl.manager import EntityRAGManager

    docs = tree(tmp_path / "docs")
    manager = EntityRAGManager(tmp_path / "store", model=TORCH)
    report = manager.add_documents("acme", [docs / "acme"])
    assert not report.any_failed and (report.model["backend"], report.model["precision"]) == ("torch", "fp32")
    hits = manager.query("acme", "carry over vacation days", k=1, mode="vector")
    assert hits[0].path == "vacation.md"
    searcher = manager._searchers["acme"]
    assert searcher.embedder is load_embedder(TORCH), "query and ingest share one model per process"


def test_bench_measures_the_configured_runtime(tmp_path):
    from ragctl.bench import BenchConfig, run_bench

    result = run_bench(BenchConfig(entities=1, docs=2, model=TORCH, skip_sequential=True, keep=tmp_path / "bench"))
    assert (result.model["backend"], result.precision) == ("torch", "fp32")


def test_one_embedder_per_resolved_config_per_process():
    from ragctl.embedding import load_embedder
    from ragctl.model_spec import resolve_model

    default = load_embedder(TORCH)
    by_path = load_embedder(TORCH.with_model(str(resolve_model(None).path)))
    assert default is by_path, "None and the default model's path are the same model: one copy"
    assert load_embedder(ModelConfig(backend="torch", precision="fp32", batch_size=8)) is not default
