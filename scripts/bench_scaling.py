#!/usr/bin/env python3
"""Helpers behind docs/benchmarks.md: worker sweep, real-document corpus, baseline ratio, RSS.

    python scripts/bench_scaling.py sweep [--workers 1,2,4,16] [--repeat 2] [--corpus DIR | --entities 5 --docs 20]
    python scripts/bench_scaling.py real-corpus --out DIR [--count 200] [--entities 5]
    python scripts/bench_scaling.py baseline [--corpus DIR] [--repeat 2] [--precision auto]
    python scripts/bench_scaling.py rss [--entities 5 --docs 20] [--factor 4]

Every subcommand prints one JSON document on stdout (progress on stderr). The machine these
numbers come from is shared: run each at least twice (or with --repeat) and say so.

* sweep: `ragctl.bench.run_bench` for each worker count, with ONE model load for all of them.
* real-corpus: copies .md/.html files shipped on this machine (site-packages docs,
  /usr/share/doc) into DIR/entity-k/ (nothing is committed; the files stay where you put them).
* baseline: ragctl's parallel pipeline vs scripts/baseline_per_document.py on the same corpus,
  alternating, each in its own process, model load EXCLUDED on both sides (reported apart).
* rss: peak RSS of `ragctl ingest` (the main process, and the main process plus its parse
  workers) on a generated corpus and on one `--factor` times larger (more documents per
  entity), sampled every 20 ms with psutil.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- sweep
def cmd_sweep(args: argparse.Namespace) -> dict[str, Any]:
    from ragctl import events as ev
    from ragctl.bench import BenchConfig, run_bench
    from ragctl.embedding import load_embedder
    from ragctl.model_config import ModelConfig

    t0 = time.perf_counter()
    model = ModelConfig(precision=args.precision, batch_size=args.batch_size)
    embedder = load_embedder(model)
    load_s = time.perf_counter() - t0

    def progress(event: ev.Event) -> None:
        if isinstance(event, ev.Phase):
            log(f"  {event.message}")

    rows = []
    with tempfile.TemporaryDirectory(prefix="ragctl-sweep-") as tmp:
        corpus = args.corpus
        if corpus is None:
            from ragctl.bench import generate_corpus

            corpus = Path(tmp) / "corpus"
            generate_corpus(corpus, args.entities, args.docs, args.seed)
        for w in [int(x) for x in args.workers.split(",")]:
            log(f"workers={w}")
            config = BenchConfig(corpus=corpus, workers=w, repeat=args.repeat, model=model)
            result = run_bench(config, progress, embedder=embedder).to_json()
            keep = ("workers", "parse_workers", "sequential_s", "parallel_s", "speedup", "efficiency",
                    "docs_per_s", "chunks_per_s", "model_limit_chunks_per_s", "limit_ratio", "docs",
                    "chunks", "parallel_first_embed_s", "parallel_encode_s", "runs")
            rows.append({k: result[k] for k in keep})
            log(json.dumps(rows[-1]))
    return {"model_load_s": round(load_s, 2), "precision": embedder.precision,
            "batch_size": getattr(embedder, "batch_size", args.batch_size), "corpus": str(args.corpus or "generated"),
            "entities": args.entities, "docs": args.docs, "repeat": args.repeat, "rows": rows}


# --------------------------------------------------------------------------- real corpus
REAL_SOURCES = [Path(sys.prefix) / "lib", Path("/usr/share/doc")]


def cmd_real_corpus(args: argparse.Namespace) -> dict[str, Any]:
    candidates = []
    for base in REAL_SOURCES:
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                path = Path(dirpath) / name
                if path.suffix.lower() not in (".md", ".html", ".htm") or path.is_symlink():
                    continue
                size = path.stat().st_size
                if args.min_kb * 1024 <= size <= args.max_kb * 1024:
                    candidates.append(path)
    candidates.sort()
    random.Random(args.seed).shuffle(candidates)
    chosen = candidates[: args.count]
    out: Path = args.out
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} exists and is not empty")
    total = 0
    formats: dict[str, int] = {}
    for i, src in enumerate(chosen):
        rel = "_".join(src.parts[-3:])
        dst = out / f"entity-{i % args.entities}" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        total += src.stat().st_size
        formats[src.suffix.lower()] = formats.get(src.suffix.lower(), 0) + 1
    return {"out": str(out), "documents": len(chosen), "bytes": total, "formats": formats,
            "candidates": len(candidates), "sources": [str(s) for s in REAL_SOURCES]}


# --------------------------------------------------------------------------- baseline
def ragctl_run(corpus: Path, precision: str, workers: int, batch_size: int | None = None) -> dict[str, Any]:
    """In this process: load the model (timed apart), then the parallel pipeline (timed)."""
    from ragctl.discovery import discover_entities
    from ragctl.embedding import load_embedder
    from ragctl.ingest import IngestOptions, ingest
    from ragctl.model_config import ModelConfig

    t0 = time.perf_counter()
    model = ModelConfig(precision=precision, batch_size=batch_size)
    embedder = load_embedder(model)
    load_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="ragctl-baseline-cmp-") as tmp:
        options = IngestOptions(store=Path(tmp) / "store", workers=workers, model=model)
        started = time.perf_counter()
        report = ingest(discover_entities(corpus), options, embedder=embedder)
        seconds = time.perf_counter() - started
    docs = sum(r.indexed + r.updated for r in report.entities.values())
    return {"docs": docs, "chunks": report.total_chunks, "seconds": round(seconds, 3), "load_s": round(load_s, 3),
            "docs_per_s": round(docs / seconds, 3), "chunks_per_s": round(report.total_chunks / seconds, 3),
            "docs_per_s_incl_load": round(docs / (seconds + load_s), 3), "precision": embedder.precision,
            "failed": len(report.failures), "skipped": sum(r.skipped for r in report.entities.values())}


def cmd_ragctl_run(args: argparse.Namespace) -> dict[str, Any]:
    return ragctl_run(args.corpus, args.precision, args.workers, args.batch_size)


def batch_size_args(args: argparse.Namespace) -> list[str]:
    """`--batch-size N` when one was given; else the child uses its runtime's own (OpenVINO 8, torch 32)."""
    return [] if args.batch_size is None else ["--batch-size", str(args.batch_size)]


def _child_json(cmd: list[str]) -> dict[str, Any]:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def cmd_baseline(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ragctl-baseline-") as tmp:
        corpus = args.corpus
        if corpus is None:
            from ragctl.bench import generate_corpus

            corpus = Path(tmp) / "corpus"
            generate_corpus(corpus, args.entities, args.docs, args.seed)
        runs: dict[str, list[dict[str, Any]]] = {"ragctl": [], "baseline": []}
        for r in range(args.repeat):
            log(f"round {r + 1}/{args.repeat}: ragctl")
            runs["ragctl"].append(_child_json([sys.executable, __file__, "_ragctl-run", "--corpus", str(corpus),
                                               "--precision", args.precision, "--workers", str(args.workers),
                                               *batch_size_args(args)]))
            log(f"  {runs['ragctl'][-1]}")
            log(f"round {r + 1}/{args.repeat}: baseline")
            runs["baseline"].append(_child_json([sys.executable, str(ROOT / "scripts" / "baseline_per_document.py"),
                                                 "--corpus", str(corpus), "--json"]))
            log(f"  {runs['baseline'][-1]}")
    best = {k: min(v, key=lambda x: x["seconds"]) for k, v in runs.items()}
    return {
        "corpus": str(args.corpus or f"generated {args.entities}x{args.docs} seed {args.seed}"),
        "ratio_docs_per_s": round(best["ragctl"]["docs_per_s"] / best["baseline"]["docs_per_s"], 3),
        "ratio_docs_per_s_incl_load": round(
            best["ragctl"]["docs_per_s_incl_load"] / best["baseline"]["docs_per_s_incl_load"], 3),
        "ragctl": best["ragctl"],
        "baseline": best["baseline"],
        "runs": {k: [x["seconds"] for x in v] for k, v in runs.items()},
    }


# --------------------------------------------------------------------------- RSS
def peak_rss(cmd: list[str]) -> dict[str, Any]:
    import psutil

    started = time.perf_counter()
    proc = psutil.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    main_peak = tree_peak = 0
    while proc.poll() is None:
        try:
            main = proc.memory_info().rss
            tree = main
            for child in proc.children(recursive=True):
                try:
                    tree += child.memory_info().rss
                except psutil.Error:
                    pass
            main_peak, tree_peak = max(main_peak, main), max(tree_peak, tree)
        except psutil.Error:
            pass
        time.sleep(0.02)
    out = proc.stdout.read() if proc.stdout else b""
    report = json.loads(out) if out.strip() else {}
    return {"main_peak_mb": round(main_peak / 2**20, 1), "tree_peak_mb": round(tree_peak / 2**20, 1),
            "seconds": round(time.perf_counter() - started, 2), "returncode": proc.returncode,
            "chunks": sum(e.get("chunks", 0) for e in report.get("entities", {}).values())}


def cmd_rss(args: argparse.Namespace) -> dict[str, Any]:
    from ragctl.bench import generate_corpus

    results = {}
    with tempfile.TemporaryDirectory(prefix="ragctl-rss-") as tmp:
        for label, docs in (("x1", args.docs), (f"x{args.factor}", args.docs * args.factor)):
            corpus = Path(tmp) / f"corpus-{label}"
            info = generate_corpus(corpus, args.entities, docs, args.seed)
            rounds = []
            for r in range(args.repeat):
                store = Path(tmp) / f"store-{label}-{r}"
                log(f"{label}: {info.documents} documents, {info.bytes / 2**20:.1f} MB, round {r + 1}")
                rounds.append(peak_rss([sys.executable, "-m", "ragctl", "ingest", str(corpus), "--store", str(store),
                                        "--json", "--quiet", "--workers", str(args.workers),
                                        *batch_size_args(args)]))
                log(f"  {rounds[-1]}")
            results[label] = {"documents": info.documents, "bytes": info.bytes, "rounds": rounds}
    base = max(r["main_peak_mb"] for r in results["x1"]["rounds"])
    big = max(r["main_peak_mb"] for r in results[f"x{args.factor}"]["rounds"])
    base_t = max(r["tree_peak_mb"] for r in results["x1"]["rounds"])
    big_t = max(r["tree_peak_mb"] for r in results[f"x{args.factor}"]["rounds"])
    return {"results": results, "main_ratio": round(big / base, 3), "tree_ratio": round(big_t / base_t, 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    def corpus_opts(p: argparse.ArgumentParser) -> None:
        p.add_argument("--corpus", type=Path, default=None)
        p.add_argument("--entities", type=int, default=5)
        p.add_argument("--docs", type=int, default=20)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--repeat", type=int, default=2)
        p.add_argument("--precision", default="auto")
        p.add_argument("--batch-size", type=int, default=None)

    p = sub.add_parser("sweep")
    corpus_opts(p)
    p.add_argument("--workers", default="1,2,4,16")
    p.set_defaults(func=cmd_sweep)
    p = sub.add_parser("real-corpus")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--entities", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-kb", type=int, default=1)
    p.add_argument("--max-kb", type=int, default=100)
    p.set_defaults(func=cmd_real_corpus)
    p = sub.add_parser("baseline")
    corpus_opts(p)
    p.add_argument("--workers", type=int, default=0)
    p.set_defaults(func=cmd_baseline)
    p = sub.add_parser("_ragctl-run")
    p.add_argument("--corpus", type=Path, required=True)
    p.add_argument("--precision", default="auto")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=None)
    p.set_defaults(func=cmd_ragctl_run)
    p = sub.add_parser("rss")
    corpus_opts(p)
    p.add_argument("--factor", type=int, default=4)
    p.add_argument("--workers", type=int, default=0)
    p.set_defaults(func=cmd_rss, repeat=1)
    args = ap.parse_args(argv)
    print(json.dumps(args.func(args), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
