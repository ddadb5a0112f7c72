"""Beyond one machine, run here: servers and monitors on hosts of their own (network namespaces with their own
addresses, ``tests/system/netns.py``), reached over the network by the client and by Prometheus in the test's namespace.

- Two servers (``inferline serve up`` with its edge on the host's address), the client given both endpoints; one
  host dies mid-traffic (every process on it killed) and every row still ends with exactly one prediction.
- Two monitors (``inferline monitor run --host``), scraped by one Prometheus: ``histogram_quantile`` over the sum
  of their buckets equals one monitor's figure over all the requests, within the buckets' error.

Both skip cleanly where ``ip netns add`` is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from inferline.core.http import post_json
from inferline.core.processes import free_port
from inferline.core.secrets import monitor_key
from inferline.features.pipelines import fraud
from inferline.features.wire import encode_rows
from inferline.monitor.app import MonitorServer
from inferline.monitor.config import MonitorConfig
from inferline.monitor.service import Monitor
from inferline.monitor.windows import LATENCY_BUCKET_ERROR
from inferline.serving.client import InferlineClient
from inferline.serving.server import TritonServer
from inferline.serving.tap import sample_payload

from .conftest import Published, wait_until
from .netns import Host, Network
from .test_prometheus import needs_prometheus, query, start_prometheus

EDGE_PORT = 8080  # each host has ports of its own: the defaults of `serve up` everywhere


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def serve_on(host: Host, published: Published, root: Path) -> Path:
    """``inferline serve up`` on ``host`` with its own copy of the repository; the edge on the host's address.
    Returns the work directory (its server record)."""
    root.mkdir(parents=True)
    repository = root / "triton_models"
    shutil.copytree(published.repository, repository)
    argv = [sys.executable, "-m", "inferline.serving", "up", "--workdir", str(root / "work")]
    argv += ["--repository", str(repository), "--bind", f"{host.address}:{EDGE_PORT}", "--no-grpc-edge"]
    argv += ["--probe-interval", "0"]  # the test counts Triton's inferences exactly; each hang probe is one more
    host.popen(argv, log=root / "up.log")
    return root / "work"


def triton_count(host: Host, model: str) -> float:
    """``nv_inference_count`` of ``model`` from the Triton on ``host`` (its metrics port is on that host's
    loopback, as Triton's ports always are)."""
    read = "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8002/metrics', timeout=5).read().decode())"
    done = host.run([sys.executable, "-c", read])
    assert done.returncode == 0, done.stderr
    samples = [s for f in text_string_to_metric_families(done.stdout) for s in f.samples]
    counts = [s.value for s in samples if s.name.startswith("nv_inference_count") and s.labels.get("model") == model]
    assert counts, f"no nv_inference_count of {model!r}: {sorted({s.name for s in samples})[:20]}"
    return float(sum(counts))


def test_a_host_dying_mid_traffic_leaves_every_row_with_exactly_one_prediction(
    network: Network, published: Published, triton: TritonServer, tmp_path: Path
) -> None:
    """Two hosts serve the same release; the client sends 3,000 rows in requests of 50 to both in turn. When a
    third of the rows are answered (the client's progress callback, an event of the test's), every process on host
    A is killed: its server, supervisor and edge. Every row is answered once, by A before the kill and by B
    after; B's Triton counted exactly the rows it answered; the answers equal the session server's."""
    hosts = [network.add_host(), network.add_host()]
    workdirs = [serve_on(h, published, tmp_path / f"host{i}") for i, h in enumerate(hosts)]
    edges = [f"{h.address}:{EDGE_PORT}" for h in hosts]
    for host, work in zip(hosts, workdirs, strict=True):  # `serve up` returns once its server is ready
        assert host.processes[0].wait(240) == 0, (work.parent / "up.log").read_text()[-3000:]
        assert json.loads((work / "serving" / "server.json").read_text())["state"] == "ready"
    for edge in edges:
        assert answers(f"http://{edge}/v2/health/ready"), f"the edge at {edge} is not ready"

    rows = fraud.generate(3_000, seed=1907).drop(columns=[fraud.SPEC.label])
    killed_at: list[int] = []

    def kill_host_a(done: int) -> None:
        if not killed_at and done >= len(rows) // 3:
            pids = subprocess.run(["ip", "netns", "pids", hosts[0].name], capture_output=True, text=True).stdout
            for pid in pids.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            wait_until(lambda: not answers(f"http://{edges[0]}/v2/health/live"), 30, "host A's edge gone")
            killed_at.append(done)

    with InferlineClient(edges, "http", pipeline="fraud", max_batch_size=50, endpoint_cooldown_s=600) as client:
        got = client.predict(rows, errors="record", progress=kill_host_a)
    assert killed_at, "the kill never happened"
    cut = killed_at[0]
    assert len(got) == len(rows) and not got.failed.any(), [e for e in got.errors][:3]
    assert set(got.served_by) == set(edges)
    assert set(got.served_by[:cut]) == set(edges)  # both answered before the kill
    assert set(got.served_by[cut:]) == {edges[1]}  # only B after it
    assert triton_count(hosts[1], "fraud") == got.served_by.count(edges[1])  # B answered each of its rows once
    with InferlineClient(triton.config.http_url, "http", pipeline="fraud") as single:
        reference = single.predict(rows)
    np.testing.assert_allclose(got.probabilities, reference.probabilities, rtol=1e-6, atol=1e-7)
    assert got.status == reference.status
    down = subprocess.run(
        [sys.executable, "-m", "inferline.serving", "down", "--workdir", str(workdirs[1])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert down.returncode == 0, down.stderr


@needs_prometheus
def test_two_monitors_on_two_hosts_merge_in_one_prometheus(
    network: Network, published: Published, tmp_path: Path
) -> None:
    """``inferline monitor run --host`` on two hosts, each fed half of 10,000 requests' latencies (different
    distributions) with real samples; a third monitor in the test's namespace fed all of them; one Prometheus
    scrapes the three. The p99 of the two summed equals the third's, and is within LATENCY_BUCKET_ERROR of
    numpy's exact p99 of all the requests."""
    rng = np.random.default_rng(19)
    halves = [rng.lognormal(np.log(0.004), 0.5, 6_000), rng.lognormal(np.log(0.03), 0.8, 4_000)]
    hosts = [network.add_host(), network.add_host()]
    urls = []
    keys: dict[str, str] = {}
    for i, host in enumerate(hosts):
        argv = [sys.executable, "-m", "inferline.monitor", "run", "--workdir", str(tmp_path / f"none{i}")]
        argv += ["--repository", str(published.repository), "--pipeline", "fraud", "--host", host.address]
        argv += ["--no-gpu", "--interval", "1", "--alerts", str(tmp_path / f"alerts{i}.jsonl")]
        host.popen(argv, log=tmp_path / f"monitor{i}.log")
        urls.append(f"http://{host.address}:9400")
        keys[urls[-1]] = monitor_key(tmp_path / f"none{i}")  # the ingest key `monitor run --workdir` reads
    for url in urls:
        wait_until(lambda u=url: answers(f"{u}/metrics"), 60, f"the monitor at {url}")
    whole = MonitorServer(
        Monitor(MonitorConfig(repository=published.repository, pipeline="fraud", port=free_port(), nvml=False))
    ).start(ticking=False)
    keys[whole.url] = whole.ingest_key
    try:
        frame = fraud.generate(200, seed=19).drop(columns=[fraud.SPEC.label])
        arrays = encode_rows(frame, fraud.SPEC)
        probabilities = np.tile([0.9, 0.1], (len(frame), 1))
        predicted = np.zeros(len(frame), np.int64)

        def feed(url: str, latencies: np.ndarray) -> None:
            for chunk in np.array_split(latencies, 10):  # ten payloads of samples, as a tap sends them
                body = sample_payload(
                    arrays, probabilities, predicted, ["ok"] * len(frame), "fraud:2", "fraud", chunk.tolist()
                )
                assert post_json(f"{url}/v1/samples", body, key=keys[url])["accepted"] == len(frame)

        for url, latencies in zip(urls, halves, strict=True):
            feed(url, latencies)
        feed(whole.url, np.concatenate(halves))
        prometheus = start_prometheus(
            tmp_path / "prometheus",
            {"hosts": [f"{u}/metrics" for u in urls], "whole": [f"{whole.url}/metrics"]},
        )
        try:

            def p99(job: str) -> float | None:
                bucket = f'inferline_request_latency_seconds_bucket{{job="{job}",side="client"}}'
                result = query(prometheus, f"histogram_quantile(0.99, sum by (le) ({bucket}))")
                return float(result[0]["value"][1]) if result else None

            def scraped() -> bool:
                count = query(prometheus, 'count(inferline_request_latency_seconds_count{job="hosts"})')
                return bool(count) and count[0]["value"][1] == "2" and p99("whole") is not None

            wait_until(scraped, 60, "Prometheus scraping both hosts' monitors and the third")
            merged, single = p99("hosts"), p99("whole")
            instances = {r["metric"]["instance"] for r in query(prometheus, 'up{job="hosts"} == 1')}
        finally:
            prometheus.stop()
    finally:
        whole.stop()
    assert instances == {f"{h.address}:9400" for h in hosts}  # two hosts, two addresses
    exact = float(np.quantile(np.concatenate(halves), 0.99, method="inverted_cdf"))
    assert merged is not None and single is not None
    assert merged == pytest.approx(single, rel=1e-9)
    assert abs(merged / exact - 1) <= LATENCY_BUCKET_ERROR, (merged, exact)
