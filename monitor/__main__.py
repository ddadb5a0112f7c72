"""python -m monitor run|report|grafana: watch a served pipeline (latency, utilization, drift, per-class errors)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

from features.artifacts import atomic_write_json


def _server_record(workdir: Path) -> dict[str, Any]:
    path = workdir / "serving" / "server.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _run(args: argparse.Namespace) -> int:
    from monitor.service import Monitor, MonitorConfig, MonitorServer

    record = _server_record(Path(args.workdir))
    metrics = args.triton_metrics or record.get("metrics")
    trace_dir = args.trace_dir or record.get("trace_dir")
    config = MonitorConfig(
        repository=Path(args.repository or record.get("repository") or "triton_models"),
        pipeline=args.pipeline,
        triton_metrics_url=(metrics if metrics is None or metrics.startswith("http") else f"http://{metrics}"),
        trace_dir=Path(trace_dir) if trace_dir else None,
        server_pid=args.server_pid or record.get("pid"),
        port=args.port,
        interval_s=args.interval,
        latency_window_s=args.latency_window,
        drift_window_rows=args.drift_window_rows,
        alpha=args.alpha,
        min_samples=args.min_samples,
        nvml=not args.no_gpu,
    )
    server = MonitorServer(Monitor(config)).start()
    print(
        f"monitor for {config.pipeline} on {server.url} (/metrics, /v1/status, /v1/history; POST /v1/samples, "
        f"/v1/labels); Triton metrics {config.triton_metrics_url or 'not scraped'}, traces "
        f"{config.trace_dir or 'none'}, NVML {server.monitor.sampler.state}",
        flush=True,
    )
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    server.stop()
    return 0


def _report(args: argparse.Namespace) -> int:
    from monitor.report import write_report

    url = args.url.rstrip("/")
    try:
        with urllib.request.urlopen(f"{url}/v1/history", timeout=10) as r:
            history = json.loads(r.read())
    except OSError as exc:
        print(
            f"report FAILED: no monitor answers at {url} ({exc}); start one with `python -m monitor run`",
            file=sys.stderr,
        )
        return 1
    summary = write_report(history, Path(args.out))
    print(f"wrote {args.out}/report.html and summary.json; drifted: {summary['drifted'] or 'none'}")
    return 0


def _grafana(args: argparse.Namespace) -> int:
    from monitor.report import grafana_dashboard

    atomic_write_json(Path(args.out), grafana_dashboard())
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monitor", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="the monitor service on 127.0.0.1 (Ctrl-C or SIGTERM stops it)")
    run.add_argument("--workdir", default=".inferline", help="where `python -m serving up` recorded its server")
    run.add_argument("--repository", default=None, help="model repository (default: the running server's)")
    run.add_argument("--pipeline", default="fraud")
    run.add_argument("--triton-metrics", default=None, help="Triton metrics URL (default: the running server's)")
    run.add_argument("--trace-dir", default=None, help="Triton trace directory (default: the running server's)")
    run.add_argument("--server-pid", type=int, default=None, help="Triton's pid for CPU/memory (default: recorded)")
    run.add_argument("--port", type=int, default=9400)
    run.add_argument("--interval", type=float, default=5.0, help="seconds between scrapes and drift evaluations")
    run.add_argument("--latency-window", type=float, default=60.0, help="seconds of latency in the percentiles")
    run.add_argument("--drift-window-rows", type=int, default=5_000, help="most recent rows compared for drift")
    run.add_argument(
        "--alpha", type=float, default=0.01, help="false-alarm rate of one drift evaluation (all features)"
    )
    run.add_argument("--min-samples", type=int, default=500, help="fewer rows than this: 'not enough data'")
    run.add_argument("--no-gpu", action="store_true", help="do not sample NVML")
    rep = sub.add_parser("report", help="HTML + PNG report and JSON summary from a running monitor's snapshots")
    rep.add_argument("--url", default="http://127.0.0.1:9400")
    rep.add_argument("--out", default=".inferline/reports/monitor")
    gra = sub.add_parser("grafana", help="write the Grafana dashboard JSON for the exported metrics")
    gra.add_argument("--out", default="monitor/grafana/inferline.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return {"run": _run, "report": _report, "grafana": _grafana}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
