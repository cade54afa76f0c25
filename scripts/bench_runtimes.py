#!/usr/bin/env python3
"""Model runtimes side by side on real documentation chunks: chunks/s and cosine to torch fp32.

    .venv/bin/python scripts/bench_runtimes.py                       # 1,200 chunks, 3 rounds
    .venv/bin/python scripts/bench_runtimes.py --docs /usr/share/doc --limit 600 --json

Chunks come from *.md / *.html files found under --docs (default: the venv's site-packages
and /usr/share/doc), parsed and chunked the way `ragctl ingest` does (≤ the model window, in
the model's own tokens). Every runtime is loaded and warmed up first; then the rounds run
interleaved (round 1: A B C ..., round 2: A B C ...) so that noise from other processes
hits all of them alike. Reported: best and median chunks/s, min and mean cosine to torch
fp32's vectors, and (for int8) whether the gate let it load at all.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

RUNTIMES = ["torch:fp32", "torch:bf16", "openvino:fp32", "openvino:bf16", "openvino:int8"]


def find_docs(roots: list[Path], min_bytes: int = 2048) -> list[Path]:
    files: list[Path] = []
    for root in roots:
        if root.is_dir():
            for pattern in ("*.md", "*.html"):
                files.extend(p for p in root.rglob(pattern) if p.is_file() and p.stat().st_size >= min_bytes)
    return sorted(set(files))


def real_chunks(roots: list[Path], limit: int, seed: int = 0, max_tokens: int | None = None) -> list[str]:
    """Up to `limit` chunks from real docs, spread over files (shuffled with `seed`)."""
    from ragctl.chunking import Chunker
    from ragctl.model_spec import resolve_model
    from ragctl.parsing import parse_file

    spec = resolve_model(None)
    chunker = Chunker.from_model_dir(spec.path, max_tokens=max_tokens or spec.max_tokens)
    files = find_docs(roots)
    random.Random(seed).shuffle(files)
    chunks: list[str] = []
    for path in files:
        try:
            doc = parse_file(path)
            texts = [c.text for c in chunker.chunk(doc.blocks)]
        except Exception:  # noqa: BLE001 - a bench input we cannot read is skipped
            continue
        chunks.extend(t for t in texts[:20] if t.strip())
        if len(chunks) >= limit:
            break
    return chunks[:limit]


def default_roots() -> list[Path]:
    return [Path(sysconfig.get_paths()["purelib"]), Path("/usr/share/doc")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=Path, action="append", help="Directory with *.md/*.html (repeatable).")
    ap.add_argument("--limit", type=int, default=1200, help="Chunks to embed per round.")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=None,
                    help="Texts per encode call (default: each runtime's own, OpenVINO 8, torch 32).")
    ap.add_argument("--runtimes", default=",".join(RUNTIMES), help="Comma-separated backend:precision list.")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import numpy as np

    from ragctl.embedding import LocalEmbedder, cpu_count, resolve_model
    from ragctl.errors import ConfigError
    from ragctl.model_config import ModelConfig

    chunks = real_chunks(args.docs or default_roots(), args.limit)
    spec = resolve_model(None)
    print(f"{len(chunks)} chunks from real docs; batch {args.batch_size or 'per runtime'}; {cpu_count()} CPUs",
          file=sys.stderr)
    loaded: dict[str, Any] = {}
    refused: dict[str, str] = {}
    for name in args.runtimes.split(","):
        backend, precision = name.split(":")
        try:
            t0 = time.perf_counter()
            emb = LocalEmbedder(spec, ModelConfig(precision=precision, device="cpu", batch_size=args.batch_size, backend=backend))
            emb.encode(chunks[: emb.batch_size * 2])  # warm-up
            loaded[name] = emb
            print(f"loaded {name} in {time.perf_counter() - t0:.1f}s: {emb.describe()}", file=sys.stderr)
        except ConfigError as exc:
            refused[name] = str(exc)
            print(f"refused {name}: {exc}", file=sys.stderr)
    times: dict[str, list[float]] = {name: [] for name in loaded}
    vectors: dict[str, Any] = {}
    for round_no in range(args.rounds):
        for name, emb in loaded.items():
            t0 = time.perf_counter()
            vectors[name] = emb.encode(chunks)
            times[name].append(time.perf_counter() - t0)
            print(f"round {round_no + 1} {name}: {len(chunks) / times[name][-1]:.1f} chunks/s", file=sys.stderr)
    reference = vectors.get("torch:fp32")
    rows = []
    for name in loaded:
        cos = (vectors[name] * reference).sum(axis=1) if reference is not None else None
        rows.append({
            "runtime": name,
            "chunks_per_s_best": round(len(chunks) / min(times[name]), 1),
            "chunks_per_s_median": round(len(chunks) / statistics.median(times[name]), 1),
            "min_cosine_vs_torch_fp32": None if cos is None else float(np.min(cos)),
            "mean_cosine_vs_torch_fp32": None if cos is None else float(np.mean(cos)),
            "precision_used": loaded[name].precision,
            "batch_size": loaded[name].batch_size,
        })
    result = {"chunks": len(chunks), "batch_size": args.batch_size, "rounds": args.rounds, "cpus": cpu_count(),
              "rows": rows, "refused": refused}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print("| runtime | chunks/s best | median | min cos vs torch fp32 | mean cos |")
        print("|---|---:|---:|---:|---:|")
        for r in rows:
            mc, mean = r["min_cosine_vs_torch_fp32"], r["mean_cosine_vs_torch_fp32"]
            cos = "| |" if mc is None else f"| {mc:.5f} | {mean:.5f} |"
            print(f"| {r['runtime']} | {r['chunks_per_s_best']} | {r['chunks_per_s_median']} {cos}")
        for name, why in refused.items():
            print(f"| {name} | refused: {why} | | | |")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    raise SystemExit(main())
