"""``inferline serve up`` and ``serve down``: the service started in the foreground (the supervisor, in this
process) or detached (the same command line in a session of its own, its output in the work directory, waited for
until its record says ready), and stopped (SIGTERM to the supervisor, which drains, then SIGKILL to what is left
after the timeout).

Apart from the command line so that ``serve`` parses and dispatches only; the checks made before anything starts
(ports free and distinct, a published release, TLS files that load) live here with the start they guard.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from inferline.core.command import check_port_free
from inferline.core.errors import UserError
from inferline.core.processes import alive, stop_group, wait_gone
from inferline.core.secrets import admin_key
from inferline.release.registry import choose_published, published_pipelines, registered_pipelines
from inferline.serving.edge_limits import GatewayLimits
from inferline.serving.server import ServerConfig, state_path
from inferline.serving.status import print_ready, read_record, service_pid
from inferline.serving.supervisor import Supervisor, event_loop, exit_cause
from inferline.serving.supervisor_config import SupervisorConfig

__all__ = ["UP_PORT_FLAGS", "down", "exit_or_running", "foreground_command", "supervisor_config", "up"]


# every port `serve up` listens on (a test or a benchmark starting one on free ports passes each)
UP_PORT_FLAGS = (
    "--http-port",
    "--grpc-port",
    "--metrics-port",
    "--gateway-port",
    "--grpc-edge-port",
    "--supervisor-metrics-port",
)


def check_ports(args: argparse.Namespace) -> None:
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


def check_repository(repository: Path) -> None:
    if not published_pipelines(repository):
        if not repository.is_dir() or not registered_pipelines(repository):
            choose_published(repository, None)  # raises the error for a missing or an empty repository
        raise UserError(
            f"{repository} has registries but no current release; promote one with `inferline export promote N "
            f"--repository {repository}` or publish one with `inferline export publish`"
        )


def check_tls(args: argparse.Namespace) -> None:
    """--tls-cert and --tls-key come together, --tls-client-ca needs them, and the files load (before anything
    starts)."""
    from inferline.serving.edge_tls import tls_context

    if bool(args.tls_cert) != bool(args.tls_key) or (args.tls_client_ca and not args.tls_cert):
        raise UserError("--tls-cert and --tls-key go together (and --tls-client-ca needs both); give both or none")
    if args.tls_cert:
        try:
            tls_context(
                Path(args.tls_cert), Path(args.tls_key), Path(args.tls_client_ca) if args.tls_client_ca else None
            )
        except ValueError as exc:
            raise UserError(str(exc)) from None


def supervisor_config(args: argparse.Namespace) -> SupervisorConfig:
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


def up(args: argparse.Namespace) -> int:
    state = read_record(args.workdir)
    if state and alive(service_pid(state)):
        print(f"already running (pid {state['pid']}, http {state['http']}); `inferline serve down` first")
        return 1
    if state and alive(state["pid"]) and not wait_gone([state["pid"]], args.exit_timeout + 10):
        print(
            f"the previous tritonserver (pid {state['pid']}) outlived its supervisor and still holds its ports; "
            "run `inferline serve down` to stop it, then `up` again"
        )
        return 1
    check_ports(args)
    check_repository(Path(args.repository))
    check_tls(args)
    started = time.monotonic()
    key = admin_key(args.workdir)
    if args.foreground:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        supervisor = Supervisor(supervisor_config(args))
        with asyncio.Runner(loop_factory=event_loop()) as runner:
            return runner.run(supervisor.run(on_ready=lambda record: print_ready(record, started, key)))
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
        state = read_record(args.workdir)
        if child.poll() is not None or (
            state and state.get("supervisor_pid") == child.pid and state["state"] != "starting"
        ):
            break
        time.sleep(0.1)  # polling the supervisor's state file
    state = read_record(args.workdir)
    if child.poll() is not None or not state or state.get("state") != "ready":
        if state and state.get("failure"):  # it came up and loaded nothing: Triton's reasons, not a log tail
            print(f"serving up FAILED: {state['failure']} (server log: {state.get('log')})", file=sys.stderr)
        else:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
            print(
                f"serving up FAILED (supervisor {exit_or_running(child)}); last lines of {log_path}:\n{tail}",
                file=sys.stderr,
            )
        stop_group(child, grace_s=30)  # a session of its own: the group is the supervisor
        return 1
    print_ready(state, started, key)
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


def down(args: argparse.Namespace) -> int:
    state = read_record(args.workdir)
    pids = [] if not state else [p for p in dict.fromkeys((service_pid(state), int(state["pid"]))) if alive(p)]
    if not pids:
        print("not running")
        state_path(args.workdir).unlink(missing_ok=True)
        return 0
    # the supervisor drains the gateway, then stops tritonserver; a server whose supervisor died drains on SIGTERM
    os.kill(pids[0], signal.SIGTERM)
    if not wait_gone(pids, args.timeout):
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    state_path(args.workdir).unlink(missing_ok=True)
    print(f"stopped pid {', '.join(map(str, pids))}")
    return 0
