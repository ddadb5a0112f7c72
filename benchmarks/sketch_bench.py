"""The monitor's latency sketch (``monitor.sketch.LogHistogram``, written here) against the ``ddsketch`` package
(DataDog's DDSketch, the reference implementation of the same idea), side by side in one run on the same values:
the cost of adding a window of latencies, of merging the per-slice sketches of a window, the quantile error against
numpy's exact quantiles, and the size of a serialized sketch. Both are configured for 1 % relative error.

The question it answers (issue 18): keep the hand-written sketch only if a side-by-side measurement says it is
better, and by how much. The monitor adds latencies in batches (every trace file, every tap payload) and exports
Prometheus histogram buckets from the sketch, which needs cumulative counts at fixed bounds."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from inferline.core.sketch import LogHistogram

__all__ = ["bench_sketch"]

QUANTILES = (0.5, 0.9, 0.99, 0.999)


def _timed(fn: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def bench_sketch(values_per_slice: int = 20_000, slices: int = 50, reps: int = 3, seed: int = 0) -> dict[str, Any]:
    from ddsketch import DDSketch

    rng = np.random.default_rng(seed)
    # latencies in seconds: a lognormal body around 5 ms with a heavy tail
    data = [np.exp(rng.normal(np.log(0.005), 0.6, values_per_slice)) * (1 + (rng.random(values_per_slice) < 0.01) * 20)
            for _ in range(slices)]  # fmt: skip
    exact = np.concatenate(data)
    truth = {q: float(np.quantile(exact, q, method="inverted_cdf")) for q in QUANTILES}

    def ours() -> tuple[float, float, Any]:
        add_s, parts = _timed(lambda: [_add_ours(d) for d in data])
        merge_s, merged = _timed(lambda: _merge_ours(parts))
        return add_s, merge_s, merged

    def theirs() -> tuple[float, float, Any]:
        add_s, parts = _timed(lambda: [_add_theirs(DDSketch(relative_accuracy=0.01), d) for d in data])
        merge_s, merged = _timed(lambda: _merge_theirs(DDSketch(relative_accuracy=0.01), parts))
        return add_s, merge_s, merged

    runs: dict[str, dict[str, list[float]]] = {
        "inferline": {"add": [], "merge": []},
        "ddsketch": {"add": [], "merge": []},
    }
    merged: dict[str, Any] = {}
    for _ in range(reps):  # interleaved
        for name, side in (("inferline", ours), ("ddsketch", theirs)):
            add_s, merge_s, merged[name] = side()
            runs[name]["add"].append(add_s)
            runs[name]["merge"].append(merge_s)
    errors = {
        "inferline": {q: abs(merged["inferline"].quantile(q) / truth[q] - 1) for q in QUANTILES},
        "ddsketch": {q: abs(merged["ddsketch"].get_quantile_value(q) / truth[q] - 1) for q in QUANTILES},
    }
    n = values_per_slice * slices
    return {
        "values": n,
        "slices": slices,
        "relative_accuracy": 0.01,
        "ns_per_value_added": {k: [s / n * 1e9 for s in v["add"]] for k, v in runs.items()},
        "merge_s": {k: v["merge"] for k, v in runs.items()},
        "quantile_relative_error": {k: {str(q): e for q, e in v.items()} for k, v in errors.items()},
        "serialized_bytes": {
            "inferline": len(json.dumps(merged["inferline"].as_dict())),
            "ddsketch": _ddsketch_bytes(merged["ddsketch"]),
        },
        "add_speedup_over_ddsketch": [
            b / a for a, b in zip(runs["inferline"]["add"], runs["ddsketch"]["add"], strict=True)
        ],
    }


def _add_ours(values: np.ndarray) -> LogHistogram:
    h = LogHistogram()
    h.add_many(values)
    return h


def _merge_ours(parts: list[LogHistogram]) -> LogHistogram:
    total = LogHistogram()
    for p in parts:
        total += p
    return total


def _add_theirs(sketch: Any, values: np.ndarray) -> Any:
    for v in values.tolist():  # DDSketch adds one value at a time
        sketch.add(v)
    return sketch


def _merge_theirs(total: Any, parts: list[Any]) -> Any:
    for p in parts:
        total.merge(p)
    return total


def _ddsketch_bytes(sketch: Any) -> int | None:
    try:
        from ddsketch.pb.proto import DDSketchProto

        return len(DDSketchProto.to_proto(sketch).SerializeToString())
    except Exception:  # noqa: BLE001 - the protobuf extra is optional in ddsketch
        return None
