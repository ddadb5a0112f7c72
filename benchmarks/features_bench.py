"""The compiled contract's speed: batch features in rows/s and GB/s next to numpy's memory bandwidth, and the
request path (wire tensors -> validated features) per call, next to a numpy copy of the same request, in one run.

Requests are drawn from a pool of distinct rows whose free text never repeats (each description carries a unique
suffix), so no remembered verdict flatters a figure; categorical values repeat as they do in real traffic.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from inferline.benchmarks.stacks import payload_pool
from inferline.features.backend import gpu_available
from inferline.features.contract import compile_contract
from inferline.features.pipelines import fraud
from inferline.features.request import SCALAR_ROWS
from inferline.features.state import fit_state
from inferline.features.wire import encode_rows

__all__ = ["GOALS_US", "bench_features"]

# the goals for the request path: per call at 1 row, per row at 256 rows
GOALS_US = {"1": 50.0, "256": 3.0}


def _raw_bytes(frame: pd.DataFrame) -> int:
    """Bytes of raw input the kernels read: 8 per number or timestamp, UTF-8 length per string."""
    total = 0
    for f in fraud.SPEC.features:
        s = frame[f.source]
        if s.dtype.kind in "fiuM" or isinstance(s.dtype, pd.DatetimeTZDtype):
            total += 8 * len(s)
        else:
            total += int(s.fillna("").str.encode("utf-8").str.len().sum())
    return total


def _per_call(fn: Any, calls: list[Any]) -> float:
    t0 = time.perf_counter()
    for c in calls:
        fn(c)
    return (time.perf_counter() - t0) / len(calls)


def bench_features(rows: int, reps: int) -> dict[str, Any]:
    frame = fraud.generate(rows, seed=3)
    state = fit_state(frame, fraud.SPEC)
    contract = compile_contract(fraud.SPEC, state)
    nbytes = _raw_bytes(frame)
    src = np.ones(32 * 1024 * 1024, dtype=np.float64)  # 256 MiB
    dst = np.empty_like(src)
    np.copyto(dst, src)  # touch the destination once: page faults are not bandwidth
    kernel_s, copy_s = [], []
    for _ in range(reps):  # interleaved
        t0 = time.perf_counter()
        contract.features(frame)
        kernel_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        np.copyto(dst, src)
        copy_s.append(time.perf_counter() - t0)

    pool = payload_pool()  # the serving benchmark's pool: distinct rows, free text that never repeats
    wire = {k: v.reshape(-1) for k, v in encode_rows(pool, fraud.SPEC).items()}
    request: dict[str, dict[str, list[float]]] = {}
    for n in (1, 256):
        # distinct rows in every call: the pool is cut into consecutive requests
        calls = [{k: v[i : i + n] for k, v in wire.items()} for i in range(0, len(pool) - n + 1, n)]
        served = compile_contract(fraud.SPEC, state)  # what a loaded Triton model holds, warmed by its first calls
        for c in calls[:8]:
            served.featurize(c)
        samples: dict[str, list[float]] = {"contract_us_per_call": [], "numpy_copy_us_per_call": []}
        for _ in range(reps):  # interleaved: the contract, then a numpy copy of the same requests
            samples["contract_us_per_call"].append(_per_call(served.featurize, calls) * 1e6)
            samples["numpy_copy_us_per_call"].append(
                _per_call(lambda c: {k: np.array(v, copy=True) for k, v in c.items()}, calls) * 1e6
            )
        samples["contract_us_per_row"] = [t / n for t in samples["contract_us_per_call"]]
        samples["ratio_contract_over_copy"] = [
            a / b for a, b in zip(samples["contract_us_per_call"], samples["numpy_copy_us_per_call"], strict=True)
        ]
        samples["calls"] = [float(len(calls))]
        request[str(n)] = samples
    return {
        "rows": rows,
        "raw_input_bytes": nbytes,
        "pandas_kernels_s": kernel_s,
        "pandas_rows_per_s": [rows / t for t in kernel_s],
        "pandas_gb_per_s": [nbytes / t / 1e9 for t in kernel_s],
        "numpy_copy_gb_per_s": [2 * src.nbytes / t / 1e9 for t in copy_s],  # read + write
        "request_path": request,
        "request_pool_rows": len(pool),
        "scalar_path_up_to_rows": SCALAR_ROWS,
        "goals_us": GOALS_US,
        "cudf": "measured" if gpu_available() else "not measured: no GPU on this machine",
    }
