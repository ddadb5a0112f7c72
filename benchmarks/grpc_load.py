"""A closed-loop gRPC load generator for a Triton model: ``concurrency`` asyncio workers, one row per request."""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import numpy as np
import pandas as pd
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aio

from inferline.command import Parser, positive_float, positive_int
from inferline.features.spec import load_pipeline
from inferline.serving.client import encode_rows


async def _main(args: argparse.Namespace) -> dict[str, float]:
    spec = load_pipeline(args.pipeline)
    arrays = encode_rows(pd.read_parquet(args.rows).head(1), spec)
    inputs = []
    for c in spec.input_columns:
        inp = grpcclient.InferInput(c.name, list(arrays[c.name].shape), c.triton_dtype)
        inp.set_data_from_numpy(arrays[c.name])
        inputs.append(inp)
    client = aio.InferenceServerClient(args.url)
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + args.duration

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            try:
                await client.infer(args.model, inputs)
                latencies.append(time.perf_counter() - t0)
            except Exception:  # noqa: BLE001 - counted, as wrk counts its errors
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    elapsed = time.perf_counter() - started
    await client.close()
    ms = np.array(latencies) * 1e3 if latencies else np.zeros(1)
    return {
        "requests": len(latencies),
        "duration_s": elapsed,
        "errors": errors,
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def main() -> None:
    parser = Parser(prog="python -m inferline.benchmarks.grpc_load", description=__doc__)
    parser.add_argument("--url", required=True, help="Triton gRPC host:port")
    parser.add_argument("--rows", required=True, help="Parquet file; its first row is sent")
    parser.add_argument("--model", required=True, help="the served model (named after its pipeline)")
    parser.add_argument("--pipeline", default=None, help="the pipeline whose spec encodes the row (default: --model)")
    parser.add_argument("--concurrency", type=positive_int, default=1, help="requests in flight at once")
    parser.add_argument("--duration", type=positive_float, default=5.0, help="seconds of load")
    args = parser.parse_args()
    args.pipeline = args.pipeline or args.model
    print(json.dumps(asyncio.run(_main(args))))


if __name__ == "__main__":
    main()
