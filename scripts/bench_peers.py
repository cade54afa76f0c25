#!/usr/bin/env python3
"""LangChain's default indexing loop vs `ragctl ingest` on the same tree, in one run.

    python3 -m venv /tmp/peers && /tmp/peers/bin/pip install -c constraints.txt -e ".[bench-peers]"
    /tmp/peers/bin/python scripts/bench_peers.py ROOT --ragctl-python .venv/bin/python [--json]
        [--order ragctl-first]

(LangChain runs in the interpreter that runs this script: a venv of its own, since the
`bench-peers` extra moves huggingface_hub and transformers; `ragctl ingest` runs with
`--ragctl-python`, by default the same interpreter.)

ROOT is laid out like ingest's ROOT (one subdirectory per entity). LangChain's loop is the
one its docs teach: RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=100) ->
HuggingFaceEmbeddings (the same packaged all-MiniLM-L6-v2, on the same CPU threads) ->
FAISS.from_documents. To compare indexing rather than PDF/HTML extraction, LangChain gets its
text from ragctl's own parser (timed as part of its run). `ragctl ingest` runs as a subprocess
into a fresh store. Both wall times include loading the model.

Reported per side: wall seconds, chunks, word pieces in the chunks (after the model's
truncation to its window), and the share of chunks longer than the window (silently
truncated by sentence-transformers); for ragctl also `chunks_reused` (chunks whose passage was
embedded once already: model inputs = chunks - chunks_reused, issue 26) and the word pieces of
its model inputs. The 1-minute load average is recorded before and after each side.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _files(root: Path) -> list[Path]:
    from ragctl.parsing import is_supported

    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".") and is_supported(p))


def _token_stats(texts: list[str], window: int) -> dict[str, Any]:
    from ragctl.chunking import load_tokenizer
    from ragctl.model_spec import resolve_model

    tok = load_tokenizer(resolve_model(None).path)
    lengths = [len(e.ids) for e in tok.encode_batch(texts)] if texts else []
    return {
        "chunks": len(texts),
        "tokens_embedded": sum(min(n, window) for n in lengths),
        "over_window_share": round(sum(n > window for n in lengths) / max(1, len(lengths)), 3),
    }


def run_langchain(root: Path) -> dict[str, Any]:
    try:
        from langchain_community.vectorstores import FAISS
        from langchain_core.documents import Document
        from langchain_huggingface import HuggingFaceEmbeddings
        from langchain_text_splitters import RecursiveCharacterTextSplitter
    except ImportError as exc:
        return {"skipped": f"LangChain is not installed ({exc}); pip install -c constraints.txt -e '.[bench-peers]'"}
    from ragctl.model_spec import force_offline, resolve_model
    from ragctl.parsing import parse_file

    force_offline()
    spec = resolve_model(None)
    t0 = time.perf_counter()
    docs = []
    for path in _files(root):
        try:
            text = "\n\n".join(b.text for b in parse_file(path).blocks)
        except Exception:  # noqa: BLE001 - a file LangChain's loop would also have to skip
            continue
        docs.append(Document(page_content=text, metadata={"source": str(path)}))
    splits = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=100).split_documents(docs)
    embeddings = HuggingFaceEmbeddings(model_name=str(spec.path), model_kwargs={"device": "cpu"},
                                       encode_kwargs={"batch_size": 32})
    FAISS.from_documents(splits, embeddings)
    wall = time.perf_counter() - t0
    return {"wall_s": round(wall, 1), "documents": len(docs),
            **_token_stats([s.page_content for s in splits], spec.max_tokens)}


def run_ragctl(root: Path, extra: list[str], python: str) -> dict[str, Any]:
    from ragctl.chunking import Chunker
    from ragctl.model_spec import resolve_model
    from ragctl.parsing import parse_file

    reused = 0
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        store = Path(tmp) / "store"
        cmd = [python, "-m", "ragctl", "ingest", str(root), "--store", str(store), "--json", *extra]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode not in (0, 1):
            return {"error": f"ragctl ingest exited {proc.returncode}: {proc.stderr.strip()[-500:]}"}
        stored = 0
        for shard in (store / "doc_id_name_mapping").glob("*.json"):
            stored += sum(int(r.get("chunk_count", 0)) for r in json.loads(shard.read_text()).values())
        try:
            report = json.loads(proc.stdout)
            model = report.get("model", {}) if isinstance(report, dict) else {}
            reused = sum(int(e.get("chunks_reused", 0)) for e in report.get("entities", {}).values())
        except ValueError:
            model = {}
    # the same chunker ingest uses, to count the word pieces it embedded
    spec = resolve_model(None)
    chunker = Chunker.from_model_dir(spec.path)
    texts = []
    for path in _files(root):
        try:
            texts.extend(c.text for c in chunker.chunk(parse_file(path).blocks))
        except Exception:  # noqa: BLE001
            continue
    stats = _token_stats(texts, spec.max_tokens)
    # the word pieces of the model's inputs: each passage once per entity, as ingest embeds them
    from ragctl.storage.chunk_texts import passage_key

    seen: set[tuple[str, bytes]] = set()
    inputs: list[str] = []
    for path in _files(root):
        entity = path.relative_to(root).parts[0]
        try:
            chunks = chunker.chunk(parse_file(path).blocks)
        except Exception:  # noqa: BLE001
            continue
        for c in chunks:
            key = (entity, passage_key(c.text))
            if key not in seen:
                seen.add(key)
                inputs.append(c.text)
    return {"wall_s": round(wall, 1), "chunks_in_store": stored, **stats, "chunks_reused": reused,
            "model_inputs": stored - reused, "tokens_of_distinct_passages": _token_stats(inputs, spec.max_tokens)[
                "tokens_embedded"], "backend": model.get("backend"), "precision": model.get("precision")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--order", choices=["langchain-first", "ragctl-first"], default="langchain-first")
    ap.add_argument("--ingest-arg", action="append", default=[], help="Extra argument for ragctl ingest (repeatable).")
    ap.add_argument("--ragctl-python", default=sys.executable,
                    help="The interpreter that runs `ragctl ingest` (the project's venv; default: this one).")
    args = ap.parse_args(argv)
    runs = {"langchain": lambda: run_langchain(args.root),
            "ragctl": lambda: run_ragctl(args.root, args.ingest_arg, args.ragctl_python)}
    order = list(runs) if args.order == "langchain-first" else list(runs)[::-1]
    result: dict[str, Any] = {}
    for name in order:
        before = os.getloadavg()[0]
        result[name] = {**runs[name](), "load_before": round(before, 2), "load_after": round(os.getloadavg()[0], 2)}
    if "wall_s" in result.get("langchain", {}) and "wall_s" in result.get("ragctl", {}):
        result["ratio"] = round(result["langchain"]["wall_s"] / result["ragctl"]["wall_s"], 2)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for name, row in result.items():
            if isinstance(row, dict):
                print(f"{name:10s} " + "  ".join(f"{k}={v}" for k, v in row.items()))
            else:
                print(f"{name:10s} {row}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
