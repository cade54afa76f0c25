"""The web console's entity list over many entities (issue 28 target: 100,000 entities, first page
in < 1 s), in a real browser.

    .venv/bin/python scripts/bench_console.py [--entities 100000] [--repeat 5]

A store whose catalog lists N entities (rows written straight into catalog.sqlite, as
`scripts/bench_tenants.py --catalog-rows` does: the entities' own files are absent, so this
measures the listing, not an ingest), a real `ragctl serve` on it, Debian's headless chromium
(tests/test_console.py's set-up). Timed from the browser's side, best and median of --repeat:

* `first_page_s`: a fresh load of /ui/ (HTML, JS, CSS, the API call) until 50 rows are shown;
* `deep_page_s`: from the last page's link (a hash change) until its rows are shown;
* `filter_s`: a filter typed and submitted until its matches are shown;
* `api_first_page_s`: `GET /api/entities?offset=0&limit=50` alone (httpx), for comparison.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from test_console import chrome, text  # noqa: E402
from test_serve import Server  # noqa: E402

ROWS = "return document.querySelectorAll('#entities-table tbody tr').length"


def synthetic_store(store: Path, n: int) -> None:
    from ragctl.storage import catalog
    from ragctl.storage.layout import open_store_manifest

    open_store_manifest(store)
    with catalog._connect(store) as con:  # noqa: SLF001 - benchmark: writes the rows directly
        con.execute("BEGIN")
        con.executemany("INSERT OR REPLACE INTO entities VALUES (?, 3, 12, 48000, '2026-01-01T00:00:00Z', "
                        "'all-MiniLM-L6-v2', NULL, 'x')", ((f"tenant-{i:06d}",) for i in range(n)))
        con.execute("COMMIT")


def until(driver, predicate, timeout: float = 60.0) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if predicate():
            return time.perf_counter() - t0
        time.sleep(0.005)
    raise AssertionError(f"timed out; page: {text(driver, 'main')[:500]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    import httpx

    n = args.entities
    last_page = (n - 1) // 50
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        synthetic_store(store, n)
        srv = Server(store).start()
        driver = chrome()
        times: dict[str, list[float]] = {"first_page_s": [], "deep_page_s": [], "filter_s": [], "api_first_page_s": []}
        try:
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                r = httpx.get(f"{srv.url}/api/entities", params={"offset": 0, "limit": 50}, timeout=60)
                times["api_first_page_s"].append(time.perf_counter() - t0)
                assert r.json()["total"] == n, r.text[:300]

                driver.get("about:blank")
                t0 = time.perf_counter()
                driver.get(f"{srv.url}/ui/#/entities")
                until(driver, lambda: driver.execute_script(ROWS) == 50)
                times["first_page_s"].append(time.perf_counter() - t0)
                assert text(driver, "entities-summary").startswith(f"{n:,} entities")

                driver.execute_script(f"location.hash = '#/entities?q=&page={last_page}'")
                times["deep_page_s"].append(until(driver, lambda: f"page {last_page + 1} of" in text(driver, "entities-page")))

                driver.execute_script("document.getElementById('entities-q').value = 'tenant-09999';"
                                      "document.getElementById('entities-filter').requestSubmit()")
                times["filter_s"].append(until(driver, lambda: driver.execute_script(ROWS) == 10
                                               and "matching" in text(driver, "entities-summary")))
        finally:
            driver.quit()
            srv.stop()
    out = {"entities": n, "repeat": args.repeat,
           **{k: {"best": round(min(v), 3), "median": round(statistics.median(v), 3)} for k, v in times.items()}}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
