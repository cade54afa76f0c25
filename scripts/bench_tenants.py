"""Many small tenants (issue 27): what a tenant costs, and `stats` over the store catalog.

    python scripts/bench_tenants.py --tenants 3000 [--standin] [--work DIR] [--skip-one]
    python scripts/bench_tenants.py --catalog-rows 100000      # stats over a synthetic catalog
    python scripts/bench_tenants.py --rerun-only --work DIR [--standin] [--repeat 3]

Generates N one-paragraph Markdown files and ingests them twice over: as N tenants (one folder
each) and as one entity holding the same N files. For each: ingest wall time (ms per tenant /
per file), files and bytes on disk per tenant, a no-change re-run, and `ragctl stats --json`
(wall time of the real CLI process, so Python start-up included; and `store_stats()` in
process). Then the ratios tenants / one entity. Each run is a subprocess of its own.
`--standin` embeds with the benchmark-only stand-in encoder (ragctl/bench/standin.py: no model;
parsing, planning, commits and the catalog are what is measured); without it the real model.

`--rerun-only` times no-change re-runs of a work directory an earlier run left (its stores and
trees), as tenants and as one entity alternately, `--repeat` times each: the best and the median.

`--catalog-rows N` measures `stats` alone over N entities without ingesting them: a store whose
catalog has N rows (written straight into catalog.sqlite; the entities' own files are absent),
as `stats` would read it at N tenants. Clearly a synthetic figure: it measures the catalog read,
JSON and process start, not the ingest.
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

RUN = r"""
import json, resource, sys, time
from pathlib import Path
from ragctl.discovery import discover_entities
from ragctl.ingest import IngestOptions, ingest

root, store, standin = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
embedder = None
if standin:
    from ragctl.bench.standin import StandInEncoder
    embedder = StandInEncoder()
t0 = time.perf_counter()
report = ingest(discover_entities(root), IngestOptions(store=store, workers=2), embedder=embedder)
wall = time.perf_counter() - t0
totals = {k: sum(getattr(r, k) for r in report.entities.values()) for k in ("files", "indexed", "unchanged", "failed")}
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": round(wall, 2), "entities": len(report.entities), "peak_rss_mb": round(rss, 1), **totals}))
"""

IN_PROCESS_STATS = r"""
import json, sys, time
from pathlib import Path
from ragctl.stats import store_stats
t0 = time.perf_counter()
result = store_stats(Path(sys.argv[1]))
print(json.dumps({"seconds": round(time.perf_counter() - t0, 3), "entities": result["totals"]["entities"]}))
"""

WORDS = ("river stone cloud engine garden ledger harbor signal copper meadow lantern orbit "
         "invoice tenant refund policy shipping window contract renewal").split()


def paragraph(i: int) -> str:
    body = " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(60))
    return f"# Customer {i}\n\nCustomer {i} notes: {body}. Reference {i:06d}.\n"


def make_trees(work: Path, n: int) -> tuple[Path, Path]:
    tenants, one = work / "tenants", work / "one"
    for i in range(n):
        d = tenants / f"t{i:06d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "note.md").write_text(paragraph(i))
    (one / "all").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (one / "all" / f"t{i:06d}.md").write_text(paragraph(i))
    return tenants, one


def ingest(root: Path, store: Path, standin: bool) -> dict:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", RUN, str(root), str(store), "1" if standin else "0"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"ingest failed ({out.returncode}): {out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_s"] = round(time.perf_counter() - t0, 2)
    return result


def disk(store: Path) -> tuple[int, int]:
    files = size = 0
    for dirpath, _dirs, names in os.walk(store):
        for name in names:
            files += 1
            size += os.lstat(os.path.join(dirpath, name)).st_size
    return files, size


def stats_times(store: Path, repeat: int = 3) -> dict:
    cli, inproc = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "ragctl", "stats", "--store", str(store), "--json"],
                             capture_output=True, text=True)
        cli.append(time.perf_counter() - t0)
        assert out.returncode == 0, out.stderr[-2000:]
        json.loads(out.stdout)
        got = subprocess.run([sys.executable, "-c", IN_PROCESS_STATS, str(store)], capture_output=True, text=True,
                             check=True)
        inproc.append(json.loads(got.stdout)["seconds"])
    return {"stats_cli_s": round(min(cli), 3), "stats_in_process_s": round(min(inproc), 3)}


def measure(root: Path, store: Path, n: int, standin: bool) -> dict:
    first = ingest(root, store, standin)
    files, size = disk(store)
    rerun = ingest(root, store, standin)
    assert rerun["unchanged"] == n and rerun["indexed"] == 0, rerun
    return {"ingest_s": first["seconds"], "ms_per_tenant": round(1000 * first["seconds"] / n, 2),
            "peak_rss_mb": first["peak_rss_mb"], "files": files, "bytes": size,
            "files_per_tenant": round(files / n, 2), "bytes_per_tenant": round(size / n),
            "rerun_s": rerun["seconds"], **stats_times(store)}


def rerun_only(work: Path, standin: bool, repeat: int) -> dict:
    times: dict[str, list[float]] = {"as_tenants": [], "as_one_entity": []}
    sides = {"as_tenants": (work / "tenants", work / "store_tenants"), "as_one_entity": (work / "one", work / "store_one")}
    for _ in range(repeat):
        for name, (root, store) in sides.items():
            if store.exists():
                result = ingest(root, store, standin)
                assert result["indexed"] == 0, result
                times[name].append(result["seconds"])
    out: dict = {"work": str(work), "repeat": repeat}
    for name, ts in times.items():
        if ts:
            out[name] = {"best_s": min(ts), "median_s": sorted(ts)[len(ts) // 2], "runs": ts}
    if times["as_tenants"] and times["as_one_entity"]:
        out["ratio_best"] = round(min(times["as_tenants"]) / min(times["as_one_entity"]), 2)
        out["ratio_median"] = round(out["as_tenants"]["median_s"] / out["as_one_entity"]["median_s"], 2)
    return out


def synthetic_catalog(n: int, work: Path) -> dict:
    """A store whose catalog lists n entities (rows written directly), then `stats` over it."""
    import sqlite3

    from ragctl.storage import catalog
    from ragctl.storage.layout import open_store_manifest

    store = work / "synthetic"
    open_store_manifest(store)
    with catalog._connect(store) as con:  # noqa: SLF001 - benchmark: creates the tables
        con.execute("BEGIN")
        con.executemany("INSERT OR REPLACE INTO entities VALUES (?, 1, 1, 20000, '2026-01-01T00:00:00Z', 'm', NULL, 'x')",
                        ((f"t{i:06d}",) for i in range(n)))
        con.execute("COMMIT")
    size = os.stat(catalog.catalog_path(store)).st_size
    with sqlite3.connect(catalog.catalog_path(store)) as con:
        assert con.execute("SELECT count(*) FROM entities").fetchone()[0] == n
    return {"catalog_rows": n, "catalog_bytes": size, **stats_times(store)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=0)
    parser.add_argument("--standin", action="store_true", help="the benchmark stand-in encoder (no model)")
    parser.add_argument("--skip-one", action="store_true", help="skip the one-entity comparison")
    parser.add_argument("--catalog-rows", type=int, default=0, help="stats over a synthetic catalog of N rows")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--rerun-only", action="store_true", help="time no-change re-runs of an earlier --work")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.rerun_only:
        print(json.dumps(rerun_only(args.work, args.standin, args.repeat), indent=2))
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_tenants_"))
    work.mkdir(parents=True, exist_ok=True)
    out: dict = {"work": str(work), "encoder": "stand-in" if args.standin else "real model", "cpus": os.cpu_count()}
    if args.catalog_rows:
        out["synthetic"] = synthetic_catalog(args.catalog_rows, work)
    if args.tenants:
        n = args.tenants
        tenants, one = make_trees(work, n)
        out["tenants"] = n
        out["as_tenants"] = measure(tenants, work / "store_tenants", n, args.standin)
        print(json.dumps(out), file=sys.stderr, flush=True)
        if not args.skip_one:
            out["as_one_entity"] = measure(one, work / "store_one", n, args.standin)
            a, b = out["as_tenants"], out["as_one_entity"]
            out["ratios"] = {k: round(a[k] / b[k], 2) for k in ("ingest_s", "rerun_s", "bytes", "files", "stats_cli_s")
                             if b[k]}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
