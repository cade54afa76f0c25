"""Take the screenshots of the web console in docs/console/ (issue 28).

Runs the same set-up as tests/test_console.py: a real `ragctl serve` on 127.0.0.1 with
per-tenant tokens (real model), Debian's headless chromium through chromedriver, a folder of
real documents uploaded through the page's folder picker. Then it saves one picture per view:

    .venv/bin/python scripts/console_screenshots.py [--out docs/console]

Needs the dev and serve extras and `apt-get install -y chromium chromium-driver`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from test_console import (  # noqa: E402
    ADMIN,
    HANDBOOK,
    chrome,
    sign_in,
    start_console_server,
    text,
    upload_folder,
    visible,
    wait_for,
    write_tree,
)
from test_serve import upload  # noqa: E402

MORE = {  # a few more tenants, so that the entity list looks like a shared server
    "initech": [("tps/reports.md", b"# TPS reports\n\nEvery report needs the new cover sheet from Monday on.\n"),
                ("it/printers.md", b"# Printers\n\nThe printer on floor 3 jams on recycled paper.\n")],
    "umbrella-research": [("lab/safety.md", b"# Lab safety\n\nGoggles and gloves at all times in lab B.\n")],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "console")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        srv = start_console_server(root / "server")
        driver = chrome()
        try:
            driver.set_window_size(1200, 820)
            with srv.client(ADMIN) as c:
                for entity, files in MORE.items():
                    upload(c, entity, files, wait=True)
            driver.get(f"{srv.url}/ui/")
            wait_for(driver, lambda: visible(driver, "view-signin"), "the sign-in form")
            driver.save_screenshot(str(args.out / "signin.png"))
            sign_in(driver, ADMIN)
            wait_for(driver, lambda: visible(driver, "view-entities"), "the entity list")

            folder = write_tree(root / "docs", HANDBOOK) / "handbook"
            upload_folder(driver, srv, "acme", folder)
            driver.save_screenshot(str(args.out / "upload.png"))

            driver.get(f"{srv.url}/ui/#/entities")
            wait_for(driver, lambda: "acme" in text(driver, "entities-table"), "acme listed")
            driver.save_screenshot(str(args.out / "entities.png"))

            driver.get(f"{srv.url}/ui/#/entity/acme")
            wait_for(driver, lambda: "parental-leave.md" in text(driver, "files-table"), "acme's documents")
            driver.save_screenshot(str(args.out / "documents.png"))

            driver.get(f"{srv.url}/ui/#/search?entity=acme&q=how+many+weeks+of+parental+leave&mode=hybrid&k=3")
            wait_for(driver, lambda: "hit" in text(driver, "search-summary"), "search results")
            driver.save_screenshot(str(args.out / "search.png"))
        finally:
            driver.quit()
            srv.stop()
    for png in sorted(args.out.glob("*.png")):
        print(f"{png.relative_to(REPO)}: {png.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
