"""The monitor's HTML report opened in a real browser, and the Grafana dashboard's expressions.

The report is built from real snapshots: a monitor of this module's own watches the session's Triton server, fed
normal then drifted traffic through the serving client's tap, with delayed labels joined, and the CLI's way of
reading its history (``GET /v1/history``). The page is opened over file:// in headless Chromium (Debian's
``chromium`` through its ``chromedriver``; Selenium Manager is never asked for a driver or a browser, so nothing is
downloaded) and checked as a reader sees it: every image loaded, every section of ``report.SECTIONS`` there with
its heading, no console errors. Skipped where chromium, chromedriver or selenium is absent."""

from __future__ import annotations

import copy
import json
import os
import shutil
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferline.core.http import post_json
from inferline.features.pipelines import fraud
from inferline.features.synthetic import apply_shifts, parse_shift
from inferline.monitor.dashboard import dashboard_metric_names, grafana_dashboard
from inferline.monitor.performance import FIGURES
from inferline.monitor.report import SECTIONS, write_report
from inferline.serving.client import InferlineClient
from inferline.serving.server import TritonServer
from inferline.serving.tap import MonitorTap

from .conftest import Published
from .test_monitor import start_monitor

# found on PATH, like every other tool the suite uses (a run with them hidden skips with a reason)
CHROMIUM = Path(shutil.which("chromium") or "/nonexistent/chromium")
CHROMEDRIVER = Path(shutil.which("chromedriver") or "/nonexistent/chromedriver")
# what the report promises, in order (monitor/report.py SECTIONS): a section is there even with nothing to show
EXPECTED_SECTIONS = ("summary", "drift", "outputs", "latency", "labels", "performance", "utilization", "json")
ROWS = 3_000


# --- the browser -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Chromium driven by the system chromedriver; always quit (browser and driver processes) at the end."""
    missing = [p.name for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.skip(f"needs {' and '.join(missing)} on PATH (Debian: apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install 'inferline[dev]')")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)  # with the driver's path below: Selenium Manager is skipped
    for argument in (
        "--headless=new",
        "--no-sandbox",  # the tests run as root, where Chromium's sandbox cannot start
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console messages, read by get_log
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@dataclass
class Page:
    sections: list[dict[str, str]]  # {"id", "heading", "text"} per <section>, in page order
    images: list[dict[str, Any]]  # {"src", "complete", "naturalWidth", "section"} per <img>
    console: list[dict[str, Any]]  # the browser log (console messages, failed loads) at level SEVERE

    def section(self, section_id: str) -> str:
        return next(s["text"] for s in self.sections if s["id"] == section_id)


def open_report(driver: Any, report: Path) -> Page:
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(report.resolve().as_uri())
    state = driver.execute_script(
        """
        return {
          sections: [...document.querySelectorAll("section")].map(s => ({
            id: s.id, heading: (s.querySelector("h2") || {}).textContent || "", text: s.innerText})),
          images: [...document.images].map(i => ({
            src: i.getAttribute("src"), complete: i.complete, naturalWidth: i.naturalWidth,
            section: (i.closest("section") || {}).id || ""})),
        };"""
    )
    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    return Page(state["sections"], state["images"], severe)


def check_page(page: Page, images: set[str]) -> None:
    """Every promised section with its heading, in order; every image loaded; exactly ``images`` drawn."""
    headings = dict(SECTIONS)
    assert [s["id"] for s in page.sections] == list(EXPECTED_SECTIONS)
    for s in page.sections:
        assert s["heading"] == headings[s["id"]], s
    bad = [i for i in page.images if not (i["complete"] and i["naturalWidth"] > 0)]
    assert not bad, f"images that did not load: {bad}"
    assert {i["src"] for i in page.images} == images
    assert not page.console, page.console


# --- real snapshots -----------------------------------------------------------------------------------------------


@dataclass
class Watched:
    history: list[dict[str, Any]]  # what GET /v1/history answered, as `inferline monitor report` reads it
    labels: np.ndarray  # the delayed labels of the drifted rows, as joined


@pytest.fixture(scope="module")
def watched(published: Published, triton: TritonServer) -> Watched:
    server = start_monitor(published, triton, ROWS)
    try:

        def send(rows: Any) -> None:
            tap = MonitorTap(server.url, key=server.ingest_key)
            with InferlineClient(triton.config.http_url, "http", pipeline="fraud", tap=tap) as client:
                client.predict(rows.drop(columns=[fraud.SPEC.label]))
            tap.close()
            assert tap.sent == len(rows) and tap.dropped == 0

        send(fraud.generate(ROWS, seed=911))
        server.monitor.tick()
        drifted = apply_shifts(fraud.generate(ROWS, seed=912), fraud.SPEC, [parse_shift("amount=x1.8")])
        send(drifted)
        server.monitor.tick()
        labels = drifted[fraud.SPEC.label].to_numpy()
        body = {
            "labels": [
                {"transaction_id": t, "label": int(y)} for t, y in zip(drifted["transaction_id"], labels, strict=True)
            ]
        }
        assert post_json(f"{server.url}/v1/labels", body, key=server.ingest_key) == {"joined": ROWS, "unmatched": 0}
        server.monitor.tick()
        with urllib.request.urlopen(f"{server.url}/v1/history", timeout=10) as r:
            history = json.loads(r.read())
    finally:
        server.stop()
    assert len(history) == 3 and history[-1]["drift"]["features"] and history[-1]["latency"]
    return Watched(history, labels)


PLOTS = {"latency.png", "drift.png", "prediction.png", "utilization.png", "performance.png"}


def performance_rows(page: Page) -> dict[str, list[str]]:
    """The performance table as shown: ``{metric: [estimated, realized]}``."""
    lines = page.section("performance").splitlines()
    return {cells[0]: cells[1:] for cells in (line.split("\t") for line in lines) if cells[0] in FIGURES}


def test_report_from_the_monitor_in_a_browser(browser: Any, watched: Watched, tmp_path: Path) -> None:
    summary = write_report(watched.history, tmp_path)
    last = watched.history[-1]
    page = open_report(browser, tmp_path / "report.html")
    check_page(page, PLOTS)
    assert {i["section"] for i in page.images if i["src"] == "drift.png"} == {"drift"}

    drift = page.section("drift")
    assert "log_amount" in summary["drifted"] and "log_amount" in drift
    for f in last["drift"]["features"]:
        assert f["feature"] in drift
    assert any(f["feature"].startswith("nulls_") for f in last["drift"]["features"])  # every raw column's nulls
    assert "missing share (window)" in drift
    labels = page.section("labels")
    assert f"{len(watched.labels)} labels joined" in labels
    assert all(name in labels for name in fraud.SPEC.classes)
    latency = page.section("latency")
    assert all(key.split("|")[0] in latency for key in last["latency"])
    # the monitor's own estimate, and the realized figures of the 3,000 joined labels, as the snapshot holds them
    performance = last["performance"]
    assert performance["realized_rows"] == len(watched.labels) and performance["rows"] == ROWS
    assert performance_rows(page) == {
        m: [f"{performance['estimated'][m]:.3g}", f"{performance['realized'][m]:.3g}"] for m in FIGURES
    }
    assert f"{ROWS} rows" in page.section("performance")


def test_report_of_older_snapshots_says_no_estimate(browser: Any, watched: Watched, tmp_path: Path) -> None:
    """Snapshots from a monitor before the estimate and the missing shares: no ``performance`` key, drift
    statistics without ``null_share``; every section still renders."""
    history = copy.deepcopy(watched.history)
    for snapshot in history:
        del snapshot["performance"]
        for f in snapshot["drift"]["features"]:
            f["statistics"].pop("null_share", None)
    write_report(history, tmp_path)
    page = open_report(browser, tmp_path / "report.html")
    check_page(page, PLOTS - {"performance.png"})
    assert "No estimate" in page.section("performance") and not performance_rows(page)
    assert "missing share" not in page.section("drift")


def test_report_before_labels_and_with_missing_values(browser: Any, watched: Watched, tmp_path: Path) -> None:
    """The snapshots before the labels joined: an estimate and no realized figures yet; one column's null share
    set to 12.5 % shows as such."""
    history = copy.deepcopy(watched.history[:2])
    performance = history[-1]["performance"]
    assert performance["estimated"] is not None and performance["realized"] is None
    nulls = next(f for f in history[-1]["drift"]["features"] if f["kind"] == "missing")
    nulls["statistics"]["null_share"] = 0.125
    write_report(history, tmp_path)
    page = open_report(browser, tmp_path / "report.html")
    check_page(page, PLOTS)
    assert performance_rows(page) == {m: [f"{performance['estimated'][m]:.3g}", "not yet"] for m in FIGURES}
    assert "not realized yet" in page.section("performance")
    drift = page.section("drift")
    assert "missing share (window)" in drift and "12.50%" in drift


# --- Grafana -----------------------------------------------------------------------------------------------------


def test_dashboard_metric_names_reads_only_metric_names() -> None:
    dashboard = {
        "panels": [
            {
                "targets": [
                    {"expr": "histogram_quantile(0.99, sum by (le, side, model) (rate(a_latency_seconds_bucket[5m])))"},
                    {"expr": 'sum(rate(b_rows_total{status!="ok", release=~"fraud:.*"}[$__rate_interval])) by (le)'},
                    {"expr": "c_ratio > bool 0.5 and on (release) group_left (model) d_info offset 1h"},
                    {"expr": 'max without (quantile) (e_gauge) / ignoring (x) {__name__="f_total"}'},
                    {"expr": 'label_replace(g_x, "dst", "$1", "src", "(.*)") + avg_over_time(h_y[10m:1m])'},
                ]
            },
            {"type": "row", "panels": [{"targets": [{"expr": "topk(5, i_nested)"}, {"refId": "B"}]}]},
            {"type": "text"},
        ]
    }
    names = dashboard_metric_names(dashboard)
    assert names == {
        "a_latency_seconds_bucket",
        "b_rows_total",
        "c_ratio",
        "d_info",
        "e_gauge",
        "f_total",
        "g_x",
        "h_y",
        "i_nested",
    }
    words = {"histogram_quantile", "sum", "by", "le", "rate", "status", "bool", "on", "group_left", "model", "x"}
    assert not names & words


def test_committed_dashboard_is_the_generated_one() -> None:
    """monitor/grafana/inferline.json is `inferline monitor grafana`'s output: regenerate it after a change."""
    committed = json.loads((files("inferline.monitor.grafana") / "inferline.json").read_text())
    assert committed == grafana_dashboard()
    names = dashboard_metric_names(committed)
    new = {
        "inferline_estimated_performance",
        "inferline_realized_performance",
        "inferline_performance_estimate_rows",
        "inferline_calibration_error",
        "inferline_request_latency_seconds_bucket",
        "inferline_drift_statistic",
        "inferline_edge_rollout_share",  # the rollout panels read the edge's metrics (serving.edge_route)
        "inferline_edge_release_requests_total",
        "inferline_edge_release_latency_seconds_bucket",
    }
    assert new <= names
    exprs = [t["expr"] for p in committed["panels"] for t in p["targets"]]
    assert any('statistic="null_share"' in e for e in exprs)
    for q in (0.5, 0.95, 0.99):
        assert any(e.startswith(f"histogram_quantile({q}, ") for e in exprs)
