"""The web console (/ui/) in a real browser: Debian's headless `chromium`, driven by Selenium
through Debian's `chromium-driver`, against a real `ragctl serve` (real model) on 127.0.0.1.

A missing browser FAILS these tests (CI installs it, README "Web console"): nothing here is
skipped. One server with per-tenant tokens and one browser for the module; each test starts
from a fresh page with an empty sessionStorage. scripts/console_screenshots.py reuses
`console_server` and `browser` to take the pictures in docs/console/.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")

from test_serve import Server, upload  # noqa: E402

ADMIN = "console-admin-token-0123"
TENANT = "console-acme-token-4567"  # may touch acme only
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
XSS_NAME = "<img src=x onerror=alert(1)>.md"
INSTALL = "apt-get install -y chromium chromium-driver (as root; README, 'Web console')"

HANDBOOK = {
    "handbook/leave/parental-leave.md": "# Parental leave\n\nEmployees get sixteen weeks of parental leave at full "
                                        "pay. Tell your manager eight weeks before the leave starts.\n",
    "handbook/travel.html": "<html><head><title>Travel</title></head><body><h1>Travel expenses</h1><p>Train "
                            "tickets are refunded in second class; receipts go to accounting within 30 days.</p>"
                            "</body></html>",
    "handbook/harbour.txt": "Harbour rules. Visitors may moor at the east pier from 8:00 to 20:00. Fishing from "
                            "the pier is not allowed.\n",
    "handbook/broken.pdf": "%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer garbage\n%%EOF\n",
}
GLOBEX = "# Globex quarterly report\n\nRevenue grew by four percent in the northern region.\n"


def chrome(download_dir: Path | None = None) -> Any:
    """Headless Chromium through chromedriver (Debian's packages; nothing is downloaded)."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists() and not shutil.which(Path(p).name)]
    if missing:
        pytest.fail(f"the console tests need {' and '.join(missing)}: {INSTALL}", pytrace=False)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("the console tests need selenium: pip install -c constraints.txt -e '.[dev]'", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900", "--disable-extensions", "--no-first-run"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=shutil.which("chromedriver") or CHROMEDRIVER)
    return webdriver.Chrome(options=options, service=service)


def seed(srv: Server) -> None:
    """globex holds one document (the tenant token must not see it)."""
    with srv.client(ADMIN) as c:
        job = upload(c, "globex", [("report.md", GLOBEX.encode())], wait=True).json()
        assert job["files"][0]["status"] == "indexed", job


def start_console_server(root: Path, *extra: str) -> Server:
    root.mkdir(parents=True, exist_ok=True)
    tokens = root / "tokens.json"
    tokens.write_text(json.dumps({ADMIN: "*", TENANT: ["acme"]}))
    srv = Server(root / "store", "--tokens", str(tokens), *extra).start()
    seed(srv)
    return srv


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_console_server(tmp_path_factory.mktemp("console"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    driver = chrome()
    yield driver
    driver.quit()


@pytest.fixture
def page(browser: Any, console_server: Server) -> Any:
    """The console, freshly loaded, signed out."""
    browser.get(f"{console_server.url}/ui/")
    browser.execute_script("sessionStorage.clear()")
    browser.get("about:blank")  # a real load next, not a same-document hash change
    browser.get(f"{console_server.url}/ui/#/entities")
    browser.get_log("browser")  # drop what earlier tests logged
    return browser


def wait_for(driver: Any, condition: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = condition()
            if last:
                return last
        except Exception as exc:  # noqa: BLE001  (element not there yet, stale, ...)
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r}); page text:\n{text(driver, 'main')}")


def by_id(driver: Any, element_id: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def text(driver: Any, element_id: str) -> str:
    return str(driver.execute_script(f"return document.getElementById({element_id!r}).innerText"))


def visible(driver: Any, element_id: str) -> bool:
    return bool(by_id(driver, element_id).is_displayed())


def sign_in(driver: Any, token: str) -> None:
    wait_for(driver, lambda: visible(driver, "view-signin"), "the sign-in form")
    field = by_id(driver, "token")
    field.clear()
    field.send_keys(token)
    by_id(driver, "signin-form").submit()


def entity_rows(driver: Any) -> list[str]:
    return list(driver.execute_script(
        "return Array.from(document.querySelectorAll('#entities-table tbody th')).map(e => e.innerText)"))


def file_rows(driver: Any) -> list[str]:
    return list(driver.execute_script(
        "return Array.from(document.querySelectorAll('#files-table tbody th')).map(e => e.innerText)"))


def upload_statuses(driver: Any) -> dict[str, tuple[str, str]]:
    rows = driver.execute_script(
        "return Array.from(document.querySelectorAll('#upload-table tbody tr')).map(r => "
        "[r.cells[0].innerText, r.cells[3].innerText, r.cells[4].innerText])")
    return {path: (status, detail) for path, status, detail in rows}


def severe_logs(driver: Any) -> list[str]:
    """Browser console errors, but not the failed requests the tests cause on purpose (401, 403, 404)."""
    return [e["message"] for e in driver.get_log("browser")
            if e["level"] == "SEVERE" and not any(f" {code} " in e["message"] for code in (401, 403, 404))]


def no_alert(driver: Any) -> bool:
    from selenium.common.exceptions import NoAlertPresentException

    try:
        driver.switch_to.alert  # noqa: B018
    except NoAlertPresentException:
        return True
    return False


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(content, encoding="utf-8")
    return root


def upload_folder(driver: Any, srv: Server, entity: str, folder: Path) -> None:
    """Upload a folder through the folder picker (Chromium's <input webkitdirectory>) and wait until
    every file has settled."""
    driver.get(f"{srv.url}/ui/#/upload?entity={entity}")
    wait_for(driver, lambda: visible(driver, "view-upload"), "the upload view")
    by_id(driver, "pick-folder").send_keys(str(folder))
    wait_for(driver, lambda: len(upload_statuses(driver)) == len(list(p for p in folder.rglob("*") if p.is_file())),
             "the chosen files listed")
    by_id(driver, "upload-start").click()
    wait_for(driver, lambda: "files settled" in text(driver, "upload-summary"), "every job settled", timeout=120)


# ---------------------------------------------------------------------------------------------


def test_serve_prints_the_console_which_is_public_with_a_strict_csp_while_the_api_needs_a_token(console_server: Server) -> None:
    for path in ("/ui/", "/ui/app.js", "/ui/app.css"):
        r = httpx.get(console_server.url + path)
        assert r.status_code == 200, (path, r.status_code)
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "style-src 'self'" in csp and "default-src 'none'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert r.headers["x-content-type-options"] == "nosniff"
    assert httpx.get(console_server.url + "/").headers["location"] == "/ui/"
    assert f"web console: {console_server.url}/ui/ (sign in with your token)" in console_server.output()
    assert httpx.get(console_server.url + "/api/entities").status_code == 401
    # everything the page loads, together, stays small: no framework, nothing from elsewhere
    page_weight = sum(len(httpx.get(console_server.url + p).content) for p in ("/ui/", "/ui/app.js", "/ui/app.css"))
    assert page_weight < 200_000, page_weight
    html = httpx.get(console_server.url + "/ui/").text
    assert "http://" not in html and "https://" not in html and "<script>" not in html and "style=" not in html


def test_a_wrong_token_is_refused_with_a_clear_message_then_the_right_one_signs_in(page: Any,
                                                                                   console_server: Server) -> None:
    wait_for(page, lambda: visible(page, "view-signin"), "the sign-in form")
    assert not visible(page, "nav") and not visible(page, "view-entities")  # nothing else before signing in
    sign_in(page, "not-the-right-token")
    message = wait_for(page, lambda: text(page, "signin-error"), "the sign-in error")
    assert "not accepted" in message and "not-the-right-token" not in message
    assert page.execute_script("return sessionStorage.length") == 0
    sign_in(page, ADMIN)
    wait_for(page, lambda: "globex" in entity_rows(page), "globex in the entity list")
    assert "not-the-right-token" not in page.current_url and ADMIN not in page.current_url
    assert page.execute_script("return sessionStorage.getItem('ragctl.token')") == ADMIN
    assert text(page, "entities-summary").startswith("1 entity")
    assert severe_logs(page) == []


def test_upload_a_folder_see_every_job_settle_then_search_with_highlighted_words(
        page: Any, console_server: Server, tmp_path: Path) -> None:
    folder = write_tree(tmp_path, HANDBOOK) / "handbook"
    sign_in(page, ADMIN)
    wait_for(page, lambda: visible(page, "view-entities"), "the entities view")
    upload_folder(page, console_server, "acme", folder)
    statuses = upload_statuses(page)
    assert {p: s for p, (s, _) in statuses.items()} == {
        "handbook/leave/parental-leave.md": "indexed", "handbook/travel.html": "indexed",
        "handbook/harbour.txt": "indexed", "handbook/broken.pdf": "failed"}, statuses
    assert "pdf" in statuses["handbook/broken.pdf"][1].lower()  # the one-line reason ingest gives
    assert "chunk" in statuses["handbook/harbour.txt"][1]
    assert page.execute_script("return Array.from(document.querySelectorAll('#upload-table progress'))"
                               ".every(p => p.value === 1)")

    # the entity's documents, with the relative paths the folder gave
    page.get(f"{console_server.url}/ui/#/entity/acme")
    wait_for(page, lambda: len(file_rows(page)) == 3, "three documents listed")
    assert file_rows(page) == ["handbook/harbour.txt", "handbook/leave/parental-leave.md", "handbook/travel.html"]
    # its recent upload jobs, with the reason of the file that failed
    jobs = wait_for(page, lambda: text(page, "jobs-table") if "handbook/broken.pdf" in text(page, "jobs-table")
                    else None, "the failed file's reason under Recent uploads")
    assert "3 indexed, 1 failed" in jobs and "done" in jobs

    # search: hits show path and score; the query's words are marked in the snippet
    page.get(f"{console_server.url}/ui/#/search?entity=acme")
    wait_for(page, lambda: visible(page, "view-search"), "the search view")
    by_id(page, "search-q").send_keys("parental leave weeks")
    by_id(page, "search-form").submit()
    wait_for(page, lambda: "hit" in text(page, "search-summary"), "the search results")
    first = page.execute_script("const li = document.querySelector('#search-results li'); return li && "
                                "[li.querySelector('.path').innerText, li.querySelector('.score').innerText, "
                                "Array.from(li.querySelectorAll('mark')).map(m => m.innerText.toLowerCase())]")
    assert first[0] == "handbook/leave/parental-leave.md"
    assert first[1].startswith("score ")
    assert {"parental", "leave", "weeks"} <= set(first[2]), first
    assert "#/search?" in page.current_url and ADMIN not in page.current_url

    # the hit's path opens the entity's document list at that document
    page.execute_script("document.querySelector('#search-results li .path').click()")
    wait_for(page, lambda: page.execute_script("const r = document.querySelector('#files-table tr.found'); "
                                               "return r && r.cells[0].innerText"), "the document highlighted")
    assert page.execute_script("return document.querySelector('#files-table tr.found th').innerText") == \
        "handbook/leave/parental-leave.md"

    # text mode, other k: the mode and k reach the API
    page.get(f"{console_server.url}/ui/#/search?entity=acme&q=pier&mode=text&k=1")
    wait_for(page, lambda: text(page, "search-summary").startswith("1 hit"), "one text hit")
    assert text(page, "search-summary") == "1 hit in acme (text, k=1)"
    assert page.execute_script("return document.querySelector('#search-results mark').innerText") == "pier"
    assert severe_logs(page) == []


def test_a_dropped_folder_keeps_its_relative_paths(page: Any, console_server: Server) -> None:
    sign_in(page, ADMIN)
    page.get(f"{console_server.url}/ui/#/upload?entity=dropped")
    wait_for(page, lambda: visible(page, "view-upload"), "the upload view")
    # what a drop of a folder hands the page: files whose webkitRelativePath keeps the folder's layout
    page.execute_script("""
        const dt = new DataTransfer();
        for (const [path, text] of arguments[0]) {
          const file = new File([text], path.split('/').pop(), {type: 'text/markdown'});
          Object.defineProperty(file, 'webkitRelativePath', {value: path});
          dt.items.add(file);
        }
        const zone = document.getElementById('dropzone');
        zone.dispatchEvent(new DragEvent('dragover', {dataTransfer: dt, bubbles: true, cancelable: true}));
        zone.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
    """, [["minutes/2026/march.md", "# March minutes\n\nThe board approved the new pier lights.\n"],
          ["minutes/2026/april.md", "# April minutes\n\nThe pier lights were installed in April.\n"]])
    wait_for(page, lambda: len(upload_statuses(page)) == 2, "the dropped files listed")
    assert set(upload_statuses(page)) == {"minutes/2026/march.md", "minutes/2026/april.md"}
    by_id(page, "upload-start").click()
    wait_for(page, lambda: "files settled" in text(page, "upload-summary"), "the jobs settled", timeout=120)
    assert {s for s, _ in upload_statuses(page).values()} == {"indexed"}
    with console_server.client(ADMIN) as c:
        listed = [f["path"] for f in c.get("/api/entities/dropped/files").json()["files"]]
    assert listed == ["minutes/2026/april.md", "minutes/2026/march.md"]


def test_a_dropped_directory_entry_is_walked_at_every_level(page: Any, console_server: Server) -> None:
    """What Chromium hands the page for a real folder dropped from the desktop: one item whose
    entry is a directory, read with createReader().readEntries() in batches until empty. A real OS
    drag cannot be made headless, so the entries API is stood in for by objects with its shape."""
    sign_in(page, ADMIN)
    page.get(f"{console_server.url}/ui/#/upload?entity=walked")
    wait_for(page, lambda: visible(page, "view-upload"), "the upload view")
    page.execute_script("""
        const fileEntry = (path, text) => ({isFile: true, isDirectory: false, fullPath: '/' + path,
          file: (ok) => ok(new File([text], path.split('/').pop(), {type: 'text/markdown'}))});
        const dirEntry = (path, children) => ({isFile: false, isDirectory: true, fullPath: '/' + path,
          createReader: () => { const batches = [children.slice(0, 1), children.slice(1), []];
                                return {readEntries: (ok) => setTimeout(() => ok(batches.shift() || []), 0)}; }});
        const root = dirEntry('site', [
          fileEntry('site/index.md', '# Site\\n\\nThe lighthouse opens at nine.\\n'),
          dirEntry('site/guides', [fileEntry('site/guides/boats.md', '# Boats\\n\\nRowing boats can be hired.\\n'),
                                   dirEntry('site/guides/deep', [
                                     fileEntry('site/guides/deep/tides.md', '# Tides\\n\\nLow tide is at noon.\\n')])]),
        ]);
        DataTransferItem.prototype.webkitGetAsEntry = function () { return root; };
        const dt = new DataTransfer();
        dt.items.add(new File(['x'], 'site'));
        document.getElementById('dropzone').dispatchEvent(
          new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
    """)
    wait_for(page, lambda: len(upload_statuses(page)) == 3, "the three files of the tree listed")
    assert sorted(upload_statuses(page)) == ["site/guides/boats.md", "site/guides/deep/tides.md", "site/index.md"]
    by_id(page, "upload-start").click()
    wait_for(page, lambda: "files settled" in text(page, "upload-summary"), "the job settled", timeout=120)
    with console_server.client(ADMIN) as c:
        listed = [f["path"] for f in c.get("/api/entities/walked/files").json()["files"]]
    assert listed == ["site/guides/boats.md", "site/guides/deep/tides.md", "site/index.md"]


def test_a_file_named_like_html_is_shown_as_text_and_runs_nothing(page: Any, console_server: Server,
                                                                   tmp_path: Path) -> None:
    hostile = tmp_path / XSS_NAME
    hostile.write_text("# Not a script\n\nThis file only has a hostile name.\n", encoding="utf-8")
    sign_in(page, ADMIN)
    page.get(f"{console_server.url}/ui/#/upload?entity=xss")
    wait_for(page, lambda: visible(page, "view-upload"), "the upload view")
    by_id(page, "pick-files").send_keys(str(hostile))  # Chromium's file input
    wait_for(page, lambda: XSS_NAME in upload_statuses(page), "the file listed under its name")
    by_id(page, "upload-start").click()
    wait_for(page, lambda: upload_statuses(page)[XSS_NAME][0] == "indexed", "the file indexed")
    page.get(f"{console_server.url}/ui/#/entity/xss")
    wait_for(page, lambda: file_rows(page) == [XSS_NAME], "the name in the document list, as text")
    page.get(f"{console_server.url}/ui/#/search?entity=xss&q=hostile&mode=text")
    wait_for(page, lambda: page.execute_script("const a = document.querySelector('#search-results .path');"
                                               "return a && a.innerText") == XSS_NAME, "the name in a hit")
    assert page.execute_script("return document.querySelectorAll('img').length") == 0
    assert no_alert(page)


def test_delete_a_document_then_the_entity_each_after_a_confirmation(page: Any, console_server: Server) -> None:
    with console_server.client(ADMIN) as c:
        job = upload(c, "doomed", [("a.md", b"# A\n\nfirst note about lanterns\n"),
                                   ("b.md", b"# B\n\nsecond note about ropes\n")], wait=True).json()
        assert [f["status"] for f in job["files"]] == ["indexed", "indexed"]
    sign_in(page, ADMIN)
    page.get(f"{console_server.url}/ui/#/entity/doomed")
    wait_for(page, lambda: file_rows(page) == ["a.md", "b.md"], "both documents")

    def delete_button(path: str) -> Any:
        from selenium.webdriver.common.by import By

        return page.find_element(By.CSS_SELECTOR, f"#files-table button[aria-label='Delete {path}']")

    delete_button("a.md").click()
    wait_for(page, lambda: visible(page, "confirm"), "the confirmation")
    assert "a.md" in text(page, "confirm-text")
    by_id(page, "confirm-cancel").click()  # cancelled: nothing happens
    time.sleep(0.5)
    assert file_rows(page) == ["a.md", "b.md"]

    delete_button("a.md").click()
    wait_for(page, lambda: visible(page, "confirm"), "the confirmation")
    by_id(page, "confirm-ok").click()
    wait_for(page, lambda: file_rows(page) == ["b.md"], "a.md gone from the list")
    assert "Deleted" in text(page, "banner")
    with console_server.client(ADMIN) as c:
        assert [f["path"] for f in c.get("/api/entities/doomed/files").json()["files"]] == ["b.md"]

    by_id(page, "entity-delete").click()
    wait_for(page, lambda: visible(page, "confirm"), "the confirmation")
    assert "doomed" in text(page, "confirm-text")
    by_id(page, "confirm-ok").click()
    wait_for(page, lambda: visible(page, "view-entities") and "Deleted entity" in text(page, "banner"),
             "back on the entity list")
    wait_for(page, lambda: "globex" in entity_rows(page), "the list reloaded")
    assert "doomed" not in entity_rows(page)
    with console_server.client(ADMIN) as c:
        assert c.get("/api/entities/doomed/files").status_code == 404


def test_overlapping_renders_of_one_view_list_each_row_once(page: Any, console_server: Server) -> None:
    """A sign-in's route and a navigation's hashchange (or quick clicks) can render one view twice at once;
    each render clears its tables and awaits the server. Only the latest may write: no row twice."""
    with console_server.client(ADMIN) as c:
        job = upload(c, "twice", [("a.md", b"# A\n\nthe lighthouse keeper's log\n"),
                                  ("b.md", b"# B\n\nthe ferry timetable\n")], wait=True).json()
        assert [f["status"] for f in job["files"]] == ["indexed", "indexed"]
    sign_in(page, ADMIN)
    wait_for(page, lambda: "globex" in entity_rows(page), "the entity list")
    page.execute_script("location.hash = '#/entity/twice';"
                        "for (let i = 0; i < 3; i++) window.dispatchEvent(new HashChangeEvent('hashchange'));")
    jobs = "return document.querySelectorAll('#jobs-table tbody tr').length"
    wait_for(page, lambda: file_rows(page) and page.execute_script(jobs), "the documents and the jobs")
    time.sleep(1.0)  # every overlapping render has had its answer by now
    assert file_rows(page) == ["a.md", "b.md"]
    assert page.execute_script(jobs) == 1

    page.execute_script("location.hash = '#/entities';"
                        "for (let i = 0; i < 3; i++) window.dispatchEvent(new HashChangeEvent('hashchange'));")
    wait_for(page, lambda: "twice" in entity_rows(page), "the entity list again")
    time.sleep(1.0)
    rows = entity_rows(page)
    assert len(rows) == len(set(rows)) and {"globex", "twice"} <= set(rows), rows
    assert severe_logs(page) == []


def test_a_tenant_token_sees_only_its_entities(page: Any, console_server: Server) -> None:
    with console_server.client(ADMIN) as c:
        upload(c, "acme", [("tenant.md", b"# Tenant\n\nacme's own note about anchors\n")], wait=True)
    sign_in(page, TENANT)
    wait_for(page, lambda: "acme" in entity_rows(page), "acme listed")
    assert entity_rows(page) == ["acme"]
    page.get(f"{console_server.url}/ui/#/entity/globex")
    message = wait_for(page, lambda: visible(page, "banner") and text(page, "banner"), "the refusal")
    assert "may not access entity 'globex'" in message and "403" in message
    assert file_rows(page) == []


def test_keyboard_only_sign_in_and_every_control_is_labelled(page: Any) -> None:
    from selenium.webdriver.common.keys import Keys

    wait_for(page, lambda: visible(page, "view-signin"), "the sign-in form")
    page.switch_to.active_element.send_keys(ADMIN + Keys.ENTER)  # the token field has the focus
    wait_for(page, lambda: "globex" in entity_rows(page), "signed in from the keyboard")
    unlabelled = page.execute_script("""
        return Array.from(document.querySelectorAll('input, select, button')).filter(e =>
          !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.innerText.trim()
        ).map(e => e.id || e.outerHTML.slice(0, 60));""")
    assert unlabelled == []
    # the drop zone is reachable and focusable from the keyboard
    page.get(page.current_url.split("#")[0] + "#/upload")
    wait_for(page, lambda: visible(page, "view-upload"), "the upload view")
    assert page.execute_script("const z = document.getElementById('dropzone'); z.focus();"
                               "return document.activeElement === z && z.tabIndex === 0")


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """No tokens, 1 MB per request, one file staged at a time: 413 and 503 + Retry-After come easily."""
    srv = Server(tmp_path_factory.mktemp("open") / "store", "--max-upload-mb", "1", "--staging-files", "1").start()
    yield srv
    srv.stop()


def test_a_server_without_tokens_needs_no_sign_in(browser: Any, open_server: Server) -> None:
    browser.get(f"{open_server.url}/ui/")
    browser.execute_script("sessionStorage.clear()")
    browser.get("about:blank")
    browser.get(f"{open_server.url}/ui/")
    wait_for(browser, lambda: visible(browser, "view-entities"), "the entities view without a sign-in")
    assert not visible(browser, "view-signin")
    assert not visible(browser, "signout")
    assert "no token needed" in text(browser, "who")
    assert "web console: " in open_server.output() and "(no token needed)" in open_server.output()


def test_413_and_503_are_shown_and_retried_as_the_api_says(browser: Any, open_server: Server,
                                                            tmp_path: Path) -> None:
    folder = write_tree(tmp_path, {f"batch/note-{i}.md": f"# Note {i}\n\nThe ferry leaves at {i + 6}:15.\n"
                                   for i in range(3)}) / "batch"
    (folder / "huge.txt").write_text("ferry timetable line\n" * 80_000)  # 1.7 MB: over --max-upload-mb 1
    browser.get(f"{open_server.url}/ui/#/upload?entity=ferries")
    wait_for(browser, lambda: visible(browser, "view-upload"), "the upload view")
    # remember every status the rows show on the way (they change faster than a test polls)
    browser.execute_script("""
        window.seenStatus = new Set();
        new MutationObserver(() => document.querySelectorAll('#upload-table tbody tr').forEach(r =>
          window.seenStatus.add(r.cells[3].innerText + ' | ' + r.cells[4].innerText))
        ).observe(document.getElementById('upload-table'), {subtree: true, childList: true, characterData: true});""")
    by_id(browser, "pick-folder").send_keys(str(folder))
    wait_for(browser, lambda: len(upload_statuses(browser)) == 4, "the four files listed")
    by_id(browser, "upload-start").click()
    wait_for(browser, lambda: "files settled" in text(browser, "upload-summary"), "every file settled", timeout=120)
    statuses = upload_statuses(browser)
    assert {p: s for p, (s, _) in statuses.items()} == {
        "batch/huge.txt": "failed", "batch/note-0.md": "indexed", "batch/note-1.md": "indexed",
        "batch/note-2.md": "indexed"}, statuses
    assert "413" in statuses["batch/huge.txt"][1] and "too large" in statuses["batch/huge.txt"][1]
    seen = browser.execute_script("return Array.from(window.seenStatus)")
    retried = [line for line in seen if line.startswith("retrying") and "503" in line]
    assert retried and "retrying in 5 s" in retried[0], seen  # the server's Retry-After: 5
    with open_server.client() as c:
        listed = [f["path"] for f in c.get("/api/entities/ferries/files").json()["files"]]
    assert listed == ["batch/note-0.md", "batch/note-1.md", "batch/note-2.md"]
