"""The built documentation site renders in a browser without reaching anything outside itself.

`make docs` builds site/ (`make test` does it first); this serves it with a real
`python -m http.server` on 127.0.0.1, loads the home page and one API reference page in headless
Chromium (Debian's, `make chromium`), aborts every request that is not to that server, and fails
if any was attempted or any request failed.  DOCS_SCREENSHOT=<file.png> saves the home page.
"""
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from functions.core.paths import REPO_ROOT

pytestmark = pytest.mark.slow  # also marked by its folder: a browser and a server

SITE = REPO_ROOT / "site"
CHROMIUM = Path("/usr/bin/chromium")
TITLE = "Transfer learning in small CNNs"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def site_url():
    if not (SITE / "index.html").exists():
        pytest.fail(f"no built site in {SITE}: run `make docs` first")
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                               "--directory", str(SITE)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"http.server on 127.0.0.1:{port} did not start")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="module")
def browser_page(site_url, tmp_path_factory):
    """A page of a fresh Chromium profile whose requests outside the local server are aborted."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make chromium` installs Debian's package")
    from playwright.sync_api import sync_playwright

    local = urlsplit(site_url).netloc
    outside, failed, errors = [], [], []

    def route(r):
        url = urlsplit(r.request.url)
        if url.scheme in ("data", "blob") or url.netloc == local:
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM),
            headless=True, args=CHROMIUM_ARGS, service_workers="block")
        context.route("**/*", route)
        page = context.new_page()
        page.on("requestfailed", lambda req: failed.append(f"{req.url}: {req.failure}"))
        page.on("response", lambda res: res.status >= 400 and failed.append(f"{res.url}: HTTP {res.status}"))
        page.on("pageerror", lambda err: errors.append(str(err)))
        try:
            yield page, outside, failed, errors
        finally:
            context.close()


def _load(page, url: str) -> None:
    page.goto(url, wait_until="load")
    page.wait_for_load_state("networkidle")


def _check_rendered(page, outside, failed, errors, title: str) -> None:
    assert title in page.title()
    tabs = page.locator("nav.md-tabs a.md-tabs__link").all_inner_texts()
    assert {"Home", "Tutorials", "Reference", "Results"} <= {t.strip() for t in tabs}, tabs
    assert page.locator("nav.md-nav--primary a").count() > 20
    assert outside == [], f"requests outside the site: {outside}"
    assert failed == [], f"failed requests: {failed}"
    assert errors == [], f"script errors: {errors}"


def test_home_page_renders_offline(site_url, browser_page):
    page, outside, failed, errors = browser_page
    _load(page, site_url + "/")
    _check_rendered(page, outside, failed, errors, TITLE)
    assert TITLE in page.locator("h1").first.inner_text()
    if os.environ.get("DOCS_SCREENSHOT"):
        page.screenshot(path=os.environ["DOCS_SCREENSHOT"], full_page=False)


def test_api_reference_page_renders_offline(site_url, browser_page):
    pages = sorted((SITE / "reference" / "api").rglob("index.html"))
    wanted = SITE / "reference" / "api" / "functions" / "core" / "errors" / "index.html"
    chosen = wanted if wanted in pages else pages[-1]
    page, outside, failed, errors = browser_page
    _load(page, site_url + "/" + chosen.parent.relative_to(SITE).as_posix() + "/")
    module = ".".join(chosen.parent.relative_to(SITE / "reference" / "api").parts)
    _check_rendered(page, outside, failed, errors, module.rsplit(".", 1)[-1])
    assert page.locator(".doc.doc-object").count() >= 1
    assert module in page.locator("h1").first.inner_text()
