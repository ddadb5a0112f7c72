"""The edge's cost: one server started as users start it (`inferline serve up`: supervisor, HTTP and gRPC edges,
tritonserver), called directly on Triton's loopback ports and through the edges, interleaved, at the same
concurrencies. The only difference between a direct row and its edge row is the edge (the same Triton process,
the same release, the same payload pool), so the ratio is the edge's whole cost: its checks, its admission and the
extra hop. On this 2-core machine the edge, the load generator and Triton share the cores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tqdm import tqdm

from inferline.benchmarks.stacks import Release, Stack, _gateway, _terminate, triton_body, write_bodies

__all__ = ["EDGE_PAIRS", "bench_edge"]

PIPELINE = "fraud"
# (edge stack, direct stack): the rows of the comparison
EDGE_PAIRS = (("edge_http", "direct_http"), ("edge_grpc", "direct_grpc"))


def edge_stacks(release: Release, workdir: Path) -> tuple[list[Stack], Any]:
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
            "the HTTP edge (aiohttp on uvloop) in front of the same Triton",
            "http",
            f"http://{state['gateway']}{infer}",
            bodies,
            supervisor.pid,
        ),
        Stack("direct_grpc", "Triton's gRPC port, direct (loopback)", "grpc", state["grpc"], None, triton_pid),
        Stack(
            "edge_grpc",
            "the gRPC edge (grpc.aio) in front of the same Triton",
            "grpc",
            state["grpc_edge"],
            None,
            supervisor.pid,
        ),
    ]
    return stacks, supervisor


def bench_edge(
    release: Release, workdir: Path, concurrency: tuple[int, ...], reps: int, duration_s: float, warmup_s: float
) -> dict[str, Any]:
    from inferline.benchmarks.suite import _measure, _ratio, summary

    stacks, supervisor = edge_stacks(release, workdir)
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
        _terminate(supervisor)
    ratios = {
        f"{a} / {b} ({unit})": {str(c): summary(_ratio(raw, a, b, c, key)) for c in concurrency}
        for a, b in EDGE_PAIRS
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
