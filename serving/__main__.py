"""python -m serving up|status|down|predict: run the local Triton server and talk to it."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from serving.client import InferlineClient, InferlineError
from serving.secrets import admin_key
from serving.server import ServerConfig, ServerError, TritonServer, state_path


def _read_state(workdir: Path) -> dict[str, Any] | None:
    path = state_path(workdir)
    return json.loads(path.read_text()) if path.exists() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def _versions(url: str, key: str) -> list[dict[str, Any]]:
    client = InferlineClient(url, "http", admin_key=key)
    try:
        return [m for m in client.repository_index() if m.get("state") == "READY"]
    finally:
        client.close()


def _up(args: argparse.Namespace) -> int:
    state = _read_state(args.workdir)
    if state and _alive(state["pid"]):
        print(f"already running (pid {state['pid']}, http {state['http']}); `python -m serving down` first")
        return 1
    config = ServerConfig(
        repository=Path(args.repository),
        workdir=Path(args.workdir),
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        trace_dir=None if args.no_trace else Path(args.workdir) / "trace",
        trace_rate=args.trace_rate,
        trace_log_frequency=10,
    )
    server = TritonServer(config)
    t0 = time.monotonic()
    try:
        server.start(timeout_s=args.timeout, detach=not args.foreground)
    except ServerError as exc:
        print(f"serving up FAILED: {exc}", file=sys.stderr)
        server.stop()
        return 1
    info = server.save_record()
    print(
        json.dumps(
            {
                **info,
                "ready_s": round(time.monotonic() - t0, 2),
                "loaded": _versions(config.http_url, server.admin_key),
            },
            indent=2,
        )
    )
    if args.foreground:
        assert server.process is not None  # started above
        signal.signal(signal.SIGTERM, lambda *_: server.stop())
        try:
            server.process.wait()
        except KeyboardInterrupt:
            server.stop()
        state_path(args.workdir).unlink(missing_ok=True)
    return 0


def _status(args: argparse.Namespace) -> int:
    state = _read_state(args.workdir)
    if not state:
        print("down (no server started from this work directory)")
        return 3
    if not _alive(state["pid"]):
        print(f"down: pid {state['pid']} is gone (crashed or killed); see {state['log']}")
        return 3
    try:
        loaded = _versions(state["http"], admin_key(args.workdir))
    except Exception as exc:  # noqa: BLE001
        print(f"up but not answering: pid {state['pid']}, http {state['http']}: {exc}")
        return 2
    print(json.dumps({**state, "loaded": loaded}, indent=2))
    return 0


def _apply(args: argparse.Namespace) -> int:
    """Serve the registry's current release on the running server (after `python -m export promote|rollback`)."""
    from export.registry import Registry, RegistryError
    from serving.control import ReleaseSwitchError, switch_release

    state = _read_state(args.workdir) or {}
    url = args.url or state.get("http")
    if not url:
        print(f"no server recorded in {args.workdir}; start one with `python -m serving up` or pass --url")
        return 3
    repository = Path(args.repository or state.get("repository") or "triton_models")
    target = Registry(repository, args.pipeline).current
    if target is None:
        print(f"pipeline {args.pipeline!r} has no current release in {repository}")
        return 1
    try:
        result = switch_release(url, admin_key(args.workdir), repository, args.pipeline, target)
    except (ReleaseSwitchError, RegistryError) as exc:
        print(f"apply FAILED, the server keeps what it served: {exc}")
        return 1
    print(json.dumps({"pipeline": args.pipeline, "from": result.from_version, "to": target, "steps": result.steps}))
    return 0


def _down(args: argparse.Namespace) -> int:
    state = _read_state(args.workdir)
    if not state or not _alive(state["pid"]):
        print("not running")
        state_path(args.workdir).unlink(missing_ok=True)
        return 0
    os.kill(state["pid"], signal.SIGTERM)
    deadline = time.monotonic() + args.timeout
    while _alive(state["pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)  # polling for the process to exit
    if _alive(state["pid"]):
        os.kill(state["pid"], signal.SIGKILL)
    state_path(args.workdir).unlink(missing_ok=True)
    print(f"stopped pid {state['pid']}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    state = _read_state(args.workdir) or {}
    url = args.url or state.get(args.protocol)
    if not url:
        print("no server: give --url or start one with `python -m serving up`", file=sys.stderr)
        return 1
    path = Path(args.file)
    rows = pd.read_json(path, lines=True, dtype=False) if path.suffix == ".jsonl" else pd.read_parquet(path)
    try:
        with InferlineClient(url, args.protocol, pipeline=args.pipeline, timeout_s=args.timeout) as client:
            p = client.predict(rows)
    except (InferlineError, ValueError) as exc:
        print(f"predict FAILED: {exc}", file=sys.stderr)
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


def _demo(args: argparse.Namespace) -> int:
    from serving.demo import print_summary, run_demo

    summary = run_demo(
        workdir=Path(args.workdir), repository=Path(args.repository), rows=args.rows, keep_serving=args.keep_serving
    )
    print_summary(summary)
    worst = max(d["max_abs_diff"] for d in summary["served"].values())
    return 0 if worst <= 1e-5 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__)
    parser.add_argument("--workdir", default=".inferline", help="server state, logs and the generated admin key")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the local Triton server on 127.0.0.1 and wait until it is ready")
    up.add_argument("--repository", default="triton_models")
    up.add_argument("--http-port", type=int, default=8000)
    up.add_argument("--grpc-port", type=int, default=8001)
    up.add_argument("--metrics-port", type=int, default=8002)
    up.add_argument("--timeout", type=float, default=120.0)
    up.add_argument(
        "--trace-rate",
        type=int,
        default=100,
        help="trace 1 request in N into WORKDIR/trace/ for the monitor (tracing all stalled Triton 2.51 under load)",
    )
    up.add_argument(
        "--no-trace", action="store_true", help="no request traces (the monitor then has no server timings)"
    )
    up.add_argument("--foreground", action="store_true", help="stay attached; Ctrl-C drains and stops")
    up.set_defaults(func=_up)
    st = sub.add_parser("status", help="is the server up, and which versions are loaded")
    st.set_defaults(func=_status)
    down = sub.add_parser("down", help="stop the server (drains in-flight requests first)")
    down.add_argument("--timeout", type=float, default=20.0)
    down.set_defaults(func=_down)
    ap = sub.add_parser(
        "apply", help="switch the running server to the registry's current release (no failed requests)"
    )
    ap.add_argument("--pipeline", default="fraud")
    ap.add_argument("--repository", default=None, help="default: the running server's")
    ap.add_argument("--url", default=None, help="host:port (default: the server started by `up`)")
    ap.set_defaults(func=_apply)
    pr = sub.add_parser("predict", help="score rows from a JSON-lines or Parquet file")
    pr.add_argument("--file", required=True)
    pr.add_argument("--protocol", choices=["http", "grpc"], default="http")
    pr.add_argument("--pipeline", default="fraud")
    pr.add_argument("--url", help="host:port (default: the server started by `up`)")
    pr.add_argument("--timeout", type=float, default=10.0)
    pr.set_defaults(func=_predict)
    dm = sub.add_parser("demo", help="the whole flow end to end on the embedded defaults, then a summary")
    dm.add_argument("--repository", default="triton_models")
    dm.add_argument("--rows", type=int, default=200_000)
    dm.add_argument("--keep-serving", action="store_true", help="leave the server running after the summary")
    dm.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
