"""Batch inference: the Dask job (``batch.run_job``: 2 workers x 1 thread, and 1 worker) against the loop a user
would write without it (one process: read each file with pandas, validate, features, onnxruntime, write), over the
same Parquet files, the same release and the same output format. Wall time includes everything a user waits for:
planning, cluster start-up, writing and committing."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from inferline.batch import JobConfig, prediction_frame, run_job, score_frame
from inferline.core.files import atomic_write_parquet
from inferline.features.pipelines import fraud
from inferline.features.state import STATE_FILE, FeatureState
from inferline.features.validation import validate_frame
from inferline.release.runtime import onnx_session

__all__ = ["bench_batch"]

FILE_ROWS = 250_000
ROW_GROUP = 125_000
PARTITION_ROWS = JobConfig.partition_rows  # the command line's default: 250,000 rows, two row groups


def _write_inputs(root: Path, rows: int) -> list[Path]:
    paths = []
    for i in range(-(-rows // FILE_ROWS)):
        n = min(FILE_ROWS, rows - i * FILE_ROWS)
        path = root / f"tx-{i:03d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pandas(fraud.generate(n, seed=900 + i), preserve_index=False)
        pq.write_table(table, path, row_group_size=ROW_GROUP)
        paths.append(path)
    return paths


def _single_process(paths: list[Path], model: Path, state_path: Path, out: Path, release: str) -> int:
    """The baseline: a plain loop in this process, one onnxruntime thread, the same library calls."""
    spec = fraud.SPEC
    state = FeatureState.load(state_path)
    session = onnx_session(model, threads=1)
    rows = 0
    for path in paths:
        raw = pd.read_parquet(path).drop(columns=[spec.label])
        result = validate_frame(raw, spec, source=str(path), include_label=False)
        outputs = score_frame(result.valid, spec, state, session, "pandas")
        frame = prediction_frame(result.valid, spec, outputs, release)
        atomic_write_parquet(out / f"{path.stem}.parquet", frame)
        if result.rows_quarantined:
            atomic_write_parquet(out / "_quarantine" / f"{path.stem}.parquet", result.quarantine)
        rows += result.rows_in
    return rows


def bench_batch(rows: int, reps: int, workdir: Path, repository: Path, version: int) -> dict[str, Any]:
    inputs = workdir / "batch_in"
    paths = _write_inputs(inputs, rows)
    model = repository / "fraud_model" / str(version) / "model.onnx"
    state = repository / "fraud_preprocess" / str(version) / STATE_FILE
    release = f"fraud:{version}"

    def dask(workers: int) -> Any:
        def job(out: Path) -> int:
            config = JobConfig(
                inputs=[str(inputs)],
                output=out,
                model=release,
                repository=repository,
                workers=workers,
                partition_rows=PARTITION_ROWS,
                progress=False,
            )
            return run_job(config).rows_in

        return job

    sides = {
        "dask_2_workers": dask(2),
        "dask_1_worker": dask(1),
        "single_process": lambda out: _single_process(paths, model, state, out, release),
    }
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    check: dict[str, Any] = {}
    with tqdm(total=reps * len(sides), desc="batch", unit="run", disable=None) as bar:
        for rep in range(reps):  # interleaved: machine noise hits every side
            for name, side in sides.items():
                out = workdir / f"batch_out_{name}"
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir(parents=True)
                t0 = time.perf_counter()
                scored = side(out)
                seconds[name].append(time.perf_counter() - t0)
                if scored != rows:
                    raise RuntimeError(f"{name} scored {scored} rows of {rows}")
                if rep == 0:
                    check[name] = pd.read_parquet(out).set_index("transaction_id").sort_index()
                shutil.rmtree(out)
                bar.update()
    cols = [f"probability_{c}" for c in fraud.SPEC.classes]
    base = check["single_process"][cols].to_numpy()
    max_diff = max(float(np.abs(check[n][cols].to_numpy() - base).max()) for n in check)
    return {
        "rows": rows,
        "files": len(paths),
        "partitions": -(-rows // PARTITION_ROWS),
        "seconds": seconds,
        "rows_per_s": {k: [rows / t for t in v] for k, v in seconds.items()},
        "ratio_dask2_over_single": [
            s / d for d, s in zip(seconds["dask_2_workers"], seconds["single_process"], strict=True)
        ],
        "ratio_dask2_over_dask1": [
            o / t for t, o in zip(seconds["dask_2_workers"], seconds["dask_1_worker"], strict=True)
        ],
        "max_abs_diff_between_sides": max_diff,
    }
