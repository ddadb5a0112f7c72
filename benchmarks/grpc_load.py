"""A closed-loop gRPC load generator for a Triton model: ``concurrency`` asyncio workers, one row per request, the
rows of a Parquet pool sent in turn (every request's tensors built before the load starts)."""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import numpy as np
import pandas as pd
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aio

from inferline.core.command import Parser, positive_float, positive_int
from inferline.features.spec import load_pipeline
from inferline.serving.client import encode_rows


async def _main(args: argparse.Namespace) -> dict[str, float]:
    spec = load_pipeline(args.pipeline)
    arrays = encode_rows(pd.read_parquet(args.rows), spec)
    pool: list[list[grpcclient.InferInput]] = []
    for i in range(len(next(iter(arrays.values())))):
        inputs = []
        for c in spec.input_columns:
            value = arrays[c.name][i : i + 1]
            inp = grpcclient.InferInput(c.name, list(value.shape), c.triton_dtype)
            inp.set_data_from_numpy(value)
            inputs.append(inp)
        pool.append(inputs)
    client = aio.InferenceServerClient(args.url)
    latencies: list[float] = []
    errors = 0
    sent = 0
    cpu0 = time.process_time()
    deadline = time.perf_counter() + args.duration

    async def worker() -> None:
        nonlocal errors, sent
        while time.perf_counter() < deadline:
            inputs = pool[sent % len(pool)]
            sent += 1
            t0 = time.perf_counter()
            try:
                await client.infer(args.model, inputs)
                latencies.append(time.perf_counter() - t0)
            except Exception:  # noqa: BLE001 - counted, as wrk counts its errors
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    await client.close()
    ms = np.array(latencies) * 1e3 if latencies else np.zeros(1)
    return {
        "requests": len(latencies),
        "duration_s": elapsed,
        "errors": errors,
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "loadgen_cpu_s": cpu,  # during the load only, not the pool's preparation
    }


def main() -> None:
    parser = Parser(prog="python -m inferline.benchmarks.grpc_load", description=__doc__)
    parser.add_argument("--url", required=True, help="Triton gRPC host:port")
    parser.add_argument("--rows", required=True, help="Parquet file of raw rows, sent one per request in turn")
    parser.add_argument("--model", required=True, help="the served model (named after its pipeline)")
    parser.add_argument("--pipeline", default=None, help="the pipeline whose spec encodes the row (default: --model)")
    parser.add_argument("--concurrency", type=positive_int, default=1, help="requests in flight at once")
    parser.add_argument("--duration", type=positive_float, default=5.0, help="seconds of load")
    args = parser.parse_args()
    args.pipeline = args.pipeline or args.model
    print(json.dumps(asyncio.run(_main(args))))


if __name__ == "__main__":
    main()
