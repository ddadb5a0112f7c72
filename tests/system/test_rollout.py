"""Progressive delivery (issue 32) on real components: a server started as users start it (`inferline serve up`: the
supervisor, tritonserver and the HTTP and gRPC edges), a real monitor deciding the rollouts (`monitor.rollout`),
and callers sending rows all the time through the edge over HTTP and gRPC, counting every failed request.

- a candidate that sleeps per batch is rolled back at the first step, with the latency evidence;
- a candidate whose head is flipped (its predictions drift from the current release's) is rolled back;
- an equal candidate is promoted through every step with zero failed requests;
- a shadow of a flipped candidate never answers a caller, and is stopped by the paired comparison.
Each test publishes its own candidate from the session's run on the module's server and waits on the rollout file's
phase (the monitor decides by itself; nothing here ticks it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from inferline.benchmarks.release_faults import flip_head, slow_down
from inferline.core.alerts import Alerter, JsonlSink
from inferline.core.processes import free_port
from inferline.core.secrets import admin_key, monitor_key
from inferline.export.publish import publish
from inferline.features.pipelines import fraud
from inferline.monitor.app import MonitorServer
from inferline.monitor.config import MonitorConfig
from inferline.monitor.rollout import RolloutController
from inferline.monitor.service import Monitor
from inferline.release.registry import Registry
from inferline.release.rollout import TERMINAL_PHASES, read_rollout
from inferline.training.train import RunResult
from tests.rollout_cases import Load
from tests.rollout_cases import rollout as run_rollout

from .conftest import Published, Supervised, supervised_server, wait_until

ROWS = 8  # per request
# a 10 ms latency floor: on this 2-core machine, busy with the callers, the server and the monitor at once, the p99
# of two identical releases (two stub processes) differed by up to 3.6 ms; the slowed release adds 50 ms per batch
POLICY = ["--min-rows", "300", "--min-requests", "80", "--latency-floor", "0.01"]


@dataclass
class Stack:
    server: Supervised
    monitor: MonitorServer
    repository: Path
    alerts: Path


@pytest.fixture(scope="module")
def stack(published: Published, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("rollout")
    workdir = root / "work"
    repository = root / "triton_models"
    server = supervised_server(published, root, up=False)  # copies the repository; the monitor reads the same
    config = MonitorConfig(
        repository=repository, pipeline="fraud", port=free_port(), nvml=False, interval_s=0.25, min_samples=200
    )
    monitor = Monitor(config)
    server_for_monitor = MonitorServer(monitor, ingest_key=monitor_key(workdir))  # bound: its URL for `serve up`
    server.up_args += ["--monitor-url", server_for_monitor.url, "--sample-rate", "0.02"]
    server.up()
    try:
        alerts = root / "alerts.jsonl"
        monitor.config.triton_metrics_url = server.record["metrics"]  # known once the server is up
        monitor.rollout = RolloutController(
            repository,
            "fraud",
            server.record["http"],
            admin_key(workdir),
            Alerter([JsonlSink(alerts)]),
            monitor.spec.task,
        )
        server_for_monitor.start()
        try:
            yield Stack(server, server_for_monitor, repository, alerts)
        finally:
            server_for_monitor.stop()
    finally:
        server.stop()


def candidate(stack: Stack, run: RunResult) -> int:
    """A new release of the session's run (the same model as the current release), not promoted."""
    return publish(run.run_dir, stack.repository, promote=False, load_check=False).version


def rollout(stack: Stack, *args: str, in_process: bool = True) -> subprocess.CompletedProcess[str]:
    return run_rollout(stack.server.workdir, *args, in_process=in_process)


def decided(stack: Stack, version: int, timeout_s: float = 150) -> str:
    """Wait until the monitor has decided the rollout of ``version``; its final phase."""

    def done() -> bool:
        r = read_rollout(stack.repository, "fraud")
        return r is not None and r.candidate == version and r.phase in TERMINAL_PHASES

    wait_until(done, timeout_s, f"the rollout of fraud:{version} decided")
    r = read_rollout(stack.repository, "fraud")
    assert r is not None
    return r.phase


def loaded_versions(stack: Stack) -> set[int]:
    with urllib.request.urlopen(
        urllib.request.Request(
            f"http://{stack.server.record['http']}/v2/repository/index",
            data=b"{}",
            headers={"admin-key": admin_key(stack.server.workdir)},
            method="POST",
        ),
        timeout=10,
    ) as r:
        index = json.loads(r.read())
    return {int(m["version"]) for m in index if m["name"] == "fraud" and m.get("state") == "READY"}


def alerts(stack: Stack) -> list[dict[str, object]]:
    if not stack.alerts.exists():
        return []
    return [json.loads(line) for line in stack.alerts.read_text().splitlines() if line.strip()]


def test_a_slower_candidate_is_rolled_back_at_the_first_step_with_the_evidence(stack: Stack, run: RunResult) -> None:
    current = Registry(stack.repository, "fraud").current
    version = candidate(stack, run)
    slow_down(stack.repository, version, sleep_s=0.05)
    with Load(fraud, stack.server.record["gateway"], stack.server.record["grpc_edge"]) as load:
        started = rollout(stack, "canary", str(version), "--steps", "20,50", *POLICY, "--no-wait", in_process=False)
        assert started.returncode == 0, started.stderr
        phase = decided(stack, version)
    assert phase == "rolled_back"
    r = read_rollout(stack.repository, "fraud")
    assert r is not None and r.step == 0 and len(r.decisions) == 1
    checks = {c["name"]: c for c in r.decisions[0]["checks"]}
    assert checks["latency_p99"]["status"] == "breach", checks["latency_p99"]
    assert checks["latency_p99"]["effect"] > 2, checks["latency_p99"]  # p99 ratio candidate / current
    assert Registry(stack.repository, "fraud").current == current
    wait_until(lambda: loaded_versions(stack) == {current}, 30, "the candidate unloaded")
    assert not load.failures, load.failures[:3]
    history = Registry(stack.repository, "fraud").read()["history"]
    assert history[-1]["action"] == "rollout_rolled_back" and history[-1]["evidence"]["verdict"] == "breach"
    rolled = [a for a in alerts(stack) if a["reason"] == "rollout_rolled_back"]
    assert rolled and "p99" in str(rolled[-1]["message"]), rolled
    status = rollout(stack, "status")
    assert status.returncode == 0 and "rolled_back" in status.stdout and "latency_p99" in status.stdout, status.stdout


def test_a_candidate_whose_predictions_drift_is_rolled_back(stack: Stack, run: RunResult) -> None:
    current = Registry(stack.repository, "fraud").current
    version = candidate(stack, run)
    flip_head(stack.repository, version)
    with Load(fraud, stack.server.record["gateway"], stack.server.record["grpc_edge"]) as load:
        started = rollout(stack, "canary", str(version), "--steps", "20,50", *POLICY, "--no-wait")
        assert started.returncode == 0, started.stderr
        phase = decided(stack, version)
    assert phase == "rolled_back"
    r = read_rollout(stack.repository, "fraud")
    assert r is not None
    breached = {c["name"] for c in r.decisions[-1]["checks"] if c["status"] == "breach"}
    assert {"prediction_drift", "score_drift"} <= breached, r.decisions[-1]
    assert "latency_p99" not in breached and "errors" not in breached
    assert Registry(stack.repository, "fraud").current == current
    assert load.answered.get(f"fraud:{version}", 0) > 0  # the candidate did answer a share before it was stopped
    assert not load.failures, load.failures[:3]


def test_an_equal_candidate_is_promoted_through_every_step_with_zero_failed_requests(
    stack: Stack, run: RunResult
) -> None:
    before = Registry(stack.repository, "fraud").current
    version = candidate(stack, run)
    with Load(fraud, stack.server.record["gateway"], stack.server.record["grpc_edge"]) as load:
        done = rollout(stack, "canary", str(version), "--steps", "20,50", *POLICY, "--timeout", "240")
        wait_until(lambda: sum(load.answered.values()) > 0, 10, "requests answered after the promotion")
    assert done.returncode == 0, done.stdout + done.stderr
    r = read_rollout(stack.repository, "fraud")
    assert r is not None and r.phase == "promoted", r
    assert [d["verdict"] for d in r.decisions] == ["pass", "pass"]
    registry = Registry(stack.repository, "fraud")
    assert (registry.current, registry.previous) == (version, before)
    assert registry.read()["history"][-1]["action"] == "promote"
    assert loaded_versions(stack) == {version}
    assert not load.failures, load.failures[:3]  # zero failed requests during the steps and the promotion
    assert load.answered.get(f"fraud:{version}", 0) > 0 and load.answered.get(f"fraud:{before}", 0) > 0
    metrics = stack.server.metrics()
    assert metrics.get(f'inferline_edge_release_requests_total{{model="fraud",outcome="ok",release="fraud:{version}"}}')


def test_a_shadow_answers_no_caller_and_a_disagreeing_one_is_stopped(stack: Stack, run: RunResult) -> None:
    current = Registry(stack.repository, "fraud").current
    version = candidate(stack, run)
    flip_head(stack.repository, version)
    with Load(fraud, stack.server.record["gateway"], stack.server.record["grpc_edge"]) as load:
        started = rollout(stack, "shadow", str(version), "--share", "0.3", *POLICY, "--no-wait")
        assert started.returncode == 0, started.stderr
        phase = decided(stack, version)
    assert phase == "rolled_back"
    assert set(load.answered) == {f"fraud:{current}"}  # every caller was answered by the current release
    r = read_rollout(stack.repository, "fraud")
    assert r is not None
    checks = {c["name"]: c for c in r.decisions[-1]["checks"]}
    assert checks["agreement"]["status"] == "breach" and checks["agreement"]["effect"] > 0.9, checks["agreement"]
    metrics = stack.server.metrics()
    shadowed = f'inferline_edge_shadow_requests_total{{model="fraud",outcome="ok",release="fraud:{version}"}}'
    assert metrics.get(shadowed, 0) > 0
    assert not load.failures, load.failures[:3]
    assert np.isfinite(checks["agreement"]["p_value"])


def test_a_server_restart_during_a_rollout_rolls_it_back(stack: Stack, run: RunResult) -> None:
    """A crash during a rollout may be the candidate's doing, and a restarted server loads the current release only:
    the rollout is rolled back, and the callers routed to the candidate are answered by the current release."""
    current = Registry(stack.repository, "fraud").current
    version = candidate(stack, run)
    endless = ["--min-rows", "1000000", "--min-requests", "1000000"]  # never decided by the evidence
    with Load(fraud, stack.server.record["gateway"], stack.server.record["grpc_edge"]) as load:
        started = rollout(stack, "canary", str(version), "--steps", "50", *endless, "--no-wait")
        assert started.returncode == 0, started.stderr
        wait_until(lambda: load.answered.get(f"fraud:{version}", 0) > 0, 30, "the candidate answering its share")
        shown = json.loads(stack.server.cli("status").stdout)["rollouts"]["fraud"]  # `inferline serve status`
        assert (shown["phase"], shown["candidate"], shown["share"]) == ("running", version, 0.5), shown
        before = stack.server.state()
        os.kill(before["pid"], signal.SIGKILL)  # tritonserver only: the supervisor restarts it
        wait_until(lambda: stack.server.state()["restarts"] > before["restarts"], 60, "the supervisor's restart")
        phase = decided(stack, version)
        wait_until(lambda: stack.server.state()["up"], 60, "the restarted server probed ready")
        wait_until(load.recovered(), 30, "answers over HTTP and gRPC after the restart")
        failed_during_restart = len(load.failures)  # requests in flight or sent while tritonserver was down
        answered = dict(load.answered)
        wait_until(load.recovered(100), 30, "answers after recovery")
    assert phase == "rolled_back"
    r = read_rollout(stack.repository, "fraud")
    assert r is not None and "(re)started during the rollout" in r.reason, r.reason
    assert Registry(stack.repository, "fraud").current == current
    assert loaded_versions(stack) == {current}
    # requests fail while tritonserver is down (503 / UNAVAILABLE, retry after 1 s); none once it is back
    assert len(load.failures) == failed_during_restart, load.failures[failed_during_restart:][:3]
    assert load.answered.get(f"fraud:{version}", 0) == answered.get(f"fraud:{version}", 0)
