"""The docs site as a reader meets it: built with ``mkdocs build --strict``, served over real HTTP on 127.0.0.1 and
opened in headless Chromium (the report test's browser: Debian's ``chromium`` through its ``chromedriver``, nothing
downloaded). The front page with its nav tabs, the bring-your-own-model tutorial, and the theme's own search box finding
"rollback" (the search runs in a web worker that fetches ``search/search_index.json``, so over file:// it cannot
work: hence the HTTP server). Screenshots of the three go to ``$INFERLINE_DOCS_SHOTS`` when set (the committed ones
in docs/assets/screenshots came from ``INFERLINE_DOCS_SHOTS=docs/assets/screenshots``), else to the test's tmp.

Skipped where mkdocs or mkdocs-material is absent (the docs dependencies are not in pyproject yet), and where
chromium, chromedriver or selenium is absent."""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from .test_report_browser import browser  # noqa: F401 - the headless Chromium fixture

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "docs" / "tutorials" / "bring-your-own-model.md"
# the top-level nav sections (mkdocs.yml), shown as the material theme's tabs after "Home"
SECTIONS = ["Quickstart", "Tutorials", "How-to", "Reference", "Explanation"]
ROLLBACK_PAGE = "/how-to/alerts-and-rollback/"
WAIT_S = 30


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The site built from this checkout's docs/ and served on 127.0.0.1 (a free port); yields its base URL."""
    for module in ("mkdocs", "material"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"needs {module} (pip install mkdocs mkdocs-material; not in pyproject's extras yet)")
    directory = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(directory)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, name="docs-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the screenshots go: ``$INFERLINE_DOCS_SHOTS`` (relative to the checkout's root) or a tmp folder."""
    given = os.environ.get("INFERLINE_DOCS_SHOTS")
    directory = ROOT / given if given else tmp_path_factory.mktemp("docs-shots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture(scope="module")
def docs_browser(browser: Any) -> Any:  # noqa: F811 - the imported fixture, requested
    browser.set_window_size(1280, 900)  # wide enough for the theme's tabs and search box (not its mobile layout)
    return browser


def wait(driver: Any, condition: Any, what: str) -> Any:
    """Poll ``condition(driver)`` until it returns something truthy (Selenium's WebDriverWait); fail naming ``what``."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.05).until(condition, f"timed out waiting for {what}")


def open_page(driver: Any, url: str) -> None:
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(url)
    wait(driver, lambda d: d.execute_script("return document.readyState") == "complete", f"{url} to load")


def severe(driver: Any, site: str) -> list[dict[str, Any]]:
    """The browser log's errors, less failed loads from other hosts: the theme asks fonts.googleapis.com for its
    Roboto fonts (``theme.font``), which an offline machine cannot resolve, and falls back to the system's fonts."""
    return [
        e
        for e in driver.get_log("browser")
        if e["level"] == "SEVERE" and not (e["source"] == "network" and not e["message"].startswith(site))
    ]


def heading(driver: Any) -> str:
    """The article's h1 as shown, without the permalink anchor (``¶``) the toc extension appends."""
    return str(
        driver.execute_script(
            """
            const h = document.querySelector("article h1").cloneNode(true);
            h.querySelectorAll("a.headerlink").forEach(a => a.remove());
            return h.textContent.trim();"""
        )
    )


def test_front_page_and_tutorial(docs_browser: Any, site: str, shots: Path) -> None:
    driver = docs_browser
    open_page(driver, f"{site}/")
    assert driver.title == "inferline"
    assert heading(driver) == "inferline"
    tabs = [
        t.strip()
        for t in driver.execute_script(
            'return [...document.querySelectorAll(".md-tabs__link")].map(a => a.textContent)'
        )
    ]
    assert tabs == ["Home", *SECTIONS]
    assert not severe(driver, site)
    driver.save_screenshot(str(shots / "front-page.png"))

    # the bring-your-own-model tutorial, reached through its nav link as a reader would
    link = driver.find_element("css selector", 'a[href$="tutorials/bring-your-own-model/"]')
    driver.get(link.get_attribute("href"))
    path = "/tutorials/bring-your-own-model/"
    wait(driver, lambda d: urlsplit(d.current_url).path == path, "the bring-your-own-model tutorial")
    wait(driver, lambda d: d.execute_script("return document.readyState") == "complete", "the tutorial to load")
    expected = next(line[2:].strip() for line in TUTORIAL.read_text().splitlines() if line.startswith("# "))
    assert expected == "Bring your own model"
    assert heading(driver) == expected
    assert driver.title == "Bring your own model - inferline"
    # the example package's code is on the page (a file block), highlighted as Python
    script = 'return [...document.querySelectorAll("article .highlight code")].map(c => c.textContent)'
    code = driver.execute_script(script)
    assert any("SPEC = PipelineSpec(" in c for c in code), "the tutorial shows examples/crop_yield's spec.py"
    assert not severe(driver, site)
    driver.save_screenshot(str(shots / "tutorial-bring-your-own-model.png"))


def test_search_finds_rollback(docs_browser: Any, site: str, shots: Path) -> None:
    from selenium.webdriver.common.by import By

    driver = docs_browser
    open_page(driver, f"{site}/")
    box = driver.find_element(By.CSS_SELECTOR, "input.md-search__input")
    box.click()
    box.send_keys("rollback")
    # readiness: the worker has indexed the site and answered this query (the meta line counts the matches)
    items = wait(
        driver,
        lambda d: d.find_elements(By.CSS_SELECTOR, "li.md-search-result__item"),
        "search results for 'rollback'",
    )
    meta = driver.find_element(By.CSS_SELECTOR, ".md-search-result__meta").text
    assert items and "matching" in meta, meta
    hrefs = [a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "a.md-search-result__link")]
    pages = {urlsplit(h).path for h in hrefs}
    assert ROLLBACK_PAGE in pages, pages
    assert "rollback" in driver.find_element(By.CSS_SELECTOR, ".md-search-result__list").text.lower()
    assert not severe(driver, site)
    driver.save_screenshot(str(shots / "search-rollback.png"))
    print(f"search 'rollback': {meta}; pages: {sorted(pages)}")
