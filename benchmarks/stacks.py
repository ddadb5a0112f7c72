"""The serving stacks under test, each started on free loopback ports from one trained release."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import psutil

from inferline.export.config import model_names, pipeline_configs, to_pbtxt
from inferline.export.publish import publish
from inferline.features.artifacts import atomic_write_bytes, atomic_write_parquet
from inferline.features.pipelines import fraud
from inferline.features.state import FeatureState
from inferline.serving.server import ServerConfig, TritonServer, free_port
from inferline.training.train import train

__all__ = ["Release", "Stack", "build_release", "start_stacks", "triton_body"]


@dataclass
class Release:
    run_dir: Path
    repository: Path
    version: int
    row: dict[str, Any]  # one raw row, the payload of every request
    row_file: Path


def build_release(workdir: Path, rows: int = 60_000) -> Release:
    data = workdir / "data" / "bench.parquet"
    atomic_write_parquet(data, fraud.generate(rows, seed=42))
    result = train([data], fraud.SPEC, workdir / "runs", seed=0, epochs=2, progress=False)
    repository = workdir / "triton_models"
    published = publish(result.run_dir, repository)
    holdout = pd.read_parquet(result.run_dir / "holdout.parquet").drop(columns=[fraud.SPEC.label])
    row_file = workdir / "row.parquet"
    holdout.head(1).to_parquet(row_file)
    first = holdout.iloc[0]
    row = {c.name: first[c.name] for c in fraud.SPEC.input_columns}
    row["event_time"] = first["event_time"].isoformat()
    row["amount"] = float(row["amount"])
    row["customer_age_days"] = int(row["customer_age_days"])
    row = {k: (None if v is pd.NA else v) for k, v in row.items()}
    return Release(result.run_dir, repository, published.version, row, row_file)


def without_dynamic_batching(release: Release, target: Path) -> Path:
    """A copy of the repository whose fused model serves each request alone (same model, same code)."""
    shutil.copytree(release.repository, target)
    state = FeatureState.load(release.run_dir / "feature_state.json")
    configs = pipeline_configs(fraud.SPEC, state, release.version, "local", dynamic_batching=False)
    served = model_names(fraud.SPEC.name)["ensemble"]  # the local target's one fused model, named after the pipeline
    atomic_write_bytes(
        target / served / str(release.version) / "release.config.pbtxt", to_pbtxt(configs["fused"]).encode()
    )
    return target


def triton_body(row: dict[str, Any]) -> str:
    inputs = []
    for c in fraud.SPEC.input_columns:
        value = row[c.name]
        if c.triton_dtype == "BYTES":
            value = "" if value is None else str(value)
        inputs.append({"name": c.name, "shape": [1, 1], "datatype": c.triton_dtype, "data": [value]})
    outputs = [{"name": n} for n in ("probabilities", "predicted_class", "status", "release")]
    return json.dumps({"inputs": inputs, "outputs": outputs})


@dataclass
class Stack:
    name: str
    description: str
    protocol: str  # "http" (wrk) or "grpc" (benchmarks.grpc_load)
    url: str
    body: str = ""
    pid: int = 0
    stop_fn: Any = None
    samples: list[dict[str, Any]] = field(default_factory=list)

    def server_cpu_s(self) -> float:
        """CPU seconds used so far by the server process and all its children (Python-backend stubs)."""
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0.0
        total = 0.0
        for p in procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                continue
        return total


def _triton(repository: Path, workdir: Path) -> TritonServer:
    return TritonServer(ServerConfig.on_free_ports(repository, workdir)).start(timeout_s=120)


def _fastapi(run_dir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = dict(os.environ, INFERLINE_RUN_DIR=str(run_dir), INFERLINE_TORCH_THREADS="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "inferline.benchmarks.fastapi_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the FastAPI baseline exited with {proc.returncode} before it answered /health")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return proc, port
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)  # readiness polling interval
    proc.kill()
    raise RuntimeError("the FastAPI baseline did not answer /health within 60 s")


def start_stacks(release: Release, workdir: Path, grpc: bool = True) -> list[Stack]:
    batching = _triton(release.repository, workdir / "t1")
    plain = _triton(without_dynamic_batching(release, workdir / "triton_models_nobatch"), workdir / "t2")
    api, port = _fastapi(release.run_dir)

    def stop_api() -> None:
        api.terminate()
        api.wait(10)

    body = triton_body(release.row)
    infer = "/v2/models/fraud/infer"
    assert batching.process is not None and plain.process is not None
    stacks = [
        Stack(
            "triton_batching_http",
            "Triton fused model, dynamic batching, HTTP",
            "http",
            f"http://{batching.config.http_url}{infer}",
            body,
            batching.process.pid,
            batching.stop,
        ),
        Stack(
            "triton_nobatch_http",
            "Triton fused model, no dynamic batching, HTTP",
            "http",
            f"http://{plain.config.http_url}{infer}",
            body,
            plain.process.pid,
            plain.stop,
        ),
        Stack(
            "fastapi_torch_http",
            "FastAPI + uvicorn (1 worker) + PyTorch eager, HTTP",
            "http",
            f"http://127.0.0.1:{port}/predict",
            json.dumps({"rows": [release.row]}),
            api.pid,
            stop_api,
        ),
    ]
    if grpc:
        stacks.append(
            Stack(
                "triton_batching_grpc",
                "Triton fused model, dynamic batching, gRPC",
                "grpc",
                batching.config.grpc_url,
                "",
                batching.process.pid,
                None,
            )
        )
    return stacks
