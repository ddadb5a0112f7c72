"""inferline serve up|status|down|apply|predict: run the local Triton server behind its edge and talk to it.

``up`` serves every pipeline of the repository whose current release loads; one that does not load is named, with
Triton's own reason, on stderr and under ``unavailable`` in the JSON record it prints, and ``up`` still exits 0.
Only when no pipeline loads does it exit 1, saying why for each. ``status`` reads the same from the running server.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from inferline.core.command import (
    Parser,
    bind_address,
    existing_file,
    fraction,
    new_dir,
    port,
    positive_float,
    positive_int,
    run,
)
from inferline.serving import daemon, remote, status
from inferline.serving.edge_limits import GatewayLimits


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
        "tracing under sustained load, a bug fixed in 25.04: serve such load with --no-trace; see "
        "docs/explanation/benchmarks.md)",
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
    up.set_defaults(func=daemon.up)
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
    st.set_defaults(func=status.status)
    down = sub.add_parser("down", parents=[common], help="stop the server (drains in-flight requests first)")
    down.add_argument("--timeout", type=positive_float, default=20.0, help="seconds to wait for a drain before SIGKILL")
    down.set_defaults(func=daemon.down)
    ap = sub.add_parser(
        "apply",
        parents=[common],
        help="switch the running server to the registry's current release (no failed requests)",
    )
    ap.add_argument("--pipeline", default=None, help="pipeline to switch (default: the repository's only pipeline)")
    ap.add_argument("--repository", default=None, help="model repository (default: the running server's)")
    ap.add_argument("--url", default=None, help="Triton HTTP host:port (default: the server started by `up`)")
    ap.set_defaults(func=remote.apply)
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
    pr.set_defaults(func=remote.predict)
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = build_parser(prog)
    args = list(sys.argv[1:] if argv is None else argv)
    parser.set_defaults(argv=args)  # `up` starts the same command line again, detached
    return run(parser, args)


if __name__ == "__main__":
    sys.exit(main())
