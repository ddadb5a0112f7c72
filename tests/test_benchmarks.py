"""The benchmark report's arithmetic: ratios are paired per repetition, goals are judged on the median."""

from __future__ import annotations

from pathlib import Path

import pytest

from inferline.benchmarks.batch_bench import bench_batch
from inferline.benchmarks.report import markdown, summary, write_results
from inferline.benchmarks.suite import goals

from .conftest import Published


def _run(rps: float, p50: float, p99: float, per_cpu: float) -> dict[str, float]:
    return {
        "throughput_rps": rps,
        "p50_ms": p50,
        "p95_ms": p99,
        "p99_ms": p99,
        "requests": rps,
        "errors": 0,
        "server_cpu_s": 1.0,
        "loadgen_cpu_s": 0.5,
        "inferences_per_server_cpu_s": per_cpu,
    }


def _serving() -> dict:
    # three interleaved repetitions per stack and concurrency
    triton = {c: [_run(1000.0 * k, 2.0, 10.0, 800.0) for k in (1, 2, 3)] for c in ("1", "16", "64")}
    fastapi = {c: [_run(200.0 * k, 1.0, 20.0, 100.0) for k in (1, 1, 1)] for c in ("1", "16", "64")}
    nobatch = {c: [_run(500.0, 2.0, 10.0, 400.0) for _ in range(3)] for c in ("1", "16", "64")}
    raw = {"triton_batching_http": triton, "fastapi_torch_http": fastapi, "triton_nobatch_http": nobatch}
    return {
        "stacks": {k: k for k in raw},
        "raw": raw,
        "summary": {
            n: {c: {k: summary([r[k] for r in runs]) for k in runs[0]} for c, runs in pc.items()}
            for n, pc in raw.items()
        },
    }


def test_goals_pair_repetitions_and_judge_the_median() -> None:
    inprocess = {
        "per_call_us": {"onnxruntime": {"1": [30.0, 40.0, 50.0]}, "torch_eager": {"1": [100.0] * 3}},
        "notes": {},
    }
    rows = {g["goal"]: g for g in goals({"serving": _serving(), "inprocess": inprocess})}
    thr = rows["throughput >= 5x FastAPI at c=16"]
    assert (thr["min"], thr["median"], thr["max"]) == (5.0, 10.0, 15.0) and thr["met"]
    assert rows["p99 no worse than FastAPI at c=64"]["median"] == pytest.approx(0.5)
    assert rows["p99 no worse than FastAPI at c=64"]["met"]
    p50 = rows["p50 at c=1 no worse than FastAPI"]
    assert p50["median"] == pytest.approx(2.0) and not p50["met"]
    assert rows["inferences per server CPU-second >= 5x FastAPI at c=64"]["median"] == pytest.approx(8.0)
    assert rows["dynamic batching >= 2.5x no batching at c=16"]["median"] == pytest.approx(4.0)
    ort = rows["onnxruntime batch-1 latency <= 0.5x PyTorch eager"]
    assert ort["median"] == pytest.approx(0.4) and ort["met"]


def test_results_are_written_in_three_forms(tmp_path: Path) -> None:
    results = {
        "created_at": "2026-11-25T00:00:00",
        "mode": "quick",
        "wall_s": 1.0,
        "machine": {"cpu": "test cpu", "cores": 2, "memory_gib": 1.0, "gpu": "none", "python": "3.11"},
        "serving": _serving(),
        "gpu": "not measured",
        "inprocess": {"per_call_us": {"onnxruntime": {"1": [1.0]}, "torch_eager": {"1": [2.0]}}, "notes": {}},
    }
    write_results(results, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"results.json", "results.md", "serving.png", "inprocess.png"}
    text = markdown(results)
    assert "test cpu, 2 cores" in text
    assert "| triton_batching_http | 16 | 2000 [1000-3000] |" in text


def test_batch_benchmark_runs_every_side_on_the_same_rows(published: Published, tmp_path: Path) -> None:
    result = bench_batch(20_000, 1, tmp_path, published.repository, 2)
    assert set(result["seconds"]) == {"dask_2_workers", "dask_1_worker", "single_process"}
    assert result["max_abs_diff_between_sides"] <= 1e-6  # the same rows, release and kernels on every side
    seconds = result["seconds"]
    assert all(len(v) == 1 and v[0] > 0 for v in seconds.values())
    # rows/s ratios, paired per repetition: the same rows in less time is a higher ratio
    single = [s / d for d, s in zip(seconds["dask_2_workers"], seconds["single_process"], strict=True)]
    one = [o / d for d, o in zip(seconds["dask_2_workers"], seconds["dask_1_worker"], strict=True)]
    assert result["ratio_dask2_over_single"] == pytest.approx(single)
    assert result["ratio_dask2_over_dask1"] == pytest.approx(one)
    assert result["rows_per_s"]["single_process"] == pytest.approx([20_000 / seconds["single_process"][0]])

    rows = {g["goal"]: g for g in goals({"batch": result})}
    expected = {  # goal -> (its ratio's name, the measured ratios, target)
        "Dask job (2 workers x 1 thread) >= 0.8x a single-process pandas + onnxruntime loop": (
            "dask_2_workers / single_process (rows/s)",
            single,
            0.8,
        ),
        "Dask job: 2 workers >= 1.6x 1 worker": ("dask_2_workers / dask_1_worker (rows/s)", one, 1.6),
    }
    assert set(rows) == set(expected)
    for name, (ratio, measured, target) in expected.items():
        g = rows[name]
        assert (g["ratio"], g["target"], g["higher_is_better"]) == (ratio, target, True)
        assert g["median"] == pytest.approx(summary(measured)["median"])
        assert (g["min"], g["max"]) == pytest.approx((min(measured), max(measured)))
        assert g["met"] is (g["median"] >= target), "met is judged on the median against the goal's target"
