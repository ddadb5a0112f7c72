"""What watching every caller costs: throughput through the HTTP edge with the edge's monitor sampler at full rate
(``inferline serve up --sample-rate 1``, every answered inference decoded and posted to a live monitor) against the
same release behind an edge that samples nothing (``--sample-rate 0``). Two supervised servers run side by side;
wrk (one thread) drives each in turn, interleaved, one raw row per request from the suite's pool of distinct rows.
Beside each throughput: the supervisor process's CPU per request (the edge, and the sampler's thread with it).

    .venv/bin/python -m inferline.benchmarks.edge_sampling_bench --reps 3 --duration 8 --concurrency 16 --rates 1,0.1

Goal (issue 29): full sampling costs < 5 % throughput. Run it on a quiet machine (``uptime``): the ratio is what
matters, not the absolute figures."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import psutil

from inferline.benchmarks.load import run_wrk
from inferline.benchmarks.stacks import build_release, serve_up, triton_body, write_bodies
from inferline.core.http import get_text
from inferline.core.processes import free_port, stop_process
from inferline.core.secrets import monitor_key
from inferline.monitor.app import MonitorServer
from inferline.monitor.config import MonitorConfig
from inferline.monitor.service import Monitor

__all__ = ["bench_edge_sampling"]


def _counters(metrics_url: str) -> dict[str, float]:
    text = get_text(metrics_url, timeout_s=10)
    return {
        k: float(v)
        for k, v in (line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("inferline_edge_sample"))
    }


def bench_edge_sampling(
    repository: Path,
    pool: list[dict[str, Any]],
    workdir: Path,
    reps: int,
    duration_s: float,
    concurrency: int,
    rates: tuple[float, ...] = (1.0,),
) -> dict[str, Any]:
    """Each rate in ``rates`` against rate 0 (no sampler), interleaved; the monitor (this process, so its CPU per
    request is reported too: on one machine it shares the cores) holds the ingest key of every sampled server."""
    config = MonitorConfig(repository=repository, pipeline="fraud", port=free_port(), nvml=False, interval_s=1.0)
    key = monitor_key(workdir / "rate-0")
    monitor = MonitorServer(Monitor(config), ingest_key=key).start()
    stacks: dict[str, tuple[subprocess.Popen[bytes], str, str]] = {}
    me = psutil.Process()
    try:
        for rate in rates:
            sampled = workdir / f"rate-{rate:g}"
            sampled.mkdir(parents=True, exist_ok=True)
            (sampled / "monitor.key").write_text(key + "\n")
            (sampled / "monitor.key").chmod(0o600)
            stacks[f"rate {rate:g}"] = serve_up(
                repository, sampled, "--monitor-url", monitor.url, "--sample-rate", f"{rate:g}"
            )
        stacks["rate 0"] = serve_up(repository, workdir / "rate-0", "--sample-rate", "0")
        bodies = write_bodies(workdir / "bodies.jsonl", pool, triton_body)
        throughput: dict[str, list[float]] = {name: [] for name in stacks}
        cpu_us: dict[str, list[float]] = {name: [] for name in stacks}
        monitor_us: dict[str, list[float]] = {name: [] for name in stacks}
        p99: dict[str, list[float]] = {name: [] for name in stacks}
        for _, url, _ in stacks.values():  # warm both
            run_wrk(f"http://{url}/v2/models/fraud/infer", bodies, concurrency, 2)
        for _ in range(reps):
            for name, (proc, url, _) in stacks.items():
                supervisor = psutil.Process(proc.pid)
                before, mine = supervisor.cpu_times(), me.cpu_times()
                result = run_wrk(f"http://{url}/v2/models/fraud/infer", bodies, concurrency, duration_s)
                after, mine_after = supervisor.cpu_times(), me.cpu_times()
                watched = (mine_after.user + mine_after.system) - (mine.user + mine.system)
                monitor_us[name].append(1e6 * watched / max(result.requests, 1))
                throughput[name].append(result.throughput)
                p99[name].append(result.p99_ms)
                spent = (after.user + after.system) - (before.user + before.system)
                cpu_us[name].append(1e6 * spent / max(result.requests, 1))
                print(f"{name}: {result.throughput:.0f} req/s, p99 {result.p99_ms:.2f} ms, edge CPU "
                      f"{cpu_us[name][-1]:.0f} us/request, monitor CPU {monitor_us[name][-1]:.0f} us/request, "
                      f"errors {result.errors}", flush=True)  # fmt: skip
        counters = {name: _counters(metrics) for name, (_, _, metrics) in stacks.items() if name != "rate 0"}
        rows = sum(monitor.monitor.status()["rows"].values())
    finally:
        for proc, _, _ in stacks.values():
            stop_process(proc)
        monitor.stop()
    ratios = {
        name: [a / b for a, b in zip(throughput[name], throughput["rate 0"], strict=True)]
        for name in stacks
        if name != "rate 0"
    }
    return {
        "concurrency": concurrency,
        "duration_s": duration_s,
        "throughput_rps": throughput,
        "p99_ms": p99,
        "edge_cpu_us_per_request": cpu_us,
        "monitor_cpu_us_per_request": monitor_us,
        "ratio_over_rate0": ratios,
        "median_ratio_over_rate0": {name: statistics.median(r) for name, r in ratios.items()},
        "sampler_counters": counters,
        "rows_at_monitor": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rates", default="1", help="sample rates to compare with 0, comma-separated (1,0.1)")
    parser.add_argument("--workdir", default=None, help="default: a temporary directory")
    parser.add_argument("--out", default=None, help="write the result JSON here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        release = build_release(workdir / "release", rows=20_000, pool_rows=2_000)
        result = bench_edge_sampling(
            release.repository,
            release.pool,
            workdir,
            args.reps,
            args.duration,
            args.concurrency,
            tuple(float(r) for r in args.rates.split(",")),
        )
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
