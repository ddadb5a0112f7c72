"""inferline monitor run|report|rules|grafana: watch a served pipeline (latency, utilization, drift, errors)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from inferline.core.command import (
    Parser,
    check_port_free,
    existing_file,
    new_dir,
    new_file,
    positive_float,
    positive_int,
    run,
)
from inferline.core.files import atomic_write_bytes, atomic_write_json
from inferline.core.http import get_json
from inferline.core.options import add_options, from_args
from inferline.monitor.config import MonitorConfig
from inferline.release.registry import choose_published


def _server_record(workdir: Path) -> dict[str, Any]:
    from inferline.serving.server import read_state

    fix = "pass the server's --workdir, or its addresses with --repository, --triton-metrics and --trace-dir"
    return read_state(workdir, fix) or {}


def _run(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry

    from inferline.core.alerts import Alerter
    from inferline.core.secrets import admin_key, monitor_key
    from inferline.monitor.app import MonitorServer
    from inferline.monitor.rollback import RollbackController
    from inferline.monitor.rollout import RolloutController
    from inferline.monitor.rules import RuleEngine, load_rules
    from inferline.monitor.service import Monitor

    record = _server_record(Path(args.workdir))
    metrics = args.triton_metrics or record.get("metrics")
    trace_dir = args.trace_dir or record.get("trace_dir")
    repository = Path(args.repository or record.get("repository") or "triton_models")
    pipeline = choose_published(repository, args.pipeline)
    rule_set = load_rules(Path(args.rules) if args.rules else None)
    check_port_free("--port", args.port, args.host)
    config = from_args(
        MonitorConfig,
        args,
        repository=repository,
        pipeline=pipeline,
        triton_metrics_url=(metrics if metrics is None or metrics.startswith("http") else f"http://{metrics}"),
        trace_dir=Path(trace_dir) if trace_dir else None,
        server_pid=args.server_pid or record.get("pid"),
        nvml=not args.no_gpu,
    )
    registry = CollectorRegistry()  # /metrics: the monitor's gauges and the alert counter of its alert sinks
    alerter = Alerter.from_env(Path(args.alerts), registry=registry)
    rules = RuleEngine(rule_set, alerter)
    controller = None
    if args.rollback:
        http = args.triton_http or record.get("http")
        if not http:
            print(
                "--rollback needs the server's HTTP address: start it with `inferline serve up` or pass --triton-http"
            )
            return 2
        controller = RollbackController(
            config.repository, config.pipeline, http, admin_key(Path(args.workdir)), alerter, args.rollback_cooldown
        )
    # the ingest key the edge's sampler of `inferline serve up --workdir` (the same directory) sends
    key = monitor_key(Path(args.workdir))
    monitor = Monitor(config, rules=rules, controller=controller)
    http = args.triton_http or record.get("http")
    if http:  # decides the rollouts `inferline rollout` starts on this server (monitor.rollout)
        monitor.rollout = RolloutController(
            config.repository, config.pipeline, http, admin_key(Path(args.workdir)), alerter, monitor.spec.task
        )
    server = MonitorServer(monitor, registry=registry, ingest_key=key).start()
    print(
        f"monitor for {config.pipeline} on {server.url} (/metrics, /v1/status, /v1/history; POST /v1/samples, "
        f"/v1/labels with the ingest key of {args.workdir}); Triton metrics "
        f"{config.triton_metrics_url or 'not scraped'}, traces "
        f"{config.trace_dir or 'none'}, NVML {server.monitor.sampler.state}; {len(rules.rules)} alert rules, "
        f"automatic rollback {'on' if controller else 'off'}, rollouts "
        f"{'decided here' if monitor.rollout else 'not decided (no Triton HTTP address: pass --triton-http)'}",
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
    from inferline.monitor.report import write_report

    url = args.url.rstrip("/")
    try:
        history = get_json(f"{url}/v1/history", timeout_s=10)
    except OSError as exc:
        print(
            f"report FAILED: no monitor answers at {url} ({exc}); start one with `inferline monitor run`",
            file=sys.stderr,
        )
        return 1
    summary = write_report(history, Path(args.out))
    print(f"wrote {args.out}/report.html and summary.json; drifted: {summary['drifted'] or 'none'}")
    return 0


def _rules(args: argparse.Namespace) -> int:
    import yaml

    from inferline.monitor.rules import load_rules, prometheus_rules

    rules = load_rules(Path(args.rules) if args.rules else None)
    text = yaml.safe_dump(
        prometheus_rules(rules, args.interval, pipeline=args.pipeline, window_s=args.latency_window), sort_keys=False
    )
    atomic_write_bytes(Path(args.prometheus), text.encode())
    print(f"wrote {len(rules)} Prometheus alerting rules to {args.prometheus}")
    return 0


def _grafana(args: argparse.Namespace) -> int:
    from inferline.monitor.dashboard import grafana_dashboard

    atomic_write_json(Path(args.out), grafana_dashboard())
    print(f"wrote {args.out}")
    return 0


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = Parser(prog=prog or "inferline monitor", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="the monitor service (Ctrl-C or SIGTERM stops it)")
    run.add_argument(
        "--workdir",
        default=".inferline",
        help="where `inferline serve up` recorded its server and keeps the ingest key (monitor.key, mode 0600) "
        "that POST /v1/samples and /v1/labels need",
    )
    run.add_argument("--repository", default=None, help="model repository (default: the running server's)")
    run.add_argument("--pipeline", default=None, help="pipeline to watch (default: the repository's only pipeline)")
    run.add_argument("--triton-metrics", default=None, help="Triton metrics URL (default: the running server's)")
    run.add_argument("--trace-dir", default=None, help="Triton trace directory (default: the running server's)")
    run.add_argument(
        "--server-pid", type=positive_int, default=None, help="Triton's pid for CPU/memory (default: recorded)"
    )
    run.add_argument("--no-gpu", action="store_true", help="do not sample NVML")
    run.add_argument(
        "--rules",
        type=existing_file,
        default=None,
        help="alert rules (JSON list of AlertRule fields); default: built in",
    )
    run.add_argument(
        "--alerts",
        type=new_file,
        default=".inferline/alerts.jsonl",
        help="JSON-lines alert log (plus webhook env)",
    )
    run.add_argument("--rollback", action="store_true", help="roll back to the previous release on critical rules")
    run.add_argument(
        "--rollback-cooldown", type=positive_float, default=900.0, help="seconds between automatic rollbacks"
    )
    run.add_argument("--triton-http", default=None, help="Triton HTTP host:port (default: the running server's)")
    add_options(run, MonitorConfig)  # --host, --port, --interval, --latency-window, --drift-window-rows, ...
    run.set_defaults(func=_run)
    rep = sub.add_parser("report", help="HTML + PNG report and JSON summary from a running monitor's snapshots")
    rep.add_argument("--url", default="http://127.0.0.1:9400", help="the running monitor's URL")
    rep.add_argument("--out", type=new_dir, default=".inferline/reports/monitor", help="directory for the report")
    rep.set_defaults(func=_report)
    rul = sub.add_parser("rules", help="write the alert rules as a Prometheus alerting-rules file")
    rul.add_argument("--rules", type=existing_file, default=None, help="JSON rules file (default: the built-in rules)")
    rul.add_argument(
        "--prometheus",
        type=new_file,
        default="monitor/prometheus/inferline-rules.yml",
        help="the Prometheus rules file to write",
    )
    rul.add_argument(
        "--interval", type=positive_float, default=5.0, help="the monitor's evaluation interval, for `for:`"
    )
    rul.add_argument(
        "--latency-window",
        type=positive_float,
        default=60.0,
        help="the monitor's --latency-window, the range of the latency rules' rate()",
    )
    rul.add_argument(
        "--pipeline",
        default=None,
        help="name this pipeline where a rule says {pipeline} (default: the pipeline each monitor reports watching)",
    )
    rul.set_defaults(func=_rules)
    gra = sub.add_parser("grafana", help="write the Grafana dashboard JSON for the exported metrics")
    gra.add_argument(
        "--out", type=new_file, default="monitor/grafana/inferline.json", help="the dashboard JSON file to write"
    )
    gra.set_defaults(func=_grafana)
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run(build_parser(prog), argv)


if __name__ == "__main__":
    sys.exit(main())
