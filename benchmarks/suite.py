"""The benchmark suite: every figure a median over interleaved repetitions (with min and max), every ratio naming
both sides and computed per repetition (the two sides ran back to back, so machine noise hits both)."""

from __future__ import annotations

import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from tqdm import tqdm

from inferline.benchmarks.batch_bench import bench_batch
from inferline.benchmarks.drift_bench import bench_drift
from inferline.benchmarks.edge_bench import EDGE_PAIRS, bench_edge
from inferline.benchmarks.features_bench import bench_features
from inferline.benchmarks.inprocess import bench_inprocess
from inferline.benchmarks.load import run_grpc, run_wrk
from inferline.benchmarks.monitor_bench import bench_monitor_overhead
from inferline.benchmarks.report import summary, write_results
from inferline.benchmarks.sketch_bench import bench_sketch
from inferline.benchmarks.stacks import POOL_SEED, Stack, build_release, start_stacks
from inferline.benchmarks.validation_bench import bench_validation

__all__ = ["Settings", "comparisons", "goals", "run_suite"]


@dataclass
class Settings:
    quick: bool = False
    concurrency: tuple[int, ...] = (1, 4, 16, 64)
    reps: int = 3
    duration_s: float = 10.0
    warmup_s: float = 2.0
    grpc: bool = True

    @classmethod
    def for_mode(cls, quick: bool) -> Settings:
        return cls(quick=True, concurrency=(1, 16, 64), duration_s=4.0, warmup_s=1.0) if quick else cls()


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": "none",
        "python": platform.python_version(),
        "os": platform.platform(),
    }


def _measure(stack: Stack, concurrency: int, duration_s: float, row_file: Path) -> dict[str, Any]:
    cpu0, edge0 = stack.server_cpu_s(), stack.edge_cpu_s()
    if stack.bodies is not None:
        r = run_wrk(stack.url, stack.bodies, concurrency, duration_s)
    else:
        r = run_grpc(stack.url, row_file, concurrency, duration_s, model="fraud")  # build_release's pipeline
    server_cpu = stack.server_cpu_s() - cpu0
    edge_cpu = stack.edge_cpu_s() - edge0
    return {
        "throughput_rps": r.throughput,
        "p50_ms": r.p50_ms,
        "p95_ms": r.p95_ms,
        "p99_ms": r.p99_ms,
        "requests": r.requests,
        "errors": r.errors,
        "server_cpu_s": server_cpu,
        "loadgen_cpu_s": r.loadgen_cpu_s,
        "inferences_per_server_cpu_s": r.requests / server_cpu if server_cpu > 0 else 0.0,
        # the edge's own processes only (0 for a stack that is not an edge)
        "edge_cpu_us_per_request": edge_cpu / r.requests * 1e6 if stack.edge_pids and r.requests else 0.0,
    }


def bench_serving(settings: Settings, workdir: Path) -> tuple[dict[str, Any], Any]:
    release = build_release(workdir)
    stacks = start_stacks(release, workdir, grpc=settings.grpc)
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {
        s.name: {str(c): [] for c in settings.concurrency} for s in stacks
    }
    try:
        for s in stacks:  # warm every stack (first requests load code paths and caches)
            _measure(s, 16, settings.warmup_s, release.pool_file)
        total = settings.reps * len(settings.concurrency) * len(stacks)
        with tqdm(total=total, desc="serving", unit="run", disable=None) as bar:
            for _ in range(settings.reps):
                for c in settings.concurrency:
                    for s in stacks:
                        raw[s.name][str(c)].append(_measure(s, c, settings.duration_s, release.pool_file))
                        bar.update()
    finally:
        for s in stacks:
            if s.stop_fn is not None:
                s.stop_fn()
    result = {
        "stacks": {s.name: s.description for s in stacks},
        "pool": {"rows": len(release.pool), "seed": POOL_SEED, "unique_descriptions": True},
        "raw": raw,
        "summary": {
            name: {c: {k: summary([r[k] for r in runs]) for k in runs[0]} for c, runs in per_c.items()}
            for name, per_c in raw.items()
        },
    }
    return result, release


# the stacks the serving goals name
# OWN is FastAPI as a user deploys it here (one uvicorn worker per core); OWN_1 the one-worker row beside it
INFERLINE, FLOOR, OWN, OWN_1 = "triton_batching_http", "floor_http", "fastapi_own_http", "fastapi_own_1worker_http"
FEATURES, NOBATCH, GATEWAY = "fastapi_inferline_features_http", "triton_nobatch_http", "gateway_http"


def _ratio(raw: dict[str, Any], a: str, b: str, c: int, key: str) -> list[float]:
    """Per repetition: a's ``key`` divided by b's, at concurrency ``c`` (empty when either side did not run)."""
    if str(c) not in raw.get(a, {}) or str(c) not in raw.get(b, {}):
        return []
    return [x[key] / y[key] if y[key] else float("inf") for x, y in zip(raw[a][str(c)], raw[b][str(c)], strict=True)]


def _errors(raw: dict[str, Any], stacks: tuple[str, ...], c: int) -> int:
    """Failed requests (non-2xx, timeouts, socket errors) in the runs a serving ratio is made of."""
    return int(sum(r["errors"] for s in stacks for r in raw.get(s, {}).get(str(c), [])))


def _goal(
    goal: str, sides: str, values: list[float], target: float, higher_is_better: bool, errors: int = 0
) -> dict[str, Any]:
    """Judged on the median; never met when it was not measured or when a run behind it had failed requests."""
    s = summary(values) if values else {"median": float("nan"), "min": float("nan"), "max": float("nan")}
    met = bool(values) and (s["median"] >= target if higher_is_better else s["median"] <= target)
    return {
        "goal": goal,
        "ratio": sides,
        **s,
        "target": target,
        "higher_is_better": higher_is_better,
        "met": bool(met and errors == 0),
        "errors": errors,
        "measured": bool(values),
    }


# (goal, a, b, concurrency, figure, unit, target): the ratio a / b per repetition, higher is better for each
SERVING_GOALS: tuple[tuple[str, str, str, int, str, str, float], ...] = (
    ("throughput >= 0.6x the floor at c=16", INFERLINE, FLOOR, 16, "throughput_rps", "req/s", 0.6),
    ("throughput >= 0.6x the floor at c=64", INFERLINE, FLOOR, 64, "throughput_rps", "req/s", 0.6),
    ("p50 at c=1 no worse than FastAPI own", OWN, INFERLINE, 1, "p50_ms", "p50", 1.0),
    ("throughput >= 5x FastAPI own at c=16", INFERLINE, OWN, 16, "throughput_rps", "req/s", 5.0),
    ("p99 no worse than FastAPI own at c=16", OWN, INFERLINE, 16, "p99_ms", "p99", 1.0),
    ("throughput >= 5x FastAPI own at c=64", INFERLINE, OWN, 64, "throughput_rps", "req/s", 5.0),
    ("p99 no worse than FastAPI own at c=64", OWN, INFERLINE, 64, "p99_ms", "p99", 1.0),
    (
        "inferences per server CPU-second >= 5x FastAPI own at c=64",
        INFERLINE,
        OWN,
        64,
        "inferences_per_server_cpu_s",
        "inferences/CPU-s",
        5.0,
    ),
    ("dynamic batching >= 2.5x no batching at c=16", INFERLINE, NOBATCH, 16, "throughput_rps", "req/s", 2.5),
)


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The goals of every part that ran, each judged on the median of its per-repetition ratios."""
    rows: list[dict[str, Any]] = []
    if "serving" in results:
        raw = results["serving"]["raw"]
        for goal, a, b, c, key, unit, target in SERVING_GOALS:
            rows.append(
                _goal(goal, f"{a} / {b} ({unit})", _ratio(raw, a, b, c, key), target, True, _errors(raw, (a, b), c))
            )
    if "inprocess" in results:
        per = results["inprocess"]["per_call_us"]
        rows.append(
            _goal(
                "onnxruntime batch-1 latency <= 0.5x PyTorch eager",
                "onnxruntime / torch_eager (us per call, batch 1)",
                [a / b for a, b in zip(per["onnxruntime"]["1"], per["torch_eager"]["1"], strict=True)],
                0.5,
                False,
            )
        )
    if "edge" in results:
        raw = results["edge"]["raw"]
        edge_goals = (
            ("costs at most 10% of throughput", "throughput_rps", "req/s", 0.9, True),
            ("p99 at most 1.3x direct", "p99_ms", "p99", 1.3, False),
        )
        for a, b in EDGE_PAIRS:
            for c in (16, 64):
                for what, key, unit, target, higher in edge_goals:
                    ratio = _ratio(raw, a, b, c, key)
                    errors = _errors(raw, (a, b), c)
                    rows.append(_goal(f"{a}: {what} at c={c}", f"{a} / {b} ({unit})", ratio, target, higher, errors))
    if "validation" in results:
        rows.append(
            _goal(
                "dataset validation >= 1.0x plain pandera lazy on the same schema",
                "inferline validate_frame / pandera lazy (rows/s)",
                results["validation"]["ratio_inferline_over_pandera"],
                1.0,
                True,
            )
        )
    if "batch" in results:
        b = results["batch"]
        rows.append(
            _goal(
                "Dask job (2 workers x 1 thread) >= 0.8x a single-process pandas + onnxruntime loop",
                "dask_2_workers / single_process (rows/s)",
                b["ratio_dask2_over_single"],
                0.8,
                True,
            )
        )
        rows.append(
            _goal(
                "Dask job: 2 workers >= 1.6x 1 worker",
                "dask_2_workers / dask_1_worker (rows/s)",
                b["ratio_dask2_over_dask1"],
                1.6,
                True,
            )
        )
    if "monitor" in results:
        drift, overhead = results["monitor"]["drift"], results["monitor"]["overhead"]
        if drift["speedup_over_evidently"]:
            rows.append(
                _goal(
                    "drift per window >= 100x faster than Evidently's DataDriftPreset (reference precomputed)",
                    "evidently / inferline (seconds per window)",
                    drift["speedup_over_evidently"],
                    100.0,
                    True,
                )
            )
        rows.append(
            _goal(
                "serving throughput with the monitor on loses < 2% (on / off >= 0.98)",
                "triton with traces + monitor / triton alone (req/s, c=16)",
                overhead["ratio_on_over_off"],
                0.98,
                True,
            )
        )
    return rows


def comparisons(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Ratios reported without a target (median [min-max] of the per-repetition ratios, every concurrency that
    ran): the gateway's cost over Triton HTTP direct, every inferline path and baseline against the floor, and the
    two FastAPI baselines against each other."""
    if "serving" not in results:
        return []
    raw = results["serving"]["raw"]
    pairs = [
        (GATEWAY, INFERLINE, "throughput_rps", "req/s"),
        (GATEWAY, FLOOR, "throughput_rps", "req/s"),
        (INFERLINE, FLOOR, "throughput_rps", "req/s"),
        (NOBATCH, FLOOR, "throughput_rps", "req/s"),
        (INFERLINE, FEATURES, "throughput_rps", "req/s"),
        (OWN, FLOOR, "throughput_rps", "req/s"),
        (OWN, OWN_1, "throughput_rps", "req/s"),
        (INFERLINE, OWN_1, "throughput_rps", "req/s"),
        (FEATURES, OWN_1, "throughput_rps", "req/s"),
        (GATEWAY, INFERLINE, "p99_ms", "p99"),
    ]
    rows = []
    for a, b, key, unit in pairs:
        for c in sorted({int(c) for c in raw.get(a, {})} & {int(c) for c in raw.get(b, {})}):
            values = _ratio(raw, a, b, c, key)
            errors = _errors(raw, (a, b), c)
            rows.append({"ratio": f"{a} / {b} ({unit})", "concurrency": c, **summary(values), "errors": errors})
    return rows


def run_suite(settings: Settings, out_dir: Path, only: set[str]) -> dict[str, Any]:
    started = time.perf_counter()
    results: dict[str, Any] = {
        "created_at": datetime.now(UTC).isoformat(),
        "mode": "quick" if settings.quick else "full",
        "settings": asdict(settings),
        "machine": machine(),
    }
    with tempfile.TemporaryDirectory(prefix="inferline-bench-") as tmp:
        workdir = Path(tmp)
        release = None
        if "serving" in only:
            results["serving"], release = bench_serving(settings, workdir)
        if "inprocess" in only:
            if release is None:
                release = build_release(workdir)
            onnx_path = release.repository / "fraud_model" / str(release.version) / "model.onnx"
            results["inprocess"] = bench_inprocess(
                release.run_dir,
                onnx_path,
                (1, 64, 1024),
                settings.reps,
                0.3 if settings.quick else 1.0,
                compile_model=not settings.quick,
            )
        if "edge" in only:
            if release is None:
                release = build_release(workdir)
            concurrency = tuple(c for c in settings.concurrency if c in (1, 16, 64)) or (1, 16, 64)
            results["edge"] = bench_edge(
                release, workdir, concurrency, settings.reps, settings.duration_s, settings.warmup_s
            )
        if "validation" in only:
            results["validation"] = bench_validation(1_000_000, settings.reps)
        if "batch" in only:
            if release is None:
                release = build_release(workdir)
            rows = 500_000 if settings.quick else 2_000_000
            results["batch"] = bench_batch(rows, settings.reps, workdir, release.repository, release.version)
        if "monitor" in only:
            if release is None:
                release = build_release(workdir)
            results["monitor"] = {
                "drift": bench_drift(200_000 if settings.quick else 1_000_000, settings.reps),
                # the machine's run-to-run noise is larger than the effect: more repetitions than elsewhere
                "overhead": bench_monitor_overhead(release, workdir, max(settings.reps, 6), settings.duration_s),
            }
        if "sketch" in only:
            results["sketch"] = bench_sketch(reps=settings.reps)
        if "features" in only:
            results["features"] = bench_features(100_000 if settings.quick else 400_000, settings.reps)
    results["goals"] = goals(results)
    results["comparisons"] = comparisons(results)
    results["gpu"] = "not measured: no GPU on this machine (Triton KIND_GPU, onnxruntime CUDA/TensorRT, cuDF kernels)"
    results["wall_s"] = round(time.perf_counter() - started, 1)
    write_results(results, out_dir)
    return results
