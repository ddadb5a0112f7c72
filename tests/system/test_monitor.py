"""The monitor against the real Triton server: traffic through the serving client with a tap, drift injected into
two features, delayed labels, Triton traces and metrics, NVML in whatever state this machine is, /metrics, the
report. Each test has a monitor of its own (its windows, labels and history hold only that test's traffic)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from inferline.core.http import post_json
from inferline.core.processes import free_port
from inferline.features.pipelines import fraud
from inferline.features.synthetic import apply_shifts, parse_shift
from inferline.monitor.app import MonitorServer
from inferline.monitor.config import MonitorConfig
from inferline.monitor.ingest import read_traces
from inferline.monitor.service import Monitor
from inferline.release.registry import Registry, RegistryError
from inferline.serving.client import InferlineClient, Predictions
from inferline.serving.server import TritonServer
from inferline.serving.tap import MonitorTap
from inferline.training.profile import missing_columns
from tests.monitor_cases import expected_nvml_state

from .conftest import Published, private_server, wait_until

WINDOW = 3_000


def start_monitor(published: Published, triton: TritonServer, window: int = WINDOW) -> MonitorServer:
    assert triton.process is not None
    config = MonitorConfig(
        repository=published.repository,
        pipeline="fraud",
        triton_metrics_url=f"http://{triton.config.metrics_url.removeprefix('http://')}",
        trace_dir=triton.config.trace_dir,
        server_pid=triton.process.pid,
        port=free_port(),
        drift_window_rows=window,
    )
    return MonitorServer(Monitor(config)).start(ticking=False)  # each evaluation sees the traffic sent before it


@pytest.fixture
def monitor(published: Published, triton: TritonServer) -> Iterator[MonitorServer]:
    server = start_monitor(published, triton)
    try:
        yield server
    finally:
        server.stop()


# what the shifts below move: two features, and the model's outputs (each class's probability, the predicted classes)
DRIFTED = {"log_amount", "channel_idx", "probability_legit", "probability_fraud", "predicted_class"}
OUTPUT_TESTS = {"probability_legit", "probability_fraud", "predicted_class"}


def drifted_rows() -> pd.DataFrame:
    return apply_shifts(
        fraud.generate(WINDOW, seed=902), fraud.SPEC, [parse_shift("amount=x1.8"), parse_shift("channel=web:0.7")]
    )


def send(triton: TritonServer, monitor: MonitorServer, rows: pd.DataFrame, batch: int = 256) -> Predictions:
    tap = MonitorTap(monitor.url, key=monitor.ingest_key)
    with InferlineClient(triton.config.http_url, "http", pipeline="fraud", tap=tap, max_batch_size=batch) as client:
        predictions = client.predict(rows.drop(columns=[fraud.SPEC.label]))
    tap.close()
    assert tap.sent == len(rows) and tap.dropped == 0
    return predictions


def drift_states(snapshot: dict[str, object]) -> dict[str, str]:
    features = snapshot["drift"]["features"]  # type: ignore[index]
    return {f["feature"]: f["state"] for f in features}


def test_drift_is_flagged_on_exactly_the_shifted_features(
    published: Published, triton: TritonServer, monitor: MonitorServer
) -> None:
    normal = fraud.generate(WINDOW, seed=901)
    send(triton, monitor, normal)
    states = drift_states(monitor.monitor.tick())
    missing_tests = {f"nulls_{c.name}" for c in missing_columns(fraud.SPEC)}
    assert len(states) == 8 + 4 + len(OUTPUT_TESTS) + len(missing_tests) and set(states.values()) == {"ok"}, states
    assert OUTPUT_TESTS | missing_tests <= set(states)

    drifted = drifted_rows()
    predictions = send(triton, monitor, drifted)
    snapshot = monitor.monitor.tick()
    states = drift_states(snapshot)
    assert {f for f, s in states.items() if s == "drift"} == DRIFTED, states
    assert snapshot["drift"]["release"] == "fraud:2"  # type: ignore[index]
    # the same verdicts on /metrics: detected is 1 for exactly the drifted features, 0 for every other one
    with urllib.request.urlopen(f"{monitor.url}/metrics", timeout=10) as r:
        families = {f.name: f for f in text_string_to_metric_families(r.read().decode())}
    detected = {s.labels["feature"]: s.value for s in families["inferline_drift_detected"].samples}
    assert detected == {f: (1.0 if f in DRIFTED else 0.0) for f in states}, detected
    current = {s.labels["feature"]: s.labels["state"] for s in families["inferline_drift_state"].samples if s.value}
    assert current == states

    # delayed labels joined to the logged predictions: per-class error rate, precision and recall
    labels = [
        {"transaction_id": t, "label": int(y)}
        for t, y in zip(drifted["transaction_id"], drifted["is_fraud"], strict=True)
    ]
    joined = post_json(f"{monitor.url}/v1/labels", {"labels": labels}, key=monitor.ingest_key)
    assert joined == {"joined": WINDOW, "unmatched": 0}
    classes = monitor.monitor.status()["classes"]
    y, p = drifted["is_fraud"].to_numpy(), predictions.predicted_class
    for k, name in enumerate(fraud.SPEC.classes):
        tp = int(((p == k) & (y == k)).sum())
        assert classes[name]["precision"] == pytest.approx(tp / (p == k).sum())
        assert classes[name]["recall"] == pytest.approx(tp / (y == k).sum())
        assert classes[name]["error_rate"] == pytest.approx(1 - tp / (p == k).sum())


def test_missingness_is_tested_per_column_over_every_row_received(
    published: Published, triton: TritonServer, monitor: MonitorServer
) -> None:
    """Nulls moved: 40 % of an optional column's values null; then that column null in every row, and a required
    column null in 10 % of the rows (refused rows, which the feature window never sees). Each flags that column's
    missingness test; no other column's, and no feature but those computed from the nulled column."""
    normal = fraud.generate(WINDOW, seed=905)
    send(triton, monitor, normal)
    states = drift_states(monitor.monitor.tick())
    assert {f: s for f, s in states.items() if f.startswith("nulls_")} == {
        f"nulls_{c.name}": "ok" for c in missing_columns(fraud.SPEC)
    }
    reference = Registry(published.repository, "fraud").reference_profile()["missing"]
    assert reference["description"]["nulls"] / reference["description"]["rows"] < 0.2  # a few nulls at training

    rows = fraud.generate(WINDOW, seed=906)
    rng = np.random.default_rng(906)
    rows.loc[rng.random(WINDOW) < 0.4, "description"] = None
    send(triton, monitor, rows)
    snapshot = monitor.monitor.tick()
    drifted = {f for f, s in drift_states(snapshot).items() if s == "drift"}
    # what the imputed text feeds moves too (its length and non-ASCII share, and so the outputs); nothing else
    follows = {"description_length", "description_non_ascii", *OUTPUT_TESTS}
    assert "nulls_description" in drifted and drifted <= {"nulls_description", *follows}, drifted
    entry = next(f for f in snapshot["drift"]["features"] if f["feature"] == "nulls_description")  # type: ignore[index]
    assert entry["kind"] == "missing" and entry["statistics"]["null_share"] == pytest.approx(0.4, abs=0.03)

    rows = fraud.generate(WINDOW, seed=907)
    rows["description"] = None  # an all-null window is a flag
    rows.loc[rng.random(WINDOW) < 0.1, "amount"] = np.nan
    send(triton, monitor, rows)
    drifted = {f for f, s in drift_states(monitor.monitor.tick()).items() if s == "drift"}
    assert {"nulls_description", "nulls_amount"} <= drifted <= {"nulls_description", "nulls_amount", *follows}


def test_metrics_latency_sketch_and_utilization(published: Published, tmp_path: Path) -> None:
    """On a server and monitor of the test's own, so the traces are exactly this test's 100 requests."""
    trace_dir = tmp_path / "trace"
    triton = private_server(published, tmp_path, trace_dir=trace_dir, trace_log_frequency=1)
    try:
        monitor = start_monitor(published, triton)
        try:
            send(triton, monitor, fraud.generate(2_000, seed=903), batch=20)  # 100 requests

            def traced() -> int:  # a trace file is read once it is complete; tritonserver writes it after answering
                monitor.monitor.tick()
                return int(monitor.monitor.status()["latency"].get("server|fraud|2", {}).get("count", 0))

            wait_until(lambda: traced() >= 100, 60, "the monitor reading the traces of the 100 requests")
            with urllib.request.urlopen(f"{monitor.url}/metrics", timeout=10) as r:
                text = r.read().decode()
            traces = [t for name in sorted(monitor.monitor.traces_read) for t in read_traces(trace_dir / name)]
            window = monitor.monitor.status()["latency"]["server|fraud|2"]
        finally:
            monitor.stop()
    finally:
        triton.stop()
    families = {f.name: f for f in text_string_to_metric_families(text)}  # parses with prometheus-client's parser
    latency = families["inferline_request_latency_seconds"]
    sides = {s.labels["side"] for s in latency.samples}
    assert sides == {"server", "client"}
    models = {s.labels["model"] for s in latency.samples if s.labels["side"] == "server"}
    assert models == {"fraud"}  # the local target serves one fused model
    state, devices = expected_nvml_state()
    nvml = {s.labels["state"]: s.value for s in families["inferline_gpu_nvml_state"].samples}
    assert nvml == {s: float(s == state) for s in ("disabled", "library_missing", "no_device", "ok")}, nvml
    assert families["inferline_gpu_count"].samples[0].value == devices
    assert 0.0 <= families["inferline_host_cpu_utilization_ratio"].samples[0].value <= 1.0
    assert families["inferline_server_memory_rss_bytes"].samples[0].value > 0
    assert families["inferline_triton_up"].samples[0].value == 1.0

    # the sketch's percentiles against numpy's exact ones over the very same traced requests (this test's only)
    exact = np.array([s for m, v, s in traces if m == "fraud"])
    assert window["count"] == len(exact) == 100
    for q in (50, 95, 99):
        true = np.percentile(exact, q, method="inverted_cdf")
        assert abs(window[f"p{q}"] - true) <= 0.01 * true + 1e-12, (q, window[f"p{q}"], true)


def test_bad_samples_get_a_clear_400_and_a_dead_monitor_never_fails_serving(
    triton: TritonServer, monitor: MonitorServer
) -> None:
    with pytest.raises(urllib.error.HTTPError) as err:
        post_json(
            f"{monitor.url}/v1/samples", {"release": "fraud:2", "columns": {"amount": [1.0]}}, key=monitor.ingest_key
        )
    assert err.value.code == 400 and "lack column(s)" in err.value.read().decode()
    with pytest.raises(urllib.error.HTTPError) as err:
        post_json(f"{monitor.url}/v1/samples", {"release": "loans:1", "columns": {}}, key=monitor.ingest_key)
    assert err.value.code == 400 and "watches pipeline 'fraud'" in err.value.read().decode()

    dead = MonitorTap(f"http://127.0.0.1:{free_port()}", timeout_s=1)
    with InferlineClient(triton.config.http_url, "http", pipeline="fraud", tap=dead) as client:
        predictions = client.predict(fraud.generate(50, seed=4).drop(columns=[fraud.SPEC.label]))
    dead.close()
    assert predictions.ok.all() and dead.dropped == 50 and dead.sent == 0


def test_report_and_grafana_commands(triton: TritonServer, monitor: MonitorServer, tmp_path: Path) -> None:
    send(triton, monitor, drifted_rows())
    states = drift_states(monitor.monitor.tick())
    assert {f for f, s in states.items() if s == "drift"} == DRIFTED, states
    report = subprocess.run(
        [sys.executable, "-m", "inferline.monitor", "report", "--url", monitor.url, "--out", str(tmp_path / "report")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.returncode == 0, report.stderr
    assert {"report.html", "summary.json", "latency.png", "drift.png", "prediction.png", "utilization.png"} <= {
        p.name for p in (tmp_path / "report").iterdir()
    }
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["release"] == "fraud:2" and summary["snapshots"] == 1
    assert set(summary["drifted"]) == DRIFTED  # the report's verdicts are the monitor's
    assert {f["feature"]: f["state"] for f in summary["drift"]} == states
    assert f"drifted: {summary['drifted']}" in report.stdout
    grafana = subprocess.run(
        [sys.executable, "-m", "inferline.monitor", "grafana", "--out", str(tmp_path / "dash.json")],
        capture_output=True,
    )
    assert grafana.returncode == 0
    dashboard = json.loads((tmp_path / "dash.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert any("inferline_request_latency_seconds_bucket" in e for e in exprs)
    assert any("inferline_drift_detected" in e for e in exprs)


def test_reference_profile_travels_with_the_release_and_is_checked(published: Published, tmp_path: Path) -> None:
    registry = Registry(published.repository, "fraud")
    profile = registry.reference_profile(2)
    assert set(profile["numeric"]) == {f.name for f in fraud.SPEC.numeric_features}
    assert profile["rows"] == published.releases[1].manifest.reference_profile.rows
    copy = tmp_path / "repo"
    shutil.copytree(published.repository, copy)
    path = copy / "fraud_model" / "2" / "reference_profile.json"
    path.write_text(path.read_text().replace('"rows"', '"rows" ', 1))
    with pytest.raises(RegistryError, match="does not match"):
        Registry(copy, "fraud").reference_profile(2)


def test_batch_job_outputs_feed_the_monitor(published: Published, monitor: MonitorServer, tmp_path: Path) -> None:
    from inferline.batch import JobConfig, run_job

    fraud.generate(3_000, seed=905).to_parquet(tmp_path / "in.parquet")
    before = monitor.monitor.status()["sources"].get("batch", 0)
    report = run_job(
        JobConfig(
            inputs=[str(tmp_path / "in.parquet")],
            output=tmp_path / "out",
            model="fraud:2",
            repository=published.repository,
            workers=1,
            progress=False,
            monitor_url=monitor.url,
            monitor_key=monitor.ingest_key,
        )
    )
    assert report.rows_sent_to_monitor == 2_000  # one partition, a sample of 2,000 of its 3,000 rows
    assert monitor.monitor.status()["sources"]["batch"] - before == 2_000


def test_forged_samples_are_refused_and_bodies_are_bounded(published: Published) -> None:
    """Ingestion needs the ingest key: a forged ``POST /v1/samples`` (no key, a wrong key) or ``/v1/labels`` is 401
    and changes nothing. With the key: a declared body over the limit is 413 before it is read, a body that is
    not JSON is 400 naming what was received and what was expected."""
    from inferline.features.wire import encode_rows
    from inferline.monitor.app import ServerLimits
    from inferline.serving.tap import sample_payload

    config = MonitorConfig(repository=published.repository, pipeline="fraud", port=free_port(), nvml=False)
    limits = ServerLimits(max_body_bytes=1_000_000, body_timeout_s=0.5, header_timeout_s=0.5)
    server = MonitorServer(Monitor(config), ingest_key="the-key", limits=limits)
    server.start(ticking=False)
    try:
        frame = fraud.generate(20, seed=41).drop(columns=[fraud.SPEC.label])
        body = sample_payload(
            encode_rows(frame, fraud.SPEC), np.tile([0.1, 0.9], (20, 1)), np.ones(20, np.int64), ["ok"] * 20,
            "fraud:2", "fraud",
        )  # fmt: skip
        before = server.monitor.status()
        for key in (None, "a-guess", "the-ke"):
            for route, payload in (("/v1/samples", body), ("/v1/labels", {"labels": [{"tx_id": "x", "label": 1}]})):
                with pytest.raises(urllib.error.HTTPError) as err:
                    post_json(f"{server.url}{route}", payload, key=key)
                assert err.value.code == 401, (route, key)
                assert "Authorization: Bearer <ingest key>" in json.loads(err.value.read())["error"]
        after = server.monitor.status()
        assert (after["rows"], after["sources"], after["labels"]) == (before["rows"], before["sources"], {
            "joined": 0, "unmatched": 0
        }) == ({}, {}, before["labels"])  # fmt: skip

        assert post_json(f"{server.url}/v1/samples", body, key="the-key")["accepted"] == 20
        assert server.monitor.status()["rows"] == {"fraud:2|ok": 20}

        import socket

        with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/samples HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer the-key\r\n"
                b"Content-Type: application/json\r\nContent-Length: 4000000000\r\n\r\n{"
            )
            answer = sock.recv(65536).decode()
        assert answer.startswith("HTTP/1.1 413") and "ServerLimits.max_body_bytes" in answer
        # a body that stops arriving: 408 after body_timeout_s; headers that never end: closed after header_timeout_s
        with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/samples HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer the-key\r\n"
                b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"release"'
            )
            assert sock.recv(65536).decode().startswith("HTTP/1.1 408")
        with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=10) as sock:
            sock.sendall(b"POST /v1/samples HTTP/1.1\r\nHost: x\r\n")
            assert sock.recv(65536) == b""  # closed by the monitor, not by this socket's 10 s timeout

        request = urllib.request.Request(
            f"{server.url}/v1/samples",
            data=b'{"release": "fraud:2", ',
            headers={"Authorization": "Bearer the-key", "Content-Type": "application/json"},
            method="POST",
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=10)
        error = json.loads(err.value.read())["error"]
        assert err.value.code == 400 and "not JSON" in error and "received 23 bytes" in error
        assert "expected a JSON object" in error
        with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as r:
            metrics = r.read().decode()
        assert 'inferline_monitor_requests_refused_total{reason="unauthorized"} 6.0' in metrics
    finally:
        server.stop()
