"""The alert rules on real Prometheus 2.42 and Alertmanager 0.25 (Debian's ``prometheus`` and
``prometheus-alertmanager``, which ``make test`` installs): ``promtool check rules`` on the generated file, the
in-process evaluator against the same rules as PromQL under ``promtool test rules`` on the same series, drifted
traffic through a served release firing an alert that Alertmanager delivers to a webhook, and latency percentiles
of two monitors merged by Prometheus."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from inferline.core.alerts import Alerter
from inferline.core.http import post_json
from inferline.core.processes import free_port
from inferline.features.pipelines import fraud
from inferline.monitor.app import MonitorServer
from inferline.monitor.config import MonitorConfig
from inferline.monitor.dashboard import dashboard_metric_names, grafana_dashboard
from inferline.monitor.drift import FeatureDrift
from inferline.monitor.metrics import regression_metrics
from inferline.monitor.rules import DEFAULT_RULES, AlertRule, RuleEngine, prometheus_rules
from inferline.monitor.service import Monitor
from inferline.monitor.windows import LATENCY_BUCKET_ERROR, ReleaseWindow
from inferline.serving.client import InferlineClient
from inferline.serving.tap import MonitorTap
from tests.conftest import Receiver
from tests.monitor_cases import edge_metric_names

from .conftest import Published, supervised_server, wait_until

PROMETHEUS, PROMTOOL, ALERTMANAGER = (shutil.which(b) for b in ("prometheus", "promtool", "prometheus-alertmanager"))
needs_prometheus = pytest.mark.skipif(
    None in (PROMETHEUS, PROMTOOL, ALERTMANAGER),
    reason="needs Debian's prometheus and prometheus-alertmanager (make test installs them)",
)
pytestmark = needs_prometheus


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


@dataclass
class Process:
    """A server process of the test's own on a free loopback port, stopped by ``stop``."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(15)


def start(command: list[str], port: int, log: Path) -> Process:
    """Start ``command`` and wait until ``/-/ready`` answers 200 (both servers have it)."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    server = Process(f"http://127.0.0.1:{port}", process, log)

    def ready() -> bool:
        assert process.poll() is None, f"{command[0]} exited: {log.read_text()[-2000:]}"
        try:
            with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        wait_until(ready, 60, f"{command[0]} ready")
    except BaseException:
        server.stop()
        raise
    return server


def start_prometheus(
    root: Path, jobs: dict[str, list[str]], rules: Path | None = None, alertmanager: str | None = None
) -> Process:
    """Prometheus scraping ``jobs`` (``{job: [metrics URL, ...]}``) every second, evaluating ``rules`` every
    second and sending alerts to ``alertmanager``."""
    root.mkdir(parents=True, exist_ok=True)
    scrape = []
    for job, urls in jobs.items():
        parsed = [urllib.parse.urlsplit(u) for u in urls]
        assert len({p.path for p in parsed}) == 1, urls
        scrape.append(
            {
                "job_name": job,
                "metrics_path": parsed[0].path,
                "static_configs": [{"targets": [p.netloc for p in parsed]}],
            }
        )
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": scrape,
    }
    if rules is not None:
        config["rule_files"] = [str(rules)]
    if alertmanager is not None:
        target = urllib.parse.urlsplit(alertmanager).netloc
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [target]}]}]}
    (root / "prometheus.yml").write_text(yaml.safe_dump(config))
    check = promtool("check", "config", str(root / "prometheus.yml"), cwd=root)
    assert check.returncode == 0, check.stdout + check.stderr
    port = free_port()
    assert PROMETHEUS is not None
    command = [
        PROMETHEUS,
        f"--config.file={root / 'prometheus.yml'}",
        f"--storage.tsdb.path={root / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    return start(command, port, root / "prometheus.log")


def start_alertmanager(root: Path, webhook: str) -> Process:
    root.mkdir(parents=True, exist_ok=True)
    config = {
        "route": {"receiver": "test", "group_by": ["alertname"], "group_wait": "0s", "group_interval": "1s"},
        "receivers": [{"name": "test", "webhook_configs": [{"url": webhook, "send_resolved": False}]}],
    }
    (root / "alertmanager.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    assert ALERTMANAGER is not None
    command = [
        ALERTMANAGER,
        f"--config.file={root / 'alertmanager.yml'}",
        f"--storage.path={root / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",  # one instance: no gossip port
    ]
    return start(command, port, root / "alertmanager.log")


def query(prometheus: Process, expr: str) -> list[dict[str, Any]]:
    answer = get_json(f"{prometheus.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


def test_promtool_checks_the_generated_rules(tmp_path: Path) -> None:
    committed = Path(__file__).parents[2] / "monitor/prometheus/inferline-rules.yml"
    named = tmp_path / "named.yml"
    named.write_text(yaml.safe_dump(prometheus_rules(DEFAULT_RULES, 5.0, pipeline="loans")))
    for path in (committed, named):
        done = promtool("check", "rules", str(path), cwd=tmp_path)
        assert done.returncode == 0 and f"SUCCESS: {len(DEFAULT_RULES)} rules found" in done.stdout, done.stdout


# ------------------------------------------------------------------------------------ evaluator vs PromQL

STEP_S = 10
LATENCY_WINDOW_S = 30  # three steps: the window of a rate() whose range holds exactly four samples
AGREEMENT_RULES = (
    *DEFAULT_RULES,
    AlertRule("amount_psi", "drift_statistic", target="log_amount", statistic="psi", threshold=0.2),
    AlertRule(
        "amount_ks_low", "drift_statistic", target="log_amount", statistic="ks", op="<", threshold=0.05, for_windows=2
    ),
    AlertRule("fraud_errors", "class_error_rate", target="fraud", threshold=0.3, min_rows=20),
    AlertRule("channel_drift", "drift", target="channel_idx", for_windows=3),
    AlertRule("auc_low", "performance_estimate", statistic="roc_auc", op="<", threshold=0.8, for_windows=2),
    AlertRule("precision_high", "performance_estimate", statistic="precision", threshold=0.5),
)


class ScriptedMonitor(Monitor):
    """A real ``Monitor`` whose joined-label class errors come from the test's script for the current step; its
    snapshot (``status``, what the in-process rules read) and its exporter (``collect``, what Prometheus scrapes)
    are the monitor's own code."""

    classes: ClassVar[dict[str, dict[str, float]]] = {}
    performance: ClassVar[dict[str, Any]] = {}

    def class_errors(self) -> dict[str, dict[str, float]]:
        return self.classes

    def performance_estimate(self) -> dict[str, Any]:
        return self.performance


def scripted_step(m: ScriptedMonitor, rng: random.Random, step: int, now: float) -> None:
    """Set every figure a rule reads, at random and away from the thresholds (a float on a threshold could land
    on either side of it in the two engines)."""

    def pick(*choices: float) -> float:
        return rng.choice(choices)

    features = [("log_amount", "numeric"), ("channel_idx", "categorical"), ("probability_fraud", "prediction")]
    m._drift = []
    for name, kind in features:
        state = rng.choice(("ok", "ok", "drift", "not_enough_data"))
        statistics = {} if state == "not_enough_data" else {"psi": pick(0.05, 0.4), "ks": pick(0.01, 0.2)}
        m._drift.append(FeatureDrift(name, kind, state, 1000, 800, "ks", 0.5, 0.01, statistics))
    m.classes = {
        name: {"error_rate": pick(0.1, 0.45, 0.8), "precision": 0.5, "recall": 0.5, "predicted": pick(5, 30, 80)}
        for name in fraud.SPEC.classes
    }
    estimated = {"roc_auc": pick(0.7, 0.9), "precision": pick(0.3, 0.6), "recall": pick(0.3, 0.6)}
    m.performance = {
        "release": "fraud:2",
        "rows": 800,
        "estimated": estimated if rng.random() < 0.9 else None,
        "realized": None,
        "realized_rows": 0,
        "calibration_error": 0.01,
    }
    served = rng.random() < 0.85  # else: nothing in the drift window (no_data)
    m.windows = {"fraud:2": ReleaseWindow(rows=int(pick(500, 3000)) if served else 0, last_seen=now)}
    m.triton_up = int(rng.random() < 0.9)
    ok, bad = pick(0, 100), pick(0, 1, 20)
    m.triton_window = {("fraud", "2"): deque([(now, ok, bad)])}
    slow = step >= 4 and rng.random() < 0.3  # the first window holds fast requests only (see the test)
    centre = 0.4 if slow else 0.01
    m.latency.add(("server", "fraud", "2"), [centre * (1 + 0.3 * rng.random()) for _ in range(60)], now - 5)


def exposition(m: Monitor) -> dict[str, float]:
    class Collector:
        def collect(self) -> Iterator[Any]:
            return m.collect()

    registry = CollectorRegistry()
    registry.register(Collector())
    samples = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            labels = ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}"] = float(s.value)
    return samples


def test_the_in_process_rules_and_their_promql_fire_on_the_same_evaluations(
    published: Published, tmp_path: Path
) -> None:
    """Both fed the same series: each step sets a real monitor's figures; the snapshot goes to the in-process
    engine and the /metrics exposition becomes the step's samples of ``promtool test rules``, whose expected
    alerts are the ones the engine fired. promtool fails on any evaluation where Prometheus disagrees.

    Covered: every built-in rule and the kinds drift (any feature, outputs, one feature), drift_statistic and
    performance_estimate with both operators, class_error_rate (worst class, one class, with min_rows),
    error_rate, latency (p99 above), no_data, with for_windows 1-3. Not covered: regression_error (the fraud
    pipeline is a classifier), and a latency rule with ``<``: a new series has no rate() until its second scrape,
    where the in-process window already has a percentile, so such a rule fires one evaluation later in
    Prometheus (the first latency window here is fast, so that ``>`` cannot differ there)."""
    config = MonitorConfig(
        repository=published.repository,
        pipeline="fraud",
        triton_metrics_url="http://127.0.0.1:9/metrics",  # never scraped here: the test sets what it would read
        port=free_port(),
        latency_window_s=LATENCY_WINDOW_S,
        nvml=False,
    )
    monitor = ScriptedMonitor(config)
    engine = RuleEngine(AGREEMENT_RULES, Alerter([]))
    rng = random.Random(1807)
    steps = 60
    series: dict[str, list[str]] = {}
    expected: dict[int, list[str]] = {}
    for step in range(steps):
        now = float(step * STEP_S)
        scripted_step(monitor, rng, step, now)
        evaluation = engine.evaluate(monitor.status(now), now)
        expected[step] = sorted(n for n, s in evaluation.states.items() if s == "firing")
        for key, value in exposition(monitor).items():
            series.setdefault(key, ["stale"] * step).append(repr(value))
        for values in series.values():
            if len(values) < step + 1:
                values.append("stale")  # gone from this scrape: Prometheus marks it stale
    fired = {name for names in expected.values() for name in names}
    assert len(fired) >= 10, f"the script should make most rules fire at some step; fired {sorted(fired)}"
    by_name = {r.name: r for r in AGREEMENT_RULES}
    rules = prometheus_rules(AGREEMENT_RULES, STEP_S, pipeline=None, window_s=LATENCY_WINDOW_S)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    info = 'inferline_monitor_info{pipeline="fraud",task="binary"}'
    assert any(k.startswith(info[:22]) for k in series), "the monitor exports the pipeline it watches"
    tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": f"{STEP_S}s",
        "tests": [
            {
                "interval": f"{STEP_S}s",
                "input_series": [{"series": k, "values": " ".join(v)} for k, v in sorted(series.items())],
                "alert_rule_test": [
                    {
                        "eval_time": f"{step * STEP_S}s",
                        "alertname": rule.name,
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": rule.severity},
                                "exp_annotations": {"summary": rule.description or rule.name},
                            }
                        ]
                        if rule.name in expected[step]
                        else [],
                    }
                    for step in range(steps)
                    for rule in by_name.values()
                ],
            }
        ],
    }
    (tmp_path / "agreement.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    done = promtool("test", "rules", "agreement.yml", cwd=tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    # the check can fail: the same file with one expected alert moved to an evaluation where it did not fire
    step, name = next((s, n) for s in range(steps) for n in expected[s] if n not in expected.get(s + 1, []))
    for t in tests["tests"][0]["alert_rule_test"]:
        if t["alertname"] == name and t["eval_time"] == f"{(step + 1) * STEP_S}s":
            t["exp_alerts"] = [
                {
                    "exp_labels": {"severity": by_name[name].severity},
                    "exp_annotations": {"summary": by_name[name].description or name},
                }
            ]
    (tmp_path / "moved.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    assert promtool("test", "rules", "moved.yml", cwd=tmp_path).returncode != 0


# ------------------------------------------------------------------------------------ latency merge


def test_two_monitors_latency_merged_by_prometheus_matches_one_monitor_over_all_requests(
    published: Published, tmp_path: Path
) -> None:
    """``histogram_quantile(0.99, sum by (le) (...))`` over two monitors' buckets, each holding half of the
    requests (different distributions), against one monitor fed every request, and against numpy's exact p99."""
    rng = np.random.default_rng(18)
    fast = rng.lognormal(np.log(0.004), 0.5, 6_000)
    slow = rng.lognormal(np.log(0.03), 0.8, 4_000)
    monitors = []
    try:
        for values in (fast, slow, np.concatenate([fast, slow])):
            config = MonitorConfig(repository=published.repository, pipeline="fraud", port=free_port(), nvml=False)
            server = MonitorServer(Monitor(config)).start(ticking=False)
            monitors.append(server)
            server.monitor.latency.add(("client", "fraud", "2"), values, time.time())
        prometheus = start_prometheus(
            tmp_path / "prometheus",
            {"halves": [f"{m.url}/metrics" for m in monitors[:2]], "whole": [f"{monitors[2].url}/metrics"]},
        )
        try:

            def p99(job: str) -> float | None:
                bucket = f'inferline_request_latency_seconds_bucket{{job="{job}",side="client"}}'
                result = query(prometheus, f"histogram_quantile(0.99, sum by (le) ({bucket}))")
                return float(result[0]["value"][1]) if result else None

            def both_scraped() -> bool:
                count = query(prometheus, 'count(up{job="halves"} == 1)')
                return bool(count) and count[0]["value"][1] == "2" and p99("whole") is not None

            wait_until(both_scraped, 60, "Prometheus scraping the three monitors")
            merged, whole = p99("halves"), p99("whole")
        finally:
            prometheus.stop()
    finally:
        for m in monitors:
            m.stop()
    assert merged is not None and whole is not None
    exact = float(np.quantile(np.concatenate([fast, slow]), 0.99, method="inverted_cdf"))
    assert merged == pytest.approx(whole, rel=1e-9)  # bucket counts add: the merge loses nothing
    assert abs(merged / exact - 1) <= LATENCY_BUCKET_ERROR, (merged, exact, LATENCY_BUCKET_ERROR)
    # and the sketch's own percentile over the halves is no answer: its mean would be
    halves = [float(np.quantile(v, 0.99)) for v in (fast, slow)]
    assert abs(np.mean(halves) / exact - 1) > LATENCY_BUCKET_ERROR


# ------------------------------------------------------------------------------------ end to end


def test_drifted_traffic_fires_in_prometheus_and_alertmanager_delivers_it(
    published: Published, tmp_path: Path, receiver: Receiver
) -> None:
    """A release served with ``inferline serve up``, a ticking monitor with the tap's samples and Triton's
    metrics, Prometheus scraping Triton, the supervisor and the monitor with the generated rules, Alertmanager
    with a webhook receiver of the test's own: drifted traffic fires ``feature_drift`` and ``prediction_drift``
    in Prometheus, and Alertmanager posts them to the receiver. Then every metric the Grafana dashboard names is
    one the stack exports."""
    from .test_monitor import drifted_rows

    server = supervised_server(published, tmp_path / "serve")
    monitor = None
    processes: list[Process] = []
    try:
        record = server.record
        triton_metrics = record["metrics"]
        config = MonitorConfig(
            repository=Path(record["repository"]),
            pipeline="fraud",
            triton_metrics_url=triton_metrics,
            port=free_port(),
            interval_s=1.0,
            drift_window_rows=3_000,
            server_pid=record["pid"],
        )
        monitor = MonitorServer(Monitor(config)).start(ticking=True)
        rules = tmp_path / "rules.yml"
        rules.write_text(yaml.safe_dump(prometheus_rules(DEFAULT_RULES, 1.0)))
        alertmanager = start_alertmanager(tmp_path / "alertmanager", receiver.url)
        processes.append(alertmanager)
        prometheus = start_prometheus(
            tmp_path / "prometheus",
            {
                "triton": [triton_metrics],
                "supervisor": [record["supervisor_metrics"]],
                "monitor": [f"{monitor.url}/metrics"],
            },
            rules=rules,
            alertmanager=alertmanager.url,
        )
        processes.append(prometheus)

        def all_up() -> bool:
            up = {r["metric"]["job"]: r["value"][1] for r in query(prometheus, "up")}
            return up == {"triton": "1", "supervisor": "1", "monitor": "1"}

        wait_until(all_up, 60, "Prometheus scraping Triton, the supervisor and the monitor")
        tap = MonitorTap(monitor.url, key=monitor.ingest_key)
        rows = drifted_rows()
        with InferlineClient(record["gateway"], "http", pipeline="fraud", tap=tap, max_batch_size=256) as client:
            client.predict(rows.drop(columns=[fraud.SPEC.label]))
        tap.close()
        assert tap.sent == 3_000 and tap.dropped == 0
        ids, truth = rows["transaction_id"], rows["is_fraud"]
        labels = [{"transaction_id": t, "label": int(y)} for t, y in zip(ids, truth, strict=True)]
        assert post_json(f"{monitor.url}/v1/labels", {"labels": labels}, key=monitor.ingest_key)["joined"] == 3_000

        def delivered() -> set[str]:
            return {a["labels"]["alertname"] for body in receiver.received for a in body.get("alerts", [])}

        wait_until(lambda: {"feature_drift", "prediction_drift"} <= delivered(), 90, "Alertmanager delivering")
        firing = {
            a["labels"]["alertname"]
            for a in get_json(f"{prometheus.url}/api/v1/alerts")["data"]["alerts"]
            if a["state"] == "firing"
        }
        assert {"feature_drift", "prediction_drift"} <= firing
        assert "inference_errors" not in firing and "no_data" not in firing
        body = next(
            b for b in receiver.received if any(a["labels"]["alertname"] == "feature_drift" for a in b["alerts"])
        )
        alert = next(a for a in body["alerts"] if a["labels"]["alertname"] == "feature_drift")
        assert alert["status"] == "firing" and alert["annotations"]["summary"] == "a tabular feature drifted"

        # every metric a Grafana panel names is one this stack exports: scraped here by Prometheus, or one with no
        # sample in this run: GPU readings without a GPU (declared on /metrics all the same), a regression's errors
        # (exported by a monitor of a regression pipeline: the same exporter's families), the candidate's share at
        # the edge (set only while a rollout is routed; declared by the edge's router)
        wait_until(lambda: bool(query(prometheus, "inferline_realized_performance")), 30, "realized scraped")
        scraped = set(get_json(f"{prometheus.url}/api/v1/label/__name__/values")["data"])
        with urllib.request.urlopen(f"{monitor.url}/metrics", timeout=10) as r:
            declared = {line.split()[2] for line in r.read().decode().splitlines() if line.startswith("# TYPE")}
        declared |= {family.name for family in regression_metrics(monitor.monitor)}
        declared |= edge_metric_names()
        named = dashboard_metric_names(grafana_dashboard())
        unscraped = named - scraped
        without_samples = {n for n in named if n.startswith(("inferline_gpu_", "inferline_regression_"))}
        assert unscraped <= without_samples | {"inferline_edge_rollout_share"}, unscraped
        assert unscraped <= declared, unscraped - declared
        assert len(named & scraped) >= 12, sorted(named & scraped)
    finally:
        for p in reversed(processes):
            p.stop()
        if monitor is not None:
            monitor.stop()
        server.stop()
