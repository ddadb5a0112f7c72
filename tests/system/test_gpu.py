"""GPU paths: the same kernels on cuDF/cupy and onnxruntime's CUDA provider (skipped without an NVIDIA GPU), and
`make gpu-check` (benchmarks/gpu_check.py): on a GPU it passes; without one it says which checks did not run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from inferline.benchmarks.gpu_check_kernels import compare_arrays, compare_kernels
from inferline.benchmarks.gpu_check_result import EXIT_NOT_RUN, EXIT_OK
from inferline.benchmarks.gpu_check_training import MODEL_PARAMS, training_step
from inferline.features import kernels, rules
from inferline.features.pipelines import fraud
from inferline.features.spec import ModelParams
from inferline.features.state import compute_features, fit_state
from inferline.release.runtime import onnx_session
from inferline.training import model

from .conftest import Published

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


@pytest.mark.gpu
def test_cudf_kernels_match_pandas() -> None:
    from inferline.features.backend import get_backend

    frame = fraud.generate(20_000, seed=5)
    state = fit_state(frame, fraud.SPEC)
    cpu = compute_features(frame, fraud.SPEC, state)
    gpu_backend = get_backend("cudf")
    gpu = compute_features(gpu_backend.from_pandas(frame), fraud.SPEC, state)
    np.testing.assert_allclose(gpu_backend.to_numpy(gpu.numeric), cpu.numeric, atol=1e-5)
    np.testing.assert_array_equal(gpu_backend.to_numpy(gpu.categorical), cpu.categorical)


@pytest.mark.gpu
def test_onnxruntime_cuda_matches_cpu(published: Published) -> None:
    path = published.repository / "fraud_model" / "2" / "model.onnx"
    cuda = onnx_session(path, device="cuda")
    assert cuda.get_providers()[0] == "CUDAExecutionProvider"
    cpu = onnx_session(path, device="cpu")
    rng = np.random.default_rng(0)
    feeds = {
        "numeric": rng.normal(size=(512, 8)).astype(np.float32),
        "categorical": rng.integers(0, 3, size=(512, 4)).astype(np.int64),
    }
    np.testing.assert_allclose(cuda.run(None, feeds)[0], cpu.run(None, feeds)[0], atol=1e-5)


@pytest.mark.gpu
def test_batch_job_on_cudf_matches_pandas(published: Published, tmp_path: Path) -> None:
    from inferline.batch import JobConfig, run_job

    fraud.generate(20_000, seed=12).to_parquet(tmp_path / "in.parquet")
    reports, scores = {}, {}
    for backend in ("pandas", "cudf"):
        config = JobConfig(
            inputs=[str(tmp_path / "in.parquet")],
            output=tmp_path / backend,
            model="fraud:2",
            repository=published.repository,
            workers=1,
            backend=backend,  # type: ignore[arg-type]
            progress=False,
        )
        reports[backend] = run_job(config)
        scores[backend] = pd.read_parquet(tmp_path / backend).set_index("transaction_id").sort_index()
    assert reports["cudf"].cluster["kind"] == "LocalCUDACluster"
    assert reports["cudf"].rows_predicted == reports["pandas"].rows_predicted
    cols = [f"probability_{c}" for c in fraud.SPEC.classes]
    np.testing.assert_allclose(scores["cudf"][cols].to_numpy(), scores["pandas"][cols].to_numpy(), atol=1e-5)


@pytest.mark.gpu
def test_gpu_check_passes_on_gpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=400
    )
    assert result.returncode == EXIT_OK, result.stdout + result.stderr
    report = json.loads(out.read_text())
    assert {name: c["status"] for name, c in report["checks"].items()} == dict.fromkeys(
        ("kernels", "training", "nvml"), "passed"
    )


def _run_hiding_pandas(out: Path) -> subprocess.CompletedProcess[str]:
    """The script in a fresh interpreter where pandas cannot be imported (the lent GPU machine is assumed to have
    none), run as a file, so it imports this checkout from the repository root, not the installed package."""
    wrapper = (
        "import runpy, sys; sys.modules['pandas'] = None; "
        f"sys.argv = [{str(SCRIPT)!r}, '--out', {str(out)!r}]; runpy.run_path({str(SCRIPT)!r}, run_name='__main__')"
    )
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    return subprocess.run(
        [sys.executable, "-c", wrapper], cwd=REPO, capture_output=True, text=True, env=env, timeout=120
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here: test_gpu_check_passes_on_gpu covers it")
def test_gpu_check_without_gpu_names_what_did_not_run(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    result = _run_hiding_pandas(out)
    output = result.stdout + result.stderr
    assert result.returncode == EXIT_NOT_RUN, output
    assert "Traceback" not in output
    report = json.loads(out.read_text())
    assert report["pandas"] == "hidden" and report["inferline_from"].startswith("the checkout")
    assert report["not_run"] == ["kernels", "training", "nvml"] and not report["failed"] and not report["passed"]
    for i, (name, check) in enumerate(report["checks"].items(), 1):
        assert check["status"] == "not_run" and check["reason"], name
        assert f"[NOT RUN] {i}. {check['title']}" in result.stdout
        assert check["reason"] in result.stdout
        # the inferline modules each check needs imported without pandas before the check found no GPU
        assert check["imported"].startswith("inferline."), name
    assert "no CUDA device" in report["checks"]["training"]["reason"]
    assert "NVML state" in report["checks"]["nvml"]["reason"]
    assert "NOT SHOWN: 3 of 3 checks could not run here" in result.stdout


def test_gpu_check_comparisons_on_numpy() -> None:
    """The comparison code itself, with numpy standing in for cupy (and the CPU for CUDA)."""
    out = compare_kernels(kernels, rules, np, lambda: None, n=20_000, repeats=1)
    assert {r["name"] for r in out["rows"]} >= set(kernels.KERNELS)
    assert all(r["passed"] and r["max_abs_diff"] == 0 for r in out["rows"]), out["rows"]
    assert out["uncovered_rule_ops"] == []
    assert out["null_counts"]["timestamps_before_epoch"] > 0 and out["null_counts"]["text_none"] > 0

    a = np.array([1.0, np.nan, np.inf, 0.0])
    assert compare_arrays(a, a.copy())["passed"]
    assert compare_arrays(a, a * (1 + 1e-13))["passed"]
    off = compare_arrays(a, np.array([1.0 + 1e-9, np.nan, np.inf, 0.0]))
    assert not off["passed"] and off["mismatches"] == 1 and off["max_abs_diff"] == pytest.approx(1e-9)
    assert not compare_arrays(a, np.array([1.0, 0.0, np.inf, 0.0]))["passed"]  # NaN vs a number
    assert not compare_arrays(a, a.astype(np.float32))["passed"]  # dtype
    assert not compare_arrays(np.array([1, 2]), np.array([1, 3]))["passed"]

    assert {k: getattr(ModelParams(), k) for k in MODEL_PARAMS} == MODEL_PARAMS
    step = training_step(torch, model, "cpu", steps=30)
    assert step["loss_decreased"] and step["forward_allclose"] and step["predicted_equal"]
