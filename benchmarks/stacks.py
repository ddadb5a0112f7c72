"""The serving stacks under test, each started on free loopback ports from one trained release, and the pool of
distinct request payloads every stack is driven with.

The payloads: ``POOL_ROWS`` raw rows generated from a seed the training data did not use, each free text made
unique (so no cache of per-value verdicts or features sees a value twice within a pass over the pool), encoded once
per protocol into a file of request bodies, one per line, that the load generator sends in turn. The Triton
protocol's encoding of a row lives in one function, ``triton_body``: the ensemble's input contract (one tensor per
raw column, named after it) changes there and nowhere else.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import urllib.error
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import torch
from tritonclient.grpc.model_config_pb2 import ModelConfig

from inferline.core.files import atomic_write_bytes, atomic_write_parquet
from inferline.core.http import answers_ok, request
from inferline.core.processes import NotReady, die_with_parent, free_port, stop_process, wait_until_ready
from inferline.export.config import pipeline_configs, to_pbtxt
from inferline.export.publish import publish
from inferline.features.pipelines import fraud
from inferline.features.state import STATE_FILE, FeatureState
from inferline.release.registry import model_names
from inferline.serving.daemon import UP_PORT_FLAGS
from inferline.serving.server import ServerConfig, TritonServer
from inferline.training.model import load_checkpoint
from inferline.training.train import train

__all__ = [
    "FLOOR_MODEL",
    "POOL_ROWS",
    "POOL_SEED",
    "Release",
    "Stack",
    "build_release",
    "fastapi_body",
    "json_rows",
    "payload_pool",
    "save_torchscript",
    "start_stacks",
    "triton_body",
    "write_bodies",
]

PIPELINE = fraud.SPEC.name
TRAINING_SEED = 42
POOL_SEED = 20_261_201  # any seed but the training data's
POOL_ROWS = 10_000
FLOOR_MODEL = f"{PIPELINE}_floor"
OUTPUTS = ("probabilities", "predicted_class", "status", "release")


def payload_pool(n: int = POOL_ROWS, seed: int = POOL_SEED) -> pd.DataFrame:
    """``n`` distinct raw rows (no label) of the fraud pipeline; every non-null description ends in a suffix of its
    own (``" ref000042"``: ASCII letters and digits, valid under every text rule), so none repeats. About 3 % of the
    rows have no description, as upstream sends them."""
    if seed == TRAINING_SEED:
        raise ValueError(f"seed {seed} generated the training data; the payloads must come from another seed")
    frame = fraud.generate(n, seed=seed).drop(columns=[fraud.SPEC.label])
    suffix = pd.Series([f" ref{i:06d}" for i in range(n)], index=frame.index, dtype="string")
    frame["description"] = frame["description"].astype("string") + suffix  # a null stays null
    return frame.astype({c.name: c.raw_dtype for c in fraud.SPEC.input_columns})


def _json_value(value: Any) -> Any:
    if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    return value


def json_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Raw rows as JSON-ready dicts: timestamps as ISO-8601 text with offset, nulls as None, numbers as Python's."""
    names = [c.name for c in fraud.SPEC.input_columns]
    return [
        {k: _json_value(v) for k, v in zip(names, values, strict=True)} for values in frame[names].itertuples(False)
    ]


def triton_body(row: dict[str, Any]) -> str:
    """One row as the ensemble's Open Inference Protocol request (JSON): the Triton, floor and gateway stacks' body."""
    inputs = []
    for c in fraud.SPEC.input_columns:
        value = row[c.name]
        if c.triton_dtype == "BYTES":
            value = "" if value is None else str(value)
        inputs.append({"name": c.name, "shape": [1, 1], "datatype": c.triton_dtype, "data": [value]})
    return json.dumps({"inputs": inputs, "outputs": [{"name": n} for n in OUTPUTS]})


def fastapi_body(row: dict[str, Any]) -> str:
    """One row as both FastAPI baselines' request: ``{"rows": [row]}``."""
    return json.dumps({"rows": [row]})


def write_bodies(path: Path, rows: Iterable[dict[str, Any]], encode: Callable[[dict[str, Any]], str]) -> Path:
    """The request bodies of ``rows``, one per line (what ``load.run_wrk`` sends in turn)."""
    bodies = [encode(r) for r in rows]
    if any("\n" in b for b in bodies):
        raise ValueError("a request body holds a newline; the body file has one body per line")
    atomic_write_bytes(path, ("\n".join(bodies) + "\n").encode())
    return path


@dataclass
class Release:
    run_dir: Path
    repository: Path
    version: int
    pool: list[dict[str, Any]]  # distinct raw rows, JSON-ready: the payloads, sent in turn
    pool_file: Path  # the same rows as Parquet (the gRPC load generator reads them)

    @property
    def row(self) -> dict[str, Any]:
        return self.pool[0]


def build_release(workdir: Path, rows: int = 60_000, pool_rows: int = POOL_ROWS) -> Release:
    data = workdir / "data" / "bench.parquet"
    atomic_write_parquet(data, fraud.generate(rows, seed=TRAINING_SEED))
    result = train([data], fraud.SPEC, workdir / "runs", seed=0, epochs=2, progress=False)
    repository = workdir / "triton_models"
    published = publish(result.run_dir, repository)
    pool = payload_pool(pool_rows)
    pool_file = workdir / "pool.parquet"
    atomic_write_parquet(pool_file, pool)
    return Release(result.run_dir, repository, published.version, json_rows(pool), pool_file)


def save_torchscript(run_dir: Path, target: Path) -> Path:
    """The run's checkpoint (probabilities and predicted class) traced to TorchScript, for the stack that shares no
    inferline code: ``forward(numeric float32 [n, k], categorical int64 [n, m])``."""
    model = load_checkpoint(run_dir / "checkpoint.pt")
    arch = model.arch
    numeric = torch.zeros((2, arch.n_numeric), dtype=torch.float32)
    categorical = torch.zeros((2, len(arch.cardinalities)), dtype=torch.int64)
    with torch.no_grad(), warnings.catch_warnings():
        # TorchScript is what the team behind this baseline would ship (torch 2.13 calls it deprecated, it works)
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", DeprecationWarning)
        traced = torch.jit.trace(model, (numeric, categorical))
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.jit.save(traced, str(target))
    return target


def without_dynamic_batching(release: Release, target: Path) -> Path:
    """A copy of the repository whose fused model serves each request alone (same model, same code)."""
    shutil.copytree(release.repository, target)
    state = FeatureState.load(release.run_dir / STATE_FILE)
    configs = pipeline_configs(fraud.SPEC, state, release.version, "local", dynamic_batching=False)
    served = model_names(fraud.SPEC.name)["ensemble"]  # the local target's one fused model, named after the pipeline
    atomic_write_bytes(
        target / served / str(release.version) / "release.config.pbtxt", to_pbtxt(configs["fused"]).encode()
    )
    return target


def floor_repository(release: Release, target: Path) -> Path:
    """A copy of the repository (``TritonServer`` starts from a published release) plus ``FLOOR_MODEL``: the served
    model's inputs and outputs, one Python-backend model (``benchmarks/floor_model.py``) answering constants, with
    the served model's batching, batch size and instance group."""
    shutil.copytree(release.repository, target)
    state = FeatureState.load(release.run_dir / STATE_FILE)
    served = pipeline_configs(fraud.SPEC, state, release.version, "local")["fused"]
    config = ModelConfig(
        name=FLOOR_MODEL,
        backend="python",
        max_batch_size=served.max_batch_size,
        input=served.input,
        output=served.output,
        instance_group=served.instance_group,
    )
    if served.HasField("dynamic_batching"):
        config.dynamic_batching.CopyFrom(served.dynamic_batching)
    atomic_write_bytes(target / FLOOR_MODEL / "config.pbtxt", to_pbtxt(config).encode())
    (target / FLOOR_MODEL / "1").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(__file__).with_name("floor_model.py"), target / FLOOR_MODEL / "1" / "model.py")
    return target


class _FloorServer(TritonServer):
    """The same binary, flags and hardening as every Triton stack, loading the floor model only."""

    def command(self) -> list[str]:
        pipeline = {f"--load-model={n}" for n in model_names(PIPELINE).values()}
        return [a for a in super().command() if a not in pipeline] + [f"--load-model={FLOOR_MODEL}"]


@dataclass
class Stack:
    name: str
    description: str
    protocol: str  # "http" (wrk) or "grpc" (benchmarks.grpc_load)
    url: str
    bodies: Path | None = None  # HTTP: the request bodies, one per line, sent in turn
    pid: int = 0  # the server's root process: its CPU and all its children's are the stack's
    stop_fn: Callable[[], Any] | None = None
    samples: list[dict[str, Any]] = field(default_factory=list)
    # an edge's own processes (the supervisor without its tritonserver, nginx's master and worker): their CPU per
    # request is the edge's cost, the figure that holds on any machine
    edge_pids: tuple[int, ...] = ()

    def edge_cpu_s(self) -> float:
        total = 0.0
        for pid in self.edge_pids:
            try:
                t = psutil.Process(pid).cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += t.user + t.system
        return total

    def server_cpu_s(self) -> float:
        """CPU seconds used so far by the server process and all its children (Python-backend stubs, the Triton
        a supervisor owns)."""
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


def _triton(repository: Path, workdir: Path, server: type[TritonServer] = TritonServer) -> TritonServer:
    return server(ServerConfig.on_free_ports(repository, workdir)).start(timeout_s=120)


def _wait_ready(url: str, proc: subprocess.Popen[bytes], what: str, timeout_s: float) -> None:
    """``url`` answers 200 within ``timeout_s``; else ``proc`` (what should answer it) is stopped and ``NotReady``
    names ``what``."""
    try:
        wait_until_ready(lambda: answers_ok(url), timeout_s, f"{what} at {url}", process=proc)
    except NotReady:
        stop_process(proc)
        raise


def uvicorn_workers() -> int:
    """How many uvicorn workers a user deploys on this machine: one per core (uvicorn's and gunicorn's advice for a
    CPU-bound app)."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def _uvicorn(
    app: str, env: dict[str, str], log: Path, app_dir: Path | None = None, workers: int = 1
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    if app_dir is not None:
        cmd += ["--app-dir", str(app_dir)]
    cmd += ["--log-level", "warning", "--no-access-log"]
    env = dict(os.environ, OMP_NUM_THREADS="1", **env)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
    _wait_ready(f"http://127.0.0.1:{port}/health", proc, f"uvicorn {app} (log: {log})", 60)
    return proc, port


def serve_up(repository: Path, workdir: Path, *options: str) -> tuple[subprocess.Popen[bytes], str, str]:
    """``inferline serve up --foreground`` (the supervisor: its own tritonserver and the validating edge in front of
    it) on free ports, without request traces, with ``options`` added: (process, edge host:port, supervisor
    metrics URL)."""
    ports = {flag: free_port() for flag in UP_PORT_FLAGS}
    cmd = [sys.executable, "-m", "inferline.serving", "up", "--foreground", "--workdir", str(workdir)]
    cmd += ["--repository", str(repository), "--no-trace", *options]
    for flag, number in ports.items():
        cmd += [flag, str(number)]
    log = workdir / "supervisor.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
    url = f"127.0.0.1:{ports['--gateway-port']}"
    _wait_ready(f"http://{url}/v2/health/ready", proc, f"serve up {' '.join(options)} (log: {log})", 150)
    return proc, url, f"http://127.0.0.1:{ports['--supervisor-metrics-port']}/metrics"


def _gateway(repository: Path, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``serve up`` so the edge is the only difference from Triton HTTP direct: no request traces, and no samples to
    the monitor either (benchmarks/edge_sampling_bench.py measures what sampling costs)."""
    proc, url, _ = serve_up(repository, workdir, "--sample-rate", "0")
    return proc, url


def _statuses(answer: dict[str, Any]) -> list[Any]:
    if "outputs" in answer:  # the inference protocol
        return next(o["data"] for o in answer["outputs"] if o["name"] == "status")
    return list(answer["status"])


def check_answers(stack: Stack, n: int = 20) -> None:
    """The first ``n`` bodies of the pool answered 200 with status ``ok`` for every row: the stack scores the
    payloads rather than refusing them (a refusal is cheaper and would flatter it)."""
    if stack.bodies is None:
        return
    with open(stack.bodies) as fh:
        bodies = [line.rstrip("\n") for _, line in zip(range(n), fh, strict=False)]
    for body in bodies:
        try:
            answer = request(
                stack.url, body.encode(), headers={"Content-Type": "application/json"}, timeout_s=30
            ).json()
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{stack.name} answered {exc.code} to a pool row: {exc.read()[:300]!r}") from exc
        statuses = _statuses(answer)
        if any(s != "ok" for s in statuses):
            raise RuntimeError(f"{stack.name} refused a pool row: status {statuses}; body {body[:300]}")


def start_stacks(release: Release, workdir: Path, grpc: bool = True) -> list[Stack]:
    """Every stack, started and checked; on a failure the ones already started are stopped."""
    stops: list[Callable[[], Any]] = []
    try:
        return _start_stacks(release, workdir, grpc, stops)
    except BaseException:
        for stop in reversed(stops):
            stop()
        raise


def _start_stacks(release: Release, workdir: Path, grpc: bool, stops: list[Callable[[], Any]]) -> list[Stack]:
    triton_bodies = write_bodies(workdir / "bodies" / "triton.jsonl", release.pool, triton_body)
    fastapi_bodies = write_bodies(workdir / "bodies" / "fastapi.jsonl", release.pool, fastapi_body)
    infer = f"/v2/models/{PIPELINE}/infer"

    floor = _triton(floor_repository(release, workdir / "triton_models_floor"), workdir / "t0", _FloorServer)
    stops.append(floor.stop)
    batching = _triton(release.repository, workdir / "t1")
    stops.append(batching.stop)
    plain = _triton(without_dynamic_batching(release, workdir / "triton_models_nobatch"), workdir / "t2")
    stops.append(plain.stop)
    supervisor, gateway_url = _gateway(release.repository, workdir / "t3")
    stops.append(lambda: stop_process(supervisor))
    features_api, features_port = _uvicorn(
        "inferline.benchmarks.fastapi_app:app",
        {"INFERLINE_RUN_DIR": str(release.run_dir), "INFERLINE_TORCH_THREADS": "1"},
        workdir / "fastapi_app.log",
    )
    stops.append(lambda: stop_process(features_api))
    own_env = {
        "FASTAPI_OWN_MODEL": str(save_torchscript(release.run_dir, workdir / "fastapi_own" / "model.ts")),
        "FASTAPI_OWN_FEATURE_STATE": str(release.run_dir / STATE_FILE),
    }
    # loaded from its file, outside the inferline package: it shares no code. Deployed as a user would on this
    # machine (one worker per core), with the one-worker row beside it
    workers = uvicorn_workers()
    own_api, own_port = _uvicorn(
        "fastapi_own:app", own_env, workdir / "fastapi_own.log", app_dir=Path(__file__).parent, workers=workers
    )
    stops.append(lambda: stop_process(own_api))
    own_one, own_one_port = _uvicorn(
        "fastapi_own:app", own_env, workdir / "fastapi_own_1worker.log", app_dir=Path(__file__).parent
    )
    stops.append(lambda: stop_process(own_one))

    assert floor.process is not None and batching.process is not None and plain.process is not None
    stacks = [
        Stack(
            "floor_http",
            "the same tritonserver serving a constant-answer Python model with the served model's inputs, outputs "
            "and dynamic batching, HTTP (the physical ceiling)",
            "http",
            f"http://{floor.config.http_url}/v2/models/{FLOOR_MODEL}/infer",
            triton_bodies,
            floor.process.pid,
            floor.stop,
        ),
        Stack(
            "triton_batching_http",
            "inferline: Triton fused model, dynamic batching, HTTP",
            "http",
            f"http://{batching.config.http_url}{infer}",
            triton_bodies,
            batching.process.pid,
            batching.stop,
        ),
        Stack(
            "triton_nobatch_http",
            "Triton fused model, no dynamic batching, HTTP",
            "http",
            f"http://{plain.config.http_url}{infer}",
            triton_bodies,
            plain.process.pid,
            plain.stop,
        ),
        Stack(
            "gateway_http",
            "inferline: the validating gateway (`inferline serve up`) in front of the batching fused model, HTTP",
            "http",
            f"http://{gateway_url}{infer}",
            triton_bodies,
            supervisor.pid,
            lambda: stop_process(supervisor),
        ),
        Stack(
            "fastapi_inferline_features_http",
            "FastAPI + inferline features: uvicorn (1 worker), pydantic body, inferline's request path, PyTorch "
            "eager, HTTP",
            "http",
            f"http://127.0.0.1:{features_port}/predict",
            fastapi_bodies,
            features_api.pid,
            lambda: stop_process(features_api),
        ),
        Stack(
            "fastapi_own_http",
            f"FastAPI own: uvicorn ({workers} workers, one per core), pydantic row validators, hand-written per-row "
            "features, TorchScript, no inferline code, HTTP",
            "http",
            f"http://127.0.0.1:{own_port}/predict",
            fastapi_bodies,
            own_api.pid,
            lambda: stop_process(own_api),
        ),
        Stack(
            "fastapi_own_1worker_http",
            "FastAPI own as above with 1 uvicorn worker, HTTP",
            "http",
            f"http://127.0.0.1:{own_one_port}/predict",
            fastapi_bodies,
            own_one.pid,
            lambda: stop_process(own_one),
        ),
    ]
    if grpc:
        stacks.append(
            Stack(
                "triton_batching_grpc",
                "inferline: Triton fused model, dynamic batching, gRPC",
                "grpc",
                batching.config.grpc_url,
                None,
                batching.process.pid,
                None,
            )
        )
    for s in stacks:
        check_answers(s)
    return stacks
