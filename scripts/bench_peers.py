#!/usr/bin/env python3
"""LangChain's default indexing loop vs `ragctl ingest` on the same tree, in one run.

    .venv/bin/pip install -c constraints.txt -e ".[bench-peers]"
    .venv/bin/python scripts/bench_peers.py ROOT [--json] [--order ragctl-first]

ROOT is laid out like ingest's ROOT (one subdirectory per entity). LangChain's loop is the
one its docs teach: RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=100) ->
HuggingFaceEmbeddings (the same packaged all-MiniLM-L6-v2, on the same CPU threads) ->
FAISS.from_documents. To compare indexing rather than PDF/HTML extraction, LangChain gets its
text from ragctl's own parser (timed as part of its run). `ragctl ingest` runs as a subprocess
into a fresh store. Both wall times include loading the model.

Reported per side: wall seconds, chunks, word pieces actually embedded (after the model's
truncation to its window), and the share of chunks longer than the window (silently
truncated by sentence-transformers).
"""

from __future__ import annotations

import argparse
import json
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


def run_ragctl(root: Path, extra: list[str]) -> dict[str, Any]:
    from ragctl.chunking import Chunker
    from ragctl.model_spec import resolve_model
    from ragctl.parsing import parse_file

    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        store = Path(tmp) / "store"
        cmd = [sys.executable, "-m", "ragctl", "ingest", str(root), "--store", str(store), "--json", *extra]
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
    return {"wall_s": round(wall, 1), "chunks_in_store": stored, **stats,
            "backend": model.get("backend"), "precision": model.get("precision")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--order", choices=["langchain-first", "ragctl-first"], default="langchain-first")
    ap.add_argument("--ingest-arg", action="append", default=[], help="Extra argument for ragctl ingest (repeatable).")
    args = ap.parse_args(argv)
    runs = {"langchain": lambda: run_langchain(args.root), "ragctl": lambda: run_ragctl(args.root, args.ingest_arg)}
    order = list(runs) if args.order == "langchain-first" else list(runs)[::-1]
    result = {name: runs[name]() for name in order}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for name, row in result.items():
            print(f"{name:10s} " + "  ".join(f"{k}={v}" for k, v in row.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
