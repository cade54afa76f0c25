"""Search latency on tenants not touched yet (cold), the way `ragctl serve` answers them.

    python scripts/bench_cold_search.py --tenants 2000            # builds the tenants (real model)
    python scripts/bench_cold_search.py --store DIR --queries 500   # an existing store
    python scripts/bench_cold_search.py --store DIR --serve --queries 3000   # through a real `ragctl serve`

One one-paragraph document per tenant. The model is loaded and warmed first (the issue's "after
the model is loaded"); then each query goes to a tenant this process has not searched yet,
through serve's `SearcherCache` (open the entity, load its vectors, embed the query, hybrid
search): p50 / p95 / max in ms, then the same tenants again (warm), and the cache's bytes.
`--serve` does the same over HTTP against a real `ragctl serve --search-cache-mb N` subprocess on
127.0.0.1 (latency measured by the client, the server's RSS sampled). The process's RSS is
sampled at ten points of the cold pass (`rss_mb`: flat when memory is
bounded by the cache's bytes, `--search-cache-mb` in serve, not by how many tenants were seen).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORDS = ("invoice refund warranty shipping pallet contract renewal notice supplier insurance audit "
         "quarterly forklift licence boiler inspection payroll holiday onboarding laptop badge").split()


def build(store: Path, tenants: int) -> None:
    from ragctl import get_entity_rag_manager

    rng = random.Random(7)
    root = store.parent / "tree"
    for i in range(tenants):
        folder = root / f"tenant-{i:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        text = " ".join(rng.choice(WORDS) for _ in range(60))
        (folder / "note.md").write_text(f"# Note {i}\n\n{text}.\n")
    manager = get_entity_rag_manager(store)
    t0 = time.perf_counter()
    manager.add_documents_parallel({f"tenant-{i:06d}": [root / f"tenant-{i:06d}"] for i in range(tenants)})
    print(f"built {tenants} tenants in {time.perf_counter() - t0:.1f} s", file=sys.stderr)


def through_serve(store: Path, entities: list[str], picked: list[str], args: argparse.Namespace,
                  rng: random.Random) -> dict:
    """Cold then warm searches over HTTP against a `ragctl serve` subprocess; its RSS sampled."""
    import socket
    import subprocess

    import httpx
    import psutil

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "ragctl", "serve", "--store", str(store), "--port", str(port),
                             "--search-cache-mb", str(args.cache_mb), "--log-level", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = httpx.Client(base_url=url, timeout=60)
        while True:
            if proc.poll() is not None:
                raise SystemExit("ragctl serve exited during start-up")
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        client.post(f"/api/entities/{entities[0]}/search", json={"query": "warm up the model", "k": 5})
        server = psutil.Process(proc.pid)
        rss: list[float] = [round(server.memory_info().rss / 2**20, 1)]

        def timed(sample: bool = False) -> list[float]:
            out = []
            for n, entity in enumerate(picked):
                t0 = time.perf_counter()
                r = client.post(f"/api/entities/{entity}/search",
                                json={"query": f"{rng.choice(WORDS)} {rng.choice(WORDS)}", "k": 5, "mode": args.mode})
                out.append((time.perf_counter() - t0) * 1000)
                if r.status_code != 200:
                    raise SystemExit(f"search {entity}: {r.status_code} {r.text[:200]}")
                if sample and (n + 1) % max(1, len(picked) // 10) == 0:
                    rss.append(round(server.memory_info().rss / 2**20, 1))
            return out

        cold, warm = timed(sample=True), timed()
    finally:
        proc.terminate()
        proc.wait(60)
    return {"tenants": len(entities), "queries": len(picked), "mode": args.mode, "via": "ragctl serve (HTTP)",
            "search_cache_mb": args.cache_mb, "cold_ms": summary(cold), "warm_ms": summary(warm),
            "server_rss_mb_after_warmup_then_every_tenth_of_the_cold_pass": rss}


def summary(ms: list[float]) -> dict[str, float]:
    ms = sorted(ms)
    return {"p50": round(statistics.median(ms), 2), "p95": round(ms[int(0.95 * (len(ms) - 1))], 2),
            "max": round(ms[-1], 2)}


def current_rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return round(int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tenants", type=int, default=2000)
    ap.add_argument("--store", type=Path, default=None, help="an existing store (else one is built)")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--mode", default="hybrid")
    ap.add_argument("--serve", action="store_true", help="through a real `ragctl serve` over HTTP")
    ap.add_argument("--cache-mb", type=float, default=64.0,
                    help="the searcher cache's bound (serve --search-cache-mb; small, so a run reaches it)")
    args = ap.parse_args()

    from ragctl.embedding import load_embedder
    from ragctl.model_config import ModelConfig
    from ragctl.searchers import SearcherCache
    from ragctl.storage.catalog import page as catalog_page
    from ragctl.storage.json_storage import open_store

    work = Path(tempfile.mkdtemp(prefix="cold-search-"))
    store = args.store or work / "store"
    if args.store is None:
        build(store, args.tenants)
    entities = sorted(catalog_page(open_store(store, create=False), limit=10**7)["entities"])
    rng = random.Random(1)
    picked = rng.sample(entities, min(args.queries, len(entities)))
    if args.serve:
        print(json.dumps(through_serve(store, entities, picked, args, rng), indent=1))
        return
    config = ModelConfig()
    load_embedder(config).encode(["warm up the model"])
    cache = SearcherCache(store, config, max_bytes=int(args.cache_mb * 2**20))

    rss: list[float] = []

    def timed(sample: bool = False) -> list[float]:
        out = []
        for n, entity in enumerate(picked):
            t0 = time.perf_counter()
            cache.get(entity).search([f"{rng.choice(WORDS)} {rng.choice(WORDS)}"], 5, args.mode)
            out.append((time.perf_counter() - t0) * 1000)
            if sample and (n + 1) % max(1, len(picked) // 10) == 0:
                rss.append(current_rss_mb())
        return out

    cold, warm = timed(sample=True), timed()

    status = cache.status(None)
    print(json.dumps({"tenants": len(entities), "queries": len(picked), "mode": args.mode, "cache_mb": args.cache_mb,
                      "cold_ms": summary(cold), "warm_ms": summary(warm),
                      "cached_entities": status["cached_entities"], "cached_mb": round(status["cached_bytes"] / 2**20, 1),
                      "rss_mb_during_cold_pass": rss},
                     indent=1))


if __name__ == "__main__":
    main()
