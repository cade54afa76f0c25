#!/usr/bin/env python3
"""Uploads fanned out over many tenants vs the same uploads into one entity (issue 27 item 4).

    .venv/bin/python scripts/bench_fanout.py [--files 1000] [--tenants 1000] [--upload-clients 64] [--json]

Runs scripts/bench_serve.py twice on the same generated files (the same seed: the same bytes),
once spread over `--tenants` entities (one file each by default: the original design's many
threads uploading to many tenants at once) and once into a single entity. Each run is a real
`ragctl serve` on 127.0.0.1 with the model loaded before the clock starts; `--upload-clients`
threads POST /api/entities/{id}/files at once; throughput is files acknowledged (202) and
indexed per second, first byte to last job done. bench_serve checks every acknowledged upload
is indexed exactly once (job status, file listing, marker search, stats, `ragctl verify`).
Reported: both throughputs, their ratio (tenants / one entity: the target is >= 0.8), peak
RSS of each server, and each run's exactly-once result. Small Markdown files (0.5-1 KB of
text) so that the per-tenant cost, not the model, is what differs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH_SERVE = Path(__file__).resolve().parent / "bench_serve.py"


def run(files: int, entities: int, clients: int, seed: int) -> dict[str, Any]:
    cmd = [sys.executable, str(BENCH_SERVE), "--files", str(files), "--entities", str(entities), "--formats", "md",
           "--size-mb", "0.002,0.004", "--text-kb", "0.5,1", "--no-kill", "--search-clients", "0",
           "--upload-clients", str(clients), "--seed", str(seed), "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if not out.stdout.strip():
        raise SystemExit(f"bench_serve failed ({out.returncode}): {out.stderr[-2000:]}")
    result = json.loads(out.stdout)
    s = result["serve"]
    return {"entities": result["corpus"]["entities"], "files_indexed": s["files_indexed"], "chunks": s["chunks"],
            "seconds": round(s["seconds"], 2), "uploads_per_s": round(s["uploads_per_s"], 2),
            "rss_peak_tree_mb": round(s["rss_peak_tree_mb"], 1), "rss_peak_main_mb": round(s["rss_peak_main_mb"], 1),
            "exactly_once": s["exactly_once"], "verify_ok": s["verify_ok"], "errors": s["errors"][:5],
            "loadavg_before": s["loadavg_before"], "ok": result["ok"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--tenants", type=int, default=1000)
    ap.add_argument("--upload-clients", type=int, default=64)
    ap.add_argument("--seed", type=int, default=27)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    tenants = run(args.files, args.tenants, args.upload_clients, args.seed)
    one = run(args.files, 1, args.upload_clients, args.seed)
    result = {"files": args.files, "upload_clients": args.upload_clients, "as_tenants": tenants, "as_one_entity": one,
              "throughput_ratio": round(tenants["uploads_per_s"] / one["uploads_per_s"], 3),
              "ok": tenants["ok"] and one["ok"]}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for name in ("as_tenants", "as_one_entity"):
            r = result[name]
            print(f"{name:14} {r['entities']:>6} entities  {r['uploads_per_s']:8.2f} uploads/s  {r['seconds']:7.1f} s  "
                  f"peak RSS {r['rss_peak_tree_mb']:.0f} MB  exactly once: {r['ok']}")
        print(f"throughput tenants / one entity: {result['throughput_ratio']:.2f} (target >= 0.8)")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
