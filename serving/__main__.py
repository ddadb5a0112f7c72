"""inferline serve up|status|down|apply|predict: run the local Triton server behind its edge and talk to it.

``up`` serves every pipeline of the repository whose current release loads; one that does not load is named, with
Triton's own reason, on stderr and under ``unavailable`` in the JSON record it prints, and ``up`` still exits 0.
Only when no pipeline loads does it exit 1, saying why for each. ``status`` reads the same from the running server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import psutil

from inferline.core.command import (
    Parser,
    bind_address,
    check_port_free,
    existing_file,
    fraction,
    new_dir,
    port,
    positive_float,
    positive_int,
    run,
)
from inferline.core.errors import UserError
from inferline.release.registry import choose_published, published_pipelines, registered_pipelines

if TYPE_CHECKING:
    from inferline.features.spec import PipelineSpec
from inferline.core.secrets import admin_key
from inferline.serving.client import InferlineClient, InferlineError, ready_models
from inferline.serving.gateway import GatewayLimits
from inferline.serving.server import ServerConfig, read_state, state_path
from inferline.serving.supervisor import Supervisor, SupervisorConfig, event_loop, exit_cause
from inferline.serving.triton_index import fix_hint, load_status, repository_index


def _read_state(workdir: Path) -> dict[str, Any] | None:
    return read_state(
        workdir, "if no server runs from this work directory, delete it; else pass that server's --workdir"
    )


# every port `serve up` listens on (a test or a benchmark starting one on free ports passes each)
UP_PORT_FLAGS = (
    "--http-port",
    "--grpc-port",
    "--metrics-port",
    "--gateway-port",
    "--grpc-edge-port",
    "--supervisor-metrics-port",
)


def _check_ports(args: argparse.Namespace) -> None:
    """Every port ``up`` will listen on is distinct and free on 127.0.0.1 (bound the way the servers bind them,
    with SO_REUSEADDR, so a port in TIME_WAIT after ``down`` counts as free)."""
    ports = {
        "--http-port": args.http_port,
        "--grpc-port": args.grpc_port,
        "--metrics-port": args.metrics_port,
        "--gateway-port": None if args.no_gateway or args.bind else args.gateway_port,
        "--grpc-edge-port": None if args.no_gateway or args.no_grpc_edge else args.grpc_edge_port,
        "--supervisor-metrics-port": args.supervisor_metrics_port,
    }
    if args.bind and not args.no_gateway:
        check_port_free("--bind", args.bind[1], args.bind[0])
    seen: dict[int, str] = {}
    for flag, number in ports.items():
        if number is None:
            continue
        if number in seen:
            raise UserError(f"{seen[number]} and {flag} are both {number}; give each one a port of its own")
        seen[number] = flag
        check_port_free(flag, number)


def _check_repository(repository: Path) -> None:
    if not published_pipelines(repository):
        if not repository.is_dir() or not registered_pipelines(repository):
            choose_published(repository, None)  # raises the error for a missing or an empty repository
        raise UserError(
            f"{repository} has registries but no current release; promote one with `inferline export promote N "
            f"--repository {repository}` or publish one with `inferline export publish`"
        )


def _alive(pid: int) -> bool:
    """The process exists and has not exited. A zombie (exited, not yet reaped: a detached supervisor killed with
    SIGKILL stays one where PID 1 does not reap) is dead, although ``kill(pid, 0)`` still succeeds on it."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_gone(pids: list[int], timeout_s: float) -> bool:
    """Wait until none of ``pids`` is alive; True if they all went within the timeout."""
    deadline = time.monotonic() + timeout_s
    while any(_alive(p) for p in pids):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)  # polling for the processes to exit
    return True


def _owner(state: dict[str, Any]) -> int:
    """The process that owns the service: the supervisor (records written before it existed: the server)."""
    return int(state.get("supervisor_pid", state["pid"]))


def _versions(url: str, key: str) -> list[dict[str, Any]]:
    return ready_models(url, key)


def _supervisor_config(args: argparse.Namespace) -> SupervisorConfig:
    server = ServerConfig(
        repository=Path(args.repository),
        workdir=Path(args.workdir),
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        exit_timeout_s=args.exit_timeout,
        trace_dir=None if args.no_trace else Path(args.workdir) / "trace",
        trace_rate=args.trace_rate,
        trace_log_frequency=10,
    )
    limits = GatewayLimits(
        max_body_bytes=args.max_body_bytes,
        max_inflight=args.max_inflight,
        max_queued=args.max_queued,
        body_timeout_s=args.body_timeout,
        header_timeout_s=args.header_timeout,
        max_connections=args.max_connections,
        max_message_bytes=args.max_message_bytes,
    )
    return SupervisorConfig(
        server=server,
        gateway_port=None if args.no_gateway else (args.bind[1] if args.bind else args.gateway_port),
        gateway_host=args.bind[0] if args.bind else "127.0.0.1",
        grpc_edge_port=None if args.no_gateway or args.no_grpc_edge else args.grpc_edge_port,
        api_keys=Path(args.api_keys) if args.api_keys else None,
        tls_cert=Path(args.tls_cert) if args.tls_cert else None,
        tls_key=Path(args.tls_key) if args.tls_key else None,
        tls_client_ca=Path(args.tls_client_ca) if args.tls_client_ca else None,
        gateway_limits=limits,
        metrics_port=args.supervisor_metrics_port,
        max_restarts=args.max_restarts,
        probe_interval_s=args.probe_interval,
        probe_timeout_s=args.probe_timeout,
        ready_timeout_s=args.timeout,
        monitor_url=args.monitor_url or None,
        sample_rate=args.sample_rate,
    )


def _warn_unavailable(record: dict[str, Any], command: str) -> None:
    """One line on stderr per pipeline the server could not load: which release, Triton's reason, what to do."""
    pipelines = record.get("pipelines") or {}
    for name, reason in (record.get("unavailable") or {}).items():
        release = (pipelines.get(name) or {}).get("release")
        print(
            f"inferline serve {command}: warning: pipeline {name!r} (release {release}) is not served, the others "
            f"are: {reason.rstrip('.')}. {fix_hint(name)}",
            file=sys.stderr,
        )


def _print_ready(record: dict[str, Any], started: float, key: str) -> None:
    loaded = _versions(record["http"], key)
    print(json.dumps({**record, "ready_s": round(time.monotonic() - started, 2), "loaded": loaded}, indent=2))
    sys.stdout.flush()
    _warn_unavailable(record, "up")


def _live_pipelines(state: dict[str, Any], key: str) -> dict[str, Any]:
    """``pipelines`` and ``unavailable`` of the server record, read again from the server's repository index: a
    pipeline loaded since (``serve apply``) is READY now. One that never reached Triton keeps its recorded reason."""
    recorded: dict[str, Any] = state.get("pipelines") or {}
    if not recorded:  # a record written before load statuses were kept
        return {}
    plan = {name: list(p.get("models", [])) for name, p in recorded.items()}
    releases = {name: int(p["release"]) for name, p in recorded.items() if p.get("release") is not None}
    index = repository_index(state["http"], key)
    handed = {m.name for m in index if m.state}
    refused = {
        name: str(recorded[name].get("reason", ""))
        for name, models in plan.items()
        if recorded[name].get("reason") and not handed.intersection(models)
    }
    live = load_status(index, plan, releases, refused)
    return {
        "pipelines": {name: st.as_dict() for name, st in live.items()},
        "unavailable": {name: st.reason for name, st in live.items() if st.state != "READY"},
    }


def _up(args: argparse.Namespace) -> int:
    state = _read_state(args.workdir)
    if state and _alive(_owner(state)):
        print(f"already running (pid {state['pid']}, http {state['http']}); `inferline serve down` first")
        return 1
    if state and _alive(state["pid"]) and not _wait_gone([state["pid"]], args.exit_timeout + 10):
        print(
            f"the previous tritonserver (pid {state['pid']}) outlived its supervisor and still holds its ports; "
            "run `inferline serve down` to stop it, then `up` again"
        )
        return 1
    _check_ports(args)
    _check_repository(Path(args.repository))
    _check_tls(args)
    started = time.monotonic()
    key = admin_key(args.workdir)
    if args.foreground:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        supervisor = Supervisor(_supervisor_config(args))
        with asyncio.Runner(loop_factory=event_loop()) as runner:
            return runner.run(supervisor.run(on_ready=lambda record: _print_ready(record, started, key)))
    # detached: the same command in the foreground, in a session of its own, its output in the work directory
    log_path = Path(args.workdir) / "serving" / "supervisor.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        child = subprocess.Popen(
            foreground_command(args.argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = started + args.timeout + 10
    while time.monotonic() < deadline:
        state = _read_state(args.workdir)
        if child.poll() is not None or (
            state and state.get("supervisor_pid") == child.pid and state["state"] != "starting"
        ):
            break
        time.sleep(0.1)  # polling the supervisor's state file
    state = _read_state(args.workdir)
    if child.poll() is not None or not state or state.get("state") != "ready":
        if state and state.get("failure"):  # it came up and loaded nothing: Triton's reasons, not a log tail
            print(f"serving up FAILED: {state['failure']} (server log: {state.get('log')})", file=sys.stderr)
        else:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
            print(
                f"serving up FAILED (supervisor {exit_or_running(child)}); last lines of {log_path}:\n{tail}",
                file=sys.stderr,
            )
        if child.poll() is None:
            child.terminate()
            child.wait(30)
        return 1
    _print_ready(state, started, key)
    return 0


def foreground_command(argv: list[str]) -> list[str]:
    """The command line the detached ``up`` runs: the same arguments in the foreground. ``argv`` is this stage's
    own (``["up", "--workdir", ...]``: what `python -m inferline.serving up ...` has in sys.argv and what
    `inferline serve up ...` passes to ``main``); --workdir and every other option belong to ``up``, so they are
    valid after ``python -m inferline.serving`` as they are."""
    if not argv or argv[0] != "up":
        raise ValueError(f"expected the arguments of `up`, starting with 'up'; got {argv!r}")
    return [sys.executable, "-m", "inferline.serving", *(a for a in argv if a != "--foreground"), "--foreground"]


def exit_or_running(child: subprocess.Popen[bytes]) -> str:
    return "running" if child.poll() is None else exit_cause(child.returncode)


def _check_tls(args: argparse.Namespace) -> None:
    """--tls-cert and --tls-key come together, --tls-client-ca needs them, and the files load (before anything
    starts)."""
    from inferline.serving.gateway import tls_context

    if bool(args.tls_cert) != bool(args.tls_key) or (args.tls_client_ca and not args.tls_cert):
        raise UserError("--tls-cert and --tls-key go together (and --tls-client-ca needs both); give both or none")
    if args.tls_cert:
        try:
            tls_context(
                Path(args.tls_cert), Path(args.tls_key), Path(args.tls_client_ca) if args.tls_client_ca else None
            )
        except ValueError as exc:
            raise UserError(str(exc)) from None


def _keys(args: argparse.Namespace) -> int:
    from inferline.serving.apikeys import ApiKeys, add_key, revoke_key

    if args.keys_command == "add":
        print(add_key(args.file, args.name))
        print(f"key for {args.name!r} added to {args.file} (only its hash is kept: store the key now)", file=sys.stderr)
    elif args.keys_command == "revoke":
        revoke_key(args.file, args.name)
        print(f"key of {args.name!r} revoked; a running edge refuses it from its next request", file=sys.stderr)
    else:
        print("\n".join(ApiKeys(Path(args.file)).names()))
    return 0


def _status(args: argparse.Namespace) -> int:
    state = _read_state(args.workdir)
    if not state:
        print("down (no server started from this work directory)")
        return 3
    owner = _owner(state)
    if state.get("state") == "failed" and state.get("failure"):  # it gave up on purpose, saying why
        print(f"down: {state['failure']} (see {state['log']})")
        return 3
    if not _alive(owner):
        if owner != state["pid"] and _alive(state["pid"]):
            print(
                f"down (stopping): supervisor pid {owner} is gone (crashed or killed); tritonserver pid "
                f"{state['pid']} is draining and follows it; see {state['log']}"
            )
        else:
            print(f"down: pid {owner} is gone (crashed or killed); see {state['log']}")
        return 3
    degraded = state.get("degraded")  # past the restart budget: it keeps restarting with backoff
    if degraded and (state.get("state") != "degraded" or not _alive(state["pid"]) or state.get("up") is False):
        crash = state.get("last_crash") or {}
        print(f"down, degraded, restarting with backoff: {degraded} (last: {crash.get('cause')})")
        return 2
    if degraded:
        print(f"inferline serve status: warning: degraded: {degraded}", file=sys.stderr)
    elif state.get("state") != "ready" or not _alive(state["pid"]):
        crash = state.get("last_crash") or {}
        print(f"down, restarting: tritonserver pid {state['pid']} exited ({crash.get('cause', 'starting')})")
        return 2
    key = admin_key(args.workdir)
    try:
        loaded = _versions(state["http"], key)
        live = _live_pipelines(state, key)
    except Exception as exc:  # noqa: BLE001 - any failure to answer is "not answering"
        print(f"up but not answering: pid {state['pid']}, http {state['http']}: {exc}")
        return 2
    record = {**state, **live, "loaded": loaded}
    print(json.dumps(record, indent=2))
    _warn_unavailable(record, "status")
    return 0


def _apply(args: argparse.Namespace) -> int:
    """Serve the registry's current release on the running server (after `inferline export promote|rollback`)."""
    from inferline.release.registry import Registry, RegistryError
    from inferline.release.switch import ReleaseSwitchError, switch_release

    state = _read_state(args.workdir) or {}
    url = args.url or state.get("http")
    if not url:
        raise UserError(
            f"no server recorded in --workdir {args.workdir}; start one with `inferline serve up`, pass the work "
            "directory it was started with (--workdir), or its address with --url"
        )
    repository = Path(args.repository or state.get("repository") or "triton_models")
    pipeline = choose_published(repository, args.pipeline)
    target = Registry(repository, pipeline).current
    if target is None:
        raise UserError(
            f"pipeline {pipeline!r} has no current release in {repository}; promote one with `inferline export "
            f"promote N --pipeline {pipeline}` first"
        )
    try:
        result = switch_release(url, admin_key(args.workdir), repository, pipeline, target)
    except (ReleaseSwitchError, RegistryError) as exc:
        print(f"apply FAILED, the server keeps what it served: {exc}")
        return 1
    print(json.dumps({"pipeline": pipeline, "from": result.from_version, "to": target, "steps": result.steps}))
    return 0


def _down(args: argparse.Namespace) -> int:
    state = _read_state(args.workdir)
    pids = [] if not state else [p for p in dict.fromkeys((_owner(state), int(state["pid"]))) if _alive(p)]
    if not pids:
        print("not running")
        state_path(args.workdir).unlink(missing_ok=True)
        return 0
    # the supervisor drains the gateway, then stops tritonserver; a server whose supervisor died drains on SIGTERM
    os.kill(pids[0], signal.SIGTERM)
    if not _wait_gone(pids, args.timeout):
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    state_path(args.workdir).unlink(missing_ok=True)
    print(f"stopped pid {', '.join(map(str, pids))}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    state = _read_state(args.workdir) or {}
    url = args.url or state.get(args.protocol)
    if not url:
        raise UserError(
            f"no server recorded in --workdir {args.workdir}; start one with `inferline serve up`, pass the work "
            "directory it was started with (--workdir), or its address with --url"
        )
    repository = (
        Path(args.repository) if args.repository else Path(state["repository"]) if state.get("repository") else None
    )
    if args.pipeline:
        pipeline = args.pipeline
    elif repository is not None:
        pipeline = choose_published(repository, None)
    else:
        raise UserError(
            f"which pipeline does {url} serve? No server record in --workdir {args.workdir} names its repository; "
            "pass --pipeline NAME (and --repository DIR, where its releases are)"
        )
    spec = _published_spec(repository, pipeline)
    rows = _read_rows(Path(args.file))
    try:
        endpoints = [u.strip() for u in url.split(",") if u.strip()]
        with InferlineClient(endpoints, args.protocol, pipeline=pipeline, spec=spec, timeout_s=args.timeout) as client:
            p = client.predict(rows)
    except (InferlineError, ValueError) as exc:
        print(
            f"predict FAILED: {exc}; is the server up and serving {pipeline!r} at {url}? (`inferline serve status`, "
            "--url, --pipeline)",
            file=sys.stderr,
        )
        return 1
    id_col = client.spec.id_column.name if client.spec.id_column else None
    for i in range(len(p)):
        print(
            json.dumps(
                {
                    **({id_col: str(rows[id_col].iloc[i])} if id_col else {}),
                    "probabilities": [round(float(x), 6) for x in p.probabilities[i]],
                    "predicted_class": client.spec.classes[int(p.predicted_class[i])] if p.status[i] == "ok" else None,
                    "status": p.status[i],
                    "release": p.release[i],
                }
            )
        )
    return 0


def _published_spec(repository: Path | None, pipeline: str) -> PipelineSpec:
    """The spec ``serve predict`` encodes rows with: the current release's own snapshot (``spec.json``), so any
    published pipeline is callable wherever its module lives (or is not installed at all); without a repository,
    or for a release published before snapshots, the pipeline module by name."""
    from inferline.features.spec import SpecError, load_pipeline, read_spec
    from inferline.release.registry import Registry

    if repository is not None:
        files = Registry(repository, pipeline).release_files()  # RegistryError (a UserError) names what is wrong
        if "spec" in files:
            return read_spec(files["spec"])
    try:
        return load_pipeline(pipeline)
    except SpecError as exc:
        raise UserError(
            f"{exc}. `serve predict` reads a published pipeline's spec from its release: pass --repository DIR (the "
            "model repository the server serves)"
        ) from exc


def _read_rows(path: Path) -> pd.DataFrame:
    """The rows of a ``.jsonl`` (one JSON object a line) or ``.parquet`` file; at least one."""
    if path.suffix not in (".jsonl", ".parquet"):
        raise UserError(f"--file {str(path)!r} has suffix {path.suffix!r}; expected a .jsonl or a .parquet file")
    try:
        rows = pd.read_json(path, lines=True, dtype=False) if path.suffix == ".jsonl" else pd.read_parquet(path)
    except ValueError as exc:  # pandas' JSON reader and pyarrow's ArrowInvalid are ValueErrors
        kind = "JSON lines (one object a line)" if path.suffix == ".jsonl" else "Parquet"
        raise UserError(f"--file {str(path)!r} cannot be read as {kind}: {exc}; check the file") from exc
    if rows.empty:
        raise UserError(f"--file {str(path)!r} holds no rows; expected at least one row to score")
    return rows


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    common = Parser(add_help=False)
    common.add_argument(
        "--workdir", type=new_dir, default=".inferline", help="server state, logs and the generated admin key"
    )
    parser = Parser(prog=prog or "inferline serve", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = sub.add_parser(
        "up", parents=[common], help="start the local Triton server on 127.0.0.1 and wait until it is ready"
    )
    up.add_argument("--repository", default="triton_models", help="the Triton model repository to serve")
    up.add_argument("--http-port", type=port, default=8000, help="Triton's HTTP port (127.0.0.1)")
    up.add_argument("--grpc-port", type=port, default=8001, help="Triton's gRPC port (127.0.0.1)")
    up.add_argument("--metrics-port", type=port, default=8002, help="Triton's Prometheus metrics port (127.0.0.1)")
    up.add_argument("--timeout", type=positive_float, default=120.0, help="seconds to wait until the server is ready")
    up.add_argument(
        "--trace-rate",
        type=positive_int,
        default=100,
        help="trace 1 request in N into WORKDIR/trace/ for the monitor (the bundled Triton 2.51 can crash when "
        "tracing under sustained load, a bug fixed in 25.04: serve such load with --no-trace; see the README)",
    )
    up.add_argument(
        "--no-trace", action="store_true", help="no request traces (the monitor then has no server timings)"
    )
    up.add_argument("--exit-timeout", type=positive_int, default=10, help="seconds to drain in-flight requests on stop")
    up.add_argument("--gateway-port", type=port, default=8080, help="the validating edge (what callers should reach)")
    up.add_argument(
        "--bind",
        type=bind_address,
        default=None,
        metavar="HOST:PORT",
        help="where the edge listens, e.g. 0.0.0.0:8080 (overrides --gateway-port; Triton's ports stay on 127.0.0.1)",
    )
    up.add_argument("--no-gateway", action="store_true", help="serve Triton's ports only")
    up.add_argument(
        "--grpc-edge-port",
        type=port,
        default=8081,
        help="the gRPC edge, on the host of --bind (checks, keys, TLS and admission like the HTTP edge)",
    )
    up.add_argument("--no-grpc-edge", action="store_true", help="no gRPC edge (gRPC callers then have no way in)")
    up.add_argument(
        "--max-message-bytes",
        type=positive_int,
        default=GatewayLimits.max_message_bytes,
        help="largest gRPC message at the edge; larger: RESOURCE_EXHAUSTED",
    )
    up.add_argument(
        "--header-timeout",
        type=positive_float,
        default=GatewayLimits.header_timeout_s,
        help="seconds a connection may take to send a request's headers (gRPC: its handshake); slower: closed",
    )
    up.add_argument(
        "--max-connections",
        type=positive_int,
        default=GatewayLimits.max_connections,
        help="open HTTP connections at the edge; beyond: new ones are closed at once",
    )
    up.add_argument(
        "--max-inflight", type=positive_int, default=GatewayLimits.max_inflight, help="requests on Triton at once"
    )
    up.add_argument(
        "--max-queued", type=int, default=GatewayLimits.max_queued, help="requests waiting; beyond: 503 at once"
    )
    up.add_argument(
        "--max-body-bytes", type=positive_int, default=GatewayLimits.max_body_bytes, help="larger bodies: 413"
    )
    up.add_argument(
        "--body-timeout",
        type=positive_float,
        default=GatewayLimits.body_timeout_s,
        help="seconds a request body may take to arrive; slower: 408",
    )
    up.add_argument("--supervisor-metrics-port", type=port, default=8003, help="restarts, gateway counters")
    up.add_argument(
        "--max-restarts",
        type=int,
        default=5,
        help="the restart budget: crashes within 5 minutes before the service is 'degraded' (it keeps restarting, "
        "with backoff up to 30 s, and raises one critical alert)",
    )
    up.add_argument(
        "--probe-interval",
        type=float,
        default=1.0,
        help="seconds between hang probes (one real inference per pipeline through Triton's loopback port; 2 "
        "unanswered in a row within --probe-timeout each, with Triton finishing no inference meanwhile: the server "
        "is killed and restarted); 0 turns the probe off",
    )
    up.add_argument(
        "--probe-timeout",
        type=float,
        default=2.0,
        help="seconds a hang probe waits for its answer (a busy server that keeps finishing inferences is never "
        "counted as hung, however slow its answers)",
    )
    up.add_argument(
        "--monitor-url",
        default="http://127.0.0.1:9400",
        help="the monitor the edge sends samples of every answered inference to (where `inferline monitor run` "
        "listens by default; its ingest key is monitor.key in --workdir, which both read); '' sends none. A "
        "monitor that is down costs serving nothing: samples are dropped and counted",
    )
    up.add_argument(
        "--sample-rate",
        type=fraction,
        default=0.1,
        help="share of the edge's answered inferences sent to the monitor (0 sends none; 1, all). Each sampled "
        "inference costs the edge ~50 us of CPU to decode and post (benchmarks/edge_sampling_bench.py): 1 costs "
        "~10-20 %% of throughput where the CPU is the limit, 0.1 about 1-2 %%",
    )
    up.add_argument("--foreground", action="store_true", help="stay attached; Ctrl-C drains and stops")
    up.add_argument(
        "--api-keys",
        type=existing_file,
        default=None,
        metavar="FILE",
        help="callers need a key from FILE at the edge (Authorization: Bearer KEY); FILE is re-read when it changes",
    )
    up.add_argument(
        "--tls-cert", type=existing_file, default=None, help="PEM certificate (chain): the edge serves HTTPS"
    )
    up.add_argument("--tls-key", type=existing_file, default=None, help="PEM private key of --tls-cert")
    up.add_argument(
        "--tls-client-ca",
        type=existing_file,
        default=None,
        help="mutual TLS: callers need a certificate this CA signed",
    )
    up.set_defaults(func=_up)
    keys = sub.add_parser("keys", help="caller API keys for the edge: add, revoke, list (a file of hashes)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    for name, helptext in (("add", "create a key for caller NAME and print it once"), ("revoke", "remove NAME's key")):
        k = keys_sub.add_parser(name, help=helptext)
        k.add_argument("name", help="the caller's name (letters, digits, '_', '.', '@', '-')")
        k.add_argument("--file", type=Path, required=True, help="the keys file `serve up --api-keys` reads")
        k.set_defaults(func=_keys)
    kl = keys_sub.add_parser("list", help="the callers that have a key")
    kl.add_argument("--file", type=existing_file, required=True, help="the keys file")
    kl.set_defaults(func=_keys)
    st = sub.add_parser("status", parents=[common], help="is the server up, and which versions are loaded")
    st.set_defaults(func=_status)
    down = sub.add_parser("down", parents=[common], help="stop the server (drains in-flight requests first)")
    down.add_argument("--timeout", type=positive_float, default=20.0, help="seconds to wait for a drain before SIGKILL")
    down.set_defaults(func=_down)
    ap = sub.add_parser(
        "apply",
        parents=[common],
        help="switch the running server to the registry's current release (no failed requests)",
    )
    ap.add_argument("--pipeline", default=None, help="pipeline to switch (default: the repository's only pipeline)")
    ap.add_argument("--repository", default=None, help="model repository (default: the running server's)")
    ap.add_argument("--url", default=None, help="Triton HTTP host:port (default: the server started by `up`)")
    ap.set_defaults(func=_apply)
    pr = sub.add_parser("predict", parents=[common], help="score rows from a JSON-lines or Parquet file")
    pr.add_argument("--file", type=existing_file, required=True, help="rows to score: a .jsonl or .parquet file")
    pr.add_argument("--protocol", choices=["http", "grpc"], default="http", help="the protocol to call the server in")
    pr.add_argument(
        "--pipeline",
        default=None,
        help="pipeline to call (default: the only pipeline of the repository of the server started by `up`)",
    )
    pr.add_argument(
        "--url",
        help="host:port (default: the server started by `up`, for --protocol); several, comma-separated, for "
        "replicas: each request goes to the next one in service, and fails over to another",
    )
    pr.add_argument(
        "--repository",
        default=None,
        help="model repository whose current release's spec snapshot encodes the rows (default: the repository of "
        "the server started by `up`)",
    )
    pr.add_argument("--timeout", type=positive_float, default=10.0, help="seconds before a request is abandoned")
    pr.set_defaults(func=_predict)
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = build_parser(prog)
    args = list(sys.argv[1:] if argv is None else argv)
    parser.set_defaults(argv=args)  # `up` starts the same command line again, detached
    return run(parser, args)


if __name__ == "__main__":
    sys.exit(main())
