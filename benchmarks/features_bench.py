"""Feature kernels in rows/s and GB/s, next to numpy's own memory bandwidth measured in the same run."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from inferline.features.backend import gpu_available
from inferline.features.pipelines import fraud
from inferline.features.request import featurize_request
from inferline.features.state import compute_features, fit_state
from inferline.features.validation import RuleVerdicts
from inferline.serving.client import encode_rows

__all__ = ["bench_features"]


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


def _best_of(fn: Any, reps: int) -> list[float]:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def bench_features(rows: int, reps: int) -> dict[str, Any]:
    frame = fraud.generate(rows, seed=3)
    state = fit_state(frame, fraud.SPEC)
    nbytes = _raw_bytes(frame)
    src = np.ones(32 * 1024 * 1024, dtype=np.float64)  # 256 MiB
    dst = np.empty_like(src)
    np.copyto(dst, src)  # touch the destination once: page faults are not bandwidth
    kernel_s, copy_s = [], []
    for _ in range(reps):  # interleaved
        kernel_s += _best_of(lambda: compute_features(frame, fraud.SPEC, state), 1)
        copy_s += _best_of(lambda: np.copyto(dst, src), 1)
    request: dict[str, list[float]] = {}
    for n in (1, 64):
        arrays = {k: v.reshape(-1) for k, v in encode_rows(frame.head(n), fraud.SPEC).items()}
        verdicts = RuleVerdicts()  # what a loaded preprocess model holds: warmed by the first call
        featurize_request(arrays, fraud.SPEC, state, verdicts)
        calls = 200 if n == 1 else 50
        request[str(n)] = [
            t / calls * 1e6
            for t in _best_of(
                lambda arrays=arrays, calls=calls, verdicts=verdicts: [
                    featurize_request(arrays, fraud.SPEC, state, verdicts) for _ in range(calls)
                ],
                reps,
            )
        ]
    return {
        "rows": rows,
        "raw_input_bytes": nbytes,
        "pandas_kernels_s": kernel_s,
        "pandas_rows_per_s": [rows / t for t in kernel_s],
        "pandas_gb_per_s": [nbytes / t / 1e9 for t in kernel_s],
        "numpy_copy_gb_per_s": [2 * src.nbytes / t / 1e9 for t in copy_s],  # read + write
        "request_path_us_per_call": request,
        "cudf": "measured" if gpu_available() else "not measured: no GPU on this machine",
    }
