"""The closed loop against a real Triton server: alert rules on the monitor's snapshots, a webhook receiver on
127.0.0.1, and the rollback controller switching releases through Triton's model-control API while a client keeps
sending. Each test starts from release 2 served and release 1 as the previous one."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from inferline.core.alerts import Alerter, JsonlSink, WebhookSink
from inferline.core.processes import free_port
from inferline.core.secrets import ADMIN_HEADER
from inferline.features.pipelines import fraud
from inferline.features.synthetic import apply_shifts, parse_shift
from inferline.monitor.app import MonitorServer
from inferline.monitor.config import MonitorConfig
from inferline.monitor.rollback import ROLLBACK_USER, RollbackController
from inferline.monitor.rules import AlertRule, RuleEngine
from inferline.monitor.service import Monitor
from inferline.release.registry import Registry
from inferline.release.switch import ReleaseSwitchError, set_current, switch_release
from inferline.serving.client import InferlineClient
from inferline.serving.server import TritonServer
from inferline.serving.tap import MonitorTap
from tests.conftest import Receiver

from .conftest import Published, private_server
from .test_loadcheck import REASON, break_dims

PREDICTION_DRIFT = AlertRule("prediction_drift", "drift", target="prediction", severity="critical")
FEATURE_DRIFT = AlertRule("feature_drift", "drift", target="*", severity="critical")
NO_TRACES = AlertRule(
    "server_p99", "latency", target="server|fraud", statistic="p99", threshold=0.25, severity="critical"
)


@dataclass
class Stack:
    repository: Path
    server: TritonServer


@pytest.fixture(scope="module")
def stack(published: Published, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A server of its own on a copy of the repository: rollbacks here must not move the other tests' server."""
    server = private_server(published, tmp_path_factory.mktemp("closed_loop"))
    try:
        yield Stack(Path(server.config.repository), server)
    finally:
        server.stop()


@pytest.fixture
def serving_v2(stack: Stack) -> Stack:
    set_current(stack.repository, "fraud", 2, "promote", reason="test setup")
    switch_release(stack.server.config.http_url, stack.server.admin_key, stack.repository, "fraud", 2)
    registry = Registry(stack.repository, "fraud")
    assert (registry.current, registry.previous) == (2, 1)
    return stack


def monitor_for(
    stack: Stack, rules: tuple[AlertRule, ...], alerter: Alerter, cooldown_s: float = 900.0
) -> MonitorServer:
    config = MonitorConfig(repository=stack.repository, pipeline="fraud", port=free_port(), drift_window_rows=3_000)
    controller = RollbackController(
        stack.repository, "fraud", stack.server.config.http_url, stack.server.admin_key, alerter, cooldown_s
    )
    return MonitorServer(Monitor(config, RuleEngine(rules, alerter), controller)).start(ticking=False)


def drifted_traffic(stack: Stack, monitor: MonitorServer) -> None:
    rows = apply_shifts(fraud.generate(3_000, seed=77), fraud.SPEC, [parse_shift("amount=x1.8")])
    tap = MonitorTap(monitor.url, key=monitor.ingest_key)
    with InferlineClient(stack.server.config.http_url, "http", pipeline="fraud", tap=tap) as client:
        client.predict(rows.drop(columns=[fraud.SPEC.label]))
    tap.close()


@dataclass
class Steady:
    """A client sending continuously: every request must succeed, whichever release answers it."""

    url: str
    stop: threading.Event = field(default_factory=threading.Event)
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    releases: list[str] = field(default_factory=list)

    def run(self) -> None:
        rows = fraud.generate(16, seed=5).drop(columns=[fraud.SPEC.label])
        with InferlineClient(self.url, "http", pipeline="fraud", timeout_s=30) as client:
            while not self.stop.is_set():
                try:
                    p = client.predict(rows)
                except Exception as exc:  # noqa: BLE001 - every failure is recorded and fails the test
                    self.failed.append(repr(exc))
                    continue
                self.ok += 1
                if not self.releases or self.releases[-1] != p.release[0]:
                    self.releases.append(p.release[0])


def served(stack: Stack) -> set[str]:
    with InferlineClient(stack.server.config.http_url, "http", pipeline="fraud") as client:
        return set(client.predict(fraud.generate(8, seed=9).drop(columns=[fraud.SPEC.label])).release)


def test_critical_rule_rolls_back_with_zero_failed_requests(
    serving_v2: Stack, receiver: Receiver, tmp_path: Path
) -> None:
    stack = serving_v2
    alerter = Alerter([JsonlSink(tmp_path / "alerts.jsonl"), WebhookSink(receiver.url)])
    monitor = monitor_for(stack, (PREDICTION_DRIFT,), alerter)
    steady = Steady(stack.server.config.http_url)
    sender = threading.Thread(target=steady.run)
    sender.start()
    try:
        drifted_traffic(stack, monitor)
        snapshot = monitor.monitor.tick()  # the rule fires, the incident opens, the controller rolls back
        assert served(stack) == {"fraud:1"}
    finally:
        steady.stop.set()
        sender.join(60)
        monitor.stop()
    assert snapshot["rules"]["states"] == {"prediction_drift": "firing"}
    incident = snapshot["rules"]["incidents"][0]
    assert incident["rollback"]["action"] == "rolled back" and incident["rollback"]["to"] == 1
    assert steady.failed == [] and steady.ok > 10, steady.failed
    assert steady.releases == ["fraud:2", "fraud:1"]  # one switch, never back and forth
    registry = Registry(stack.repository, "fraud")
    assert (registry.current, registry.previous) == (1, 2)
    entry = registry.read()["history"][-1]
    assert entry["action"] == "rollback" and entry["user"] == ROLLBACK_USER and "prediction_drift" in entry["reason"]
    reasons = [a["reason"] for a in receiver.received]
    assert reasons == ["prediction_drift", "rollback_completed"]
    assert all(a["severity"] == "critical" for a in receiver.received)


def test_two_triggers_in_one_incident_roll_back_once(serving_v2: Stack, tmp_path: Path) -> None:
    stack = serving_v2
    alerter = Alerter([JsonlSink(tmp_path / "alerts.jsonl")])
    monitor = monitor_for(stack, (PREDICTION_DRIFT, FEATURE_DRIFT), alerter)
    rollbacks_before = sum(e["action"] == "rollback" for e in Registry(stack.repository, "fraud").read()["history"])
    try:
        drifted_traffic(stack, monitor)
        first = monitor.monitor.tick()
        assert set(first["rules"]["incidents"][0]["rules"]) == {"prediction_drift", "feature_drift"}
        for _ in range(2):  # the same incident keeps firing: no second rollback (and none back to 2)
            later = monitor.monitor.tick()
    finally:
        monitor.stop()
    assert later["rules"]["states"] == {"prediction_drift": "firing", "feature_drift": "firing"}
    assert len(later["rules"]["incidents"]) == 1 and later["rules"]["rollbacks"] == 1
    history = Registry(stack.repository, "fraud").read()["history"]
    assert sum(e["action"] == "rollback" for e in history) == rollbacks_before + 1
    assert served(stack) == {"fraud:1"}


def test_missing_metrics_alert_no_data_and_never_roll_back(serving_v2: Stack, tmp_path: Path) -> None:
    stack = serving_v2
    alerter = Alerter([JsonlSink(tmp_path / "alerts.jsonl")])
    monitor = monitor_for(stack, (PREDICTION_DRIFT, NO_TRACES), alerter)  # no traffic, no traces: nothing to read
    try:
        snapshots = [monitor.monitor.tick() for _ in range(2)]
    finally:
        monitor.stop()
    assert snapshots[-1]["rules"]["states"] == {"prediction_drift": "no_data", "server_p99": "no_data"}
    assert snapshots[-1]["rules"]["incidents"] == [] and snapshots[-1]["rules"]["rollbacks"] == 0
    alerts = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert sorted(a["details"]["rule"] for a in alerts if a["reason"] == "no_data") == [
        "prediction_drift",
        "server_p99",
    ]
    assert Registry(stack.repository, "fraud").current == 2 and served(stack) == {"fraud:2"}


def test_corrupt_previous_release_alerts_and_the_current_keeps_serving(serving_v2: Stack, tmp_path: Path) -> None:
    stack = serving_v2
    onnx = stack.repository / "fraud_model" / "1" / "model.onnx"
    original = onnx.read_bytes()
    onnx.write_bytes(original[: len(original) // 2])  # a truncated previous release
    alerter = Alerter([JsonlSink(tmp_path / "alerts.jsonl")])
    monitor = monitor_for(stack, (PREDICTION_DRIFT,), alerter)
    try:
        drifted_traffic(stack, monitor)
        snapshot = monitor.monitor.tick()
    finally:
        monitor.stop()
        onnx.write_bytes(original)
    outcome = snapshot["rules"]["incidents"][0]["rollback"]
    assert outcome["action"].startswith("failed") and "does not match" in outcome["action"]
    alerts = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    failed = [a for a in alerts if a["reason"] == "rollback_failed"]
    assert len(failed) == 1 and failed[0]["severity"] == "critical" and "keeps serving" in failed[0]["message"]
    registry = Registry(stack.repository, "fraud")
    assert (registry.current, registry.previous) == (2, 1) and served(stack) == {"fraud:2"}


def test_a_release_whose_own_config_does_not_load_leaves_the_served_one_alone(serving_v2: Stack) -> None:
    """The last step of a switch loads the target release from its own config: Triton refusing it (here an output
    of dims [0]) restores the served release's config, so release 2 alone stays loaded, and the switch says why
    (it left both loaded and raised Triton's exception, found writing docs/how-to/recover-a-server.md)."""
    stack = serving_v2
    config = stack.repository / "fraud" / "1" / "release.config.pbtxt"
    original = config.read_text()
    break_dims(config)
    try:
        with pytest.raises(ReleaseSwitchError, match="the server still serves fraud:2") as refused:
            switch_release(stack.server.config.http_url, stack.server.admin_key, stack.repository, "fraud", 1)
    finally:
        config.write_text(original)
    assert REASON in str(refused.value)
    assert served(stack) == {"fraud:2"}
    client = httpclient.InferenceServerClient(stack.server.config.http_url)
    try:
        index = client.get_model_repository_index(headers={ADMIN_HEADER: stack.server.admin_key})
    finally:
        client.close()
    assert {m.get("version") for m in index if m["name"] == "fraud" and m.get("state") == "READY"} == {"2"}


def test_promote_rollback_and_history_by_hand(serving_v2: Stack) -> None:
    stack = serving_v2
    repo, workdir = str(stack.repository), str(stack.server.config.workdir)
    export, repo_flag = [sys.executable, "-m", "inferline.export"], ["--repository", repo]
    apply = [sys.executable, "-m", "inferline.serving", "apply", "--workdir", workdir, "--repository", repo]
    apply += ["--url", stack.server.config.http_url]

    def run(command: list[str]) -> str:
        done = subprocess.run(command, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    run([*export, "rollback", *repo_flag, "--reason", "by hand"])
    assert served(stack) == {"fraud:2"}  # the registry moved; the server changes only when told to
    assert json.loads(run(apply))["to"] == 1 and served(stack) == {"fraud:1"}
    run([*export, "promote", *repo_flag, "2", "--reason", "fixed"])
    assert json.loads(run(apply))["to"] == 2 and served(stack) == {"fraud:2"}
    history = json.loads(run([*export, "history", *repo_flag, "--json"]))
    actions = [(e["action"], e["version"], e.get("reason")) for e in history["history"][-2:]]
    assert actions == [("rollback", 1, "by hand"), ("promote", 2, "fixed")]

    client = httpclient.InferenceServerClient(stack.server.config.http_url)
    with pytest.raises(InferenceServerException) as refused:  # model control without the secret
        client.load_model("fraud")
    assert "403" in str(refused.value) or "forbidden" in str(refused.value).lower()
    client.close()
