"""The edge's cost: one server started as users start it (`inferline serve up`: supervisor, HTTP and gRPC edges,
tritonserver), called directly on Triton's loopback ports and through the edges, interleaved, at the same
concurrencies. The only difference between a direct row and its edge row is the edge (the same Triton process,
the same release, the same payload pool), so the ratio is the edge's whole cost: its checks, its admission and the
extra hop. On this 2-core machine the edge, the load generator and Triton share the cores."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psutil
from tqdm import tqdm

from inferline.benchmarks.stacks import (
    Release,
    Stack,
    _gateway,
    _wait_ready,
    triton_body,
    write_bodies,
)
from inferline.core.processes import die_with_parent, free_port, stop_process

__all__ = ["EDGE_PAIRS", "NGINX_CONF", "bench_edge", "nginx_edge"]

PIPELINE = "fraud"
# (edge stack, direct stack): the rows of the comparison
EDGE_PAIRS = (
    ("edge_http", "direct_http"),
    ("nginx_proxy_http", "direct_http"),
    ("nginx_njs_http", "direct_http"),
    ("edge_grpc", "direct_grpc"),
)
NJS_MODULE = "/usr/lib/nginx/modules/ngx_http_js_module.so"

# Two designs on one nginx 1.22 (one worker, keep-alive upstream, as ENVIRONMENT.md's floor was measured): a plain
# reverse proxy that checks nothing (the floor any edge starts from), and the allow-list edge written in njs
# (benchmarks/nginx_edge.js, a prototype: JSON bodies only).
NGINX_CONF = """
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
load_module {njs};
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    client_max_body_size 2m;
    client_body_buffer_size 2m;
    client_body_in_single_buffer on;
    subrequest_output_buffer_size 1m;
    keepalive_requests 1000000;
    upstream triton {{ server {triton}; keepalive 64; }}
    js_path {js_dir};
    js_import edge from nginx_edge.js;
    server {{
        listen 127.0.0.1:{proxy_port};
        location / {{
            proxy_pass http://triton;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Accept-Encoding "";
        }}
    }}
    server {{
        listen 127.0.0.1:{njs_port};
        location ~ ^/v2/models/[A-Za-z0-9_.-]+/infer$ {{ js_content edge.infer; }}
        location /triton/ {{
            internal;
            proxy_pass http://triton/;
            proxy_http_version 1.1;
            proxy_pass_request_headers off;
            proxy_set_header Connection "";
            proxy_set_header Content-Type application/json;
        }}
    }}
}}
"""


def nginx_edge(triton_http: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str, str] | None:
    """Debian's nginx with njs in front of ``triton_http``: (process, plain proxy URL, njs edge URL); None (and a
    note on stderr) where nginx or its js module is not installed (`apt-get install nginx libnginx-mod-http-js`)."""
    nginx = shutil.which("nginx")
    if nginx is None or not Path(NJS_MODULE).exists():
        print("edge: nginx or libnginx-mod-http-js is not installed; the nginx designs are not measured")
        return None
    work = workdir / "nginx"
    work.mkdir(parents=True, exist_ok=True)
    proxy_port, njs_port = free_port(), free_port()
    conf = work / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            work=work,
            njs=NJS_MODULE,
            triton=triton_http,
            js_dir=Path(__file__).parent,
            proxy_port=proxy_port,
            njs_port=njs_port,
        )
    )
    with open(work / "stdout.log", "ab") as out:
        proc = subprocess.Popen(
            [nginx, "-p", str(work), "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
        )
    proxy, njs = f"127.0.0.1:{proxy_port}", f"127.0.0.1:{njs_port}"
    _wait_ready(f"http://{proxy}/v2/health/ready", proc, f"nginx (log: {work / 'error.log'})", 30)
    return proc, proxy, njs


def edge_stacks(release: Release, workdir: Path) -> tuple[list[Stack], list[Any]]:
    supervisor, _ = _gateway(release.repository, workdir / "edge")
    state = json.loads((workdir / "edge" / "serving" / "server.json").read_text())
    bodies = write_bodies(workdir / "bodies" / "edge.jsonl", release.pool, triton_body)
    infer = f"/v2/models/{PIPELINE}/infer"
    triton_pid = int(state["pid"])
    stacks = [
        Stack(
            "direct_http",
            "Triton's HTTP port, direct (loopback)",
            "http",
            f"http://{state['http']}{infer}",
            bodies,
            triton_pid,
        ),
        Stack(
            "edge_http",
            "the HTTP edge (aiohttp on uvloop, httptools keep-alive client) in front of the same Triton",
            "http",
            f"http://{state['gateway']}{infer}",
            bodies,
            supervisor.pid,
            edge_pids=(supervisor.pid,),
        ),
        Stack("direct_grpc", "Triton's gRPC port, direct (loopback)", "grpc", state["grpc"], None, triton_pid),
        Stack(
            "edge_grpc",
            "the gRPC edge (grpc.aio) in front of the same Triton",
            "grpc",
            state["grpc_edge"],
            None,
            supervisor.pid,
            edge_pids=(supervisor.pid,),
        ),
    ]
    stops: list[Any] = [supervisor]
    nginx = nginx_edge(state["http"], workdir)
    if nginx is not None:
        proc, proxy, njs = nginx
        stops.insert(0, proc)
        pids = (*(p.pid for p in psutil.Process(proc.pid).children()), proc.pid)
        stacks[2:2] = [
            Stack(
                "nginx_proxy_http",
                "nginx 1.22 reverse proxy (1 worker, keep-alive upstream), no checks: the floor of any edge",
                "http",
                f"http://{proxy}{infer}",
                bodies,
                proc.pid,
                edge_pids=pids,
            ),
            Stack(
                "nginx_njs_http",
                "nginx 1.22 + njs allow-list edge (benchmarks/nginx_edge.js; prototype: JSON bodies, no keys, no "
                "admission queue, no metrics)",
                "http",
                f"http://{njs}{infer}",
                bodies,
                proc.pid,
                edge_pids=pids,
            ),
        ]
    return stacks, stops


def bench_edge(
    release: Release, workdir: Path, concurrency: tuple[int, ...], reps: int, duration_s: float, warmup_s: float
) -> dict[str, Any]:
    from inferline.benchmarks.suite import _measure, _ratio, summary

    stacks, stops = edge_stacks(release, workdir)
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {s.name: {str(c): [] for c in concurrency} for s in stacks}
    try:
        for s in stacks:
            _measure(s, 16, warmup_s, release.pool_file)
        with tqdm(total=reps * len(concurrency) * len(stacks), desc="edge", unit="run", disable=None) as bar:
            for _ in range(reps):
                for c in concurrency:
                    for s in stacks:
                        raw[s.name][str(c)].append(_measure(s, c, duration_s, release.pool_file))
                        bar.update()
    finally:
        for proc in stops:
            stop_process(proc)
    ratios = {
        f"{a} / {b} ({unit})": {str(c): summary(_ratio(raw, a, b, c, key)) for c in concurrency}
        for a, b in EDGE_PAIRS
        if a in raw
        for key, unit in (("throughput_rps", "req/s"), ("p99_ms", "p99"))
    }
    return {
        "stacks": {s.name: s.description for s in stacks},
        "raw": raw,
        "summary": {
            name: {c: {k: summary([r[k] for r in runs]) for k in runs[0]} for c, runs in per_c.items()}
            for name, per_c in raw.items()
        },
        "ratios": ratios,
    }
