"""What watching costs: Triton ensemble throughput with the monitor on (request traces written for every request,
the monitor scraping Triton's metrics and reading the traces every second) against the same release on a server
without traces and without a monitor. wrk drives both, interleaved, one raw row per request from the suite's pool of
distinct rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tqdm import tqdm

from inferline.benchmarks.load import run_wrk
from inferline.benchmarks.stacks import Release, triton_body, write_bodies
from inferline.core.processes import free_port
from inferline.monitor.app import MonitorServer
from inferline.monitor.config import MonitorConfig
from inferline.monitor.service import Monitor
from inferline.serving.server import ServerConfig, TritonServer

__all__ = ["bench_monitor_overhead"]


def _server(release: Release, workdir: Path, trace: bool, trace_rate: int) -> TritonServer:
    config = ServerConfig.on_free_ports(
        release.repository,
        workdir,
        trace_dir=workdir / "trace" if trace else None,
        trace_rate=trace_rate,
        trace_log_frequency=100,
    )
    return TritonServer(config).start(timeout_s=120)


def bench_monitor_overhead(
    release: Release, workdir: Path, reps: int, duration_s: float, concurrency: int = 16, trace_rate: int = 100
) -> dict[str, Any]:
    on = _server(release, workdir / "monitor_on", trace=trace_rate > 0, trace_rate=max(trace_rate, 1))
    off = _server(release, workdir / "monitor_off", trace=False, trace_rate=1)
    assert on.process is not None
    monitor = MonitorServer(
        Monitor(
            MonitorConfig(
                repository=release.repository,
                pipeline="fraud",  # the suite benchmarks the demo pipeline (build_release)
                triton_metrics_url=f"http://{on.config.metrics_url.removeprefix('http://')}",
                trace_dir=on.config.trace_dir,
                server_pid=on.process.pid,
                port=free_port(),
                interval_s=1.0,
            )
        )
    ).start()
    bodies = write_bodies(workdir / "bodies" / "monitor_triton.jsonl", release.pool, triton_body)
    urls = {name: f"http://{s.config.http_url}/v2/models/fraud/infer" for name, s in (("on", on), ("off", off))}
    throughput: dict[str, list[float]] = {"on": [], "off": []}
    errors: dict[str, list[int]] = {"on": [], "off": []}
    try:
        for url in urls.values():  # warm both
            run_wrk(url, bodies, concurrency, 2)
        with tqdm(total=2 * reps, desc="monitor overhead", unit="run", disable=None) as bar:
            for _ in range(reps):
                for name, url in urls.items():
                    result = run_wrk(url, bodies, concurrency, duration_s)
                    throughput[name].append(result.throughput)
                    errors[name].append(result.errors)
                    bar.update()
        traced = monitor.monitor.status()["latency"]
    finally:
        monitor.stop()
        on.stop()
        off.stop()
    return {
        "concurrency": concurrency,
        "trace_rate": trace_rate,
        "errors": errors,
        "duration_s": duration_s,
        "throughput_rps": throughput,
        "ratio_on_over_off": [a / b for a, b in zip(throughput["on"], throughput["off"], strict=True)],
        "server_latency_seen_by_monitor": {k: v for k, v in traced.items() if k.startswith("server|")},
    }
