"""OpenVINO runtime for sentence-transformers models (CPU, x86).

The whole sentence-transformers pipeline (transformer, pooling, dense layers, normalisation)
is converted once with `openvino.convert_model` and cached on disk, keyed by the model's
digest, the OpenVINO version and this converter's version:

    $RAGCTL_CACHE_DIR/openvino/<key>/    (default ~/.cache/ragctl/openvino/<key>/)
        model.xml, model.bin   the converted graph, f32 weights
        reference.npy          torch fp32 vectors of the probe texts (the self-check's truth)
        meta.json              written last; what was converted, from what, with what

A cache entry is built in a temp directory next to it and renamed into place under a file
lock, so a process killed mid-conversion leaves only a `.tmp-*` directory that the next
build removes; readers never see half an entry. Nothing is downloaded: conversion reads the
model from local disk.

Encoding keeps the CPU busy: texts are sorted by length, each batch is tokenised (padded
to a multiple of 16 tokens: bounded shapes, flat RSS) while earlier batches run on an
`AsyncInferQueue` of several infer requests; results land back in input order.

A few texts (a search query) can also go through the *query lane* (`encode_small`): the same
model compiled a second time for latency on one thread, with its own infer request and
tokenizer, so it runs beside an ingest's encode call instead of queueing behind it. Measured
(int8, 2 cores, an ingest encoding 256-chunk windows back to back): a one-query encode waited
19.9 s (p50) for the shared model, 1.0 s on a second request of the throughput-compiled model
(its streams are busy), and took 9 ms (p50; max 17 ms) on the lane.
"""

from __future__ import annotations

import json
import platform
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragctl.runtimes.model_cache import CONVERTER_VERSION, ensure_cached, openvino_version

if TYPE_CHECKING:
    import numpy as np

    from ragctl.model_spec import ModelSpec

PAD_TO_MULTIPLE_OF = 16
_X86 = {"x86_64", "amd64", "x86", "i386", "i686"}


def unavailable_reason() -> str | None:
    """Why the OpenVINO backend cannot be used here, or None."""
    machine = platform.machine().lower()
    if machine not in _X86:
        return f"OpenVINO backend is used on x86 CPUs only (this machine is {machine})"
    try:
        import openvino  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - ImportError, or a broken install
        return f"openvino is not installed ({type(exc).__name__}); pip install 'ragctl[openvino]'"
    return None


class _Wrapper:  # built lazily: torch is imported only when converting
    @staticmethod
    def make(model: Any) -> Any:
        import torch

        class SentenceGraph(torch.nn.Module):
            def __init__(self, st: Any) -> None:
                super().__init__()
                self.st = st

            def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
                features = {"input_ids": input_ids, "attention_mask": attention_mask}
                if token_type_ids is not None:
                    features["token_type_ids"] = token_type_ids
                emb = self.st(features)["sentence_embedding"].float()
                return torch.nn.functional.normalize(emb, p=2.0, dim=1)

        return SentenceGraph(model).eval()


def build_f32(spec: ModelSpec, dest: Path, probe_texts: list[str]) -> dict[str, Any]:
    """Convert the sentence-transformers model at spec.path into dest (f32 weights)."""
    import numpy as np
    import openvino as ov
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(spec.path), device="cpu", local_files_only=True)
    model.max_seq_length = spec.max_tokens
    model.eval()
    tokenizer = model.tokenizer
    example = tokenizer(
        ["An example sentence to trace the graph with.", "Short one."],
        padding=True, truncation=True, max_length=spec.max_tokens, return_tensors="pt",
    )
    with torch.no_grad(), warnings.catch_warnings():
        # tracing warns about Python conditions frozen into the graph (shapes of the example);
        # they hold for every input we feed (padding is masked). Quiet, and not errors under -W error.
        warnings.simplefilter("ignore")
        reference = model.encode(probe_texts, batch_size=len(probe_texts), convert_to_numpy=True, normalize_embeddings=True)
        converted = ov.convert_model(_Wrapper.make(model), example_input=dict(example))
    ov.save_model(converted, str(dest / "model.xml"), compress_to_fp16=False)
    np.save(dest / "reference.npy", np.asarray(reference, dtype=np.float32))
    return {
        "model": spec.name,
        "model_digest": spec.digest,
        "openvino": openvino_version(),
        "torch": torch.__version__,
        "converter": CONVERTER_VERSION,
        "inputs": list(example.keys()),
        "dim": int(reference.shape[1]),
    }


class _FastTokenizer:
    """`tokenizers.Tokenizer` from tokenizer.json, set up like the model's HF tokenizer
    (truncate to the window, pad to a multiple of 16). Importing transformers would cost
    seconds and import torch; this costs milliseconds."""

    def __init__(self, tok: Any) -> None:
        self.tok = tok


def _load_tokenizer(spec: ModelSpec) -> Any:
    path = spec.path / "tokenizer.json"
    if path.is_file():
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(path))
        config = _read_json(spec.path / "tokenizer_config.json")
        pad = config.get("pad_token") or _read_json(spec.path / "special_tokens_map.json").get("pad_token")
        if isinstance(pad, dict):
            pad = pad.get("content")
        pad_id = tok.token_to_id(pad) if isinstance(pad, str) else None
        if pad_id is not None:
            multiple = PAD_TO_MULTIPLE_OF if spec.max_tokens % PAD_TO_MULTIPLE_OF == 0 else None
            tok.enable_truncation(max_length=spec.max_tokens)
            tok.enable_padding(pad_id=pad_id, pad_token=pad, pad_to_multiple_of=multiple)
            return _FastTokenizer(tok)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(spec.path), local_files_only=True)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _normalise(vectors: np.ndarray) -> np.ndarray:
    import numpy as np

    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return vectors / norms


class OpenVINORuntime:
    """A compiled OpenVINO model plus its tokenizer; `encode` is not re-entrant (lock outside)."""

    def __init__(
        self,
        spec: ModelSpec,
        precision: str,  # "f32" | "bf16" | "int8"
        threads: int,
        batch_size: int,
        probe_texts: list[str],
        model_dir: Path | None = None,
    ) -> None:
        import numpy as np
        import openvino as ov

        self.spec = spec
        self.batch_size = batch_size
        self.precision = precision
        self.f32_dir = model_dir or ensure_cached(spec, "f32", lambda d: build_f32(spec, d, probe_texts))
        self.model_dir = self.f32_dir
        self.tokenizer = _load_tokenizer(spec)
        self.input_names = list(json.loads((self.f32_dir / "meta.json").read_text(encoding="utf-8"))["inputs"])
        # the precision of the layers in float: int8's as its gate judged them (INT8_ACTIVATIONS)
        activations = "bf16" if precision == "bf16" else "f32"
        if precision == "int8":
            from ragctl.runtimes.int8 import INT8_ACTIVATIONS, ensure_int8

            self.model_dir = ensure_int8(spec, self.f32_dir, self.tokenize, threads)
            activations = INT8_ACTIVATIONS
        self.activations = activations
        self.meta = json.loads((self.model_dir / "meta.json").read_text(encoding="utf-8"))
        core = ov.Core()
        config = {
            "PERFORMANCE_HINT": "THROUGHPUT",
            "INFERENCE_PRECISION_HINT": activations,
            "INFERENCE_NUM_THREADS": max(1, int(threads)),
        }
        model = core.read_model(str(self.model_dir / "model.xml"))
        self.input_names = [port.get_any_name() for port in model.inputs]
        self.compiled = core.compile_model(model, "CPU", config)
        requests = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.requests = max(2, requests)
        self.queue = ov.AsyncInferQueue(self.compiled, self.requests)
        self.queue.set_callback(self._done)
        self._errors: list[BaseException] = []
        self._core, self._model = core, model
        self._inference_precision = config["INFERENCE_PRECISION_HINT"]
        self._lane: tuple[Any, Any] | None = None  # (infer request, tokenizer), compiled on first use
        self._lane_lock = threading.Lock()
        self._lane_failed = False
        reference = np.load(self.f32_dir / "reference.npy")
        self.self_check = float((self.encode(probe_texts) * reference).sum(axis=1).min())

    def _done(self, request: Any, userdata: Any) -> None:
        out, rows = userdata
        try:
            out[rows] = request.get_output_tensor(0).data[: len(rows)]
        except BaseException as exc:  # noqa: BLE001 - re-raised by encode
            self._errors.append(exc)

    def tokenize(self, texts: list[str]) -> dict[str, Any]:
        return self._tokenize(self.tokenizer, texts)

    def _tokenize(self, tokenizer: Any, texts: list[str]) -> dict[str, Any]:
        import numpy as np

        if not isinstance(tokenizer, _FastTokenizer):
            enc = tokenizer(
                texts, padding=True, truncation=True, max_length=self.spec.max_tokens,
                pad_to_multiple_of=self.tokenizer_pad_multiple, return_tensors="np",
            )
            return {name: np.asarray(enc[name], dtype=np.int64) for name in self.input_names}
        encs = tokenizer.tok.encode_batch(texts)
        arrays = {
            "input_ids": np.array([e.ids for e in encs], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encs], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encs], dtype=np.int64),
        }
        return {name: arrays[name] for name in self.input_names}

    @property
    def tokenizer_pad_multiple(self) -> int | None:
        return PAD_TO_MULTIPLE_OF if self.spec.max_tokens % PAD_TO_MULTIPLE_OF == 0 else None

    def encode(self, texts: list[str]) -> np.ndarray:
        import numpy as np

        out = np.zeros((len(texts), self.spec.dim), dtype=np.float32)
        if not texts:
            return out
        order = np.argsort([-len(t) for t in texts], kind="stable")
        self._errors = []
        for start in range(0, len(texts), self.batch_size):
            rows = order[start : start + self.batch_size]
            inputs = self.tokenize([texts[i] for i in rows])  # overlaps the batches in flight
            self.queue.start_async(inputs, (out, rows))
        self.queue.wait_all()
        if self._errors:
            raise RuntimeError(f"OpenVINO inference failed: {self._errors[0]}") from self._errors[0]
        return _normalise(out)

    def prepare_query_lane(self) -> bool:
        """Compile the query lane now (about a second) instead of in the first search that
        needs it; whether there is one. Thread-safe; a server calls it once after loading."""
        with self._lane_lock:
            return self._ensure_lane() is not None

    def _ensure_lane(self) -> tuple[Any, Any] | None:
        """The lane's (infer request, tokenizer), compiled on first use; None if it cannot be
        had here (a failure is remembered). Caller holds the lane lock."""
        if self._lane is None and not self._lane_failed:
            try:
                compiled = self._core.compile_model(self._model, "CPU", {
                    "PERFORMANCE_HINT": "LATENCY",
                    "INFERENCE_PRECISION_HINT": self._inference_precision,
                    "INFERENCE_NUM_THREADS": 1,
                })
                self._lane = (compiled.create_infer_request(), _load_tokenizer(self.spec))
            except Exception:  # noqa: BLE001 - no lane: queries wait for the model as before
                self._lane_failed = True
        return self._lane

    def encode_small(self, texts: list[str]) -> np.ndarray | None:
        """A few texts on the query lane (see the module doc), beside any `encode` in progress;
        None if the lane cannot be had here (the caller then waits for the model). Thread-safe;
        the lane is compiled on first use unless `prepare_query_lane` did it already."""
        import numpy as np

        with self._lane_lock:
            lane = self._ensure_lane()
            if lane is None:
                return None
            request, tokenizer = lane
            request.infer(self._tokenize(tokenizer, texts))
            vectors = np.array(request.get_output_tensor(0).data[: len(texts)], dtype=np.float32)
        return _normalise(vectors)

    def describe(self) -> dict[str, Any]:
        return {"runtime": f"openvino {openvino_version()}", "model_cache": str(self.model_dir), "infer_requests": self.requests,
                "activations": self.activations}
