"""GPU paths: the same kernels on cuDF/cupy and onnxruntime's CUDA provider. Skipped without an NVIDIA GPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from inferline.export.runtime import onnx_session
from inferline.features.pipelines import fraud
from inferline.features.state import compute_features, fit_state

from .conftest import Published

pytestmark = pytest.mark.gpu


def test_cudf_kernels_match_pandas() -> None:
    from inferline.features.backend import get_backend

    frame = fraud.generate(20_000, seed=5)
    state = fit_state(frame, fraud.SPEC)
    cpu = compute_features(frame, fraud.SPEC, state)
    gpu_backend = get_backend("cudf")
    gpu = compute_features(gpu_backend.from_pandas(frame), fraud.SPEC, state)
    np.testing.assert_allclose(gpu_backend.to_numpy(gpu.numeric), cpu.numeric, atol=1e-5)
    np.testing.assert_array_equal(gpu_backend.to_numpy(gpu.categorical), cpu.categorical)


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
