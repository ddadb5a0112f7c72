"""What a rollout shows outside the CLI: the monitor's ``inferline_rollout_*`` metrics (``monitor.metrics``), the
Grafana dashboard's rollout panels (``monitor.dashboard``: they read the edge's metrics) and the report's rollout
section (``monitor.report``). A real ``Monitor`` on an empty repository (it falls back to the live pipeline's spec)
with a real ``RolloutController`` reading a rollout file; the step decision is ``decide_step``'s on a candidate
20 ms slower, recorded in the rollout as the controller records it. Nothing is served: no process, no Triton."""

from __future__ import annotations

import html
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from inferline.core.alerts import Alerter
from inferline.monitor.config import MonitorConfig
from inferline.monitor.dashboard import dashboard_metric_names, grafana_dashboard
from inferline.monitor.metrics import MonitorCollector
from inferline.monitor.report import SECTIONS, write_report
from inferline.monitor.rollout import RolloutController
from inferline.monitor.rollout_decision import Arm, Policy, decide_step
from inferline.monitor.service import Monitor
from inferline.release.rollout import Rollout, write_rollout
from tests.monitor_cases import edge_metric_names

ROLLOUT_FAMILIES = {
    "inferline_rollout_info",
    "inferline_rollout_step",
    "inferline_rollout_share",
    "inferline_rollout_decisions",
    "inferline_rollout_check_p_value",
    "inferline_rollout_check_effect",
    "inferline_rollout_step_rows",
    "inferline_rollout_step_requests",
}


def arm(rng: np.random.Generator, rows: int, slow_s: float = 0.0) -> Arm:
    """A binary classifier's step: latencies around 2 ms (plus ``slow_s``), P(class 1) from a beta."""
    p1 = rng.beta(0.1, 3.23, size=rows)
    latency = rng.lognormal(math.log(0.002), 0.4, size=rows) + slow_s
    return Arm(latency, rows, 0, np.column_stack([1.0 - p1, p1]), (p1 > 0.5).astype(np.int64))


def monitor_without_rollout(repository: Path) -> Monitor:
    return Monitor(MonitorConfig(repository=repository, pipeline="fraud", nvml=False))


def monitor_in_rollout(repository: Path) -> Monitor:
    """fraud:1 -> fraud:2, a canary at step 1 (25 %), whose step 0 was decided (a breach, kept as evidence only:
    the phase stays ``running`` so that nothing is unloaded), with 40 rows and 30 latencies per release so far."""
    monitor = monitor_without_rollout(repository)
    controller = RolloutController(repository, "fraud", "127.0.0.1:1", "no-key", Alerter([]), "binary")
    monitor.rollout = controller
    rng = np.random.default_rng(7)
    policy = Policy()
    decision = decide_step(0, arm(rng, 4000), arm(rng, policy.min_rows, slow_s=0.020), "binary", policy)
    assert decision.verdict == "breach"
    rollout = Rollout("fraud", "canary", 1, 2, [0.05, 0.25, 0.5], phase="running", step=1)
    rollout.decisions.append({"at": 1.0e9, "share": 0.05, "counts": {}, **decision.as_dict()})
    write_rollout(repository, rollout)
    controller.decisions = {"breach": 1}  # what the controller counts when it decides (this test wrote the decision)
    controller.tick({})  # reads the rollout; the step's evidence window starts
    for release in ("fraud:1", "fraud:2"):
        values = np.full((40, 2), 0.5)
        controller.evidence.add(release, [0.002] * 30, values, np.zeros(40, np.int64), None)
    return monitor


def scrape(monitor: Monitor) -> dict[str, Any]:
    registry = CollectorRegistry()  # a fresh one per test
    registry.register(MonitorCollector(monitor))
    text = generate_latest(registry).decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(family: Any) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples}


def test_rollout_metrics(tmp_path: Path) -> None:
    monitor = monitor_in_rollout(tmp_path)
    families = scrape(monitor)
    assert ROLLOUT_FAMILIES <= set(families)
    assert monitor.rollout is not None and monitor.rollout.rollout is not None
    rollout = monitor.rollout.rollout
    assert [(s.labels, s.value) for s in families["inferline_rollout_info"].samples] == [
        (
            {"rollout": rollout.id, "mode": "canary", "phase": "running", "current": "fraud:1", "candidate": "fraud:2"},
            1.0,
        )
    ]
    assert samples(families["inferline_rollout_step"]) == {(): 1.0}
    assert samples(families["inferline_rollout_share"]) == {(): 0.25}
    decisions = families["inferline_rollout_decisions"]
    assert decisions.type == "counter"
    assert [(s.name, s.labels, s.value) for s in decisions.samples if s.name.endswith("_total")] == [
        ("inferline_rollout_decisions_total", {"verdict": "breach"}, 1.0)
    ]
    checks = rollout.decisions[-1]["checks"]
    p_values = {c["name"]: c["p_value"] for c in checks if c["p_value"] is not None}
    effects = {c["name"]: c["effect"] for c in checks if c["effect"] is not None}
    assert "latency_p99" in p_values and len(p_values) < len(checks)  # a check that did not apply has none
    assert {s.labels["check"]: s.value for s in families["inferline_rollout_check_p_value"].samples} == p_values
    assert {s.labels["check"]: s.value for s in families["inferline_rollout_check_effect"].samples} == effects
    per_release = {(("release", "fraud:1"),): 40.0, (("release", "fraud:2"),): 40.0}
    assert samples(families["inferline_rollout_step_rows"]) == per_release
    assert samples(families["inferline_rollout_step_requests"]) == {k: 30.0 for k in per_release}


def test_no_rollout_metrics_without_a_rollout(tmp_path: Path) -> None:
    """No controller, or a controller whose pipeline never had a rollout: no ``inferline_rollout_*`` family."""
    monitor = monitor_without_rollout(tmp_path)
    assert not {n for n in scrape(monitor) if n.startswith("inferline_rollout_")}
    monitor.rollout = RolloutController(tmp_path, "fraud", "127.0.0.1:1", "no-key", Alerter([]), "binary")
    assert monitor.rollout.tick({}) == {}
    assert not {n for n in scrape(monitor) if n.startswith("inferline_rollout_")}


def test_rollout_panels_read_the_edges_metrics() -> None:
    """The candidate's share, each release's error ratio and p99 latency, as the edges measured them: series the
    edge's router exports (the supervisor's registry), the latency from its mergeable histogram."""
    panels = [p for p in grafana_dashboard()["panels"] if p["title"].startswith("Rollout")]
    names = dashboard_metric_names({"panels": panels})
    assert names == {
        "inferline_edge_rollout_share",
        "inferline_edge_release_requests_total",
        "inferline_edge_release_latency_seconds_bucket",
    }
    assert names <= edge_metric_names()
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    latency = "histogram_quantile(0.99, sum by (release, le) (rate(inferline_edge_release_latency_seconds_bucket[1m])))"
    assert latency in exprs
    assert any('outcome="error"' in e and e.count("sum by (release)") == 2 for e in exprs)


def section_ids(page: str) -> list[str]:
    return re.findall(r'<section id="([a-z]+)">', page)


def test_report_shows_the_last_rollout_and_its_checks(tmp_path: Path) -> None:
    """Snapshots from before the rollout (``"rollout": {}``) and during it: the rollout section follows the summary,
    with the releases, the phase, each decision and its checks' messages; a history without one has no section."""
    monitor = monitor_without_rollout(tmp_path / "repository")
    before = monitor.status()
    assert before["rollout"] == {}
    monitor = monitor_in_rollout(tmp_path / "repository")
    during = monitor.status()
    assert during["rollout"]["phase"] == "running" and during["rollout"]["decisions"]

    summary = write_report([before, during, {**before, "at": during["at"] + 1}], tmp_path / "report")
    page = (tmp_path / "report" / "report.html").read_text()
    assert section_ids(page) == ["summary", "rollout", *(s for s, _ in SECTIONS[1:])]
    assert summary["rollout"]["id"] == during["rollout"]["id"]  # the last snapshot that carries one
    rollout = page[page.index('<section id="rollout">') : page.index('<section id="drift">')]
    assert "Canary rollout" in rollout and "release 1 -&gt; 2" in rollout and "<b>running</b>" in rollout
    decision = during["rollout"]["decisions"][0]
    assert "<h3>Step 0: breach</h3>" in rollout
    for check in decision["checks"]:
        assert f"<td>{html.escape(check['name'])}</td><td>{html.escape(check['status'])}</td>" in rollout
        assert html.escape(check["message"]) in rollout
    assert any(c["status"] == "breach" and "ms vs" in c["message"] for c in decision["checks"])

    write_report([before], tmp_path / "plain")
    assert section_ids((tmp_path / "plain" / "report.html").read_text()) == [s for s, _ in SECTIONS]
